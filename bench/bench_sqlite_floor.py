"""What SQLite itself costs the journal on this machine, outside the manager (issue 14).

Measures, with the journal's pragmas (WAL, synchronous=NORMAL, no autocheckpoint), the CPU of
this thread (`time.thread_time`) per event for:

- `rows`: today's layout, one row per event in `events` with its two indexes, batches of
  `--batch` events per transaction, many rows per INSERT (as `JournalStore.append` does);
- `batches`: a layout with one row per batch (the events' JSON texts joined by newlines, their
  times and name codes packed) and one key row per distinct container and push name, the way a
  Kafka log stores record batches: what such a redesign could save;
- one-event transactions in both layouts, and with `locking_mode=EXCLUSIVE` (no file locks per
  transaction, but then no other process may read the file: `flowmgr journal export` could not
  run beside the manager).

    .venv/bin/python bench/bench_sqlite_floor.py --batch 44 --rounds 3000
"""

from __future__ import annotations

import argparse
import array
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from pydantic_core import to_json

PAYLOAD = {
    "container_id": "a" * 64,
    "message": {"command": "echo", "n": 12345, "text": "x" * 120},
    "timestamp": "2026-12-03T10:00:00.123456+00:00",
}
ROWS = (
    "CREATE TABLE events(seq INTEGER PRIMARY KEY, at REAL NOT NULL, event INTEGER NOT NULL,"
    " container INTEGER, data TEXT NOT NULL)",
    "CREATE INDEX events_container ON events(container, seq)",
    "CREATE INDEX events_event ON events(event, seq)",
)
BATCHES = (
    "CREATE TABLE batches(first_seq INTEGER PRIMARY KEY, last_seq INTEGER NOT NULL,"
    " at REAL NOT NULL, meta BLOB NOT NULL, data TEXT NOT NULL)",
    "CREATE TABLE batch_keys(key INTEGER NOT NULL, first_seq INTEGER NOT NULL,"
    " PRIMARY KEY(key, first_seq)) WITHOUT ROWID",
)


def connect(path: Path, schema: tuple[str, ...]) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    for statement in schema:
        conn.execute(statement)
    return conn


def per_event(events: int, work: Callable[[], None]) -> float:
    """Microseconds of this thread's CPU per event."""
    start = time.thread_time()
    work()
    return (time.thread_time() - start) / events * 1e6


def rows_layout(conn: sqlite3.Connection, text: str, batch: int, rounds: int, seq: int) -> None:
    sql = "INSERT INTO events VALUES " + ",".join(["(?,?,?,?,?)"] * batch)
    for _ in range(rounds):
        params: list[object] = []
        for i in range(batch):
            params += (seq, time.time(), 1 + i % 3, 7, text)
            seq += 1
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(sql, params)
        conn.execute("COMMIT")


def batches_layout(conn: sqlite3.Connection, text: str, batch: int, rounds: int, seq: int) -> None:
    for _ in range(rounds):
        ats, codes, texts = array.array("d"), array.array("q"), []
        for i in range(batch):
            ats.append(time.time())
            codes.append(1 + i % 3)
            codes.append(7)
            texts.append(text)
        keys = set(codes)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "INSERT INTO batches VALUES (?,?,?,?,?)",
            (seq, seq + batch - 1, ats[0], ats.tobytes() + codes.tobytes(), "\n".join(texts)),
        )
        conn.executemany("INSERT INTO batch_keys VALUES (?,?)", [(k, seq) for k in keys])
        conn.execute("COMMIT")
        seq += batch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=44, help="events per transaction (bench_flow's)")
    ap.add_argument("--rounds", type=int, default=3000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    text = to_json(PAYLOAD).decode()
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        rows = connect(Path(tmp) / "rows.db", ROWS)
        batches = connect(Path(tmp) / "batches.db", BATCHES)
        n = args.batch * args.rounds
        singles = 5000
        for run in range(args.runs):
            base = 1 + run * (n + singles)
            measured = {
                f"rows, {args.batch} per transaction": (
                    n,
                    partial(rows_layout, rows, text, args.batch, args.rounds, base),
                ),
                f"batches, {args.batch} per transaction": (
                    n,
                    partial(batches_layout, batches, text, args.batch, args.rounds, base),
                ),
                "rows, one event per transaction": (
                    singles,
                    partial(rows_layout, rows, text, 1, singles, base + n),
                ),
                "batches, one event per transaction": (
                    singles,
                    partial(batches_layout, batches, text, 1, singles, base + n),
                ),
            }
            for what, (events, work) in measured.items():
                results.setdefault(what, []).append(per_event(events, work))
        batches.execute("PRAGMA locking_mode=EXCLUSIVE")
        top = 10 * args.runs * (n + singles)
        results["batches, one event per transaction, exclusive locking"] = [
            per_event(singles, partial(batches_layout, batches, text, 1, singles, top))
        ]
    for what, values in results.items():
        shown = ", ".join(f"{v:.1f}" for v in values)
        sys.stdout.write(
            f"{what}: median {statistics.median(values):.2f} us CPU per event ({shown})\n"
        )


if __name__ == "__main__":
    main()
