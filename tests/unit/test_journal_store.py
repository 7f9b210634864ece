"""The journal without Docker: seqs, group commit, the tap, status thinning, retention, reads."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from server.core.bus import EventBus
from server.core.config import JournalSettings, Settings
from server.core.errors import InvalidRequest
from server.core.events import ActivityLogged, Event, FlowMessageReceived
from server.core.journal.journal import Journal
from server.core.journal.records import JournalRecord


def encode(event: Event) -> tuple[str, dict[str, Any], str | None] | None:
    """A stand-in for the wire's encoder: a flow message names its own push."""
    if isinstance(event, FlowMessageReceived):
        name = str(event.message.get("push", "message_received"))
        return (
            name,
            {"container_id": event.container_id, "message": event.message},
            (event.container_id),
        )
    if isinstance(event, ActivityLogged):
        return (
            "activity_log",
            {"activity_type": event.activity_type, "message": event.message},
            (event.container_id),
        )
    return None


def msg(cid: str = "c1", **fields: Any) -> FlowMessageReceived:
    return FlowMessageReceived(container_id=cid, message=dict(fields))


def settings(tmp: Path, **journal: Any) -> Settings:
    return Settings(
        socket_dir=str(tmp),
        journal=JournalSettings(path=str(tmp / "j.sqlite3"), **journal),
    )


class Run:
    """A started journal on a bus, with one listener collecting every batch."""

    def __init__(self, s: Settings) -> None:
        self.bus = EventBus()
        self.journal = Journal(s, self.bus, encode)
        self.batches: list[list[JournalRecord]] = []

    async def __aenter__(self) -> Run:
        await self.journal.start()
        self.journal.listen(self._got)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.journal.stop()

    async def _got(self, batch: list[JournalRecord]) -> None:
        self.batches.append(batch)

    @property
    def records(self) -> list[JournalRecord]:
        return [r for b in self.batches for r in b]

    async def settle(self, count: int) -> None:
        async with asyncio.timeout(10):
            while len(self.records) < count:
                await asyncio.sleep(0.005)


async def test_seqs_contiguous_across_restart_and_never_reused_after_retention(
    tmp_path: Path,
) -> None:
    s = settings(tmp_path)
    async with Run(s) as run:
        for i in range(10):
            run.bus.publish(msg(n=i))
        await run.settle(10)
        assert [r.seq for r in run.records] == list(range(1, 11))
        assert run.records[3].data == {"container_id": "c1", "message": {"n": 3}}
        assert run.journal.last_seq == 10 and run.journal.oldest_seq == 1
        # every row is old: retention empties the table
        assert await run.journal.trim(now=4e9) == 10
        assert run.journal.oldest_seq == 0
    async with Run(s) as run:
        assert run.journal.last_seq == 10
        run.bus.publish(msg(n=10))
        await run.settle(1)
        assert run.records[0].seq == 11  # not 1: the highest seq is kept apart from the rows
        assert [r.seq for r in await run.journal.read_after(0, 100)] == [11]


async def test_group_commit_and_the_tap_never_drops(tmp_path: Path) -> None:
    async with Run(settings(tmp_path)) as run:

        async def slow(batch: list[JournalRecord]) -> None:
            await asyncio.sleep(0.01)  # a listener slower than the publisher

        run.journal.listen(slow)
        n = 5000
        for i in range(n):
            run.bus.publish(msg(n=i))
            if i % 1000 == 999:
                await asyncio.sleep(0)  # let the pump run between bursts
        await run.settle(n)
        seqs = [r.seq for r in run.records]
        assert seqs == list(range(1, n + 1))
        assert [r.data["message"]["n"] for r in run.records] == list(range(n))
        assert run.journal.transactions <= 20, run.journal.transactions
        assert run.bus.stats()["dropped"] == 0


async def test_status_samples_journalled_once_per_interval(tmp_path: Path) -> None:
    async with Run(settings(tmp_path, status_interval=3600)) as run:
        for cid in ("a", "a", "b", "a", "b"):
            run.bus.publish(msg(cid, push="container_status_update"))
        run.bus.publish(msg("a", push="container_log"))
        run.bus.publish(msg("a"))
        await run.settle(7)
        got = [(r.event, r.container_id, r.seq) for r in run.records]
        assert got == [
            ("container_status_update", "a", 1),
            ("container_status_update", "a", None),
            ("container_status_update", "b", 2),
            ("container_status_update", "a", None),
            ("container_status_update", "b", None),
            ("container_log", "a", None),
            ("message_received", "a", 3),
        ]


async def test_history_filters_and_pages(tmp_path: Path) -> None:
    async with Run(settings(tmp_path)) as run:
        for i in range(6):
            run.bus.publish(msg("a" if i % 2 else "b", n=i))
            run.bus.publish(
                ActivityLogged(
                    activity_type="message_received", container_id="a", message=f"line {i}"
                )
            )
        await run.settle(12)
        j = run.journal
        page = await j.history(None, "a", None, 100)
        assert [r.container_id for r in page.events] == ["a"] * 9
        assert page.last_seq == 12 and page.oldest_seq == 1
        page = await j.history(4, None, ["activity_log"], 2)
        assert [r.seq for r in page.events] == [6, 8]
        twice = await j.history(4, None, ["activity_log", "nope", "activity_log"], 2)
        assert [r.seq for r in twice.events] == [6, 8]
        both = await j.history(0, "a", ["activity_log", "message_received"], 3)
        assert [r.seq for r in both.events] == [2, 3, 4]
        assert (await j.history(0, None, [], 10)).events == []
        assert (await j.history(12, None, None, 10)).events == []
        assert [r.seq for r in await j.read_after(10, 5)] == [11, 12]


async def test_history_holds_every_event_published_before_the_call(tmp_path: Path) -> None:
    """Read your writes: no waiting for the pump between publishing and asking."""
    async with Run(settings(tmp_path)) as run:
        for burst in range(3):
            for i in range(500):
                run.bus.publish(msg("a", n=i))
            page = await run.journal.history(burst * 500, "a", None, 1000)
            assert len(page.events) == 500 and page.last_seq == (burst + 1) * 500


async def test_retention_by_size_in_chunks(tmp_path: Path) -> None:
    s = settings(tmp_path, max_bytes=1024 * 1024)
    async with Run(s) as run:
        for i in range(1500):
            run.bus.publish(msg(n=i, pad="x" * 1000))
        await run.settle(1500)
        j = run.journal
        deleted = await j.trim(chunk=100)
        assert deleted > 0
        used = await j.store.call(j.store.used_bytes)
        assert used <= 1024 * 1024
        assert j.oldest_seq == deleted + 1 and j.last_seq == 1500
        # a resume older than retention can see where the journal now starts
        assert (await j.read_after(0, 1))[0].seq == j.oldest_seq


async def test_retention_by_age_keeps_the_young(tmp_path: Path) -> None:
    async with Run(settings(tmp_path, max_age_days=1)) as run:
        old = msg(n=0)
        run.bus.publish(
            FlowMessageReceived(at=old.at.replace(year=2000), container_id="c1", message={"n": 0})
        )
        run.bus.publish(msg(n=1))
        await run.settle(2)
        assert await run.journal.trim() == 1
        assert [r.seq for r in await run.journal.read_after(0, 10)] == [2]


async def test_disabled_assigns_seqs_in_memory_and_writes_nothing(tmp_path: Path) -> None:
    async with Run(settings(tmp_path, enabled=False)) as run:
        run.bus.publish(msg(n=1))
        run.bus.publish(msg(n=2))
        await run.settle(2)
        assert [r.seq for r in run.records] == [1, 2]
        assert run.journal.last_seq == 2 and run.journal.health() == "disabled"
        with pytest.raises(InvalidRequest, match="journal is off"):
            await run.journal.read_after(0, 10)
    assert not os.path.exists(tmp_path / "j.sqlite3")


async def test_a_failing_encoder_never_breaks_the_publisher(tmp_path: Path) -> None:
    bus = EventBus()

    def broken(event: Event) -> tuple[str, dict[str, Any], str | None] | None:
        raise ValueError("bug")

    journal = Journal(settings(tmp_path), bus, broken)
    await journal.start()
    try:
        async with bus.subscribe() as sub:
            bus.publish(msg())
            assert sub.get_nowait() is not None
    finally:
        await journal.stop()


async def test_stop_writes_what_is_pending_and_data_is_stored_as_json_text(
    tmp_path: Path,
) -> None:
    s = settings(tmp_path)
    async with Run(s) as run:
        for i in range(3):
            run.bus.publish(msg(n=i, text="é"))
    with sqlite3.connect(s.journal_path) as conn:
        rows = conn.execute("SELECT seq, data FROM events ORDER BY seq").fetchall()
    conn.close()
    assert rows[-1] == (3, '{"container_id":"c1","message":{"n":2,"text":"é"}}')


def test_journal_config_keys_and_env(tmp_path: Path) -> None:
    from server.core.config import load_settings
    from server.core.errors import ConfigError

    base = load_settings(env={}, socket_dir=str(tmp_path))
    assert base.journal_path == os.path.join(base.state_dir, ".journal.sqlite3")
    # no flow can be named like the journal's files: its directory would replace them
    from server.core.state_dir import _NAME

    for suffix in ("", "-wal", "-shm", ".lock"):
        assert not _NAME.fullmatch(os.path.basename(base.journal_path + suffix))
    assert base.journal.enabled and base.journal.max_bytes == 2**30
    off = load_settings(env={"JOURNAL_ENABLED": "off", "JOURNAL_PATH": "/x/j.db"})
    assert not off.journal.enabled and off.journal_path == "/x/j.db"
    for bad_env in ({"JOURNAL_ENABLED": "maybe"},):
        with pytest.raises(ConfigError, match="JOURNAL_ENABLED"):
            load_settings(env=bad_env)
    bad: tuple[tuple[str, Any], ...] = (
        ("journal__enabled", "yes"),
        ("journal__max_bytes", 10),
        ("journal__max_age_days", 0),
        ("journal__status_interval", -1.0),
        ("journal__queue_max_per_flow", 0),
        ("journal__unknown", 1),
    )
    for key, value in bad:
        with pytest.raises(ConfigError, match="journal"):
            load_settings(env={}, **{key: value})


async def test_a_payload_json_cannot_hold_is_journalled_as_a_note(tmp_path: Path) -> None:
    bus = EventBus()

    def odd(event: Event) -> tuple[str, dict[str, Any], str | None] | None:
        return "message_received", {"raw": b"\xff", "n": 1}, "c1"

    journal = Journal(settings(tmp_path), bus, odd)
    got: list[JournalRecord] = []

    async def keep(batch: list[JournalRecord]) -> None:
        got.extend(batch)

    await journal.start()
    journal.listen(keep)
    try:
        bus.publish(msg())
        bus.publish(msg())
        async with asyncio.timeout(10):
            while len(got) < 2:
                await asyncio.sleep(0.005)
        assert [r.seq for r in got] == [1, 2]  # pushed as is, journalled as a note
        stored = await journal.read_after(0, 10)
        assert "unencodable" in stored[0].data and stored[1].seq == 2
    finally:
        await journal.stop()


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"a": 1},
        {"message": {"seq": "not the push's", "t": 'quote " brace } \\ é 🚀'}, "n": [1, {}]},
        {"seq": 3},  # a flow's own "seq" stays inside its message
    ],
)
async def test_the_pushed_text_is_the_payload_with_its_seq(
    tmp_path: Path, payload: dict[str, Any]
) -> None:
    """Front ends send `pushed_text()` as it is: it must be the JSON of what `emit` sent."""
    import json

    async with Run(settings(tmp_path)) as run:
        run.bus.publish(msg("a", **payload))
        await run.settle(1)
        rec = run.records[0]
        assert rec.seq == 1 and rec.text is not None
        assert json.loads(rec.text) == rec.data
        assert json.loads(rec.pushed_text() or "") == {**rec.data, "seq": 1}
