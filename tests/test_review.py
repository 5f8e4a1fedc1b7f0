"""Reviewing past sessions: list, show, search, export, stats, and IDs that stay in the folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from conftest import EXAMPLE_TRANSCRIPT, run_cli

from voice_agent.transcript import TranscriptWriter, parse


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """The example transcript from another tool, plus two sessions the agent wrote."""
    root = tmp_path / "transcripts"
    (root / "2026" / "01").mkdir(parents=True)
    shutil.copy(EXAMPLE_TRANSCRIPT, root / "2026" / "01" / "2026-01-07_180914.md")
    for started, turns in [
        (datetime(2026, 3, 2, 9, 30, 0), ["What is the capital of Peru?", "Lima is."]),
        (
            datetime(2026, 3, 5, 20, 15, 7),
            [
                "Remind me about the dentist",
                "Noted: dentist.",
                "And about PERU trip",
                "Peru trip noted.",
            ],
        ),
    ]:
        w = TranscriptWriter(root, "scripted-model", started)
        for i, text in enumerate(turns):
            w.append("USER" if i % 2 == 0 else "ASSISTANT", text)
            if i % 2:
                t0 = started.timestamp() + 10 * i
                w.record(
                    {
                        "turn": i // 2 + 1,
                        "events": {"speech_end": t0, "first_audio_out": t0 + 1},
                        "stages": {"speech_end_to_first_audio": 1.0 + i / 10, "stt": 0.4},
                    }
                )
    return root


def cli(folder: Path, *args: str) -> tuple[int, str, str]:
    run = run_cli("--transcripts-dir", str(folder), "transcripts", *args)
    return run.code, run.stdout, run.stderr


def test_list_is_newest_first_with_model_turns_and_first_words(folder: Path) -> None:
    code, out, _ = cli(folder)
    assert code == 0
    lines = out.splitlines()
    assert [line.split()[0] for line in lines] == [
        "2026-03-05_201507",
        "2026-03-02_093000",
        "2026-01-07_180914",
    ]
    assert "scripted-model" in lines[0] and "4 turns" in lines[0] and "Remind me" in lines[0]
    assert "z-ai/glm-4.7" in lines[2] and "2 turns" in lines[2]
    code, out, _ = cli(folder, "list", "-n", "1", "--json")
    [only] = json.loads(out)
    assert only["id"] == "2026-03-05_201507" and only["turns"] == 4


def test_show_latest_and_by_prefix(folder: Path) -> None:
    code, out, _ = cli(folder, "show", "--latest", "--raw")
    assert code == 0 and "Remind me about the dentist" in out
    code, out, _ = cli(folder, "show", "2026-01", "--raw")
    assert out == EXAMPLE_TRANSCRIPT.read_text(encoding="utf-8")


def test_ambiguous_or_unknown_ids_say_so(folder: Path) -> None:
    code, _, err = cli(folder, "show", "2026-03")
    assert code != 0 and "matches 2 transcripts" in err and "Traceback" not in err
    code, _, err = cli(folder, "show", "1999")
    assert code != 0 and "no transcript '1999'" in err


def test_search_is_case_insensitive_with_dates(folder: Path) -> None:
    code, out, _ = cli(folder, "search", "peru")
    assert code == 0
    assert len(out.splitlines()) == 3
    assert "2026-03-05 20:15:07" in out and "PERU trip" in out
    code, out, _ = cli(folder, "search", "peru", "--since", "2026-03-03")
    assert all("2026-03-05" in line for line in out.splitlines())
    code, out, _ = cli(folder, "search", "peru", "--until", "2026-03-02")
    assert [line.split()[2] for line in out.splitlines()] == ["2026-03-02_093000"]
    code, out, _ = cli(folder, "search", "mask")
    assert "z-ai" not in out and "2026-01-07 18:09:14" in out
    code, _, _ = cli(folder, "search", "nothing-like-this")
    assert code == 1


def test_export_formats(folder: Path) -> None:
    _, out, _ = cli(folder, "export", "2026-01-07", "--format", "json")
    data = json.loads(out)
    example = parse(EXAMPLE_TRANSCRIPT.read_text(encoding="utf-8"))
    assert data["model"] == "z-ai/glm-4.7" and data["started"] == "2026-01-07 18:09:14"
    assert [t["text"] for t in data["turns"]] == [t.text for t in example.turns]
    _, out, _ = cli(folder, "export", "2026-01-07", "--format", "md")
    assert out == EXAMPLE_TRANSCRIPT.read_text(encoding="utf-8")
    _, out, _ = cli(folder, "export", "--latest", "--format", "txt")
    assert "User: Remind me about the dentist" in out and "Assistant: Noted: dentist." in out


def test_stats_gives_median_and_p90_per_stage(folder: Path) -> None:
    code, out, _ = cli(folder, "stats")
    assert code == 0
    row = next(line for line in out.splitlines() if line.startswith("speech_end_to_first_audio"))
    assert row.split()[1:] == ["1.100", "1.300", "3"]


def test_path_prints_the_folder(folder: Path) -> None:
    assert cli(folder, "path")[1].strip() == str(folder)


@pytest.mark.parametrize(
    "attack",
    ["../outside.md", "../../etc/passwd", "/etc/passwd", "2026/../../outside.md", "link/secret.md"],
)
def test_paths_outside_the_folder_are_refused(folder: Path, attack: str) -> None:
    outside = folder.parent / "outside.md"
    outside.write_text(EXAMPLE_TRANSCRIPT.read_text(encoding="utf-8"))
    secret_dir = folder.parent / "elsewhere"
    secret_dir.mkdir()
    shutil.copy(outside, secret_dir / "secret.md")
    os.symlink(secret_dir, folder / "link")
    for action in ("show", "export", "stats"):
        code, out, err = cli(folder, action, attack)
        assert code != 0, (action, out)
        assert "outside the transcripts folder" in err or "no transcript" in err
        assert "Traceback" not in err and "Wearing the mask" not in out
    code, out, _ = cli(folder, "search", "Wearing the mask")
    assert "secret" not in out and "outside" not in out


def test_resume_sends_the_earlier_turns_and_names_the_session_it_continues(folder: Path) -> None:
    from llm_server import ScriptedLLM, Stream

    with ScriptedLLM(Stream("Your dentist is on Friday.")) as server:
        run = run_cli("--transcripts-dir", str(folder), "--llm-url", server.url,
                      "transcripts", "resume", "2026-03-05", "--text", "--mute",
                      stdin="When was the dentist again?\n")  # fmt: skip
    assert run.code == 0, run.stderr
    sent = [(m["role"], m["content"]) for m in server.requests[0]["messages"][1:]]
    assert sent == [("user", "Remind me about the dentist"), ("assistant", "Noted: dentist."),
                    ("user", "And about PERU trip"), ("assistant", "Peru trip noted."),
                    ("user", "When was the dentist again?")]  # fmt: skip
    _, out, _ = cli(folder, "list", "--json")
    newest = json.loads(out)[0]
    assert newest["turns"] == 2 and newest["first_words"] == "When was the dentist again?"
    assert newest["continues"] == "2026-03-05_201507"
    sidecar = Path(newest["path"]).with_suffix(".jsonl").read_text().splitlines()
    assert json.loads(sidecar[0]) == {"session": {"continues": "2026-03-05_201507"}}


ESC = "\x1b]0;pwned\x07\x1b[2J"


def test_escape_sequences_from_a_model_name_or_a_turn_never_reach_the_terminal(
    folder: Path,
) -> None:
    w = TranscriptWriter(folder, f"evil{ESC}model", datetime(2026, 4, 1, 8, 0, 0))
    w.append("USER", f"hello {ESC}")
    w.append("ASSISTANT", f"reply \x9b31m {ESC}")
    assert w.path is not None
    raw = w.path.read_bytes()
    assert b"\x1b" not in raw and b"\x07" not in raw
    assert parse(raw.decode()).model == f"evil{ESC}model"  # kept exactly, written inert
    for args in (["list"], ["list", "--json"], ["search", "hello"], ["show", "2026-04-01"],
                 ["export", "2026-04-01", "--format", "txt"],
                 ["export", "2026-04-01", "--format", "json"],
                 ["export", "2026-04-01", "--format", "md"]):  # fmt: skip
        code, out, err = cli(folder, *args)
        assert code == 0, (args, err)
        assert "evil" in out or "hello" in out, args
        for control in ("\x1b", "\x07", "\x9b"):
            assert control not in out + err, (args, out)
    _, out, _ = cli(folder, "export", "2026-04-01", "--format", "json")
    assert json.loads(out)["turns"][1]["text"] == f"reply \x9b31m {ESC}"  # same data, inert


@pytest.mark.parametrize(
    "line",
    ["null", '{"session": "x"}', '{"turn": 1, "stages": {"stt": "fast"}}', "[1, 2]", '"text"',
     '{"turn": 2, "events": {"speech_end": "later"}}', '{"turn": 3, "events": [1]}',
     '{"turn": 4, "stages": {"stt": NaN}}'],
)  # fmt: skip
def test_one_bad_sidecar_line_is_skipped_with_a_warning_and_review_goes_on(
    folder: Path, line: str
) -> None:
    [sidecar] = [p for p in folder.rglob("2026-03-05*.jsonl")]
    with sidecar.open("a") as fh:
        fh.write(line + "\n")
    code, out, err = cli(folder, "list")
    assert code == 0 and len(out.splitlines()) == 3, err
    assert f"{sidecar} line 3: not a turn record; skipped" in err
    assert "Traceback" not in err and "unexpected" not in err
    code, out, err = cli(folder, "stats")
    assert code == 0 and "speech_end_to_first_audio" in out, err
    assert "3 turns in 3 session(s)" in out


def test_a_symlink_loop_is_one_clear_line(folder: Path) -> None:
    os.symlink("loop.md", folder / "loop.md")
    for action in ("show", "export"):
        code, out, err = cli(folder, action, "loop.md")
        assert code == 1
        assert (
            err.strip()
            == "voice-agent: error: loop.md is a symbolic link that leads back to itself"
        )
    code, out, err = cli(folder, "list")
    assert code == 0 and len(out.splitlines()) == 3 and err == ""


def test_output_piped_into_head_ends_quietly(folder: Path) -> None:
    for n in range(40):
        w = TranscriptWriter(folder, "m", datetime(2025, 1, 1 + n % 28, 10, n, 0))
        w.append("USER", "words " * 2000)
    for args in (["list"], ["search", "words"]):
        proc = subprocess.run(
            f"{sys.executable} -m voice_agent --transcripts-dir {folder} transcripts "
            f"{' '.join(args)} | head -1",
            shell=True, capture_output=True, text=True, env=clean_env(),
        )  # fmt: skip
        assert proc.stdout.count("\n") == 1
        assert proc.stderr == "", proc.stderr


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("VOICE_AGENT_")}
