"""FlowChannelHub: one listening Unix socket per managed container; frames in and out."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from server.core.bus import EventBus
from server.core.config import FlowSettings
from server.core.errors import (
    FlowSocketConnectionError,
    FlowSocketError,
    FlowSocketTimeout,
    FrameError,
    InvalidRequest,
)
from server.core.events import (
    FlowChannelConnected,
    FlowChannelLost,
    FlowFrameRejected,
    FlowMessageReceived,
    FlowMessageSent,
    now,
)
from server.core.fd_budget import CHANNEL_FDS, FdBudget
from server.core.frames import encode_frame, read_frame
from server.core.message_activity import MessageActivity
from server.core.models import ChannelInfo

__all__ = ["FlowChannelHub", "MAX_SOCKET_PATH_BYTES"]

logger = logging.getLogger(__name__)

CONTROL_KEY = "_flowmgr"
"""Reserved top-level frame key: the manager's envelope to the flow, the flow's control frames."""
MAX_SOCKET_PATH_BYTES = 107
"""sun_path holds 108 bytes including the terminating NUL."""
_YIELD_EVERY = 64
"""Frames one connection may handle before letting other flows' readers run."""


class _TokenBucket:
    """Inbound rate limit of one connection: how long to pause before the next frame."""

    def __init__(self, rate: float, burst: float) -> None:
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._stamp = asyncio.get_running_loop().time()

    def take(self) -> float:
        """Spend one token; the seconds to wait when the bucket ran dry (else 0)."""
        self._tokens -= 1
        if self._tokens >= 0:
            return 0.0
        now_ = asyncio.get_running_loop().time()
        self._tokens = min(self._burst, self._tokens + (now_ - self._stamp) * self._rate)
        self._stamp = now_
        return 0.0 if self._tokens >= 0 else -self._tokens / self._rate


@dataclass(eq=False)
class _Connection:
    """One accepted connection from a flow."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    task: asyncio.Task[Any] | None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Serialises senders so at most one frame waits in the manager's write buffer."""
    closed: bool = False


@dataclass(eq=False)
class _Channel:
    """One container's listening socket and its current connection."""

    container_id: str
    socket_path: str
    server: asyncio.AbstractServer | None = None
    inode: tuple[int, int] | None = None
    conn: _Connection | None = None
    last_communication: datetime | None = None
    rejected: int = 0
    """Bad frames so far (each one reset a connection)."""
    warned_at: float = float("-inf")
    rejected_unlogged: int = 0

    @property
    def short(self) -> str:
        return self.container_id[:12]

    def log_rejection(self, err: FrameError) -> None:
        """Warn about a bad frame, at most once a second per flow (a hostile flow may loop)."""
        self.rejected += 1
        stamp = asyncio.get_running_loop().time()
        if stamp - self.warned_at < 1.0:
            self.rejected_unlogged += 1
            return
        more = (
            f" ({self.rejected_unlogged} more since the last warning)"
            if self.rejected_unlogged
            else ""
        )
        logger.warning(
            "flow %s sent a bad frame (%s); its connection was reset%s", self.short, err, more
        )
        self.warned_at, self.rejected_unlogged = stamp, 0


def check_socket_path(socket_path: str) -> None:
    """InvalidRequest when the path cannot be a Unix socket address."""
    size = len(os.fsencode(socket_path))
    if size > MAX_SOCKET_PATH_BYTES:
        raise InvalidRequest(
            f"socket path {socket_path!r} is {size} bytes long; Unix socket paths are limited "
            f"to {MAX_SOCKET_PATH_BYTES} bytes: choose a shorter socket_dir or container name",
            field="socket_path",
            details={"socket_path": socket_path, "bytes": size},
        )


class FlowChannelHub:
    """The manager's side of every flow channel: the manager listens, the flow connects."""

    def __init__(
        self,
        bus: EventBus,
        settings: FlowSettings,
        *,
        frame_timeout: float = 10.0,
        inbound_rate: float = 20_000.0,
        inbound_burst: float = 2_000.0,
        budget: FdBudget | None = None,
    ) -> None:
        self._bus = bus
        self._budget = budget or FdBudget()
        """Each channel's descriptors are taken from it under the container id (CHANNEL_FDS)."""
        self._settings = settings
        self.activity = MessageActivity(bus, settings.message_activity_per_second)
        """The activity lines of messages both ways (a rate per flow, then a count)."""
        self._frame_timeout = frame_timeout
        """Seconds a started frame may take to arrive whole before the connection is reset."""
        self._inbound_rate = inbound_rate
        """Frames per second one connection may deliver (so a flooding flow cannot starve
        the others); beyond it the manager stops reading and the flow's writes block."""
        self._inbound_burst = inbound_burst
        self._channels: dict[str, _Channel] = {}
        self.on_control: Callable[[str, Any], None] | None = None
        """Gets (container_id, value) of every frame holding CONTROL_KEY (the outbox's
        acknowledgements); such a frame is never published as a flow message."""
        self.may_listen: Callable[[str], bool] | None = None
        """Asked under the path's lock right before a bind: whether that container may hold
        its socket path now (a node's agent: only a flow's newest task container, whose
        older ones share the path). None: any may."""
        self._path_locks: dict[str, tuple[asyncio.Lock, int]] = {}
        """Socket path -> (its lock, opens using it): one open at a time per path."""
        self._holders: dict[str, str] = {}
        """Socket path -> the container whose channel listens there."""

    # -- lifecycle -----------------------------------------------------------------------

    async def open(self, container_id: str, socket_path: str) -> None:
        """Listen on `socket_path` for the flow of `container_id` (idempotent).

        One path, one channel: opens on one path are serialised, `may_listen` is asked right
        before the bind, and a channel whose path another one takes is closed (its flow could
        no longer reach it, and sends to it would fail for ever)."""
        check_socket_path(socket_path)
        lock, users = self._path_locks.get(socket_path) or (asyncio.Lock(), 0)
        self._path_locks[socket_path] = (lock, users + 1)
        try:
            async with lock:
                await self._open(container_id, socket_path)
        finally:
            lock, users = self._path_locks[socket_path]
            if users > 1:
                self._path_locks[socket_path] = (lock, users - 1)
            else:
                del self._path_locks[socket_path]

    async def _open(self, container_id: str, socket_path: str) -> None:
        channel = self._channels.get(container_id)
        if channel is not None:
            if channel.socket_path == socket_path and self._still_listening(channel):
                return
            await self.close(container_id)
        if self.may_listen is not None and not self.may_listen(container_id):
            raise FlowSocketError(
                f"no flow socket for {container_id[:12]}: a newer container of its flow holds "
                f"{socket_path}",
                details={"container_id": container_id, "reason": "older_task"},
            )
        channel = _Channel(container_id, socket_path)
        path = Path(socket_path)
        # a new flow is refused before it can eat into the reserve that keeps the API, /health
        # and the sweep from EMFILE; flows that have their sockets keep them
        if not self._budget.try_take(container_id, CHANNEL_FDS):
            err = self._budget.refusal(f"the socket of flow {channel.short}", CHANNEL_FDS)
            err.details["socket_path"] = socket_path
            raise err
        try:
            sock, st = await asyncio.to_thread(_bind_listener, path)
            channel.server = await asyncio.start_unix_server(
                lambda r, w: self._serve(channel, r, w), sock=sock
            )
        except BaseException as err:
            self._budget.release(container_id, CHANNEL_FDS)
            if not isinstance(err, OSError):
                raise
            raise FlowSocketError(
                f"cannot listen on {socket_path}: {err}", details={"socket_path": socket_path}
            ) from err
        channel.inode = (st.st_dev, st.st_ino)
        self._channels[container_id] = channel
        other = self._holders.get(socket_path)
        self._holders[socket_path] = container_id
        if other is not None and other != container_id:
            logger.info("flow %s lost its socket path to %s", other[:12], channel.short)
            await self.close(other)  # not its file any more: left in place
        logger.debug("listening for flow %s on %s", channel.short, socket_path)

    async def close(self, container_id: str) -> None:
        """Stop listening, reset the connection and remove the socket file."""
        channel = self._channels.pop(container_id, None)
        if channel is None:
            return
        if self._holders.get(channel.socket_path) == container_id:
            del self._holders[channel.socket_path]
        self._budget.release(container_id, CHANNEL_FDS)
        self.activity.forget(container_id)
        if channel.conn is not None:
            self._drop(channel, channel.conn, "channel closed by the manager")
        if channel.server is not None:
            channel.server.close()
            try:
                async with asyncio.timeout(2):
                    await channel.server.wait_closed()
            except TimeoutError:
                logger.warning("socket server of flow %s did not close within 2 s", channel.short)
        if self._owns_file(channel):
            Path(channel.socket_path).unlink(missing_ok=True)

    async def aclose(self) -> None:
        """Close every channel."""
        for container_id in list(self._channels):
            await self.close(container_id)

    def info(self, container_id: str) -> ChannelInfo | None:
        """The channel's state, or None when there is none."""
        channel = self._channels.get(container_id)
        if channel is None:
            return None
        return ChannelInfo(
            container_id, channel.socket_path, channel.conn is not None, channel.last_communication
        )

    # -- sending -------------------------------------------------------------------------

    async def send(self, container_id: str, message: dict[str, Any]) -> None:
        """Write one frame to the flow; returns once it is in the socket.

        Raises FlowSocketConnectionError at once when the flow is not connected, and
        FlowSocketTimeout (resetting the connection) when the flow does not take the frame
        within `send_timeout`.
        """
        channel = self._channels.get(container_id)
        conn = channel.conn if channel is not None else None
        if channel is None or conn is None:
            raise FlowSocketConnectionError(
                f"flow {container_id[:12]} is not connected to its socket",
                details={"container_id": container_id},
            )
        timeout = self._settings.send_timeout
        try:
            if conn.lock.locked():
                async with asyncio.timeout(timeout):
                    await self._write(conn, message, timeout)
            else:  # the common case, without a timer: nobody to wait for
                await self._write(conn, message, timeout)
        except TimeoutError:
            self._drop(channel, conn, f"send timed out after {timeout} s")
            raise FlowSocketTimeout(
                f"flow {channel.short} did not take the message within {timeout} s",
                details={"container_id": container_id, "timeout": timeout},
            ) from None
        except (ConnectionError, OSError) as err:
            self._drop(channel, conn, f"connection error while sending: {err}")
            raise FlowSocketConnectionError(
                f"flow {channel.short} disconnected while sending: {err}",
                details={"container_id": container_id},
            ) from None
        stamp = now()
        channel.last_communication = stamp
        self._bus.publish(FlowMessageSent(container_id=container_id, message=message, at=stamp))
        self.activity.line(container_id, "message_sent", message, stamp)

    async def _write(self, conn: _Connection, message: dict[str, Any], timeout: float) -> None:
        """Write one frame; return once all of it is in the socket (drain under `timeout`)."""
        async with conn.lock:
            if conn.closed or conn.writer.is_closing():
                raise ConnectionResetError("connection closed")
            # Encoded under the lock: waiting senders hold no second copy of a frame.
            conn.writer.write(encode_frame(message, self._settings.max_frame_bytes))
            if conn.writer.is_closing():  # the socket refused the write (peer gone)
                raise ConnectionResetError("connection lost while writing")
            if conn.writer.transport.get_write_buffer_size():
                async with asyncio.timeout(timeout):
                    await conn.writer.drain()

    # -- receiving -----------------------------------------------------------------------

    async def _serve(
        self, channel: _Channel, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        conn = _Connection(reader, writer, asyncio.current_task())
        # high=0: any byte left in user space pauses writing, so drain() returns only once
        # the whole frame is in the socket (and at most one frame ever waits in memory).
        writer.transport.set_write_buffer_limits(high=0)
        if self._channels.get(channel.container_id) is not channel:
            writer.transport.abort()  # a late accept on a channel already closed
            return
        if channel.conn is not None:
            self._drop(channel, channel.conn, "replaced by a new connection from the flow")
        channel.conn = conn
        self._bus.publish(FlowChannelConnected(container_id=channel.container_id))
        logger.info("flow %s connected to %s", channel.short, channel.socket_path)
        reason = "closed by the flow"
        try:
            await self._read_loop(channel, conn)
        except FrameError as err:
            reason = f"frame rejected: {err}"
            channel.log_rejection(err)
            self._bus.publish(FlowFrameRejected(container_id=channel.container_id, reason=str(err)))
        except (ConnectionError, OSError) as err:
            reason = f"connection error: {err}"
        except asyncio.CancelledError:
            # Cancelled by _drop or at shutdown: end normally, because asyncio's streams
            # report a cancelled connection handler as an error in their done-callback.
            reason = "channel closed by the manager"
        finally:
            self._drop(channel, conn, reason)

    async def _read_loop(self, channel: _Channel, conn: _Connection) -> None:
        bucket = _TokenBucket(self._inbound_rate, self._inbound_burst)
        count = 0
        while True:
            message = await read_frame(
                conn.reader, self._settings.max_frame_bytes, self._frame_timeout
            )
            if message is None:
                return
            self._received(channel, message)
            pause = bucket.take()
            count += 1
            # Buffered frames are read without suspending: yield now and then for fairness.
            if pause > 0 or count % _YIELD_EVERY == 0:
                await asyncio.sleep(pause)

    def _received(self, channel: _Channel, message: dict[str, Any]) -> None:
        stamp = now()
        channel.last_communication = stamp
        cid = channel.container_id
        if CONTROL_KEY in message:  # the runtime's control frame (an ack), junk or not
            if self.on_control is not None:
                self.on_control(cid, message[CONTROL_KEY])
            return
        self._bus.publish(FlowMessageReceived(container_id=cid, message=message, at=stamp))
        self.activity.line(cid, "message_received", message, stamp)

    def _drop(self, channel: _Channel, conn: _Connection, reason: str) -> None:
        """Reset `conn`; publish FlowChannelLost if it was the channel's current one."""
        if conn.closed:
            return
        conn.closed = True
        conn.writer.transport.abort()
        if conn.task is not None and conn.task is not asyncio.current_task():
            conn.task.cancel()
        if channel.conn is conn:
            channel.conn = None
            self._bus.publish(FlowChannelLost(container_id=channel.container_id, reason=reason))
            logger.info("flow %s disconnected: %s", channel.short, reason)

    # -- the socket file -----------------------------------------------------------------

    def _still_listening(self, channel: _Channel) -> bool:
        return (
            channel.server is not None and channel.server.is_serving() and self._owns_file(channel)
        )

    @staticmethod
    def _owns_file(channel: _Channel) -> bool:
        """True while the path is still our socket (a newer manager may have replaced it)."""
        try:
            st = os.stat(channel.socket_path)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == channel.inode


def _bind_listener(path: Path) -> tuple[socket.socket, os.stat_result]:
    """Make the directory, replace a stale socket file, bind and listen, in a worker thread.

    They are file-system calls: on the event loop, adopting 200 flows at start-up would hold
    the panel's first screen behind them.

    The socket is bound under a temporary name one level up (the manager's own directory, which
    no flow reaches), made 0666 there and renamed into place. A flow running as root owns the
    inside of its mounted directory: had the socket been bound in place, the flow could swap
    `flow.sock` for a symbolic link between bind and chmod, and chmod, which follows links,
    would open a host file of its choosing to everyone.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    _unlink_stale(path)
    tmp = path.parent.parent / f".s{secrets.token_hex(3)}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(tmp))
        try:
            # The flow's uid may differ from ours (a root flow with no CAP_DAC_OVERRIDE, a
            # non-root manager): the per-flow directory, mounted into that flow alone, is
            # what confines access, so the socket itself is open to any uid.
            os.chmod(tmp, 0o666)
            st = tmp.lstat()
            os.rename(tmp, path)  # replaces a link or file the flow put there, never follows it
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        sock.listen(100)
        sock.setblocking(False)
        return sock, st
    except BaseException:
        sock.close()
        raise


def _unlink_stale(path: Path) -> None:
    """Remove a socket file left by an earlier listener; refuse to remove anything else."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FlowSocketError(
            f"{path} exists and is not a socket; refusing to replace it",
            details={"socket_path": str(path)},
        )
    path.unlink(missing_ok=True)
