"""Microphone: 16 kHz mono frames from PortAudio, handed to the event loop as they arrive.

The device is opened at 16 kHz when it allows it, otherwise at its own rate and resampled with
soxr's streaming resampler. A device that stops delivering audio (unplugged, suspended) is
reopened with backoff while the session goes on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import soxr

from voice_agent.audio import SPEECH_RATE_HZ, Pcm
from voice_agent.devices import (
    capture_rate,
    channels_for,
    find_device,
    import_sounddevice,
    open_error,
)
from voice_agent.errors import DeviceError

log = logging.getLogger(__name__)
STALL_S = 2.0  # no audio for this long means the device is gone
MAX_BACKOFF_S = 10.0
BLOCK_MS = 40  # audio per wake-up: two 20 ms frames; halves the idle CPU of 20 ms blocks


@dataclass(frozen=True)
class Frame:
    samples: Pcm  # exactly frame_ms of 16 kHz audio
    captured_at: float  # time.monotonic() when its last sample was captured (approximately)


@dataclass(frozen=True)
class _Chunk:
    """What one device callback delivered, and when (``time.monotonic()``)."""

    samples: Pcm
    arrived: float


class Microphone:
    def __init__(
        self, device: str = "", frame_ms: int = 20, on_note: Callable[[str], None] | None = None
    ) -> None:
        self._sd = import_sounddevice()
        self.device_spec = device
        self.frame_samples = SPEECH_RATE_HZ * frame_ms // 1000
        self._note = on_note or (lambda text: None)
        self._stream: Any = None
        self._queue: asyncio.Queue[_Chunk | None] = asyncio.Queue()
        self._last_chunk = 0.0
        self.name = ""
        self.rate_hz = SPEECH_RATE_HZ
        self.latency_s = 0.0

    def start(self) -> None:
        """Open the device now, so a problem is reported before the agent says it listens."""
        self._queue = asyncio.Queue()
        self._open(asyncio.get_running_loop(), self._queue)

    def _open(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[_Chunk | None]) -> None:
        """Open the device; raises DeviceError with what to do when it cannot."""
        sd = self._sd
        index, info = find_device(sd, self.device_spec, "input")
        self.name = str(info["name"])
        rate = self.rate_hz = capture_rate(sd, index, info)
        channels = channels_for(sd, index, rate, "input", int(info["max_input_channels"]))
        resampler = (
            None
            if rate == SPEECH_RATE_HZ
            else soxr.ResampleStream(rate, SPEECH_RATE_HZ, 1, dtype="int16")
        )

        def callback(indata: Any, frames: int, time_info: Any, status: Any) -> None:
            # stamped here, not when the event loop takes it: a loop busy for a few hundred
            # ms (synthesis, a transcription's Python side) would make audio captured while
            # the reply still played look captured after it paused (and its echo a barge-in)
            arrived = time.monotonic()
            if channels == 1:
                data = indata[:, 0].copy()
            else:  # a stereo-only microphone: both channels, in case the voice is on one
                data = indata.mean(axis=1).round().astype(np.int16)
            if resampler is not None:
                data = resampler.resample_chunk(data)
            loop.call_soon_threadsafe(queue.put_nowait, _Chunk(data, arrived))

        try:
            self._stream = sd.InputStream(
                samplerate=rate, channels=channels, dtype="int16", device=index,
                blocksize=rate * BLOCK_MS // 1000, callback=callback, latency="low",
            )  # fmt: skip
            self._stream.start()
        except sd.PortAudioError as exc:
            raise open_error(exc, "input", self.name) from None
        self.latency_s = float(self._stream.latency)
        log.info("microphone %s at %d Hz (latency %.0f ms)", self.name, rate, self.latency_s * 1000)

    def close(self) -> None:
        if self._stream is not None:
            try:
                self._stream.abort()
                self._stream.close()
            except self._sd.PortAudioError:
                pass
            self._stream = None

    async def frames(self) -> AsyncIterator[Frame]:
        """Frames until cancelled; reopens the device when it stalls."""
        loop = asyncio.get_running_loop()
        if self._stream is None:
            self.start()  # a failure here is fatal: the user must fix the device
        self._last_chunk = time.monotonic()
        watchdog = asyncio.create_task(self._watchdog())
        pending = np.zeros(0, dtype=np.int16)
        backoff = 0.5
        try:
            while True:
                chunk = await self._queue.get()
                if chunk is None:
                    pending = np.zeros(0, dtype=np.int16)
                    await self._reopen(loop, backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF_S)
                    continue
                self._last_chunk = time.monotonic()
                if backoff > 0.5:
                    self._note(f"(microphone {self.name!r} is back)")
                backoff = 0.5
                pending = np.concatenate([pending, chunk.samples])
                now = chunk.arrived - self.latency_s
                n = self.frame_samples
                while len(pending) >= n:
                    frame, pending = pending[:n], pending[n:]
                    yield Frame(frame, now - len(pending) / SPEECH_RATE_HZ)
        finally:
            watchdog.cancel()
            self.close()

    async def _watchdog(self) -> None:
        """No audio for STALL_S means the device is gone: wake the reader to reopen it."""
        while True:
            await asyncio.sleep(STALL_S / 4)
            if time.monotonic() - self._last_chunk > STALL_S:
                self._last_chunk = time.monotonic() + MAX_BACKOFF_S  # one wake-up per reopen
                self._queue.put_nowait(None)

    async def _reopen(self, loop: asyncio.AbstractEventLoop, backoff: float) -> None:
        self.close()
        self._note(f"(microphone {self.name!r} stopped; reopening in {backoff:.1f} s)")
        await asyncio.sleep(backoff)
        self._queue = asyncio.Queue()
        try:
            self._open(loop, self._queue)
        except DeviceError as exc:
            log.info("reopen failed: %s", exc)
        self._last_chunk = time.monotonic()  # the watchdog tries again after STALL_S
