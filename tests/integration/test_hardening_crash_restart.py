"""The manager SIGKILLed in the middle of a create, then started again: the container is adopted
and reported once, and a retry makes no duplicate."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from server.core.config import Settings
from server.core.errors import FlowMgrError
from server.core.models import CreateSpec
from tests.integration.engine_relay import Streams, relay_to_engine
from tests.integration.manager_helpers import BUSYBOX, docker, labelled_ids, started_manager

pytestmark = [
    pytest.mark.docker,
]
ROOT = Path(__file__).resolve().parents[2]

# The manager under test, in its own process: create one flow through the relay, then wait.
_CHILD = """
import asyncio, json, sys
from server.core.config import Settings
from server.core.docker_adapter import DockerAdapter
from server.core.manager import ContainerManager
from server.core.models import CreateSpec
settings = Settings.model_validate(json.loads(sys.argv[1]))
async def main():
    m = ContainerManager(settings, adapter=DockerAdapter(60.0, base_url=sys.argv[2]))
    async with m:
        await m.create_container(CreateSpec(name=sys.argv[3], image=sys.argv[4]))
        await asyncio.sleep(3600)
asyncio.run(main())
"""


@contextlib.asynccontextmanager
async def create_answer_held(path: Path) -> AsyncIterator[tuple[str, asyncio.Event]]:
    """A relay to dockerd that never delivers the answer to a container create."""
    create_sent = asyncio.Event()

    async def forward(streams: Streams) -> None:
        reader, writer, up_reader, up_writer = streams
        held = False

        async def up() -> None:
            nonlocal held
            with contextlib.suppress(ConnectionError, OSError):
                while data := await reader.read(65536):
                    if b"/containers/create" in data:
                        held = True
                        create_sent.set()
                    up_writer.write(data)
                    await up_writer.drain()

        async def down() -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await up_reader.read(65536):
                    if not held:  # the create's answer (and all after it) never arrives
                        writer.write(data)
                        await writer.drain()

        await asyncio.gather(up(), down())

    async with relay_to_engine(path, forward) as url:
        yield url, create_sent


async def test_manager_killed_during_create_leaves_no_orphan_or_duplicate(
    settings: Settings, unique_name: Callable[[str], str]
) -> None:
    name = unique_name("half")
    config = json.dumps(settings.model_dump(exclude={"config_file"}))
    async with create_answer_held(Path(settings.socket_dir) / "held.sock") as (url, sent):
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, config, url, name, BUSYBOX],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            async with asyncio.timeout(60):
                await sent.wait()
                while not await labelled_ids(settings):  # the engine made it
                    await asyncio.sleep(0.1)
            assert child.poll() is None, child.communicate()[0]
        finally:
            child.send_signal(signal.SIGKILL)
            await asyncio.to_thread(child.communicate, timeout=10)
    made = await labelled_ids(settings)
    assert len(made) == 1
    async with started_manager(settings) as m:
        # adopted from its labels and reported, once
        assert [s.id for s in m.snapshot() if s.name == name] == list(made)
        with pytest.raises(FlowMgrError):
            await m.create_container(CreateSpec(name=name, image=BUSYBOX))
        assert await labelled_ids(settings) == made
        await m.start_container(name)  # and it is fully usable
        assert m.get(name).state == "running"
    out = await docker("ps", "-a", "--filter", f"name=^/{name}$", "--format", "{{.ID}}")
    assert len(out.stdout.split()) == 1
