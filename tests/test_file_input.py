"""Bad audio files given to ``chat --input``: each is one clear line or "(no speech heard)",
never an invented turn, never a traceback, and the good files around them are answered.

All the files go to one session (one model load): a 2-hour WAV, four silent minutes, a file
cut short after its header, NaN and infinite samples, a folder, an unreadable file, and
real speech before and after them.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
from conftest import clip, transcript_files, wer
from llm_server import ScriptedLLM, Stream

from voice_agent.audio import read_file
from voice_agent.errors import AudioFileError
from voice_agent.transcript import read

pytestmark = pytest.mark.slow


def sparse_wav(path: Path, seconds: float, rate: int = 16_000) -> None:
    """A valid 16-bit mono WAV of silence that takes no disk space (the data is a hole)."""
    data = int(seconds * rate) * 2
    header = (
        b"RIFF"
        + struct.pack("<I", 36 + data)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
        + b"data"
        + struct.pack("<I", data)
    )
    with path.open("wb") as fh:
        fh.write(header)
        fh.truncate(len(header) + data)


def test_every_bad_file_is_one_line_or_no_speech_and_good_files_are_answered(
    tmp_path: Path,
) -> None:
    speech = clip("cards_001.wav")
    long = tmp_path / "two-hours.wav"
    sparse_wav(long, 2 * 3600)
    silent = tmp_path / "four-silent-minutes.wav"
    sparse_wav(silent, 240)
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(speech.path.read_bytes()[: 44 + 400])  # header and 12 ms of audio
    nan = tmp_path / "nan.wav"
    samples, rate = soundfile.read(clip("jfk.flac").path, dtype="float32", always_2d=True)
    samples[1000:1010] = np.nan
    samples[2000:2010] = np.inf
    samples[3000:3010] = -np.inf
    soundfile.write(nan, samples, rate, subtype="FLOAT")
    folder = tmp_path / "a-folder.wav"
    folder.mkdir()
    locked = tmp_path / "locked.wav"
    shutil.copy(speech.path, locked)
    locked.chmod(0)

    inputs = [speech.path, long, silent, truncated, nan, folder, locked, clip("jfk.flac").path]
    with ScriptedLLM(Stream("First answer."), Stream("Second."), Stream("Third.")) as server:
        run = run_unprivileged(server.url, tmp_path, inputs)
        heard = [server.user_messages(i)[-1] for i in range(len(server.requests))]
    assert run.returncode == 1  # some inputs were refused
    errors = [line for line in run.stderr.splitlines() if line]
    assert errors == [
        f"voice-agent: error: audio file {long} is longer than 300 s (120.0 min): one --input "
        "file is one turn of speech; cut it shorter, or raise audio.max_file_s",
        f"voice-agent: error: {folder} is a folder, not an audio file",
        f"voice-agent: error: cannot read audio file {locked}: permission denied (check its "
        "permissions)",
    ], run.stderr
    assert f"(no speech heard in {silent})" in run.stdout
    assert f"(no speech heard in {truncated})" in run.stdout
    assert len(heard) == 3  # the two clips and the one with NaN samples, nothing invented
    assert wer([speech.transcript], [heard[0]]) < 0.2
    assert wer([clip("jfk.flac").transcript] * 2, heard[1:]) < 0.2
    [md] = transcript_files(tmp_path / "t")
    assert [t.role for t in read(md).turns] == ["USER", "ASSISTANT"] * 3


def run_unprivileged(
    url: str, tmp_path: Path, inputs: list[Path]
) -> subprocess.CompletedProcess[str]:
    """The CLI without the power to read files it has no permission for (as root, too)."""
    args = [sys.executable, "-m", "voice_agent", "chat", "--llm-url", url, "--transcripts-dir",
            str(tmp_path / "t"), "--output-dir", str(tmp_path / "out")]  # fmt: skip
    for path in inputs:
        args += ["--input", str(path)]
    drop = ["setpriv", "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search"]
    return subprocess.run(drop + args, capture_output=True, text=True, timeout=300)


def test_decoding_is_bounded_and_stops_at_the_limit(tmp_path: Path) -> None:
    # a WAV whose header says "length unknown" is measured while it is decoded
    path = tmp_path / "streamed.wav"
    sparse_wav(path, 30)
    raw = bytearray(path.read_bytes())
    raw[40:44] = b"\xff\xff\xff\xff"
    path.write_bytes(bytes(raw))
    assert read_file(path, max_seconds=60).seconds == pytest.approx(30, abs=0.1)
    with pytest.raises(AudioFileError, match="longer than 10 s"):
        read_file(path, max_seconds=10)
