"""An API key that never shows itself in reprs, logs, tracebacks or ``voice-agent config``."""

from __future__ import annotations

import re


class Secret:
    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return "Secret('***')" if self._value else "Secret('')"

    __str__ = __repr__


NO_KEY = Secret("")


_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def looks_like_a_variable_name(value: str) -> bool:
    """True for OPENROUTER_API_KEY, false for what looks like a key pasted in its place
    (sk-..., or a long mix of lower case and digits): such a value must not be echoed."""
    if not _VARIABLE_NAME.fullmatch(value) or value.lower().startswith(("sk_", "sk-")):
        return False
    mixed = any(c.islower() for c in value) and any(c.isdigit() for c in value)
    return not (mixed and len(value) >= 20)
