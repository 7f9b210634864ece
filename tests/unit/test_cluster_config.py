"""The `cluster` settings (issue 16): defaults keep one host, bad values name their key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from server.core.config import load_settings
from server.core.errors import ConfigError


def _write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    return path


def test_defaults_are_single_host() -> None:
    c = load_settings(None, env={}).cluster
    assert c.mode == "single"
    assert c.placement == [] and c.spread == "node.id"
    assert (c.fence_seconds, c.agent_heartbeat, c.agent_timeout) == (10.0, 1.0, 2.0)
    assert c.hub_url is None and c.agent_token_file is None


def test_a_swarm_configuration_is_read(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        {
            "cluster": {
                "mode": "swarm",
                "placement": ["node.labels.flows==true", "node.role!=manager"],
                "spread": "node.labels.zone",
                "fence_seconds": 5,
                "agent_heartbeat": 0.5,
                "agent_timeout": 1.5,
                "hub_url": "wss://hub.example:8000/agent",
                "agent_token_file": "/etc/flowmgr/agent-token",
            }
        },
    )
    c = load_settings(path, env={}).cluster
    assert c.mode == "swarm" and c.fence_seconds == 5
    assert c.placement == ["node.labels.flows==true", "node.role!=manager"]
    assert c.hub_url == "wss://hub.example:8000/agent"
    assert load_settings(path, env={}, cluster__spread=None).cluster.spread is None


@pytest.mark.parametrize(
    ("key", "bad"),
    [
        ("mode", "kubernetes"),
        ("mode", None),
        ("placement", "node.role==manager"),
        ("placement", ["node.role==manager || true"]),
        ("placement", [1]),
        ("placement", ["node.role==manager"] * 33),
        ("spread", "node.role==manager"),
        ("spread", "engine.labels.x"),
        ("spread", ""),
        ("fence_seconds", 0),
        ("fence_seconds", -1),
        ("fence_seconds", "10"),
        ("agent_heartbeat", 0),
        ("agent_timeout", -2),
        ("hub_url", "hub:8000"),
        ("hub_url", "http://user:pw@hub:8000"),
        ("hub_url", "http://hub:8000/a b"),
        ("hub_url", "ftp://hub"),
        ("hub_url", "http://hub\n.x"),
        ("agent_token_file", "relative/token"),
        ("agent_token_file", "/etc/tok\nen"),
        ("agent_token_file", 7),
        ("unknown", 1),
    ],
)
def test_bad_values_are_refused_naming_the_key(tmp_path: Path, key: str, bad: Any) -> None:
    path = _write(tmp_path, {"cluster": {key: bad}})
    with pytest.raises(ConfigError) as err:
        load_settings(path, env={})
    assert f"cluster.{key}" in err.value.message and str(path) in err.value.message


def test_the_timeout_must_outlast_the_heartbeat(tmp_path: Path) -> None:
    for heartbeat, timeout in ((1.0, 1.0), (2.0, 1.0)):
        path = _write(
            tmp_path, {"cluster": {"agent_heartbeat": heartbeat, "agent_timeout": timeout}}
        )
        with pytest.raises(ConfigError) as err:
            load_settings(path, env={})
        assert "cluster.agent_timeout" in err.value.message
