"""The sampler at many flows' worth (a fake cgroup tree): kept-open files opened, re-opened on
restart, closed on stop and removal, refused by the budget without error; watched flows every
round, the others in their turn, spread over the slices; hostile watch sets and settings."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import resource
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from server.core.bus import EventBus
from server.core.cgroups import UsageReader
from server.core.config import Settings, load_settings
from server.core.docker_adapter import ContainerInfo
from server.core.errors import ConfigError, InvalidRequest
from server.core.fd_budget import FdBudget
from server.core.flow_channel import FlowChannelHub
from server.core.registry import Registry
from server.core.stats import MAX_WATCHED, ResourceSampler, _phase
from server.core.stopped import StoppedSet
from tests.fake_cgroups import add_flow, fake_host, flow_id
from tests.unit.test_sample_files import open_fds
from tests.unit.test_stats_sampler import FakeAdapter

FILES = 5
"""Kept-open files of one v2 flow: cpu.stat, memory.current, memory.stat, net/dev, io.stat."""


def _info(cid: str, pid: int, status: str = "running") -> ContainerInfo:
    t = datetime.now(UTC)
    return ContainerInfo(cid, "n-" + cid[-6:], "img", status, "none", t, t, None, 0, False, pid)


def _sampler(
    root: Path, budget: FdBudget | None = None, **overrides: Any
) -> tuple[ResourceSampler, Registry]:
    settings = load_settings(env={}, socket_dir=str(root / "sock"), **overrides)
    bus = EventBus()
    registry = Registry(
        bus, FlowChannelHub(bus, settings.flow), StoppedSet(str(root)), str(root), "/run/flowmgr"
    )
    sampler = ResourceSampler(
        FakeAdapter(),
        registry,
        settings,
        proc_root=str(root / "proc"),
        fs_root=str(root),
        fd_budget=budget or FdBudget(limit=100_000, reserve=256),
    )
    return sampler, registry


def _fds_of(root: Path, text: str) -> list[str]:
    return [t for t in open_fds().values() if t.startswith(str(root)) and text in t]


def _batches(
    sampler: ResourceSampler, monkeypatch: pytest.MonkeyPatch
) -> list[tuple[int, list[str]]]:
    """(round, ids) of every batch the sampler reads from now on."""
    batches: list[tuple[int, list[str]]] = []
    real = sampler._read_all

    def spy(batch: list[tuple[str, int]], live: set[str] | None = None) -> Any:
        batches.append((sampler.rounds, [cid for cid, _ in batch]))
        return real(batch, live)

    monkeypatch.setattr(sampler, "_read_all", spy)
    return batches


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Path]:
    fake_host(tmp_path)
    yield tmp_path


async def test_restart_reopens_stop_and_removal_close(host: Path) -> None:
    sampler, registry = _sampler(host, monitoring__stats_interval=0.05)
    cid = flow_id(7)
    add_flow(host, cid, 1007)
    registry.apply(_info(cid, 1007))
    assert cid in await sampler.sample_all()
    assert len(_fds_of(host, cid)) == FILES - 1 and _fds_of(host, "/1007/net/dev")
    assert sampler.fd_budget.held(cid) == FILES
    # restarted: same cgroup, a new pid; the old pid's files are closed, the new ones opened
    add_flow(host, cid, 2007)
    registry.apply(_info(cid, 2007))
    assert cid in await sampler.sample_all()
    assert not _fds_of(host, "/1007/") and len(_fds_of(host, "/2007/net/dev")) == 1
    assert len(_fds_of(host, cid)) == FILES - 1 and sampler.fd_budget.held(cid) == FILES
    # stopped: closed at the next round, nothing held
    registry.apply(replace(_info(cid, 0), status="exited"))
    await sampler.sample_round()
    assert _fds_of(host, cid) == [] and _fds_of(host, "/2007/") == []
    assert sampler.fd_budget.held(cid) == 0
    # started again, then removed
    registry.apply(_info(cid, 2007))
    await sampler.sample_round()
    assert sampler.fd_budget.held(cid) == FILES
    registry.remove(cid)
    await sampler.sample_round()
    assert _fds_of(host, cid) == [] and sampler.fd_budget.total_held == 0


async def test_no_descriptor_leak_after_1000_create_delete_cycles(host: Path) -> None:
    sampler, registry = _sampler(host)
    flows = [(flow_id(n), 3000 + n) for n in range(50)]
    for cid, pid in flows:
        add_flow(host, cid, pid)
    before = len(open_fds())
    for cid, pid in itertools.islice(itertools.cycle(flows), 1000):
        registry.apply(_info(cid, pid))
        assert cid in await sampler.sample_all()
        assert sampler.fd_budget.held(cid) == FILES
        registry.remove(cid)
        await sampler.sample_all()
    assert len(open_fds()) == before
    assert sampler.fd_budget.total_held == 0 and sampler._paths == {}


async def test_the_budget_refuses_then_allows_and_no_error_is_logged(
    host: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Files are kept only while the sockets of `max_flows` flows still fit: refused, each
    sample is read the old way (same values); once room is back they are kept."""
    max_flows = load_settings(env={}).docker.max_flows
    budget = FdBudget(limit=2 * max_flows + 256 + FILES, reserve=256)
    sampler, registry = _sampler(host, budget)
    flows = fake_host(host, 3, first_pid=4000)
    for cid, pid in flows:
        registry.apply(_info(cid, pid))
    assert budget.try_take("a flow's sockets", 2)  # now one flow's files would eat the spare
    before = len(open_fds())
    with caplog.at_level(logging.WARNING):
        first = await sampler.sample_all()
        for _ in range(UsageReader.REFRESH - 1):
            again = await sampler.sample_all()
    assert set(first) == set(again) == {cid for cid, _ in flows}
    assert again[flows[0][0]].memory_usage == first[flows[0][0]].memory_usage > 0
    assert len(open_fds()) == before and budget.total_held == 2
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    budget.release("a flow's sockets")
    await sampler.sample_all()  # refused readers ask again at each read
    assert budget.held(flows[0][0]) == FILES  # the first fits, with the spare left
    assert budget.available == 2 * max_flows and len(open_fds()) == before + FILES
    sampler.close()
    assert budget.total_held == 0 and len(open_fds()) == before


async def test_watched_every_round_the_rest_in_turn_spread_over_rounds(
    host: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """200 flows, 5 watched; 0.05 s rounds, background every 10: each watched flow is read
    once a round, each other flow once in 10 rounds, about a tenth of them in each."""
    sampler, registry = _sampler(
        host,
        monitoring__stats_interval=0.05,
        monitoring__background_stats_interval=0.5,
    )
    flows = fake_host(host, 200, first_pid=5000)
    for cid, pid in flows:
        registry.apply(_info(cid, pid))
    watched = {cid for cid, _ in flows[:5]}
    sampler.watch("panel", watched)
    batches = _batches(sampler, monkeypatch)
    await sampler.sample_round()  # the first: every flow is new, all read in the first slice
    assert sorted(batches[0][1]) == sorted(cid for cid, _ in flows) and len(batches) == 1
    batches.clear()
    for _ in range(10):
        await sampler.sample_round()
    per_flow = Counter(cid for _, ids in batches for cid in ids)
    assert {per_flow[c] for c in watched} == {10}
    assert {n for c, n in per_flow.items() if c not in watched} == {1}
    assert len(per_flow) == 200
    background = Counter(r for r, ids in batches for c in ids if c not in watched)
    assert max(background.values()) <= 2 * 195 / 10, background
    # ~25 reads a round: one slice (a slice is a wake-up and a thread hop: not for a few reads)
    assert len(batches) == 10


async def test_a_large_round_is_cut_in_slices(host: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every one of 80 flows every round (all watched): one slice at the default (80 reads
    are ~4 ms), ten slices of about 8 when a slice is to read at least 8."""
    sampler, registry = _sampler(host, monitoring__stats_interval=0.1)
    flows = fake_host(host, 80, first_pid=8000)
    for cid, pid in flows:
        registry.apply(_info(cid, pid))
    sampler.watch("panel", [cid for cid, _ in flows])
    await sampler.sample_round()
    batches = _batches(sampler, monkeypatch)
    await sampler.sample_round()
    assert [len(ids) for _, ids in batches] == [80]
    batches.clear()
    monkeypatch.setattr(ResourceSampler, "SLICE_READS", 8)
    for _ in range(2):
        await sampler.sample_round()
    assert Counter(r for r, _ in batches) == {2: 10, 3: 10}
    sizes = [len(ids) for _, ids in batches]
    assert sum(sizes) == 2 * 80 and max(sizes) <= 2 * 8, sizes


async def test_newly_watched_read_next_round_unwatch_returns_to_turn(
    host: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Watched in the middle of a round that did not plan it (not its background turn): read
    in the next slice (here the next round's first), not at its turn 20 rounds later."""
    sampler, registry = _sampler(
        host, monitoring__stats_interval=0.2, monitoring__background_stats_interval=4.0
    )
    flows = fake_host(host, 30, first_pid=6000)
    for cid, pid in flows:
        registry.apply(_info(cid, pid))
    await sampler.sample_round()
    batches = _batches(sampler, monkeypatch)
    turn = (sampler.rounds + 1) % 20
    target = next(c for c, _ in flows if _phase(c) // 10 % 20 != turn)
    sampler.watch("sio:abc", [target, "not-a-running-flow"])
    sampler.watched = frozenset()  # as if it came after this round had planned its slices
    await sampler.sample_round()
    assert [ids.count(target) for _, ids in batches] == [1]
    sampler.unwatch("sio:abc")
    assert sampler.watched == frozenset()
    batches.clear()
    for _ in range(3):  # back to its background turn, 20 rounds away
        await sampler.sample_round()
    assert all(target not in ids for _, ids in batches)


@pytest.mark.parametrize(
    ("owner", "ids"),
    [
        ("", ["a"]),
        (5, ["a"]),
        (None, ["a"]),
        ("x" * 300, ["a"]),
        ("panel", "abc"),
        ("panel", b"abc"),
        ("panel", {"a": 1}),
        ("panel", 7),
        ("panel", None),
        ("panel", [1]),
        ("panel", [None]),
        ("panel", [""]),
        ("panel", ["x" * 200]),
        ("panel", [f"{n:064x}" for n in range(MAX_WATCHED + 1)]),
        ("panel", (f"{n:064x}" for n in itertools.count())),  # endless: stops at the cap
    ],
)
def test_hostile_watch_sets_are_refused_and_change_nothing(
    tmp_path: Path, owner: Any, ids: Any
) -> None:
    sampler, _ = _sampler(tmp_path)
    sampler.watch("panel", ["kept"])
    with pytest.raises(InvalidRequest) as err:
        sampler.watch(owner, ids)
    assert err.value.details["field"] in {"owner", "container_ids"}
    assert sampler.watched == {"kept"}


def test_watch_sets_of_owners_add_up_and_replace(tmp_path: Path) -> None:
    sampler, _ = _sampler(tmp_path)
    sampler.watch("panel", ["a", "b"])
    sampler.watch("sio:1", {"b", "c"})
    assert sampler.watched == {"a", "b", "c"}
    sampler.watch("panel", [])
    assert sampler.watched == {"b", "c"}
    sampler.unwatch("sio:1")
    sampler.unwatch("never-watched")
    assert sampler.watched == frozenset()


@pytest.mark.parametrize("value", [0, -1, "10", True, None])
def test_hostile_background_interval_is_a_config_error_naming_the_key(
    tmp_path: Path, value: Any
) -> None:
    conf = tmp_path / "config.json"
    conf.write_text(json.dumps({"monitoring": {"background_stats_interval": value}}))
    with pytest.raises(ConfigError) as err:
        load_settings(conf, env={})
    assert "background_stats_interval" in str(err.value)


def test_background_interval_default_and_documented() -> None:
    assert Settings().monitoring.background_stats_interval == 10.0
    root = Path(__file__).resolve().parents[2]
    for doc in ("README.md", "docs/PROTOCOL.md"):
        assert "background_stats_interval" in (root / doc).read_text(), doc


async def test_memory_stat_rereads_are_spread_over_rounds(host: Path) -> None:
    """Idle flows re-read memory.stat every REFRESH reads, each at its own phase: not all of
    them in the same round (issue 15: every 10th sweep read it for every flow at once)."""
    sampler, registry = _sampler(host)
    flows = fake_host(host, 100, first_pid=7000)
    for cid, pid in flows:
        registry.apply(_info(cid, pid))
    await sampler.sample_all()
    per_round: list[int] = []
    for _ in range(UsageReader.REFRESH):
        stats = 0
        for cid, _ in flows:
            reader = sampler._paths[cid][1]
            assert reader is not None
            stats += (reader.reads + reader._phase) % UsageReader.REFRESH == 0
        per_round.append(stats)
        await sampler.sample_all()
    assert sum(per_round) == 100 and max(per_round) <= 25, per_round


def test_out_of_descriptors_skips_the_flow_and_never_sends_it_to_the_api(
    host: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Hostile: something else ate every descriptor (EMFILE on open). The flow is not marked
    invisible (that would send it to the stats API for good): skipped, one warning, and read
    from its files once descriptors are back."""
    sampler, registry = _sampler(host, FdBudget(limit=0, reserve=0))  # files opened per read
    cid, pid = fake_host(host, 1, first_pid=9000)[0]
    registry.apply(_info(cid, pid))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with caplog.at_level(logging.WARNING, logger="server.core.stats"):
        lowest_free = os.open("/dev/null", os.O_RDONLY)
        os.close(lowest_free)
        resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))  # no open succeeds
        try:
            starved = [sampler._read_all([(cid, pid)], {cid}) for _ in range(3)]
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert starved == [({}, {})] * 3 and cid not in sampler._paths
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "Too many open files" in warnings[0], warnings
    samples, hidden = sampler._read_all([(cid, pid)], {cid})
    assert hidden == {} and samples[cid].memory_usage > 0


async def test_a_stopped_sampler_keeps_nothing_open_until_it_runs_again(host: Path) -> None:
    """The sampling task ended (manager stopped, sampling paused): its files are closed, and a
    read that comes late (the cancelled round's worker, a status asked meanwhile) keeps none."""
    sampler, registry = _sampler(host, monitoring__stats_interval=0.05)
    cid, pid = fake_host(host, 1, first_pid=9100)[0]
    registry.apply(_info(cid, pid))
    sampler.watch("panel", [cid])  # read every round
    task = asyncio.create_task(sampler.run())
    while sampler.rounds < 1:
        await asyncio.sleep(0.01)
    assert sampler.fd_budget.held(cid) == FILES and len(_fds_of(host, cid)) == FILES - 1
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert sampler.fd_budget.total_held == 0 and _fds_of(host, cid) == []
    assert cid in await sampler.sample_all()  # read, the files opened per read
    assert sampler.fd_budget.total_held == 0 and _fds_of(host, cid) == []
    task = asyncio.create_task(sampler.run())
    rounds = sampler.rounds
    while sampler.rounds < rounds + 2:
        await asyncio.sleep(0.01)
    assert sampler.fd_budget.held(cid) == FILES  # running again: kept again
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert sampler.fd_budget.total_held == 0 and sampler._paths == {}
