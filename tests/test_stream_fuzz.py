"""Whatever a model server streams back, the session goes on and keeps every user turn.

One real text session (the CLI in its own process) answers turn after turn; for each turn
hypothesis makes up the server's answer: valid and broken SSE events, random bytes, random
JSON, lone surrogates, control characters, UTF-8 split across network chunks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import transcript_files
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from llm_server import Raw, ScriptedLLM, delta, sse

from voice_agent.transcript import read

ODD = ["\ud83d", "\ude00", "\udbff", "\x1b", "[", "\x00", "\r", "\u009b", "\ufeff", "\u202e"]
texts = st.text(st.one_of(st.characters(), st.sampled_from(ODD)), max_size=40)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)
choice_like = st.fixed_dictionaries(
    {
        "choices": st.lists(
            st.fixed_dictionaries(
                {"delta": st.one_of(json_values, st.fixed_dictionaries({"content": json_values}))},
                optional={"finish_reason": json_values},
            ),
            max_size=2,
        )
    }
)
events = st.one_of(
    st.builds(lambda t, a: delta(t, ascii=a), texts, st.booleans()),
    texts.map(lambda t: delta(t, ascii=True).replace(b"\\ud83d", b"\xed\xa0\xbd")),  # CESU
    json_values.map(lambda v: sse(v, ascii=True)),
    choice_like.map(lambda v: sse(v, ascii=True)),
    st.binary(max_size=60),
    st.sampled_from([b"data: [DONE]\n\n", b": keep-alive\n\n", b"\r\n", b"event: x\n",
                     b"data: {\"error\": {\"message\": \"boom\"}}\n\n", b"data:\n\n"]),
)  # fmt: skip


@st.composite
def streams(draw: st.DrawFn) -> Raw:
    body = b"".join(draw(st.lists(events, max_size=8)))
    cuts = sorted(set(draw(st.lists(st.integers(0, len(body)), max_size=4))))
    parts = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    return Raw(parts=parts, pause_s=0.005)


@pytest.mark.slow
def test_random_streams_never_end_the_session_and_every_turn_is_kept(tmp_path: Path) -> None:
    folder = tmp_path / "t"
    out, err = (tmp_path / "stdout").open("wb"), (tmp_path / "stderr").open("wb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICE_AGENT_")}
    env.update(VOICE_AGENT_LLM_FIRST_TOKEN_TIMEOUT_S="2", VOICE_AGENT_LLM_CHUNK_TIMEOUT_S="2")
    asked: list[str] = []
    with ScriptedLLM() as server:
        proc = subprocess.Popen(
            [sys.executable, "-m", "voice_agent", "chat", "--text", "--mute", "--llm-url",
             server.url, "--llm-model", "m", "--transcripts-dir", str(folder)],
            stdin=subprocess.PIPE, stdout=out, stderr=err, env=env,
        )  # fmt: skip
        assert proc.stdin is not None

        @settings(max_examples=120, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
        @given(streams())
        def one_turn(step: Raw) -> None:
            server.script = [step]
            question = f"Question {len(asked) + 1}?"
            asked.append(question)
            proc.stdin.write(question.encode() + b"\n")  # type: ignore[union-attr]
            proc.stdin.flush()  # type: ignore[union-attr]
            wait_for_records(folder, len(asked), proc)

        try:
            one_turn()
        finally:
            proc.stdin.close()
            code = proc.wait(timeout=60)
    stderr = (tmp_path / "stderr").read_text(errors="replace")
    assert code in (0, 1), stderr[-3000:]
    assert "Traceback" not in stderr and "unexpected error" not in stderr, stderr[-3000:]
    [md] = transcript_files(folder)
    users = [t.text for t in read(md).turns if t.role == "USER"]
    assert users == asked
    (tmp_path / "stdout").read_bytes().decode("utf-8")  # what was shown is valid UTF-8


def wait_for_records(folder: Path, n: int, proc: subprocess.Popen[bytes]) -> None:
    """Until the sidecar holds a record for turn n (every user turn gets one)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the session ended"
        for sidecar in folder.rglob("*.jsonl"):
            records = [json.loads(line) for line in sidecar.read_text().splitlines()]
            if sum(1 for r in records if "turn" in r) >= n:
                return
        time.sleep(0.02)
    raise AssertionError(f"turn {n} was never recorded")


def test_invalid_utf8_typed_on_stdin_is_replaced_and_the_session_goes_on(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICE_AGENT_")}
    with ScriptedLLM() as server:
        run = subprocess.run(
            [sys.executable, "-m", "voice_agent", "chat", "--text", "--mute", "--llm-url",
             server.url, "--llm-model", "m", "--transcripts-dir", str(tmp_path / "t")],
            input=b"Caf\xe9 or t\xff?\nSecond question?\n", capture_output=True, env=env,
            timeout=60,
        )  # fmt: skip
    assert run.returncode == 0, run.stderr
    [md] = transcript_files(tmp_path / "t")
    users = [t.text for t in read(md).turns if t.role == "USER"]
    assert users == ["Caf\ufffd or t\ufffd?", "Second question?"]
