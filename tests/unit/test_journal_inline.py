"""Appends written on the loop's thread, in pieces, while the writer thread is idle; never
beside it."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from server.core.journal import journal as journal_module
from server.core.journal.store import JournalStore, StoreBusy
from tests.unit.test_journal_store import Run, msg, settings


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per checkpoint the journal asks the store for."""
    counted_calls: list[int] = []
    original = JournalStore.checkpoint

    async def counted(self: JournalStore) -> None:
        counted_calls.append(1)
        await original(self)

    monkeypatch.setattr(JournalStore, "checkpoint", counted)
    return counted_calls


async def test_a_burst_is_written_inline_in_pieces_with_the_loop_turning_between(
    tmp_path: Path,
) -> None:
    async with Run(settings(tmp_path)) as run:
        run.bus.publish(msg(n=0))
        await run.settle(1)
        assert run.journal.inline == 1
        seen: set[int] = set()

        async def ticker() -> None:
            while True:
                seen.add(run.journal.transactions)
                await asyncio.sleep(0)

        ticking = asyncio.create_task(ticker())
        for i in range(1, 1 + journal_module.INLINE_MAX + 1):
            run.bus.publish(msg(n=i))
        await run.settle(journal_module.INLINE_MAX + 2)
        ticking.cancel()
        assert run.journal.transactions == 3 and run.journal.inline == 3
        assert 2 in seen  # the loop ran between the two pieces
        assert [len(b) for b in run.batches] == [1, journal_module.INLINE_MAX, 1]
        assert [r.seq for r in run.records] == list(range(1, journal_module.INLINE_MAX + 3))


async def test_while_the_thread_holds_the_connection_appends_wait_for_it_in_order(
    tmp_path: Path,
) -> None:
    """The thread is busy (a slow statement of the outbox or retention): the next appends go
    to the thread behind it, never beside it on the same connection; seqs stay contiguous."""
    async with Run(settings(tmp_path)) as run:
        store = run.journal.store
        holding, release = threading.Event(), threading.Event()

        def slow(conn: sqlite3.Connection) -> None:
            holding.set()
            release.wait(5)

        busy = asyncio.create_task(store.call(slow))
        await asyncio.to_thread(holding.wait, 5)
        with pytest.raises(StoreBusy):
            store.call_inline(lambda conn: None)
        for i in range(5):
            run.bus.publish(msg(n=i))
            await asyncio.sleep(0.01)
        assert run.records == []  # not written beside the busy thread, not handed on unwritten
        release.set()
        await busy
        await run.settle(5)
        assert [r.seq for r in run.records] == [1, 2, 3, 4, 5]
        assert [r.data["message"]["n"] for r in run.records] == list(range(5))


async def test_no_automatic_checkpoint_and_one_every_checkpoint_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, calls: list[int]
) -> None:
    """An automatic checkpoint would fsync inside an inline append, on the event loop."""
    monkeypatch.setattr(journal_module, "CHECKPOINT_ROWS", 50)
    async with Run(settings(tmp_path)) as run:
        auto = await run.journal.store.call(
            lambda conn: conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        )
        assert auto == 0
        for burst in range(4):  # 30 rows each: past 50 rows at 60 and at 120
            for i in range(30):
                run.bus.publish(msg(n=burst * 30 + i))
            await run.settle(30 * (burst + 1))
            async with asyncio.timeout(5):
                while run.journal._checkpointing is not None:
                    await asyncio.sleep(0.01)
    assert len(calls) == 2


async def test_a_closed_store_is_busy_not_a_crash(tmp_path: Path) -> None:
    store = JournalStore(str(tmp_path / "j.sqlite3"))
    with pytest.raises(StoreBusy):
        store.call_inline(lambda conn: None)
    await store.open()
    assert store.call_inline(lambda conn: conn.execute("SELECT 1").fetchone()[0]) == 1
    await store.close()
    with pytest.raises(StoreBusy):
        store.call_inline(lambda conn: None)


async def test_a_checkpoint_follows_any_write_within_the_retention_period(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, calls: list[int]
) -> None:
    """At a low rate the row count never reaches CHECKPOINT_ROWS: the WAL (not fsynced until a
    checkpoint) must still be synced soon after a write, or a power loss takes hours of it."""
    monkeypatch.setattr(journal_module, "RETENTION_SECONDS", 0.05)
    async with Run(settings(tmp_path)) as run:
        await asyncio.sleep(0.2)
        assert calls == []  # nothing written, nothing to sync
        run.bus.publish(msg(n=1))
        await run.settle(1)
        async with asyncio.timeout(5):
            while not calls:
                await asyncio.sleep(0.01)
        wal = await run.journal.store.call(
            lambda conn: conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        )
        assert wal[1] == wal[2]  # every WAL frame is in the database


async def test_one_checkpoint_every_checkpoint_transactions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, calls: list[int]
) -> None:
    """One event per transaction writes whole pages each time: the WAL is reused after a
    bounded number of transactions, not only after CHECKPOINT_ROWS rows."""
    monkeypatch.setattr(journal_module, "CHECKPOINT_TRANSACTIONS", 10)
    async with Run(settings(tmp_path)) as run:
        for i in range(25):
            run.bus.publish(msg(n=i))
            await run.settle(i + 1)  # its own transaction
            async with asyncio.timeout(5):
                while run.journal._checkpointing is not None:
                    await asyncio.sleep(0.01)
        assert run.journal.transactions == 25
    assert len(calls) == 2  # at 10 and at 20 transactions


async def test_events_of_a_busy_loop_share_a_transaction_and_a_lone_one_waits_a_few_turns(
    tmp_path: Path,
) -> None:
    """Group commit: one event per turn of the loop (requests under load) does not make one
    transaction each; an event alone (a round trip) is written after a few idle turns."""
    async with Run(settings(tmp_path)) as run:
        for i in range(20):
            run.bus.publish(msg(n=i))
            await asyncio.sleep(0)
        await run.settle(20)
        assert run.journal.transactions <= 2
        before = run.journal.transactions
        run.bus.publish(msg(n=99))
        turns = 0
        while len(run.records) < 21:
            await asyncio.sleep(0)
            turns += 1
        assert run.journal.transactions == before + 1
        assert turns <= journal_module.GATHER_QUIET + 6
