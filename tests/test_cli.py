"""The chat command end to end, as a user runs it: real models, a real loopback LLM server."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import SPEECH, clip, normalise, run_cli, transcript_files, wer
from llm_server import Raw, ScriptedLLM, Stream

from voice_agent.audio import read_file
from voice_agent.config import SttConfig
from voice_agent.stt import WhisperStt
from voice_agent.transcript import read

pytestmark = pytest.mark.slow

REPLY = "The **quick** brown fox jumps over the *lazy* dog near the river bank."
SPOKEN = "The quick brown fox jumps over the lazy dog near the river bank."
STRUCTURE = re.compile(
    r"# Voice Conversation: (.+)\n\*\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\*\n\n---\n\n"
    r"(\*\*(USER|ASSISTANT):\*\*\n\n.+?\n\n---\n\n)+\Z",
    re.DOTALL,
)


def chat(server: ScriptedLLM, tmp_path: Path, *inputs: Path, extra: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    args = ["chat"]
    for p in inputs:
        args += ["--input", str(p)]
    return run_cli(
        *args,
        "--output-dir",
        str(tmp_path / "out"),
        "--llm-url",
        server.url,
        "--transcripts-dir",
        str(tmp_path / "t"),
        *extra,
    )


def test_spoken_turn_end_to_end(tmp_path: Path) -> None:
    c = clip("jfk.flac")  # 44.1 kHz stereo FLAC
    with ScriptedLLM(Stream(REPLY)) as server:
        run = chat(server, tmp_path, c.path)
    assert run.code == 0, run.stderr
    assert run.stderr == ""
    assert REPLY in run.stdout
    heard_by_server = server.user_messages()[0]
    assert wer([c.transcript], [heard_by_server]) < 0.15

    reply_wav = tmp_path / "out" / "reply-001.wav"
    spoken_back = WhisperStt(SttConfig()).transcribe(read_file(reply_wav)).text
    assert wer([SPOKEN], [spoken_back]) <= 0.15, spoken_back

    [md] = transcript_files(tmp_path / "t")
    text = md.read_text(encoding="utf-8")
    assert STRUCTURE.match(text), text
    t = read(md)
    assert t.model == "scripted-model"
    assert [x.role for x in t.turns] == ["USER", "ASSISTANT"]
    assert t.turns[0].text == heard_by_server
    assert t.turns[1].text == REPLY
    sidecar = md.with_suffix(".jsonl").read_text().splitlines()
    assert len(sidecar) == 1 and '"stt"' in sidecar[0] and '"audio_seconds": 11.0' in sidecar[0]


def test_several_files_are_one_session_with_history(tmp_path: Path) -> None:
    files = [
        clip("cards_001.wav").path,
        clip("LJ001-0001.flac").path,
        clip("speech_recognition_english.wav").path,
    ]
    with ScriptedLLM(Stream("First reply."), Stream("Second reply."), Stream("Third.")) as server:
        run = chat(server, tmp_path, *files)
    assert run.code == 0, run.stderr
    assert len(server.requests) == 3
    assert len(server.user_messages(-1)) == 3
    assert [m["content"] for m in server.requests[-1]["messages"] if m["role"] == "assistant"] == [
        "First reply.",
        "Second reply.",
    ]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "reply-001.wav",
        "reply-002.wav",
        "reply-003.wav",
    ]
    [md] = transcript_files(tmp_path / "t")
    assert len(read(md).turns) == 6


def test_mp3_input_is_understood(tmp_path: Path) -> None:
    c = clip("shakespeare_sonnet_001.mp3")  # 53 s, longer than Whisper's 30 s window
    with ScriptedLLM(Stream("A sonnet.")) as server:
        run = chat(server, tmp_path, c.path)
    assert run.code == 0, run.stderr
    assert wer([c.transcript], [server.user_messages()[0]]) < 0.3


def assert_one_clear_line(stderr: str, words: str) -> None:
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("voice-agent: error:")
    assert words in lines[0]


def test_corrupt_audio_file_is_one_line_and_earlier_turns_stay(tmp_path: Path) -> None:
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio at all")
    with ScriptedLLM(Stream("Ten of clubs it is.")) as server:
        run = chat(server, tmp_path, clip("cards_001.wav").path, bad)
    assert run.code != 0
    assert_one_clear_line(run.stderr, "cannot read audio file")
    assert "broken.wav" in run.stderr
    [md] = transcript_files(tmp_path / "t")
    assert [t.text for t in read(md).turns][1] == "Ten of clubs it is."


def test_missing_audio_file_is_one_line(tmp_path: Path) -> None:
    with ScriptedLLM() as server:
        run = chat(server, tmp_path, tmp_path / "nope.wav")
    assert run.code != 0
    assert_one_clear_line(run.stderr, "does not exist")


@pytest.mark.parametrize(("flag", "name"), [("--stt-model", "no-such-model"),
                                           ("--voice", "no-voice.onnx")])  # fmt: skip
def test_missing_model_path_is_one_line(tmp_path: Path, flag: str, name: str) -> None:
    with ScriptedLLM() as server:
        run = chat(server, tmp_path, clip("cards_001.wav").path, extra=(flag, str(tmp_path / name)))
    assert run.code != 0
    assert_one_clear_line(run.stderr, f"{name} does not exist")


def test_unreachable_llm_is_one_line_and_the_user_turn_is_kept(tmp_path: Path) -> None:
    run = run_cli(
        "chat",
        "--input",
        str(clip("cards_003.wav").path),
        "--output-dir",
        str(tmp_path / "out"),
        "--llm-url",
        "http://127.0.0.1:9/v1",
        "--llm-model",
        "m",
        "--transcripts-dir",
        str(tmp_path / "t"),
    )
    assert run.code != 0
    assert_one_clear_line(run.stderr, "cannot connect to the LLM at http://127.0.0.1:9/v1")
    [md] = transcript_files(tmp_path / "t")
    assert [t.role for t in read(md).turns] == ["USER"]
    assert "seven of clubs" in read(md).turns[0].text.lower().replace("7", "seven")


@pytest.mark.parametrize(
    ("body", "ctype"),
    [
        (b"<!doctype html><html><body>Welcome to nginx!</body></html>", "text/html"),
        (b"Ollama is running", "text/plain; charset=utf-8"),
    ],
)
def test_url_answering_html_or_plain_text_is_one_line(
    tmp_path: Path, body: bytes, ctype: str
) -> None:
    with ScriptedLLM(Raw(body=body, content_type=ctype)) as server:
        run = chat(server, tmp_path, clip("cards_002.wav").path)
    assert run.code != 0
    assert_one_clear_line(run.stderr, "not an OpenAI-compatible API")


def test_typed_turns_with_global_flags_before_or_after_the_subcommand(tmp_path: Path) -> None:
    with ScriptedLLM(Stream("Hello, Ada."), Stream("You said your name is Ada.")) as server:
        run = run_cli(
            "--llm-url",
            server.url,
            "chat",
            "--text",
            "--mute",
            "--transcripts-dir",
            str(tmp_path / "t"),
            stdin="My name is Ada.\n\nWhat is my name?\n",
        )
    assert run.code == 0, run.stderr
    assert "Hello, Ada." in run.stdout and "You said your name is Ada." in run.stdout
    assert server.user_messages() == ["My name is Ada.", "What is my name?"]
    [md] = transcript_files(tmp_path / "t")
    assert [t.text for t in read(md).turns] == [
        "My name is Ada.",
        "Hello, Ada.",
        "What is my name?",
        "You said your name is Ada.",
    ]


def test_speech_clips_folder_is_complete() -> None:
    assert len(list(SPEECH.glob("*.wav"))) + len(list(SPEECH.glob("*.flac"))) >= 19


def test_context_too_long_trims_the_history_and_retries_once(tmp_path: Path) -> None:
    message = (
        b'{"error": {"message": "This model\'s maximum context length is 8192 tokens. '
        b'However, your messages resulted in 9000 tokens.", "code": "context_length_exceeded"}}'
    )
    too_long = Raw(status=400, content_type="application/json", body=message)
    with ScriptedLLM(Stream("First answer."), too_long, Stream("Second answer.")) as server:
        run = run_cli(
            "--llm-url", server.url, "chat", "--text", "--mute",
            "--transcripts-dir", str(tmp_path / "t"),
            stdin="First question, a long one.\nSecond?\n",
        )  # fmt: skip
    assert run.code == 0, run.stderr
    assert "Second answer." in run.stdout
    assert len(server.requests) == 3
    assert server.user_messages(1) == ["First question, a long one.", "Second?"]
    assert server.user_messages(2) == ["Second?"]  # the older half left out, the system kept
    assert server.requests[2]["messages"][0]["role"] == "system"
    [md] = transcript_files(tmp_path / "t")
    assert [t.text for t in read(md).turns] == [
        "First question, a long one.",
        "First answer.",
        "Second?",
        "Second answer.",
    ]


THOUGHTS = ("The user asks about the ten of clubs. Let me weigh whether a card game or a "
            "magic trick is meant, then answer in one short sentence.")  # fmt: skip


def test_a_thinking_model_is_told_how_hard_to_think_and_its_thoughts_are_never_spoken(
    tmp_path: Path,
) -> None:
    """A reasoning model streams 3 s of thoughts before its answer (as glm-4.7 does through
    OpenRouter). llm.extra_body reaches every request; only the answer is spoken and in the
    Markdown; the thoughts, and how long they took, are in the sidecar."""
    config = tmp_path / "config.toml"
    config.write_text('[llm]\nextra_body = { reasoning = { effort = "low" }, top_k = 20 }\n')
    answer = Stream("The ten of clubs is a card.", reasoning=THOUGHTS, reasoning_s=3.0)
    with ScriptedLLM(answer) as server:
        run = chat(server, tmp_path, clip("cards_001.wav").path,
                   extra=("--config", str(config)))  # fmt: skip
    assert run.code == 0, run.stderr
    request = server.requests[0]
    assert request["reasoning"] == {"effort": "low"} and request["top_k"] == 20
    assert request["stream"] is True and request["model"] == "scripted-model"
    assert "weigh" not in run.stdout  # the thoughts are not shown as the reply either
    reply = read_file(tmp_path / "out" / "reply-001.wav")
    spoken = WhisperStt(SttConfig()).transcribe(reply)
    # the answer's seven words and nothing of the thoughts' twenty-five: Piper varies each
    # rendition, and tiny.en has heard "the ten of clubs as a cart" (two words of seven)
    assert wer(["The ten of clubs is a card."], [spoken.text]) <= 0.3, spoken.text
    assert not {"weigh", "magic", "trick", "user"} & set(normalise(spoken.text).split())
    assert reply.seconds < 4.0  # the answer alone takes about 2 s to say, the thoughts 8
    [md] = transcript_files(tmp_path / "t")
    assert [t.text for t in read(md).turns][1] == "The ten of clubs is a card."
    assert "weigh" not in md.read_text()
    [record] = [json.loads(line) for line in md.with_suffix(".jsonl").read_text().splitlines()]
    assert record["reasoning"] == THOUGHTS
    assert 2.5 <= record["stages"]["thinking"] <= 4.0
