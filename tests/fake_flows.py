"""Managed flows without containers: records in a manager that is not started, for tests at a
thousand flows' worth without a thousand containers (nothing here talks to the engine)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from server.core.config import load_settings
from server.core.container_info import ContainerInfo
from server.core.manager import ContainerManager
from server.core.registry import Record

__all__ = ["fake_record", "fake_manager"]


def fake_record(n: int) -> Record:
    """A running flow named `flow-<n>` with a random full id."""
    at = datetime.now(UTC)
    cid = uuid.uuid4().hex * 2
    info = ContainerInfo(cid, f"flow-{n:04d}", "img", "running", "none", at, at, None, 0, False, 0)
    return Record(info, "running", "none", f"/tmp/none/{n}/flow.sock")


def fake_manager(socket_dir: Path, flows: int, **overrides: Any) -> ContainerManager:
    """A manager (not started) holding `flows` fake running flows; `overrides` as
    `load_settings` takes them (`monitoring__health_check_interval=0.4`)."""
    m = ContainerManager(load_settings(env={}, socket_dir=str(socket_dir), **overrides))
    m.registry.records.update((r.info.id, r) for r in map(fake_record, range(flows)))
    return m
