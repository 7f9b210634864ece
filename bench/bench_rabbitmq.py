"""The RabbitMQ interface beside Socket.IO, in one run, against one real `python -m server`
process (MESSAGING_BACKEND=rabbitmq), the local rabbitmq-server and real containers.

    .venv/bin/python bench/bench_rabbitmq.py                  # 100 flows, 1000 calls each
    .venv/bin/python bench/bench_rabbitmq.py --containers 10 --calls 200 --seconds 3

rtt:    get_status / list_containers round trips, one at a time: AMQP (a command to the shared
        queue, the answer on the client's reply queue) and Socket.IO (an ack), p50 / p99.
rate:   get_status commands per second sustained for --seconds with --window in flight, both.
events: one echo flow is sent messages as fast as --window allows for --seconds; events per
        second an AMQP consumer of `event.#` and a Socket.IO client each received meanwhile
        (message_received, activity_log...: the bus at its peak for this load).
Everything this script creates carries a bench-only instance label (removed at the end, even
on failure); its queues and exchange have a run-unique name and are deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aio_pika
import httpx
from aio_pika.abc import AbstractIncomingMessage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_api import (  # noqa: E402
    RUN,
    Client,
    clients,
    echo_flow,
    make_containers,
    say,
    server_process,
    summary,
    timed,
)

from server.wire.pushes import PUSHES  # noqa: E402

BROKER = os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
QUEUES = f"fmb-{RUN}"
COMMANDS, RESPONSES, EVENTS = f"{QUEUES}.commands", f"{QUEUES}.responses", f"{QUEUES}.events"


class AmqpClient:
    """The platform: commands to the shared queue, answers on its own reply queue."""

    def __init__(self, conn: aio_pika.abc.AbstractConnection) -> None:
        self.conn = conn
        self.waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.events = 0

    async def setup(self) -> None:
        self.channel = await self.conn.channel(publisher_confirms=False)
        reply = await self.channel.declare_queue(exclusive=True, auto_delete=True)
        self.reply = reply.name
        await reply.consume(self._answer, no_ack=True)
        events = await self.channel.declare_queue(exclusive=True, auto_delete=True)
        exchange = await self.channel.declare_exchange(
            EVENTS, aio_pika.ExchangeType.TOPIC, durable=True
        )
        await events.bind(exchange, "event.#")
        await events.consume(self._event, no_ack=True)

    async def _answer(self, msg: AbstractIncomingMessage) -> None:
        fut = self.waiting.pop(msg.correlation_id or "", None)
        if fut is not None and not fut.done():
            fut.set_result(json.loads(msg.body))

    async def _event(self, msg: AbstractIncomingMessage) -> None:
        self.events += 1

    async def call(self, action: str, data: dict[str, Any]) -> dict[str, Any]:
        cid = uuid.uuid4().hex
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiting[cid] = fut
        body = json.dumps({"action": action, "data": data}).encode()
        await self.channel.default_exchange.publish(
            aio_pika.Message(body, correlation_id=cid, reply_to=self.reply), routing_key=COMMANDS
        )
        answer = await asyncio.wait_for(fut, 60)
        if not answer.get("ok"):
            raise RuntimeError(f"{action}: {answer}")
        return answer


@contextlib.asynccontextmanager
async def amqp_client() -> AsyncIterator[AmqpClient]:
    conn = await aio_pika.connect(BROKER, timeout=10)
    c = AmqpClient(conn)
    try:
        await c.setup()
        yield c
    finally:
        await conn.close()


async def delete_queues() -> None:
    """This run's queues and exchanges (after the service stopped: it would declare them
    again)."""
    async with await aio_pika.connect(BROKER, timeout=10) as conn:
        ch = await conn.channel()
        for name in (COMMANDS, f"{COMMANDS}.dead", f"{COMMANDS}.{RUN}", RESPONSES):
            await ch.queue_delete(name)
        for name in (f"{COMMANDS}.route", EVENTS):
            await ch.exchange_delete(name)


async def sustained(seconds: float, window: int, call: Callable[[int], Awaitable[Any]]) -> float:
    """Calls per second with `window` in flight for `seconds`."""
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker(k: int) -> None:
        nonlocal done
        i = k
        while time.perf_counter() < deadline:
            await call(i)
            done += 1
            i += window

    began = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(window)))
    return done / (time.perf_counter() - began)


async def bench(args: argparse.Namespace) -> None:
    os.environ.update(
        MESSAGING_BACKEND="rabbitmq",
        RABBITMQ_URL=BROKER,
        FLOW_MANAGER_COMMAND_QUEUE=COMMANDS,
        FLOW_MANAGER_RESPONSE_QUEUE=RESPONSES,
        FLOW_MANAGER_EVENT_EXCHANGE=EVENTS,
    )
    async with (
        server_process() as (url, server),
        clients(url, 1) as (sio,),
        amqp_client() as amqp,
    ):
        sio_events = 0

        def count(event: str, *_: Any) -> None:
            nonlocal sio_events
            sio_events += event in PUSHES  # pushes only, as the exchange carries (no answers)

        sio.sio.on("*", count)
        async with httpx.AsyncClient() as http, asyncio.timeout(60):  # its queues exist
            while (await http.get(f"{url}/health")).json()["components"]["messaging"] != "active":
                await asyncio.sleep(0.1)
        began = time.perf_counter()
        ids = await make_containers(sio, args.containers)
        say(f"setup: {len(ids)} flows in {time.perf_counter() - began:.1f} s")
        await rtt(sio, amqp, ids, args.calls)
        await rate(sio, amqp, ids, args)
        await events(sio, amqp, args, lambda: sio_events)
        say(f"server RSS {server.memory_info().rss / 2**20:.0f} MiB")


async def rtt(sio: Client, amqp: AmqpClient, ids: list[str], calls: int) -> None:
    def status_sio(i: int) -> Awaitable[Any]:
        return sio.call("get_container_status", {"container_id": ids[i % len(ids)]})

    def status_amqp(i: int) -> Awaitable[Any]:
        return amqp.call("get_status", {"container_id": ids[i % len(ids)]})

    await timed(100, status_amqp)  # warm-up, both
    await timed(100, status_sio)
    for name, sio_fn, amqp_fn in (
        ("get_status", status_sio, status_amqp),
        (
            "list_containers",
            lambda i: sio.call("list_containers", {}),
            lambda i: amqp.call("list_containers", {}),
        ),
    ):
        say(f"rtt {name} socketio: {summary(await timed(calls, sio_fn))}")
        say(f"rtt {name} rabbitmq: {summary(await timed(calls, amqp_fn))}")


async def rate(sio: Client, amqp: AmqpClient, ids: list[str], args: argparse.Namespace) -> None:
    for name, call in (
        (
            "socketio",
            lambda i: sio.call("get_container_status", {"container_id": ids[i % len(ids)]}),
        ),
        ("rabbitmq", lambda i: amqp.call("get_status", {"container_id": ids[i % len(ids)]})),
    ):
        per_s = await sustained(args.seconds, args.window, call)
        say(f"rate get_status {name}: {per_s:.0f} commands/s ({args.window} in flight)")


async def events(
    sio: Client, amqp: AmqpClient, args: argparse.Namespace, sio_count: Callable[[], int]
) -> None:
    cid = await echo_flow(sio)
    await asyncio.sleep(1)
    amqp0, sio0 = amqp.events, sio_count()
    began = time.perf_counter()
    sends = await sustained(
        args.seconds,
        args.window,
        lambda i: sio.call("send_message", {"container_id": cid, "message": {"i": i}}),
    )
    await asyncio.sleep(1)  # what was published in the window arrives
    took = time.perf_counter() - began
    say(f"events: {sends:.0f} send_message/s into one echo flow for {args.seconds:.0f} s")
    say(
        f"events received per second: rabbitmq {(amqp.events - amqp0) / took:.0f}, "
        f"socketio {(sio_count() - sio0) / took:.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--containers", type=int, default=100)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--window", type=int, default=32)
    args = parser.parse_args()
    say(f"load average at start: {os.getloadavg()[0]:.1f}")
    try:
        asyncio.run(bench(args))
    finally:
        asyncio.run(delete_queues())
    say(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
