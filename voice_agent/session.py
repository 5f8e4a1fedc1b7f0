"""A chat session: builds the stages from the configuration and runs one of the chat modes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from voice_agent import heap
from voice_agent.agent import Agent, one_model_at_a_time
from voice_agent.archive import Entry
from voice_agent.audio import read_file, silence, write_wav
from voice_agent.config import Config
from voice_agent.display import Display
from voice_agent.echo import EchoCanceller
from voice_agent.echo import start as start_echo_canceller
from voice_agent.end_of_turn import EndOfTurn, model_path
from voice_agent.errors import AudioFileError, VoiceAgentError
from voice_agent.llm import ChatClient, Conversation
from voice_agent.llm_endpoint import choose
from voice_agent.openai_speech import OpenAiStt, OpenAiTts, is_http
from voice_agent.recorder import Turn
from voice_agent.speaker import AudioBuffer, AudioOut, Speaker
from voice_agent.stt import SpeechToText, WhisperStt
from voice_agent.transcript import TranscriptWriter
from voice_agent.tts import PiperTts, TextToSpeech
from voice_agent.vad import SpeechConfirmer
from voice_agent.wake import Wakefulness, WakeWord
from voice_agent.wyoming_speech import WyomingStt, WyomingTts

if TYPE_CHECKING:
    from voice_agent.mic import Microphone

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Needs:
    stt: bool
    tts: bool
    speaker: bool


async def build_agent(
    config: Config,
    display: Display,
    needs: Needs,
    stack: contextlib.AsyncExitStack,
    resume: Entry | None = None,
) -> Agent:
    """Load what the mode needs; the models load while the LLM is reached (each is seconds
    of CPU). What is opened is closed by ``stack``, in reverse order.

    With ``resume``, the model's history starts with that session's turns (the history
    budget still applies) and the new transcript names the one it continues.
    """
    launched = time.perf_counter()
    endpoint, server = await choose(config.llm, os.environ)
    if server is not None:
        stack.push_async_callback(asyncio.to_thread, server.stop)
    chat = ChatClient(endpoint, config.llm, server.ensure_running if server else None)
    stack.push_async_callback(chat.aclose)
    llm_ready = chat.prime(config.llm.system_prompt) if server else chat.warm()
    models, model, _ = await asyncio.gather(
        asyncio.to_thread(_load_models, config, needs), chat.ensure_model(), llm_ready
    )
    stt, tts = models.stt, models.tts
    out: AudioOut | None = None
    if needs.speaker:
        speaker = Speaker(config.audio.output_device, on_note=display.note)
        stack.callback(speaker.close)
        out = speaker
    elif tts is not None:
        out = AudioBuffer(tts.rate_hz)
    display.note(f"LLM: {model} at {endpoint.shown_url} ({endpoint.provider})")
    for stage, engine, remote in (("speech to text", stt, config.stt.server),
                                  ("text to speech", tts, config.tts.server)):  # fmt: skip
        if engine is not None and remote:
            display.note(f"{stage}: {engine.name}")
    log.info("ready in %.2f s", time.perf_counter() - launched)
    writer = TranscriptWriter(
        config.transcripts_dir, model, datetime.now(), resume.id if resume else ""
    )
    history_chars = config.llm.history_chars
    if server is not None:
        # About 4 characters a token in English: half the window for history leaves the
        # other half for the system prompt and the reply.
        history_chars = min(history_chars, 2 * config.llm.local_context_tokens)
    conversation = Conversation(config.llm.system_prompt, history_chars)
    if resume is not None:
        for turn in resume.transcript.turns:
            conversation.add("user" if turn.role == "USER" else "assistant", turn.text)
        display.note(f"(continuing {resume.id}: {len(resume.transcript.turns)} earlier turns)")
    agent = Agent(chat, conversation, writer, display, config.reply, stt, tts, out)
    agent.confirmer = models.confirmer
    agent.keep_audio = config.transcripts.save_audio
    agent.speak_notices = needs.speaker
    return agent


@dataclass(frozen=True)
class Models:
    stt: SpeechToText | None
    tts: TextToSpeech | None
    confirmer: SpeechConfirmer | None  # Silero's second opinion on each utterance


def _load_models(config: Config, needs: Needs) -> Models:
    """Load and warm the models one after the other, while the LLM connection is checked.

    One at a time because loading needs about twice a model's resident size for a moment:
    in parallel those peaks add up (measured: 445 MB against 370 MB one after the other).
    Each runs one inference, so the first turn does not pay for lazy initialisation.
    """
    stt: SpeechToText | None = None
    tts: TextToSpeech | None = None
    confirmer = None
    if needs.stt and is_http(config.stt.server):
        stt = OpenAiStt(config.stt, os.environ)
    elif needs.stt and config.stt.server:
        stt = WyomingStt(config.stt)  # no recogniser here: the server has it loaded
    elif needs.stt:
        stt = WhisperStt(config.stt)
        stt.transcribe(silence(1.0))
    if needs.stt and not needs.speaker:
        # live mode loads Silero and Smart Turn once it listens (listening_models): they are
        # first needed at the end of the user's first words, and loading them took a quarter
        # of the launch with both speech stages on a server
        confirmer = _confirmer(config)
    if needs.tts:
        # a first synthesis warms the voice, and a server's answer tells its sample rate
        if is_http(config.tts.server):
            tts = OpenAiTts(config.tts, os.environ)
        elif config.tts.server:
            tts = WyomingTts(config.tts)
        else:
            tts = PiperTts(config.tts)
        tts.synthesize("Hello.")
    heap.give_back()  # loading needs about twice a model's size for a moment
    return Models(stt, tts, confirmer)


def _confirmer(config: Config) -> SpeechConfirmer | None:
    """Silero's check of each utterance, warmed once."""
    if not config.vad.silero_confirm:
        return None
    confirmer = SpeechConfirmer(config.vad.silero_threshold)
    confirmer.has_speech(silence(0.5))
    return confirmer


async def listening_models(agent: Agent, config: Config, display: Display) -> None:
    """Load Silero and Smart Turn while the agent already listens. Until they are there (a
    few tenths of a second) an utterance is taken without Silero's check and a pause is
    judged on silence alone, as with the models turned off; a model that cannot load is
    said once, and the session goes on without it."""

    async def load(make: Callable[[Config], T]) -> T | None:
        try:
            return await asyncio.to_thread(one_model_at_a_time, make, config)
        except Exception as exc:  # ModelError, or ONNX Runtime's own types
            log.debug("a listening model failed to load", exc_info=True)
            what = str(exc) if isinstance(exc, VoiceAgentError) else f"{type(exc).__name__}: {exc}"
            display.error(f"{what}; the session goes on without it (--debug shows the details)")
            return None

    agent.confirmer = await load(_confirmer)
    agent.end_of_turn = await load(lambda c: _end_of_turn_model(c, display))


def _end_of_turn_model(config: Config, display: Display) -> EndOfTurn | None:
    """Smart Turn for live turn-taking; without it (not installed, or turned off) turns end
    after ``vad.hangover_ms`` of silence, as before."""
    if config.vad.end_of_turn != "model" or not config.reply.early_transcription:
        return None
    path = model_path(config.vad.end_of_turn_model)
    if path is None:
        display.note(
            "(the end-of-turn model is not installed, so turns end after a fixed silence: "
            'scripts/setup.sh installs it, or set vad.end_of_turn = "silence")'
        )
        return None
    model = EndOfTurn(path)
    model.complete(silence(1.0))
    return model


def finish(agent: Agent, display: Display) -> bool:
    """The transcript's last word; False when some turns could not be saved (then they are
    printed, so nothing said is lost)."""
    saved = agent.writer.flush()  # the last try for turns a full disk held back
    if not saved:
        display.error(
            f"these turns could not be saved ({agent.writer.failure}); here they are in "
            "transcript format, to keep:"
        )
        display.error_block(agent.writer.unwritten())
    if agent.writer.path is not None:
        display.note(f"(transcript: {agent.writer.path})")
    return saved


async def run_files(config: Config, inputs: Sequence[Path], output_dir: Path) -> int:
    """Each file is one user turn; the reply to input N is written to output_dir/reply-NNN.wav."""
    display = Display()
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VoiceAgentError(f"cannot create output folder {output_dir}: {exc.strerror}") from None
    failed = 0
    async with contextlib.AsyncExitStack() as stack:
        needs = Needs(stt=True, tts=True, speaker=False)
        agent = await build_agent(config, display, needs, stack)
        agent.keep_shown = True
        stop = _stop_on_signals()
        try:
            for n, path in enumerate(inputs, start=1):
                if display.closed or stop.is_set():
                    break
                reply = output_dir / f"reply-{n:03d}.wav"
                ok = await _until(_file_turn(agent, config, path, reply), stop)
                failed += ok is False
        finally:
            saved = finish(agent, display)
    return 1 if failed or agent.failures or not saved else 0


async def _file_turn(agent: Agent, config: Config, path: Path, reply: Path) -> bool:
    """One file as one turn; False when the file or the reply file failed (already told)."""
    display = agent.display
    assert isinstance(agent.out, AudioBuffer)
    try:
        audio = read_file(path, max_seconds=config.audio.max_file_s)
    except AudioFileError as exc:
        display.error(str(exc))
        return False
    turn = Turn.spoken(str(path), audio)
    turn.mark("stt_start")
    # the same check as a live utterance gets: silence and noise are no turn at all
    confirmer = agent.confirmer
    speech = await asyncio.to_thread(confirmer.speech_only, audio) if confirmer else audio
    try:
        heard = await agent.transcribe(speech) if speech is not None else None
    except VoiceAgentError as exc:  # a speech server failed: this file, not the session
        display.error(f"{path}: {exc}")
        return False
    turn.mark("stt_done")
    if heard is None or not heard.text:
        display.note(f"(no speech heard in {path})")
        return True
    turn.text = heard.text
    display.user(heard.text)
    agent.commit(turn)  # the file's words are final: kept even if the reply is cut off
    if not await agent.respond(turn):
        return True
    try:
        write_wav(reply, agent.out.take())
    except (OSError, RuntimeError) as exc:  # soundfile raises RuntimeError subclasses
        display.error(f"cannot write the reply to {reply}: {exc}")
        return False
    display.note(f"(reply written to {reply})")
    return True


async def run_text(config: Config, mute: bool, resume: Entry | None = None) -> int:
    """Typed turns from stdin, one line each, until end of input."""
    display = Display()
    needs = Needs(stt=False, tts=not mute, speaker=not mute)
    async with contextlib.AsyncExitStack() as stack:
        agent = await build_agent(config, display, needs, stack, resume)
        agent.keep_shown = True  # the reply was read as it streamed in
        stop = _stop_on_signals()
        lines = _stdin_lines()
        try:
            # closed: whoever read the replies has gone (| head)
            while not display.closed and not stop.is_set():
                line = await _until(lines.get(), stop)
                if not line or stop.is_set():
                    break  # end of input, Ctrl+C or SIGTERM
                if line.strip():
                    turn = Turn("text", line.strip())
                    display.user(turn.text)
                    agent.commit(turn)  # typed words are final: kept even if cut off next
                    await _until(agent.respond(turn), stop)
        finally:
            saved = finish(agent, display)
    return 1 if agent.failures or not saved else 0


def _stdin_lines() -> asyncio.Queue[str]:
    """Lines typed on stdin ("" at the end). A daemon thread reads them, so a session ended by
    a signal never waits for a line that will not come."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str] = asyncio.Queue()

    def put(line: bytes) -> None:
        # decoded leniently: a stray invalid byte must not end the session
        loop.call_soon_threadsafe(queue.put_nowait, line.decode("utf-8", "replace"))

    def pump() -> None:
        # The file descriptor itself, not sys.stdin: a daemon thread blocked inside a
        # buffered reader makes the interpreter abort at exit (it cannot take the reader's lock).
        pending = b""
        try:
            while chunk := os.read(sys.stdin.fileno(), 65536):
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    put(line + b"\n")
        except (OSError, ValueError, AttributeError) as exc:  # stdin closed or absent
            log.debug("stdin: %s", exc)
        if pending:
            put(pending)
        loop.call_soon_threadsafe(queue.put_nowait, "")

    threading.Thread(target=pump, name="stdin", daemon=True).start()
    return queue


def _stop_on_signals() -> asyncio.Event:
    """Ctrl+C and SIGTERM end the session cleanly: turns in the transcript stay complete. A
    second one, in every mode, forces the exit at once (the user wants out now)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():
            os._exit(130)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    return stop


async def _until(coro: Awaitable[T], stop: asyncio.Event) -> T | None:
    """Run ``coro`` unless ``stop`` is set first (then it is cancelled and None returned)."""
    task = asyncio.ensure_future(coro)
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    if task.done():
        return task.result()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return None


def _wakefulness(config: Config, push_to_talk: bool, display: Display) -> Wakefulness | None:
    if not config.wake.word:
        return None
    if push_to_talk:
        display.note("(push-to-talk: Enter starts each turn, the wake word is not used)")
        return None
    return Wakefulness(WakeWord(config.wake.word, config.wake.threshold), config.wake.timeout_s)


def echo_canceller(
    config: Config, display: Display, mic: Microphone, speaker: Speaker
) -> EchoCanceller | None:
    """The canceller the settings ask for, fed by the speaker; says what the user gets."""
    echo = start_echo_canceller(config.audio.echo_cancellation, mic.latency_s, speaker.latency_s)
    if echo is not None:
        speaker.far_end = echo.played
    elif config.audio.echo_cancellation == "auto":
        display.note(
            "(echo cancellation could not start (--debug says why): the microphone is deaf "
            "while the agent speaks; reinstall with scripts/setup.sh to talk over it)"
        )
    return echo


async def run_live(config: Config, push_to_talk: bool, resume: Entry | None = None) -> int:
    """The hands-free conversation on the microphone and speaker."""
    from voice_agent.live import LiveSession
    from voice_agent.mic import Microphone

    launched = time.perf_counter()
    display = Display()
    wake = _wakefulness(config, push_to_talk, display)  # before minutes of loading: a bad name
    async with contextlib.AsyncExitStack() as stack:
        mic = Microphone(config.audio.input_device, config.vad.frame_ms, display.note)
        mic.start()
        stack.callback(mic.close)
        if config.vad.end_of_turn == "model":
            model_path(config.vad.end_of_turn_model)  # a wrong path stops the start, at once
        needs = Needs(stt=True, tts=True, speaker=True)
        agent = await build_agent(config, display, needs, stack, resume)
        loading = asyncio.create_task(listening_models(agent, config, display))
        stack.push_async_callback(asyncio.wait, [loading])
        assert isinstance(agent.out, Speaker)
        echo = echo_canceller(config, display, mic, agent.out)
        session = LiveSession(agent, config, display, mic, agent.out, push_to_talk, echo, wake)
        awake = f"wake word \u201c{wake.word.phrase}\u201d" if wake else "always listening"
        display.note(
            f"(microphone: {mic.name} at {mic.rate_hz} Hz; speaker: {agent.out.name}; "
            f"echo cancellation {'on' if echo else 'off'}; "
            f"barge-in {'on' if session.barge_in else 'off'}; {awake}; "
            f"ready in {time.perf_counter() - launched:.1f} s)"
        )
        session.stop = _stop_on_signals()
        try:
            code = await session.run()
        finally:
            saved = finish(agent, display)
    return code if saved else 1
