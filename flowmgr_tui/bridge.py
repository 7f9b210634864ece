"""Core events -> Textual messages: one worker drains a bus subscription and posts batches."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from textual.message import Message

from server.core.bus import EventBus, Subscription
from server.core.events import Event

if TYPE_CHECKING:
    from textual.app import App

__all__ = ["CoreEvents", "EventBridge"]

BATCH_MAX = 2000
"""The most events one message carries; a burst beyond this arrives in several messages."""


class CoreEvents(Message):
    """A batch of core events, oldest first."""

    def __init__(self, events: list[Event]) -> None:
        super().__init__()
        self.events = events
        """The events, in publication order."""


class EventBridge:
    """Subscribes to the bus at construction (so nothing is missed) and pumps into the app."""

    def __init__(
        self,
        bus: EventBus,
        *,
        min_interval: float = 0.25,
        warming: bool = False,
        warm_interval: float = 0.04,
    ) -> None:
        self._bus = bus
        self._sub: Subscription = bus.subscribe_raw(maxsize=20_000)
        self.min_interval = min_interval
        """Seconds between batches: stats samples coalesce in the bus meanwhile."""
        self.warming = warming
        """While the core takes its first look, containers come in as each inspect returns:
        batches then follow each other after `warm_interval`, so the first screen of rows is
        painted as soon as it is known (the caller clears this when the core has started)."""
        self.warm_interval = warm_interval

    def start(self, app: App[Any]) -> None:
        """Run the pump as the app's single `core-events` worker."""
        app.run_worker(
            self._pump(app),
            name="core events",
            group="core-events",
            exclusive=True,
            exit_on_error=False,
        )

    def close(self) -> None:
        """Unsubscribe; the pump ends after the queue drains."""
        self._bus.unsubscribe(self._sub)

    async def _pump(self, app: App[Any]) -> None:
        try:
            while True:
                try:
                    first = await self._sub.get()
                except StopAsyncIteration:
                    return
                batch = [first]
                while len(batch) < BATCH_MAX and (nxt := self._sub.get_nowait()) is not None:
                    batch.append(nxt)
                app.post_message(CoreEvents(batch))
                # Sleeping here, not per event, is what keeps idle CPU low: 200 containers'
                # stats collapse to one sample each per interval.
                await asyncio.sleep(self.warm_interval if self.warming else self.min_interval)
        finally:
            self.close()
