"""The isolation a Docker 20.10 service spec cannot ask for, held by the node's agent when a
flow's task container runs (docs/CLUSTER.md "One flow = one Swarm service"):

- **no swap beyond the memory limit**: Swarm sets `Memory` but leaves `MemorySwap` to the
  engine, which then allows as much swap again (`MemorySwap = 2 x Memory`); the agent sets it
  to `Memory` with `docker update` (what `memswap_limit = mem_limit` does on one host);
- **no new privileges**: the spec has no field for it, the node's daemon must run with
  `--no-new-privileges`; the agent reads the flow's first process (`NoNewPrivs` in
  `/proc/<pid>/status`; the agent shares the host's pid namespace) and ends a container that
  could gain privileges through a set-uid binary.

A container the guard cannot hold to these is stopped at once and the hub is told why."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from server.cluster.agent_docker import AgentAdapter
from server.core.errors import FlowMgrError

__all__ = ["Verdict", "guard", "no_new_privs"]

logger = logging.getLogger(__name__)

GUARD_STOP_TIMEOUT = 0
"""Seconds a refused container gets between SIGTERM and SIGKILL: none, it may not run."""


@dataclass(frozen=True, slots=True)
class Verdict:
    swap_limited: bool = False
    """Its MemorySwap was lowered to its memory limit."""
    refused: str | None = None
    """Why it was stopped (None: it may run)."""


def no_new_privs(pid: int, container_id: str) -> bool | None:
    """`NoNewPrivs` of the process `pid` if it is (still) a process of that container (its
    cgroup names the id, so a reused pid is never judged); None when that cannot be read."""
    try:
        with open(f"/proc/{pid}/cgroup", encoding="ascii", errors="replace") as f:
            if container_id not in f.read():
                return None
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("NoNewPrivs:"):
                    return line.split(":", 1)[1].strip() == "1"
    except OSError:
        return None
    return None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


async def guard(adapter: AgentAdapter, container_id: str) -> Verdict:
    """Check (and where it can, fix) one running task container; stop it when it may not run.
    Engine errors while reading leave it be (the next start checks again) and are logged."""
    try:
        attrs = await adapter.inspect_raw(container_id)
    except FlowMgrError as err:
        logger.warning("agent guard: cannot inspect %s: %s", container_id[:12], err)
        return Verdict()
    state = attrs.get("State") or {}
    if not state.get("Running"):
        return Verdict()
    host = attrs.get("HostConfig") or {}
    memory, swap = _int(host.get("Memory")), _int(host.get("MemorySwap"))
    limited = False
    refused: str | None = None
    if memory > 0 and swap != memory:
        try:
            await adapter.limit_swap(container_id, memory)
            limited = True
        except FlowMgrError as err:
            refused = f"its swap could not be limited to its memory ({err.message})"
    pid = _int(state.get("Pid"))
    if refused is None and pid > 0:
        nnp = await asyncio.to_thread(no_new_privs, pid, container_id)
        if nnp is False:
            refused = (
                "no_new_privileges is off: the node's daemon runs without --no-new-privileges "
                "(README, Cluster mode, step 1)"
            )
    if refused is not None:
        logger.error("agent guard: stopping %s: %s", container_id[:12], refused)
        try:
            await adapter.stop(container_id, GUARD_STOP_TIMEOUT)
        except FlowMgrError as err:
            logger.error("agent guard: could not stop %s: %s", container_id[:12], err)
    return Verdict(swap_limited=limited, refused=refused)
