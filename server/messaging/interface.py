"""RabbitInterface: commands from queues to the manager, answers to `reply_to`, events to a
topic exchange; reconnects with backoff while the rest of the service carries on."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import uuid
from typing import TYPE_CHECKING, Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from aio_pika.exceptions import DeliveryError, PublishError

from server.api.errors import error_payload
from server.core.errors import InvalidRequest
from server.core.events import ContainerAdded, ContainerRemoved, Event
from server.messaging.answers import AnswerRecord
from server.messaging.events import EventPublisher
from server.messaging.operations import FLOW_ACTIONS, OPERATIONS
from server.messaging.topology import Topology
from server.wire.amqp import CommandEnvelope, answer_payload
from server.wire.base import Wire
from server.wire.requests import parse_request

if TYPE_CHECKING:
    from server.core.config import Settings
    from server.core.manager import ContainerManager

__all__ = ["RabbitInterface", "FORWARDED"]

logger = logging.getLogger(__name__)

FORWARDED = "x-flowmgr-forwarded"
"""Header of a command a manager passed on to the flow's owner (never passed on twice)."""
_BACKOFF = (0.5, 10.0)
_REPLY_CHECK_TTL = 30.0


class RabbitInterface:
    """One manager's AMQP front end (docs/PROTOCOL.md "RabbitMQ interface (ext)")."""

    def __init__(self, manager: ContainerManager, settings: Settings) -> None:
        self._m = manager
        self._cfg = settings.messaging
        self._instance = settings.docker.instance
        self.topology = Topology(self._cfg, self._instance)
        self._answers = AnswerRecord(settings.answers_path, self._cfg.answer_keep_days * 86400)
        self.state = "connecting"
        """The /health `messaging` component: "active", or "connecting"/"unavailable"."""
        self.events = EventPublisher()
        self._inflight: dict[str, asyncio.Future[None]] = {}
        self._reply_ok: dict[str, float] = {}
        self._conn: aio_pika.abc.AbstractConnection | None = None
        self._pub: AbstractChannel | None = None
        self._task: asyncio.Task[None] | None = None
        self._unlisten: Any = None
        self.commands_answered = 0

    async def start(self) -> None:
        """Follow the journal's pushes and connect in the background (never fails start-up)."""
        self._unlisten = self._m.journal.listen(self.events.on_records)
        self._task = asyncio.create_task(self._run(), name="rabbitmq")

    async def stop(self) -> None:
        """Disconnect; deliveries not yet answered go back to the broker for another manager."""
        if self._unlisten is not None:
            self._unlisten()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.to_thread(self._answers.close)

    def health(self) -> str:
        """The /health `messaging` component."""
        return self.state

    async def _run(self) -> None:
        delay = _BACKOFF[0]
        while True:
            try:
                conn = await aio_pika.connect(self._cfg.rabbitmq_url, timeout=10)
            except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as err:
                if self.state != "unavailable":
                    logger.warning("RabbitMQ unreachable (%s); retrying with backoff", err)
                self.state = "unavailable"
                await asyncio.sleep(delay)
                delay = min(delay * 2, _BACKOFF[1])
                continue
            lost = asyncio.Event()
            conn.close_callbacks.add(functools.partial(_set, lost))
            try:
                await self._serve(conn, lost)
            except asyncio.CancelledError:
                raise
            except Exception:  # a broker refusing the topology: log it, keep retrying
                logger.exception("RabbitMQ interface failed; reconnecting")
                await asyncio.sleep(delay)
                delay = min(delay * 2, _BACKOFF[1])
            else:
                delay = _BACKOFF[0]
                logger.warning("RabbitMQ connection lost; reconnecting")
            finally:
                self.state = "unavailable"
                self._conn = self._pub = None
                with contextlib.suppress(Exception):  # it may be gone already
                    await asyncio.shield(conn.close())

    async def _serve(self, conn: aio_pika.abc.AbstractConnection, lost: asyncio.Event) -> None:
        """Declare, consume, publish events, keep the flows' routes, until the link is lost."""
        self._conn = conn
        consume = await conn.channel(publisher_confirms=True)
        await consume.set_qos(prefetch_count=self._cfg.prefetch)
        # a returned (unroutable) message raises PublishError; it is matched by message_id
        self._pub = await conn.channel(publisher_confirms=True, on_return_raises=True)
        for channel in (consume, self._pub):  # a channel the broker closed: start afresh
            channel.close_callbacks.add(functools.partial(_set, lost))
        # so does a consumer the broker cancelled (its queue deleted): declared again at once
        underlay = await consume.get_underlay_channel()
        underlay.on_consumer_cancel_callbacks.add(functools.partial(_set, lost))
        queues = await self.topology.declare(consume, self._pub)
        async with self._m.bus.subscribe(
            maxsize=100_000, predicate=lambda e: isinstance(e, ContainerAdded | ContainerRemoved)
        ) as changes:
            await self.topology.route_flows(self._m.snapshot())
            for queue, shared in queues:
                await queue.consume(functools.partial(self._on_message, shared=shared))
            self.state = "active"
            logger.info("RabbitMQ interface ready (%s)", self.topology.describe())
            async with asyncio.TaskGroup() as tg:
                events = tg.create_task(self.events.run(self.topology.events))
                routes = tg.create_task(self._follow_routes(changes))
                await lost.wait()
                events.cancel()
                routes.cancel()

    async def _follow_routes(self, changes: Any) -> None:
        async for event in changes:
            await self._route_change(event)

    async def _route_change(self, event: Event) -> None:
        if isinstance(event, ContainerAdded):
            await self.topology.route_flows([event.snapshot])
        elif isinstance(event, ContainerRemoved):
            await self.topology.unroute(event.container_id, event.name)

    # commands

    async def _on_message(self, msg: AbstractIncomingMessage, *, shared: bool) -> None:
        """Answer one command, then acknowledge it; a lost link leaves it unacknowledged
        (redelivered, and answered from the record when it has a correlation_id)."""
        try:
            await self._handle(msg, shared)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # not answered: unacknowledged, the broker delivers it again
            logger.warning("a command was not answered (%s); it goes back to the broker", err)
            return
        await msg.ack()

    async def _handle(self, msg: AbstractIncomingMessage, shared: bool) -> None:
        raw: Any = None
        cid = msg.correlation_id
        reply = msg.reply_to
        try:
            raw = self._decode(msg.body)
            env = parse_request(CommandEnvelope, raw)
            cid = cid or env.correlation_id
            reply = reply or env.reply_to
        except Exception as exc:  # answered where the command asked, when it can be told
            action = None
            if isinstance(raw, dict):
                cid = cid or _str_or_none(raw.get("correlation_id"))
                reply = reply or _str_or_none(raw.get("reply_to"))
                action = _str_or_none(raw.get("action"))
            if reply in self.topology.command_queues or (
                reply is not None and not await self._queue_exists(reply)
            ):
                reply = None
            await self._answer(msg, cid, reply, error_payload(exc, action or "command", None))
            return
        if reply in self.topology.command_queues:  # an answer is never fed back as a command
            err = InvalidRequest(f"reply_to {reply!r} is a command queue")
            await self._answer(msg, cid, None, error_payload(err, env.action, None))
            return
        if reply is not None and not await self._queue_exists(reply):
            err = InvalidRequest(f"reply_to {reply[:80]!r} is not an existing queue")
            await self._answer(msg, cid, None, error_payload(err, env.action, None))
            return
        if shared and await self._forwarded(msg, env):
            return
        if cid is None:
            await self._answer(msg, cid, reply, await self._execute(env, None))
            return
        await self._once(msg, env, cid, reply)

    async def _once(
        self, msg: AbstractIncomingMessage, env: CommandEnvelope, cid: str, reply: str | None
    ) -> None:
        """Run a command with a correlation_id at most once: a copy arriving meanwhile waits
        for the first, one arriving later gets the recorded answer."""
        while (running := self._inflight.get(cid)) is not None:
            await running
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._inflight[cid] = done
        try:
            digest = _digest(env)
            kept = await self._answers.get(cid)
            if kept is None:
                text = _text(await self._execute(env, cid))
                await self._answers.put(cid, digest, text)  # before it is sent: sent once
            elif kept[0] == digest:
                text = kept[1]
            else:  # another command under a used id: neither run nor given the other's answer
                err = InvalidRequest(
                    "correlation_id was used for another command; use a new one",
                    field="correlation_id",
                )
                text = _text(error_payload(err, env.action, None))
            await self._publish(msg, cid, reply, text)
        finally:
            del self._inflight[cid]
            done.set_result(None)

    def _decode(self, body: bytes) -> Any:
        if len(body) > self._cfg.max_body_bytes:
            raise InvalidRequest(
                f"the command is {len(body)} bytes; at most {self._cfg.max_body_bytes} are read",
                details={"received_bytes": len(body)},
            )
        try:
            return json.loads(body)
        except (ValueError, RecursionError):
            raise InvalidRequest("the command is not a JSON object in UTF-8") from None

    async def _execute(self, env: CommandEnvelope, cid: str | None) -> Wire:
        op = OPERATIONS[env.action]
        try:
            await self._m.until_adopted()
            data = await op.run(self._m, parse_request(op.request, env.data), cid)
        except Exception as exc:  # every failure becomes a typed error answer
            return error_payload(exc, env.action, {"data": env.data})
        return answer_payload(env.action, data, self._instance)

    async def _answer(
        self, msg: AbstractIncomingMessage, cid: str | None, reply: str | None, answer: Wire
    ) -> None:
        await self._publish(msg, cid, reply, _text(answer))

    async def _publish(
        self, msg: AbstractIncomingMessage, cid: str | None, reply: str | None, text: str
    ) -> None:
        assert self._pub is not None
        out = aio_pika.Message(
            text.encode(),
            content_type="application/json",
            message_id=uuid.uuid4().hex,
            correlation_id=cid,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        target = reply or self._cfg.response_queue
        try:
            await self._pub.default_exchange.publish(out, routing_key=target, mandatory=True)
        except (DeliveryError, PublishError):  # the reply queue went away since it was checked
            logger.warning(
                "the answer to %s (correlation_id %r) cannot be routed to %r: dead-lettered",
                msg.message_id or "a command",
                cid,
                target[:80],
            )
            await msg.reject(requeue=False)
            raise
        self.commands_answered += 1

    async def _queue_exists(self, name: str) -> bool:
        """Whether `name` is a queue (checked passively; a good answer is kept 30 s)."""
        if name == self._cfg.response_queue:
            return True
        if len(name.encode()) > 255 or not name.isprintable():  # AMQP would close the link
            return False
        loop = asyncio.get_running_loop()
        if self._reply_ok.get(name, 0.0) > loop.time():
            return True
        assert self._conn is not None
        channel = await self._conn.channel()  # a missing queue closes the channel that asked
        try:
            await channel.get_queue(name, ensure=True)
        except aiormq.exceptions.ChannelLockedResource:
            pass  # another connection's exclusive queue (a reply queue, typically): it exists
        except aiormq.exceptions.ChannelNotFoundEntity:
            return False
        finally:
            with contextlib.suppress(Exception):  # closed by the broker already
                await channel.close()
        if len(self._reply_ok) > 10_000:
            self._reply_ok.clear()
        self._reply_ok[name] = loop.time() + _REPLY_CHECK_TTL
        return True

    async def _forwarded(self, msg: AbstractIncomingMessage, env: CommandEnvelope) -> bool:
        """Pass a command for a flow of another manager to it (by the flow's route); False when
        it is ours, unknown everywhere, or was passed on once already."""
        ref = env.data.get("container_id")
        if (
            env.action not in FLOW_ACTIONS
            or not isinstance(ref, str)
            or not 0 < len(ref) <= 200  # a routing key holds at most 255 bytes
            or msg.headers.get(FORWARDED)
        ):
            return False
        try:
            self._m.registry.resolve(ref)
            return False
        except Exception:  # not ours (or not a reference): the owner's route may know it
            pass
        assert self._pub is not None
        copy = aio_pika.Message(
            msg.body,
            headers={**msg.headers, FORWARDED: self._instance},
            content_type=msg.content_type,
            message_id=uuid.uuid4().hex,
            correlation_id=msg.correlation_id,
            reply_to=msg.reply_to,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        try:
            await self.topology.route.publish(copy, routing_key=f"flow.{ref}", mandatory=True)
        except (DeliveryError, PublishError):  # no manager owns a flow of that name or id
            return False
        return True


def _set(flag: asyncio.Event, *_: object) -> None:
    flag.set()


def _digest(env: CommandEnvelope) -> str:
    """What makes two commands the same one: the action and its data."""
    canonical = json.dumps([env.action, env.data], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def _text(answer: Wire) -> str:
    return json.dumps(answer, separators=(",", ":"))


def _str_or_none(value: Any) -> str | None:
    return value[:255] if isinstance(value, str) and value else None
