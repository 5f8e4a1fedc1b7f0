"""A sound card with no sound server: ALSA's own ``file`` plugin, in an ``asoundrc``.

What the agent captures is read by the plugin from a FIFO that the room fills in real time;
what it plays is written by the plugin to a FIFO the room empties in real time, so both
directions keep the pace of a real device (the plugin's ``null`` slave keeps none). The
speaker is 48 kHz stereo hardware behind ALSA's ``plug``, as a USB speaker on Raspberry Pi
OS's default device is. The microphone is 16 kHz mono, fed in 40 ms writes: the plugin
hands over a whole request whether or not the file had that much (the rest of the buffer
is stale audio), so every read must find exactly one request waiting. PortAudio asks for
one host buffer at a time, the agent's 40 ms (``mic.BLOCK_MS``: 1,280 bytes; a write that
size is atomic); behind a rate conversion the requests drift (4092, 252, 7692... bytes),
hence no ``plug`` on this side. Found with strace: with 20 ms writes, 2,538 of 2,805 reads
came back half full, and Whisper heard garbage.
A process runs in the room with ``env``: its own HOME (for the asoundrc) and a PulseAudio
address that does not exist, so nothing can reach a sound server.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import queue
import threading
import time
from pathlib import Path

import numpy as np

from voice_agent.audio import SPEECH_RATE_HZ, Audio
from voice_agent.mic import BLOCK_MS

RATE_HZ = 48_000  # the speaker
CHANNELS = 2
TICK_S = 0.02
TICK = int(RATE_HZ * TICK_S * CHANNELS)  # the speaker's samples per tick, all channels
MIC_TICK_S = BLOCK_MS / 1000
MIC_TICK = int(SPEECH_RATE_HZ * MIC_TICK_S)
F_SETPIPE_SZ = 1031  # fcntl.h: a small pipe keeps playback within ~20 ms of the room's clock

ASOUNDRC = """
pcm.!default {{ type asym; playback.pcm "speaker"; capture.pcm "mic" }}
pcm.mic {{ type file; slave.pcm "null"; file "/dev/null"; infile "{mic}"; format "raw" }}
pcm.speaker {{ type plug; slave {{ pcm "speaker_file"; rate {rate}; channels {ch}; format S16_LE }}
}}
pcm.speaker_file {{ type file; slave.pcm "null"; file "{speaker}"; format "raw" }}
"""


class AlsaRoom:
    def __init__(self, folder: Path) -> None:
        self.home = folder
        mic, speaker = folder / "mic.fifo", folder / "speaker.fifo"
        os.mkfifo(mic)
        os.mkfifo(speaker)
        (folder / ".asoundrc").write_text(
            ASOUNDRC.format(rate=RATE_HZ, ch=CHANNELS, mic=mic, speaker=speaker)
        )
        # read-write ends never block on open, and keep the FIFOs alive while the agent's
        # PortAudio opens and closes the devices to probe them
        self._mic = os.open(mic, os.O_RDWR)
        self._speaker = os.open(speaker, os.O_RDWR)
        with contextlib.suppress(OSError):
            fcntl.fcntl(self._speaker, F_SETPIPE_SZ, 4096)
        self._said: queue.Queue[np.ndarray] = queue.Queue()
        self._heard: list[np.ndarray] = []
        self._lock = threading.Lock()
        self._running = True
        self._unplugged = threading.Event()
        self._speaker_path = speaker
        threading.Thread(target=self._fill, daemon=True).start()
        threading.Thread(target=self._empty, daemon=True).start()

    @property
    def env(self) -> dict[str, str]:
        return {"HOME": str(self.home), "PULSE_SERVER": f"unix:{self.home}/no-pulseaudio",
                "XDG_RUNTIME_DIR": str(self.home)}  # fmt: skip

    def say(self, audio: Audio) -> float:
        """Queue the user's words (played after what is queued); their length in seconds."""
        samples = audio.resampled(SPEECH_RATE_HZ).samples
        self._said.put(samples)
        return len(samples) / SPEECH_RATE_HZ

    def heard(self) -> Audio:
        """What the agent has played so far, as 16 kHz mono (the left channel)."""
        with self._lock:
            data = np.concatenate(self._heard) if self._heard else np.zeros(0, np.int16)
        return Audio(data[::CHANNELS].copy(), RATE_HZ).resampled(SPEECH_RATE_HZ)

    def unplug_speaker(self) -> None:
        """As a USB speaker pulled out: writing to it fails at once (no reader: EPIPE, as a
        vanished device's ENODEV), and opening it fails until it is back (its path is a
        folder meanwhile, so the plugin cannot create a file there either)."""
        self._unplugged.set()
        time.sleep(2 * TICK_S)  # the reading thread has let go
        os.close(self._speaker)
        self._speaker_path.rename(self._speaker_path.with_suffix(".gone"))
        self._speaker_path.mkdir()

    def plug_in_speaker(self) -> None:
        self._speaker_path.rmdir()
        self._speaker_path.with_suffix(".gone").rename(self._speaker_path)
        self._speaker = os.open(self._speaker_path, os.O_RDWR)
        with contextlib.suppress(OSError):
            fcntl.fcntl(self._speaker, F_SETPIPE_SZ, 4096)
        self._unplugged.clear()

    def close(self) -> None:
        self._running = False
        time.sleep(0.1)
        os.close(self._mic)
        os.close(self._speaker)

    def _fill(self) -> None:
        """The microphone: 40 ms of the user's words, or of silence, every 40 ms."""
        pending = np.zeros(0, np.int16)
        start, n = time.monotonic(), 0
        while self._running:
            while len(pending) < MIC_TICK and not self._said.empty():
                pending = np.concatenate([pending, self._said.get()])
            chunk, pending = pending[:MIC_TICK], pending[MIC_TICK:]
            chunk = np.concatenate([chunk, np.zeros(MIC_TICK - len(chunk), np.int16)])
            with contextlib.suppress(OSError):
                os.write(self._mic, chunk.astype("<i2").tobytes())
            n += 1
            time.sleep(max(0.0, start + n * MIC_TICK_S - time.monotonic()))

    def _empty(self) -> None:
        """The speaker: takes 20 ms of what the agent plays every 20 ms, as a device would."""
        want = TICK * 2
        start, n = time.monotonic(), 0
        while self._running:
            if self._unplugged.is_set():
                time.sleep(TICK_S / 2)
                start, n = time.monotonic(), 0
                continue
            data = b""
            while len(data) < want and self._running and not self._unplugged.is_set():
                try:
                    data += os.read(self._speaker, want - len(data))
                except OSError:
                    return
            with self._lock:
                self._heard.append(np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2"))
            n += 1
            time.sleep(max(0.0, start + n * TICK_S - time.monotonic()))
