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
    with pytest.raises(ConfigError, match="must be int"):
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
