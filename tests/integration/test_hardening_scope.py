"""Label scoping: containers that only look managed are invisible and untouched by every action."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from server.core.config import Settings
from server.core.errors import ContainerNotFound
from server.core.manager import ContainerManager
from server.core.models import CreateSpec
from tests.conftest import RUN_ID, TEST_LABEL, with_code_roots
from tests.integration.manager_helpers import BUSYBOX, docker, inspect, started_manager

pytestmark = pytest.mark.docker


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    """These tests update flows from tmp_path: allow it as the code root (issue 11: with no
    docker.code_roots every update is refused)."""
    return with_code_roots(settings, tmp_path)


def _lookalike_labels(instance: str) -> list[dict[str, str]]:
    """Ten label sets that are each one step away from this manager's own."""
    return [
        {},
        {"flowmgr.managed": "true"},
        {"flowmgr.managed": "true", "flowmgr.instance": "someone-else"},
        {"flowmgr.instance": instance},
        {"flowmgr.managed": "false", "flowmgr.instance": instance},
        {"flowmgr.managed": "TRUE", "flowmgr.instance": instance},
        {"flowmgr.managed": "true", "flowmgr.instance": instance + "x"},
        {"flowmgr.managed": "true", "flowmgr.instance": instance.upper()},
        {"flowmgr.Managed": "true", "flowmgr.instance": instance},
        {"flowmgr.managed": "true", "flowmgr.instance": ""},
    ]


async def _make_strangers(settings: Settings, stem: str) -> list[tuple[str, str]]:
    """(id, name) of ten unmanaged containers, named like managed ones; half of them running."""
    out: list[tuple[str, str]] = []
    for i, labels in enumerate(_lookalike_labels(settings.docker.instance)):
        name = f"{RUN_ID}-{stem}-{i}"
        args = [arg for k, v in labels.items() for arg in ("--label", f"{k}={v}")]
        verb = ["run", "-d"] if i % 2 else ["create"]
        made = await docker(
            *verb, "--name", name, "--label", f"{TEST_LABEL}={RUN_ID}", *args, BUSYBOX
        )
        out.append((made.stdout.strip(), name))
    return out


def _operations(m: ContainerManager, code: Path) -> dict[str, Callable[[str], Awaitable[Any]]]:
    async def get(ref: str) -> Any:
        return m.get(ref)

    return {
        "get": get,
        "get_status": m.get_status,
        "start": m.start_container,
        "stop": m.stop_container,
        "restart": m.restart_container,
        "update": lambda ref: m.update_container(ref, str(code)),
        "delete": m.delete_container,
        "logs": m.get_logs,
        "inspect": m.inspect_container,
        "follow_logs": m.follow_logs,
        "send_message": lambda ref: m.send_message(ref, {"hello": 1}),
    }


async def _state(cid: str) -> tuple[Any, ...]:
    s = (await inspect(cid))["State"]
    return s["Status"], s["Pid"], s["StartedAt"], s["FinishedAt"]


async def test_ten_lookalikes_are_container_not_found_and_unchanged(
    settings: Settings, tmp_path: Path
) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "main.py").write_text("print('not for strangers')\n")
    strangers = await _make_strangers(settings, "flow")
    before = {cid: await _state(cid) for cid, _ in strangers}
    async with started_manager(settings) as m:
        mine = await m.create_container(CreateSpec(name=f"{RUN_ID}-flow-mine", image=BUSYBOX))
        assert {s.id for s in m.snapshot()} == {mine.id}
        for cid, name in strangers:
            for ref in (cid, cid[:12], name):
                for op_name, op in _operations(m, code).items():
                    with pytest.raises(ContainerNotFound):
                        await op(ref)
                    assert op_name  # (named in the traceback when the raise is missing)
        assert {s.id for s in m.snapshot()} == {mine.id}
    after = {cid: await _state(cid) for cid, _ in strangers}
    assert after == before
    ls = await docker("exec", strangers[1][0], "ls", "/app")
    assert "main.py" not in ls.stdout.split()  # update_container copied nothing in


async def test_a_replaced_container_is_rechecked_before_acting(
    settings: Settings, tmp_path: Path
) -> None:
    """A managed flow removed behind the manager's back and replaced, under the same name, by
    an unlabelled container: the manager's actions on that name touch nothing."""
    name = f"{RUN_ID}-swap"
    async with started_manager(settings) as m:
        snap = await m.create_container(CreateSpec(name=name, image=BUSYBOX))
        await m.start_container(snap.id)
        await docker("rm", "-f", snap.id)
        made = await docker(
            "run", "-d", "--name", name, "--label", f"{TEST_LABEL}={RUN_ID}", BUSYBOX
        )
        impostor = made.stdout.strip()
        before = await _state(impostor)
        for action in (m.stop_container, m.restart_container, m.delete_container):
            for ref in (name, snap.id):
                with pytest.raises(ContainerNotFound):
                    await action(ref)
        await asyncio.sleep(0)  # let any stray task run before looking
        assert await _state(impostor) == before
