"""The bridge's hold for a client catching up: what arrives meanwhile is held and handed over
once, the join to the broadcast room falls between batches, and a backlog has a bound."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from server.api import sio_bridge
from server.api.auth import AUTHENTICATED
from server.api.sio_bridge import SioBridge
from server.core.journal.records import JournalRecord


class FakeManager:
    """python-socketio's client manager, as far as the bridge uses it."""

    def __init__(self) -> None:
        self.rooms: dict[str, set[str]] = {}
        self.connected = {"s1"}

    def is_connected(self, sid: str, namespace: str) -> bool:
        return sid in self.connected

    def basic_enter_room(self, sid: str, namespace: str, room: str) -> None:
        self.rooms.setdefault(room, set()).add(sid)


class FakeSio:
    def __init__(self) -> None:
        self.manager = FakeManager()
        self.sent: list[tuple[str, Any, str]] = []
        self.hung_up: list[str] = []
        self.gate: asyncio.Event | None = None

    async def emit(self, event: str, data: Any, to: str) -> None:
        if self.gate is not None:
            await self.gate.wait()
        # a broadcast reaches the room's members at the time of the emit
        for sid in sorted(self.manager.rooms.get(to, set())) if to == AUTHENTICATED else [to]:
            self.sent.append((event, data, sid))

    async def disconnect(self, sid: str) -> None:
        self.hung_up.append(sid)


def _records(first: int, count: int) -> list[JournalRecord]:
    return [JournalRecord(s, "activity_log", {"n": s}, None) for s in range(first, first + count)]


def _bridge() -> tuple[SioBridge, FakeSio]:
    sio = FakeSio()
    return SioBridge(sio, object()), sio  # type: ignore[arg-type]


async def test_held_records_go_out_once_then_the_client_joins_between_batches() -> None:
    bridge, sio = _bridge()
    got: list[int | None] = []

    async def send(records: list[JournalRecord]) -> None:
        got.extend(r.seq for r in records)

    bridge.hold_for("s1")
    await bridge._broadcast(_records(1, 3))
    assert bridge.take_held("s1") == _records(1, 3) and bridge.take_held("s1") == []
    await bridge._broadcast(_records(4, 2))
    # a batch going out while the catch-up finishes: the join waits for it to end
    sio.gate = asyncio.Event()
    in_flight = asyncio.create_task(bridge._broadcast(_records(6, 2)))
    await asyncio.sleep(0)
    finishing = asyncio.create_task(bridge.finish_catch_up("s1", send))
    await asyncio.sleep(0.01)
    assert not finishing.done()
    sio.gate.set()
    await in_flight
    assert await finishing is True
    assert got == [4, 5, 6, 7]  # held: what came after take_held, the in-flight batch included
    assert "s1" in sio.manager.rooms[AUTHENTICATED]
    await bridge._broadcast(_records(8, 1))  # then live, through the room
    assert [d["seq"] for _, d, sid in sio.sent if sid == "s1"] == [8]
    assert bridge._held == {}


async def test_a_client_that_left_is_not_joined() -> None:
    bridge, sio = _bridge()
    bridge.hold_for("s1")
    sio.manager.connected.clear()

    async def send(records: list[JournalRecord]) -> None:
        pass

    assert await bridge.finish_catch_up("s1", send) is False
    assert not sio.manager.rooms and bridge._held == {}


async def test_a_backlog_over_the_bound_hangs_the_client_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sio_bridge, "HELD_MAX", 5)
    bridge, sio = _bridge()
    bridge.hold_for("s1")
    await bridge._broadcast(_records(1, 4))
    assert sio.hung_up == []
    await bridge._broadcast(_records(5, 4))
    await asyncio.sleep(0)
    assert sio.hung_up == ["s1"]
    sent: list[JournalRecord] = []

    async def send(records: list[JournalRecord]) -> None:
        sent.extend(records)

    # never joined with a gap: it resumes from its last seq when it reconnects
    assert await bridge.finish_catch_up("s1", send) is False
    assert not sio.manager.rooms and sent == []
