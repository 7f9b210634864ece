"""The agent's side of the link: connects OUT to the hub (a node opens no port), says hello,
beats every `heartbeat` seconds, answers the hub's requests, reconnects with capped back-off.

It knows when it lost the hub: `link_lost_since` (time.monotonic(), None while linked) is the
last moment the hub was known to be there (its last heartbeat ack), and `fenced(now)` says
whether that is `fence_seconds` ago, for the fence rule (docs/CLUSTER.md: a partitioned node's
agent stops its flows so a flow never runs on two nodes for longer). The full rule also asks the
node's engine whether it still reaches the managers; that part belongs to whoever acts on it.

The hub acks every heartbeat: when no ack came for `agent_timeout` the agent treats the hub as
gone and reconnects, instead of trusting a half-open TCP connection for engine.io's ping timeout
(45 s by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import socketio

from server.cluster.hub_link import AGENT_NAMESPACE
from server.cluster.link_models import (
    ERROR_TYPES,
    MAX_MESSAGE_CHARS,
    MAX_REQUEST_BYTES,
    AgentEvent,
    AgentHello,
    AgentReport,
    Heartbeat,
    Reply,
    ReplyError,
    Request,
    json_size,
)
from server.core.errors import FlowMgrError, InvalidRequest

__all__ = ["AgentLink", "Handler", "new_instance"]

logger = logging.getLogger(__name__)

Handler = Callable[[Request], Awaitable[dict[str, Any]]]
"""Does one request; its result goes back in an ok Reply, a FlowMgrError in a failed one."""


def new_instance() -> str:
    """A fresh `AgentHello.instance`: one per agent process."""
    return secrets.token_urlsafe(12)


class AgentLink:
    """One agent's link to the hub; `start()` it, `stop()` it."""

    def __init__(
        self,
        hub_url: str,
        agent_token: str,
        hello: Callable[[], AgentHello],
        handler: Handler,
        *,
        heartbeat: float = 1.0,
        agent_timeout: float = 2.0,
        fence_seconds: float = 10.0,
        backoff_min: float = 0.1,
        backoff_max: float = 5.0,
        connect_timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < heartbeat < agent_timeout:
            raise ValueError("heartbeat must be positive and less than agent_timeout")
        self.hub_url = hub_url
        self._token = agent_token
        self._hello = hello
        self._handler = handler
        self.heartbeat = heartbeat
        self.agent_timeout = agent_timeout
        self.fence_seconds = fence_seconds
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.connect_timeout = connect_timeout
        self.clock = clock
        self.connected = False
        self.link_lost_since: float | None = clock()
        """Never linked counts as lost since the agent started."""
        self.last_ack: float | None = None
        self.last_error: str | None = None
        """Why the last connect failed (the hub's refusal, or the transport's error)."""
        self.refusal: dict[str, Any] | None = None
        """The hub's last refusal (its `error_type`, `message`, `reason`...), if any."""
        self.connects = 0
        self.failures = 0
        self.heartbeats_held = False
        """Drills and tests: stop beating while keeping the socket (a stalled agent)."""
        self._sio: socketio.AsyncClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()
        self._linked = asyncio.Event()
        self._requests: set[asyncio.Task[None]] = set()
        self._stopping = False

    # -- public

    def start(self) -> None:
        """Begin connecting (in the background, forever, until stop())."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="agent-link")

    async def stop(self) -> None:
        """Disconnect and stop reconnecting."""
        self._stopping = True
        self._lost.set()
        task, self._task = self._task, None
        # A cancel can be swallowed inside python-socketio's connect (asyncio.wait_for): repeat.
        while task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=0.5)
        if task is not None and not task.cancelled() and task.exception() is not None:
            logger.warning("the agent link ended with %r", task.exception())
        self._stopping = False

    async def wait_linked(self, timeout: float) -> None:
        """Until the link is up (TimeoutError after `timeout`)."""
        async with asyncio.timeout(timeout):
            await self._linked.wait()

    def fenced(self, now: float | None = None) -> bool:
        """Whether the hub has been out of reach for `fence_seconds` (stop the local flows)."""
        if self.link_lost_since is None:
            return False
        now = self.clock() if now is None else now
        return now - self.link_lost_since >= self.fence_seconds

    async def report(self, report: AgentReport) -> None:
        """Tell the hub a flow's state or sample (dropped while the link is down: the next
        hello carries the flows again)."""
        sio = self._sio
        if sio is not None and self.connected:
            with contextlib.suppress(socketio.exceptions.SocketIOError):
                await sio.emit("report", report.wire(), namespace=AGENT_NAMESPACE)

    async def event(self, event: AgentEvent) -> None:
        """Tell the hub what a flow did (dropped while the link is down, like reports)."""
        sio = self._sio
        if sio is not None and self.connected:
            with contextlib.suppress(socketio.exceptions.SocketIOError):
                await sio.emit("event", event.wire(), namespace=AGENT_NAMESPACE)

    async def abort_transport(self) -> None:
        """Drills and tests: drop the connection the way a dying process does, no goodbye
        (the TCP connection is shut down under the websocket, no close frame)."""
        sio = self._sio
        ws = None if sio is None else getattr(sio.eio, "ws", None)
        sock = None if ws is None else ws.get_extra_info("socket")
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)

    # -- the loop

    async def _run(self) -> None:
        backoff = self.backoff_min
        async with aiohttp.ClientSession() as session:
            while not self._stopping:
                sio = socketio.AsyncClient(reconnection=False, http_session=session)
                sio.on("request", self._on_request, namespace=AGENT_NAMESPACE)
                sio.on("disconnect", self._on_disconnect, namespace=AGENT_NAMESPACE)
                sio.on("connect_error", self._on_refused, namespace=AGENT_NAMESPACE)
                self.refusal = None
                self._lost.clear()
                try:
                    await sio.connect(
                        self.hub_url,
                        auth={"agent_token": self._token, "hello": self._hello().wire()},
                        namespaces=[AGENT_NAMESPACE],
                        transports=["websocket"],
                        wait_timeout=self.connect_timeout,
                    )
                except (socketio.exceptions.ConnectionError, OSError) as err:
                    self.failures += 1
                    self.last_error = self._refusal_message() or str(err)[:500]
                    logger.warning("cannot link to the hub %s: %s", self.hub_url, self.last_error)
                    with contextlib.suppress(Exception):
                        await sio.disconnect()
                    # jitter: agents restarted together do not reconnect in lockstep
                    await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
                    backoff = min(backoff * 2, self.backoff_max)
                    continue
                try:
                    await self._linked_session(sio)
                finally:
                    self._went_down()
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(sio.disconnect(), 2.0)
                    self._sio = None
                backoff = self.backoff_min
                await asyncio.sleep(backoff * random.uniform(0.5, 1.0))

    async def _linked_session(self, sio: socketio.AsyncClient) -> None:
        self._sio = sio
        self.connects += 1
        self.connected = True
        self.last_error = None
        self.last_ack = self.clock()
        if self.link_lost_since is not None:
            logger.info(
                "linked to the hub %s (it was out of reach %.1f s)",
                self.hub_url,
                self.clock() - self.link_lost_since,
            )
        self.link_lost_since = None
        self._linked.set()
        if self._stopping:
            return
        beats = asyncio.create_task(self._beat(sio), name="agent-heartbeat")
        try:
            await self._lost.wait()
        finally:
            beats.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beats

    def _went_down(self) -> None:
        if not self.connected:
            return
        self.connected = False
        self._linked.clear()
        # The fence counts from the last moment the hub was known to be there.
        self.link_lost_since = self.last_ack if self.last_ack is not None else self.clock()
        for task in list(self._requests):
            task.cancel()
        logger.warning("agent link to the hub %s lost", self.hub_url)

    async def _beat(self, sio: socketio.AsyncClient) -> None:
        seq = 0
        while True:
            if not self.heartbeats_held:
                if self.last_ack is not None and self.clock() - self.last_ack > self.agent_timeout:
                    logger.warning("the hub acked no heartbeat for %.1f s", self.agent_timeout)
                    self._lost.set()
                    return
                beat = Heartbeat(seq=seq, flows=len(self._hello().flows))
                try:
                    await sio.emit(
                        "heartbeat", beat.wire(), namespace=AGENT_NAMESPACE, callback=self._acked
                    )
                except socketio.exceptions.SocketIOError:
                    self._lost.set()
                    return
                seq += 1
            else:
                self.last_ack = self.clock()  # held on purpose: not a silent hub
            await asyncio.sleep(self.heartbeat)

    def _acked(self, answer: Any = None) -> None:
        if isinstance(answer, dict) and answer.get("ok") is True:
            self.last_ack = self.clock()

    def _refusal_message(self) -> str | None:
        message = None if self.refusal is None else self.refusal.get("message")
        return message[:500] if isinstance(message, str) else None

    async def _on_refused(self, data: Any = None) -> None:
        """The hub's refusal: {"message", "error_type", ...} (see hub_link._refusal)."""
        if isinstance(data, dict) and isinstance(data.get("data"), dict):
            data = data["data"]  # python-socketio wraps the details the hub gave
        if isinstance(data, dict):
            self.refusal = {str(k)[:64]: v for k, v in list(data.items())[:16]}
        else:
            self.refusal = {"message": str(data)[:500]}

    async def _on_disconnect(self, reason: Any = None) -> None:
        self._lost.set()

    # -- requests

    async def _on_request(self, data: Any) -> None:
        task = asyncio.create_task(self._answer(data))
        self._requests.add(task)
        task.add_done_callback(self._requests.discard)

    async def _answer(self, data: Any) -> None:
        try:
            request = Request.decode(data, max_bytes=MAX_REQUEST_BYTES)
        except InvalidRequest as err:
            request_id = data.get("request_id") if isinstance(data, dict) else None
            if isinstance(request_id, str) and 8 <= len(request_id) <= 64:
                await self._send_reply(request_id, error=_error_of(err))
            else:
                logger.warning("dropped a malformed request from the hub: %s", err.message)
            return
        try:
            async with asyncio.timeout(request.deadline):
                result = await self._handler(request)
        except FlowMgrError as err:
            await self._send_reply(request.request_id, error=_error_of(err))
            return
        except TimeoutError:
            await self._send_reply(
                request.request_id,
                error=ReplyError(
                    error_type="socket_timeout_error",
                    message=f"{request.op} did not finish within {request.deadline:g} s",
                ),
            )
            return
        except Exception as err:
            logger.exception("the handler of %s failed", request.op)
            await self._send_reply(
                request.request_id,
                error=ReplyError(error_type="system_error", message=f"agent: {type(err).__name__}"),
            )
            return
        if json_size(result) > MAX_REQUEST_BYTES:
            await self._send_reply(
                request.request_id,
                error=ReplyError(error_type="system_error", message="the result is too large"),
            )
            return
        await self._send_reply(request.request_id, result=result)

    async def _send_reply(
        self,
        request_id: str,
        *,
        result: dict[str, Any] | None = None,
        error: ReplyError | None = None,
    ) -> None:
        sio = self._sio
        if sio is None:
            return
        try:
            reply = Reply(request_id=request_id, ok=error is None, result=result, error=error)
        except ValueError as err:
            reply = Reply(
                request_id=request_id,
                ok=False,
                error=ReplyError(error_type="system_error", message=f"bad reply: {err}"[:500]),
            )
        with contextlib.suppress(socketio.exceptions.SocketIOError):
            await sio.emit("reply", reply.wire(), namespace=AGENT_NAMESPACE)


def _error_of(err: FlowMgrError) -> ReplyError:
    """A core error as a reply's error; details made JSON-safe (and small)."""
    details = json.loads(json.dumps(err.details, default=str))
    if json_size(details) > 8192:
        details = {"truncated": True}
    return ReplyError(
        error_type=err.error_type if err.error_type in ERROR_TYPES else "system_error",  # type: ignore[arg-type]
        message=err.message[:MAX_MESSAGE_CHARS],
        details=details,
    )
