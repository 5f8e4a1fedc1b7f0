"""Turn-taking fed frames and transcripts in-process: when the model is asked early, when a
pause mid-thought buys more silence, and where the recorded end of speech lies.

The pure ``TurnTaking`` is fed a real clip frame by frame; ``LiveSession`` is fed the same
frames in real time by a stand-in microphone (the room tests play them through PulseAudio),
with scripted transcripts and a real loopback LLM server.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import clip
from llm_server import ScriptedLLM, Stream
from room import Recorder, Sink, ensure_pulseaudio

from voice_agent.agent import Agent
from voice_agent.audio import SPEECH_RATE_HZ, Audio, read_file
from voice_agent.config import AudioConfig, Config, LlmConfig, ReplyConfig, TtsConfig, VadConfig
from voice_agent.display import Display
from voice_agent.live import ONSET_DBFS, ONSET_FRAMES, LiveSession
from voice_agent.llm import ChatClient, Conversation
from voice_agent.llm_endpoint import resolve
from voice_agent.mic import Frame
from voice_agent.recorder import Turn
from voice_agent.speaker import Speaker
from voice_agent.stt import Transcription
from voice_agent.transcript import TranscriptWriter, read
from voice_agent.tts import PiperTts
from voice_agent.turn_taking import Ask, TurnTaking
from voice_agent.vad import Paused, Resumed, Utterance, VoiceDetector

FRAME = SPEECH_RATE_HZ * 20 // 1000


def frames_of(*parts: Audio | float) -> list[np.ndarray]:
    """20 ms frames of clips and seconds of silence, in order."""
    pieces = [
        p.samples if isinstance(p, Audio) else np.zeros(int(p * SPEECH_RATE_HZ), np.int16)
        for p in parts
    ]
    samples = np.concatenate(pieces)
    return [samples[i : i + FRAME] for i in range(0, len(samples) - FRAME + 1, FRAME)]


def speech() -> Audio:
    return read_file(clip("cards_001.wav").path)


def run_turn_taking(frames: list[np.ndarray], texts: list[str], reply: ReplyConfig | None = None):  # type: ignore[no-untyped-def]
    """Feed frames; each Paused is answered at once with the next scripted transcript."""
    turns, vad = TurnTaking(VadConfig(), reply or ReplyConfig()), VoiceDetector(2)
    events: list[tuple[int, object]] = []
    script = list(texts)
    for i, frame in enumerate(frames):
        for e in turns.feed(frame, vad.is_speech(frame)):
            events.append((i, e))
            if isinstance(e, Paused) and script:
                events += [(i, a) for a in turns.heard(e.generation, script.pop(0))]
    return events


def test_a_finished_transcript_asks_the_model_at_hangover_minus_lead() -> None:
    events = run_turn_taking(frames_of(0.5, speech(), 2.0), ["Ten of clubs."])
    [(paused_at, paused)] = [(i, e) for i, e in events if isinstance(e, Paused)]
    [(asked_at, ask)] = [(i, e) for i, e in events if isinstance(e, Ask)]
    [(ended_at, utterance)] = [(i, e) for i, e in events if isinstance(e, Utterance)]
    assert isinstance(ask, Ask) and ask.text == "Ten of clubs."
    assert ask.generation == paused.generation == utterance.generation  # type: ignore[attr-defined]
    early, lead = VadConfig().early_stt_ms, ReplyConfig().speculative_lead_ms
    silence_start = paused_at - early // 20 + 1
    assert asked_at - silence_start + 1 == (700 - lead) // 20  # 250 ms into the silence
    assert ended_at - silence_start + 1 == 700 // 20
    assert utterance.silence_s == pytest.approx(0.7)  # type: ignore[attr-defined]


def test_an_unfinished_transcript_buys_more_silence_and_asks_nothing_during_it() -> None:
    # (a lead of 250 ms asks 1.05 s into the silence: after this pause of about 0.9 s)
    events = run_turn_taking(frames_of(0.5, speech(), 0.8, speech(), 2.5), ["Ten of,", "clubs."],
                             ReplyConfig(speculative_lead_ms=250))  # fmt: skip
    utterances = [e for _, e in events if isinstance(e, Utterance)]
    assert len(utterances) == 1  # the pause did not end the turn (hangover 0.7 + 0.6)
    assert any(isinstance(e, Resumed) for _, e in events)
    assert [e.text for _, e in events if isinstance(e, Ask)] == ["clubs."]


def test_an_extended_hangover_still_asks_lead_before_it_ends_and_reports_its_silence() -> None:
    events = run_turn_taking(frames_of(0.5, speech(), 2.5), ["I went to the shop and"])
    [(paused_at, _)] = [(i, e) for i, e in events if isinstance(e, Paused)]
    [(asked_at, ask)] = [(i, e) for i, e in events if isinstance(e, Ask)]
    [(ended_at, utterance)] = [(i, e) for i, e in events if isinstance(e, Utterance)]
    early, lead = VadConfig().early_stt_ms, ReplyConfig().speculative_lead_ms
    silence_start = paused_at - early // 20 + 1
    # the reply is ready as the longer silence ends, not 0.4 s of preparation after it
    assert asked_at - silence_start + 1 == (1300 - lead) // 20
    assert ask.text == "I went to the shop and"  # type: ignore[attr-defined]
    assert ended_at - silence_start + 1 == 1300 // 20
    assert utterance.silence_s == pytest.approx(1.3)  # type: ignore[attr-defined]


def test_a_late_transcript_asks_at_once_and_a_goodbye_never_asks() -> None:
    turns, vad = TurnTaking(VadConfig(), ReplyConfig()), VoiceDetector(2)
    late: list[object] = []
    paused = None
    for frame in frames_of(0.5, speech(), 2.0):
        for e in turns.feed(frame, vad.is_speech(frame)):
            paused = e if isinstance(e, Paused) else paused
            if isinstance(e, Utterance):
                break
        if paused is not None and turns.endpointer.silent_frames == 30:  # 600 ms: late
            late = list(turns.heard(paused.generation, "Ten of clubs."))
            break
    assert [type(e) for e in late] == [Ask]
    goodbye = run_turn_taking(frames_of(0.5, speech(), 2.0), ["OK, goodbye."])
    assert not any(isinstance(e, Ask) for _, e in goodbye)


class ScriptedStt:
    """Transcripts in the order they are asked for (what the scenario says was heard); with
    ``longer``, audio of more than ``longer[0]`` seconds is heard as ``longer[1]`` (the
    two parts of a turn transcribed whole, however many pauses were transcribed before)."""

    name = "scripted stt"

    def __init__(self, *texts: str, longer: tuple[float, str] | None = None) -> None:
        self.texts = list(texts)
        self.longer = longer

    def transcribe(self, audio: Audio) -> Transcription:
        if self.longer is not None and audio.seconds > self.longer[0]:
            return Transcription(self.longer[1], audio.seconds, 0.0)
        text = self.texts.pop(0) if len(self.texts) > 1 else self.texts[0]
        return Transcription(text, audio.seconds, 0.0)


class FramesInRealTime:
    """The microphone's part: frames at the pace they would be captured, each stamped."""

    latency_s = 0.0

    def __init__(self, frames: list[np.ndarray]) -> None:
        self.frames_to_play = frames
        self.fed_at: list[float] = []  # time.time() at which each frame was captured

    async def frames(self) -> AsyncIterator[Frame]:
        start = time.monotonic()
        for i, samples in enumerate(self.frames_to_play):
            await asyncio.sleep(max(0.0, start + (i + 1) * 0.02 - time.monotonic()))
            self.fed_at.append(time.time())
            yield Frame(samples, time.monotonic())
        await asyncio.Event().wait()  # a live microphone never ends


def live_turn(tmp_path: Path, frames: list[np.ndarray], stt: ScriptedStt, server: ScriptedLLM,
              wait_s: float, tts: PiperTts | None = None, reply: ReplyConfig | None = None,
              echo: object = None, speaker_type: type[Speaker] = Speaker,
              recording: list[np.ndarray] | None = None,
              ) -> tuple[FramesInRealTime, Path]:  # fmt: skip
    """One LiveSession hearing ``frames``; the transcript path once ``wait_s`` has passed.
    With ``tts`` the replies are spoken, and the user can talk over them (a headset)."""
    mic = FramesInRealTime(frames)
    config = Config(llm=LlmConfig(base_url=server.url, model="m"), reply=reply or ReplyConfig(),
                    audio=AudioConfig(barge_in="on" if tts else "auto"))  # fmt: skip

    async def run() -> Path:
        chat = ChatClient(resolve(config.llm, {}), config.llm)  # type: ignore[arg-type]
        speaker = speaker_type("")
        writer = TranscriptWriter(tmp_path / "t", "m", __import__("datetime").datetime.now())
        display = Display(io.StringIO(), io.StringIO())
        agent = Agent(chat, Conversation("", 10_000), writer, display, config.reply, stt,
                      tts, speaker)  # type: ignore[arg-type]  # fmt: skip
        session = LiveSession(agent, config, display, mic, speaker, echo=echo)  # type: ignore[arg-type]
        asyncio.get_running_loop().call_later(wait_s, session.stop.set)
        try:
            await session.run()
        finally:
            speaker.close()
            await chat.aclose()
        assert writer.path is not None
        return writer.path

    ensure_pulseaudio()
    sink = Sink("turns")
    os.environ["PULSE_SINK"] = sink.name
    recorder = Recorder(sink) if recording is not None else None
    try:
        return mic, asyncio.run(run())
    finally:
        if recorder is not None and recording is not None:
            recording.append(recorder.stop())  # what the agent played, as a room would hear
        del os.environ["PULSE_SINK"]
        sink.close()


def last_voiced(frames: list[np.ndarray]) -> int:
    vad = VoiceDetector(2)
    return max(i for i, f in enumerate(frames) if vad.is_speech(f))


def records(md: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in md.with_suffix(".jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_the_end_of_speech_is_where_the_voice_stopped_even_after_a_longer_hangover(
    tmp_path: Path,
) -> None:
    frames = frames_of(0.5, speech(), 3.0)
    with ScriptedLLM(Stream("Go on.")) as server:
        mic, md = live_turn(tmp_path, frames, ScriptedStt("I went to the shop and"), server, 8)
    [record] = records(md)
    ended = record["events"]["speech_end"]  # type: ignore[index]
    # the hangover was extended to 1.3 s ("and" sounds unfinished): the end of speech is
    # still the last voiced frame, not 1.3 s - 0.7 s later
    assert ended == pytest.approx(mic.fed_at[last_voiced(frames)], abs=0.06)


@pytest.mark.slow
def test_an_early_reply_is_adopted_or_dropped_as_the_user_goes_on(tmp_path: Path) -> None:
    # finished-sounding words, then silence: the request leaves early and is adopted
    with ScriptedLLM(Stream("Noted.")) as server:
        _, md = live_turn(tmp_path / "a", frames_of(0.5, speech(), 3.0),
                          ScriptedStt("Ten of clubs."), server, 7)  # fmt: skip
        assert len(server.requests) == 1
    [record] = records(md)
    assert record["speculative"] is True
    assert [t.text for t in read(md).turns] == ["Ten of clubs.", "Noted."]
    # the user goes on after 0.55 s (past the ask point at 0.45 s): that request is dropped
    # and the whole utterance is one turn, answered once
    slow = Stream("Both parts noted.", first_token_delay_s=0.3)
    with ScriptedLLM(slow) as server:
        _, md = live_turn(tmp_path / "b", frames_of(0.5, speech(), 0.55, speech(), 3.0),
                          ScriptedStt("Ten of clubs.", "Ten of clubs. Ten of clubs."), server,
                          10)  # fmt: skip
        assert len(server.requests) == 2
    assert [t.text for t in read(md).turns] == ["Ten of clubs. Ten of clubs.", "Both parts noted."]


@pytest.mark.slow
def test_going_on_just_after_the_reply_starts_joins_the_turn_and_later_interrupts_it(
    tmp_path: Path,
) -> None:
    """The user pauses for 1.5 s, longer than the hangover: the reply starts. Going on 0.6 s
    into it, they had only paused: the reply stops, is not kept, and their words are one
    turn, transcribed whole. With rejoin off (as before) the same speech is two turns around
    an interrupted reply."""
    frames = frames_of(0.5, speech(), 1.5, speech(), 3.0)
    whole = (2.5, "Ten of clubs, ten of clubs.")  # one part with its pre-roll: about 1.8 s
    long_reply = Stream("Noted. I will keep the ten of clubs in mind for the rest of the game.")
    tts = PiperTts(TtsConfig())
    with ScriptedLLM(long_reply, Stream("Both noted.")) as server:
        _, md = live_turn(tmp_path / "a", frames, ScriptedStt("Ten of clubs.", longer=whole),
                          server, 12, tts)  # fmt: skip
        assert server.user_messages() == ["Ten of clubs, ten of clubs."]  # one request, whole
    turns = [(t.role, t.text) for t in read(md).turns]
    assert turns == [("USER", "Ten of clubs, ten of clubs."), ("ASSISTANT", "Both noted.")]
    # the whole was transcribed during the silence after the second part, not after it
    [record] = records(md)
    events: dict[str, float] = record["events"]  # type: ignore[assignment]
    assert record["early_transcription"] is True
    assert events["stt_start"] < events["speech_end"] + 0.3
    off = ReplyConfig(rejoin_ms=0)
    with ScriptedLLM(long_reply, Stream("Both noted.")) as server:
        _, md = live_turn(tmp_path / "b", frames, ScriptedStt("Ten of clubs."), server, 12, tts,
                          off)  # fmt: skip
    roles = [t.role for t in read(md).turns]
    assert roles == ["USER", "ASSISTANT", "USER", "ASSISTANT"]
    assert read(md).turns[1].text.endswith("[interrupted]")


@pytest.mark.slow
def test_going_on_after_a_long_silence_interrupts_a_late_reply_and_keeps_both_turns(
    tmp_path: Path,
) -> None:
    """The model is slow: its reply starts about 2.5 s after the user stopped, and they speak
    again half a second into it. After that long a silence they had finished: the reply is
    interrupted and kept, and what they say now is a turn of its own (not merged, as a
    pause mid-thought is)."""
    frames = frames_of(0.5, speech(), 3.0, speech(), 3.0)
    late = Stream("Noted. I will keep the ten of clubs in mind for the rest of the game.",
                  first_token_delay_s=2.0)  # fmt: skip
    tts = PiperTts(TtsConfig())
    with ScriptedLLM(late, Stream("Both noted.")) as server:
        _, md = live_turn(tmp_path, frames, ScriptedStt("Ten of clubs."), server, 14, tts)
        assert server.user_messages() == ["Ten of clubs.", "Ten of clubs."]
    turns = read(md).turns
    assert [t.role for t in turns] == ["USER", "ASSISTANT", "USER", "ASSISTANT"]
    assert turns[1].text.endswith("[interrupted]") and turns[3].text == "Both noted."


LONG_REPLY = ("Noted. I will keep the ten of clubs in mind for the rest of the game, and tell "
              "you when it matters.")  # fmt: skip


class LeakingCanceller:
    """An echo canceller whose output always looks like the reply (0.7, as leaks measured in
    the room): when a real one leaks is up to the room, so here every voice is a leak."""

    def clean(self, samples: np.ndarray) -> np.ndarray:
        return samples

    def echo_likeness(self) -> float:
        return 0.7


class PauseTimingSpeaker(Speaker):
    """The real speaker, noting how long each pause lasted."""

    def __init__(self, device: str = "") -> None:
        super().__init__(device)
        self.paused_at: float | None = None
        self.pauses: list[float] = []
        self.paused_wall: list[float] = []  # time.time() of each pause that silenced it

    def pause(self) -> None:
        if not self.paused:
            self.paused_wall.append(time.time())
        super().pause()
        if self.paused_at is None:
            self.paused_at = time.monotonic()

    def resume(self) -> None:
        if self.paused_at is not None:
            self.pauses.append(time.monotonic() - self.paused_at)
            self.paused_at = None
        super().resume()


class LeakStt(ScriptedStt):
    """The user's words for their turn; no words in an utterance shorter than ``words_from_s``
    (a leak or a knock: what Whisper made of a 0.3 s one)."""

    def __init__(self, words_from_s: float = 0.6) -> None:
        super().__init__("Ten of clubs.")
        self.words_from_s = words_from_s

    def transcribe(self, audio: Audio) -> Transcription:
        text = "" if audio.seconds < self.words_from_s else "Ten of clubs."
        return Transcription(text, audio.seconds, 0.0)


@pytest.mark.slow
def test_a_leak_of_the_reply_stalls_it_for_a_moment_not_a_second(tmp_path: Path) -> None:
    """Echo comes through the canceller for 0.3 s, 1 s into the reply: playback pauses at
    once, and goes on 0.3 s after that voice fell silent with it (echo stops when the
    speaker does; a user would go on). Before, it waited for the end of the utterance and a
    transcription: a second and more of silence mid-reply. The reply is kept whole."""
    voiced = speech().samples[int(0.4 * SPEECH_RATE_HZ) : int(0.7 * SPEECH_RATE_HZ)]
    frames = frames_of(0.5, speech(), 2.5, Audio(voiced, SPEECH_RATE_HZ), 8.0)
    paused_once_and_kept_whole(tmp_path, frames, LeakingCanceller(), 13)


def paused_once_and_kept_whole(
    tmp_path: Path, frames: list[np.ndarray], echo: LeakingCanceller, wait_s: float
) -> None:
    """The user's "Ten of clubs." is answered at length, and the later sound in ``frames``
    that is not the user's turn pauses the reply once, for less than 0.75 s: it goes on, and
    the transcript keeps it whole."""
    speakers, timed = timed_speakers()
    with ScriptedLLM(Stream(LONG_REPLY)) as server:
        _, md = live_turn(tmp_path, frames, LeakStt(), server, wait_s, PiperTts(TtsConfig()),
                          echo=echo, speaker_type=timed)  # type: ignore[arg-type]  # fmt: skip
        assert len(server.requests) == 1
    [speaker] = speakers
    assert len(speaker.pauses) == 1 and speaker.pauses[0] < 0.75, speaker.pauses
    turns = [(t.role, t.text) for t in read(md).turns]
    assert turns == [("USER", "Ten of clubs."), ("ASSISTANT", LONG_REPLY)]


class ClearCanceller(LeakingCanceller):
    """A canceller that took all the echo out: what it passes on is the user alone."""

    def echo_likeness(self) -> float:
        return 0.0


@pytest.mark.slow
def test_a_wordless_sound_while_the_model_thinks_is_neither_a_turn_nor_a_new_request(
    tmp_path: Path,
) -> None:
    """A sound after the user's turn, before its reply begins (the thinking tone's echo, a
    knock): transcribed with the turn it may go on from it gives only that turn's words. It
    adds none, so it is no turn: the request in flight is kept, not cancelled and asked
    again, and the user's words are shown and kept once."""
    knock = speech().samples[int(0.4 * SPEECH_RATE_HZ) : int(0.7 * SPEECH_RATE_HZ)]
    frames = frames_of(0.5, speech(), 1.2, Audio(knock, SPEECH_RATE_HZ), 6.0)
    with ScriptedLLM(Stream("All right.", first_token_delay_s=3.0)) as server:
        _, md = live_turn(tmp_path, frames, LeakStt(1.3), server, 9)
        assert len(server.requests) == 1
    turns = [(t.role, t.text) for t in read(md).turns]
    assert turns == [("USER", "Ten of clubs."), ("ASSISTANT", "All right.")]


@pytest.mark.slow
def test_a_leak_that_outlasts_the_echo_margin_pauses_the_reply_but_never_stops_it(
    tmp_path: Path,
) -> None:
    """After an output underrun the reply's sound can reach the microphone later than the
    device's latency says, and the canceller's leak then looks like nothing it played: 0.45 s
    of voice 1.5 s into the reply, most of it captured after the paused reply's sound should
    have been gone. It pauses the reply; it is not the user (no words), so the reply goes on
    and is kept whole, not marked interrupted (before, it stopped for good: CI saw it)."""
    leak = speech().samples[int(0.4 * SPEECH_RATE_HZ) : int(0.85 * SPEECH_RATE_HZ)]
    frames = frames_of(0.5, speech(), 0.2, speech(), 2.5, Audio(leak, SPEECH_RATE_HZ), 9.0)
    speakers, timed = timed_speakers()
    with ScriptedLLM(Stream(LONG_REPLY)) as server:
        _, md = live_turn(tmp_path, frames, LeakStt(1.5), server, 15,
                          PiperTts(TtsConfig()), echo=ClearCanceller(),
                          speaker_type=timed)  # type: ignore[arg-type]  # fmt: skip
        assert len(server.requests) == 1
    [speaker] = speakers
    assert len(speaker.paused_wall) == 1 and len(speaker.pauses) == 1, speaker.pauses
    turns = [(t.role, t.text) for t in read(md).turns]
    assert turns == [("USER", "Ten of clubs."), ("ASSISTANT", LONG_REPLY)]


def timed_speakers() -> tuple[list[PauseTimingSpeaker], Callable[[str], PauseTimingSpeaker]]:
    speakers: list[PauseTimingSpeaker] = []

    def timed(device: str) -> PauseTimingSpeaker:
        speakers.append(PauseTimingSpeaker(device))
        return speakers[-1]

    return speakers, timed


def loud(frame: np.ndarray) -> bool:
    return bool(np.sqrt(np.mean(frame.astype(np.float64) ** 2)) >= 32768 * 10 ** (ONSET_DBFS / 20))


@pytest.mark.slow
def test_a_voice_over_the_reply_pauses_it_on_its_second_loud_frame_before_the_detector_is_sure(
    tmp_path: Path,
) -> None:
    """Through speakers every frame the detector waits for is the reply talking over the user:
    playback pauses once 40 ms of the canceller's output is loud, before webrtcvad has heard
    its 100 ms of voice in a row, and the user's words still take the floor."""
    before = frames_of(0.5, speech(), 2.5)
    frames = before + frames_of(speech(), 3.0)
    loud_enough = next(
        i for i in range(len(before) + ONSET_FRAMES - 1, len(frames))
        if all(loud(f) for f in frames[i - ONSET_FRAMES + 1 : i + 1])
    )  # fmt: skip
    vad = VoiceDetector(2)
    detector_start = next(
        i for i in range(len(before) + 4, len(frames))
        if all(vad.is_speech(f) for f in frames[i - 4 : i + 1])
    )  # fmt: skip
    speakers, timed = timed_speakers()
    with ScriptedLLM(Stream(LONG_REPLY), Stream("Both noted.")) as server:
        mic, md = live_turn(tmp_path, frames, ScriptedStt("Ten of clubs."), server, 13,
                            PiperTts(TtsConfig()), echo=ClearCanceller(),
                            speaker_type=timed)  # type: ignore[arg-type]  # fmt: skip
    [speaker] = speakers
    paused_on = sum(t <= speaker.paused_wall[0] for t in mic.fed_at) - 1
    assert paused_on == loud_enough < detector_start, (paused_on, loud_enough, detector_start)
    turns = read(md).turns
    assert [t.role for t in turns] == ["USER", "ASSISTANT", "USER", "ASSISTANT"]
    assert turns[1].text.endswith("[interrupted]") and turns[3].text == "Both noted."


@pytest.mark.slow
def test_loud_knocks_over_the_reply_pause_it_once_for_a_moment_and_it_goes_on_whole(
    tmp_path: Path,
) -> None:
    """60 ms of loud noise is no speech start (webrtcvad needs 100 ms): the pause it caused
    on level ends when the detector has not confirmed it, and the reply is kept whole. A
    second knock in the same reply (a noisy room) does not pause it again."""
    noise = np.random.default_rng(1).normal(0, 6000, int(0.06 * SPEECH_RATE_HZ))
    knock = Audio(noise.astype(np.int16), SPEECH_RATE_HZ)
    frames = frames_of(0.5, speech(), 2.5, knock, 1.0, knock, 8.0)
    paused_once_and_kept_whole(tmp_path, frames, ClearCanceller(), 14)


def test_a_withdrawn_reply_never_reaches_the_transcript_even_if_its_cancellation_is_lost(
    tmp_path: Path,
) -> None:
    """The user went on, so the reply asked for their first words was dropped; asyncio can
    lose that cancellation (a read finishing at the same moment), and the reply then went on
    to commit those words a second time. Here the cancellation is lost on purpose: the
    reply is withdrawn but never cancelled."""

    async def scenario(server: ScriptedLLM) -> tuple[Path, str, bool]:
        config = Config(llm=LlmConfig(base_url=server.url, model="m"))
        chat = ChatClient(resolve(config.llm, {}), config.llm)  # type: ignore[arg-type]
        writer = TranscriptWriter(tmp_path / "t", "m", __import__("datetime").datetime.now())
        out = io.StringIO()
        agent = Agent(chat, Conversation("", 10_000), writer, Display(out, out), config.reply)
        gate = asyncio.Event()  # the user is still speaking
        turn = Turn("microphone", "Ten of clubs.")
        task = asyncio.create_task(agent.respond(turn, gate))
        await asyncio.sleep(0.5)  # the whole reply has arrived, held by the gate
        turn.withdrawn = True  # what LiveSession._drop_reply does besides cancelling
        gate.set()
        await asyncio.gather(task, return_exceptions=True)
        await chat.aclose()
        writer.flush()
        return tmp_path / "t", out.getvalue(), task.cancelled()

    with ScriptedLLM(Stream("Noted, ten of clubs.")) as server:
        folder, shown, cancelled = asyncio.run(scenario(server))
    assert cancelled
    assert not list(folder.rglob("*.md")) or not read(next(folder.rglob("*.md"))).turns
    assert "Noted" not in shown


def cue_at(recording: np.ndarray) -> list[float]:
    """Seconds into ``recording`` where the thinking cue sounds (normalised correlation with
    the tone as generated, above 0.9: speech never comes close)."""
    from voice_agent import cues

    cue = cues.thinking(SPEECH_RATE_HZ).samples.astype(np.float64)
    x = recording.astype(np.float64)
    size = 1 << (len(x) + len(cue)).bit_length()
    corr = np.fft.irfft(np.fft.rfft(x, size) * np.conj(np.fft.rfft(cue, size)), size)
    corr = corr[: len(x) - len(cue) + 1]
    energy = np.concatenate([[0.0], np.cumsum(x**2)])
    local = np.sqrt(np.maximum(energy[len(cue) :] - energy[: -len(cue)], 1e-9))
    likeness = corr / (local * np.linalg.norm(cue) + 1e-9)
    found: list[float] = []
    for i in np.flatnonzero(likeness > 0.9):
        if not found or i / SPEECH_RATE_HZ - found[-1] > 0.5:
            found.append(i / SPEECH_RATE_HZ)
    return found


def first_loud(recording: np.ndarray, after: float = 0.0) -> float:
    """Seconds into ``recording`` of the first 10 ms louder than the cue can be (the reply)."""
    frames = recording[: len(recording) // 160 * 160].reshape(-1, 160).astype(np.float64)
    loud = np.flatnonzero(np.sqrt((frames**2).mean(axis=1)) > 2000)
    return float(loud[loud >= after * 100][0] / 100)


@pytest.mark.slow
def test_a_model_thinking_for_3_s_gets_a_soft_cue_and_a_quick_one_none(tmp_path: Path) -> None:
    """A reasoning model thinks for 3 s before its answer: about a second after the turn is
    taken the room hears the thinking tone, before the reply (nothing of the reasoning is
    spoken: the reply is the answer, and the transcript holds only it). A model that answers
    at once gets no tone."""
    tts = PiperTts(TtsConfig())
    frames = frames_of(0.5, speech(), 7.0)
    slow = Stream("It is a card.", reasoning="The user names a card. " * 8, reasoning_s=3.0)
    heard: list[np.ndarray] = []
    with ScriptedLLM(slow) as server:
        _, md = live_turn(tmp_path / "slow", frames, ScriptedStt("Ten of clubs."), server, 8,
                            tts, recording=heard)  # fmt: skip
    [recording] = heard
    cues_heard = cue_at(recording)
    assert len(cues_heard) == 1, cues_heard
    reply_starts = first_loud(recording, after=cues_heard[0] + 0.3)
    assert 0.5 < reply_starts - cues_heard[0] < 3.0  # the tone came first, well before it
    assert [t.text for t in read(md).turns] == ["Ten of clubs.", "It is a card."]
    [record] = records(md)
    assert record["reasoning"].startswith("The user names a card.")  # type: ignore[union-attr]
    quick: list[np.ndarray] = []
    with ScriptedLLM(Stream("It is a card.")) as server:
        live_turn(tmp_path / "quick", frames, ScriptedStt("Ten of clubs."), server, 8, tts,
                  recording=quick)  # fmt: skip
    assert cue_at(quick[0]) == []
    assert first_loud(quick[0]) > 0  # the reply itself did sound
