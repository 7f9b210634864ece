"""What the stats-API fallback costs: engine calls per second and CPU, at 100 busybox flows.

The manager's sampler is pointed at an empty directory for /proc and the cgroup tree, as the
manager sees them in a container run without --pid=host and the cgroup mount: every flow then
goes to the fallback. Rounds alternate windows (machine noise hits every mode alike):

- idle: no sampling at all;
- cgroup: the fast path (files read every second);
- fallback: the stats API at the defaults (each flow once per resource_check_interval = 60 s,
  at most stats_api_concurrency = 4 calls in flight), in its steady state (its first pass over
  the flows, timed apart, before the rounds);
- fallback-5s: resource_check_interval = 5 s (wants 20 calls/s: the budget caps it);
- naive: what the fallback must not do, for scale: every flow every second (100 one-shot calls
  in flight each second).

Run: .venv/bin/python bench/bench_stats_fallback.py [--containers 100] [--rounds 3]
Every container it makes carries a bench-only instance label and is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_core import IMAGE, cpu_seconds, engine_procs  # noqa: E402

from server.core.config import Settings, load_settings  # noqa: E402
from server.core.manager import ContainerManager  # noqa: E402
from server.core.models import CreateSpec  # noqa: E402
from server.core.stats import ResourceSampler  # noqa: E402

log = logging.getLogger("bench")
MODES = ("idle", "cgroup", "fallback", "fallback-5s", "naive")


def _samplers(m: ContainerManager, settings: Settings, empty: str) -> dict[str, ResourceSampler]:
    """One sampler per sampling mode, kept across rounds (paused and resumed), so only the
    first round of a fallback mode holds its first pass over the flows."""
    mon = settings.monitoring.model_copy(update={"resource_check_interval": 5.0})
    short = settings.model_copy(update={"monitoring": mon})
    out = {"cgroup": ResourceSampler(m.adapter, m.registry, settings)}
    for mode, conf in (("fallback", settings), ("fallback-5s", short)):
        out[mode] = ResourceSampler(m.adapter, m.registry, conf, proc_root=empty, fs_root=empty)
    return out


async def first_pass(m: ContainerManager, sampler: ResourceSampler) -> float:
    """Run a fallback sampler until every running flow has had its first API sample."""
    m.set_sampling(False)
    await asyncio.sleep(0.2)  # the old sampler's tasks end
    m.sampler = sampler
    t0 = time.monotonic()
    m.set_sampling(True)
    while not sampler.api.assigned or sampler.api.never_asked:
        await asyncio.sleep(0.1)
    m.set_sampling(False)
    return time.monotonic() - t0


async def _naive(m: ContainerManager, stop: asyncio.Event, counter: list[int]) -> None:
    """Every running flow through the stats API every second, all at once."""
    ids = [cid for cid, r in m.registry.records.items() if r.state == "running"]
    while not stop.is_set():
        t0 = time.monotonic()
        await asyncio.gather(*(m.adapter.stats_once(c, timeout=15) for c in ids))
        counter[0] += len(ids)
        await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - t0)))


def _per_process() -> dict[int, float]:
    """CPU seconds of each engine process (dockerd, containerd, shims) by pid."""
    return {p.pid: cpu_seconds([p]) for p in engine_procs()}


async def window(
    m: ContainerManager, samplers: dict[str, ResourceSampler], mode: str, seconds: float
) -> dict[str, float]:
    """One window of `mode`: (calls/s, manager CPU %, engine CPU %) over `seconds`."""
    m.set_sampling(False)
    await asyncio.sleep(0.2)  # the old sampler's tasks end
    naive: asyncio.Task[None] | None = None
    stop, counter = asyncio.Event(), [0]
    if mode in samplers:
        m.sampler = samplers[mode]
        m.set_sampling(True)
    elif mode == "naive":
        naive = asyncio.create_task(_naive(m, stop, counter))
    await asyncio.sleep(1.5)  # settle: the first sweep locates every flow
    me = psutil.Process()
    calls0 = m.sampler.api.calls + counter[0]
    own0, eng0, t0 = cpu_seconds([me]), _per_process(), time.monotonic()
    started = datetime.now(UTC)
    await asyncio.sleep(seconds)
    wall = time.monotonic() - t0
    eng1 = _per_process()
    out = {
        "calls_per_s": (m.sampler.api.calls + counter[0] - calls0) / wall,
        "own": (cpu_seconds([me]) - own0) / wall * 100,
        # per process, over those alive at both ends: shims of other workloads come and go
        "engine": sum(eng1[p] - eng0[p] for p in eng0.keys() & eng1.keys()) / wall * 100,
        "fresh": sum(1 for s in m.snapshot() if s.resources and s.resources.timestamp >= started),
    }
    if naive is not None:
        stop.set()
        await naive
    return out


async def main(args: argparse.Namespace) -> dict[str, Any]:
    run = uuid.uuid4().hex[:6]
    settings = load_settings(
        env={},
        socket_dir=f"/tmp/fm/bench-{run}",
        docker__instance=f"bench-{run}",
        docker__network=f"flowmgr-bench-{run}",
        docker__stop_timeout=2,
        docker__memory_limit="64m",
        docker__data_mount=None,
        monitoring__health_check_interval=3600.0,  # no status pushes: the sampler alone
    )
    prefix = f"bench-{run}"
    empty = tempfile.mkdtemp(prefix="nothing-visible-")
    rows: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    first: dict[str, float] = {}
    try:
        async with ContainerManager(settings) as m:
            sem = asyncio.Semaphore(8)

            async def make(i: int) -> None:
                async with sem:
                    snap = await m.create_container(
                        CreateSpec(name=f"{prefix}-{i:03d}", image=IMAGE)
                    )
                    await m.start_container(snap.id)

            t0 = time.perf_counter()
            await asyncio.gather(*(make(i) for i in range(args.containers)))
            log.info(
                "%d containers running after %.1f s", args.containers, time.perf_counter() - t0
            )
            samplers = _samplers(m, settings, empty)
            for mode in ("fallback", "fallback-5s"):
                first[mode] = await first_pass(m, samplers[mode])
                log.info(
                    "%s: first pass over %d flows in %.1f s", mode, args.containers, first[mode]
                )
            for r in range(args.rounds):
                for mode in MODES:
                    seconds = args.seconds * (2 if mode == "fallback" else 1)
                    row = await window(m, samplers, mode, seconds)
                    rows[mode].append(row)
                    log.info("round %d %-11s %s", r + 1, mode, json.dumps(row))
            m.set_sampling(False)
    finally:
        left = subprocess.run(
            [
                "docker",
                "ps",
                "-aq",
                "--filter",
                f"label=flowmgr.instance={settings.docker.instance}",
            ],
            capture_output=True,
            text=True,
        ).stdout.split()
        if left:
            subprocess.run(["docker", "rm", "-f", *left], capture_output=True)
        subprocess.run(["docker", "network", "rm", settings.docker.network], capture_output=True)
        shutil.rmtree(settings.socket_dir, ignore_errors=True)
        shutil.rmtree(empty, ignore_errors=True)
    med = statistics.median
    return {
        "containers": args.containers,
        "rounds": args.rounds,
        "first_pass_s": first,
        "modes": {
            mode: {k: med(row[k] for row in got) for k in got[0]} for mode, got in rows.items()
        },
    }


def report(r: dict[str, Any]) -> str:
    lines = [
        f"{r['containers']} busybox flows, median of {r['rounds']} rounds",
        "",
        "| mode | engine calls/s | manager CPU % of a core | engine CPU % "
        "| flows with a sample taken in the window |",
        "| --- | --- | --- | --- | --- |",
    ]
    for mode, v in r["modes"].items():
        lines.append(
            f"| {mode} | {v['calls_per_s']:.2f} | {v['own']:.2f} | {v['engine']:.2f} "
            f"| {v['fresh']:.0f} |"
        )
    lines += [
        "",
        "first pass (every flow's first API sample, at most 4 calls in flight): "
        + ", ".join(f"{k} {v:.1f} s" for k, v in r["first_pass_s"].items()),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--containers", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0, help="window (fallback: twice)")
    parser.add_argument("--json", action="store_true", help="print raw numbers as JSON too")
    ns = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    res = asyncio.run(main(ns))
    if ns.json:
        sys.stdout.write(json.dumps(res, indent=1) + "\n")
    sys.stdout.write(report(res) + "\n")
