"""ResourceSampler over recorded cgroup trees (v1 and v2), and the stats-API fallback."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from server.core.bus import EventBus
from server.core.config import load_settings
from server.core.docker_adapter import ContainerInfo, DockerAdapter
from server.core.events import StatsSampled
from server.core.flow_channel import FlowChannelHub
from server.core.registry import Registry
from server.core.stats import ResourceSampler, sample_from_api
from server.core.stopped import StoppedSet

DATA = Path(__file__).resolve().parents[1] / "data"


def _info(cid: str, pid: int) -> ContainerInfo:
    t = datetime.now(UTC)
    return ContainerInfo(cid, "n-" + cid[:4], "img", "running", "none", t, t, None, 0, False, pid)


@pytest.mark.parametrize(
    ("tree", "pid", "usage"),
    [
        ("cgroup_v1", 6844, 9080832 - 8388608),
        ("cgroup_v2", 4242, 26415104 - 9043968),
    ],
)
async def test_sweep_reads_recorded_tree(tmp_path: Path, tree: str, pid: int, usage: int) -> None:
    settings = load_settings(env={}, socket_dir=str(tmp_path))
    bus = EventBus()
    registry = Registry(
        bus,
        FlowChannelHub(bus, settings.flow),
        StoppedSet(str(tmp_path)),
        str(tmp_path),
        "/run/flowmgr",
    )
    registry.apply(_info("a" * 64, pid))
    registry.apply(_info("b" * 64, 999999))  # no such process: counted as unreadable
    sampler = ResourceSampler(
        DockerAdapter(),
        registry,
        settings,
        proc_root=str(DATA / tree / "proc"),
        fs_root=str(DATA / tree),
    )
    async with bus.subscribe() as sub:
        samples, unreadable = sampler._read_all([("a" * 64, pid), ("b" * 64, 999999)])
        assert unreadable == ["b" * 64]
        sample = samples["a" * 64]
        assert sample.memory_usage == usage and sample.cpu_percent == 0.0
        again, _ = sampler._read_all([("a" * 64, pid)])  # same counters: still 0 % CPU
        assert again["a" * 64].cpu_percent == 0.0
        sampler._api_due["b" * 64] = float("inf")  # keep the fallback off the network
        await sampler.sample_all()
        event = sub.get_nowait()
        while event is not None and not isinstance(event, StatsSampled):
            event = sub.get_nowait()
        assert isinstance(event, StatsSampled) and event.container_id == "a" * 64
    assert registry.records["a" * 64].resources is not None
    assert registry.records["b" * 64].resources is None
    # both gone: nothing is kept for them, readable or not (a soak of 10,000 flows showed
    # one entry left behind per container whose files were never readable)
    assert "b" * 64 in sampler._paths
    registry.remove("a" * 64)
    registry.remove("b" * 64)
    await sampler.sample_all()
    assert (sampler._paths, sampler._prev, sampler._api_due) == ({}, {}, {})


def test_stats_api_answer_like_the_cli() -> None:
    raw = json.loads((DATA / "docker_stats_api.json").read_text())
    sample = sample_from_api(raw)
    assert sample.memory_usage == 8966144 - 8388608
    assert sample.memory_limit == 64 * 1024 * 1024
    assert sample.network_rx_bytes == 516
    assert sample.cpu_percent == pytest.approx(64.87, abs=0.01)
