"""Hardware that takes only 48 kHz stereo (a USB speaker or HDMI opened as ``hw:``, many USB
microphones): the agent opens it as it is, mixes the microphone down and plays the same
samples on both sides.

A stand-in for PortAudio here, the one mock in the audio tests: no ALSA plugin refuses a
format (they all convert), and the test machines have no sound card or ``snd-aloop``.
Everything else (resampling, the callbacks' bookkeeping) is the agent's real code.
"""

from __future__ import annotations

import asyncio
import threading
import time
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from voice_agent import mic, speaker
from voice_agent.audio import SPEECH_RATE_HZ, Audio
from voice_agent.mic import Microphone
from voice_agent.speaker import Speaker

RATE = 48_000


class StereoOnly:
    """What sounddevice would show for one stereo-only 48 kHz device."""

    class PortAudioError(Exception):
        pass

    def __init__(self, signal: np.ndarray | None = None) -> None:
        self.device = {"index": 0, "name": "USB Audio: - (hw:1,0)", "max_input_channels": 2,
                       "max_output_channels": 2, "default_samplerate": float(RATE)}  # fmt: skip
        self.signal = signal  # what the microphone hears, (n, 2)
        self.played: list[np.ndarray] = []
        self.opened: list[tuple[int, int]] = []  # (rate, channels)

    def query_devices(self, index: int | None = None, kind: str | None = None) -> Any:
        return self.device if index is not None or kind is not None else [self.device]

    def check_input_settings(
        self, device: int, samplerate: float, channels: int, dtype: str
    ) -> None:
        self._check(samplerate, channels)

    def check_output_settings(
        self, device: int, samplerate: float, channels: int, dtype: str
    ) -> None:
        self._check(samplerate, channels)

    def _check(self, samplerate: float, channels: int) -> None:
        if samplerate != RATE or channels != 2:
            raise self.PortAudioError("Invalid number of channels", -9998)

    def OutputStream(self, **kw: Any) -> _Stream:
        self._check(kw["samplerate"], kw["channels"])
        self.opened.append((kw["samplerate"], kw["channels"]))
        return _Stream(self, kw, output=True)

    def InputStream(self, **kw: Any) -> _Stream:
        self._check(kw["samplerate"], kw["channels"])
        self.opened.append((kw["samplerate"], kw["channels"]))
        return _Stream(self, kw, output=False)


class _Stream:
    latency = 0.02

    def __init__(self, device: StereoOnly, kw: dict[str, Any], output: bool) -> None:
        self.device, self.kw, self.output = device, kw, output
        self.running = False

    def start(self) -> None:
        self.running = True
        threading.Thread(target=self._run, daemon=True).start()

    def abort(self) -> None:
        self.running = False

    def close(self) -> None:
        self.running = False

    def _run(self) -> None:
        n, pos = self.kw["blocksize"], 0
        status = SimpleNamespace(output_underflow=False)
        while self.running:
            info = SimpleNamespace(outputBufferDacTime=time.monotonic(), inputBufferAdcTime=0.0)
            if self.output:
                block = np.zeros((n, 2), dtype=np.int16)
                self.kw["callback"](block, n, info, status)
                self.device.played.append(block.copy())
            else:
                signal = self.device.signal
                assert signal is not None
                block = signal[pos : pos + n]
                pos += n
                if len(block) < n:
                    block = np.zeros((n, 2), dtype=np.int16)
                self.kw["callback"](block, n, info, status)
            time.sleep(n / RATE / 4)  # faster than real time: only the data is checked


def test_a_stereo_only_speaker_plays_the_reply_on_both_sides(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    device = StereoOnly()
    monkeypatch.setattr(speaker, "import_sounddevice", lambda: device)
    tone = (8000 * np.sin(2 * np.pi * 440 * np.arange(RATE // 5) / RATE)).astype(np.int16)

    async def play() -> None:
        out = Speaker()
        out.enqueue(Audio(tone, RATE), tag=1)
        await asyncio.wait_for(out.drained(), 5)
        out.close()

    asyncio.run(play())
    assert device.opened == [(RATE, 2)]
    played = np.concatenate(device.played)
    assert np.array_equal(played[:, 0], played[:, 1])
    start = int(np.flatnonzero(played[:, 0])[0]) - 1  # the tone begins with a 0
    assert np.array_equal(played[start : start + len(tone), 0], tone)


def test_a_stereo_only_microphone_is_mixed_down_and_resampled_to_16_khz(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The voice on the left channel only (a headset mic on a stereo input): still heard."""
    t = np.arange(RATE) / RATE
    left = (8000 * np.sin(2 * np.pi * 300 * t)).astype(np.int16)
    device = StereoOnly(np.stack([left, np.zeros_like(left)], axis=1))
    monkeypatch.setattr(mic, "import_sounddevice", lambda: device)

    async def listen() -> list[np.ndarray]:
        m = Microphone()
        m.start()
        got = []
        async for frame in m.frames():
            got.append(frame.samples)
            if len(got) == 40:  # 0.8 s
                break
        m.close()
        return got

    frames = asyncio.run(listen())
    assert device.opened == [(RATE, 2)]
    heard = np.concatenate(frames)[1600:11200]  # past the resampler's start-up
    expected = Audio(left // 2, RATE).resampled(SPEECH_RATE_HZ).samples[1600:11200]
    level = np.sqrt(np.mean(heard.astype(float) ** 2))
    assert abs(level - np.sqrt(np.mean(expected.astype(float) ** 2))) < 0.05 * level
    assert all(len(f) == SPEECH_RATE_HZ // 50 for f in frames)
