"""An hours-long session in miniature: 1,000 typed turns against a real loopback server.

Every turn reaches the transcript, each request stays within the history budget, and the
agent's resident memory stops growing once it is warm (the slope is printed with -s).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from conftest import transcript_files
from llm_server import ScriptedLLM, Stream

from voice_agent.transcript import read

TURNS = 1000
HISTORY_CHARS = 4000
REPLY = (
    "That is a fair question, and the short answer is yes. The longer answer depends on the "
    "weather, the time of day and how much you enjoy walking in the rain without an umbrella."
)


def test_a_thousand_turns_keep_every_turn_with_flat_memory_and_bounded_requests(
    tmp_path: Path,
) -> None:
    questions = [f"Question number {n}: is it worth going out today?" for n in range(TURNS)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENROUTER_", "OPENAI_"))}
    env.update(XDG_CONFIG_HOME=str(tmp_path), VOICE_AGENT_LLM_HISTORY_CHARS=str(HISTORY_CHARS))
    with ScriptedLLM(Stream(REPLY, words_per_chunk=3)) as server:
        agent = subprocess.Popen(
            [sys.executable, "-m", "voice_agent", "chat", "--text", "--mute",
             "--llm-url", server.url, "--transcripts-dir", str(tmp_path / "t")],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
        )  # fmt: skip
        assert agent.stdin is not None and agent.stderr is not None
        feeder = threading.Thread(target=_feed, args=(agent.stdin, questions), daemon=True)
        feeder.start()
        samples: list[tuple[int, int]] = []  # (turns answered, resident kB)
        while agent.poll() is None:
            rss = _rss_kb(agent.pid)
            if rss:
                samples.append((len(server.requests), rss))
            time.sleep(0.05)
        stderr = agent.stderr.read().decode()
        assert agent.returncode == 0, stderr[-2000:]

    [md] = transcript_files(tmp_path / "t")
    turns = read(md).turns
    assert [t.text for t in turns[0::2]] == questions
    assert all(t.text == REPLY for t in turns[1::2]) and len(turns) == 2 * TURNS

    assert len(server.requests) == TURNS
    for request in server.requests:
        history = [m["content"] for m in request["messages"] if m["role"] != "system"]
        assert sum(map(len, history[:-1])) <= HISTORY_CHARS  # the question itself is extra
        assert history[-1].startswith("Question number")

    warm = np.array([(n, kb) for n, kb in samples if n >= TURNS // 5], dtype=float)
    slope_kb, _ = np.polyfit(warm[:, 0], warm[:, 1], 1)
    growth_mb = (warm[-1, 1] - warm[0, 1]) / 1024
    print(f"\nresident memory after warm-up: slope {slope_kb:.2f} kB/turn, "
          f"{growth_mb:+.1f} MB over {int(warm[-1, 0] - warm[0, 0])} turns, "
          f"peak {warm[:, 1].max() / 1024:.0f} MB")  # fmt: skip
    # Flat: an hours-long session (say 2,000 turns) must not grow by more than a few MB.
    assert slope_kb < 1.0


def _feed(stdin: object, lines: list[str]) -> None:
    for line in lines:
        stdin.write((line + "\n").encode())  # type: ignore[attr-defined]
    stdin.close()  # type: ignore[attr-defined]


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0
