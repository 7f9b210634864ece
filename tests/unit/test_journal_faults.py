"""The journal's database under attack: junk, truncated, another program's, two managers, a
read-only or full filesystem, and the read-only export beside a running manager."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.core.config import JournalSettings, Settings
from server.core.errors import ConfigError
from server.core.journal import journal as journal_mod
from server.core.journal.export import main as export_main
from server.core.journal.export import parse_since
from server.core.journal.journal import Journal
from server.core.journal.store import JournalStore, dumps
from tests.unit.test_journal_store import Run, msg

ROOT = os.geteuid() == 0


def settings_at(path: Path) -> Settings:
    return Settings(socket_dir=str(path.parent), journal=JournalSettings(path=str(path)))


async def filled(path: Path, n: int = 300) -> None:
    """A journal of `n` events (several pages), closed cleanly."""
    store = JournalStore(str(path))
    await store.open()
    rows = [
        (1.7e9 + i, "message_received", "c", dumps({"n": i, "pad": "y" * 200})) for i in range(n)
    ]
    await store.call(lambda c: store.append(c, rows))
    await store.close()


async def refused(path: Path) -> str:
    store = JournalStore(str(path))
    with pytest.raises(ConfigError) as info:
        await store.open()
    assert not store.is_open
    return str(info.value)


async def test_junk_file_is_refused_with_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    path.write_bytes(os.urandom(8192))
    text = await refused(path)
    assert str(path) in text and "not an SQLite database" in text and "move it aside" in text
    # refusing leaves the lock free: the next start (after the fix) is not blocked
    path.unlink()
    store = JournalStore(str(path))
    await store.open()
    await store.close()


async def test_truncated_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    await filled(path)
    size = path.stat().st_size
    os.truncate(path, size // 2)
    text = await refused(path)
    assert "truncated" in text and str(path) in text


async def test_corrupt_pages_and_foreign_databases_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    await filled(path)
    with open(path, "r+b") as f:  # the schema page, after its header
        f.seek(100)
        f.write(os.urandom(3000))
    assert "move it aside" in await refused(path)
    other = tmp_path / "other.sqlite3"
    import sqlite3

    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE accounts(id INTEGER)")
    conn.commit()
    conn.close()
    assert "another program" in await refused(other)
    newer = tmp_path / "newer.sqlite3"
    await filled(newer, 3)
    conn = sqlite3.connect(newer)
    conn.execute("PRAGMA user_version=99")
    conn.close()
    assert "layout is version 99" in await refused(newer)


async def test_second_manager_on_one_database_refuses_naming_the_holder(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import asyncio,sys\n"
            "from server.core.journal.store import JournalStore\n"
            "async def m():\n"
            f"    s = JournalStore({str(path)!r}); await s.open(); print('ok', flush=True)\n"
            "    sys.stdin.read()\n"
            "asyncio.run(m())\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ok"
        text = await refused(path)
        assert f"pid {holder.pid}" in text and "in use by another flowmgr manager" in text
    finally:
        holder.communicate("", timeout=20)
    # in one process too (two managers in a test): the second refuses, then may start
    first = Journal(settings_at(path), Run(settings_at(path)).bus, lambda e: None)
    await first.start()
    try:
        assert f"pid {os.getpid()}" in await refused(path)
    finally:
        await first.stop()
    await refused_not(path)


async def refused_not(path: Path) -> None:
    store = JournalStore(str(path))
    await store.open()
    await store.close()


@pytest.fixture
def fast_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(journal_mod, "RETRY_SECONDS", 0.05)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB filesystem of its own."""
    if not ROOT:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


async def test_full_filesystem_unavailable_then_back_seqs_contiguous(
    tmpfs: Path, fast_retry: None
) -> None:
    filler = tmpfs / "filler"
    filler.write_bytes(b"\0" * 400_000)
    async with Run(settings_at(tmpfs / "j.sqlite3")) as run:
        j = run.journal
        sent = 0
        async with asyncio.timeout(30):
            while "unavailable" not in j.health():
                for _ in range(20):
                    run.bus.publish(msg(n=sent, pad="z" * 2000))
                    sent += 1
                await run.settle(sent)
        assert "full" in j.health(), j.health()
        committed = j.last_seq
        # the live stream goes on without seqs
        run.bus.publish(msg(n=sent))
        sent += 1
        await run.settle(sent)
        assert run.records[-1].seq is None
        filler.unlink()
        await asyncio.sleep(0.1)
        async with asyncio.timeout(10):
            while run.records[-1].seq is None:
                run.bus.publish(msg(n=sent))
                sent += 1
                await run.settle(sent)
                await asyncio.sleep(0.02)
        assert j.health() == "active"
        assert run.records[-1].seq == committed + 1  # no seq lost to the failed batches
        seqs = [r.seq for r in await j.read_after(0, 100_000)]
        assert seqs == list(range(1, committed + 2))
        assert j.unjournalled > 0


async def test_read_only_filesystem_runs_unavailable(tmp_path: Path, fast_retry: None) -> None:
    if not ROOT:
        pytest.skip("a read-only bind mount needs root (root ignores a file's mode bits)")
    rw = tmp_path / "rw"
    rw.mkdir()
    await filled(rw / "j.sqlite3", 5)
    (rw / "j.sqlite3.lock").touch()
    ro = tmp_path / "ro"
    ro.mkdir()
    subprocess.run(["mount", "--bind", str(rw), str(ro)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], check=True)
        async with Run(settings_at(ro / "j.sqlite3")) as run:  # starts: no crash loop
            run.bus.publish(msg(n=1))
            run.bus.publish(msg(n=2))
            await run.settle(2)
            assert [r.seq for r in run.records] == [None, None]
            health = run.journal.health()
            assert health.startswith("unavailable: ") and "read-only filesystem" in health
    finally:
        subprocess.run(["umount", "-l", str(ro)], check=False)


async def test_export_beside_a_running_journal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "j.sqlite3"
    async with Run(settings_at(path)) as run:
        for i in range(5):
            run.bus.publish(msg(n=i))
        await run.settle(5)
        assert export_main(["export", "--path", str(path), "--since", "3"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["seq"], r["data"]["message"]["n"]) for r in lines] == [(4, 3), (5, 4)]
    assert set(lines[0]) == {"seq", "at", "event", "container_id", "data"}
    assert export_main(["export", "--path", str(path), "--since", "1999-01-01"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 5


@pytest.mark.parametrize("bad", ["-1", "yesterday", "1.5", "9" * 30])
def test_export_bad_since_and_missing_file(
    bad: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ConfigError):
        parse_since(bad)
    assert export_main(["export", "--path", str(tmp_path / "none"), "--since", bad]) == 2
    assert export_main(["export", "--path", str(tmp_path / "none")]) == 2
    assert "no journal at" in capsys.readouterr().err


async def test_retries_from_the_pump_and_retention_open_once(tmp_path: Path) -> None:
    """Both retry the opening while the journal is down: the second must not find the first's
    lock and take it for another manager's."""
    j = Journal(settings_at(tmp_path / "j.sqlite3"), Run(settings_at(tmp_path)).bus, lambda e: None)
    j._unavailable("down for the test")
    await asyncio.gather(j._open(), j._open(), j._open())
    try:
        assert j.health() == "active"
    finally:
        await j.stop()


async def test_a_journal_path_a_flow_could_take_is_refused(tmp_path: Path) -> None:
    s = Settings(socket_dir=str(tmp_path))
    bad = Settings(
        socket_dir=str(tmp_path), journal=JournalSettings(path=f"{s.state_dir}/journal.db")
    )
    j = Journal(bad, Run(bad).bus, lambda e: None)
    with pytest.raises(ConfigError, match="start the name with a dot"):
        await j.start()
    assert not os.path.exists(f"{s.state_dir}/journal.db")


async def test_sigkill_mid_stream_loses_nothing_committed_and_seqs_stay_contiguous(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j.sqlite3"
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import asyncio\n"
            "from server.core.journal.store import JournalStore, dumps\n"
            "async def m():\n"
            f"    s = JournalStore({str(path)!r}); await s.open()\n"
            "    while True:\n"
            "        rows = [(1.7e9, 'message_received', 'c', dumps({'pad': 'p' * 200}))] * 50\n"
            "        first = await s.call(lambda c: s.append(c, rows))\n"
            "        print(first + 49, flush=True)\n"
            "asyncio.run(m())\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    assert child.stdout is not None
    acknowledged = 0
    while acknowledged < 2000:
        acknowledged = int(child.stdout.readline())
    child.kill()
    child.wait(timeout=20)
    child.stdout.close()
    async with Run(settings_at(path)) as run:  # the lock died with the process
        held = run.journal.last_seq
        assert held >= acknowledged
        seqs = [r.seq for r in await run.journal.read_after(0, 1_000_000)]
        assert seqs == list(range(1, held + 1))
        run.bus.publish(msg())
        await run.settle(1)
        assert run.records[0].seq == held + 1
