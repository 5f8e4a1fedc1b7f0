"""One setting's value, from a TOML file, an environment variable or a flag: its type and its
range checked, so a bad value is one line at start-up instead of odd behaviour later."""

from __future__ import annotations

import json
import math
import typing
from typing import Any
from urllib.parse import urlparse

from voice_agent.errors import ConfigError
from voice_agent.secret import Secret, looks_like_a_variable_name

# Allowed range of every number, inclusive, checked at load: a value outside it would not
# fail at once but misbehave later (a hangover of 0 ends every utterance on its first
# silent frame, a negative timeout makes every request "time out", NaN cuts replies short).
RANGES: dict[str, tuple[float, float]] = {
    "stt.beam_size": (1, 20),
    "stt.cpu_threads": (0, 256),
    "stt.window_s": (1.0, 30.0),
    "stt.no_speech_threshold": (0.0, 1.0),
    "stt.log_prob_threshold": (-20.0, 0.0),
    "stt.server_timeout_s": (0.1, 3600.0),
    "tts.server_timeout_s": (0.1, 3600.0),
    "llm.connect_timeout_s": (0.1, 3600.0),
    "llm.first_token_timeout_s": (0.1, 3600.0),
    "llm.chunk_timeout_s": (0.1, 3600.0),
    "llm.turn_timeout_s": (1.0, 86400.0),
    "llm.max_retry_wait_s": (0.0, 3600.0),
    "llm.history_chars": (0, 100_000_000),
    "llm.max_tokens": (0, 10_000_000),
    "llm.local_context_tokens": (256, 10_000_000),
    "tts.length_scale": (0.25, 4.0),
    "tts.speaker": (0, 100_000),
    "vad.aggressiveness": (0, 3),
    "vad.frame_ms": (10, 30),
    "vad.floor_dbfs": (-120.0, 0.0),
    "vad.start_ms": (10, 5000),
    "vad.preroll_ms": (0, 10_000),
    "vad.hangover_ms": (100, 10_000),
    "vad.unfinished_extra_ms": (0, 10_000),
    "vad.early_stt_ms": (10, 10_000),
    "vad.judge_after_ms": (10, 10_000),
    "vad.unfinished_below": (0.0, 1.0),
    "vad.finished_at": (0.0, 1.0),
    "vad.finished_hangover_ms": (20, 10_000),
    "vad.min_speech_ms": (0, 10_000),
    "vad.max_utterance_s": (1.0, 600.0),
    "vad.silero_threshold": (0.0, 1.0),
    "audio.echo_tail_ms": (0, 10_000),
    "audio.max_file_s": (1.0, 7200.0),
    "reply.speculative_lead_ms": (0, 10_000),
    "reply.first_fragment_chars": (1, 10_000),
    "reply.rejoin_ms": (0, 60_000),
    "wake.timeout_s": (1.0, 86400.0),
    "wake.threshold": (0.0, 1.0),
}
# Numbers that only take some values within their range.
CHOICES: dict[str, tuple[int, ...]] = {"vad.frame_ms": (10, 20, 30)}
WORDS: dict[str, tuple[str, ...]] = {
    "vad.end_of_turn": ("model", "silence"),
    "audio.echo_cancellation": ("auto", "on", "off"),
    "audio.barge_in": ("auto", "on", "off"),
}
# Where a speech stage runs: "" (in process), a Wyoming server's tcp://HOST:PORT, or the root
# of an OpenAI-compatible audio API.
SERVERS = {"stt.server": "wyoming-faster-whisper", "tts.server": "wyoming-piper"}
# Settings that were true/false before they gained "auto": old values still mean on/off.
WAS_BOOLEAN = {"audio.barge_in"}


def coerce(section: str, cls: type[Any], name: str, value: Any, source: str) -> Any:
    """The value as the setting's type, checked against its range; ConfigError otherwise.

    TOML values must have the setting's own type (``barge_in = 5`` is an error, not true);
    environment variables and flags are text and are parsed.
    """
    hints = typing.get_type_hints(cls)
    key = f"{section}.{name}"
    if name not in hints:
        known = ", ".join(hints)
        raise ConfigError(f"{source}: unknown setting {key} (known: {known})")
    kind = hints[name]
    if kind is Secret:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: {key} must be a string")
        return Secret(value.strip())
    if kind is str:
        if key in WAS_BOOLEAN and (isinstance(value, bool) or str(value).lower() in _TRUE | _FALSE):
            value = "on" if _boolean(value, key, source) else "off"
        if key in WORDS and not (isinstance(value, str) and value.strip().lower() in WORDS[key]):
            allowed = " or ".join(f'"{w}"' for w in WORDS[key])
            raise ConfigError(f"{source}: {key} must be {allowed}, got {_shown(value)}")
        if not isinstance(value, str):
            raise ConfigError(f"{source}: {key} must be a string, got {_shown(value)}")
        if key in ("llm.api_key_env", "stt.api_key_env", "tts.api_key_env"):
            _check_variable_name(value, source, key)
        if key in SERVERS:
            return _speech_server(value, key, source)
        return value.strip().lower() if key in WORDS else value
    if kind is bool:
        return _boolean(value, key, source)
    if typing.get_origin(kind) is dict:
        return _request_fields(value, key, source)
    number = _number(kind, value, key, source)
    low, high = RANGES[key]
    if not low <= number <= high:
        raise ConfigError(
            f"{source}: {key} must be between {low:g} and {high:g}, got {_shown(value)}"
        )
    if key in CHOICES and number not in CHOICES[key]:
        allowed = ", ".join(str(c) for c in CHOICES[key])
        raise ConfigError(f"{source}: {key} must be one of {allowed}, got {_shown(value)}")
    return number


# what the agent itself puts in a chat request: extra fields may not replace them
OWN_REQUEST_FIELDS = ("model", "messages", "stream")


def _request_fields(value: Any, key: str, source: str) -> dict[str, Any]:
    """Extra JSON fields for each request: a TOML table, or a JSON object in an environment
    variable or flag, holding only what JSON can carry."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{source}: {key} must be a JSON object, got {_shown(value)} "
                              f"({exc.msg})") from None  # fmt: skip
    if not isinstance(value, dict):
        raise ConfigError(
            f"{source}: {key} must be a table, e.g. "
            f'{key} = {{ reasoning = {{ effort = "low" }} }}, got {_shown(value)}'
        )
    own = [name for name in OWN_REQUEST_FIELDS if name in value]
    if own:
        raise ConfigError(f"{source}: {key} cannot set {', '.join(own)}: the agent sends "
                          "those itself (the model is llm.model)")  # fmt: skip
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{source}: {key} may hold only strings, numbers, booleans, arrays and tables "
            "(no dates or times, no inf or nan)"
        ) from None
    return value


def _boolean(value: Any, key: str, source: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ConfigError(f"{source}: {key} must be true or false, got {_shown(value)}")


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _number(kind: type[Any], value: Any, key: str, source: str) -> int | float:
    wanted = "a whole number" if kind is int else "a number"
    try:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError(value)
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(value)
        if kind is int:
            if not number.is_integer():
                raise ValueError(value)
            return int(number)
        return number
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: {key} must be {wanted}, got {_shown(value)}") from None


def _speech_server(value: str, key: str, source: str) -> str:
    uri = value.strip()
    if not uri:
        return ""
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https") and parsed.hostname:
        return uri.rstrip("/")  # an OpenAI-compatible audio API root
    try:
        port = parsed.port
    except ValueError:
        port = None
    if parsed.scheme != "tcp" or not parsed.hostname or port is None:
        raise ConfigError(
            f"{source}: {key} must be tcp://HOST:PORT (a Wyoming server such as "
            f"{SERVERS[key]}), an OpenAI-compatible API root (https://HOST/v1), or empty to run "
            f"the model here; got {_shown(uri)}"
        )
    return uri


def _check_variable_name(value: str, source: str, key: str) -> None:
    if value and not looks_like_a_variable_name(value):
        # never echoed: it may be the key itself, pasted in the wrong place
        where = (
            "that variable, or in llm.api_key in a private config file"
            if key.startswith("llm.")
            else "that variable"
        )
        raise ConfigError(
            f"{source}: {key} must be the name of an environment variable (letters, "
            "digits and _, e.g. OPENROUTER_API_KEY), not the key itself; the value given is not "
            f"shown. Put the key in {where}"
        )


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
