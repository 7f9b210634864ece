"""Journal benchmarks: database growth per message, and resume of missed events by a client.

    .venv/bin/python bench/bench_journal.py                       # both
    .venv/bin/python bench/bench_journal.py growth --messages 1000000
    .venv/bin/python bench/bench_journal.py resume --events 100000

growth: `message_received` events of 200-byte messages published on a real bus into a real
        Journal (the encoder the service uses), as fast as it takes them: events/s journalled,
        and the database's size on disk (main file + WAL) per million messages.
resume: a service (`python -m server`, its own process) starts on a journal already holding
        `--events` events; a bare Socket.IO client connects with `last_seq` and counts the
        events it gets until the last one: time from connect to the last event.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_api import RUN, WireClient, say, server_process  # noqa: E402

from server.core.bus import EventBus  # noqa: E402
from server.core.config import Settings, load_settings  # noqa: E402
from server.core.events import FlowMessageReceived  # noqa: E402
from server.core.journal.journal import Journal  # noqa: E402
from server.wire.journal_encoding import encode_event  # noqa: E402

CONTAINER = "f" * 64
"""A container id for the published events (no container is needed to journal them)."""


def message_of(size: int, i: int) -> dict[str, object]:
    """A flow message whose JSON text is `size` bytes."""
    head = {"command": "report", "i": i, "data": ""}
    pad = size - len(json.dumps(head, separators=(",", ":")))
    return {**head, "data": "x" * max(0, pad)}


async def fill(settings: Settings, count: int, size: int = 200, chunk: int = 5000) -> float:
    """Publish `count` messages into a journal at the settings' path; events/s journalled."""
    bus = EventBus()
    journal = Journal(settings, bus, encode_event)
    await journal.start()
    began = time.perf_counter()
    for first in range(0, count, chunk):
        for i in range(first, min(count, first + chunk)):
            bus.publish(FlowMessageReceived(container_id=CONTAINER, message=message_of(size, i)))
        while journal.last_seq < first:  # let the writer keep up: bounded memory
            await asyncio.sleep(0.001)
    while journal.last_seq < count:
        await asyncio.sleep(0.001)
    took = time.perf_counter() - began
    await journal.stop()
    return count / took


def disk_bytes(path: str) -> tuple[int, int]:
    """(main file, WAL) sizes."""
    main = Path(path)
    wal = Path(path + "-wal")
    return main.stat().st_size, wal.stat().st_size if wal.exists() else 0


async def bench_growth(messages: int, size: int) -> None:
    base = Path("/tmp/fmb") / f"{RUN}-growth"
    settings = load_settings(env={}, socket_dir=str(base), docker__instance=RUN)
    Path(settings.state_dir).mkdir(parents=True, mode=0o700)
    try:
        proc = psutil.Process()
        cpu0 = sum(proc.cpu_times()[:2])
        rate = await fill(settings, messages, size)
        cpu = sum(proc.cpu_times()[:2]) - cpu0
        main, wal = disk_bytes(settings.journal_path)
        per_million = (main + wal) / messages * 1_000_000 / 2**20
        say(
            f"growth: {messages:,} messages of {size} B journalled at {rate:,.0f}/s, "
            f"{cpu / messages * 1e6:.1f} us CPU each (publish + encode + write); on disk "
            f"{main / 2**20:.1f} MiB + WAL {wal / 2**20:.1f} MiB = {per_million:.0f} MiB "
            f"per million ({(main + wal) / messages:.0f} B per message)"
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)


async def resume_once(url: str, after: int, expect: int) -> float:
    """Seconds from connecting with `last_seq=after` until `expect` journalled events arrived
    (counted by name, not parsed: the client's own CPU stays out of the measure)."""
    began = time.perf_counter()
    async with WireClient(url, last_seq=after) as client, asyncio.timeout(120):
        while client.broadcasts["message_received"] < expect:
            await asyncio.sleep(0.002)
    return time.perf_counter() - began


async def bench_resume(events: int, rounds: int) -> None:
    async def prepare(config: Path) -> None:
        settings = load_settings(config_file=str(config), env={})
        Path(settings.state_dir).mkdir(parents=True, mode=0o700, exist_ok=True)
        rate = await fill(settings, events)
        say(f"resume: journal filled with {events:,} events ({rate:,.0f}/s)")

    async with server_process(prepare=prepare) as (url, _server):
        whole = [await resume_once(url, 0, events) for _ in range(rounds)]
        half = [await resume_once(url, events // 2, events // 2) for _ in range(rounds)]
    say(
        f"resume of {events:,} missed events (last_seq=0): median {statistics.median(whole):.2f} s "
        f"({', '.join(f'{t:.2f}' for t in whole)}) = {events / statistics.median(whole):,.0f} "
        f"events/s; of the newest {events // 2:,}: median {statistics.median(half):.2f} s"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="*", default=["growth", "resume"])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--size", type=int, default=200)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if "growth" in args.what:
        await bench_growth(args.messages, args.size)
    if "resume" in args.what:
        await bench_resume(args.events, args.rounds)


if __name__ == "__main__":
    asyncio.run(main())
