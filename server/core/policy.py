"""What every flow gets (`host_config_defaults`) and the start-up check of the code roots.

The create rules are not here: they live in `server/core/validation/` (the shapes every front
end runs, and the host rules only the core runs).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from server.core.code_update import check_code_settings, open_code_tree
from server.core.config import Settings
from server.core.validation.host import protected_host_paths

__all__ = ["validate_code_path", "validate_code_settings", "host_config_defaults"]


def validate_code_path(
    code_path: object, settings: Settings, *, env: Mapping[str, str] | None = None
) -> str:
    """The normalised `update_container` source, or InvalidRequest(field="code_path"): it must
    lie at or beneath one of `docker.code_roots` (checked lexically first, so no answer tells
    what exists outside them) and be reached without any symbolic link (`code_update`)."""
    with open_code_tree(code_path, settings) as tree:
        return tree.path


def validate_code_settings(settings: Settings, *, env: Mapping[str, str] | None = None) -> None:
    """At manager start: ConfigError unless `docker.code_dir` and `docker.code_roots` are safe
    (no root is, holds or lies beneath a protected host path, the config or the token file)."""
    env = os.environ if env is None else env
    check_code_settings(settings, protected_host_paths(settings, env))


def host_config_defaults(settings: Settings) -> dict[str, Any]:
    """The `containers.create` keyword arguments every flow gets (docker-py names)."""
    d = settings.docker
    restart: dict[str, Any] = {"Name": d.restart_policy}
    if d.restart_policy == "on-failure":
        restart["MaximumRetryCount"] = d.restart_max_retries
    kwargs: dict[str, Any] = {
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "pids_limit": d.pids_limit,
        "mem_limit": d.memory_limit,
        "nano_cpus": int(d.cpu_limit * 1_000_000_000),
        "restart_policy": restart,
        "read_only": d.read_only,
        # the engine rotates each flow's output: a chatty flow cannot fill the host's disk
        "log_config": {
            "type": "json-file",
            "config": {"max-size": d.log_max_size, "max-file": str(d.log_max_files)},
        },
    }
    if d.cap_add:
        kwargs["cap_add"] = list(d.cap_add)
    if d.read_only:
        # Most programs need a writable /tmp; it stays in memory and dies with the container.
        kwargs["tmpfs"] = {"/tmp": "rw,nosuid,nodev,size=64m"}
    return kwargs
