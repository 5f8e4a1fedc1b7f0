"""The wake word: while the agent is asleep, this is all that listens.

microWakeWord models run in pymicro-wakeword's own TensorFlow Lite runtime (an optional
extra: wheels for x86_64 and aarch64 Linux with glibc 2.35+). Measured on the 20 public clips
(101 s, AMD EPYC): about 4 ms of CPU per second of audio, and no model came within half its
threshold. Nothing heard while asleep is transcribed, sent or written; the audio before the
wake word is dropped.
"""

from __future__ import annotations

import difflib
import json
import logging
import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from voice_agent.audio import Pcm, rms
from voice_agent.errors import ConfigError

if TYPE_CHECKING:
    from voice_agent.mic import Frame

log = logging.getLogger(__name__)

BUILT_IN = ("okay_nabu", "hey_jarvis", "hey_mycroft", "alexa")
INSTALL_HINT = (
    "install it with scripts/setup.sh (or pip install 'voice-agent[wake]'); it has wheels for "
    "64-bit Linux (x86_64, aarch64) with glibc 2.35 or newer, e.g. Debian 12, Raspberry Pi OS "
    "bookworm 64-bit"
)
# The request may follow the wake word in one breath: where one ends and the other begins
# (after_wake_word).
DIP_FROM_S = 0.34
DIP_TO_S = 0.06
DIP_LEVEL = 0.2  # of the loudest frame's RMS level in the look-back
DIP_TAIL_FRAMES = 2
PAUSE_FRAMES = 3  # unvoiced frames at the detection that make a pause: a stop consonant's
# closure inside the request ("wha[t]'s the") measured 40 ms unvoiced
KEPT_S = 1.0  # frames kept while asleep, to hand over what follows the wake word


def model_config(word: str) -> Path:
    """The microWakeWord JSON for a built-in name ("okay nabu", "Okay_Nabu") or a path."""
    name = "_".join(word.strip().lower().replace("-", " ").split())
    if name in BUILT_IN:
        import pymicro_wakeword

        return Path(pymicro_wakeword.__file__).parent / "models" / f"{name}.json"
    path = Path(word).expanduser()
    if path.suffix == ".json" and path.is_file():
        return path
    raise ConfigError(
        f"wake.word {word!r} is neither a built-in wake word ({', '.join(BUILT_IN)}) nor a "
        "microWakeWord model's .json file"
    )


def _check_model(config: Path) -> str:
    """The wake phrase, once the JSON and its model file are known to be sound: the runtime
    crashes the process (a segmentation fault) on a missing or damaged .tflite."""
    try:
        meta = json.loads(config.read_text(encoding="utf-8"))
        phrase, model = str(meta["wake_word"]), config.parent / str(meta["model"])
        cutoff = float(meta["micro"]["probability_cutoff"])
        int(meta["micro"]["sliding_window_size"])
        with model.open("rb") as fh:
            magic = fh.read(8)[4:]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else f"{type(exc).__name__}: {exc}"
        raise ConfigError(f"wake word model {config} does not load: {why}") from None
    if magic != b"TFL3" or not 0 < cutoff <= 1:
        raise ConfigError(
            f"wake word model {config} does not load: {model.name} is not a TensorFlow Lite "
            "model, or its probability_cutoff is not in 0..1"
        )
    return phrase


@dataclass(frozen=True)
class Heard:
    """A frame and whether the voice detector called it speech."""

    frame: Frame
    voiced: bool


@dataclass(frozen=True)
class Woken:
    """The wake word was heard; ``after`` are the frames from its end on, to hear as speech."""

    after: Sequence[Heard]


class WakeWord:
    """One wake word, fed 16 kHz frames of any length."""

    def __init__(self, word: str, threshold: float = 0.0) -> None:
        try:
            from pymicro_wakeword import MicroWakeWord, MicroWakeWordFeatures
        except ImportError:
            raise ConfigError(f"the wake word needs pymicro-wakeword: {INSTALL_HINT}") from None
        except OSError as exc:  # its TensorFlow Lite library does not load on this system
            why = f"the wake word's runtime does not load ({exc}): {INSTALL_HINT}"
            raise ConfigError(why) from None
        config = model_config(word)
        self.phrase = _check_model(config)
        try:
            self._model = MicroWakeWord.from_config(config)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise ConfigError(f"wake word model {config} does not load: {exc}") from None
        if threshold:
            self._model.probability_cutoff = threshold
        self._features = MicroWakeWordFeatures()

    def hears(self, samples: Pcm) -> bool:
        """Whether the wake word ends in (or just before) these samples."""
        fired = False
        for features in self._features.process_streaming(samples.tobytes()):
            fired = bool(self._model.process_streaming(features)) or fired
        return fired

    def reset(self) -> None:
        """Forget what was heard (the model keeps state between windows)."""
        self._model.reset()
        self._features.reset()


class Wakefulness:
    """Asleep until the wake word, awake while the conversation goes on, asleep again after
    ``timeout_s`` without speech or a reply."""

    def __init__(self, word: WakeWord, timeout_s: float) -> None:
        self.word = word
        self.timeout_s = timeout_s
        self.asleep = True
        self._kept: deque[Heard] = deque()
        self._awake_until = 0.0

    def listen(self, frame: Frame, voiced: bool) -> Woken | None:
        """Asleep: whether this frame completes the wake word."""
        self._kept.append(Heard(frame, voiced))
        while self._kept and self._kept[0].frame.captured_at < frame.captured_at - KEPT_S:
            self._kept.popleft()
        if not self.word.hears(frame.samples):
            return None
        log.info("wake word heard")
        self.asleep = False
        self._awake_until = frame.captured_at + self.timeout_s
        after = after_wake_word(list(self._kept), frame.captured_at)
        self._kept.clear()
        return Woken(after)

    def still_awake(self, captured_at: float, busy: bool) -> bool:
        """Awake: False once ``timeout_s`` has passed with nothing ``busy`` (the user speaking,
        an utterance undecided, a reply in flight or playing)."""
        if busy:
            self._awake_until = captured_at + self.timeout_s
        return captured_at < self._awake_until

    def sleep(self) -> None:
        self.asleep = True
        self.word.reset()
        self._kept.clear()


def after_wake_word(heard: Sequence[Heard], heard_at: float) -> list[Heard]:
    """The frames after the wake word, for a request said in the same breath.

    Measured on Piper's renditions: the detector fires 60-200 ms after the wake word when
    silence follows, and 0.24-0.26 s into the request said in one breath ("okay nabu what's
    the time", "...tell me a joke"). Unvoiced frames at the detection (``PAUSE_FRAMES`` or
    more): the user paused, and only those are handed over (by level alone, the fading "u"
    of "Nabu" passed for quiet, and started a turn). Otherwise the request has begun: the
    first dip to a fifth of the loudest level between ``DIP_FROM_S`` and ``DIP_TO_S``
    before the detection (earlier dips are inside the wake word, later ones inside the
    request) ends the wake word, and the request's first sound follows two frames later
    (starting at the dip, Whisper heard "Nabu"'s tail as "we" or "maybe").
    """
    unvoiced = 0
    while unvoiced < len(heard) and not heard[-1 - unvoiced].voiced:
        unvoiced += 1
    if unvoiced >= PAUSE_FRAMES:
        return list(heard[len(heard) - unvoiced :])
    near = [i for i, h in enumerate(heard) if h.frame.captured_at >= heard_at - DIP_FROM_S]
    if not near:
        return list(heard)
    level = [rms(heard[i].frame.samples) for i in near]
    low = DIP_LEVEL * max(level)
    searched = [k for k, i in enumerate(near) if heard[i].frame.captured_at <= heard_at - DIP_TO_S]
    dips = [k for k in searched[:-1]
            if level[k] <= low and level[k] <= min(level[k + 1], level[max(k - 1, 0)])]  # fmt: skip
    start = near[dips[0]] + DIP_TAIL_FRAMES if dips else near[int(np.argmin(level))] + 1
    return list(heard[start:])


def only_the_wake_word(text: str, phrase: str) -> bool:
    """Whether ``text`` is the wake phrase (or its last words) as Whisper spells it: "Okay,
    Naboo." Said again while awake, or its tail heard as the start of a turn, it is not a
    request. Alike: most of the letters, 0.6 alike by difflib's ratio ("okaynaboo" against
    "okaynabu": 0.82; a bare "okay" is too short to be taken for it)."""
    letters = re.sub(r"[^a-z]", "", text.lower())
    said = phrase.lower().split()
    endings = ["".join(said[i:]) for i in range(len(said))]
    return any(
        len(letters) >= 0.7 * len(e) and difflib.SequenceMatcher(None, letters, e).ratio() >= 0.6
        for e in endings
    )
