"""Nothing said is lost: kill -9 at random moments, SIGTERM, midnight, concurrent sessions."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from conftest import transcript_files
from llm_server import ScriptedLLM, Stream

from voice_agent.transcript import TranscriptWriter, parse, read

QUESTIONS = "".join(f"Question number {n}, please answer it.\n" for n in range(1, 41))


def start_text_agent(server: ScriptedLLM, folder: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICE_AGENT_")}
    return subprocess.Popen(
        [sys.executable, "-m", "voice_agent", "--llm-url", server.url, "--transcripts-dir",
         str(folder), "chat", "--text", "--mute"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env=env,
    )  # fmt: skip


def feed(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    try:
        proc.stdin.write(QUESTIONS)
        proc.stdin.flush()
    except BrokenPipeError:
        pass


def committed_history(server: ScriptedLLM) -> list[tuple[str, str]]:
    """Turns the agent had committed when it sent its last request (history implies disk)."""
    if not server.requests:
        return []
    messages = server.requests[-1]["messages"][1:]
    return [("USER" if m["role"] == "user" else "ASSISTANT", m["content"]) for m in messages]


@pytest.mark.slow
def test_kill_9_at_random_moments_never_loses_a_committed_turn(tmp_path: Path) -> None:
    rng = random.Random(20261125)
    reply = Stream("Here is the answer, given slowly so that kills land mid-reply.",
                   chunk_delay_s=0.02)  # fmt: skip
    for attempt in range(50):
        folder = tmp_path / f"run{attempt}"
        with ScriptedLLM(reply) as server:
            proc = start_text_agent(server, folder)
            feed(proc)
            time.sleep(rng.uniform(0.5, 2.5))
            proc.kill()
            proc.wait()
            expected = committed_history(server)
        files = transcript_files(folder)
        assert len(files) <= 1
        turns = [(t.role, t.text) for t in read(files[0]).turns] if files else []
        assert turns[: len(expected)] == expected, f"attempt {attempt}"
        assert all(role in ("USER", "ASSISTANT") for role, _ in turns)


@pytest.mark.slow
def test_sigterm_and_ctrl_c_close_the_session_cleanly(tmp_path: Path) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        folder = tmp_path / sig.name
        with ScriptedLLM(Stream("A long reply " * 40, chunk_delay_s=0.02)) as server:
            proc = start_text_agent(server, folder)
            feed(proc)
            deadline = time.monotonic() + 30
            while len(server.requests) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.3)  # in the middle of the second reply
            proc.send_signal(sig)
            code = proc.wait(timeout=20)
            assert proc.stderr is not None
            err = proc.stderr.read()
        assert code == 0, err
        assert "Traceback" not in err
        [md] = transcript_files(folder)
        turns = read(md).turns
        assert [t.role for t in turns[:4]] == ["USER", "ASSISTANT", "USER", "ASSISTANT"]
        assert turns[2].text == "Question number 2, please answer it."
        # the reply being read when the signal came is kept as far as it was shown, marked
        cut = turns[3].text
        assert cut.startswith("A long reply A long reply") and cut.endswith("\u2026 [interrupted]")
        assert len(cut) < len("A long reply " * 40)
        records = [json.loads(line) for line in md.with_suffix(".jsonl").read_text().splitlines()]
        assert records[-1]["turn"] == 2 and records[-1]["finish_reason"] == "interrupted"


def test_a_session_crossing_midnight_stays_in_one_file(tmp_path: Path) -> None:
    started = datetime(2026, 12, 31, 23, 59, 58)
    w = TranscriptWriter(tmp_path, "m", started)
    w.append("USER", "Happy new year?")
    w.append("ASSISTANT", "Almost: two seconds to go.")
    w.record({"turn": 1, "events": {"reply_done": (started + timedelta(seconds=5)).timestamp()}})
    w.append("USER", "And now?")
    assert [p.relative_to(tmp_path).as_posix() for p in transcript_files(tmp_path)] == [
        "2026/12/2026-12-31_235958.md"
    ]
    assert len(read(w.path).turns) == 3  # type: ignore[arg-type]


def test_control_characters_are_inert_in_the_file_and_come_back_exactly(tmp_path: Path) -> None:
    nasty = "red \x1b[31mtext\x1b[0m, title \x1b]0;pwned\x07, bell \x07, cr\rlf, \\x1b literal"
    w = TranscriptWriter(tmp_path, "m", datetime(2026, 3, 1, 9, 0, 0))
    w.append("ASSISTANT", nasty)
    assert w.path is not None
    raw = w.path.read_bytes()
    assert b"\x1b" not in raw and b"\x07" not in raw and b"\r" not in raw
    assert parse(raw.decode()).turns[0].text == nasty


@pytest.mark.slow
def test_two_sessions_at_once_never_share_a_file(tmp_path: Path) -> None:
    with ScriptedLLM(Stream("Answer.")) as server:
        procs = [start_text_agent(server, tmp_path) for _ in range(2)]
        for i, proc in enumerate(procs):
            assert proc.stdin is not None
            proc.stdin.write("".join(f"Session {i} question {n}.\n" for n in range(5)))
            proc.stdin.close()
        for proc in procs:
            assert proc.wait(timeout=60) == 0
    files = transcript_files(tmp_path)
    assert len(files) == 2
    for md in files:
        users = [t.text for t in read(md).turns if t.role == "USER"]
        assert len(users) == 5
        assert len({u.split()[1] for u in users}) == 1  # one session's questions only
