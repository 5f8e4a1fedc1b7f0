"""The turn loop: transcribe -> ask the LLM (streamed) -> speak -> record, one turn at a time."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from voice_agent.audio import Audio
from voice_agent.display import Display
from voice_agent.errors import LlmError, VoiceAgentError
from voice_agent.llm import ChatClient, Conversation
from voice_agent.speaker import Speaker
from voice_agent.speech_text import for_speech
from voice_agent.stt import SpeechToText
from voice_agent.transcript import TranscriptWriter
from voice_agent.tts import TextToSpeech

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stage:
    """Wall-clock start and end of one stage, in seconds since the epoch."""

    start: float
    end: float

    def as_dict(self) -> dict[str, float]:
        return {
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "seconds": round(self.end - self.start, 3),
        }


@dataclass(frozen=True)
class Reply:
    """The assistant's answer to one user turn."""

    text: str  # exactly as the model wrote it (kept in the transcript)
    spoken: str  # what was said aloud
    audio: Audio | None  # None when muted
    finish_reason: str  # "stop", "length", "incomplete", ...


@dataclass
class TurnRecord:
    """Sidecar metadata for one user turn, written as one JSON line."""

    turn: int
    source: str
    stages: dict[str, Stage] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self, models: dict[str, str]) -> dict[str, Any]:
        return {
            "turn": self.turn,
            "source": self.source,
            "models": models,
            "stages": {k: v.as_dict() for k, v in self.stages.items()},
            **self.extra,
        }


class Agent:
    def __init__(
        self,
        chat: ChatClient,
        conversation: Conversation,
        writer: TranscriptWriter,
        display: Display,
        stt: SpeechToText | None = None,
        tts: TextToSpeech | None = None,
        speaker: Speaker | None = None,
    ) -> None:
        self.chat = chat
        self.conversation = conversation
        self.writer = writer
        self.display = display
        self.stt = stt
        self.tts = tts
        self.speaker = speaker
        self.turns = 0
        self.failures = 0

    @property
    def models(self) -> dict[str, str]:
        return {
            "stt": self.stt.name if self.stt else "",
            "llm": self.chat.model,
            "tts": self.tts.name if self.tts else "",
        }

    async def audio_turn(self, audio: Audio, source: str) -> Reply | None:
        """One spoken turn; returns None when nothing trustworthy was heard or the turn failed."""
        assert self.stt is not None, "audio turns need a speech recogniser"
        record = self._new_record(source)
        record.extra["audio_seconds"] = round(audio.seconds, 3)
        start = time.time()
        heard = await asyncio.to_thread(self.stt.transcribe, audio)
        record.stages["stt"] = Stage(start, time.time())
        if not heard.text:
            self.turns -= 1
            self.display.note(f"(no speech heard in {source})")
            log.info("no speech in %s (%d segments dropped)", source, heard.dropped_segments)
            return None
        return await self._answer(heard.text, record)

    async def text_turn(self, text: str) -> Reply | None:
        return await self._answer(text, self._new_record("text"))

    def _new_record(self, source: str) -> TurnRecord:
        self.turns += 1
        return TurnRecord(self.turns, source)

    async def _answer(self, user_text: str, record: TurnRecord) -> Reply | None:
        self.display.user(user_text)
        self.writer.append("USER", user_text)
        self.conversation.add("user", user_text)
        try:
            reply = await self._reply(record)
        except VoiceAgentError as exc:
            self.failures += 1
            self.conversation.drop_last_user()
            self.display.error(str(exc))
            record.extra["error"] = str(exc)
            self._record(record)
            return None
        self.conversation.add("assistant", reply.text)
        self.writer.append("ASSISTANT", reply.text)
        record.extra["finish_reason"] = reply.finish_reason
        if reply.audio is not None:
            record.extra["reply_audio_seconds"] = round(reply.audio.seconds, 3)
        self._record(record)
        return reply

    async def _reply(self, record: TurnRecord) -> Reply:
        start = time.time()
        first_token: float | None = None
        parts: list[str] = []
        finish = "incomplete"
        async for chunk in self.chat.stream(self.conversation.request()):
            if chunk.text:
                first_token = first_token or time.time()
                parts.append(chunk.text)
                self.display.reply_text(chunk.text)
            if chunk.finish_reason is not None:
                finish = chunk.finish_reason
        self.display.reply_end()
        record.stages["llm"] = Stage(start, time.time())
        if first_token is not None:
            record.extra["first_token_seconds"] = round(first_token - start, 3)
        text = "".join(parts)
        if not text.strip():
            raise LlmError("the LLM sent an empty reply")
        if finish == "incomplete":
            self.display.note("(the reply was cut off: the connection ended early)")
        spoken = for_speech(text)
        audio = None
        if self.tts is not None:
            start = time.time()
            audio = await asyncio.to_thread(self.tts.synthesize, spoken)
            record.stages["tts"] = Stage(start, time.time())
        if self.speaker is not None and audio is not None:
            start = time.time()
            await asyncio.to_thread(self.speaker.play, audio)
            record.stages["playback"] = Stage(start, time.time())
        return Reply(text, spoken, audio, finish)

    def _record(self, record: TurnRecord) -> None:
        self.writer.record(record.as_dict(self.models))
