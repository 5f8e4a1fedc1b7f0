"""Speech to text and text to speech on a Wyoming server: Home Assistant's voice protocol,
spoken by wyoming-faster-whisper and wyoming-piper on this machine or a stronger one on the LAN.

A small device (a Raspberry Pi Zero 2 cannot hold the models) captures and plays the audio;
the server does the heavy work. Each request is one connection: connecting on a LAN costs a
millisecond, and a server that restarted between turns is simply there again at the next one.
Calls block (each runs its own event loop), like the in-process models: call them from a
worker thread.

The server describes itself (``describe`` -> ``info``): the start-up names the server's
program and model or voice, and a model or voice it does not offer is refused at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from voice_agent.audio import SPEECH_RATE_HZ, Audio
from voice_agent.config import SttConfig, TtsConfig, is_bundled
from voice_agent.errors import ModelError, VoiceAgentError
from voice_agent.stt import Transcription, has_words

if TYPE_CHECKING:
    from wyoming.client import AsyncClient
    from wyoming.event import Event
    from wyoming.info import Info

CHUNK_S = 0.5  # audio sent to the server in pieces this long (the protocol's usual size)
T = TypeVar("T")


class SpeechServerError(VoiceAgentError):
    """The speech server could not be reached or did not answer as a Wyoming server does."""


class _Server:
    """One Wyoming server: its URI, what to call it in messages, and how long to wait."""

    def __init__(self, uri: str, key: str, timeout_s: float) -> None:
        self.uri = uri
        self.key = key  # the setting that names it: stt.server / tts.server
        role, program = {
            "stt.server": ("speech-to-text", "wyoming-faster-whisper"),
            "tts.server": ("text-to-speech", "wyoming-piper"),
        }[key]
        self.role = role
        self.program = program  # what to start there, for the message when it is not running
        self.timeout_s = timeout_s

    def call(self, talk: Callable[[_Connection], Awaitable[T]]) -> T:
        """Open a connection, run ``talk`` on it, close it; faults as one line."""
        try:
            return asyncio.run(self._call(talk))
        except SpeechServerError:
            raise
        except TimeoutError:
            raise SpeechServerError(
                f"the {self.role} server at {self.uri} did not answer within "
                f"{self.timeout_s:g} s: is {self.program} running there, and is it a Wyoming "
                "server?"
            ) from None
        except ConnectionRefusedError:
            raise SpeechServerError(
                f"cannot reach the {self.role} server at {self.uri}: connection refused. Start "
                f"{self.program} there, or drop --{self.key.replace('.', '-')} ({self.key}) to "
                "run the model here"
            ) from None
        except (ValueError, UnicodeDecodeError, KeyError, TypeError):  # not Wyoming's JSON lines
            raise SpeechServerError(
                f"the {self.role} server at {self.uri} does not speak the Wyoming protocol "
                f"(is another service on that port?)"
            ) from None
        except OSError as exc:
            why = exc.strerror or type(exc).__name__
            raise SpeechServerError(
                f"cannot reach the {self.role} server at {self.uri}: {why}"
            ) from None

    async def _call(self, talk: Callable[[_Connection], Awaitable[T]]) -> T:
        from wyoming.client import AsyncClient

        client = AsyncClient.from_uri(self.uri, self.timeout_s, self.timeout_s)
        async with asyncio.timeout(self.timeout_s):
            await client.connect()
        try:
            return await talk(_Connection(client, self))
        finally:
            await client.disconnect()

    def programs(self) -> list[Any]:
        """The installed programs of this server's kind (asr or tts), from its ``info``."""
        info = self.describe()
        speech_to_text = self.key == "stt.server"
        offered = info.asr if speech_to_text else info.tts
        programs = [p for p in offered if p.installed]
        if not programs:
            other, other_key = (
                ("text-to-speech", "tts.server") if speech_to_text
                else ("speech-to-text", "stt.server")
            )  # fmt: skip
            raise SpeechServerError(
                f"the Wyoming server at {self.uri} offers no {self.role} (is it a {other} "
                f"server? give that one as {other_key})"
            )
        return programs

    def describe(self) -> Info:
        """The server's ``info``: what programs, models and voices it offers."""
        from wyoming.info import Describe, Info

        async def talk(conn: _Connection) -> Info:
            await conn.send(Describe().event())
            while True:
                event = await conn.receive()
                if Info.is_type(event.type):
                    return Info.from_event(event)

        return self.call(talk)


class _Connection:
    def __init__(self, client: AsyncClient, server: _Server) -> None:
        self.client = client
        self.server = server

    async def send(self, event: Event) -> None:
        await self.client.write_event(event)

    async def receive(self) -> Event:
        event = await self.client.read_event()
        if event is None:
            raise SpeechServerError(
                f"the {self.server.role} server at {self.server.uri} gave no Wyoming answer (it "
                f"closed the connection or sent something else): is {self.server.program} "
                "running there, or another service?"
            )
        if event.type == "error":
            text = str((event.data or {}).get("text", "no details"))[:200]
            raise SpeechServerError(f"the {self.server.role} server at {self.server.uri} "
                                    f"failed: {text}")  # fmt: skip
        return event


class WyomingStt:
    """Speech to text on a Wyoming server (wyoming-faster-whisper)."""

    def __init__(self, config: SttConfig) -> None:
        self.config = config
        self._server = _Server(config.server, "stt.server", config.server_timeout_s)
        programs = self._server.programs()
        offered = [m.name for p in programs for m in p.models if m.installed]
        self.model = None if is_bundled(config.model) else config.model
        if self.model is not None and self.model not in offered:
            raise ModelError(
                f"the speech-to-text server at {config.server} has no model {self.model}; it "
                f"offers: {', '.join(offered) or 'none'}"
            )
        shown = self.model or (offered[0] if offered else "its default model")
        self.name = f"{programs[0].name} {shown} at {config.server}"

    def transcribe(self, audio: Audio) -> Transcription:
        """Blocking; call from a worker thread."""
        from wyoming.asr import Transcribe, Transcript
        from wyoming.audio import AudioChunk, AudioStart, AudioStop

        started = time.perf_counter()
        samples = audio.resampled(SPEECH_RATE_HZ).samples
        step = round(CHUNK_S * SPEECH_RATE_HZ)
        fmt = {"rate": SPEECH_RATE_HZ, "width": 2, "channels": 1}

        async def talk(conn: _Connection) -> str:
            language = self.config.language or None
            await conn.send(Transcribe(name=self.model, language=language).event())
            await conn.send(AudioStart(**fmt).event())
            for i in range(0, len(samples), step):
                chunk = samples[i : i + step].astype("<i2").tobytes()
                await conn.send(AudioChunk(audio=chunk, **fmt).event())
            await conn.send(AudioStop().event())
            while True:
                event = await conn.receive()
                if Transcript.is_type(event.type):
                    return Transcript.from_event(event).text or ""

        text = self._server.call(talk).strip()
        elapsed = time.perf_counter() - started
        return Transcription(text if has_words(text) else "", audio.seconds, elapsed)


class WyomingTts:
    """Text to speech on a Wyoming server (wyoming-piper); one request per speakable piece."""

    def __init__(self, config: TtsConfig) -> None:
        self._server = _Server(config.server, "tts.server", config.server_timeout_s)
        programs = self._server.programs()
        voices = [v for p in programs for v in p.voices]
        self.voice = None if is_bundled(config.voice) else config.voice
        if self.voice is not None and not any(self.voice in (v.name, _short(v.name))
                                              for v in voices):  # fmt: skip
            some = ", ".join(_short(v.name) for v in voices[:8])
            raise ModelError(
                f"the text-to-speech server at {config.server} has no voice {self.voice}; "
                f"it offers {len(voices)}, e.g. {some or 'none'}"
            )
        shown = self.voice or (_short(voices[0].name) if voices else "its default voice")
        self.name = f"{programs[0].name} {shown} at {config.server}"
        self.rate_hz = 22_050  # Piper's usual rate until the server's first answer says
        self.config = config

    def synthesize(self, text: str) -> Audio:
        """Blocking; call from a worker thread."""
        from wyoming.audio import AudioChunk, AudioStart, AudioStop
        from wyoming.tts import Synthesize, SynthesizeVoice

        if not text.strip():
            return Audio(np.zeros(0, dtype=np.int16), self.rate_hz)

        async def talk(conn: _Connection) -> Audio:
            voice = SynthesizeVoice(name=self.voice) if self.voice else None
            await conn.send(Synthesize(text=text, voice=voice).event())
            parts: list[bytes] = []
            rate, width, channels = self.rate_hz, 2, 1
            while True:
                event = await conn.receive()
                if AudioStart.is_type(event.type):
                    start = AudioStart.from_event(event)
                    rate, width, channels = start.rate, start.width, start.channels
                elif AudioChunk.is_type(event.type):
                    chunk = AudioChunk.from_event(event)
                    rate, width, channels = chunk.rate, chunk.width, chunk.channels
                    parts.append(chunk.audio)
                elif AudioStop.is_type(event.type):
                    return _pcm(b"".join(parts), rate, width, channels, self._server)

        audio = self._server.call(talk)
        self.rate_hz = audio.rate_hz
        return audio


def _pcm(data: bytes, rate: int, width: int, channels: int, server: _Server) -> Audio:
    if width != 2 or channels < 1 or rate <= 0:
        raise SpeechServerError(
            f"the {server.role} server at {server.uri} sent audio this agent cannot play "
            f"({width * 8}-bit, {channels} channel(s), {rate} Hz; expected 16-bit)"
        )
    samples = np.frombuffer(data[: len(data) // (2 * channels) * 2 * channels], dtype="<i2")
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1).astype(np.int16)
    return Audio(samples.astype(np.int16), rate)


def _short(name: str) -> str:
    """A model or voice named by its path is shown by its last part."""
    return Path(name).name.removesuffix(".onnx") if "/" in name else name
