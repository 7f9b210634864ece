"""A log follower that falls behind gets a marker line saying how many lines it missed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, cast

from flowmgr_tui.bridge import EventBridge
from server.api.sio_bridge import SioBridge
from server.core.bus import EventBus
from server.core.events import ActivityLogged, Event, LogLineReceived, log_gap_line


def drain(sub: object) -> list[Event]:
    out: list[Event] = []
    while (event := sub.get_nowait()) is not None:  # type: ignore[attr-defined]
        out.append(event)
    return out


def lines(events: list[Event]) -> list[tuple[str, str]]:
    return [(e.container_id, e.line) for e in events if isinstance(e, LogLineReceived)]


async def test_dropped_lines_are_told_before_the_lines_that_follow_them() -> None:
    bus = EventBus()
    sub = bus.subscribe_raw(maxsize=10)
    for i in range(25):
        bus.publish(LogLineReceived(container_id="c", line=f"l{i}"))
    got = lines(drain(sub))
    assert got[0] == ("c", log_gap_line(15))
    assert got[1:] == [("c", f"l{i}") for i in range(15, 25)]
    assert sub.dropped == 15


async def test_each_container_gets_its_own_count_and_other_events_make_no_marker() -> None:
    bus = EventBus()
    sub = bus.subscribe_raw(maxsize=4)
    bus.publish(ActivityLogged(activity_type="x", container_id=None, message="m"))
    bus.publish(LogLineReceived(container_id="a", line="a0"))
    bus.publish(LogLineReceived(container_id="b", line="b0"))
    bus.publish(LogLineReceived(container_id="a", line="a1"))
    for i in range(3):  # drops the activity line, a0 and b0
        bus.publish(LogLineReceived(container_id="c", line=f"c{i}"))
    got = lines(drain(sub))
    markers = sorted(got[:2])
    assert markers == [("a", log_gap_line(1)), ("b", log_gap_line(1))]
    assert got[2:] == [("a", "a1"), ("c", "c0"), ("c", "c1"), ("c", "c2")]
    # a follower that keeps up gets no marker
    bus.publish(LogLineReceived(container_id="a", line="a2"))
    assert lines(drain(sub)) == [("a", "a2")]


class _FakeSio:
    def __init__(self) -> None:
        self.sent: list[tuple[str, Any, str | None]] = []

    async def emit(self, event: str, data: Any, to: str | None = None) -> None:
        self.sent.append((event, data, to))


class _FakeManager:
    def __init__(self) -> None:
        self.bus = EventBus()
        self.journal = SimpleNamespace(listen=lambda cb: lambda: None)

    async def unfollow_logs(self, container_id: str) -> None:
        pass


async def _until(check: Callable[[], bool]) -> None:
    async with asyncio.timeout(20):
        while not check():
            await asyncio.sleep(0.01)


async def test_the_socketio_log_room_gets_the_marker() -> None:
    manager, sio = _FakeManager(), _FakeSio()
    bridge = SioBridge(cast(Any, sio), cast(Any, manager))
    await bridge.start()
    bridge._followers["c"] = {"sid"}
    total = 60_000  # more than the bridge's subscription holds, published before it reads
    for i in range(total):
        manager.bus.publish(LogLineReceived(container_id="c", line=f"l{i}"))
    await _until(lambda: bool(sio.sent) and sio.sent[-1][1]["line"] == f"l{total - 1}")
    await bridge.stop()
    event, first, room = sio.sent[0]
    assert (event, room) == ("container_log", "logs:c")
    skipped = int(first["line"].split()[1])
    assert first["line"] == log_gap_line(skipped) and skipped > 0
    assert skipped + len(sio.sent) - 1 == total  # every line either sent or counted


async def test_the_panel_gets_the_marker() -> None:
    bus = EventBus()
    bridge = EventBridge(bus, min_interval=0.0)
    posted: list[Event] = []
    app = SimpleNamespace(post_message=lambda msg: posted.extend(msg.events))
    total = 25_000  # more than the panel's subscription holds
    for i in range(total):
        bus.publish(LogLineReceived(container_id="c", line=f"l{i}"))
    pump = asyncio.create_task(bridge._pump(cast(Any, app)))
    await _until(lambda: bool(posted) and lines(posted)[-1][1] == f"l{total - 1}")
    pump.cancel()
    await asyncio.gather(pump, return_exceptions=True)
    got = lines(posted)
    skipped = int(got[0][1].split()[1])
    assert got[0] == ("c", log_gap_line(skipped)) and skipped > 0
    assert skipped + len(got) - 1 == total
