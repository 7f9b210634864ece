"""The manager's memory of activity and crashes, refilled from the journal at start, so the
activity log and crash reports outlive a restart. Reads the pushed payloads back into core
events (docs/PROTOCOL.md `activity_log`, `container_crashed`); a payload that does not fit
is skipped, never fatal."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from server.core.events import ActivityLogged, ContainerCrashed
from server.core.journal.records import JournalRecord

__all__ = ["activity_from", "crashes_from"]


def _when(at: float) -> datetime:
    return datetime.fromtimestamp(at, UTC)


def activity_from(rows: list[tuple[float, JournalRecord]]) -> list[ActivityLogged]:
    """`activity_log` records -> events, oldest first."""
    out: list[ActivityLogged] = []
    for at, rec in rows:
        d = rec.data
        kind, message, cid = d.get("activity_type"), d.get("message"), d.get("container_id")
        details = d.get("details")
        if not isinstance(kind, str) or not isinstance(message, str):
            continue
        out.append(
            ActivityLogged(
                at=_when(at),
                activity_type=kind,
                container_id=cid if isinstance(cid, str) else None,
                message=message,
                details=details if isinstance(details, dict) else {},
            )
        )
    return out


def crashes_from(
    rows: list[tuple[float, JournalRecord]], activity: list[ActivityLogged]
) -> list[ContainerCrashed]:
    """`container_crashed` records -> events, oldest first; the push does not carry the name,
    the activity lines' details do (else the short id stands in)."""
    names: dict[str, str] = {}
    for ev in activity:
        name = ev.details.get("name")
        if ev.container_id and isinstance(name, str):
            names[ev.container_id] = name
    out: list[ContainerCrashed] = []
    for at, rec in rows:
        d = rec.data
        cid, code, info = d.get("container_id"), d.get("exit_code"), d.get("crash_details")
        if not isinstance(cid, str) or not isinstance(code, int) or not isinstance(info, dict):
            continue
        logs: Any = info.get("logs")
        error: Any = info.get("error")
        out.append(
            ContainerCrashed(
                at=_when(at),
                container_id=cid,
                name=names.get(cid, cid[:12]),
                exit_code=code,
                error=error if isinstance(error, str) else "",
                logs=logs.split("\n") if isinstance(logs, str) and logs else [],
            )
        )
    return out
