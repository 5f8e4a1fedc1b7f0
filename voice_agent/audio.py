"""The one internal audio format: 16-bit mono PCM in a numpy array, with its rate beside it.

Speech in (files, microphone) is converted to 16 kHz at the edge, the rate Whisper and
webrtcvad expect. Speech out stays at the voice's own rate (Piper: 22,050 Hz) until the
speaker or a file needs another one, so it is resampled at most once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soundfile
import soxr

from voice_agent.errors import AudioFileError

SPEECH_RATE_HZ = 16_000
Pcm = npt.NDArray[np.int16]


@dataclass(frozen=True)
class Audio:
    """Mono 16-bit samples at ``rate_hz``."""

    samples: Pcm
    rate_hz: int

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.rate_hz

    def as_float32(self) -> npt.NDArray[np.float32]:
        """Samples scaled to [-1, 1), the form the models take."""
        return self.samples.astype(np.float32) / 32768.0

    def resampled(self, rate_hz: int) -> Audio:
        if rate_hz == self.rate_hz:
            return self
        out = soxr.resample(self.as_float32(), self.rate_hz, rate_hz, quality="HQ")
        return Audio(from_float(out), rate_hz)


def from_float(samples: npt.NDArray[np.floating]) -> Pcm:
    """Convert float samples in [-1, 1] to 16-bit, clipping anything outside."""
    return np.asarray(np.clip(samples * 32768.0, -32768, 32767), dtype=np.int16)


def silence(seconds: float, rate_hz: int = SPEECH_RATE_HZ) -> Audio:
    return Audio(np.zeros(round(seconds * rate_hz), dtype=np.int16), rate_hz)


def concat(parts: list[Audio], rate_hz: int) -> Audio:
    if not parts:
        return Audio(np.zeros(0, dtype=np.int16), rate_hz)
    return Audio(np.concatenate([p.resampled(rate_hz).samples for p in parts]), rate_hz)


def read_file(path: Path, resample: bool = True) -> Audio:
    """Read any wav/flac/ogg/mp3 file, downmix to mono and (by default) resample to 16 kHz."""
    if not path.is_file():
        raise AudioFileError(f"audio file {path} does not exist")
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise AudioFileError(
            f"cannot read audio file {path}: {_reason(exc)}; use WAV, FLAC, OGG or MP3"
        ) from None
    if data.shape[0] == 0:
        raise AudioFileError(f"audio file {path} holds no samples")
    audio = Audio(from_float(data.mean(axis=1)), int(rate))
    return audio.resampled(SPEECH_RATE_HZ) if resample else audio


def write_wav(path: Path, audio: Audio) -> None:
    soundfile.write(str(path), audio.samples, audio.rate_hz, subtype="PCM_16")


def write_private_flac(path: Path, audio: Audio) -> None:
    """Lossless and about half the size of WAV; owner-only, like the transcript it belongs to."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "wb") as fh:
        soundfile.write(fh, audio.samples, audio.rate_hz, format="FLAC", subtype="PCM_16")


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    # libsndfile repeats the path in its message; the path is already in ours.
    return text.split(": ", 1)[-1] if "Error opening" in text else text
