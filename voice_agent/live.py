"""The hands-free conversation: microphone -> endpointing -> turns, for hours.

Half duplex by default: while the agent speaks (and ``echo_tail_ms`` after), what the
microphone hears is not user speech, so the agent never answers its own voice through laptop
speakers. With barge-in, user speech stops playback at once instead. Either way the agent never
starts talking while the user is talking: a reply that is ready waits, and if the user goes on,
what they add joins the same turn.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import sys
import time
from collections.abc import Coroutine
from dataclasses import dataclass

from voice_agent.agent import Agent, Turn
from voice_agent.audio import SPEECH_RATE_HZ, Audio, concat, silence
from voice_agent.config import Config
from voice_agent.display import Display
from voice_agent.mic import Frame, Microphone
from voice_agent.speaker import Speaker
from voice_agent.stt import Transcription
from voice_agent.vad import (
    Endpointer,
    Paused,
    Resumed,
    SpeechConfirmer,
    Started,
    Utterance,
    VoiceDetector,
)

log = logging.getLogger(__name__)


@dataclass
class _Early:
    generation: int
    started: float
    task: asyncio.Task[Transcription]


class LiveSession:
    def __init__(
        self,
        agent: Agent,
        config: Config,
        display: Display,
        mic: Microphone,
        speaker: Speaker,
        push_to_talk: bool = False,
    ) -> None:
        self.agent = agent
        self.config = config
        self.display = display
        self.mic = mic
        self.speaker = speaker
        self.push_to_talk = push_to_talk
        self.barge_in = config.audio.barge_in
        self.endpointer = Endpointer(config.vad)
        self.vad = VoiceDetector(config.vad.aggressiveness, config.vad.floor_dbfs)
        self.confirmer = (
            SpeechConfirmer(config.vad.silero_threshold) if config.vad.silero_confirm else None
        )
        if self.confirmer is not None:
            self.confirmer.has_speech(silence(0.5))  # loads the model now, not at the first turn
        self.end_phrases = [_words(p) for p in config.reply.end_phrases.split(",") if p.strip()]
        self.stop = asyncio.Event()
        self.gate = asyncio.Event()  # set = the user is silent, the agent may speak
        self.gate.set()
        self._turn_lock = asyncio.Lock()
        self._reply: asyncio.Task[object] | None = None
        self._reply_turn: Turn | None = None
        self._early: _Early | None = None
        self._speculation: int | None = None  # generation whose reply started before its end
        vad = config.vad
        ask_at_ms = max(vad.hangover_ms - config.reply.speculative_lead_ms, vad.early_stt_ms)
        self._speculate_after_s = (ask_at_ms - vad.early_stt_ms) / 1000  # after the early STT
        self._tasks: set[asyncio.Task[None]] = set()
        self._deaf = False
        self._undecided = 0  # utterances heard but not yet turned into a turn (or dropped)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        interrupts = 0

        def on_signal() -> None:
            nonlocal interrupts
            interrupts += 1
            if interrupts > 1:
                os._exit(130)  # a second Ctrl+C: the user wants out now
            self.stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        listener = asyncio.create_task(self._listen_ptt() if self.push_to_talk else self._listen())
        self.display.status("listening")
        stopper = asyncio.create_task(self.stop.wait())
        done, _ = await asyncio.wait({listener, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
        if listener in done and listener.exception() is not None:
            await self._shutdown()
            raise listener.exception()  # type: ignore[misc]
        await self._shutdown()
        return 0

    async def _listen(self) -> None:
        async for frame in self.mic.frames():
            self._on_frame(frame)

    def _on_frame(self, frame: Frame) -> None:
        tail = self.config.audio.echo_tail_ms / 1000
        own_voice = frame.captured_at < self.speaker.audible_until() + tail
        if own_voice and not self.barge_in:
            if not self._deaf:
                self._deaf = True
                self.endpointer.reset()  # nothing heard before or during playback carries over
            self.gate.set()
            return
        self._deaf = False
        voiced = self.vad.is_speech(frame.samples)
        for event in self.endpointer.feed(frame.samples, voiced):
            if isinstance(event, Started):
                log.debug(
                    "speech started (frame captured %.3f s ago)",
                    time.monotonic() - frame.captured_at,
                )
                self.display.status("hearing")
                self._spawn(self.agent.chat.warm())  # the request will follow in seconds
                if self.barge_in and self.speaker.playing:
                    self._interrupt("barge-in")
            elif isinstance(event, Paused) and self.config.reply.early_transcription:
                self._start_early(event)
            elif isinstance(event, Resumed):
                self._cancel_early()
                self._cancel_speculation()
            elif isinstance(event, Utterance):
                ended = time.time() - self.config.vad.hangover_ms / 1000 - self.mic.latency_s
                self._undecided += 1
                self._spawn(self._on_utterance(event, ended))
        self._update_gate()

    def _update_gate(self) -> None:
        """The agent may speak when the user is silent and nothing they said is undecided."""
        if self.endpointer.maybe_speech or self._undecided:
            self.gate.clear()
        else:
            self.gate.set()

    def _start_early(self, event: Paused) -> None:
        self._cancel_early()
        task = asyncio.create_task(self._hear(event.audio))
        started = time.time()
        self._early = _Early(event.generation, started, task)
        extra = self.config.vad.unfinished_extra_ms

        def check(done: asyncio.Task[Transcription]) -> None:
            if done.cancelled() or done.exception() is not None:
                return
            heard = done.result()
            heard_at = time.time()
            if extra and sounds_unfinished(heard.text):
                self.endpointer.extend_hangover(event.generation, extra)
            elif heard.text and self._may_speculate(event.generation, heard.text):
                # not before the silence has lasted hangover - lead: a pause shorter than
                # that is usually mid-thought, and a request sent then is only cancelled
                due = started + self._speculate_after_s
                asyncio.get_running_loop().call_later(
                    max(0.0, due - heard_at), self._speculate_if_still, event, heard, heard_at
                )

        task.add_done_callback(check)

    def _speculate_if_still(self, event: Paused, heard: Transcription, heard_at: float) -> None:
        if self._may_speculate(event.generation, heard.text):
            self._speculate(event, heard, heard_at)

    def _may_speculate(self, generation: int, text: str) -> bool:
        """Ask the model before the hangover ends only for a plain next turn: the utterance
        is still the pending one, no earlier reply waits to be merged, and it is no goodbye."""
        waiting = self._reply_turn is not None and not self._reply_turn.committed
        return (
            self.config.reply.speculative_lead_ms > 0
            and self._early is not None
            and self._early.generation == generation
            and not waiting
            and not self._is_end_phrase(text)
        )

    def _speculate(self, event: Paused, heard: Transcription, heard_at: float) -> None:
        """Send the request now; the reply is held (not shown, not played) until the
        hangover completes, and cancelled if the user goes on speaking."""
        assert self._early is not None
        turn = self.agent.new_turn("microphone")
        turn.text = heard.text
        turn.audio = event.audio
        turn.mark("stt_start", self._early.started)
        turn.mark("stt_done", heard_at)
        turn.extra["early_transcription"] = True
        turn.extra["speculative"] = True
        log.debug("speculative request for generation %d", event.generation)
        self._speculation = event.generation
        self._reply_turn = turn
        self._reply = asyncio.create_task(self._respond(turn))

    def _cancel_speculation(self) -> None:
        if self._speculation is not None:
            self._speculation = None
            self._interrupt("merge")  # nothing was shown, played or written: just drop it

    async def _hear(self, audio: Audio) -> Transcription:
        """Silero's second opinion, then the words; no words when Silero hears no speech."""
        if self.confirmer is not None and not await asyncio.to_thread(
            self.confirmer.has_speech, audio
        ):
            log.info("%.1f s of audio rejected by Silero VAD", audio.seconds)
            return Transcription("", audio.seconds, 0.0)
        return await self.agent.transcribe(audio)

    def _cancel_early(self) -> None:
        if self._early is not None:
            self._early.task.cancel()
            self._early = None

    def _spawn(self, coro: Coroutine[object, object, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _on_utterance(self, u: Utterance, speech_end: float) -> None:
        try:
            await self._take_utterance(u, speech_end)
        finally:
            self._undecided -= 1
            self._update_gate()

    async def _take_utterance(self, u: Utterance, speech_end: float) -> None:
        async with self._turn_lock:
            early = self._early if self._early and self._early.generation == u.generation else None
            self._early = None
            if self._speculation == u.generation and self._reply_turn is not None:
                self._adopt(self._reply_turn, u, speech_end)
                return
            if early is not None:
                stt_start = early.started
                heard = await early.task
            else:
                self._cancel_early()
                stt_start = time.time()
                heard = await self._hear(u.audio)
            if not heard.text:
                log.info("no words in %.1f s of audio", u.audio.seconds)
                return
            text, audio = heard.text, u.audio
            merged = self._reply_turn
            if merged is not None and not merged.committed and merged.audio is not None:
                # the user went on before the reply started: one turn, transcribed whole
                self._interrupt("merge")
                audio = concat([merged.audio, u.audio], SPEECH_RATE_HZ)
                stt_start = time.time()
                text = (await self.agent.transcribe(audio)).text or f"{merged.text} {text}"
            turn = self.agent.new_turn("microphone")
            turn.text = text
            turn.audio = audio
            turn.extra["audio_seconds"] = round(audio.seconds, 3)
            turn.mark("speech_end", speech_end)
            turn.mark("stt_start", min(stt_start, time.time()))
            turn.mark("stt_done")
            turn.extra["early_transcription"] = early is not None and merged is None
            self.display.user(text)
            if self._is_end_phrase(text):
                self.agent.commit(turn)
                self.display.note("(goodbye: session ended)")
                self.stop.set()
                return
            self.display.status("thinking")
            self._reply_turn = turn
            self._reply = asyncio.create_task(self._respond(turn))

    def _adopt(self, turn: Turn, u: Utterance, speech_end: float) -> None:
        """The hangover completed: the speculative reply is this turn's reply."""
        self._speculation = None
        turn.audio = u.audio
        turn.extra["audio_seconds"] = round(u.audio.seconds, 3)
        turn.mark("speech_end", speech_end)
        self.display.user(turn.text)
        self.display.status("thinking")

    async def _respond(self, turn: Turn) -> None:
        await self.agent.respond(turn, self.gate)
        self.display.status("listening")

    def _interrupt(self, reason: str) -> None:
        """Cancel the reply in progress; the agent records what was spoken, if anything."""
        self.speaker.stop()
        if self._reply is not None and not self._reply.done():
            log.info("reply cancelled: %s", reason)
            self._reply.cancel()
        self._reply = None
        if reason == "merge":
            self._reply_turn = None

    async def _shutdown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self._cancel_early()
        turn = self._reply_turn
        if self._reply is not None and not self._reply.done():
            self._reply.cancel()
            await asyncio.gather(self._reply, return_exceptions=True)
        if turn is not None and not turn.committed and turn.text:
            self.agent.commit(turn)  # what the user said is kept even if never answered
        self.display.status("stopped")

    def _is_end_phrase(self, text: str) -> bool:
        said = _words(text)
        return any(
            said == p or (said[-len(p) :] == p and len(said) <= len(p) + 2)
            for p in self.end_phrases
            if p
        )

    async def _listen_ptt(self) -> None:
        """Push to talk: Enter starts a turn, Enter again ends it (VAD not used)."""
        recording: list[Audio] = []
        active = False
        frames = self.mic.frames()
        loop = asyncio.get_running_loop()
        enter = asyncio.Event()

        def on_enter() -> None:
            sys.stdin.readline()
            enter.set()

        loop.add_reader(sys.stdin.fileno(), on_enter)
        self.display.note("(push to talk: press Enter to start speaking, Enter again to stop)")
        try:
            async for frame in frames:
                if enter.is_set():
                    enter.clear()
                    active = not active
                    if active:
                        self._interrupt("push-to-talk")
                        self.gate.clear()
                        self.display.status("hearing")
                    elif recording:
                        audio = concat(recording, SPEECH_RATE_HZ)
                        recording = []
                        u = Utterance(audio, -1, audio.seconds)
                        self._undecided += 1
                        self._spawn(self._on_utterance(u, time.time()))
                if active:
                    recording.append(Audio(frame.samples, SPEECH_RATE_HZ))
        finally:
            loop.remove_reader(sys.stdin.fileno())


CONTINUATIONS = {
    "and", "or", "but", "so", "because", "the", "a", "an", "to", "of", "with", "for", "in", "on",
    "at", "my", "your", "our", "their", "that", "which", "who", "if", "when", "than", "is", "are",
}  # fmt: skip


def sounds_unfinished(text: str) -> bool:
    """Whisper punctuates: a trailing comma, a dangling "and", or a longer phrase without a
    closing full stop usually means the speaker paused mid-thought."""
    stripped = text.strip()
    if not stripped:
        return False
    if stripped[-1] in ",;:-\u2014\u2026" or stripped.endswith("..."):
        return True
    words = _words(stripped)
    if words and words[-1] in CONTINUATIONS:
        return True
    return stripped[-1] not in ".!?\"'" and len(words) >= 4


def _words(text: str) -> list[str]:
    return re.sub(r"[^\w\s']", " ", text.lower()).split()
