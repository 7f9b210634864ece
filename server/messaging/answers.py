"""Answers kept by correlation_id: a redelivered command is answered from here, not run again."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time

__all__ = ["AnswerRecord"]


class AnswerRecord:
    """A small SQLite table in the manager's state dir (it survives a restart of the manager).
    Every call runs in a worker thread: the loop never waits on the disk."""

    def __init__(self, path: str, keep_seconds: float) -> None:
        self._path = path
        self._keep = keep_seconds
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._writes = 0

    def _open(self) -> sqlite3.Connection:
        if self._db is None:
            os.makedirs(os.path.dirname(self._path), mode=0o700, exist_ok=True)
            db = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS answers (correlation_id TEXT PRIMARY KEY, "
                "command TEXT NOT NULL, answer TEXT NOT NULL, at REAL NOT NULL)"
            )
            self._db = db
        return self._db

    def _get(self, correlation_id: str) -> tuple[str, str] | None:
        with self._lock:
            row = (
                self._open()
                .execute(
                    "SELECT command, answer FROM answers WHERE correlation_id = ?",
                    (correlation_id,),
                )
                .fetchone()
            )
        return None if row is None else (str(row[0]), str(row[1]))

    def _put(self, correlation_id: str, command: str, answer: str) -> None:
        now = time.time()
        with self._lock:
            db = self._open()
            db.execute(
                "INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?)",
                (correlation_id, command, answer, now),
            )
            self._writes += 1
            if self._writes % 1000 == 1:  # old answers go now and then, never per command
                db.execute("DELETE FROM answers WHERE at < ?", (now - self._keep,))

    async def get(self, correlation_id: str) -> tuple[str, str] | None:
        """(the command's digest, the answer's text) kept for `correlation_id`, or None."""
        return await asyncio.to_thread(self._get, correlation_id)

    async def put(self, correlation_id: str, command: str, answer: str) -> None:
        """Keep `answer` (its JSON text) for the command of digest `command`, before it is
        published."""
        await asyncio.to_thread(self._put, correlation_id, command, answer)

    def close(self) -> None:
        """Close the database (blocking; at shutdown)."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
