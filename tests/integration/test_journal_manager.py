"""The manager's journal with the real engine: health, history, activity and crashes that
outlive a restart, one manager per database, get_history's hostile input."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from server.core.config import Settings
from server.core.errors import ConfigError, FlowMgrError, InvalidRequest
from server.core.events import ContainerCrashed
from server.core.journal import journal as journal_mod
from server.core.manager import ContainerManager
from server.core.models import CreateSpec
from server.wire.journal_encoding import encode_event
from tests.integration.manager_helpers import BUSYBOX

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


async def test_a_journal_read_only_at_start_is_read_back_once_writable(
    settings: Settings, unique_name: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unavailable at start (a read-only filesystem), the journal held queued messages and
    activity the manager could not read; once writable they are back, before what came since."""
    if os.geteuid() != 0:
        pytest.skip("a read-only bind mount needs root (root ignores a file's mode bits)")
    monkeypatch.setattr(journal_mod, "RETENTION_SECONDS", 0.5)  # its retry of the opening
    jdir = tmp_path / "journal"
    jdir.mkdir()
    s = settings.model_copy(
        update={"journal": settings.journal.model_copy(update={"path": str(jdir / "j.sqlite3")})}
    )
    name = unique_name("ro")
    first = ContainerManager(s, journal_encoder=encode_event)
    async with first:
        cid = (await first.create_container(CreateSpec(name=name, image=BUSYBOX))).id
        ids = [await first.send_message(cid, {"n": n}, queue=True) for n in range(3)]
        first.registry.record_activity("container_crash", CID, "before the outage", {})
        await first.journal.flushed()
    subprocess.run(["mount", "--bind", str(jdir), str(jdir)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(jdir)], check=True)
        second = ContainerManager(s, journal_encoder=encode_event)
        async with second:
            assert second.health()["journal"].startswith("unavailable: ")
            assert second.outbox.pending(cid) == []
            with pytest.raises(FlowMgrError, match="journal"):
                await second.send_message(cid, {"n": 3}, queue=True)
            second.registry.record_activity("container_crash", CID, "during the outage", {})
            subprocess.run(["mount", "-o", "remount,bind,rw", str(jdir)], check=True)
            await until(lambda: second.outbox.pending(cid) == ids, timeout=20)
            later = await second.send_message(cid, {"n": 4}, queue=True)
            assert second.outbox.pending(cid) == [*ids, later]
            lines = [a.message for a in second.recent_activity(CID)]
            assert lines.index("before the outage") < lines.index("during the outage")
            assert lines.count("before the outage") == 1
            assert second.health()["journal"] == "active"
            await second.delete_container(cid)
    finally:
        subprocess.run(["umount", "-l", str(jdir)], check=False)
