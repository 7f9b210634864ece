"""The newest lines of a log stream within a byte budget, read chunk by chunk: memory stays
bounded by the budget whatever the flow printed (issue 11: 31 MiB of output made one
`get_container_logs` answer cost the manager 390 MiB)."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

from server.core.errors import InvalidRequest

__all__ = ["LogTail", "TailBuffer", "MAX_SINCE", "check_since"]


class LogTail(list[str]):
    """Log lines, oldest first; `truncated` when older lines (or the end of an over-long line)
    were left out to stay within the byte budget."""

    truncated: bool = False


class TailBuffer:
    """Feed it chunks; it keeps only the newest whole lines whose UTF-8 text plus one newline
    each fits in `max_bytes`. A line longer than the budget keeps its first bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max(1, max_bytes)
        self._lines: deque[bytes] = deque()
        self._size = 0  # bytes in _lines, a newline counted for each
        self._partial = bytearray()
        self._cut = False  # the line being read ran past the budget: drop the rest of it
        self.truncated = False

    def feed(self, chunk: bytes) -> None:
        """Take the next piece of the stream (any split: mid-line, several lines)."""
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                self._grow(chunk[start:])
                return
            self._grow(chunk[start:end])
            self._push(bytes(self._partial))
            self._partial.clear()
            self._cut = False
            start = end + 1

    def result(self, each_line: Callable[[str], str] | None = None) -> LogTail:
        """The kept lines, decoded (bad UTF-8 replaced), each through `each_line` (masking),
        trimmed again in case that made them longer."""
        if self._partial:
            self._push(bytes(self._partial))
            self._partial.clear()
        out = LogTail()
        for raw in self._lines:
            text = raw.decode("utf-8", "replace")
            # str.splitlines, as before: "\r", form feeds and the like also end a line
            out.extend(text.splitlines() or [""])
        if each_line is not None:
            out[:] = [each_line(line) for line in out]
        trimmed = _trim(out, self.max_bytes)
        out.truncated = self.truncated or trimmed
        return out

    def _grow(self, piece: bytes) -> None:
        if self._cut or not piece:
            return
        room = self.max_bytes - 1 - len(self._partial)
        if len(piece) > room:
            piece, self._cut, self.truncated = piece[: max(room, 0)], True, True
        self._partial += piece

    def _push(self, line: bytes) -> None:
        self._lines.append(line)
        self._size += len(line) + 1
        while self._size > self.max_bytes:
            self._size -= len(self._lines.popleft()) + 1
            self.truncated = True


def _trim(lines: LogTail, max_bytes: int) -> bool:
    """Drop the oldest lines (or cut a lone line) until the text fits; True when it had to."""
    sizes = [len(line.encode("utf-8", "surrogatepass")) + 1 for line in lines]
    total, first = sum(sizes), 0
    while total > max_bytes and first < len(lines) - 1:
        total -= sizes[first]
        first += 1
    cut = first > 0
    del lines[:first]
    if lines and total > max_bytes:
        raw = lines[0].encode("utf-8", "surrogatepass")[: max_bytes - 1]
        lines[0] = raw.decode("utf-8", "ignore")
        cut = True
    return cut


MAX_SINCE = 366 * 24 * 3600
"""The furthest back a log request may reach by `since` (a year; all: no `since`)."""


def check_since(since: object) -> None:
    """ext `since`: None, or seconds back from now, more than 0 and at most MAX_SINCE."""
    if since is None:
        return
    if (
        isinstance(since, bool)
        or not isinstance(since, int | float)
        or not (math.isfinite(since) and 0 < since <= MAX_SINCE)
    ):
        raise InvalidRequest(
            f"since must be a number of seconds, more than 0 and at most {MAX_SINCE}",
            field="since",
        )
