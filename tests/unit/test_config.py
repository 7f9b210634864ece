"""Settings: file, then env vars (env wins); unknown keys and wrong types name key and file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from server.core.config import DEFAULT_CONFIG_FILE, load_settings
from server.core.errors import ConfigError


def _write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    return path


def test_shipped_config_matches_protocol_defaults() -> None:
    s = load_settings(DEFAULT_CONFIG_FILE, env={})
    assert s.socket_dir == "/tmp/kawaflow/sockets"
    # CORS: docs/PROTOCOL.md's default was "*"; the isolation issue made it same-origin only ([]),
    # so no web page can drive the API from an operator's browser.
    assert s.server.port == 8000 and s.server.cors_origins == []
    assert s.docker.default_image == "flow:latest" and s.docker.network == "kawaflow"
    assert s.monitoring.health_check_interval == 30
    assert s.config_file == str(DEFAULT_CONFIG_FILE)


def test_unknown_key_names_key_and_file(tmp_path: Path) -> None:
    path = _write(tmp_path, {"docker": {"netwrok": "x"}})
    with pytest.raises(ConfigError) as err:
        load_settings(path, env={})
    assert "docker.netwrok" in err.value.message and str(path) in err.value.message


def test_wrong_type_names_key_and_file(tmp_path: Path) -> None:
    path = _write(tmp_path, {"server": {"port": "eighty"}})
    with pytest.raises(ConfigError) as err:
        load_settings(path, env={})
    assert "server.port" in err.value.message and str(path) in err.value.message


def test_not_an_object_and_bad_json(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="JSON object"):
        load_settings(_write(tmp_path, [1, 2]), env={})
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(bad, env={})
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.json", env={})


def test_env_overrides_file(tmp_path: Path) -> None:
    path = _write(tmp_path, {"socket_dir": "/from/file", "server": {"port": 9000}})
    s = load_settings(
        env={
            "CONFIG_FILE": str(path),
            "SOCKET_DIR": "/from/env",
            "PORT": "9100",
            "CORS_ORIGINS": "http://a, http://b",
            "LOG_LEVEL": "debug",
        }
    )
    assert s.socket_dir == "/from/env" and s.server.port == 9100
    assert s.server.cors_origins == ["http://a", "http://b"]
    assert s.log_level == "DEBUG"
    assert s.config_file == str(path)


def test_bad_env_value_is_reported(tmp_path: Path) -> None:
    path = _write(tmp_path, {})
    with pytest.raises(ConfigError, match="PORT"):
        load_settings(path, env={"PORT": "http"})
    with pytest.raises(ConfigError, match="log_level"):
        load_settings(path, env={"LOG_LEVEL": "LOUD"})


def test_keyword_overrides(tmp_path: Path) -> None:
    s = load_settings(_write(tmp_path, {}), env={}, docker__stop_timeout=2)
    assert s.docker.stop_timeout == 2


@pytest.mark.parametrize("bad", [-1, "many", 2.5, None, [20]])
def test_message_activity_rate_refuses_what_is_not_a_count(tmp_path: Path, bad: Any) -> None:
    path = _write(tmp_path, {"flow": {"message_activity_per_second": bad}})
    with pytest.raises(ConfigError) as err:
        load_settings(path, env={})
    assert "flow.message_activity_per_second" in err.value.message


def test_message_activity_rate_zero_means_every_message_and_large_is_kept() -> None:
    assert load_settings(None, env={}).flow.message_activity_per_second == 20
    for value in (0, 10**9):
        got = load_settings(None, env={}, flow__message_activity_per_second=value)
        assert got.flow.message_activity_per_second == value
