"""What the person at the terminal sees: the conversation and notes on stdout, errors on stderr.

Errors alone go to stderr, so a failure is one clear line there.

Model output can carry terminal control sequences (ANSI colours, OSC titles, clears) and
invalid characters; everything is made inert and valid before printing (safe_text.py).

Showing a turn must never end the session: when the terminal or pipe goes away (``| head``),
the display goes quiet (``closed``) and the conversation and its transcript carry on.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sys
from typing import TextIO

from voice_agent.safe_text import inert

log = logging.getLogger(__name__)


class Display:
    def __init__(self, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self._replying = False
        self._announced = False
        self._transient = False  # a status line is showing and must be wiped first
        self.interactive = self.out.isatty()
        self.closed = False  # stdout went away (a pipe's reader exited): nothing more is shown

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
            self._write(self.out, f"[{state}]")
            self._transient = True

    def _wipe(self) -> None:
        if self._transient:
            self._write(self.out, "\r\x1b[2K")
            self._transient = False

    def reply_text(self, text: str) -> None:
        """Print reply text as it streams in."""
        self._wipe()
        if not self._replying:
            self._write(self.out, "assistant: ")
            self._replying = True
        self._write(self.out, inert(text))

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

    def error_block(self, text: str) -> None:
        """Text to keep, on stderr exactly as given (a transcript that could not be saved)."""
        self.reply_end()
        self._write(self.err, inert(text))

    def _line(self, stream: TextIO, text: str) -> None:
        self._wipe()
        self._write(stream, text + "\n")

    def _write(self, stream: TextIO, text: str) -> None:
        if self.closed and stream is self.out:
            return
        try:
            stream.write(text)
            stream.flush()
        except (OSError, ValueError) as exc:  # ValueError: the stream was closed
            if stream is not self.out:
                return  # stderr is gone too: nothing left to tell
            log.debug("stdout is gone (%s): the display goes quiet", exc)
            self.closed = True
            if isinstance(exc, OSError) and exc.errno == errno.EPIPE:
                quiet_stdout()


def quiet_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's own flush at exit does not fail again
    on the broken pipe and print a traceback."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
