"""What one flow's resource sample costs (issue 15): kept-open files against open/read/close,
and the sampler's steady state with the watched/background rates, on real flows and on a fake
cgroup tree of many more.

1. One read of every flow, per flow: CPU time of the reading thread (user + system), and in
   a pass of its own the system calls (each `os` call of the reader counted), for
   - `baseline`: the reader of another checkout (`--baseline DIR`, e.g. main before issue 15:
     open, read, read, close of each file);
   - `open-per-read`: today's reader when the descriptor budget says no (open, pread, close);
   - `kept-open`: today's reader holding its files (one pread each).
2. The sampler running (`ResourceSampler.run`) for `--seconds` per setting, process CPU per flow
   per second and the busiest one-second window:
   - `all-1s-open`: every flow every second, files opened per read (today's rate, old files);
   - `all-1s-kept`: every flow every second, files kept open;
   - `watched-40`: 40 flows watched (a screen's rows) every second, the rest every 10 s
     (the defaults), files kept open.

Real flows are the engine's running containers (any: only their files are read), topped up
to `--flows` with busybox containers made here (labelled, removed at the end). `--fake N`
repeats part 2 on N flows of a fake cgroup tree under a tmp dir (tmpfs files are cheaper than
cgroupfs: this shows the Python side and the scheduling at 1,000 flows).

Run: .venv/bin/python bench/bench_sampler.py [--flows 100] [--fake 1000] [--seconds 20]
     [--baseline /path/to/older/checkout]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from server.core import cgroups, sample_files  # noqa: E402
from server.core.bus import EventBus  # noqa: E402
from server.core.config import Settings, load_settings  # noqa: E402
from server.core.docker_adapter import ContainerInfo, DockerAdapter  # noqa: E402
from server.core.fd_budget import FdBudget  # noqa: E402
from server.core.flow_channel import FlowChannelHub  # noqa: E402
from server.core.registry import Registry  # noqa: E402
from server.core.stats import ResourceSampler  # noqa: E402
from server.core.stopped import StoppedSet  # noqa: E402
from tests.fake_cgroups import fake_host  # noqa: E402

IMAGE = "flowmgr-test-busybox:latest"
LABEL = f"flowmgr.bench-sampler={int(time.time())}"
SETTINGS = {
    "all-1s-open": {"background_stats_interval": 1.0},
    "all-1s-kept": {"background_stats_interval": 1.0},
    "watched-40": {},
}


def say(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


# ---------------------------------------------------------------- flows


def running_flows() -> list[tuple[str, int]]:
    ids = subprocess.run(["docker", "ps", "-q", "--no-trunc"], capture_output=True, text=True)
    if not ids.stdout.split():
        return []
    out = subprocess.run(
        ["docker", "inspect", "--format", "{{.Id}} {{.State.Pid}}", *ids.stdout.split()],
        capture_output=True,
        text=True,
    )
    pairs = (line.split() for line in out.stdout.splitlines())
    return [(cid, int(pid)) for cid, pid in pairs if int(pid) > 0]


@contextmanager
def real_flows(n: int) -> Iterator[list[tuple[str, int]]]:
    """N running containers: the engine's, topped up with busybox ones removed on exit."""
    have = running_flows()
    made = max(0, n - len(have))
    try:
        if made:
            say(f"starting {made} busybox containers ({LABEL})")
            run = ["docker", "run", "-d", "--label", LABEL, IMAGE, "sleep", "1000000"]
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda _: subprocess.run(run, capture_output=True), range(made)))
            have = running_flows()
        yield have[:n]
    finally:
        left = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label={LABEL}"], capture_output=True, text=True
        ).stdout.split()
        if left:
            subprocess.run(["docker", "rm", "-f", *left], capture_output=True)


def sampler_for(
    flows: list[tuple[str, int]], budget: FdBudget, root: str = "", **mon: Any
) -> ResourceSampler:
    settings: Settings = load_settings(
        env={}, socket_dir=tempfile.gettempdir(), **{f"monitoring__{k}": v for k, v in mon.items()}
    )
    bus = EventBus()
    registry = Registry(bus, FlowChannelHub(bus, settings.flow), StoppedSet("/"), "/", "/run")
    at = datetime.now(UTC)
    for cid, pid in flows:
        registry.apply(
            ContainerInfo(
                cid, f"f-{cid[:8]}", "img", "running", "none", at, at, None, 0, False, pid
            )
        )
    proc = f"{root}/proc" if root else "/proc"
    return ResourceSampler(DockerAdapter(), registry, settings, proc, root, fd_budget=budget)


# ---------------------------------------------------------------- part 1: one read


class CountingOs(ModuleType):
    """`os` for a reader module, counting the calls that are system calls."""

    COUNTED = ("open", "read", "pread", "close")

    def __init__(self, real: ModuleType) -> None:
        super().__init__("os")
        self.real = real
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.real, name)
        if name not in self.COUNTED:
            return value

        def counted(*args: Any) -> Any:
            self.calls += 1
            return value(*args)

        return counted


@contextmanager
def counting(*modules: ModuleType) -> Iterator[CountingOs]:
    real = modules[0].os
    proxy = CountingOs(real)
    for m in modules:
        m.os = proxy  # type: ignore[attr-defined]
    try:
        yield proxy
    finally:
        for m in modules:
            m.os = real  # type: ignore[attr-defined]


def load_baseline(checkout: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "baseline_cgroups", Path(checkout) / "server/core/cgroups.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (dataclasses look their module up there)
    spec.loader.exec_module(module)
    return module


Mode = tuple[Sequence[Callable[[], Any]], tuple[ModuleType, ...]]
"""One way of reading: a read of each flow, and the modules whose `os` calls are counted."""


def read_all(reads: Sequence[Callable[[], Any]], times: int) -> None:
    for _ in range(times):
        for read in reads:
            with suppress(OSError):  # a container that ended meanwhile
                read()


def per_read(modes: dict[str, Mode], passes: int = 7) -> dict[str, dict[str, float]]:
    """Per mode: CPU microseconds per flow of one read of every flow (10 reads a pass, so the
    tenth-read refreshes count in their share; passes interleaved across the modes, as the
    host's load drifts; the median), then the system calls of one pass counted apart (the
    counting costs more than the calls)."""
    costs: dict[str, list[float]] = {mode: [] for mode in modes}
    for _ in range(passes):
        for mode, (reads, _) in modes.items():
            t0 = time.thread_time_ns()
            read_all(reads, 10)
            costs[mode].append((time.thread_time_ns() - t0) / 1000 / 10 / len(reads))
    out = {}
    for mode, (reads, modules) in modes.items():
        with counting(*modules) as os_proxy:
            read_all(reads, 10)
        out[mode] = {
            "cpu_us": statistics.median(costs[mode]),
            "syscalls": os_proxy.calls / 10 / len(reads),
            "flows": len(reads),
        }
    return out


def baseline_reads(checkout: str, flows: list[tuple[str, int]], system_ns: int) -> Mode:
    old = load_baseline(checkout)
    mountinfo = Path("/proc/self/mountinfo").read_text()
    readers = []
    for cid, pid in flows:
        try:
            text = Path(f"/proc/{pid}/cgroup").read_text()
        except OSError:
            continue
        paths = old.find_paths(text, mountinfo)
        if paths is not None and cid in text:
            readers.append(old.UsageReader(paths, f"/proc/{pid}/net/dev", 1 << 34))
    return [partial(r.read, system_ns) for r in readers], (old,)


def part1(flows: list[tuple[str, int]], baseline: str | None) -> dict[str, dict[str, float]]:
    system_ns = cgroups.read_system_cpu_ns()
    modes: dict[str, Mode] = {}
    samplers = []
    for mode, budget in (
        ("open-per-read", FdBudget(limit=0, reserve=0)),
        ("kept-open", FdBudget(limit=1 << 20, reserve=0)),
    ):
        sampler = sampler_for(flows, budget)
        sampler._read_all(flows, {c for c, _ in flows})  # locate every flow (and hold files)
        readers = [r for _, r in sampler._paths.values() if r is not None]
        modes[mode] = ([partial(r.read, system_ns) for r in readers], (cgroups, sample_files))
        samplers.append(sampler)
    if baseline:
        modes["baseline"] = baseline_reads(baseline, flows, system_ns)
    out = per_read(modes)
    for sampler in samplers:
        sampler.close()
    return out


# ---------------------------------------------------------------- part 2: steady state


def cpu_now() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def steady(sampler: ResourceSampler, watched: int, seconds: float) -> dict[str, float]:
    ids = sorted(sampler.registry.records)
    sampler.watch("bench", ids[:watched])
    task = asyncio.create_task(sampler.run())
    await asyncio.sleep(2.5)  # first round located and opened everything; cost after that
    windows = []
    c0, t0 = cpu_now(), time.perf_counter()
    last_c, last_t = c0, t0
    while time.perf_counter() - t0 < seconds:
        await asyncio.sleep(1.0)
        c, t = cpu_now(), time.perf_counter()
        windows.append((c - last_c) / (t - last_t) * 100)
        last_c, last_t = c, t
    cpu, wall = cpu_now() - c0, time.perf_counter() - t0
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    n = len(ids)
    return {
        "flows": n,
        "cpu_pct": cpu / wall * 100,
        "us_per_flow_s": cpu / wall / n * 1e6,
        "max_1s_pct": max(windows),
    }


async def part2(
    flows: list[tuple[str, int]], seconds: float, names: list[str], root: str = ""
) -> dict[str, dict[str, float]]:
    out = {}
    for name in names:
        mon = SETTINGS[name]
        limit = 0 if name.endswith("open") else 1 << 20
        sampler = sampler_for(flows, FdBudget(limit=limit, reserve=0), root, **mon)
        out[name] = await steady(sampler, 40 if name == "watched-40" else 0, seconds)
        say(f"  {name}: {json.dumps({k: round(v, 2) for k, v in out[name].items()})}")
    return out


def report(results: dict[str, Any]) -> str:
    lines = []
    for mode, r in results.get("one_read", {}).items():
        lines.append(
            f"- one read, {mode}: {r['cpu_us']:.1f} us CPU and {r['syscalls']:.1f} system "
            f"calls per flow ({r['flows']} flows)"
        )
    for part in ("steady_real", "steady_fake"):
        for name, r in results.get(part, {}).items():
            lines.append(
                f"- {part} {name}: {r['cpu_pct']:.2f} % of a core at {r['flows']} flows = "
                f"{r['us_per_flow_s']:.1f} us per flow per second, max 1-s window "
                f"{r['max_1s_pct']:.1f} %"
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--flows", type=int, default=100)
    ap.add_argument("--fake", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--baseline", help="a checkout whose server/core/cgroups.py is the baseline")
    ap.add_argument("--steady", default=",".join(SETTINGS), help="settings of part 2, or none")
    args = ap.parse_args()
    results: dict[str, Any] = {"args": vars(args)}
    names = [n for n in args.steady.split(",") if n in SETTINGS]
    if args.flows:
        with real_flows(args.flows) as flows:
            say(f"real flows: {len(flows)}")
            results["one_read"] = part1(flows, args.baseline)
            say(report(results))
            results["steady_real"] = asyncio.run(part2(flows, args.seconds, names))
    if args.fake:
        with tempfile.TemporaryDirectory() as root:
            flows = fake_host(Path(root), args.fake, first_pid=100_000)
            say(f"fake flows: {len(flows)} under {root}")
            results["steady_fake"] = asyncio.run(part2(flows, args.seconds, names, root))
    sys.stdout.write(json.dumps(results, indent=1) + "\n")
    say(report(results))


if __name__ == "__main__":
    main()
