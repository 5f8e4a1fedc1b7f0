"""Silero VAD in ONNX Runtime: whether an utterance holds speech, and where.

The model (silero_vad_v6.onnx, MIT) ships inside the faster-whisper package; it is read from
there without importing faster-whisper, whose import alone (CTranslate2, PyAV, tokenizers)
costs about 25 MB of memory: an agent whose speech is transcribed on a server (a Raspberry Pi
Zero 2 has 512 MB for everything) never needs it. ``faster_whisper_file`` finds any such
file of that package the same way.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from voice_agent.audio import SPEECH_RATE_HZ
from voice_agent.errors import ModelError, error_line

if TYPE_CHECKING:
    import onnxruntime

CHUNK = 512  # samples the model judges at a time (32 ms)
CONTEXT = 64  # samples of the chunk before that the model sees with each one
STATE = (1, 1, 128)  # the model's recurrent state (h and c)
BATCH = 2048  # chunks per call (about a minute of audio), the state carried between calls
MIN_SPEECH_S = 0.15  # shorter stretches are clicks, not words
MIN_SILENCE_S = 2.0  # shorter gaps belong to the stretch of speech around them
PAD_S = 0.4  # kept each side of a stretch, so no soft word edge is cut
HYSTERESIS = 0.15  # speech goes on until the probability falls this far under the threshold


def faster_whisper_file(relative: str) -> Path:
    """A file inside the installed faster-whisper package, found without importing it."""
    spec = importlib.util.find_spec("faster_whisper")
    if spec is None or spec.origin is None:
        raise ModelError("faster-whisper is not installed: run scripts/setup.sh")
    path = Path(spec.origin).parent / relative
    if not path.is_file():
        raise ModelError(f"{path} is missing: reinstall faster-whisper (scripts/setup.sh)")
    return path


class Silero:
    """The probability of speech in each 32 ms of 16 kHz audio, and the stretches of speech."""

    def __init__(self, threshold: float) -> None:
        import onnxruntime as ort

        self.threshold = threshold
        options = ort.SessionOptions()
        # one thread: it runs beside the audio loop and the recogniser on small machines
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.enable_cpu_mem_arena = False
        options.log_severity_level = 4
        path = faster_whisper_file("assets/silero_vad_v6.onnx")
        try:
            self._session: onnxruntime.InferenceSession = ort.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ONNX Runtime raises its own types for bad files
            raise ModelError(f"cannot load the speech detector {path}: {error_line(exc)}") from exc

    def probabilities(self, samples: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """One probability per 512 samples (the last chunk padded with silence)."""
        padded = np.pad(samples.astype(np.float32), (0, -len(samples) % CHUNK))
        chunks = padded.reshape(-1, CHUNK)
        if not len(chunks):
            return np.zeros(0, dtype=np.float32)
        before = np.zeros((len(chunks), CONTEXT), dtype=np.float32)
        before[1:] = chunks[:-1, -CONTEXT:]
        windows = np.concatenate([before, chunks], axis=1)
        h = np.zeros(STATE, dtype=np.float32)
        c = np.zeros(STATE, dtype=np.float32)
        out = []
        for i in range(0, len(windows), BATCH):
            probs, h, c = self._session.run(None, {"input": windows[i : i + BATCH], "h": h, "c": c})
            out.append(np.asarray(probs, dtype=np.float32).reshape(-1))
        return np.concatenate(out)

    def spans(self, samples: npt.NDArray[np.float32]) -> list[tuple[int, int]]:
        """The stretches of speech as (start, end) sample offsets, padded by 0.4 s each side
        and joined where the padding meets."""
        probs = self.probabilities(samples)
        quiet_below = max(self.threshold - HYSTERESIS, 0.01)
        min_silence = round(MIN_SILENCE_S * SPEECH_RATE_HZ / CHUNK)
        found: list[tuple[int, int]] = []
        start: int | None = None
        last_loud = 0  # the last chunk at or above the threshold in the current stretch
        for i, p in enumerate(probs):
            if p >= self.threshold:
                if start is None:
                    start = i
                last_loud = i
            elif start is not None and p < quiet_below and i - last_loud > min_silence:
                found.append((start, last_loud + 1))
                start = None
        if start is not None:  # still open when the audio ends: it runs to the end
            found.append((start, len(probs)))
        min_chunks = MIN_SPEECH_S * SPEECH_RATE_HZ / CHUNK
        pad = round(PAD_S * SPEECH_RATE_HZ)
        joined: list[tuple[int, int]] = []
        for first, end in found:
            if end - first <= min_chunks:
                continue
            a, b = max(0, first * CHUNK - pad), min(len(samples), end * CHUNK + pad)
            if joined and a <= joined[-1][1]:
                joined[-1] = (joined[-1][0], b)
            else:
                joined.append((a, b))
        return joined
