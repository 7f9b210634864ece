"""The agent -> hub link (issue 16, docs/CLUSTER.md "Hub and agents"): a real uvicorn on
127.0.0.1 serving a socketio.AsyncServer with only the `/agent` namespace, real AsyncClients.
No Docker and no Swarm: the node allow-list is a set."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
import socketio
import uvicorn

from server.api.app import JsonPacket
from server.api.sio_manager import DirectEmitManager
from server.cluster.agent_link import AgentLink, new_instance
from server.cluster.errors import AgentTimeout, NodeNotConnected
from server.cluster.events import FlowsUnknown, LinkEvent, NodeStatusChanged
from server.cluster.hub_link import (
    AGENT_NAMESPACE,
    AgentNamespace,
    HubLinkConfig,
    HubLinks,
    register_agent_namespace,
)
from server.cluster.link_models import (
    MAX_FLOWS_PER_NODE,
    AgentHello,
    AgentReport,
    FlowHeld,
    Request,
)
from server.core.errors import ConfigError, FlowSocketTimeout, InvalidRequest

AGENT_TOKEN = "agent-token-0123456789abcdef0123"
API_TOKEN = "harness-token-0123456789abcdef"
KNOWN = {"node-a", "node-b"}
FLOWS = [
    FlowHeld(flow_id="svc1", task_id="task1", container_id="c" * 64, state="running"),
    FlowHeld(flow_id="svc2", task_id="task2", container_id=None, state="created"),
]
WAIT = 10.0


@dataclass
class Hub:
    url: str
    port: int
    links: HubLinks
    ns: AgentNamespace
    events: list[tuple[float, LinkEvent]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_event(
        self, match: Callable[[LinkEvent], bool], timeout: float = WAIT
    ) -> tuple[float, LinkEvent]:
        """The first recorded (time, event) matching (already here or yet to come)."""
        async with asyncio.timeout(timeout):
            while True:
                for at, event in self.events:
                    if match(event):
                        return at, event
                self.changed.clear()
                await self.changed.wait()

    async def wait_connected(self, node_id: str, timeout: float = WAIT) -> None:
        async with asyncio.timeout(timeout):
            while node_id not in self.links.connected_nodes():
                await asyncio.sleep(0.01)


def _listening_socket(port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


@contextlib.asynccontextmanager
async def running_hub(
    known: set[str] = KNOWN,
    *,
    agent_timeout: float = 2.0,
    port: int = 0,
    places: Callable[[str, str, str], bool] | None = None,
    like_the_api: bool = False,
) -> AsyncIterator[Hub]:
    """A hub on 127.0.0.1; `like_the_api`: its AsyncServer built as server/api/app.py builds the
    API's (packet serializer, emit manager), where the lead registers the namespace."""
    extra: dict[str, Any] = {}
    if like_the_api:
        extra = {"serializer": JsonPacket, "client_manager": DirectEmitManager(64 * 2**20)}
    sio = socketio.AsyncServer(
        async_mode="asgi",
        logger=False,
        engineio_logger=False,
        max_http_buffer_size=8 * 2**20,
        **extra,
    )
    links = HubLinks(lambda: known, places=places)
    ns = register_agent_namespace(
        sio, links, HubLinkConfig(agent_token=AGENT_TOKEN, agent_timeout=agent_timeout)
    )
    sock = _listening_socket(port)
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        socketio.ASGIApp(sio),
        log_config=None,
        lifespan="off",
        ws_max_size=8 * 2**20,
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    hub = Hub(f"http://127.0.0.1:{port}", port, links, ns)

    def record(event: LinkEvent) -> None:
        hub.events.append((time.monotonic(), event))
        hub.changed.set()

    links.subscribe(record)
    try:
        async with asyncio.timeout(20):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        yield hub
    finally:
        await ns.close()
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


def hello_of(node_id: str = "node-a", instance: str | None = None, flows: Any = None) -> AgentHello:
    return AgentHello(
        node_id=node_id,
        hostname=f"host-{node_id}",
        version="0.test",
        instance=instance or new_instance(),
        flows=list(FLOWS) if flows is None else flows,
    )


async def echo(request: Request) -> dict[str, Any]:
    if request.payload.get("slow"):
        await asyncio.sleep(float(request.payload["slow"]))
    if request.payload.get("fail"):
        raise FlowSocketTimeout("flow svc1 did not take the frame", details={"flow": "svc1"})
    return {"echo": request.payload, "op": request.op}


@contextlib.asynccontextmanager
async def running_agent(
    url: str, node_id: str = "node-a", *, instance: str | None = None, **kwargs: Any
) -> AsyncIterator[AgentLink]:
    hello = hello_of(node_id, instance)
    kwargs.setdefault("backoff_max", 0.5)
    agent = AgentLink(url, kwargs.pop("token", AGENT_TOKEN), lambda: hello, echo, **kwargs)
    agent.start()
    try:
        yield agent
    finally:
        await agent.stop()


async def refused_connect(url: str, auth: Any) -> dict[str, Any]:
    """Connect a raw client to /agent with `auth`; the hub's refusal (it must refuse)."""
    refusal: dict[str, Any] = {}
    async with aiohttp.ClientSession() as session:
        sio = socketio.AsyncClient(reconnection=False, http_session=session)

        async def _refused(data: Any = None) -> None:
            if isinstance(data, dict) and isinstance(data.get("data"), dict):
                data = data["data"]  # python-socketio wraps the refusal's details
            refusal.update(data if isinstance(data, dict) else {"message": data})

        sio.on("connect_error", _refused, namespace=AGENT_NAMESPACE)

        with pytest.raises(socketio.exceptions.ConnectionError):
            await sio.connect(
                url,
                auth=auth,
                namespaces=[AGENT_NAMESPACE],
                transports=["websocket"],
                wait_timeout=5,
            )
        with contextlib.suppress(Exception):
            await sio.disconnect()
    return refusal


def report(line: str) -> None:
    """A measured number, on the terminal with `-s` (the report quotes them)."""
    print(f"\n[cluster-link] {line}", file=sys.stderr)  # noqa: T201


# -- hostile first


@pytest.mark.parametrize(
    "auth",
    [
        None,
        {},
        "not an object",
        {"hello": "x"},
        {"agent_token": "wrong-token-0123456789abcdef"},
        {"agent_token": API_TOKEN},
        {"token": AGENT_TOKEN},  # the API's key: an agent must say agent_token
        {"agent_token": AGENT_TOKEN + "x"},
        {"agent_token": AGENT_TOKEN[:-1]},
        {"agent_token": 12345},
        {"agent_token": "\ud800"},
        {"agent_token": "a" * 100_000},
        {"agent_token": AGENT_TOKEN, "extra": 1},
    ],
    ids=[
        "no-auth",
        "empty",
        "string",
        "no-token",
        "wrong",
        "api-token",
        "api-key",
        "longer",
        "prefix",
        "number",
        "surrogate",
        "huge",
        "extra-key",
    ],
)
async def test_refused_without_the_agent_token(auth: Any) -> None:
    async with running_hub() as hub:
        if isinstance(auth, dict) and "agent_token" not in auth and "token" in auth:
            auth = {**auth, "hello": hello_of().wire()}
        elif isinstance(auth, dict) and set(auth) == {"agent_token"}:
            auth = {**auth, "hello": hello_of().wire()}
        refusal = await refused_connect(hub.url, auth)
        assert refusal.get("error_type") == "authentication_failed", refusal
        assert hub.links.connected_nodes() == []
        assert hub.ns.refused == 1
        assert hub.events == []


@pytest.mark.parametrize("like_the_api", [False, True], ids=["plain-server", "api-server"])
async def test_unknown_node_refused(like_the_api: bool) -> None:
    async with running_hub(like_the_api=like_the_api) as hub:
        refusal = await refused_connect(
            hub.url, {"agent_token": AGENT_TOKEN, "hello": hello_of("node-z").wire()}
        )
        assert refusal["reason"] == "unknown_node"
        assert "node-z" in refusal["message"]
        assert hub.links.connected_nodes() == []


def _bad_hellos() -> list[tuple[str, Any, str]]:
    good = hello_of().wire()
    many = [
        {"flow_id": f"f{i}", "task_id": f"t{i}", "container_id": None, "state": "running"}
        for i in range(MAX_FLOWS_PER_NODE + 1)
    ]
    return [
        ("missing", None, "hello"),
        ("not-object", [1, 2], "hello"),
        ("extra-key", {**good, "admin": True}, "admin"),
        ("slash-node", {**good, "node_id": "../node-a"}, "node_id"),
        ("number-node", {**good, "node_id": 7}, "node_id"),
        ("long-host", {**good, "hostname": "h" * 300}, "hostname"),
        ("bad-state", {**good, "flows": [{**good["flows"][0], "state": "zombie"}]}, "state"),
        ("dup-flow", {**good, "flows": [good["flows"][0], good["flows"][0]]}, "twice"),
        ("too-many-flows", {**good, "flows": many}, "flows"),
        ("oversized", {**good, "version": "v" * 5_000_000}, "larger than"),
        ("short-instance", {**good, "instance": "x"}, "instance"),
    ]


@pytest.mark.parametrize("case", _bad_hellos(), ids=lambda c: c[0])
async def test_malformed_or_oversized_hello_refused_hub_unaffected(
    case: tuple[str, Any, str],
) -> None:
    _, hello, said = case
    async with running_hub() as hub:
        auth: dict[str, Any] = {"agent_token": AGENT_TOKEN}
        if hello is not None:
            auth["hello"] = hello
        refusal = await refused_connect(hub.url, auth)
        assert refusal["error_type"] == "validation_error"
        assert refusal["message"].startswith("invalid hello")
        assert said in refusal["message"], refusal["message"]
        assert len(refusal["message"]) < 500  # says what, does not echo the payload
        # the hub is unaffected: a good agent links at once
        async with running_agent(hub.url) as agent:
            await agent.wait_linked(WAIT)
            assert hub.links.connected_nodes() == ["node-a"]


# -- the link


@pytest.mark.parametrize("like_the_api", [False, True], ids=["plain-server", "api-server"])
async def test_agent_links_and_the_hub_lists_it(like_the_api: bool) -> None:
    async with running_hub(like_the_api=like_the_api) as hub, running_agent(hub.url) as agent:
        await agent.wait_linked(WAIT)
        await hub.wait_connected("node-a")
        link = hub.links.nodes["node-a"]
        assert link.hostname == "host-node-a"
        assert set(link.flows) == {"svc1", "svc2"}
        assert link.flows["svc1"].state == "running"
        assert hub.links.node_of("svc2") == "node-a"
        _, event = await hub.wait_event(lambda e: isinstance(e, NodeStatusChanged))
        assert event == NodeStatusChanged(
            "node-a", "host-node-a", "connected", "agent_connected", event.at
        )
        # heartbeats arrive and are acked
        async with asyncio.timeout(5):
            while link.heartbeats < 2:
                await asyncio.sleep(0.05)
        assert agent.last_ack is not None and not agent.fenced()


async def test_node_claimed_twice() -> None:
    """Another agent process claiming a node with a live link is refused; the same agent's new
    connection (its instance) replaces its old link."""
    async with running_hub() as hub, running_agent(hub.url, instance="instance-one") as first:
        await first.wait_linked(WAIT)
        first_sid = hub.links.nodes["node-a"].sid
        refusal = await refused_connect(
            hub.url,
            {"agent_token": AGENT_TOKEN, "hello": hello_of(instance="instance-two").wire()},
        )
        assert refusal["reason"] == "node_already_connected"
        assert hub.links.nodes["node-a"].sid == first_sid
        assert hub.links.nodes["node-a"].instance == "instance-one"
        # the same instance again (a reconnect while the hub holds the old socket): replaces
        async with running_agent(hub.url, instance="instance-one") as again:
            await again.wait_linked(WAIT)
            _, event = await hub.wait_event(
                lambda e: isinstance(e, NodeStatusChanged) and e.reason == "replaced"
            )
            assert isinstance(event, NodeStatusChanged) and event.agent == "connected"
            assert hub.links.nodes["node-a"].sid != first_sid
            # no FlowsUnknown: the flows never stopped being known
            assert not any(isinstance(e, FlowsUnknown) for _, e in hub.events)
            reply = await hub.ns.request("node-a", "send", {"n": 1})
            assert reply.result == {"echo": {"n": 1}, "op": "send"}
            await again.stop()


async def test_request_outside_the_allow_list_refused_locally() -> None:
    calls: list[Request] = []

    async def handler(request: Request) -> dict[str, Any]:
        calls.append(request)
        return {}

    async with running_hub() as hub:
        agent = AgentLink(hub.url, AGENT_TOKEN, hello_of, handler)
        agent.start()
        try:
            await agent.wait_linked(WAIT)
            await hub.wait_connected("node-a")
            for op in ("exec", "shell", "SEND", "", "send "):
                with pytest.raises(InvalidRequest) as err:
                    await hub.ns.request("node-a", op, {})
                assert err.value.details["field"] == "op"
            # the agent refuses one too (a hub that skipped its check): a validation error
            loop = asyncio.get_running_loop()
            future = loop.create_future()
            hub.ns._pending["forged-request-1"] = ("node-a", future)
            sid = hub.links.nodes["node-a"].sid
            await hub.ns.emit(
                "request",
                {"request_id": "forged-request-1", "op": "exec", "deadline": 1.0, "payload": {}},
                to=sid,
            )
            reply = await asyncio.wait_for(future, 5)
            assert not reply.ok and reply.error is not None
            assert reply.error.error_type == "validation_error"
            assert calls == []
        finally:
            await agent.stop()


async def test_request_errors_are_typed() -> None:
    async with running_hub() as hub:
        with pytest.raises(NodeNotConnected) as not_connected:
            await hub.ns.request("node-a", "send", {})
        assert not_connected.value.error_type == "docker_api_error"
        assert not_connected.value.details["reason"] == "node_not_connected"
        async with running_agent(hub.url) as agent:
            await agent.wait_linked(WAIT)
            await hub.wait_connected("node-a")
            with pytest.raises(FlowSocketTimeout) as flow_error:  # the agent's error, kept
                await hub.ns.request("node-a", "send", {"fail": True})
            assert flow_error.value.details == {"flow": "svc1", "node_id": "node-a"}
            with pytest.raises(AgentTimeout) as late:
                await hub.ns.request("node-a", "send", {"slow": 0.5}, timeout=0.1)
            assert late.value.details["reason"] == "agent_timeout"
            # a pending request fails at once when the link drops, not at its deadline
            pending = asyncio.create_task(hub.ns.request("node-a", "send", {"slow": 5}))
            await asyncio.sleep(0.2)
            started = time.monotonic()
            await agent.abort_transport()
            with pytest.raises(NodeNotConnected):
                await pending
            assert time.monotonic() - started < 2.0


async def test_agent_transport_closed_abruptly_flows_unknown_within_2s() -> None:
    async with running_hub() as hub, running_agent(hub.url) as agent:
        await agent.wait_linked(WAIT)
        await hub.wait_connected("node-a")
        cut = time.monotonic()
        await agent.abort_transport()
        at, event = await hub.wait_event(
            lambda e: isinstance(e, NodeStatusChanged) and e.agent == "disconnected"
        )
        assert isinstance(event, NodeStatusChanged) and event.reason == "agent_link_lost"
        _, unknown = await hub.wait_event(lambda e: isinstance(e, FlowsUnknown))
        assert isinstance(unknown, FlowsUnknown) and set(unknown.flow_ids) == {"svc1", "svc2"}
        report(f"transport closed abruptly -> disconnected in {(at - cut) * 1000:.1f} ms")
        assert at - cut < 2.0
        # the agent reconnects by itself
        await hub.wait_event(
            lambda e: isinstance(e, NodeStatusChanged) and e.agent == "connected" and e.at > at
        )
        assert hub.links.nodes["node-a"].flows["svc1"].state == "running"


_CHILD = """
import asyncio, sys
from server.api.app import JsonPacket
from server.api.sio_manager import DirectEmitManager
from server.cluster.agent_link import AgentLink, new_instance
from server.cluster.link_models import AgentHello, FlowHeld

async def main():
    hello = AgentHello(node_id="node-b", hostname="host-node-b", version="0.test",
        instance=new_instance(), flows=[FlowHeld(flow_id="svc9", task_id="task9", state="running")])
    async def handler(request):
        return {}
    agent = AgentLink(sys.argv[1], sys.argv[2], lambda: hello, handler)
    agent.start()
    await agent.wait_linked(20)
    print("linked", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_agent_process_killed_flows_unknown_within_2s() -> None:
    async with running_hub() as hub:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _CHILD,
            hub.url,
            AGENT_TOKEN,
            stdout=asyncio.subprocess.PIPE,
            cwd=os.getcwd(),
        )
        try:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            assert line.strip() == b"linked"
            await hub.wait_connected("node-b")
            killed = time.monotonic()
            proc.send_signal(signal.SIGKILL)
            at, event = await hub.wait_event(
                lambda e: isinstance(e, NodeStatusChanged) and e.agent == "disconnected"
            )
            _, unknown = await hub.wait_event(lambda e: isinstance(e, FlowsUnknown))
            report(f"agent SIGKILLed -> disconnected in {(at - killed) * 1000:.1f} ms")
            assert isinstance(event, NodeStatusChanged) and event.reason == "agent_link_lost"
            assert isinstance(unknown, FlowsUnknown) and unknown.flow_ids == ("svc9",)
            assert hub.links.nodes["node-b"].flows["svc9"].state == "unknown"
            assert at - killed < 2.0
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()


async def test_agent_paused_heartbeat_timeout_then_back() -> None:
    async with running_hub() as hub, running_agent(hub.url) as agent:
        await agent.wait_linked(WAIT)
        await hub.wait_connected("node-a")
        link = hub.links.nodes["node-a"]
        async with asyncio.timeout(5):  # pause right after a heartbeat: the worst case
            beats = link.heartbeats
            while link.heartbeats == beats:
                await asyncio.sleep(0.005)
        agent.heartbeats_held = True
        paused = time.monotonic()
        at, event = await hub.wait_event(
            lambda e: isinstance(e, NodeStatusChanged) and e.agent == "disconnected"
        )
        assert isinstance(event, NodeStatusChanged) and event.reason == "heartbeat_timeout"
        _, unknown = await hub.wait_event(lambda e: isinstance(e, FlowsUnknown))
        assert isinstance(unknown, FlowsUnknown) and unknown.reason == "heartbeat_timeout"
        report(f"heartbeats stopped -> heartbeat_timeout in {(at - paused) * 1000:.1f} ms")
        # agent_timeout (2 s) after the last heartbeat, plus at most one watchdog period
        assert 1.9 < at - paused < 2.0 + 0.1 + 0.4  # (slack for a busy host)
        # back: heartbeats resume, the agent links again and stays linked
        agent.heartbeats_held = False
        back = await hub.wait_event(
            lambda e: isinstance(e, NodeStatusChanged) and e.agent == "connected" and e.at > at
        )
        await asyncio.sleep(2.5)
        assert hub.links.connected_nodes() == ["node-a"]
        assert hub.links.nodes["node-a"].flows["svc1"].state == "running"
        assert back[0] > at


async def test_silent_hub_agent_declares_the_link_lost() -> None:
    """A hub that keeps the socket but acks no heartbeat (stalled, or half a partition): the
    agent does not wait for engine.io's ping timeout; the fence counts from the last ack."""
    async with running_hub() as hub, running_agent(hub.url) as agent:
        await agent.wait_linked(WAIT)
        await hub.wait_connected("node-a")

        async def stalled(sid: str, data: Any) -> dict[str, Any]:
            await asyncio.sleep(30)
            return {"ok": True}

        hub.ns.on_heartbeat = stalled  # type: ignore[method-assign]
        last_ack = agent.last_ack
        assert last_ack is not None
        async with asyncio.timeout(6):  # (it reconnects 50 ms or more after giving up)
            while agent.link_lost_since is None:
                await asyncio.sleep(0.005)
        lost = agent.link_lost_since
        assert lost is not None and lost - last_ack < 1.5  # the last ack, not the detection
        report(f"silent hub -> agent gave up after {time.monotonic() - lost:.2f} s without acks")


@pytest.mark.parametrize("like_the_api", [False, True], ids=["plain-server", "api-server"])
async def test_request_round_trip_p50(like_the_api: bool) -> None:
    async with running_hub(like_the_api=like_the_api) as hub, running_agent(hub.url) as agent:
        await agent.wait_linked(WAIT)
        await hub.wait_connected("node-a")
        for _ in range(50):  # warm up
            await hub.ns.request("node-a", "send", {"message": {"x": 1}})
        times = []
        for i in range(1000):
            started = time.perf_counter()
            reply = await hub.ns.request("node-a", "send", {"message": {"seq": i}})
            times.append(time.perf_counter() - started)
            assert reply.result is not None and reply.result["echo"]["message"]["seq"] == i
        times.sort()
        p50 = statistics.median(times) * 1000
        p99 = times[989] * 1000
        report(
            f"request() round trip hub -> agent -> hub, 1000 calls "
            f"({'api' if like_the_api else 'plain'} server): "
            f"p50 {p50:.3f} ms, p99 {p99:.3f} ms"
        )
        assert p50 < 5.0


async def test_fenced_after_fence_seconds_without_the_hub_and_not_once_back() -> None:
    agent: AgentLink | None = None
    try:
        async with running_hub() as hub:
            port = hub.port
            agent = AgentLink(hub.url, AGENT_TOKEN, hello_of, echo, fence_seconds=1.0)
            agent.backoff_max = 0.3
            agent.start()
            await agent.wait_linked(WAIT)
            assert not agent.fenced()
            assert agent.link_lost_since is None
        # the hub is gone
        async with asyncio.timeout(5):
            while agent.connected:
                await asyncio.sleep(0.01)
        lost = agent.link_lost_since
        assert lost is not None
        assert not agent.fenced(lost + 0.9)
        assert agent.fenced(lost + 1.0)
        async with asyncio.timeout(5):
            while not agent.fenced():
                await asyncio.sleep(0.02)
        report(f"fenced {time.monotonic() - lost:.2f} s after the hub's last ack (fence 1.0 s)")
        # the hub is back on the same address: the agent links again, no longer fenced
        async with running_hub(port=port) as back:
            await agent.wait_linked(WAIT)
            await back.wait_connected("node-a")
            assert not agent.fenced()
            assert agent.link_lost_since is None
    finally:
        if agent is not None:
            await agent.stop()


async def test_hub_refusal_reaches_the_agent() -> None:
    async with running_hub() as hub, running_agent(hub.url, token="wrong-token-0123456789") as a:
        async with asyncio.timeout(5):
            while a.failures < 2:
                await asyncio.sleep(0.02)
        assert a.last_error == "authentication failed"
        assert a.refusal is not None and a.refusal["error_type"] == "authentication_failed"
        assert a.fenced(time.monotonic() + a.fence_seconds)
        assert hub.links.connected_nodes() == []


async def test_reports_update_the_hub_only_for_tasks_placed_on_the_node() -> None:
    def places(node_id: str, flow_id: str, task_id: str) -> bool:
        return not task_id.startswith("elsewhere")

    async with running_hub(places=places) as hub, running_agent(hub.url) as agent:
        await agent.wait_linked(WAIT)
        await hub.wait_connected("node-a")
        sample = {
            "cpu_percent": 1.5,
            "memory_usage": 1024,
            "memory_limit": 2048,
            "memory_percent": 50.0,
            "network_rx_bytes": 1,
            "network_tx_bytes": 2,
            "disk_read_bytes": 3,
            "disk_write_bytes": 4,
            "timestamp": "2026-12-03T17:00:00+00:00",
        }
        await agent.report(
            AgentReport.decode(
                {"flow_id": "svc1", "task_id": "task1", "state": "exited", "sample": sample}
            )
        )
        await agent.report(
            AgentReport(flow_id="svc3", task_id="elsewhere-7", container_id=None, state="running")
        )
        await agent.report(AgentReport(flow_id="svc2", task_id="task2", state="dead", gone=True))
        link = hub.links.nodes["node-a"]
        async with asyncio.timeout(5):
            while link.flows["svc1"].state != "exited" or "svc2" in link.flows:
                await asyncio.sleep(0.01)
        assert link.samples["svc1"].memory_usage == 1024
        assert "svc3" not in link.flows  # an agent speaks only for tasks placed on its node
        # a raw report the hub refuses is acked with the reason
        sio = agent._sio
        assert sio is not None
        answer = await sio.call(
            "report",
            {"flow_id": "svc1", "task_id": "task1", "state": "running", "cpu": "lots"},
            namespace=AGENT_NAMESPACE,
            timeout=5,
        )
        assert answer["ok"] is False and answer["error_type"] == "validation_error"
        assert link.flows["svc1"].state == "exited"


def test_hub_config_from_settings_makes_the_agent_token_file(tmp_path: Path) -> None:
    path = tmp_path / "state" / "agent-token"
    settings = SimpleNamespace(
        cluster=SimpleNamespace(agent_token_file=str(path), agent_timeout=3.0)
    )
    config = HubLinkConfig.from_settings(settings)
    assert len(config.agent_token) >= 32 and config.agent_timeout == 3.0
    assert path.stat().st_mode & 0o777 == 0o600
    assert HubLinkConfig.from_settings(settings).agent_token == config.agent_token
    path.chmod(0o644)
    with pytest.raises(ConfigError) as unsafe:
        HubLinkConfig.from_settings(settings)
    assert "agent token" in unsafe.value.message
    assert unsafe.value.details["field"] == "cluster.agent_token_file"
    with pytest.raises(ConfigError):
        HubLinkConfig.from_settings(SimpleNamespace(cluster=SimpleNamespace()))


async def test_a_linked_agent_sending_junk_gets_errors_and_the_link_holds() -> None:
    async with running_hub() as hub, running_agent(hub.url) as agent:
        await agent.wait_linked(WAIT)
        await hub.wait_connected("node-a")
        sio = agent._sio
        assert sio is not None
        junk: list[tuple[str, Any]] = [
            ("heartbeat", "beat"),
            ("heartbeat", {"seq": -1, "flows": 0}),
            ("heartbeat", {"seq": 1, "flows": 0, "admin": True}),
            (
                "report",
                {"flow_id": "svc1", "task_id": "task1", "state": "running", "x": "y" * 20_000},
            ),
            ("report", [1, 2, 3]),
            ("reply", {"request_id": "not-pending-1", "ok": True}),
            ("reply", {"request_id": "not-pending-2", "ok": False}),
            ("list_containers", {}),
            ("connect", {"agent_token": AGENT_TOKEN}),
        ]
        for event, data in junk:
            answer = await sio.call(event, data, namespace=AGENT_NAMESPACE, timeout=5)
            assert answer is None or answer["ok"] is False, (event, answer)
        assert hub.links.connected_nodes() == ["node-a"]
        assert hub.links.nodes["node-a"].flows["svc1"].state == "running"
        reply = await hub.ns.request("node-a", "send", {"still": "here"})
        assert reply.result == {"echo": {"still": "here"}, "op": "send"}
