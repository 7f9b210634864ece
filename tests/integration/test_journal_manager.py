"""The manager's journal with the real engine: health, history, activity and crashes that
outlive a restart, one manager per database, get_history's hostile input."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from server.core.config import Settings
from server.core.errors import ConfigError, InvalidRequest
from server.core.events import ContainerCrashed
from server.core.manager import ContainerManager
from server.wire.journal_encoding import encode_event

pytestmark = pytest.mark.docker

CID = "f" * 64


async def until(cond: Any, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.01)


async def test_journal_survives_restart_and_refuses_a_second_manager(settings: Settings) -> None:
    first = ContainerManager(settings, journal_encoder=encode_event)
    async with first:
        assert first.health()["journal"] == "active"
        start = first.journal.last_seq
        first.bus.publish(
            ContainerCrashed(
                container_id=CID,
                name="gone",
                exit_code=3,
                error="Exited with code 3",
                logs=["a", "b"],
            )
        )
        first.registry.record_activity(
            "container_crash", CID, "gone crashed", {"name": "gone", "exit_code": 3}
        )
        await until(lambda: first.journal.last_seq >= start + 2)

        second = ContainerManager(settings, journal_encoder=encode_event)
        with pytest.raises(ConfigError, match=r"in use by another flowmgr manager \(pid \d+\)"):
            await second.start()

        page = await first.get_history(since_seq=start, container_id=CID)
        assert [r.event for r in page.events] == ["container_crashed", "activity_log"]
        assert page.events[0].data["crash_details"] == {
            "error": "Exited with code 3",
            "logs": "a\nb",
        }
        assert page.last_seq == first.journal.last_seq
        for bad in (
            {"limit": 10**9},
            {"limit": 0},
            {"limit": True},
            {"since_seq": -1},
            {"since_seq": "1"},
            {"since_seq": 1.5},
            {"types": "activity_log"},
            {"types": [1]},
            {"container_id": ""},
        ):
            with pytest.raises(InvalidRequest):
                await first.get_history(**bad)

    again = ContainerManager(settings, journal_encoder=encode_event)
    async with again:
        crashes = again.recent_crashes(CID)
        assert [(c.name, c.exit_code, c.logs) for c in crashes] == [("gone", 3, ["a", "b"])]
        assert [a.message for a in again.recent_activity(CID)] == ["gone crashed"]
        assert again.journal.last_seq >= start + 2


async def test_journal_off_and_no_encoder(settings: Settings) -> None:
    plain = ContainerManager(settings)  # no front end gave an encoder: no journal, healthy
    async with plain:
        assert plain.health()["journal"] == "disabled"
        with pytest.raises(InvalidRequest):
            await plain.get_history()
