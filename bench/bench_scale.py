"""Bench: the service and the panel idle with N adopted flows (issue 15: a thousand flows).

Creates N labelled busybox containers (in parallel, this run's own instance label and name
prefix, so no other manager or test run adopts them), then for each N and each pass, in one
run: the headless service (`flowmgr --server-only`, 127.0.0.1) and the panel (`flowmgr` in tmux
160x48, in-process manager), each launched fresh, measured idle over one window. Reports idle
CPU (% of one core) and its one-second windows' max, engine CPU above its idle baseline (dockerd,
containerd, shims), RSS, the service's open files, start to first answer / all listed (service),
first screen / all rows (panel), `list_containers` p50/p99 and server CPU per call, the
service's CPU and system calls per flow per second (the stats sweep is most of it), host steal
and load; medians over the passes, and the slope per 100 flows when more than one N is given.
The containers are grown from one N to the next and removed at the end, also on Ctrl-C/failure.

    .venv/bin/python bench/bench_scale.py --flows 100,250,500 [--window 30] [--passes 2]
    PYTHONPATH=/other/tree .venv/bin/python bench/bench_scale.py --flows 100 --code /other/tree
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import docker
import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_api import TOKEN, WireClient, free_port, pct  # noqa: E402
from bench_tui import BUSYBOX, Tmux, cpu_seconds, delta, engine_procs, say, tool_tree  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RUN = f"bsc{uuid.uuid4().hex[:6]}"
"""This run's instance label and container name prefix."""
SETTLE = 10.0
"""Seconds after start-up (all listed / all rows) before the idle window opens."""
RESERVE = 3 * 2**30
"""Bytes of MemAvailable left untouched when deciding how many containers fit."""
SUMMARY = re.compile(r"([\d,]+) of ([\d,]+) containers")


# ---------------------------------------------------------------- host and process readings


def host_ticks() -> list[int]:
    """The aggregate `cpu` line of /proc/stat (user nice system idle iowait irq softirq steal)."""
    with open("/proc/stat") as f:
        return [int(x) for x in f.readline().split()[1:9]]


def host_share(before: list[int], after: list[int]) -> dict[str, float]:
    """Steal and busy time over a window, % of all cores (as `top` shows st and us+sy)."""
    d = [a - b for a, b in zip(after, before, strict=True)]
    total = sum(d) or 1
    return {"steal": 100 * d[7] / total, "busy": 100 * (total - d[3] - d[4] - d[7]) / total}


def mem_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@dataclass
class Window:
    """One idle window: per-second CPU of the tool and of the engine, and the host around it."""

    tool: list[float] = field(default_factory=list)
    engine: list[float] = field(default_factory=list)
    host: dict[str, float] = field(default_factory=dict)

    @property
    def tool_mean(self) -> float:
        return statistics.fmean(self.tool)

    @property
    def engine_mean(self) -> float:
        return statistics.fmean(self.engine)


OURS: set[str] = set()
"""This run's container ids: only their shims count as the engine's (other runs on this shared
host start and stop containers of their own)."""


def our_engine() -> dict[int, psutil.Process]:
    """dockerd, containerd and the shims of this run's containers."""
    out = {}
    for pid, p in engine_procs().items():
        with contextlib.suppress(psutil.Error):
            if "shim" not in p.name() or OURS.intersection(p.cmdline()):
                out[pid] = p
    return out


def measure(tool: dict[int, psutil.Process], seconds: float) -> Window:
    """CPU of `tool` and of the engine, second by second, over `seconds` (% of one core)."""
    eng = our_engine()
    w = Window()
    h0, load = host_ticks(), os.getloadavg()[0]
    t_prev, e_prev, w_prev = cpu_seconds(tool), cpu_seconds(eng), time.perf_counter()
    end = w_prev + seconds
    while w_prev < end:
        time.sleep(max(0.0, min(1.0, end - time.perf_counter())))
        t_now, e_now, w_now = cpu_seconds(tool), cpu_seconds(eng), time.perf_counter()
        wall = w_now - w_prev
        w.tool.append(delta(t_prev, t_now) / wall * 100)
        w.engine.append(delta(e_prev, e_now) / wall * 100)
        t_prev, e_prev, w_prev = t_now, e_now, w_now
    w.host = {**host_share(h0, host_ticks()), "load": load}
    return w


# ---------------------------------------------------------------- containers


class Flows:
    """This run's busybox containers, labelled so the manager adopts them; removed on exit."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        """Made here as the manager makes it, one directory per flow inside, each mounted where
        the manager expects it: it listens for every flow, as for one it created itself."""
        self.state_dir.parent.mkdir(0o700, parents=True)
        self.state_dir.mkdir(0o700)
        self.client = docker.from_env(timeout=300)
        self.labels = {"flowmgr.managed": "true", "flowmgr.instance": RUN, "flowmgr.test": RUN}
        self.count = 0
        self.bytes_each = 0

    def grow(self, n: int) -> int:
        """Run containers up to `n` in all (16 at a time); fewer when memory would run short.
        The count reached."""
        want = n - self.count
        if want <= 0:
            return self.count
        if self.bytes_each:
            fits = max(0, (mem_available() - RESERVE) // self.bytes_each)
            if fits < want:
                say(f"memory: {fits} more containers fit (~{self.bytes_each >> 20} MiB each)")
                want = int(fits)
        before, t0 = mem_available(), time.perf_counter()
        names = [f"{RUN}-{i:04d}" for i in range(self.count, self.count + want)]

        def run(name: str) -> None:
            (self.state_dir / name).mkdir(0o711)
            mount = {str(self.state_dir / name): {"bind": "/run/flowmgr", "mode": "rw"}}
            # no network: an endpoint per container on the default bridge is what deadlocked
            # dockerd 20.10 here while 1,000 of them were being removed (libnetwork's
            # controller and network locks taken in opposite orders); idle flows need none
            made = self.client.containers.run(
                BUSYBOX,
                name=name,
                detach=True,
                labels=self.labels,
                volumes=mount,
                network_mode="none",
                # idle as a flow waiting for messages is: the image's default loop forks a
                # `sleep` every second, 1,000 forks a second here (the host 80 % busy)
                command=["sleep", "2147483647"],
            )
            OURS.add(made.id)

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(run, names))
        self.count += want
        time.sleep(5 + want / 25)  # the engine settles after many starts
        if want:
            self.bytes_each = max(self.bytes_each, (before - mem_available()) // want)
        say(
            f"containers: {want} more started in {time.perf_counter() - t0:.1f} s, "
            f"{self.count} now, ~{self.bytes_each >> 20} MiB each, "
            f"{mem_available() >> 20} MiB available"
        )
        return self.count

    def remove(self) -> None:
        ids = self.ids()
        for _ in range(3):  # one the engine was already removing is listed a moment longer
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(self.remove_one, self.ids()))
            if not self.ids():
                break
            time.sleep(5)
        for net in self.client.networks.list(filters={"label": f"flowmgr.instance={RUN}"}):
            with contextlib.suppress(docker.errors.APIError):
                net.remove()
        say(f"removed {len(ids)} bench containers; {len(self.ids())} left")

    def ids(self) -> list[str]:
        filters = {"label": f"flowmgr.test={RUN}"}
        return [c["Id"] for c in self.client.api.containers(all=True, filters=filters)]

    def remove_one(self, cid: str) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            self.client.api.remove_container(cid, force=True)


# ---------------------------------------------------------------- the service


@contextlib.contextmanager
def service(code: Path, config: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """`flowmgr --server-only` of checkout `code`; stopped (SIGTERM, then SIGKILL) on exit."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowmgr_tui", "--server-only", "--config", str(config)]
        + ["--port", str(port)],
        cwd=code,
        env={**os.environ, "PYTHONPATH": str(code)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=60)
        proc.kill()  # no-op once it has exited (Popen sends nothing to a reaped child)
        proc.wait()


async def listed(url: str) -> int:
    """How many containers one `list_containers` answer holds (-1: an error answer)."""
    async with WireClient(url) as c:
        answer = json.loads(await c.call("list_containers", {}))[0]
    return int(answer.get("count", -1)) if isinstance(answer, dict) else -1


async def start_up(url: str, n: int, t0: float) -> dict[str, float]:
    """Seconds from launch to the first HTTP answer, /health 200, and all `n` listed."""
    out: dict[str, float] = {}
    async with httpx.AsyncClient(timeout=5) as http, asyncio.timeout(300):
        while "first_answer_s" not in out or "health_ok_s" not in out:
            with contextlib.suppress(httpx.TransportError):
                code = (await http.get(f"{url}/health")).status_code
                out.setdefault("first_answer_s", time.perf_counter() - t0)
                if code == 200:
                    out["health_ok_s"] = time.perf_counter() - t0
                    break
            await asyncio.sleep(0.05)
        while True:
            with contextlib.suppress(OSError, ValueError, RuntimeError):
                if await listed(url) >= n:
                    out["all_listed_s"] = time.perf_counter() - t0
                    return out
            await asyncio.sleep(0.05)


async def list_calls(url: str, proc: psutil.Process, calls: int) -> dict[str, float]:
    """`calls` sequential list_containers (after 20 warm-up): latency and server CPU per call."""
    async with WireClient(url) as c:
        for _ in range(20):
            await c.call("list_containers", {})
        lat = []
        cpu0 = cpu_seconds({proc.pid: proc})
        for _ in range(calls):
            t = time.perf_counter()
            await c.call("list_containers", {})
            lat.append((time.perf_counter() - t) * 1000)
        cpu = delta(cpu0, cpu_seconds({proc.pid: proc})) / calls * 1000
    return {
        "list_p50_ms": statistics.median(lat),
        "list_p99_ms": pct(lat, 0.99),
        "list_cpu_ms": cpu,
    }


def syscalls(pid: int, seconds: float) -> float:
    """System calls per second of `pid` (all its threads), counted by `strace -c`."""
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as out:
        tids = os.listdir(f"/proc/{pid}/task")
        tracer = subprocess.Popen(
            ["strace", "-c", "-q", "-o", out.name, *(a for t in tids for a in ("-p", t))],
            stderr=subprocess.DEVNULL,
        )
        time.sleep(seconds)
        tracer.send_signal(signal.SIGINT)
        tracer.wait(timeout=30)
        total = [ln for ln in out.read().splitlines() if ln.strip().endswith("total")]
    # "100.00  0.123  4  1234  56  total": the calls column is the 4th
    return int(total[0].split()[3]) / seconds if total else float("nan")


def service_pass(code: Path, config: Path, n: int, args: argparse.Namespace) -> dict[str, float]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    t0 = time.perf_counter()
    with service(code, config, port) as proc:
        times = asyncio.run(start_up(url, n, t0))
        time.sleep(args.settle)
        p = psutil.Process(proc.pid)
        w = measure({p.pid: p}, args.window)
        r: dict[str, float] = {
            **times,
            **tool_readings("service", w),
            "rss_mb": p.memory_info().rss / 2**20,
            "open_files": open_files(p.pid),
        }
        r.update(asyncio.run(list_calls(url, p, args.calls)))
        if args.strace:
            r["syscalls_per_flow_s"] = syscalls(p.pid, args.strace) / n
    r["cpu_us_per_flow_s"] = r["service_cpu"] / 100 * 1e6 / n
    return r


def tool_readings(label: str, w: Window) -> dict[str, float]:
    return {
        f"{label}_cpu": w.tool_mean,
        f"{label}_max1s": max(w.tool),
        f"{label}_engine": w.engine_mean,
        f"{label}_steal": w.host["steal"],
        f"{label}_busy": w.host["busy"],
        f"{label}_load": w.host["load"],
    }


# ---------------------------------------------------------------- the panel


def panel_command(code: Path, config: Path, work: Path) -> str:
    """The shell command tmux runs: the panel of `code` with its in-process manager."""
    env = (
        f"env TERM=xterm-256color XDG_CONFIG_HOME={work}/xdg XDG_STATE_HOME={work}/state "
        f"CONFIG_FILE={config} PYTHONPATH={code}"
    )
    return f"cd {code} && exec {env} {sys.executable} -m flowmgr_tui --log-file {work}/panel.log"


def panel_pass(
    code: Path, config: Path, work: Path, n: int, window: float, settle: float
) -> dict[str, float]:
    cmd = panel_command(code, config, work)
    tmux = Tmux()
    try:
        t0 = time.perf_counter()
        pid = tmux.start(cmd)
        r: dict[str, float] = {}
        while "all_rows_s" not in r:
            screen = tmux.screen()
            now = time.perf_counter() - t0
            if "first_screen_s" not in r and screen.count(f"{RUN}-") >= 5:
                r["first_screen_s"] = now
            m = SUMMARY.search(screen)
            if m and min(int(g.replace(",", "")) for g in m.groups()) >= n:
                r["all_rows_s"] = now
            if now > 300:
                raise RuntimeError(f"panel: not all {n} rows after 300 s:\n{screen}")
            time.sleep(0.02)
        time.sleep(settle)
        procs = tool_tree(pid)
        w = measure(procs, window)
        r.update(tool_readings("panel", w))
        r["panel_rss_mb"] = sum(p.memory_info().rss for p in procs.values()) / 2**20
        r["panel_max1s_with_engine"] = max(t + e for t, e in zip(w.tool, w.engine, strict=True))
        return r
    finally:
        tmux.stop()


# ---------------------------------------------------------------- one N, the whole run


def engine_baseline(seconds: float) -> dict[str, float]:
    """The engine's idle CPU, nothing of ours running (after a rest: containers just started,
    or a tool just stopped, still weigh on it)."""
    time.sleep(SETTLE)
    w = measure({}, seconds)
    return {"engine_idle": w.engine_mean, "engine_idle_max1s": max(w.engine)}


def one_n(code: Path, config: Path, work: Path, n: int, args: argparse.Namespace) -> dict[str, Any]:
    passes = []
    before = engine_baseline(args.window)
    for i in range(args.passes):
        r = service_pass(code, config, n, args)
        r.update(panel_pass(code, config, work, n, args.window, args.settle))
        # the engine's idle drifts (it was still settling after 1,000 starts): the baseline of
        # a pass is the mean of the windows before and after it
        after = engine_baseline(args.window)
        base = (before["engine_idle"] + after["engine_idle"]) / 2
        r.update(
            engine_idle=base,
            engine_idle_before=before["engine_idle"],
            engine_idle_after=after["engine_idle"],
            engine_idle_max1s=max(before["engine_idle_max1s"], after["engine_idle_max1s"]),
        )
        before = after
        r["service_engine_added"] = r["service_engine"] - base
        r["panel_engine_added"] = r["panel_engine"] - base
        r["panel_total"] = r["panel_cpu"] + max(0.0, r["panel_engine_added"])
        r["panel_max1s_with_engine"] -= base
        passes.append(r)
        say(f"N={n} pass {i + 1}: " + json.dumps({k: round(v, 3) for k, v in r.items()}))
    keys = passes[0].keys()
    med = {k: statistics.median(p[k] for p in passes) for k in keys}
    spread = {k: [round(p[k], 3) for p in passes] for k in keys}
    return {"n": n, "median": med, "passes": spread}


def slope(results: list[dict[str, Any]], key: str) -> float:
    """Least-squares change of the median of `key` per 100 flows."""
    xs = [r["n"] / 100 for r in results]
    ys = [r["median"][key] for r in results]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


TABLE = [
    ("service idle CPU %", "service_cpu"),
    ("service max 1 s %", "service_max1s"),
    ("service engine added %", "service_engine_added"),
    ("panel idle CPU %", "panel_cpu"),
    ("panel engine added %", "panel_engine_added"),
    ("panel + engine %", "panel_total"),
    ("panel + engine max 1 s %", "panel_max1s_with_engine"),
    ("service RSS MB", "rss_mb"),
    ("panel RSS MB", "panel_rss_mb"),
    ("service open files", "open_files"),
    ("service first answer s", "first_answer_s"),
    ("service all listed s", "all_listed_s"),
    ("panel first screen s", "first_screen_s"),
    ("panel all rows s", "all_rows_s"),
    ("list_containers p50 ms", "list_p50_ms"),
    ("list_containers p99 ms", "list_p99_ms"),
    ("list_containers server CPU ms", "list_cpu_ms"),
    ("service CPU us per flow per s", "cpu_us_per_flow_s"),
    ("service syscalls per flow per s", "syscalls_per_flow_s"),
    ("engine idle (baseline) %", "engine_idle"),
    ("engine idle max 1 s %", "engine_idle_max1s"),
    ("host steal % (service, panel)", "service_steal"),
    ("host busy % (service window)", "service_busy"),
    ("load average (service window)", "service_load"),
]


def table(results: list[dict[str, Any]]) -> str:
    """A Markdown table: one column per N (medians), and the slope per 100 flows."""
    many = len(results) > 1
    head = (
        "| | " + " | ".join(f"{r['n']} flows" for r in results) + (" | per 100 |" if many else " |")
    )
    rule = "| --- " * (len(results) + 1 + many) + "|"
    rows = [head, rule]
    for title, key in TABLE:
        if key not in results[0]["median"]:
            continue
        cells = []
        for r in results:
            cell = f"{r['median'][key]:.2f}"
            if key == "service_steal":
                cell += f", {r['median']['panel_steal']:.2f}"
            cells.append(cell)
        tail = f" | {slope(results, key):+.2f} |" if many else " |"
        rows.append(f"| {title} | " + " | ".join(cells) + tail)
    return "\n".join(rows)


def write_config(path: Path, sock: Path) -> None:
    path.write_text(
        json.dumps(
            {
                "socket_dir": str(sock),
                "log_level": "WARNING",
                "server": {"host": "127.0.0.1", "token": TOKEN},
                "docker": {"instance": RUN, "network": f"flowmgr-{RUN}", "stop_timeout": 2},
            }
        )
    )


def interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM ends the run like Ctrl-C: the `finally` clauses remove what it made."""
    raise KeyboardInterrupt


def revision(code: Path) -> str:
    out = subprocess.run(
        ["git", "-C", str(code), "log", "-1", "--format=%h %cI %s"], capture_output=True, text=True
    )
    dirty = subprocess.run(
        ["git", "-C", str(code), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return out.stdout.strip()[:100] + (" (+ uncommitted changes)" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flows", default="100,250", help="comma-separated N (ascending)")
    parser.add_argument("--window", type=float, default=30.0, help="seconds per idle window")
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument(
        "--settle",
        type=float,
        default=SETTLE,
        help="seconds between a tool's start-up (all rows listed) and its idle window",
    )
    parser.add_argument("--calls", type=int, default=200, help="list_containers calls timed")
    parser.add_argument(
        "--strace", type=float, default=10.0, help="seconds of `strace -c` (0: none)"
    )
    parser.add_argument(
        "--code", type=Path, default=ROOT, help="the checkout whose flowmgr is measured"
    )
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args(argv)
    ns = sorted(int(x) for x in args.flows.split(","))
    code = args.code.resolve()
    if args.strace and not shutil.which("strace"):
        args.strace = 0.0
        say("strace not found: no system call counts")
    signal.signal(signal.SIGTERM, interrupt)
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(code / "server"), str(code / "flowmgr_tui")],
        check=True,
    )
    say(f"run {RUN}: code {code} at {revision(code)}; {os.cpu_count()} cores")
    work = Path(tempfile.mkdtemp(prefix="fmscale"))
    sock = Path("/tmp/fms") / RUN[3:]
    config = work / "config.json"
    write_config(config, sock)
    flows = Flows(sock / f".flowmgr-{RUN}")
    results = []
    try:
        for n in ns:
            reached = flows.grow(n)
            if reached < n:
                say(f"stopping at {reached} containers: {n} do not fit in memory")
                break
            results.append(one_n(code, config, work, n, args))
            say(
                f"N={n} medians: "
                + json.dumps({k: round(v, 3) for k, v in results[-1]["median"].items()})
            )
            if args.json:  # after each N: removing 1,000 containers takes minutes
                args.json.write_text(
                    json.dumps({"run": RUN, "code": revision(code), "results": results})
                )
        if results:
            say(table(results))
    finally:
        flows.remove()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(sock, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
