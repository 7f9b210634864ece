"""ResourceSampler over recorded cgroup trees (v1 and v2), and the stats-API fallback."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from server.core.bus import EventBus
from server.core.config import Settings, load_settings
from server.core.docker_adapter import ContainerInfo, DockerAdapter
from server.core.errors import DockerApiError
from server.core.events import StatsSampled
from server.core.flow_channel import FlowChannelHub
from server.core.registry import Registry
from server.core.stats import ResourceSampler, sample_from_api
from server.core.stats_api import StatsApiFallback
from server.core.stopped import StoppedSet

DATA = Path(__file__).resolve().parents[1] / "data"
V1_ID = "dcbaccae22537ce3fca20a4cc1babc45933bfd564a1758f5bfbfa901f0854940"
V2_ID = "3f1c9a0d2b7e4f6a8c5d1e0b9a7f3c2d4e6b8a0c1d3f5e7a9b2c4d6e8f0a1b2c"
API_ANSWER = json.loads((DATA / "docker_stats_api.json").read_text())


def _info(cid: str, pid: int) -> ContainerInfo:
    t = datetime.now(UTC)
    return ContainerInfo(cid, "n-" + cid[:4], "img", "running", "none", t, t, None, 0, False, pid)


class FakeAdapter(DockerAdapter):
    """The stats API without an engine: answers after `delay`, counts calls and overlap."""

    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        super().__init__()
        self.delay, self.fail = delay, fail
        self.calls: list[str] = []
        self.inflight = self.most_inflight = 0

    @property
    def is_local(self) -> bool:
        return True

    async def stats_once(self, container_id: str, timeout: float | None = None) -> dict[str, Any]:
        self.calls.append(container_id)
        self.inflight += 1
        self.most_inflight = max(self.most_inflight, self.inflight)
        try:
            await asyncio.sleep(self.delay)
            if self.fail:
                raise DockerApiError("the engine said no")
            return dict(API_ANSWER)
        finally:
            self.inflight -= 1


def _registry(tmp_path: Path, settings: Settings) -> Registry:
    bus = EventBus()
    return Registry(
        bus,
        FlowChannelHub(bus, settings.flow),
        StoppedSet(str(tmp_path)),
        str(tmp_path),
        "/run/flowmgr",
    )


@pytest.mark.parametrize(
    ("tree", "cid", "pid", "usage"),
    [
        ("cgroup_v1", V1_ID, 6844, 9080832 - 8388608),
        ("cgroup_v2", V2_ID, 4242, 26415104 - 9043968),
    ],
)
async def test_sweep_reads_recorded_tree(
    tmp_path: Path, tree: str, cid: str, pid: int, usage: int
) -> None:
    settings = load_settings(env={}, socket_dir=str(tmp_path))
    registry = _registry(tmp_path, settings)
    registry.apply(_info(cid, pid))
    registry.apply(_info("b" * 64, 999999))  # no such process: not visible, to the API
    sampler = ResourceSampler(
        FakeAdapter(),
        registry,
        settings,
        proc_root=str(DATA / tree / "proc"),
        fs_root=str(DATA / tree),
    )
    async with registry.bus.subscribe() as sub:
        samples, hidden = sampler._read_all([(cid, pid), ("b" * 64, 999999)])
        assert list(hidden) == ["b" * 64] and "/999999/cgroup" in hidden["b" * 64]
        sample = samples[cid]
        assert sample.memory_usage == usage and sample.cpu_percent == 0.0
        again, _ = sampler._read_all([(cid, pid)])  # same counters: still 0 % CPU
        assert again[cid].cpu_percent == 0.0
        await sampler.sample_all()
        event = sub.get_nowait()
        while event is not None and not isinstance(event, StatsSampled):
            event = sub.get_nowait()
        assert isinstance(event, StatsSampled) and event.container_id == cid
    assert registry.records[cid].resources is not None
    assert registry.records["b" * 64].resources is None  # the fallback loop is not running
    assert sampler.api.assigned == {"b" * 64}
    # both gone: nothing is kept for them, readable or not (a soak of 10,000 flows showed
    # one entry left behind per container whose files were never readable)
    registry.remove(cid)
    registry.remove("b" * 64)
    await sampler.sample_all()
    assert (sampler._paths, sampler._prev, sampler.api.assigned) == ({}, {}, frozenset())


def test_a_pid_of_another_namespace_is_never_read_as_the_flow(tmp_path: Path) -> None:
    """Hostile: the flow's host pid names another process here (the manager in a container
    without --pid=host); its cgroup does not name the container, so its files are not used."""
    settings = load_settings(env={}, socket_dir=str(tmp_path))
    registry = _registry(tmp_path, settings)
    sampler = ResourceSampler(
        FakeAdapter(),
        registry,
        settings,
        proc_root=str(DATA / "cgroup_v1" / "proc"),
        fs_root=str(DATA / "cgroup_v1"),
    )
    samples, hidden = sampler._read_all([("c" * 64, 6844)])
    assert samples == {} and "another pid namespace" in hidden["c" * 64]


async def test_empty_roots_fall_back_and_say_why_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Hostile: nothing of /proc or the cgroup tree is visible (no stat, no meminfo, no pid):
    sampling goes on, through the API, and one warning names the file and the flags."""
    settings = load_settings(env={}, socket_dir=str(tmp_path))
    registry = _registry(tmp_path, settings)
    empty = tmp_path / "empty"
    empty.mkdir()
    adapter = FakeAdapter()
    sampler = ResourceSampler(adapter, registry, settings, proc_root=str(empty), fs_root=str(empty))
    ids = [f"{i:064x}" for i in range(3)]
    for n, cid in enumerate(ids):
        registry.apply(_info(cid, 100 + n))
    with caplog.at_level(logging.WARNING, logger="server.core.stats"):
        for _ in range(3):
            assert await sampler.sample_all() == {}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert f"{empty}/100/cgroup" in warnings[0]
    assert "--pid=host" in warnings[0] and "-v /sys/fs/cgroup:/sys/fs/cgroup:ro" in warnings[0]
    assert sampler.api.assigned == set(ids)
    # the first status needs no wait for the round-robin: one call now, then it is cached
    rec = registry.records[ids[0]]
    sample = await sampler.ensure_sample(rec)
    assert sample is not None and sample.memory_usage == 8966144 - 8388608
    assert await sampler.ensure_sample(rec) is sample and adapter.calls == [ids[0]]


async def test_a_failing_engine_still_gives_a_running_flow_its_nine_fields(
    tmp_path: Path,
) -> None:
    settings = load_settings(env={}, socket_dir=str(tmp_path))
    registry = _registry(tmp_path, settings)
    empty = tmp_path / "empty"
    empty.mkdir()
    sampler = ResourceSampler(
        FakeAdapter(fail=True), registry, settings, proc_root=str(empty), fs_root=str(empty)
    )
    registry.apply(_info("d" * 64, 77))
    sample = await sampler.ensure_sample(registry.records["d" * 64])
    assert sample is not None and sample.memory_usage == 0 and sample.cpu_percent == 0.0
    registry.apply(replace(_info("e" * 64, 0), status="exited"))
    assert await sampler.ensure_sample(registry.records["e" * 64]) is None


async def test_the_fallback_keeps_to_its_budget() -> None:
    """100 flows, 4 calls in flight at most: every flow's first sample as fast as the budget
    allows, each exactly once; then one call every interval/n, oldest first, none sooner."""
    adapter = FakeAdapter(delay=0.01)
    api = StatsApiFallback(adapter, concurrency=4, interval=1.0, publish=lambda c, s: None)
    ids = {f"{i:064x}" for i in range(100)}
    api.assign(ids)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    task = asyncio.create_task(api.run())
    await asyncio.sleep(1.5)  # the first pass, then half of the second (the scheduler's clock)
    task.cancel()
    assert adapter.most_inflight <= 4
    assert set(adapter.calls[:100]) == ids, "a flow came round twice before the others"
    second = adapter.calls[100:]
    # the second pass starts an interval after the first and is spread: ~50 in half of it
    assert 30 <= len(second) <= 60, len(second)
    assert len(set(second)) == len(second) and loop.time() - t0 < 2.0


def test_stats_api_answer_like_the_cli() -> None:
    sample = sample_from_api(API_ANSWER)
    assert sample.memory_usage == 8966144 - 8388608
    assert sample.memory_limit == 64 * 1024 * 1024
    assert sample.network_rx_bytes == 516
    assert sample.cpu_percent == pytest.approx(64.87, abs=0.01)


def test_one_shot_answers_measure_cpu_from_the_previous_one() -> None:
    """One-shot answers carry no precpu_stats: CPU % comes from the last answer's mark."""
    raw = {**API_ANSWER, "precpu_stats": {}}
    assert sample_from_api(raw).cpu_percent == 0.0
    cpu = API_ANSWER["cpu_stats"]
    prev = (
        cpu["cpu_usage"]["total_usage"] - 10_000_000,
        cpu["system_cpu_usage"] - 100_000_000,
    )
    online = cpu.get("online_cpus") or len(cpu["cpu_usage"].get("percpu_usage") or []) or 1
    assert sample_from_api(raw, prev).cpu_percent == pytest.approx(10.0 * online)
