"""Flow channel benchmarks through real flow:latest containers and a real ContainerManager.

    .venv/bin/python bench/bench_flow.py                  # all three
    .venv/bin/python bench/bench_flow.py rtt throughput   # a selection
    .venv/bin/python bench/bench_flow.py flows --flows 50

rtt: manager -> flow -> manager round trip (send_message, then the reply as the front ends get
it: handed on by the journal, after its commit when the journal is on).
throughput: messages pushed through one echo flow, replies counted as the front ends get them.
--journal on|off|both (default both): rtt and throughput with the journal writing every message
to its SQLite file, then without (seqs in memory only), one after the other.
reconnect: the manager's listener closed and reopened; time until the flow is back.
flows: N flows connected at once; the manager process's RSS growth per flow.
Every container and network it creates carries a bench-only instance label and is removed.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from server.core.bus import Subscription  # noqa: E402
from server.core.config import Settings, load_settings  # noqa: E402
from server.core.events import FlowChannelConnected  # noqa: E402
from server.core.journal.records import JournalRecord  # noqa: E402
from server.core.manager import ContainerManager  # noqa: E402
from server.core.models import CreateSpec  # noqa: E402
from server.wire.journal_encoding import encode_event  # noqa: E402

RUN = f"bench{uuid.uuid4().hex[:6]}"


def bench_settings(journal: bool = True) -> Settings:
    sock_dir = Path("/tmp/fmb") / RUN / ("journal-on" if journal else "journal-off")
    sock_dir.mkdir(parents=True)
    return load_settings(
        env={},
        journal__enabled=journal,
        socket_dir=str(sock_dir),
        docker__instance=RUN,
        docker__network=f"flowmgr-{RUN}",
        docker__stop_timeout=2,
        log_level="WARNING",
    )


def cleanup(settings: Settings) -> None:
    """Remove every container and network of this bench run (by its own instance label)."""
    label = f"label=flowmgr.instance={RUN}"
    ids = subprocess.run(
        ["docker", "ps", "-aq", "--filter", label], capture_output=True, text=True
    ).stdout.split()
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)
    nets = subprocess.run(
        ["docker", "network", "ls", "-q", "--filter", label], capture_output=True, text=True
    ).stdout.split()
    if nets:
        subprocess.run(["docker", "network", "rm", *nets], capture_output=True)
    shutil.rmtree(Path("/tmp/fmb") / RUN, ignore_errors=True)


async def connected_flows(
    m: ContainerManager, sub: Subscription, count: int, parallel: int = 8
) -> list[str]:
    """Create and start `count` echo flows; return their ids once all are connected."""
    gate = asyncio.Semaphore(parallel)

    async def one(i: int) -> str:
        async with gate:
            snap = await m.create_container(CreateSpec(name=f"{RUN}-{uuid.uuid4().hex[:6]}"))
            await m.start_container(snap.id)
            return snap.id

    # The first create makes the network; racing creates would each make one.
    ids = [await one(0)] + await asyncio.gather(*(one(i) for i in range(1, count)))
    async with asyncio.timeout(120):
        while any(not is_connected(m, cid) for cid in ids):
            await sub.get()  # every connection publishes an event
    return ids


def is_connected(m: ContainerManager, cid: str) -> bool:
    info = m.hub.info(cid)
    return info is not None and info.connected


def say(line: str) -> None:
    """A result line on stdout (this is a script, not library code)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class Replies:
    """One flow's replies as the front ends get them: from the journal's listeners, so with the
    journal on each one has been committed to disk before it is counted."""

    def __init__(self, m: ContainerManager, cid: str) -> None:
        self.queue: asyncio.Queue[int | None] = asyncio.Queue()
        self.journalled = 0

        async def on_batch(records: list[JournalRecord]) -> None:
            for r in records:
                if r.event == "message_received" and r.container_id == cid:
                    self.journalled += r.seq is not None
                    self.queue.put_nowait(r.seq)

        self.close = m.journal.listen(on_batch)


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


async def bench_rtt(m: ContainerManager, cid: str, n: int) -> None:
    replies = Replies(m, cid)
    samples: list[float] = []
    for i in range(n + 200):
        t0 = time.perf_counter()
        await m.send_message(cid, {"command": "echo", "i": i})
        await replies.queue.get()
        if i >= 200:  # warm-up excluded
            samples.append((time.perf_counter() - t0) * 1000)
    replies.close()
    say(
        f"rtt: n={n} p50={statistics.median(samples):.3f} ms p90={pct(samples, 0.9):.3f} ms "
        f"p99={pct(samples, 0.99):.3f} ms max={max(samples):.3f} ms"
    )


async def bench_throughput(m: ContainerManager, cid: str, n: int, runs: int) -> None:
    rates, cpu_us = [], []
    proc = psutil.Process()
    for _ in range(runs):
        replies = Replies(m, cid)
        start = time.perf_counter()
        cpu0 = sum(proc.cpu_times()[:2])

        async def produce() -> None:
            for i in range(n):
                await m.send_message(cid, {"command": "echo", "i": i})

        producer = asyncio.create_task(produce())
        got = 0
        async with asyncio.timeout(120):
            while got < n:
                await replies.queue.get()
                got += 1
        await producer
        elapsed = time.perf_counter() - start
        replies.close()
        rates.append(n / elapsed)
        cpu_us.append((sum(proc.cpu_times()[:2]) - cpu0) / n * 1e6)
        say(
            f"throughput run: {n} messages sent and {got} replies ({replies.journalled} "
            f"journalled) in {elapsed:.2f} s = {n / elapsed:,.0f} msg/s each way; manager CPU "
            f"{cpu_us[-1]:.1f} us per round trip"
        )
    say(
        f"throughput: median {statistics.median(rates):,.0f} msg/s over {runs} runs "
        f"of {n} round trips (pipelined); manager CPU median {statistics.median(cpu_us):.1f} us "
        f"per round trip (includes this bench's bus consumer)"
    )


async def bench_reconnect(m: ContainerManager, cid: str, times: int) -> None:
    """The manager side goes away and comes back: how long until the flow is connected again."""
    path = m.get(cid).socket_path
    samples = []
    async with m.bus.subscribe(predicate=lambda e: isinstance(e, FlowChannelConnected)) as sub:
        for _ in range(times):
            await m.hub.close(cid)
            await asyncio.sleep(0.3)  # the flow is now retrying with backoff
            start = time.perf_counter()
            await m.hub.open(cid, path)
            async with asyncio.timeout(10):
                await sub.get()
            samples.append(time.perf_counter() - start)
    say(
        f"reconnect: median {statistics.median(samples) * 1000:.0f} ms, max "
        f"{max(samples) * 1000:.0f} ms over {times} manager-side restarts"
    )


async def bench_flows(m: ContainerManager, count: int) -> None:
    proc = psutil.Process()
    async with m.bus.subscribe() as sub:
        warm = await connected_flows(m, sub, 2)  # first-use allocations out of the baseline
        for cid in warm:
            await m.send_message(cid, {"command": "echo"})
        for cid in warm:
            await m.delete_container(cid)
        gc.collect()
        await asyncio.sleep(1)
        before = proc.memory_info().rss
        ids = await connected_flows(m, sub, count)
        for cid in ids:
            await m.send_message(cid, {"command": "echo"})
        await asyncio.sleep(1)
        gc.collect()
        after = proc.memory_info().rss
        connected = sum(1 for cid in ids if is_connected(m, cid))
    growth = (after - before) / (1024 * 1024)
    say(
        f"flows: {connected}/{count} connected at once; manager RSS {before / 2**20:.1f} -> "
        f"{after / 2**20:.1f} MiB: +{growth:.1f} MiB = {growth / count:.3f} MiB per flow"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="*", default=["rtt", "throughput", "reconnect", "flows"])
    parser.add_argument("--rtt-n", type=int, default=5000)
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--flows", type=int, default=50)
    parser.add_argument("--journal", choices=["on", "off", "both"], default="both")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    modes = {"on": [True], "off": [False], "both": [True, False]}[args.journal]
    try:
        for journal in modes:
            say(f"-- journal {'on' if journal else 'off'}")
            settings = bench_settings(journal)
            async with ContainerManager(settings, journal_encoder=encode_event) as m:
                await one_mode(m, args)
                if journal:
                    size = sum(p.stat().st_size for p in Path(settings.state_dir).glob(".journal*"))
                    say(
                        f"journal: last seq {m.journal.last_seq} in {m.journal.transactions} "
                        f"transactions, files {size / 2**20:.1f} MiB"
                    )
            cleanup(settings)
    finally:
        cleanup(settings)


async def one_mode(m: ContainerManager, args: argparse.Namespace) -> None:
    if {"rtt", "throughput", "reconnect"} & set(args.what):
        async with m.bus.subscribe() as sub:
            (cid,) = await connected_flows(m, sub, 1)
        if "rtt" in args.what:
            await bench_rtt(m, cid, args.rtt_n)
        if "throughput" in args.what:
            await bench_throughput(m, cid, args.messages, args.runs)
        if "reconnect" in args.what:
            await bench_reconnect(m, cid, 10)
        await m.delete_container(cid)
    if "flows" in args.what:
        await bench_flows(m, args.flows)


if __name__ == "__main__":
    asyncio.run(main())
