"""Sound with ALSA alone, as on Raspberry Pi OS Lite: no PulseAudio or PipeWire to reach, the
devices are ALSA's (a 48 kHz stereo "card" behind ALSA's plug; see alsa_room.py)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from alsa_room import AlsaRoom
from conftest import clip, run_cli, transcript_files, wer
from llm_server import ScriptedLLM, Stream
from room import AgentProcess, wait_until

from voice_agent.audio import read_file
from voice_agent.config import SttConfig
from voice_agent.stt import WhisperStt
from voice_agent.transcript import read

pytestmark = pytest.mark.slow
REPLY = "The quick brown fox jumps over the lazy dog near the river bank."
LONG_REPLY = (
    "Here is a longer answer, long enough to pull the plug on. The first point is that a "
    "speaker can go away at any moment. The second point is that the agent should wait for "
    "it. The third point is that nothing said should be lost."
)


def turns_recorded(folder: Path) -> int:
    files = sorted(folder.rglob("*.jsonl"))
    return sum(1 for line in files[0].read_text().splitlines() if line) if files else 0


def test_a_spoken_turn_through_alsa_alone_is_heard_answered_and_kept(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    room = AlsaRoom(home)
    said = clip("arctic_a0024.wav")
    folder = tmp_path / "t"
    try:
        with ScriptedLLM(Stream(REPLY)) as server:
            agent = AgentProcess(["--llm-url", server.url, "--transcripts-dir", str(folder),
                                  "chat"], "", "", env=room.env)  # fmt: skip
            try:
                started = agent.wait_for(r"\(microphone: ", timeout=90)
                agent.wait_for("Listening", timeout=30)
                time.sleep(1.0)
                room.say(read_file(said.path))
                wait_until(lambda: turns_recorded(folder) >= 1, 40, "the turn")
                wait_until(lambda: room.heard().seconds > 0 and _reply_heard(room), 20,
                           "the reply played")  # fmt: skip
                assert agent.interrupt() == 0
            finally:
                agent.kill()
        asked = server.user_messages()[-1]
    finally:
        room.close()
    assert "microphone: default at 16000 Hz; speaker: default" in started, started
    assert wer([said.transcript], [asked]) <= 0.15, asked
    heard = WhisperStt(SttConfig()).transcribe(room.heard()).text
    assert wer([REPLY], [heard]) <= 0.15, heard
    turns = read(transcript_files(folder)[0]).turns
    assert [t.role for t in turns] == ["USER", "ASSISTANT"]
    assert turns[1].text == REPLY


def _reply_heard(room: AlsaRoom) -> bool:
    """The reply (about 4 s) has played, and a second of silence after it."""
    samples = room.heard().samples
    loud = (abs(samples.astype(int)) > 1000).nonzero()[0]
    return len(loud) > 0 and (loud[-1] - loud[0]) > 3 * 16000 and len(samples) - loud[-1] > 16000


def test_devices_without_a_sound_server_shows_the_alsa_devices_and_the_choice(
    tmp_path: Path,
) -> None:
    """What a Raspberry Pi OS Lite owner sees: no sound server, ALSA's devices with the rates
    each takes, and which the agent would open, at which rate."""
    home = tmp_path / "home"
    home.mkdir()
    room = AlsaRoom(home)
    try:
        run = run_cli("devices", env=room.env, timeout=60)
        chosen = run_cli("--output-device", "speaker", "devices", env=room.env, timeout=60)
    finally:
        room.close()
    assert run.code == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == ("Sound system: no sound server answering: ALSA devices directly; "
                        "PortAudio host API ALSA")  # fmt: skip
    default = r" \*\s+\d+  default  \(mono at .*16000.*48000 Hz; up to \d+ ch\)"
    assert any(re.fullmatch(default, line) for line in lines), run.stdout
    assert re.search(r"The agent would use: microphone \d+ 'default' at 16000 Hz; "
                     r"speaker \d+ 'default' at \d+ Hz\.", run.stdout), run.stdout  # fmt: skip
    assert re.search(r"speaker \d+ 'speaker' at", chosen.stdout), chosen.stdout


def test_a_speaker_unplugged_mid_reply_is_waited_for_and_the_reply_goes_on(
    tmp_path: Path,
) -> None:
    """ALSA alone, where nothing moves the sound elsewhere: the device stops and vanishes; the
    agent says so, retries with backoff, and when it is back the reply plays on and is kept."""
    home = tmp_path / "home"
    home.mkdir()
    room = AlsaRoom(home)
    folder = tmp_path / "t"
    try:
        with ScriptedLLM(Stream(LONG_REPLY), Stream("Okay.")) as server:
            agent = AgentProcess(["--llm-url", server.url, "--transcripts-dir", str(folder),
                                  "chat"], "", "", env=room.env)  # fmt: skip
            try:
                agent.wait_for("Listening", timeout=90)
                room.say(read_file(clip("arctic_a0024.wav").path))
                wait_until(lambda: room.heard().seconds > 0 and _loud(room) > 3.0, 40,
                           "the reply playing")  # fmt: skip
                room.unplug_speaker()
                agent.wait_for(r"speaker 'default' stopped; reopening", timeout=20)
                time.sleep(3.0)  # a reopen or two fails meanwhile: the device is gone
                room.plug_in_speaker()
                agent.wait_for(r"speaker 'default' is back", timeout=40)
                wait_until(lambda: turns_recorded(folder) >= 1, 60, "the rest of the reply")
                time.sleep(1.0)
                room.say(read_file(clip("2830-3980-0043.wav").path))
                wait_until(lambda: turns_recorded(folder) >= 2, 40, "a turn after")
                assert agent.interrupt() == 0
            finally:
                agent.kill()
    finally:
        room.close()
    turns = read(transcript_files(folder)[0]).turns
    assert [t.role for t in turns] == ["USER", "ASSISTANT", "USER", "ASSISTANT"]
    assert turns[1].text == LONG_REPLY  # played in full after the speaker came back
    heard = WhisperStt(SttConfig()).transcribe(room.heard()).text
    assert wer([LONG_REPLY], [heard]) <= 0.25, heard


def _loud(room: AlsaRoom) -> float:
    """Seconds of the agent's sound so far."""
    samples = room.heard().samples
    return float((abs(samples.astype(int)) > 1000).sum()) / 16000
