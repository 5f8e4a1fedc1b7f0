"""``voice-agent transcripts ...``: list, show, search, export and summarise past sessions."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from voice_agent import archive
from voice_agent.archive import Entry
from voice_agent.errors import ConfigError, TranscriptError
from voice_agent.safe_text import inert, json_text
from voice_agent.transcript import render


def pick(folder: Path, ident: str | None, use_latest: bool) -> Entry:
    if use_latest or not ident:
        return archive.latest(folder)
    return archive.find(folder, ident)


def say(line: str = "") -> None:
    """Print one line of output; everything in it came from files, so it is made inert."""
    print(inert(line))


def list_sessions(folder: Path, limit: int, as_json: bool) -> None:
    found = archive.entries(folder)[: limit if limit > 0 else None]
    if as_json:
        print(json_text(indent=2, data=[_summary(e) for e in found]))
        return
    if not found:
        say(f"no transcripts yet in {folder}")
        return
    for e in found:
        s = _summary(e)
        duration = _duration(s["duration_s"])
        more = f"  (continues {s['continues']})" if s["continues"] else ""
        say(f"{e.id}  {s['started']}  {s['model']}  {s['turns']} turns  {duration}  "
            f"{s['first_words']}{more}")  # fmt: skip


def _summary(e: Entry) -> dict[str, Any]:
    return {
        "id": e.id,
        "path": str(e.path),
        "started": e.transcript.started,
        "model": e.transcript.model,
        "turns": len(e.transcript.turns),
        "duration_s": e.duration_s(),
        "first_words": archive.first_words(e),
        "continues": e.continues,
    }


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def show(entry: Entry, raw: bool) -> None:
    text = entry.path.read_text(encoding="utf-8")
    if raw or not sys.stdout.isatty():
        sys.stdout.write(inert(text) if sys.stdout.isatty() else text)
        return
    from rich.console import Console
    from rich.markdown import Markdown

    Console().print(Markdown(inert(text)))


def search(folder: Path, query: str, since: str | None, until: str | None) -> int:
    hits = list(
        archive.search(folder, query, _date(since, "--since"), _date(until, "--until", end=True))
    )
    for hit in hits:
        say(f"{hit.entry.transcript.started}  {hit.entry.id}  turn {hit.turn}  {hit.role}: "
            f"{archive.snippet(hit.text, query)}")  # fmt: skip
    if not hits:
        say(f"no turn mentions {query!r}")
    return 0 if hits else 1


def _date(value: str | None, flag: str, end: bool = False) -> datetime | None:
    if not value:
        return None
    try:
        day = datetime.strptime(value, "%Y-%m-%d")
    except ValueError:
        raise ConfigError(f"{flag} takes a date as YYYY-MM-DD, got {value!r}") from None
    return day.replace(hour=23, minute=59, second=59) if end else day


def export(entry: Entry, fmt: str) -> None:
    t = entry.transcript
    if fmt == "md":
        sys.stdout.write(render(t))
    elif fmt == "json":
        data = {"id": entry.id, "model": t.model, "started": t.started,
                "turns": [{"role": x.role.lower(), "text": x.text} for x in t.turns]}  # fmt: skip
        print(json_text(indent=2, data=data))
    else:
        say(f"Voice conversation with {t.model}, {t.started}\n")
        for x in t.turns:
            say(f"{x.role.capitalize()}: {x.text}\n")


def stats(folder: Path, ident: str | None) -> None:
    chosen = [archive.find(folder, ident)] if ident else archive.entries(folder)
    records = [r for e in chosen for r in e.sidecar]
    table = archive.stage_stats(records)
    if not table:
        say("no timed turns yet")
        return
    say(f"{len(records)} turns in {len(chosen)} session(s); seconds")
    say(f"{'stage':34}{'median':>8}{'p90':>8}{'turns':>7}")
    for name, row in table.items():
        say(f"{name:34}{row['median']:>8.3f}{row['p90']:>8.3f}{row['turns']:>7}")


def play(entry: Entry, turn: int | None, output_device: str) -> None:
    """Replay the kept audio of a session (or one turn): what the user said, then the reply."""
    import asyncio

    from voice_agent.audio import read_file
    from voice_agent.speaker import Speaker

    records = [r for r in entry.sidecar if r.get("audio_files")]
    if turn is not None:
        records = [r for r in records if r.get("turn") == turn]
    if not records:
        what = f"turn {turn} of {entry.id}" if turn is not None else entry.id
        raise TranscriptError(f"no audio kept for {what}: sessions keep audio with --save-audio "
                              "(transcripts.save_audio = true)")  # fmt: skip
    clips = []
    for r in records:
        for kind in ("user", "reply"):
            name = r["audio_files"].get(kind)
            if name:
                path = entry.path.parent / name
                if not archive.inside(entry.path.parent, path):
                    raise TranscriptError(f"{name} is outside the transcripts folder")
                clips.append((r.get("turn"), kind, read_file(path, resample=False)))
    speaker = Speaker(output_device)

    async def run() -> None:
        for number, kind, audio in clips:
            say(f"turn {number}: {'you' if kind == 'user' else 'assistant'} "
                f"({audio.seconds:.1f} s)")  # fmt: skip
            speaker.enqueue(audio, 0)
            await speaker.drained()

    try:
        asyncio.run(run())
    finally:
        speaker.close()
