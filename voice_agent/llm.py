"""Chat with an OpenAI-compatible endpoint: streamed replies over Server-Sent Events.

Every failure becomes an ``LlmError`` whose message is one line a user can act on and never
contains the API key.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import email.utils
import json
import logging
import random
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
from httpx_sse import EventSource, ServerSentEvent

from voice_agent.config import LlmConfig
from voice_agent.errors import (
    LlmConnectionError,
    LlmError,
    LlmHttpError,
    LlmProtocolError,
)
from voice_agent.llm_endpoint import Endpoint
from voice_agent.safe_text import SurrogateJoiner, valid

if TYPE_CHECKING:
    from voice_agent.local_llm import LocalServer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Message:
    role: str  # "system", "user" or "assistant"
    content: str


@dataclass(frozen=True)
class ReplyChunk:
    """A piece of the streamed reply. ``reasoning`` is the model's thinking, never spoken."""

    text: str = ""
    reasoning: str = ""
    finish_reason: str | None = None  # set on the last chunk; "incomplete" if the stream broke


class Conversation:
    """The LLM's view of the session: system prompt plus the turns that fit the budget."""

    def __init__(self, system_prompt: str, history_chars: int) -> None:
        self.system_prompt = system_prompt
        self.history_chars = history_chars
        self.turns: list[Message] = []
        self._chars = 0

    def add(self, role: str, content: str) -> None:
        """Add a turn; turns that can never be sent again are forgotten, so an hours-long
        session holds no more than the budget in memory (the transcript has them all)."""
        self.turns.append(Message(role, content))
        self._chars += len(content)
        while len(self.turns) > 1 and self._chars - len(self.turns[0].content) >= (
            self.history_chars
        ):
            self._chars -= len(self.turns.pop(0).content)

    def drop_last_user(self) -> None:
        """Forget an unanswered question so the next request keeps roles alternating."""
        if self.turns and self.turns[-1].role == "user":
            self._chars -= len(self.turns.pop().content)

    def request(self, budget_chars: int | None = None) -> list[Message]:
        """System prompt plus the newest turns within the budget (at least the last turn)."""
        budget = self.history_chars if budget_chars is None else budget_chars
        kept: list[Message] = []
        used = 0
        for msg in reversed(self.turns):
            used += len(msg.content)
            if kept and used > budget:
                break
            kept.append(msg)
        system = [Message("system", self.system_prompt)] if self.system_prompt else []
        return system + kept[::-1]


class ChatClient:
    """Talks to one endpoint. With ``server`` (the embedded model), the client owns that
    server: it waits for it before the first request and stops it on close."""

    def __init__(
        self, endpoint: Endpoint, config: LlmConfig, server: LocalServer | None = None
    ) -> None:
        self.endpoint = endpoint
        self.config = config
        self.server = server
        self.model = endpoint.model
        headers = {"Accept": "text/event-stream"}
        if endpoint.api_key is not None:
            headers["Authorization"] = f"Bearer {endpoint.api_key.reveal()}"
        if endpoint.provider == "OpenRouter":
            headers["X-Title"] = "voice-agent"
        auth = (endpoint.user, endpoint.password.reveal() if endpoint.password else "")
        self._http = httpx.AsyncClient(
            headers=headers,
            auth=auth if endpoint.user or endpoint.password else None,
            # reading the stream is timed per SSE event in _chunks; this is only a backstop
            timeout=httpx.Timeout(
                max(config.chunk_timeout_s, config.first_token_timeout_s),
                connect=config.connect_timeout_s,
            ),
            follow_redirects=False,
            # httpx drops an idle connection after 5 s; people pause longer than that
            # between turns, and a new TLS handshake costs the next reply 0.1-0.3 s
            limits=httpx.Limits(keepalive_expiry=KEEPALIVE_S),
        )
        self._last_contact = 0.0  # time.monotonic() of the last exchange with the server

    async def aclose(self) -> None:
        await self._http.aclose()
        if self.server is not None:
            await asyncio.to_thread(self.server.stop)

    async def warm(self) -> None:
        """Open, or check, the connection before a request needs it (called when the user
        starts speaking). A HEAD of the API root is cheap for any provider; its status does
        not matter, and a failure is left for the real request to report."""
        if time.monotonic() - self._last_contact < WARM_AFTER_S:
            return
        self._last_contact = time.monotonic()
        try:
            await self._http.head(
                self.endpoint.base_url + "/", timeout=self.config.connect_timeout_s
            )
        except httpx.HTTPError as exc:
            log.debug("warming the connection failed: %s", type(exc).__name__)

    async def prime(self, system_prompt: str) -> None:
        """One tiny completion, for a model on this machine only (it costs nothing): its
        first evaluation and the system prompt's prefix are then done before the first turn
        (measured with the embedded model: first token 0.22 s cold, 0.02 s primed)."""
        messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
        body = {"model": await self.ensure_model(), "max_tokens": 1,
                "messages": [*messages, {"role": "user", "content": "Hello."}]}  # fmt: skip
        try:
            await self._http.post(f"{self.endpoint.base_url}/chat/completions", json=body)
        except httpx.HTTPError as exc:
            log.debug("priming the model failed: %s", type(exc).__name__)

    async def ensure_model(self) -> str:
        """Pick the server's first model when none was configured (llama.cpp, Ollama)."""
        if self.server is not None:
            if not self.server.alive:  # crashed mid-session: hours of conversation go on
                self.server.restart()
                self.endpoint = dataclasses.replace(self.endpoint, base_url=self.server.url)
            await self.server.wait_ready()
        if self.model:
            return self.model
        url = f"{self.endpoint.base_url}/models"
        try:
            resp = await self._http.get(url, headers={"Accept": "application/json"})
            data = resp.json()["data"] if resp.status_code == 200 else []
            models = [" ".join(valid(str(m["id"])).split()) for m in data]
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            log.debug("GET %s failed: %s", url, type(exc).__name__)
            models = []
        self.model = models[0] if models else "default"
        log.info("LLM model: %s", self.model)
        return self.model

    async def stream(self, messages: list[Message]) -> AsyncIterator[ReplyChunk]:
        """Yield the reply as it arrives; the last chunk carries ``finish_reason``.

        Retries follow the official openai-python client: at most two, with exponential
        backoff and jitter, on connection errors, timeouts, 408, 409, 429 and 5xx, honouring
        Retry-After up to ``max_retry_wait_s``. Nothing is retried once part of the reply has
        arrived: it may already have been spoken.
        """
        body: dict[str, Any] = {
            "model": await self.ensure_model(),
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "stream": True,
        }
        if self.endpoint.max_tokens:
            body["max_tokens"] = self.endpoint.max_tokens
        log.debug(
            "request: %d messages, %d characters",
            len(messages),
            sum(len(m.content) for m in messages),
        )
        for attempt in range(MAX_RETRIES + 1):
            received = False
            try:
                if attempt:
                    await self.ensure_model()  # an embedded server that died is restarted
                async for chunk in self._attempt(body):
                    received = True
                    yield chunk
                return
            except _Retryable as retry:
                if received or attempt == MAX_RETRIES:
                    raise retry.error from None
                wait = retry.after_s if retry.after_s is not None else _backoff(attempt)
                if wait > self.config.max_retry_wait_s:
                    raise type(retry.error)(
                        f"{retry.error} — the server asks to wait {wait:.0f} s before retrying; "
                        "try again later",
                        *([retry.error.status] if isinstance(retry.error, LlmHttpError) else []),
                    ) from None
                log.info("LLM request failed (%s); retry %d in %.1f s", retry.error,
                         attempt + 1, wait)  # fmt: skip
                await asyncio.sleep(wait)

    async def _attempt(self, body: dict[str, Any]) -> AsyncIterator[ReplyChunk]:
        url = f"{self.endpoint.base_url}/chat/completions"
        base = self.endpoint.shown_url
        started = time.monotonic()
        try:
            self._last_contact = time.monotonic()
            async with self._http.stream("POST", url, json=body) as resp:
                await self._check_response(resp)
                async for chunk in self._chunks(resp, started):
                    yield chunk
        except httpx.ConnectError:
            raise _Retryable(LlmConnectionError(
                f"cannot connect to the LLM at {base}: is the server running? Check --llm-url"
            )) from None  # fmt: skip
        except (httpx.TimeoutException, TimeoutError):
            raise _Retryable(
                LlmConnectionError(f"the LLM at {base} stopped answering (timed out)")
            ) from None
        except httpx.HTTPError as exc:
            raise _Retryable(LlmConnectionError(
                f"connection to the LLM at {base} failed: {type(exc).__name__}"
            )) from None  # fmt: skip

    async def _chunks(self, resp: httpx.Response, started: float) -> AsyncIterator[ReplyChunk]:
        content_type = resp.headers.get("content-type", "")
        if content_type.startswith("application/json"):
            # Some servers ignore "stream": answer with the whole completion at once.
            data = _json(await resp.aread(), self.endpoint.shown_url)
            yield ReplyChunk(
                text=_message_text(data, self.endpoint.shown_url), finish_reason="stop"
            )
            return
        events = EventSource(resp).aiter_sse().__aiter__()
        got_token = False
        text, reasoning = SurrogateJoiner(), SurrogateJoiner()
        while True:
            # The chunk timeout counts between SSE events, not between bytes: a server that
            # drips a byte a second would otherwise hold the turn until the turn timeout.
            deadline = self.config.turn_timeout_s - (time.monotonic() - started)
            gap = self.config.chunk_timeout_s if got_token else self.config.first_token_timeout_s
            try:
                event = await asyncio.wait_for(anext(events), max(min(deadline, gap), 0.001))
            except StopAsyncIteration:
                log.info("reply stream ended without [DONE] or finish_reason")
                yield ReplyChunk(text.flush(), reasoning.flush(), finish_reason="incomplete")
                return
            parsed = self._parse(event)
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

    def _parse(self, event: ServerSentEvent) -> ReplyChunk | None:
        if event.data.strip() == "[DONE]":
            return ReplyChunk(finish_reason="stop")
        if not event.data.strip():
            return None
        data = _json(event.data.encode(), self.endpoint.shown_url)
        if data.get("error"):
            detail = self._error_detail(data)
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

    def _error_detail(self, data: dict[str, Any]) -> str:
        """The server's own error message, made safe to show: providers sometimes echo the
        key they refused, so secrets are hidden before the message is cut to length (a key
        cut in half would no longer be found)."""
        text = _error_message(data)
        for secret in self.endpoint.secrets():
            text = text.replace(secret, "***")
        return text[:ERROR_DETAIL_CHARS]

    async def _check_response(self, resp: httpx.Response) -> None:
        base = self.endpoint.shown_url
        if resp.status_code >= 400:
            body = (await resp.aread())[:4000]
            error = _http_error(resp.status_code, self._error_detail(_try_json(body)), base)
            should = resp.headers.get("x-should-retry")
            if should == "true" or (should != "false" and resp.status_code in RETRY_STATUSES):
                raise _Retryable(error, _retry_after(resp.headers))
            raise error
        content_type = resp.headers.get("content-type", "")
        if not content_type.startswith(("text/event-stream", "application/json")):
            kind = content_type.split(";")[0] or "no content type"
            raise LlmProtocolError(
                f"{base}/chat/completions answered {kind}, not an OpenAI-compatible API: "
                "check that --llm-url points at the API root (usually ending in /v1)"
            )


MAX_RETRIES = 2
ERROR_DETAIL_CHARS = 200  # of a server's error message, quoted in ours
KEEPALIVE_S = 120.0  # idle connections kept this long (servers may close them sooner)
WARM_AFTER_S = 15.0  # a connection idle longer than this is checked when the user speaks
_CONTEXT_ERROR = re.compile(r"context.?length|context window|too many tokens|maximum context", re.I)


def is_context_error(error: LlmError) -> bool:
    """A 400 that says the conversation no longer fits the model's context."""
    return (
        isinstance(error, LlmHttpError)
        and error.status == 400
        and bool(_CONTEXT_ERROR.search(str(error)))
    )


RETRY_STATUSES = {408, 409, 429, 500, 502, 503, 504}


class _Retryable(Exception):
    """An attempt failed in a way worth another try (the error to raise if not)."""

    def __init__(self, error: LlmError, after_s: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.after_s = after_s


def _backoff(attempt: int) -> float:
    """openai-python's schedule: 0.5 s doubling to at most 8 s, minus up to 25 % jitter."""
    return float(min(0.5 * 2**attempt, 8.0) * (1 - 0.25 * random.random()))


def _retry_after(headers: httpx.Headers) -> float | None:
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


def _try_json(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        return {}
    return data if isinstance(data, dict) else {}


def _json(raw: bytes, base: str) -> dict[str, Any]:
    data = _try_json(raw)
    if not data:
        raise LlmProtocolError(
            f"the LLM at {base} sent something that is not OpenAI-compatible JSON"
        )
    return data


def _error_message(data: dict[str, Any]) -> str:
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
