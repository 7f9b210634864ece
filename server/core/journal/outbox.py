"""Outbox: messages queued for a flow (`send_message` with `queue: true`).

Each queued message is a row of table `outbox` in the journal's database (written on the store's
writer thread through `store.call`) until the flow acknowledges it. Delivery runs one task per
flow: in order, whenever the flow is connected; what was sent but not acknowledged goes again on
the next connection (at least once). The frame carries the id under the reserved key
ENVELOPE_KEY; the flow runtime strips it, de-duplicates by id and acknowledges with
`{"_flowmgr": {"ack": <message_id>}}` after its handler ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from server.core.bus import EventBus, Subscription
from server.core.errors import FlowMgrError, InvalidRequest
from server.core.events import Event, FlowChannelConnected, FlowChannelLost, QueuedMessageDelivered
from server.core.flow_channel import CONTROL_KEY, FlowChannelHub
from server.core.frames import encode_frame

__all__ = ["Outbox", "QueueFull", "QueueUnavailable", "ENVELOPE_KEY", "SCHEMA"]

logger = logging.getLogger(__name__)

Call = Callable[[Callable[[sqlite3.Connection], Any]], Awaitable[Any]]
"""`JournalStore.call`: runs `fn(conn)` on the store's writer thread and returns its result."""

ENVELOPE_KEY = CONTROL_KEY

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS outbox(id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " message_id TEXT NOT NULL UNIQUE, container_id TEXT NOT NULL, at REAL NOT NULL,"
    " message TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS outbox_flow ON outbox(container_id, id)",
)


class QueueFull(InvalidRequest):
    """The flow already has `journal.queue_max_per_flow` messages waiting (validation_error)."""


class QueueUnavailable(FlowMgrError):
    """The journal cannot be written now (read-only, full): nothing was queued (system_error,
    with its cause in the message)."""


@dataclass(eq=False)
class _Item:
    message_id: str
    message: dict[str, Any]
    committed: bool
    """False until its row is committed: delivery stops at the first uncommitted one (order)."""


@dataclass(eq=False)
class _FlowQueue:
    items: dict[str, _Item] = field(default_factory=dict)
    """Unacknowledged messages by id, in queue order (dicts keep insertion order)."""
    sent: set[str] = field(default_factory=set)
    """Ids written on the current connection (not to be written again on it)."""
    generation: int = 0
    """Bumped by every connect and loss: a send that straddles one is not counted as sent."""
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class Outbox:
    """Queued messages of every flow; durable when given the store's `call`."""

    def __init__(self, hub: FlowChannelHub, bus: EventBus, *, max_per_flow: int) -> None:
        self._hub = hub
        self._bus = bus
        self.max_per_flow = max_per_flow
        self._call: Call | None = None
        self.journal_flushed: Callable[[], Awaitable[None]] | None = None
        """Waits until what was published is journalled (the manager sets it)."""
        self._queues: dict[str, _FlowQueue] = {}
        self._acked: list[tuple[str, str]] = []
        self._flush: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._sub: Subscription | None = None
        self._started = False
        self._unloaded = False
        """The journal could not be read at start: `reload` reads it once it opens."""
        self.ignored_acks = 0
        """Control frames that acknowledged nothing (junk, unknown or another flow's id)."""

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self, call: Call | None) -> None:
        """Create the table, load what is still queued and start delivering.

        `call` None: the journal is off; queued messages then live in memory only."""
        if self._started:
            return
        self._call = call
        rows: list[tuple[str, str, str]] = []
        if call is not None:
            try:
                rows = await call(_load)
            except Exception as err:  # unavailable journal: queued sends fail, typed, meanwhile
                logger.error("outbox: queued messages cannot be loaded from the journal: %s", err)
                self._unloaded = True
        for message_id, container_id, text in rows:
            q = self._queues.setdefault(container_id, _FlowQueue())
            q.items[message_id] = _Item(message_id, json.loads(text), committed=True)
        self._hub.on_control = self.control
        self._sub = self._bus.subscribe_raw(maxsize=10_000, predicate=_channel_event)
        self._watch = asyncio.create_task(self._watch_channels(self._sub), name="outbox-watch")
        self._started = True
        for cid in self._queues:
            self._wake(cid)
        if rows:
            logger.info(
                "outbox: %d queued messages of %d flows reloaded", len(rows), len(self._queues)
            )

    async def reload(self) -> None:
        """Load what the journal held at start, when it could not be read then (it was
        unavailable): those messages go before the ones queued since, in their order."""
        if not self._unloaded or self._call is None or not self._started:
            return
        rows = await self._call(_load)
        self._unloaded = False
        acked = {mid for _, mid in self._acked}
        stored: dict[str, list[tuple[str, str]]] = {}
        for message_id, container_id, text in rows:
            if message_id not in acked:
                stored.setdefault(container_id, []).append((message_id, text))
        for container_id, found in stored.items():
            q = self._queues.setdefault(container_id, _FlowQueue())
            items: dict[str, _Item] = {}
            for message_id, text in found:
                items[message_id] = q.items.get(message_id) or _Item(
                    message_id, json.loads(text), committed=True
                )
            for message_id, item in q.items.items():  # committed after the read, or in flight
                items.setdefault(message_id, item)
            q.items = items
            self._wake(container_id)
        logger.info("outbox: %d queued messages reloaded from the journal", len(rows))

    async def stop(self) -> None:
        """Stop delivering; what is unacknowledged stays in the table for the next start."""
        if not self._started:
            return
        self._started = False
        if self._hub.on_control == self.control:
            self._hub.on_control = None
        if self._sub is not None:
            self._bus.unsubscribe(self._sub)
        tasks = [t for t in (self._watch, *(q.task for q in self._queues.values())) if t]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._flush is not None:  # acknowledgements already taken: record them
            await asyncio.gather(self._flush, return_exceptions=True)
        self._queues.clear()

    # -- queueing ------------------------------------------------------------------------

    def queued_flows(self) -> list[str]:
        """Container ids with messages waiting."""
        return [cid for cid, q in self._queues.items() if q.items]

    def pending(self, container_id: str) -> list[str]:
        """Ids of the flow's unacknowledged messages, in order."""
        q = self._queues.get(container_id)
        return list(q.items) if q is not None else []

    async def put(self, container_id: str, message: dict[str, Any], max_frame_bytes: int) -> str:
        """Queue one message; returns its id once its row is committed."""
        if ENVELOPE_KEY in message:
            raise InvalidRequest(
                f"message key {ENVELOPE_KEY!r} is reserved for the manager's envelope",
                field=f"message.{ENVELOPE_KEY}",
            )
        q = self._queues.setdefault(container_id, _FlowQueue())
        if len(q.items) >= self.max_per_flow:
            raise QueueFull(
                f"flow {container_id[:12]} already has {len(q.items)} queued messages waiting "
                f"for delivery, its limit (journal.queue_max_per_flow = {self.max_per_flow})",
                details={
                    "container_id": container_id,
                    "limit": self.max_per_flow,
                    "setting": "journal.queue_max_per_flow",
                },
            )
        message_id = uuid.uuid4().hex
        # the frame the flow will get, checked now: one too large would block the queue
        encode_frame(_envelope(message, message_id), max_frame_bytes)
        text = json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        item = _Item(message_id, message, committed=self._call is None)
        q.items[message_id] = item  # its place in the order is taken now
        if self._call is not None:
            row = (message_id, container_id, time.time(), text)
            try:
                await self._call(lambda conn: _insert(conn, row))
            except BaseException as err:
                q.items.pop(message_id, None)
                if isinstance(err, sqlite3.Error | FlowMgrError):
                    raise QueueUnavailable(
                        f"the message was not queued: the journal cannot be written ({err})",
                        details={"container_id": container_id},
                    ) from None
                raise
            item.committed = True
        self._wake(container_id)
        return message_id

    async def drop(self, container_id: str) -> int:
        """Forget the flow's queue (it was deleted); how many messages were dropped."""
        q = self._queues.pop(container_id, None)
        count = len(q.items) if q is not None else 0
        if q is not None and q.task is not None:
            q.task.cancel()
        if self._call is not None:
            count = max(count, await self._call(lambda conn: _delete_flow(conn, container_id)))
        return count

    # -- acknowledgements (called by the hub for every frame with ENVELOPE_KEY) ----------

    def control(self, container_id: str, control: Any) -> None:
        """A flow's control frame: an acknowledgement of one of ITS queued messages."""
        mid = control.get("ack") if isinstance(control, dict) else None
        q = self._queues.get(container_id)
        item = q.items.get(mid) if q is not None and isinstance(mid, str) else None
        if q is None or item is None or not item.committed:
            # junk, a late duplicate, or an id of another flow's message: never trusted
            self.ignored_acks += 1
            if self.ignored_acks == 1 or self.ignored_acks % 1000 == 0:
                logger.info(
                    "flow %s acknowledged no queued message of its own (%d such frames so far)",
                    container_id[:12],
                    self.ignored_acks,
                )
            return
        del q.items[item.message_id]
        q.sent.discard(item.message_id)
        # said at once (a client that sees the queue empty sees every delivery); the row is
        # deleted only after this event is journalled (_record_acks)
        self._bus.publish(
            QueuedMessageDelivered(container_id=container_id, message_id=item.message_id)
        )
        self._acked.append((container_id, item.message_id))
        if self._flush is None or self._flush.done():
            self._flush = asyncio.create_task(self._record_acks(), name="outbox-acks")

    async def _record_acks(self) -> None:
        """Delete acknowledged rows in batches, once their `message_delivered` is journalled."""
        while self._acked:
            batch, self._acked = self._acked, []
            # `message_delivered` journalled first, the rows deleted after: a crash between
            # the two delivers again (the flow skips the duplicate and acknowledges again), and
            # a client never misses the delivery of a message that is no longer queued
            if self.journal_flushed is not None:
                await self.journal_flushed()
            if self._call is not None:
                ids = [mid for _, mid in batch]
                try:
                    await self._call(partial(_delete_ids, ids=ids))
                except Exception:  # the journal is failing: delivered anyway, say so
                    logger.warning(
                        "outbox: %d delivered messages not marked in the journal; they may be "
                        "delivered again after a restart (the flow de-duplicates them)",
                        len(batch),
                        exc_info=True,
                    )

    # -- delivery ------------------------------------------------------------------------

    async def _watch_channels(self, sub: Subscription) -> None:
        async for event in sub:
            if not isinstance(event, FlowChannelConnected | FlowChannelLost):
                continue
            q = self._queues.get(event.container_id)
            if q is None:
                continue
            q.generation += 1
            q.sent.clear()  # a new connection: everything unacknowledged goes again
            if isinstance(event, FlowChannelConnected):
                self._wake(event.container_id)

    def _wake(self, container_id: str) -> None:
        q = self._queues.get(container_id)
        if q is None or not self._started:
            return
        q.wake.set()
        if q.task is None or q.task.done():
            q.task = asyncio.create_task(
                self._deliver(container_id, q), name=f"outbox-{container_id[:12]}"
            )

    async def _deliver(self, container_id: str, q: _FlowQueue) -> None:
        """Write the flow's unsent messages in order while it is connected; then wait."""
        while True:
            await q.wake.wait()
            q.wake.clear()
            for item in list(q.items.values()):
                if not item.committed:
                    break  # its predecessors first; its commit wakes us
                if item.message_id in q.sent or item.message_id not in q.items:
                    continue
                info = self._hub.info(container_id)
                if info is None or not info.connected:
                    break  # FlowChannelConnected wakes us
                generation = q.generation
                try:
                    await self._hub.send(container_id, _envelope(item.message, item.message_id))
                except FlowMgrError as err:  # the connection went: the next one resends
                    logger.debug("outbox: delivery to %s paused: %s", container_id[:12], err)
                    break
                if q.generation == generation:
                    q.sent.add(item.message_id)
            if not q.items:
                with contextlib.suppress(KeyError):
                    if self._queues[container_id] is q:
                        del self._queues[container_id]
                return


def _channel_event(event: Event) -> bool:
    return isinstance(event, FlowChannelConnected | FlowChannelLost)


def _envelope(message: dict[str, Any], message_id: str) -> dict[str, Any]:
    return {**message, ENVELOPE_KEY: {"message_id": message_id}}


# -- on the store's writer thread -----------------------------------------------------


def _ensure(conn: sqlite3.Connection) -> None:
    for statement in SCHEMA:
        conn.execute(statement)


def _load(conn: sqlite3.Connection) -> list[tuple[str, str, str]]:
    _ensure(conn)
    cur = conn.execute("SELECT message_id, container_id, message FROM outbox ORDER BY id")
    return [(str(a), str(b), str(c)) for a, b, c in cur.fetchall()]


def _insert(conn: sqlite3.Connection, row: tuple[str, str, float, str]) -> None:
    conn.execute(
        "INSERT INTO outbox(message_id, container_id, at, message) VALUES (?, ?, ?, ?)", row
    )


def _delete_ids(conn: sqlite3.Connection, *, ids: list[str]) -> None:
    conn.execute("BEGIN")  # one transaction for the batch (the store's connection autocommits)
    try:
        conn.executemany("DELETE FROM outbox WHERE message_id = ?", [(i,) for i in ids])
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _delete_flow(conn: sqlite3.Connection, container_id: str) -> int:
    return conn.execute("DELETE FROM outbox WHERE container_id = ?", (container_id,)).rowcount
