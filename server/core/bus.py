"""EventBus: in-process publish/subscribe with a bounded queue per subscriber."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from server.core.events import Event, LogLineReceived, StatsSampled, StatusReported, log_gap_line

__all__ = ["EventBus", "Subscription"]

logger = logging.getLogger(__name__)


def _coalesce_key(event: Event) -> tuple[str, str] | None:
    """Latest-value events share a key per container: a newer one replaces the queued one."""
    if isinstance(event, StatsSampled):
        return ("stats", event.container_id)
    if isinstance(event, StatusReported):
        return ("status", event.status.container_id)
    return None


class Subscription:
    """One subscriber's bounded queue; iterate it with `async for`."""

    def __init__(
        self, bus: EventBus, maxsize: int, predicate: Callable[[Event], bool] | None
    ) -> None:
        self._bus = bus
        self._maxsize = maxsize
        self._predicate = predicate
        self._queue: deque[Event | tuple[str, str]] = deque()
        self._latest: dict[tuple[str, str], Event] = {}
        self._wakeup = asyncio.Event()
        self._closed = False
        self.dropped = 0
        """Events thrown away because this subscriber fell behind."""
        self._log_gaps: dict[str, int] = {}
        """Log lines dropped per container, not yet told: a follower never loses lines silently."""

    def _offer(self, event: Event) -> None:
        if self._closed or (self._predicate is not None and not self._predicate(event)):
            return
        key = _coalesce_key(event)
        if key is not None and key in self._latest:
            self._latest[key] = event
            return
        if len(self._queue) >= self._maxsize:
            oldest = self._queue.popleft()
            if isinstance(oldest, tuple):
                self._latest.pop(oldest, None)
            self.dropped += 1
            if isinstance(oldest, LogLineReceived):
                cid = oldest.container_id
                self._log_gaps[cid] = self._log_gaps.get(cid, 0) + 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                logger.warning("a bus subscriber is slow: %d events dropped so far", self.dropped)
        if key is not None:
            self._latest[key] = event
            self._queue.append(key)
        else:
            self._queue.append(event)
        self._wakeup.set()

    def close(self) -> None:
        """End iteration once the queue is drained."""
        self._closed = True
        self._wakeup.set()

    def get_nowait(self) -> Event | None:
        """The next queued event, or None when the queue is empty."""
        if self._log_gaps:  # dropped from the front: the gap comes before all still queued
            cid, skipped = self._log_gaps.popitem()
            return LogLineReceived(container_id=cid, line=log_gap_line(skipped))
        while self._queue:
            item = self._queue.popleft()
            if isinstance(item, tuple):
                event = self._latest.pop(item, None)
                if event is None:
                    continue
                return event
            return item
        return None

    async def get(self) -> Event:
        """Wait for the next event; raises StopAsyncIteration once closed and drained."""
        while True:
            event = self.get_nowait()
            if event is not None:
                return event
            if self._closed:
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        return await self.get()

    def __len__(self) -> int:
        return len(self._queue)


class EventBus:
    """Fan-out of core events; a slow subscriber never blocks the publisher."""

    def __init__(self, default_maxsize: int = 10_000) -> None:
        self._subscribers: list[Subscription] = []
        self._taps: list[Callable[[Event], None]] = []
        self._default_maxsize = default_maxsize
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self.published = 0

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Remember the loop so threads can publish with `publish_threadsafe`."""
        self._loop = loop

    def publish(self, event: Event) -> None:
        """Hand `event` to every subscriber; call on the event loop's thread."""
        self.published += 1
        for tap in self._taps:
            tap(event)
        for sub in tuple(self._subscribers):
            sub._offer(event)

    def publish_threadsafe(self, event: Event) -> None:
        """Publish from a worker thread."""
        if self._loop is None:
            raise RuntimeError("EventBus.bind_loop() was not called")
        self._loop.call_soon_threadsafe(self.publish, event)

    def add_tap(self, fn: Callable[[Event], None]) -> Callable[[], None]:
        """Call `fn(event)` synchronously for every published event, before subscribers, in
        publish order; nothing is dropped (the journal's feed). Returns the removal function."""
        self._taps.append(fn)

        def remove() -> None:
            if fn in self._taps:
                self._taps.remove(fn)

        return remove

    def subscribe_raw(
        self, *, maxsize: int | None = None, predicate: Callable[[Event], bool] | None = None
    ) -> Subscription:
        """A subscription the caller must `unsubscribe`; prefer `subscribe()`."""
        sub = Subscription(self, maxsize or self._default_maxsize, predicate)
        if self._closed:
            sub.close()
        self._subscribers.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Stop delivering to `sub` and end its iteration."""
        sub.close()
        if sub in self._subscribers:
            self._subscribers.remove(sub)

    @asynccontextmanager
    async def subscribe(
        self, *, maxsize: int | None = None, predicate: Callable[[Event], bool] | None = None
    ) -> AsyncIterator[Subscription]:
        """`async with bus.subscribe() as events: async for e in events: ...`."""
        sub = self.subscribe_raw(maxsize=maxsize, predicate=predicate)
        try:
            yield sub
        finally:
            self.unsubscribe(sub)

    @property
    def subscriber_count(self) -> int:
        """How many subscriptions are open."""
        return len(self._subscribers)

    def close(self) -> None:
        """End every subscription (each drains what it has queued first)."""
        self._closed = True
        for sub in tuple(self._subscribers):
            sub.close()

    def stats(self) -> dict[str, Any]:
        """Counters for /health and debugging."""
        return {
            "published": self.published,
            "subscribers": len(self._subscribers),
            "dropped": sum(s.dropped for s in self._subscribers),
        }
