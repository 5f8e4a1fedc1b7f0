"""``voice-agent service``: a systemd unit that runs the live agent at boot (or at login) and
starts it again when it fails, for a device with no one at a terminal (a Raspberry Pi in a
kitchen). Its output goes to the journal: off a terminal the display prints plain lines."""

from __future__ import annotations

import contextlib
import io
import os
import pwd
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from voice_agent.errors import VoiceAgentError

UNIT = "voice-agent.service"
# Flags that make no sense for an agent nobody types to or hands files to (flag: option name).
NOT_FOR_A_SERVICE = {"--input": "input", "--output-dir": "output_dir", "--text": "text",
                     "--mute": "mute", "--push-to-talk": "push_to_talk"}  # fmt: skip


@dataclass(frozen=True)
class Scope:
    """Where the unit lives and which systemd instance runs it."""

    system: bool
    unit_dir: Path
    user: str  # the account the agent runs as
    home: Path

    @property
    def systemctl(self) -> list[str]:
        return ["systemctl"] if self.system else ["systemctl", "--user"]

    @property
    def unit_path(self) -> Path:
        return self.unit_dir / UNIT

    @property
    def env_file(self) -> Path:
        """Where API keys go: a unit file is world-readable, this one need not be."""
        config = self.home / ".config" if self.system else config_home(self.home)
        return config / "voice-agent" / "service.env"


def scope(system: bool) -> Scope:
    """The user's own systemd instance, or (``system``) the machine's, running the agent as
    the user who asked (``sudo voice-agent service install --system`` runs it as them)."""
    name = os.environ.get("SUDO_USER") or pwd.getpwuid(os.getuid()).pw_name
    try:
        home = Path(pwd.getpwnam(name).pw_dir)
    except KeyError:
        home = Path.home()
    if system:
        return Scope(True, Path("/etc/systemd/system"), name, home)
    return Scope(False, config_home(home) / "systemd" / "user", name, home)


def config_home(home: Path) -> Path:
    """The user's configuration folder, as systemd's user instance finds it."""
    return Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")


def systemd_quote(arg: str) -> str:
    """One ExecStart word: systemd expands % specifiers and $ variables, and splits on space
    unless quoted, so those are escaped and anything unusual is quoted."""
    escaped = arg.replace("%", "%%").replace("$", "$$")
    if escaped and all(c.isalnum() or c in "-_./:=@,+%$" for c in escaped):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unit_text(where: Scope, agent_args: list[str]) -> str:
    """The unit: the live agent with ``agent_args``, restarted on failure, logging to the
    journal. A system unit waits for the sound devices and the network (the LLM)."""
    command = [sys.executable, "-m", "voice_agent", "chat", *agent_args]
    lines = [
        "[Unit]",
        "Description=voice-agent: a spoken conversation with an LLM",
    ]
    if where.system:
        lines += ["After=sound.target network-online.target", "Wants=network-online.target"]
    lines += [
        "StartLimitIntervalSec=300",
        "StartLimitBurst=10",
        "",
        "[Service]",
        "Type=simple",
        f"ExecStart={' '.join(systemd_quote(a) for a in command)}",
        # paths are taken whole (no quoting), with % specifiers expanded
        f"WorkingDirectory={str(where.home).replace('%', '%%')}",
        f"EnvironmentFile=-{str(where.env_file).replace('%', '%%')}",
        "Environment=PYTHONUNBUFFERED=1",
        "Restart=on-failure",
        "RestartSec=5",
        # Ctrl+C's signal: the session saves its transcript and says where
        "KillSignal=SIGINT",
        "TimeoutStopSec=20",
    ]
    if where.system:
        lines += [f"User={where.user}", "SupplementaryGroups=audio"]
    target = "multi-user.target" if where.system else "default.target"
    lines += ["", "[Install]", f"WantedBy={target}"]
    return "\n".join(lines) + "\n"


def check_agent_args(agent_args: list[str]) -> None:
    """The flags must be ones the live agent takes: checked now, not at the next boot."""
    from voice_agent.cli import build_parser

    told = io.StringIO()
    try:
        with contextlib.redirect_stderr(told):
            opts = vars(build_parser().parse_args(["chat", *agent_args]))
    except SystemExit:
        said = told.getvalue().strip().splitlines()
        reason = said[-1].split("error: ", 1)[-1] if said else "not understood"
        raise VoiceAgentError(f"agent flags for the service: {reason}") from None
    wrong = [flag for flag, name in NOT_FOR_A_SERVICE.items() if opts.get(name)]
    if wrong:
        raise VoiceAgentError(
            f"{' '.join(wrong)} makes no sense in a service (it runs the live agent, with no "
            "one at a terminal): leave it out"
        )


def install(system: bool, agent_args: list[str]) -> list[str]:
    """Write the unit and enable it; the lines to tell the user."""
    check_agent_args(agent_args)
    where = scope(system)
    try:
        where.unit_dir.mkdir(parents=True, exist_ok=True)
        where.unit_path.write_text(unit_text(where, agent_args), encoding="utf-8")
    except OSError as exc:
        hint = " (a system unit needs root: sudo)" if system else ""
        raise VoiceAgentError(f"cannot write {where.unit_path}: {exc.strerror}{hint}") from None
    told = [f"wrote {where.unit_path}"]
    enabled = _systemctl(where, "daemon-reload") and _systemctl(where, "enable", "--now", UNIT)
    if enabled:
        journal = "journalctl" if system else "journalctl --user"
        told.append(f"enabled and started: {' '.join(where.systemctl)} status voice-agent; "
                    f"{journal} -u voice-agent -f for its output")  # fmt: skip
    else:
        told.append(
            "systemd could not be reached here, so the unit is not enabled yet: run "
            f"{' '.join(where.systemctl)} daemon-reload && "
            f"{' '.join(where.systemctl)} enable --now voice-agent"
        )
    if not system:
        told.append(
            f"to run it without a login (at boot): sudo loginctl enable-linger {where.user}"
        )
    told.append(f"API keys (e.g. OPENROUTER_API_KEY=...) go in {where.env_file}, chmod 600: the "
                "service does not see your shell's environment")  # fmt: skip
    return told


def uninstall(system: bool) -> list[str]:
    where = scope(system)
    if not where.unit_path.exists():
        return [f"no service installed ({where.unit_path} does not exist)"]
    _systemctl(where, "disable", "--now", UNIT)
    try:
        where.unit_path.unlink()
    except OSError as exc:
        raise VoiceAgentError(f"cannot remove {where.unit_path}: {exc.strerror}") from None
    _systemctl(where, "daemon-reload")
    return [f"stopped, disabled and removed {where.unit_path}"]


def status(system: bool) -> tuple[int, list[str]]:
    """``systemctl status``'s answer, or why there is none."""
    where = scope(system)
    if not where.unit_path.exists():
        return 3, [f"no service installed ({where.unit_path} does not exist): "
                   f"voice-agent service install{' --system' if system else ''}"]  # fmt: skip
    if shutil.which("systemctl") is None:
        return 1, [f"{where.unit_path} is installed, but systemctl is not on this machine"]
    done = subprocess.run([*where.systemctl, "status", "--no-pager", UNIT], check=False,
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode not in (0, 3) and not done.stdout.strip():
        reason = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "no answer"
        return done.returncode, [f"{where.unit_path} is installed; systemd says: {reason}"]
    return done.returncode, done.stdout.rstrip("\n").splitlines()


def _systemctl(where: Scope, *args: str) -> bool:
    if shutil.which("systemctl") is None:
        return False
    done = subprocess.run([*where.systemctl, *args], check=False, capture_output=True,
                          text=True)  # fmt: skip
    return done.returncode == 0
