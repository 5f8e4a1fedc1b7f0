"""Settings: one frozen dataclass per stage, loaded as defaults < config file < environment < flags.

Every field is documented (with its unit) in ``config/default.toml``; a test keeps the two equal.
Environment variables are ``VOICE_AGENT_<SECTION>_<FIELD>``, e.g. ``VOICE_AGENT_LLM_BASE_URL``.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from voice_agent.config_check import coerce
from voice_agent.errors import ConfigError
from voice_agent.secret import NO_KEY, Secret

APP_NAME = "voice-agent"
ENV_PREFIX = "VOICE_AGENT_"

log = logging.getLogger(__name__)


BUNDLED = "bundled"


def is_bundled(name: str) -> bool:
    """True for a model or voice setting that means the one installed with the agent."""
    return name in ("", BUNDLED)


@dataclass(frozen=True)
class SttConfig:
    """Speech to text (faster-whisper)."""

    model: str = "bundled"  # "bundled", a faster-whisper size name, or a CTranslate2 folder
    language: str = "en"
    compute_type: str = "int8"
    beam_size: int = 1
    cpu_threads: int = 0  # 0 = half the cores, at least 1, at most 4
    window_s: float = 15.0  # shorter audio is padded to this, not Whisper's 30 s (speed)
    no_speech_threshold: float = 0.6  # segments above this no-speech probability...
    log_prob_threshold: float = -1.0  # ...and below this mean log-probability are dropped
    server: str = ""  # "" = in process; tcp://HOST:PORT (Wyoming) or an OpenAI-compatible .../v1
    server_timeout_s: float = 10.0  # connecting to the server, and each of its answers
    api_key_env: str = ""  # OpenAI-compatible server: the key's variable ("" = OPENAI_API_KEY
    # for api.openai.com, no key elsewhere)


@dataclass(frozen=True)
class LlmConfig:
    """The OpenAI-compatible chat endpoint."""

    base_url: str = ""  # "" = choose automatically (see llm_endpoint.py)
    model: str = ""
    api_key_env: str = ""  # name of the environment variable holding the key; "" = by provider
    api_key: Secret = NO_KEY  # the key itself, only in a config file no one else can read
    system_prompt: str = (
        "You are a helpful voice assistant. Your replies are spoken aloud, so answer in a few "
        "short, plain sentences without Markdown, lists, tables, code or emoji."
    )
    connect_timeout_s: float = 5.0
    first_token_timeout_s: float = 60.0
    chunk_timeout_s: float = 30.0
    turn_timeout_s: float = 180.0
    max_retry_wait_s: float = 20.0  # a server asking to wait longer is not retried
    history_chars: int = 32000  # earlier turns sent with each request, oldest dropped first
    max_tokens: int = 0  # longest reply in tokens; 0 = the server's own limit
    # merged into every chat request's JSON (a TOML table), e.g. reasoning = { effort = "low" }
    extra_body: dict[str, Any] = field(default_factory=dict)
    local_model: str = "bundled"  # embedded llama.cpp: "bundled" (SmolLM2-135M) or a GGUF path
    local_context_tokens: int = 8192  # the embedded model's context window


@dataclass(frozen=True)
class TtsConfig:
    """Text to speech (Piper)."""

    voice: str = "bundled"  # "bundled" or a path to a Piper .onnx voice (its .onnx.json beside it)
    length_scale: float = 1.0  # speaking rate: < 1 faster, > 1 slower
    speaker: int = 0  # speaker index for multi-speaker voices
    server: str = ""  # "" = in process; tcp://HOST:PORT (Wyoming) or an OpenAI-compatible .../v1
    server_timeout_s: float = 10.0  # connecting to the server, and each of its answers
    api_key_env: str = ""  # as stt.api_key_env
    model: str = "tts-1"  # the model an OpenAI-compatible speech API is asked for


@dataclass(frozen=True)
class VadConfig:
    """Voice activity detection and endpointing (16 kHz frames)."""

    aggressiveness: int = 2  # webrtcvad 0..3: higher rejects more noise, may miss soft speech
    frame_ms: int = 20  # 10, 20 or 30
    floor_dbfs: float = -55.0  # frames quieter than this (RMS, dB full scale) are never speech
    start_ms: int = 100  # consecutive voiced audio that starts an utterance
    preroll_ms: int = 600  # audio kept from before the start, so no first word is clipped
    hangover_ms: int = 700  # silence that ends an utterance
    unfinished_extra_ms: int = 600  # more silence allowed when the words so far sound unfinished
    end_of_turn: str = "model"  # "model": Smart Turn judges each pause; "silence": hangover only
    end_of_turn_model: str = "bundled"  # Smart Turn v3.2 from the pipecat-ai wheel, or a path
    unfinished_below: float = 0.5  # Smart Turn probability under which more is coming
    finished_at: float = 0.8  # Smart Turn probability from which the turn is over
    finished_hangover_ms: int = 700  # silence that ends a turn the model and the words call over
    early_stt_ms: int = 100  # silence after which transcription starts, before the hangover ends
    judge_after_ms: int = 200  # silence after which Smart Turn judges (never before early_stt_ms)
    min_speech_ms: int = 250  # shorter voiced blips (clicks, coughs) are dropped
    max_utterance_s: float = 30.0  # longer speech is cut and transcribed
    silero_confirm: bool = True  # second opinion from Silero VAD before transcribing
    silero_threshold: float = 0.5  # 0..1 speech probability for Silero


@dataclass(frozen=True)
class AudioConfig:
    """Microphone and speaker."""

    input_device: str = ""  # index or part of the name; "" = the system default
    output_device: str = ""  # index or part of the name; "" = the system default
    echo_cancellation: str = "auto"  # the agent's own voice removed from the microphone
    echo_tail_ms: int = 300  # without it: after playback ends, the microphone stays deaf this long
    barge_in: str = "auto"  # user speech stops playback; auto = when echo cancellation runs
    cues: bool = True  # live: a soft tone while a slow model is silent, and before errors
    max_file_s: float = 300.0  # longest audio file taken as one --input turn, in seconds


@dataclass(frozen=True)
class ReplyConfig:
    """How replies are produced and spoken."""

    streaming: bool = True  # speak sentence by sentence while the model is still writing
    early_transcription: bool = True  # transcribe during the end-of-speech silence
    speculative_lead_ms: int = 450  # ask the model this long before the silence ends; 0 = off
    first_fragment_chars: int = 20  # the first fragment may end at a comma once this long
    rejoin_ms: int = 1000  # going on this soon after the reply starts joins the turn
    end_phrases: str = "goodbye"  # comma-separated phrases that end the session when said
    sleep_phrases: str = "that's all, go to sleep"  # with a wake word: back to sleep when said


@dataclass(frozen=True)
class WakeConfig:
    """Live mode: asleep until a wake word, as a voice assistant in a room."""

    word: str = ""  # "" = always listening; okay_nabu, hey_jarvis, hey_mycroft, alexa, or a .json
    timeout_s: float = 30.0  # seconds without speech or a reply after which it sleeps again
    threshold: float = 0.0  # 0..1 detection probability; 0 = the model's own


@dataclass(frozen=True)
class TranscriptConfig:
    """Where sessions are kept."""

    dir: str = ""  # "" = the per-user data folder (see `voice-agent transcripts path`)
    save_audio: bool = False  # keep each utterance and reply as FLAC beside the transcript


@dataclass(frozen=True)
class Config:
    stt: SttConfig = field(default_factory=SttConfig)
    llm: LlmConfig = field(default_factory=LlmConfig)
    tts: TtsConfig = field(default_factory=TtsConfig)
    vad: VadConfig = field(default_factory=VadConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    reply: ReplyConfig = field(default_factory=ReplyConfig)
    wake: WakeConfig = field(default_factory=WakeConfig)
    transcripts: TranscriptConfig = field(default_factory=TranscriptConfig)

    @property
    def transcripts_dir(self) -> Path:
        if self.transcripts.dir:
            return Path(self.transcripts.dir).expanduser()
        return Path(platformdirs.user_data_dir(APP_NAME)) / "transcripts"


SECTIONS: dict[str, type[Any]] = {
    "stt": SttConfig,
    "llm": LlmConfig,
    "tts": TtsConfig,
    "vad": VadConfig,
    "audio": AudioConfig,
    "reply": ReplyConfig,
    "wake": WakeConfig,
    "transcripts": TranscriptConfig,
}


def user_config_path() -> Path:
    return Path(platformdirs.user_config_dir(APP_NAME)) / "config.toml"


def load(
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Config:
    """Build the effective configuration.

    ``flags`` maps "section.field" to a value given on the command line (None = not given).
    Without ``config_file`` the user config file is read when it exists.
    """
    env = os.environ if env is None else env
    values: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}

    path = config_file if config_file is not None else user_config_path()
    if config_file is not None or path.is_file():
        data = _read_toml(path)
        _merge(values, data, source=str(path))
        if "api_key" in data.get("llm", {}):
            _warn_if_others_can_read(path)

    known_env = set()
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            name = f"{ENV_PREFIX}{section}_{f.name}".upper()
            known_env.add(name)
            if name in env:
                values[section][f.name] = coerce(section, cls, f.name, env[name], source=name)
    _warn_unknown_variables(env, known_env)

    for key, value in (flags or {}).items():
        if value is None:
            continue
        section, name = key.split(".", 1)
        values[section][name] = coerce(
            section, SECTIONS[section], name, value, source=f"flag {key}"
        )

    return Config(**{s: SECTIONS[s](**values[s]) for s in SECTIONS})


def _warn_unknown_variables(env: Mapping[str, str], known: set[str]) -> None:
    """A misspelt variable would otherwise be ignored without a word."""
    for name in sorted(n for n in env if n.upper().startswith(ENV_PREFIX) and n not in known):
        close = difflib.get_close_matches(name.upper(), known, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        log.warning("environment variable %s is not a voice-agent setting%s; ignored", name, hint)


def as_dict(config: Config) -> dict[str, dict[str, Any]]:
    return {s: dataclasses.asdict(getattr(config, s)) for s in SECTIONS}


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(
            f"config file {path} is not valid TOML: it is not UTF-8 text (a binary file?)"
        ) from None


def _warn_if_others_can_read(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & 0o077:
        log.warning(
            "config file %s holds an API key and other users can read it: run chmod 600 %s",
            path,
            path,
        )


def _merge(values: dict[str, dict[str, Any]], data: dict[str, Any], source: str) -> None:
    for section, table in data.items():
        if section not in SECTIONS or not isinstance(table, dict):
            known = ", ".join(f"[{s}]" for s in SECTIONS)
            raise ConfigError(f"{source}: unknown section [{section}] (known: {known})")
        for name, value in table.items():
            values[section][name] = coerce(section, SECTIONS[section], name, value, source=source)
