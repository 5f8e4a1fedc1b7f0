"""Which chat endpoint to talk to, with which model and key.

With ``llm.base_url`` set, that endpoint. Otherwise the first that applies:
``OPENROUTER_API_KEY`` (or a key in the config file) -> OpenRouter with z-ai/glm-4.7;
``OPENAI_API_KEY`` -> OpenAI; else ``resolve`` returns None and the agent looks on this machine
(an Ollama on 127.0.0.1:11434, then the embedded llama.cpp model: see local_llm.py).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit, urlunsplit

from voice_agent.config import LlmConfig
from voice_agent.errors import ConfigError
from voice_agent.secret import Secret

if TYPE_CHECKING:
    from voice_agent.local_llm import LocalServer

OPENROUTER_URL = "https://openrouter.ai/api/v1"
OPENROUTER_MODEL = "z-ai/glm-4.7"

OPENAI_URL = "https://api.openai.com/v1"
OPENAI_MODEL = "gpt-4o-mini"

_KEY_ENV_BY_HOST = {"openrouter.ai": "OPENROUTER_API_KEY", "api.openai.com": "OPENAI_API_KEY"}
_PROVIDER_BY_HOST = {"openrouter.ai": "OpenRouter", "api.openai.com": "OpenAI"}
_DEFAULT_MODEL = {"OpenRouter": OPENROUTER_MODEL, "OpenAI": OPENAI_MODEL}


@dataclass(frozen=True)
class Endpoint:
    base_url: str  # without a trailing slash
    model: str  # "" = ask the server (GET /models)
    provider: str  # human name for the start-up line
    api_key: Secret | None = field(default=None, repr=False)
    max_tokens: int = 0  # 0 = leave the reply length to the server
    user: str = ""  # from a URL like http://user:password@host/v1, sent as HTTP basic auth
    password: Secret | None = field(default=None, repr=False)

    @property
    def shown_url(self) -> str:
        """The URL as messages and logs show it: a password in it becomes ***."""
        return with_credentials(self.base_url, self.user, "***" if self.password else "")

    def secrets(self) -> list[str]:
        """Values that must never appear in anything shown or recorded."""
        return [s.reveal() for s in (self.api_key, self.password) if s]


async def choose(config: LlmConfig, env: Mapping[str, str]) -> tuple[Endpoint, LocalServer | None]:
    """The endpoint to talk to and, when it is the embedded model, the supervisor of its
    server (start, readiness, restart after a crash, stop). The one place this is decided."""
    endpoint = resolve(config, env)
    if endpoint is not None:
        return endpoint, None
    from voice_agent.local_llm import local_endpoint  # it needs Endpoint from here

    return await local_endpoint(config)


def resolve(config: LlmConfig, env: Mapping[str, str]) -> Endpoint | None:
    """The configured or key-selected endpoint; None when nothing points anywhere."""
    user, password = "", ""
    if config.base_url:
        base, user, password = split_credentials(config.base_url.rstrip("/"))
        _check_url(base)
        provider = _PROVIDER_BY_HOST.get(_host(base), "OpenAI-compatible server")
        key_env = config.api_key_env or _KEY_ENV_BY_HOST.get(_host(base), "")
    elif config.api_key_env or config.api_key:
        base, provider = OPENROUTER_URL, "OpenRouter"
        key_env = config.api_key_env or "OPENROUTER_API_KEY"
    elif env.get("OPENROUTER_API_KEY", "").strip():
        base, provider, key_env = OPENROUTER_URL, "OpenRouter", "OPENROUTER_API_KEY"
    elif env.get("OPENAI_API_KEY", "").strip():
        base, provider, key_env = OPENAI_URL, "OpenAI", "OPENAI_API_KEY"
    else:
        return None
    model = config.model or _DEFAULT_MODEL.get(provider, "")
    key, source = _key(config, env, key_env)
    if key and urlsplit(base).scheme == "http" and not is_loopback(_host(base)):
        raise ConfigError(
            f"refusing to send the API key from {source} over plain http to {_host(base)}: "
            "use https, or a loopback address for a local server"
        )
    if password and urlsplit(base).scheme == "http" and not is_loopback(_host(base)):
        raise ConfigError(
            f"refusing to send the password in the LLM URL over plain http to {_host(base)}: "
            "use https, or a loopback address for a local server"
        )
    return Endpoint(
        base, model, provider, Secret(key) if key else None, config.max_tokens,
        user, Secret(password) if password else None,
    )  # fmt: skip


def split_credentials(url: str) -> tuple[str, str, str]:
    """``http://user:password@host/v1`` -> (``http://host/v1``, user, password)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, "", ""
    host = parts.netloc.rpartition("@")[2]
    bare = urlunsplit(parts._replace(netloc=host))
    return bare, unquote(parts.username or ""), unquote(parts.password or "")


def with_credentials(url: str, user: str, password: str) -> str:
    if not user and not password:
        return url
    parts = urlsplit(url)
    login = f"{user}:{password}" if password else user
    return urlunsplit(parts._replace(netloc=f"{login}@{parts.netloc}"))


def shown_url(url: str) -> str:
    """Any URL as it may be shown: a password in it becomes ***."""
    bare, user, password = split_credentials(url)
    return with_credentials(bare, user, "***" if password else "")


def _key(config: LlmConfig, env: Mapping[str, str], key_env: str) -> tuple[str, str]:
    """The key and where it came from. A variable named in the config must hold one."""
    if config.api_key_env:
        key = env.get(config.api_key_env, "").strip()
        if not key:
            raise ConfigError(
                f"llm.api_key_env names {config.api_key_env}, "
                "but that environment variable is empty"
            )
        return key, config.api_key_env
    if config.api_key:
        return config.api_key.reveal(), "llm.api_key"
    return (env.get(key_env, "").strip(), key_env) if key_env else ("", "")


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
