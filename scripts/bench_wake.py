#!/usr/bin/env python3
"""The wake word in a virtual room: CPU while asleep, false wakes, wake -> listening latency.

A benchmark, not a test: it prints figures and writes JSON. The real agent runs as a process
in a PulseAudio room (the user's voice on the left channel, the agent's on the right, one
recording on one clock) with ``--wake-word okay_nabu``:

1. asleep in silence: the agent's CPU (microphone, echo canceller, voice detector and wake
   word model: everything that runs while it waits), in % of one core;
2. asleep while people talk: the public clips (without the wake word) played back to back;
   its CPU, and how many times it woke (a false wake);
3. ``--tries`` times "Okay Nabu." spoken by Piper (its generator noise on: a different
   rendition each time), then silence: from the end of the wake word in the room recording
   to the first sound of the listening tone, and how many were missed. The agent goes back
   to sleep 1 s after each (``wake.timeout_s``).

Needs PulseAudio (scripts/setup.sh test installs it).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_latency import FRAME, cpu_seconds, cpu_share, peak_rss, rms, save_and_report  # noqa: E402
from conftest import clips  # noqa: E402
from llm_server import ScriptedLLM, Stream  # noqa: E402
from room import (  # noqa: E402
    AgentProcess,
    Headset,
    Recorder,
    as_wav,
    ensure_pulseaudio,
    play,
    play_samples,
)

from voice_agent.audio import SPEECH_RATE_HZ, concat, silence  # noqa: E402
from voice_agent.config import TtsConfig  # noqa: E402
from voice_agent.tts import PiperTts  # noqa: E402

LOUD_RMS = 150.0  # about -47 dBFS: the tone (-26 dBFS) has started; the room is digital silence
ASLEEP = r"asleep until you say"
WOKE = r"heard .Okay Nabu.: listening"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tries", type=int, default=10, help="wake words to time")
    p.add_argument("--idle", type=float, default=30.0, help="seconds of silence to time, asleep")
    p.add_argument("--speakers", action="store_true",
                   help="the agent hears itself (and its tones) as loud as the user")  # fmt: skip
    p.add_argument("--json", type=Path, default=Path("bench-results/wake.json"))
    args = p.parse_args()
    ensure_pulseaudio()
    save_and_report(run(args), args.json, report)
    return 0


def run(args: argparse.Namespace) -> dict[str, Any]:
    headset = Headset("wake", speakers=args.speakers)
    piper = PiperTts(TtsConfig())
    talk = [c for c in clips() if c.seconds < 20]
    with tempfile.TemporaryDirectory() as tmp, ScriptedLLM(Stream("Yes?")) as server:
        folder = Path(tmp)
        config = folder / "config.toml"
        config.write_text("[wake]\ntimeout_s = 1.0\n")
        agent = AgentProcess(["--config", str(config), "--llm-url", server.url,
                              "--transcripts-dir", str(folder / "t"), "--wake-word", "okay_nabu",
                              "chat"], headset.ear, headset.agent, cues=True)  # fmt: skip
        try:
            agent.wait_for(ASLEEP, timeout=120)
            time.sleep(3.0)  # start-up's last threads wind down first
            asleep_cpu = cpu_share(agent.proc.pid, args.idle)

            started, t0 = cpu_seconds(agent.proc.pid), time.monotonic()
            for c in talk:
                play(headset.user, as_wav(c.path, folder))
            talk_s = time.monotonic() - t0
            talk_cpu = 100 * (cpu_seconds(agent.proc.pid) - started) / talk_s
            false_wakes = agent.count(WOKE)
            time.sleep(2.0)  # a false wake's timeout
            requests_while_asleep = len(server.requests)

            rec = Recorder(f"{headset.room}.monitor", channels=2)
            time.sleep(0.5)
            starts, missed = [], 0
            for _ in range(args.tries):
                wake = concat([piper.synthesize("Okay Nabu.").resampled(SPEECH_RATE_HZ),
                               silence(1.5)], SPEECH_RATE_HZ)  # fmt: skip
                starts.append(len(rec.so_far()))
                woke_before, slept_before = agent.count(WOKE), agent.count(ASLEEP)
                play_samples(headset.user, wake, folder)
                deadline = time.monotonic() + 5
                while agent.count(WOKE) == woke_before and time.monotonic() < deadline:
                    time.sleep(0.05)
                if agent.count(WOKE) == woke_before:
                    missed += 1
                    continue
                while agent.count(ASLEEP) == slept_before:
                    time.sleep(0.05)  # back to sleep (1 s), for the next try
                time.sleep(0.5)
            recording = rec.stop()
            rss = peak_rss(agent.proc.pid)
            assert agent.interrupt() == 0, agent.errors
        finally:
            agent.kill()
            headset.close()
    latencies = _latencies(recording, starts)
    return {
        "asleep_cpu_percent": round(asleep_cpu, 2),
        "asleep_idle_s": args.idle,
        "talk_cpu_percent": round(talk_cpu, 2),
        "talk_s": round(talk_s, 1),
        "talk_clips": len(talk),
        "false_wakes": false_wakes,
        "requests_while_asleep": requests_while_asleep,
        "tries": args.tries,
        "missed": missed,
        "wake_to_tone_s": [round(x, 3) for x in latencies],
        "peak_rss_mb": round(rss, 1),
        "speakers": args.speakers,
    }


def _latencies(recording: np.ndarray, starts: list[int]) -> list[float]:
    """Per try: the end of the last loud 10 ms of the wake word (left) to the first loud 10 ms
    of the agent's side (right) after it."""
    out = []
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else len(recording)
        user, agent = rms(recording[start:end, 0]), rms(recording[start:end, 1])
        loud = np.flatnonzero(user > LOUD_RMS)
        if not len(loud):
            continue
        said = loud[-1] + 1
        tone = np.flatnonzero(agent[said:] > LOUD_RMS)
        if len(tone):
            out.append(tone[0] * FRAME / SPEECH_RATE_HZ)
    return out


def report(r: dict[str, Any]) -> None:
    lat = sorted(r["wake_to_tone_s"])
    print(f"machine: {r['machine']}")
    print(f"asleep, silence ({r['asleep_idle_s']:g} s): {r['asleep_cpu_percent']} % of one core")
    print(f"asleep, people talking ({r['talk_clips']} public clips, {r['talk_s']} s): "
          f"{r['talk_cpu_percent']} % of one core; false wakes {r['false_wakes']}; "
          f"requests sent while asleep {r['requests_while_asleep']}")  # fmt: skip
    if lat:
        p90 = lat[min(len(lat) - 1, round(0.9 * (len(lat) - 1)))]
        print(f"wake word end -> listening tone: median {statistics.median(lat):.3f} s, "
              f"p90 {p90:.3f} s, worst {lat[-1]:.3f} s over {len(lat)} "
              f"(missed {r['missed']} of {r['tries']})")  # fmt: skip
    print(f"peak memory {r['peak_rss_mb']} MB")


if __name__ == "__main__":
    sys.exit(main())
