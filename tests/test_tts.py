"""Piper speaks, and what it says can be understood."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import wer

from voice_agent.config import SttConfig, TtsConfig
from voice_agent.errors import ModelError
from voice_agent.stt import WhisperStt
from voice_agent.tts import PiperTts, resolve_voice

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


def test_missing_voice_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        resolve_voice(str(tmp_path / "nope.onnx"))
    lone = tmp_path / "voice.onnx"
    lone.write_bytes(b"x")
    with pytest.raises(ModelError, match=r"no voice.onnx.json beside it"):
        resolve_voice(str(lone))
