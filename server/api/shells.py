"""ext shells over Socket.IO: each client's sessions, their output pumped to that client alone,
ended when it asks or leaves."""

from __future__ import annotations

import asyncio
import codecs
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from server.core.errors import InvalidRequest
from server.wire.base import Wire
from server.wire.shell import (
    ShellClosedOut,
    ShellExitedOut,
    ShellOpenedOut,
    ShellOutputOut,
    ShellResizedOut,
    ShellWrittenOut,
)

if TYPE_CHECKING:
    from server.core.manager import ContainerManager
    from server.core.shell import ShellSession

__all__ = ["ShellBroker", "MAX_SHELLS_PER_CLIENT", "MAX_SHELLS", "CLIENT_BACKLOG"]

logger = logging.getLogger(__name__)

MAX_SHELLS_PER_CLIENT = 4
"""Shell sessions one client may hold open at once."""
MAX_SHELLS = 32
"""Shell sessions the service holds open at once (two threads and an exec each)."""
CLIENT_BACKLOG = 1 << 20
"""Bytes queued for a client past which its shells' output waits (and so their shells)."""
_BACKLOG_POLL = 0.02

Emit = Callable[[str, Wire, str], Awaitable[None]]


@dataclass
class _Open:
    session: ShellSession
    pump: asyncio.Task[None] | None = None


class ShellBroker:
    """Opens shells for clients and keeps each session with the client that opened it: another
    client's session id is answered like an unknown one."""

    def __init__(
        self, manager: ContainerManager, emit: Emit, backlog: Callable[[str], int]
    ) -> None:
        self._manager = manager
        self._emit = emit
        self._backlog = backlog
        """A client's bytes queued and not yet sent (its sid)."""
        self._clients: dict[str, dict[str, _Open]] = {}
        self._opening: dict[str, int] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def count(self) -> int:
        """Sessions open now (and being opened)."""
        return sum(map(len, self._clients.values())) + sum(self._opening.values())

    async def open(self, sid: str, ref: str, cols: int, rows: int) -> Wire:
        """`open_shell`: one exec in the container, owned by `sid`."""
        mine = self._clients.setdefault(sid, {})
        if len(mine) + self._opening.get(sid, 0) >= MAX_SHELLS_PER_CLIENT:
            raise InvalidRequest(
                f"a client may hold {MAX_SHELLS_PER_CLIENT} shells at once: close one first",
                details={"limit": MAX_SHELLS_PER_CLIENT, "setting": "MAX_SHELLS_PER_CLIENT"},
            )
        if self.count() >= MAX_SHELLS:
            raise InvalidRequest(
                f"the service holds {MAX_SHELLS} shells at once: try again later",
                details={"limit": MAX_SHELLS, "setting": "MAX_SHELLS"},
            )
        self._opening[sid] = self._opening.get(sid, 0) + 1
        try:
            session = await self._manager.open_shell(ref, cols, rows)
        finally:  # the client may have left meanwhile (client_left dropped its count)
            left = self._opening.get(sid, 0) - 1
            if left > 0:
                self._opening[sid] = left
            else:
                self._opening.pop(sid, None)
        if self._clients.get(sid) is not mine:  # it left while the exec started
            await session.close()
            raise InvalidRequest("the client left", details={"reason": "client_left"})
        session_id = secrets.token_urlsafe(16)
        entry = mine[session_id] = _Open(session)
        entry.pump = asyncio.create_task(
            self._pump(sid, session_id, session), name=f"shell-pump-{session_id[:6]}"
        )
        return ShellOpenedOut.payload(session_id, session.container_id, cols, rows)

    async def write(self, sid: str, session_id: str, data: str) -> Wire:
        """`write_shell`: input queued in order for the terminal."""
        session = self._mine(sid, session_id)
        try:
            raw = data.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidRequest(
                "data must be text UTF-8 can hold (no lone surrogates)", field="data"
            ) from None
        session.write(raw)
        return ShellWrittenOut.payload(session_id, len(raw))

    async def resize(self, sid: str, session_id: str, cols: int, rows: int) -> Wire:
        """`resize_shell`."""
        await self._mine(sid, session_id).resize(cols, rows)
        return ShellResizedOut.payload(session_id, cols, rows)

    async def close(self, sid: str, session_id: str) -> Wire:
        """`close_shell`: end the process; `shell_exited` goes out from the pump."""
        await self._mine(sid, session_id).close()
        return ShellClosedOut.payload(session_id)

    def client_left(self, sid: str) -> None:
        """End every shell of a client that disconnected (in the background: a hang-up may
        take a couple of seconds, and the disconnect handler does not wait for it)."""
        self._opening.pop(sid, None)
        for entry in self._clients.pop(sid, {}).values():
            task = asyncio.create_task(self._end(entry), name="shell-end")
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def stop(self) -> None:
        """End every shell (the service is stopping)."""
        for sid in list(self._clients):
            self.client_left(sid)
        if self._closing:
            await asyncio.wait(set(self._closing), timeout=10)

    def _mine(self, sid: str, session_id: str) -> ShellSession:
        entry = self._clients.get(sid, {}).get(session_id)
        if entry is None:
            raise InvalidRequest(
                "no open shell of this client has that session_id (it ended, or is not yours)",
                field="session_id",
                details={"reason": "unknown_session"},
            )
        return entry.session

    async def _end(self, entry: _Open) -> None:
        try:
            await entry.session.close()
        except Exception:  # logged: the exec may outlive us, the client is gone anyway
            logger.exception("a departed client's shell did not end cleanly")
        finally:
            if entry.pump is not None:
                entry.pump.cancel()

    async def _pump(self, sid: str, session_id: str, session: ShellSession) -> None:
        """Output to the owner while it takes it (bounded by CLIENT_BACKLOG), then the exit."""
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        try:
            async for chunk in session.output():
                while self._backlog(sid) > CLIENT_BACKLOG:
                    await asyncio.sleep(_BACKLOG_POLL)
                text = decoder.decode(chunk)
                if text:
                    await self._emit(
                        ShellOutputOut.event, ShellOutputOut.payload(session_id, text), sid
                    )
            tail = decoder.decode(b"", final=True)
            if tail:
                await self._emit(
                    ShellOutputOut.event, ShellOutputOut.payload(session_id, tail), sid
                )
            await session.close()  # ended by itself: the stream is cut, nothing to kill
            code = await session.exit_code()
            self._clients.get(sid, {}).pop(session_id, None)
            exited = ShellExitedOut.payload(session_id, session.container_id, code)
            await self._emit(ShellExitedOut.event, exited, sid)
        finally:
            self._clients.get(sid, {}).pop(session_id, None)

    async def _output(self, sid: str, session_id: str, text: str) -> None:
        if text:
            await self._emit(ShellOutputOut.event, ShellOutputOut.payload(session_id, text), sid)
