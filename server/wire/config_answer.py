"""ext `container_inspected`: a flow's configuration as the core hands it out, masked."""

from __future__ import annotations

from dataclasses import asdict

from server.core.flow_config import FlowConfig, MountView
from server.wire.base import Wire, WireModel

__all__ = ["MountOut", "ContainerInspectedOut"]


class MountOut(WireModel):
    """One mount of `container_inspected.mounts`."""

    type: str
    source: str
    target: str
    read_only: bool


class ContainerInspectedOut(WireModel):
    """ext `container_inspected` (the answer to `inspect_container`): typed and masked by the
    core, never Docker's raw inspect."""

    container_id: str
    name: str
    image: str
    entrypoint: list[str]
    command: list[str]
    working_dir: str
    user: str
    memory_limit: int | None
    cpu_limit: float | None
    pids_limit: int | None
    read_only_rootfs: bool
    network_mode: str
    restart_policy: str
    restart_max_retries: int
    mounts: list[MountOut]
    ports: dict[str, int | None]
    environment: dict[str, str]
    labels: dict[str, str]
    node: str | None

    @staticmethod
    def payload(cfg: FlowConfig) -> Wire:
        """From the core's (already masked) configuration."""
        return asdict(cfg)

    def to_core(self) -> FlowConfig:
        """The core's value."""
        fields = self.model_dump(exclude={"mounts"})
        return FlowConfig(**fields, mounts=[MountView(**m.model_dump()) for m in self.mounts])
