"""The hands-free loop through real audio devices: PulseAudio null sinks as the room.

The agent is a separate process, as a user runs it; the LLM is a real HTTP server on 127.0.0.1;
the user is a real recording played into the room with paplay; what the room hears is
recorded with parec and located by its own samples.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import clip, clips, normalise, run_cli, transcript_files, wer
from llm_server import Raw, ScriptedLLM, Stream
from room import (
    AgentProcess,
    Headset,
    Recorder,
    Sink,
    as_wav,
    ensure_pulseaudio,
    play,
    play_samples,
    wait_until,
)
from test_vad import first_voiced_sample

from voice_agent.audio import SPEECH_RATE_HZ, Audio, concat, from_float, read_file, silence
from voice_agent.config import SttConfig, TtsConfig
from voice_agent.stt import WhisperStt
from voice_agent.transcript import read
from voice_agent.tts import PiperTts

pytestmark = pytest.mark.slow
LONG_REPLY = (
    "Here is a longer answer so that there is time to interrupt it. The first point is that "
    "voice assistants should listen carefully. The second point is that they should stop "
    "talking as soon as you start. The third point is that the transcript must say so. "
    "The fourth point is that all of this takes a while to say out loud, which is the idea."
)


@pytest.fixture(scope="module", autouse=True)
def pulseaudio() -> None:
    ensure_pulseaudio()


@pytest.fixture
def sinks() -> Iterator[list[Sink]]:
    made: list[Sink] = []
    yield made
    for s in made:
        s.close()


def sink(sinks: list[Sink], label: str) -> Sink:
    s = Sink(label)
    sinks.append(s)
    return s


def start_agent(
    server: ScriptedLLM,
    tmp_path: Path,
    source: Sink | str,
    out: Sink | str,
    *extra: str,
    stdin: bool = False,
) -> AgentProcess:
    """The agent hears ``source`` (a sink's monitor, or a source name) and speaks into ``out``."""
    ear = source.monitor if isinstance(source, Sink) else source
    mouth = out.name if isinstance(out, Sink) else out
    agent = AgentProcess(["--llm-url", server.url, "--transcripts-dir", str(tmp_path / "t"),
                          "chat", *extra], ear, mouth, stdin=stdin)  # fmt: skip
    agent.wait_for("Listening", timeout=90)
    return agent


def say(user: Sink, name: str, tmp_path: Path, turns: int, what: str) -> None:
    """The user says clip ``name``; returns once the sidecar records ``turns`` turns."""
    play(user, as_wav(clip(name).path, tmp_path))
    wait_until(lambda: len(sidecar(tmp_path)) >= turns, 30, what)


def sidecar(tmp_path: Path) -> list[dict[str, object]]:
    files = sorted((tmp_path / "t").rglob("*.jsonl"))
    if not files:
        return []
    return [json.loads(line) for line in files[0].read_text().splitlines() if line]


def test_clips_in_the_room_reach_the_llm_whole_and_as_well_as_transcribing_the_files(
    tmp_path: Path, sinks: list[Sink]
) -> None:
    """Endpointing clips nothing: every voiced quarter second of each clip is in the audio the
    agent transcribed for its turn, and corpus WER stays near that of transcribing the files."""
    # the 53 s sonnet reading pauses for longer than the hangover between verses, so it is many
    # turns, and replies would overlap the reading; every other clip is one spoken turn
    chosen = [c for c in clips() if c.seconds < 20]
    user, speaker = sink(sinks, "user"), sink(sinks, "agent")
    # a model that takes a second to answer, as real ones do: a speaker who pauses longer than
    # the hangover (JFK does, twice) goes on before the reply starts, and it is one turn.
    # A headset (two sinks): no echo to cancel, so the canceller is off, as the README advises
    with ScriptedLLM(Stream("Okay.", first_token_delay_s=3.0)) as server:
        agent = start_agent(server, tmp_path, user, speaker, "--echo-cancellation", "off",
                            "--save-audio")  # fmt: skip
        try:
            for n, c in enumerate(chosen, start=1):
                play(user, as_wav(c.path, tmp_path))
                wait_until(lambda n=n: len(sidecar(tmp_path)) >= n, 30, f"turn {n}")
                time.sleep(0.6)
            assert agent.interrupt() == 0
        finally:
            agent.kill()
    heard = server.user_messages()
    assert len(heard) == len(chosen)
    folder = next((tmp_path / "t").rglob("*.jsonl")).parent
    for c, turn in zip(chosen, sidecar(tmp_path), strict=True):
        files = turn["audio_files"]
        assert isinstance(files, dict)
        transcribed = read_file(folder / str(files["user"])).samples
        said = read_file(c.path).samples
        # speech, not the pauses between phrases (the agent shortens a long one when it joins
        # the phrases, and JFK's recording hisses at an RMS of 300): within 20 dB of the
        # clip's loudest quarter second
        loudest = float(_rms(said, SPEECH_RATE_HZ // 4).max())
        assert _found(transcribed, said, min_rms=loudest / 10) == 1.0, c.path.name
    stt = WhisperStt(SttConfig())
    direct = [stt.transcribe(read_file(c.path)).text for c in chosen]
    refs = " ".join(c.transcript for c in chosen)
    room_wer, direct_wer = wer([refs], [" ".join(heard)]), wer([refs], [" ".join(direct)])
    print(f"room WER {room_wer:.2%} vs direct {direct_wer:.2%} over {len(chosen)} clips")
    for d, h in zip(direct, heard, strict=True):
        if normalise(d) != normalise(h):
            print(f"file: {d}\nroom: {h}")  # shown whole on failure, unlike the assertion
    # tiny.en turns a few borderline words ("clubs", "cotton") whenever the audio is touched
    # at all: the files through the canceller's 80 Hz high-pass filter alone go from 4.9 % to
    # 6.0 %, and the room (resampled twice by PulseAudio) measured 6.0-7.1 %; 267 words, so a
    # point is under three words. Clipping is what the check above is for; this one catches
    # turns split, merged or garbled.
    assert room_wer <= direct_wer + 0.03


def test_reply_is_heard_in_the_room(tmp_path: Path, sinks: list[Sink]) -> None:
    reply = "The quick brown fox jumps over the lazy dog near the river bank."
    user, speaker = sink(sinks, "user"), sink(sinks, "agent")
    with ScriptedLLM(Stream(reply)) as server:
        agent = start_agent(server, tmp_path, user, speaker)
        try:
            rec = Recorder(speaker)
            say(user, "arctic_a0024.wav", tmp_path, 1, "the reply")
            time.sleep(0.5)
            heard = rec.stop()
            assert agent.interrupt() == 0
        finally:
            agent.kill()
    text = WhisperStt(SttConfig()).transcribe(Audio(played_span(heard), SPEECH_RATE_HZ)).text
    assert wer([reply], [text]) <= 0.15, text


def played_span(samples: np.ndarray) -> np.ndarray:
    """From the first to the last sound in a recording of the agent's own sink (silent, all
    zeros, but for what it plays)."""
    sounded = np.flatnonzero(np.abs(samples.astype(np.int32)) > 100)
    assert len(sounded), "nothing was played"
    return samples[sounded[0] : sounded[-1] + 1]


def test_an_llm_error_is_said_aloud_and_the_session_goes_on(
    tmp_path: Path, sinks: list[Sink]
) -> None:
    user, speaker = sink(sinks, "user"), sink(sinks, "agent")
    refused = Raw(status=401, body=b'{"error": {"message": "no"}}', content_type="application/json")
    with ScriptedLLM(refused, Stream("Now it works.")) as server:
        agent = start_agent(server, tmp_path, user, speaker)
        try:
            rec = Recorder(speaker)
            say(user, "arctic_a0024.wav", tmp_path, 1, "the failed turn")
            time.sleep(6.0)  # the spoken notice
            heard = rec.stop()
            say(user, "2830-3980-0043.wav", tmp_path, 2, "the next turn")
            assert agent.interrupt() == 0
        finally:
            agent.kill()
    notice = "Sorry, the language model refused the API key. The details are on the screen."
    said = played_span(heard)
    told = f"agent printed {agent.lines} {agent.errors}"
    # once, whole: as long as the notice itself (Piper's timing varies by a few tenths)
    expected_s = PiperTts(TtsConfig()).synthesize(notice).seconds
    assert abs(len(said) / SPEECH_RATE_HZ - expected_s) < 0.8, told
    text = WhisperStt(SttConfig()).transcribe(Audio(said, SPEECH_RATE_HZ)).text
    assert wer([notice], [text]) <= 0.15, f"{text}; {told}"
    [md] = transcript_files(tmp_path / "t")
    assert [t.role for t in read(md).turns] == ["USER", "USER", "ASSISTANT"]


@pytest.mark.parametrize("pause_s", [0.5, 1.2])
def test_a_pause_mid_thought_gives_one_turn_with_all_the_words(
    tmp_path: Path, sinks: list[Sink], pause_s: float
) -> None:
    """0.5 s: within the hangover, after the early transcript may have asked the model
    (that request is dropped). 1.2 s: past the hangover, before the reply starts (the two
    utterances are merged). Either way: one turn, every word, one answer."""
    first, second = clip("arctic_a0024.wav"), clip("2830-3980-0043.wav")
    spoken = concat(
        [read_file(first.path), silence(pause_s), read_file(second.path)], SPEECH_RATE_HZ
    )
    user, speaker = sink(sinks, "user"), sink(sinks, "agent")
    slow = Stream("Understood, both parts.", first_token_delay_s=1.0)
    with ScriptedLLM(slow) as server:
        agent = start_agent(server, tmp_path, user, speaker)
        try:
            play_samples(user, spoken, tmp_path)
            wait_until(lambda: len(sidecar(tmp_path)) >= 1, 30, "the reply")
            time.sleep(2.0)  # room for a wrong second turn
            assert agent.interrupt() == 0
        finally:
            agent.kill()
        last = normalise(server.user_messages()[-1])
    turns = read(transcript_files(tmp_path / "t")[0]).turns
    assert [t.role for t in turns] == ["USER", "ASSISTANT"]
    for reference in (first.transcript, second.transcript):
        words = normalise(reference).split()
        heard = sum(w in last.split() for w in words) / len(words)
        assert heard >= 0.8, (reference, last)
    assert normalise(turns[0].text) == last


def test_agent_hears_its_own_reply_and_never_answers_it(tmp_path: Path, sinks: list[Sink]) -> None:
    """Laptop speakers: one sink is both the microphone and the speaker."""
    room = sink(sinks, "laptop")
    reply = "That is interesting. Tell me more about it, and I will listen."
    names = ["arctic_a0024.wav", "2830-3980-0043.wav", "LJ002-0020.wav"]
    with ScriptedLLM(Stream(reply)) as server:
        agent = start_agent(server, tmp_path, room, room)
        try:
            for n, name in enumerate(names, start=1):
                play(room, as_wav(clip(name).path, tmp_path))
                wait_until(lambda n=n: len(sidecar(tmp_path)) >= n, 30, f"reply {n}")
                time.sleep(1.0)
            time.sleep(4.0)  # room for a wrong extra turn to show up
            assert agent.interrupt() == 0
        finally:
            agent.kill()
    # one turn asked per clip (a speculative request re-sent when the user went on is the
    # same turn), never about the agent's own reply
    assert server.turns_asked() == len(names), server.asked()
    assert all(normalise(reply) not in normalise(asked) for asked in server.asked())
    [md] = transcript_files(tmp_path / "t")
    turns = read(md).turns
    assert [t.role for t in turns] == ["USER", "ASSISTANT"] * len(names)
    assert all(normalise(reply) not in normalise(t.text) for t in turns if t.role == "USER")


def test_a_minute_of_silence_or_steady_noise_gives_no_turn(
    tmp_path: Path, sinks: list[Sink]
) -> None:
    quiet, noisy = sink(sinks, "quiet"), sink(sinks, "noisy")
    rng = np.random.default_rng(11)
    seconds = 60
    t = np.arange(SPEECH_RATE_HZ * seconds) / SPEECH_RATE_HZ
    brown = np.cumsum(rng.normal(0, 1, t.size))
    brown = (brown - np.convolve(brown, np.ones(801) / 801, mode="same")) / 400
    fan = 0.05 * np.sin(2 * np.pi * 100 * t) + 0.08 * rng.normal(0, 1, t.size) + 0.2 * brown
    noise = Audio(from_float(np.clip(fan, -0.9, 0.9)), SPEECH_RATE_HZ)
    with ScriptedLLM() as server:
        a = start_agent(server, tmp_path / "a", quiet, quiet)
        b = start_agent(server, tmp_path / "b", noisy, noisy)
        try:
            play_samples(noisy, noise, tmp_path)  # the quiet room stays silent meanwhile
            assert a.interrupt() == 0 and b.interrupt() == 0
        finally:
            a.kill()
            b.kill()
    assert server.requests == []
    assert transcript_files(tmp_path) == []


def _rms(samples: np.ndarray, frame: int = 160) -> np.ndarray:
    frames = samples[: len(samples) // frame * frame].astype(np.float64).reshape(-1, frame)
    return np.sqrt((frames**2).mean(axis=1))


def _voiced_tail(samples: np.ndarray, window_s: float = 0.25, min_rms: float = 300) -> np.ndarray:
    """The last quarter second of ``samples`` that ``_found`` counts as voiced."""
    w = int(window_s * SPEECH_RATE_HZ)
    windows = [samples[i : i + w] for i in range(0, len(samples) - w + 1, w)]
    return [x for x in windows if np.sqrt(np.mean(x.astype(np.float64) ** 2)) > min_rms][-1]


def _found(
    recording: np.ndarray, clip_samples: np.ndarray, window_s: float = 0.25, min_rms: float = 300
) -> float:
    """The share of the clip's voiced quarter seconds (RMS above ``min_rms``) that appear in
    the recording: normalised cross-correlation of at least 0.8 at the best offset, so a
    glitch only loses its window."""
    w = int(window_s * SPEECH_RATE_HZ)
    windows = [clip_samples[i : i + w] for i in range(0, len(clip_samples) - w + 1, w)]
    voiced = [x for x in windows if np.sqrt(np.mean(x.astype(np.float64) ** 2)) > min_rms]
    rec = recording.astype(np.float64)
    energy = np.concatenate([[0.0], np.cumsum(rec**2)])
    local = np.sqrt(np.maximum(energy[w:] - energy[:-w], 1e-9))  # ||rec[k:k+w]|| for each k
    size = 1 << (len(rec) + w - 1).bit_length()
    spectrum = np.fft.rfft(rec, size)
    found = 0
    for x in voiced:
        ref = x.astype(np.float64)
        corr = np.fft.irfft(spectrum * np.conj(np.fft.rfft(ref, size)), size)[: len(local)]
        found += float(np.max(corr / (local * np.linalg.norm(ref)))) >= 0.8
    return found / len(voiced) if voiced else 0.0


def _locate(recording: np.ndarray, needle: np.ndarray) -> int:
    n = len(recording) + len(needle)
    size = 1 << (n - 1).bit_length()
    corr = np.fft.irfft(
        np.fft.rfft(recording.astype(np.float64), size)
        * np.conj(np.fft.rfft(needle.astype(np.float64), size)),
        size,
    )
    return int(np.argmax(corr[: len(recording) - len(needle) + 1]))


def test_barge_in_stops_playback_within_300_ms(tmp_path: Path) -> None:
    """Headset: user on the left channel, agent on the right, one recording on one clock."""
    headset = Headset("barge")
    voice = read_file(clip("1272-128104-0000.wav").path).samples
    try:
        with ScriptedLLM(Stream("What would you like to know?"), Stream(LONG_REPLY)) as server:
            # a headset has no echo to cancel: the canceller would only soften the first words while
            # it learns that (see README, "Echo cancellation")
            agent = start_agent(server, tmp_path, headset.ear, headset.agent, "--barge-in",
                                "--echo-cancellation", "off")  # fmt: skip
            try:
                say(headset.user, "cards_001.wav", tmp_path, 1, "first reply")
                time.sleep(1.0)
                rec = Recorder(f"{headset.room}.monitor", channels=2)
                play(headset.user, as_wav(clip("arctic_a0024.wav").path, tmp_path))
                wait_until(lambda: len(server.requests) >= 2, 30, "the long reply")
                time.sleep(3.0)  # well into the long reply
                say(headset.user, "1272-128104-0000.wav", tmp_path, 3, "the interrupted turn")
                time.sleep(1.0)
                recording = rec.stop()
                assert agent.interrupt() == 0
            finally:
                agent.kill()
    finally:
        headset.close()
    user_side, agent_side = recording[:, 0], recording[:, 1]
    start = _locate(user_side, voice)
    speech_onset = start + first_voiced_sample(voice)
    agent_loud = np.flatnonzero(_rms(agent_side[: speech_onset + SPEECH_RATE_HZ * 3]) > 300)
    assert agent_loud.size and agent_loud[0] * 160 < speech_onset, "the reply was not playing"
    stopped = (agent_loud[-1] + 1) * 160
    latency = (stopped - speech_onset) / SPEECH_RATE_HZ
    print(f"barge-in: playback stopped {latency * 1000:.0f} ms after the user started speaking")
    # the user may start in a pause between two of the reply's sentences: then its last sound
    # came a little before their voice, which is no later stop; but it must have been going on
    # (a pause between sentences is under 0.6 s), not finished by itself
    assert latency > -0.6, "the reply had stopped before the user spoke"
    assert latency <= 0.3
    records = sidecar(tmp_path)
    assert records[1]["interrupted"] is True
    [md] = transcript_files(tmp_path / "t")
    turns = read(md).turns
    interrupted = turns[3].text
    assert turns[3].role == "ASSISTANT" and interrupted.endswith("[interrupted]")
    spoken = interrupted.removesuffix("[interrupted]").rstrip(" \u2026")
    assert spoken and LONG_REPLY.startswith(spoken.split("\u2026")[0])
    assert len(spoken) < len(LONG_REPLY) * 0.8
    assert turns[4].role == "USER" and "apostle" in turns[4].text.lower()


@pytest.mark.parametrize("when", ["listening", "speaking"])
def test_ctrl_c_ends_cleanly_with_a_complete_transcript(
    tmp_path: Path, sinks: list[Sink], when: str
) -> None:
    user, speaker = sink(sinks, "user"), sink(sinks, "agent")
    with ScriptedLLM(Stream("Short answer."), Stream(LONG_REPLY)) as server:
        agent = start_agent(server, tmp_path, user, speaker)
        try:
            say(user, "cards_002.wav", tmp_path, 1, "first reply")
            time.sleep(1.0)
            if when == "speaking":
                play(user, as_wav(clip("arctic_a0024.wav").path, tmp_path))
                wait_until(lambda: len(server.requests) >= 2, 30, "the long reply")
                time.sleep(2.0)
            code = agent.interrupt()
        finally:
            agent.kill()
    assert code == 0, agent.errors
    [md] = transcript_files(tmp_path / "t")
    turns = read(md).turns
    assert [t.text for t in turns[:2]][1] == "Short answer."
    if when == "speaking":
        assert [t.role for t in turns] == ["USER", "ASSISTANT", "USER", "ASSISTANT"]
        assert turns[3].text.endswith("[interrupted]")
    else:
        assert len(turns) == 2


def test_microphone_that_stops_delivering_is_reopened_and_the_session_goes_on(
    tmp_path: Path, sinks: list[Sink]
) -> None:
    user, speaker = sink(sinks, "user"), sink(sinks, "agent")
    with ScriptedLLM(Stream("Okay.")) as server:
        agent = start_agent(server, tmp_path, user, speaker)
        try:
            subprocess.run(["pactl", "suspend-sink", user.name, "1"], check=True)
            agent.wait_for("stopped; reopening", timeout=15)
            subprocess.run(["pactl", "suspend-sink", user.name, "0"], check=True)
            agent.wait_for("is back", timeout=20)
            say(user, "arctic_a0024.wav", tmp_path, 1, "a turn after the reopen")
            assert agent.interrupt() == 0
        finally:
            agent.kill()
    assert "chiefly induced" in server.user_messages()[0].lower()


def test_speaker_that_stops_mid_reply_is_reopened_and_the_reply_plays_on(
    tmp_path: Path, sinks: list[Sink]
) -> None:
    """A USB speaker unplugged and plugged back in: the reply waits for it and goes on; the
    transcript keeps it whole, and the conversation continues."""
    user, speaker = sink(sinks, "user"), sink(sinks, "agent")
    with ScriptedLLM(Stream(LONG_REPLY), Stream("Okay.")) as server:
        agent = start_agent(server, tmp_path, user, speaker)
        try:
            rec = Recorder(speaker)
            play(user, as_wav(clip("arctic_a0024.wav").path, tmp_path))
            wait_until(lambda: np.abs(rec.so_far()).max(initial=0) > 3000, 30, "the reply")
            time.sleep(2.0)
            subprocess.run(["pactl", "suspend-sink", speaker.name, "1"], check=True)
            agent.wait_for(r"speaker .* stopped; reopening", timeout=20)
            time.sleep(2.0)
            subprocess.run(["pactl", "suspend-sink", speaker.name, "0"], check=True)
            agent.wait_for(r"speaker .* is back", timeout=40)
            wait_until(lambda: len(sidecar(tmp_path)) >= 1, 60, "the rest of the reply")
            time.sleep(1.0)
            say(user, "2830-3980-0043.wav", tmp_path, 2, "a turn after")
            heard = rec.stop()
            assert agent.interrupt() == 0
        finally:
            agent.kill()
    turns = read(transcript_files(tmp_path / "t")[0]).turns
    assert [t.role for t in turns] == ["USER", "ASSISTANT", "USER", "ASSISTANT"]
    assert turns[1].text == LONG_REPLY  # played in full: not cut, not [interrupted]
    text = WhisperStt(SttConfig()).transcribe(Audio(heard, SPEECH_RATE_HZ)).text
    assert wer([LONG_REPLY + " Okay."], [text]) <= 0.2, text


def test_saying_goodbye_ends_the_session(tmp_path: Path, sinks: list[Sink]) -> None:
    user, speaker = sink(sinks, "user"), sink(sinks, "agent")
    goodbye = PiperTts(TtsConfig()).synthesize("Okay, goodbye.")
    with ScriptedLLM(Stream("Okay.")) as server:
        agent = start_agent(server, tmp_path, user, speaker)
        try:
            say(user, "cards_002.wav", tmp_path, 1, "first turn")
            time.sleep(1.0)
            play_samples(user, goodbye, tmp_path)
            code = agent.proc.wait(timeout=30)
        finally:
            agent.kill()
    assert code == 0
    asked = [normalise(r["messages"][-1]["content"]) for r in server.requests]
    assert not any("goodbye" in text for text in asked)  # goodbye is not sent to the model
    [md] = transcript_files(tmp_path / "t")
    assert "goodbye" in read(md).turns[-1].text.lower()


def test_push_to_talk_turns_are_started_and_ended_with_enter(
    tmp_path: Path, sinks: list[Sink]
) -> None:
    user, speaker = sink(sinks, "user"), sink(sinks, "agent")
    c = clip("1995-1837-0001.wav")
    with ScriptedLLM(Stream("Okay.")) as server:
        agent = start_agent(server, tmp_path, user, speaker, "--push-to-talk", stdin=True)
        try:
            play(user, as_wav(clip("cards_001.wav").path, tmp_path))  # not while Enter is up
            time.sleep(1.5)
            assert server.requests == []
            agent.type_line()
            time.sleep(0.3)
            play(user, as_wav(c.path, tmp_path))
            agent.type_line()
            wait_until(lambda: len(sidecar(tmp_path)) >= 1, 30, "the push-to-talk turn")
            assert agent.interrupt() == 0
        finally:
            agent.kill()
    assert wer([c.transcript], server.user_messages()) < 0.2


def test_devices_are_listed_and_a_wrong_name_is_one_clear_line(tmp_path: Path) -> None:
    listing = run_cli("devices")
    assert listing.code == 0
    assert "Input devices:" in listing.stdout and "Output devices:" in listing.stdout
    run = run_cli(
        "chat",
        "--llm-url",
        "http://127.0.0.1:9/v1",
        "--input-device",
        "no-such-mic",
        "--transcripts-dir",
        str(tmp_path),
    )
    assert run.code != 0
    assert "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines() == [
        "voice-agent: error: no input device matches 'no-such-mic': see 'voice-agent devices'"
    ]


def test_saved_audio_is_kept_privately_and_plays_back_in_the_room(
    tmp_path: Path, sinks: list[Sink]
) -> None:
    room = sink(sinks, "replay")
    with ScriptedLLM(Stream("Seven of clubs, noted.")) as server:
        run = run_cli("chat", "--input", str(clip("cards_003.wav").path), "--output-dir",
                      str(tmp_path / "out"), "--llm-url", server.url, "--transcripts-dir",
                      str(tmp_path / "t"), "--save-audio")  # fmt: skip
    assert run.code == 0, run.stderr
    [record] = sidecar(tmp_path)
    files = record["audio_files"]
    assert isinstance(files, dict) and set(files) == {"user", "reply"}
    [md] = transcript_files(tmp_path / "t")
    for name in files.values():
        path = md.parent / str(name)
        assert path.suffix == ".flac" and (path.stat().st_mode & 0o777) == 0o600
    rec = Recorder(room)
    time.sleep(2.5)  # a fresh recorder of a monitor takes a moment to run in real time
    played = run_cli("--transcripts-dir", str(tmp_path / "t"), "transcripts", "play",
                     "--latest", "1", env={"PULSE_SINK": room.name})  # fmt: skip
    # the recorder of a monitor can run seconds behind real time under load: wait until it
    # has caught the reply's last quarter second of speech (or 15 s)
    kept = {kind: read_file(md.parent / str(name)) for kind, name in files.items()}
    tail = _voiced_tail(kept["reply"].samples)
    deadline = time.monotonic() + 15
    while _found(rec.so_far(), tail) < 1.0 and time.monotonic() < deadline:
        time.sleep(0.5)
    heard = rec.stop()
    assert played.code == 0, played.stderr
    assert \
        [line.split(" (")[0] for line in played.stdout.splitlines()] == [
            "turn 1: you", "turn 1: assistant"]  # fmt: skip
    # what was kept is what was said and answered (checked on the files, without the room)...
    assert _found(read_file(clip("cards_003.wav").path).samples, kept["user"].samples) == 1.0
    # (Piper varies each rendition a little, and tiny.en now and then hears "clobs": one
    # word of the four may be misheard)
    said = WhisperStt(SttConfig()).transcribe(kept["reply"]).text
    assert wer(["Seven of clubs, noted."], [said]) <= 0.25, said
    # ...and exactly that audio reached the room: its quarter seconds of speech are found in
    # the recording (its words are too fragile to read: under load tiny.en heard "7f clobs"
    # for "seven of clubs"). A copy correlates at 0.99-1.0 in every window, unrelated speech
    # in none; a window hit by a playback glitch is lost, the rest still count.
    for kind, audio in kept.items():
        assert _found(heard, audio.samples) >= 0.75, kind
    missing = run_cli("--transcripts-dir", str(tmp_path / "t"), "transcripts", "play", "2026",
                      "9")  # fmt: skip
    assert missing.code != 0 and "no audio kept for turn 9" in missing.stderr
