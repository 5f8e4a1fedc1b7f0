"""Speech to text on real human speech, and no turns from silence or noise."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from conftest import clips, wer

from voice_agent.audio import Audio, from_float, read_file, silence
from voice_agent.config import SttConfig
from voice_agent.errors import ModelError
from voice_agent.stt import WhisperStt, has_words, repeats_itself, resolve_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stt() -> Iterator[WhisperStt]:
    yield WhisperStt(SttConfig())


def test_corpus_wer_matches_calling_faster_whisper_directly(stt: WhisperStt) -> None:
    from faster_whisper import WhisperModel

    direct = WhisperModel(resolve_model("bundled"), device="cpu", compute_type="int8")
    refs, ours, theirs = [], [], []
    for c in clips():
        refs.append(c.transcript)
        ours.append(stt.transcribe(read_file(c.path)).text)
        segments, _ = direct.transcribe(
            str(c.path), language="en", beam_size=1, condition_on_previous_text=False
        )
        theirs.append(" ".join(s.text.strip() for s in segments))
    ours_wer, direct_wer = wer(refs, ours), wer(refs, theirs)
    print(f"corpus WER: voice_agent {ours_wer:.2%}, faster-whisper direct {direct_wer:.2%}")
    assert ours_wer <= direct_wer + 0.02
    assert ours_wer < 0.15  # tiny.en measures about 8 % on this set


@pytest.mark.parametrize("kind", ["silence", "white noise", "mains hum"])
def test_silence_and_noise_give_no_turn(stt: WhisperStt, kind: str) -> None:
    rng = np.random.default_rng(7)
    t = np.arange(16000 * 5) / 16000
    audio = {
        "silence": silence(5),
        "white noise": Audio(from_float(rng.normal(0, 0.1, t.size)), 16000),
        "mains hum": Audio(from_float(0.2 * np.sin(2 * np.pi * 50 * t)), 16000),
    }[kind]
    assert stt.transcribe(audio).text == ""


def test_punctuation_only_is_not_words() -> None:
    assert not has_words(" . ... ?! ♪ ")
    assert has_words("10 of clubs")
    assert has_words("¿Qué?")


def test_missing_model_folder_is_a_clear_error(tmp_path: object) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model("/nonexistent/whisper-model")


@pytest.mark.parametrize(
    ("text", "loops"),
    [
        ("7 of clubs, 7 of clubs, noted 7 of clubs, noted", True),
        ("Seven of clubs. Seven of clubs. Noted.", True),
        ("It was my reports from the north which chiefly induced people to buy.", False),
        ("", False),
    ],
)
def test_a_repeated_phrase_is_noticed_so_the_full_window_can_check_it(
    text: str, loops: bool
) -> None:
    assert repeats_itself(text) is loops
