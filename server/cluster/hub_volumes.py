"""The socket volumes of flows that are gone, removed on every node.

A flow's socket lives on its volume `flowmgr-sock-<name>` on each node that ran one of its
tasks (docs/CLUSTER.md "The flow channel follows the flow"); Swarm removes a service's tasks,
never the volumes they made. The hub asks each linked agent to `forget` the volumes of flows
it does not list: a few times after a delete, when an agent links (it may have missed deletes
while cut off), and every `SWEEP_EVERY` seconds. A volume holds nothing but the socket, and one
in use is never removed (the engine refuses), so a sweep racing a create costs nothing: the
next task of that flow makes its volume again."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from server.core.errors import FlowMgrError

__all__ = ["SWEEP_EVERY", "VolumeSweeper"]

logger = logging.getLogger(__name__)

SWEEP_EVERY = 600.0
"""Seconds between two sweeps of every linked node."""
AFTER_DELETE = (1.0, 4.0, 15.0)
"""Pauses before the sweeps that follow a delete (the task containers go first)."""
SWEEP_TIMEOUT = 30.0
"""Seconds one node's agent has to answer a sweep (it lists and removes volumes)."""

Request = Callable[[str, str, dict[str, Any], float], Awaitable[Any]]


class VolumeSweeper:
    """`await sweep()` now, `run_forever()` on a schedule; one sweep at a time."""

    def __init__(
        self,
        keep: Callable[[], list[str]],
        linked: Callable[[], list[str]],
        request: Request,
        every: float = SWEEP_EVERY,
        ready: Callable[[], bool] = lambda: True,
    ) -> None:
        self._keep = keep
        self._ready = ready
        """Whether `keep` is whole (the hub has listed the flows since it started): until
        then nothing is swept, or every flow's volume would be forgotten."""
        self._linked = linked
        self._request = request
        self.every = every
        self._lock = asyncio.Lock()
        self.removed: dict[str, list[str]] = {}
        """Node id -> the volumes its agent removed in the last sweep that reached it."""

    async def sweep(self, node_ids: Iterable[str] | None = None) -> None:
        """Ask the linked agents (all, or those of `node_ids`) to remove the socket volumes of
        flows the hub does not list; a node that fails is logged and tried next time."""
        async with self._lock:
            if not self._ready():
                logger.debug("socket volume sweep skipped: the flows are not listed yet")
                return
            wanted = None if node_ids is None else set(node_ids)
            keep = self._keep()
            for node_id in self._linked():
                if wanted is not None and node_id not in wanted:
                    continue
                try:
                    reply = await self._request(node_id, "forget", {"keep": keep}, SWEEP_TIMEOUT)
                except FlowMgrError as err:
                    logger.warning("socket volume sweep of node %s failed: %s", node_id, err)
                    continue
                result = getattr(reply, "result", None) or {}
                removed = [str(v) for v in result.get("removed") or []]
                self.removed[node_id] = removed
                if removed:
                    logger.info("node %s: removed socket volumes %s", node_id, ", ".join(removed))

    async def after_delete(self) -> None:
        """Sweep a few times after a delete: Swarm removes the task containers (which hold
        the volume in use) a moment after the service."""
        for pause in AFTER_DELETE:
            await asyncio.sleep(pause)
            await self.sweep()

    async def run_forever(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            await self.sweep()
