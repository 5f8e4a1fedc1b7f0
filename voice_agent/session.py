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
        out = Speaker(config.audio.output_device)
    elif tts is not None:
        out = AudioBuffer(tts.rate_hz)
    display.note(f"LLM: {model} at {endpoint.base_url} ({endpoint.provider})")
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


async def close(agent: Agent, display: Display) -> None:
    await agent.chat.aclose()
    if isinstance(agent.out, Speaker):
        agent.out.close()
    if agent.writer.path is not None:
        display.note(f"(transcript: {agent.writer.path})")


async def run_files(config: Config, inputs: Sequence[Path], output_dir: Path) -> int:
    """Each file is one user turn; the reply to input N is written to output_dir/reply-NNN.wav."""
    display = Display()
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VoiceAgentError(f"cannot create output folder {output_dir}: {exc.strerror}") from None
    agent = await build_agent(config, display, Needs(stt=True, tts=True, speaker=False))
    assert isinstance(agent.out, AudioBuffer)
    failed = 0
    try:
        for n, path in enumerate(inputs, start=1):
            try:
                audio = read_file(path)
            except AudioFileError as exc:
                display.error(str(exc))
                failed += 1
                continue
            turn = agent.new_turn(str(path))
            turn.audio = audio
            turn.extra["audio_seconds"] = round(audio.seconds, 3)
            turn.mark("stt_start")
            heard = await agent.transcribe(audio)
            turn.mark("stt_done")
            if not heard.text:
                display.note(f"(no speech heard in {path})")
                continue
            turn.text = heard.text
            display.user(heard.text)
            if await agent.respond(turn) is not None:
                out = output_dir / f"reply-{n:03d}.wav"
                write_wav(out, agent.out.take())
                display.note(f"(reply written to {out})")
    finally:
        await close(agent, display)
    return 1 if failed or agent.failures else 0


async def run_text(config: Config, mute: bool, resume: Entry | None = None) -> int:
    """Typed turns from stdin, one line each, until end of input."""
    display = Display()
    needs = Needs(stt=False, tts=not mute, speaker=not mute)
    agent = await build_agent(config, display, needs, resume)
    stop = _stop_on_signals()
    lines = _stdin_lines()
    try:
        while True:
            line = await _until(lines.get(), stop)
            if not line:
                break  # end of input, Ctrl+C or SIGTERM
            if line.strip():
                turn = agent.new_turn("text")
                turn.text = line.strip()
                display.user(turn.text)
                agent.commit(turn)  # typed words are final: keep them even if cut off next
                await _until(agent.respond(turn), stop)
    finally:
        await close(agent, display)
    return 1 if agent.failures else 0


def _stdin_lines() -> asyncio.Queue[str]:
    """Lines typed on stdin ("" at the end). A daemon thread reads them, so a session ended by
    a signal never waits for a line that will not come."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str] = asyncio.Queue()

    def pump() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(queue.put_nowait, line)
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
        return await session.run()
    finally:
        mic.close()
        await close(agent, display)
