"""Helpers for the ContainerManager tests: a started manager, event waits, docker CLI checks."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from server.core.bus import Subscription
from server.core.config import Settings
from server.core.events import Event
from server.core.manager import ContainerManager

__all__ = [
    "BUSYBOX",
    "UNHEALTHY",
    "BASE",
    "WAIT",
    "started_manager",
    "wait_event",
    "docker",
    "inspect",
    "labelled_ids",
    "no_event",
]

BUSYBOX = "flowmgr-test-busybox:latest"
UNHEALTHY = "flowmgr-test-unhealthy:latest"
BASE = "flowmgr-base:bookworm"
WAIT = 30.0
"""Seconds an expected event may take on a busy machine."""

E = TypeVar("E", bound=Event)


@asynccontextmanager
async def started_manager(settings: Settings) -> AsyncIterator[ContainerManager]:
    """A started manager, stopped at the end of the block."""
    manager = ContainerManager(settings)
    async with manager:
        yield manager


async def wait_event(
    sub: Subscription,
    kind: type[E],
    pred: Callable[[E], bool] = lambda e: True,
    timeout: float = WAIT,
) -> E:
    """The next event of `kind` matching `pred`, or TimeoutError."""
    async with asyncio.timeout(timeout):
        async for event in sub:
            if isinstance(event, kind) and pred(event):
                return event
    raise AssertionError("the bus closed before the event arrived")


def no_event(sub: Subscription, kind: type[Event], container_id: str) -> list[Event]:
    """Queued events of `kind` for `container_id` (drains the queue)."""
    found: list[Event] = []
    while (event := sub.get_nowait()) is not None:
        if isinstance(event, kind) and getattr(event, "container_id", None) == container_id:
            found.append(event)
    return found


async def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the docker CLI off the event loop."""
    result = await asyncio.to_thread(
        subprocess.run, ["docker", *args], capture_output=True, text=True, timeout=120
    )
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed: {result.stderr}")
    return result


async def inspect(container_id: str) -> dict[str, Any]:
    """`docker inspect` of one container."""
    out = await docker("inspect", container_id)
    data: list[dict[str, Any]] = json.loads(out.stdout)
    return data[0]


async def labelled_ids(settings: Settings) -> set[str]:
    """Ids of every container (any state) carrying this run's instance label."""
    out = await docker(
        "ps", "-aq", "--no-trunc", "--filter", f"label=flowmgr.instance={settings.docker.instance}"
    )
    return set(out.stdout.split())
