"""Where the words in a clip are: Whisper's word alignment, for benchmarks and the pause set.

End of speech, as the user experiences it, is where the last word ends. The last frame
webrtcvad calls voiced lies 0.08-0.46 s later on the public clips (its own smoothing and the
breath after a word), so a benchmark that starts its clock there flatters the agent by about a
quarter of a second. Whisper's ``word_timestamps`` place each word from the cross-attention;
with the bundled tiny.en they agree with an energy marker within about 0.15 s on average.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voice_agent.audio import SPEECH_RATE_HZ, read_file
from voice_agent.config import VadConfig
from voice_agent.stt import resolve_model
from voice_agent.vad import VoiceDetector


@dataclass(frozen=True)
class Word:
    text: str
    start: float  # seconds from the start of the clip
    end: float


@functools.cache
def _aligner():  # type: ignore[no-untyped-def]
    from faster_whisper import WhisperModel

    return WhisperModel(resolve_model("bundled"), device="cpu", compute_type="int8")


@functools.cache
def aligned_words(path: Path) -> tuple[Word, ...]:
    """The clip's words with their times (beam 5, the full 30 s window: alignment, not speed)."""
    samples = read_file(path).as_float32()
    segments, _ = _aligner().transcribe(samples, language="en", beam_size=5, word_timestamps=True)
    return tuple(Word(w.word.strip(), w.start, w.end) for s in segments for w in s.words or [])


def last_word_end(path: Path) -> float:
    """Seconds from the start of the clip to the end of its last word."""
    return aligned_words(path)[-1].end


def energy_end(path: Path, dbfs: float = -34.0) -> float:
    """The end of the last 20 ms frame louder than ``dbfs``: a check on the alignment."""
    samples = read_file(path).samples.astype(np.float64)
    n = SPEECH_RATE_HZ // 50
    frames = samples[: len(samples) // n * n].reshape(-1, n)
    level = 20 * np.log10(np.sqrt((frames**2).mean(axis=1)) / 32768 + 1e-12)
    loud = np.flatnonzero(level > dbfs)
    return float((loud[-1] + 1) * n / SPEECH_RATE_HZ) if loud.size else 0.0


def last_voiced_end(path: Path) -> float:
    """The end of the last frame webrtcvad calls voiced (the old benchmark's marker, at the
    aggressiveness it then had, 2: it stays comparable with the figures reported with it)."""
    samples = read_file(path).samples
    config = VadConfig()
    vad = VoiceDetector(2, config.floor_dbfs)
    n = SPEECH_RATE_HZ * config.frame_ms // 1000
    ends = [i + n for i in range(0, len(samples) - n + 1, n) if vad.is_speech(samples[i : i + n])]
    return ends[-1] / SPEECH_RATE_HZ if ends else 0.0
