#!/usr/bin/env python3
"""End of speech -> first reply sound, measured in a virtual room, streaming vs sequential
(or, with --wyoming, in-process speech vs speech on the Wyoming servers).

A benchmark, not a test: it prints a table and writes JSON. The real agent runs as a process
in a PulseAudio room (the user's voice on the left channel, the agent's on the right, one
recording on one clock) against a scripted loopback LLM that answers its first token after
``--first-token`` seconds and then ``--rate`` words per second. Clips from the public speech
set are played as the user; latency is read from the room recording itself: from the end of
the clip's last word (Whisper's word alignment) to the first sample of the reply. The old
marker, the last frame webrtcvad calls voiced (0.08-0.46 s after the last word), is printed
beside it for comparison. The same run is repeated in the
sequential order (whole reply, then whole synthesis, then playback; no early transcription)
for comparison. Needs PulseAudio (scripts/setup.sh test installs it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from conftest import clips  # noqa: E402
from llm_server import ScriptedLLM, Stream  # noqa: E402
from room import AgentProcess, Headset, Recorder, as_wav, ensure_pulseaudio, play  # noqa: E402
from speech_marks import energy_end, last_voiced_end, last_word_end  # noqa: E402
from wyoming_servers import speech_servers  # noqa: E402

from voice_agent.audio import SPEECH_RATE_HZ, read_file, silence  # noqa: E402
from voice_agent.config import SttConfig, TtsConfig, VadConfig  # noqa: E402
from voice_agent.wyoming_speech import WyomingStt, WyomingTts  # noqa: E402

# The first sentence sets how soon sound can start: 13 words and no early comma, the shape
# of a real model's opening (a short opening clause would flatter the figures).
REPLY = (
    "Most people notice a real difference after about a week of daily practice. A few "
    "minutes each morning is enough to start, and it gets easier every day. If you want, I "
    "can suggest a simple routine for tomorrow."
)
MARKERS = {
    "last word (Whisper alignment)": last_word_end,
    "last word (energy, -34 dBFS)": energy_end,
    "old: last webrtcvad voiced frame": last_voiced_end,
}
PRIMARY = next(iter(MARKERS))
FRAME = SPEECH_RATE_HZ // 100  # 10 ms windows for level analysis
LOUD_RMS = 300.0  # about -40 dBFS: the reply has started / is sounding


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=10, help="how many speech clips to play")
    p.add_argument("--first-token", type=float, default=0.1, help="LLM first-token delay, s")
    p.add_argument("--rate", type=float, default=50.0, help="LLM words per second")
    p.add_argument("--idle", type=float, default=10.0, help="seconds of idle listening to time")
    p.add_argument("--json", type=Path, default=Path("bench-results/latency.json"))
    p.add_argument("--streaming-only", action="store_true", help="skip the sequential run")
    p.add_argument("--wyoming", action="store_true",
                   help="instead of the sequential run, the same with speech to text and text to "
                        "speech on the real Wyoming servers on loopback")  # fmt: skip
    p.add_argument(
        "--speakers",
        action="store_true",
        help="the agent hears its own voice as loud as the user's (laptop speakers)",
    )
    p.add_argument("--echo-cancellation", choices=("auto", "on", "off"), default="auto")
    p.add_argument(
        "--toml", default="", help='extra settings for the agent, e.g. "[vad]\\nearly_stt_ms = 100"'
    )
    p.add_argument("--debug-log", type=Path,
                   help="run the agent with --debug; write its log and sidecar records here "
                        "(a folder), to see why a turn was slow")  # fmt: skip
    p.add_argument("--embedded", action="store_true",
                   help="answer with the embedded llama.cpp model instead of the scripted server "
                        "(its memory is not counted: it is a separate process)")  # fmt: skip
    args = p.parse_args()
    ensure_pulseaudio()
    chosen = [c for c in clips() if c.seconds < 12][: args.clips]
    results = {}
    other = "wyoming" if args.wyoming else "sequential"
    for mode in ("streaming",) if args.streaming_only else ("streaming", other):
        print(f"running {mode} ({len(chosen)} clips)...", file=sys.stderr)
        results[mode] = run(mode, chosen, args)
    report(results, args)
    return 0


def run(mode: str, chosen: list[Any], args: argparse.Namespace) -> dict[str, Any]:
    if mode != "wyoming":
        return run_agent(mode, chosen, args, [])
    with tempfile.TemporaryDirectory() as data, speech_servers(Path(data)) as (stt, tts):
        # servers on a LAN run for weeks: their first request loads the model (~4 s), so it
        # is made here, not counted in the agent's launch
        WyomingStt(SttConfig(server=stt)).transcribe(silence(1.0))
        WyomingTts(TtsConfig(server=tts)).synthesize("Hello.")
        return run_agent(mode, chosen, args, ["--stt-server", stt, "--tts-server", tts])


def run_agent(
    mode: str, chosen: list[Any], args: argparse.Namespace, extra: list[str]
) -> dict[str, Any]:
    headset = Headset("bench", speakers=args.speakers)
    reply = Stream(REPLY, first_token_delay_s=args.first_token, chunk_delay_s=1 / args.rate)
    with tempfile.TemporaryDirectory() as tmp, ScriptedLLM(reply) as server:
        folder = Path(tmp)
        config = folder / "config.toml"
        if mode == "sequential":  # whole reply, then whole synthesis, then playback
            config.write_text("[reply]\nstreaming = false\nearly_transcription = false\n")
        else:
            config.write_text(args.toml.replace("\\n", "\n") + "\n")
        launched = time.monotonic()
        llm = [] if args.embedded else ["--llm-url", server.url]
        debug = ["--debug"] if args.debug_log else []
        agent = AgentProcess([*debug, *extra, "--config", str(config), *llm, "--echo-cancellation",
                              args.echo_cancellation, "--transcripts-dir", str(folder / "t"),
                              "chat"],
                             headset.ear, headset.agent)  # fmt: skip
        try:
            agent.wait_for("Listening", timeout=120)
            to_listening = time.monotonic() - launched
            time.sleep(3.0)  # steady state: start-up's last threads wind down first
            idle_cpu = cpu_share(agent.proc.pid, args.idle)
            rec = Recorder(f"{headset.room}.monitor", channels=2)
            time.sleep(1.0)
            turns_per_clip = []
            for c in chosen:
                before = len(read_records(folder))
                play(headset.user, as_wav(c.path, folder))
                turns_per_clip.append(wait_for_answer(folder, time.time()) - before)
                time.sleep(1.0)
            recording = rec.stop()
            peak_rss_mb = peak_rss(agent.proc.pid)
            assert agent.interrupt() == 0, agent.errors
        finally:
            agent.kill()
            headset.close()
        records = read_records(folder)
        if args.debug_log:
            args.debug_log.mkdir(parents=True, exist_ok=True)
            (args.debug_log / f"{mode}-agent.log").write_text("\n".join(agent.errors) + "\n")
            with (args.debug_log / f"{mode}-turns.jsonl").open("w") as f:
                f.writelines(json.dumps(r) + "\n" for r in records)
    latencies, gaps = measure(recording, chosen)
    return {
        "to_listening_s": round(to_listening, 2),
        "idle_cpu_percent": round(idle_cpu, 2),
        "peak_rss_mb": round(peak_rss_mb, 1),
        "latency_s": [round(x, 3) for x in latencies[PRIMARY]],
        "latency_by_marker_s": {k: [round(x, 3) for x in v] for k, v in latencies.items()},
        "stt_s": stage_values(records, "stt"),
        "turns_per_clip": turns_per_clip,
        "longest_gap_in_reply_s": [round(x, 3) for x in gaps],
        "stages_median_s": stage_medians(records),
    }


def cpu_share(pid: int, seconds: float) -> float:
    """CPU used by the process over ``seconds`` of idle listening, in % of one core."""
    start, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return 100 * (cpu_seconds(pid) - start) / (time.monotonic() - t0)


def cpu_seconds(pid: int) -> float:
    """User and system CPU time the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss(pid: int) -> float:
    return memory_mb(pid, "VmHWM")


def memory_mb(pid: int, field: str = "VmRSS") -> float:
    """A memory figure from /proc/PID/status (VmRSS now, VmHWM the peak), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def read_records(folder: Path) -> list[dict[str, Any]]:
    files = sorted((folder / "t").rglob("*.jsonl"))
    return [json.loads(x) for f in files for x in f.read_text().splitlines() if x]


def wait_for_answer(folder: Path, played_until: float, timeout: float = 60) -> int:
    """Wait until the turn that ends with the clip has been answered in full (a clip whose
    inner pause ended a turn first has more than one record); how many records there are."""
    deadline = time.monotonic() + timeout
    while True:
        records = read_records(folder)
        last = records[-1] if records else {}
        # the clip's last word ends up to ~0.6 s before its file does
        if last.get("events", {}).get("speech_end", 0) > played_until - 1.5 and not last.get(
            "interrupted"
        ):
            return len(records)
        if time.monotonic() > deadline:
            raise SystemExit(f"a clip was not answered within {timeout} s")
        time.sleep(0.05)


def rms(x: np.ndarray) -> np.ndarray:
    frames = x[: len(x) // FRAME * FRAME].astype(np.float64).reshape(-1, FRAME)
    return np.sqrt((frames**2).mean(axis=1))


def locate(haystack: np.ndarray, needle: np.ndarray, after: int) -> int:
    h = haystack[after:].astype(np.float64)
    size = 1 << (len(h) + len(needle) - 1).bit_length()
    corr = np.fft.irfft(
        np.fft.rfft(h, size) * np.conj(np.fft.rfft(needle.astype(np.float64), size)), size
    )
    return after + int(np.argmax(corr[: len(h) - len(needle) + 1]))


def measure(recording: np.ndarray, chosen: list[Any]) -> tuple[dict[str, list[float]], list[float]]:
    """Per end-of-speech marker, the latency of each clip's reply; and the longest silence
    inside each reply."""
    user, agent = recording[:, 0], recording[:, 1]
    agent_loud = rms(agent) > LOUD_RMS
    latencies: dict[str, list[float]] = {name: [] for name in MARKERS}
    gaps = []
    pos = 0
    for c in chosen:
        voice = read_file(c.path).samples
        start = locate(user, voice, pos)
        pos = start + len(voice)
        ends = {k: start + round(mark(c.path) * SPEECH_RATE_HZ) for k, mark in MARKERS.items()}
        earliest = min(ends.values())
        onset_frames = np.flatnonzero(agent_loud[earliest // FRAME :])
        if onset_frames.size == 0:
            continue
        first = earliest // FRAME + int(onset_frames[0])
        for name, end in ends.items():
            latencies[name].append((first * FRAME - end) / SPEECH_RATE_HZ)
        # the reply runs until 1.5 s of quiet; its longest inner silence is the longest
        # quiet stretch that sound follows
        quiet_run, longest, i = 0, 0, first
        while i < len(agent_loud) and quiet_run < 150:
            if agent_loud[i]:
                longest = max(longest, quiet_run)
                quiet_run = 0
            else:
                quiet_run += 1
            i += 1
        gaps.append(longest * FRAME / SPEECH_RATE_HZ)
    return latencies, gaps


def save_and_report(
    result: dict[str, Any], path: Path, report: Callable[[dict[str, Any]], None]
) -> None:
    """Name the machine in ``result``, write it to ``path`` as JSON, and print it."""
    result["machine"] = machine_name()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    report(result)


def machine_name() -> str:
    cpu = Path("/proc/cpuinfo").read_text().split("model name", 1)[1].split(":", 1)[1]
    return f"{cpu.splitlines()[0].strip()}, {len(os.sched_getaffinity(0))} cores, " \
           f"Python {platform.python_version()}"  # fmt: skip


def stage_values(records: list[dict[str, Any]], name: str) -> list[float]:
    """One stage's duration in every sidecar record that has it."""
    return [r["stages"][name] for r in records if name in r.get("stages", {})]


def stage_medians(records: list[dict[str, Any]]) -> dict[str, float]:
    names = sorted({k for r in records for k in r.get("stages", {})})
    return {
        k: round(statistics.median(r["stages"][k] for r in records if k in r["stages"]), 3)
        for k in names
    }


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def report(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    hangover = VadConfig().hangover_ms / 1000
    s = results["streaming"]
    other = "wyoming" if "wyoming" in results else "sequential"
    q = results.get(other, s)  # --streaming-only: the second column repeats the first
    ratio = statistics.median(q["latency_s"]) / statistics.median(s["latency_s"])
    machine = machine_name()
    print(f"\nvoice-agent latency on {machine}")
    llm = (
        "the embedded model (SmolLM2-135M in llama.cpp)"
        if args.embedded
        else f"first token after {args.first_token:.2f} s, {args.rate:.0f} words/s"
    )
    room = "speakers (hears itself)" if args.speakers else "headset"
    print(f"LLM: {llm}; hangover {hangover:.2f} s; {len(s['latency_s'])} clips; room: {room}; "
          f"echo cancellation {args.echo_cancellation}")  # fmt: skip
    print(f"reply: {REPLY!r}")
    rows = [
        ("end of speech -> first audio, median (s)", "median", hangover + 0.35),
        ("end of speech -> first audio, p90 (s)", "p90", None),
        ("longest silence inside a reply (s)", "gap", None),
        ("launch -> Listening (s)", "to_listening_s", 4.0),
        ("peak resident memory (MB)", "peak_rss_mb", 450.0),
        ("CPU listening to silence, steady (% of a core)", "idle_cpu_percent", 5.0),
    ]
    print(f"{'':48}{'streaming':>11}{other:>12}{'budget':>9}")
    for label, key, budget in rows:
        values = []
        for r in (s, q):
            if key == "median":
                values.append(statistics.median(r["latency_s"]))
            elif key == "p90":
                values.append(pct(r["latency_s"], 90))
            elif key == "gap":
                values.append(max(r["longest_gap_in_reply_s"]))
            else:
                values.append(r[key])
        b = f"{budget:.2f}" if budget is not None else ""
        print(f"{label:48}{values[0]:>11.2f}{values[1]:>12.2f}{b:>9}")
    print(f"{other + ' / streaming, median':48}{ratio:>11.2f}{'':>12}"
          f"{'2.00' if other == 'sequential' else '':>9}")  # fmt: skip
    print("\nstreaming latency by end-of-speech marker (s):")
    print(f"  {'marker':40}{'median':>8}{'p90':>8}{'max':>8}")
    for name, values in s["latency_by_marker_s"].items():
        print(f"  {name:40}{statistics.median(values):>8.2f}{pct(values, 90):>8.2f}"
              f"{max(values):>8.2f}")  # fmt: skip
    split = [n for n in s["turns_per_clip"] if n > 1]
    print(f"\nclips answered as one turn: {len(s['turns_per_clip']) - len(split)} of "
          f"{len(s['turns_per_clip'])} (the others ended a turn at an inner pause: a reply "
          f"started and the rest of the clip stopped it)")  # fmt: skip
    stt = s["stt_s"]
    print(
        f"\nSTT per turn (sidecar, s): median {statistics.median(stt):.3f}, "
        f"p99 {pct(stt, 99):.3f}, max {max(stt):.3f}"
    )
    print("\nper-stage medians from the sidecar (s):")
    for name in s["stages_median_s"]:
        print(f"  {name:34}{s['stages_median_s'][name]:>8.3f}"
              f"{q['stages_median_s'].get(name, float('nan')):>10.3f}")  # fmt: skip
    results_out = {"machine": machine, "llm_first_token_s": args.first_token,
                   "llm_words_per_s": args.rate, "hangover_s": hangover,
                   f"ratio_{other}_to_streaming": round(ratio, 2), **results}  # fmt: skip
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results_out, indent=2))
    print(f"\nwritten to {args.json}")


if __name__ == "__main__":
    raise SystemExit(main())
