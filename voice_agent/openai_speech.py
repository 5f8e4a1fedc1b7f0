"""Speech to text and text to speech on an OpenAI-compatible audio API: OpenAI itself, Groq, or
a self-hosted server (speaches, LocalAI...), as ``POST {server}/audio/transcriptions`` (the
utterance uploaded as a WAV file) and ``POST {server}/audio/speech`` (a WAV back).

The same rules as the LLM client: the key comes from an environment variable named in the
settings (``OPENAI_API_KEY`` for api.openai.com), never shown, never sent over plain http to
anything but loopback; at most two retries with openai-python's backoff on connection errors,
timeouts, 408, 409, 429 and 5xx, honouring ``Retry-After`` up to 20 s; every failure is one
line. Calls block: call them from a worker thread.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import httpx
import numpy as np

from voice_agent.audio import SPEECH_RATE_HZ, Audio
from voice_agent.config import SttConfig, TtsConfig, is_bundled
from voice_agent.errors import ConfigError, VoiceAgentError
from voice_agent.llm import backoff
from voice_agent.llm_endpoint import is_loopback
from voice_agent.llm_reply import RETRY_STATUSES, error_message, retry_after, try_json
from voice_agent.secret import Secret
from voice_agent.stt import Transcription, has_words

log = logging.getLogger(__name__)
MAX_RETRIES = 2
MAX_RETRY_WAIT_S = 20.0
ERROR_DETAIL_CHARS = 200
DEFAULT_STT_MODEL = "whisper-1"  # what "bundled" asks for: OpenAI's, and most servers' alias
DEFAULT_VOICE = "alloy"


class AudioApiError(VoiceAgentError):
    """The audio API failed; the message says what to do."""


def is_http(server: str) -> bool:
    return server.startswith(("http://", "https://"))


@dataclass(frozen=True)
class AudioApi:
    """One OpenAI-compatible audio endpoint: where, with which key, and what to call it."""

    base_url: str  # the API root, e.g. https://api.openai.com/v1
    key: Secret
    key_env: str
    role: str  # "speech-to-text" / "text-to-speech"
    setting: str  # stt / tts
    timeout_s: float

    @staticmethod
    def of(
        server: str, key_env: str, setting: str, timeout_s: float, env: Mapping[str, str]
    ) -> AudioApi:
        base = server.rstrip("/")
        host = urlparse(base).hostname or ""
        if not key_env and host == "api.openai.com":
            key_env = "OPENAI_API_KEY"
        key = Secret(env.get(key_env, "").strip()) if key_env else Secret("")
        if key and base.startswith("http://") and not is_loopback(host):
            raise ConfigError(
                f"{setting}.server {base} is plain http to another machine: the API key "
                f"({key_env}) would travel unencrypted; use https, or leave {key_env} unset"
            )
        role = "speech-to-text" if setting == "stt" else "text-to-speech"
        return AudioApi(base, key, key_env, role, setting, timeout_s)

    def post(self, path: str, client: httpx.Client, **request: Any) -> httpx.Response:
        """POST with the LLM client's retry policy; the response, or one line."""
        headers = {"Authorization": f"Bearer {self.key.reveal()}"} if self.key else {}
        url = f"{self.base_url}{path}"
        for attempt in range(MAX_RETRIES + 1):
            wait: float | None = None
            try:
                resp = client.post(url, headers=headers, timeout=self.timeout_s, **request)
            except httpx.ConnectError:
                error = AudioApiError(
                    f"cannot connect to the {self.role} API at {self.base_url}: "
                    f"is the server running? Check {self.setting}.server"
                )
            except httpx.TimeoutException:
                error = AudioApiError(
                    f"the {self.role} API at {self.base_url} did not answer "
                    f"within {self.timeout_s:g} s"
                )
            except httpx.HTTPError as exc:
                error = AudioApiError(
                    f"connection to the {self.role} API at {self.base_url} "
                    f"failed: {type(exc).__name__}"
                )
            else:
                if resp.status_code < 400:
                    return resp
                error = self._http_error(resp)
                if resp.status_code not in RETRY_STATUSES:
                    raise error
                wait = retry_after(resp.headers)
            if attempt == MAX_RETRIES:
                raise error
            wait = backoff(attempt) if wait is None else wait
            if wait > MAX_RETRY_WAIT_S:
                raise AudioApiError(
                    f"{error} — the server asks to wait {wait:.0f} s before "
                    "retrying; try again later"
                )
            log.info(
                "%s API request failed (%s); retry %d in %.1f s",
                self.role,
                error,
                attempt + 1,
                wait,
            )
            time.sleep(wait)
        raise AssertionError("unreachable")

    def _http_error(self, resp: httpx.Response) -> AudioApiError:
        status = resp.status_code
        key = f"{self.key_env} ({self.setting}.api_key_env)" if self.key_env else "the key"
        hints = {
            401: f"the API key was refused: check {key}",
            402: "the account has no credits left: top it up at the provider",
            403: "the API key may not use this model or endpoint",
            404: f"not found: check {self.setting}.server (the API root, usually ending in /v1) "
            "and the model name",
            408: "the request timed out at the server",
            429: "rate limited by the provider: wait a moment and try again",
        }
        hint = hints.get(status) or ("the server failed" if status >= 500 else "request refused")
        detail = error_message(try_json(resp.content[:4000]))
        if self.key:
            detail = detail.replace(self.key.reveal(), "***")  # providers echo refused keys
        detail = detail[:ERROR_DETAIL_CHARS]
        suffix = f" ({detail})" if detail else ""
        return AudioApiError(f"{self.role} API error {status}: {hint}{suffix}")


class OpenAiStt:
    """Speech to text on ``POST /audio/transcriptions``."""

    def __init__(self, config: SttConfig, env: Mapping[str, str]) -> None:
        self.config = config
        self.api = AudioApi.of(
            config.server, config.api_key_env, "stt", config.server_timeout_s, env
        )
        self.model = DEFAULT_STT_MODEL if is_bundled(config.model) else config.model
        self.name = f"{self.model} at {self.api.base_url}"
        self._client = httpx.Client()

    def transcribe(self, audio: Audio) -> Transcription:
        """Blocking; call from a worker thread."""
        import soundfile

        started = time.perf_counter()
        wav = io.BytesIO()
        soundfile.write(
            wav,
            audio.resampled(SPEECH_RATE_HZ).samples,
            SPEECH_RATE_HZ,
            format="WAV",
            subtype="PCM_16",
        )
        form = {"model": self.model, "response_format": "json"}
        if self.config.language:
            form["language"] = self.config.language
        resp = self.api.post(
            "/audio/transcriptions",
            self._client,
            data=form,
            files={"file": ("speech.wav", wav.getvalue(), "audio/wav")},
        )
        data = try_json(resp.content)
        text = data.get("text")
        if not isinstance(text, str):
            raise AudioApiError(
                f"the speech-to-text API at {self.api.base_url} answered "
                'without a transcript (no "text"): is it OpenAI-compatible?'
            )
        text = text.strip()
        elapsed = time.perf_counter() - started
        return Transcription(text if has_words(text) else "", audio.seconds, elapsed)


class OpenAiTts:
    """Text to speech on ``POST /audio/speech``, asking for WAV (its header carries the rate)."""

    def __init__(self, config: TtsConfig, env: Mapping[str, str]) -> None:
        self.api = AudioApi.of(
            config.server, config.api_key_env, "tts", config.server_timeout_s, env
        )
        self.voice = DEFAULT_VOICE if is_bundled(config.voice) else config.voice
        self.model = config.model
        self.speed = 1.0 / config.length_scale  # Piper's length scale is the inverse of speed
        self.name = f"{self.model} {self.voice} at {self.api.base_url}"
        self.rate_hz = 24_000  # OpenAI's rate, until the first answer says
        self._client = httpx.Client()

    def synthesize(self, text: str) -> Audio:
        """Blocking; call from a worker thread."""
        import soundfile

        if not text.strip():
            return Audio(np.zeros(0, dtype=np.int16), self.rate_hz)
        body = {
            "model": self.model,
            "input": text,
            "voice": self.voice,
            "response_format": "wav",
            "speed": round(self.speed, 3),
        }
        resp = self.api.post("/audio/speech", self._client, json=body)
        try:
            samples, rate = soundfile.read(io.BytesIO(resp.content), dtype="int16", always_2d=True)
        except (
            RuntimeError,
            ValueError,
            TypeError,
        ):  # soundfile's LibsndfileError is a RuntimeError
            kind = resp.headers.get("content-type", "no content type").split(";")[0]
            raise AudioApiError(
                f"the text-to-speech API at {self.api.base_url} answered {kind}, "
                "not WAV audio: is it OpenAI-compatible?"
            ) from None
        mono = samples.mean(axis=1).astype(np.int16) if samples.shape[1] > 1 else samples[:, 0]
        self.rate_hz = int(rate)
        return Audio(np.ascontiguousarray(mono), int(rate))
