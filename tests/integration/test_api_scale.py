"""The API at a thousand flows' worth (fake flows in a manager that is not started, a real
uvicorn on 127.0.0.1, real Socket.IO clients): `list_containers` encoded once; `watch_stats`
(hostile payloads first) and the `container_stats` pushes to the watching client only."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic_core import to_json

from flowmgr_tui.remote import RemoteBackend
from server.api import sio_manager
from server.api.app import create_app
from server.api.serving import GracefulServer, uvicorn_config
from server.api.sio_manager import Encoded
from server.api.sio_namespace import UndecodableAsEvent
from server.core.config import Settings
from server.core.events import StatsSampled
from server.core.manager import ContainerManager
from server.core.models import ResourceSample
from server.core.stats import MAX_WATCHED
from server.wire.answers import ContainerListOut
from server.wire.pushes import ContainerStatsOut
from server.wire.requests import WATCH_MAX
from tests.fake_flows import fake_manager
from tests.integration.api_harness import (
    BUSYBOX,
    TEST_TOKEN,
    client,
    running_service,
    with_test_token,
)

FLOWS = 1000


@contextlib.asynccontextmanager
async def serving(manager: ContainerManager) -> AsyncIterator[str]:
    """The service's app over `manager` (not started: no engine) on a free port; its URL."""
    settings = with_test_token(manager.settings)
    server = GracefulServer(
        uvicorn_config(create_app(manager, settings), settings, host="127.0.0.1", port=0)
    )
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(30):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


@pytest.fixture
async def manager(tmp_path: Path) -> ContainerManager:
    m = fake_manager(tmp_path, FLOWS)
    m.bus.bind_loop(asyncio.get_running_loop())
    return m


@pytest.fixture
async def url(manager: ContainerManager) -> AsyncIterator[str]:
    async with serving(manager) as served:
        yield served


def test_an_encoded_answer_splices_into_the_event_and_the_ack() -> None:
    answer = {"containers": [{"id": "a", "name": "b"}], "count": 1, "s": "\ud800"}
    enc = Encoded(answer)
    assert enc == answer  # still the dict in-process callers read
    for data in (["container_list", answer], [answer], ["x", 1, answer]):
        spliced = [enc if item is answer else item for item in data]
        assert UndecodableAsEvent.dumps(spliced) == UndecodableAsEvent.dumps(data)
    assert json.loads(UndecodableAsEvent.dumps([enc]))[0]["s"] == "\ud800"  # escaped, not lost


async def test_list_containers_is_encoded_once_for_the_event_and_the_ack(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoded: list[int] = []

    def counting(value: Any) -> bytes:
        text = to_json(value)
        if b'"containers"' in text:
            encoded.append(len(text))
        return text

    monkeypatch.setattr(sio_manager, "to_json", counting)
    async with client(url) as (sio, rec):
        ack = await sio.call("list_containers", {"request_id": "r1"}, timeout=20)
        event = await rec.wait_for("container_list", lambda d: d.get("request_id") == "r1")
    assert ack == event  # the ack and the documented event: one text
    assert ack["count"] == FLOWS and len(ack["containers"]) == FLOWS
    ContainerListOut.decode(ack)
    assert len(encoded) == 1, encoded  # not once for the event and again for the ack


HOSTILE: list[tuple[Any, str]] = [
    (None, "container_ids"),  # no payload: the list is required
    ("abc", "payload"),
    ([["a"]], "payload"),
    ({}, "container_ids"),
    ({"container_ids": "abc"}, "container_ids"),  # a bare string, not a list of one
    ({"container_ids": {"a": 1}}, "container_ids"),
    ({"container_ids": True}, "container_ids"),
    ({"container_ids": None}, "container_ids"),
    ({"container_ids": [1]}, "container_ids.0"),
    ({"container_ids": ["ok", None]}, "container_ids.1"),
    ({"container_ids": [""]}, "container_ids.0"),
    ({"container_ids": ["x" * 257]}, "container_ids.0"),
    ({"container_ids": [["nested"]]}, "container_ids.0"),
    ({"container_ids": [{"id": "a"}]}, "container_ids.0"),
    ({"container_ids": ["flow-0001", " "]}, "container_ids.1"),  # blank, as container_id
    ({"container_ids": ["flow-0001", "0"]}, "container_ids.1"),  # ~60 of 1,000 ids: ambiguous
    ({"container_ids": ["a"] * 1001}, "container_ids"),  # at most 1,000
    ({"container_ids": [str(n) for n in range(100_000)]}, "container_ids"),
]


def test_the_requests_bound_is_the_cores() -> None:
    assert WATCH_MAX == MAX_WATCHED


async def test_hostile_watch_stats_is_a_validation_error_and_changes_nothing(
    url: str, manager: ContainerManager
) -> None:
    kept = sorted(manager.registry.records)[:2]
    async with client(url) as (sio, rec):
        ack = await sio.call("watch_stats", {"container_ids": kept}, timeout=20)
        assert ack == {"container_ids": kept, "unknown": []}
        for payload, field in HOSTILE:
            answer = await sio.call("watch_stats", payload, timeout=20)
            assert answer["error_type"] == "validation_error", payload
            assert answer["details"]["operation"] == "watch_stats"
            assert answer["details"].get("field", "payload") == field, (payload, answer)
            assert manager.sampler.watched == frozenset(kept)  # the last good set holds
        # and the connection still serves
        assert (await sio.call("list_containers", {}, timeout=20))["count"] == FLOWS


async def test_watch_stats_resolves_references_and_replaces_the_clients_set(
    url: str, manager: ContainerManager
) -> None:
    snaps = manager.snapshot()
    a, b, c = snaps[0], snaps[1], snaps[2]
    async with client(url) as (sio, _), client(url) as (other, _):
        ack = await sio.call(
            "watch_stats", {"container_ids": [a.id, b.name, c.id[:12], "nope", a.name]}
        )
        assert ack == {"container_ids": [a.id, b.id, c.id], "unknown": ["nope"]}
        await other.call("watch_stats", {"container_ids": [c.id]})
        assert manager.sampler.watched == {a.id, b.id, c.id}
        every = {"container_ids": [s.id for s in snaps]}  # 1,000 full ids: lookups
        assert len((await sio.call("watch_stats", every))["container_ids"]) == FLOWS
        assert (await sio.call("watch_stats", {"container_ids": []}))["container_ids"] == []
        assert manager.sampler.watched == {c.id}  # the other client's set stays
        await sio.call("watch_stats", {"container_ids": [a.id]})
    async with asyncio.timeout(10):  # both gone: their sets are dropped at disconnect
        while manager.sampler.watched:
            await asyncio.sleep(0.02)


async def test_container_stats_go_to_the_watching_client_only_and_are_not_journalled(
    url: str, manager: ContainerManager
) -> None:
    a, b = manager.snapshot()[:2]
    sample = ResourceSample(1.5, 2048, 4096, 50.0, 1, 2, 3, 4, datetime.now(UTC))
    async with client(url) as (watcher, seen), client(url) as (_, unseen):
        await watcher.call("watch_stats", {"container_ids": [a.id]})
        manager.bus.publish(StatsSampled(container_id=b.id, sample=sample))  # not watched
        manager.bus.publish(StatsSampled(container_id=a.id, sample=sample))
        got = await seen.wait_for("container_stats")
        push = ContainerStatsOut.decode(got)
        assert push.seq is None and "seq" not in got  # not journalled
        core = push.to_core()
        assert (core.container_id, core.sample) == (a.id, sample)
        await watcher.call("list_containers", {})  # a round trip after the pushes
        assert [d["container_id"] for d in seen.events["container_stats"]] == [a.id]
        assert "container_stats" not in unseen.events


async def test_the_remote_panel_watches_what_it_shows_and_takes_the_samples(
    tmp_path: Path,
) -> None:
    server = fake_manager(tmp_path, 20)  # the panel asks each row's status at connect
    server.bus.bind_loop(asyncio.get_running_loop())
    a, b, c = (s.id for s in server.snapshot()[:3])
    sample = ResourceSample(7.5, 1 << 20, 1 << 30, 0.1, 10, 20, 30, 40, datetime.now(UTC))
    async with serving(server) as served:
        panel = RemoteBackend(served, token=TEST_TOKEN)
        panel.watch_stats("panel", [a, b])  # before it is connected: sent once it is
        await panel.start()
        try:
            panel.watch_stats("detail", [c])
            async with asyncio.timeout(10):  # the union of what each part of it shows
                while server.sampler.watched != {a, b, c}:
                    await asyncio.sleep(0.02)
            async with panel.bus.subscribe() as sub:
                server.bus.publish(StatsSampled(container_id=b, sample=sample))
                async with asyncio.timeout(10):
                    got = await anext(e async for e in sub if isinstance(e, StatsSampled))
            assert (got.container_id, got.sample) == (b, sample)
            assert panel.get(b).resources == sample
            panel.watch_stats("panel", [])
            async with asyncio.timeout(10):
                while server.sampler.watched != {c}:
                    await asyncio.sleep(0.02)
        finally:
            await panel.stop()
        async with asyncio.timeout(10):  # gone: the server forgets its set
            while server.sampler.watched:
                await asyncio.sleep(0.02)


async def test_a_real_flow_watched_is_sampled_every_second_and_pushed_to_its_watcher(
    settings: Settings, unique_name: Any
) -> None:
    monitoring = settings.monitoring.model_copy(update={"background_stats_interval": 60.0})
    settings = settings.model_copy(update={"monitoring": monitoring})
    async with (
        running_service(settings) as svc,
        client(svc.url) as (watcher, seen),
        client(svc.url) as (_, unseen),
    ):
        made = await watcher.call(
            "create_container", {"image": BUSYBOX, "name": unique_name("watched")}, timeout=60
        )
        cid = made["container_id"]
        await watcher.call("start_container", {"container_id": cid}, timeout=60)
        ack = await watcher.call("watch_stats", {"container_ids": [cid[:12]]})
        assert ack == {"container_ids": [cid], "unknown": []}

        def third(d: dict[str, Any]) -> bool:
            return len(seen.events["container_stats"]) >= 3

        await seen.wait_for("container_stats", third)  # every stats_interval, not every 60 s
        stamps = [
            ContainerStatsOut.decode(d).resource_usage.timestamp
            for d in seen.events["container_stats"]
        ]
        assert len(set(stamps)) == len(stamps)  # fresh samples, not one repeated
        assert all(d["container_id"] == cid for d in seen.events["container_stats"])
        await watcher.call("watch_stats", {"container_ids": []})
        count = len(seen.events["container_stats"])
        await asyncio.sleep(2.5)
        assert len(seen.events["container_stats"]) <= count + 1  # one in flight at most
        assert "container_stats" not in unseen.events
