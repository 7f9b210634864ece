"""Fixtures for panel tests: a started real manager and a Docker SDK client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import docker
import pytest

from server.core.config import Settings
from server.core.manager import ContainerManager


@pytest.fixture
async def manager(settings: Settings) -> AsyncIterator[ContainerManager]:
    """The real core, started for this test and stopped after it."""
    mgr = ContainerManager(settings)
    async with mgr:
        yield mgr


@pytest.fixture
def docker_client(docker_engine: None) -> Iterator[docker.DockerClient]:
    """Docker SDK client for acting behind the panel's back (tests only)."""
    client = docker.from_env()
    try:
        yield client
    finally:
        client.close()
