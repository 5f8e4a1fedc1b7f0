"""Speech on an OpenAI-compatible audio API (``/audio/transcriptions``, ``/audio/speech``):
a loopback server with the documented shapes, backed by the real bundled models, and the
real CLI. What the user sees: the words heard, the reply voiced, and one line for each
failure, with the key never shown."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from audio_server import AudioApiServer, Failure, audio_api
from conftest import clip, run_cli, transcript_files, wer
from llm_server import ScriptedLLM, Stream

from voice_agent.audio import read_file
from voice_agent.config import SttConfig, TtsConfig
from voice_agent.errors import ConfigError
from voice_agent.openai_speech import OpenAiStt
from voice_agent.stt import WhisperStt
from voice_agent.transcript import read

pytestmark = pytest.mark.slow
REPLY = "The seven of hearts is a fine card. Keep it."
KEY = "sk-test-audio-0123456789abcdef"


@pytest.fixture(scope="module")
def api() -> Iterator[AudioApiServer]:
    with audio_api() as server:
        yield server


def chat_file(api: AudioApiServer, tmp_path: Path, *extra: str) -> tuple[int, str, str]:
    with ScriptedLLM(Stream(REPLY)) as llm:
        run = run_cli(
            "--llm-url", llm.url, "--transcripts-dir", str(tmp_path / "t"),
            "--stt-server", api.url, "--tts-server", api.url, *extra,
            "chat", "--input", str(clip("1272-128104-0000.wav").path),
            "--output-dir", str(tmp_path / "out"),
            env={"AUDIO_KEY": KEY},
        )  # fmt: skip
    return run.code, run.stdout, run.stderr


def test_a_spoken_file_is_heard_and_answered_through_the_audio_api(
    api: AudioApiServer, tmp_path: Path
) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[stt]\napi_key_env = "AUDIO_KEY"\n[tts]\napi_key_env = "AUDIO_KEY"\n')
    api.requests.clear()
    code, out, err = chat_file(api, tmp_path, "--config", str(config))
    assert code == 0, err
    [md] = transcript_files(tmp_path / "t")
    turns = read(md).turns
    speech = clip("1272-128104-0000.wav")
    assert wer([speech.transcript], [turns[0].text]) <= 0.15 and turns[1].text == REPLY
    said = WhisperStt(SttConfig()).transcribe(read_file(tmp_path / "out" / "reply-001.wav")).text
    assert wer([REPLY], [said]) <= 0.2, said
    # the documented shapes: a multipart upload with the model, and JSON asking for WAV
    heard = next(r for r in api.requests if r["path"] == "/v1/audio/transcriptions")
    assert heard["form"]["model"] == "whisper-1" and heard["form"]["language"] == "en"
    spoken = [r for r in api.requests if r["path"] == "/v1/audio/speech"]
    assert {r["json"]["response_format"] for r in spoken} == {"wav"}
    assert all(r["headers"]["Authorization"] == f"Bearer {KEY}" for r in api.requests)
    assert f"at {api.url}" in out + err and KEY not in out + err + md.read_text()
    sidecar = md.with_suffix(".jsonl").read_text()
    assert json.loads(sidecar.splitlines()[0])["models"]["stt"] == f"whisper-1 at {api.url}"
    assert KEY not in sidecar


@pytest.mark.parametrize(
    ("failures", "code", "said"),
    [
        # retried like the LLM client: at most twice, Retry-After honoured
        ([Failure(429, {"Retry-After": "0.2"}), Failure(503)], 0, None),
        ([Failure(500), Failure(502), Failure(503)], 1,
         "text-to-speech API error 503: the server failed"),
        ([Failure(401, body=json.dumps({"error": {"message": f"bad key {KEY}"}}).encode())], 1,
         "text-to-speech API error 401: the API key was refused: check AUDIO_KEY "
         "(tts.api_key_env) (bad key ***)"),
        ([Failure(402)], 1, "no credits left"),
        ([Failure(429, {"Retry-After": "120"})], 1, "asks to wait 120 s"),
    ],
)  # fmt: skip
def test_api_failures_are_retried_or_told_in_one_line_without_the_key(
    api: AudioApiServer, tmp_path: Path, failures: list[Failure], code: int, said: str | None
) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[stt]\napi_key_env = "AUDIO_KEY"\n[tts]\napi_key_env = "AUDIO_KEY"\n')
    api.failures[:] = failures
    got, out, err = chat_file(api, tmp_path, "--config", str(config))
    api.failures.clear()
    assert got == code, err
    if said is not None:
        assert said in err
    assert KEY not in out + err and "Traceback" not in err
    for md in transcript_files(tmp_path / "t"):
        assert KEY not in md.read_text() + md.with_suffix(".jsonl").read_text()


def test_a_voice_that_fails_mid_reply_is_told_and_the_turn_and_reply_text_are_kept(
    api: AudioApiServer, tmp_path: Path
) -> None:
    api.requests.clear()
    api.fail_after = 2  # the start-up's synthesis and the transcription work; then 500s
    api.failures[:] = [Failure(500), Failure(500), Failure(500)]
    try:
        code, _, err = chat_file(api, tmp_path)
    finally:
        api.failures.clear()
        api.fail_after = 0
    assert code == 1 and "Traceback" not in err
    assert "text-to-speech API error 500: the server failed" in err
    [md] = transcript_files(tmp_path / "t")
    turns = read(md).turns
    assert turns[0].role == "USER" and turns[0].text  # what was said is kept
    assert turns[1].role == "ASSISTANT" and turns[1].text == REPLY  # and the reply as received


def test_a_key_is_never_sent_over_plain_http_to_another_machine() -> None:
    config = SttConfig(server="http://speech-box.lan:8000/v1", api_key_env="AUDIO_KEY")
    with pytest.raises(ConfigError) as refused:
        OpenAiStt(config, {"AUDIO_KEY": KEY})
    assert "unencrypted" in str(refused.value) and KEY not in str(refused.value)
    # without a key, or on loopback, or over https, it is allowed
    OpenAiStt(SttConfig(server="http://speech-box.lan:8000/v1"), {})
    OpenAiStt(SttConfig(server="http://127.0.0.1:8000/v1", api_key_env="AUDIO_KEY"),
              {"AUDIO_KEY": KEY})  # fmt: skip
    stt = OpenAiStt(SttConfig(server="https://api.openai.com/v1"), {"OPENAI_API_KEY": KEY})
    assert stt.api.key_env == "OPENAI_API_KEY" and KEY not in repr(stt.api)


def test_an_api_that_is_not_running_or_answers_something_else_is_one_line(
    tmp_path: Path,
) -> None:
    speech = str(clip("cards_001.wav").path)
    with ScriptedLLM(Stream(REPLY)) as llm:
        down = run_cli("--llm-url", llm.url, "--tts-server", "http://127.0.0.1:9/v1", "chat",
                       "--input", speech, "--output-dir", str(tmp_path))  # fmt: skip
        # the LLM's server has no /audio/transcriptions: a 404 that says what to check
        wrong = run_cli("--llm-url", llm.url, "--stt-server", llm.url, "chat", "--input", speech,
                        "--output-dir", str(tmp_path))  # fmt: skip
    assert down.code != 0 and "Traceback" not in down.stderr
    assert "cannot connect to the text-to-speech API at http://127.0.0.1:9/v1" in down.stderr
    assert wrong.code != 0 and "Traceback" not in wrong.stderr
    assert f"{speech}: speech-to-text API error 404: not found: check stt.server" in wrong.stderr


def test_tts_voice_and_model_reach_the_api(api: AudioApiServer) -> None:
    from voice_agent.openai_speech import OpenAiTts

    api.requests.clear()
    tts = OpenAiTts(TtsConfig(server=api.url, voice="nova", model="tts-1-hd",
                              length_scale=0.8), {})  # fmt: skip
    audio = tts.synthesize("Hello there.")
    assert audio.seconds > 0.3 and tts.rate_hz == audio.rate_hz
    [request] = api.requests
    assert request["json"] == {"model": "tts-1-hd", "input": "Hello there.", "voice": "nova",
                               "response_format": "wav", "speed": 1.25}  # fmt: skip
