"""Shared fixtures: real speech clips, the scripted loopback LLM server, the CLI as users run it."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import jiwer
import pytest
from whisper_normalizer.english import EnglishTextNormalizer

sys.path.insert(0, str(Path(__file__).parent))

from llm_server import ScriptedLLM

DATA = Path(__file__).parent / "data"
SPEECH = DATA / "speech"
EXAMPLE_TRANSCRIPT = DATA / "example-glm-4.7.md"
_normalise = EnglishTextNormalizer()


@dataclass(frozen=True)
class Clip:
    path: Path
    transcript: str
    seconds: float


def clips() -> list[Clip]:
    with (SPEECH / "manifest.tsv").open(newline="", encoding="utf-8") as fh:
        rows = csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [Clip(SPEECH / r["file"], r["transcript"], float(r["seconds"])) for r in rows]


def clip(name: str) -> Clip:
    return next(c for c in clips() if c.path.name == name)


def normalise(text: str) -> str:
    return _normalise(text)


def wer(references: list[str], hypotheses: list[str]) -> float:
    """Corpus word error rate after Whisper's English normalisation."""
    return float(jiwer.wer([normalise(r) for r in references], [normalise(h) for h in hypotheses]))


@pytest.fixture
def llm() -> Iterator[ScriptedLLM]:
    with ScriptedLLM() as server:
        yield server


@pytest.fixture
def transcripts_dir(tmp_path: Path) -> Path:
    return tmp_path / "transcripts"


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str


def run_cli(
    *args: str, stdin: str = "", env: dict[str, str] | None = None, timeout: float = 300
) -> Run:
    """Run ``voice-agent`` as a separate process, the way a user does."""
    full_env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("VOICE_AGENT_", "OPENROUTER_", "OPENAI_"))
    }
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", "voice_agent", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


def transcript_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.md"))
