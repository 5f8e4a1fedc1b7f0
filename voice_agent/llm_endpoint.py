"""Which chat endpoint to talk to, with which model and key.

Resolution order when ``llm.base_url`` is empty: ``OPENROUTER_API_KEY`` set -> OpenRouter with
z-ai/glm-4.7; otherwise a clear error that says how to choose an endpoint.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from voice_agent.config import LlmConfig
from voice_agent.errors import ConfigError

OPENROUTER_URL = "https://openrouter.ai/api/v1"
OPENROUTER_MODEL = "z-ai/glm-4.7"

_KEY_ENV_BY_HOST = {"openrouter.ai": "OPENROUTER_API_KEY", "api.openai.com": "OPENAI_API_KEY"}


class Secret:
    """An API key that never shows itself in reprs, logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


@dataclass(frozen=True)
class Endpoint:
    base_url: str  # without a trailing slash
    model: str  # "" = ask the server (GET /models)
    provider: str  # human name for the start-up line
    api_key: Secret | None = field(default=None, repr=False)
    api_key_env: str = ""


def resolve(config: LlmConfig, env: Mapping[str, str]) -> Endpoint:
    if config.base_url:
        base = config.base_url.rstrip("/")
        _check_url(base)
        key_env = config.api_key_env or _KEY_ENV_BY_HOST.get(_host(base), "")
        provider = {"openrouter.ai": "OpenRouter", "api.openai.com": "OpenAI"}.get(
            _host(base), "OpenAI-compatible server"
        )
        model = config.model or (OPENROUTER_MODEL if provider == "OpenRouter" else "")
    elif env.get(config.api_key_env or "OPENROUTER_API_KEY"):
        base, provider = OPENROUTER_URL, "OpenRouter"
        key_env = config.api_key_env or "OPENROUTER_API_KEY"
        model = config.model or OPENROUTER_MODEL
    else:
        raise ConfigError(
            "no LLM endpoint configured: set OPENROUTER_API_KEY, or pass --llm-url "
            "(e.g. http://127.0.0.1:11434/v1 for Ollama, http://127.0.0.1:8080/v1 for llama.cpp)"
        )
    key = env.get(key_env, "") if key_env else ""
    if config.api_key_env and not key:
        raise ConfigError(
            f"llm.api_key_env names {config.api_key_env}, but that environment variable is empty"
        )
    if key and urlsplit(base).scheme == "http" and not is_loopback(_host(base)):
        raise ConfigError(
            f"refusing to send the API key from {key_env} over plain http to {_host(base)}: "
            "use https, or a loopback address for a local server"
        )
    return Endpoint(base, model, provider, Secret(key) if key else None, key_env)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"LLM URL {url!r} is not an http(s) URL: use e.g. http://127.0.0.1:11434/v1"
        )
