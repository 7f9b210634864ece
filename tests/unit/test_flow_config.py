"""The inspect view's configuration: built from a raw inspect with every secret masked (pure)."""

from __future__ import annotations

from typing import Any

from server.core.flow_config import config_from_inspect, mask_args
from server.core.masking import mask_env

PW = "hunter2-secret"


def _raw(**over: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "Id": "f" * 64,
        "Name": "/web",
        "Config": {
            "Image": "flow:latest",
            "Env": [f"DB_PASSWORD={PW}", "PLAIN=ok", f"ECHO={PW}", "EMPTY_TOKEN=", "NOEQUALS"],
            "Cmd": ["run", f"--password={PW}", "--api-key", "k-123456", "-v", "x", PW],
            "Labels": {
                "api_token": "t-abcdef",
                "dsn": f"mysql://root:{PW}@db/x",
                "plain": "yes",
                "copy": f"prefix {PW} suffix",
            },
        },
        "HostConfig": {
            "Memory": 0,
            "NanoCpus": 0,
            "CpuQuota": 50_000,
            "CpuPeriod": 100_000,
            "PidsLimit": -1,
            "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 3},
        },
        "Mounts": [{"Type": "tmpfs", "Destination": "/tmp", "RW": True}],
    }
    raw.update(over)
    return raw


def test_no_secret_survives_env_command_or_labels() -> None:
    cfg = config_from_inspect(_raw())
    assert PW not in repr(cfg) and "k-123456" not in repr(cfg) and "t-abcdef" not in repr(cfg)
    assert cfg.environment == {
        "DB_PASSWORD": "***",
        "PLAIN": "ok",
        "ECHO": "***",
        "EMPTY_TOKEN": "***",
        "NOEQUALS": "",
    }
    assert cfg.command == ["run", "--password=***", "--api-key", "***", "-v", "x", "***"]
    assert cfg.labels == {
        "api_token": "***",
        "dsn": "mysql://root:***@db/x",
        "plain": "yes",
        "copy": "prefix *** suffix",
    }


def test_limits_and_policy_read_as_docker_writes_them() -> None:
    cfg = config_from_inspect(_raw())
    assert (cfg.memory_limit, cfg.cpu_limit, cfg.pids_limit) == (None, 0.5, None)
    assert (cfg.restart_policy, cfg.restart_max_retries) == ("on-failure", 3)
    assert [(m.type, m.source, m.target, m.read_only) for m in cfg.mounts] == [
        ("tmpfs", "", "/tmp", False)
    ]


def test_a_sparse_or_odd_inspect_never_raises() -> None:
    cfg = config_from_inspect({"Id": "a" * 64, "Config": None, "HostConfig": None})
    assert (cfg.command, cfg.environment, cfg.labels, cfg.mounts) == ([], {}, {}, [])
    assert (cfg.memory_limit, cfg.cpu_limit, cfg.restart_policy) == (None, None, "no")
    odd = config_from_inspect(
        _raw(HostConfig={"Memory": "1g", "PidsLimit": True, "NanoCpus": "2", "CpuQuota": 1e30})
    )
    assert (odd.memory_limit, odd.pids_limit, odd.cpu_limit) == (None, None, None)


def test_args_and_env_helpers() -> None:
    assert mask_args(["--token"]) == ["--token"]  # a trailing flag: nothing after it
    assert mask_args(["--token=a", "b"]) == ["--token=***", "b"]
    assert mask_env({"A_SECRET": PW, "B": f"x{PW}x"}) == {"A_SECRET": "***", "B": "x***x"}
