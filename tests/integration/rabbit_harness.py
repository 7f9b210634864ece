"""The platform's side of the RabbitMQ interface: a separate aio-pika client sending commands,
waiting for their answers by correlation_id and recording the events."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from server.core.config import Settings
from tests.conftest import RUN_ID

__all__ = [
    "Platform",
    "platform",
    "with_messaging",
    "broker_url",
    "WAIT",
    "rabbitmqctl",
    "delete_topology",
]

WAIT = 60.0
"""Seconds any one answer or event may take (Docker on a busy machine)."""

broker_url = "amqp://guest:guest@127.0.0.1:5672/"


def with_messaging(settings: Settings, **more: Any) -> Settings:
    """`settings` with the RabbitMQ interface on, its queues and exchange unique to this test."""
    stem = f"fmq-{RUN_ID}-{uuid.uuid4().hex[:6]}"
    cfg = settings.messaging.model_copy(
        update={
            "backend": "rabbitmq",
            "rabbitmq_url": broker_url,
            "command_queue": f"{stem}.commands",
            "response_queue": f"{stem}.responses",
            "event_exchange": f"{stem}.events",
            **more,
        }
    )
    return settings.model_copy(update={"messaging": cfg})


def rabbitmqctl(*args: str) -> str:
    """The broker's CLI (the broker CI and scripts/ensure-rabbitmq.sh start)."""
    out = subprocess.run(
        ["rabbitmqctl", *args], capture_output=True, text=True, timeout=120, check=True
    )
    return out.stdout


class Platform:
    """One AMQP connection: its own reply queue, a queue bound to every event."""

    def __init__(self, conn: aio_pika.abc.AbstractConnection, settings: Settings) -> None:
        self.conn = conn
        self.cfg = settings.messaging
        self.answers: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.default_answers: list[tuple[str | None, dict[str, Any]]] = []
        self._changed = asyncio.Condition()
        self.reply_queue = ""

    async def setup(self) -> None:
        """Declare the reply and event queues and follow them."""
        self.channel = await self.conn.channel()
        reply = await self.channel.declare_queue(exclusive=True, auto_delete=True)
        self.reply_queue = reply.name
        await reply.consume(self._on_answer, no_ack=True)
        events = await self.channel.declare_queue(exclusive=True, auto_delete=True)
        exchange = await self.channel.declare_exchange(
            self.cfg.event_exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        await events.bind(exchange, "event.#")
        await events.consume(self._on_event, no_ack=True)
        responses = await self.channel.declare_queue(self.cfg.response_queue, durable=True)
        await responses.consume(self._on_default_answer, no_ack=True)

    async def _on_answer(self, msg: AbstractIncomingMessage) -> None:
        async with self._changed:
            self.answers[msg.correlation_id or ""].append(json.loads(msg.body))
            self._changed.notify_all()

    async def _on_default_answer(self, msg: AbstractIncomingMessage) -> None:
        async with self._changed:
            self.default_answers.append((msg.correlation_id, json.loads(msg.body)))
            self._changed.notify_all()

    async def _on_event(self, msg: AbstractIncomingMessage) -> None:
        async with self._changed:
            self.events.append((msg.routing_key or "", json.loads(msg.body)))
            self._changed.notify_all()

    async def until_consuming(self, svc: Any) -> None:
        """Wait until the service's interface consumes (before that its queues may not exist,
        and a command published to a missing queue is dropped by the broker)."""
        await self.wait(lambda: svc.app.api.state.messaging.state == "active")

    async def send_raw(
        self,
        body: bytes,
        *,
        correlation_id: str | None = None,
        reply_to: str | None = None,
        queue: str | None = None,
    ) -> None:
        """Publish a body as it is to the command queue (or `queue`)."""
        await self.channel.default_exchange.publish(
            aio_pika.Message(
                body,
                correlation_id=correlation_id,
                reply_to=reply_to,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=queue or self.cfg.command_queue,
        )

    async def send(
        self, action: str, data: Any, *, cid: str | None = None, queue: str | None = None
    ) -> str:
        """A command with this client's reply queue in its properties; its correlation_id."""
        cid = cid or uuid.uuid4().hex
        body = json.dumps({"action": action, "data": data}).encode()
        await self.send_raw(body, correlation_id=cid, reply_to=self.reply_queue, queue=queue)
        return cid

    async def call(self, action: str, data: Any, **kwargs: Any) -> dict[str, Any]:
        """Send and wait for the answer."""
        return await self.answer(await self.send(action, data, **kwargs))

    async def answer(self, cid: str, timeout: float = WAIT) -> dict[str, Any]:
        """The first answer with `cid`."""
        async with asyncio.timeout(timeout), self._changed:
            while not self.answers.get(cid):
                await self._changed.wait()
            return self.answers[cid][0]

    async def wait(self, ready: Callable[[], Any], timeout: float = WAIT) -> Any:
        """Wait until `ready()` is truthy (re-checked on every delivery and every 50 ms)."""
        async with asyncio.timeout(timeout), self._changed:
            while not (value := ready()):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), 0.05)
            return value

    async def event(
        self, name: str, pred: Callable[[dict[str, Any]], bool] = lambda _: True
    ) -> dict[str, Any]:
        """The first event `name` matching `pred`, received or yet to come."""

        def found() -> dict[str, Any] | None:
            return next((d for k, d in self.events if k == f"event.{name}" and pred(d)), None)

        result: dict[str, Any] = await self.wait(found)
        return result


@contextlib.asynccontextmanager
async def platform(settings: Settings, *, cleanup: bool = True) -> AsyncIterator[Platform]:
    """A connected Platform; its test's queues and exchanges deleted at the end (`cleanup`)."""
    conn = await aio_pika.connect(broker_url, timeout=10)
    p = Platform(conn, settings)
    try:
        await p.setup()
        yield p
    finally:
        with contextlib.suppress(Exception):  # it may be gone with a broker restart
            await conn.close()
        if cleanup:
            await delete_topology(settings)


async def delete_topology(settings: Settings) -> None:
    """Delete a test's queues and exchanges (once no manager runs: one would declare them
    again)."""
    conn = await aio_pika.connect(broker_url, timeout=10)
    async with conn:
        await _delete(await conn.channel(), settings)


async def _delete(ch: aio_pika.abc.AbstractChannel, settings: Settings) -> None:
    cfg = settings.messaging
    base = cfg.command_queue
    instances = {settings.docker.instance, f"{settings.docker.instance}b"}
    for name in [base, f"{base}.dead", cfg.response_queue, *(f"{base}.{i}" for i in instances)]:
        await ch.queue_delete(name)
    for name in (f"{base}.route", cfg.event_exchange):
        await ch.exchange_delete(name)
