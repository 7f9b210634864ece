"""How a new snapshot of a container settles against the one already known."""

from __future__ import annotations

from dataclasses import replace

from server.core.models import ContainerSnapshot

__all__ = ["settle"]


def settle(new: ContainerSnapshot, old: ContainerSnapshot | None) -> ContainerSnapshot:
    """`new`, with the resource usage the core would report for it.

    A container that is not running has no usage (server/core/registry.py `apply` drops it);
    a running one whose news carries no sample keeps the last one until the next sample.
    """
    if new.state != "running":
        return new if new.resources is None else replace(new, resources=None)
    if new.resources is None and old is not None and old.resources is not None:
        return replace(new, resources=old.resources)
    return new
