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
