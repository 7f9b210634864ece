"""Text for cells and notices: sizes, percentages, uptime, errors, and state/health readable
with or without colour."""

from __future__ import annotations

from datetime import datetime, timedelta

from rich.text import Text

from server.core.errors import FlowMgrError

__all__ = [
    "state_text",
    "health_text",
    "size",
    "percent",
    "uptime",
    "uptime_exact",
    "clock",
    "describe_error",
]

# Symbols are plain ASCII so TERM=linux consoles and monochrome terminals show them too.
_STATE_STYLE: dict[str, tuple[str, str]] = {
    "running": ("+", "green"),
    "created": (".", "cyan"),
    "paused": ("=", "bold black on yellow"),  # frozen: it must not pass for a live row
    "restarting": ("~", "yellow"),
    "removing": ("~", "yellow"),
    "stopped": ("-", "bright_black"),
    "exited": ("x", "red"),
    "dead": ("!", "bold red"),
    "unknown": ("?", "bold yellow"),  # cluster mode: the flow's node has no agent link
}
_HEALTH_STYLE: dict[str, tuple[str, str]] = {
    "healthy": ("ok", "green"),
    "unhealthy": ("!!", "bold red"),
    "starting": ("..", "yellow"),
    "none": ("", "bright_black"),
}


def state_text(state: str, busy: str | None = None) -> Text:
    """`+ running` in green; `* stopping` while an action on it is in flight."""
    if busy:
        return Text(f"* {busy}", style="bold yellow")
    symbol, style = _STATE_STYLE.get(state, ("?", ""))
    return Text(f"{symbol} {state}", style=style)


def health_text(health: str) -> Text:
    """`!! unhealthy` in red; `-` when the image has no health check."""
    if health == "none":
        return Text("-", style="bright_black")
    symbol, style = _HEALTH_STYLE.get(health, ("?", ""))
    return Text(f"{symbol} {health}", style=style)


def size(n: int | None) -> str:
    """Bytes in binary units with one decimal: `12.3M`."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "K", "M", "G", "T"):
        if value < 1024 or unit == "T":
            return f"{int(value)}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}T"


def percent(p: float | None) -> str:
    """`3.2%`, or `-` with no sample yet."""
    return "-" if p is None else f"{p:.1f}%"


def uptime(started: datetime | None, now: datetime) -> str:
    """Coarse on purpose (minutes): a table of 200 rows must not change every second."""
    if started is None:
        return "-"
    secs = max(0, int((now - started).total_seconds()))
    if secs < 60:
        return "<1m"
    mins, hours, days = secs // 60, secs // 3600, secs // 86400
    if hours == 0:
        return f"{mins}m"
    if days == 0:
        return f"{hours}h{mins % 60:02d}m"
    return f"{days}d{hours % 24:02d}h"


def uptime_exact(delta: timedelta | None) -> str:
    """`H:MM:SS` as in docs/PROTOCOL.md."""
    if delta is None:
        return "-"
    secs = max(0, int(delta.total_seconds()))
    return f"{secs // 3600}:{secs % 3600 // 60:02d}:{secs % 60:02d}"


def clock(at: datetime) -> str:
    """`HH:MM:SS` in UTC, for log-like lists."""
    return at.strftime("%H:%M:%S")


def describe_error(err: BaseException) -> str:
    """`container_not_found: no managed container 'x'` for ours, the class name otherwise."""
    if isinstance(err, FlowMgrError):
        return f"{err.error_type}: {err.message}"
    return f"{type(err).__name__}: {err}"
