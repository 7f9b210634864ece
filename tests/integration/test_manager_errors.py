"""Bad input: each a typed error, and the manager's state (and the engine's) unchanged."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from server.core.config import Settings
from server.core.errors import (
    ContainerNotFound,
    DockerApiError,
    FlowMgrError,
    ImageNotFound,
    InvalidRequest,
)
from server.core.manager import ContainerManager
from server.core.models import ContainerSnapshot, CreateSpec
from tests.integration.manager_helpers import BUSYBOX, labelled_ids, started_manager

pytestmark = pytest.mark.docker


@dataclass
class World:
    """A started manager with one existing container."""

    m: ContainerManager
    settings: Settings
    existing: str


@pytest.fixture
async def world(settings: Settings, unique_name: Callable[[str], str]) -> AsyncIterator[World]:
    async with started_manager(settings) as m:
        snap = await m.create_container(CreateSpec(name=unique_name("keep"), image=BUSYBOX))
        yield World(m, settings, snap.name)


def _view(m: ContainerManager) -> list[ContainerSnapshot]:
    """The snapshot without resource samples, which the sampler refreshes every second."""
    return [replace(s, resources=None) for s in m.snapshot()]


async def unchanged(w: World, err: type[FlowMgrError], call: Any) -> FlowMgrError:
    """Run `call`, expect `err`, and check nothing changed in memory or on the engine."""
    before, ids = _view(w.m), await labelled_ids(w.settings)
    dirs = sorted(p.name for p in Path(w.settings.state_dir).iterdir())
    with pytest.raises(err) as info:
        await call
    assert _view(w.m) == before
    assert await labelled_ids(w.settings) == ids
    assert sorted(p.name for p in Path(w.settings.state_dir).iterdir()) == dirs
    return info.value


async def test_unknown_image(world: World, unique_name: Callable[[str], str]) -> None:
    spec = CreateSpec(name=unique_name("img"), image="flowmgr-no-such-image:never")
    err = await unchanged(world, ImageNotFound, world.m.create_container(spec))
    assert "flowmgr-no-such-image" in err.message


async def test_duplicate_name(world: World) -> None:
    spec = CreateSpec(name=world.existing, image=BUSYBOX)
    err = await unchanged(world, InvalidRequest, world.m.create_container(spec))
    assert err.details["field"] == "name"


async def test_host_port_taken(world: World, unique_name: Callable[[str], str]) -> None:
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        sock.listen()
        port = sock.getsockname()[1]
        spec = CreateSpec(name=unique_name("port"), image=BUSYBOX, ports={"80": port})
        err = await unchanged(world, DockerApiError, world.m.create_container(spec))
    assert "port is already allocated" in err.message


async def test_host_port_taken_by_a_container_fails_at_start(
    world: World, unique_name: Callable[[str], str]
) -> None:
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        port = sock.getsockname()[1]
    first = await world.m.create_container(
        CreateSpec(name=unique_name("p1"), image=BUSYBOX, ports={"80": port})
    )
    second = await world.m.create_container(
        CreateSpec(name=unique_name("p2"), image=BUSYBOX, ports={"80": port})
    )
    await world.m.start_container(first.id)
    err = await unchanged(world, DockerApiError, world.m.start_container(second.id))
    assert "allocated" in err.message or "in use" in err.message  # Docker's own words
    assert world.m.get(second.id).state == "created"


async def test_missing_volume_host_path(
    world: World, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    spec = CreateSpec(
        name=unique_name("vol"), image=BUSYBOX, volumes={str(tmp_path / "absent"): "/data"}
    )
    err = await unchanged(world, InvalidRequest, world.m.create_container(spec))
    assert err.details["field"] == "volumes"


async def test_non_string_env_value(world: World, unique_name: Callable[[str], str]) -> None:
    spec = CreateSpec(name=unique_name("env"), image=BUSYBOX, environment={"N": 3})  # type: ignore[dict-item]
    err = await unchanged(world, InvalidRequest, world.m.create_container(spec))
    assert err.details["field"] == "environment"


async def test_missing_code_path(world: World, tmp_path: Path) -> None:
    call = world.m.update_container(world.existing, str(tmp_path / "nope"))
    err = await unchanged(world, InvalidRequest, call)
    assert err.details["field"] == "code_path"


async def test_ambiguous_id_prefix(world: World, unique_name: Callable[[str], str]) -> None:
    by_first: dict[str, str] = {}
    prefix = None
    for _ in range(17):  # 16 hex digits: the 17th container shares a first digit for sure
        snap = await world.m.create_container(CreateSpec(name=unique_name("amb"), image=BUSYBOX))
        if snap.id[0] in by_first:
            prefix = snap.id[0]
            break
        by_first[snap.id[0]] = snap.id
    assert prefix is not None
    err = await unchanged(world, InvalidRequest, world.m.stop_container(prefix))
    assert err.details["field"] == "container_id"
    with pytest.raises(InvalidRequest):
        world.m.get(prefix)


@pytest.mark.parametrize("name", ["", "bad name!", "../escape", "-leading-dash"])
async def test_bad_names(world: World, name: str) -> None:
    err = await unchanged(
        world, InvalidRequest, world.m.create_container(CreateSpec(name=name, image=BUSYBOX))
    )
    assert err.details["field"] == "name"


async def test_unknown_reference(world: World) -> None:
    await unchanged(world, ContainerNotFound, world.m.start_container("no-such-container"))
    await unchanged(world, InvalidRequest, world.m.start_container(""))
