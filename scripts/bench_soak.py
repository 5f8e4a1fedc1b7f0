#!/usr/bin/env python3
"""Hours of live use in minutes: the agent's resident memory over many spoken turns and over
long listening, in a virtual room.

A benchmark, not a test: it prints figures and writes JSON. The real agent runs as a process
in a PulseAudio headset room against a scripted loopback LLM (a two-sentence reply of ~5 s).
Phase 1, turns: the short public clips (under 6 s) are said one after the other, each as
soon as the previous reply has played, ``--turns`` times; resident memory (VmRSS) is read
after every turn. Phase 2, listening: the agent hears silence for ``--listen`` seconds;
memory is read every 5 s. Reported: the slope after warm-up (the first fifth of the turns)
by least squares, per 100 turns and per hour, and the growth over the phase. The text path
has its own test (tests/test_soak.py, 1,000 typed turns).

Needs PulseAudio (scripts/setup.sh test installs it).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_latency import memory_mb, read_records, save_and_report  # noqa: E402
from conftest import clips  # noqa: E402
from llm_server import ScriptedLLM, Stream  # noqa: E402
from room import AgentProcess, Headset, as_wav, ensure_pulseaudio, play  # noqa: E402

REPLY = "That sounds right to me. Shall I tell you more about it tomorrow?"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--turns", type=int, default=200, help="spoken turns")
    p.add_argument("--listen", type=float, default=600.0, help="seconds of listening to silence")
    p.add_argument("--json", type=Path, default=Path("bench-results/soak.json"))
    args = p.parse_args()
    ensure_pulseaudio()
    save_and_report(run(args), args.json, report)
    return 0


def run(args: argparse.Namespace) -> dict[str, Any]:
    short = [c for c in clips() if c.seconds < 6]
    headset = Headset("soak")
    with tempfile.TemporaryDirectory() as tmp, ScriptedLLM(Stream(REPLY)) as server:
        folder = Path(tmp)
        wavs = [as_wav(c.path, folder) for c in short]
        agent = AgentProcess(["--llm-url", server.url, "--transcripts-dir", str(folder / "t"),
                              "chat"], headset.ear, headset.agent)  # fmt: skip
        turns: list[tuple[int, float]] = []
        listening: list[tuple[float, float]] = []
        started = time.monotonic()
        try:
            agent.wait_for("Listening", timeout=120)
            for n in range(args.turns):
                before = len(read_records(folder))
                play(headset.user, wavs[n % len(wavs)])
                deadline = time.monotonic() + 60
                while len(read_records(folder)) <= before and time.monotonic() < deadline:
                    time.sleep(0.05)
                time.sleep(4.5)  # the reply plays
                turns.append((len(read_records(folder)), memory_mb(agent.proc.pid)))
                if n % 20 == 19:
                    print(f"turn {n + 1}: {turns[-1][1]:.1f} MB", file=sys.stderr)
            turns_s = time.monotonic() - started
            t0 = time.monotonic()
            while time.monotonic() - t0 < args.listen:
                listening.append((time.monotonic() - t0, memory_mb(agent.proc.pid)))
                time.sleep(5.0)
            records = len(read_records(folder))
            assert agent.interrupt() == 0, agent.errors
        finally:
            agent.kill()
            headset.close()
    warm = turns[len(turns) // 5 :]
    per_turn = float(np.polyfit([n for n, _ in warm], [mb for _, mb in warm], 1)[0])
    per_s = float(np.polyfit([t for t, _ in listening], [mb for _, mb in listening], 1)[0])
    return {
        "turns": args.turns,
        "turn_records": records,
        "turns_minutes": round(turns_s / 60, 1),
        "rss_mb_after_turns": [round(mb, 1) for _, mb in turns],
        "slope_mb_per_100_turns": round(100 * per_turn, 2),
        "growth_mb_after_warmup": round(warm[-1][1] - warm[0][1], 1),
        "listen_s": args.listen,
        "rss_mb_listening": [round(mb, 1) for _, mb in listening],
        "slope_mb_per_hour_listening": round(3600 * per_s, 2),
    }


def report(r: dict[str, Any]) -> None:
    rss = r["rss_mb_after_turns"]
    print(f"machine: {r['machine']}")
    print(f"{r['turns']} spoken turns in {r['turns_minutes']} min ({r['turn_records']} turns "
          f"recorded): resident {rss[0]} MB after the first, {max(rss)} MB at most, {rss[-1]} MB "
          f"after the last; after warm-up {r['slope_mb_per_100_turns']:+} MB per 100 turns "
          f"({r['growth_mb_after_warmup']:+} MB in all)")  # fmt: skip
    listening = r["rss_mb_listening"]
    print(f"listening {r['listen_s']:g} s: {listening[0]} -> {listening[-1]} MB, "
          f"{r['slope_mb_per_hour_listening']:+} MB per hour")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
