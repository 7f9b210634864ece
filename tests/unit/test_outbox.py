"""Queued delivery: the outbox on a real JournalStore and FlowChannelHub, flows on real sockets.

Hostile flows are raw socket clients (forged and junk acks, never acknowledging); the real
runtime (flow/flowrt.py) runs in a thread of this process. No Docker."""

from __future__ import annotations

import asyncio
import importlib.util
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from server.core.bus import EventBus, Subscription
from server.core.config import FlowSettings
from server.core.errors import InvalidRequest
from server.core.events import Event, FlowMessageReceived, QueuedMessageDelivered
from server.core.flow_channel import FlowChannelHub
from server.core.frames import encode_frame, read_frame
from server.core.journal.outbox import Outbox, QueueFull, QueueUnavailable
from server.core.journal.store import JournalStore

FLOWRT = Path(__file__).resolve().parents[2] / "flow" / "flowrt.py"
MAX = FlowSettings().max_frame_bytes


def load_flowrt() -> ModuleType:
    spec = importlib.util.spec_from_file_location("flowrt_under_test", FLOWRT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


flowrt = load_flowrt()


class Rig:
    """A store, a bus, a hub listening for flows "f" and "g", and an outbox."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bus = EventBus()
        self.hub = FlowChannelHub(self.bus, FlowSettings())
        self.store = JournalStore(str(root / "journal.sqlite3"))
        self.outbox = Outbox(self.hub, self.bus, max_per_flow=5)
        self.events: Subscription = self.bus.subscribe_raw(maxsize=100_000)

    def sock(self, name: str) -> str:
        return str(self.root / name / "flow.sock")

    async def start(self) -> None:
        self.bus.bind_loop(asyncio.get_running_loop())
        await self.store.open()
        for name in ("f", "g"):
            await self.hub.open(name, self.sock(name))
        await self.outbox.start(self.store.call)

    async def stop(self) -> None:
        await self.outbox.stop()
        await self.hub.aclose()
        await self.store.close()

    def rows(self) -> list[tuple[str, str]]:
        with sqlite3.connect(self.store.path) as conn:
            return list(conn.execute("SELECT container_id, message_id FROM outbox ORDER BY id"))

    async def next_of(self, kind: type[Event], timeout: float = 10) -> Any:
        async with asyncio.timeout(timeout):
            while not isinstance(event := await self.events.get(), kind):
                pass
        return event


@pytest.fixture
def short_dir() -> Iterator[Path]:
    import shutil
    import uuid

    path = Path(f"/tmp/fmq-{uuid.uuid4().hex[:8]}")
    path.mkdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def rig(short_dir: Path) -> AsyncIterator[Rig]:
    r = Rig(short_dir)
    await r.start()
    yield r
    await r.stop()


class RawFlow:
    """A hostile or lazy flow: frames in and out by hand."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, rig: Rig, name: str) -> RawFlow:
        reader, writer = await asyncio.open_unix_connection(rig.sock(name))
        return cls(reader, writer)

    async def read(self) -> dict[str, Any]:
        async with asyncio.timeout(10):
            frame = await read_frame(self.reader, MAX)
        assert frame is not None
        return frame

    async def write(self, message: dict[str, Any]) -> None:
        self.writer.write(encode_frame(message, MAX))
        await self.writer.drain()

    async def close(self) -> None:
        self.writer.close()
        await asyncio.gather(self.writer.wait_closed(), return_exceptions=True)


async def until(check: Any, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


# -- hostile input first ------------------------------------------------------------------


async def test_forged_and_junk_acks_mark_nothing_and_are_not_flow_messages(rig: Rig) -> None:
    g_id = await rig.outbox.put("g", {"command": "for-g"}, MAX)
    f = await RawFlow.connect(rig, "f")
    g = await RawFlow.connect(rig, "g")
    frame = await g.read()
    assert frame["_flowmgr"] == {"message_id": g_id}
    junk: list[Any] = ["x", None, 5, [], {}, {"ack": 5}, {"ack": ["a"]}, {"ack": "nope"}]
    junk += [{"ack": "a" * 10_000}, {"ack": {"message_id": g_id}}]
    for value in junk:
        await f.write({"_flowmgr": value})
    await f.write({"_flowmgr": {"ack": g_id}})  # another flow's id: forged
    await f.write({"command": "still-heard"})  # the connection survived the junk
    received = await rig.next_of(FlowMessageReceived)
    assert received.message == {"command": "still-heard"}  # no control frame was published
    assert rig.outbox.ignored_acks == len(junk) + 1
    assert rig.outbox.pending("g") == [g_id]
    assert [mid for _, mid in rig.rows()] == [g_id]
    # g's own ack counts, once; a second (a duplicate) is ignored like junk
    await g.write({"_flowmgr": {"ack": g_id}})
    await g.write({"_flowmgr": {"ack": g_id}})
    delivered = await rig.next_of(QueuedMessageDelivered)
    assert (delivered.container_id, delivered.message_id) == ("g", g_id)
    await until(lambda: not rig.rows())
    assert rig.outbox.pending("g") == []
    await until(lambda: rig.outbox.ignored_acks == len(junk) + 2)
    await f.close()
    await g.close()


async def test_reserved_key_and_oversized_message_are_refused(rig: Rig) -> None:
    with pytest.raises(InvalidRequest, match="reserved"):
        await rig.outbox.put("f", {"_flowmgr": {"message_id": "x"}}, MAX)
    with pytest.raises(InvalidRequest, match="frame maximum"):
        await rig.outbox.put("f", {"blob": "x" * 200}, 100)
    with pytest.raises(InvalidRequest):
        await rig.outbox.put("f", {"nan": float("nan")}, MAX)
    assert rig.outbox.pending("f") == [] and rig.rows() == []


async def test_a_flow_that_never_acknowledges(rig: Rig) -> None:
    """Pending stays pending, is resent in order on the next connection, the queue fills."""
    ids = [await rig.outbox.put("f", {"n": i}, MAX) for i in range(3)]
    lazy = await RawFlow.connect(rig, "f")
    first = [(await lazy.read())["_flowmgr"]["message_id"] for _ in ids]
    assert first == ids
    ids += [await rig.outbox.put("f", {"n": i}, MAX) for i in (3, 4)]
    assert [(await lazy.read())["n"] for _ in range(2)] == [3, 4]
    with pytest.raises(QueueFull) as full:
        await rig.outbox.put("f", {"n": 5}, MAX)
    assert full.value.error_type == "validation_error"
    assert full.value.details["setting"] == "journal.queue_max_per_flow"
    assert full.value.details["limit"] == 5
    await lazy.close()
    again = await RawFlow.connect(rig, "f")
    resent = [await again.read() for _ in ids]
    assert [m["_flowmgr"]["message_id"] for m in resent] == ids
    assert [m["n"] for m in resent] == [0, 1, 2, 3, 4]
    assert rig.outbox.pending("f") == ids and len(rig.rows()) == 5
    await again.close()


async def test_drop_forgets_the_queue_and_counts(rig: Rig) -> None:
    for i in range(3):
        await rig.outbox.put("f", {"n": i}, MAX)
    await rig.outbox.put("g", {"n": 0}, MAX)
    assert await rig.outbox.drop("f") == 3
    assert await rig.outbox.drop("f") == 0
    assert rig.outbox.pending("f") == [] and [c for c, _ in rig.rows()] == ["g"]


async def test_a_restart_reloads_the_queue_in_order(rig: Rig) -> None:
    ids = [await rig.outbox.put("f", {"n": i}, MAX) for i in range(4)]
    await rig.outbox.stop()
    await rig.store.close()
    await rig.store.open()
    rig.outbox = Outbox(rig.hub, rig.bus, max_per_flow=5)
    await rig.outbox.start(rig.store.call)
    assert rig.outbox.pending("f") == ids
    raw = await RawFlow.connect(rig, "f")
    assert [(await raw.read())["n"] for _ in ids] == [0, 1, 2, 3]
    await raw.close()


# -- the real runtime ---------------------------------------------------------------------


class ThreadFlow:
    """flowrt's Flow serving in a thread; its handler records what it saw."""

    def __init__(self, socket_path: str) -> None:
        self.flow = flowrt.Flow(socket_path)
        self.seen: list[int] = []
        self.flow.handlers["q"] = self._q
        self.thread = threading.Thread(target=self.flow.run, daemon=True)

    def _q(self, message: dict[str, Any]) -> None:
        assert "_flowmgr" not in message  # the envelope is stripped before the handler
        self.seen.append(message["n"])

    def __enter__(self) -> ThreadFlow:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.flow.stop()
        self.thread.join(5)


async def test_queued_to_an_absent_flow_is_handled_once_in_order(rig: Rig) -> None:
    ids = [await rig.outbox.put("f", {"command": "q", "n": i}, MAX) for i in range(5)]
    with ThreadFlow(rig.sock("f")) as tf:
        got = [(await rig.next_of(QueuedMessageDelivered)).message_id for _ in ids]
        assert got == ids
        await until(lambda: not rig.rows())
        more = await rig.outbox.put("f", {"command": "q", "n": 5}, MAX)  # while connected
        assert (await rig.next_of(QueuedMessageDelivered)).message_id == more
        assert tf.seen == [0, 1, 2, 3, 4, 5]


async def test_a_slow_journal_delays_the_row_deletion_not_the_delivery_event(rig: Rig) -> None:
    """Once a flow's queue is empty, every `message_delivered` is published (CI once read
    history right after the queue emptied and missed the acks still waiting behind a slow
    journal); the rows go only after those events are journalled."""
    gate = asyncio.Event()

    async def slow_journal() -> None:
        await gate.wait()

    rig.outbox.journal_flushed = slow_journal
    ids = [await rig.outbox.put("f", {"command": "q", "n": i}, MAX) for i in range(5)]
    flow = await RawFlow.connect(rig, "f")
    try:
        for n, mid in enumerate(ids):  # one at a time: the first batch waits on the journal
            assert (await flow.read())["_flowmgr"]["message_id"] == mid
            await flow.write({"_flowmgr": {"ack": mid}})
            await until(lambda n=n: len(rig.outbox.pending("f")) == len(ids) - n - 1)
        said = []
        while (event := rig.events.get_nowait()) is not None:
            if isinstance(event, QueuedMessageDelivered):
                said.append(event.message_id)
        assert said == ids
        assert [m for _, m in rig.rows()] == ids  # not journalled yet: still queued on disk
    finally:
        gate.set()
    await until(lambda: not rig.rows())
    await flow.close()


def test_flowrt_deduplicates_acknowledges_and_forgets_the_oldest_ids() -> None:
    flow = flowrt.Flow("/nonexistent/flow.sock")
    seen: list[Any] = []
    sent: list[dict[str, Any]] = []
    flow.handlers["q"] = lambda m: seen.append(dict(m))
    flow.send = lambda message, wait=0.0: sent.append(message)
    flow.dedup_ids = 3
    for mid in ("a", "b", "a", "c", "d", "e", "a"):
        flow._dispatch({"command": "q", "_flowmgr": {"message_id": mid}})
    assert len(seen) == 6  # "a" twice only after it left the 3-id window
    assert all("_flowmgr" not in m for m in seen)
    assert [m["_flowmgr"]["ack"] for m in sent] == ["a", "b", "a", "c", "d", "e", "a"]
    assert len(flow.seen) == 3
    # a junk envelope is stripped and the message handled as a plain one (no ack)
    sent.clear()
    flow._dispatch({"command": "q", "_flowmgr": "junk"})
    flow._dispatch({"command": "q", "_flowmgr": {"message_id": 7}})
    assert len(seen) == 8 and sent == []


async def test_with_the_journal_off_the_queue_lives_in_memory(rig: Rig) -> None:
    await rig.outbox.stop()
    rig.outbox = Outbox(rig.hub, rig.bus, max_per_flow=5)
    await rig.outbox.start(None)
    mid = await rig.outbox.put("f", {"n": 1}, MAX)
    raw = await RawFlow.connect(rig, "f")
    assert (await raw.read())["_flowmgr"] == {"message_id": mid}
    await raw.write({"_flowmgr": {"ack": mid}})
    assert (await rig.next_of(QueuedMessageDelivered)).message_id == mid
    assert rig.rows() == [] and rig.outbox.pending("f") == []
    await raw.close()


async def test_an_unwritable_journal_queues_nothing_and_says_so(rig: Rig) -> None:
    await rig.store.close()
    with pytest.raises(QueueUnavailable, match="not queued"):
        await rig.outbox.put("f", {"n": 1}, MAX)
    assert rig.outbox.pending("f") == []
    await rig.store.open()
