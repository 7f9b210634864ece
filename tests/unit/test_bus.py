"""EventBus: bounded queues, drop-oldest, per-container coalescing, scoped subscriptions."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from server.core.bus import EventBus
from server.core.events import ContainerRemoved, Event, StatsSampled, StatusReported
from server.core.models import ContainerStatus, ResourceSample


def _sample(cpu: float) -> ResourceSample:
    return ResourceSample(cpu, 1, 2, 50.0, 0, 0, 0, 0, datetime.now(UTC))


def _removed(i: int) -> ContainerRemoved:
    return ContainerRemoved(container_id=f"c{i}", name=f"n{i}")


def _drain(sub) -> list[Event]:  # type: ignore[no-untyped-def]
    out = []
    while (e := sub.get_nowait()) is not None:
        out.append(e)
    return out


async def test_full_queue_drops_oldest_and_counts() -> None:
    bus = EventBus()
    async with bus.subscribe(maxsize=3) as sub:
        for i in range(5):
            bus.publish(_removed(i))
        assert sub.dropped == 2
        assert [e.container_id for e in _drain(sub)] == ["c2", "c3", "c4"]  # type: ignore[attr-defined]
        assert bus.stats()["dropped"] == 2


async def test_stats_coalesce_per_container_keeping_the_latest() -> None:
    bus = EventBus()
    async with bus.subscribe() as sub:
        bus.publish(StatsSampled(container_id="a", sample=_sample(1)))
        bus.publish(_removed(9))
        bus.publish(StatsSampled(container_id="b", sample=_sample(2)))
        bus.publish(StatsSampled(container_id="a", sample=_sample(3)))
        events = _drain(sub)
    assert len(events) == 3
    first = events[0]
    assert isinstance(first, StatsSampled) and first.sample.cpu_percent == 3  # kept its place
    assert isinstance(events[1], ContainerRemoved)
    assert isinstance(events[2], StatsSampled) and events[2].container_id == "b"


async def test_status_reports_coalesce_too() -> None:
    bus = EventBus()
    status = ContainerStatus("a", "n", "running", "none", None, False, None, None)
    async with bus.subscribe() as sub:
        for _ in range(10):
            bus.publish(StatusReported(status=status))
        assert len(_drain(sub)) == 1


async def test_coalesced_entry_dropped_when_full() -> None:
    bus = EventBus()
    async with bus.subscribe(maxsize=2) as sub:
        bus.publish(StatsSampled(container_id="a", sample=_sample(1)))
        bus.publish(_removed(1))
        bus.publish(_removed(2))  # pushes the stats entry out
        bus.publish(StatsSampled(container_id="a", sample=_sample(5)))  # queued anew
        events = _drain(sub)
    assert [type(e).__name__ for e in events] == ["ContainerRemoved", "StatsSampled"]
    assert sub.dropped == 2


async def test_predicate_close_and_threadsafe_publish() -> None:
    bus = EventBus()
    bus.bind_loop(asyncio.get_running_loop())
    got: list[Event] = []
    async with bus.subscribe(predicate=lambda e: isinstance(e, ContainerRemoved)) as sub:
        bus.publish(StatsSampled(container_id="a", sample=_sample(1)))
        await asyncio.to_thread(bus.publish_threadsafe, _removed(1))

        async def read() -> None:
            async for e in sub:
                got.append(e)

        reader = asyncio.create_task(read())
        async with asyncio.timeout(5):
            while not got:
                await asyncio.sleep(0.01)
        bus.close()
        async with asyncio.timeout(5):
            await reader
    assert [type(e) for e in got] == [ContainerRemoved]
    assert bus.subscriber_count == 0


async def test_slow_subscriber_never_blocks_publisher() -> None:
    bus = EventBus()
    async with bus.subscribe(maxsize=10) as slow, bus.subscribe() as fast:
        for i in range(1000):
            bus.publish(_removed(i))
        assert len(slow) == 10 and slow.dropped == 990
        assert len(fast) == 1000
