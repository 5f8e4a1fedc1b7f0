"""Speaker: gapless playback of reply pieces from PortAudio's own callback thread.

The output stream runs for the whole session and plays silence when idle, so consecutive
sentences join without gaps, a stop takes effect within one callback (a few ms), and the
device never has to wake up in front of a first syllable.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from voice_agent.audio import SPEECH_RATE_HZ, Audio, Pcm, concat
from voice_agent.devices import channels_for, find_device, import_sounddevice, open_error
from voice_agent.errors import DeviceError

log = logging.getLogger(__name__)


class AudioOut(Protocol):
    """Where reply audio goes: a real speaker, or a buffer written to a file."""

    def enqueue(self, audio: Audio, tag: int) -> None: ...
    def played_fraction(self, tag: int) -> float: ...
    def stop(self) -> None: ...
    def reset(self) -> None: ...
    def first_sound_at(self) -> float | None: ...
    async def drained(self) -> None: ...


# No callback for this long means the device is gone. They come every 40 ms, but through
# PulseAudio a new stream's come in bursts with gaps of up to 1.5 s (measured) while its
# buffer fills.
STALL_S = 5.0
MAX_BACKOFF_S = 10.0
MAX_CLOSE_WAIT_S = 0.5  # at most this long for the device to play out what it holds
# An underrun this soon after the last one is not a late callback but the device's recovery
# loop: a freshly opened stream on a sink that was suspended can report an underrun every
# 1-2 ms for up to a second, and what is handed over then is dropped (measured: a 3.2 s
# replay went through in 0.7 s and only its first 0.2 s sounded). Silence then; the queue waits.
RUNAWAY_S = 0.005
CUE = -1  # the tag of a cue (cues.py): not part of any reply, never counted as its sound


@dataclass
class _Piece:
    samples: Pcm
    tag: int
    pos: int = 0
    reference: Pcm | None = None  # the same audio at 16 kHz, for the echo canceller


class Speaker:
    """One output device; ``enqueue`` and ``stop`` are safe from any thread.

    ``on_note`` hears, once, when output underruns persist while a reply plays (the device
    ran dry: the reply stutters); it is called on the event loop that created the speaker.
    """

    def __init__(
        self,
        device: str = "",
        blocksize_ms: int = 20,
        on_note: Callable[[str], None] | None = None,
    ) -> None:
        sd = import_sounddevice()
        self._underruns: collections.deque[float] = collections.deque(maxlen=UNDERRUNS_TOLD)
        self._note = on_note
        self._told = False
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        index, info = find_device(sd, device, "output")
        self.name = str(info["name"])
        self.rate_hz = int(info["default_samplerate"])
        self._lock = threading.Lock()
        self._queue: collections.deque[_Piece] = collections.deque()
        self._played: dict[int, int] = collections.defaultdict(int)
        self._lengths: dict[int, int] = collections.defaultdict(int)
        self._first_sound: float | None = None
        self._idle = threading.Event()
        self._idle.set()
        self._audible_until = 0.0
        self._paused = False
        # Sees, at 16 kHz, every block handed to the device, silence included, on the audio
        # thread: the echo canceller's far end. Must be quick and must not block.
        self.far_end: Callable[[Pcm], None] | None = None
        self._reference = ReferenceClock(self.rate_hz)
        self._sd, self._spec, self._blocksize_ms = sd, device, blocksize_ms
        self._stream: Any = None
        self._last_callback = time.monotonic()
        self._last_underflow = 0.0
        self._open(index)
        self._watchdog = self._loop.create_task(self._watch()) if self._loop else None

    def _open(self, index: int) -> None:
        sd = self._sd
        most = int(sd.query_devices(index)["max_output_channels"])
        channels = channels_for(sd, index, self.rate_hz, "output", most)
        try:
            self._stream = sd.OutputStream(
                samplerate=self.rate_hz, channels=channels, dtype="int16", device=index,
                blocksize=self.rate_hz * self._blocksize_ms // 1000, callback=self._callback,
                latency="low",
            )  # fmt: skip
            self._stream.start()
        except sd.PortAudioError as exc:
            self._stream = None
            raise open_error(exc, "output", self.name) from None
        self.latency_s = float(self._stream.latency)
        self._last_callback = time.monotonic()

    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        # closing aborts the stream, dropping what the device still holds: after a reply
        # that played out, let that last syllable sound first (tens of ms)
        left = self._audible_until - time.monotonic()
        if left > 0 and self._idle.is_set():
            time.sleep(min(left, MAX_CLOSE_WAIT_S))
        self._close_stream()

    def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            with contextlib.suppress(self._sd.PortAudioError):
                stream.abort()
                stream.close()

    async def _watch(self) -> None:
        """A device that stops asking for audio (a USB speaker unplugged, a sink that went
        away) is closed and reopened, by the same setting, until it is back; what was queued
        waits and then plays on. On the event loop, as the microphone's reopening is:
        PortAudio must not open streams from two threads at once."""
        backoff = 0.5
        while True:
            await asyncio.sleep(STALL_S / 4)
            if time.monotonic() - self._last_callback <= STALL_S:
                continue
            self._tell(f"(speaker {self.name!r} stopped; reopening in {backoff:.1f} s)")
            while True:
                self._close_stream()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                try:
                    index, _ = find_device(self._sd, self._spec, "output")
                    self._open(index)
                except DeviceError as exc:
                    log.info("speaker reopen failed: %s", exc)
                    continue
                await asyncio.sleep(STALL_S)
                if time.monotonic() - self._last_callback <= STALL_S:
                    break  # it asks for audio again
            self._tell(f"(speaker {self.name!r} is back)")
            backoff = 0.5

    def _tell(self, text: str) -> None:
        log.info("%s", text)
        if self._note is not None:
            self._note(text)

    def enqueue(self, audio: Audio, tag: int) -> None:
        """Queue audio (resampled here, off the callback thread) after what is playing."""
        samples = audio.resampled(self.rate_hz).samples
        # Resampled whole here rather than block by block in the callback: a streaming
        # resampler hands its output over in bursts of up to 50 ms, and a reference that
        # arrives after its echo cannot be cancelled.
        reference = audio.resampled(SPEECH_RATE_HZ).samples if self.far_end else None
        with self._lock:
            if tag != CUE:  # the reply begins: a cue still waiting or sounding gives way
                self._drop_cues()
            self._queue.append(_Piece(samples, tag, reference=reference))
            self._lengths[tag] += len(samples)
            self._idle.clear()

    def stop_cues(self) -> None:
        """Silence a cue at once (the user speaks); a reply's audio plays on."""
        with self._lock:
            self._drop_cues()

    def _drop_cues(self) -> None:
        kept = [p for p in self._queue if p.tag != CUE]
        if len(kept) != len(self._queue):
            self._queue = collections.deque(kept)
            if not self._queue and not self._idle.is_set():
                self._audible_until = time.monotonic() + self.latency_s
                self._idle.set()

    @property
    def speaking(self) -> bool:
        """A reply (not only a cue) is queued or sounding."""
        with self._lock:
            return any(p.tag != CUE for p in self._queue)

    def pause(self) -> None:
        """Silence at once, keeping what is queued: ``resume`` goes on where it stopped."""
        self._paused = True

    def resume(self) -> None:
        self._paused = False

    @property
    def paused(self) -> bool:
        return self._paused

    def stop(self) -> None:
        """Silence at once: drop everything queued and playing."""
        with self._lock:
            self._paused = False
            self._queue.clear()
            if not self._idle.is_set():
                self._audible_until = time.monotonic() + self.latency_s
            self._idle.set()

    def reset(self) -> None:
        """Start counting afresh for a new reply."""
        with self._lock:
            self._played.clear()
            self._lengths.clear()
            self._first_sound = None

    def played_fraction(self, tag: int) -> float:
        """How much of the audio queued under ``tag`` has reached the device, 0..1."""
        with self._lock:
            total = self._lengths.get(tag, 0)
            return self._played[tag] / total if total else 0.0

    def first_sound_at(self) -> float | None:
        """``time.time()`` when the first queued sample reached the device (latency included)."""
        return self._first_sound

    @property
    def playing(self) -> bool:
        return not self._idle.is_set()

    def audible_until(self) -> float:
        """``time.monotonic()`` until which the room may still hear the last reply."""
        return math.inf if self.playing else self._audible_until

    async def drained(self) -> None:
        while not self._idle.is_set():
            await asyncio.sleep(0.01)

    def _callback(self, outdata: Any, frames: int, time_info: Any, status: Any) -> None:
        now = self._last_callback = time.monotonic()
        out = outdata[:, 0]
        filled = 0
        runaway = False
        if status.output_underflow:
            runaway = now - self._last_underflow < RUNAWAY_S
            self._last_underflow = now
            if runaway:
                pass  # not the machine being slow: nothing to count or tell
            elif self._queue:
                self._underrun()
            else:
                log.debug("output underrun while idle")
        reference = self._reference if self.far_end is not None else None
        if reference is not None:
            reference.device_time(float(time_info.outputBufferDacTime), frames)
        with self._lock:
            while filled < frames and self._queue and not self._paused and not runaway:
                piece = self._queue[0]
                n = min(frames - filled, len(piece.samples) - piece.pos)
                out[filled : filled + n] = piece.samples[piece.pos : piece.pos + n]
                if reference is not None:
                    reference.played(piece.reference, piece.pos, n)
                if self._first_sound is None and n and piece.tag != CUE:
                    self._first_sound = time.time() + self.latency_s
                piece.pos += n
                filled += n
                self._played[piece.tag] += n
                if piece.pos >= len(piece.samples):
                    self._queue.popleft()
            if filled and not self._queue:
                self._audible_until = time.monotonic() + self.latency_s + filled / self.rate_hz
                self._idle.set()
        out[filled:] = 0
        if outdata.shape[1] > 1:  # a stereo-only device: the same on both sides
            outdata[:, 1:] = outdata[:, :1]
        if reference is not None and self.far_end is not None:
            reference.played(None, 0, frames - filled)
            self.far_end(reference.take())

    def _underrun(self) -> None:
        """Count an underrun while speaking; tell the user once when they keep coming."""
        now = time.monotonic()
        log.debug("output underrun while speaking")
        self._underruns.append(now)
        persistent = len(self._underruns) == UNDERRUNS_TOLD and (
            now - self._underruns[0] <= UNDERRUN_WINDOW_S
        )
        if not persistent or self._told or self._note is None or self._loop is None:
            return
        self._told = True
        self._loop.call_soon_threadsafe(
            self._note,
            f"(the speaker ran dry {UNDERRUNS_TOLD} times in {UNDERRUN_WINDOW_S:.0f} s while "
            "speaking, so replies may stutter: the machine is too busy to feed it in time. "
            "Close other busy programs; --debug logs each underrun)",
        )


class ReferenceClock:
    """What the speaker played, at 16 kHz, sample for sample in step with the device: the
    device's n-th sample is the reference's n * 16000 / rate-th, so the two never drift."""

    def __init__(self, rate_hz: int) -> None:
        self.rate_hz = rate_hz
        self._device = 0  # device samples played
        self._given = 0  # reference samples produced
        self._next_dac: float | None = None  # when the next block should sound, if known
        self._parts: list[Pcm] = []

    def device_time(self, dac_time: float, frames: int) -> None:
        """When the block about to be filled will sound (PortAudio's DAC time; 0 = unknown).
        After an underrun the device has played silence nobody handed it, and everything
        after sounds later by as much: the reference gets the same silence, or the echo
        would arrive later than the canceller expects (measured: delay jumps of 40 ms and
        a few hundred ms of uncancelled echo at the next reply)."""
        if dac_time <= 0:
            self._next_dac = None
            return
        if self._next_dac is not None and dac_time - self._next_dac > GAP_S:
            self.played(None, 0, round((dac_time - self._next_dac) * self.rate_hz))
        self._next_dac = dac_time + frames / self.rate_hz

    def played(self, reference: Pcm | None, pos: int, n: int) -> None:
        """``n`` device samples from ``pos`` of a piece (None: silence)."""
        self._device += n
        due = self._device * SPEECH_RATE_HZ // self.rate_hz - self._given
        if due <= 0:
            return
        part = np.zeros(due, dtype=np.int16)
        if reference is not None:
            start = pos * SPEECH_RATE_HZ // self.rate_hz
            chunk = reference[start : start + due]
            part[: len(chunk)] = chunk
        self._parts.append(part)
        self._given += due

    def take(self) -> Pcm:
        parts, self._parts = self._parts, []
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)


GAP_S = 0.002  # a later DAC time than this means the device inserted silence
UNDERRUNS_TOLD = 5  # underruns while speaking, within UNDERRUN_WINDOW_S, that are told
UNDERRUN_WINDOW_S = 10.0


class AudioBuffer:
    """An ``AudioOut`` that keeps everything (replies written to files, muted sessions)."""

    def __init__(self, rate_hz: int) -> None:
        self.rate_hz = rate_hz
        self._pieces: list[Audio] = []
        self._tags: set[int] = set()
        self._first: float | None = None

    def enqueue(self, audio: Audio, tag: int) -> None:
        self._first = self._first or time.time()
        self._pieces.append(audio)
        self._tags.add(tag)

    def played_fraction(self, tag: int) -> float:
        return 1.0 if tag in self._tags else 0.0

    def stop(self) -> None:
        pass

    def reset(self) -> None:
        pass

    def first_sound_at(self) -> float | None:
        return self._first

    async def drained(self) -> None:
        pass

    def take(self) -> Audio:
        """Everything enqueued since the last take, as one piece."""
        audio = concat(self._pieces, self.rate_hz)
        self._pieces, self._first = [], None
        self._tags.clear()
        return audio
