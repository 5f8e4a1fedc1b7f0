"""Piper speaks, and what it says can be understood."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from conftest import wer
from hypothesis import given
from hypothesis import strategies as st

from voice_agent.audio import from_float
from voice_agent.config import SttConfig, TtsConfig
from voice_agent.errors import ModelError
from voice_agent.heap import give_back
from voice_agent.stt import WhisperStt
from voice_agent.tts import PiperTts, clauses, resolve_voice

pytestmark = pytest.mark.slow


def test_piper_speaks_a_sentence_that_whisper_understands() -> None:
    sentence = "The quick brown fox jumps over the lazy dog near the river bank."
    tts = PiperTts(TtsConfig())
    audio = tts.synthesize(sentence)
    assert audio.rate_hz == 22050
    assert 2.0 < audio.seconds < 8.0
    heard = WhisperStt(SttConfig()).transcribe(audio)
    assert wer([sentence], [heard.text]) <= 0.1, heard.text


def test_speaking_rate_changes_duration() -> None:
    text = "Speaking rate is a setting people change."
    normal = PiperTts(TtsConfig()).synthesize(text).seconds
    slow = PiperTts(TtsConfig(length_scale=1.5)).synthesize(text).seconds
    assert slow > normal * 1.3


def test_voicing_gives_its_memory_back_for_the_models_that_run_between_replies() -> None:
    # Whisper and the end-of-turn model run after a reply: memory Piper kept would add to
    # theirs at the agent's peak (ONNX Runtime's arena keeps ~70 MB after 60 characters)
    tts = PiperTts(TtsConfig())
    tts.synthesize("Hi.")
    give_back()
    before = resident_mb()
    audio = tts.synthesize("Most people notice a real difference after about a week of it.")
    give_back()
    assert audio.seconds > 2.0
    assert resident_mb() - before < 25


def resident_mb() -> float:
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


def test_missing_voice_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        resolve_voice(str(tmp_path / "nope.onnx"))
    lone = tmp_path / "voice.onnx"
    lone.write_bytes(b"x")
    with pytest.raises(ModelError, match=r"no voice.onnx.json beside it"):
        resolve_voice(str(lone))


@given(st.lists(st.text(alphabet="abcdefghij,;:.'", min_size=1, max_size=14), max_size=40))
def test_long_sentences_are_voiced_in_pieces_that_keep_every_word(words: list[str]) -> None:
    text = " ".join(words)
    pieces = clauses(text, limit=60)
    assert " ".join(pieces).split() == text.split()  # nothing lost, nothing reordered
    assert all(len(p) <= 60 or " " not in p for p in pieces)  # only one long word may exceed


def test_a_long_sentence_in_pieces_is_still_understood() -> None:
    sentence = (
        "Most people find that a few minutes of practice each day is enough to notice a "
        "difference within a week."
    )
    assert len(clauses(sentence)) > 1
    tts = PiperTts(TtsConfig())
    audio = tts.synthesize(sentence)
    heard = WhisperStt(SttConfig()).transcribe(audio).text
    assert wer([sentence], [heard]) <= 0.1, heard
    # and it flows: no pause at the splits longer than Piper makes inside the whole sentence
    whole = from_float(np.concatenate(
        [c.audio_float_array for c in tts._voice.synthesize(sentence, syn_config=tts._syn)]
    ))  # fmt: skip
    assert longest_pause_s(audio.samples, tts.rate_hz) <= (
        longest_pause_s(whole, tts.rate_hz) + 0.08
    )


def longest_pause_s(samples: npt.NDArray[np.int16], rate_hz: int) -> float:
    """Longest run of quiet 10 ms frames between the first and the last loud one."""
    frame = rate_hz // 100
    frames = samples[: len(samples) // frame * frame].astype(np.float64).reshape(-1, frame)
    loud = np.flatnonzero(np.sqrt((frames**2).mean(axis=1)) > 300)
    return float(np.diff(loud).max() - 1) / 100 if loud.size > 1 else 0.0
