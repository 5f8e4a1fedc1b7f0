"""The hands-free conversation: microphone -> echo canceller -> endpointing -> turns, for hours.

With echo cancellation (the default wherever it loads) the agent's own voice is taken out of
what the microphone hears, so it keeps listening while it speaks and user speech stops the
reply at once (barge-in). Without it, half duplex: while the agent speaks (and
``echo_tail_ms`` after), what the microphone hears is not user speech, so the agent never
answers its own voice through laptop speakers. Either way the agent never starts talking while
the user is talking: a reply that is ready waits, and if the user goes on, what they add joins
the same turn.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass

from voice_agent import cues
from voice_agent.agent import Agent
from voice_agent.audio import SPEECH_RATE_HZ, concat, dbfs_level, rms
from voice_agent.config import Config
from voice_agent.display import Display
from voice_agent.echo import EchoCanceller
from voice_agent.errors import VoiceAgentError
from voice_agent.mic import Frame, Microphone
from voice_agent.push_to_talk import push_to_talk
from voice_agent.recorder import Turn
from voice_agent.speaker import Speaker
from voice_agent.stt import Transcription
from voice_agent.turn_taking import Ask, Judge, TurnEvent, TurnTaking, words
from voice_agent.vad import Paused, Resumed, Started, Utterance, VoiceDetector
from voice_agent.wake import Wakefulness, Woken, only_the_wake_word

log = logging.getLogger(__name__)
# Output that correlates this well with the reply being played is echo, not the user:
# measured in the room, leaks 0.45-0.63, the user starting over the reply 0.0-0.43.
ECHO_LIKENESS = 0.4
RECHECK_FRAMES = 5  # voiced frames between rechecks of a doubted start (100 ms at 20 ms)
DOUBT_FRAMES = 50  # voiced frames after which a start is the user's anyway (1 s at 20 ms): the
# canceller's leaks last a few hundred ms
# Unvoiced frames after which a voice that began like the reply (ECHO_LIKENESS) and fell
# silent once the reply paused was its echo (300 ms at 20 ms: the leak stops an output and
# input latency after the pause, ~150 ms in the room). The reply goes on then, not a hangover
# and a transcription later (a second's stall); the utterance is still judged by its words.
# Only for starts that looked like the reply: the canceller can mute the first few hundred ms
# of a user talking over it, and 200 ms of that once passed for "silent" (their first
# sentence was lost to the resumed reply).
ECHO_GONE_FRAMES = 15
ECHO_MARGIN_S = 0.1  # beyond the output latency: the device's clock and the capture's jitter
# Voiced frames captured past that point before a start unlike the reply stops it for good
# (300 ms at 20 ms). After an output underrun the sound server refills its buffer, and the
# reply's sound can reach the microphone later than the device's stated latency says: a leak
# then outlasted the margin and stopped a reply with no word of the user's in it (1 of 20
# replies, twice, in full test runs). Playback is paused from the start either way, so
# waiting costs the user nothing; a shorter voice is judged by its words when it ends.
PAST_ECHO_FRAMES = 15
# A reply the user talks over just after it began (``reply.rejoin_ms``) was a false start only
# if they had paused, not finished: after this much silence they had finished, and the reply
# was merely late (a slow model): it is interrupted and kept, not withdrawn. The pause set's
# pauses are 0.5-1.0 s; the new voice is detected 0.1-0.2 s after it begins.
REJOIN_SILENCE_S = 2.0
# Through speakers the canceller damps the first 100-300 ms of a voice that starts over the
# reply, and webrtcvad calls it speech only once enough of it is through. Playback pauses
# earlier, on level alone: ONSET_FRAMES of the canceller's output this loud. The detector's
# start must follow within ONSET_GRACE_FRAMES, or the reply resumes where it paused, and
# pauses for the rest of that reply only on the detector's starts (a noisy room stutters it
# once at most). Measured (bench_echo, 12 interruptions each): playback quiet a median
# 0.36 s after the user's first voiced sample without it, 0.32 s at -45 dBFS, 0.22 s at -50
# and -55; echo-only pauses over 2 minutes of replies at the user's level: 0-1 at -50, 2-3
# at -55.
ONSET_DBFS = -50.0
ONSET_FRAMES = 2  # 40 ms at 20 ms
ONSET_GRACE_FRAMES = 15  # 300 ms


@dataclass
class _EarlyStt:
    """Transcription started during the end-of-speech silence."""

    generation: int
    started: float  # time.time()
    task: asyncio.Task[Transcription]
    verdict: asyncio.Future[float | None]  # the end-of-turn model's, at vad.judge_after_ms
    heard_at: float | None = None  # time.time() when the words were ready
    prior: Turn | None = None  # an unanswered turn this one goes on from: transcribed with it


@dataclass
class PendingReply:
    """The reply in flight: asked early (speculative, for one utterance) or for a whole turn."""

    turn: Turn
    task: asyncio.Task[None]
    generation: int | None = None  # the utterance a speculative reply was asked for

    @property
    def speculative(self) -> bool:
        return self.generation is not None


class LiveSession:
    def __init__(
        self,
        agent: Agent,
        config: Config,
        display: Display,
        mic: Microphone,
        speaker: Speaker,
        push_to_talk: bool = False,
        echo: EchoCanceller | None = None,
        wake: Wakefulness | None = None,
    ) -> None:
        self.agent = agent
        self.config = config
        self.display = display
        self.mic = mic
        self.speaker = speaker
        self.push_to_talk = push_to_talk
        self.echo = echo
        self.wake = wake  # None: always listening
        setting = config.audio.barge_in
        self.barge_in = setting == "on" or (setting == "auto" and echo is not None)
        if self.barge_in:
            agent.rejoin_s = config.reply.rejoin_ms / 1000
        agent.cues = config.audio.cues
        self.turns = TurnTaking(config.vad, config.reply, sleeps=wake is not None)
        self.vad = VoiceDetector(config.vad.aggressiveness, config.vad.floor_dbfs)
        self.stop = asyncio.Event()  # the session replaces it with its signal handler's
        self.gate = asyncio.Event()  # set = the user is silent, the agent may speak
        self.gate.set()
        self._turn_lock = asyncio.Lock()
        self._pending: PendingReply | None = None
        self._early: _EarlyStt | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._deaf = False
        self._doubted = 0  # voiced frames heard since a start that may be echo, 0 = none
        self._past_echo = 0  # of them, captured after the paused reply's sound was gone
        self._quiet = 0  # unvoiced frames in a row while doubted
        self._recheck_at = 0  # the voiced-frame count of the next recheck
        self._paused_at = 0.0  # time.monotonic() of the pause for a doubted start
        self._doubt_began = 0.0  # time.time() of that start
        self._echo_like = False  # that start's sound correlated with the reply
        self._undecided = 0  # utterances heard but not yet turned into a turn (or dropped)
        self._loud = 0  # loud frames in a row over the reply, before any start
        self._onset_wait = 0  # frames left for the detector to confirm a pause on level
        self._onset_at = 0.0  # time.monotonic() of that pause
        self._onset_spent = False  # a pause on level was not speech: not again this reply
        self._onset_level = dbfs_level(ONSET_DBFS)

    async def run(self) -> int:
        """Until ``stop`` is set (goodbye; the session's signal handler)."""
        listening = push_to_talk(self) if self.push_to_talk else self._listen()
        listener = asyncio.create_task(listening)
        self.display.status("listening")
        if self.wake is not None:
            self.display.note(f"({self._asleep_until()})")
            self.display.status("asleep")
        stopper = asyncio.create_task(self.stop.wait())
        done, _ = await asyncio.wait({listener, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
        if listener in done and listener.exception() is not None:
            await self._shutdown()
            raise listener.exception()  # type: ignore[misc]
        await self._shutdown()
        return 0

    async def _listen(self) -> None:
        async for frame in self.frames():
            self._on_frame(frame)

    async def frames(self) -> AsyncIterator[Frame]:
        """The microphone's frames, with the agent's own voice taken out when it can be."""
        async for frame in self.mic.frames():
            if self.echo is not None and self._resting(frame):
                self.echo.rest()
            elif self.echo is not None:
                frame = Frame(self.echo.clean(frame.samples), frame.captured_at)
            yield frame

    def _resting(self, frame: Frame) -> bool:
        """Asleep with nothing sounding: the wake word model needs no echo cancelled, and
        sleep is when CPU matters (a Raspberry Pi waiting all day)."""
        return self.wake is not None and self.wake.asleep and not self._own_voice(frame)

    def _own_voice(self, frame: Frame) -> bool:
        """The room may still hold the agent's sound (``echo_tail_ms`` after it stopped)."""
        tail = self.config.audio.echo_tail_ms / 1000
        return frame.captured_at < self.speaker.audible_until() + tail

    def _on_frame(self, frame: Frame) -> None:
        if self._own_voice(frame) and not self.barge_in:
            if not self._deaf:
                self._deaf = True
                self.turns.reset()  # nothing heard before or during playback carries over
            self.gate.set()
            return
        self._deaf = False
        voiced = self.vad.is_speech(frame.samples)
        if self.wake is not None and self.wake.asleep:
            woken = self.wake.listen(frame, voiced)
            if woken is not None:
                self._on_wake(woken)
            return
        self._hear(frame, voiced)
        if self.wake is not None and not self.wake.still_awake(frame.captured_at, self._busy()):
            self.fall_asleep(f"{self.wake.timeout_s:g} s of silence")

    def _hear(self, frame: Frame, voiced: bool) -> None:
        if self.barge_in and self.echo is not None:
            self._onset(frame)
        for event in self.turns.feed(frame.samples, voiced):
            self._on_event(event, frame)
        if self._doubted and not self.turns.maybe_speech:
            self._doubted = 0  # a blip too short to be an utterance: the reply goes on
            self.speaker.resume()
        elif self._doubted and voiced:
            self._quiet = 0
            self._doubted += 1
            past = self._past_the_echo(frame)
            self._past_echo += past
            if past and self._doubted >= self._recheck_at:
                self._recheck_at = self._doubted + RECHECK_FRAMES
                self._barge_in_unless_echo()
        elif self._doubted:
            self._quiet += 1
            if self._quiet == ECHO_GONE_FRAMES and self._echo_like and self.speaker.paused:
                log.debug("a doubted voice stopped with the reply: its echo, reply resumed")
                self._doubted, self._past_echo = 1, 0  # a leak that comes back: doubted afresh
                self.speaker.resume()
        self._update_gate()

    def _onset(self, frame: Frame) -> None:
        """Pause the reply on a loud start over it, before the detector is sure (see
        ONSET_DBFS); resume it if the detector does not start an utterance in time."""
        if self._onset_wait:
            self._onset_wait -= 1
            if not self._onset_wait and not self._doubted:
                if self.turns.maybe_speech:
                    self._onset_wait = 1  # a start is forming: its first frames decide
                else:
                    log.debug("a loud start over the reply was not speech: reply resumed, "
                              "and paused only on speech starts until it ends")  # fmt: skip
                    self._onset_spent = True
                    self.speaker.resume()
            return
        if not self.speaker.speaking:
            self._loud, self._onset_spent = 0, False
            return
        if self._onset_spent or self.speaker.paused or self.turns.endpointer.in_speech:
            self._loud = 0
            return
        self._loud = self._loud + 1 if rms(frame.samples) >= self._onset_level else 0
        if self._loud >= ONSET_FRAMES:
            self._loud = 0
            self.speaker.pause()
            self._onset_wait, self._onset_at = ONSET_GRACE_FRAMES, time.monotonic()

    def _on_wake(self, woken: Woken) -> None:
        """The wake word: listen from its end on (a request said in the same breath is the
        turn); the "listening" tone unless the user is already going on."""
        assert self.wake is not None
        self.display.note(f"(heard \u201c{self.wake.word.phrase}\u201d: listening)")
        self.display.status("listening")
        for heard in woken.after:
            self._hear(heard.frame, heard.voiced)
        going_on = self.turns.endpointer.in_speech  # not a voiced frame or two of echo
        log.debug("%d ms after the wake word handed over; %s", 20 * len(woken.after),
                  "the user goes on" if going_on else "listening tone")  # fmt: skip
        if not going_on:
            self.agent.cue(cues.wake)

    def _busy(self) -> bool:
        """The conversation is going on: the user speaking or undecided, a reply in flight or
        sounding."""
        pending = self._pending
        return (self.turns.maybe_speech or self._undecided > 0 or self.speaker.playing
                or (pending is not None and not pending.task.done()))  # fmt: skip

    def fall_asleep(self, why: str) -> None:
        """Back to the wake word alone: nothing more is transcribed until it is said."""
        assert self.wake is not None
        self.wake.sleep()
        self.turns.reset()
        self._cancel_early()
        self.gate.set()
        self.agent.cue(cues.sleep)
        self.display.note(f"({why}: {self._asleep_until()})")
        self.display.status("asleep")

    def _asleep_until(self) -> str:
        assert self.wake is not None
        return f"asleep until you say \u201c{self.wake.word.phrase}\u201d"

    def _on_event(self, event: TurnEvent, frame: Frame) -> None:
        if self._doubted and isinstance(event, (Paused, Ask)):
            return  # no early transcript or request for what may be the reply's echo
        if isinstance(event, Started):
            log.debug("speech started (frame captured %.3f s ago)",
                      time.monotonic() - frame.captured_at)  # fmt: skip
            self.display.status("hearing")
            self._spawn(self.agent.chat.warm())  # the request will follow in seconds
            if self.barge_in and self.speaker.speaking:
                paused_on_level = self._onset_wait > 0
                self._onset_wait = 0
                self.speaker.pause()  # at once; resumed if it was only the reply's echo
                self._doubted, self._quiet, self._recheck_at = 1, 0, 0
                self._paused_at = self._onset_at if paused_on_level else time.monotonic()
                self._past_echo = 1 if self._past_the_echo(frame) else 0
                self._doubt_began = time.time()
                self._echo_like = self._likeness() >= ECHO_LIKENESS
                if self._past_the_echo(frame):
                    self._barge_in_unless_echo()
            else:
                self.speaker.stop_cues()  # a "thinking" tone gives way to the user's voice
        elif isinstance(event, Paused) and self.config.reply.early_transcription:
            self._start_early(event)
        elif isinstance(event, Resumed):
            self._cancel_early()
            if self._pending is not None and self._pending.speculative:
                self._drop_reply("the user went on")  # nothing was shown, played or written
        elif isinstance(event, Ask):
            self._ask_early(event)
        elif isinstance(event, Judge):
            self._judge_early(event)
        elif isinstance(event, Utterance):
            if self._doubted:
                self._doubted = 0
                self._spawn(self._echo_or_user(event, speech_end(frame, event)))
                return
            self.take(event, speech_end(frame, event))

    def _past_the_echo(self, frame: Frame) -> bool:
        """Whether ``frame`` was captured after the paused reply's last sound could reach the
        microphone: voice then is not the reply's echo, however it correlates. Through
        speakers the canceller can let echo through when its path shifts (a busy machine, an
        underrun: measured, leaks that correlate little with the reply started turns and
        stopped replies); the pause is at once, the decision waits for this. With no
        canceller (a headset) there is no echo: at once."""
        margin = self.speaker.latency_s + ECHO_MARGIN_S
        return self.echo is None or frame.captured_at > self._paused_at + margin

    def _likeness(self) -> float:
        return self.echo.echo_likeness() if self.echo is not None else 0.0

    def _barge_in_unless_echo(self) -> None:
        """Stop the reply for the user's voice, not for the canceller's leak: when the echo
        path shifts, a few hundred ms of echo can get through, and they look like what is
        being played. Playback pauses at once either way; a start that correlates with the
        reply is doubted and rechecked as more of it is heard (the user going on makes it
        clear), and a doubted utterance is judged by its words when it ends."""
        likeness = self._likeness()
        if likeness >= ECHO_LIKENESS and self._doubted < DOUBT_FRAMES:
            log.debug("speech start doubted: %.2f like the reply", likeness)
            return
        if self._past_echo < PAST_ECHO_FRAMES and self._doubted < DOUBT_FRAMES:
            log.debug("speech start doubted: %d voiced frames past the reply's echo so far",
                      self._past_echo)  # fmt: skip
            return
        self._doubted = 0
        if self.speaker.speaking:
            self.interrupt("barge-in", began=self._doubt_began)  # it records what was spoken

    async def _echo_or_user(self, u: Utterance, ended: float) -> None:
        """A doubted utterance ended: the reply's own words (or none) resume the reply; any
        other words are the user's, and take the floor as a barge-in would have."""
        speaking = self.agent.speaking
        around = speaking.sounding() if speaking is not None else ""  # paused there
        try:
            heard: Transcription | None = await self.agent.hear(u.audio)
        except Exception:  # told when the utterance is taken as a turn below
            heard = None
        if heard is not None and speaking is not None and is_echo(heard.text, around):
            if self.agent.speaking is speaking:  # not interrupted meanwhile
                log.info("%.1f s of the reply's own echo (%r): reply goes on", u.audio.seconds,
                         heard.text)  # fmt: skip
                self.speaker.resume()
            return
        self.interrupt("barge-in", began=ended - (u.audio.seconds - u.silence_s))
        self.take(u, ended)

    def _update_gate(self) -> None:
        """The agent may speak when the user is silent and nothing they said is undecided."""
        if self.turns.maybe_speech or self._undecided:
            self.gate.clear()
        else:
            self.gate.set()

    def _start_early(self, event: Paused) -> None:
        self._cancel_early()
        prior = self._unanswered()
        audio = event.audio
        if prior is not None and prior.audio is not None:
            # the user went on before the reply began (or it was a false start): their turn
            # is transcribed whole, and that can start now rather than after the silence
            audio = concat([prior.audio, event.audio], SPEECH_RATE_HZ)
        task = asyncio.create_task(self.agent.hear(audio))
        verdict: asyncio.Future[float | None] = asyncio.get_running_loop().create_future()
        if self.agent.end_of_turn is None:
            verdict.set_result(None)  # no model (yet): the words and the silence decide
        early = _EarlyStt(event.generation, time.time(), task, verdict, prior=prior)
        self._early = early
        task.add_done_callback(lambda _: setattr(early, "heard_at", time.time()))
        self._spawn(self._decide_early(early, event))

    def _judge_early(self, event: Judge) -> None:
        early = self._early
        if early is None or early.generation != event.generation or early.verdict.done():
            return

        async def judge() -> None:
            finished = await self.agent.judge(event.audio)
            if not early.verdict.done():
                early.verdict.set_result(finished)

        self._spawn(judge())

    async def _decide_early(self, early: _EarlyStt, event: Paused) -> None:
        """The early transcript and the end-of-turn model's verdict (a few tens of ms, asked
        when the silence has lasted vad.judge_after_ms): together they decide how much more
        silence ends the turn."""
        try:
            heard = await early.task
            finished = await early.verdict
        except (asyncio.CancelledError, Exception):  # cancelled (the user went on), or failed
            return  # (a failure is reported when the utterance needs the transcript)
        log.debug("early transcript %r, end-of-turn probability %s", heard.text,
                  "-" if finished is None else f"{finished:.2f}")  # fmt: skip
        for ask in self.turns.heard(event.generation, heard.text, finished):
            self._ask_early(ask)

    def _ask_early(self, ask: Ask) -> None:
        """Send the request before the hangover ends, for a plain next turn only (no earlier
        reply waits to be merged); the reply is held, unseen and unheard, until the hangover
        completes, and dropped if the user goes on speaking."""
        waiting = self._pending is not None and not self._pending.turn.committed
        if waiting or self._early is None or self._early.generation != ask.generation:
            return
        turn = Turn("microphone", ask.text, early_transcription=True, speculative=True)
        turn.mark("stt_start", self._early.started)
        turn.mark("stt_done", self._early.heard_at)
        log.debug("speculative request for generation %d", ask.generation)
        self._reply(turn, ask.generation)

    def _unanswered(self) -> Turn | None:
        """The turn whose reply has not begun (or was withdrawn as it began): what the user
        says now joins it."""
        pending = self._pending
        if (pending is None or pending.speculative or pending.turn.committed
                or pending.turn.audio is None):  # fmt: skip
            return None
        return pending.turn

    def _cancel_early(self) -> None:
        if self._early is not None:
            self._early.task.cancel()
            self._early.verdict.cancel()
            self._early = None

    def take(self, u: Utterance, ended: float) -> None:
        """An utterance to turn into a turn (or drop): decided in order, one at a time."""
        self._undecided += 1
        self._spawn(self._on_utterance(u, ended))

    def interrupt(self, why: str, began: float | None = None) -> None:
        """Silence the agent and drop its reply in flight (the user takes the floor). A reply
        that had only just begun (its turn not committed yet: ``reply.rejoin_ms``) to a user
        who went on after a pause (at ``began``, ``time.time()``; now if not given) was a
        false start: they had paused, not finished. It is withdrawn unrecorded, and what
        they say now joins that turn, transcribed whole."""
        self.speaker.stop()
        pending = self._pending
        if pending is not None and _only_paused(pending.turn, began or time.time()):
            log.info("reply withdrawn as it began: the user went on (%s)", why)
            self.display.note("(you went on: the reply stopped, and your words join one turn)")
            pending.turn.withdrawn = True
            pending.task.cancel()
            pending.generation = None  # not an early reply any more: merged when they finish
            return  # kept as pending, so the next utterance is merged with its audio
        speaking = self.agent.speaking
        if (
            pending is not None
            and not pending.turn.committed
            and speaking is not None
            and (speaking.turn is pending.turn and speaking.sounded)
        ):
            self.agent.commit(pending.turn)  # answered in part: kept, with the part heard
        self._drop_reply(why)

    def _spawn(self, coro: Coroutine[object, object, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _on_utterance(self, u: Utterance, ended: float) -> None:
        try:
            await self._take_utterance(u, ended)
        finally:
            self._undecided -= 1
            self._update_gate()

    async def _take_utterance(self, u: Utterance, ended: float) -> None:
        async with self._turn_lock:
            early = self._early if self._early and self._early.generation == u.generation else None
            if self._early is not None:
                self._early.verdict.cancel()  # the turn has ended: no verdict needed any more
            self._early = None
            pending = self._pending
            if pending is not None and pending.generation == u.generation:
                self._adopt(pending.turn, u, ended)
                return
            stt_done = None
            try:
                if early is not None:
                    stt_start = early.started
                    heard = await early.task
                    stt_done = early.heard_at  # not when the hangover ended: that is later
                    if early.prior is not None and early.prior is not self._unanswered():
                        # transcribed with a turn that has been answered since: alone, now
                        early, stt_start = None, time.time()
                        heard = await self.agent.hear(u.audio)
                    elif early.prior is not None and not _more_words(heard.text, early.prior):
                        # no more words than the turn it went on from: the new audio may hold
                        # none (the thinking tone's echo, a knock), and then it is no turn
                        alone = await self.agent.hear(u.audio)
                        if not alone.text:
                            log.info("no words in %.1f s of audio", u.audio.seconds)
                            return
                else:
                    self._cancel_early()
                    stt_start = time.time()
                    heard = await self.agent.hear(u.audio)
            except VoiceAgentError as exc:  # a speech server failed: nothing to answer
                await self.agent.unheard(exc)
                return
            if not heard.text:
                log.info("no words in %.1f s of audio", u.audio.seconds)
                return
            if self.wake is not None and only_the_wake_word(heard.text, self.wake.word.phrase):
                log.info("only the wake word (%r): not a turn", heard.text)
                return
            text, audio = heard.text, u.audio
            merged = pending is not None and not pending.turn.committed
            if pending is not None and merged and pending.turn.audio is not None:
                # the user went on before the reply started: one turn, transcribed whole
                self._drop_reply("merged with what the user said next")
                audio = concat([pending.turn.audio, u.audio], SPEECH_RATE_HZ)
                if early is not None and early.prior is pending.turn:
                    whole = text  # transcribed whole already, during the silence
                else:
                    stt_start, stt_done = time.time(), None
                    try:
                        whole = (await self.agent.transcribe(audio)).text
                    except VoiceAgentError:  # the two parts as heard, then
                        whole = ""
                text = whole or f"{pending.turn.text} {text}"
            turn = Turn.spoken("microphone", audio, text)
            turn.mark("speech_end", ended)
            turn.mark("stt_start", min(stt_start, time.time()))
            turn.mark("stt_done", stt_done)
            turn.early_transcription = early is not None and (not merged or early.prior is not None)
            self.display.user(text)
            if self.turns.is_end_phrase(text):
                self.agent.commit(turn)
                self.display.note("(goodbye: session ended)")
                self.stop.set()
                return
            if self.wake is not None and self.turns.is_sleep_phrase(text):
                self.agent.commit(turn)
                self.fall_asleep("that was all")
                return
            self.display.status("thinking")
            self._reply(turn)

    def _adopt(self, turn: Turn, u: Utterance, ended: float) -> None:
        """The hangover completed: the speculative reply is this turn's reply."""
        assert self._pending is not None
        self._pending.generation = None
        turn.audio = u.audio
        turn.audio_seconds = round(u.audio.seconds, 3)
        turn.mark("speech_end", ended)
        self.display.user(turn.text)
        self.display.status("thinking")

    def _reply(self, turn: Turn, generation: int | None = None) -> None:
        self._pending = PendingReply(turn, asyncio.create_task(self._respond(turn)), generation)

    async def _respond(self, turn: Turn) -> None:
        await self.agent.respond(turn, self.gate)
        self.display.status("listening")

    def _drop_reply(self, why: str) -> None:
        """Cancel the reply in flight; if any of it was spoken, the agent records that much."""
        pending, self._pending = self._pending, None
        if pending is not None and not pending.task.done():
            log.info("reply cancelled: %s", why)
            pending.turn.withdrawn = True
            pending.task.cancel()

    async def _shutdown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self._cancel_early()
        pending = self._pending
        if pending is not None and not pending.task.done():
            pending.task.cancel()
            await asyncio.gather(pending.task, return_exceptions=True)
        if pending is not None and not pending.turn.committed and pending.turn.text:
            self.agent.commit(pending.turn)  # what the user said is kept even if never answered
        self.display.status("stopped")


def _more_words(whole: str, prior: Turn) -> bool:
    return len(words(whole)) > len(words(prior.text))


def is_echo(heard: str, reply: str) -> bool:
    """Whether what was heard is nothing, or only words of the reply (the agent's own voice
    through a canceller that let some through)."""
    words = re.findall(r"[a-z0-9']+", heard.lower())
    return not words or set(words) <= set(re.findall(r"[a-z0-9']+", reply.lower()))


def _only_paused(turn: Turn, began: float) -> bool:
    """Whether speech that began at ``began`` goes on from ``turn``: its reply not committed
    yet, and the silence between short enough to be a pause mid-thought."""
    ended = turn.events.get("speech_end")
    return (not turn.committed and turn.audio is not None and ended is not None
            and began - ended <= REJOIN_SILENCE_S)  # fmt: skip


def speech_end(frame: Frame, u: Utterance) -> float:
    """``time.time()`` at which the user stopped speaking: the frame that ended the utterance,
    less the silence the endpointer counted before it (the hangover, extended or not)."""
    return time.time() - (time.monotonic() - frame.captured_at) - u.silence_s
