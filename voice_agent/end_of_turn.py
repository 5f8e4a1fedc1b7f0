"""Has the user finished their turn? Smart Turn v3.2 listens to how the words ended.

A fixed silence cannot tell "I'd like a table for... [thinking] four" from "I'd like a table
for four." [done]: both stop. The voice can: intonation, a drawn-out last syllable, an
unfinished phrase. Smart Turn (Daily, BSD-2-Clause) is a small Whisper-encoder classifier
trained on exactly that; it reads the last 8 s of the utterance as Whisper log-mel features
and answers the probability that the turn is complete (about 50 ms on one core of a Xeon).

The weights ship inside the ``pipecat-ai`` wheel. scripts/setup.sh installs that wheel
without its dependencies (numba, aiohttp, openai, ... are not needed): only the ONNX file is
read, the framework is never imported. Features come from faster-whisper's own Whisper
feature extractor after the waveform normalisation the model was trained with.
"""

from __future__ import annotations

import importlib.util
import sys
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from voice_agent import heap
from voice_agent.audio import SPEECH_RATE_HZ, Audio
from voice_agent.config import is_bundled
from voice_agent.errors import ModelError, error_line
from voice_agent.silero import faster_whisper_file

if TYPE_CHECKING:
    import onnxruntime

BUNDLED_FILE = "pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx"
WINDOW_S = 8  # the model hears the last 8 s, zero-padded in front when shorter


def model_path(name: str) -> Path | None:
    """The ONNX file for ``vad.end_of_turn_model``; None when the bundled one is not
    installed (then turns end on silence alone)."""
    if not is_bundled(name):
        path = Path(name).expanduser()
        if not path.is_file():
            raise ModelError(
                f"end-of-turn model {name} does not exist: give a Smart Turn .onnx file, "
                "or 'bundled'"
            )
        return path
    try:
        located = Path(str(metadata.distribution("pipecat-ai").locate_file(BUNDLED_FILE)))
    except metadata.PackageNotFoundError:
        return None
    return located if located.is_file() else None


class EndOfTurn:
    """Smart Turn in ONNX Runtime: ``complete(audio)`` is the probability that the speaker has
    finished. Blocking (about 50 ms); safe to call from one thread at a time."""

    def __init__(self, path: Path) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        # one thread: it runs beside Whisper on two cores, and is small enough not to need more
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # the arena is handed back after each judgement (``heap.releasing_run``): nothing
        # kept between judgements, and a peak 10 MB lower than without an arena, no slower
        options.enable_mem_pattern = False
        try:
            self._session: onnxruntime.InferenceSession = ort.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ONNX Runtime raises its own types for bad files
            raise ModelError(f"cannot load end-of-turn model {path}: {error_line(exc)}") from exc
        self._features = whisper_features()(chunk_length=WINDOW_S)
        self._run = heap.releasing_run()

    def complete(self, audio: Audio) -> float:
        samples = audio.resampled(SPEECH_RATE_HZ).as_float32()
        n = WINDOW_S * SPEECH_RATE_HZ
        window = np.zeros(n, dtype=np.float32)
        tail = samples[-n:]
        window[n - len(tail) :] = tail
        # zero mean, unit variance over the padded window, as in training (transformers'
        # WhisperFeatureExtractor with do_normalize=True)
        window = (window - window.mean()) / np.sqrt(window.var() + 1e-7)
        mel = self._features(window, padding=0)[:, : n // 160]
        features = {"input_features": mel[np.newaxis].astype(np.float32)}
        (out,) = self._session.run(None, features, self._run)
        return float(np.asarray(out).reshape(-1)[0])


def whisper_features() -> Any:
    """faster-whisper's log-mel ``FeatureExtractor`` (Whisper's features, which Smart Turn was
    trained on). Its module needs only numpy, but importing it through the package would run
    faster-whisper's ``__init__`` (CTranslate2, PyAV: about 25 MB) even when speech is
    transcribed on a server; so the file is loaded on its own unless the package is loaded."""
    loaded = sys.modules.get("faster_whisper.feature_extractor")
    if loaded is None:
        path = faster_whisper_file("feature_extractor.py")
        spec = importlib.util.spec_from_file_location("voice_agent._whisper_features", path)
        if spec is None or spec.loader is None:
            raise ModelError(f"cannot load {path}: reinstall faster-whisper")
        loaded = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(loaded)
    return loaded.FeatureExtractor
