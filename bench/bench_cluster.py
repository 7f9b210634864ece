"""Bench: cluster mode (issue 16): the hub and its agents on a 3-node Swarm built for the run.

Builds its own cluster (scripts/cluster-up.sh, prefix fmb on 10.216.0.0/24, heartbeat 1 s,
busybox and flow:latest loaded), starts one hub (`flowmgr --hub` on the bridge address over
node 1's engine) and one agent per node (`flowmgr --agent` in the node's network namespace),
and beside them a single-host `flowmgr --server-only` on the host engine (its own instance,
socket_dir and 127.0.0.1 port). One API client stays connected to the hub for the whole run,
listening to its pushes. Then:

1. hub CPU (% of one core) and RSS idle over one window at 0, 100, 200, 300 busybox flows,
   created and started through the hub (create+start throughput measured at each step); the
   agents' CPU in the same windows;
2. `list_containers` at 300 flows over 3 nodes: p50/p90 over `--calls` calls (py-spy profile
   of the hub when p50 misses 20 ms, if py-spy is there);
3. `send_message` round trip (send until the `{"pong": true}` push arrives) through hub and
   agent, into one flow:latest flow per node, and against the single-host service's one
   flow:latest flow, in alternating rounds; then the flow:latest flows are deleted;
4. each agent (about 100 busybox flows per node by Swarm's spread) against the single-host
   service with 100 busybox flows on the host engine, idle, both measured over the same
   windows, `--cycles` of them: medians and ratios.

Everything carries this run's instance label; the single-host containers are removed and the
cluster torn down (scripts/cluster-down.sh, same environment) at the end, also on failure,
Ctrl-C or SIGTERM.

    .venv/bin/python bench/bench_cluster.py                       # 300 flows, 60 s windows
    .venv/bin/python bench/bench_cluster.py --flows 20 --window 5   # a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_api import TOKEN, WireClient, cleanup, free_port, pct  # noqa: E402
from bench_scale import host_share, host_ticks, revision  # noqa: E402
from bench_tui import BUSYBOX, cpu_seconds, delta, say  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FLOWMGR = str(ROOT / ".venv" / "bin" / "flowmgr")
RUN = f"fmb{uuid.uuid4().hex[:6]}"
"""This run's instance label (hub and agents) and flow name prefix; the single host's is RUN+s."""
CLUSTER_ENV = {
    "FMC_PREFIX": "fmb",
    "FMC_NET": "10.216.0",
    "FMC_HEARTBEAT": "1s",
    "FMC_IMAGES": f"{BUSYBOX} flow:latest",
}
BRIDGE = CLUSTER_ENV["FMC_NET"] + ".1"
STATE = Path("/run/fmb/cluster.json")
FLOW_IMAGE = "flow:latest"
SINGLE_RUN = f"{RUN}s"
"""The single-host service's instance label."""
SINGLE_SOCK = Path("/tmp/fmb") / SINGLE_RUN
PY_SPY = Path("/tmp/prof/spyenv/bin/py-spy")
LIST_TARGET_MS = 20.0


# ---------------------------------------------------------------- processes


@dataclass
class Proc:
    """A role's process (hub, agent, single host): its Popen and log."""

    label: str
    popen: subprocess.Popen[bytes]
    log: Path

    def tree(self) -> dict[int, psutil.Process]:
        try:
            p = psutil.Process(self.popen.pid)
            return {q.pid: q for q in [p, *p.children(recursive=True)]}
        except psutil.Error:
            return {}

    def rss_mb(self) -> float:
        total = 0
        for p in self.tree().values():
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        return total / 2**20

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError as err:
            return f"(no log: {err})"

    def stop(self) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(10)


def launch(label: str, cmd: list[str], work: Path, env: dict[str, str]) -> Proc:
    log = work / f"{label}.log"
    with open(log, "ab") as out:  # the child keeps its own copy
        popen = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**{k: v for k, v in os.environ.items() if k != "CONFIG_FILE"}, **env},
            start_new_session=True,
        )
    return Proc(label, popen, log)


def role_config(work: Path, role: str, port: int) -> Path:
    """The config of the hub or of a node's agent: this run's instance, its own dirs."""
    data = {
        "socket_dir": str(work / role / "sockets"),
        "log_level": "WARNING",
        "server": {"token": TOKEN, "host": BRIDGE, "port": port},
        "docker": {
            "instance": RUN,
            "default_image": FLOW_IMAGE,
            "stop_timeout": 2,
            "call_timeout": 30,
        },
        "journal": {"path": str(work / role / "journal.db")},
        "cluster": {
            "mode": "swarm",
            "hub_url": f"http://{BRIDGE}:{port}",
            "agent_token_file": str(work / "agent.token"),
        },
    }
    (work / role).mkdir(parents=True, exist_ok=True)
    path = work / f"{role}.json"
    path.write_text(json.dumps(data))
    return path


def single_config(work: Path, sock: Path, run: str) -> Path:
    """The single-host service's config: host engine, its own instance and socket_dir."""
    path = work / "single.json"
    path.write_text(
        json.dumps(
            {
                "socket_dir": str(sock),
                "log_level": "WARNING",
                "server": {"host": "127.0.0.1", "token": TOKEN},
                "docker": {
                    "instance": run,
                    "network": f"flowmgr-{run}",
                    "default_image": FLOW_IMAGE,
                    "stop_timeout": 2,
                },
                "journal": {"path": str(work / "single-journal.db")},
            }
        )
    )
    return path


def wait_health(url: str, proc: Proc, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.label} exited ({proc.popen.returncode}):\n{proc.tail()}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{proc.label}: no /health 200 after {seconds} s:\n{proc.tail()}")


@contextlib.contextmanager
def cluster() -> Iterator[list[dict[str, Any]]]:
    """A fresh 3-node cluster (this bench's prefix and net); always torn down."""
    env = {**os.environ, **CLUSTER_ENV}
    try:
        t0 = time.perf_counter()
        up = subprocess.run(
            ["bash", str(ROOT / "scripts" / "cluster-up.sh"), "3"],
            env=env,
            capture_output=True,
            text=True,
        )
        if up.returncode:
            raise RuntimeError(f"cluster-up.sh: exit {up.returncode}\n{up.stderr[-3000:]}")
        say(f"cluster up in {time.perf_counter() - t0:.1f} s")
        yield list(json.loads(STATE.read_text())["nodes"])
    finally:
        down = subprocess.run(
            ["bash", str(ROOT / "scripts" / "cluster-down.sh")],
            env=env,
            capture_output=True,
            text=True,
        )
        say(f"cluster-down.sh: exit {down.returncode} {down.stderr.strip()[-500:]}")


# ---------------------------------------------------------------- the API


async def call(c: WireClient, event: str, payload: dict[str, Any]) -> Any:
    answer = json.loads(await asyncio.wait_for(c.call(event, payload), 120))[0]
    if isinstance(answer, dict) and answer.get("error"):
        raise RuntimeError(f"{event} {payload}: {answer.get('error_type')}: {answer}")
    return answer


async def linked(c: WireClient, nodes: int = 3, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while True:
        answer = await call(c, "list_containers", {})
        agents = [n.get("agent") for n in answer.get("nodes") or []]
        if agents.count("connected") >= nodes:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"agents not linked: {answer.get('nodes')}")
        await asyncio.sleep(0.5)


async def grow(c: WireClient, names: list[str], image: str, parallel: int = 8) -> dict[str, float]:
    """Create, then start, each of `names` through `c`; seconds and flows per second."""
    gate = asyncio.Semaphore(parallel)
    ids: list[str] = []

    async def create(name: str) -> None:
        async with gate:
            made = await call(c, "create_container", {"name": name, "image": image})
            ids.append(str(made["container_id"]))

    async def start(cid: str) -> None:
        async with gate:
            answer = await call(c, "start_container", {"container_id": cid})
            if answer.get("status") != "running":
                raise RuntimeError(f"start {cid}: {answer}")

    t0 = time.perf_counter()
    if names:  # the first alone: on one host it makes the network
        await create(names[0])
    await asyncio.gather(*(create(n) for n in names[1:]))
    t1 = time.perf_counter()
    await asyncio.gather(*(start(cid) for cid in ids))
    t2 = time.perf_counter()
    n = max(1, len(names))
    return {
        "flows": len(names),
        "create_s": t1 - t0,
        "start_s": t2 - t1,
        "create_per_s": n / (t1 - t0),
        "start_per_s": n / (t2 - t1),
        "create_start_per_s": n / (t2 - t0),
    }


async def running_by_node(c: WireClient, prefix: str) -> Counter[str]:
    answer = await call(c, "list_containers", {})
    return Counter(
        str(x.get("node") or "?")
        for x in answer["containers"]
        if str(x.get("name", "")).startswith(prefix) and x.get("status") == "running"
    )


async def list_latency(c: WireClient, calls: int) -> list[float]:
    for _ in range(20):
        await c.call("list_containers", {})
    lat = []
    for _ in range(calls):
        t = time.perf_counter()
        await c.call("list_containers", {})
        lat.append((time.perf_counter() - t) * 1000)
    return lat


@dataclass
class Pinger:
    """Round trips on one client: send_message {"command": "ping"} until its pong push."""

    client: WireClient
    waiting: dict[str, asyncio.Future[float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.client.handlers["message_received"] = self._received

    async def _received(self, data: Any) -> None:
        message = data.get("message") or {}
        future = self.waiting.get(data.get("container_id"))
        if future is not None and not future.done() and message.get("pong") is True:
            future.set_result(time.perf_counter())

    async def once(self, cid: str, timeout: float = 5) -> float:
        """One round trip in ms (raises on a refusal or no pong within `timeout`)."""
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.waiting[cid] = future
        t0 = time.perf_counter()
        try:
            answer = await call(self.client, "send_message", _ping(cid))
            if answer.get("status") != "sent":
                raise RuntimeError(f"send_message {cid}: {answer}")
            return (await asyncio.wait_for(future, timeout) - t0) * 1000
        finally:
            self.waiting.pop(cid, None)

    async def ready(self, cid: str, seconds: float = 60) -> None:
        """Until `cid` answers (its runtime connects to its socket after the start)."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                await self.once(cid, 2)
                return
            except (RuntimeError, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.3)


def _ping(cid: str) -> dict[str, Any]:
    return {"container_id": cid, "message": {"command": "ping"}}


# ---------------------------------------------------------------- windows


def window(procs: dict[str, Proc], seconds: float) -> dict[str, float]:
    """CPU (% of one core) of each process over `seconds`, RSS at the end, and the host."""
    trees = {k: p.tree() for k, p in procs.items()}
    h0, load = host_ticks(), os.getloadavg()[0]
    before = {k: cpu_seconds(t) for k, t in trees.items()}
    w0 = time.perf_counter()
    time.sleep(seconds)
    wall = time.perf_counter() - w0
    out = {f"{k}_cpu": delta(before[k], cpu_seconds(t)) / wall * 100 for k, t in trees.items()}
    out.update({f"{k}_rss_mb": p.rss_mb() for k, p in procs.items()})
    host = host_share(h0, host_ticks())
    out.update(steal=host["steal"], busy=host["busy"], load=load)
    return out


def rounded(d: dict[str, Any]) -> str:
    return json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in d.items()})


def lat_summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": statistics.median(values),
        "p90": pct(values, 0.9),
        "p99": pct(values, 0.99),
    }


def spy(pid: int, seconds: int, out: Path) -> subprocess.Popen[bytes] | None:
    """py-spy record of `pid` for `seconds` (raw folded stacks), when py-spy is installed."""
    exe = PY_SPY if PY_SPY.exists() else shutil.which("py-spy")
    if exe is None:
        say("py-spy not found: no profile")
        return None
    cmd = [str(exe), "record", "-p", str(pid), "-d", str(seconds), "-f", "raw", "-o", str(out)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# ---------------------------------------------------------------- the run


async def measure(args: argparse.Namespace, work: Path, nodes: list[dict[str, Any]]) -> None:
    result: dict[str, Any] = {
        "run": RUN,
        "code": revision(ROOT),
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    port = free_port()
    hub_url = f"http://{BRIDGE}:{port}"
    n1 = nodes[0]["host"]
    procs: dict[str, Proc] = {}
    single_run, sock = SINGLE_RUN, SINGLE_SOCK
    try:
        procs["hub"] = launch(
            "hub",
            [FLOWMGR, "--hub", "--config", str(role_config(work, "hub", port))],
            work,
            {"DOCKER_HOST": n1},
        )
        wait_health(hub_url, procs["hub"])
        for node in nodes:
            label = f"agent_{node['name']}"
            cmd = ["nsenter", f"--net={node['netns_path']}", FLOWMGR, "--agent"]
            cmd += ["--config", str(role_config(work, node["name"], port))]
            procs[label] = launch(label, cmd, work, {"DOCKER_HOST": node["host"]})
        single_port = free_port()
        single_url = f"http://127.0.0.1:{single_port}"
        sock.mkdir(parents=True, exist_ok=True)
        procs["single"] = launch(
            "single",
            [FLOWMGR, "--server-only", "--config", str(single_config(work, sock, single_run))]
            + ["--port", str(single_port)],
            work,
            {},
        )
        wait_health(single_url, procs["single"])
        agents = {k: p for k, p in procs.items() if k.startswith("agent_")}
        async with WireClient(hub_url) as hub, WireClient(single_url) as single:
            await linked(hub)
            say(f"hub {hub_url} and 3 agents linked; single host {single_url}")
            made = await grow(
                single, [f"{single_run}-b{i:03d}" for i in range(args.single_flows)], BUSYBOX
            )
            say(f"single host: {rounded(made)}")
            result["single_grow"] = made
            # 1. hub idle at 0, 100, 200, 300 flows
            steps = sorted({0, *range(args.step, args.flows + 1, args.step), args.flows})
            result["hub"] = []
            count = 0
            for target in steps:
                names = [f"{RUN}-b{i:03d}" for i in range(count, target)]
                made = await grow(hub, names, BUSYBOX) if names else {}
                count = target
                if made:
                    say(f"hub: {rounded(made)}")
                await asyncio.sleep(args.settle)
                spread = await running_by_node(hub, f"{RUN}-b")
                w = await asyncio.to_thread(window, {"hub": procs["hub"], **agents}, args.window)
                row = {"flows": target, **w, "grow": made, "by_node": dict(spread)}
                result["hub"].append(row)
                say(f"hub at {target} flows: {rounded(w)} by node {dict(spread)}")
            # 2. list_containers at the top count
            lat = await list_latency(hub, args.calls)
            result["list"] = lat_summary(lat)
            say(f"list_containers at {count} flows: {rounded(result['list'])}")
            if result["list"]["p50"] >= LIST_TARGET_MS:
                out = work / "hub-list.pyspy.txt"
                tracer = spy(procs["hub"].popen.pid, 20, out)
                if tracer is not None:
                    t_end = time.monotonic() + 20
                    more = []
                    while time.monotonic() < t_end:
                        more += await list_latency(hub, 20)
                    tracer.wait(60)
                    kept = Path("/tmp") / f"{RUN}-hub-list.pyspy.txt"
                    if out.exists():
                        shutil.copy(out, kept)
                    say(f"py-spy of the hub during list calls: {kept} ({lat_summary(more)})")
            # 3. send_message round trips
            pings = await round_trips(hub, single, args, single_run)
            result["ping"] = pings
            # 4. agents vs the single host at ~100 flows per node
            await asyncio.sleep(args.settle)
            spread = await running_by_node(hub, f"{RUN}-b")
            cycles = []
            for i in range(args.cycles):
                w = await asyncio.to_thread(
                    window, {**agents, "single": procs["single"]}, args.window
                )
                cycles.append(w)
                say(f"agents vs single host, window {i + 1}: {rounded(w)}")
            med = {k: statistics.median(c[k] for c in cycles) for k in cycles[0]}
            for a in agents:  # the ratio of the medians (a window can read 0.0 at 10 ms ticks)
                med[f"{a}_ratio"] = med[f"{a}_cpu"] / med["single_cpu"] if med["single_cpu"] else 0
            result["agents"] = {"by_node": dict(spread), "windows": cycles, "median": med}
            say(f"agents vs single host, medians: {rounded(med)} by node {dict(spread)}")
        report(result)
        if args.json:
            args.json.write_text(json.dumps(result, indent=1))
    finally:
        for p in procs.values():
            if not p.alive():
                say(f"{p.label} had exited ({p.popen.returncode}):\n{p.tail()}")
        for p in reversed(procs.values()):  # the agents before the hub they link to
            p.stop()


async def round_trips(
    hub: WireClient, single: WireClient, args: argparse.Namespace, single_run: str
) -> dict[str, Any]:
    """Pings through hub and agent (one flow:latest per node) and into the single host's one,
    in alternating rounds of 50; the flow:latest flows are deleted afterwards."""
    hub_ids = [
        str((await call(hub, "create_container", {"name": f"{RUN}-p{i}"}))["container_id"])
        for i in range(args.ping_flows)
    ]
    made = await call(single, "create_container", {"name": f"{single_run}-p0"})
    single_ids = [str(made["container_id"])]
    for c, ids in ((hub, hub_ids), (single, single_ids)):
        for cid in ids:
            await call(c, "start_container", {"container_id": cid})
    by_node = Counter(
        str(x.get("node"))
        for x in (await call(hub, "list_containers", {}))["containers"]
        if x["id"] in hub_ids
    )
    hp, sp = Pinger(hub), Pinger(single)
    for cid in hub_ids:
        await hp.ready(cid)
    await sp.ready(single_ids[0])
    lat: dict[str, list[float]] = {"hub": [], "single": []}
    for _ in range(10):  # warm-up
        await hp.once(hub_ids[0])
        await sp.once(single_ids[0])
    i = 0
    while len(lat["hub"]) < args.pings:
        for _ in range(50):
            lat["hub"].append(await hp.once(hub_ids[i % len(hub_ids)]))
            i += 1
        for _ in range(50):
            lat["single"].append(await sp.once(single_ids[0]))
    out: dict[str, Any] = {k: lat_summary(v) for k, v in lat.items()}
    out["ratio_p50"] = out["hub"]["p50"] / out["single"]["p50"]
    out["flows_by_node"] = dict(by_node)
    say(f"send_message round trip: {json.dumps(out, default=round)}")
    for c, ids in ((hub, hub_ids), (single, single_ids)):
        for cid in ids:
            await call(c, "delete_container", {"container_id": cid, "force": True})
    return out


def report(r: dict[str, Any]) -> None:
    say("\n=== results (medians; CPU in % of one core) ===")
    for row in r["hub"]:
        g = row["grow"]
        made = (
            f", created+started {g['flows']} at {g['create_start_per_s']:.1f}/s "
            f"(create {g['create_per_s']:.1f}/s, start {g['start_per_s']:.1f}/s)"
            if g
            else ""
        )
        agents = ", ".join(
            f"{k[:-4]} {v:.2f}"
            for k, v in row.items()
            if k.startswith("agent_") and k.endswith("_cpu")
        )
        say(
            f"hub at {row['flows']} flows: CPU {row['hub_cpu']:.2f} %, "
            f"RSS {row['hub_rss_mb']:.1f} MB;"
            f" agents {agents}; host busy {row['busy']:.0f} %, steal {row['steal']:.1f} %,"
            f" load {row['load']:.1f}{made}"
        )
    hub = r["hub"]
    if len(hub) > 1 and hub[-1]["flows"]:
        per = 100 / (hub[-1]["flows"] - hub[0]["flows"])
        say(
            f"hub per 100 flows (0 -> {hub[-1]['flows']}): "
            f"CPU {(hub[-1]['hub_cpu'] - hub[0]['hub_cpu']) * per:+.2f} %, "
            f"RSS {(hub[-1]['hub_rss_mb'] - hub[0]['hub_rss_mb']) * per:+.1f} MB"
        )
    lst = r["list"]
    say(f"list_containers: p50 {lst['p50']:.2f} ms, p90 {lst['p90']:.2f} ms (n={lst['n']})")
    p = r["ping"]
    say(
        f"send_message round trip: hub+agent p50 {p['hub']['p50']:.2f} / p90 {p['hub']['p90']:.2f}"
        f" ms, single host p50 {p['single']['p50']:.2f} / p90 {p['single']['p90']:.2f} ms,"
        f" ratio of p50s {p['ratio_p50']:.2f}"
    )
    a = r["agents"]["median"]
    for k in sorted(a):
        if k.startswith("agent_") and k.endswith("_cpu"):
            node = k[:-4]
            say(
                f"{node}: CPU {a[k]:.2f} % vs single host {a['single_cpu']:.2f} % "
                f"(ratio of medians {a[f'{node}_ratio']:.2f}), RSS {a[f'{node}_rss_mb']:.1f} MB"
            )


def interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM ends the run like Ctrl-C: the `finally` clauses remove what it made."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flows", type=int, default=300, help="busybox flows through the hub")
    parser.add_argument("--step", type=int, default=100, help="flows between hub windows")
    parser.add_argument("--single-flows", type=int, default=100, help="on the single host")
    parser.add_argument("--window", type=float, default=60.0, help="seconds per idle window")
    parser.add_argument("--settle", type=float, default=15.0, help="seconds before a window")
    parser.add_argument("--cycles", type=int, default=3, help="agent vs single-host windows")
    parser.add_argument("--calls", type=int, default=300, help="list_containers calls timed")
    parser.add_argument("--pings", type=int, default=300, help="round trips each side")
    parser.add_argument("--ping-flows", type=int, default=3, help="flow:latest via the hub")
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, interrupt)
    say(f"run {RUN}: code {revision(ROOT)}; {os.cpu_count()} cores")
    work = Path(tempfile.mkdtemp(prefix="fmbench"))
    try:
        try:
            with cluster() as nodes:
                asyncio.run(measure(args, work, nodes))
        finally:
            # after the cluster is down: removing the host's 100 containers once hung the
            # host's dockerd 20.10 (17:50 UTC run), and the cluster must not wait on it
            say(f"removing the single host's containers ({SINGLE_RUN}); logs kept in {work}")
            cleanup(SINGLE_SOCK, SINGLE_RUN)
    except KeyboardInterrupt:
        say("interrupted: torn down")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
