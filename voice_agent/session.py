"""A chat session: builds the stages from the configuration and runs one of the chat modes."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from voice_agent.agent import Agent
from voice_agent.archive import Entry
from voice_agent.audio import read_file, silence, write_wav
from voice_agent.config import Config
from voice_agent.display import Display
from voice_agent.errors import AudioFileError, VoiceAgentError
from voice_agent.llm import ChatClient, Conversation
from voice_agent.llm_endpoint import resolve
from voice_agent.local_llm import local_endpoint
from voice_agent.speaker import AudioBuffer, AudioOut, Speaker
from voice_agent.stt import WhisperStt
from voice_agent.transcript import TranscriptWriter
from voice_agent.tts import PiperTts
from voice_agent.vad import SpeechConfirmer

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Needs:
    stt: bool
    tts: bool
    speaker: bool


async def build_agent(
    config: Config, display: Display, needs: Needs, resume: Entry | None = None
) -> Agent:
    """Load what the mode needs; the models load in parallel (each is seconds of CPU).

    With ``resume``, the model's history starts with that session's turns (the history
    budget still applies) and the new transcript names the one it continues.
    """
    launched = time.perf_counter()
    endpoint = resolve(config.llm, os.environ)
    server = None
    if endpoint is None:
        endpoint, server = await local_endpoint(config.llm)
    chat = ChatClient(endpoint, config.llm, server)
    try:
        llm_ready = chat.prime(config.llm.system_prompt) if server else chat.warm()
        (stt, tts), model, _ = await asyncio.gather(
            asyncio.to_thread(_load_models, config, needs), chat.ensure_model(), llm_ready
        )
    except BaseException:
        await chat.aclose()
        raise
    out: AudioOut | None = None
    if needs.speaker:
        out = Speaker(config.audio.output_device, on_note=display.note)
    elif tts is not None:
        out = AudioBuffer(tts.rate_hz)
    display.note(f"LLM: {model} at {endpoint.shown_url} ({endpoint.provider})")
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
    agent.keep_audio = config.transcripts.save_audio
    agent.speak_notices = needs.speaker
    return agent


def _load_models(config: Config, needs: Needs) -> tuple[WhisperStt | None, PiperTts | None]:
    """Load and warm the models one after the other, while the LLM connection is checked.

    One at a time because loading needs about twice a model's resident size for a moment:
    in parallel those peaks add up (measured: 445 MB against 370 MB one after the other).
    Each runs one inference, so the first turn does not pay for lazy initialisation.
    """
    stt = tts = None
    if needs.stt:
        stt = WhisperStt(config.stt)
        stt.transcribe(silence(1.0))
    if needs.tts:
        tts = PiperTts(config.tts)
        tts.synthesize("Hello.")
    return stt, tts


async def close(agent: Agent, display: Display) -> bool:
    """End the session; False when some turns could not be saved (they are printed)."""
    await agent.chat.aclose()
    if isinstance(agent.out, Speaker):
        agent.out.close()
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
    agent = await build_agent(config, display, Needs(stt=True, tts=True, speaker=False))
    assert isinstance(agent.out, AudioBuffer)
    agent.keep_shown = True
    confirmer = SpeechConfirmer(config.vad.silero_threshold) if config.vad.silero_confirm else None
    stop = _stop_on_signals()
    failed = 0
    try:
        for n, path in enumerate(inputs, start=1):
            if display.closed or stop.is_set():
                break
            reply = output_dir / f"reply-{n:03d}.wav"
            ok = await _until(_file_turn(agent, config, confirmer, path, reply), stop)
            failed += ok is False
    finally:
        saved = await close(agent, display)
    return 1 if failed or agent.failures or not saved else 0


async def _file_turn(
    agent: Agent, config: Config, confirmer: SpeechConfirmer | None, path: Path, reply: Path
) -> bool:
    """One file as one turn; False when the file or the reply file failed (already told)."""
    display = agent.display
    assert isinstance(agent.out, AudioBuffer)
    try:
        audio = read_file(path, max_seconds=config.audio.max_file_s)
    except AudioFileError as exc:
        display.error(str(exc))
        return False
    turn = agent.new_turn(str(path))
    turn.audio = audio
    turn.extra["audio_seconds"] = round(audio.seconds, 3)
    turn.mark("stt_start")
    # the same check as a live utterance gets: silence and noise are no turn at all
    speech = await asyncio.to_thread(confirmer.speech_only, audio) if confirmer else audio
    heard = await agent.transcribe(speech) if speech is not None else None
    turn.mark("stt_done")
    if heard is None or not heard.text:
        display.note(f"(no speech heard in {path})")
        return True
    turn.text = heard.text
    display.user(heard.text)
    agent.commit(turn)  # the file's words are final: kept even if the reply is cut off
    if await agent.respond(turn) is None:
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
    agent = await build_agent(config, display, needs, resume)
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
                turn = agent.new_turn("text")
                turn.text = line.strip()
                display.user(turn.text)
                agent.commit(turn)  # typed words are final: keep them even if cut off next
                await _until(agent.respond(turn), stop)
    finally:
        saved = await close(agent, display)
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
    """Ctrl+C and SIGTERM end the session cleanly: turns in the transcript stay complete."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
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


async def run_live(config: Config, push_to_talk: bool, resume: Entry | None = None) -> int:
    """The hands-free conversation on the microphone and speaker."""
    from voice_agent.live import LiveSession
    from voice_agent.mic import Microphone

    launched = time.perf_counter()
    display = Display()
    mic = Microphone(config.audio.input_device, config.vad.frame_ms, display.note)
    mic.start()
    try:
        needs = Needs(stt=True, tts=True, speaker=True)
        agent = await build_agent(config, display, needs, resume)
    except BaseException:
        mic.close()
        raise
    assert isinstance(agent.out, Speaker)
    display.note(
        f"(microphone: {mic.name} at {mic.rate_hz} Hz; speaker: {agent.out.name}; "
        f"ready in {time.perf_counter() - launched:.1f} s)"
    )
    try:
        session = LiveSession(agent, config, display, mic, agent.out, push_to_talk)
        code = await session.run()
    finally:
        mic.close()
        saved = await close(agent, display)
    return code if saved else 1
