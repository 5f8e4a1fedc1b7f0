"""Session transcripts: an append-only Markdown file per session plus a ``.jsonl`` sidecar.

The Markdown is exactly the shared format (``# Voice Conversation: <model>``, the start time,
then ``---``-separated ``**USER:**`` / ``**ASSISTANT:**`` blocks). Escaping rules, undone
exactly when read, so any text round-trips:

- a line of a turn's text that reads as a role header (``**USER:**``, optionally after
  backslashes) gets one more leading backslash, so no text can forge a turn;
- control characters other than newline and tab (ESC, BEL, CR, C1...) are written as
  ``\\xNN``, so ``cat`` on a transcript cannot drive the terminal; a backslash run already
  followed by ``xNN`` in the text gets one more backslash, and backslashes right before a
  control character are written ``\\x5c`` (else they would merge with its escape).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from voice_agent.errors import TranscriptError
from voice_agent.safe_text import CONTROL, valid

TITLE = "# Voice Conversation: "
SEPARATOR = "---\n\n"
_ROLE_LINE = re.compile(r"^(\\*)(\*\*[A-Z][A-Z ]*:\*\*)$", re.MULTILINE)
_ESCAPED_ROLE_LINE = re.compile(r"^\\(\\*\*\*[A-Z][A-Z ]*:\*\*)$", re.MULTILINE)
_TURN = re.compile(
    r"\*\*([A-Z][A-Z ]*):\*\*\n\n(.*?)\n\n---\n\n(?=\*\*[A-Z][A-Z ]*:\*\*\n\n|\Z)", re.DOTALL
)
_HEADER = re.compile(r"# Voice Conversation: (.*)\n\*(.*)\*\n\n---\n\n")
_CONTROL = re.compile(rf"(\\*)({CONTROL})")
_HEX_ESCAPE = re.compile(r"(\\+)(x[0-9a-f]{2})")


@dataclass(frozen=True)
class Turn:
    role: str  # "USER" or "ASSISTANT" as written in the file
    text: str


@dataclass(frozen=True)
class Transcript:
    model: str
    started: str  # "YYYY-MM-DD HH:MM:SS", local time, as written
    turns: tuple[Turn, ...]


def render_header(model: str, started: datetime) -> str:
    return f"{TITLE}{escape(_one_line(model))}\n*{started:%Y-%m-%d %H:%M:%S}*\n\n{SEPARATOR}"


def escape(text: str) -> str:
    text = _HEX_ESCAPE.sub(lambda m: "\\" + m.group(1) + m.group(2), text)
    text = _CONTROL.sub(lambda m: "\\x5c" * len(m.group(1)) + f"\\x{ord(m.group(2)):02x}", text)
    return _ROLE_LINE.sub(lambda m: "\\" + m.group(1) + m.group(2), text)


def unescape(text: str) -> str:
    text = _ESCAPED_ROLE_LINE.sub(r"\1", text)

    def hex_escape(m: re.Match[str]) -> str:
        if len(m.group(1)) == 1:
            return chr(int(m.group(2)[1:], 16))
        return m.group(1)[1:] + m.group(2)

    return _HEX_ESCAPE.sub(hex_escape, text)


def render_turn(role: str, text: str) -> str:
    return f"**{role.upper()}:**\n\n{escape(text)}\n\n{SEPARATOR}"


def render(transcript: Transcript) -> str:
    head = f"{TITLE}{escape(_one_line(transcript.model))}\n*{transcript.started}*\n\n{SEPARATOR}"
    return head + "".join(render_turn(t.role, t.text) for t in transcript.turns)


def parse(text: str, source: str = "transcript") -> Transcript:
    """Read a transcript; a turn cut off by a crash (no closing ``---``) is ignored."""
    header = _HEADER.match(text)
    if header is None:
        raise TranscriptError(f"{source} is not a voice conversation transcript (no header)")
    turns: list[Turn] = []
    pos = header.end()
    while (m := _TURN.match(text, pos)) is not None:
        turns.append(Turn(m.group(1), unescape(m.group(2))))
        pos = m.end()
    return Transcript(unescape(header.group(1)), header.group(2), tuple(turns))


def read(path: Path) -> Transcript:
    try:
        return parse(path.read_text(encoding="utf-8"), source=str(path))
    except (OSError, UnicodeDecodeError) as exc:
        raise TranscriptError(f"cannot read transcript {path}: {exc}") from None


class TranscriptWriter:
    """Appends each completed turn, flushed and fsynced, to a file of its own.

    The file is created at the first turn, so a session in which nothing was said leaves
    nothing behind; its name comes from the session's start time.

    Writing never raises: a turn that cannot be written (disk full, folder gone or read-only)
    stays in memory, in order, and is written at the next turn or at ``flush()`` when the
    session ends. ``on_failure`` hears about the first failure and ``on_recovery`` about the
    moment everything is on disk again; ``unwritten()`` is what is still only in memory.
    """

    def __init__(self, folder: Path, model: str, started: datetime, continues: str = "") -> None:
        self.folder = folder
        self.model = model
        self.started = started
        self.continues = continues  # ID of the session this one picks up, named in the sidecar
        self.path: Path | None = None
        self.failure = ""  # why the pending blocks could not be written; "" = all written
        self.on_failure: Callable[[str], None] = lambda message: None
        self.on_recovery: Callable[[], None] = lambda: None
        self._pending: list[tuple[str, str]] = []  # (".md" or ".jsonl", text), oldest first

    def append(self, role: str, text: str) -> None:
        self._pending.append((".md", render_turn(role, text)))
        self.flush()

    def record(self, meta: dict[str, Any]) -> None:
        """Add one JSON line to the sidecar (timings, models, audio files) for a turn."""
        line = json.dumps(meta, ensure_ascii=False, sort_keys=True, default=str) + "\n"
        self._pending.append((".jsonl", line))
        self.flush()

    def flush(self) -> bool:
        """Write what is pending, in order; False when some of it still cannot be written."""
        try:
            if self._pending and self.path is None:
                self.path = self._create()
            while self._pending:
                kind, text = self._pending[0]
                assert self.path is not None
                _append(self.path.with_suffix(kind), text)
                self._pending.pop(0)
        except TranscriptError as exc:
            if not self.failure:
                self.on_failure(str(exc))
            self.failure = str(exc)
            return False
        if self.failure:
            self.failure = ""
            self.on_recovery()
        return True

    def unwritten(self) -> str:
        """The turns only in memory, in transcript format (with a header), or ""."""
        turns = "".join(text for kind, text in self._pending if kind == ".md")
        return render_header(self.model, self.started) + turns if turns else ""

    def _create(self) -> Path:
        day = self.folder / f"{self.started:%Y}" / f"{self.started:%m}"
        try:
            _private_dirs(self.folder, day)
        except OSError as exc:
            raise TranscriptError(_cannot_write(self.folder, exc)) from None
        stem = f"{self.started:%Y-%m-%d_%H%M%S}"
        for n in range(1, 1000):
            path = day / (stem if n == 1 else f"{stem}-{n}")
            path = path.with_suffix(".md")
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
            except FileExistsError:
                continue  # another session started in the same second
            except OSError as exc:
                raise TranscriptError(_cannot_write(day, exc)) from None
            try:
                os.fchmod(fd, 0o600)
                _write_all(fd, render_header(self.model, self.started))
                _fsync_dir(day)
            except OSError as exc:
                path.unlink(missing_ok=True)  # tried again, whole, at the next turn
                raise TranscriptError(_cannot_write(day, exc)) from None
            finally:
                os.close(fd)
            if self.continues:
                meta = {"session": {"continues": self.continues}}
                self._pending.insert(0, (".jsonl", json.dumps(meta) + "\n"))
            return path
        raise TranscriptError(f"too many sessions started at {stem} in {day}")


def _cannot_write(folder: Path, exc: OSError) -> str:
    return f"cannot save the transcript in {folder}: {exc.strerror or exc}"


def _append(path: Path, text: str) -> None:
    """Append all of ``text`` or nothing: a write cut short (disk full) is undone, so the
    file never holds half a turn that would hide the turns after it from a reader."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    except OSError as exc:
        raise TranscriptError(_cannot_write(path.parent, exc)) from None
    size = -1
    try:
        size = os.fstat(fd).st_size
        os.fchmod(fd, 0o600)
        _write_all(fd, text)
    except OSError as exc:
        if size >= 0:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
        raise TranscriptError(_cannot_write(path.parent, exc)) from None
    finally:
        os.close(fd)


def _write_all(fd: int, text: str) -> None:
    data = valid(text).encode("utf-8")
    while data:
        data = data[os.write(fd, data) :]
    os.fsync(fd)


def _private_dirs(root: Path, leaf: Path) -> None:
    """Create missing folders owner-only whatever the umask (transcripts are private speech).

    An existing root the user chose (say ~/Documents) keeps its mode; the dated folders
    inside it are always 0700, which keeps the files private.
    """
    chain = [root / p for p in reversed(leaf.relative_to(root).parents)] + [leaf]
    created = [p for p in chain if not p.exists()]
    leaf.mkdir(parents=True, exist_ok=True, mode=0o700)
    for folder in {*created, *chain[1:]}:
        if folder.stat().st_mode & 0o777 != 0o700:
            folder.chmod(0o700)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _one_line(text: str) -> str:
    return " ".join(text.split())
