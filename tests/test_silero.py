"""Silero VAD run by the agent itself (not through faster-whisper's package): the same
verdicts as faster-whisper's own, and no recogniser loaded for it."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import clip, clips

from voice_agent.audio import SPEECH_RATE_HZ, Audio, read_file
from voice_agent.silero import Silero
from voice_agent.vad import SpeechConfirmer


@pytest.fixture(scope="module")
def silero() -> Silero:
    return Silero(0.5)


def test_stretches_of_speech_match_faster_whispers_on_every_public_clip(silero: Silero) -> None:
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    options = VadOptions(threshold=0.5, min_speech_duration_ms=150)
    a = read_file(clip("cards_001.wav").path).resampled(SPEECH_RATE_HZ).as_float32()
    b = read_file(clip("jfk.flac").path).resampled(SPEECH_RATE_HZ).as_float32()
    gap = np.zeros(3 * SPEECH_RATE_HZ, np.float32)  # over 2 s: two stretches
    pause = np.zeros(SPEECH_RATE_HZ, np.float32)  # under 2 s: one
    audio = [read_file(c.path).resampled(SPEECH_RATE_HZ).as_float32() for c in clips()]
    audio += [np.concatenate([a, gap, b]), np.concatenate([a, pause, b])]
    for samples in audio:
        theirs = [(s["start"], s["end"]) for s in get_speech_timestamps(samples, options)]
        ours = silero.spans(samples)
        assert len(ours) == len(theirs), (ours, theirs)
        for o, t in zip(ours, theirs, strict=True):  # within one 32 ms chunk
            assert abs(o[0] - t[0]) <= 512 and abs(o[1] - t[1]) <= 512, (ours, theirs)
    assert len(silero.spans(audio[-2])) == 2 and len(silero.spans(audio[-1])) == 1


def test_silence_noise_and_nothing_are_not_speech(silero: Silero) -> None:
    rng = np.random.default_rng(3)
    confirmer = SpeechConfirmer(0.5)
    for samples in (np.zeros(2 * SPEECH_RATE_HZ, np.int16), np.zeros(0, np.int16),
                    rng.normal(0, 2000, 3 * SPEECH_RATE_HZ).astype(np.int16)):  # fmt: skip
        audio = Audio(samples, SPEECH_RATE_HZ)
        assert not confirmer.has_speech(audio)
        assert confirmer.speech_only(audio) is None
    assert confirmer.has_speech(read_file(clip("cards_003.wav").path).resampled(SPEECH_RATE_HZ))


def test_speech_detection_and_end_of_turn_load_no_recogniser() -> None:
    """An agent that transcribes on a server must not pay for faster-whisper's import
    (CTranslate2, PyAV: about 25 MB) just for Silero and Smart Turn's features."""
    code = (
        "import sys\n"
        "from voice_agent.audio import Audio\n"
        "from voice_agent.end_of_turn import EndOfTurn, model_path\n"
        "from voice_agent.vad import SpeechConfirmer\n"
        "import numpy as np\n"
        "a = Audio(np.zeros(32000, np.int16), 16000)\n"
        "SpeechConfirmer(0.5).has_speech(a)\n"
        "p = EndOfTurn(model_path('bundled')).complete(a)\n"
        "assert 0.0 <= p <= 1.0\n"
        "print(sorted(m for m in ('faster_whisper', 'ctranslate2', 'av') if m in sys.modules))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"
