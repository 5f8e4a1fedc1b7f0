"""Audio devices through PortAudio: listing, choosing by index or name, and clear errors."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from voice_agent.audio import SPEECH_RATE_HZ
from voice_agent.errors import DeviceError

# PortAudio error codes (portaudio.h) that users meet, with what to do about each.
_HINTS = {
    -9985: "is busy (another program is using it); close that program or pick another device",
    -9996: "does not exist; see 'voice-agent devices'",
    -9997: "does not support the sample rate",
    -9998: "does not support mono audio",
    -9999: "could not be opened by the sound system",
}


def import_sounddevice() -> Any:
    """Import sounddevice, turning a missing PortAudio into an actionable message.

    ALSA's messages are routed to the log first: PortAudio's start probes every ALSA device
    and alsa-lib complains about each one that is missing."""
    from voice_agent.alsa_messages import route_to_log

    route_to_log()
    try:
        import sounddevice
    except OSError:
        raise DeviceError(
            "the PortAudio library is missing: install it with 'sudo apt install libportaudio2'"
        ) from None
    return sounddevice


def find_device(sd: Any, spec: str, kind: str) -> tuple[int, dict[str, Any]]:
    """The device for ``spec``: "" = the default, digits = an index, else part of a name."""
    channels = f"max_{kind}_channels"
    try:
        devices = list(sd.query_devices())
    except sd.PortAudioError as exc:
        raise DeviceError(f"the sound system does not answer: {exc}") from None
    usable = [d for d in devices if d[channels] > 0]
    if not usable:
        raise DeviceError(
            f"no {kind} device found: connect one, or check that PulseAudio/PipeWire is running "
            "('pactl info')"
        )
    if not spec:
        try:
            info = sd.query_devices(kind=kind)
        except (ValueError, sd.PortAudioError):
            info = usable[0]
        return int(info["index"]), dict(info)
    if spec.isdigit():
        match = [d for d in usable if d["index"] == int(spec)]
    else:
        match = [d for d in usable if spec.lower() in d["name"].lower()]
    if not match:
        raise DeviceError(f"no {kind} device matches {spec!r}: see 'voice-agent devices'")
    return int(match[0]["index"]), dict(match[0])


def open_error(exc: Exception, kind: str, name: str) -> DeviceError:
    code = getattr(exc, "args", (None, None))
    hint = _HINTS.get(code[1] if len(code) > 1 and isinstance(code[1], int) else 0)
    what = "microphone" if kind == "input" else "speaker"
    return DeviceError(f"the {what} {name!r} {hint or f'cannot be opened: {exc}'}")


RATES_HZ = (8000, 16000, 22050, 44100, 48000)  # what speech hardware commonly offers


def takes(sd: Any, index: int, kind: str, rate: int, channels: int) -> bool:
    """Whether the device opens for ``kind`` at this rate and channel count, 16-bit."""
    check = sd.check_input_settings if kind == "input" else sd.check_output_settings
    try:
        check(device=index, samplerate=rate, channels=channels, dtype="int16")
    except (ValueError, sd.PortAudioError):
        return False
    return True


def capture_rate(sd: Any, index: int, info: dict[str, Any]) -> int:
    """The rate the microphone is opened at: 16 kHz where the device takes it (no resampling),
    otherwise its own default rate, resampled to 16 kHz by the agent."""
    if takes(sd, index, "input", SPEECH_RATE_HZ, 1):
        return SPEECH_RATE_HZ
    return int(info["default_samplerate"])


def channels_for(sd: Any, index: int, rate: int, kind: str, most: int) -> int:
    """1 where the device takes mono; 2 where it does not (USB and HDMI hardware is often
    stereo only): the agent then mixes the microphone's two channels down, and plays the
    same samples on both speakers."""
    return 1 if takes(sd, index, kind, rate, 1) or most < 2 else 2


def describe(input_spec: str = "", output_spec: str = "") -> str:
    """``voice-agent devices``: the sound system, each device with the rates it accepts (mono
    16-bit, as the agent opens it), and the two the agent would use."""
    sd = import_sounddevice()
    devices = list(sd.query_devices())
    apis = [str(a["name"]) for a in sd.query_hostapis() if a["devices"]]
    lines = [f"Sound system: {sound_server()}; PortAudio host API {', '.join(apis) or 'none'}"]
    cards = alsa_cards()
    if cards:
        lines.append("ALSA cards: " + "; ".join(cards))
    for kind in ("input", "output"):
        try:
            default = int(sd.query_devices(kind=kind)["index"])
        except (ValueError, sd.PortAudioError):
            default = -1
        lines.append(f"{kind.capitalize()} devices:")
        rows = [d for d in devices if d[f"max_{kind}_channels"] > 0]
        for d in rows:
            mark = "*" if d["index"] == default else " "
            lines.append(f" {mark}{d['index']:>3}  {d['name']}  ({accepts(sd, d, kind)})")
        if not rows:
            lines.append("    (none)")
    lines.append("* = default. Choose with --input-device / --output-device INDEX or NAME.")
    lines.append(would_use(sd, input_spec, output_spec))
    return "\n".join(lines)


def accepts(sd: Any, device: dict[str, Any], kind: str) -> str:
    """ "mono at 16000, 44100, 48000 Hz", "stereo only, 48000 Hz", "busy"...: what opening it
    as the agent does would meet."""
    index, most = int(device["index"]), int(device[f"max_{kind}_channels"])
    for channels, shape in ((1, "mono"), (2, "stereo only")):
        if channels > most:
            break
        rates = [str(rate) for rate in RATES_HZ if takes(sd, index, kind, rate, channels)]
        if rates:
            return f"{shape} at {', '.join(rates)} Hz; up to {most} ch"
    return f"opens at none of {', '.join(map(str, RATES_HZ))} Hz (busy, or not a {kind})"


def would_use(sd: Any, input_spec: str, output_spec: str) -> str:
    """Which microphone and speaker the agent would open with these settings, and how."""
    parts = []
    for kind, spec, what in (("input", input_spec, "microphone"),
                             ("output", output_spec, "speaker")):  # fmt: skip
        try:
            index, info = find_device(sd, spec, kind)
        except DeviceError as exc:
            parts.append(f"{what}: none ({exc})")
            continue
        rate = capture_rate(sd, index, info) if kind == "input" else int(info["default_samplerate"])
        how = "" if kind == "output" or rate == SPEECH_RATE_HZ else ", resampled to 16000 Hz"
        parts.append(f"{what} {index} {info['name']!r} at {rate} Hz{how}")
    return "The agent would use: " + "; ".join(parts) + "."


def sound_server() -> str:
    """PulseAudio or PipeWire, if one answers where clients look for it; else ALSA alone."""
    server = os.environ.get("PULSE_SERVER", "")
    runtime = os.environ.get("XDG_RUNTIME_DIR", f"/run/user/{os.getuid()}")
    if server:
        candidates = [server.removeprefix("unix:")]
    else:  # without XDG_RUNTIME_DIR (root, a service) PulseAudio links its folder from here
        home = Path.home() / ".config" / "pulse"
        candidates = [f"{runtime}/pulse/native", *map(str, home.glob("*-runtime/native"))]
    candidates.append(f"{runtime}/pipewire-0")
    for path in candidates:
        if path and _answers(path):
            return f"a sound server at {path} (PulseAudio or PipeWire)"
    return "no sound server answering: ALSA devices directly"


def _answers(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        try:
            sock.connect(path)
        except OSError:
            return False
    return True


def alsa_cards() -> list[str]:
    """The kernel's sound cards, as /proc/asound/cards names them ("1 [Device]: USB-Audio -
    USB Audio Device"); none in a container or without a card."""
    try:
        text = Path("/proc/asound/cards").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return [" ".join(line.split()) for line in text.splitlines() if line[:3].strip().isdigit()]
