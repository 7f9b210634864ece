"""A Unix-socket relay to the real dockerd: cutting it is a real engine loss for its clients."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

__all__ = ["Relay", "ENGINE", "Streams", "relay_to_engine"]

ENGINE = "/var/run/docker.sock"


class Relay:
    """Forwards a Unix socket to dockerd; `cut()` drops it and every open connection."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def open(self) -> None:
        self._server = await asyncio.start_unix_server(self._serve, str(self.path))

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_unix_connection(ENGINE)
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}


Streams = tuple[
    asyncio.StreamReader, asyncio.StreamWriter, asyncio.StreamReader, asyncio.StreamWriter
]
"""A client's reader and writer, then the reader and writer of its connection to dockerd."""


@contextlib.asynccontextmanager
async def relay_to_engine(
    path: Path,
    forward: Callable[[Streams], Awaitable[None]],
) -> AsyncIterator[str]:
    """A Unix socket at `path` whose every client is connected to dockerd; `forward` moves
    (or holds, or drops) the bytes. Yields the `unix://` URL; on exit every relayed connection
    is closed now (left to the garbage collector, their writers warn inside the next test)."""
    writers: list[asyncio.StreamWriter] = []
    tasks: set[asyncio.Task[None]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tasks.add(asyncio.current_task())  # type: ignore[arg-type]
        up_reader, up_writer = await asyncio.open_unix_connection(ENGINE)
        writers.extend((writer, up_writer))
        await forward((reader, writer, up_reader, up_writer))

    server = await asyncio.start_unix_server(serve, str(path))
    try:
        yield f"unix://{path}"
    finally:
        server.close()
        for w in writers:
            w.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 5)
