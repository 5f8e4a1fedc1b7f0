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

from voice_agent.errors import AudioFileError, error_line

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
    """Convert float samples in [-1, 1] to 16-bit, clipping anything outside (NaN: 0)."""
    scaled = np.nan_to_num(samples * 32768.0, nan=0.0, posinf=32767.0, neginf=-32768.0)
    return np.asarray(np.clip(scaled, -32768, 32767), dtype=np.int16)


def rms(samples: Pcm) -> float:
    """Root-mean-square level of 16-bit samples (full scale 32768)."""
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))


def dbfs_level(dbfs: float) -> float:
    """The ``rms`` of a level given in dB full scale."""
    return 32768.0 * 10 ** (dbfs / 20)


def silence(seconds: float, rate_hz: int = SPEECH_RATE_HZ) -> Audio:
    return Audio(np.zeros(round(seconds * rate_hz), dtype=np.int16), rate_hz)


def concat(parts: list[Audio], rate_hz: int) -> Audio:
    if not parts:
        return Audio(np.zeros(0, dtype=np.int16), rate_hz)
    return Audio(np.concatenate([p.resampled(rate_hz).samples for p in parts]), rate_hz)


def read_file(path: Path, resample: bool = True, max_seconds: float | None = None) -> Audio:
    """Read any wav/flac/ogg/mp3 file, downmix to mono and (by default) resample to 16 kHz.

    Decoded a second at a time, so memory stays bounded whatever the file's length: a file
    longer than ``max_seconds`` is refused as soon as that is known (from its header, or
    while decoding when the header cannot say). NaN and infinite samples become silence.
    """
    _check_readable(path)
    try:
        with soundfile.SoundFile(str(path)) as f, np.errstate(invalid="ignore", over="ignore"):
            rate = int(f.samplerate)
            if max_seconds is not None and f.frames / rate > max_seconds:
                raise _too_long(path, f.frames / rate, max_seconds)
            out_rate = SPEECH_RATE_HZ if resample else rate
            stream = None if rate == out_rate else soxr.ResampleStream(rate, out_rate, 1, "float32")
            kept = bytearray()  # grows in place (no second copy of the whole file at the end)
            for block in f.blocks(blocksize=rate, dtype="float32", always_2d=True):
                mono = np.nan_to_num(block.mean(axis=1), nan=0.0, posinf=1.0, neginf=-1.0)
                if stream is not None:
                    mono = stream.resample_chunk(mono)
                kept += from_float(mono).tobytes()
                if max_seconds is not None and len(kept) // 2 > max_seconds * out_rate:
                    raise _too_long(path, None, max_seconds)
            if stream is not None:
                kept += from_float(
                    stream.resample_chunk(np.zeros(0, np.float32), last=True)
                ).tobytes()
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise AudioFileError(
            f"cannot read audio file {path}: {_reason(exc)}; use WAV, FLAC, OGG or MP3"
        ) from None
    samples = np.frombuffer(kept, dtype=np.int16)
    if len(samples) == 0:
        raise AudioFileError(f"audio file {path} holds no samples")
    return Audio(samples, out_rate)


def _check_readable(path: Path) -> None:
    """The reason a file cannot be opened, in words (libsndfile would say "System error")."""
    try:
        with path.open("rb"):
            pass
    except FileNotFoundError:
        raise AudioFileError(f"audio file {path} does not exist") from None
    except IsADirectoryError:
        raise AudioFileError(f"{path} is a folder, not an audio file") from None
    except PermissionError:
        raise AudioFileError(
            f"cannot read audio file {path}: permission denied (check its permissions)"
        ) from None
    except OSError as exc:
        raise AudioFileError(f"cannot read audio file {path}: {exc.strerror}") from None


def _too_long(path: Path, seconds: float | None, limit: float) -> AudioFileError:
    length = f" ({seconds / 60:.1f} min)" if seconds is not None else ""
    return AudioFileError(
        f"audio file {path} is longer than {limit:g} s{length}: one --input file is one turn "
        f"of speech; cut it shorter, or raise audio.max_file_s"
    )


def write_wav(path: Path, audio: Audio) -> None:
    soundfile.write(str(path), audio.samples, audio.rate_hz, subtype="PCM_16")


def write_private_flac(path: Path, audio: Audio) -> None:
    """Lossless and about half the size of WAV; owner-only, like the transcript it belongs to."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "wb") as fh:
        soundfile.write(fh, audio.samples, audio.rate_hz, format="FLAC", subtype="PCM_16")


def _reason(exc: Exception) -> str:
    text = error_line(exc, last=True)
    # libsndfile repeats the path in its message; the path is already in ours.
    return text.split(": ", 1)[-1] if "Error opening" in text else text
