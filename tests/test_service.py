"""`voice-agent service`: the systemd unit it writes is one systemd accepts, runs the live
agent with the flags given, and restarts it on failure; bad flags are refused before
anything is written. Run as a user would, with its config folder in a temporary place (no
systemd runs in the test machine: enabling is left to the user, and said so)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli

from voice_agent.display import Display
from voice_agent.service import Scope, unit_text


def verify(unit: Path, tmp_path: Path, user: bool) -> subprocess.CompletedProcess[str]:
    runtime = tmp_path / "runtime"  # --user needs a runtime folder, as a login session has
    runtime.mkdir(mode=0o700, exist_ok=True)
    return subprocess.run(
        ["systemd-analyze", "verify", *(["--user"] if user else []), str(unit)],
        capture_output=True, text=True, check=False, cwd=tmp_path,
        env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)},
    )  # fmt: skip


def test_install_writes_a_user_unit_systemd_accepts_running_the_live_agent(
    tmp_path: Path,
) -> None:
    odd = tmp_path / "my transcripts" / "100%"  # a space and a systemd specifier character
    run = run_cli("service", "install", "--", "--llm-url", "http://127.0.0.1:8080/v1",
                  "--barge-in", "--transcripts-dir", str(odd),
                  env={"XDG_CONFIG_HOME": str(tmp_path)})  # fmt: skip
    assert run.code == 0, run.stderr
    unit = tmp_path / "systemd" / "user" / "voice-agent.service"
    text = unit.read_text()
    assert f"ExecStart={sys.executable} -m voice_agent chat --llm-url " in text
    assert f'--barge-in --transcripts-dir "{str(odd).replace("%", "%%")}"' in text
    assert "Restart=on-failure" in text and "WantedBy=default.target" in text
    assert f"EnvironmentFile=-{tmp_path}/voice-agent/service.env" in text
    check = verify(unit, tmp_path, user=True)
    assert check.returncode == 0, check.stderr
    assert "loginctl enable-linger" in run.stdout  # runs without a login only with linger
    assert "service.env" in run.stdout and "chmod 600" in run.stdout
    status = run_cli("service", "status", env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert str(unit) in status.stdout and "Traceback" not in status.stderr
    gone = run_cli("service", "uninstall", env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert gone.code == 0 and not unit.exists()
    none = run_cli("service", "status", env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert none.code == 3 and "no service installed" in none.stdout


def test_a_system_unit_waits_for_sound_and_network_and_runs_as_the_user(tmp_path: Path) -> None:
    where = Scope(True, tmp_path, "pi", Path("/home/pi"))
    unit = tmp_path / "voice-agent.service"
    unit.write_text(unit_text(where, ["--llm-url", "http://192.168.1.5:11434/v1"]))
    text = unit.read_text()
    assert "After=sound.target network-online.target" in text
    assert "User=pi" in text and "SupplementaryGroups=audio" in text
    assert "EnvironmentFile=-/home/pi/.config/voice-agent/service.env" in text
    assert "WantedBy=multi-user.target" in text
    check = verify(unit, tmp_path, user=False)
    assert check.returncode == 0, check.stderr


@pytest.mark.parametrize(
    ("flags", "told"),
    [
        (["--input", "a.wav"], "--input makes no sense in a service"),
        (["--text"], "--text makes no sense in a service"),
        (["--bogus"], "agent flags for the service: unrecognized arguments: --bogus"),
        (["--echo-cancellation", "maybe"], "invalid choice: 'maybe'"),
    ],
)
def test_flags_the_live_agent_would_refuse_are_refused_before_anything_is_written(
    flags: list[str], told: str, tmp_path: Path
) -> None:
    run = run_cli("service", "install", "--", *flags, env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert run.code == 1 and "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("voice-agent: error: ")
    assert told in run.stderr
    assert not (tmp_path / "systemd").exists()


def test_off_a_terminal_the_display_prints_plain_lines_for_the_journal() -> None:
    """The journal keeps every byte: no status line rewriting itself, no escape codes."""
    out = io.StringIO()
    display = Display(out, out)
    display.status("listening")
    for state in ("hearing", "thinking", "speaking"):
        display.status(state)
    display.user("Ten of clubs.")
    display.reply_text("Noted, ")
    display.reply_text("ten of clubs.")
    display.reply_end()
    display.error("the LLM stopped answering")
    lines = out.getvalue().splitlines()
    assert lines == ["Listening\u2026 (say goodbye or press Ctrl+C to end)", "you: Ten of clubs.",
                     "assistant: Noted, ten of clubs.",
                     "voice-agent: error: the LLM stopped answering"]  # fmt: skip
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()
