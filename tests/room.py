"""A virtual room without hardware: PulseAudio null sinks, paplay as the user, parec as the ear.

One sink for both directions behaves like laptop speakers (the agent hears itself); a sink for
the user's voice and another for the agent's behaves like a headset.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np

from voice_agent.audio import SPEECH_RATE_HZ, Audio, read_file, write_wav


def ensure_pulseaudio() -> None:
    """Start a user PulseAudio daemon unless one answers already (CI starts it too)."""
    if shutil.which("pactl") is None:
        raise RuntimeError("PulseAudio is not installed: run scripts/setup.sh test")
    if _pactl("info").returncode == 0:
        return
    subprocess.run(["pulseaudio", "-D", "--exit-idle-time=-1", "--system=false"],
                   check=False, capture_output=True)  # fmt: skip
    deadline = time.monotonic() + 10
    while _pactl("info").returncode != 0:
        if time.monotonic() > deadline:
            raise RuntimeError("PulseAudio did not start")
        time.sleep(0.2)


def _pactl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["pactl", *args], capture_output=True, text=True, check=False)


class Sink:
    """A null sink: what is played into it can be recorded from its monitor."""

    def __init__(self, label: str) -> None:
        self.name = f"{label}_{uuid.uuid4().hex[:6]}"
        out = _pactl("load-module", "module-null-sink", f"sink_name={self.name}",
                     f"rate={SPEECH_RATE_HZ}", "channels=1")  # fmt: skip
        if out.returncode != 0:
            raise RuntimeError(f"cannot create sink: {out.stderr}")
        self.module = out.stdout.strip()

    @property
    def monitor(self) -> str:
        return f"{self.name}.monitor"

    def close(self) -> None:
        _pactl("unload-module", self.module)


class Headset:
    """One stereo room heard on one clock: the user speaks on the left, the agent on the right,
    and the agent's ear hears only the left, as with a headset. Recording ``room.monitor``
    gives both voices in step, one per channel. With ``speakers`` the ear hears both, mixed at
    equal level (each at -6 dB), as a laptop's microphone hears its own speakers and the user:
    the agent hears itself, yet the recording still tells the two voices apart."""

    def __init__(self, label: str, speakers: bool = False) -> None:
        tag = f"{label}_{uuid.uuid4().hex[:6]}"
        self.room = f"{tag}_room"
        self.user = f"{tag}_user"  # play the user's voice here
        self.agent = f"{tag}_agent"  # the agent's speaker
        self.ear = f"{tag}_ear"  # the agent's microphone
        self.modules: list[str] = []
        self._load("module-null-sink", f"sink_name={self.room}", f"rate={SPEECH_RATE_HZ}",
                   "channels=2", "channel_map=front-left,front-right")  # fmt: skip
        for name, side in ((self.user, "front-left"), (self.agent, "front-right")):
            self._load("module-remap-sink", f"sink_name={name}", f"master={self.room}",
                       "channels=1", f"master_channel_map={side}", "channel_map=mono",
                       "remix=no")  # fmt: skip
        if speakers:
            self._load("module-remap-source", f"source_name={self.ear}",
                       f"master={self.room}.monitor", "channels=1", "channel_map=mono",
                       "remix=yes")  # fmt: skip
        else:
            self._load("module-remap-source", f"source_name={self.ear}",
                       f"master={self.room}.monitor", "channels=1",
                       "master_channel_map=front-left", "channel_map=mono",
                       "remix=no")  # fmt: skip

    def _load(self, *args: str) -> None:
        out = _pactl("load-module", *args)
        if out.returncode != 0:
            self.close()
            raise RuntimeError(f"cannot load {args[0]}: {out.stderr}")
        self.modules.append(out.stdout.strip())

    def close(self) -> None:
        for module in reversed(self.modules):
            _pactl("unload-module", module)
        self.modules = []


def as_wav(path: Path, folder: Path) -> Path:
    """The clip as a 16 kHz mono WAV, which paplay plays sample for sample into the sink."""
    out = folder / (path.stem + ".16k.wav")
    if not out.exists():
        write_wav(out, read_file(path))
    return out


def play(sink: Sink | str, wav: Path, wait: bool = True) -> subprocess.Popen[bytes]:
    name = sink if isinstance(sink, str) else sink.name
    proc = subprocess.Popen(["paplay", f"--device={name}", str(wav)])
    if wait:
        proc.wait(timeout=120)
    return proc


def play_samples(
    sink: Sink, audio: Audio, folder: Path, wait: bool = True
) -> subprocess.Popen[bytes]:
    path = folder / f"gen-{uuid.uuid4().hex[:6]}.wav"
    write_wav(path, audio)
    return play(sink, path, wait)


class Recorder:
    """Records a source (a sink's monitor) to raw 16 kHz samples until stopped."""

    def __init__(self, source: Sink | str, channels: int = 1) -> None:
        name = source if isinstance(source, str) else source.monitor
        self.channels = channels
        self._file = tempfile.NamedTemporaryFile(suffix=".raw", delete=False)  # noqa: SIM115
        self._proc = subprocess.Popen(
            ["parec", f"--device={name}", "--format=s16le", f"--rate={SPEECH_RATE_HZ}",
             f"--channels={channels}", "--raw", "--latency-msec=20"],
            stdout=self._file,
        )  # fmt: skip

    def so_far(self) -> np.ndarray:
        """What has been recorded until now, shaped as ``stop`` returns it."""
        self._file.flush()
        data = np.fromfile(self._file.name, dtype=np.int16)
        return data if self.channels == 1 else data[: len(data) // 2 * 2].reshape(-1, 2)

    def stop(self) -> np.ndarray:
        """The samples; shape (n, channels) for more than one channel."""
        self._proc.send_signal(signal.SIGINT)
        self._proc.wait(timeout=10)
        self._file.close()
        data = np.fromfile(self._file.name, dtype=np.int16)
        os.unlink(self._file.name)
        return data if self.channels == 1 else data[: len(data) // 2 * 2].reshape(-1, 2)


# When set, each agent in the room runs with --debug, and its output and log are appended to
# this file as it is stopped: what it heard and decided, for a room test that failed.
AGENT_LOG = os.environ.get("ROOM_AGENT_LOG", "")


class AgentProcess:
    """``voice-agent`` running in the room, its output collected line by line."""

    def __init__(
        self,
        args: list[str],
        source: str,
        sink: str,
        stdin: bool = False,
        cues: bool = False,
        env: dict[str, str] | None = None,
    ) -> None:
        """``source`` is what the agent hears (a monitor), ``sink`` where it speaks. Without
        ``cues`` the thinking tone is off: the room tests and benchmarks time the reply's own
        sound (the tones have their own tests). ``env`` adds to the agent's environment."""
        full = {k: v for k, v in os.environ.items()
                if not k.startswith(("VOICE_AGENT_", "OPENROUTER_", "OPENAI_"))}  # fmt: skip
        full.update(PULSE_SOURCE=source, PULSE_SINK=sink, PYTHONUNBUFFERED="1")
        if not cues:
            full["VOICE_AGENT_AUDIO_CUES"] = "false"
        full.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "voice_agent", *(["--debug"] if AGENT_LOG else []), *args],
            env=full, text=True,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        self.lines: list[str] = []
        self.errors: list[str] = []
        threading.Thread(
            target=self._read, args=(self.proc.stdout, self.lines), daemon=True
        ).start()
        threading.Thread(
            target=self._read, args=(self.proc.stderr, self.errors), daemon=True
        ).start()

    @staticmethod
    def _read(stream: object, into: list[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            into.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines:
                if re.search(pattern, line):
                    return line
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no line matching {pattern!r}; stdout={self.lines} "
                             f"stderr={self.errors}")  # fmt: skip

    def count(self, pattern: str) -> int:
        """How many lines printed so far match ``pattern``."""
        return sum(bool(re.search(pattern, line)) for line in self.lines)

    def type_line(self, text: str = "") -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def interrupt(self) -> int:
        """Ctrl+C, and the exit code."""
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=30)

    def kill(self) -> None:
        if AGENT_LOG:
            with open(AGENT_LOG, "a") as log:
                log.write("\n".join(["=====", *self.lines, "---", *self.errors, ""]))
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def wait_until(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
