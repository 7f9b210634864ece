"""`flowmgr journal export [--since SEQ|ISO-time] [--config F] [--path DB]`: the journal as JSON
lines on stdout, for backups. Read-only, takes no lock: works beside the running manager."""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TextIO

from server.core.errors import ConfigError
from server.core.journal.records import StoredRow
from server.core.journal.store import open_readonly

__all__ = ["main", "export", "parse_since"]

PAGE = 5000
"""Rows read per query (one indexed range each, so memory stays flat on any size)."""


def parse_since(raw: str) -> tuple[str, int | float]:
    """("seq", N) for a non-negative integer, ("at", epoch) for an ISO 8601 time (UTC when it
    names no zone); ConfigError otherwise."""
    if raw.isdigit():
        seq = int(raw)
        if seq > 2**63 - 1:
            raise ConfigError(f"--since {raw}: larger than any seq")
        return "seq", seq
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise ConfigError(
            f"--since {raw!r} is neither a seq (a non-negative integer) nor an ISO 8601 time "
            "(e.g. 2026-12-03T08:00:00+00:00)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return "at", when.timestamp()


def _rows(
    conn: sqlite3.Connection, names: dict[int, str], after_seq: int, since_at: float | None
) -> Iterator[StoredRow]:
    if since_at is not None:
        # the first seq at or after that time; `at` follows seq (both grow as events are written)
        row = conn.execute(
            "SELECT min(seq) FROM events WHERE seq > ? AND at >= ?", (after_seq, since_at)
        ).fetchone()
        if row[0] is None:
            return
        after_seq = row[0] - 1
    while True:
        page = conn.execute(
            "SELECT seq, at, event, container, data FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
            (after_seq, PAGE),
        ).fetchall()
        for seq, at, event, container, data in page:
            cid = None if container is None else names.get(container)
            yield seq, at, names.get(event, "?"), cid, data
        if len(page) < PAGE:
            return
        after_seq = page[-1][0]


def export(path: str, since: tuple[str, int | float] | None, out: TextIO) -> int:
    """Write every event after `since` as one JSON object per line; returns how many."""
    conn, names = open_readonly(path)
    try:
        after = int(since[1]) if since and since[0] == "seq" else 0
        since_at = float(since[1]) if since and since[0] == "at" else None
        n = 0
        dumps = json.dumps
        for seq, at, event, cid, data in _rows(conn, names, after, since_at):
            when = datetime.fromtimestamp(at, UTC).isoformat()
            # `data` is stored as the JSON text that was pushed: written as is, not re-encoded
            out.write(
                f'{{"seq":{seq},"at":{dumps(when)},"event":{dumps(event)},'
                f'"container_id":{dumps(cid)},"data":{data}}}\n'
            )
            n += 1
        return n
    finally:
        conn.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flowmgr journal", description="Read the manager's journal of pushed events"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    exp = sub.add_parser("export", help="write events as JSON lines to stdout (read-only)")
    exp.add_argument("--since", help="only events after this seq, or from this ISO 8601 time")
    exp.add_argument("--config", help="config.json (default: CONFIG_FILE or ./config.json)")
    exp.add_argument("--path", help="the journal file (default: journal.path of the config)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: `flowmgr journal ...` and `python -m server.core.journal.export ...`."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        since = parse_since(args.since) if args.since is not None else None
        if args.path:
            path = args.path
        else:
            from server.core.config import load_settings

            path = load_settings(args.config).journal_path
        export(path, since, sys.stdout)
        sys.stdout.flush()
    except ConfigError as err:
        sys.stderr.write(f"flowmgr journal: {err}\n")
        return 2
    except BrokenPipeError:  # `| head`: the reader has what it wanted
        return 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
