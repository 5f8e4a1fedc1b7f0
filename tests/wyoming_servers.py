"""The real Wyoming speech servers (wyoming-faster-whisper, wyoming-piper), started on loopback
ports with the bundled models, offline: for tests and the latency benchmark."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from voice_agent.stt import resolve_model
from voice_agent.tts import resolve_voice


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def wyoming_server(module: str, *args: str, data: Path, port: int = 0) -> Iterator[str]:
    """A real Wyoming server on loopback; its tcp:// URI once it accepts connections."""
    port = port or free_port()
    uri = f"tcp://127.0.0.1:{port}"
    data.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", module, "--uri", uri, "--data-dir", str(data), *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            assert proc.poll() is None, f"{module} exited: {proc.communicate()[1]}"
            assert time.monotonic() < deadline, f"{module} did not start"
            time.sleep(0.2)
        yield uri
    finally:
        proc.terminate()
        proc.wait(timeout=10)


STT_ARGS = ["--model", str(resolve_model("bundled")), "--local-files-only", "--language", "en",
            "--compute-type", "int8", "--beam-size", "1"]  # fmt: skip


@contextlib.contextmanager
def speech_servers(data: Path) -> Iterator[tuple[str, str]]:
    """Both servers, with the bundled model and voice; their URIs (speech to text, to speech)."""
    with (
        wyoming_server("wyoming_faster_whisper", *STT_ARGS, data=data / "stt") as stt,
        wyoming_server("wyoming_piper", "--voice", str(resolve_voice("bundled")),
                       data=data / "tts") as tts,
    ):  # fmt: skip
        yield stt, tts
