"""Push to talk, for noisy rooms: Enter starts a turn, Enter again ends it (no voice detection).

The recorded audio becomes an utterance like any other, so the rest of the live loop (the
turn, the reply, the transcript) is the same.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import TYPE_CHECKING

from voice_agent.audio import SPEECH_RATE_HZ, Audio, concat
from voice_agent.vad import Utterance

if TYPE_CHECKING:
    from voice_agent.live import LiveSession


async def push_to_talk(session: LiveSession) -> None:
    recording: list[Audio] = []
    active = False
    loop = asyncio.get_running_loop()
    enter = asyncio.Event()

    def on_enter() -> None:
        sys.stdin.readline()
        enter.set()

    loop.add_reader(sys.stdin.fileno(), on_enter)
    session.display.note("(push to talk: press Enter to start speaking, Enter again to stop)")
    try:
        async for frame in session.frames():
            if enter.is_set():
                enter.clear()
                active = not active
                if active:
                    session.interrupt("push to talk")
                    session.gate.clear()
                    session.display.status("hearing")
                elif recording:
                    audio = concat(recording, SPEECH_RATE_HZ)
                    recording = []
                    session.take(Utterance(audio, -1, audio.seconds), time.time())
            if active:
                recording.append(Audio(frame.samples, SPEECH_RATE_HZ))
    finally:
        loop.remove_reader(sys.stdin.fileno())
