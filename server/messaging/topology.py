"""The broker's objects and how commands find the manager that owns a flow.

- `<command_queue>` (shared): every manager consumes it; a create or a list goes to any one.
  A command there for a flow another manager owns is passed on through the route exchange.
- `<command_queue>.<instance>`: this manager's own queue, bound to the direct exchange
  `<command_queue>.route` by `instance.<instance>` and by `flow.<name>` / `flow.<full id>` of
  each flow it owns (bindings follow creates, adoptions and removals).
- Both are quorum queues with `x-delivery-limit`: a command a manager died on that many times
  is dead-lettered to `<command_queue>.dead` instead of poisoning the queue.
- Answers: `reply_to`, else `<response_queue>`; events: the topic exchange `<event_exchange>`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue
from aiormq.abc import FieldValue

if TYPE_CHECKING:
    from collections.abc import Iterable

    from server.core.config import MessagingSettings
    from server.core.models import ContainerSnapshot

__all__ = ["Topology"]


class Topology:
    """Names, declarations and the flows' route bindings of one manager."""

    def __init__(self, cfg: MessagingSettings, instance: str) -> None:
        self.cfg = cfg
        self.shared_name = cfg.command_queue
        self.own_name = f"{cfg.command_queue}.{instance}"
        self.route_name = f"{cfg.command_queue}.route"
        self.dead_name = f"{cfg.command_queue}.dead"
        self.instance = instance
        self.command_queues = frozenset({self.shared_name, self.own_name, self.dead_name})
        """Queues no answer may be sent to."""
        self._own: AbstractQueue | None = None
        self._route: AbstractExchange | None = None
        self._events: AbstractExchange | None = None
        self._bound: set[str] = set()

    @property
    def route(self) -> AbstractExchange:
        """The direct exchange commands for a flow are routed through."""
        assert self._route is not None
        return self._route

    @property
    def events(self) -> AbstractExchange:
        """The events' topic exchange."""
        assert self._events is not None
        return self._events

    async def declare(
        self, consume: AbstractChannel, pub: AbstractChannel
    ) -> list[tuple[AbstractQueue, bool]]:
        """Declare everything (idempotent); the queues to consume, each with `shared`."""
        args: dict[str, FieldValue] = {
            "x-queue-type": "quorum",
            "x-delivery-limit": self.cfg.delivery_limit,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": self.dead_name,
        }
        await consume.declare_queue(self.dead_name, durable=True)
        shared = await consume.declare_queue(self.shared_name, durable=True, arguments=args)
        self._own = await consume.declare_queue(self.own_name, durable=True, arguments=args)
        self._route = await pub.declare_exchange(
            self.route_name, aio_pika.ExchangeType.DIRECT, durable=True
        )
        await self._own.bind(self.route_name, f"instance.{self.instance}")
        await pub.declare_queue(self.cfg.response_queue, durable=True)
        self._events = await pub.declare_exchange(
            self.cfg.event_exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        self._bound.clear()
        return [(shared, True), (self._own, False)]

    async def route_flows(self, snaps: Iterable[ContainerSnapshot]) -> None:
        """Bind `flow.<name>` and `flow.<id>` of these flows to this manager's queue."""
        assert self._own is not None
        for snap in snaps:
            for key in (f"flow.{snap.name}", f"flow.{snap.id}"):
                if key not in self._bound:
                    await self._own.bind(self.route_name, key)
                    self._bound.add(key)

    async def unroute(self, container_id: str, name: str) -> None:
        """Drop a removed flow's bindings."""
        assert self._own is not None
        for key in (f"flow.{name}", f"flow.{container_id}"):
            if key in self._bound:
                await self._own.unbind(self.route_name, key)
                self._bound.discard(key)

    def describe(self) -> str:
        """For the start-up log line."""
        return (
            f"commands: {self.shared_name} and {self.own_name}, answers: "
            f"{self.cfg.response_queue}, events: {self.cfg.event_exchange}"
        )
