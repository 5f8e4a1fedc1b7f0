#!/usr/bin/env python3
"""Thinking pauses mid-sentence, through the room: does every clip come out as one whole turn?

A benchmark, not a test: it prints a table and writes JSON. The agent runs as a process in
a PulseAudio room (a headset, or with --speakers laptop speakers; the defaults otherwise)
against a scripted loopback LLM. Each entry of
the pause set (tests/data/pauses.tsv: public clips with 0.5-1.0 s of silence inserted at a
word boundary near the middle, and the sonnet reader's own pauses) is played as the user,
and so is the same speech without the inserted pause. An entry is whole when it became
exactly one user turn whose word error rate is within 3 points of its unpaused twin's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from bench_latency import machine_name, pct, peak_rss, read_records, stage_values  # noqa: E402
from conftest import wer  # noqa: E402
from llm_server import ScriptedLLM, Stream  # noqa: E402
from pause_set import Paused, paused_clips  # noqa: E402
from room import AgentProcess, Headset, ensure_pulseaudio, play_samples  # noqa: E402

from voice_agent.transcript import read  # noqa: E402

REPLY = "All right. I have noted that down for you."
SETTLE_S = 2.5  # quiet after a turn's reply before the next entry is played


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--limit", type=int, default=0, help="only the first N entries (0 = all)")
    p.add_argument("--config", type=Path, help="a config file for the agent")
    p.add_argument(
        "--speakers",
        action="store_true",
        help="the agent hears its own voice as loud as the user's (laptop speakers)",
    )
    p.add_argument("--json", type=Path, default=Path("bench-results/pauses.json"))
    args = p.parse_args()
    ensure_pulseaudio()
    entries = paused_clips()[: args.limit or None]
    results: dict[str, Any] = {"machine": machine_name(), "reply": REPLY}
    for variant in ("unpaused", "paused"):
        print(f"playing {len(entries)} entries, {variant}...", file=sys.stderr)
        results[variant] = run(entries, variant, args.config, args.speakers)
    report(entries, results)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    print(f"\nwritten to {args.json}")
    return 0


def run(entries: list[Paused], variant: str, config: Path | None, speakers: bool) -> dict[str, Any]:
    headset = Headset("pauses", speakers=speakers)
    with tempfile.TemporaryDirectory() as tmp, ScriptedLLM(Stream(REPLY, 0.1, 0.02)) as server:
        folder = Path(tmp)
        extra = ["--config", str(config)] if config else []
        agent = AgentProcess([*extra, "--llm-url", server.url, "--transcripts-dir",
                              str(folder / "t"), "chat"], headset.ear, headset.agent)  # fmt: skip
        turns: list[list[str]] = []
        try:
            agent.wait_for("Listening", timeout=120)
            time.sleep(2.0)
            for e in entries:
                audio = e.audio if variant == "paused" else e.unpaused
                before = len(user_turns(folder))
                play_samples(headset.user, audio, folder)
                wait_until_settled(folder, before, len(read_records(folder)))
                turns.append(user_turns(folder)[before:])
            rss = peak_rss(agent.proc.pid)
            assert agent.interrupt() == 0, agent.errors
        finally:
            agent.kill()
            headset.close()
        records = read_records(folder)
    return {"turns": turns, "stt_s": stage_values(records, "stt"), "peak_rss_mb": round(rss, 1)}


def user_turns(folder: Path) -> list[str]:
    files = sorted((folder / "t").rglob("*.md"))
    return [t.text for f in files for t in read(f).turns if t.role == "USER"]


def wait_until_settled(folder: Path, before: int, records: int, timeout: float = 60) -> None:
    """Until a new turn's reply has finished (its sidecar record is written when it has) and
    nothing has changed for SETTLE_S."""
    deadline = time.monotonic() + timeout
    last, changed = -1, time.monotonic()
    while time.monotonic() < deadline:
        n = len(read_records(folder))
        if n != last:
            last, changed = n, time.monotonic()
        answered = len(user_turns(folder)) > before and n > records
        if answered and time.monotonic() - changed > SETTLE_S:
            return
        time.sleep(0.1)
    print(f"  (no settled turn within {timeout} s)", file=sys.stderr)


def report(entries: list[Paused], results: dict[str, Any]) -> None:
    print(f"\nthinking pauses through the room on {results['machine']}")
    print(f"reply: {REPLY!r}; {len(entries)} entries")
    whole, detail = 0, []
    refs = [e.transcript for e in entries]
    hyp = {v: [" ".join(t) for t in results[v]["turns"]] for v in ("unpaused", "paused")}
    for i, e in enumerate(entries):
        paused_turns = results["paused"]["turns"][i]
        ours = wer([e.transcript], [hyp["paused"][i]])
        twin = wer([e.transcript], [hyp["unpaused"][i]])
        ok = len(paused_turns) == 1 and ours <= twin + 0.03
        whole += ok
        if not ok:
            detail.append(f"  {e.name}: {len(paused_turns)} turn(s), WER {ours:.0%} "
                          f"(unpaused {twin:.0%}): {paused_turns!r}")  # fmt: skip
    print(f"{'':40}{'unpaused':>10}{'paused':>10}")
    print(f"{'corpus WER':40}{wer(refs, hyp['unpaused']):>10.2%}{wer(refs, hyp['paused']):>10.2%}")
    split = {v: sum(len(t) != 1 for t in results[v]["turns"]) for v in ("unpaused", "paused")}
    print(f"{'entries not exactly one turn':40}{split['unpaused']:>10}{split['paused']:>10}")
    for v in ("unpaused", "paused"):
        stt = results[v]["stt_s"]
        results[v]["stt_p99_s"] = round(pct(stt, 99), 3)
    print(f"{'STT median / max (s)':40}"
          + "".join(f"{statistics.median(results[v]['stt_s']):>5.2f}/{max(results[v]['stt_s']):.2f}"
                    for v in ("unpaused", "paused")))  # fmt: skip
    print(f"{'peak resident memory (MB)':40}{results['unpaused']['peak_rss_mb']:>10.0f}"
          f"{results['paused']['peak_rss_mb']:>10.0f}")  # fmt: skip
    print(f"\nwhole turns (one turn, WER within 3 points of the unpaused twin): {whole}/"
          f"{len(entries)} = {whole / len(entries):.0%}")  # fmt: skip
    print("\n".join(detail))
    results["whole"] = whole


if __name__ == "__main__":
    raise SystemExit(main())
