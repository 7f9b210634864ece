"""Anyone who reaches the port can open connections: a flood of idle ones must not take the
descriptors flows need, nor the connected clients' service (server.max_connections,
server.idle_connection_timeout)."""

from __future__ import annotations

import asyncio
import os

import httpx
import pytest
from api_harness import client, running_service

from server.api.connection_limit import BoundedHttpProtocol, bound_connections
from server.core.config import Settings, load_settings
from server.core.fd_budget import reserve_for

pytestmark = pytest.mark.docker

LIMIT = 20
FLOOD = 60
IDLE = 2.0


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def _closed_by_server(reader: asyncio.StreamReader, wait: float) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), wait) == b""
    except TimeoutError:
        return False
    except ConnectionError:
        return True


async def test_an_idle_connection_flood_is_bounded_and_clients_keep_working(
    settings: Settings,
) -> None:
    bounded = settings.model_copy(
        update={
            "server": settings.server.model_copy(
                update={"max_connections": LIMIT, "idle_connection_timeout": IDLE}
            )
        }
    )
    async with running_service(bounded) as svc, client(svc.url) as (sio, _):
        before = _open_fds()
        flood = [await asyncio.open_connection("127.0.0.1", svc.port) for _ in range(FLOOD)]
        try:
            closed = await asyncio.gather(*(_closed_by_server(r, 0.5) for r, _ in flood))
            # the connected client holds one place: the rest of the flood beyond the bound
            # is closed at once, so the service's descriptors grow by the bound at most
            assert sum(closed) >= FLOOD - LIMIT + 1, sum(closed)
            # (this process holds the flood's own ends too: FLOOD of them)
            assert _open_fds() - before - FLOOD <= LIMIT + 5
            # the client connected before the flood is still served
            answer = await sio.call("list_containers", {}, timeout=10)
            assert "containers" in answer
            # connections that never begin a request are closed after the idle timeout
            idle = [r for (r, _), gone in zip(flood, closed, strict=True) if not gone]
            gone = await asyncio.gather(*(_closed_by_server(r, IDLE + 3) for r in idle))
            assert idle and all(gone)
            async with httpx.AsyncClient() as http:
                assert (await http.get(f"{svc.url}/health")).status_code in (200, 503)
            # a client dribbling its headers a byte at a time is idle too
            reader, writer = await asyncio.open_connection("127.0.0.1", svc.port)
            flood.append((reader, writer))
            started = asyncio.get_running_loop().time()
            for byte in b"GET /health HTTP/1.1\r\nHost: x\r\n":
                if writer.is_closing() or reader.at_eof():
                    break
                writer.write(bytes([byte]))
                await asyncio.sleep(0.25)
                if asyncio.get_running_loop().time() - started > IDLE + 3:
                    break
            assert await _closed_by_server(reader, 1.0)
            # the websocket client outlived the idle timeout: its upgrade was a request
            assert sio.connected and "containers" in await sio.call(
                "list_containers", {}, timeout=10
            )
        finally:
            for _, writer in flood:
                writer.close()


def test_the_budget_reserve_covers_the_connections() -> None:
    assert reserve_for(load_settings(env={})) == 256
    many = load_settings(env={}, server__max_connections=1000)
    assert reserve_for(many) == 1056


def test_uvicorns_own_options_win() -> None:
    import uvicorn

    settings = load_settings(env={}, server__max_connections=7, server__idle_connection_timeout=3)
    config = uvicorn.Config("main:app")
    bound_connections(config, settings)
    assert isinstance(config.http, type) and issubclass(config.http, BoundedHttpProtocol)
    assert config.http.idle_timeout == 3 and config.limit_concurrency == 7
    given = uvicorn.Config("main:app", http="h11", limit_concurrency=50)
    bound_connections(given, settings, {"--http", "--limit-concurrency"})
    assert given.http == "h11" and given.limit_concurrency == 50
