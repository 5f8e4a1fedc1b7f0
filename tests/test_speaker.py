"""The speaker on a busy machine: ALSA's own complaints stay off the terminal, and underruns
that persist while a reply plays are told once, in words.

The ALSA test makes real underruns: another thread keeps the speaker's lock for 250 ms at a
time, so the PortAudio callback misses its deadlines as on a machine too busy to feed the
device. How often PortAudio then reports an underrun is up to it and the sound server, so the
counting is checked by handing the callback the status PortAudio gives it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest
from room import Sink, ensure_pulseaudio

from voice_agent.audio import Audio
from voice_agent.speaker import Speaker

pytestmark = pytest.mark.slow

BUSY = """
import asyncio, logging, sys, threading, time
import numpy as np
from voice_agent.audio import Audio
from voice_agent.speaker import Speaker

logging.basicConfig(level=logging.DEBUG if "--debug" in sys.argv else logging.WARNING)

async def main():
    speaker = Speaker("")
    speaker.enqueue(Audio(np.full(22050 * 8, 300, np.int16), 22050), 0)

    def hog():
        end = time.monotonic() + 4
        while time.monotonic() < end:
            with speaker._lock:
                time.sleep(0.25)
            time.sleep(0.05)

    thread = threading.Thread(target=hog)
    thread.start()
    await asyncio.sleep(4.5)
    thread.join()
    speaker.stop()
    speaker.close()

asyncio.run(main())
"""


def run_busy(sink: Sink, *flags: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PULSE_SINK": sink.name}
    return subprocess.run([sys.executable, "-c", BUSY, *flags], capture_output=True, text=True,
                          env=env, timeout=60)  # fmt: skip


def test_alsa_lines_go_to_the_debug_log_not_the_terminal() -> None:
    ensure_pulseaudio()
    sink = Sink("busy")
    try:
        quiet = run_busy(sink)
        debug = run_busy(sink, "--debug")
    finally:
        sink.close()
    assert quiet.returncode == 0, quiet.stderr
    assert "ALSA lib" not in quiet.stderr + debug.stderr, quiet.stderr
    # alsa-lib's own words ("%s occurred", its format string), in the debug log
    assert "(snd_pcm_recover) %s occurred" in debug.stderr


@dataclass
class Status:
    output_underflow: bool = True


async def late_underrun(speaker: Speaker, block: np.ndarray) -> None:
    """An underrun as a busy machine makes them: a callback that comes late, one at a time."""
    await asyncio.sleep(0.01)
    speaker._callback(block, 882, None, Status())
    await asyncio.sleep(0.01)


@contextlib.contextmanager
def speakers_in(label: str) -> Iterator[None]:
    """New speakers play into a null sink of their own."""
    ensure_pulseaudio()
    sink = Sink(label)
    os.environ["PULSE_SINK"] = sink.name
    try:
        yield
    finally:
        del os.environ["PULSE_SINK"]
        sink.close()


def test_underruns_that_persist_while_speaking_are_told_once() -> None:
    notes: list[str] = []

    async def run() -> None:
        speaker = Speaker("", on_note=notes.append)
        try:
            block = np.zeros((882, 1), np.int16)
            for _ in range(8):
                speaker._callback(block, 882, None, Status())  # idle: silence late, unheard
            await asyncio.sleep(0.1)
            assert notes == []
            speaker.enqueue(Audio(np.full(22050 * 60, 300, np.int16), 22050), 0)
            for _ in range(4):
                await late_underrun(speaker, block)
            assert notes == []  # a few are normal
            for _ in range(20):
                await late_underrun(speaker, block)
        finally:
            speaker.stop()
            speaker.close()

    with speakers_in("underruns"):
        asyncio.run(run())
    assert len(notes) == 1
    assert "the speaker ran dry 5 times in 10 s while speaking" in notes[0]


def test_a_device_recovering_in_a_loop_gets_silence_and_the_reply_waits_for_it() -> None:
    """A fresh stream on a suspended sink can report an underrun every 1-2 ms for up to a
    second, dropping what it is handed: the reply is not spent into it (a replayed turn went
    through in 0.7 s of 3.2 and was not heard), and the user is not told the machine is slow."""
    notes: list[str] = []
    handed: list[np.ndarray] = []

    async def run() -> None:
        speaker = Speaker("", on_note=notes.append)
        speaker._stream.stop()  # from here on only this test calls back
        try:
            speaker.enqueue(Audio(np.full(22050, 300, np.int16), 22050), 0)
            first = np.zeros((882, 1), np.int16)
            speaker._callback(first, 882, None, Status())  # the loop's first looks like any
            for _ in range(200):
                block = np.zeros((882, 1), np.int16)
                speaker._callback(block, 882, None, Status())
                handed.append(block)
            assert first.any()
            assert speaker.played_fraction(0) == pytest.approx(882 / speaker.rate_hz, rel=0.01)
            await asyncio.sleep(0.01)
            after = np.zeros((882, 1), np.int16)
            speaker._callback(after, 882, None, Status(output_underflow=False))
            assert after.any()  # the loop is over: the reply goes on where it was
        finally:
            speaker.stop()
            speaker.close()

    with speakers_in("runaway"):
        asyncio.run(run())
    assert notes == []
    assert all(not b.any() for b in handed)


def test_a_cue_gives_way_to_the_reply_and_is_not_its_first_sound() -> None:
    """The thinking tone is playing when the reply's first audio arrives: the tone stops, the
    reply plays, and the reply's first sound is the reply's, not the tone's (latency figures
    and what an interrupted reply kept count from it)."""
    from voice_agent import cues
    from voice_agent.speaker import CUE

    ensure_pulseaudio()
    sink = Sink("cues")
    os.environ["PULSE_SINK"] = sink.name

    async def scenario() -> tuple[bool, bool, float | None, float, bool]:
        speaker = Speaker("")
        try:
            speaker.enqueue(cues.thinking(speaker.rate_hz), CUE)
            await asyncio.sleep(0.05)
            only_cue = speaker.playing and not speaker.speaking
            before = speaker.first_sound_at()
            speaker.enqueue(Audio(np.full(4410, 3000, np.int16), 22050), 0)
            replying = speaker.speaking
            await speaker.drained()
            return only_cue, replying, before, speaker.played_fraction(0), speaker.playing
        finally:
            speaker.close()

    try:
        only_cue, replying, before, played, still = asyncio.run(scenario())
    finally:
        del os.environ["PULSE_SINK"]
        sink.close()
    assert only_cue and before is None  # a cue alone is not the agent speaking
    assert replying and played == 1.0 and not still
