"""Chat with an OpenAI-compatible endpoint: streamed replies over Server-Sent Events.

Every failure becomes an ``LlmError`` whose message is one line a user can act on and never
contains the API key.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from voice_agent.config import LlmConfig
from voice_agent.errors import (
    LlmConnectionError,
    LlmError,
    LlmHttpError,
)
from voice_agent.llm_endpoint import Endpoint
from voice_agent.llm_reply import ReplyChunk, Retryable, check_response, read_reply
from voice_agent.safe_text import valid

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Message:
    role: str  # "system", "user" or "assistant"
    content: str


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
    """Talks to one endpoint: HTTP, Server-Sent Events and retries. ``before_request`` is
    awaited before each request (the embedded model's supervisor makes sure its server runs)."""

    def __init__(
        self,
        endpoint: Endpoint,
        config: LlmConfig,
        before_request: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.config = config
        self._before_request = before_request
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
        if self._before_request is not None:
            await self._before_request()
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
        body.update(self.config.extra_body)  # e.g. how hard a reasoning model thinks
        log.debug(
            "request: %d messages, %d characters",
            len(messages),
            sum(len(m.content) for m in messages),
        )
        for attempt in range(MAX_RETRIES + 1):
            received = False
            try:
                if attempt and self._before_request is not None:
                    await self._before_request()  # an embedded server that died is restarted
                async for chunk in self._attempt(body):
                    received = True
                    yield chunk
                return
            except Retryable as retry:
                if received or attempt == MAX_RETRIES:
                    raise retry.error from None
                wait = retry.after_s if retry.after_s is not None else backoff(attempt)
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
                await check_response(resp, self.endpoint)
                async for chunk in read_reply(resp, self.endpoint, self.config, started):
                    yield chunk
        except httpx.ConnectError:
            raise Retryable(LlmConnectionError(
                f"cannot connect to the LLM at {base}: is the server running? Check --llm-url"
            )) from None  # fmt: skip
        except (httpx.TimeoutException, TimeoutError):
            raise Retryable(
                LlmConnectionError(f"the LLM at {base} stopped answering (timed out)")
            ) from None
        except httpx.HTTPError as exc:
            raise Retryable(LlmConnectionError(
                f"connection to the LLM at {base} failed: {type(exc).__name__}"
            )) from None  # fmt: skip


MAX_RETRIES = 2
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


def backoff(attempt: int) -> float:
    """openai-python's schedule: 0.5 s doubling to at most 8 s, minus up to 25 % jitter."""
    return float(min(0.5 * 2**attempt, 8.0) * (1 - 0.25 * random.random()))
