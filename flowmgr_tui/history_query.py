"""The history screen's filters, parsed from what the user typed: a flow, event types, a time
range. Bad input raises FilterError with a sentence the screen shows; nothing here crashes."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from difflib import get_close_matches

from server.wire.journal_encoding import JOURNALLED_PUSHES

__all__ = ["JOURNALLED", "FilterError", "HistoryFilter", "parse_filter", "parse_time"]

JOURNALLED: tuple[str, ...] = tuple(sorted(JOURNALLED_PUSHES))
"""The push names the journal keeps (docs/PROTOCOL.md); the server judges them again."""

TIME_HELP = "HH:MM[:SS] today, YYYY-MM-DD[ HH:MM[:SS]] (UTC), or an age: 30s, 15m, 2h, 3d"
_AGE = re.compile(r"^(\d{1,6})\s*([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_FULL_ID = re.compile(r"^[0-9a-f]{64}$")


def _shown(text: str) -> str:
    """What the user typed, quoted and short enough for one status line."""
    return repr(text if len(text) <= 40 else text[:37] + "...")


class FilterError(ValueError):
    """One filter cannot be understood: `field` names it, the message says what to type."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True, slots=True)
class HistoryFilter:
    """What the history screen asks the journal for (None: no constraint)."""

    container_id: str | None = None
    types: tuple[str, ...] | None = None
    since: datetime | None = None
    until: datetime | None = None

    def keeps_time(self, at: datetime | None) -> bool:
        """Whether a record of time `at` is in the range (an unknown time is kept only when no
        range is set: a status sample carries no timestamp)."""
        if self.since is None and self.until is None:
            return True
        if at is None:
            return False
        return (self.since is None or at >= self.since) and (self.until is None or at <= self.until)


def parse_time(text: str, now: datetime) -> datetime:
    """`12:30`, `2026-01-01 12:30:05`, `2026-01-01`, ISO 8601, or an age (`15m`: 15 minutes
    before `now`); times without a zone are UTC, as the panel shows them. ValueError else."""
    text = text.strip()
    if m := _AGE.match(text.lower()):
        try:
            return now - timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
        except OverflowError:
            raise ValueError(f"{_shown(text)} is too long ago") from None
    try:
        if re.fullmatch(r"\d{1,2}:\d{2}(:\d{2})?", text):
            return datetime.combine(now.astimezone(UTC).date(), time.fromisoformat(text), UTC)
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            return datetime.combine(date.fromisoformat(text), time(), UTC)
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{_shown(text)} is not a time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _flow(text: str, names: Mapping[str, str]) -> str | None:
    """A name or an id (prefix) of a known container, or the full id of a gone one."""
    text = text.strip()
    if not text:
        return None
    by_name = [cid for cid, name in names.items() if name == text]
    by_id = [cid for cid in names if cid.startswith(text.lower())]
    hits = by_name or by_id
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        raise FilterError("flow", f"{_shown(text)} matches {len(hits)} containers: type more of it")
    if _FULL_ID.match(text.lower()):
        return text.lower()  # a deleted flow: its journal stays
    raise FilterError(
        "flow", f"no container {_shown(text)}: type a name, an id, or the full id of a deleted one"
    )


def _types(text: str) -> tuple[str, ...] | None:
    words = [w for w in re.split(r"[\s,]+", text.strip()) if w]
    if not words:
        return None
    unknown = [w for w in words if w not in JOURNALLED]
    if unknown:
        word = unknown[0]
        near = [n for n in JOURNALLED if word.lower() in n] or get_close_matches(word, JOURNALLED)
        hint = f"did you mean {' or '.join(near)}?" if near else f"one of {', '.join(JOURNALLED)}"
        raise FilterError("types", f"unknown event {_shown(word)}: {hint}")
    return tuple(dict.fromkeys(words))


def _time(field: str, text: str, now: datetime) -> datetime | None:
    if not text.strip():
        return None
    try:
        at = parse_time(text, now)
    except ValueError as err:
        raise FilterError(field, f"{err}: use {TIME_HELP}") from None
    if field == "to" and re.fullmatch(r"\d{4}-\d{2}-\d{2}", text.strip()):
        at += timedelta(days=1, microseconds=-1)  # a day given as the end: all of it
    return at


def parse_filter(
    *,
    flow: str = "",
    types: str = "",
    since: str = "",
    until: str = "",
    names: Mapping[str, str],
    clock: Callable[[], datetime],
) -> HistoryFilter:
    """Every field checked; the first bad one raises FilterError."""
    now = clock()
    parsed = HistoryFilter(
        container_id=_flow(flow, names),
        types=_types(types),
        since=_time("from", since, now),
        until=_time("to", until, now),
    )
    if parsed.since and parsed.until and parsed.since > parsed.until:
        raise FilterError("to", "the range ends before it begins")
    return parsed
