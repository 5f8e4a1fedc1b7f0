"""One reply, from the model to the speaker, while the model is still writing.

    model chunks -> shown -> SentenceSplitter (pieces that know where they end in the reply)
                 -> speakable text (speech_text) -> Piper -> output, in order

Two tasks: one reads the stream and cuts pieces, one voices them, so synthesis of a piece
overlaps the model writing the next. ``gate`` holds back the first sound (and the text) while
the user is still talking. What of an interrupted reply was spoken is known from each played
piece's end offset and how much of its audio reached the output.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from voice_agent.audio import Audio
from voice_agent.config import ReplyConfig
from voice_agent.display import Display
from voice_agent.errors import LlmError
from voice_agent.llm_reply import ReplyChunk
from voice_agent.recorder import Turn
from voice_agent.sentences import Piece, SentenceSplitter
from voice_agent.speaker import AudioOut
from voice_agent.speech_text import for_speech
from voice_agent.tts import clauses

INTERRUPTED = " [interrupted]"


@dataclass(frozen=True)
class Voiced:
    """Audio queued for output: part of a piece, as a share of the piece's spoken words."""

    piece: Piece
    start: float  # 0..1
    end: float  # 0..1; 1 = the piece's last part


class ReplyPipeline:
    def __init__(
        self,
        turn: Turn,
        config: ReplyConfig,
        display: Display,
        synthesize: Callable[[str], Awaitable[Audio]] | None,
        out: AudioOut | None,
        gate: asyncio.Event | None,
        commit: Callable[[], None],
        hold_commit_s: float = 0.0,
    ) -> None:
        self.turn = turn
        self.config = config
        self.display = display
        self.synthesize = synthesize
        self.out = out
        self.gate = gate
        self.commit = commit  # the user's turn goes into the transcript as the reply starts...
        self.hold_commit_s = hold_commit_s  # ...or this long after its first sound (rejoin)
        self._commit_timer: asyncio.TimerHandle | None = None
        self.parts: list[str] = []
        self.played: list[Voiced] = []  # in output order: the index is the output's tag
        self.finish = "incomplete"
        self._held: list[str] = []  # reply text not shown yet: the user may not have finished
        self._queue: asyncio.Queue[Piece | None] = asyncio.Queue()
        self._splitter = SentenceSplitter(config.first_fragment_chars)

    @property
    def text(self) -> str:
        """The reply as received so far."""
        return "".join(self.parts)

    async def run(self, chunks: AsyncIterator[ReplyChunk]) -> str:
        """Show and speak the whole reply; its finish reason."""
        producer = asyncio.create_task(self._produce(chunks))
        speaker = asyncio.create_task(self._speak())
        try:
            await producer
            await speaker
        finally:
            producer.cancel()
            speaker.cancel()
            if self._commit_timer is not None:
                self._commit_timer.cancel()
        if not self.text.strip():
            raise LlmError("the LLM sent an empty reply")
        if self.gate is not None:
            await self.gate.wait()
        self._start()
        if self.out is not None:
            await self.out.drained()
            first = self.out.first_sound_at()
            if first is not None:
                self.turn.mark("first_audio_out", first)
        self._start(at_once=True)  # heard to the end: whatever the hold, it is kept
        if self.finish == "incomplete":
            self.display.note("(the reply was cut off: the connection ended early)")
        return self.finish

    def _start(self, at_once: bool = False) -> None:
        """The reply is about to be seen or heard: the user's turn goes into the transcript,
        ``hold_commit_s`` later when it is spoken live (if the user goes on before then, the
        reply was a false start and their words join this turn instead).

        A reply withdrawn meanwhile stops here instead. Its task was cancelled, but asyncio
        can lose a cancellation that races a read finishing at the same moment (3.11's
        wait_for, a task awaiting another), and the reply then went on: the user's words were
        committed twice, once alone and once merged with what they said next."""
        if self.turn.withdrawn:
            raise asyncio.CancelledError
        if self.turn.committed:
            return
        if at_once or self.hold_commit_s <= 0 or self.out is None:
            self._commit()
        elif self._commit_timer is None:
            self._commit_timer = asyncio.get_running_loop().call_later(
                self.hold_commit_s, self._commit
            )

    @property
    def sounded(self) -> bool:
        """Some of the reply has been queued to be heard."""
        return bool(self.played)

    def _commit(self) -> None:
        if not self.turn.committed and not self.turn.withdrawn:
            self.commit()

    def kept(self, shown: bool) -> str:
        """What the user got of an interrupted reply, marked: what was shown when they read
        it (``shown``), else what was spoken, ending mid-piece on a word boundary."""
        if shown or self.out is None:
            text = self.text
            return (text.rstrip() + "\u2026" if text.strip() else "") + INTERRUPTED
        heard: dict[int, float] = {}  # piece end -> share of its words played
        for tag, part in enumerate(self.played):
            fraction = self.out.played_fraction(tag)
            if fraction > 0 or part.start == 0:
                share = part.start + (part.end - part.start) * fraction
                heard[part.piece.end] = max(heard.get(part.piece.end, 0.0), share)
        text, start, kept = self.text, 0, ""
        for end, share in heard.items():  # pieces in the order they were voiced
            if share >= 0.999:
                kept, start = text[:end], end
                continue
            words = text[start:end].split()
            said = words[: int(len(words) * share)]
            if said:
                kept = (kept + " " + " ".join(said)).strip() + "\u2026"
            break
        return kept.strip() + INTERRUPTED

    def sounding(self) -> str:
        """The reply's text around where the output is (or paused): the piece it has reached
        and the one before. A leak of the reply through the echo canceller is of the last few
        hundred ms played, so only these words can come back as its echo; a user who says
        "no, not that" over a long reply uses words it holds somewhere."""
        if self.out is None:
            return self.text
        if not self.played:
            return ""
        reached = max((tag for tag in range(len(self.played))
                       if self.out.played_fraction(tag) > 0), default=0)  # fmt: skip
        ends = sorted({part.piece.end for part in self.played})
        at = ends.index(self.played[reached].piece.end)
        return self.text[ends[at - 2] if at >= 2 else 0 : ends[at]]

    def _show(self, text: str) -> None:
        if self.turn.withdrawn:
            raise asyncio.CancelledError  # see _start
        if self.gate is not None and not self.gate.is_set():
            self._held.append(text)
            return
        if self._held:
            self.display.reply_text("".join(self._held))
            self._held.clear()
        if text:
            self.display.reply_text(text)

    async def _produce(self, chunks: AsyncIterator[ReplyChunk]) -> None:
        self.turn.mark("request_sent")
        async for chunk in chunks:
            if chunk.reasoning:
                self.turn.mark("first_reasoning")
                self.turn.reasoning = (self.turn.reasoning or "") + chunk.reasoning
            if chunk.text:
                self.turn.mark("first_token")
                self.parts.append(chunk.text)
                self._show(chunk.text)
                if self.config.streaming:
                    for piece in self._splitter.feed_pieces(chunk.text):
                        await self._queue_piece(piece)
            if chunk.finish_reason is not None:
                self.finish = chunk.finish_reason
        self.turn.mark("reply_done")
        if self.config.streaming:
            rest = self._splitter.flush_pieces()
        else:
            rest = [Piece(self.text, len(self.text))]
        for piece in rest:
            await self._queue_piece(piece)
        await self._queue.put(None)
        if self._held and self.gate is not None:
            await self.gate.wait()
            self._show("")
        self.display.reply_end()

    async def _queue_piece(self, piece: Piece) -> None:
        self.turn.mark("first_sentence_ready")
        await self._queue.put(piece)

    async def _speak(self) -> None:
        while (piece := await self._queue.get()) is not None:
            speakable = for_speech(piece.text)
            if not speakable or self.synthesize is None:
                continue
            if piece.continues and speakable.endswith(".") and not piece.text.endswith("."):
                speakable = speakable[:-1]  # no sentence's end (pause, falling tone) mid-sentence
            # a long sentence is voiced part by part (where the voice would cut it anyway), so
            # its first part plays while the next is synthesised
            parts = clauses(speakable) if self.config.streaming else [speakable]
            total, done = len(speakable.split()), 0
            for part in parts:
                started = time.perf_counter()
                audio = await self.synthesize(part)
                self.turn.add_tts(time.perf_counter() - started, audio.seconds)
                self.turn.mark("first_audio_ready")
                if self.gate is not None:
                    await self.gate.wait()
                self._start()
                words = len(part.split())
                if self.out is not None:
                    tag = len(self.played)
                    self.played.append(Voiced(piece, done / total, (done + words) / total))
                    self.out.enqueue(audio, tag)
                    self.turn.reply_audio.append((tag, audio))
                done += words
