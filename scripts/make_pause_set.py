#!/usr/bin/env python3
"""Write tests/data/pauses.tsv: public clips with a thinking pause in the middle of a sentence.

People stop to think mid-sentence ("I'd like to book a table for... [0.9 s] four people").
Each public clip under 12 s with at least three words gets two entries: a silence of
0.5-1.0 s inserted at the word boundary nearest its middle. The boundary comes from Whisper's
word alignment, moved to the quietest 20 ms within 0.15 s of it so no word is cut. Four
stretches of the spoken sonnet add real human pauses (0.34-0.62 s between lines) as read.

The table holds times, not audio: tests and benchmarks build each clip from the original
file (``pause_set.py``), so the set is reproducible and small. Run this again only when the
clips change; it needs the bundled Whisper model.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from conftest import DATA, clip, clips  # noqa: E402
from speech_marks import aligned_words  # noqa: E402

from voice_agent.audio import SPEECH_RATE_HZ, read_file  # noqa: E402

SHORT_S, LONG_S = (0.5, 0.6, 0.7), (0.8, 0.9, 1.0)  # one of each per clip
SEARCH_S = 0.15
# (start s, end s, the words read) from the sonnet's alignment: whole lines, real pauses
SONNET = [
    (2.5, 9.05, "From fairest creatures we desire increase, That thereby beauty's rose "
                "might never die,"),
    (9.05, 14.8, "But as the riper should by time decease, His tender heir might bear his "
                 "memory:"),
    (15.0, 22.65, "But thou contracted to thine own bright eyes, Feed'st thy light's flame "
                  "with self-substantial fuel,"),
    (31.0, 40.35, "Thou that art now the world's fresh ornament, And only herald to the gaudy "
                  "spring, Within thine own bud buriest thy content,"),
]  # fmt: skip


def quietest_near(samples: np.ndarray, at_s: float) -> float:
    n = SPEECH_RATE_HZ // 50
    lo = max(0, round((at_s - SEARCH_S) * SPEECH_RATE_HZ))
    hi = min(len(samples) - n, round((at_s + SEARCH_S) * SPEECH_RATE_HZ))
    starts = range(lo, hi, n // 4)
    energy = [float(np.mean(samples[s : s + n].astype(np.float64) ** 2)) for s in starts]
    return (starts[int(np.argmin(energy))] + n // 2) / SPEECH_RATE_HZ


def main() -> int:
    rows = []
    k = 0
    for c in clips():
        words = aligned_words(c.path)
        if c.seconds >= 12 or len(words) < 3:
            continue
        middle = c.seconds / 2
        i = min(range(len(words) - 1), key=lambda j: abs(words[j].end - middle))
        boundary = (words[i].end + words[i + 1].start) / 2
        at = quietest_near(read_file(c.path).samples, boundary)
        for pause in (SHORT_S[k % 3], LONG_S[k % 3]):
            rows.append([c.path.name, "0", f"{c.seconds:.3f}", f"{at:.3f}", f"{pause:.1f}",
                         c.transcript])  # fmt: skip
        k += 1
    sonnet = clip("shakespeare_sonnet_001.mp3").path.name
    for start, end, text in SONNET:
        rows.append([sonnet, f"{start:.3f}", f"{end:.3f}", "", "0", text])
    out = DATA / "pauses.tsv"
    with out.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\")
        w.writerow(["file", "start_s", "end_s", "pause_at_s", "pause_s", "transcript"])
        w.writerows(rows)
    print(f"{len(rows)} entries written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
