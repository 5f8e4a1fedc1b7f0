"""A real OpenAI-compatible HTTP server on 127.0.0.1, scripted per test.

Each POST to /v1/chat/completions takes the next step of the script (or repeats the last one)
and records the request, so tests can assert on what the agent sent.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Stream:
    """A streamed reply: ``text`` sent as SSE chunks of ``words_per_chunk`` words."""

    text: str
    first_token_delay_s: float = 0.0
    chunk_delay_s: float = 0.0
    words_per_chunk: int = 1
    model: str = "scripted-model"
    # a thinking model's reasoning, streamed word by word over ``reasoning_s`` before the text
    reasoning: str = ""
    reasoning_s: float = 0.0

    def chunks(self) -> list[str]:
        words = self.text.split(" ")
        out = []
        for i in range(0, len(words), self.words_per_chunk):
            piece = " ".join(words[i : i + self.words_per_chunk])
            out.append(piece if i == 0 else " " + piece)
        return out


@dataclass
class Raw:
    """Any response: status, headers and body bytes (sent in ``parts`` with pauses)."""

    status: int = 200
    body: bytes = b""
    content_type: str = "text/event-stream"
    headers: dict[str, str] = field(default_factory=dict)
    parts: list[bytes] | None = None
    pause_s: float = 0.0


Step = Stream | Raw | Callable[[BaseHTTPRequestHandler], None]


def sse(obj: Any, ascii: bool = False) -> bytes:
    """One event; ``ascii`` writes non-ASCII as JSON escapes, lone surrogates included;
    without it a lone surrogate goes out as the invalid UTF-8 a careless server would send."""
    return (
        b"data: " + json.dumps(obj, ensure_ascii=ascii).encode("utf-8", "surrogatepass") + b"\n\n"
    )


def reasoning_delta(text: str) -> bytes:
    """Thinking as OpenRouter streams it: ``delta.reasoning``, the content empty."""
    choice = {"index": 0, "delta": {"content": "", "reasoning": text}, "finish_reason": None}
    return sse({"id": "x", "object": "chat.completion.chunk", "choices": [choice]})


def delta(
    text: str, finish: str | None = None, model: str = "scripted-model", ascii: bool = False
) -> bytes:
    return sse(
        {
            "id": "x",
            "object": "chat.completion.chunk",
            "model": model,
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}],
        },
        ascii,
    )


class ScriptedLLM:
    def __init__(self, *script: Step, port: int = 0, by_turn: bool = False) -> None:
        """``by_turn``: the step is chosen by the conversation's turn (its number of user
        messages), as a deterministic model would answer: a request sent again for the same
        turn (a speculative one dropped because the user went on) gets the same reply."""
        self.script: list[Step] = list(script) or [Stream("Hello from the scripted server.")]
        self.by_turn = by_turn
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.models = ["scripted-model"]
        self.ports: list[tuple[str, int]] = []  # (method, client port): which connection
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_HEAD(self) -> None:
                outer.ports.append(("HEAD", self.client_address[1]))
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models"):
                    body = json.dumps({"data": [{"id": m} for m in outer.models]}).encode()
                    self._send(200, "application/json", body)
                else:
                    self._send(404, "text/plain", b"not found")

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                raw = self.rfile.read(length)
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, "text/plain", b"404 page not found")
                    return
                outer.ports.append(("POST", self.client_address[1]))
                outer.requests.append(json.loads(raw))
                outer.headers.append(dict(self.headers))
                step = outer._for_turn(outer.requests[-1]) if outer.by_turn else outer._next()
                if isinstance(step, Stream):
                    self._stream(step)
                elif isinstance(step, Raw):
                    self._raw(step)
                else:
                    step(self)

            def _send(self, status: int, ctype: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _stream(self, step: Stream) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                time.sleep(step.first_token_delay_s)
                thoughts = step.reasoning.split(" ") if step.reasoning else []
                for i, word in enumerate(thoughts):
                    self.wfile.write(reasoning_delta(word if i == 0 else " " + word))
                    self.wfile.flush()
                    time.sleep(step.reasoning_s / len(thoughts))
                for i, piece in enumerate(step.chunks()):
                    if i:
                        time.sleep(step.chunk_delay_s)
                    self.wfile.write(delta(piece, model=step.model))
                    self.wfile.flush()
                self.wfile.write(delta("", finish="stop", model=step.model))
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()

            def _raw(self, step: Raw) -> None:
                self.send_response(step.status)
                self.send_header("Content-Type", step.content_type)
                for k, v in step.headers.items():
                    self.send_header(k, v)
                self.send_header("Connection", "close")
                if step.parts is None:
                    self.send_header("Content-Length", str(len(step.body)))
                self.end_headers()
                self.close_connection = True
                for part in step.parts if step.parts is not None else [step.body]:
                    self.wfile.write(part)
                    self.wfile.flush()
                    time.sleep(step.pause_s)

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _next(self) -> Step:
        return self.script.pop(0) if len(self.script) > 1 else self.script[0]

    def _for_turn(self, request: dict[str, Any]) -> Step:
        turn = self._turns().index(_history(request))
        return self.script[min(turn, len(self.script) - 1)]

    def _turns(self) -> list[str]:
        """Each turn asked about, in order, as the conversation before its question: a request
        sent again for the same turn has the same history (and counts once), also when the
        agent has trimmed old turns from it."""
        return list(dict.fromkeys(_history(r) for r in self.requests))

    def turns_asked(self) -> int:
        """How many turns the model was asked about (a re-sent request counts once)."""
        return len(self._turns())

    def asked(self) -> list[str]:
        """What each request asked about: its last user message."""
        return [self.user_messages(i)[-1] for i in range(len(self.requests))]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> ScriptedLLM:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def user_messages(self, request: int = -1) -> list[str]:
        return [m["content"] for m in self.requests[request]["messages"] if m["role"] == "user"]


def _history(request: dict[str, Any]) -> str:
    return json.dumps(request["messages"][:-1], sort_keys=True)


def serve(*script: Step) -> Iterator[ScriptedLLM]:
    with ScriptedLLM(*script) as server:
        yield server
