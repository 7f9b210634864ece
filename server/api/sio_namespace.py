"""Client -> server Socket.IO requests: validate, await the manager, answer (and ack)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import socketio
from engineio import json as engineio_json

from server import __version__
from server.api.auth import AUTHENTICATED, RefusalLog, token_matches
from server.api.errors import error_payload
from server.api.resume import BadLastSeq, Resume, last_seq_of
from server.api.shells import ShellBroker
from server.api.sio_manager import Encoded, packet_data_json
from server.core.errors import InvalidRequest
from server.core.validation.signals import check_signal
from server.wire.answers import (
    ConnectedOut,
    ContainerCreatedOut,
    ContainerKilledOut,
    ContainerListOut,
    ContainerLogsOut,
    ContainerPauseOut,
    ContainerStateOut,
    ContainerStatusOut,
    ContainerUpdatedOut,
    HistoryOut,
    LogSubscriptionOut,
    MessageSentOut,
    WatchStatsOut,
)
from server.wire.base import Wire
from server.wire.catalog import REQUESTS
from server.wire.config_answer import ContainerInspectedOut
from server.wire.pushes import EngineStatusOut, NodeStatusOut
from server.wire.requests import (
    ContainerRef,
    CreateContainerRequest,
    GetHistoryRequest,
    GetLogsRequest,
    KillContainerRequest,
    ListContainersRequest,
    RequestIn,
    SendMessageRequest,
    UpdateContainerRequest,
    WatchStatsRequest,
    parse_request,
    request_id_of,
)
from server.wire.shell import (
    OpenShellRequest,
    ResizeShellRequest,
    ShellRef,
    WriteShellRequest,
)

if TYPE_CHECKING:
    from server.api.sio_bridge import SioBridge
    from server.core.manager import ContainerManager

__all__ = ["FlowNamespace", "UndecodableAsEvent", "UNDECODABLE"]

logger = logging.getLogger(__name__)

Action = Callable[[Any], Awaitable[Wire]]


REFUSED_GRACE = 5.0
"""Seconds a refused client has to take its refusal before its session is closed anyway."""

UNDECODABLE = "<undecodable request>"
"""The event name a packet whose JSON cannot be decoded is delivered under."""


class UndecodableAsEvent:
    """The packets' JSON module: engine.io's (integers of at most 100 digits), except that a body
    it cannot decode (that, or nesting deeper than the parser's stack) becomes an event named
    UNDECODABLE. python-socketio would drop the packet with a logged error, and a client
    waiting for its ack would never get one; the packet's ack id is read before its JSON."""

    @staticmethod
    def dumps(value: Any, **kwargs: Any) -> str:
        """Compact JSON; a packet's data ending in an `Encoded` answer reuses its text."""
        return packet_data_json(value)

    @staticmethod
    def loads(text: str | bytes, **kwargs: Any) -> Any:
        try:
            return engineio_json.loads(text, **kwargs)
        except (ValueError, RecursionError):
            return [UNDECODABLE]


class FlowNamespace(socketio.AsyncNamespace):  # type: ignore[misc]
    """The docs/PROTOCOL.md requests, one `on_<request>` each, on the default namespace."""

    def __init__(
        self, manager: ContainerManager, bridge: SioBridge, *, token: str, server_id: str
    ) -> None:
        super().__init__("/")
        if not token:
            raise ValueError("the API always requires a token (see server.core.token_file)")
        self.manager = manager
        self.bridge = bridge
        self._token = token.encode("utf-8")
        self.refusals = RefusalLog()
        self._welcome = ConnectedOut.payload("Connected to Flow Manager", __version__, server_id)
        self._welcomes: set[asyncio.Task[None]] = set()
        self.shells = ShellBroker(manager, self._emit_to, self._backlog_of)

    async def trigger_event(self, event: str, *args: Any) -> Any:
        """Route requests with one payload (extra arguments ignored); answer unknown events."""
        sid, data = args[0], (args[1] if len(args) > 1 else None)
        # python-socketio also routes a client's own `42["connect", ...]` here. Only the real
        # connect and disconnect come while the sid is pending, not (or no longer) connected;
        # a client's event of that name is an unknown request.
        if event in ("connect", "disconnect") and not self.server.manager.is_connected(
            sid, self.namespace
        ):
            try:
                return await super().trigger_event(event, *args)
            except socketio.exceptions.ConnectionRefusedError:
                raise
            except Exception:
                if event != "connect":
                    raise
                # python-socketio lets any other exception escape its connect handling and
                # leaves the client pending (neither refused nor connected): refuse instead.
                logger.exception("connect handler failed; refusing the client")
                self._hang_up_later(sid)
                raise socketio.exceptions.ConnectionRefusedError("authentication failed") from None
        name = event if isinstance(event, str) else repr(event)  # a hand-made packet: 42[5]
        if name == UNDECODABLE:
            return await self._run(sid, name, None, RequestIn, "", self._undecodable)
        if name not in REQUESTS:
            return await self._run(sid, name[:80], data, RequestIn, "", self._unknown)
        return await getattr(self, f"on_{name}")(sid, data)

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        """Refuse a connect without exactly the token, or (ext) with a `last_seq` that is not a
        seq; the others join the broadcast room, a resuming one once it has caught up."""
        if not token_matches(auth, self._token):
            self.refusals.refused_one(str(environ.get("REMOTE_ADDR", "?")))
            self._hang_up_later(sid)
            raise socketio.exceptions.ConnectionRefusedError("authentication failed")
        try:
            last_seq = last_seq_of(auth)
        except BadLastSeq as err:
            self._hang_up_later(sid)
            raise socketio.exceptions.ConnectionRefusedError(
                "invalid last_seq",
                {"error_type": "validation_error", "field": "last_seq", "message": str(err)},
            ) from None
        resume = None
        if last_seq is None:
            # Only now: broadcasts go to this room alone (see AUTHENTICATED).
            await self.enter_room(sid, AUTHENTICATED)
        else:  # live records are held for it from here on, before the journal is read
            resume = Resume(self.server, self.manager, self.bridge, sid, last_seq)
            resume.start_holding()
        # Emitted from a task: inside this handler the client is not connected yet.
        task = asyncio.create_task(self._greet(sid, resume))
        self._welcomes.add(task)
        task.add_done_callback(self._welcomes.discard)

    def _hang_up_later(self, sid: str) -> None:
        """Close a refused client's engine.io session once the refusal has left.

        Left open, each would hold ~18 KB until its ping times out (~45 s): 10,000 bad
        connects kept 180 MiB. A client that wants to try again opens a new session."""
        eio_sid = self.server.manager.eio_sid_from_sid(sid, self.namespace)
        if eio_sid is not None:
            task = asyncio.create_task(self._hang_up(eio_sid))
            self._welcomes.add(task)
            task.add_done_callback(self._welcomes.discard)

    async def _hang_up(self, eio_sid: str) -> None:
        sock = self.server.eio.sockets.get(eio_sid)
        if sock is None:
            return
        try:  # the refusal is queued when the handler has returned; a poll takes it
            async with asyncio.timeout(REFUSED_GRACE):
                await asyncio.sleep(0)
                await sock.queue.join()
        except TimeoutError:
            pass
        try:
            if not sock.closed:
                await sock.close(wait=False)
        finally:
            self.server.eio.sockets.pop(eio_sid, None)

    async def _greet(self, sid: str, resume: Resume | None = None) -> None:
        """The welcome, then (ext) the engine's state: a client arriving while it is down knows;
        then a resuming client's catch-up."""
        try:
            await self.emit("connected", self._welcome, to=sid)
            status = EngineStatusOut.current(
                self.manager.docker_available, self.manager.docker_change
            )
            await self.emit(EngineStatusOut.event, status, to=sid)
            for down in self.manager.node_states():  # cluster hub: nodes without an agent link
                await self.emit(NodeStatusOut.event, NodeStatusOut.payload(down), to=sid)
            if resume is not None:
                await resume.run()
        finally:
            if resume is not None:
                self.bridge.drop_held(sid)

    async def on_disconnect(self, sid: str, reason: Any = None) -> None:
        """Release the log streams this client kept alive, and what it watched."""
        self.shells.client_left(sid)
        await self.bridge.client_left(sid)

    async def on_create_container(self, sid: str, data: Any) -> dict[str, Any]:
        """`create_container` -> `container_created`."""

        async def act(req: CreateContainerRequest) -> Wire:
            return ContainerCreatedOut.payload(await self.manager.create_container(req.to_spec()))

        return await self._serve(sid, "create_container", data, act)

    async def on_start_container(self, sid: str, data: Any) -> dict[str, Any]:
        """`start_container` -> `container_started`."""

        async def act(req: ContainerRef) -> Wire:
            snap = await self.manager.start_container(req.container_id)
            return ContainerStateOut.payload(snap.id, "running")

        return await self._serve(sid, "start_container", data, act)

    async def on_stop_container(self, sid: str, data: Any) -> dict[str, Any]:
        """`stop_container` -> `container_stopped`."""

        async def act(req: ContainerRef) -> Wire:
            snap = await self.manager.stop_container(req.container_id)
            return ContainerStateOut.payload(snap.id, "stopped")

        return await self._serve(sid, "stop_container", data, act)

    async def on_restart_container(self, sid: str, data: Any) -> dict[str, Any]:
        """`restart_container` -> `container_restarted`."""

        async def act(req: ContainerRef) -> Wire:
            snap = await self.manager.restart_container(req.container_id)
            return ContainerStateOut.payload(snap.id, "running")

        return await self._serve(sid, "restart_container", data, act)

    async def on_update_container(self, sid: str, data: Any) -> dict[str, Any]:
        """`update_container` -> `container_updated`."""

        async def act(req: UpdateContainerRequest) -> Wire:
            snap = await self.manager.update_container(req.container_id, req.code_path)
            return ContainerUpdatedOut.payload(snap.id, req.code_path)

        return await self._serve(sid, "update_container", data, act)

    async def on_delete_container(self, sid: str, data: Any) -> dict[str, Any]:
        """`delete_container` -> `container_deleted`."""

        async def act(req: ContainerRef) -> Wire:
            container_id, dropped = await self.manager.delete_container_counted(req.container_id)
            answer = ContainerStateOut.payload(container_id, "deleted")
            if dropped:  # ext: queued messages that went with the flow (else: as it always was)
                answer["queue_dropped"] = dropped
            return answer

        return await self._serve(sid, "delete_container", data, act)

    async def on_send_message(self, sid: str, data: Any) -> dict[str, Any]:
        """`send_message` -> `message_sent`."""

        async def act(req: SendMessageRequest) -> Wire:
            container_id = self.manager.get(req.container_id).id
            # ext `queue`: answered `queued` with its message_id once journalled
            message_id = await self.manager.send_message(container_id, req.message, queue=req.queue)
            return MessageSentOut.payload(container_id, req.message, message_id)

        return await self._serve(sid, "send_message", data, act)

    async def on_get_container_status(self, sid: str, data: Any) -> dict[str, Any]:
        """`get_container_status` -> `container_status`."""

        async def act(req: ContainerRef) -> Wire:
            return ContainerStatusOut.payload(await self.manager.get_status(req.container_id))

        return await self._serve(sid, "get_container_status", data, act)

    async def on_list_containers(self, sid: str, data: Any) -> dict[str, Any]:
        """`list_containers` -> `container_list`."""

        async def act(req: ListContainersRequest) -> Wire:
            snaps = await self.manager.list_containers()
            return ContainerListOut.payload(snaps, nodes=self.manager.cluster_nodes())

        return await self._serve(sid, "list_containers", data, act)

    async def on_get_container_logs(self, sid: str, data: Any) -> dict[str, Any]:
        """ext `get_container_logs` -> `container_logs`."""

        async def act(req: GetLogsRequest) -> Wire:
            container_id = self.manager.get(req.container_id).id
            lines = await self.manager.get_logs(
                container_id, tail=req.tail, since=req.since, timestamps=req.timestamps
            )
            return ContainerLogsOut.payload(container_id, lines, lines.truncated)

        return await self._serve(sid, "get_container_logs", data, act)

    async def on_inspect_container(self, sid: str, data: Any) -> dict[str, Any]:
        """ext `inspect_container` -> `container_inspected` (masked by the core)."""

        async def act(req: ContainerRef) -> Wire:
            return ContainerInspectedOut.payload(
                await self.manager.inspect_container(req.container_id)
            )

        return await self._serve(sid, "inspect_container", data, act)

    async def on_subscribe_logs(self, sid: str, data: Any) -> dict[str, Any]:
        """ext `subscribe_logs`: join the log room; lines follow as `container_log`."""

        async def act(req: ContainerRef) -> Wire:
            container_id = await self.bridge.subscribe_logs(sid, req.container_id)
            return LogSubscriptionOut.payload(container_id, "subscribed")

        return await self._serve(sid, "subscribe_logs", data, act)

    async def on_unsubscribe_logs(self, sid: str, data: Any) -> dict[str, Any]:
        """ext `unsubscribe_logs`: leave the log room."""

        async def act(req: ContainerRef) -> Wire:
            container_id = await self.bridge.unsubscribe_logs(sid, req.container_id)
            return LogSubscriptionOut.payload(container_id, "unsubscribed")

        return await self._serve(sid, "unsubscribe_logs", data, act)

    async def on_watch_stats(self, sid: str, data: Any) -> dict[str, Any]:
        """ext `watch_stats`: sample these at full rate and push them as `container_stats`."""

        async def act(req: WatchStatsRequest) -> Wire:
            watched, unknown = self.bridge.watch_stats(sid, req.container_ids)
            return WatchStatsOut.payload(watched, unknown)

        return await self._serve(sid, "watch_stats", data, act)

    async def on_get_history(self, sid: str, data: Any) -> dict[str, Any]:
        """ext `get_history` -> `history`: a page of the journal, oldest first."""

        async def act(req: GetHistoryRequest) -> Wire:
            page = await self.manager.get_history(
                since_seq=req.since_seq,
                container_id=req.container_id,
                types=req.types,
                limit=req.limit,
            )
            return HistoryOut.payload(page)

        return await self._serve(sid, "get_history", data, act)

    async def on_pause_container(self, sid: str, data: Any) -> dict[str, Any]:
        """ext `pause_container` -> `container_paused`."""

        async def act(req: ContainerRef) -> Wire:
            snap = await self.manager.pause_container(req.container_id)
            return ContainerPauseOut.payload(snap.id, "paused")

        return await self._serve(sid, "pause_container", data, act)

    async def on_unpause_container(self, sid: str, data: Any) -> dict[str, Any]:
        """ext `unpause_container` -> `container_unpaused`."""

        async def act(req: ContainerRef) -> Wire:
            snap = await self.manager.unpause_container(req.container_id)
            return ContainerPauseOut.payload(snap.id, "running")

        return await self._serve(sid, "unpause_container", data, act)

    async def on_kill_container(self, sid: str, data: Any) -> dict[str, Any]:
        """ext `kill_container` -> `container_killed` (the signal as sent, the state after)."""

        async def act(req: KillContainerRequest) -> Wire:
            signal = check_signal(req.signal)  # the name the answer echoes: "term" -> "SIGTERM"
            snap = await self.manager.kill_container(req.container_id, signal)
            return ContainerKilledOut.payload(snap, signal)

        return await self._serve(sid, "kill_container", data, act)

    async def on_open_shell(self, sid: str, data: Any) -> dict[str, Any]:
        """ext `open_shell` -> `shell_opened`: a shell in a flow's container, for this client."""

        async def act(req: OpenShellRequest) -> Wire:
            return await self.shells.open(sid, req.container_id, req.cols, req.rows)

        return await self._serve(sid, "open_shell", data, act)

    async def on_write_shell(self, sid: str, data: Any) -> dict[str, Any]:
        """ext `write_shell`: input for one of this client's shells (the ack alone)."""

        async def act(req: WriteShellRequest) -> Wire:
            return await self.shells.write(sid, req.session_id, req.data)

        return await self._serve(sid, "write_shell", data, act)

    async def on_resize_shell(self, sid: str, data: Any) -> dict[str, Any]:
        """ext `resize_shell`: the terminal's new size (the ack alone)."""

        async def act(req: ResizeShellRequest) -> Wire:
            return await self.shells.resize(sid, req.session_id, req.cols, req.rows)

        return await self._serve(sid, "resize_shell", data, act)

    async def on_close_shell(self, sid: str, data: Any) -> dict[str, Any]:
        """ext `close_shell` -> `shell_closed`: end one of this client's shells."""

        async def act(req: ShellRef) -> Wire:
            return await self.shells.close(sid, req.session_id)

        return await self._serve(sid, "close_shell", data, act)

    async def _emit_to(self, event: str, payload: Wire, sid: str) -> None:
        await self.emit(event, payload, to=sid)

    def _backlog_of(self, sid: str) -> int:
        pending = getattr(self.server.manager, "pending_bytes", None)
        return 0 if pending is None else int(pending(sid, self.namespace))

    async def _undecodable(self, req: RequestIn) -> Wire:
        raise InvalidRequest(
            "the request is not JSON this server decodes: nested too deeply, "
            "or an integer of more than 100 digits"
        )

    async def _unknown(self, req: RequestIn) -> Wire:
        raise InvalidRequest(
            "unknown event; see docs/PROTOCOL.md for the requests this server takes"
        )

    async def _serve(self, sid: str, name: str, data: Any, act: Action) -> dict[str, Any]:
        """Run request `name` with its fields and answer event from the wire catalog."""
        exchange = REQUESTS[name]
        return await self._run(sid, name, data, exchange.request, exchange.answer, act)

    async def _run(
        self, sid: str, operation: str, data: Any, schema: type[RequestIn], answer: str, act: Action
    ) -> dict[str, Any]:
        """Validate, act, then emit the answer (or `error`) to `sid`; the result is the ack."""
        try:
            await self.manager.until_adopted()  # at start: wait (bounded), then a typed error
            payload = await act(parse_request(schema, data))
        except Exception as exc:  # every failure becomes an `error` to this client only
            payload, answer = error_payload(exc, operation, data), "error"
        rid = request_id_of(data)
        if rid is not None:
            payload["request_id"] = rid
        if answer:
            payload = Encoded(payload)  # the answer event and the ack from one text
            await self.emit(answer, payload, to=sid)
        return payload
