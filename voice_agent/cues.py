"""Short tones that say what the agent is doing when no one looks at a screen: "still thinking"
while a slow model is silent, "something went wrong" before a spoken error notice, "I'm
listening" when the wake word is heard and "asleep again" when the conversation is over. Made here
(no sound files), soft, with smooth edges so they do not click."""

from __future__ import annotations

import numpy as np

from voice_agent.audio import Audio

THINKING_NOTES_HZ = (659.3, 880.0)  # E5, A5: rising, "still working on it"
ERROR_NOTES_HZ = (440.0, 311.1)  # A4, E-flat 4: falling, a tritone: "not good"
WAKE_NOTES_HZ = (784.0, 1174.7)  # G5, D6: higher and wider than "thinking": "I'm listening"
SLEEP_NOTES_HZ = (1174.7, 784.0)  # the same, falling: "I've stopped listening"
NOTE_S = 0.09
GAP_S = 0.04
LEVEL_DBFS = -26.0  # well below speech from the same speaker (Piper peaks near -3 dBFS)
EDGE_S = 0.012  # raised-cosine fade in and out of each note


def notes(rate_hz: int, freqs: tuple[float, ...], level_dbfs: float = LEVEL_DBFS) -> Audio:
    """Notes one after the other at ``rate_hz``, each ``NOTE_S`` long with a short gap."""
    n, gap, edge = round(NOTE_S * rate_hz), round(GAP_S * rate_hz), round(EDGE_S * rate_hz)
    t = np.arange(n) / rate_hz
    fade = np.ones(n)
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, edge))
    fade[:edge], fade[n - edge :] = ramp, ramp[::-1]
    amplitude = 32767 * 10 ** (level_dbfs / 20)
    parts = []
    for i, f in enumerate(freqs):
        if i:
            parts.append(np.zeros(gap))
        parts.append(amplitude * fade * np.sin(2 * np.pi * f * t))
    return Audio(np.concatenate(parts).round().astype(np.int16), rate_hz)


def thinking(rate_hz: int) -> Audio:
    return notes(rate_hz, THINKING_NOTES_HZ)


def error(rate_hz: int) -> Audio:
    return notes(rate_hz, ERROR_NOTES_HZ, LEVEL_DBFS + 4)


def wake(rate_hz: int) -> Audio:
    return notes(rate_hz, WAKE_NOTES_HZ)


def sleep(rate_hz: int) -> Audio:
    return notes(rate_hz, SLEEP_NOTES_HZ, LEVEL_DBFS - 3)
