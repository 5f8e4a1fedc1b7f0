"""ALSA's own messages go to the debug log instead of the terminal.

alsa-lib prints lines such as ``ALSA lib pcm.c:8570:(snd_pcm_recover) underrun occurred``
straight to stderr from C, through the middle of the status line: a handful at every start,
hundreds when the machine is busy. Most are harmless (an underrun while idle plays one block
of silence late). The library takes one error handler per process (snd_lib_error_set_handler);
ours passes each message to ``logging`` at debug level. What matters to the user, underruns
that persist while the agent speaks, is told in words by the speaker (speaker.py).

ctypes cannot read a C function's variable arguments, so a message is logged as its format
string ("underrun occurred", "Unknown PCM %s"), which is enough to recognise it.
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger("voice_agent.alsa")

# void handler(const char *file, int line, const char *function, int err, const char *fmt, ...)
_HANDLER = ctypes.CFUNCTYPE(
    None, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p
)
_installed: object = None  # the callback must live as long as the library may call it


def _to_log(file: bytes | None, line: int, function: bytes | None, err: int,
            fmt: bytes | None) -> None:  # fmt: skip
    try:
        text = (fmt or b"").decode("utf-8", "replace")
        where = f"{(file or b'').decode('utf-8', 'replace')}:{line}"
        log.debug("ALSA %s (%s) %s", where, (function or b"").decode("utf-8", "replace"), text)
    except Exception:
        pass


def route_to_log() -> bool:
    """Install the handler once; False where there is no ALSA (macOS, Windows)."""
    global _installed
    if _installed is not None:
        return True
    try:
        alsa = ctypes.CDLL("libasound.so.2")
        set_handler = alsa.snd_lib_error_set_handler
    except (OSError, AttributeError):
        return False
    handler = _HANDLER(_to_log)
    set_handler.argtypes = [_HANDLER]
    if set_handler(handler) != 0:
        return False
    _installed = handler
    return True
