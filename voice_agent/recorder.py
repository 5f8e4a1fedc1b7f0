"""A turn of the conversation, and the recorder that keeps the transcript and the model's
history in step: what the model is told is what the transcript says."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voice_agent.audio import Audio, concat, write_private_flac
from voice_agent.display import Display
from voice_agent.llm import Conversation
from voice_agent.speaker import AudioOut
from voice_agent.transcript import TranscriptWriter


@dataclass
class Turn:
    """A user turn in progress, with what its sidecar record says about it.

    Fields left at None are not recorded (a typed turn has no audio, for instance)."""

    source: str  # "microphone", "text", or the audio file's path
    text: str = ""
    number: int = 0  # set when committed, so turns dropped before leave no gaps
    committed: bool = False  # the USER block is in the transcript
    withdrawn: bool = False  # its reply was dropped (the user went on): never committed by it
    audio: Audio | None = None  # what the user said
    events: dict[str, float] = field(default_factory=dict)  # name -> time.time()
    audio_seconds: float | None = None
    early_transcription: bool | None = None  # transcribed during the end-of-speech silence
    speculative: bool | None = None  # the model was asked before the silence ended
    tts_seconds: float | None = None  # synthesis time of the whole reply
    reply_audio_seconds: float | None = None
    finish_reason: str | None = None  # "stop", "length", "incomplete", "interrupted", "error"
    error: str | None = None  # the line the user was shown
    reasoning: str | None = None  # the model's thinking, never spoken nor in the Markdown
    audio_files: dict[str, str] | None = None  # kept FLAC files, relative to the transcript
    audio_error: str | None = None
    reply_audio: list[tuple[int, Audio]] = field(default_factory=list)  # (tag, piece) played

    @classmethod
    def spoken(cls, source: str, audio: Audio, text: str = "") -> Turn:
        """A turn heard as audio (a microphone utterance, a file)."""
        return cls(source, text, audio=audio, audio_seconds=round(audio.seconds, 3))

    def mark(self, event: str, at: float | None = None) -> None:
        self.events.setdefault(event, at if at is not None else time.time())

    def add_tts(self, seconds: float, audio_seconds: float) -> None:
        self.tts_seconds = round((self.tts_seconds or 0.0) + seconds, 3)
        self.reply_audio_seconds = round((self.reply_audio_seconds or 0.0) + audio_seconds, 3)

    def record(self, models: dict[str, str]) -> dict[str, Any]:
        """The sidecar line: timings, models and whatever is known of this turn."""
        events = {k: round(v, 3) for k, v in sorted(self.events.items(), key=lambda kv: kv[1])}
        known = {
            "audio_seconds": self.audio_seconds,
            "early_transcription": self.early_transcription,
            "speculative": self.speculative,
            "tts_seconds": self.tts_seconds,
            "reply_audio_seconds": self.reply_audio_seconds,
            "finish_reason": self.finish_reason,
            "interrupted": None if self.finish_reason is None else (
                self.finish_reason == "interrupted"),
            "error": self.error,
            "audio_files": self.audio_files,
            "audio_error": self.audio_error,
            "reasoning": self.reasoning,
        }  # fmt: skip
        return {"turn": self.number, "source": self.source, "models": models,
                "events": events, "stages": stages(self.events),
                **{k: v for k, v in known.items() if v is not None}}  # fmt: skip


class TurnRecorder:
    """Commits user turns and finishes replies: transcript first, then history (a crash in
    between leaves the transcript ahead of the model, never behind)."""

    def __init__(
        self,
        writer: TranscriptWriter,
        conversation: Conversation,
        models: Callable[[], dict[str, str]],
    ) -> None:
        self.writer = writer
        self.conversation = conversation
        self.models = models
        self.turns = 0

    def commit(self, turn: Turn) -> None:
        """Put the user's words in the transcript (once) and in the model's history."""
        if not turn.committed:
            turn.committed = True
            self.turns += 1
            turn.number = self.turns
            self.writer.append("USER", turn.text)
            self.conversation.add("user", turn.text)

    def finish(self, turn: Turn, text: str, finish_reason: str) -> None:
        """The reply as the user got it, in the transcript, the history and the sidecar."""
        self.writer.append("ASSISTANT", text)
        self.conversation.add("assistant", text)
        turn.finish_reason = finish_reason
        self.record(turn)

    def unanswered(self, turn: Turn) -> None:
        """No reply arrived: the question stays in the transcript, not in the history (so
        the next request keeps roles alternating)."""
        self.conversation.drop_last_user()
        self.record(turn)

    def record(self, turn: Turn) -> None:
        self.writer.record(turn.record(self.models()))


def stages(events: dict[str, float]) -> dict[str, float]:
    """Durations in seconds between the events a user feels."""
    pairs = {
        "stt": ("stt_start", "stt_done"),
        "endpoint_to_stt_done": ("speech_end", "stt_done"),
        "first_token": ("request_sent", "first_token"),
        "thinking": ("first_reasoning", "first_token"),
        "llm": ("request_sent", "reply_done"),
        "first_audio_ready": ("request_sent", "first_audio_ready"),
        "speech_end_to_first_audio": ("speech_end", "first_audio_out"),
    }
    return {
        name: round(events[b] - events[a], 3)
        for name, (a, b) in pairs.items()
        if a in events and b in events
    }


def write_turn_audio(turn: Turn, transcript: Path, out: AudioOut | None, display: Display) -> None:
    """Keep what was heard and what was said (as far as it played) as FLAC beside the
    transcript; a failure is told and noted in the sidecar, and the conversation goes on."""
    try:
        folder = transcript.with_suffix("")
        folder.mkdir(mode=0o700, exist_ok=True)
        files: dict[str, str] = {}
        played: list[Audio] = []
        for tag, piece in turn.reply_audio:
            fraction = out.played_fraction(tag) if out is not None else 1.0
            played.append(Audio(piece.samples[: round(len(piece.samples) * fraction)],
                                piece.rate_hz))  # fmt: skip
        reply = concat(played, played[0].rate_hz) if played else None
        for kind, audio in (("user", turn.audio), ("reply", reply)):
            if audio is not None and len(audio.samples):
                path = folder / f"turn-{turn.number:03d}-{kind}.flac"
                write_private_flac(path, audio)
                files[kind] = path.relative_to(transcript.parent).as_posix()
        turn.audio_files = files
    except (OSError, RuntimeError) as exc:  # soundfile raises RuntimeError subclasses
        turn.audio_error = f"cannot keep the audio of this turn beside {transcript}: {exc}"
        display.error(turn.audio_error)
