"""A bound on the service's client connections, so no client can take the descriptors flows need.

Anyone who reaches the port can open connections, token or not. uvicorn keeps a connection that
never sends a request open forever, and past `limit_concurrency` it still holds each new one to
answer 503. Each is a descriptor: a few thousand idle ones took the sockets, sample files and
journal the flows need ("Too many open files"). Here a connection beyond
`server.max_connections` is closed as soon as it is accepted, and one that has not sent a
request's headers within `server.idle_connection_timeout` seconds is closed. The descriptor
budget keeps that many in its reserve (`fd_budget.reserve_for`).
"""

from __future__ import annotations

import asyncio
import logging
import time

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from server.core.config import Settings

__all__ = ["BoundedHttpProtocol", "bound_connections"]

logger = logging.getLogger(__name__)

_SAID_EVERY = 10.0
"""Seconds between two log lines about connections refused (a flood must not flood the log)."""


class BoundedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing connections beyond the bound or without a request's
    headers in time."""

    idle_timeout = 10.0
    """Set per server by `bound_connections` (`server.idle_connection_timeout`)."""
    _refused = 0
    _said_at = 0.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._first: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        limit = self.config.limit_concurrency
        if limit is not None and len(self.connections) > limit:
            self._refuse(limit)
            transport.close()
            return
        self._first = self.loop.call_later(self.idle_timeout, self._idle_from_the_start)

    def on_headers_complete(self) -> None:
        # the headers whole, not a first byte: a client dribbling a byte at a time is idle too
        if self._first is not None:
            self._first.cancel()
            self._first = None
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._first is not None:
            self._first.cancel()
            self._first = None
        super().connection_lost(exc)

    def _idle_from_the_start(self) -> None:
        self._first = None
        if self.cycle is None and not self.transport.is_closing():
            self.transport.close()

    @classmethod
    def _refuse(cls, limit: int) -> None:
        cls._refused += 1
        now = time.monotonic()
        if now - cls._said_at >= _SAID_EVERY:
            logger.warning(
                "refused %d client connection(s) in the last %.0f s: %d open, the most "
                "server.max_connections allows",
                cls._refused,
                min(now - cls._said_at, _SAID_EVERY) if cls._said_at else 0.0,
                limit,
            )
            cls._refused, cls._said_at = 0, now


def bound_connections(config: Config, settings: Settings, given: set[str] | None = None) -> None:
    """Make `config` bound its connections as `settings` say, unless its command line (`given`:
    uvicorn's options) chose the HTTP protocol or the limit itself."""
    given = given or set()
    if "--http" not in given:
        config.http = type(
            "BoundedHttpProtocol",
            (BoundedHttpProtocol,),
            {"idle_timeout": settings.server.idle_connection_timeout},
        )
    if "--limit-concurrency" not in given:
        config.limit_concurrency = settings.server.max_connections
