"""Secrets stay secret in the corners: a key cut mid-way by a length limit, a password in the
LLM URL, a key pasted where the name of its environment variable belongs."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from conftest import run_cli
from llm_server import Raw, ScriptedLLM, Stream
from test_llm import KEY, collect

from voice_agent.errors import ConfigError, LlmError, LlmHttpError
from voice_agent.llm import Message

PASSWORD = "pa55-SENTINEL-b0b-never-show-me"


@pytest.mark.parametrize("filler", [150, 180, 190, 195, 199])
def test_a_key_straddling_the_length_limit_of_an_error_is_still_hidden(filler: int) -> None:
    message = "x" * filler + " " + KEY + " tail"
    body = json.dumps({"error": {"message": message}}).encode()
    server = ScriptedLLM(Raw(status=400, body=body, content_type="application/json"))
    with server, pytest.raises(LlmHttpError) as err:
        collect(server.url, [Message("user", "hi")], key_env="TEST_KEY")
    assert KEY[:8] not in str(err.value)


def test_a_key_straddling_the_limit_of_an_error_event_mid_reply_is_still_hidden() -> None:
    event = {"error": {"message": "y" * 190 + " " + KEY}}
    body = b"data: " + json.dumps(event).encode() + b"\n\n"
    with ScriptedLLM(Raw(body=body)) as server, pytest.raises(LlmError) as err:
        collect(server.url, [Message("user", "hi")], key_env="TEST_KEY")
    assert KEY[:8] not in str(err.value)


def test_a_password_in_the_llm_url_is_used_but_never_shown(tmp_path: Path) -> None:
    with ScriptedLLM(Stream("Hello there."), Raw(status=500, body=b"down")) as server:
        url = server.url.replace("http://", f"http://me:{PASSWORD}@")
        run = run_cli(
            "--debug", "chat", "--text", "--mute", "--llm-url", url,
            "--transcripts-dir", str(tmp_path / "t"),
            stdin="Hi?\nAgain?\n", env={"XDG_CONFIG_HOME": str(tmp_path)},
        )  # fmt: skip
        config = run_cli("config", "--llm-url", url, env={"XDG_CONFIG_HOME": str(tmp_path)})
        sent = server.headers[0]["Authorization"]
    assert sent == "Basic " + base64.b64encode(f"me:{PASSWORD}".encode()).decode()
    assert "Hello there." in run.stdout
    assert "LLM error 500" in run.stderr  # the URL is named in errors, without the password
    assert "me:***@127.0.0.1" in run.stdout + run.stderr
    everything = run.stdout + run.stderr + config.stdout + config.stderr
    assert "DEBUG" in run.stderr and PASSWORD not in everything
    assert "me:***@" in config.stdout
    for path in (tmp_path / "t").rglob("*"):
        if path.is_file():
            assert PASSWORD.encode() not in path.read_bytes()


def test_a_password_is_not_sent_over_plain_http_to_another_host() -> None:
    from voice_agent.config import LlmConfig
    from voice_agent.llm_endpoint import resolve

    with pytest.raises(ConfigError, match="refusing to send the password") as err:
        resolve(LlmConfig(base_url=f"http://me:{PASSWORD}@example.com/v1"), {})
    assert PASSWORD not in str(err.value)


@pytest.mark.parametrize("value", [KEY, "sk_live_51HxAbCdEfGh1234567890", "my key"])
def test_a_key_put_where_its_variable_name_belongs_is_refused_without_echo(
    value: str, tmp_path: Path
) -> None:
    env = {"VOICE_AGENT_LLM_API_KEY_ENV": value, "XDG_CONFIG_HOME": str(tmp_path)}
    for args in (["config"], ["chat", "--text", "--mute"]):
        run = run_cli(*args, stdin="Hi?\n", env=env)
        assert run.code == 1
        assert "llm.api_key_env" in run.stderr and "name of an environment variable" in run.stderr
        assert value not in run.stdout + run.stderr
        assert "Traceback" not in run.stderr
