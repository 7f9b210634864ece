"""Soak: N flows created, messaged, crashed and deleted in a loop through one ContainerManager.

Usage: .venv/bin/python bench/soak.py [--minutes 60] [--flows 20] [--messages 20]
Prints one JSON object: cycles, crashes, messages, failures, and the manager process's resident
memory, open files and threads after the first round and at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from server.core.config import Settings, load_settings  # noqa: E402
from server.core.events import ContainerCrashed, FlowMessageReceived  # noqa: E402
from server.core.frames import encode_frame  # noqa: E402
from server.core.manager import ContainerManager  # noqa: E402
from server.core.models import CreateSpec  # noqa: E402

BUSYBOX = "flowmgr-test-busybox:latest"
# Lives long enough to be messaged, then fails on its own: one crash per cycle.
CRASHER = ["sh", "-c", "sleep 3; echo soak-bye; exit 3"]


def _usage() -> dict[str, float]:
    proc = psutil.Process()
    return {
        "rss_mib": round(proc.memory_info().rss / 2**20, 1),
        "open_files": proc.num_fds(),
        "threads": proc.num_threads(),
    }


async def _cycle(m: ContainerManager, name: str, messages: int, stats: dict[str, int]) -> None:
    """Create, start, message both ways, wait for the crash, delete."""
    async with m.bus.subscribe(
        predicate=lambda e: (
            getattr(e, "container_id", None) is not None
            and isinstance(e, ContainerCrashed | FlowMessageReceived)
        )
    ) as sub:
        snap = await m.create_container(CreateSpec(name=name, image=BUSYBOX, command=CRASHER))
        try:
            await m.start_container(snap.id)
            reader, writer = await asyncio.open_unix_connection(snap.socket_path)
            async with asyncio.timeout(30):
                while not m.get(snap.id).socket_connected:
                    await asyncio.sleep(0.05)
                for i in range(messages):
                    await m.send_message(snap.id, {"n": i, "token": "soak-secret"})
                    (size,) = struct.unpack(">I", await reader.readexactly(4))
                    await reader.readexactly(size)
                    writer.write(encode_frame({"reply": i}, 1 << 20))
                got = crashed = 0
                async for event in sub:
                    if event.container_id != snap.id:  # type: ignore[attr-defined]
                        continue
                    got += isinstance(event, FlowMessageReceived)
                    crashed += isinstance(event, ContainerCrashed)
                    if crashed and got >= messages:
                        break
            writer.close()
            stats["messages"] += 2 * messages
            stats["crashes"] += crashed
        finally:
            await m.delete_container(snap.id)
        stats["cycles"] += 1


async def _worker(
    m: ContainerManager,
    run: str,
    i: int,
    deadline: float,
    messages: int,
    stats: dict[str, int],
    errors: list[str],
) -> None:
    n = 0
    while time.monotonic() < deadline:
        n += 1
        try:
            await _cycle(m, f"soak-{run}-{i}-{n}", messages, stats)
        except Exception as err:  # noqa: BLE001 - counted and reported, the soak goes on
            stats["failures"] += 1
            errors.append(f"{type(err).__name__}: {err}"[:200])


async def soak(settings: Settings, minutes: float, flows: int, messages: int) -> dict[str, Any]:
    """Run the loop; return the numbers."""
    stats = {"cycles": 0, "crashes": 0, "messages": 0, "failures": 0}
    errors: list[str] = []
    run = uuid.uuid4().hex[:6]
    async with ContainerManager(settings) as m:
        await asyncio.gather(
            *(_cycle(m, f"soak-{run}-{i}-0", messages, stats) for i in range(flows))
        )
        before = _usage()
        began = time.monotonic()
        deadline = began + minutes * 60
        await asyncio.gather(
            *(_worker(m, run, i, deadline, messages, stats, errors) for i in range(flows))
        )
        after = _usage()
        elapsed = time.monotonic() - began
    return {
        "minutes": round(elapsed / 60, 1),
        "flows": flows,
        **stats,
        "before": before,
        "after": after,
        "end_after_stop": _usage(),
        "errors": errors[:10],
    }


def main() -> int:
    """Parse arguments, soak, clean up, print JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--flows", type=int, default=20)
    parser.add_argument("--messages", type=int, default=20)
    args = parser.parse_args()
    tag = f"soak{uuid.uuid4().hex[:6]}"
    sock_dir = Path("/tmp/fm") / tag
    settings = load_settings(
        env={},
        socket_dir=str(sock_dir),
        docker__instance=tag,
        docker__network=f"flowmgr-{tag}",
        docker__stop_timeout=2,
    )
    try:
        result = asyncio.run(soak(settings, args.minutes, args.flows, args.messages))
    finally:
        ids = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label=flowmgr.instance={tag}"],
            capture_output=True,
            text=True,
        ).stdout.split()
        if ids:
            subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)
        # the engine releases the removed containers' endpoints a moment later
        for _ in range(60):
            if (
                subprocess.run(
                    ["docker", "network", "rm", f"flowmgr-{tag}"], capture_output=True
                ).returncode
                == 0
                or not subprocess.run(
                    ["docker", "network", "ls", "-q", "--filter", f"name=flowmgr-{tag}"],
                    capture_output=True,
                    text=True,
                ).stdout.strip()
            ):
                break
            time.sleep(0.5)
        shutil.rmtree(sock_dir, ignore_errors=True)
    sys.stdout.write(json.dumps(result, indent=1) + "\n")
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
