"""Benchmark of the core: cached status, fresh resource snapshot, sampling CPU cost, lifecycle.

Run: .venv/bin/python bench/bench_core.py [--containers 100] [--cpu-seconds 30] [--rounds 20]
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
import time
import uuid
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import docker
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from server.core.config import Settings, load_settings  # noqa: E402
from server.core.manager import ContainerManager  # noqa: E402
from server.core.models import CreateSpec  # noqa: E402

IMAGE = "flowmgr-test-busybox:latest"
ENGINE_NAMES = ("dockerd", "containerd", "containerd-shim", "containerd-shim-runc-v2")
log = logging.getLogger("bench")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def engine_procs() -> list[psutil.Process]:
    """dockerd, containerd and every container shim on this host."""
    return [p for p in psutil.process_iter(["name"]) if p.info["name"] in ENGINE_NAMES]


def cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            continue
    return total


async def cpu_window(seconds: float) -> tuple[float, float]:
    """(own CPU, engine CPU) in % of one core over a window of `seconds`."""
    me, engine = psutil.Process(), engine_procs()
    own0, eng0, t0 = cpu_seconds([me]), cpu_seconds(engine), time.monotonic()
    await asyncio.sleep(seconds)
    wall = time.monotonic() - t0
    return ((cpu_seconds([me]) - own0) / wall * 100, (cpu_seconds(engine) - eng0) / wall * 100)


async def timed(call: Awaitable[Any]) -> float:
    t0 = time.perf_counter()
    await call
    return time.perf_counter() - t0


async def bench_status(m: ContainerManager, names: list[str]) -> dict[str, float]:
    samples = []
    for i in range(2000):
        samples.append(await timed(m.get_status(names[i % len(names)])))
    samples.sort()
    return {"p50": samples[len(samples) // 2], "p99": samples[int(len(samples) * 0.99)]}


async def bench_snapshot(m: ContainerManager, ids: list[str]) -> dict[str, float]:
    sweeps = [await timed(m.sampler.sample_all()) for _ in range(7)]
    cli = []
    for _ in range(3):
        t0 = time.perf_counter()
        out = await asyncio.to_thread(
            subprocess.run, ["docker", "stats", "--no-stream", *ids], capture_output=True, text=True
        )
        cli.append(time.perf_counter() - t0)
        assert out.returncode == 0, out.stderr
    return {
        "sweep": statistics.median(sweeps),
        "cli": statistics.median(cli),
        "fresh": sum(1 for s in m.snapshot() if s.resources is not None),
    }


async def bench_cpu(m: ContainerManager, seconds: float) -> dict[str, float]:
    """Alternate 5 s windows with and without sampling (`seconds` of sampling in total), so
    machine noise hits both alike; the added cost is the median of the per-pair differences."""
    pairs = max(3, round(seconds / 5))
    rows = []
    for _ in range(pairs):
        m.set_sampling(False)
        idle = await cpu_window(5.0)
        m.set_sampling(True)
        on = await cpu_window(5.0)
        rows.append((idle, on))
    med = statistics.median
    return {
        "pairs": pairs,
        "idle_own": med(r[0][0] for r in rows),
        "idle_engine": med(r[0][1] for r in rows),
        "own": med(r[1][0] for r in rows),
        "engine": med(r[1][1] for r in rows),
        "added_own": med(r[1][0] - r[0][0] for r in rows),
        "added_engine": med(r[1][1] - r[0][1] for r in rows),
    }


async def bench_lifecycle(
    m: ContainerManager, settings: Settings, rounds: int, prefix: str
) -> dict[str, float]:
    client = docker.from_env()
    dk = settings.docker
    # another instance label: the manager must not watch (and so slow down) the SDK's containers
    labels = {"flowmgr.managed": "true", "flowmgr.instance": f"{dk.instance}-sdk"}
    mgr, sdk = [], []

    async def via_manager(i: int) -> None:
        snap = await m.create_container(CreateSpec(name=f"{prefix}-m{i}", image=IMAGE))
        await m.start_container(snap.id)
        await m.stop_container(snap.id)
        await m.delete_container(snap.id)

    def via_sdk(i: int) -> None:
        # the same container the manager makes: labels, network, limits, socket-dir bind
        sock = Path(settings.socket_dir) / f"{prefix}-s{i}"
        sock.mkdir(parents=True, exist_ok=True)
        c = client.containers.create(
            IMAGE,
            name=f"{prefix}-s{i}",
            labels=labels,
            network=dk.network,
            mem_limit=dk.memory_limit,
            memswap_limit=dk.memory_limit,
            nano_cpus=int(dk.cpu_limit * 1e9),
            pids_limit=dk.pids_limit,
            environment={"FLOW_SOCKET": f"{dk.socket_mount}/flow.sock"},
            volumes={str(sock): {"bind": dk.socket_mount, "mode": "rw"}},
        )
        c.start()
        c.stop(timeout=dk.stop_timeout)
        c.remove(force=True)
        shutil.rmtree(sock)

    for i in range(rounds):
        mgr.append(await timed(via_manager(i)))
        sdk.append(await timed(asyncio.to_thread(via_sdk, i)))
    client.close()
    return {"manager": statistics.median(mgr), "sdk": statistics.median(sdk)}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    run = uuid.uuid4().hex[:6]
    settings = load_settings(
        env={},
        socket_dir=f"/tmp/fm/bench-{run}",
        docker__instance=f"bench-{run}",
        docker__network=f"flowmgr-bench-{run}",
        docker__stop_timeout=2,
        docker__memory_limit="64m",
        monitoring__health_check_interval=5.0,
        **({"docker__data_mount": None} if args.data_mount == "none" else {}),
    )
    prefix = f"bench-{run}"
    results: dict[str, Any] = {"containers": args.containers, "instance": settings.docker.instance}
    try:
        async with ContainerManager(settings) as m:
            sem = asyncio.Semaphore(8)

            async def make(i: int) -> str:
                async with sem:
                    snap = await m.create_container(
                        CreateSpec(name=f"{prefix}-{i:03d}", image=IMAGE)
                    )
                    await m.start_container(snap.id)
                    return snap.id

            t0 = time.perf_counter()
            ids = await asyncio.gather(*(make(i) for i in range(args.containers)))
            log.info("%d containers running after %.1f s", len(ids), time.perf_counter() - t0)
            names = [s.name for s in m.snapshot()]
            await asyncio.sleep(2.5)  # two sweeps: every container has a sample with CPU %
            if "status" in args.only:
                results["status"] = await bench_status(m, names)
                log.info("status query: %s", results["status"])
            if "snapshot" in args.only:
                results["snapshot"] = await bench_snapshot(m, ids)
                log.info("snapshot: %s", results["snapshot"])
            if "cpu" in args.only:
                results["cpu"] = await bench_cpu(m, args.cpu_seconds)
                log.info("cpu: %s", results["cpu"])
            if "lifecycle" in args.only:
                results["lifecycle"] = await bench_lifecycle(m, settings, args.rounds, prefix)
                log.info("lifecycle: %s", results["lifecycle"])
    finally:
        left = []
        for inst in (settings.docker.instance, f"{settings.docker.instance}-sdk"):
            left += subprocess.run(
                ["docker", "ps", "-aq", "--filter", f"label=flowmgr.instance={inst}"],
                capture_output=True,
                text=True,
            ).stdout.split()
        if left:
            subprocess.run(["docker", "rm", "-f", *left], capture_output=True)
        subprocess.run(["docker", "network", "rm", settings.docker.network], capture_output=True)
        shutil.rmtree(settings.socket_dir, ignore_errors=True)
    return results


def report(r: dict[str, Any]) -> str:
    lines = [f"- containers running: {r['containers']}"]
    if st := r.get("status"):
        lines.append(
            f"- status query from cache: p50 {ms(st['p50'])}, p99 {ms(st['p99'])} "
            "(target p50 < 5 ms)"
        )
    if sn := r.get("snapshot"):
        lines.append(
            f"- fresh resource snapshot of all: {ms(sn['sweep'])} (median of 7 sweeps) "
            f"vs `docker stats --no-stream` {sn['cli']:.2f} s (median of 3): ratio "
            f"{sn['sweep'] / sn['cli']:.4f} (target <= 0.5)"
        )
    if cpu := r.get("cpu"):
        added = cpu["added_own"] + cpu["added_engine"]
        lines.append(
            f"- keeping usage fresh every 1 s ({cpu['pairs']} pairs of 5 s windows): "
            f"manager {cpu['own']:.2f} % of a core (idle {cpu['idle_own']:.2f} %), "
            f"engine {cpu['engine']:.2f} % (idle {cpu['idle_engine']:.2f} %); median "
            f"added: manager {cpu['added_own']:.2f} + engine {cpu['added_engine']:.2f} "
            f"= {added:.2f} % of one core (target < 10 %)"
        )
    if lc := r.get("lifecycle"):
        lines.append(
            f"- lifecycle create/start/stop/delete, median: manager {lc['manager']:.3f} s "
            f"vs SDK {lc['sdk']:.3f} s: {(lc['manager'] / lc['sdk'] - 1) * 100:+.1f} % "
            "(target <= +10 %)"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--containers", type=int, default=100)
    parser.add_argument("--cpu-seconds", type=float, default=30.0)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--json", action="store_true", help="print raw numbers as JSON too")
    parser.add_argument(
        "--data-mount",
        choices=["default", "none"],
        default="default",
        help="none: flows get no per-flow data volume",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        default=["status", "snapshot", "cpu", "lifecycle"],
        choices=["status", "snapshot", "cpu", "lifecycle"],
    )
    ns = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    res = asyncio.run(main(ns))
    if ns.json:
        sys.stdout.write(json.dumps(res, indent=1) + "\n")
    sys.stdout.write(report(res) + "\n")
