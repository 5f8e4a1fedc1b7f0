"""When the transcript cannot be written (folder gone, disk full, file size limit), the user is
told at once in one line, the conversation goes on, the unwritten turns are written as soon as
they can be, and whatever still cannot be written is printed at exit: nothing is lost."""

from __future__ import annotations

import errno
import os
import resource
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from conftest import transcript_files
from llm_server import ScriptedLLM, Stream

from voice_agent import transcript
from voice_agent.transcript import TranscriptWriter, parse, read

AGENT = [sys.executable, "-m", "voice_agent", "chat", "--text", "--mute", "--llm-model", "m"]
BANNER = "these turns could not be saved"


def start(url: str, folder: Path, limit_bytes: int | None = None) -> subprocess.Popen[str]:
    def limit() -> None:
        if limit_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICE_AGENT_")}
    return subprocess.Popen(
        [*AGENT, "--llm-url", url, "--transcripts-dir", str(folder)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env, preexec_fn=limit,
    )  # fmt: skip


def ask(proc: subprocess.Popen[str], line: str, answer: str) -> str:
    """Type a line and wait until its answer has been shown; what was shown meanwhile."""
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(line + "\n")
    proc.stdin.flush()
    seen = ""
    for shown in proc.stdout:
        seen += shown
        if answer in shown:
            return seen
    raise AssertionError(f"no answer to {line!r}")


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("voice-agent: error:")]


@pytest.mark.slow
def test_a_folder_that_cannot_be_written_is_told_once_and_caught_up_when_it_can(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "t"
    folder.write_text("a file where the transcripts folder should be")
    with ScriptedLLM(Stream("First answer."), Stream("Second answer.")) as server:
        proc = start(server.url, folder)
        ask(proc, "First question?", "First answer.")
        folder.unlink()  # the user fixes it mid-session
        out = ask(proc, "Second question?", "Second answer.")
        _, err = proc.communicate("", timeout=60)
    assert proc.returncode == 0, err
    assert errors(err) == [
        f"voice-agent: error: cannot save the transcript in {folder}: Not a directory; the "
        "conversation goes on, and unsaved turns are kept until they can be written (or "
        "printed when the session ends)"
    ]
    [md] = transcript_files(folder)
    assert "(the transcript can be written again: every turn is in" in out
    assert [t.text for t in read(md).turns] == [
        "First question?",
        "First answer.",
        "Second question?",
        "Second answer.",
    ]


@pytest.mark.slow
def test_turns_that_can_never_be_written_are_printed_at_exit(tmp_path: Path) -> None:
    folder = tmp_path / "t"
    folder.write_text("not a folder")
    with ScriptedLLM(Stream("First answer."), Stream("Second answer.")) as server:
        proc = start(server.url, folder)
        ask(proc, "First question?", "First answer.")
        ask(proc, "Second question?", "Second answer.")
        _, err = proc.communicate("", timeout=60)
    assert proc.returncode == 1
    assert len(errors(err)) == 2  # told at once, and again at exit with the turns
    printed = err[err.index(BANNER) :].split("\n", 1)[1]
    assert [t.text for t in parse(printed).turns] == [
        "First question?",
        "First answer.",
        "Second question?",
        "Second answer.",
    ]
    assert "Traceback" not in err


@pytest.mark.slow
def test_a_write_cut_short_by_the_file_size_limit_leaves_a_readable_transcript(
    tmp_path: Path,
) -> None:
    long = "This answer is far too long for the space that is left. " * 40
    with ScriptedLLM(Stream("Short."), Stream(long.strip())) as server:
        proc = start(server.url, tmp_path / "t", limit_bytes=600)
        ask(proc, "One?", "Short.")
        ask(proc, "Two?", "far too long")
        _, err = proc.communicate("", timeout=60)
    assert proc.returncode == 1
    assert "File too large" in errors(err)[0]
    [md] = transcript_files(tmp_path / "t")
    kept = [t.text for t in read(md).turns]  # the kernel wrote part of the reply: undone
    assert kept == ["One?", "Short.", "Two?"]
    printed = err[err.index(BANNER) :].split("\n", 1)[1]
    assert [t.text for t in parse(printed).turns] == [long.strip()]


def test_disk_full_mid_write_is_undone_and_written_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    told: list[str] = []
    recovered: list[bool] = []
    w = TranscriptWriter(tmp_path, "m", datetime(2026, 5, 1, 12, 0, 0))
    w.on_failure = told.append
    w.on_recovery = lambda: recovered.append(True)
    w.append("USER", "Before the disk filled up.")
    real_write = os.write

    def full(fd: int, data: bytes) -> int:  # a write that gets half way, as on a full disk
        if len(data) > 20:
            real_write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(transcript.os, "write", full)
    w.append("ASSISTANT", "An answer written while the disk was full.")
    w.record({"turn": 1})
    assert told == [f"cannot save the transcript in {w.path.parent}: No space left on device"]  # type: ignore[union-attr]
    assert w.path is not None and [t.text for t in read(w.path).turns] == [
        "Before the disk filled up."
    ]
    monkeypatch.setattr(transcript.os, "write", real_write)
    w.append("USER", "After some space was freed.")
    assert recovered == [True] and w.unwritten() == ""
    assert [t.text for t in read(w.path).turns] == [
        "Before the disk filled up.",
        "An answer written while the disk was full.",
        "After some space was freed.",
    ]
    assert w.path.with_suffix(".jsonl").read_text() == '{"turn": 1}\n'
