"""JournalStore: the SQLite file, its lock, and the one thread that runs every statement."""

from __future__ import annotations

import asyncio
import fcntl
import functools
import logging
import os
import sqlite3
import struct
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from pydantic_core import to_json

from server.core.errors import ConfigError, InternalError
from server.core.journal.records import StoredRow

__all__ = [
    "JournalStore",
    "JournalUnavailable",
    "APPLICATION_ID",
    "open_readonly",
    "dumps",
    "diagnose",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

APPLICATION_ID = 0x464C4A31
"""`PRAGMA application_id` of a flowmgr journal ("FLJ1"): another program's SQLite file is
refused instead of being written into."""

SCHEMA_VERSION = 1
"""`PRAGMA user_version` of this layout; a journal of another version is refused."""

_SCHEMA = (
    # push names and container ids are stored once in `names` and referred to by number: an
    # index entry of (64-character id, seq) costs a third of the journal's write time
    "CREATE TABLE IF NOT EXISTS names(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)",
    "CREATE TABLE IF NOT EXISTS events(seq INTEGER PRIMARY KEY, at REAL NOT NULL,"
    " event INTEGER NOT NULL, container INTEGER, data TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS events_container ON events(container, seq)",
    "CREATE INDEX IF NOT EXISTS events_event ON events(event, seq)",
    # the highest seq ever assigned, written before retention deletes rows: a seq is never
    # reused even when every row has gone
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
)

_SELECT = "SELECT seq, at, event, container, data FROM events"

_CHUNK = 64
"""Rows per INSERT statement (5 parameters each, far below SQLite's limit of 32,766)."""


@functools.lru_cache(maxsize=_CHUNK)
def _insert_sql(n: int) -> str:
    return "INSERT INTO events(seq, at, event, container, data) VALUES " + ",".join(
        ["(?,?,?,?,?)"] * n
    )


# what the filesystem, not the file, is to blame for: the journal waits and retries
_ENVIRONMENT_ERRORS = frozenset(
    (
        "SQLITE_READONLY",
        "SQLITE_CANTOPEN",
        "SQLITE_FULL",
        "SQLITE_IOERR",
        "SQLITE_BUSY",
        "SQLITE_PERM",
        "SQLITE_LOCKED",
    )
)


class JournalUnavailable(Exception):
    """The journal cannot be written now (read-only or full filesystem, I/O error): the
    manager keeps running without it and retries."""


def diagnose(path: str, err: object) -> str:
    """`err` with what the filesystem says (read-only, full): the /health line names the cause."""
    try:
        st = os.statvfs(os.path.dirname(os.path.abspath(path)))
    except OSError:
        return str(err)
    if st.f_flag & os.ST_RDONLY:
        return f"{err} (read-only filesystem)"
    if st.f_bavail == 0:
        return f"{err} (no space left on the filesystem)"
    return str(err)


def is_environment_error(err: sqlite3.Error) -> bool:
    """A read-only, full or failing disk (retry later), as opposed to a broken file."""
    name = getattr(err, "sqlite_errorname", "") or ""
    return any(name == e or name.startswith(e + "_") for e in _ENVIRONMENT_ERRORS)


PendingRow = tuple[float, str, str | None, str]
"""(at, event, container_id, data JSON text): a row to append, its seq not yet known."""


def _move_aside(path: str) -> str:
    return (
        f"move it aside (mv {path} {path}.broken) and start again to begin a new journal, "
        "or set journal.path to another file"
    )


def _check_header(path: str) -> None:
    """A file cut short (copied half, disk trouble) shows as fewer bytes than its header says;
    SQLite would only notice on the first read of a missing page, mid-stream."""
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        return
    if size == 0:
        return
    with open(path, "rb") as f:
        head = f.read(100)
    if len(head) < 100 or not head.startswith(b"SQLite format 3\x00"):
        raise ConfigError(
            f"the journal {path} is not an SQLite database; {_move_aside(path)}",
            details={"file": path},
        )
    wal = path + "-wal"
    if os.path.exists(wal) and os.path.getsize(wal) > 0:
        return  # the WAL may legitimately hold pages past the file's end
    page_size = struct.unpack(">H", head[16:18])[0]
    page_size = 65536 if page_size == 1 else page_size
    pages = struct.unpack(">I", head[28:32])[0]
    if pages and size < pages * page_size:
        raise ConfigError(
            f"the journal {path} is truncated ({size} bytes, its header says "
            f"{pages * page_size}); {_move_aside(path)}",
            details={"file": path},
        )


class StoreBusy(Exception):
    """`call_inline`: the writer thread holds the connection (or the store is closed)."""


class JournalStore:
    """The journal's SQLite database: WAL, `synchronous=NORMAL`, one writer thread.

    Statements run on the store's own thread (`call`), except a small append while that thread
    is idle (`call_inline`): a WAL append without fsync costs ~40 us here, where the hop to the
    thread and back costs ~120 us of CPU (two wake-ups), which at a few events per request was
    most of the journal's cost. Nothing that can wait on the disk runs inline: checkpoints (the
    only fsyncs) are never automatic and run on the thread (`checkpoint`). One lock guards the
    connection, so it is used by one thread at a time. One manager per database: an exclusive
    `flock` on `<path>.lock`, held while the store is open."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._using = threading.Lock()
        """Held by whichever thread is using the connection."""
        self._lock_fd: int | None = None
        self._names: dict[int, str] = {}
        """Interned push names and container ids, by number (writer thread only)."""
        self._ids: dict[str, int] = {}
        self.high_seq = 0
        """The highest seq ever assigned (committed); only the writer thread changes it."""

    # lifecycle

    async def open(self) -> None:
        """Take the lock, open (or create) the database, check it; ConfigError when it cannot
        be used (in use by another manager, not a database, truncated, unreadable)."""
        if self._executor is not None:
            return
        self._take_lock()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="journal-writer")
        try:
            await self.call_raw(self._open_conn)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Close the connection and the thread, release the lock."""
        if self._executor is not None:
            ex, self._executor = self._executor, None
            try:
                await asyncio.get_running_loop().run_in_executor(ex, self._close_conn)
            finally:
                ex.shutdown(wait=False)
        if self._lock_fd is not None:
            fd, self._lock_fd = self._lock_fd, None
            os.close(fd)  # releases the flock

    def _take_lock(self) -> None:
        lock_path = self.path + ".lock"
        try:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as err:
            try:  # a read-only filesystem: an existing lock file can still be locked
                fd = os.open(lock_path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                raise JournalUnavailable(
                    diagnose(lock_path, f"cannot open the lock file {lock_path}: {err.strerror}")
                ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise ConfigError(
                f"the journal {self.path} is in use by another flowmgr manager (pid {holder}); "
                "one manager per journal: stop that one, or give this one another "
                "journal.path (or docker.instance)",
                details={"file": self.path, "pid": holder},
            ) from None
        self._lock_fd = fd
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # read-only: the lock holds all the same, only the pid is not shown

    def _open_conn(self) -> None:
        _check_header(self.path)
        try:
            # shared by the writer thread and `call_inline`, one at a time (self._using)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as err:
            raise JournalUnavailable(diagnose(self.path, f"cannot open: {err}")) from None
        try:
            self._prepare(conn)
        except sqlite3.DatabaseError as err:
            conn.close()
            if is_environment_error(err):
                raise JournalUnavailable(diagnose(self.path, f"cannot open: {err}")) from None
            raise ConfigError(
                f"the journal {self.path} cannot be read ({err}); {_move_aside(self.path)}",
                details={"file": self.path},
            ) from None
        self._conn = conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if app_id != APPLICATION_ID and tables:
            raise sqlite3.DatabaseError("it is an SQLite database of another program")
        if tables and version != SCHEMA_VERSION:
            raise sqlite3.DatabaseError(f"its layout is version {version}, not {SCHEMA_VERSION}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA journal_size_limit=67108864")  # a WAL grown by a burst shrinks
        # no automatic checkpoint: it would fsync inside an inline append, on the event loop;
        # the journal asks for one on the writer thread every CHECKPOINT_ROWS rows
        conn.execute("PRAGMA wal_autocheckpoint=0")
        if app_id != APPLICATION_ID:
            conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        for stmt in _SCHEMA:
            conn.execute(stmt)
        self._load_names(conn)
        row = conn.execute("SELECT value FROM meta WHERE key='high_seq'").fetchone()
        newest = conn.execute("SELECT max(seq) FROM events").fetchone()[0] or 0
        conn.execute("SELECT min(seq) FROM events").fetchone()  # both ends of the tree read
        self.high_seq = max(int(row[0]) if row else 0, int(newest))

    def _load_names(self, conn: sqlite3.Connection) -> None:
        self._names = dict(conn.execute("SELECT id, name FROM names").fetchall())
        self._ids = {name: i for i, name in self._names.items()}

    def _close_conn(self) -> None:
        with self._using:
            self._close_locked()

    def _close_locked(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                conn.close()
            except sqlite3.Error as err:
                logger.warning("closing the journal %s: %s", self.path, err)

    # running statements

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(conn)` on the writer thread and return its result (its exception).
        `fn` manages its own transaction (`with conn:` or BEGIN ... COMMIT); the connection is
        in autocommit mode otherwise."""

        def run() -> T:
            with self._using:
                if self._conn is None:
                    raise InternalError(f"the journal {self.path} is not open (unavailable)")
                return fn(self._conn)

        return await self.call_raw(run)

    def call_inline(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(conn)` on the calling thread if the writer thread is not using the
        connection; StoreBusy otherwise (then use `call`). Only for short writes that never
        wait on the disk (appends: no fsync in WAL with synchronous=NORMAL, no checkpoint)."""
        if self._executor is None or not self._using.acquire(blocking=False):
            raise StoreBusy
        try:
            if self._conn is None:
                raise StoreBusy
            return fn(self._conn)
        finally:
            self._using.release()

    async def checkpoint(self) -> None:
        """Copy the WAL back into the database (PASSIVE: never waits for readers), on the
        writer thread; the WAL file is then reused from its start."""
        await self.call(lambda conn: conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall())

    async def call_raw(self, fn: Callable[[], T]) -> T:
        if self._executor is None:
            raise InternalError(f"the journal {self.path} is not open (unavailable)")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    @property
    def is_open(self) -> bool:
        return self._conn is not None and self._executor is not None

    # the journal's own statements (each runs on the writer thread through `call`)

    def append(self, conn: sqlite3.Connection, rows: Sequence[PendingRow]) -> int:
        """Write `rows` in one transaction with the next seqs; returns the first seq. On any
        error nothing is written and no seq is used (the next batch gets the same ones)."""
        first = self.high_seq + 1
        ids = self._ids
        added: list[str] = []

        def intern(name: str) -> int:
            got = ids.get(name)
            if got is None:
                cur = conn.execute("INSERT INTO names(name) VALUES (?)", (name,))
                got = ids[name] = int(cur.lastrowid or 0)
                self._names[got] = name
                added.append(name)
            return got

        conn.execute("BEGIN IMMEDIATE")
        try:
            params: list[object] = []
            seq = first
            known = ids.get  # ids start at 1: a miss is the only falsy answer
            for at, ev, cid, data in rows:
                code = known(ev) or intern(ev)
                ref = None if cid is None else known(cid) or intern(cid)
                params += (seq, at, code, ref, data)
                seq += 1
            # many rows per statement: one SQLite step (one release of the GIL) per chunk, where
            # executemany steps row by row (45 % more CPU, and the loop thread takes the GIL
            # at every release)
            step = _CHUNK * 5
            for k in range(0, len(params), step):
                part = params[k : k + step]
                conn.execute(_insert_sql(len(part) // 5), part)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for name in added:  # their rows were rolled back too
                self._names.pop(ids.pop(name), None)
            raise
        self.high_seq = first + len(rows) - 1
        return first

    def _rows(self, raw: list[tuple[int, float, int, int | None, str]]) -> list[StoredRow]:
        names = self._names
        return [
            (seq, at, names.get(ev, "?"), None if c is None else names.get(c), data)
            for seq, at, ev, c, data in raw
        ]

    @staticmethod
    def oldest(conn: sqlite3.Connection) -> int:
        return int(conn.execute("SELECT min(seq) FROM events").fetchone()[0] or 0)

    def read_after(self, conn: sqlite3.Connection, after_seq: int, limit: int) -> list[StoredRow]:
        """One indexed range query: rows with seq > after_seq, ascending."""
        sql = f"{_SELECT} WHERE seq > ? ORDER BY seq LIMIT ?"
        return self._rows(conn.execute(sql, (after_seq, limit)).fetchall())

    def newest(
        self, conn: sqlite3.Connection, event: str, limit: int, upto: int = 2**63 - 1
    ) -> list[StoredRow]:
        """The newest `limit` rows of one push name with seq <= `upto`, oldest first."""
        code = self._ids.get(event)
        if code is None:
            return []
        sql = f"{_SELECT} WHERE event = ? AND seq <= ? ORDER BY seq DESC LIMIT ?"
        rows = self._rows(conn.execute(sql, (code, upto, limit)).fetchall())
        rows.reverse()
        return rows

    def query(
        self,
        conn: sqlite3.Connection,
        after_seq: int,
        container_id: str | None,
        types: Sequence[str] | None,
        limit: int,
    ) -> list[StoredRow]:
        """Rows with seq > after_seq, optionally of one container and of some push names."""
        codes: list[int] | None = None
        if types is not None:  # a name twice must not give its rows twice; unknown: none
            codes = list(dict.fromkeys(self._ids[t] for t in types if t in self._ids))
            if not codes:
                return []
        if container_id is not None:  # index (container, seq): one range, in seq order
            container = self._ids.get(container_id)
            if container is None:
                return []
            where = "container = ? AND seq > ?"
            args: list[object] = [container, after_seq]
            if codes is not None:
                where += f" AND event IN ({','.join('?' * len(codes))})"
                args.extend(codes)
            sql = f"{_SELECT} WHERE {where} ORDER BY seq LIMIT ?"
            return self._rows(conn.execute(sql, [*args, limit]).fetchall())
        if codes is None:
            return self.read_after(conn, after_seq, limit)
        # index (event, seq): one bounded range per name, merged; never a sort of a whole type
        one = f"SELECT * FROM ({_SELECT} WHERE event = ? AND seq > ? ORDER BY seq LIMIT ?)"
        sql = " UNION ALL ".join([one] * len(codes)) + " ORDER BY seq LIMIT ?"
        params: list[object] = []
        for code in codes:
            params.extend((code, after_seq, limit))
        return self._rows(conn.execute(sql, [*params, limit]).fetchall())

    @staticmethod
    def used_bytes(conn: sqlite3.Connection) -> int:
        """Bytes the database's live pages take (freed pages are reused, not counted)."""
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
        return int((pages - free) * size)

    @staticmethod
    def trim(
        conn: sqlite3.Connection, before_at: float | None, max_bytes: int | None, chunk: int
    ) -> int:
        """Delete at most `chunk` of the oldest rows that are older than `before_at` or, while
        the database is over `max_bytes`, the oldest ones; returns how many went. Small
        transactions, so appends interleave."""
        low = conn.execute("SELECT min(seq) FROM events").fetchone()[0]
        if low is None:
            return 0
        bound = low + chunk
        deleted = 0
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "INSERT INTO meta(key, value) VALUES ('high_seq', (SELECT max(seq) FROM events))"
                " ON CONFLICT(key) DO UPDATE SET value=max(value, excluded.value)"
            )
            if before_at is not None:
                deleted = conn.execute(
                    "DELETE FROM events WHERE seq < ? AND at < ?", (bound, before_at)
                ).rowcount
            if not deleted and max_bytes is not None and JournalStore.used_bytes(conn) > max_bytes:
                deleted = conn.execute("DELETE FROM events WHERE seq < ?", (bound,)).rowcount
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return int(deleted)


def open_readonly(path: str) -> tuple[sqlite3.Connection, dict[int, str]]:
    """A read-only connection and the interned names, for `flowmgr journal export` (takes no
    lock: works beside the running manager). ConfigError when the file is missing or not a
    journal."""
    if not os.path.exists(path):
        raise ConfigError(f"no journal at {path}", details={"file": path})
    _check_header(path)
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    except sqlite3.Error as err:
        raise ConfigError(
            f"cannot read the journal {path}: {err}", details={"file": path}
        ) from None
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if app_id != APPLICATION_ID or version != SCHEMA_VERSION:
            raise ConfigError(f"{path} is not a flowmgr journal (of this version)")
        names = dict(conn.execute("SELECT id, name FROM names").fetchall())
    except (sqlite3.Error, ConfigError) as err:
        conn.close()
        raise ConfigError(
            f"cannot read the journal {path}: {err}", details={"file": path}
        ) from None
    return conn, names


def dumps(payload: object) -> str:
    """The JSON text stored for a payload (compact, UTF-8, as it goes on the wire). pydantic's
    Rust encoder: a quarter of `json.dumps`'s time, and this runs for every journalled push."""
    return to_json(payload).decode()
