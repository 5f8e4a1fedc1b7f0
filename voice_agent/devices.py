"""Audio devices through PortAudio: listing, choosing by index or name, and clear errors."""

from __future__ import annotations

from typing import Any

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


def describe() -> str:
    """A table of input and output devices for ``voice-agent devices``."""
    sd = import_sounddevice()
    devices = list(sd.query_devices())
    lines = []
    for kind in ("input", "output"):
        try:
            default = int(sd.query_devices(kind=kind)["index"])
        except (ValueError, sd.PortAudioError):
            default = -1
        lines.append(f"{kind.capitalize()} devices:")
        rows = [d for d in devices if d[f"max_{kind}_channels"] > 0]
        for d in rows:
            mark = "*" if d["index"] == default else " "
            lines.append(
                f" {mark}{d['index']:>3}  {d['name']}  ({d[f'max_{kind}_channels']} ch, "
                f"{int(d['default_samplerate'])} Hz)"
            )
        if not rows:
            lines.append("    (none)")
    lines.append("* = default. Choose with --input-device / --output-device INDEX or NAME.")
    return "\n".join(lines)
