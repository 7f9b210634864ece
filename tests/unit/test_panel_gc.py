"""The panel freezes what the first adoption built, once it is done (not before)."""

from __future__ import annotations

import asyncio
import gc
from types import SimpleNamespace

import pytest

import flowmgr_tui.__main__ as panel_main


async def test_adopted_objects_are_frozen_after_the_first_adoption(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(panel_main, "ADOPTED_SETTLE", 0.0)
    synced = asyncio.Event()
    manager = SimpleNamespace(monitor=SimpleNamespace(synced=synced))
    gc.unfreeze()
    task = asyncio.ensure_future(panel_main._freeze_after_adoption(manager))  # type: ignore[arg-type]
    try:
        await asyncio.sleep(0.05)
        assert gc.get_freeze_count() == 0, "frozen before the adoption was done"
        adopted = [{"record": i} for i in range(1000)]  # what an adoption leaves behind
        synced.set()
        await asyncio.wait_for(task, 5)
        assert gc.get_freeze_count() >= len(adopted)
    finally:
        task.cancel()
        gc.unfreeze()
