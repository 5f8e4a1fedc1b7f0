"""Speech on a Wyoming server: the real wyoming-faster-whisper and wyoming-piper, started on
loopback ports with the bundled models, and the real CLI talking to them.

What a user sees is checked: the words heard, the reply spoken (transcribed back), the
start-up naming each server, and one clear line for every fault: nothing listening, a
server that is not Wyoming, one that never answers, a bad address, a model or voice the
server does not have.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import clip, run_cli, transcript_files, wer
from llm_server import ScriptedLLM, Stream
from room import AgentProcess, Headset, as_wav, ensure_pulseaudio, play, wait_until
from wyoming_servers import STT_ARGS, free_port, speech_servers, wyoming_server

from voice_agent.audio import read_file
from voice_agent.config import SttConfig
from voice_agent.stt import WhisperStt
from voice_agent.transcript import read

pytestmark = pytest.mark.slow
REPLY = "The seven of hearts is a fine card. Keep it."


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    with speech_servers(tmp_path_factory.mktemp("wyoming")) as uris:
        yield uris


def test_a_spoken_file_is_heard_and_answered_by_the_speech_servers(
    servers: tuple[str, str], tmp_path: Path
) -> None:
    stt, tts = servers
    speech = clip("1272-128104-0000.wav")
    with ScriptedLLM(Stream(REPLY)) as llm:
        run = run_cli(
            "--llm-url", llm.url, "--transcripts-dir", str(tmp_path / "t"),
            "--stt-server", stt, "chat", "--input", str(speech.path),
            "--output-dir", str(tmp_path / "out"), "--tts-server", tts,
        )  # fmt: skip
    assert run.code == 0, run.stderr
    # the start-up names where each stage runs
    assert f"at {stt}" in run.stdout + run.stderr and f"at {tts}" in run.stdout + run.stderr
    [md] = transcript_files(tmp_path / "t")
    turns = read(md).turns
    assert turns[0].role == "USER" and wer([speech.transcript], [turns[0].text]) <= 0.15
    assert turns[1].text == REPLY
    [sidecar] = md.parent.glob("*.jsonl")
    models = json.loads(sidecar.read_text().splitlines()[0])["models"]
    assert models["stt"].endswith(f"at {stt}") and models["tts"].endswith(f"at {tts}")
    # the reply was voiced by the server: what it said is the reply
    reply = read_file(tmp_path / "out" / "reply-001.wav")
    said = WhisperStt(SttConfig()).transcribe(reply).text
    assert wer([REPLY], [said]) <= 0.2, said


def test_a_server_that_is_not_running_is_one_line_naming_it(tmp_path: Path) -> None:
    uri = f"tcp://127.0.0.1:{free_port()}"
    with ScriptedLLM(Stream(REPLY)) as llm:
        run = run_cli("--llm-url", llm.url, "--transcripts-dir", str(tmp_path / "t"),
                      "--stt-server", uri, "chat", "--input", str(clip("cards_001.wav").path),
                      "--output-dir", str(tmp_path / "out"))  # fmt: skip
    assert run.code != 0
    assert f"cannot reach the speech-to-text server at {uri}: connection refused" in run.stderr
    assert "Start wyoming-faster-whisper there, or drop --stt-server" in run.stderr
    assert "Traceback" not in run.stderr


def test_a_server_that_is_not_wyoming_or_never_answers_is_a_clear_error(tmp_path: Path) -> None:
    garbage, silent = socket.socket(), socket.socket()
    for s in (garbage, silent):
        s.bind(("127.0.0.1", 0))
        s.listen()  # silent: the kernel accepts, and nothing is ever said

    def answer_garbage() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = garbage.accept()
                with conn:
                    conn.recv(65536)  # the request, then an answer that is not Wyoming's
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\xff\xfe{not json\n")
                    conn.shutdown(socket.SHUT_WR)
                    while conn.recv(65536):
                        pass

    threading.Thread(target=answer_garbage, daemon=True).start()
    config = tmp_path / "config.toml"
    config.write_text("[tts]\nserver_timeout_s = 2\n")
    uri_of = lambda s: f"tcp://127.0.0.1:{s.getsockname()[1]}"  # noqa: E731
    with ScriptedLLM(Stream(REPLY)) as llm:
        http_uri = llm.url.replace("http://", "tcp://").split("/v1")[0]
        for uri, said in ((uri_of(garbage), "gave no Wyoming answer"),
                          (http_uri, "gave no Wyoming answer"),
                          (uri_of(silent), "did not answer within 2 s")):  # fmt: skip
            started = time.monotonic()
            run = run_cli("--config", str(config), "--llm-url", llm.url, "--tts-server", uri,
                          "chat", "--input", str(clip("cards_001.wav").path),
                          "--output-dir", str(tmp_path))  # fmt: skip
            assert run.code != 0 and said in run.stderr, run.stderr
            assert f"text-to-speech server at {uri}" in run.stderr
            assert "Traceback" not in run.stderr and time.monotonic() - started < 30
    garbage.close()
    silent.close()


@pytest.mark.parametrize(
    ("flag", "value", "said"),
    [
        ("--stt-server", "ftp://127.0.0.1:9/v1", "must be tcp://HOST:PORT"),
        ("--stt-server", "localhost:10300", "must be tcp://HOST:PORT"),
        ("--tts-server", "tcp://127.0.0.1", "must be tcp://HOST:PORT"),
    ],
)
def test_a_bad_server_address_is_one_line(flag: str, value: str, said: str) -> None:
    run = run_cli(flag, value, "chat", "--text", stdin="hello\n")
    assert run.code != 0 and said in run.stderr and "Traceback" not in run.stderr


def test_a_model_or_voice_the_server_lacks_is_refused_with_what_it_has(
    servers: tuple[str, str], tmp_path: Path
) -> None:
    stt, tts = servers
    with ScriptedLLM(Stream(REPLY)) as llm:
        run = run_cli("--llm-url", llm.url, "--stt-server", stt, "--stt-model", "large-v9",
                      "chat", "--input", str(clip("cards_001.wav").path),
                      "--output-dir", str(tmp_path))  # fmt: skip
        assert run.code != 0 and f"server at {stt} has no model large-v9" in run.stderr
        assert "it offers: /" in run.stderr  # names what it has (the bundled model folder)
        run = run_cli("--llm-url", llm.url, "--tts-server", tts, "--voice", "xx_XX-nobody",
                      "chat", "--input", str(clip("cards_001.wav").path),
                      "--output-dir", str(tmp_path))  # fmt: skip
        assert run.code != 0 and f"server at {tts} has no voice xx_XX-nobody" in run.stderr


def test_live_session_goes_on_when_the_speech_server_dies_and_recovers_when_it_returns(
    servers: tuple[str, str], tmp_path: Path
) -> None:
    ensure_pulseaudio()
    _, tts = servers
    port = free_port()
    stt = f"tcp://127.0.0.1:{port}"
    data = tmp_path / "stt"
    first, lost, after = clip("cards_001.wav"), clip("cards_002.wav"), clip("cards_003.wav")
    headset = Headset("wyoming")
    with ScriptedLLM(Stream(REPLY)) as llm:
        server = wyoming_server("wyoming_faster_whisper", *STT_ARGS, data=data, port=port)
        server.__enter__()
        agent = AgentProcess(["--llm-url", llm.url, "--transcripts-dir", str(tmp_path / "t"),
                              "--stt-server", stt, "--tts-server", tts, "chat"],
                             headset.ear, headset.agent)  # fmt: skip
        try:
            agent.wait_for("Listening", timeout=60)
            play(headset.user, as_wav(first.path, tmp_path))
            wait_until(lambda: len(llm.requests) >= 1, 30, "the first turn")
            server.__exit__(None, None, None)  # the server dies mid-session
            time.sleep(3.0)  # the reply is spoken meanwhile
            play(headset.user, as_wav(lost.path, tmp_path))
            wait_until(lambda: any("not heard" in e for e in agent.errors), 30, "the error")
            time.sleep(4.0)  # "please say it again" is spoken: the user listens, then does
            with wyoming_server("wyoming_faster_whisper", *STT_ARGS, data=data, port=port):
                play(headset.user, as_wav(after.path, tmp_path))
                wait_until(lambda: len(llm.requests) >= 2, 30, "the turn after recovery")
                time.sleep(3.0)
            assert agent.interrupt() == 0, agent.errors
        finally:
            agent.kill()
            headset.close()
    [error] = [e for e in agent.errors if "not heard" in e]
    assert f"cannot reach the speech-to-text server at {stt}" in error
    assert "Traceback" not in "\n".join(agent.errors)
    # what was heard before and after is in the transcript, in order
    [md] = transcript_files(tmp_path / "t")
    said = [t.text for t in read(md).turns if t.role == "USER"]
    assert len(said) == 2
    assert wer([first.transcript], [said[0]]) <= 0.34 and wer([after.transcript], [said[1]]) <= 0.34
