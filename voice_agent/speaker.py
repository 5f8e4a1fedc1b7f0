"""Speaker: plays replies through PortAudio (sounddevice) at the device's own rate."""

from __future__ import annotations

import logging
from typing import Any

from voice_agent.audio import Audio
from voice_agent.errors import DeviceError

log = logging.getLogger(__name__)


def import_sounddevice() -> Any:
    """Import sounddevice, turning a missing PortAudio into an actionable message."""
    try:
        import sounddevice
    except OSError:
        raise DeviceError(
            "the PortAudio library is missing: install it with 'sudo apt install libportaudio2'"
        ) from None
    return sounddevice


class Speaker:
    """Blocking playback on one output device; call ``play`` from a worker thread."""

    def __init__(self, device: int | str | None = None) -> None:
        sd = import_sounddevice()
        self._sd = sd
        try:
            info = sd.query_devices(device, kind="output")
        except (ValueError, sd.PortAudioError) as exc:
            raise DeviceError(
                f"no usable output device ({exc}): check 'voice-agent devices', or use --mute"
            ) from None
        self.device = info["index"] if isinstance(info, dict) else device
        self.name = str(info["name"])
        self.rate_hz = int(info["default_samplerate"])

    def play(self, audio: Audio) -> None:
        if len(audio.samples) == 0:
            return
        out = audio.resampled(self.rate_hz)
        try:
            self._sd.play(out.samples, out.rate_hz, device=self.device, blocking=True)
        except self._sd.PortAudioError as exc:
            raise DeviceError(f"cannot play on {self.name}: {exc}") from None
