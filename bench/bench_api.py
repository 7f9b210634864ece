"""Socket.IO API benchmarks against a real `python -m server` process and real containers.

    .venv/bin/python bench/bench_api.py                        # everything, 100 containers
    .venv/bin/python bench/bench_api.py rtt load fanout        # a selection
    .venv/bin/python bench/bench_api.py send --messages 20000

rtt:    list_containers / get_container_status round trips (ack) with 100 managed containers.
load:   list_containers round trips while 10 other clients loop stop / restart / status.
fanout: `status_changed` latency to 100 connected clients (event timestamp -> client receipt).
send:   send_message requests per second into one echo flow, every answer counted.
list:   list_containers round trips (ack; the container_list event comes too) and the server's
        CPU per call with --flows fake flows (a manager holding records, no containers).
status: the server's CPU in one-second windows over --seconds while --flows fake flows report
        their status every 30 s (journal on) to one client: the mean and the largest window.
The server runs in its own process (as deployed); clients run here. Everything this script
creates carries a bench-only instance label and is removed at the end, even on failure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import multiprocessing
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import psutil
import socketio
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from server.core.priority import apply_priority  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RUN = f"bapi{uuid.uuid4().hex[:6]}"
BUSYBOX = "flowmgr-test-busybox:latest"
TOKEN = uuid.uuid4().hex
"""The API token this run's service is configured with (server.token)."""


def say(line: str) -> None:
    """A result line on stdout (this is a script, not library code)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def pct(values: list[float], q: float) -> float:
    """The q-quantile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(values: list[float]) -> str:
    """p50 / p90 / p99 / max in ms."""
    return (
        f"n={len(values)} p50={statistics.median(values):.2f} ms "
        f"p90={pct(values, 0.9):.2f} ms p99={pct(values, 0.99):.2f} ms "
        f"max={max(values):.2f} ms"
    )


# ---------------------------------------------------------------- server process and cleanup


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(
    path: Path,
    sock_dir: Path,
    nice: int | None,
    code_roots: list[str] | None = None,
    journal: bool = True,
    run: str = RUN,
) -> None:
    server_nice = {} if nice is None else {"nice": nice}
    path.write_text(
        json.dumps(
            {
                "socket_dir": str(sock_dir),
                "log_level": "WARNING",
                "server": {
                    "host": "127.0.0.1",
                    "port": 8000,
                    "cors_origins": ["*"],
                    "max_message_bytes": 1_000_000,
                    "token": TOKEN,
                    **server_nice,
                },
                "docker": {
                    "default_image": "flow:latest",
                    "network": f"flowmgr-{run}",
                    "instance": run,
                    "stop_timeout": 2,
                    "code_roots": code_roots or [],
                },
                "monitoring": {"health_check_interval": 30, "resource_check_interval": 60},
                "journal": {"enabled": journal},
            }
        )
    )


def cleanup(sock_dir: Path, run: str = RUN) -> None:
    """Remove every container, network and data volume of this run (by its instance label)."""
    label = f"label=flowmgr.instance={run}"
    ids = subprocess.run(
        ["docker", "ps", "-aq", "--filter", label], capture_output=True, text=True
    ).stdout.split()
    # Four at a time: dockerd 20.10 once hung for good removing 100 bridged containers in one
    # `docker rm -f` (bench_cluster.py, 17:50 UTC on 2026-12-04; bench_scale.py saw it at 1,000).
    for i in range(0, len(ids), 4):
        subprocess.run(["docker", "rm", "-f", *ids[i : i + 4]], capture_output=True, timeout=120)
    # The engine releases a removed container's endpoint a moment later: retry the network.
    for _ in range(60):
        nets = subprocess.run(
            ["docker", "network", "ls", "-q", "--filter", label], capture_output=True, text=True
        ).stdout.split()
        if (
            not nets
            or subprocess.run(["docker", "network", "rm", *nets], capture_output=True).returncode
            == 0
        ):
            break
        time.sleep(0.5)
    else:
        say(
            f"warning: network of {run} still in use after 30 s; remove it with "
            f"docker network rm $(docker network ls -q --filter {label})"
        )
    # each flow's data volume (flowmgr-data-<name>) outlives its container: 500 were left here
    vols = subprocess.run(
        ["docker", "volume", "ls", "-q", "--filter", label], capture_output=True, text=True
    ).stdout.split()
    for i in range(0, len(vols), 20):
        subprocess.run(["docker", "volume", "rm", *vols[i : i + 20]], capture_output=True)
    shutil.rmtree(sock_dir, ignore_errors=True)


@contextlib.asynccontextmanager
async def server_process(
    profile: str | None = None,
    nice: int | None = None,
    code_roots: list[str] | None = None,
    journal: bool = True,
    prepare: Callable[[Path], Awaitable[None]] | None = None,
    run: str = RUN,
) -> AsyncIterator[tuple[str, psutil.Process]]:
    """`python -m server` on a free port; its URL and process handle. `prepare(config)` runs
    before the service starts (e.g. to fill its journal). Services side by side need their own
    `run` (their instance label: neither adopts the other's containers)."""
    sock_dir = Path("/tmp/fmb") / run
    sock_dir.mkdir(parents=True)
    config = sock_dir.parent / f"{run}.json"
    write_config(config, sock_dir, nice, code_roots, journal, run)
    if prepare is not None:
        await prepare(config)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    prefix = ["-m", "cProfile", "-o", profile] if profile else []
    proc = subprocess.Popen(
        [sys.executable, *prefix, "-m", "server", "--config", str(config), "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if k != "CONFIG_FILE"},
        # A service leads its own session (systemd, a container, setsid).
        start_new_session=True,
    )
    try:
        async with httpx.AsyncClient() as http, asyncio.timeout(60):
            while True:
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get(f"{url}/health")).status_code == 200:
                        break
                await asyncio.sleep(0.1)
        yield url, psutil.Process(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        cleanup(sock_dir, run)
        config.unlink(missing_ok=True)


class Client:
    """One Socket.IO client with its own HTTP session."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.sio = socketio.AsyncClient(reconnection=False, http_session=session)

    async def call(self, event: str, payload: dict[str, Any], timeout: float = 60) -> Any:
        answer = await self.sio.call(event, payload, timeout=timeout)
        if isinstance(answer, dict) and answer.get("error"):
            raise RuntimeError(f"{event}: {answer['error_type']}: {answer['message']}")
        return answer


@contextlib.asynccontextmanager
async def clients(
    url: str,
    count: int,
    setup: Callable[[Client, int], None] | None = None,
) -> AsyncIterator[list[Client]]:
    """`count` connected websocket clients."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        made = [Client(session) for _ in range(count)]
        for i, c in enumerate(made):
            if setup is not None:
                setup(c, i)
        await asyncio.gather(
            *(c.sio.connect(url, transports=["websocket"], auth={"token": TOKEN}) for c in made)
        )
        try:
            yield made
        finally:
            await asyncio.gather(*(c.sio.disconnect() for c in made), return_exceptions=True)


async def make_containers(
    c: Client, count: int, image: str = BUSYBOX, parallel: int = 8
) -> list[str]:
    """Create and start `count` containers through the API."""
    gate = asyncio.Semaphore(parallel)

    async def one() -> str:
        async with gate:
            made = await c.call(
                "create_container", {"image": image, "name": f"{RUN}-{uuid.uuid4().hex[:6]}"}
            )
            await c.call("start_container", {"container_id": made["container_id"]})
            return str(made["container_id"])

    first = await one()  # the first create makes the network; racing creates would each make one
    return [first, *await asyncio.gather(*(one() for _ in range(count - 1)))]


async def timed(calls: int, fn: Callable[[int], Awaitable[Any]]) -> list[float]:
    """Latencies in ms of `calls` sequential awaits of fn(i)."""
    samples = []
    for i in range(calls):
        t0 = time.perf_counter()
        await fn(i)
        samples.append((time.perf_counter() - t0) * 1000)
    return samples


# ---------------------------------------------------------------- the benchmarks


async def bench_rtt(c: Client, ids: list[str], calls: int) -> None:
    await timed(100, lambda i: c.call("list_containers", {}))  # warm-up
    lst = await timed(calls, lambda i: c.call("list_containers", {}))
    count = (await c.call("list_containers", {}))["count"]
    say(f"rtt list_containers ({count} containers): {summary(lst)}")
    st = await timed(
        calls, lambda i: c.call("get_container_status", {"container_id": ids[i % len(ids)]})
    )
    say(f"rtt get_container_status: {summary(st)}")


def fake_service(port: int, flows: int, token: str, run: str, report: bool = False) -> None:
    """Entry of the `list` and `status` benches' server: the service's app over `flows` fake
    flows (no containers, the manager not started; with `report`, its journal and periodic
    status are) on 127.0.0.1:port, until it is terminated (its own interpreter: this one's
    TOKEN and RUN are not the parent's)."""
    from server.api.app import create_app
    from server.api.serving import GracefulServer, uvicorn_config
    from tests.fake_flows import fake_manager

    m = fake_manager(Path("/tmp/fmb") / run, flows, server__token=token, log_level="WARNING")
    config = uvicorn_config(create_app(m, m.settings), m.settings, host="127.0.0.1", port=port)

    async def serve() -> None:
        if report:  # what a started manager runs for them, without an engine
            m.bus.bind_loop(asyncio.get_running_loop())
            await asyncio.to_thread(m.state.prepare)
            await m.journal.start()
            reporter = asyncio.create_task(m._report_status())  # noqa: F841 (runs till the end)
        await GracefulServer(config).serve()

    asyncio.run(serve())


@contextlib.asynccontextmanager
async def fake_server(flows: int, report: bool = False) -> AsyncIterator[tuple[str, Any]]:
    """`fake_service` in its own process: its URL and process handle."""
    port = free_port()
    server = multiprocessing.get_context("spawn").Process(
        target=fake_service, args=(port, flows, TOKEN, f"{RUN}-fake", report), daemon=True
    )
    server.start()
    try:
        async with asyncio.timeout(60):
            while True:
                with contextlib.suppress(OSError):
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                await asyncio.sleep(0.1)
        yield f"http://127.0.0.1:{port}", psutil.Process(server.pid)
    finally:
        server.terminate()
        server.join(20)
        shutil.rmtree(Path("/tmp/fmb") / f"{RUN}-fake", ignore_errors=True)


async def bench_status(args: argparse.Namespace) -> None:
    """Server CPU per one-second window while --flows fake flows report their status."""
    async with fake_server(args.flows, report=True) as (url, proc), WireClient(url) as c:
        windows: list[float] = []
        cpu, began = cpu_seconds(proc), time.monotonic()
        for second in range(1, int(args.seconds) + 1):
            await asyncio.sleep(max(0.0, began + second - time.monotonic()))
            now_cpu = cpu_seconds(proc)
            windows.append((now_cpu - cpu) * 100)
            cpu = now_cpu
        got = c.broadcasts["container_status_update"]
        say(
            f"status ({args.flows} flows, {len(windows)} s, {got} container_status_update "
            f"received): server CPU mean {statistics.mean(windows):.1f} %, largest one-second "
            f"window {max(windows):.1f} %, windows over 15 %: {sum(w > 15 for w in windows)}"
        )


async def bench_list(args: argparse.Namespace) -> None:
    """list_containers p50/p99 and server CPU per call at --flows fake flows, --runs times."""
    async with fake_server(args.flows) as (url, proc):
        async with WireClient(url) as c:
            await timed(50, lambda i: c.call("list_containers", {}))  # warm-up
            size = len(await c.call("list_containers", {}))
            for run in range(args.runs):
                cpu = cpu_seconds(proc)
                lst = await timed(args.calls, lambda i: c.call("list_containers", {}))
                per_call = (cpu_seconds(proc) - cpu) / args.calls * 1000
                say(
                    f"list run {run + 1} ({args.flows} flows, ack {size} bytes + the event): "
                    f"{summary(lst)}, server CPU {per_call:.2f} ms per call"
                )


async def churn(url: str, ids: list[str], seconds: float) -> dict[str, int]:
    """10 clients looping stop / status / restart / status on their own container."""
    done = {"stop": 0, "restart": 0, "status": 0}
    deadline = time.monotonic() + seconds

    async def loop(worker: Client, cid: str) -> None:
        while time.monotonic() < deadline:
            await worker.call("stop_container", {"container_id": cid})
            await worker.call("get_container_status", {"container_id": cid})
            await worker.call("restart_container", {"container_id": cid})
            await worker.call("get_container_status", {"container_id": cid})
            done["stop"] += 1
            done["restart"] += 1
            done["status"] += 2

    async with clients(url, len(ids)) as workers:
        await asyncio.gather(*(loop(w, cid) for w, cid in zip(workers, ids, strict=True)))
    return done


def churn_process(url: str, ids: list[str], seconds: float, out: Any) -> None:
    """Entry of the churn process (its own interpreter, so it does not slow the measuring)."""
    os.setsid()  # its own session: it never shares the measuring client's CPU priority
    out.put(asyncio.run(churn(url, ids, seconds)))


async def bench_load(url: str, c: Client, ids: list[str], calls: int, seconds: float = 45) -> None:
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    worker = ctx.Process(target=churn_process, args=(url, ids[:10], seconds, results))
    worker.start()
    try:
        await asyncio.sleep(5)  # the churn process starts, connects and gets going
        lst = await timed(calls, lambda i: c.call("list_containers", {}))
        st = await timed(
            calls, lambda i: c.call("get_container_status", {"container_id": ids[50 + i % 50]})
        )
        done = await asyncio.to_thread(results.get, timeout=seconds + 120)
    finally:
        await asyncio.to_thread(worker.join, 30)
    say(f"load list_containers under 10 churning clients: {summary(lst)}")
    say(f"load get_container_status under 10 churning clients: {summary(st)}")
    say(
        f"load: the churn process completed {done['stop']} stops, {done['restart']} restarts "
        f"and {done['status']} status queries in {seconds:.0f} s"
    )


def reached(samples: list[float], count: int) -> bool:
    """Whether `count` samples are in."""
    return len(samples) >= count


async def bench_fanout(
    url: str, c: Client, ids: list[str], changes: int, listeners: int = 100
) -> None:
    lat: list[float] = []
    target = ids[-1]
    seen = asyncio.Condition()

    async def changed(data: dict[str, Any]) -> None:
        if data["container_id"] == target:
            lat.append((time.time() - data["timestamp"]) * 1000)
            async with seen:
                seen.notify_all()

    # Bare clients: 100 python-socketio clients in this one process would measure themselves.
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(listeners):
            wire = await stack.enter_async_context(WireClient(url))
            wire.handlers["status_changed"] = changed
        for i in range(changes):
            await c.call(
                "stop_container" if i % 2 == 0 else "start_container", {"container_id": target}
            )
            async with asyncio.timeout(30), seen:
                await seen.wait_for(functools.partial(reached, lat, (i + 1) * listeners))
    say(f"fanout status_changed to {listeners} clients ({changes} changes): {summary(lat)}")


@dataclass
class SendTarget:
    """One service under the send benchmark: its bare client, echo flow and runs so far."""

    label: str
    wire: WireClient
    cid: str
    server: psutil.Process
    cpu_ms: list[float] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)


@contextlib.asynccontextmanager
async def send_target(
    label: str, url: str, server: psutil.Process, window: int, run: str
) -> AsyncIterator[SendTarget]:
    async with clients(url, 1) as (c,):
        cid = await echo_flow(c, run)
    # Only the bare client stays connected: python-socketio's client would be the bottleneck.
    async with WireClient(url) as wire:
        await pipelined_sends(wire, cid, 500, window)  # warm-up
        yield SendTarget(label, wire, cid, server)


async def send_run(t: SendTarget, run: int, messages: int, window: int) -> None:
    """One timed run of `messages` pipelined send_message into `t`'s echo flow."""
    wire, server = t.wire, t.server
    wire.broadcasts.clear()
    server.cpu_percent()
    spent = cpu_seconds(server)
    sys0 = server.cpu_times().system
    ctx0 = server.num_ctx_switches()
    mine = psutil.Process()
    mine.cpu_percent()
    began = time.perf_counter()
    ok = await pipelined_sends(wire, t.cid, messages, window)
    took = time.perf_counter() - began
    cpu, client_cpu = server.cpu_percent(), mine.cpu_percent()
    per_request = (cpu_seconds(server) - spent) / messages * 1000
    sys_ms = (server.cpu_times().system - sys0) / messages * 1000
    ctx1 = server.num_ctx_switches()
    switches = (ctx1.voluntary + ctx1.involuntary - ctx0.voluntary - ctx0.involuntary) / messages
    t.cpu_ms.append(per_request)
    t.rates.append(messages / took)
    say(
        f"send run {run + 1} ({t.label}): {messages} send_message in {took:.2f} s = "
        f"{messages / took:,.0f} req/s, answers {ok}/{messages}, flow replies "
        f"(message_received) so far {wire.broadcasts['message_received']}, "
        f"server CPU {cpu:.0f} % = {per_request:.3f} ms CPU per request "
        f"({sys_ms:.3f} in the kernel, {switches:.1f} context switches) "
        f"(one core's worth: {1000 / per_request:,.0f} req/s), "
        f"client CPU {client_cpu:.0f} %, load average {os.getloadavg()[0]:.1f}"
    )


async def bench_send(args: argparse.Namespace) -> None:
    """`send`: with `--journal both`, a service with the journal on and one with it off run
    side by side and take turns run by run (on, off, on, off...), so a host that slows down
    or speeds up in the meantime weighs on both alike; medians and their ratio at the end."""
    modes = {"on": [True], "off": [False], "both": [True, False]}[args.journal]
    async with contextlib.AsyncExitStack() as stack:
        targets: list[SendTarget] = []
        for journal in modes:
            label = f"journal {'on' if journal else 'off'}"
            instance = f"{RUN}{'j' if journal else 'n'}"
            url, server = await stack.enter_async_context(
                server_process(args.profile, args.server_nice, journal=journal, run=instance)
            )
            targets.append(
                await stack.enter_async_context(
                    send_target(label, url, server, args.window, instance)
                )
            )
        for n in range(args.runs):
            for t in targets:
                await send_run(t, n, args.messages, args.window)
        for t in targets:
            say(
                f"send, {t.label}: median {statistics.median(t.rates):,.0f} req/s, "
                f"{statistics.median(t.cpu_ms):.3f} ms server CPU per request over {args.runs} "
                f"runs; server RSS {t.server.memory_info().rss / 2**20:.0f} MiB"
            )
        if len(targets) == 2:
            on, off = (statistics.median(t.cpu_ms) for t in targets)
            paired = [a / b for a, b in zip(targets[0].cpu_ms, targets[1].cpu_ms, strict=True)]
            say(
                f"send: the journal adds {100 * (on / off - 1):+.1f} % server CPU per request "
                f"(ratio of medians; median of the per-run ratios "
                f"{100 * (statistics.median(paired) - 1):+.1f} %)"
            )


def cpu_seconds(proc: psutil.Process) -> float:
    """User + system CPU the process has used."""
    times = proc.cpu_times()
    return float(times.user + times.system)


class WireClient:
    """A bare Socket.IO v5 client over one websocket: only what pipelined acks need.

    python-socketio's client spends more CPU per message than the server does, so with it the
    bench would measure the client; this one parses nothing but the ack ids.
    """

    def __init__(self, url: str, **auth: Any) -> None:
        self.url = url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
        self.auth = auth
        """Fields sent beside the token when connecting (e.g. last_seq)."""
        self.ws: Any = None
        self.pending: dict[int, asyncio.Future[str]] = {}
        self.next_id = 0
        self.reader: asyncio.Task[None] | None = None
        self.broadcasts: Counter[str] = Counter()
        """Events pushed by the server, by name (counted, not parsed)."""
        self.handlers: dict[str, Callable[[Any], Awaitable[None]]] = {}
        """Events to parse and hand on, by name."""

    async def __aenter__(self) -> WireClient:
        self.ws = await websockets.connect(self.url, max_size=None)
        await self.ws.recv()  # engine.io open
        await self.ws.send("40" + json.dumps({"token": TOKEN, **self.auth}))
        while not (await self.ws.recv()).startswith("40"):
            pass
        self.reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.reader is not None:
            self.reader.cancel()
        await self.ws.close()

    async def _read(self) -> None:
        async for frame in self.ws:
            if frame == "2":
                await self.ws.send("3")  # engine.io ping -> pong
            elif frame.startswith("43"):  # socket.io ack: 43<id>[payload]
                end = frame.index("[")
                future = self.pending.pop(int(frame[2:end]), None)
                if future is not None:
                    future.set_result(frame[end:])
            elif frame.startswith('42["'):
                name = frame[4 : frame.index('"', 4)]
                self.broadcasts[name] += 1
                if name in self.handlers:
                    await self.handlers[name](json.loads(frame[2:])[1])

    async def call(self, event: str, payload: dict[str, Any]) -> str:
        """Emit with an ack; the raw ack text."""
        ack_id, self.next_id = self.next_id, self.next_id + 1
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.pending[ack_id] = future
        await self.ws.send(f"42{ack_id}" + json.dumps([event, payload]))
        return await future


async def pipelined_sends(c: WireClient, cid: str, messages: int, window: int) -> int:
    """Send `messages` requests with at most `window` in flight; how many were answered "sent"."""
    gate = asyncio.Semaphore(window)
    answered = 0

    async def one(i: int) -> None:
        nonlocal answered
        async with gate:
            answer = await c.call(
                "send_message", {"container_id": cid, "message": {"command": "echo", "i": i}}
            )
            answered += '"status": "sent"' in answer or '"status":"sent"' in answer

    await asyncio.gather(*(one(i) for i in range(messages)))
    return answered


async def echo_flow(c: Client, run: str = RUN) -> str:
    """One echo flow (flow:latest, the default image), connected to its socket."""
    made = await c.call("create_container", {"name": f"{run}-echo"})
    cid = str(made["container_id"])
    await c.call("start_container", {"container_id": cid})
    async with asyncio.timeout(60):
        while not (await c.call("get_container_status", {"container_id": cid}))["socket_connected"]:
            await asyncio.sleep(0.1)
    return cid


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", nargs="*", default=["rtt", "load", "fanout", "send"])
    parser.add_argument("--containers", type=int, default=100)
    parser.add_argument("--flows", type=int, default=1000, help="list, status: fake flows")
    parser.add_argument("--seconds", type=float, default=65, help="status: how long")
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", metavar="FILE", help="run the server under cProfile")
    parser.add_argument(
        "--journal",
        choices=["on", "off", "both"],
        default="both",
        help="send: with the journal on, off, or both side by side, run by run (default)",
    )
    parser.add_argument(
        "--server-nice",
        type=int,
        metavar="N",
        help="the service's server.nice (default: the config default)",
    )
    parser.add_argument(
        "--client-nice",
        type=int,
        default=0,
        metavar="N",
        help="run the measuring client at this CPU priority, like a client on "
        "another machine that this engine's work does not slow (start "
        "the script under `setsid -w` so its session gets it)",
    )
    args = parser.parse_args(argv)
    if args.client_nice:
        changed = apply_priority(args.client_nice)
        say(f"measuring client priority: {', '.join(changed) or 'unchanged'}")
    if {"rtt", "load", "fanout"} & set(args.which):
        async with server_process(args.profile, args.server_nice) as (url, server):
            await docker_benches(url, server, args)
    if "send" in args.which:
        await bench_send(args)
    if "list" in args.which:
        await bench_list(args)
    if "status" in args.which:
        await bench_status(args)


async def docker_benches(url: str, server: psutil.Process, args: argparse.Namespace) -> None:
    """rtt, load and fanout share one set of managed containers."""
    async with clients(url, 1) as (main_client,):
        began = time.perf_counter()
        ids = await make_containers(main_client, args.containers)
        say(
            f"setup: {len(ids)} containers created and started in "
            f"{time.perf_counter() - began:.1f} s"
        )
        say(f"load average at start: {os.getloadavg()[0]:.1f}")
        if "rtt" in args.which:
            await bench_rtt(main_client, ids, args.calls)
        if "load" in args.which:
            await bench_load(url, main_client, ids, args.calls)
        if "fanout" in args.which:
            await bench_fanout(url, main_client, ids, args.changes)
        say(
            f"server RSS {server.memory_info().rss / 2**20:.0f} MiB, "
            f"load average at end: {os.getloadavg()[0]:.1f}"
        )


if __name__ == "__main__":
    asyncio.run(main())
