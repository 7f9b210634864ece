"""10,000 malformed requests against a real `python -m server` process: typed errors, latency,
memory, and a live server afterwards (issue 7, "Clients: bad input").

    .venv/bin/python bench/bench_malformed.py                     # 10,000 over 10 clients
    .venv/bin/python bench/bench_malformed.py --requests 2000 --clients 4 --seed 7

The requests come from tests/fuzz/malformed_requests.py (seeded: every request event of
docs/PROTOCOL.md and its ext ones, every malformed shape). Each one must be answered by its ack with
the typed `error` it is built to get; latency is emit -> ack per request. Resident memory is the
server process's, after a warm-up of --warmup requests of another seed. Prints a JSON summary;
exits 1 when any request got a wrong answer or none, or the server is not alive afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_api import clients, cpu_seconds, pct, say, server_process  # noqa: E402

from tests.fuzz.malformed_answers import Outcome, send_all  # noqa: E402
from tests.fuzz.malformed_requests import generate  # noqa: E402

MIB = 2**20


async def sample_rss(server: psutil.Process, peak: list[int], stop: asyncio.Event) -> None:
    """The server's largest resident size while the run lasts (every 0.2 s)."""
    while not stop.is_set():
        peak[0] = max(peak[0], server.memory_info().rss)
        await asyncio.sleep(0.2)


def latency(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {
        "p50": round(statistics.median(values), 2),
        "p90": round(pct(values, 0.9), 2),
        "p99": round(pct(values, 0.99), 2),
        "max": round(max(values), 2),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    code_dir = tempfile.mkdtemp(prefix="fmbcode")  # a valid code_path for unknown-id updates
    try:
        warmup = generate(args.warmup, seed=args.seed + 1, code_dir=code_dir)
        requests = generate(args.requests, seed=args.seed, code_dir=code_dir)
        # update_container copies only from docker.code_roots (issue 11)
        async with (
            server_process(code_roots=[code_dir]) as (url, server),
            clients(url, args.clients) as connected,
        ):
            sios = [c.sio for c in connected]
            await send_all(sios, warmup)
            rss_before = server.memory_info().rss
            peak, stop = [rss_before], asyncio.Event()
            sampler = asyncio.create_task(sample_rss(server, peak, stop))
            load_before = os.getloadavg()
            cpu_before, began = cpu_seconds(server), time.perf_counter()
            out = await send_all(sios, requests)
            took = time.perf_counter() - began
            cpu_ms = (cpu_seconds(server) - cpu_before) / args.requests * 1000
            stop.set()
            await sampler
            rss_after = server.memory_info().rss
            still = sum(s.connected for s in sios)
            alive = server.is_running() and server.status() != psutil.STATUS_ZOMBIE
            async with httpx.AsyncClient() as http:
                health = (await http.get(f"{url}/health", timeout=10)).status_code
            listed = await sios[0].call("list_containers", {}, timeout=10)
    finally:
        shutil.rmtree(code_dir, ignore_errors=True)
    return summary(
        args,
        out,
        took,
        cpu_ms,
        rss_before,
        rss_after,
        peak[0],
        alive,
        health,
        still,
        listed.get("count"),
        load_before,
    )


def summary(
    args: argparse.Namespace,
    out: Outcome,
    took: float,
    cpu_ms: float,
    rss_before: int,
    rss_after: int,
    rss_peak: int,
    alive: bool,
    health: int,
    still: int,
    count: Any,
    load_before: tuple[float, float, float],
) -> dict[str, Any]:
    shapes = Counter(r.shape for r, _ in out.problems)
    return {
        "requests": args.requests,
        "clients": args.clients,
        "seed": args.seed,
        "warmup": args.warmup,
        "answered": out.answered,
        "wrong_or_missing": len(out.problems),
        "error_events": out.error_events,
        "by_error_type": dict(out.by_type.most_common()),
        "problem_shapes": dict(shapes),
        "problem_examples": [
            {
                "event": r.event[:80],
                "shape": r.shape,
                "expect": r.expect,
                "payload": repr(r.payload)[:200],
                "problem": p,
            }
            for r, p in out.problems[:8]
        ],
        "seconds": round(took, 2),
        "requests_per_s": round(args.requests / took),
        "latency_ms": latency(out.latencies_ms),
        "server_cpu_ms_per_request": round(cpu_ms, 3),
        "rss_mib": {
            "after_warmup": round(rss_before / MIB, 1),
            "after": round(rss_after / MIB, 1),
            "peak": round(rss_peak / MIB, 1),
            "growth": round((rss_after - rss_before) / MIB, 1),
        },
        "server_alive": alive,
        "health_status": health,
        "clients_still_connected": still,
        "containers_listed": count,
        "load_average": {
            "before": [round(x, 1) for x in load_before],
            "after": [round(x, 1) for x in os.getloadavg()],
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    result = asyncio.run(run(args))
    say(json.dumps(result, indent=2, ensure_ascii=True))
    ok = (
        result["wrong_or_missing"] == 0
        and result["answered"] == args.requests
        and result["server_alive"]
        and result["health_status"] == 200
        and result["clients_still_connected"] == args.clients
        and result["containers_listed"] == 0
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
