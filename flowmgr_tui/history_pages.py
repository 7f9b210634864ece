"""Journal records for the panel: decoded with the wire models, summed up in one line each, and
paged newest first over the journal's forward reads (`seq > since_seq`, ascending)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from flowmgr_tui.history_query import HistoryFilter
from server.core.events import ActivityLogged, ContainerCrashed
from server.core.journal.records import HistoryPage, JournalRecord
from server.wire.base import MalformedPayload
from server.wire.pushes import (
    PUSHES,
    ActivityLogOut,
    ContainerCrashedOut,
    EngineStatusOut,
    HealthWarningOut,
    MessageDeliveredOut,
    MessageReceivedOut,
    Push,
    StatusChangedOut,
    StatusUpdateOut,
)
from server.wire.times import from_epoch, from_iso

__all__ = [
    "READ_LIMIT",
    "ACTIVITY_TYPES",
    "HistoryReader",
    "HistoryRow",
    "HistoryPager",
    "decode",
    "to_activity",
]

READ_LIMIT = 1000
"""The most records one `get_history` asks for (the protocol's maximum)."""
ACTIVITY_TYPES = (ActivityLogOut.event, ContainerCrashedOut.event)
"""What a detail view's Activity tab lists."""
FIRST_WINDOW = 4
"""The first window scanned back from the newest seq, in pages; each further one is 4x wider,
so a flow with few events among many takes a few reads, not one per page of others'."""


class HistoryReader(Protocol):
    """What the pager reads through: `Backend.get_history`."""

    async def get_history(
        self,
        since_seq: int | None = None,
        container_id: str | None = None,
        types: list[str] | None = None,
        limit: int = 100,
    ) -> HistoryPage: ...


@dataclass(frozen=True, slots=True)
class HistoryRow:
    """One journalled event as the panel shows it."""

    seq: int
    event: str
    container_id: str | None
    at: datetime | None
    """From its payload's timestamp; None for a status sample (it carries none)."""
    summary: str
    push: Push | None
    """Decoded with its wire model; None when this panel does not know the event or the payload
    does not have its shape (then `summary` says so and shows the raw payload)."""
    data: dict[str, Any]
    """The payload as journalled (the screen shows it whole for the selected row)."""


def _time(data: dict[str, Any]) -> datetime | None:
    stamp = data.get("timestamp")
    try:
        if isinstance(stamp, int | float) and not isinstance(stamp, bool):
            return from_epoch(float(stamp))
        if isinstance(stamp, str):
            return from_iso(stamp)
    except (ValueError, OverflowError, OSError):
        pass
    return None


def _compact(value: Any, width: int = 120) -> str:
    text = json.dumps(value, separators=(",", ":"), default=str, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 3] + "..."


def _summary(push: Push) -> str:
    """What happened, without the flow and the time (their own columns)."""
    match push:
        case ActivityLogOut():
            return f"{push.activity_type}: {push.message}"
        case ContainerCrashedOut():
            last = push.crash_details.logs.splitlines()[-1:] or [""]
            tail = f" | {last[0]}" if last[0] else ""
            return f"exit {push.exit_code}: {push.crash_details.error}{tail}"
        case StatusChangedOut():
            return f"{push.old_state} -> {push.new_state}"
        case HealthWarningOut():
            return f"health {push.health}"
        case MessageReceivedOut():
            return _compact(push.message)
        case MessageDeliveredOut():
            return f"queued message {push.message_id} delivered (acknowledged by the flow)"
        case EngineStatusOut():
            return "engine available" if push.available else f"engine lost: {push.reason}"
        case StatusUpdateOut():
            st = push.status
            use = st.resource_usage
            cpu = f", cpu {use.cpu_percent:.1f}%" if use is not None else ""
            sock = "on" if st.socket_connected else "off"
            return f"{st.state}, health {st.health}, sock {sock}{cpu}"
    rest = push.model_dump(exclude={"container_id", "timestamp"})
    return _compact(rest)


def decode(record: JournalRecord) -> HistoryRow:
    """A record as a row; a record this panel cannot decode is shown raw, never raised."""
    data = record.data if isinstance(record.data, dict) else {}
    model = PUSHES.get(record.event)
    push: Push | None = None
    if model is not None:
        try:
            push = model.decode(data)
        except MalformedPayload as err:
            summary = f"[malformed: {err.message}] {_compact(data)}"
        else:
            summary = _summary(push)
    else:
        summary = _compact({k: v for k, v in data.items() if k not in ("container_id",)})
    return HistoryRow(
        seq=record.seq or 0,
        event=record.event,
        container_id=record.container_id,
        at=_time(data),
        summary=summary,
        push=push,
        data=data,
    )


def to_activity(row: HistoryRow, names: dict[str, str]) -> ActivityLogged | ContainerCrashed | None:
    """The core event an activity or crash row was pushed from (for the Activity list)."""
    push = row.push
    if isinstance(push, ActivityLogOut):
        return push.to_core()
    if isinstance(push, ContainerCrashedOut):
        return push.to_core(name=names.get(push.container_id, push.container_id[:12]))
    return None


class HistoryPager:
    """Pages of the records a filter keeps, newest page first, each page oldest first.

    The journal reads forward from a seq; to page backwards the pager scans windows of seqs
    below what it has handed out, widening them while they hold too few matches. The journal
    filters by flow and type (indexed); the time range is applied here, on payload times.
    """

    def __init__(self, reader: HistoryReader, flt: HistoryFilter, page_size: int = 100) -> None:
        self._reader = reader
        self.filter = flt
        self.page_size = page_size
        self._top: int | None = None
        """Everything below this seq is still to scan (None: not started)."""
        self._floor = 0
        """The seq below the oldest held."""
        self._spare: list[HistoryRow] = []
        """Matches already read, older than the pages handed out."""
        self._window = FIRST_WINDOW * page_size
        self._past_range = False
        self.reads = 0
        """`get_history` calls made (tests and the status line read it)."""
        self.last_seq = 0

    @property
    def done(self) -> bool:
        """Nothing older is left to hand out."""
        return self._top is not None and not self._spare and self._scanned_all

    @property
    def _scanned_all(self) -> bool:
        return self._top is not None and (self._top - 1 <= self._floor or self._past_range)

    async def _read(self, since_seq: int | None, limit: int, *, filtered: bool) -> HistoryPage:
        self.reads += 1
        flt = self.filter
        return await self._reader.get_history(
            since_seq=since_seq,
            container_id=flt.container_id if filtered else None,
            types=list(flt.types) if filtered and flt.types else None,
            limit=limit,
        )

    async def older(self) -> list[HistoryRow]:
        """The next page back (the newest one first); empty once `done`."""
        if self._top is None:
            await self._start()
        rows, self._spare = self._spare, []
        while len(rows) < self.page_size and not self._scanned_all:
            assert self._top is not None
            lo = max(self._floor, self._top - 1 - self._window)
            rows = [*(await self._scan(lo, self._top)), *rows]
            self._top = lo + 1
            self._window *= 4
        if len(rows) > self.page_size:
            self._spare, rows = rows[: -self.page_size], rows[-self.page_size :]
        return rows

    async def _start(self) -> None:
        head = await self._read(None, 1, filtered=False)
        self.last_seq = head.last_seq
        self._floor = max(0, head.oldest_seq - 1)
        self._top = head.last_seq + 1
        if self.filter.until is not None and head.last_seq:
            self._top = await self._seq_after(self.filter.until, head.last_seq) + 1

    async def _seq_after(self, until: datetime, last: int) -> int:
        """The newest seq whose time is not after `until`, by bisection on the journal (seqs
        grow with time); records without a time take the next timed one's."""
        lo, hi = self._floor, last  # invariant: seq lo is not after `until` (or the floor)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            probe = await self._read(mid - 1, 20, filtered=False)
            at = next((r.at for r in map(decode, probe.events) if r.at is not None), None)
            if at is None or at <= until:
                lo = mid
            else:
                hi = mid - 1
        return lo

    async def _scan(self, lo: int, top: int) -> list[HistoryRow]:
        """Matches with lo < seq < top, ascending, each read at most READ_LIMIT at a time."""
        out: list[HistoryRow] = []
        flt, cursor = self.filter, lo
        while cursor < top - 1:
            page = await self._read(cursor, min(READ_LIMIT, top - 1 - cursor), filtered=True)
            records: Sequence[JournalRecord] = page.events
            for record in records:
                if record.seq is None or record.seq >= top:
                    return out
                row = decode(record)
                if flt.since is not None and row.at is not None and row.at < flt.since:
                    self._past_range = True  # older windows are all before the range
                if flt.keeps_time(row.at):
                    out.append(row)
            if len(records) < min(READ_LIMIT, top - 1 - cursor):
                break  # the journal holds no further match
            cursor = records[-1].seq or top
        return out
