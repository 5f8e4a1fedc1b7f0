"""A chat session: builds the stages from the configuration and feeds turns to the agent."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from voice_agent.agent import Agent
from voice_agent.audio import read_file, write_wav
from voice_agent.config import Config
from voice_agent.display import Display
from voice_agent.errors import AudioFileError, VoiceAgentError
from voice_agent.llm import ChatClient, Conversation
from voice_agent.llm_endpoint import resolve
from voice_agent.speaker import Speaker
from voice_agent.stt import WhisperStt
from voice_agent.transcript import TranscriptWriter
from voice_agent.tts import PiperTts

log = logging.getLogger(__name__)


async def build_agent(
    config: Config, display: Display, *, need_stt: bool, need_tts: bool, need_speaker: bool
) -> Agent:
    """Load what the mode needs, models in parallel (each load is seconds of CPU)."""
    launched = time.perf_counter()
    endpoint = resolve(config.llm, os.environ)
    stt_task = asyncio.to_thread(WhisperStt, config.stt) if need_stt else _none()
    tts_task = asyncio.to_thread(PiperTts, config.tts) if need_tts else _none()
    stt, tts = await asyncio.gather(stt_task, tts_task)
    speaker = Speaker() if need_speaker else None
    chat = ChatClient(endpoint, config.llm)
    model = await chat.ensure_model()
    display.note(f"LLM: {model} at {endpoint.base_url} ({endpoint.provider})")
    log.info("ready in %.2f s", time.perf_counter() - launched)
    writer = TranscriptWriter(config.transcripts_dir, model, datetime.now())
    conversation = Conversation(config.llm.system_prompt, config.llm.history_chars)
    return Agent(chat, conversation, writer, display, stt, tts, speaker)


async def _none() -> None:
    return None


async def run_files(config: Config, inputs: Sequence[Path], output_dir: Path) -> int:
    """Each file is one user turn; the reply to input N is written to output_dir/reply-NNN.wav."""
    display = Display()
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VoiceAgentError(f"cannot create output folder {output_dir}: {exc.strerror}") from None
    agent = await build_agent(config, display, need_stt=True, need_tts=True, need_speaker=False)
    failed = 0
    try:
        for n, path in enumerate(inputs, start=1):
            try:
                audio = read_file(path)
            except AudioFileError as exc:
                display.error(str(exc))
                failed += 1
                continue
            reply = await agent.audio_turn(audio, str(path))
            if reply is not None and reply.audio is not None:
                out = output_dir / f"reply-{n:03d}.wav"
                write_wav(out, reply.audio)
                display.note(f"(reply written to {out})")
    finally:
        await agent.chat.aclose()
        _report_transcript(agent, display)
    return 1 if failed or agent.failures else 0


async def run_text(config: Config, mute: bool) -> int:
    """Typed turns from stdin, one line each, until end of input."""
    display = Display()
    agent = await build_agent(
        config, display, need_stt=False, need_tts=not mute, need_speaker=not mute
    )
    try:
        while True:
            line = await asyncio.to_thread(sys.stdin.readline)
            if not line:
                break
            if line.strip():
                await agent.text_turn(line.strip())
    finally:
        await agent.chat.aclose()
        _report_transcript(agent, display)
    return 1 if agent.failures else 0


def _report_transcript(agent: Agent, display: Display) -> None:
    if agent.writer.path is not None:
        display.note(f"(transcript: {agent.writer.path})")
