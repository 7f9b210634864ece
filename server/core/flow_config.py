"""A flow's configuration as the panel's inspect view shows it: typed, and masked here, once.

`docker inspect` holds every environment value in clear text; this is what leaves the core
instead (the API's ext `inspect_container`, the local panel's Config tab). The raw dict is read
only by `config_from_inspect`, which the Docker adapter calls: nothing else sees it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from server.core.container_info import info_from_inspect
from server.core.masking import (
    MASK,
    is_secret_name,
    mask_env,
    mask_log_line,
    secret_env_values,
)

__all__ = ["FlowConfig", "MountView", "config_from_inspect", "mask_args"]


@dataclass(frozen=True, slots=True)
class MountView:
    """One mount: a host bind, a named volume or a tmpfs."""

    type: str
    """`bind`, `volume`, `tmpfs` (Docker's word)."""
    source: str
    """The host path of a bind, the volume's name; empty for a tmpfs."""
    target: str
    """The path inside the container."""
    read_only: bool


@dataclass(frozen=True, slots=True)
class FlowConfig:
    """What a flow was created with, secrets masked."""

    container_id: str
    name: str
    image: str
    entrypoint: list[str] = field(default_factory=list)
    command: list[str] = field(default_factory=list)
    """Arguments; a secret-looking one (`--token=x`, the value after `--password`, a secret
    env value repeated) is masked."""
    working_dir: str = ""
    user: str = ""
    memory_limit: int | None = None
    """Bytes; None: no limit."""
    cpu_limit: float | None = None
    """Cores; None: no limit."""
    pids_limit: int | None = None
    """None: no limit."""
    read_only_rootfs: bool = False
    network_mode: str = ""
    restart_policy: str = "no"
    """Docker's policy name: `no`, `always`, `unless-stopped`, `on-failure`."""
    restart_max_retries: int = 0
    mounts: list[MountView] = field(default_factory=list)
    ports: dict[str, int | None] = field(default_factory=dict)
    """Container port -> host port, as `container_list` spells them."""
    environment: dict[str, str] = field(default_factory=dict)
    """Secret-named values are `***`; others with URL credentials or a secret's value masked."""
    labels: dict[str, str] = field(default_factory=dict)
    """Masked as the environment."""
    node: str | None = None
    """Cluster mode: the node running the flow (None on one host)."""


def mask_args(args: list[str], secrets: tuple[str, ...] = ()) -> list[str]:
    """Command-line arguments with secrets masked: `--password=x` and `DB_KEY=x` through the
    masking helper, and the whole argument after a secret-named flag (`--token x`)."""
    out: list[str] = []
    for i, arg in enumerate(args):
        prev = args[i - 1] if i else ""
        if prev.startswith("-") and "=" not in prev and is_secret_name(prev):
            out.append(MASK)
        else:
            out.append(mask_log_line(arg, secrets))
    return out


def _masked_labels(pairs: dict[str, str], secrets: tuple[str, ...]) -> dict[str, str]:
    return {
        k: MASK if is_secret_name(k) and v else mask_log_line(v, secrets) for k, v in pairs.items()
    }


def _limit(value: Any) -> int | None:
    """Docker writes "no limit" as 0, -1 or null; anything but a positive integer is none."""
    ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
    return value if ok else None


def config_from_inspect(raw: dict[str, Any]) -> FlowConfig:
    """An inspect answer as a masked FlowConfig (called by the adapter only)."""
    info = info_from_inspect(raw)
    cfg = raw.get("Config") or {}
    host = raw.get("HostConfig") or {}
    env_list = [str(e) for e in cfg.get("Env") or []]
    secrets = secret_env_values(env_list)
    env = {name: value for name, _, value in (e.partition("=") for e in env_list)}
    labels = {str(k): str(v) for k, v in (cfg.get("Labels") or {}).items()}
    nano, quota = _limit(host.get("NanoCpus")), _limit(host.get("CpuQuota"))
    cpus = (
        nano / 1e9
        if nano
        else quota / (_limit(host.get("CpuPeriod")) or 100_000)
        if quota
        else None
    )
    policy = host.get("RestartPolicy") or {}
    return FlowConfig(
        container_id=info.id,
        name=info.name,
        image=info.image,
        entrypoint=mask_args([str(a) for a in cfg.get("Entrypoint") or []], secrets),
        command=mask_args([str(a) for a in cfg.get("Cmd") or []], secrets),
        working_dir=str(cfg.get("WorkingDir") or ""),
        user=str(cfg.get("User") or ""),
        memory_limit=_limit(host.get("Memory")),
        cpu_limit=cpus,
        pids_limit=_limit(host.get("PidsLimit")),
        read_only_rootfs=bool(host.get("ReadonlyRootfs")),
        network_mode=str(host.get("NetworkMode") or ""),
        restart_policy=str(policy.get("Name") or "no"),
        restart_max_retries=int(policy.get("MaximumRetryCount") or 0),
        mounts=[
            MountView(
                str(m.get("Type", "")),
                str(m.get("Name") or m.get("Source") or ""),
                str(m.get("Destination", "")),
                not m.get("RW", False),
            )
            for m in raw.get("Mounts") or []
        ],
        ports=info.ports,
        environment=mask_env(env),
        labels=_masked_labels(labels, secrets),
    )
