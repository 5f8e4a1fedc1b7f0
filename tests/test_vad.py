"""Endpointing on real speech: no clipped words, no turns from blips, noise or silence."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import clip, clips

from voice_agent.audio import SPEECH_RATE_HZ, Audio, from_float, read_file
from voice_agent.config import VadConfig
from voice_agent.turn_taking import sounds_unfinished
from voice_agent.vad import (
    Endpointer,
    Event,
    Paused,
    Resumed,
    SpeechConfirmer,
    Started,
    Utterance,
    VoiceDetector,
)

FRAME = SPEECH_RATE_HZ * 20 // 1000


def feed(samples: np.ndarray, config: VadConfig | None = None) -> list[Event]:
    config = config or VadConfig()
    ep, vad = Endpointer(config), VoiceDetector(config.aggressiveness, config.floor_dbfs)
    events: list[Event] = []
    for i in range(0, len(samples) - FRAME + 1, FRAME):
        frame = samples[i : i + FRAME]
        events += ep.feed(frame, vad.is_speech(frame))
    return events


def padded(audio: Audio, before_s: float = 1.0, after_s: float = 1.5) -> np.ndarray:
    pad = np.zeros(int(SPEECH_RATE_HZ * before_s), dtype=np.int16)
    tail = np.zeros(int(SPEECH_RATE_HZ * after_s), dtype=np.int16)
    return np.concatenate([pad, audio.samples, tail])


def voiced(samples: np.ndarray) -> list[bool]:
    vad = VoiceDetector(2)
    return [
        vad.is_speech(samples[i : i + FRAME]) for i in range(0, len(samples) - FRAME + 1, FRAME)
    ]


def first_voiced_sample(samples: np.ndarray) -> int:
    """Start of the first run of 100 ms of voiced frames (a lone breath is not speech)."""
    flags = voiced(samples)
    for i in range(len(flags) - 4):
        if all(flags[i : i + 5]):
            return i * FRAME
    raise AssertionError("no speech")


def contains(haystack: np.ndarray, needle: np.ndarray) -> bool:
    windows = np.lib.stride_tricks.sliding_window_view(haystack, len(needle))
    offsets = np.flatnonzero(windows[:, 0] == needle[0])
    return any(np.array_equal(haystack[o : o + len(needle)], needle) for o in offsets)


@pytest.mark.parametrize("name", [c.path.name for c in clips() if c.seconds < 20])
def test_each_clip_is_one_utterance_with_nothing_clipped(name: str) -> None:
    audio = read_file(clip(name).path)
    events = feed(padded(audio), VadConfig(unfinished_extra_ms=0, hangover_ms=1500))
    utterances = [e for e in events if isinstance(e, Utterance)]
    assert len(utterances) == 1, [type(e).__name__ for e in events]
    got = utterances[0].audio.samples
    # the clip's speech, from 0.3 s before it starts to its last voiced frame, is all inside
    start = max(0, first_voiced_sample(audio.samples) - int(0.3 * SPEECH_RATE_HZ))
    end = (max(i for i, v in enumerate(voiced(audio.samples)) if v) + 1) * FRAME
    assert contains(got, audio.samples[start:end])


def test_preroll_keeps_audio_from_before_the_detected_start() -> None:
    audio = read_file(clip("cards_003.wav").path)
    [u] = [e for e in feed(padded(audio)) if isinstance(e, Utterance)]
    start = first_voiced_sample(audio.samples)
    # at least 0.5 s of what came before the voice is kept
    assert u.audio.samples.size / SPEECH_RATE_HZ >= (audio.samples.size - start) / 16000 + 0.5


def test_a_short_click_is_dropped() -> None:
    t = np.arange(int(0.12 * SPEECH_RATE_HZ)) / SPEECH_RATE_HZ
    click = from_float(0.6 * np.sin(2 * np.pi * 300 * t) * np.sin(2 * np.pi * 7 * t))
    events = feed(padded(Audio(click, SPEECH_RATE_HZ)))
    assert not [e for e in events if isinstance(e, Utterance)]


def test_pause_then_resume_stays_one_utterance_and_says_so() -> None:
    a = read_file(clip("cards_001.wav").path).samples
    gap = np.zeros(int(0.4 * SPEECH_RATE_HZ), dtype=np.int16)
    events = feed(padded(Audio(np.concatenate([a, gap, a]), SPEECH_RATE_HZ)))
    kinds = [type(e) for e in events]
    assert kinds.count(Utterance) == 1
    assert kinds.count(Started) == 1
    assert Paused in kinds and Resumed in kinds
    last_pause = max(i for i, k in enumerate(kinds) if k is Paused)
    u = events[-1]
    assert isinstance(u, Utterance) and isinstance(events[last_pause], Paused)
    assert events[last_pause].generation == u.generation  # the early transcript is reusable


def test_long_speech_is_cut_at_the_maximum() -> None:
    a = read_file(clip("1995-1837-0001.wav").path)
    events = feed(padded(a), VadConfig(max_utterance_s=4.0))
    utterances = [e for e in events if isinstance(e, Utterance)]
    assert len(utterances) >= 2
    assert utterances[0].cut and utterances[0].audio.seconds <= 4.0 + 0.05


def test_extended_hangover_bridges_a_mid_thought_pause() -> None:
    config = VadConfig()
    ep, vad = Endpointer(config), VoiceDetector(2)
    a = read_file(clip("cards_001.wav").path).samples
    gap = np.zeros(int(1.0 * SPEECH_RATE_HZ), dtype=np.int16)
    samples = padded(Audio(np.concatenate([a, gap, a]), SPEECH_RATE_HZ))
    events: list[Event] = []
    for i in range(0, len(samples) - FRAME + 1, FRAME):
        frame = samples[i : i + FRAME]
        for e in ep.feed(frame, vad.is_speech(frame)):
            events.append(e)
            if isinstance(e, Paused) and len([x for x in events if isinstance(x, Paused)]) == 1:
                ep.set_hangover(e.generation, 1300)  # as the live loop does for "ten of,"
    assert len([e for e in events if isinstance(e, Utterance)]) == 1


@pytest.mark.parametrize(
    ("text", "unfinished"),
    [
        ("And so my fellow Americans ask not", True),
        ("I went to the shop and", True),
        ("Well,", True),
        ("10 of clubs", False),
        ("What time is it?", False),
        ("It was my reports from the north which chiefly induced people to buy.", False),
    ],
)
def test_unfinished_sounding_transcripts(text: str, unfinished: bool) -> None:
    assert sounds_unfinished(text) is unfinished


@pytest.mark.slow
def test_silero_confirms_speech_and_rejects_steady_noise() -> None:
    confirm = SpeechConfirmer(0.5)
    assert confirm.has_speech(read_file(clip("arctic_a0024.wav").path))
    rng = np.random.default_rng(3)
    noise = Audio(from_float(rng.normal(0, 0.2, SPEECH_RATE_HZ * 3)), SPEECH_RATE_HZ)
    assert not confirm.has_speech(noise)
