"""Turn-taking on the frame clock: when to transcribe early, when to ask the model early, and
how long the user has been silent when their turn ends.

``TurnTaking`` wraps the ``Endpointer`` (which finds where utterances start and end) and adds
what depends on the words: an early transcript that sounds unfinished ("I went to the shop
and") buys the user more silence; one that sounds finished lets the request go
``reply.speculative_lead_ms`` before the hangover ends (``Ask``). Everything is counted in
frames as they are fed, never on a wall clock, so the same frames and transcripts always give
the same decisions, in a test as in the room.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from voice_agent.audio import Audio, Pcm
from voice_agent.config import ReplyConfig, VadConfig
from voice_agent.vad import Endpointer, Event, Paused, Resumed, Started, Utterance


@dataclass(frozen=True)
class Ask:
    """Send the request now: the early transcript sounds finished and the silence has lasted
    hangover - lead. The utterance may still go on (then ``Resumed`` follows)."""

    generation: int
    audio: Audio
    text: str


@dataclass(frozen=True)
class Judge:
    """Time for the end-of-turn model's verdict on the pause: ``vad.judge_after_ms`` of
    silence (it hears a finished sentence better with some silence after it than the
    transcription needs)."""

    generation: int
    audio: Audio


TurnEvent = Event | Ask | Judge


@dataclass
class _Early:
    """The pending utterance as the early transcription saw it."""

    generation: int
    audio: Audio
    text: str | None = None  # None until transcribed
    may_ask: bool = False
    asked: bool = False
    judged: bool = False


class TurnTaking:
    def __init__(self, vad: VadConfig, reply: ReplyConfig, sleeps: bool = False) -> None:
        self.endpointer = Endpointer(vad)
        self.frame_ms = vad.frame_ms
        self.unfinished_ms = (
            vad.hangover_ms + vad.unfinished_extra_ms if vad.unfinished_extra_ms else 0
        )
        self.unfinished_below = vad.unfinished_below
        self.finished_at = max(vad.finished_at, vad.unfinished_below)
        self.finished_ms = min(vad.finished_hangover_ms, vad.hangover_ms)
        self.speculate = reply.early_transcription and reply.speculative_lead_ms > 0
        # not before the silence has lasted hangover - lead (the hangover as extended for
        # unfinished words): a shorter pause is usually mid-thought, and a request sent then is
        # only cancelled
        self._lead_ms = reply.speculative_lead_ms
        self._early_frames = max(1, vad.early_stt_ms // vad.frame_ms)
        self._judge_frames = max(self._early_frames, vad.judge_after_ms // vad.frame_ms)
        self.end_phrases = phrases(reply.end_phrases)
        # with a wake word, these end the conversation (not the session); without, they are
        # ordinary words to answer
        self.sleep_phrases = phrases(reply.sleep_phrases) if sleeps else []
        self._early: _Early | None = None

    @property
    def maybe_speech(self) -> bool:
        return self.endpointer.maybe_speech

    def reset(self) -> None:
        """Forget everything heard (the agent's own voice was playing)."""
        self.endpointer.reset()
        self._early = None

    def feed(self, frame: Pcm, voiced: bool) -> list[TurnEvent]:
        events: list[TurnEvent] = []
        for event in self.endpointer.feed(frame, voiced):
            events.append(event)
            if isinstance(event, Paused):
                self._early = _Early(event.generation, event.audio)
            elif isinstance(event, (Started, Resumed, Utterance)):
                self._early = None
        early = self._early
        if (early is not None and not early.judged
                and self.endpointer.silent_frames >= self._judge_frames):  # fmt: skip
            early.judged = True
            events.append(Judge(early.generation, self.endpointer.heard()))
        if early is not None and self._ask_due():
            events += self._ask_if_ready()
        return events

    def _ask_due(self) -> bool:
        hangover_ms = self.endpointer.hangover_frames * self.frame_ms
        ask_at = max((hangover_ms - self._lead_ms) // self.frame_ms, self._early_frames)
        return self.endpointer.silent_frames >= ask_at

    def heard(self, generation: int, text: str, finished: float | None = None) -> list[Ask]:
        """The early transcript of ``generation`` is ready, and with an end-of-turn model the
        probability that the user has finished; an ``Ask`` if it is due already.

        Unfinished words ("and", a trailing comma, a longer phrase with no full stop) or a
        model that hears more to come buy more silence (the request still goes
        ``speculative_lead_ms`` before that longer silence ends, so a turn that was over after
        all is answered as promptly); a model sure the turn is over, with words that agree,
        ends it after ``finished_hangover_ms`` and asks at once; when the model is unsure, the
        hangover stands.
        """
        early = self._early
        if early is None or early.generation != generation:
            return []  # the user went on speaking meanwhile: stale
        early.text = text
        unfinished = sounds_unfinished(text)
        over = False
        if finished is not None and text:  # no words (noise): nothing to wait for
            unfinished = unfinished or finished < self.unfinished_below
            over = not unfinished and finished >= self.finished_at
        if unfinished and self.unfinished_ms:
            self.endpointer.set_hangover(generation, self.unfinished_ms)
            over = False
        elif over:
            self.endpointer.set_hangover(generation, self.finished_ms)
        early.may_ask = (self.speculate and bool(text) and not self.is_end_phrase(text)
                         and not self.is_sleep_phrase(text))  # fmt: skip
        if over or self._ask_due():
            return self._ask_if_ready()
        return []

    def _ask_if_ready(self) -> list[Ask]:
        early = self._early
        if early is None or early.asked or not early.may_ask or early.text is None:
            return []
        early.asked = True
        return [Ask(early.generation, early.audio, early.text)]

    def is_end_phrase(self, text: str) -> bool:
        return says(text, self.end_phrases)

    def is_sleep_phrase(self, text: str) -> bool:
        return says(text, self.sleep_phrases)


def phrases(setting: str) -> list[list[str]]:
    """A comma-separated phrases setting, as words."""
    return [words(p) for p in setting.split(",") if words(p)]


def says(text: str, phrases: list[list[str]]) -> bool:
    """ "goodbye", "ok goodbye", "goodbye then": one of the phrases, with at most two words
    before."""
    said = words(text)
    return any(said == p or (said[-len(p) :] == p and len(said) <= len(p) + 2) for p in phrases)


CONTINUATIONS = {
    "and", "or", "but", "so", "because", "the", "a", "an", "to", "of", "with", "for", "in", "on",
    "at", "my", "your", "our", "their", "that", "which", "who", "if", "when", "than", "is", "are",
}  # fmt: skip


def sounds_unfinished(text: str) -> bool:
    """Whisper punctuates: a trailing comma, a dangling "and", or a longer phrase without a
    closing full stop usually means the speaker paused mid-thought."""
    stripped = text.strip()
    if not stripped:
        return False
    if stripped[-1] in ",;:-\u2014\u2026" or stripped.endswith("..."):
        return True
    said = words(stripped)
    if said and said[-1] in CONTINUATIONS:
        return True
    return stripped[-1] not in ".!?\"'" and len(said) >= 4


def words(text: str) -> list[str]:
    """Lower-case words without punctuation, for matching what was said."""
    return re.sub(r"[^\w\s']", " ", text.lower()).split()
