"""Journal: every pushed event written with its seq before it is handed to the front ends."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sqlite3
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from pydantic_core import from_json

from server.core.bus import EventBus
from server.core.config import Settings
from server.core.errors import ConfigError, InternalError, InvalidRequest
from server.core.events import Event
from server.core.journal.records import Encoder, HistoryPage, JournalRecord, StoredRow
from server.core.journal.store import (
    JournalStore,
    JournalUnavailable,
    PendingRow,
    StoreBusy,
    diagnose,
    dumps,
    is_environment_error,
)

__all__ = ["Journal", "Listener", "STATUS_PUSH", "UNJOURNALLED"]

logger = logging.getLogger(__name__)

Listener = Callable[[list[JournalRecord]], Awaitable[None]]

STATUS_PUSH = "container_status_update"
"""The periodic sample: journalled at most once per flow per `journal.status_interval`."""

UNJOURNALLED = frozenset({"container_log"})
"""Push names never written (the engine keeps the logs); passed on with seq None."""

RETRY_SECONDS = 1.0
"""While unavailable, a write (or the opening) is tried again at most this often."""

RETENTION_SECONDS = 30.0
"""How often retention looks at the age and size of the journal."""

INLINE_MAX = 1000
"""Events per piece: what is pending is written in pieces of at most this many, each one
transaction on the loop's thread (a few ms at most) while the writer thread is idle, the loop
turning between pieces: appends on the writer thread, beside the running loop, cost more CPU
than the writes themselves (the two threads taking turns at the GIL)."""

GATHER_QUIET = 3
"""A batch is written once this many turns of the loop in a row added nothing to it: an event
alone (a round trip) waits a few turns of an idle loop, microseconds; under load, events that
come in the turns after it share its transaction (~35-100 us each, whatever they hold)."""

GATHER_SECONDS = 0.002
"""...or when the oldest event of the batch has waited this long (a loop always busy)."""

CHECKPOINT_ROWS = 20_000
"""Rows appended between two checkpoints (on the writer thread; ~8 MB of WAL in large
transactions); also one every CHECKPOINT_TRANSACTIONS, and every RETENTION_SECONDS after
anything was written."""

CHECKPOINT_TRANSACTIONS = 1000
"""Transactions between two checkpoints: each one appends whole pages of the table and its two
indexes to the WAL (~12-16 KB for one event), so at one event per transaction the rows alone
would let the WAL grow to ~300 MB before it is reused."""

TRIM_CHUNK = 2000
"""Rows one retention transaction deletes at most (appends interleave between chunks)."""

# a pending event: (at, push name, container id, payload, journal it?)
_Pending = tuple[float, str, str | None, dict[str, Any], bool]


class Journal:
    """Taps the bus, encodes each event once, writes the batch (group commit), then hands it to
    the listeners; reads pages back for resume and history (one indexed range query each)."""

    def __init__(self, settings: Settings, bus: EventBus, encoder: Encoder | None) -> None:
        self._settings = settings.journal
        self.path = settings.journal_path
        self._state_dir = settings.state_dir
        self._bus = bus
        self._encoder = encoder
        self.store = JournalStore(self.path)
        self._listeners: list[Listener] = []
        self._pending: list[_Pending] = []
        self._wake = asyncio.Event()
        self._opening = asyncio.Lock()
        self._idle = asyncio.Event()
        self._idle.set()
        self._out: asyncio.Queue[list[JournalRecord]] = asyncio.Queue()
        """Committed batches on their way to the listeners."""
        self._untap: Callable[[], None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._status_at: dict[str | None, float] = {}
        self._problem: str | None = None
        """Why the journal cannot be written (None: it can)."""
        self._retry_at = 0.0
        self._last_seq = 0
        self._oldest_seq = 0
        self._memory_seq = 0
        self._encode_failures: set[str] = set()
        self.transactions = 0
        """Write transactions committed (group commit: far fewer than events)."""
        self.inline = 0
        """Of those, written on the loop's thread (small, while the writer thread was idle)."""
        self._since_checkpoint = 0
        self._tx_since_checkpoint = 0
        self._tapped = 0
        """Events taken from the bus so far; `_done`: of those, written (or given up on)."""
        self._done = 0
        self._progress = asyncio.Event()
        self._checkpointing: asyncio.Task[None] | None = None
        self.unjournalled = 0
        """Events that should have been journalled but were pushed without a seq."""
        self._reopen_hooks: list[Callable[[int], Coroutine[Any, Any, None]]] = []
        self._hook_tasks: set[asyncio.Task[None]] = set()

    # lifecycle

    @property
    def enabled(self) -> bool:
        """Writing to disk is configured and there is an encoder to write with."""
        return self._settings.enabled and self._encoder is not None

    def on_reopen(self, hook: Callable[[int], Coroutine[Any, Any, None]]) -> None:
        """`hook(high_seq)` runs (in its own task) whenever the database opens after the
        start: a journal unavailable at start (read-only, full) that became writable. What it
        held up to `high_seq` was never read into memory: the hook reads it now."""
        self._reopen_hooks.append(hook)

    def use_encoder(self, encoder: Encoder) -> None:
        """Give the encoder to a journal built without one (a front end handed a manager made
        elsewhere, e.g. by a test); before `start()`. An encoder given already stays."""
        if self._encoder is None:
            self._encoder = encoder

    async def start(self) -> None:
        """Open the database (ConfigError: in use by another manager, not a journal,
        truncated), tap the bus, start the pump and retention. A read-only or full filesystem
        does not stop the start: the journal is unavailable and retries."""
        if self._encoder is None:
            return
        if self._settings.enabled:
            self._check_path()
            await self._open(first=True)
        self._untap = self._bus.add_tap(self._tap)
        self._tasks.append(asyncio.create_task(self._pump(), name="journal-pump"))
        self._tasks.append(asyncio.create_task(self._deliver(), name="journal-deliver"))
        if self._settings.enabled:
            self._tasks.append(asyncio.create_task(self._maintain(), name="journal-retention"))

    async def stop(self) -> None:
        """Stop tapping, write and hand on what is pending, close the database."""
        if self._untap is not None:
            self._untap()
            self._untap = None
        try:
            async with asyncio.timeout(5):
                while self._pending or not self._idle.is_set():
                    self._wake.set()
                    await asyncio.sleep(0.005)
                if self._tasks:
                    await self._out.join()
        except TimeoutError:
            logger.warning("journal: %d events not written at stop", len(self._pending))
        for task in (*self._tasks, *self._hook_tasks):
            task.cancel()
        if self._tasks or self._hook_tasks:
            await asyncio.wait([*self._tasks, *self._hook_tasks], timeout=5)
        self._tasks.clear()
        if self._checkpointing is not None:
            await asyncio.wait([self._checkpointing], timeout=5)
        await self.store.close()

    def _check_path(self) -> None:
        """A journal beside the flows' socket directories must not be nameable as one: creating
        that flow would replace the file with its directory."""
        here = os.path.dirname(os.path.abspath(self.path))
        name = os.path.basename(self.path)
        if here == os.path.abspath(self._state_dir) and re.fullmatch(r"[a-zA-Z0-9].*", name):
            raise ConfigError(
                f"journal.path {self.path} is in the manager's directory under a name a flow "
                "could have (its socket directory would replace the file): start the name "
                "with a dot, or put it elsewhere",
                details={"field": "journal.path"},
            )

    async def _open(self, *, first: bool = False) -> None:
        """Open the store (the pump and retention may both retry: one at a time). At the first
        start a broken file is a ConfigError; found later, it only keeps the journal down."""
        async with self._opening:
            if self.store.is_open:
                return
            try:
                await self.store.open()
            except JournalUnavailable as err:
                self._unavailable(str(err))
                return
            except ConfigError as err:
                if first:
                    raise
                self._unavailable(err.message)
                return
        self._last_seq = self.store.high_seq
        self._oldest_seq = await self.store.call(JournalStore.oldest)
        if self._problem is not None:
            logger.info("journal %s: writable again", self.path)
        self._problem = None
        if not first:
            for hook in self._reopen_hooks:
                task = asyncio.create_task(hook(self._last_seq), name="journal-reopened")
                self._hook_tasks.add(task)
                task.add_done_callback(self._hook_done)

    def _hook_done(self, task: asyncio.Task[None]) -> None:
        self._hook_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("journal: reading back after reopening failed", exc_info=task.exception())

    def _unavailable(self, why: str) -> None:
        if self._problem is None:
            logger.error(
                "journal %s unavailable: %s; events are pushed without a seq until it can be "
                "written again (retried every %g s)",
                self.path,
                why,
                RETRY_SECONDS,
            )
        self._problem = why
        self._retry_at = time.monotonic() + RETRY_SECONDS

    def health(self) -> str:
        """ "active" | "disabled" | "unavailable: <why>"."""
        if not self.enabled:
            return "disabled"
        if self._problem is not None:
            return f"unavailable: {self._problem}"
        return "active" if self.store.is_open else "unavailable: not started"

    @property
    def last_seq(self) -> int:
        """The newest committed seq (in memory when the journal is disabled)."""
        return self._last_seq if self._settings.enabled else self._memory_seq

    @property
    def oldest_seq(self) -> int:
        """The oldest seq still held (0 when none is)."""
        return self._oldest_seq if self._last_seq else 0

    async def flushed(self) -> None:
        """Return once every event published before this call has been through the pump
        (journalled, or given up on when the journal cannot be written)."""
        target = self._tapped
        while self._done < target and self._tasks:
            await self._progress.wait()

    def listen(self, cb: Listener) -> Callable[[], None]:
        """`cb(batch)` gets every encoded event in publish order, journalled ones after their
        commit (seq set); returns the unsubscribe function."""
        self._listeners.append(cb)

        def unsubscribe() -> None:
            if cb in self._listeners:
                self._listeners.remove(cb)

        return unsubscribe

    # the feed

    def _tap(self, event: Event) -> None:
        """On the publisher's stack: encode now (the event is what it is now), queue, wake."""
        try:
            encoded = self._encoder(event) if self._encoder is not None else None
        except Exception:  # a bug in one push's encoding must not break the publisher
            name = type(event).__name__
            if name not in self._encode_failures:
                self._encode_failures.add(name)
                logger.exception("journal: cannot encode %s; such events are not pushed", name)
            return
        if encoded is None:
            return
        name, payload, container_id = encoded
        at = event.at.timestamp()
        keep = name not in UNJOURNALLED
        if keep and name == STATUS_PUSH:
            last = self._status_at.get(container_id)
            keep = last is None or at - last >= self._settings.status_interval
            if keep:
                self._status_at[container_id] = at
        self._pending.append((at, name, container_id, payload, keep))
        self._tapped += 1
        self._wake.set()

    async def _pump(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._idle.clear()
            await self._gather()
            while self._pending:
                if len(self._pending) <= INLINE_MAX:
                    batch, self._pending = self._pending, []
                else:
                    batch = self._pending[:INLINE_MAX]
                    del self._pending[:INLINE_MAX]
                try:
                    records = await self._commit(batch)
                except Exception:  # never let the live stream stop: push without seqs
                    logger.exception("journal: a batch of %d events was not written", len(batch))
                    self.unjournalled += sum(1 for p in batch if p[4])
                    records = [JournalRecord(None, p[1], p[3], p[2]) for p in batch]
                # delivered by its own task: the next batch is written meanwhile (SQLite lets
                # go of the GIL), in order all the same
                self._out.put_nowait(records)
                self._done += len(batch)
                self._progress.set()
                self._progress.clear()
                if self._pending:
                    await asyncio.sleep(0)  # the rest of a burst: let the loop run first
            self._idle.set()

    async def _gather(self) -> None:
        """Let a busy loop add to the batch before it is written (group commit): under load
        one event comes every few hundred us, each in its own turn of the loop, and one
        transaction each made the journal the service's largest cost per request."""
        if not self._settings.enabled:
            return
        start = time.monotonic()
        quiet = 0
        while quiet < GATHER_QUIET:
            had = len(self._pending)
            await asyncio.sleep(0)
            if len(self._pending) >= INLINE_MAX or time.monotonic() - start >= GATHER_SECONDS:
                return
            quiet = quiet + 1 if len(self._pending) == had else 0

    async def _deliver(self) -> None:
        while True:
            records = await self._out.get()
            try:
                for cb in tuple(self._listeners):
                    try:
                        await cb(records)
                    except Exception:
                        logger.exception("journal: a listener failed on a batch")
            finally:
                self._out.task_done()

    async def _commit(self, batch: list[_Pending]) -> list[JournalRecord]:
        # each payload's JSON text, made once: stored, and pushed as it is by the front ends
        # (journal on or off: the text is what they send either way)
        texts = [_text(p[3]) for p in batch]
        keep = [(p, t) for p, t in zip(batch, texts, strict=True) if p[4]]
        first: int | None = None
        if keep and not self._settings.enabled:
            first = self._memory_seq + 1
            self._memory_seq += len(keep)
        elif keep:
            first = await self._write(keep)
        out: list[JournalRecord] = []
        seq = first
        for (_at, name, cid, payload, journalled), text in zip(batch, texts, strict=True):
            if journalled and seq is not None:
                out.append(JournalRecord(seq, name, payload, cid, text))
                seq += 1
            else:
                out.append(JournalRecord(None, name, payload, cid, text))
        return out

    async def _write(self, keep: list[tuple[_Pending, str | None]]) -> int | None:
        """One transaction for the whole batch; None when the journal cannot be written."""
        if self._problem is not None:
            if time.monotonic() < self._retry_at:
                self.unjournalled += len(keep)
                return None
            if not self.store.is_open:
                await self._open()
                if not self.store.is_open:
                    self.unjournalled += len(keep)
                    return None
        store = self.store

        rows: list[PendingRow] = [
            (at, name, cid, text or dumps({"unencodable": repr(payload)[:200]}))
            for (at, name, cid, payload, _), text in keep
        ]

        def write(conn: sqlite3.Connection) -> int:
            return store.append(conn, rows)

        try:
            try:
                first = self._inline(write, len(keep))
            except StoreBusy:
                # the writer thread holds the connection (a checkpoint, retention, a read):
                # wait for it to let go, then write here; appending on the thread instead
                # while the loop runs costs both threads their turns at the GIL
                await store.call(_nothing)
                try:
                    first = self._inline(write, len(keep))
                except StoreBusy:
                    first = await store.call(write)
        except (sqlite3.Error, OSError) as err:
            broken = isinstance(err, sqlite3.Error) and not is_environment_error(err)
            if broken and self._problem is None:  # once, not at every retry
                logger.exception("journal: a batch of %d events was not written", len(keep))
            self._unavailable(diagnose(self.path, err))
            self.unjournalled += len(keep)
            return None
        if self._problem is not None:
            logger.info("journal %s: writable again", self.path)
            self._problem = None
        self.transactions += 1
        self._since_checkpoint += len(keep)
        self._tx_since_checkpoint += 1
        if self._checkpointing is None and (
            self._since_checkpoint >= CHECKPOINT_ROWS
            or self._tx_since_checkpoint >= CHECKPOINT_TRANSACTIONS
        ):
            self._since_checkpoint = self._tx_since_checkpoint = 0
            self._checkpointing = asyncio.create_task(self._checkpoint(), name="journal-ckpt")
        self._last_seq = first + len(keep) - 1
        if not self._oldest_seq:
            self._oldest_seq = first
        return first

    def _inline(self, write: Callable[[sqlite3.Connection], int], count: int) -> int:
        if count > INLINE_MAX:
            raise StoreBusy
        first = self.store.call_inline(write)
        self.inline += 1
        return first

    async def _checkpoint(self) -> None:
        try:
            await self.store.checkpoint()
        except Exception as err:  # the next one tries again; a write failure shows on its own
            logger.warning("journal %s: checkpoint failed: %s", self.path, err)
        finally:
            self._checkpointing = None

    # reads

    def _readable(self) -> None:
        if not self._settings.enabled:
            raise InvalidRequest("the journal is off (journal.enabled is false)")
        if self._encoder is None:
            raise InvalidRequest("this manager keeps no journal")
        if not self.store.is_open:
            raise InternalError(f"the journal is unavailable: {self._problem or 'not started'}")

    async def read_after(self, after_seq: int, limit: int) -> list[JournalRecord]:
        """Journalled records with seq > after_seq, ascending, at most `limit`."""
        self._readable()
        rows = await self.store.call(lambda c: _decode(self.store.read_after(c, after_seq, limit)))
        return rows

    async def read_after_text(self, after_seq: int, limit: int) -> list[tuple[int, str, str]]:
        """As `read_after`, undecoded: (seq, push name, payload JSON text), for a front end
        that sends the stored text as it is (a resuming client's catch-up)."""
        self._readable()
        store = self.store
        return await store.call(
            lambda c: [(r[0], r[2], r[4]) for r in store.read_after(c, after_seq, limit)]
        )

    async def history(
        self,
        since_seq: int | None,
        container_id: str | None,
        types: Sequence[str] | None,
        limit: int,
    ) -> HistoryPage:
        """Records with seq > since_seq (0 when None), of one container and some push names
        when given, ascending, at most `limit`; every event published before the call is in it
        (a client that saw a push finds it in history)."""
        self._readable()
        await self.flushed()
        after = since_seq or 0
        wanted = list(types) if types is not None else None
        events = await self.store.call(
            lambda c: _decode(self.store.query(c, after, container_id, wanted, limit))
        )
        return HistoryPage(events=events, last_seq=self.last_seq, oldest_seq=self.oldest_seq)

    async def newest(
        self, event: str, limit: int, upto: int = 2**63 - 1
    ) -> list[tuple[float, JournalRecord]]:
        """The newest `limit` records of one push name with seq <= `upto`, oldest first, with
        their time (the manager's activity and crash memory, refilled at start)."""
        if not self.enabled or not self.store.is_open:
            return []

        def read(conn: sqlite3.Connection) -> list[tuple[float, JournalRecord]]:
            rows = self.store.newest(conn, event, limit, upto)
            return [(r[1], rec) for r, rec in zip(rows, _decode(rows), strict=True)]

        return await self.store.call(read)

    # retention

    async def _maintain(self) -> None:
        await asyncio.sleep(min(5.0, RETENTION_SECONDS))
        while True:
            if self.store.is_open:
                try:
                    await self.trim()
                except (sqlite3.Error, OSError) as err:
                    logger.warning("journal retention: %s", err)
                # a checkpoint is the WAL's only fsync: at a low rate the row count alone
                # would leave the last events unsynced for hours (see Durability in PROTOCOL)
                if self._since_checkpoint and self._checkpointing is None:
                    self._since_checkpoint = self._tx_since_checkpoint = 0
                    await self._checkpoint()
            elif self._problem is not None and time.monotonic() >= self._retry_at:
                await self._open()
            await asyncio.sleep(RETENTION_SECONDS if self.store.is_open else RETRY_SECONDS)

    async def trim(self, *, now: float | None = None, chunk: int = TRIM_CHUNK) -> int:
        """Apply retention by age and size in chunks of `chunk` rows, one transaction each,
        yielding to the loop between them; returns how many rows went."""
        before = (now if now is not None else time.time()) - self._settings.max_age_days * 86400
        total = 0
        while True:
            n = await self.store.call(
                lambda c: JournalStore.trim(c, before, self._settings.max_bytes, chunk)
            )
            total += n
            if n == 0:
                break
            await asyncio.sleep(0)
        if total:
            self._oldest_seq = await self.store.call(JournalStore.oldest)
            logger.info("journal retention: %d old events deleted", total)
        return total


def _nothing(conn: sqlite3.Connection) -> None:
    """Run on the writer thread: returns once what the thread was doing is done."""


def _text(payload: dict[str, Any]) -> str | None:
    """The payload's JSON text; None when JSON cannot hold it (stored as a note instead)."""
    try:
        return dumps(payload)
    except (TypeError, ValueError):
        return None


def _decode(rows: list[StoredRow]) -> list[JournalRecord]:
    """Rows to records (runs on the writer thread: the loop only gets the finished list)."""
    # pydantic's Rust decoder: half of `json.loads`'s time (resume reads 100,000s of these)
    return [JournalRecord(seq, event, from_json(data), cid) for seq, _at, event, cid, data in rows]
