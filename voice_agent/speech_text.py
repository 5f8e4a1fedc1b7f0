"""Turn a model's reply into what should be said aloud.

Models answer in Markdown with LaTeX, emoji and reasoning blocks even when asked not to; read
literally that is "asterisk asterisk", "dollar backslash rightarrow". The transcript keeps the
reply as it came: only the spoken copy is cleaned here.
"""

from __future__ import annotations

import re

from markdown_it import MarkdownIt
from markdown_it.token import Token

_THINK = re.compile(r"<think>.*?(?:</think>|\Z)", re.DOTALL | re.IGNORECASE)
_MATH = re.compile(
    r"\$\$(.+?)\$\$|\\\[(.+?)\\\]|\\\((.+?)\\\)|\$(?=\S)([^$\n]+?)(?<=\S)\$(?!\d)", re.DOTALL
)
_URL = re.compile(r"https?://([^/\s)]+)[^\s)]*")
_SPACES = re.compile(r"[ \t\r\f\v]+")
# Emphasis or code marks left unpaired when a streamed reply is cut into sentences
# ("**Sure." then "Here it is.**") are not parsed as Markdown, but must not be read out.
_LEFTOVER_MARKS = re.compile(r"\*+|`+|~~|(?<!\w)_+|_+(?!\w)|\|")

# Words for the symbols and LaTeX commands models use in prose; anything else is dropped.
_LATEX_WORDS = {
    "rightarrow": " to ",
    "to": " to ",
    "Rightarrow": " implies ",
    "implies": " implies ",
    "leftarrow": " from ",
    "leftrightarrow": " both ways ",
    "times": " times ",
    "cdot": " times ",
    "div": " divided by ",
    "pm": " plus or minus ",
    "approx": " about ",
    "sim": " about ",
    "le": " at most ",
    "leq": " at most ",
    "ge": " at least ",
    "geq": " at least ",
    "neq": " not equal to ",
    "ne": " not equal to ",
    "infty": " infinity ",
    "pi": " pi ",
    "alpha": " alpha ",
    "beta": " beta ",
    "gamma": " gamma ",
    "delta": " delta ",
    "theta": " theta ",
    "lambda": " lambda ",
    "mu": " mu ",
    "sigma": " sigma ",
    "sum": " the sum of ",
    "sqrt": " the square root of ",
    "degree": " degrees ",
    "circ": " degrees ",
    "percent": " percent ",
    "%": " percent ",
}
_SYMBOL_WORDS = {
    "→": " to ",
    "⇒": " implies ",
    "←": " from ",
    "↔": " both ways ",
    "×": " times ",
    "÷": " divided by ",
    "±": " plus or minus ",
    "≈": " about ",
    "≤": " at most ",
    "≥": " at least ",
    "≠": " not equal to ",
    "∞": " infinity ",
    "•": ", ",
    "—": ", ",
    "–": " to ",
    "…": "...",
}
_LATEX_CMD = re.compile(r"\\([A-Za-z]+|%)")
_FRAC = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")

# Every emoji holds a character from here (the emoji package's own tables say so: a test checks
# each); text without one needs no look-up, and the package's tables (7 MB resident) stay
# unloaded until a reply has such a character.
_MAYBE_EMOJI = re.compile("[\u00a9\u00ae\u203c-\U0010ffff]")

_md = MarkdownIt("commonmark").enable("table").enable("strikethrough")


def for_speech(reply: str) -> str:
    """Return the words to speak for ``reply`` ("" when nothing is speakable)."""
    text = _without_emoji(_THINK.sub(" ", reply))
    text = _MATH.sub(lambda m: _latex(next(g for g in m.groups() if g is not None)), text)
    text = _LATEX_CMD.sub(lambda m: _LATEX_WORDS.get(m.group(1), " "), text)
    spoken = _LEFTOVER_MARKS.sub(" ", _blocks(_md.parse(text)))
    for symbol, words in _SYMBOL_WORDS.items():
        spoken = spoken.replace(symbol, words)
    lines = (_SPACES.sub(" ", line).strip() for line in spoken.splitlines())
    return re.sub(r"\s+([,.;:!?])", r"\1", "\n".join(line for line in lines if line))


def _without_emoji(text: str) -> str:
    if not _MAYBE_EMOJI.search(text):
        return text
    import emoji  # knows every sequence (ZWJ families, skin tones, keycaps, flags)

    return emoji.replace_emoji(text, replace=" ")


def _latex(expr: str) -> str:
    expr = _FRAC.sub(r" \1 over \2 ", expr)
    expr = re.sub(r"\^\{?2\}?", " squared ", expr)
    expr = re.sub(r"\^\{?3\}?", " cubed ", expr)
    expr = re.sub(r"\^\{?([^{}\s]+)\}?", r" to the power \1 ", expr)
    expr = _LATEX_CMD.sub(lambda m: _LATEX_WORDS.get(m.group(1), " "), expr)
    expr = expr.replace("=", " equals ").replace("+", " plus ")
    expr = re.sub(r"(?<=\s)-(?=\s)", " minus ", expr)
    return re.sub(r"[{}_\\]", " ", expr)


def _blocks(tokens: list[Token]) -> str:
    """Speakable text of block tokens: one line per paragraph, heading, list item or row."""
    out: list[str] = []
    row: list[str] = []
    previous = ""
    for tok in tokens:
        if tok.type == "tr_open":
            row = []
        elif tok.type == "tr_close":
            out.append(_sentence(", ".join(cell for cell in row if cell)))
        elif tok.type == "inline":
            text = _inline(tok.children or [])
            if previous in ("th_open", "td_open"):
                row.append(text)
            else:
                out.append(_sentence(text))
        # fences, code blocks, raw HTML and rules carry no inline token, so they stay silent
        previous = tok.type
    return "\n".join(line for line in out if line)


def _inline(children: list[Token]) -> str:
    parts: list[str] = []
    for child in children:
        if child.type in ("text", "code_inline"):
            parts.append(_URL.sub(lambda m: m.group(1), child.content))
        elif child.type in ("softbreak", "hardbreak"):
            parts.append(" ")
        elif child.type == "image":
            parts.append(child.content)
    return "".join(parts)


def _sentence(text: str) -> str:
    """End a heading, list item or table row with a full stop so the voice pauses."""
    text = text.strip()
    if text and text[-1].isalnum():
        return text + "."
    return text
