"""The streaming chat client against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from llm_server import Raw, ScriptedLLM, Stream, delta

from voice_agent.config import LlmConfig
from voice_agent.errors import (
    ConfigError,
    LlmConnectionError,
    LlmError,
    LlmHttpError,
    LlmProtocolError,
)
from voice_agent.llm import ChatClient, Conversation, Message
from voice_agent.llm_endpoint import OPENROUTER_MODEL, OPENROUTER_URL, resolve
from voice_agent.llm_reply import ReplyChunk

KEY = "sk-SENTINEL-7f3a9c-never-show-me"


def collect(
    server_url: str, messages: list[Message], key_env: str = "", **cfg: float
) -> list[ReplyChunk]:
    config = LlmConfig(base_url=server_url, model="m", api_key_env=key_env, **cfg)  # type: ignore[arg-type]
    endpoint = resolve(config, {"TEST_KEY": KEY} if key_env else {})

    async def go() -> list[ReplyChunk]:
        client = ChatClient(endpoint, config)
        try:
            return [c async for c in client.stream(messages)]
        finally:
            await client.aclose()

    return asyncio.run(go())


def text_of(chunks: list[ReplyChunk]) -> str:
    return "".join(c.text for c in chunks)


@pytest.fixture
def caplog_debug(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG)
    yield caplog


def test_streamed_reply_arrives_in_pieces_with_history_and_system_prompt() -> None:
    with ScriptedLLM(Stream("One two three four.")) as server:
        conv = Conversation("Be brief.", history_chars=10_000)
        conv.add("user", "first")
        conv.add("assistant", "answer one")
        conv.add("user", "second")
        chunks = collect(server.url, conv.request())
    assert text_of(chunks) == "One two three four."
    assert len([c for c in chunks if c.text]) == 4
    assert chunks[-1].finish_reason == "stop"
    sent = server.requests[0]
    assert sent["stream"] is True
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert [m["content"] for m in sent["messages"][1:]] == ["first", "answer one", "second"]


def test_comments_crlf_multiline_data_and_split_utf8_are_understood() -> None:
    multi_line = b'data: {"choices": [{"delta":\ndata:  {"content": " ok"}}]}\n\n'
    body = (
        b": OPENROUTER PROCESSING\r\n\r\n"
        + delta("Caf").replace(b"\n", b"\r\n")
        + delta("\u00e9 na\u00efve \U0001f600")
        + multi_line
        + delta("", finish="stop")
        + b"data: [DONE]\n\n"
    )
    cut = body.index("\u00e9".encode()) + 1  # inside the two-byte character
    parts = [body[:cut], body[cut:]]
    with ScriptedLLM(Raw(parts=parts, pause_s=0.05)) as server:
        chunks = collect(server.url, [Message("user", "hi")])
    assert text_of(chunks) == "Caf\u00e9 na\u00efve \U0001f600 ok"


def test_reasoning_is_kept_apart_from_the_reply() -> None:
    import json

    event = {"choices": [{"delta": {"reasoning": "let me think", "content": ""}}]}
    body = b"data: " + json.dumps(event).encode() + b"\n\n" + delta("Yes.", finish="stop")
    with ScriptedLLM(Raw(body=body)) as server:
        chunks = collect(server.url, [Message("user", "hi")])
    assert text_of(chunks) == "Yes."
    assert "".join(c.reasoning for c in chunks) == "let me think"


def test_stream_that_breaks_off_keeps_the_text_and_says_incomplete() -> None:
    with ScriptedLLM(Raw(body=delta("Half a"))) as server:
        chunks = collect(server.url, [Message("user", "hi")])
    assert text_of(chunks) == "Half a"
    assert chunks[-1].finish_reason == "incomplete"


def test_html_answer_is_a_clear_protocol_error() -> None:
    page = b"<html><body>Ollama is running</body></html>"
    with (
        ScriptedLLM(Raw(status=200, body=page, content_type="text/html")) as server,
        pytest.raises(LlmProtocolError, match=r"answered text/html, not an OpenAI"),
    ):
        collect(server.url, [Message("user", "hi")])


def test_connection_refused_names_the_url() -> None:
    with pytest.raises(
        LlmConnectionError, match=r"cannot connect to the LLM at http://127.0.0.1:9/v1"
    ):
        collect("http://127.0.0.1:9/v1", [Message("user", "hi")])


def test_server_that_goes_quiet_after_headers_times_out() -> None:
    with (
        ScriptedLLM(Raw(parts=[b": hello\n\n"], pause_s=3)) as server,
        pytest.raises(LlmConnectionError, match="timed out"),
    ):
        collect(server.url, [Message("user", "hi")], first_token_timeout_s=0.5, chunk_timeout_s=0.5)


@pytest.mark.parametrize(
    ("status", "words"),
    [
        (401, "key was refused"),
        (402, "no credits"),
        (404, "check the model name"),
        (429, "rate limited"),
        (500, "server failed"),
    ],
)
def test_http_errors_say_what_to_do_and_never_show_the_key(
    status: int, words: str, caplog_debug: pytest.LogCaptureFixture
) -> None:
    echo = b'{"error": {"message": "bad key ' + KEY.encode() + b'"}}'
    with ScriptedLLM(Raw(status=status, body=echo, content_type="application/json")) as server:
        with pytest.raises(LlmHttpError, match=words) as err:
            collect(server.url, [Message("user", "hi")], key_env="TEST_KEY")
        assert server.headers[0]["Authorization"] == f"Bearer {KEY}"
    assert KEY not in str(err.value)
    assert KEY not in repr(err.value)
    assert KEY not in caplog_debug.text


def test_endpoint_repr_never_shows_the_key() -> None:
    ep = resolve(LlmConfig(), {"OPENROUTER_API_KEY": KEY})
    assert (ep.base_url, ep.model) == (OPENROUTER_URL, OPENROUTER_MODEL)
    assert KEY not in repr(ep) and KEY not in str(ep.api_key)


def test_key_is_never_sent_over_plain_http_to_another_host() -> None:
    with pytest.raises(ConfigError, match="refusing to send the API key"):
        resolve(LlmConfig(base_url="http://example.com/v1", api_key_env="K"), {"K": KEY})


def test_history_budget_drops_oldest_turns_but_keeps_the_system_prompt() -> None:
    conv = Conversation("sys", history_chars=25)
    for i in range(10):
        conv.add("user", f"question {i}")
        conv.add("assistant", f"answer {i}")
    sent = conv.request()
    assert sent[0] == Message("system", "sys")
    assert [m.content for m in sent[1:]] == ["question 9", "answer 9"]
    assert len(conv.turns) <= 4  # older turns can never be sent again: not kept in memory


def test_429_with_retry_after_is_retried_and_the_reply_arrives() -> None:
    limited = Raw(status=429, body=b'{"error": {"message": "slow down"}}',
                  content_type="application/json", headers={"Retry-After": "1"})  # fmt: skip
    with ScriptedLLM(limited, Stream("Here you go.")) as server:
        started = time.monotonic()
        chunks = collect(server.url, [Message("user", "hi")])
        waited = time.monotonic() - started
    assert text_of(chunks) == "Here you go."
    assert len(server.requests) == 2
    assert waited >= 0.9  # the server's Retry-After was honoured


def test_retry_after_beyond_the_cap_is_not_retried_and_says_why() -> None:
    limited = Raw(status=429, body=b"{}", content_type="application/json",
                  headers={"Retry-After": "3600"})  # fmt: skip
    with ScriptedLLM(limited, Stream("never")) as server:
        with pytest.raises(LlmHttpError, match="asks to wait 3600 s") as err:
            collect(server.url, [Message("user", "hi")])
        assert len(server.requests) == 1
    assert err.value.status == 429


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_retried_twice_then_reported(status: int) -> None:
    failing = Raw(status=status, body=b"oops", content_type="text/plain")
    with ScriptedLLM(failing, failing, Stream("Recovered.")) as server:
        assert text_of(collect(server.url, [Message("user", "hi")])) == "Recovered."
        assert len(server.requests) == 3
    with ScriptedLLM(failing) as server:
        with pytest.raises(LlmHttpError, match=f"LLM error {status}"):
            collect(server.url, [Message("user", "hi")])
        assert len(server.requests) == 3


@pytest.mark.parametrize("status", [400, 401, 402, 403, 404, 422])
def test_client_errors_are_not_retried(status: int) -> None:
    with ScriptedLLM(Raw(status=status, body=b"{}", content_type="application/json")) as server:
        with pytest.raises(LlmHttpError):
            collect(server.url, [Message("user", "hi")])
        assert len(server.requests) == 1


def test_nothing_is_retried_once_part_of_the_reply_has_arrived() -> None:
    broken = Raw(body=delta("Half of it") + b'data: {"error": {"message": "overloaded"}}\n\n')
    got: list[ReplyChunk] = []
    with ScriptedLLM(broken, Stream("second try")) as server:
        config = LlmConfig(base_url=server.url, model="m")

        async def go() -> None:
            client = ChatClient(resolve(config, {}), config)
            try:
                async for c in client.stream([Message("user", "hi")]):
                    got.append(c)
            finally:
                await client.aclose()

        with pytest.raises(LlmError, match="overloaded"):
            asyncio.run(go())
        assert len(server.requests) == 1
    assert text_of(got) == "Half of it"


def test_the_connection_opened_when_the_user_starts_speaking_is_the_one_the_request_uses() -> None:
    """A pause longer than httpx's 5 s default keep-alive must not cost a new connection
    (over TLS to a provider, a new handshake delays the reply by 0.1-0.3 s)."""
    with ScriptedLLM(Stream("Hi.")) as server:
        config = LlmConfig(base_url=server.url, model="m")
        endpoint = resolve(config, {})
        assert endpoint is not None

        async def go() -> None:
            client = ChatClient(endpoint, config)
            try:
                await client.warm()  # the user starts speaking...
                await asyncio.sleep(6.0)  # ...and talks for a while
                assert text_of([c async for c in client.stream([Message("user", "hi")])])
            finally:
                await client.aclose()

        asyncio.run(go())
    [(head, warm_port), (post, request_port)] = server.ports
    assert (head, post) == ("HEAD", "POST")
    assert request_port == warm_port


def test_the_http_client_comes_without_its_command_line_tool() -> None:
    # httpx would import click, rich and pygments (5.7 MB resident) for a CLI the agent
    # never runs; on a Raspberry Pi with both speech stages on a server that is a tenth of
    # the agent's memory
    probe = (
        "import sys, voice_agent.llm_reply, voice_agent.openai_speech, voice_agent.cli; "
        "print(' '.join(m for m in ('click', 'rich', 'pygments') if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=True).stdout.strip()  # fmt: skip
    assert loaded == ""
