"""Echo cancellation: the agent's own voice taken out of what the microphone hears.

WebRTC's audio processing module (AEC3, with its high-pass filter and noise suppression), as
shipped in livekit's wheels: near end = the microphone's 16 kHz frames, far end = exactly the
samples the speaker's callback handed to the device, at 16 kHz (the speaker keeps a 16 kHz
copy of each piece and hands it over in step with the device). Both go in as 10 ms
frames; every far-end block played so far is fed before the next microphone frame, so the
reference always leads its echo, and the delay hint (the devices' reported latencies) is a
starting point the canceller refines itself.
"""

from __future__ import annotations

import collections
import logging
from typing import Any

import numpy as np
import numpy.typing as npt

from voice_agent.audio import SPEECH_RATE_HZ, Pcm, dbfs_level, rms
from voice_agent.errors import ModelError

log = logging.getLogger(__name__)
CHUNK = SPEECH_RATE_HZ // 100  # the module works on exactly 10 ms
MAX_FAR_BLOCKS = 200  # far-end blocks kept while nobody listens (about 8 s of 40 ms blocks)
KEPT_S = 1.5  # reference kept to compare with the output: more than any echo delay seen
RECENT_CHUNKS = 200  # chunks kept for that: at least KEPT_S of 20 and 40 ms chunks
# No echo path (a headset): AEC3 cannot know there is no echo until told, and meanwhile it
# suppresses the user's voice whenever the agent starts to speak (measured through a headset
# room: the first word said over a reply's first sound lost in 3 to 4 of 8 tries; none with
# the canceller off). While something is played (reference above PLAYING_DBFS in the last
# ECHO_WINDOW_S), a microphone NO_ECHO_DB quieter than it over NO_ECHO_AFTER_S of it hears no
# echo; from then on the microphone is passed through untouched, and the canceller rests
# (saving its CPU). A microphone that then echoes what is played (correlation above
# ECHO_AGAIN, checked every RECHECK_S while it is loud enough to hold an echo) brings it back.
PLAYING_DBFS = -40.0
NO_ECHO_DB = 40.0
NO_ECHO_AFTER_S = 1.5
ECHO_WINDOW_S = 0.3
ECHO_AGAIN = 0.5
RECHECK_S = 0.1
# Nothing played (the speaker hands over exact zeros) and nothing heard above QUIET_DBFS for
# this long: an idle room. Both streams rest and the microphone passes untouched, as through a
# headset; listening to an idle room the canceller otherwise costs about half the agent's CPU
# (2.6 of 5.6 % of a core, measured). It wakes at the first sound on either side. Waking only
# when a reply starts leaked its first words into the microphone (AEC3 needs the two streams
# for a while to line them up again, measured in the room: replies heard as turns); the user's
# voice wakes it for the length of their turn first, and a reply comes well within REST_AFTER_S
# of it (a slow model's thinking tones sound meanwhile).
REST_AFTER_S = 10.0
QUIET_DBFS = -60.0  # under the VAD's floor (vad.floor_dbfs, -55): whatever may be speech wakes it
_QUIET = dbfs_level(QUIET_DBFS)
_PLAYING = dbfs_level(PLAYING_DBFS)
_NO_ECHO_RATIO = 10 ** (NO_ECHO_DB / 20)  # of levels; squared for energies


def start(setting: str, mic_latency_s: float, speaker_latency_s: float) -> EchoCanceller | None:
    """The canceller for ``audio.echo_cancellation``: None when "off", or "auto" where it
    cannot load (the caller says so); ModelError when "on" and it cannot load."""
    if setting == "off":
        return None
    try:
        return EchoCanceller(round((mic_latency_s + speaker_latency_s) * 1000))
    except Exception as exc:  # a missing package, or a library that does not load here
        log.debug("echo canceller unavailable", exc_info=True)
        if setting == "on":
            raise ModelError(
                f"echo cancellation cannot start ({type(exc).__name__}: {exc}): install it "
                'with scripts/setup.sh, or set audio.echo_cancellation = "off"'
            ) from None
        return None


class EchoCanceller:
    """One conversation's canceller; ``played`` is safe from the speaker's audio thread."""

    def __init__(self, delay_ms: int, noise_suppression: bool = True) -> None:
        from livekit import rtc

        self._rtc: Any = rtc
        self._apm = rtc.AudioProcessingModule(
            echo_cancellation=True, noise_suppression=noise_suppression, high_pass_filter=True
        )
        self.delay_ms = max(0, min(500, delay_ms))
        # once: AEC3 estimates the delay itself, and a call per frame costs 15 % of its CPU
        self._apm.set_stream_delay_ms(self.delay_ms)
        self._far: collections.deque[Pcm] = collections.deque(maxlen=MAX_FAR_BLOCKS)
        self._far_rest = np.zeros(0, dtype=np.int16)
        # the last reference fed and the last output, as the chunks they came in (joined
        # only when asked: copying 1.5 s on every frame would double the canceller's CPU)
        self._recent_far: collections.deque[Pcm] = collections.deque(maxlen=RECENT_CHUNKS)
        self._recent_out: collections.deque[Pcm] = collections.deque(maxlen=RECENT_CHUNKS)
        # (samples, level) of each reference chunk fed: what was just played, and how loud
        self._far_levels: collections.deque[tuple[int, float]] = collections.deque(
            maxlen=RECENT_CHUNKS
        )
        self.passing_through = False  # no echo path heard: the microphone goes out untouched
        # over NO_ECHO_AFTER_S of playback: what was played, and what the microphone heard
        self._far_energy = self._mic_energy = self._playing_s = 0.0
        self._since_check_s = RECHECK_S
        self._quiet_s = REST_AFTER_S  # since either side last held a sound

    def played(self, block: Pcm) -> None:
        """A 16 kHz block the speaker just gave the device (silence too: timing matters)."""
        self._far.append(block)

    def clean(self, samples: Pcm) -> Pcm:
        """The microphone's samples (a whole number of 10 ms) with the echo of what was
        played removed."""
        if len(samples) % CHUNK:
            raise ValueError(f"echo cancellation needs whole 10 ms frames, got {len(samples)}")
        mic = rms(samples)
        if mic >= _QUIET:
            self._quiet_s = 0.0
        self._feed_far()
        self._judge_echo_path(mic, len(samples) / SPEECH_RATE_HZ)
        if self._at_rest:
            self._recent_out.append(samples)
            return samples
        out = np.empty(len(samples), dtype=np.int16)
        for start in range(0, len(samples), CHUNK):
            frame = self._frame(samples[start : start + CHUNK])
            self._apm.process_stream(frame)
            out[start : start + CHUNK] = np.frombuffer(frame.data, dtype=np.int16)
        self._recent_out.append(out)
        return out

    def _judge_echo_path(self, mic: float, seconds: float) -> None:
        """Does the microphone (its level over ``seconds``) hear what is played? Counted only
        while something is."""
        far = self._far_level()
        if far < _PLAYING:
            return
        if not self.passing_through:
            # energies over whole stretches of playback, not frame by frame: an echo fades
            # in the gaps between words while the reference window still holds them
            self._far_energy += far * far * seconds
            self._mic_energy += mic * mic * seconds
            self._playing_s += seconds
            if self._playing_s < NO_ECHO_AFTER_S:
                return
            if self._far_energy > self._mic_energy * _NO_ECHO_RATIO**2:
                log.info("no echo of the agent's voice reaches the microphone (a headset?): "
                         "passed through without echo cancellation")  # fmt: skip
                self.passing_through = True
            self._far_energy = self._mic_energy = self._playing_s = 0.0
            return
        self._since_check_s += seconds
        if mic * _NO_ECHO_RATIO < far or self._since_check_s < RECHECK_S:
            return
        self._since_check_s = 0.0
        if self.echo_likeness() >= ECHO_AGAIN:
            log.info("the microphone hears the agent's voice: echo cancellation back on")
            self.passing_through = False

    @property
    def _at_rest(self) -> bool:
        """Nothing to cancel: no echo path, or nothing played for a while."""
        return self.passing_through or self._quiet_s >= REST_AFTER_S

    def _far_level(self) -> float:
        """The loudest reference chunk of the last ECHO_WINDOW_S (the echo's delay)."""
        left = ECHO_WINDOW_S * SPEECH_RATE_HZ
        loudest = 0.0
        for n, level in reversed(self._far_levels):
            loudest = max(loudest, level)
            left -= n
            if left <= 0:
                break
        return loudest

    def rest(self) -> None:
        """Nothing is being played and nobody needs the microphone cleaned (asleep, waiting for
        the wake word): drop the far end instead of processing it (the canceller is ~1 % of a
        core). Both streams simply pause; the adapted filter is kept."""
        self._far.clear()

    def echo_likeness(self, window_ms: int = 200) -> float:
        """How much the last ``window_ms`` of output looks like what was played: the best
        normalised correlation with the recent reference at any delay, 0..1. When the echo
        path changes (a device's latency jumps after an underrun, a reply starts after a
        silence) the canceller lets echo through for a few hundred ms until it has caught
        up; that leak is the reference, delayed, and correlates strongly (0.8-1.0 measured in
        the room), while a user talking over the reply does not (under 0.2)."""
        n = SPEECH_RATE_HZ * window_ms // 1000
        seg = _joined(self._recent_out)[-n:]
        ref = _joined(self._recent_far)[-int(KEPT_S * SPEECH_RATE_HZ) :]
        if len(seg) < n or len(ref) < n:
            return 0.0
        seg_norm = float(np.linalg.norm(seg))
        if seg_norm == 0.0 or not ref.any():
            return 0.0
        size = 1 << (len(ref) + n - 1).bit_length()
        corr = np.fft.irfft(np.fft.rfft(ref, size) * np.conj(np.fft.rfft(seg, size)), size)
        corr = corr[: len(ref) - n + 1]
        energy = np.concatenate([[0.0], np.cumsum(ref**2)])
        local = np.sqrt(np.maximum(energy[n:] - energy[:-n], 1e-9))
        return float(np.clip(np.max(np.abs(corr) / (local * seg_norm + 1e-9)), 0.0, 1.0))

    def _feed_far(self) -> None:
        while self._far:
            far = np.concatenate([self._far_rest, self._far.popleft()])
            whole = len(far) // CHUNK * CHUNK
            self._quiet_s = 0.0 if far[:whole].any() else self._quiet_s + whole / SPEECH_RATE_HZ
            if not self._at_rest:  # else both streams rest, as in rest()
                for start in range(0, whole, CHUNK):
                    self._apm.process_reverse_stream(self._frame(far[start : start + CHUNK]))
            self._far_rest = far[whole:].copy()
            self._recent_far.append(far[:whole])
            if whole:
                self._far_levels.append((whole, rms(far[:whole])))

    def _frame(self, samples: Pcm) -> Any:
        return self._rtc.AudioFrame(bytearray(samples.tobytes()), SPEECH_RATE_HZ, 1, CHUNK)


def _joined(chunks: collections.deque[Pcm]) -> npt.NDArray[np.float64]:
    return np.concatenate(list(chunks)).astype(np.float64) if chunks else np.zeros(0)
