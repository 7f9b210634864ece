"""The agent's isolation guard (issue 16, docs/CLUSTER.md) against the real engine: what a
Swarm service spec cannot ask for (no swap beyond the memory limit, no new privileges) is held
when a task container runs, and a container that cannot be held is stopped.

The host's daemon has no `--no-new-privileges` (the cluster test nodes have it), so a plain
container here is exactly the hostile case: a flow that could gain privileges through a
set-uid binary."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import docker
import pytest

from server.cluster.agent_docker import AgentAdapter
from server.cluster.agent_guard import guard, no_new_privs
from tests.conftest import IMAGES, RUN_ID, TEST_LABEL

MiB = 1024 * 1024


@pytest.fixture
def run(docker_engine: None, unique_name: Callable[[str], str]) -> Iterator[Callable[..., Any]]:
    """Start a labelled busybox `sleep` with the given HostConfig options; removed after."""
    client = docker.from_env()
    made: list[Any] = []

    def start(**options: Any) -> Any:
        c = client.containers.run(
            IMAGES["busybox"],
            ["sleep", "600"],
            name=unique_name("guard"),
            labels={TEST_LABEL: RUN_ID},
            detach=True,
            **options,
        )
        made.append(c)
        c.reload()
        return c

    yield start
    for c in made:
        c.remove(force=True)
    client.close()


@pytest.fixture
async def adapter() -> Any:
    a = AgentAdapter(30)
    yield a
    await a.close()


async def test_a_container_that_may_gain_privileges_is_stopped(run: Any, adapter: Any) -> None:
    c = run(mem_limit="64m")
    assert c.attrs["HostConfig"]["MemorySwap"] == 128 * MiB  # the engine's default: swap again
    assert no_new_privs(c.attrs["State"]["Pid"], c.id) is False
    verdict = await guard(adapter, c.id)
    assert verdict.refused is not None and "no_new_privileges" in verdict.refused
    c.reload()
    assert c.status == "exited", c.status


async def test_swap_is_limited_to_the_memory_limit_and_a_held_container_runs_on(
    run: Any, adapter: Any
) -> None:
    c = run(mem_limit="64m", security_opt=["no-new-privileges"])
    assert no_new_privs(c.attrs["State"]["Pid"], c.id) is True
    verdict = await guard(adapter, c.id)
    assert verdict.swap_limited and verdict.refused is None, verdict
    c.reload()
    assert c.status == "running"
    assert c.attrs["HostConfig"]["MemorySwap"] == c.attrs["HostConfig"]["Memory"] == 64 * MiB
    again = await guard(adapter, c.id)  # already held: nothing to change
    assert not again.swap_limited and again.refused is None


async def test_a_pid_of_another_container_is_never_judged(run: Any, adapter: Any) -> None:
    a = run(security_opt=["no-new-privileges"])
    b = run()
    # b's pid read with a's id (a reused pid): no verdict, not "off"
    assert no_new_privs(b.attrs["State"]["Pid"], a.id) is None
    assert no_new_privs(os.getpid(), a.id) is None  # not a container's process at all
    assert no_new_privs(2**22 + 7, a.id) is None  # no such process


async def test_a_stopped_or_missing_container_is_left_alone(run: Any, adapter: Any) -> None:
    c = run(mem_limit="64m")
    c.stop(timeout=0)
    assert (await guard(adapter, c.id)).refused is None
    assert (await guard(adapter, "0" * 64)).refused is None  # gone: logged, nothing done
