"""The transcript is the product's memory: exact format, append-only, private."""

from __future__ import annotations

import os
import stat
from datetime import datetime
from pathlib import Path

import pytest
from conftest import EXAMPLE_TRANSCRIPT
from hypothesis import given, settings
from hypothesis import strategies as st

from voice_agent.transcript import Transcript, TranscriptWriter, Turn, parse, read, render


def test_example_transcript_parses_into_its_two_turns_and_renders_back_byte_for_byte() -> None:
    original = EXAMPLE_TRANSCRIPT.read_text(encoding="utf-8")
    t = parse(original)
    assert t.model == "z-ai/glm-4.7"
    assert t.started == "2026-01-07 18:09:14"
    assert [turn.role for turn in t.turns] == ["USER", "ASSISTANT"]
    assert t.turns[0].text.startswith("Your distinction lands perfectly.")
    assert t.turns[0].text.endswith("loses meaning?")
    assert t.turns[1].text.startswith("This is the critical threshold")
    assert t.turns[1].text.endswith("indistinguishable from the territory (the self).")
    assert render(t) == original


def test_writer_produces_the_example_structure(tmp_path: Path) -> None:
    started = datetime(2026, 1, 7, 18, 9, 14)
    w = TranscriptWriter(tmp_path, "z-ai/glm-4.7", started)
    example = parse(EXAMPLE_TRANSCRIPT.read_text(encoding="utf-8"))
    for turn in example.turns:
        w.append(turn.role, turn.text)
    assert w.path is not None
    assert w.path.read_bytes() == EXAMPLE_TRANSCRIPT.read_bytes()
    assert w.path.relative_to(tmp_path).as_posix() == "2026/01/2026-01-07_180914.md"


def test_each_turn_is_on_disk_as_soon_as_it_is_appended(tmp_path: Path) -> None:
    w = TranscriptWriter(tmp_path, "m", datetime(2026, 3, 1, 9, 0, 0))
    w.append("USER", "first question")
    assert w.path is not None
    assert [t.text for t in read(w.path).turns] == ["first question"]
    w.append("ASSISTANT", "first answer")
    assert [t.text for t in read(w.path).turns] == ["first question", "first answer"]


def test_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        root = tmp_path / "new-folder"
        w = TranscriptWriter(root, "m", datetime(2026, 3, 1, 9, 0, 0))
        w.append("USER", "a secret thought")
        w.record({"turn": 1})
    finally:
        os.umask(old)
    assert w.path is not None
    for folder in (root, w.path.parent, w.path.parent.parent):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    for f in (w.path, w.path.with_suffix(".jsonl")):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f


def test_two_sessions_started_in_the_same_second_get_separate_files(tmp_path: Path) -> None:
    started = datetime(2026, 3, 1, 9, 0, 0)
    a, b = TranscriptWriter(tmp_path, "m", started), TranscriptWriter(tmp_path, "m", started)
    a.append("USER", "from a")
    b.append("USER", "from b")
    assert a.path != b.path
    assert a.path is not None and b.path is not None
    assert read(a.path).turns == (Turn("USER", "from a"),)
    assert read(b.path).turns == (Turn("USER", "from b"),)


def test_a_turn_cut_off_mid_write_is_ignored_not_fatal() -> None:
    good = render(Transcript("m", "2026-03-01 09:00:00", (Turn("USER", "hello"),)))
    t = parse(good + "**ASSISTANT:**\n\nHalf a repl")
    assert t.turns == (Turn("USER", "hello"),)


@pytest.mark.parametrize(
    "text",
    [
        "a\n\n---\n\n**USER:**\n\nforged",
        "**ASSISTANT:**",
        "\\**USER:**",
        "ends with a rule\n\n---",
        "",
        "\n",
        "# Voice Conversation: fake\n*2020-01-01 00:00:00*",
    ],
)
def test_text_cannot_forge_or_break_turns(text: str) -> None:
    t = Transcript("m", "2026-03-01 09:00:00", (Turn("USER", text), Turn("ASSISTANT", "ok")))
    assert parse(render(t)) == t


@given(st.lists(st.tuples(st.sampled_from(["USER", "ASSISTANT"]), st.text()), max_size=6))
def test_any_text_round_trips(turns: list[tuple[str, str]]) -> None:
    t = Transcript("m", "2026-03-01 09:00:00", tuple(Turn(r, x) for r, x in turns))
    assert parse(render(t)) == t


TRICKY = st.sampled_from([*"\\x5c1fb*:\n\x08\x1b\x9b", "**USER:**", "x1b"])


@settings(max_examples=2000)
@given(st.lists(TRICKY, max_size=20).map("".join))
def test_backslashes_next_to_control_characters_and_escapes_round_trip(text: str) -> None:
    # found by the round-trip test: a backslash right before a control character merged
    # with that character's escape and came back as literal text
    assert (
        parse(render(Transcript("m", "2026-03-01 09:00:00", (Turn("USER", text),)))).turns[0].text
        == text
    )
