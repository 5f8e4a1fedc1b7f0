"""Split a streamed reply into speakable pieces as soon as each one is complete.

Each piece goes to the voice while the model keeps writing, so the first sound does not wait
for the whole reply. Sentence ends are found with care for what looks like one but is not:
abbreviations (Mr., e.g., U.S.), decimals (3.14), numbered-list markers, ellipses followed by
lower case. Markdown blocks that only make sense whole (code fences, tables, ``<think>``
reasoning) are held until they close.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ABBREVIATIONS = {
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "vs", "etc", "e.g", "i.e", "eg",
    "ie", "approx", "no", "nos", "fig", "inc", "ltd", "co", "corp", "dept", "est", "jan", "feb",
    "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "gen", "gov", "sen",
    "rep", "rev", "hon", "lt", "col", "capt", "sgt", "cf", "al", "ca", "vol", "pp", "op", "ed",
}  # fmt: skip
_END = re.compile(r"([.!?\u2026]+)([\"'\u201d\u2019)\]*_]*)(\s+)")
_CLAUSE = re.compile(r"([,;:\u2014])(\s+)")
_FENCE = re.compile(r"^\s*(```|~~~)")
_LIST_MARKER = re.compile(r"^\s*\d+[.)]$")
MAX_PIECE_CHARS = 400  # a run-on without any boundary is still spoken in bounded pieces
# Words before which a speaker may pause mid-sentence: where a long sentence is cut into pieces
# for the voice (tts.clauses) and where a long first sentence is cut to speak sooner.
PHRASE_STARTS = {
    "and", "but", "or", "so", "because", "that", "which", "who", "when", "while", "if",
    "where", "though", "although", "unless", "until", "to", "with", "within", "without",
    "for", "from", "in", "on", "at", "of", "by", "about", "after", "before", "than",
}  # fmt: skip
# A first sentence still open after this many characters is long: rather than wait for its end,
# its first phrase (up to a word from PHRASE_STARTS) is voiced while the model writes the rest.
# The voice cuts such a sentence at a phrase start anyway (tts.MAX_CHUNK_CHARS), so the first
# sound comes sooner without a pause a speaker would not make.
LONG_FIRST_CHARS = 40
_WORD = re.compile(r"(?<!\S)\S+(?=\s)")  # a whole word: the next one has begun


@dataclass(frozen=True)
class Piece:
    """A speakable piece and where it ends in the whole reply's text (so what was spoken of
    an interrupted reply is known without searching the text for it)."""

    text: str  # stripped of surrounding white space
    end: int  # offset just after the piece's last character in the reply
    continues: bool = False  # cut mid-sentence: the voice must not end it like a sentence


class SentenceSplitter:
    def __init__(self, first_fragment_chars: int = 0) -> None:
        self.first_fragment_chars = first_fragment_chars
        self._buf = ""
        self._taken = 0  # characters of the reply consumed so far
        self._emitted = 0
        self._mid_sentence = False  # the piece just taken was cut before its sentence ended

    def feed(self, text: str) -> list[str]:
        """The pieces that ``text`` completes."""
        return [p.text for p in self.feed_pieces(text)]

    def flush(self) -> list[str]:
        """The rest of the reply, once the stream has ended."""
        return [p.text for p in self.flush_pieces()]

    def feed_pieces(self, text: str) -> list[Piece]:
        self._buf += text
        return self._drain(final=False)

    def flush_pieces(self) -> list[Piece]:
        return self._drain(final=True)

    def _drain(self, final: bool) -> list[Piece]:
        out: list[Piece] = []
        while (piece := self._next(final)) is not None:
            if piece.strip():
                trailing = len(piece) - len(piece.rstrip())
                out.append(Piece(piece.strip(), self._taken - trailing, self._mid_sentence))
            self._mid_sentence = False
        self._emitted += len(out)
        return out

    def _take(self, n: int) -> str:
        piece, self._buf = self._buf[:n], self._buf[n:]
        self._taken += len(piece)
        return piece

    def _next(self, final: bool) -> str | None:
        buf = self._buf
        if not buf.strip():
            if final:
                self._buf = ""
            return None
        lead = len(buf) - len(buf.lstrip())
        rest = buf[lead:]
        if rest.lower().startswith("<think>"):
            end = rest.lower().find("</think>")
            if end < 0:
                return self._take(len(buf)) if final else None
            return self._take(lead + end + len("</think>"))
        first_line = rest.partition("\n")[0]
        if _FENCE.match(first_line):
            close = re.search(r"\n\s*(```|~~~)[^\n]*(\n|$)", rest[len(first_line) :])
            if close is None or (not close.group(2) and not final):
                return self._take(len(buf)) if final else None
            return self._take(lead + len(first_line) + close.end())
        if first_line.startswith("|"):
            table_end = _table_end(rest)
            if table_end is None:
                return self._take(len(buf)) if final else None
            return self._take(lead + table_end)
        return self._sentence(lead, rest, final)

    def _sentence(self, lead: int, rest: str, final: bool) -> str | None:
        line_end = rest.find("\n")
        limit = line_end if line_end >= 0 else len(rest)
        for m in _END.finditer(rest, 0, limit + 1 if line_end >= 0 else len(rest)):
            if m.start() >= limit:
                break
            if m.end() >= len(rest) and not final:
                return None  # the next word decides (lower case continues the sentence)
            if self._is_boundary(rest, m):
                return self._take(lead + m.end())
        if line_end >= 0:
            return self._take(lead + line_end + 1)
        if self._emitted == 0 and self.first_fragment_chars > 0:
            for m in _CLAUSE.finditer(rest):
                if m.start() >= self.first_fragment_chars:
                    return self._take(lead + m.end())
            if len(rest) >= LONG_FIRST_CHARS:
                for m in _WORD.finditer(rest, self.first_fragment_chars):
                    if m.group().lower() in PHRASE_STARTS:
                        self._mid_sentence = True
                        return self._take(lead + m.start())
        if final or len(rest) > MAX_PIECE_CHARS:
            space = rest.rfind(" ", 0, MAX_PIECE_CHARS)
            cut = len(rest) if final or space < 0 else space + 1
            return self._take(lead + cut)
        return None

    @staticmethod
    def _is_boundary(text: str, m: re.Match[str]) -> bool:
        before = text[: m.start()]
        word = re.split(r"[\s(\"'\u201c]", before)[-1].lower().lstrip("*_")
        following = text[m.end() : m.end() + 1]
        if m.group(1) == "." and (word in ABBREVIATIONS or "." in word or len(word) == 1):
            return False  # Mr. Smith, e.g. this, J. K. Rowling, U.S. Army
        if m.group(1) == "." and _LIST_MARKER.match(before.rsplit("\n", 1)[-1] + "."):
            return False  # "1. " opening a numbered list item
        return not (following and following.islower())


def _table_end(text: str) -> int | None:
    """End of a Markdown table at the start of text, or None while it may still grow."""
    pos = 0
    while True:
        nl = text.find("\n", pos)
        if nl < 0:
            return None
        pos = nl + 1
        if pos >= len(text):
            return None
        if not text[pos:].lstrip(" ").startswith("|"):
            return pos
