"""Text from outside (a model, a server, a file, the terminal) made safe to show and to store.

Two things can go wrong with such text. It can be invalid: a lone UTF-16 surrogate, as when a
server splits an emoji into halves across two stream events, cannot be encoded as UTF-8 and
would end the session at the first print or write. And it can be active: escape sequences
that drive the terminal (colours, titles, clears). ``valid`` fixes the first, ``inert`` both.
"""

from __future__ import annotations

import json
import re
from typing import Any

# C0 controls except tab/newline, DEL, and C1 controls (which include the 8-bit CSI and OSC).
CONTROL = r"[\x00-\x08\x0b-\x1f\x7f-\x9f]"
_CONTROL = re.compile(CONTROL)
REPLACEMENT = "\ufffd"


def valid(text: str) -> str:
    """Surrogate pairs joined into their character, lone surrogates made U+FFFD."""
    if not any("\ud800" <= ch <= "\udfff" for ch in text):
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def inert(text: str) -> str:
    """Valid, with control characters shown as visible escapes (ESC becomes \\x1b)."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", valid(text))


def json_text(data: Any, indent: int | None = None) -> str:
    """JSON as people read it (UTF-8, not \\u escapes) yet inert: JSON already escapes C0
    controls; C1 controls, which some terminals obey, are escaped too (same JSON to a parser)."""
    text = valid(json.dumps(data, indent=indent, ensure_ascii=False))
    return _C1.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


_C1 = re.compile(r"[\x7f-\x9f]")


class SurrogateJoiner:
    """Streamed text, made valid piece by piece: a high surrogate at the end of one piece
    waits for the low surrogate that may start the next, so a split emoji arrives whole."""

    def __init__(self) -> None:
        self._held = ""

    def feed(self, text: str) -> str:
        text = self._held + text
        self._held = ""
        if text and "\ud800" <= text[-1] <= "\udbff":
            text, self._held = text[:-1], text[-1]
        return valid(text)

    def flush(self) -> str:
        """What is still held back can no longer be completed."""
        held, self._held = self._held, ""
        return REPLACEMENT if held else ""
