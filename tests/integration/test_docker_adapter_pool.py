"""The adapter keeps one connection pool per engine socket, not one per container URL."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from server.core import docker_adapter
from server.core.docker_adapter import DockerAdapter
from tests.conftest import RUN_ID, TEST_LABEL
from tests.integration.manager_helpers import BUSYBOX, docker

pytestmark = pytest.mark.docker


async def test_inspecting_many_containers_reuses_one_connection(
    docker_engine: None, unique_name: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = []
    for _ in range(3):  # created, never started: only their URLs differ
        out = await docker(
            "create",
            "--network",
            "none",
            "--name",
            unique_name("pool"),
            "--label",
            f"{TEST_LABEL}={RUN_ID}",
            BUSYBOX,
        )
        ids.append(out.stdout.strip())
    connects = 0
    connection = docker_adapter._ClosingConnection  # noqa: SLF001 - the one the pool makes
    real_connect = connection.connect

    def counting_connect(self: Any) -> None:
        nonlocal connects
        connects += 1
        real_connect(self)

    monkeypatch.setattr(connection, "connect", counting_connect)
    adapter = DockerAdapter(call_timeout=30)
    try:
        await adapter.ping()
        for _ in range(5):
            for cid in ids:
                assert (await adapter.inspect(cid)).id == cid
    finally:
        await adapter.close()
        await docker("rm", "-f", *ids, check=False)
    # docker-py alone opens a pool, and a connection, per distinct URL (here 5: the version
    # handshake, the ping and three containers). The adapter asks for the version once its
    # pool is mounted, so one connection serves them all.
    assert connects == 1
