"""One streamed chat reply read off the wire: Server-Sent Events become ``ReplyChunk``s, with
timeouts that count between events, text made valid as it arrives, and a server's errors put
in words that never hold a secret."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
from httpx_sse import EventSource, ServerSentEvent

from voice_agent.config import LlmConfig
from voice_agent.errors import LlmError, LlmHttpError, LlmProtocolError
from voice_agent.llm_endpoint import Endpoint
from voice_agent.safe_text import SurrogateJoiner, valid

log = logging.getLogger(__name__)
ERROR_DETAIL_CHARS = 200  # of a server's error message, quoted in ours


@dataclass(frozen=True)
class ReplyChunk:
    """A piece of the streamed reply. ``reasoning`` is the model's thinking, never spoken."""

    text: str = ""
    reasoning: str = ""
    finish_reason: str | None = None  # set on the last chunk; "incomplete" if the stream broke


async def read_reply(
    resp: httpx.Response, endpoint: Endpoint, config: LlmConfig, started: float
) -> AsyncIterator[ReplyChunk]:
    """The reply's chunks as they arrive; the last carries ``finish_reason``. ``started`` is
    ``time.monotonic()`` when the request left (the turn timeout counts from it)."""
    content_type = resp.headers.get("content-type", "")
    if content_type.startswith("application/json"):
        # Some servers ignore "stream": answer with the whole completion at once.
        data = _json(await resp.aread(), endpoint.shown_url)
        yield ReplyChunk(text=_message_text(data, endpoint.shown_url), finish_reason="stop")
        return
    events = EventSource(resp).aiter_sse().__aiter__()
    got_token = False
    text, reasoning = SurrogateJoiner(), SurrogateJoiner()
    while True:
        # The chunk timeout counts between SSE events, not between bytes: a server that
        # drips a byte a second would otherwise hold the turn until the turn timeout.
        deadline = config.turn_timeout_s - (time.monotonic() - started)
        gap = config.chunk_timeout_s if got_token else config.first_token_timeout_s
        try:
            # asyncio.timeout, not wait_for: 3.11's wait_for returns a result that arrives as
            # the task is cancelled, and the cancellation is lost
            async with asyncio.timeout(max(min(deadline, gap), 0.001)):
                event = await anext(events)
        except StopAsyncIteration:
            log.info("reply stream ended without [DONE] or finish_reason")
            yield ReplyChunk(text.flush(), reasoning.flush(), finish_reason="incomplete")
            return
        parsed = parse_event(event, endpoint)
        if parsed is None:
            continue
        got_token = got_token or bool(parsed.text or parsed.reasoning)
        done = parsed.finish_reason is not None
        chunk = ReplyChunk(
            text.feed(parsed.text) + (text.flush() if done else ""),
            reasoning.feed(parsed.reasoning) + (reasoning.flush() if done else ""),
            parsed.finish_reason,
        )
        if chunk.text or chunk.reasoning or done:
            yield chunk
        if done:
            return


def parse_event(event: ServerSentEvent, endpoint: Endpoint) -> ReplyChunk | None:
    if event.data.strip() == "[DONE]":
        return ReplyChunk(finish_reason="stop")
    if not event.data.strip():
        return None
    data = _json(event.data.encode(), endpoint.shown_url)
    if data.get("error"):
        detail = error_detail(data, endpoint)
        raise LlmError(f"the LLM reported an error mid-reply: {detail}")
    choices = data.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else {}
    choice = choice if isinstance(choice, dict) else {}
    delta = choice.get("delta")
    delta = delta if isinstance(delta, dict) else {}
    finish = choice.get("finish_reason")
    if finish == "error":
        raise LlmError("the LLM reported an error mid-reply")
    reasoning = delta.get("reasoning") or delta.get("reasoning_content") or ""
    return ReplyChunk(
        text=_text(delta.get("content")),
        reasoning=_text(reasoning),
        finish_reason=finish if finish is None else str(finish),
    )


def error_detail(data: dict[str, Any], endpoint: Endpoint) -> str:
    """The server's own error message, made safe to show: providers sometimes echo the
    key they refused, so secrets are hidden before the message is cut to length (a key
    cut in half would no longer be found)."""
    text = error_message(data)
    for secret in endpoint.secrets():
        text = text.replace(secret, "***")
    return text[:ERROR_DETAIL_CHARS]


async def check_response(resp: httpx.Response, endpoint: Endpoint) -> None:
    """Raise for an HTTP error (``Retryable`` when worth another try) or a non-API answer."""
    base = endpoint.shown_url
    if resp.status_code >= 400:
        body = (await resp.aread())[:4000]
        error = _http_error(resp.status_code, error_detail(try_json(body), endpoint), base)
        should = resp.headers.get("x-should-retry")
        if should == "true" or (should != "false" and resp.status_code in RETRY_STATUSES):
            raise Retryable(error, retry_after(resp.headers))
        raise error
    content_type = resp.headers.get("content-type", "")
    if not content_type.startswith(("text/event-stream", "application/json")):
        kind = content_type.split(";")[0] or "no content type"
        raise LlmProtocolError(
            f"{base}/chat/completions answered {kind}, not an OpenAI-compatible API: "
            "check that --llm-url points at the API root (usually ending in /v1)"
        )


RETRY_STATUSES = {408, 409, 429, 500, 502, 503, 504}


class Retryable(Exception):
    """An attempt failed in a way worth another try (the error to raise if not)."""

    def __init__(self, error: LlmError, after_s: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.after_s = after_s


def retry_after(headers: httpx.Headers) -> float | None:
    """Seconds the server asks for: ``retry-after-ms``, or ``Retry-After`` in seconds or as a
    date."""
    with contextlib.suppress(ValueError):
        if "retry-after-ms" in headers:
            return float(headers["retry-after-ms"]) / 1000
    value = headers.get("retry-after")
    if value is None:
        return None
    with contextlib.suppress(ValueError):
        return max(0.0, float(value))
    with contextlib.suppress(TypeError, ValueError):
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    return None


def _http_error(status: int, detail: str, base: str) -> LlmHttpError:
    hints = {
        401: "the API key was refused: check the key (its environment variable or llm.api_key)",
        403: "the API key may not use this model or endpoint",
        402: "the account has no credits left: top it up at the provider",
        404: "not found: check the model name and that --llm-url ends in /v1",
        408: "the request timed out at the server",
        429: "rate limited by the provider: wait a moment and try again",
    }
    hint = hints.get(status) or (
        "the LLM server failed" if status >= 500 else "the LLM rejected the request"
    )
    if status == 404 and not base.rstrip("/").endswith("/v1"):
        hint += f" (try {base.rstrip('/')}/v1)"
    suffix = f" ({detail})" if detail else ""
    return LlmHttpError(f"LLM error {status}: {hint}{suffix}", status)


def try_json(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        return {}
    return data if isinstance(data, dict) else {}


def _json(raw: bytes, base: str) -> dict[str, Any]:
    data = try_json(raw)
    if not data:
        raise LlmProtocolError(
            f"the LLM at {base} sent something that is not OpenAI-compatible JSON"
        )
    return data


def error_message(data: dict[str, Any]) -> str:
    err = data.get("error")
    if isinstance(err, dict):
        err = err.get("message", "")
    return " ".join(str(err).split()) if isinstance(err, (str, int, float)) else ""


def _text(value: object) -> str:
    """A delta's text; anything else a server may put there (a number, a list) is ignored."""
    return value if isinstance(value, str) else ""


def _message_text(data: dict[str, Any], base: str) -> str:
    try:
        return valid(str(data["choices"][0]["message"]["content"] or ""))
    except (KeyError, IndexError, TypeError):
        raise LlmProtocolError(f"the LLM at {base} answered without choices[0].message") from None
