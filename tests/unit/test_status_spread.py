"""The periodic status report: every flow once per interval, each at its own phase, no burst."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from pathlib import Path

import pytest

from server.core import status_phases
from server.core.events import StatusReported
from server.core.registry import Record
from server.core.status_phases import slot_count, slot_of
from tests.fake_flows import fake_manager

FLOWS = 400
SLOT = 0.05
"""Seconds per slot in these tests (1 s in service) so an interval passes quickly."""
INTERVAL = 0.4  # 8 slots


def test_slots_cover_the_interval_and_a_flow_keeps_its_slot() -> None:
    assert slot_count(30) == 30 and slot_count(1.0) == 1 and slot_count(0.2) == 1
    assert slot_count(2.5) == 3 and slot_count(10**9) == status_phases.MAX_SLOTS
    ids = [uuid.uuid4().hex * 2 for _ in range(3000)]
    assert all(slot_of(i, 30) == slot_of(i, 30) for i in ids[:50])
    per_slot = Counter(slot_of(i, 30) for i in ids)
    assert set(per_slot) == set(range(30))
    assert max(per_slot.values()) < 2 * 3000 / 30  # even enough: no slot holds a burst


async def test_each_flow_once_per_interval_at_its_own_phase(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(status_phases, "SLOT_SECONDS", SLOT)
    m = fake_manager(tmp_path, FLOWS, monitoring__health_check_interval=INTERVAL)
    m.bus.bind_loop(asyncio.get_running_loop())
    recs = list(m.registry.records.values())
    sampled: list[str] = []

    async def ensure_sample(rec: Record) -> None:
        sampled.append(rec.info.id)

    monkeypatch.setattr(m.sampler, "ensure_sample", ensure_sample)
    loop = asyncio.get_running_loop()
    seen: dict[str, list[float]] = {}
    async with m.bus.subscribe(maxsize=10 * FLOWS) as sub:
        began = loop.time()
        task = asyncio.create_task(m._report_status())
        try:
            async with asyncio.timeout(10):
                async for ev in sub:
                    if isinstance(ev, StatusReported):
                        seen.setdefault(ev.status.container_id, []).append(loop.time() - began)
                        if sum(map(len, seen.values())) == 2 * FLOWS:
                            break
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert set(seen) == {r.info.id for r in recs}
    assert all(len(times) == 2 for times in seen.values())  # once per interval each
    for times in seen.values():  # the same phase in each interval
        assert times[1] - times[0] == pytest.approx(INTERVAL, abs=3 * SLOT)
    # spread: the first interval's reports fall in all 8 slots, none holding a burst
    per_slot = Counter(int(t[0] / SLOT) for t in seen.values())
    assert len(per_slot) >= 7 and max(per_slot.values()) < FLOWS / 4
    assert sorted(sampled[:FLOWS]) == sorted(seen)  # each reported one had its sample ensured
