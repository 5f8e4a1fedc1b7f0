"""Voice activity detection and utterance endpointing.

``Endpointer`` is a pure state machine fed 16 kHz frames with a voiced/unvoiced flag:

    SILENCE --(start_ms of consecutive voiced frames)--> SPEECH
    SPEECH  --(first unvoiced frame)--> TRAILING
    TRAILING --(voiced frame)--> SPEECH                       emits Resumed if Paused was sent
    TRAILING --(early_stt_ms of silence)--> TRAILING          emits Paused (audio so far)
    TRAILING --(hangover_ms of silence)--> SILENCE            emits Utterance, or drops a blip
                (set_hangover() lengthens the wait when the words so far sound unfinished;
                 the Utterance says how much silence was counted: where speech ended)
    SPEECH/TRAILING --(max_utterance_s)--> SPEECH             emits Utterance (cut)

A pre-roll of ``preroll_ms`` before the detected start is kept, so the first word is never
clipped by the time the detector needs to be sure.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from enum import Enum

import numpy as np

from voice_agent.audio import SPEECH_RATE_HZ, Audio, Pcm, dbfs_level, rms
from voice_agent.config import VadConfig
from voice_agent.silero import Silero


@dataclass(frozen=True)
class Started:
    """The user started speaking (``start_ms`` of voice heard)."""


@dataclass(frozen=True)
class Paused:
    """Silence began and lasted ``early_stt_ms``: the utterance so far, for early transcription."""

    audio: Audio
    generation: int  # identifies this utterance's audio; unchanged if it then ends


@dataclass(frozen=True)
class Resumed:
    """The user spoke again after a Paused: the early transcript is stale."""


@dataclass(frozen=True)
class Utterance:
    """A finished utterance: pre-roll, speech and a short silence tail, 16 kHz."""

    audio: Audio
    generation: int  # equal to the last Paused.generation when no speech came after it
    speech_seconds: float  # from the first to the last voiced frame
    cut: bool = False  # True when max_utterance_s forced the end
    silence_s: float = 0.0  # silence counted after the last voiced frame when it ended


Event = Started | Paused | Resumed | Utterance


class State(Enum):
    SILENCE = "silence"
    SPEECH = "speech"
    TRAILING = "trailing"


class Endpointer:
    def __init__(self, config: VadConfig) -> None:
        self.config = config
        self.frame_ms = config.frame_ms
        self._start_frames = max(1, config.start_ms // config.frame_ms)
        self._hangover_frames = max(1, config.hangover_ms // config.frame_ms)
        self._early_frames = max(1, config.early_stt_ms // config.frame_ms)
        self._max_frames = int(config.max_utterance_s * 1000) // config.frame_ms
        self._min_speech_frames = config.min_speech_ms // config.frame_ms
        # the utterance keeps as much trailing silence as the early transcription saw, so the
        # early transcript is of exactly the audio the utterance holds
        self._tail_frames = min(self._hangover_frames, self._early_frames)
        preroll = max(config.preroll_ms // config.frame_ms, self._start_frames)
        self._preroll: collections.deque[Pcm] = collections.deque(maxlen=preroll)
        self.reset()

    def reset(self) -> None:
        """Forget everything heard (after the agent's own playback, for instance)."""
        self.state = State.SILENCE
        self._preroll.clear()
        self._frames: list[Pcm] = []
        self._voiced_run = 0
        self._silent_run = 0
        self._speech_frames = 0  # frames from first to last voiced
        self._paused_sent = False
        self._generation = getattr(self, "_generation", 0) + 1
        self._hangover = self._hangover_frames

    @property
    def in_speech(self) -> bool:
        return self.state is not State.SILENCE

    @property
    def silent_frames(self) -> int:
        """Unvoiced frames since the last voiced one, in the utterance being heard."""
        return self._silent_run if self.state is State.TRAILING else 0

    @property
    def maybe_speech(self) -> bool:
        """Speech has started, or voiced frames are arriving that may start it."""
        return self.in_speech or self._voiced_run > 0

    @property
    def hangover_frames(self) -> int:
        """Silent frames that end the utterance being heard (as set_hangover left it)."""
        return self._hangover

    def set_hangover(self, generation: int, ms: int) -> None:
        """End this utterance after ``ms`` of silence instead of ``hangover_ms``: longer when
        the words so far sound unfinished, shorter when the turn is judged over. Already
        silent that long: it ends with the next frame."""
        if generation == self._generation and self.state is State.TRAILING:
            self._hangover = max(1, ms // self.frame_ms)

    def feed(self, frame: Pcm, voiced: bool) -> list[Event]:
        if self.state is State.SILENCE:
            return self._silence(frame, voiced)
        self._frames.append(frame)
        events: list[Event] = []
        if voiced:
            self._speech_frames += self._silent_run + 1
            self._silent_run = 0
            if self.state is State.TRAILING:
                self.state = State.SPEECH
                self._hangover = self._hangover_frames
                if self._paused_sent:
                    self._paused_sent = False
                    self._generation += 1
                    events.append(Resumed())
        else:
            self.state = State.TRAILING
            self._silent_run += 1
            if self._silent_run == self._early_frames and not self._paused_sent:
                self._paused_sent = True
                events.append(Paused(self._audio(), self._generation))
            if self._silent_run >= self._hangover:
                return events + self._finish(cut=False)
        if len(self._frames) >= self._max_frames:
            events += self._finish(cut=True)
        return events

    def _silence(self, frame: Pcm, voiced: bool) -> list[Event]:
        self._preroll.append(frame)
        self._voiced_run = self._voiced_run + 1 if voiced else 0
        if self._voiced_run < self._start_frames:
            return []
        self.state = State.SPEECH
        self._frames = list(self._preroll)
        self._preroll.clear()
        self._speech_frames = self._voiced_run
        self._silent_run = 0
        self._voiced_run = 0
        return [Started()]

    def _finish(self, cut: bool) -> list[Event]:
        speech_frames = self._speech_frames
        silence_s = self._silent_run * self.frame_ms / 1000
        if not cut:
            # keep a short silence tail, drop the rest of the hangover
            keep = len(self._frames) - self._silent_run + self._tail_frames
            self._frames = self._frames[:keep]
        audio, generation = self._audio(), self._generation
        if cut:
            self._frames, self._speech_frames, self._silent_run = [], 0, 0
            self._paused_sent = False
            self._generation += 1
            self.state = State.SPEECH
        else:
            self.reset()
        if speech_frames < self._min_speech_frames:
            return []
        seconds = speech_frames * self.frame_ms / 1000
        return [Utterance(audio, generation, seconds, cut, silence_s)]

    def heard(self) -> Audio:
        """The utterance being heard so far (pre-roll, speech and the silence after it)."""
        return self._audio()

    def _audio(self) -> Audio:
        return Audio(np.concatenate(self._frames), SPEECH_RATE_HZ)


class VoiceDetector:
    """webrtcvad on one frame at a time (10, 20 or 30 ms of 16 kHz 16-bit mono).

    webrtcvad adapts its noise model to what it hears: after a stretch of near-digital
    silence it calls the faintest hiss speech. Frames below ``floor_dbfs`` are therefore
    never speech, whatever webrtcvad says.
    """

    def __init__(self, aggressiveness: int, floor_dbfs: float = -55.0) -> None:
        import webrtcvad

        self._vad = webrtcvad.Vad(aggressiveness)
        self._floor = dbfs_level(floor_dbfs)

    def is_speech(self, frame: Pcm) -> bool:
        if rms(frame) < self._floor:
            return False
        return bool(self._vad.is_speech(frame.tobytes(), SPEECH_RATE_HZ))


class SpeechConfirmer:
    """Silero VAD as a second opinion on a whole utterance: webrtcvad answers to any loud,
    voice-band noise; Silero knows speech."""

    def __init__(self, threshold: float) -> None:
        self._silero = Silero(threshold)

    def has_speech(self, audio: Audio) -> bool:
        return bool(self._silero.spans(audio.as_float32()))

    def speech_only(self, audio: Audio) -> Audio | None:
        """The stretches of speech (with 400 ms of padding each side), joined; None when
        there is none. Whisper invents words in long silence ("you you you" over ten silent
        minutes), so a recording is heard without it."""
        spans = self._silero.spans(audio.as_float32())
        if not spans:
            return None
        return Audio(np.concatenate([audio.samples[a:b] for a, b in spans]), audio.rate_hz)
