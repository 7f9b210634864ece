"""ext `since` and `timestamps` of `get_container_logs`, through a real client and the core.

Hostile first: every value of `since` that is not a positive finite number of seconds within
a year, and a `timestamps` that is not a JSON boolean (null included, as `queue`), is a
validation_error naming the field.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

import pytest

from server.core.config import Settings
from server.core.container_info import parse_time
from server.core.errors import InvalidRequest
from server.core.models import CreateSpec
from tests.integration.api_harness import client, running_service
from tests.integration.leaky_flow import leaky_flow
from tests.integration.manager_helpers import BUSYBOX

pytestmark = pytest.mark.docker

HOSTILE_SINCE: list[Any] = [-1, 0, -0.5, math.nan, math.inf, -math.inf, 1e30, 31_622_401]
HOSTILE_SINCE_WIRE: list[Any] = [*HOSTILE_SINCE, "60", True, [60], {"s": 60}]


async def test_hostile_since_and_timestamps_are_validation_errors(
    settings: Settings, unique_name: Callable[[str], str]
) -> None:
    async with running_service(settings) as svc, client(svc.url) as (sio, rec):
        snap = await svc.manager.create_container(
            CreateSpec(name=unique_name("since"), image=BUSYBOX)
        )
        for since in HOSTILE_SINCE_WIRE:
            err = await sio.call("get_container_logs", {"container_id": snap.id, "since": since})
            assert err.get("error_type") == "validation_error", (since, err)
            assert err["details"]["field"] == "since", (since, err)
            if not isinstance(since, str | bool | list | dict):
                with pytest.raises(InvalidRequest) as raised:
                    await svc.manager.get_logs(snap.id, since=since)
                assert raised.value.details.get("field") == "since"
        for stamps in ("yes", 1, None, [True]):
            err = await sio.call(
                "get_container_logs", {"container_id": snap.id, "timestamps": stamps}
            )
            assert err["error_type"] == "validation_error" and err["details"]["field"] == (
                "timestamps"
            ), err
        assert not rec.disconnected.is_set()  # the connection lives on
        ok = await sio.call("get_container_logs", {"container_id": snap.id, "since": 2.5})
        assert ok["lines"] == [] and ok.get("error") is not True
        await svc.manager.delete_container(snap.id)


async def test_since_leaves_older_lines_out_and_timestamps_stay_masked(
    settings: Settings, unique_name: Callable[[str], str]
) -> None:
    flow = leaky_flow(unique_name("stamps"))
    early = CreateSpec(
        name=unique_name("early"),
        image=BUSYBOX,
        command=["sh", "-c", "echo early; sleep 3; while true; do echo late; sleep 0.3; done"],
    )
    async with running_service(settings) as svc, client(svc.url) as (sio, _rec):
        snaps = [await svc.manager.create_container(s) for s in (flow.spec, early)]
        for snap in snaps:
            await svc.manager.start_container(snap.id)
        leaky, slow = snaps
        answer: dict[str, Any] = {"lines": []}
        async with asyncio.timeout(30):
            while not any(line.endswith(" tick-1") for line in answer["lines"]):
                await asyncio.sleep(0.3)
                answer = await sio.call(
                    "get_container_logs", {"container_id": leaky.id, "timestamps": True}
                )
        for line in answer["lines"]:
            stamp, _, _text = line.partition(" ")
            assert parse_time(stamp) is not None, line
        texts = [line.partition(" ")[2] for line in answer["lines"]]
        assert set(flow.masked_lines()) <= set(texts), texts
        assert flow.leaks("\n".join(answer["lines"])) == []

        every: list[str] = []
        async with asyncio.timeout(30):
            while "late" not in every:
                await asyncio.sleep(0.3)
                every = await svc.manager.get_logs(slow.id)
        await asyncio.sleep(1.5)  # "early" is now more than 4 s old
        assert "early" in await svc.manager.get_logs(slow.id)
        recent = await sio.call("get_container_logs", {"container_id": slow.id, "since": 2})
        assert recent["lines"] and "early" not in recent["lines"], recent
        assert set(recent["lines"]) == {"late"}
        for snap in snaps:
            await svc.manager.delete_container(snap.id)
