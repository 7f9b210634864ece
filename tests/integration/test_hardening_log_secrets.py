"""A flow's own output never shows its secrets: get_logs, the API's log answers, a crash's tail."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from server.core.config import Settings
from tests.integration.api_harness import client, running_service
from tests.integration.leaky_flow import leaky_flow

pytestmark = pytest.mark.docker


async def test_logs_mask_the_flows_secrets(
    settings: Settings, unique_name: Callable[[str], str]
) -> None:
    flow = leaky_flow(unique_name("leaklog"))
    async with running_service(settings) as svc, client(svc.url) as (sio, rec):
        snap = await svc.manager.create_container(flow.spec)
        await svc.manager.start_container(snap.id)

        # (a) the core's answer, once the flow has printed a round
        lines: list[str] = []
        async with asyncio.timeout(30):
            while not any(line.startswith("tick-") for line in lines):
                await asyncio.sleep(0.2)
                lines = await svc.manager.get_logs(snap.id)
        assert flow.leaks("\n".join(lines)) == []
        assert set(flow.masked_lines()) <= set(lines), lines

        # (b) get_container_logs, and the lines of a log subscription
        answer = await sio.call("get_container_logs", {"container_id": snap.id, "tail": 50})
        assert answer["container_id"] == snap.id, answer
        assert flow.leaks("\n".join(answer["lines"])) == []
        assert set(flow.masked_lines()) <= set(answer["lines"])
        await sio.call("subscribe_logs", {"container_id": snap.id})
        streamed: list[str] = [d["line"] for d in rec.events["container_log"]]

        def two_ticks(_: object) -> bool:  # then one whole round was streamed
            streamed[:] = [d["line"] for d in rec.events["container_log"]]
            return sum(line.startswith("tick-") for line in streamed) >= 2

        await rec.wait_for("container_log", two_ticks, timeout=30)
        assert flow.leaks("\n".join(streamed)) == []
        assert set(flow.masked_lines()) <= set(streamed), streamed
        await sio.call("unsubscribe_logs", {"container_id": snap.id})
        await svc.manager.delete_container(snap.id)
    assert flow.leaks(repr(dict(rec.events))) == []


async def test_a_crash_tail_masks_the_flows_secrets(
    settings: Settings, unique_name: Callable[[str], str]
) -> None:
    flow = leaky_flow(unique_name("leakcrash"), exit_code=3)
    async with running_service(settings) as svc, client(svc.url) as (_sio, rec):
        snap = await svc.manager.create_container(flow.spec)
        await svc.manager.start_container(snap.id)
        crash = await rec.wait_for(
            "container_crashed", lambda d: d["container_id"] == snap.id, timeout=40
        )
        tail = crash["crash_details"]["logs"].splitlines()
        assert set(flow.masked_lines()) <= set(tail), tail
        await rec.wait_for(
            "activity_log",
            lambda d: d["activity_type"] == "container_crash" and d["container_id"] == snap.id,
        )
        core = svc.manager.recent_crashes(snap.id)
        assert [c.logs for c in core] == [tail]
    assert flow.leaks(repr(dict(rec.events))) == []
