"""Write tests/data/tui_recording.jsonl: a fixed session of core events for snapshot tests.

Run `.venv/bin/python -m tests.tui.make_recording` after changing it; the file is committed.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

from server.core.events import (
    ActivityLogged,
    ContainerAdded,
    ContainerCrashed,
    ContainerStateChanged,
    Event,
    FlowChannelConnected,
    FlowMessageReceived,
    FlowMessageSent,
    HealthChanged,
    StatsSampled,
)
from server.core.models import ContainerSnapshot, ResourceSample
from tests.tui.recording import dump

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
"""The recording's clock starts here; snapshot tests freeze "now" at NOW."""
NOW = T0 + timedelta(minutes=95)
RECORDING = Path(__file__).resolve().parents[1] / "data" / "tui_recording.jsonl"
ECHO_ID = "e" * 8 + "c0ffee" * 9 + "00"
MIB = 1024 * 1024


def _id(n: int) -> str:
    return f"{n:02x}" * 32


def _snap(
    cid: str,
    name: str,
    state: str,
    *,
    health: str = "none",
    image: str = "flow:latest",
    started: int | None = 0,
    exit_code: int | None = None,
    ports: dict[str, int | None] | None = None,
) -> ContainerSnapshot:
    return ContainerSnapshot(
        id=cid,
        name=name,
        image=image,
        state=state,  # type: ignore[arg-type]
        health=health,  # type: ignore[arg-type]
        created=T0 - timedelta(hours=2),
        started_at=None if started is None else T0 + timedelta(minutes=started),
        socket_path=f"/tmp/kawaflow/sockets/{name}/flow.sock",
        ports=ports or {},
        exit_code=exit_code,
    )


def _sample(i: int, base_cpu: float, base_mem: int) -> ResourceSample:
    cpu = max(0.0, base_cpu * (1 + 0.6 * math.sin(i / 6)))
    mem = base_mem + int(2 * MIB * math.sin(i / 15))
    return ResourceSample(
        cpu_percent=round(cpu, 2),
        memory_usage=mem,
        memory_limit=512 * MIB,
        memory_percent=round(100 * mem / (512 * MIB), 2),
        network_rx_bytes=1200 * i,
        network_tx_bytes=800 * i,
        disk_read_bytes=0,
        disk_write_bytes=4096 * i,
        timestamp=NOW - timedelta(seconds=90 - i),
    )


def build() -> list[Event]:
    """The session: seven flows in every interesting state, stats, messages, a crash."""
    flows = [
        _snap(ECHO_ID, "echo-1", "running", health="healthy", ports={"8080/tcp": 18080}),
        _snap(_id(2), "counter", "running", started=30),
        _snap(_id(3), "web-api", "running", health="unhealthy", image="flow:v2"),
        _snap(_id(4), "batch-job", "stopped", started=None),
        _snap(_id(5), "new-flow", "created", started=None),
        _snap(_id(6), "db-sync", "restarting", image="flowmgr-test-busybox:latest"),
        _snap(_id(7), "crasher", "running", started=80),
    ]
    out: list[Event] = [ContainerAdded(snapshot=s, at=T0) for s in flows]
    out.append(FlowChannelConnected(container_id=ECHO_ID, at=T0 + timedelta(minutes=1)))
    out.append(
        ActivityLogged(
            activity_type="container_started",
            container_id=ECHO_ID,
            message="container started",
            at=T0,
        )
    )
    out.append(
        HealthChanged(
            container_id=_id(3),
            old_health="healthy",
            new_health="unhealthy",
            at=T0 + timedelta(minutes=50),
        )
    )
    out.append(
        ActivityLogged(
            activity_type="health_warning",
            container_id=_id(3),
            message="health check failing",
            at=T0 + timedelta(minutes=50),
        )
    )
    crashed = _snap(_id(7), "crasher", "exited", started=80, exit_code=3)
    out.append(
        ContainerStateChanged(
            container_id=_id(7),
            old_state="running",
            new_state="exited",
            snapshot=crashed,
            at=T0 + timedelta(minutes=90),
        )
    )
    out.append(
        ContainerCrashed(
            container_id=_id(7),
            name="crasher",
            exit_code=3,
            error="Exited with code 3",
            logs=["step 1 ok", "step 2 ok", "ValueError: bad input"],
            at=T0 + timedelta(minutes=90),
        )
    )
    out.append(
        ActivityLogged(
            activity_type="container_crash",
            container_id=_id(7),
            message="crashed: Exited with code 3",
            at=T0 + timedelta(minutes=90),
        )
    )
    for i, text in enumerate(("hello", "tick 1", "tick 2")):
        at = NOW - timedelta(seconds=30 - i * 10)
        out.append(FlowMessageSent(container_id=ECHO_ID, message={"type": "ping", "n": i}, at=at))
        out.append(
            FlowMessageReceived(container_id=ECHO_ID, message={"type": "pong", "text": text}, at=at)
        )
    for i in range(90):
        for cid, cpu, mem in (
            (ECHO_ID, 3.0, 40 * MIB),
            (_id(2), 12.0, 22 * MIB),
            (_id(3), 45.0, 130 * MIB),
        ):
            s = _sample(i, cpu, mem)
            out.append(StatsSampled(container_id=cid, sample=s, at=s.timestamp))
    return out


ECHO_LOGS = [f"2026-01-01T13:3{i // 6}:{i % 6}0Z echo-1: handled message {i}" for i in range(30)]


if __name__ == "__main__":
    dump(build(), RECORDING)
