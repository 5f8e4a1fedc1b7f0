"""The transcripts folder: finding sessions by ID, listing, searching and summarising them.

An ID is a transcript's file stem (``2026-11-25_214520``) or any unambiguous prefix of it.
A path argument is accepted too, but only inside the folder: ``..``, absolute paths elsewhere
and symlinks that lead out of it are refused.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from voice_agent.errors import TranscriptError
from voice_agent.transcript import Transcript, read

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Entry:
    id: str
    path: Path
    transcript: Transcript

    @property
    def started(self) -> datetime | None:
        try:
            return datetime.strptime(self.transcript.started, "%Y-%m-%d %H:%M:%S")
        except ValueError:
            return None

    @cached_property
    def sidecar(self) -> list[dict[str, Any]]:
        """The sidecar's records; a line that cannot be read is skipped with a warning, so
        one damaged file never stops a listing of all the others."""
        path = self.path.with_suffix(".jsonl")
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return []  # none (a session without metadata), or unreadable: the turns still are
        records = []
        lines = text.splitlines()
        for number, line in enumerate(lines, start=1):
            try:
                record = json.loads(line)
            except (ValueError, RecursionError):
                record = None
            if _readable(record):
                records.append(record)
            elif number < len(lines) or text.endswith("\n"):  # not a line cut by a crash
                log.warning("%s line %d: not a turn record; skipped", path, number)
        return records

    @property
    def continues(self) -> str:
        """ID of the session this one picked up (``transcripts resume``), or ""."""
        for record in self.sidecar[:1]:
            return str(record.get("session", {}).get("continues", ""))
        return ""

    def duration_s(self) -> float | None:
        """From the session start to the end of its last recorded turn."""
        started = self.started
        ends = [max(r["events"].values()) for r in self.sidecar if r.get("events")]
        if started is None or not ends:
            return None
        return max(0.0, float(max(ends)) - started.timestamp())


def _readable(record: Any) -> bool:
    """A record whose known fields have the types review relies on."""
    if not isinstance(record, dict):
        return False
    timed = [record.get(k, {}) for k in ("events", "stages")]
    return (
        all(isinstance(t, dict) for t in timed)
        and all(_is_number(v) for t in timed for v in t.values())
        and isinstance(record.get("session", {}), dict)
        and isinstance(record.get("audio_files", {}), dict)
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def inside(folder: Path, path: Path) -> bool:
    """True when ``path`` lies in ``folder`` once symlinks are followed (a loop: false)."""
    try:
        root = folder.resolve()
        target = path.resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop (Python 3.11)
        return False
    return target == root or root in target.parents


def entries(folder: Path) -> list[Entry]:
    """Every readable transcript in the folder, newest first."""
    if not folder.is_dir():
        return []
    found = []
    for path in folder.rglob("*.md"):
        if not path.is_file() or not inside(folder, path):
            continue  # a symlink out of the folder is not ours to read
        try:
            found.append(Entry(path.stem, path, read(path)))
        except TranscriptError:
            continue  # not a transcript (a note the user keeps there)
    return sorted(found, key=lambda e: (e.transcript.started, e.id), reverse=True)


def find(folder: Path, ident: str) -> Entry:
    """The transcript named by ``ident``: an ID, an ID prefix, or a path inside the folder."""
    if not ident:
        raise TranscriptError("give a transcript ID (see 'voice-agent transcripts list')")
    if "/" in ident or "\\" in ident or ident.startswith(".") or ident.endswith(".md"):
        path = Path(ident) if Path(ident).is_absolute() else folder / ident
        try:
            path.resolve()
        except RuntimeError:
            raise TranscriptError(f"{ident} is a symbolic link that leads back to itself") from None
        if not inside(folder, path):
            raise TranscriptError(
                f"{ident} is outside the transcripts folder {folder}: only transcripts in it "
                "can be named"
            )
        if not path.is_file():
            raise TranscriptError(f"no transcript at {ident} in {folder}")
        return Entry(path.stem, path, read(path))
    all_entries = entries(folder)
    matches = [e for e in all_entries if e.id == ident] or [
        e for e in all_entries if e.id.startswith(ident)
    ]
    if not matches:
        raise TranscriptError(f"no transcript {ident!r} in {folder}: see 'voice-agent transcripts'")
    if len(matches) > 1:
        some = ", ".join(e.id for e in matches[:4])
        raise TranscriptError(f"{ident!r} matches {len(matches)} transcripts ({some}, ...): "
                              "give more of the ID")  # fmt: skip
    return matches[0]


def latest(folder: Path) -> Entry:
    found = entries(folder)
    if not found:
        raise TranscriptError(f"no transcripts yet in {folder}")
    return found[0]


def first_words(entry: Entry, n: int = 8) -> str:
    for turn in entry.transcript.turns:
        if turn.role == "USER":
            words = turn.text.split()
            return " ".join(words[:n]) + (" \u2026" if len(words) > n else "")
    return ""


@dataclass(frozen=True)
class Hit:
    entry: Entry
    turn: int  # 1-based index into the transcript's turns
    role: str
    text: str


def search(
    folder: Path, query: str, since: datetime | None = None, until: datetime | None = None
) -> Iterator[Hit]:
    """Turns containing ``query`` (case-insensitive), newest session first."""
    needle = query.casefold()
    for entry in entries(folder):
        started = entry.started
        if started is not None and ((since and started < since) or (until and started > until)):
            continue
        for i, turn in enumerate(entry.transcript.turns, start=1):
            if needle in turn.text.casefold():
                yield Hit(entry, i, turn.role, turn.text)


def snippet(text: str, query: str, width: int = 70) -> str:
    flat = " ".join(text.split())
    at = max(flat.casefold().find(query.casefold()), 0)
    start = max(0, at - width // 2)
    piece = flat[start : start + width]
    return ("\u2026" if start else "") + piece + ("\u2026" if start + width < len(flat) else "")


def stage_stats(records: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Median and 90th percentile of each stage duration across turns, in seconds."""
    values: dict[str, list[float]] = {}
    for r in records:
        for name, seconds in r.get("stages", {}).items():
            values.setdefault(name, []).append(float(seconds))
    out = {}
    for name, xs in sorted(values.items()):
        xs.sort()
        p90 = xs[min(len(xs) - 1, round(0.9 * (len(xs) - 1)))]
        out[name] = {"median": statistics.median(xs), "p90": p90, "turns": len(xs)}
    return out
