#!/usr/bin/env python3
"""Echo cancellation in a virtual room where the agent hears its own speakers as loud as the
user (PulseAudio: the user's voice and the agent's mixed at equal level into its microphone;
one stereo recording keeps them apart).

A benchmark, not a test: it prints figures and writes JSON.
1. Echo left on the microphone path: the agent's Speaker and Microphone classes play
   ``--replies`` replies of 5-20 s (Piper, joe voice) into the room, every microphone frame
   goes through the canceller; echo energy before vs after (ERLE, dB), frames webrtcvad calls
   voiced, speech starts (100 ms voiced) and pauses on level alone (live.ONSET_DBFS) with
   and without the canceller, and its CPU.
2. Interruption: the real agent (defaults: echo cancellation and barge-in auto) answers with a
   long reply; ``--tries`` times a user clip is played 1 s into the reply's sound. From the
   recording: playback stop after the clip's first voiced sample; from the LLM's requests:
   WER of the interrupting words against the clip's reference.
Latency with the canceller on vs off: scripts/bench_latency.py --speakers
[--echo-cancellation off].
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from bench_latency import machine_name, pct  # noqa: E402
from conftest import clip, wer  # noqa: E402
from llm_server import ScriptedLLM, Stream  # noqa: E402
from room import (  # noqa: E402
    AgentProcess,
    Headset,
    Recorder,
    as_wav,
    ensure_pulseaudio,
    play,
    wait_until,
)
from test_echo import agent_speaks, playback_stop, reply_of  # noqa: E402
from test_live import _locate, sidecar  # noqa: E402
from test_vad import first_voiced_sample  # noqa: E402

from voice_agent.audio import SPEECH_RATE_HZ, read_file  # noqa: E402

# Interrupting clips: one breath each (a clip with a long pause would be two turns).
USERS = ["1272-128104-0000.wav", "arctic_a0024.wav", "1995-1837-0001.wav",
         "1089-134686-0001.flac", "sense_and_sensibility_01_austen_64kb-0870.wav",
         "1089-134691-0000.flac", "sense_and_sensibility_01_austen_64kb-0920.wav",
         "sense_and_sensibility_01_austen_64kb-0880.wav", "2830-3980-0043.wav",
         "LJ001-0001.flac"]  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--replies", type=int, default=10, help="replies played for the echo figures")
    p.add_argument("--tries", type=int, default=10, help="interruptions")
    p.add_argument("--json", type=Path, default=Path("bench-results/echo.json"))
    args = p.parse_args()
    ensure_pulseaudio()
    Path("bench-results").mkdir(exist_ok=True)
    results = {"machine": machine_name(), "echo": echo_left(args.replies)}
    results["interruption"] = interruptions(args.tries)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1))
    report(results)
    return 0


def echo_left(replies: int) -> dict[str, Any]:
    room = Headset("echobench", speakers=True)
    os.environ["PULSE_SINK"], os.environ["PULSE_SOURCE"] = room.agent, room.ear
    try:
        return asyncio.run(_play_replies(replies))
    finally:
        room.close()


async def _play_replies(replies: int) -> dict[str, Any]:
    from voice_agent.config import TtsConfig
    from voice_agent.echo import EchoCanceller
    from voice_agent.live import ONSET_DBFS, ONSET_FRAMES
    from voice_agent.mic import Microphone
    from voice_agent.speaker import Speaker
    from voice_agent.tts import PiperTts
    from voice_agent.vad import VoiceDetector

    tts = PiperTts(TtsConfig())
    speaker, mic = Speaker(""), Microphone("", 20)
    mic.start()
    canceller = EchoCanceller(round((speaker.latency_s + mic.latency_s) * 1000))
    speaker.far_end = canceller.played
    raw: list[np.ndarray] = []
    clean: list[np.ndarray] = []
    cpu = [0.0]

    async def capture() -> None:
        async for frame in mic.frames():
            started = time.process_time()
            clean.append(canceller.clean(frame.samples))
            cpu[0] += time.process_time() - started
            raw.append(frame.samples)

    task = asyncio.create_task(capture())
    await asyncio.sleep(1.0)
    played = 0.0
    for i in range(replies):
        audio = tts.synthesize(reply_of(5 + 15 * i / max(1, replies - 1)))
        played += audio.seconds
        speaker.enqueue(audio, i)
        await speaker.drained()
        await asyncio.sleep(1.0)
    task.cancel()
    speaker.close()
    r, c = np.concatenate(raw).astype(np.float64), np.concatenate(clean).astype(np.float64)
    frames = len(r) // 320
    loud = [i for i in range(frames) if np.sqrt(np.mean(r[i * 320 : (i + 1) * 320] ** 2)) > 300]
    during = np.concatenate([np.arange(i * 320, (i + 1) * 320) for i in loud])
    erle = [_db(r[i * 320 : (i + 1) * 320]) - _db(c[i * 320 : (i + 1) * 320]) for i in loud]
    detector = VoiceDetector(2, -55.0)

    def starts(x: np.ndarray) -> int:
        run, count = 0, 0
        for i in range(frames):
            run = run + 1 if detector.is_speech(x[i * 320 : (i + 1) * 320].astype(np.int16)) else 0
            count += run == 5
        return count

    level = 32768.0 * 10 ** (ONSET_DBFS / 20)

    def level_onsets(x: np.ndarray) -> int:
        """Pauses the reply would take on level alone (live.ONSET_DBFS)."""
        run, count = 0, 0
        for i in range(frames):
            run = run + 1 if np.sqrt(np.mean(x[i * 320 : (i + 1) * 320] ** 2)) >= level else 0
            count += run == ONSET_FRAMES
        return count

    def voiced(x: np.ndarray) -> int:
        return sum(detector.is_speech(x[i * 320 : (i + 1) * 320].astype(np.int16)) for i in loud)

    return {
        "replies": replies,
        "reply_seconds": round(played, 1),
        "echo_frames": len(loud),
        "erle_db": round(_db(r[during]) - _db(c[during]), 1),
        "erle_db_p10_of_frames": round(float(np.percentile(erle, 10)), 1),
        "echo_level_dbfs_off": round(_db(r[during]) - 90.3, 1),
        "echo_level_dbfs_on": round(_db(c[during]) - 90.3, 1),
        "voiced_frames_off": voiced(r),
        "voiced_frames_on": voiced(c),
        "speech_starts_off": starts(r),
        "speech_starts_on": starts(c),
        "level_onsets_off": level_onsets(r),
        "level_onsets_on": level_onsets(c),
        "cpu_ms_per_s": round(1000 * cpu[0] / (len(r) / SPEECH_RATE_HZ), 1),
    }  # fmt: skip


def _db(x: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(x**2) + 1e-9))


def interruptions(tries: int) -> dict[str, Any]:
    """Every reply is long; 1 s into each one's sound the next clip interrupts it, so each
    try's words are the requests made after its clip started."""
    room = Headset("bargebench", speakers=True)
    names = [USERS[i % len(USERS)] for i in range(tries)]
    try:
        with tempfile.TemporaryDirectory() as tmp, ScriptedLLM(Stream(reply_of(30))) as server:
            folder = Path(tmp)
            agent = AgentProcess(["--debug", "--llm-url", server.url, "--transcripts-dir",
                                  str(folder / "t"), "chat"], room.ear, room.agent)  # fmt: skip
            heard_words = []
            try:
                agent.wait_for("Listening", timeout=120)
                rec = Recorder(f"{room.room}.monitor", channels=2)
                time.sleep(1.0)
                play(room.user, as_wav(clip("cards_002.wav").path, folder))
                wait_until(lambda: len(server.requests) > 0, 30, "the first reply")
                for n, name in enumerate(names):
                    print(f"interruption {n + 1}/{tries}: {name}", file=sys.stderr)
                    heard = rec.so_far().shape[0]
                    wait_until(lambda h=heard: agent_speaks(rec, h), 10, "the reply's sound")
                    time.sleep(1.0)
                    asked = len(server.requests)
                    play(room.user, as_wav(clip(name).path, folder))
                    wait_until(lambda a=asked: len(server.requests) > a, 30, "the new turn")
                    time.sleep(2.0)  # a clip split in two turns asks twice
                    heard_words.append(
                        " ".join(
                            server.user_messages(i)[-1] for i in range(asked, len(server.requests))
                        )
                    )
                time.sleep(1.0)
                recording = rec.stop()
                assert agent.interrupt() == 0, agent.errors
            finally:
                agent.kill()
                Path("bench-results/echo-agent.log").write_text("\n".join(agent.errors))
            records = sidecar(folder)
    finally:
        room.close()
    np.save(Path("bench-results/echo-recording.npy"), recording)  # for a second look
    stops, cursor = [], 0
    for name in names:
        voice = read_file(clip(name).path).samples
        # clips repeat: find each after the one before, and before the next try's (a later
        # copy of the same clip can correlate a hair better)
        window = recording[cursor : cursor + voice.size + 20 * SPEECH_RATE_HZ, 0]
        start = cursor + _locate(window, voice)
        onset = start + first_voiced_sample(voice)
        cursor = start + voice.size
        try:
            stops.append(round(playback_stop(recording[:, 1], onset), 3))
        except AssertionError:
            print(f"{name}: the reply was not playing when it started", file=sys.stderr)
    references = [clip(name).transcript for name in names]
    doubted = [line for line in agent.errors if "doubted" in line]
    level_only = [line for line in agent.errors if "was not speech: reply resumed" in line]
    return {
        "tries": tries,
        "interrupted": sum(bool(r["interrupted"]) for r in records),
        "turns": len(records),
        "doubted_starts": len(doubted),
        "level_pauses_resumed": len(level_only),
        "stop_after_onset_s": stops,  # tries where the reply was playing
        "wer": round(wer(references, heard_words), 4),
        "per_clip_wer": [round(wer([r], [h]), 3)
                         for r, h in zip(references, heard_words, strict=True)],
        "heard": heard_words,
    }  # fmt: skip


def report(results: dict[str, Any]) -> None:
    e, i = results["echo"], results["interruption"]
    stops = i["stop_after_onset_s"]
    print(f"machine: {results['machine']}")
    print(f"echo: {e['replies']} replies, {e['reply_seconds']} s of the agent's voice at the "
          f"user's level, {e['echo_frames']} loud 20 ms frames")  # fmt: skip
    print(f"  echo level {e['echo_level_dbfs_off']} dBFS -> {e['echo_level_dbfs_on']} dBFS: "
          f"ERLE {e['erle_db']} dB (10 % of frames below "
          f"{e['erle_db_p10_of_frames']} dB)")  # fmt: skip
    print(f"  voiced frames {e['voiced_frames_off']} -> {e['voiced_frames_on']}; speech starts "
          f"{e['speech_starts_off']} -> {e['speech_starts_on']}; pauses on level "
          f"{e['level_onsets_off']} -> {e['level_onsets_on']}; "
          f"canceller CPU {e['cpu_ms_per_s']} ms per s of audio")  # fmt: skip
    print(f"interruption: {i['interrupted']} of {i['turns']} replies stopped for {i['tries']} "
          f"tries ({i['doubted_starts']} starts doubted as echo, "
          f"{i['level_pauses_resumed']} pauses on level resumed); stop after the "
          f"user's first voiced sample median {statistics.median(stops) * 1000:.0f} ms, p90 "
          f"{pct(stops, 90) * 1000:.0f} ms, worst {max(stops) * 1000:.0f} ms; interrupting "
          f"words WER {i['wer']:.1%}")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
