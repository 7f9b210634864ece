"""A shell driven over the API (docs/PROTOCOL.md "Shells (ext)"): keys out as `write_shell`,
output in from `shell_output`, the end from `shell_exited`."""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from server.core.errors import FlowMgrError, InvalidRequest
from server.core.shell_limits import MAX_INPUT_BYTES
from server.wire.base import MalformedPayload
from server.wire.requests import RequestIn
from server.wire.shell import ResizeShellRequest, ShellExitedOut, ShellOutputOut, ShellRef

__all__ = ["RemoteShell", "ShellRoutes"]

logger = logging.getLogger(__name__)

OUTPUT_AHEAD = 64
"""Pushes held for the terminal; past it the client stops reading its connection."""
INPUT_BACKLOG = 256 << 10
"""Characters typed and not yet sent; past it keys are refused (a paste into a stuck link)."""
CLOSE_WAIT = 5.0
EARLY = 256
"""Pushes kept for a session whose `shell_opened` has not arrived yet (output can come first)."""

Send = Callable[[str, dict[str, Any]], Awaitable[Any]]
Call = Callable[[str, RequestIn], Awaitable[Any]]
"""RemoteBackend._call: a request sent, its ack checked (an `error` raised as the core's)."""


class RemoteShell:
    """One session of this client; bytes both ways, like the core's ShellSession."""

    def __init__(self, session_id: str, container_id: str, emit: Send, call: Call) -> None:
        self.session_id = session_id
        self.container_id = container_id
        self._emit = emit
        self._call = call
        self._out: asyncio.Queue[bytes | None] = asyncio.Queue(OUTPUT_AHEAD)
        self._keys: deque[str] = deque()
        self._pending = 0
        self._wake = asyncio.Event()
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._ended = asyncio.Event()
        self._code: int | None = None
        self._sender = asyncio.create_task(self._send(), name=f"shell-keys-{session_id[:6]}")

    # --- what the pushes feed ------------------------------------------------------------

    async def pushed(self, data: str) -> None:
        """Output from the server (waits while the terminal is OUTPUT_AHEAD behind)."""
        if not self._ended.is_set():
            await self._out.put(data.encode("utf-8", "replace"))

    async def exited(self, code: int | None) -> None:
        """The session ended (its `shell_exited`, or the link went: code None)."""
        if self._ended.is_set():
            return
        self._code = code
        self._ended.set()
        self._wake.set()
        await self._out.put(None)

    # --- the Shell protocol --------------------------------------------------------------

    async def output(self) -> AsyncIterator[bytes]:
        """The terminal's output until the session ends."""
        while (chunk := await self._out.get()) is not None:
            yield chunk

    def write(self, data: bytes) -> None:
        """Keys, sent in order in the background (a burst goes as one `write_shell`)."""
        text = self._decoder.decode(data)
        if not text:
            return
        if self._pending + len(text) > INPUT_BACKLOG:
            raise InvalidRequest("the link is not taking keys", details={"limit": INPUT_BACKLOG})
        self._keys.append(text)
        self._pending += len(text)
        self._wake.set()

    async def resize(self, cols: int, rows: int) -> None:
        """`resize_shell`."""
        request = ResizeShellRequest.model_construct(
            session_id=self.session_id, cols=cols, rows=rows
        )
        await self._call("resize_shell", request)

    async def exit_code(self) -> int | None:
        """Once ended: the shell's exit code (None: not known)."""
        await self._ended.wait()
        return self._code

    async def close(self) -> None:
        """`close_shell` unless it ended, then wait (bounded) for its `shell_exited`."""
        if not self._ended.is_set():
            with contextlib.suppress(FlowMgrError):  # it ended meanwhile, or the link is down
                await self._call(
                    "close_shell", ShellRef.model_construct(session_id=self.session_id)
                )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_WAIT):
                    await self._ended.wait()
        self._sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._sender

    async def _send(self) -> None:
        while not self._ended.is_set():
            await self._wake.wait()
            self._wake.clear()
            while self._keys and not self._ended.is_set():
                batch = self._keys.popleft()
                # one event per burst, cut to what one input may carry (a character is at
                # most 4 bytes of UTF-8)
                while self._keys and len(batch) + len(self._keys[0]) <= MAX_INPUT_BYTES // 4:
                    batch += self._keys.popleft()
                self._pending -= len(batch)
                try:
                    await self._emit("write_shell", {"session_id": self.session_id, "data": batch})
                except Exception as err:  # the link went: the session ends with it
                    logger.info("shell keys not sent: %s", err)
                    return


class ShellRoutes:
    """Routes `shell_output` / `shell_exited` to this client's sessions by id."""

    def __init__(self) -> None:
        self.shells: dict[str, RemoteShell] = {}
        self._early: deque[tuple[str, str, Any]] = deque(maxlen=EARLY)

    async def add(self, shell: RemoteShell) -> None:
        """A session just opened: what came for it before its answer goes first, in order
        (no await between the last look and the registration)."""
        while early := next((i for i in self._early if i[1] == shell.session_id), None):
            self._early.remove(early)
            await self._deliver(early[0], shell, early[2])
        self.shells[shell.session_id] = shell

    async def on_output(self, data: Any) -> None:
        """`shell_output` from the server."""
        try:
            msg = ShellOutputOut.decode(data)
        except MalformedPayload as err:
            logger.warning("ignored a malformed shell_output: %s", err)
            return
        await self._route("output", msg.session_id, msg.data)

    async def on_exited(self, data: Any) -> None:
        """`shell_exited` from the server."""
        try:
            msg = ShellExitedOut.decode(data)
        except MalformedPayload as err:
            logger.warning("ignored a malformed shell_exited: %s", err)
            return
        await self._route("exited", msg.session_id, msg.exit_code)
        self.shells.pop(msg.session_id, None)

    async def link_lost(self) -> None:
        """The connection went: the server ends its shells, so every session here ends."""
        shells, self.shells = self.shells, {}
        for shell in shells.values():
            await shell.exited(None)

    async def _route(self, event: str, session_id: str, value: Any) -> None:
        shell = self.shells.get(session_id)
        if shell is None:
            self._early.append((event, session_id, value))
            return
        await self._deliver(event, shell, value)

    @staticmethod
    async def _deliver(event: str, shell: RemoteShell, value: Any) -> None:
        if event == "output":
            await shell.pushed(value)
        else:
            await shell.exited(value)
