"""One reply from the model to the output: when each part is voiced, and what an interrupted
reply kept."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator

import numpy as np

from voice_agent.audio import Audio
from voice_agent.config import ReplyConfig
from voice_agent.display import Display
from voice_agent.live import is_echo
from voice_agent.llm_reply import ReplyChunk
from voice_agent.recorder import Turn
from voice_agent.speaking import ReplyPipeline

REPLY = (
    "Most people notice a real difference after about a week of daily practice. A few "
    "minutes each morning is enough to start, and it gets easier every day. Try it."
)


class Output:
    """Records what happened in order; how much of each tag "played" is set by the test."""

    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.fractions: dict[int, float] = {}

    def enqueue(self, audio: Audio, tag: int) -> None:
        self.log.append(f"play {tag}")

    def played_fraction(self, tag: int) -> float:
        return self.fractions.get(tag, 0.0)

    def stop(self) -> None:
        pass

    def reset(self) -> None:
        pass

    def first_sound_at(self) -> float | None:
        return None

    async def drained(self) -> None:
        pass


def run_reply(text: str, streaming: bool = True) -> tuple[ReplyPipeline, Output, list[str]]:
    log: list[str] = []

    async def synthesize(part: str) -> Audio:
        log.append(f"voice {part}")
        await asyncio.sleep(0.01)
        return Audio(np.zeros(160 * len(part.split()), dtype=np.int16), 16_000)

    async def chunks() -> AsyncIterator[ReplyChunk]:
        for word in text.split(" "):
            yield ReplyChunk(word + " ")
            await asyncio.sleep(0.001)
        yield ReplyChunk(finish_reason="stop")

    out = Output(log)
    pipeline = ReplyPipeline(
        Turn("text"), ReplyConfig(streaming=streaming), Display(io.StringIO(), io.StringIO()),
        synthesize, out, None, lambda: None,
    )  # fmt: skip
    asyncio.run(pipeline.run(chunks()))
    return pipeline, out, log


def test_a_long_first_sentence_starts_playing_before_the_model_has_finished_it() -> None:
    _, _, log = run_reply(REPLY)
    assert log[:2] == ["voice Most people notice a real difference", "play 0"]
    assert log[2] == "voice after about a week of daily practice."


def test_a_long_sentence_plays_its_first_part_while_the_next_is_voiced() -> None:
    _, _, log = run_reply(REPLY)
    i = log.index("voice A few minutes each morning is enough to start,")
    assert log[i + 1 : i + 3] == ["play 2", "voice and it gets easier every day."]


def test_sequential_replies_are_voiced_whole() -> None:
    _, _, log = run_reply(REPLY, streaming=False)
    assert log == [f"voice {REPLY}", "play 0"]


def test_an_interrupted_reply_keeps_what_was_played_to_the_word() -> None:
    pipeline, out, _ = run_reply(REPLY)
    # pieces: 0 "Most ... difference", 1 "after ... practice.", 2+3 the long sentence in two
    # parts, 4 "Try it."
    out.fractions = {0: 1.0, 1: 1.0, 2: 1.0}
    assert pipeline.kept(shown=False) == (
        "Most people notice a real difference after about a week of daily practice. A few "
        "minutes each morning is enough to start,\u2026 [interrupted]"
    )
    out.fractions = {0: 1.0, 1: 0.5}
    assert pipeline.kept(shown=False) == (
        "Most people notice a real difference after about a\u2026 [interrupted]"
    )
    out.fractions = {0: 1.0, 1: 1.0, 2: 1.0, 3: 1.0}
    assert pipeline.kept(shown=False) == REPLY.removesuffix(" Try it.") + " [interrupted]"
    out.fractions = {}
    assert pipeline.kept(shown=False).strip() == "[interrupted]"  # nothing was heard


def test_only_the_words_around_where_the_reply_is_can_be_its_echo() -> None:
    """A doubted voice is the reply's echo only in words of the piece being played and the one
    before: "a week" said over the reply's last words is the user's."""
    pipeline, out, _ = run_reply(REPLY)
    out.fractions = {0: 1.0, 1: 0.5}  # in "after about a week of daily practice."
    assert pipeline.sounding() == (
        "Most people notice a real difference after about a week of daily practice."
    )
    out.fractions = {0: 1.0, 1: 1.0, 2: 1.0, 3: 1.0, 4: 0.5}  # in "Try it."
    assert pipeline.sounding() == (
        " A few minutes each morning is enough to start, and it gets easier every day. Try it."
    )
    assert is_echo("Try it.", pipeline.sounding())
    assert not is_echo("a week", pipeline.sounding())
    out.fractions = {}  # nothing sounded yet: the first piece is all that can come back
    assert pipeline.sounding() == "Most people notice a real difference"


def test_only_a_long_first_sentence_is_cut_at_a_phrase() -> None:
    _, _, log = run_reply("Yes. Most people notice a real difference after a week.")
    whole = "voice Most people notice a real difference after a week."
    assert log == ["voice Yes.", "play 0", whole, "play 1"]
