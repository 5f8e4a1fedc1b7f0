"""The project's own exceptions; library errors are translated into these at each boundary.

VoiceAgentError            one line a user can act on (str(e) is that line)
├── ConfigError            bad setting, unknown key, no endpoint configured
├── AudioFileError         unreadable, corrupt or empty audio file
├── ModelError             model path missing or model failed to load
├── DeviceError            microphone / speaker / PortAudio problems
├── TranscriptError        transcript not found, ambiguous or outside the folder
└── LlmError               the chat endpoint failed
    ├── LlmConnectionError     cannot connect / timed out
    ├── LlmHttpError           HTTP status >= 400 (status kept for retries and hints)
    └── LlmProtocolError       the answer is not an OpenAI-compatible stream
"""

from __future__ import annotations


class VoiceAgentError(Exception):
    """Base class: the message is one line saying what went wrong and what to do."""


class ConfigError(VoiceAgentError):
    pass


class AudioFileError(VoiceAgentError):
    pass


class ModelError(VoiceAgentError):
    pass


class DeviceError(VoiceAgentError):
    pass


class TranscriptError(VoiceAgentError):
    pass


class LlmError(VoiceAgentError):
    pass


class LlmConnectionError(LlmError):
    pass


class LlmHttpError(LlmError):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class LlmProtocolError(LlmError):
    pass


def error_line(exc: BaseException, last: bool = False) -> str:
    """One line of a library's error message (its first, or its ``last``), or its type."""
    lines = str(exc).strip().splitlines()
    return (lines[-1] if last else lines[0]) if lines else type(exc).__name__


_SPOKEN_BY_STATUS = {
    401: "the language model refused the API key",
    403: "the language model refused the API key",
    402: "the language model account has no credits left",
    404: "the language model or its address was not found",
    429: "the language model is busy with too many requests",
}


def spoken(exc: VoiceAgentError) -> str:
    """A short sentence to say aloud; the printed line has the details (URLs, codes)."""
    if isinstance(exc, LlmHttpError):
        what = _SPOKEN_BY_STATUS.get(exc.status)
        if what is None:
            what = (
                "the language model's server failed"
                if exc.status >= 500
                else ("the language model could not take that request")
            )
    elif isinstance(exc, LlmConnectionError):
        what = "I cannot reach the language model"
    elif isinstance(exc, LlmError):
        what = "the language model's answer broke off"
    else:
        what = "something went wrong"
    return f"Sorry, {what}. The details are on the screen."
