"""The journal's pushes to the events exchange: held while the broker is away, then sent."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from typing import TYPE_CHECKING

import aio_pika

from server.api.sio_bridge import push_payload

if TYPE_CHECKING:
    from aio_pika.abc import AbstractExchange

    from server.core.journal.records import JournalRecord

__all__ = ["EventPublisher", "EVENT_BUFFER"]

logger = logging.getLogger(__name__)

EVENT_BUFFER = 50_000
"""Events held while the broker is away (the oldest dropped beyond; the journal keeps them)."""
_BATCH = 256


class EventPublisher:
    """A bounded buffer fed by the journal's listener and drained to the exchange, in order."""

    def __init__(self) -> None:
        self._events: deque[JournalRecord] = deque(maxlen=EVENT_BUFFER)
        self._ready = asyncio.Event()
        self.published = 0
        """Events the broker confirmed."""

    async def on_records(self, records: list[JournalRecord]) -> None:
        """The journal's listener: queue, never wait on the broker."""
        if len(self._events) + len(records) > EVENT_BUFFER:
            logger.warning("RabbitMQ away: the oldest events are not published (journal has them)")
        self._events.extend(records)
        self._ready.set()

    async def run(self, exchange: AbstractExchange) -> None:
        """Publish until cancelled; an event leaves the buffer once the broker confirmed it,
        so a link lost mid-batch sends that batch again on the next link."""
        while True:
            while not self._events:
                self._ready.clear()
                await self._ready.wait()
            batch = [self._events[i] for i in range(min(_BATCH, len(self._events)))]
            # pipelined: the confirms of a batch are awaited together
            await asyncio.gather(
                *(
                    exchange.publish(
                        aio_pika.Message(
                            (rec.pushed_text() or json.dumps(push_payload(rec))).encode(),
                            content_type="application/json",
                        ),
                        routing_key=f"event.{rec.event}",
                        mandatory=False,
                    )
                    for rec in batch
                )
            )
            for _ in batch:
                self._events.popleft()
            self.published += len(batch)
