"""One turn: transcribe -> stream the reply -> speak it piece by piece -> record.

Speaking starts with the first complete sentence while the model is still writing. A turn
can be cancelled at any point (the user barged in, resumed speaking, or pressed Ctrl+C); the
transcript and the model's history then keep exactly what was spoken, marked interrupted.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from voice_agent.audio import Audio, concat, write_private_flac
from voice_agent.config import ReplyConfig
from voice_agent.display import Display
from voice_agent.errors import LlmError, LlmHttpError, VoiceAgentError, spoken
from voice_agent.llm import ChatClient, Conversation, Message, ReplyChunk, is_context_error
from voice_agent.sentences import SentenceSplitter
from voice_agent.speaker import AudioOut
from voice_agent.speech_text import for_speech
from voice_agent.stt import SpeechToText, Transcription
from voice_agent.transcript import TranscriptWriter
from voice_agent.tts import TextToSpeech

log = logging.getLogger(__name__)
INTERRUPTED = " [interrupted]"
UNEXPECTED_SPOKEN = "Sorry, something went wrong with that answer. The details are on the screen."


@dataclass
class Turn:
    """A user turn in progress, with the metadata that goes to the sidecar."""

    number: int
    source: str
    text: str = ""
    committed: bool = False  # the USER block is in the transcript
    audio: Audio | None = None  # what the user said
    reply_audio: list[tuple[int, Audio]] = field(default_factory=list)  # (tag, piece) spoken
    events: dict[str, float] = field(default_factory=dict)  # name -> time.time()
    extra: dict[str, Any] = field(default_factory=dict)

    def mark(self, event: str, at: float | None = None) -> None:
        self.events.setdefault(event, at if at is not None else time.time())


@dataclass(frozen=True)
class Reply:
    """The assistant's answer, as it went into the transcript."""

    text: str  # the model's text, or the part that was spoken before an interruption
    audio_seconds: float
    finish_reason: str  # "stop", "length", "incomplete", "interrupted"


class Agent:
    def __init__(
        self,
        chat: ChatClient,
        conversation: Conversation,
        writer: TranscriptWriter,
        display: Display,
        reply_config: ReplyConfig,
        stt: SpeechToText | None = None,
        tts: TextToSpeech | None = None,
        out: AudioOut | None = None,
    ) -> None:
        self.chat = chat
        self.conversation = conversation
        self.writer = writer
        self.display = display
        self.config = reply_config
        self.stt = stt
        self.tts = tts
        self.out = out
        self.turns = 0
        self.failures = 0
        self.speak_notices = False  # say errors aloud (a live speaker, not a reply file)
        self.keep_audio = False  # transcripts.save_audio: FLAC of each utterance and reply
        self.keep_shown = False  # an interrupted reply keeps what was shown, not what was spoken
        self._unsaid: str = ""  # a notice to speak once the reply in progress is over
        writer.on_failure = self._not_saved
        writer.on_recovery = self._saved_again

    def _not_saved(self, message: str) -> None:
        self.display.error(
            f"{message}; the conversation goes on, and unsaved turns are kept until they can "
            "be written (or printed when the session ends)"
        )
        self._unsaid = (
            "Sorry, I cannot save our conversation right now. The details are on the screen."
        )

    def _saved_again(self) -> None:
        self.display.note(
            f"(the transcript can be written again: every turn is in {self.writer.path})"
        )

    @property
    def models(self) -> dict[str, str]:
        return {
            "stt": self.stt.name if self.stt else "",
            "llm": self.chat.model,
            "tts": self.tts.name if self.tts else "",
        }

    def new_turn(self, source: str) -> Turn:
        """A turn in progress; it is numbered when committed, so turns dropped before (a
        speculative reply the user talked over) leave no gaps."""
        return Turn(0, source)

    async def transcribe(self, audio: Audio) -> Transcription:
        assert self.stt is not None, "audio turns need a speech recogniser"
        return await asyncio.to_thread(_one_model_at_a_time, self.stt.transcribe, audio)

    def commit(self, turn: Turn) -> None:
        """Put the user's words in the transcript (once) and in the model's history."""
        if not turn.committed:
            turn.committed = True
            self.turns += 1
            turn.number = self.turns
            self.writer.append("USER", turn.text)
            self.conversation.add("user", turn.text)

    async def respond(self, turn: Turn, gate: asyncio.Event | None = None) -> Reply | None:
        """Ask the model and speak its reply; None when the model failed (already reported).

        ``gate`` holds back the first sound while it is clear (the user is still talking);
        the user's turn is committed when the reply starts, so a turn that is merged with
        what the user says next never reaches the transcript twice.
        """
        pieces: list[tuple[int, int]] = []  # (end offset in the text, tag) per spoken piece
        parts: list[str] = []
        finish = "incomplete"
        if self.out is not None:
            self.out.reset()
        try:
            finish = await self._stream(turn, gate, parts, pieces)
        except asyncio.CancelledError:
            if self.out is not None:
                self.out.stop()
            if turn.committed:
                self._finish(turn, self._kept_part("".join(parts), pieces), "interrupted")
            raise
        except VoiceAgentError as exc:
            return await self._failed(turn, gate, "".join(parts), str(exc), spoken(exc))
        except Exception as exc:  # a bug or a library's surprise ends this turn, not the session
            log.debug("unexpected error in turn %d", turn.number, exc_info=True)
            message = f"unexpected error: {type(exc).__name__}: {exc} (--debug shows the details)"
            return await self._failed(turn, gate, "".join(parts), message, UNEXPECTED_SPOKEN)
        reply = self._finish(turn, "".join(parts), finish)
        await self.say_unsaid()
        return reply

    async def say_unsaid(self) -> None:
        """Speak a notice that came up during the reply (the transcript cannot be saved)."""
        notice, self._unsaid = self._unsaid, ""
        if notice:
            await self._say(notice)

    async def _failed(
        self, turn: Turn, gate: asyncio.Event | None, received: str, message: str, said: str
    ) -> Reply | None:
        """Tell the user, and keep what they got: None when no reply arrived at all."""
        if gate is not None:
            await gate.wait()  # a reply asked for early fails no sooner than it would speak
        self.failures += 1
        self.display.error(message)
        turn.extra["error"] = message
        self.commit(turn)
        if received.strip():
            # The reply broke off after part of it arrived, was shown and maybe spoken:
            # the transcript keeps what the user got, the sidecar says it ended in error.
            if self.out is not None:
                await self.out.drained()
            reply = self._finish(turn, received, "error")
            await self.say_unsaid()
            return reply
        self.conversation.drop_last_user()
        self._record(turn)
        await self._say(said)
        await self.say_unsaid()
        return None

    async def _say(self, text: str) -> None:
        """A notice in the agent's voice, e.g. why there is no answer. Not a turn: the
        transcript holds the printed line in the sidecar instead."""
        if not self.speak_notices or self.tts is None or self.out is None:
            return
        tts = self.tts
        audio = await asyncio.to_thread(_one_model_at_a_time, tts.synthesize, text)
        self.out.reset()
        self.out.enqueue(audio, 0)
        try:
            await self.out.drained()
        except asyncio.CancelledError:
            self.out.stop()
            raise

    async def _stream(
        self,
        turn: Turn,
        gate: asyncio.Event | None,
        parts: list[str],
        pieces: list[tuple[int, int]],
    ) -> str:
        queue: asyncio.Queue[tuple[str, int] | None] = asyncio.Queue()
        splitter = SentenceSplitter(self.config.first_fragment_chars)
        finish = "incomplete"
        held: list[str] = []  # reply text not shown yet: the user may not have finished

        def show(text: str) -> None:
            if gate is not None and not gate.is_set():
                held.append(text)
                return
            if held:
                self.display.reply_text("".join(held))
                held.clear()
            if text:
                self.display.reply_text(text)

        async def produce() -> None:
            nonlocal finish
            turn.mark("request_sent")
            offset = 0
            async for chunk in self._ask(turn):
                if chunk.text:
                    turn.mark("first_token")
                    parts.append(chunk.text)
                    show(chunk.text)
                    if self.config.streaming:
                        for piece in splitter.feed(chunk.text):
                            offset = await self._queue_piece(queue, parts, piece, offset, turn)
                if chunk.finish_reason is not None:
                    finish = chunk.finish_reason
            turn.mark("reply_done")
            rest = splitter.flush() if self.config.streaming else ["".join(parts)]
            for piece in rest:
                offset = await self._queue_piece(queue, parts, piece, offset, turn)
            await queue.put(None)
            if held and gate is not None:
                await gate.wait()
                show("")
            self.display.reply_end()

        async def speak() -> None:
            while (item := await queue.get()) is not None:
                text, end = item
                spoken = for_speech(text)
                if not spoken or self.tts is None:
                    continue
                started = time.perf_counter()
                audio = await asyncio.to_thread(_one_model_at_a_time, self.tts.synthesize, spoken)
                turn.extra["tts_seconds"] = round(
                    turn.extra.get("tts_seconds", 0) + time.perf_counter() - started, 3
                )
                turn.mark("first_audio_ready")
                if gate is not None:
                    await gate.wait()
                self.commit(turn)
                if self.out is not None:
                    tag = len(pieces)
                    pieces.append((end, tag))
                    self.out.enqueue(audio, tag)
                    turn.reply_audio.append((tag, audio))
                turn.extra["reply_audio_seconds"] = round(
                    turn.extra.get("reply_audio_seconds", 0) + audio.seconds, 3
                )

        producer = asyncio.create_task(produce())
        speaker = asyncio.create_task(speak())
        try:
            await producer
            await speaker
        finally:
            producer.cancel()
            speaker.cancel()
        if not "".join(parts).strip():
            raise LlmError("the LLM sent an empty reply")
        if gate is not None:
            await gate.wait()
        self.commit(turn)
        if self.out is not None:
            await self.out.drained()
            first = self.out.first_sound_at()
            if first is not None:
                turn.mark("first_audio_out", first)
        if finish == "incomplete":
            self.display.note("(the reply was cut off: the connection ended early)")
        return finish

    async def _ask(self, turn: Turn) -> AsyncIterator[ReplyChunk]:
        """The model's reply; if the conversation outgrew its context, once more with the
        older half of the history left out (the transcript keeps everything)."""
        messages = self.conversation.request() + self._pending(turn)
        try:
            async for chunk in self.chat.stream(messages):
                yield chunk
        except LlmHttpError as exc:
            if not is_context_error(exc):
                raise
            history = sum(len(m.content) for m in messages if m.role != "system")
            self.display.note("(the conversation no longer fits the model: sending recent turns)")
            shorter = self.conversation.request(budget_chars=history // 2) + self._pending(turn)
            async for chunk in self.chat.stream(shorter):
                yield chunk

    @staticmethod
    def _pending(turn: Turn) -> list[Message]:
        """The user's words, sent before they are committed (commit waits for the reply)."""
        return [] if turn.committed else [Message("user", turn.text)]

    async def _queue_piece(
        self,
        queue: asyncio.Queue[tuple[str, int] | None],
        parts: list[str],
        piece: str,
        offset: int,
        turn: Turn,
    ) -> int:
        text = "".join(parts)
        found = text.find(piece, offset)
        end = found + len(piece) if found >= 0 else len(text)
        turn.mark("first_sentence_ready")
        await queue.put((piece, end))
        return end

    def _kept_part(self, text: str, pieces: list[tuple[int, int]]) -> str:
        """What the user got of an interrupted reply: what was shown when they read it (typed
        turns, files), else what was spoken, ending mid-piece on a word boundary."""
        if self.keep_shown or self.out is None:
            return (text.rstrip() + "\u2026" if text.strip() else "") + INTERRUPTED
        start = 0
        kept = ""
        for end, tag in pieces:
            fraction = self.out.played_fraction(tag)
            if fraction >= 0.999:
                kept, start = text[:end], end
                continue
            words = text[start:end].split()
            heard = words[: int(len(words) * fraction)]
            if heard:
                kept = (kept + " " + " ".join(heard)).strip() + "\u2026"
            break
        return kept.strip() + INTERRUPTED

    def _finish(self, turn: Turn, text: str, finish: str) -> Reply:
        if self.keep_audio:
            self._keep_audio(turn)
        self.writer.append("ASSISTANT", text)  # on disk first: history implies transcript
        self.conversation.add("assistant", text)
        turn.extra["finish_reason"] = finish
        turn.extra["interrupted"] = finish == "interrupted"
        self._record(turn)
        return Reply(text, turn.extra.get("reply_audio_seconds", 0.0), finish)

    def _keep_audio(self, turn: Turn) -> None:
        """Store what was heard and what was said (as far as it played) beside the transcript;
        a failure is told and noted in the sidecar, and the conversation goes on."""
        if self.writer.path is None:
            return
        try:
            self._write_audio(turn, self.writer.path)
        except (OSError, RuntimeError) as exc:  # soundfile raises RuntimeError subclasses
            message = f"cannot keep the audio of this turn beside {self.writer.path}: {exc}"
            turn.extra["audio_error"] = message
            self.display.error(message)

    def _write_audio(self, turn: Turn, transcript: Path) -> None:
        folder = transcript.with_suffix("")
        folder.mkdir(mode=0o700, exist_ok=True)
        files: dict[str, str] = {}
        played: list[Audio] = []
        for tag, piece in turn.reply_audio:
            fraction = self.out.played_fraction(tag) if self.out is not None else 1.0
            played.append(Audio(piece.samples[: round(len(piece.samples) * fraction)],
                                piece.rate_hz))  # fmt: skip
        rate = played[0].rate_hz if played else 0
        for kind, audio in (
            ("user", turn.audio),
            ("reply", concat(played, rate) if played else None),
        ):
            if audio is not None and len(audio.samples):
                path = folder / f"turn-{turn.number:03d}-{kind}.flac"
                write_private_flac(path, audio)
                files[kind] = path.relative_to(transcript.parent).as_posix()
        turn.extra["audio_files"] = files

    def _record(self, turn: Turn) -> None:
        events = {k: round(v, 3) for k, v in sorted(turn.events.items(), key=lambda kv: kv[1])}
        self.writer.record(
            {"turn": turn.number, "source": turn.source, "models": self.models,
             "events": events, "stages": _stages(turn.events), **turn.extra}
        )  # fmt: skip


_MODEL_LOCK = threading.Lock()
A = TypeVar("A")
R = TypeVar("R")


def _one_model_at_a_time(run: Callable[[A], R], arg: A) -> R:
    """Speech recognition and synthesis take turns. On two cores running both at once gains
    little, and each holds a large working set while it runs: together they set the memory
    peak. A cancelled turn's model call still finishes in its thread, holding the lock."""
    with _MODEL_LOCK:
        return run(arg)


def _stages(events: dict[str, float]) -> dict[str, float]:
    """Durations in seconds between the events a user feels."""
    pairs = {
        "stt": ("stt_start", "stt_done"),
        "endpoint_to_stt_done": ("speech_end", "stt_done"),
        "first_token": ("request_sent", "first_token"),
        "llm": ("request_sent", "reply_done"),
        "first_audio_ready": ("request_sent", "first_audio_ready"),
        "speech_end_to_first_audio": ("speech_end", "first_audio_out"),
    }
    return {
        name: round(events[b] - events[a], 3)
        for name, (a, b) in pairs.items()
        if a in events and b in events
    }
