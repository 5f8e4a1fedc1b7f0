"""What the person at the terminal sees: the conversation and notes on stdout, errors on stderr.

Errors alone go to stderr, so a failure is one clear line there.

Model output can carry terminal control sequences (ANSI colours, OSC titles, clears); they are
made inert before printing so a reply cannot drive the terminal.
"""

from __future__ import annotations

import re
import sys
from typing import TextIO

# C0 controls except tab/newline, DEL, and C1 controls (which include the 8-bit CSI and OSC).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def inert(text: str) -> str:
    """Replace control characters with visible escapes, e.g. ESC becomes \\x1b."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


class Display:
    def __init__(self, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self._replying = False
        self._announced = False
        self._transient = False  # a status line is showing and must be wiped first
        self.interactive = self.out.isatty()

    def user(self, text: str) -> None:
        self._line(self.out, f"you: {inert(text)}")

    def status(self, state: str) -> None:
        """listening / hearing / thinking / speaking / stopped: a line that rewrites itself on a
        terminal; elsewhere only the first "Listening" line is printed."""
        if state == "listening" and not self._announced:
            self._announced = True
            self._line(self.out, "Listening\u2026 (say goodbye or press Ctrl+C to end)")
            return
        if self.interactive and not self._replying:
            self._wipe()
            self.out.write(f"[{state}]")
            self.out.flush()
            self._transient = True

    def _wipe(self) -> None:
        if self._transient:
            self.out.write("\r\x1b[2K")
            self._transient = False

    def reply_text(self, text: str) -> None:
        """Print reply text as it streams in."""
        self._wipe()
        if not self._replying:
            self.out.write("assistant: ")
            self._replying = True
        self.out.write(inert(text))
        self.out.flush()

    def reply_end(self) -> None:
        if self._replying:
            self._line(self.out, "")
            self._replying = False

    def note(self, text: str) -> None:
        self.reply_end()
        self._line(self.out, inert(text))

    def error(self, text: str) -> None:
        self.reply_end()
        self._line(self.err, f"voice-agent: error: {inert(text)}")

    def _line(self, stream: TextIO, text: str) -> None:
        self._wipe()
        stream.write(text + "\n")
        stream.flush()
