"""flowrt: the runtime flow code imports inside its container (Python standard library only).

A flow registers handlers by command name; the runtime connects to the manager's Unix socket
(`$FLOW_SOCKET`), reconnects on its own, dispatches each incoming message to the handler named by
its `"command"` field, sends back whatever the handler returns, and logs to stdout.

    import flowrt

    @flowrt.command("echo")
    def echo(message):
        return {"echo": message.get("text")}

Frames on the wire: a 4-byte big-endian length, then that many bytes of UTF-8 JSON (an object).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import struct
import sys
import threading
from collections.abc import Callable
from typing import Any

__all__ = [
    "Flow",
    "Handler",
    "NotConnected",
    "FrameError",
    "flow",
    "command",
    "default",
    "on_connect",
    "send",
    "run",
    "stop",
    "setup_logging",
]

Message = dict[str, Any]
Handler = Callable[[Message], "Message | None"]

HEADER = struct.Struct(">I")
DEFAULT_SOCKET = "/run/flowmgr/flow.sock"
DEFAULT_MAX_FRAME = 1024 * 1024
BACKOFF_FIRST = 0.05
BACKOFF_CAP = 0.5
"""Reconnect delays double from BACKOFF_FIRST up to BACKOFF_CAP, so a restarted manager is
found again well within 2 s."""

ENVELOPE_KEY = "_flowmgr"
"""Reserved key: the manager's envelope on a queued message (stripped before the handler sees
it) and this runtime's acknowledgement `{"_flowmgr": {"ack": <message_id>}}`."""
DEDUP_IDS = 16_384
"""Queued-message ids remembered to drop a redelivery (at least `journal.queue_max_per_flow`)."""

log = logging.getLogger("flowrt")


class NotConnected(ConnectionError):
    """The flow has no connection to the manager right now; the message was not sent."""


class FrameError(ValueError):
    """A frame broke the channel's rules (too large, not UTF-8 JSON, not an object)."""


def encode(message: Message, max_bytes: int) -> bytes:
    """One frame: length prefix plus compact UTF-8 JSON."""
    if not isinstance(message, dict):
        raise FrameError(f"a message must be a JSON object (dict), not {type(message).__name__}")
    body = json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
        "utf-8"
    )
    if len(body) > max_bytes:
        raise FrameError(f"message of {len(body)} bytes exceeds the {max_bytes}-byte maximum")
    return HEADER.pack(len(body)) + body


def decode(body: bytes) -> Message:
    """The JSON object held in a frame body."""
    try:
        value = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise FrameError(f"frame is not UTF-8 JSON: {err}") from None
    if not isinstance(value, dict):
        raise FrameError(f"frame holds a JSON {type(value).__name__}, not an object")
    return value


def _read_exactly(stream: Any, size: int) -> bytes | None:
    """`size` bytes, or None on end of stream (a partial read counts as end)."""
    data = stream.read(size)
    if data is None or len(data) < size:
        return None
    return bytes(data)


class Flow:
    """One flow: its handlers and its connection to the manager."""

    def __init__(
        self, socket_path: str | None = None, *, max_frame_bytes: int | None = None
    ) -> None:
        self.socket_path = socket_path or os.environ.get("FLOW_SOCKET", DEFAULT_SOCKET)
        self.max_frame_bytes = max_frame_bytes or int(
            os.environ.get("FLOW_MAX_FRAME_BYTES", DEFAULT_MAX_FRAME)
        )
        self.handlers: dict[str, Handler] = {}
        self.seen: dict[str, None] = {}
        """Ids of queued messages already handled, oldest first (at most `dedup_ids`)."""
        self.dedup_ids = DEDUP_IDS
        self.fallback: Handler | None = None
        self.connect_hooks: list[Callable[[], None]] = []
        self.running = False
        self._sock: socket.socket | None = None
        self._send_lock = threading.Lock()
        self._connected = threading.Event()
        self._stopping = threading.Event()

    # -- registration --------------------------------------------------------------------

    def command(self, name: str) -> Callable[[Handler], Handler]:
        """Decorator: `handler(message)` answers messages whose "command" is `name`."""

        def register(handler: Handler) -> Handler:
            self.handlers[name] = handler
            return handler

        return register

    def default(self, handler: Handler) -> Handler:
        """Decorator: the handler for messages no other handler claims."""
        self.fallback = handler
        return handler

    def on_connect(self, hook: Callable[[], None]) -> Callable[[], None]:
        """Decorator: call `hook()` after every (re)connection, e.g. to announce state."""
        self.connect_hooks.append(hook)
        return hook

    # -- sending -------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while a connection to the manager is up."""
        return self._connected.is_set()

    def send(self, message: Message, *, wait: float = 0.0) -> None:
        """Send one message to the manager; safe from any thread.

        Waits up to `wait` seconds for a connection, then raises NotConnected: nothing is queued.
        """
        frame = encode(message, self.max_frame_bytes)
        if wait > 0:
            self._connected.wait(wait)
        with self._send_lock:
            sock = self._sock
            if sock is None or not self._connected.is_set():
                raise NotConnected(f"not connected to the manager at {self.socket_path}")
            try:
                sock.sendall(frame)
            except OSError as err:
                raise NotConnected(f"connection to the manager broke: {err}") from err

    # -- the loop ------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask `run()` to return (also what SIGTERM and SIGINT do)."""
        self._stopping.set()
        sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed: run() notices the stop flag either way

    def run(self) -> None:
        """Connect, serve messages, reconnect when the connection ends; return on stop()."""
        self.running = True
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, lambda *_: self.stop())
        log.info(
            "flow runtime started; commands: %s; socket %s",
            ", ".join(sorted(self.handlers)) or "(none)",
            self.socket_path,
        )
        delay = BACKOFF_FIRST
        while not self._stopping.is_set():
            sock = self._connect()
            if sock is None:
                self._stopping.wait(delay)
                delay = min(delay * 2, BACKOFF_CAP)
                continue
            delay = BACKOFF_FIRST
            self._serve(sock)
        log.info("flow runtime stopped")

    def _connect(self) -> socket.socket | None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(2.0)
            sock.connect(self.socket_path)
            sock.settimeout(None)
        except OSError as err:
            sock.close()
            log.debug("cannot connect to %s yet: %s", self.socket_path, err)
            return None
        with self._send_lock:
            self._sock = sock
            self._connected.set()
        log.info("connected to the manager at %s", self.socket_path)
        for hook in self.connect_hooks:
            self._guarded(hook.__name__, hook)
        return sock

    def _serve(self, sock: socket.socket) -> None:
        stream = sock.makefile("rb")
        try:
            while not self._stopping.is_set():
                message = self._read(stream)
                if message is None:
                    break
                self._dispatch(message)
        except (OSError, FrameError) as err:
            log.warning("connection to the manager reset: %s", err)
        finally:
            with self._send_lock:
                self._connected.clear()
                self._sock = None
            stream.close()
            sock.close()
        if not self._stopping.is_set():
            log.info("disconnected from the manager; reconnecting")

    def _read(self, stream: Any) -> Message | None:
        header = _read_exactly(stream, HEADER.size)
        if header is None:
            return None
        (size,) = HEADER.unpack(header)
        if size > self.max_frame_bytes:
            raise FrameError(f"frame of {size} bytes exceeds the {self.max_frame_bytes}-byte max")
        body = _read_exactly(stream, size)
        if body is None:
            return None
        return decode(body)

    def _dispatch(self, message: Message) -> None:
        envelope = message.pop(ENVELOPE_KEY, None)
        message_id = envelope.get("message_id") if isinstance(envelope, dict) else None
        if not isinstance(message_id, str):
            self._handle(message)
            return
        # a queued message: at least once from the manager, once to the handler
        if message_id not in self.seen:
            self._handle(message)
            self.seen[message_id] = None
            if len(self.seen) > self.dedup_ids:
                del self.seen[next(iter(self.seen))]
        self._ack(message_id)

    def _ack(self, message_id: str) -> None:
        """Tell the manager the message was handled; a lost ack only means a redelivery."""
        try:
            self.send({ENVELOPE_KEY: {"ack": message_id}})
        except (NotConnected, FrameError) as err:
            log.info("acknowledgement of queued message %s not sent: %s", message_id, err)

    def _handle(self, message: Message) -> None:
        name = message.get("command")
        handler = self.handlers.get(name) if isinstance(name, str) else None
        handler = handler or self.fallback
        if handler is None:
            log.warning("no handler for command %r", name)
            self._reply(message, {"error": "unknown_command", "command": name})
            return
        try:
            answer = handler(message)
        except Exception as err:  # a handler's bug must not take the flow down
            log.exception("handler for %r failed", name)
            answer = {"error": "handler_failed", "command": name, "message": str(err)}
        if answer is not None:
            self._reply(message, answer)

    def _reply(self, request: Message, answer: Message) -> None:
        if "request_id" in request and isinstance(answer, dict):
            answer = {**answer, "request_id": request["request_id"]}
        try:
            self.send(answer)
        except (NotConnected, FrameError) as err:
            log.warning("reply to %r not sent: %s", request.get("command"), err)

    def _guarded(self, what: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:  # a hook's bug must not take the flow down
            log.exception("%s failed", what)


def setup_logging() -> None:
    """Log lines to stdout (what `docker logs` shows), level from $FLOW_LOG_LEVEL."""
    logging.basicConfig(
        stream=sys.stdout,
        level=os.environ.get("FLOW_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


flow = Flow()
"""The default flow that the module-level helpers below act on."""
command = flow.command
default = flow.default
on_connect = flow.on_connect
send = flow.send
run = flow.run
stop = flow.stop
