"""The fault table: every way an LLM endpoint misbehaves, injected by a real loopback server
into a real typed session. Each case states what the user is told and what the transcript
holds; in every case the session goes on and answers the next turn, and the API key (a
sentinel, echoed back by the server in error bodies) appears nowhere: not in stdout, not in
stderr with every logger at DEBUG, not in the transcript or its sidecar.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import run_cli, transcript_files
from llm_server import Raw, ScriptedLLM, Step, Stream, delta, sse

from voice_agent.transcript import read

KEY = "sk-SENTINEL-c0ffee-never-show-me"
ECHO = json.dumps({"error": {"message": f"bad request from key {KEY}"}}).encode()
UTF8 = delta("Café ☕ naïve.") + b"data: [DONE]\n\n"
SPLIT = UTF8.index("☕".encode()) + 1  # inside the three bytes of the cup


def failing(status: int, times: int = 1, **headers: str) -> list[Step]:
    return [Raw(status=status, body=ECHO, content_type="application/json", headers=headers)] * times


@dataclass(frozen=True)
class Case:
    steps: list[Step]
    told: str | None  # the one error line the user reads (None: no error)
    kept: str | None  # the first reply as the transcript holds it (None: no reply)
    requests: int = 1  # attempts the agent made for the first turn
    env: dict[str, str] = field(default_factory=dict)


TIMEOUTS = {"VOICE_AGENT_LLM_FIRST_TOKEN_TIMEOUT_S": "1", "VOICE_AGENT_LLM_CHUNK_TIMEOUT_S": "1"}

# fmt: off
CASES = {
    "comment lines and keep-alives": Case(
        [Raw(body=b": OPENROUTER PROCESSING\n\n: keep-alive\n\n" + delta("Fine.")
             + b"data: [DONE]\n\n")], None, "Fine."),
    "CRLF line endings": Case(
        [Raw(body=(delta("Also fine.") + b"data: [DONE]\n\n").replace(b"\n", b"\r\n"))],
        None, "Also fine."),
    "UTF-8 character split across network chunks": Case(
        [Raw(parts=[UTF8[:SPLIT], UTF8[SPLIT:]], pause_s=0.2)], None, "Café ☕ naïve."),
    "error event mid-stream": Case(
        [Raw(body=delta("Let me think") + sse({"error": {"message": f"overloaded {KEY}"}}))],
        "the LLM reported an error mid-reply: overloaded ***", "Let me think"),
    "finish_reason error": Case(
        [Raw(body=delta("Half a", finish="error"))],
        "the LLM reported an error mid-reply", None),
    "stream ends without [DONE] or finish reason": Case(
        [Raw(body=delta("Cut off here"))], None, "Cut off here"),
    "headers, then silence": Case(
        [Raw(parts=[b": hi\n\n"], pause_s=3)] * 3, "stopped answering (timed out)", None,
        requests=3, env=TIMEOUTS),
    "emoji split into surrogate halves across two events": Case(
        [Raw(body=delta("Smile \ud83d", ascii=True) + delta("\ude00 please.", ascii=True)
             + b"data: [DONE]\n\n")], None, "Smile \U0001f600 please."),
    "lone surrogate": Case(
        [Raw(body=delta("Broken \ud83d here.", ascii=True) + b"data: [DONE]\n\n")],
        None, "Broken \ufffd here."),
    "surrogate as the very last character": Case(
        [Raw(body=delta("Ends in half \udbff", ascii=True) + b"data: [DONE]\n\n")],
        None, "Ends in half \ufffd"),
    "a byte a second after the first words (chunk timeout is between events)": Case(
        [Raw(parts=[delta("Dripping")] + [bytes([b]) for b in delta(" on and on.")],
             pause_s=0.5)],
        "stopped answering (timed out)", "Dripping", env=TIMEOUTS),
    "slow drip within the chunk timeout": Case(
        [Stream("Slow but steady.", chunk_delay_s=0.4)], None, "Slow but steady.", env=TIMEOUTS),
    "429 with Retry-After 1": Case(
        [*failing(429, **{"Retry-After": "1"}), Stream("After the wait.")],
        None, "After the wait.", requests=2),
    "429 with Retry-After 3600": Case(
        failing(429, **{"Retry-After": "3600"}), "asks to wait 3600 s before retrying", None),
    "500": Case(failing(500, 3), "LLM error 500: the LLM server failed", None, requests=3),
    "502": Case(failing(502, 3), "LLM error 502: the LLM server failed", None, requests=3),
    "503 once, then a reply": Case(
        [*failing(503), Stream("Back again.")], None, "Back again.", requests=2),
    "400": Case(failing(400), "LLM error 400: the LLM rejected the request", None),
    "401": Case(failing(401), "LLM error 401: the API key was refused", None),
    "402": Case(failing(402), "LLM error 402: the account has no credits left", None),
    "403": Case(failing(403), "LLM error 403: the API key may not use this model", None),
    "404": Case(failing(404), "LLM error 404: not found: check the model name", None),
    "422": Case(failing(422), "LLM error 422: the LLM rejected the request", None),
    "HTML 404 page": Case(
        [Raw(status=404, body=b"<html><body>404 Not Found</body></html>",
             content_type="text/html")],
        "LLM error 404: not found: check the model name and that --llm-url ends in /v1", None),
    "HTML 200 page (not an API)": Case(
        [Raw(body=b"<html>Welcome</html>", content_type="text/html")],
        "answered text/html, not an OpenAI-compatible API", None),
    "plain text (Ollama's root URL)": Case(
        [Raw(body=b"Ollama is running", content_type="text/plain")],
        "answered text/plain, not an OpenAI-compatible API", None),
}
# fmt: on


@pytest.mark.parametrize("name", CASES)
def test_fault_is_told_in_one_line_and_the_session_goes_on(name: str, tmp_path: Path) -> None:
    case = CASES[name]
    with ScriptedLLM(*case.steps, Stream("All good.")) as server:
        run = session(server.url, tmp_path, case.env)
        assert len(server.requests) == case.requests + 1
    errors = [line for line in run.stderr.splitlines() if line.startswith("voice-agent: error:")]
    if case.told is None:
        assert errors == [], run.stderr[-2000:]
    else:
        assert len(errors) == 1 and case.told in errors[0], run.stderr[-2000:]
    assert "Traceback" not in run.stderr
    turns = [(t.role, t.text) for t in read(only_transcript(tmp_path)).turns]
    first = [("USER", "First question?")] + ([("ASSISTANT", case.kept)] if case.kept else [])
    assert turns == [*first, ("USER", "Second question?"), ("ASSISTANT", "All good.")]
    assert_key_nowhere(run.stdout + run.stderr, tmp_path)


def test_connection_refused_names_the_url_and_keeps_every_turn(tmp_path: Path) -> None:
    run = session("http://127.0.0.1:9/v1", tmp_path, {})
    errors = [line for line in run.stderr.splitlines() if line.startswith("voice-agent: error:")]
    assert len(errors) == 2
    assert all("cannot connect to the LLM at http://127.0.0.1:9/v1" in e for e in errors)
    turns = [(t.role, t.text) for t in read(only_transcript(tmp_path)).turns]
    assert turns == [("USER", "First question?"), ("USER", "Second question?")]
    assert_key_nowhere(run.stdout + run.stderr, tmp_path)


def session(url: str, tmp_path: Path, env: dict[str, str]):  # type: ignore[no-untyped-def]
    return run_cli(
        "--debug", "chat", "--text", "--mute", "--llm-url", url, "--llm-model", "m",
        "--transcripts-dir", str(tmp_path / "t"),
        stdin="First question?\nSecond question?\n",
        env={"TEST_KEY": KEY, "VOICE_AGENT_LLM_API_KEY_ENV": "TEST_KEY",
             "XDG_CONFIG_HOME": str(tmp_path), **env},
    )  # fmt: skip


def only_transcript(tmp_path: Path) -> Path:
    [md] = transcript_files(tmp_path / "t")
    return md


def assert_key_nowhere(output: str, tmp_path: Path) -> None:
    assert "DEBUG" in output  # every logger was at DEBUG
    assert KEY not in output
    for path in (tmp_path / "t").rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path
