"""One turn: ask the model, show and speak the reply as it arrives, record what the user got.

Speaking starts with the first complete sentence while the model is still writing
(speaking.py). A turn can be cancelled at any point (the user barged in, resumed speaking, or
pressed Ctrl+C); the transcript and the model's history then keep exactly what the user got,
marked interrupted. A failed reply is one line, said aloud in live mode; the session goes on.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

from voice_agent import cues, heap
from voice_agent.audio import SPEECH_RATE_HZ, Audio
from voice_agent.config import ReplyConfig
from voice_agent.display import Display
from voice_agent.end_of_turn import EndOfTurn
from voice_agent.errors import LlmHttpError, VoiceAgentError, spoken
from voice_agent.llm import ChatClient, Conversation, Message, is_context_error
from voice_agent.llm_reply import ReplyChunk
from voice_agent.recorder import Turn, TurnRecorder, write_turn_audio
from voice_agent.speaker import CUE, AudioOut
from voice_agent.speaking import ReplyPipeline
from voice_agent.stt import SpeechToText, Transcription
from voice_agent.transcript import TranscriptWriter
from voice_agent.tts import TextToSpeech
from voice_agent.vad import SpeechConfirmer

log = logging.getLogger(__name__)
UNEXPECTED_SPOKEN = "Sorry, something went wrong with that answer. The details are on the screen."
NOT_SAVED_SPOKEN = "Sorry, I cannot save our conversation right now. The details are on the screen."
UNHEARD_SPOKEN = "Sorry, I could not make out what you said. Please say it again."
THINKING_CUE_AFTER_S = 1.0  # the turn taken and still no sound: "I heard you, thinking"
THINKING_CUE_EVERY_S = 4.0  # then again, gently, while the model is still silent


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
        self.recorder = TurnRecorder(writer, conversation, lambda: self.models)
        self.confirmer: SpeechConfirmer | None = None  # Silero, when utterances need checking
        self.end_of_turn: EndOfTurn | None = None  # Smart Turn, when pauses are judged
        self.failures = 0
        self.speak_notices = False  # say errors aloud (a live speaker, not a reply file)
        self.keep_audio = False  # transcripts.save_audio: FLAC of each utterance and reply
        self.keep_shown = False  # an interrupted reply keeps what was shown, not what was spoken
        self.speaking: ReplyPipeline | None = None  # the reply being spoken, if any
        self.rejoin_s = 0.0  # live, with barge-in: how long a reply's first sound is a false start
        self.cues = False  # live (audio.cues): tones while a slow model is silent, before errors
        self._unsaid = ""  # a notice to speak once the reply in progress is over
        writer.on_failure = self._not_saved
        writer.on_recovery = self._saved_again

    @property
    def models(self) -> dict[str, str]:
        return {
            "stt": self.stt.name if self.stt else "",
            "llm": self.chat.model,
            "tts": self.tts.name if self.tts else "",
        }

    def commit(self, turn: Turn) -> None:
        self.recorder.commit(turn)

    async def hear(self, audio: Audio) -> Transcription:
        """Silero's second opinion, then the words; no words when Silero hears no speech."""
        if self.confirmer is not None and not await asyncio.to_thread(
            self.confirmer.has_speech, audio
        ):
            log.info("%.1f s of audio rejected by Silero VAD", audio.seconds)
            return Transcription("", audio.seconds, 0.0)
        return await self.transcribe(audio)

    async def judge(self, audio: Audio) -> float | None:
        """The probability that the user has finished speaking; None without a model (or if it
        fails: then the silence alone decides, as without one)."""
        if self.end_of_turn is None:
            return None
        try:
            return await asyncio.to_thread(_judged, self.end_of_turn, audio)
        except Exception:  # ONNX Runtime's own types; the turn must go on regardless
            log.debug("end-of-turn model failed", exc_info=True)
            return None

    async def transcribe(self, audio: Audio) -> Transcription:
        assert self.stt is not None, "audio turns need a speech recogniser"
        return await asyncio.to_thread(one_model_at_a_time, self.stt.transcribe, audio)

    async def respond(self, turn: Turn, gate: asyncio.Event | None = None) -> bool:
        """Ask the model and speak its reply; False when no reply came (already reported).

        ``gate`` holds back the first sound while it is clear (the user is still talking);
        the user's turn is committed when the reply starts, so a turn that is merged with
        what the user says next never reaches the transcript twice.
        """
        if self.out is not None:
            self.out.reset()
        synthesize = self._synthesize if self.tts is not None else None
        hold = self.rejoin_s if gate is not None else 0.0
        reply = ReplyPipeline(turn, self.config, self.display, synthesize, self.out, gate,
                              lambda: self.commit(turn), hold)  # fmt: skip
        self.speaking = reply
        thinking = asyncio.create_task(self._thinking_cues(reply, gate)) if self.cues else None
        try:
            finish = await reply.run(self._ask(turn))
        except asyncio.CancelledError:
            if self.out is not None:
                self.out.stop()
            if not turn.committed and not turn.withdrawn and reply.sounded:
                self.commit(turn)  # stopped (Ctrl+C) while the reply could still be withdrawn
            if turn.committed:
                self._finish(turn, reply.kept(self.keep_shown), "interrupted")
            raise
        except VoiceAgentError as exc:
            return await self._failed(turn, gate, reply.text, str(exc), spoken(exc))
        except Exception as exc:  # a bug or a library's surprise ends this turn, not the session
            log.debug("unexpected error in turn %d", turn.number, exc_info=True)
            message = f"unexpected error: {type(exc).__name__}: {exc} (--debug shows the details)"
            return await self._failed(turn, gate, reply.text, message, UNEXPECTED_SPOKEN)
        finally:
            self.speaking = None
            if thinking is not None:
                thinking.cancel()
        self._finish(turn, reply.text, finish)
        await self.say_unsaid()
        return True

    async def _thinking_cues(self, reply: ReplyPipeline, gate: asyncio.Event | None) -> None:
        """A soft tone once the turn is taken and the reply has not sounded for a second, and
        every few seconds after while the model is still silent (a thinking model can take
        ten): the user hears they were heard. Never while they speak; the reply's first
        sound silences it."""
        if self.out is None:
            return
        cue = cues.thinking(self._out_rate())
        wait = THINKING_CUE_AFTER_S
        while True:
            if gate is not None:
                await gate.wait()
            await asyncio.sleep(wait)
            if reply.sounded or (self.tts is None and reply.text):
                return
            if gate is None or gate.is_set():
                self.out.enqueue(cue, CUE)
            wait = THINKING_CUE_EVERY_S

    def cue(self, tone: Callable[[int], Audio]) -> None:
        """Play a cue (cues.py) if cues are on: at the speaker's rate, never part of a reply."""
        if self.cues and self.out is not None:
            self.out.enqueue(tone(self._out_rate()), CUE)

    def _out_rate(self) -> int:
        return int(getattr(self.out, "rate_hz", SPEECH_RATE_HZ))

    async def _synthesize(self, text: str) -> Audio:
        assert self.tts is not None
        return await asyncio.to_thread(one_model_at_a_time, self.tts.synthesize, text)

    async def _failed(
        self, turn: Turn, gate: asyncio.Event | None, received: str, message: str, said: str
    ) -> bool:
        """Tell the user, and keep what they got: False when no reply arrived at all."""
        if gate is not None:
            await gate.wait()  # a reply asked for early fails no sooner than it would speak
        if turn.withdrawn:
            raise asyncio.CancelledError  # dropped meanwhile: its failure no longer matters
        self.failures += 1
        self.display.error(message)
        turn.error = message
        self.commit(turn)
        answered = bool(received.strip())
        if answered:
            # The reply broke off after part of it arrived, was shown and maybe spoken:
            # the transcript keeps what the user got, the sidecar says it ended in error.
            if self.out is not None:
                await self.out.drained()
            self._finish(turn, received, "error")
        else:
            self.recorder.unanswered(turn)
            await self._say(said)
        await self.say_unsaid()
        return answered

    def _finish(self, turn: Turn, text: str, finish: str) -> None:
        if self.keep_audio and self.writer.path is not None:
            write_turn_audio(turn, self.writer.path, self.out, self.display)
        self.recorder.finish(turn, text, finish)

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

    async def _say(self, text: str) -> None:
        """A notice in the agent's voice, e.g. why there is no answer. Not a turn: the
        transcript holds the printed line in the sidecar instead."""
        if not self.speak_notices or self.tts is None or self.out is None:
            return
        try:
            audio = await self._synthesize(text)
        except VoiceAgentError as exc:  # the voice itself failed (a speech server is down)
            log.debug("notice not spoken: %s", exc)
            return
        self.out.reset()
        try:
            if self.cues:  # "something went wrong", before the words say what
                self.out.enqueue(cues.error(self._out_rate()), CUE)
                await self.out.drained()
            self.out.enqueue(audio, 0)
            await self.out.drained()
        except asyncio.CancelledError:
            self.out.stop()
            raise

    async def unheard(self, why: VoiceAgentError) -> None:
        """What the user said could not be transcribed (a speech server failed): tell them
        on screen and aloud, so they say it again; the session goes on."""
        self.display.error(f"{why}; what you just said was not heard: please say it again")
        await self._say(UNHEARD_SPOKEN)

    async def say_unsaid(self) -> None:
        """Speak a notice that came up during the reply (the transcript cannot be saved)."""
        notice, self._unsaid = self._unsaid, ""
        if notice:
            await self._say(notice)

    def _not_saved(self, message: str) -> None:
        self.display.error(
            f"{message}; the conversation goes on, and unsaved turns are kept until they can "
            "be written (or printed when the session ends)"
        )
        self._unsaid = NOT_SAVED_SPOKEN

    def _saved_again(self) -> None:
        self.display.note(
            f"(the transcript can be written again: every turn is in {self.writer.path})"
        )


def _judged(model: EndOfTurn, audio: Audio) -> float:
    try:
        return model.complete(audio)
    finally:
        heap.give_back()


_MODEL_LOCK = threading.Lock()
A = TypeVar("A")
R = TypeVar("R")


def one_model_at_a_time(run: Callable[[A], R], arg: A) -> R:
    """Speech recognition and synthesis take turns. On two cores running both at once gains
    little, and each holds a large working set while it runs: together they set the memory
    peak. A cancelled turn's model call still finishes in its thread, holding the lock."""
    with _MODEL_LOCK:
        try:
            return run(arg)
        finally:
            heap.give_back()
