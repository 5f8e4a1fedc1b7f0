"""Echo cancellation: the real WebRTC canceller on real speech through an echo path, then the
agent in a room where its microphone hears its own speakers as loud as the user.

Bad inputs and faults tried (README, "Echo cancellation"):
- the canceller cannot load and the setting is "on": one line, the session does not start
- it cannot load and the setting is "auto": a note, the session runs half duplex
- a speaker at 44.1 or 48 kHz with a 16 kHz microphone: the reference is resampled, the echo
  still goes
- a reply of any length, silences between sentences, the room's tail: no turn, no interruption
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import clip, normalise, transcript_files, wer
from llm_server import ScriptedLLM, Stream
from room import AgentProcess, Headset, Recorder, as_wav, ensure_pulseaudio, play, wait_until
from test_live import _locate, _rms, sidecar
from test_vad import first_voiced_sample

from voice_agent import echo
from voice_agent.audio import SPEECH_RATE_HZ, Audio, read_file
from voice_agent.errors import ModelError
from voice_agent.mic import Microphone
from voice_agent.speaker import ReferenceClock
from voice_agent.transcript import read
from voice_agent.vad import VoiceDetector

REPLY = (
    "Most people notice a real difference after about a week of daily practice. Start with "
    "ten minutes in the morning, and keep a short note of how you feel. If it helps, add a "
    "second session in the evening, when the house is quiet."
)


@pytest.fixture(scope="module")
def far_speech() -> Audio:
    """10 s of a reader at 22.05 kHz, the agent's voice here: a recording rather than Piper,
    whose voice varies from one synthesis to the next, so every run hears the same."""
    return read_file(clip("LJ001-0001.flac").path, resample=False)


def echo_path(far16: np.ndarray, delay_ms: int = 40, gain_db: float = -6.0) -> np.ndarray:
    """A small room: the direct sound after ``delay_ms``, then 150 ms of decaying reflections,
    and a little microphone noise."""
    rng = np.random.default_rng(3)
    taps = np.zeros(SPEECH_RATE_HZ * 200 // 1000)
    taps[0] = 1.0
    tail = rng.normal(0, 1, taps.size - 1) * np.exp(-np.arange(taps.size - 1) / 500.0)
    taps[1:] = 0.08 * tail
    delay = SPEECH_RATE_HZ * delay_ms // 1000
    echoed = np.convolve(far16.astype(np.float64), taps)[: far16.size] * 10 ** (gain_db / 20)
    near = np.concatenate([np.zeros(delay), echoed])[: far16.size]
    return near + rng.normal(0, 20, near.size)


def run_canceller(
    far: Audio, speaker_rate: int, near: np.ndarray, canceller: echo.EchoCanceller | None = None
) -> np.ndarray:
    """The speaker's callback (40 ms blocks at its rate, the reference kept in step by its
    clock) and the microphone's 20 ms frames, interleaved as they are live."""
    canceller = canceller or echo.EchoCanceller(delay_ms=40)
    played = far.resampled(speaker_rate).samples
    reference = far.resampled(SPEECH_RATE_HZ).samples
    clock = ReferenceClock(speaker_rate)
    block = speaker_rate * 40 // 1000
    frame = SPEECH_RATE_HZ * 20 // 1000
    out, pos = [], 0
    for i in range(0, near.size // frame * frame, frame):
        if (i // frame) % 2 == 0:
            n = max(0, min(block, played.size - pos))
            clock.played(reference, pos, n)
            clock.played(None, 0, block - n)
            pos += n
            canceller.played(clock.take())
        out.append(canceller.clean(np.clip(near[i : i + frame], -32768, 32767).astype(np.int16)))
    return np.concatenate(out)


def power_db(x: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(x.astype(np.float64) ** 2) + 1e-9))


@pytest.mark.parametrize("speaker_rate", [16000, 44100, 48000])
def test_the_agents_voice_is_removed_from_the_microphone_at_any_speaker_rate(
    far_speech: Audio, speaker_rate: int
) -> None:
    """The speaker plays at its own rate, the microphone hears it at 16 kHz: the reference
    is resampled to match and stays in step with the device."""
    near = echo_path(far_speech.resampled(SPEECH_RATE_HZ).samples)
    cleaned = run_canceller(far_speech, speaker_rate, near)
    settled = slice(SPEECH_RATE_HZ, cleaned.size)  # after the first second
    erle = power_db(near[settled]) - power_db(cleaned[settled])
    detector = VoiceDetector(aggressiveness=2)
    frames = range(SPEECH_RATE_HZ, cleaned.size - 320, 320)
    loud = [i for i in frames if np.sqrt(np.mean(near[i : i + 320] ** 2)) > 300]
    voiced_raw = sum(detector.is_speech(near[i : i + 320].astype(np.int16)) for i in loud)
    voiced = sum(detector.is_speech(cleaned[i : i + 320]) for i in loud)
    print(f"{speaker_rate} Hz: ERLE {erle:.1f} dB; voiced echo frames {voiced_raw} -> {voiced}")
    assert erle >= 20
    assert voiced_raw > 0.5 * len(loud)
    assert voiced <= 0.05 * len(loud)


def test_the_users_words_over_the_echo_survive(far_speech: Audio) -> None:
    """Once the canceller has heard the agent for a while, the user talking over the echo
    comes through: their speech keeps most of its energy, the echo alone does not."""
    near = echo_path(far_speech.resampled(SPEECH_RATE_HZ).samples)
    user = read_file(clip("1272-128104-0000.wav").path).samples.astype(np.float64)
    at = 5 * SPEECH_RATE_HZ
    span = slice(at, min(at + user.size, near.size))
    mixed = near.copy()
    mixed[span] += user[: span.stop - span.start]
    cleaned = run_canceller(far_speech, 48000, mixed)
    alone = run_canceller(far_speech, 48000, near)
    kept = power_db(cleaned[span]) - power_db(user[: span.stop - span.start])
    residue = power_db(alone[span]) - power_db(user[: span.stop - span.start])
    print(f"user speech kept at {kept:.1f} dB, echo alone at {residue:.1f} dB")
    assert kept >= -10
    assert residue <= -25


def test_through_a_headset_the_users_words_over_the_reply_pass_untouched(
    far_speech: Audio,
) -> None:
    """No echo reaches the microphone: after a second and a half of the agent speaking, the
    canceller steps aside, and the user starting to talk over the reply is not suppressed
    (AEC3 alone cut a word said over a reply's first sound in 3 of 8 tries in the room)."""
    rng = np.random.default_rng(5)
    quiet_room = rng.normal(0, 3, far_speech.resampled(SPEECH_RATE_HZ).samples.size)
    user = read_file(clip("1272-128104-0000.wav").path).samples.astype(np.float64)
    at = 5 * SPEECH_RATE_HZ
    span = slice(at, min(at + user.size, quiet_room.size))
    mic = quiet_room.copy()
    mic[span] += user[: span.stop - span.start]
    canceller = echo.EchoCanceller(delay_ms=40)
    cleaned = run_canceller(far_speech, 48000, mic, canceller)
    assert canceller.passing_through
    said = np.clip(mic, -32768, 32767).astype(np.int16)[: cleaned.size]
    assert np.array_equal(cleaned[span], said[span])


def test_in_an_idle_room_the_canceller_rests_and_wakes_with_the_users_voice(
    far_speech: Audio,
) -> None:
    """Listening to an idle room costs the canceller nothing (the microphone passes untouched
    once nothing has been played or heard for REST_AFTER_S); the user's voice wakes it, and
    the reply to them loses its echo as the first reply did."""
    user = read_file(clip("1272-128104-0000.wav").path).samples.astype(np.float64)
    gap_s = echo.REST_AFTER_S + 3.0 + user.size / SPEECH_RATE_HZ
    silent = np.zeros(round(gap_s * far_speech.rate_hz), dtype=np.int16)
    far = Audio(
        np.concatenate([far_speech.samples, silent, far_speech.samples]), far_speech.rate_hz
    )
    near = echo_path(far.resampled(SPEECH_RATE_HZ).samples)
    reply_at = far_speech.seconds + gap_s
    said = slice(round((reply_at - 1.0) * SPEECH_RATE_HZ) - user.size,
                 round((reply_at - 1.0) * SPEECH_RATE_HZ))  # fmt: skip
    near[said] += user
    cleaned = run_canceller(far, 48000, near)
    mic = np.clip(near, -32768, 32767).astype(np.int16)
    idle = slice(round((far_speech.seconds + echo.REST_AFTER_S + 0.5) * SPEECH_RATE_HZ),
                 said.start)  # fmt: skip
    assert idle.stop - idle.start > SPEECH_RATE_HZ
    assert np.array_equal(cleaned[idle], mic[idle])
    assert not np.array_equal(cleaned[said], mic[said])  # awake: filtered, suppressed noise
    second = slice(round(reply_at * SPEECH_RATE_HZ), cleaned.size)
    erle = power_db(near[second]) - power_db(cleaned[second])
    print(f"ERLE of the reply after a rest: {erle:.1f} dB")
    assert erle >= 20


def test_on_without_the_canceller_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "livekit", None)  # as if it were not installed
    with pytest.raises(ModelError) as info:
        echo.start("on", 0.08, 0.08)
    message = str(info.value)
    assert "echo cancellation cannot start" in message and "\n" not in message
    assert 'audio.echo_cancellation = "off"' in message
    assert echo.start("auto", 0.08, 0.08) is None
    assert echo.start("off", 0.08, 0.08) is None


def test_a_frame_that_is_not_whole_10_ms_is_refused() -> None:
    canceller = echo.EchoCanceller(delay_ms=0)
    with pytest.raises(ValueError, match="whole 10 ms"):
        canceller.clean(np.zeros(100, dtype=np.int16))


@pytest.mark.parametrize("speaker_rate", [44100, 48000, 22050])
def test_the_reference_keeps_step_with_the_device_block_by_block(speaker_rate: int) -> None:
    """Every 40 ms the device plays, 40 ms of reference follow: no bursts, no drift (a
    streaming resampler hands over up to 50 ms at once, and a late reference cannot be
    cancelled)."""
    clock = ReferenceClock(speaker_rate)
    reference = np.arange(SPEECH_RATE_HZ * 10, dtype=np.int64).astype(np.int16)
    block, pos, sizes = speaker_rate * 40 // 1000, 0, []
    for _ in range(200):  # 8 s of the piece, then silence
        n = max(0, min(block, speaker_rate * 8 - pos))
        clock.played(reference, pos, n)
        clock.played(None, 0, block - n)
        pos += n
        taken = clock.take()
        sizes.append(taken.size)
    assert set(sizes) <= {639, 640, 641}
    assert sum(sizes) == 200 * 640


# ---- the agent in a room where it hears its own speakers as loud as the user -------------

SENTENCES = [
    "That is a good question, and the answer depends on what you have tried so far.",
    "Most people find that a short walk after lunch helps more than another coffee.",
    "If you want, I can go through the steps one at a time.",
    "The first step is simply to write down what you noticed.",
    "After that, compare it with what you expected to happen.",
    "Small changes add up, so there is no need to do everything at once.",
]


def reply_of(seconds: float) -> str:
    """About ``seconds`` of Piper's joe voice (close to 3.3 words a second), in sentences
    with the pauses between them that real replies have."""
    words, out, i = round(seconds * 2.9), [], 0
    while sum(len(s.split()) for s in out) < words:
        out.append(SENTENCES[i % len(SENTENCES)])
        i += 1
    return " ".join(out)


@pytest.fixture(scope="module", autouse=True)
def pulseaudio() -> None:
    ensure_pulseaudio()


@pytest.fixture
def speakers() -> Iterator[Headset]:
    room = Headset("speakers", speakers=True)
    yield room
    room.close()


def start(server: ScriptedLLM, tmp_path: Path, room: Headset, cues: bool = False) -> AgentProcess:
    """The agent with its defaults (echo cancellation auto, barge-in auto) on laptop
    speakers."""
    agent = AgentProcess(["--llm-url", server.url, "--transcripts-dir", str(tmp_path / "t"),
                          "chat"], room.ear, room.agent, cues=cues)  # fmt: skip
    line = agent.wait_for(r"echo cancellation \w+; barge-in \w+", timeout=90)
    assert "echo cancellation on; barge-in on" in line
    agent.wait_for("Listening", timeout=30)
    return agent


@pytest.mark.slow
def test_twenty_replies_of_5_to_20_s_never_interrupt_themselves(
    tmp_path: Path, speakers: Headset
) -> None:
    """Barge-in on, through speakers: the agent's own voice, its pauses between sentences and
    the room after its last sample never start a turn or stop a reply."""
    replies = [reply_of(5 + 15 * i / 19) for i in range(20)]
    names = ["cards_001.wav", "cards_002.wav", "cards_003.wav"]
    with ScriptedLLM(*(Stream(r) for r in replies), by_turn=True) as server:
        agent = start(server, tmp_path, speakers)
        try:
            for n in range(1, 21):
                play(speakers.user, as_wav(clip(names[n % 3]).path, tmp_path))
                wait_until(lambda n=n: len(sidecar(tmp_path)) >= n, 60, f"reply {n}")
                time.sleep(1.0)
            time.sleep(2.0)  # room for a wrong extra turn to show up
            assert agent.interrupt() == 0
        finally:
            agent.kill()
    records = sidecar(tmp_path)
    # one turn asked per clip (a speculative request re-sent when the user went on is the
    # same turn), each about the user's words alone: never the agent's own voice
    assert server.turns_asked() == 20 and len(records) == 20, server.asked()
    reply_words = set(normalise(" ".join(SENTENCES)).split()) - {"of", "a", "the", "to", "is"}
    for asked in server.asked():
        assert len(asked.split()) <= 5 and not set(normalise(asked).split()) & reply_words
    assert [r["interrupted"] for r in records] == [False] * 20
    [md] = transcript_files(tmp_path / "t")
    turns = read(md).turns
    assert [t.role for t in turns] == ["USER", "ASSISTANT"] * 20
    assert [t.text for t in turns[1::2]] == replies  # every reply whole
    for user in turns[0::2]:  # "four queen of clubs", never the agent's words
        assert len(user.text.split()) <= 5 and not set(normalise(user.text).split()) & reply_words


@pytest.mark.slow
def test_the_thinking_tone_through_speakers_is_neither_a_turn_nor_an_interruption(
    tmp_path: Path, speakers: Headset
) -> None:
    """A model that thinks for 6 s: the room hears the tone twice (1 s after the turn, then
    4 s later) at full level in the agent's own microphone; with barge-in on it starts no
    turn and stops nothing, and the answer that follows is whole."""
    from test_turn_taking import cue_at

    thinker = Stream(SENTENCES[0], reasoning="Weighing the options. " * 12, reasoning_s=6.0)
    with ScriptedLLM(thinker, Stream("Okay.")) as server:
        agent = start(server, tmp_path, speakers, cues=True)
        rec = Recorder(f"{speakers.room}.monitor", channels=2)
        try:
            play(speakers.user, as_wav(clip("cards_001.wav").path, tmp_path))
            wait_until(lambda: len(sidecar(tmp_path)) >= 1, 40, "the answer")
            time.sleep(2.0)  # room for a wrong extra turn to show up
            recording = rec.stop()
            assert agent.interrupt() == 0
        finally:
            agent.kill()
    assert len(cue_at(recording[:, 1])) == 2
    assert len(server.requests) == 1
    [md] = transcript_files(tmp_path / "t")
    assert [t.text for t in read(md).turns][1] == SENTENCES[0]
    assert [r["interrupted"] for r in sidecar(tmp_path)] == [False]


INTERRUPTIONS = ["1272-128104-0000.wav", "arctic_a0024.wav", "1995-1837-0001.wav"]


@pytest.mark.slow
def test_talking_over_the_reply_stops_it_and_the_words_reach_the_model(
    tmp_path: Path, speakers: Headset
) -> None:
    """A user clip 1 s into a long reply: the reply stops while they speak, the transcript
    shows it cut where it stopped, and what they said (the start that overlapped the reply
    included) is the next request."""
    long = reply_of(25)
    script = [Stream(long), Stream("Okay.")] * len(INTERRUPTIONS)
    with ScriptedLLM(*script) as server:
        agent = start(server, tmp_path, speakers)
        rec = Recorder(f"{speakers.room}.monitor", channels=2)
        try:
            for n, name in enumerate(INTERRUPTIONS):
                play(speakers.user, as_wav(clip("cards_002.wav").path, tmp_path))
                wait_until(lambda n=n: len(server.requests) > 2 * n, 30, "the long reply")
                heard = rec.so_far().shape[0]
                wait_until(lambda h=heard: agent_speaks(rec, h), 10, "the reply's sound")
                time.sleep(1.0)
                play(speakers.user, as_wav(clip(name).path, tmp_path))
                wait_until(lambda n=n: len(sidecar(tmp_path)) >= 2 * n + 2, 60, "the new turn")
                time.sleep(1.5)
            recording = rec.stop()
            assert agent.interrupt() == 0
        finally:
            agent.kill()
    records = sidecar(tmp_path)
    assert [r["interrupted"] for r in records] == [True, False] * len(INTERRUPTIONS)
    [md] = transcript_files(tmp_path / "t")
    turns = read(md).turns
    assert [t.role for t in turns] == ["USER", "ASSISTANT"] * 2 * len(INTERRUPTIONS)
    for cut in turns[1::4]:
        assert cut.text.endswith("[interrupted]")
        spoken = cut.text.removesuffix("[interrupted]").rstrip(" \u2026")
        assert spoken and long.startswith(spoken.split("\u2026")[0])
        assert len(spoken) < len(long) * 0.5
    heard = [server.user_messages(2 * n + 1)[-1] for n in range(len(INTERRUPTIONS))]
    references = [clip(name).transcript for name in INTERRUPTIONS]
    score = wer(references, heard)
    print(f"interrupting words: WER {score:.1%}: {heard}")
    assert score <= 0.15
    # In the room recording, the agent's side goes quiet while the user is speaking.
    user_side, agent_side = recording[:, 0], recording[:, 1]
    for name in INTERRUPTIONS:
        voice = read_file(clip(name).path).samples
        onset = _locate(user_side, voice) + first_voiced_sample(voice)
        stopped = playback_stop(agent_side, onset)
        print(f"{name}: playback stopped {stopped * 1000:.0f} ms after the user's onset")
        # A leak of the reply just before the user's first voiced frame (or their breath before
        # it) pauses playback a moment early: within 300 ms of their onset either way, which the
        # user does not tell apart. A reply that stalled long before they spoke still fails.
        assert -0.3 < stopped < (voice.size - first_voiced_sample(voice)) / SPEECH_RATE_HZ


def agent_speaks(rec: Recorder, since: int) -> bool:
    """Whether the agent's side of the recording has been loud since sample ``since``."""
    return bool((_rms(rec.so_far()[since:, 1]) > 300).any())


def playback_stop(agent_side: np.ndarray, onset: int) -> float:
    """Seconds from ``onset`` to where the agent's side of the recording falls quiet for
    good: the first 0.8 s without a loud 10 ms frame (longer than the pauses between its
    sentences). Negative if it was quiet before."""
    loud = _rms(agent_side[onset - SPEECH_RATE_HZ :]) > 300
    assert loud[:100].any(), "the reply was not playing"
    last = 0
    for i, frame_loud in enumerate(loud):
        if frame_loud:
            last = i
        elif i - last >= 80 and last > 0:
            break
    return ((last + 1) * 160 - SPEECH_RATE_HZ) / SPEECH_RATE_HZ


def test_a_busy_moment_does_not_move_when_audio_was_captured() -> None:
    """The agent decides whether a voice over a paused reply is its echo by when that audio
    was captured. Half a second in which the event loop cannot take the microphone's audio
    (a synthesis, a transcription's Python side) must not make the audio captured meanwhile
    look captured afterwards, when the reply had already paused: its echo would pass for the
    user talking over it (CI saw one such reply stop itself)."""

    async def listen() -> list[float]:
        m = Microphone()
        m.start()
        stamps: list[float] = []
        async for frame in m.frames():
            stamps.append(frame.captured_at)
            if len(stamps) == 25:
                time.sleep(0.5)  # the loop busy: 25 more frames wait in the queue
            if len(stamps) == 100:
                break
        m.close()
        return stamps

    stamps = asyncio.run(listen())
    gaps = np.diff(stamps)
    # 20 ms frames from 40 ms device blocks: 0 or 40 ms apart, a few ms of jitter
    assert gaps.max() < 0.1, f"a {gaps.max():.2f} s jump in capture times"
    assert abs(stamps[-1] - stamps[0] - 99 * 0.02) < 0.1


def test_an_underrun_shifts_the_reference_with_the_device() -> None:
    """The device's DAC time jumps after an underrun: the reference gets the same silence."""
    clock = ReferenceClock(48000)
    reference = np.ones(SPEECH_RATE_HZ, dtype=np.int16)
    clock.device_time(10.0, 1920)
    clock.played(reference, 0, 1920)
    assert clock.take().size == 640
    clock.device_time(10.04 + 0.040, 1920)  # 40 ms late: the device played 40 ms of silence
    clock.played(reference, 1920, 1920)
    block = clock.take()
    assert block.size == 640 + 640 and not block[:640].any() and block[640:].all()


def test_after_an_underrun_the_next_reply_is_still_cancelled() -> None:
    """A reply, a silence in which the device runs dry for a moment, the next reply. Time
    goes on for the microphone meanwhile, and everything the speaker plays afterwards sounds
    that much later; told so by the device's DAC time, the reference keeps step and the
    canceller never lets the second reply through (not told, this one leaks a start)."""
    voice = read_file(clip("1995-1837-0001.wav").path)
    assert leaked_starts(voice, gap_ms=80, told=True) == 0


def leaked_starts(far_speech: Audio, gap_ms: int, told: bool) -> int:
    """Speech starts heard in the second reply. Simulated in device time: speaker callbacks
    every 40 ms (the one after the underrun ``gap_ms`` late), microphone frames every 20 ms,
    each frame processed after the callbacks that came before it."""
    far = far_speech.resampled(SPEECH_RATE_HZ).samples[: 5 * SPEECH_RATE_HZ]
    gap = SPEECH_RATE_HZ * gap_ms // 1000
    pause = np.zeros(SPEECH_RATE_HZ, dtype=np.int16)
    fed = np.concatenate([far, pause, far])  # what the speaker was handed, 640 at a time
    at = far.size + pause.size // 2 // 640 * 640  # the late callback, mid-silence
    sounded = np.concatenate([fed[:at], np.zeros(gap, dtype=np.int16), fed[at:]])
    near = echo_path(sounded, delay_ms=60, gain_db=0.0)
    canceller = echo.EchoCanceller(delay_ms=60)
    clock = ReferenceClock(SPEECH_RATE_HZ)
    detector = VoiceDetector(aggressiveness=2)
    run, starts, fed_to, played_at = 0, 0, 0, 0  # played_at: device time of the next block
    for j in range(0, near.size - 320, 320):
        while fed_to < fed.size and played_at <= j:
            if fed_to == at:
                played_at += gap  # the device ran dry: this block sounds late
            clock.device_time(100.0 + played_at / SPEECH_RATE_HZ if told else 0.0, 640)
            clock.played(fed, fed_to, 640)
            canceller.played(clock.take())
            fed_to += 640
            played_at += 640
        cleaned = canceller.clean(np.clip(near[j : j + 320], -32768, 32767).astype(np.int16))
        run = run + 1 if detector.is_speech(cleaned) else 0
        starts += run == 5 and j > at + gap
    return starts


@pytest.mark.parametrize(
    ("heard", "echo_only"),
    [
        ("", True),  # a leak Silero or Whisper found no words in
        ("That is a", True),  # the start of the reply, come back through the canceller
        ("Good question.", True),
        ("Stop.", False),  # the user, in words the reply does not have
        ("No, I meant the other one", False),
        ("That is a lie", False),  # one word of their own is enough
    ],
)
def test_a_doubted_start_is_judged_by_its_words(heard: str, echo_only: bool) -> None:
    from voice_agent.live import is_echo

    reply = "That is a good question, and the answer depends on what you have tried so far."
    assert is_echo(heard, reply) is echo_only
