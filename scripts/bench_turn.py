#!/usr/bin/env python3
"""Per-stage time of spoken turns: every public speech clip through `voice-agent chat --input`.

A benchmark, not a test: it prints a table (and writes JSON with --json FILE). The LLM is a
scripted loopback server answering a fixed two-sentence reply, so the figures are the agent's
own cost: decode + STT, request to last token, and Piper synthesis.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from conftest import clips  # noqa: E402
from llm_server import ScriptedLLM, Stream  # noqa: E402

REPLY = "Sure, I can help with that. Here is a short answer in two sentences."


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, ScriptedLLM(Stream(REPLY)) as server:
        inputs = [a for c in clips() for a in ("--input", str(c.path))]
        started = time.perf_counter()
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "voice_agent",
                "chat",
                *inputs,
                "--output-dir",
                f"{tmp}/out",
                "--llm-url",
                server.url,
                "--transcripts-dir",
                f"{tmp}/t",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            return 1
        [sidecar] = Path(tmp, "t").rglob("*.jsonl")
        records = [json.loads(line) for line in sidecar.read_text().splitlines()]

    rows = {}
    for stage in ("stt", "llm", "tts"):
        secs = [
            r["stages"][stage] if stage in r["stages"] else r[f"{stage}_seconds"]
            for r in records
            if stage in r["stages"] or f"{stage}_seconds" in r
        ]
        rows[stage] = {"median_s": statistics.median(secs), "max_s": max(secs), "n": len(secs)}
    audio = sum(r["audio_seconds"] for r in records)
    stt_total = sum(r["stages"]["stt"] for r in records)
    result = {
        "machine": f"{_cpu()}, {_cores()} cores, Python {platform.python_version()}",
        "turns": len(records),
        "stages": rows,
        "stt_real_time_factor": round(stt_total / audio, 3),
        "session_wall_s": round(wall, 2),
    }
    print(f"{len(records)} spoken turns ({audio:.0f} s of speech) on {result['machine']}")
    print(f"{'stage':<6}{'median s':>10}{'max s':>9}")
    for stage, r in rows.items():
        print(f"{stage:<6}{r['median_s']:>10.3f}{r['max_s']:>9.3f}")
    print(
        f"STT real-time factor {result['stt_real_time_factor']}; "
        f"whole session incl. model loading {wall:.1f} s"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


def _cores() -> int:
    return len(os.sched_getaffinity(0))


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


if __name__ == "__main__":
    raise SystemExit(main())
