"""Speech to text on real human speech, and no turns from silence or noise."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from conftest import clip, clips, normalise, wer

from voice_agent.audio import Audio, from_float, read_file, silence
from voice_agent.config import SttConfig
from voice_agent.errors import ModelError
from voice_agent.stt import (
    WhisperStt,
    has_words,
    repeats_in_a_row,
    resolve_model,
    token_budget,
    too_few_words,
)

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


def test_a_turn_that_sends_the_short_window_into_a_loop_still_gives_its_words(
    stt: WhisperStt,
) -> None:
    # With 0.6 s of lead-in (the live pre-roll) the 15 s window loops on this clip: "10 of
    # clubs 10 of clubs 10 of ...". The loop is cut by the token budget and redone whole.
    voice = read_file(clip("cards_001.wav").path)
    lead_in = Audio(np.concatenate([silence(0.6).samples, voice.samples]), voice.rate_hz)
    assert normalise(stt.transcribe(lead_in).text) == normalise("10 of clubs")


@pytest.mark.parametrize(
    ("text", "loops"),
    [
        ("10 of clubs 10 of clubs 10 of clubs 10 of", True),
        ("Seven. Seven. Seven.", True),
        ("ask not what your country can do for you, ask what you can do for your country", False),
        ("It was my reports from the north which chiefly induced people to buy.", False),
        ("", False),
    ],
)
def test_a_decoding_loop_is_told_from_a_speaker_repeating_a_phrase(text: str, loops: bool) -> None:
    assert repeats_in_a_row(text) is loops


def test_the_token_budget_never_cuts_real_speech_short(stt: WhisperStt) -> None:
    """Every public clip's exact transcript fits the budget for its length, with room to
    spare: the budget stops loops, never words."""
    from faster_whisper.tokenizer import Tokenizer

    tokenizer = Tokenizer(stt._model.hf_tokenizer, multilingual=False, task="transcribe")
    for c in clips():
        needed = len(tokenizer.encode(" " + c.transcript))
        assert needed <= 0.75 * token_budget(c.seconds), (c.path.name, needed, c.seconds)


@pytest.mark.parametrize("trim", [0, 160, 256])
def test_a_recording_longer_than_whisper_s_window_keeps_every_window_s_words(
    stt: WhisperStt, trim: int
) -> None:
    """10 or 16 ms off its start (as much as the file path's speech check trims), the 53 s
    sonnet came out as "1." for its whole first 30 s window, and half the poem was lost."""
    c = clip("shakespeare_sonnet_001.mp3")
    sonnet = read_file(c.path)
    heard = stt.transcribe(Audio(sonnet.samples[trim:], sonnet.rate_hz)).text
    assert "fairest creatures" in normalise(heard)
    assert wer([c.transcript], [heard]) < 0.3, heard


@pytest.mark.parametrize(
    ("text", "seconds", "truncated"),
    [
        ("1.", 25.0, True),  # a window the model ended after its first word
        ("Hello there.", 20.0, True),
        ("ask not what your country can do for you", 11.0, False),
        ("seven of clubs", 1.5, False),  # short turns are short
        ("yes", 5.0, False),  # a word after a hesitation
        ("", 0.5, False),
    ],
)
def test_a_transcript_far_too_short_for_its_audio_is_told(
    text: str, seconds: float, truncated: bool
) -> None:
    assert too_few_words(text, seconds) is truncated
