"""A slow engine (every request delayed) never freezes the event loop; a stuck call times out."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from server.core.config import Settings
from server.core.docker_adapter import DockerAdapter
from server.core.errors import DockerApiError
from server.core.manager import ContainerManager
from server.core.models import CreateSpec
from tests.integration.engine_relay import Streams, relay_to_engine
from tests.integration.manager_helpers import BUSYBOX

pytestmark = [
    pytest.mark.docker,
]


@contextlib.asynccontextmanager
async def slow_engine(path: Path, delay: float) -> AsyncIterator[str]:
    """A Unix-socket relay to dockerd that holds every request chunk for `delay` seconds."""

    async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, hold: float) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await src.read(65536):
                if hold:
                    await asyncio.sleep(hold)
                dst.write(data)
                await dst.drain()
        dst.close()

    async def forward(streams: Streams) -> None:
        reader, writer, up_reader, up_writer = streams
        await asyncio.gather(pipe(reader, up_writer, delay), pipe(up_reader, writer, 0))

    async with relay_to_engine(path, forward) as url:
        yield url


@contextlib.asynccontextmanager
async def lag_meter(period: float = 0.01) -> AsyncIterator[list[float]]:
    """Samples how late the loop wakes a `period` sleep: the loop's lag."""
    lags: list[float] = []

    async def tick() -> None:
        while True:
            began = time.perf_counter()
            await asyncio.sleep(period)
            lags.append(time.perf_counter() - began - period)

    task = asyncio.create_task(tick())
    try:
        yield lags
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[int(len(ordered) * 0.99)]


async def test_slow_engine_never_freezes_the_loop(
    settings: Settings, unique_name: Callable[[str], str]
) -> None:
    async with (
        slow_engine(Path(settings.socket_dir) / "slow.sock", 1.0) as url,
        lag_meter() as lags,
    ):
        m = ContainerManager(settings, adapter=DockerAdapter(30.0, base_url=url))
        async with m:
            began = time.monotonic()
            snap = await m.create_container(CreateSpec(name=unique_name("slow"), image=BUSYBOX))
            assert time.monotonic() - began >= 1.0  # the engine really was slow
            await m.start_container(snap.id)
            await m.stop_container(snap.id)
            await m.delete_container(snap.id)
        assert len(lags) > 100, "the loop barely ran"
    assert _p99(lags) < 0.1, f"loop lag p99 {_p99(lags) * 1000:.0f} ms while the engine is slow"
    gc.collect()


async def test_a_stuck_engine_call_times_out_with_a_typed_error(
    settings: Settings, unique_name: Callable[[str], str]
) -> None:
    async with slow_engine(Path(settings.socket_dir) / "stuck.sock", 0.0) as url:
        m = ContainerManager(settings, adapter=DockerAdapter(2.0, base_url=url))
        async with m:
            snap = await m.create_container(CreateSpec(name=unique_name("stuck"), image=BUSYBOX))
    async with (
        slow_engine(Path(settings.socket_dir) / "stuck2.sock", 10.0) as url,
        lag_meter() as lags,
    ):
        adapter = DockerAdapter(2.0, base_url=url)
        began = time.monotonic()
        with pytest.raises(DockerApiError):
            await adapter.inspect(snap.id)
        took = time.monotonic() - began
    assert took < 8.0, f"a call with a 2 s timeout took {took:.1f} s"
    assert _p99(lags) < 0.1
    gc.collect()
