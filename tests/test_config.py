"""Settings: documented defaults, the documented precedence, and clear errors for typos."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from conftest import run_cli

from voice_agent.config import Config, as_dict, load
from voice_agent.errors import ConfigError

DEFAULT_TOML = Path(__file__).parent.parent / "config" / "default.toml"


def test_default_toml_documents_every_setting_with_its_real_default() -> None:
    documented = tomllib.loads(DEFAULT_TOML.read_text())
    assert documented.keys() == as_dict(Config()).keys()
    for section, values in as_dict(Config()).items():
        assert documented[section].keys() == values.keys(), section
    assert load(DEFAULT_TOML, env={}) == Config()


def test_precedence_is_defaults_then_file_then_environment_then_flags(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[llm]\nmodel = "from-file"\nbase_url = "http://127.0.0.1:1/v1"\n'
        "[tts]\nlength_scale = 1.3\n"
    )
    env = {"VOICE_AGENT_LLM_MODEL": "from-env", "VOICE_AGENT_STT_BEAM_SIZE": "2"}
    c = load(cfg, env, {"llm.model": "from-flag", "stt.model": None})
    assert c.llm.model == "from-flag"
    assert c.llm.base_url == "http://127.0.0.1:1/v1"
    assert c.tts.length_scale == 1.3
    assert c.stt.beam_size == 2
    assert c.stt.model == "bundled"
    assert load(cfg, env, {}).llm.model == "from-env"


def test_a_misspelt_setting_is_named_in_the_error(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[llm]\nbase_ulr = 'x'\n")
    with pytest.raises(ConfigError, match=r"unknown setting llm\.base_ulr"):
        load(cfg, {}, {})
    with pytest.raises(ConfigError, match=r"stt\.beam_size must be a whole number"):
        load(None, {"VOICE_AGENT_STT_BEAM_SIZE": "wide"}, {})


def test_config_command_prints_settings_and_hides_the_key(tmp_path: Path) -> None:
    key = "sk-or-v1-SENTINEL-do-not-print-0123456789"
    run = run_cli(
        "config",
        "--llm-url",
        "http://127.0.0.1:9/v1",
        env={"OPENROUTER_API_KEY": key, "XDG_CONFIG_HOME": str(tmp_path)},
    )
    assert run.code == 0
    assert 'base_url = "http://127.0.0.1:9/v1"' in run.stdout
    assert "OPENROUTER_API_KEY is set (value hidden)" in run.stdout
    assert key not in run.stdout + run.stderr
    parsed = tomllib.loads(run.stdout)
    assert parsed["llm"]["base_url"] == "http://127.0.0.1:9/v1"


def test_bad_config_file_is_one_line_without_traceback(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[llm\n")
    run = run_cli("--config", str(cfg), "config")
    assert run.code != 0
    assert "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
    assert "not valid TOML" in run.stderr


# (TOML line in its section, what the one-line error must say)
# fmt: off
ON_OFF = '"auto" or "on" or "off"'

BAD_VALUES = [
    ("[vad]\nhangover_ms = 0", "vad.hangover_ms must be between 100 and 10000, got 0"),
    ("[vad]\nframe_ms = 25", "vad.frame_ms must be one of 10, 20, 30, got 25"),
    ("[vad]\naggressiveness = 7", "vad.aggressiveness must be between 0 and 3, got 7"),
    ("[vad]\njudge_after_ms = 0", "vad.judge_after_ms must be between 10 and 10000, got 0"),
    ("[llm]\nmax_tokens = -1", "llm.max_tokens must be between 0 and 1e+07, got -1"),
    ("[llm]\nconnect_timeout_s = -5", "llm.connect_timeout_s must be between 0.1 and 3600"),
    ("[llm]\nturn_timeout_s = nan", "llm.turn_timeout_s must be a number, got nan"),
    ("[llm]\nchunk_timeout_s = inf", "llm.chunk_timeout_s must be a number, got inf"),
    ("[audio]\nbarge_in = 5", f"audio.barge_in must be {ON_OFF}, got 5"),
    ("[audio]\nbarge_in = 'maybe'", f"audio.barge_in must be {ON_OFF}, got 'maybe'"),
    ("[audio]\necho_cancellation = true", f"audio.echo_cancellation must be {ON_OFF}, got True"),
    ("[audio]\necho_cancellation = 'x'", f"audio.echo_cancellation must be {ON_OFF}, got 'x'"),
    ("[llm]\nmodel = ['a', 'b']", "llm.model must be a string, got ['a', 'b']"),
    ("[stt]\nbeam_size = 1.5", "stt.beam_size must be a whole number, got 1.5"),
    ("[tts]\nlength_scale = 'fast'", "tts.length_scale must be a number, got 'fast'"),
    ("[llm]\nextra_body = 5", "llm.extra_body must be a table, e.g. llm.extra_body = {"),
    ("[llm]\nextra_body = { stream = false }", "llm.extra_body cannot set stream: the agent"),
    ("[llm]\nextra_body = { messages = [], model = 'x' }", "cannot set model, messages"),
    ("[llm]\nextra_body = { since = 1979-05-27 }", "llm.extra_body may hold only strings"),
    ("[llm]\nextra_body = { temperature = nan }", "llm.extra_body may hold only strings"),
]
# fmt: on


@pytest.mark.parametrize(("toml", "told"), BAD_VALUES)
def test_a_value_of_the_wrong_type_or_out_of_range_is_refused_with_its_range(
    toml: str, told: str, tmp_path: Path
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(toml + "\n")
    with pytest.raises(ConfigError) as err:
        load(cfg, {}, {})
    assert told in str(err.value)


def test_every_number_has_a_documented_range() -> None:
    from voice_agent.config_check import RANGES

    numbers = {
        f"{section}.{name}"
        for section, values in as_dict(Config()).items()
        for name, value in values.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    }
    assert numbers == RANGES.keys()
    for key, (low, high) in RANGES.items():
        section, name = key.split(".")
        assert low <= as_dict(Config())[section][name] <= high, key


def test_environment_values_are_checked_like_file_values() -> None:
    with pytest.raises(ConfigError, match=r"VOICE_AGENT_VAD_HANGOVER_MS: vad\.hangover_ms must"):
        load(None, {"VOICE_AGENT_VAD_HANGOVER_MS": "0"}, {})
    with pytest.raises(ConfigError, match="must be true or false"):
        load(None, {"VOICE_AGENT_TRANSCRIPTS_SAVE_AUDIO": "5"}, {})
    with pytest.raises(ConfigError, match='must be "auto" or "on" or "off"'):
        load(None, {"VOICE_AGENT_AUDIO_BARGE_IN": "5"}, {})
    assert load(None, {"VOICE_AGENT_AUDIO_BARGE_IN": "yes"}, {}).audio.barge_in == "on"


def test_a_binary_config_file_is_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe binary")
    run = run_cli("--config", str(cfg), "config")
    assert run.code == 1
    assert run.stderr.strip().splitlines() == [
        f"voice-agent: error: config file {cfg} is not valid TOML: it is not UTF-8 text "
        "(a binary file?)"
    ]


def test_a_misspelt_environment_variable_is_warned_about_with_a_suggestion(
    tmp_path: Path,
) -> None:
    run = run_cli(
        "config", env={"VOICE_AGENT_VAD_HANGOVER": "900", "XDG_CONFIG_HOME": str(tmp_path)}
    )
    assert run.code == 0
    assert "VOICE_AGENT_VAD_HANGOVER is not a voice-agent setting" in run.stderr
    assert "did you mean VOICE_AGENT_VAD_HANGOVER_MS?" in run.stderr
    assert "hangover_ms = 700" in run.stdout


def test_extra_request_fields_come_from_a_table_or_a_json_object_and_print_as_toml(
    tmp_path: Path,
) -> None:
    """llm.extra_body: a TOML table in the file, a JSON object in the environment; `config`
    prints it back as TOML that reads the same."""
    fields = {"reasoning": {"effort": "low"}, "provider": {"order": ["a", "b"]}}
    env = {"VOICE_AGENT_LLM_EXTRA_BODY": '{"reasoning": {"effort": "low"}, '
                                         '"provider": {"order": ["a", "b"]}}'}  # fmt: skip
    assert load(None, env, {}).llm.extra_body == fields
    with pytest.raises(ConfigError, match=r"llm\.extra_body must be a JSON object"):
        load(None, {"VOICE_AGENT_LLM_EXTRA_BODY": "reasoning=low"}, {})
    run = run_cli("config", env={**env, "XDG_CONFIG_HOME": str(tmp_path)})
    assert run.code == 0, run.stderr
    assert tomllib.loads(run.stdout)["llm"]["extra_body"] == fields
