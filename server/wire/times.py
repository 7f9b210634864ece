"""The protocol's time formats, both ways: ISO 8601, epoch float seconds, "H:MM:SS"."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

__all__ = ["iso", "epoch", "uptime_text", "from_iso", "from_epoch", "uptime_of"]


def iso(at: datetime | None) -> str | None:
    """ISO 8601 text of an aware datetime (docs/PROTOCOL.md's "ISO 8601")."""
    return None if at is None else at.isoformat()


def epoch(at: datetime) -> float:
    """Epoch seconds as a float (docs/PROTOCOL.md's "epoch float")."""
    return at.timestamp()


def uptime_text(uptime: timedelta | None) -> str | None:
    """ "H:MM:SS" (hours unbounded), or None when not running."""
    if uptime is None:
        return None
    seconds = max(0, int(uptime.total_seconds()))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def from_iso(text: str) -> datetime:
    """ISO 8601 -> aware datetime (a naive one is taken as UTC)."""
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def from_epoch(seconds: float) -> datetime:
    """Epoch seconds -> aware UTC datetime."""
    return datetime.fromtimestamp(seconds, UTC)


def uptime_of(text: str | None) -> timedelta | None:
    """ "H:MM:SS" -> timedelta; None for null or anything else."""
    if text is None:
        return None
    try:
        h, m, s = (int(p) for p in text.split(":"))
    except ValueError:
        return None
    return timedelta(hours=h, minutes=m, seconds=s)
