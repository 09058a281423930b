"""Settings from a TOML config file and token files; `serve --print-config`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edge_service.cli import app
from edge_service.config import Settings, read_config_file
from edge_service.errors import ConfigError

TOKEN = "tok-" + "x" * 20


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("EDGE_"):
            monkeypatch.delenv(name)


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_config_file_sets_settings_when_named_by_env(tmp_path, monkeypatch):
    cfg = _write(tmp_path / "c.toml", 'port = 9001\nfamily = "street"\ncooldown_s = 2.5\n')
    monkeypatch.setenv("EDGE_CONFIG_FILE", str(cfg))
    s = Settings()
    assert (s.port, s.family, s.cooldown_s) == (9001, "street", 2.5)


def test_environment_wins_over_the_file_and_options_win_over_both(tmp_path, monkeypatch):
    cfg = _write(tmp_path / "c.toml", "port = 9001\ntop_k = 3\n")
    monkeypatch.setenv("EDGE_PORT", "9002")
    s = Settings(config_file=cfg)
    assert (s.port, s.top_k) == (9002, 3)
    assert Settings(config_file=cfg, port=9003).port == 9003


def test_unknown_keys_are_refused_with_their_names_and_a_hint(tmp_path):
    cfg = _write(tmp_path / "c.toml", 'prot = 1\nfamly = "x"\nport = 8081\n')
    with pytest.raises(ConfigError, match=r"unknown settings: famly \(did you mean family\?\)"):
        Settings(config_file=cfg)
    with pytest.raises(ConfigError, match=r"prot \(did you mean port\?\)"):
        read_config_file(cfg)


def test_config_file_cannot_name_another_config_file(tmp_path):
    cfg = _write(tmp_path / "c.toml", 'config_file = "/etc/other.toml"\n')
    with pytest.raises(ConfigError, match="config_file"):
        Settings(config_file=cfg)


def test_missing_or_malformed_file_is_a_config_error_naming_it(tmp_path):
    with pytest.raises(ConfigError, match=r"cannot read the config file .*nope\.toml"):
        Settings(config_file=tmp_path / "nope.toml")
    bad = _write(tmp_path / "bad.toml", "port = \n")
    with pytest.raises(ConfigError, match=r"bad\.toml is not valid TOML"):
        Settings(config_file=bad)


def test_file_values_are_validated_like_env_values(tmp_path):
    cfg = _write(tmp_path / "c.toml", 'host = "0.0.0.0"\nallow_remote = true\n')
    with pytest.raises(ConfigError, match="EDGE_CONTROL_TOKEN"):
        Settings(config_file=cfg)


def test_token_is_read_from_a_file_without_its_trailing_newline(tmp_path, monkeypatch):
    secret = _write(tmp_path / "control-token", TOKEN + "\n")
    monkeypatch.setenv("EDGE_CONTROL_TOKEN_FILE", str(secret))
    s = Settings(host="0.0.0.0", allow_remote=True)
    assert s.control_token is not None
    assert s.control_token.get_secret_value() == TOKEN


def test_token_file_named_in_the_config_file_is_read(tmp_path):
    secret = _write(tmp_path / "inference-token", TOKEN)
    cfg = _write(tmp_path / "c.toml", f'inference_token_file = "{secret}"\n')
    s = Settings(config_file=cfg)
    assert s.inference_token is not None
    assert s.inference_token.get_secret_value() == TOKEN


def test_token_and_token_file_together_are_refused(tmp_path, monkeypatch):
    secret = _write(tmp_path / "t", TOKEN)
    monkeypatch.setenv("EDGE_CONTROL_TOKEN", TOKEN)
    monkeypatch.setenv("EDGE_CONTROL_TOKEN_FILE", str(secret))
    with pytest.raises(ConfigError, match="keep one"):
        Settings()


@pytest.mark.parametrize("content", [None, "", "\n"])
def test_missing_or_empty_token_file_is_refused(tmp_path, monkeypatch, content):
    secret = tmp_path / "t"
    if content is not None:
        secret.write_text(content)
    monkeypatch.setenv("EDGE_CONTROL_TOKEN_FILE", str(secret))
    with pytest.raises(ConfigError, match="EDGE_CONTROL_TOKEN_FILE"):
        Settings()


def test_short_token_from_a_file_is_refused_like_one_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_CONTROL_TOKEN_FILE", str(_write(tmp_path / "t", "short")))
    with pytest.raises(ConfigError, match="too short"):
        Settings()


def test_print_config_masks_tokens_and_round_trips_as_a_config_file(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_CONTROL_TOKEN", TOKEN)
    monkeypatch.setenv("EDGE_PORT", "9100")
    monkeypatch.setenv("EDGE_LATENCY_BUDGET_MS", "12.5")
    result = CliRunner().invoke(app, ["serve", "--print-config", "--family", "street"])
    assert result.exit_code == 0, result.output
    assert TOKEN not in result.output
    assert '# control_token = "**********"  (masked)' in result.output
    monkeypatch.delenv("EDGE_PORT")
    monkeypatch.delenv("EDGE_LATENCY_BUDGET_MS")
    again = Settings(config_file=_write(tmp_path / "printed.toml", result.output))
    assert (again.port, again.family, again.latency_budget_ms) == (9100, "street", 12.5)
    assert again.control_token is not None  # from the environment, never from the print


def test_print_config_json_has_every_setting_and_no_secret(monkeypatch):
    monkeypatch.setenv("EDGE_INFERENCE_TOKEN", TOKEN)
    result = CliRunner().invoke(app, ["serve", "--print-config", "--json", "--port", "9200"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert set(shown) == set(Settings.model_fields)
    assert shown["port"] == 9200
    assert shown["inference_token"] == "**********"
    assert TOKEN not in result.output


def test_serve_reports_a_bad_config_file_and_exits_2(tmp_path):
    cfg = _write(tmp_path / "c.toml", "colldown_s = 1\n")
    result = CliRunner().invoke(app, ["serve", "--print-config", "--config", str(cfg)])
    assert result.exit_code == 2
    assert "colldown_s" in result.output


def test_serve_reports_a_badly_typed_setting_as_a_config_error(monkeypatch):
    monkeypatch.setenv("EDGE_PORT", "eighty")
    result = CliRunner().invoke(app, ["serve", "--print-config"])
    assert result.exit_code == 2
    assert "port" in result.output
    assert "Traceback" not in result.output
