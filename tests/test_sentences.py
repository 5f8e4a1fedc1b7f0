"""Streaming sentence splitting: pieces come out as soon as they are complete, and only then."""

from __future__ import annotations

import pytest

from voice_agent.sentences import SentenceSplitter
from voice_agent.speech_text import for_speech


def split(text: str, step: int = 3, first: int = 0) -> list[str]:
    """Feed ``text`` in small chunks, the way tokens arrive."""
    s = SentenceSplitter(first)
    out: list[str] = []
    for i in range(0, len(text), step):
        out += s.feed(text[i : i + step])
    return out + s.flush()


@pytest.mark.parametrize(
    ("text", "pieces"),
    [
        ("Hello there. How are you? Fine!", ["Hello there.", "How are you?", "Fine!"]),
        (
            "Mr. Smith met Dr. Jones at 3.30 today. Then they left.",
            ["Mr. Smith met Dr. Jones at 3.30 today.", "Then they left."],
        ),
        ("Use tools, e.g. a hammer. It works.", ["Use tools, e.g. a hammer.", "It works."]),
        ("The U.S. Army arrived. Good.", ["The U.S. Army arrived.", "Good."]),
        ("Pi is 3.14159 roughly. Yes.", ["Pi is 3.14159 roughly.", "Yes."]),
        ("Well... maybe not. Wait... What?", ["Well... maybe not.", "Wait...", "What?"]),
        ('He said "Stop." Then he went.', ['He said "Stop."', "Then he went."]),
        ("Steps:\n1. Open it.\n2. Close it.", ["Steps:", "1. Open it.", "2. Close it."]),
        ("**Sure.** Here you go.", ["**Sure.**", "Here you go."]),
        ("## Title\nBody text", ["## Title", "Body text"]),
    ],
)
def test_sentences(text: str, pieces: list[str]) -> None:
    assert split(text) == pieces
    assert split(text, step=1) == pieces


def test_code_fence_is_held_until_closed_and_never_spoken() -> None:
    text = "Run this:\n```python\nprint('a. b. c.')\nx = 1\n```\nDone. Bye."
    pieces = split(text)
    assert pieces[0] == "Run this:"
    assert pieces[-2:] == ["Done.", "Bye."]
    assert [for_speech(p) for p in pieces if "```" in p] == [""]


def test_table_is_held_whole_so_it_reads_as_rows() -> None:
    text = "Here:\n| Name | Age |\n|---|---|\n| Bob | 42 |\nThat is all."
    pieces = split(text)
    assert pieces[1].startswith("| Name") and pieces[1].endswith("| Bob | 42 |")
    assert for_speech(pieces[1]) == "Name, Age.\nBob, 42."
    assert pieces[-1] == "That is all."


def test_think_block_is_held_and_dropped_from_speech() -> None:
    pieces = split("<think>First. Second.</think>The answer is four.")
    assert [for_speech(p) for p in pieces if for_speech(p)] == ["The answer is four."]


def test_a_sentence_is_not_released_before_its_end_is_certain() -> None:
    s = SentenceSplitter()
    assert s.feed("I met Mr.") == []
    assert s.feed(" Smith today.") == []  # could still be "today.5" or continue lowercase
    assert s.feed(" He") == ["I met Mr. Smith today."]
    assert s.flush() == ["He"]


def test_first_fragment_may_end_at_a_clause_once_long_enough() -> None:
    text = "Well, the short answer to your question, as far as I know, is yes. More later."
    pieces = split(text, first=30)
    assert pieces[0] == "Well, the short answer to your question,"
    assert pieces[1:] == ["as far as I know, is yes.", "More later."]


def test_run_on_text_is_still_spoken_in_bounded_pieces() -> None:
    text = "word " * 300
    pieces = split(text)
    assert len(pieces) > 1 and all(len(p) <= 400 for p in pieces)
    assert " ".join(pieces).split() == text.split()
