"""The pause set (tests/data/pauses.tsv, written by scripts/make_pause_set.py): real speech
with a thinking pause mid-sentence, built from the original clips."""

from __future__ import annotations

import csv
from dataclasses import dataclass

import numpy as np
from conftest import DATA, SPEECH

from voice_agent.audio import SPEECH_RATE_HZ, Audio, read_file


@dataclass(frozen=True)
class Paused:
    name: str  # file, and where the pause is
    transcript: str
    audio: Audio  # with the pause
    unpaused: Audio  # the same words without it
    pause_s: float  # inserted silence (0: the pauses are the reader's own)


def paused_clips() -> list[Paused]:
    out = []
    with (DATA / "pauses.tsv").open(newline="", encoding="utf-8") as fh:
        rows = csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\")
        for r in rows:
            samples = read_file(SPEECH / r["file"]).samples
            cut = samples[_at(r["start_s"]) : _at(r["end_s"])]
            pause_s = float(r["pause_s"])
            audio = cut
            if pause_s > 0:
                at = _at(r["pause_at_s"]) - _at(r["start_s"])
                gap = np.zeros(round(pause_s * SPEECH_RATE_HZ), dtype=cut.dtype)
                audio = np.concatenate([cut[:at], gap, cut[at:]])
            where = f"pause {pause_s:.1f} s at {r['pause_at_s']} s" if pause_s else \
                f"{r['start_s']}-{r['end_s']} s, the reader's own pauses"  # fmt: skip
            with_pause, without = Audio(audio, SPEECH_RATE_HZ), Audio(cut, SPEECH_RATE_HZ)
            out.append(Paused(f"{r['file']} ({where})", r["transcript"], with_pause, without,
                              pause_s))  # fmt: skip
    return out


def _at(seconds: str) -> int:
    return round(float(seconds) * SPEECH_RATE_HZ)
