"""A real OpenAI-compatible audio API on 127.0.0.1: ``POST /v1/audio/transcriptions`` (a
multipart upload, transcribed by the bundled faster-whisper model) and ``POST
/v1/audio/speech`` (voiced by the bundled Piper voice, as WAV), the documented request and
response shapes. ``fail`` scripts error answers (status, headers, body) taken before the real
ones, so tests can check retries and messages; every request is recorded."""

from __future__ import annotations

import email.parser
import email.policy
import io
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import soundfile

from voice_agent.audio import read_file
from voice_agent.config import SttConfig, TtsConfig
from voice_agent.stt import WhisperStt
from voice_agent.tts import PiperTts


@dataclass
class Failure:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b'{"error": {"message": "scripted failure"}}'


@dataclass
class AudioApiServer:
    url: str
    requests: list[dict[str, Any]]  # path, headers, form fields or JSON body
    failures: list[Failure]
    fail_after: int = 0  # requests answered for real before the failures begin


@contextmanager
def audio_api() -> Iterator[AudioApiServer]:
    stt, tts = WhisperStt(SttConfig()), PiperTts(TtsConfig())
    lock = threading.Lock()
    state = AudioApiServer("", [], [])

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            record: dict[str, Any] = {"path": self.path, "headers": dict(self.headers)}
            with lock:
                state.requests.append(record)
                due = len(state.requests) > state.fail_after
                failure = state.failures.pop(0) if state.failures and due else None
            if failure is not None:
                return self._send(failure.status, failure.body, "application/json",
                                  failure.headers)  # fmt: skip
            if self.path == "/v1/audio/transcriptions":
                fields = multipart(self.headers.get("content-type", ""), body)
                record["form"] = {k: v for k, v in fields.items() if k != "file"}
                audio = read_file_bytes(fields["file"])
                with lock:
                    text = stt.transcribe(audio).text
                return self._send(200, json.dumps({"text": text}).encode(), "application/json")
            if self.path == "/v1/audio/speech":
                request = json.loads(body)
                record["json"] = request
                with lock:
                    voiced = tts.synthesize(request["input"])
                wav = io.BytesIO()
                soundfile.write(wav, voiced.samples, voiced.rate_hz, format="WAV")
                return self._send(200, wav.getvalue(), "audio/wav")
            return self._send(404, b'{"error": {"message": "no such path"}}', "application/json")

        def _send(self, status: int, data: bytes, kind: str,
                  headers: dict[str, str] | None = None) -> None:  # fmt: skip
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def multipart(content_type: str, body: bytes) -> dict[str, Any]:
    """Form fields of a multipart/form-data body: text for fields, bytes for files."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    fields: dict[str, Any] = {}
    for part in message.iter_parts():  # type: ignore[attr-defined]
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        fields[name] = payload if part.get_filename() else payload.decode()
    return fields


def read_file_bytes(data: bytes):  # type: ignore[no-untyped-def]
    import tempfile
    from pathlib import Path

    with tempfile.NamedTemporaryFile(suffix=".wav") as f:
        Path(f.name).write_bytes(data)
        return read_file(Path(f.name))
