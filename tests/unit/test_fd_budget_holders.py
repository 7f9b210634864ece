"""What takes from the descriptor budget: flow channels (real Unix sockets) and log streams.

Each holder takes before it opens and gives back exactly what it took when it closes, and a
refusal is DescriptorBudgetExhausted (wire `socket_error`) with nothing opened.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from server.core.bus import EventBus
from server.core.config import FlowSettings, load_settings
from server.core.container_info import ContainerInfo, StreamHandle
from server.core.errors import DescriptorBudgetExhausted, FlowSocketError
from server.core.fd_budget import CHANNEL_FDS, FdBudget
from server.core.flow_channel import FlowChannelHub
from server.core.logs import LogFollowers
from server.core.manager import ContainerManager


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """Short: pytest's tmp_path can exceed the 107-byte socket path limit."""
    path = Path(f"/tmp/fmb-{uuid.uuid4().hex[:8]}")
    path.mkdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def test_a_channel_takes_two_and_gives_them_back(sock_dir: Path) -> None:
    budget = FdBudget(limit=10, reserve=4)  # room for three channels
    hub = FlowChannelHub(EventBus(), FlowSettings(), budget=budget)
    for n in range(3):
        await hub.open(f"c{n}", str(sock_dir / f"f{n}" / "flow.sock"))
    assert budget.total_held == 3 * CHANNEL_FDS and budget.held("c1") == CHANNEL_FDS
    await hub.open("c1", str(sock_dir / "f1" / "flow.sock"))  # idempotent: nothing more taken
    assert budget.total_held == 3 * CHANNEL_FDS
    with pytest.raises(DescriptorBudgetExhausted) as refused:
        await hub.open("late", str(sock_dir / "late" / "flow.sock"))
    assert refused.value.error_type == "socket_error"
    assert (
        refused.value.details["setting"] == "LimitNOFILE" and refused.value.details["limit"] == 10
    )
    assert refused.value.details["socket_path"].endswith("late/flow.sock")
    assert not (sock_dir / "late").exists() and hub.info("late") is None  # nothing opened
    # the flows that have sockets keep them; a closed one makes room for the next
    assert hub.info("c0") is not None
    await hub.close("c0")
    await hub.close("c0")  # twice: nothing given back twice
    assert budget.held("c0") == 0 and budget.total_held == 2 * CHANNEL_FDS
    await hub.open("late", str(sock_dir / "late" / "flow.sock"))
    await hub.aclose()
    assert budget.total_held == 0


async def test_a_socket_that_cannot_be_bound_gives_its_share_back(sock_dir: Path) -> None:
    budget = FdBudget(limit=100, reserve=0)
    hub = FlowChannelHub(EventBus(), FlowSettings(), budget=budget)
    (sock_dir / "f").mkdir()
    (sock_dir / "f" / "flow.sock").write_text("not a socket")  # refused, never replaced
    with pytest.raises(FlowSocketError):
        await hub.open("c", str(sock_dir / "f" / "flow.sock"))
    assert budget.total_held == 0


class _Streams:
    """An adapter whose log streams are handles that end when told to."""

    def __init__(self) -> None:
        self.opened: list[str] = []
        self.ends: dict[str, Callable[[BaseException | None], None]] = {}

    def stream_logs(
        self,
        container_id: str,
        on_line: Callable[[str], None],
        on_end: Callable[[BaseException | None], None],
    ) -> StreamHandle:
        self.opened.append(container_id)
        self.ends[container_id] = on_end
        return StreamHandle()


async def test_a_log_stream_takes_one_and_is_refused_past_the_budget() -> None:
    budget = FdBudget(limit=2, reserve=0)
    streams = _Streams()
    adapter: Any = streams
    logs = LogFollowers(adapter, EventBus(), lambda _: True, lambda _: (), budget)
    logs.follow("a")
    logs.follow("a")  # shared: one stream, one descriptor
    logs.follow("b")
    assert streams.opened == ["a", "b"] and budget.total_held == 2
    with pytest.raises(DescriptorBudgetExhausted):
        logs.follow("c")
    assert not logs.followed("c") and streams.opened == ["a", "b"]
    logs.unfollow("a")
    assert budget.total_held == 2  # one follower left
    logs.unfollow("a")
    assert budget.held("logs:a") == 0
    streams.ends["b"](None)  # the engine ended b's stream (its container stopped)
    await asyncio.sleep(0.05)
    assert budget.total_held == 0
    logs.forget("b")
    logs.follow("c")
    assert budget.total_held == 1
    logs.close()
    assert budget.total_held == 0


async def test_a_refused_flow_gets_its_channel_at_its_next_start_once_there_is_room(
    sock_dir: Path,
) -> None:
    """Adopted past the budget: managed without a channel (an activity line says why); a
    start after another flow went listens for it. No engine: the monitor's own apply path."""
    manager = ContainerManager(load_settings(env={}, socket_dir=str(sock_dir)))
    manager.bus.bind_loop(asyncio.get_running_loop())
    await asyncio.to_thread(manager.state.prepare)
    manager.fd_budget.limit, manager.fd_budget.reserve = CHANNEL_FDS, 0  # one channel's room
    first, second = _adoptable(manager, "one"), _adoptable(manager, "two")
    await manager.monitor.apply(first)
    await manager.monitor.apply(second)
    assert manager.hub.info(first.id) is not None and manager.hub.info(second.id) is None
    why = [a for a in manager.registry.activity if a.container_id == second.id]
    assert why and why[-1].activity_type == "container_error"
    assert "no open-file descriptors left" in why[-1].message
    await manager.container_started(second.id)  # no room yet: still none, no error
    assert manager.hub.info(second.id) is None
    await manager.monitor.forget(first.id)  # the first flow is gone: its two come back
    assert manager.fd_budget.total_held == 0
    await manager.container_started(second.id)
    assert manager.hub.info(second.id) is not None
    assert manager.fd_budget.held(second.id) == CHANNEL_FDS
    await manager.hub.aclose()


def _adoptable(manager: ContainerManager, name: str) -> ContainerInfo:
    """A labelled container as an inspect would give it, its socket dir the manager's own."""
    dk, at = manager.settings.docker, datetime.now(UTC)
    labels = {"flowmgr.managed": "true", "flowmgr.instance": dk.instance}
    mounts = {dk.socket_mount: manager.state.flow_dir(name)}
    return ContainerInfo(
        uuid.uuid4().hex * 2, name, "img", "created", "none", at, None, None, 0, False, 0,
        labels=labels, mounts=mounts,
    )  # fmt: skip
