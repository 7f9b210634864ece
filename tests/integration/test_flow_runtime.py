"""The flow runtime in real `flow:latest` containers, driven by a FlowChannelHub (no manager)."""

from __future__ import annotations

import asyncio
import shutil
import textwrap
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from server.core.bus import EventBus, Subscription
from server.core.config import FlowSettings
from server.core.events import FlowChannelConnected, FlowChannelLost, FlowMessageReceived
from server.core.flow_channel import FlowChannelHub
from tests.conftest import RUN_ID, TEST_LABEL
from tests.integration.manager_helpers import WAIT, docker, wait_event

pytestmark = pytest.mark.docker

EXAMPLES = Path(__file__).resolve().parents[2] / "flow" / "examples"
FLOW_IMAGE = "flow:latest"

RunFlow = Callable[..., Awaitable[str]]


@pytest.fixture
def sock_dir(docker_engine: None) -> Iterator[Path]:
    """A short host directory for the flows' socket directories."""
    path = Path(f"/tmp/fmx-{uuid.uuid4().hex[:8]}")
    path.mkdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def bus() -> EventBus:
    return EventBus()


@pytest.fixture
async def hub(bus: EventBus) -> AsyncIterator[FlowChannelHub]:
    hub = FlowChannelHub(bus, FlowSettings())
    yield hub
    await hub.aclose()


@pytest.fixture
async def events(bus: EventBus) -> AsyncIterator[Subscription]:
    async with bus.subscribe() as sub:
        yield sub


@pytest.fixture
async def run_flow(hub: FlowChannelHub, sock_dir: Path) -> AsyncIterator[RunFlow]:
    """Start a labelled flow container whose socket dir the hub listens on; removed at the end."""
    started: list[str] = []

    async def run(name: str, code: Path | None = None, *extra: str) -> str:
        own = sock_dir / name
        own.mkdir()
        await hub.open(name, str(own / "flow.sock"))
        args = [
            "run",
            "-d",
            "--name",
            f"{RUN_ID}-{name}-{uuid.uuid4().hex[:4]}",
            "--label",
            f"{TEST_LABEL}={RUN_ID}",
            "-v",
            f"{own}:/run/flowmgr",
        ]
        if code is not None:
            args += ["-v", f"{code}:/app:ro"]
        out = await docker(*args, *extra, FLOW_IMAGE)
        started.append(out.stdout.strip())
        return out.stdout.strip()

    yield run
    if started:
        await docker("rm", "-f", *started, check=False)


def flow_code(tmp_path: Path, source: str, name: str = "code") -> Path:
    """A code directory holding main.py with `source`."""
    code = tmp_path / name
    code.mkdir()
    (code / "main.py").write_text(textwrap.dedent(source))
    return code


async def reply_to(
    hub: FlowChannelHub, events: Subscription, name: str, message: dict[str, Any]
) -> dict[str, Any]:
    """Send `message` to flow `name` and return the next message it sends back."""
    await hub.send(name, message)
    got = await wait_event(events, FlowMessageReceived, lambda e: e.container_id == name)
    return got.message


async def connected(events: Subscription, name: str) -> None:
    await wait_event(events, FlowChannelConnected, lambda e: e.container_id == name)


async def test_echo_flow_answers_with_request_id(
    hub: FlowChannelHub, events: Subscription, run_flow: RunFlow
) -> None:
    await run_flow("echo")
    await connected(events, "echo")
    reply = await reply_to(
        hub, events, "echo", {"command": "echo", "text": "hi", "request_id": "r-1"}
    )
    assert reply["echo"] == {"command": "echo", "text": "hi", "request_id": "r-1"}
    assert reply["request_id"] == "r-1"
    assert await reply_to(hub, events, "echo", {"command": "ping"}) == {"pong": True}


async def test_counter_keeps_state_in_memory(
    hub: FlowChannelHub, events: Subscription, run_flow: RunFlow
) -> None:
    await run_flow("counter", EXAMPLES / "counter")
    await connected(events, "counter")
    for expected in (1, 2, 3):
        assert await reply_to(hub, events, "counter", {"command": "increment"}) == {
            "count": expected
        }
    assert await reply_to(hub, events, "counter", {"command": "increment", "by": 10}) == {
        "count": 13
    }
    assert await reply_to(hub, events, "counter", {"command": "get"}) == {"count": 13}


async def test_crasher_exits_non_zero_on_command(
    hub: FlowChannelHub, events: Subscription, run_flow: RunFlow
) -> None:
    cid = await run_flow("crasher", EXAMPLES / "crasher")
    await connected(events, "crasher")
    await hub.send("crasher", {"command": "crash", "exit_code": 7})
    await wait_event(events, FlowChannelLost, lambda e: e.container_id == "crasher")
    assert (await docker("wait", cid)).stdout.strip() == "7"
    logs = await docker("logs", cid)
    assert "crashing on request with exit code 7" in logs.stdout


async def test_sigterm_stops_the_flow_with_exit_code_zero(
    events: Subscription, run_flow: RunFlow
) -> None:
    cid = await run_flow("term")
    await connected(events, "term")
    loop = asyncio.get_running_loop()
    start = loop.time()
    await docker("stop", "-t", "10", cid)
    # Well under the 10 s stop timeout: the runtime handled SIGTERM rather than being killed.
    assert loop.time() - start < 8
    assert (await docker("inspect", "-f", "{{.State.ExitCode}}", cid)).stdout.strip() == "0"


async def test_flow_sends_at_any_time_and_handler_errors_are_answered(
    hub: FlowChannelHub, events: Subscription, run_flow: RunFlow, tmp_path: Path
) -> None:
    code = flow_code(
        tmp_path,
        """
        import threading
        import flowrt

        @flowrt.on_connect
        def hello():
            flowrt.send({"event": "hello"})

        @flowrt.command("later")
        def later(message):
            threading.Timer(0.1, lambda: flowrt.send({"event": "later", "n": message["n"]})).start()

        @flowrt.command("fail")
        def fail(message):
            raise RuntimeError("boom")
    """,
    )
    await run_flow("anytime", code)
    hello = await wait_event(events, FlowMessageReceived, lambda e: e.container_id == "anytime")
    assert hello.message == {"event": "hello"}
    assert await reply_to(hub, events, "anytime", {"command": "later", "n": 5}) == {
        "event": "later",
        "n": 5,
    }
    failed = await reply_to(hub, events, "anytime", {"command": "fail"})
    assert failed == {"error": "handler_failed", "command": "fail", "message": "boom"}
    unknown = await reply_to(hub, events, "anytime", {"command": "nope"})
    assert unknown == {"error": "unknown_command", "command": "nope"}


async def test_flow_reconnects_to_a_restarted_hub(
    hub: FlowChannelHub, events: Subscription, run_flow: RunFlow, sock_dir: Path
) -> None:
    await run_flow("again")
    await connected(events, "again")
    await hub.close("again")
    bus = EventBus()
    second = FlowChannelHub(bus, FlowSettings())
    try:
        async with bus.subscribe() as sub:
            loop = asyncio.get_running_loop()
            start = loop.time()
            await second.open("again", str(sock_dir / "again" / "flow.sock"))
            await wait_event(sub, FlowChannelConnected, timeout=WAIT)
            # The runtime's backoff is capped at 0.5 s: 2 s is the promise, 5 s a busy machine.
            assert loop.time() - start < 5
            assert await reply_to(second, sub, "again", {"command": "ping"}) == {"pong": True}
    finally:
        await second.aclose()


async def test_image_without_code_answers_builtin_commands(
    hub: FlowChannelHub, events: Subscription, run_flow: RunFlow, tmp_path: Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    cid = await run_flow("nocode", empty)
    await connected(events, "nocode")
    assert await reply_to(hub, events, "nocode", {"command": "ping"}) == {"pong": True}
    assert "no flow code in /app" in (await docker("logs", cid)).stdout


async def test_broken_flow_code_exits_non_zero(run_flow: RunFlow, tmp_path: Path) -> None:
    code = flow_code(tmp_path, "raise SystemExit('cannot start: missing setting')\n")
    cid = await run_flow("broken", code)
    assert (await docker("wait", cid)).stdout.strip() == "1"
    assert "missing setting" in (await docker("logs", cid)).stderr
