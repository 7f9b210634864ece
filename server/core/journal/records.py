"""What the journal holds and hands out: one record per pushed event, pages of them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from server.core.events import Event

__all__ = ["JournalRecord", "HistoryPage", "Encoder", "StoredRow", "with_seq"]


@dataclass(frozen=True, slots=True)
class JournalRecord:
    """One pushed event; `seq` None: pushed live but not journalled (a status sample between
    journal points, or while the journal is unavailable)."""

    seq: int | None
    event: str
    """The push name, e.g. "message_received"."""
    data: dict[str, Any]
    """The payload exactly as pushed, without "seq"."""
    container_id: str | None
    text: str | None = None
    """`data` as compact JSON text (what the journal stored), or None when it has none: a
    front end sends it as it is instead of encoding `data` again."""

    def pushed_text(self) -> str | None:
        """The JSON text of the payload as pushed (with "seq" when journalled), or None."""
        if self.text is None or self.seq is None:
            return self.text
        return with_seq(self.text, self.seq)


def with_seq(text: str, seq: int) -> str:
    """A JSON object's text with `"seq": seq` as its last key (where `{**data, "seq": seq}`
    puts it), without decoding it."""
    return f'{{"seq":{seq}}}' if text == "{}" else f'{text[:-1]},"seq":{seq}}}'


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """A page of journalled records, ascending by seq."""

    events: list[JournalRecord]
    last_seq: int
    """Newest seq held (0 when empty)."""
    oldest_seq: int
    """Oldest seq held (0 when empty)."""


Encoder = Callable[[Event], tuple[str, dict[str, Any], str | None] | None]
"""(push name, payload, container_id), or None: not a pushed event. Given by the front end, so
the core never imports the wire format."""

StoredRow = tuple[int, float, str, str | None, str]
"""A row of table `events` as read: (seq, at, event, container_id, data JSON text)."""
