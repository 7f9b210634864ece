"""VolumeSweeper: what the hub asks the agents to forget, and when it must not ask."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from server.cluster.hub_volumes import VolumeSweeper


class Agents:
    """The agents' side of `forget`: records each request, answers with what it removed."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, list[str]]] = []

    async def request(self, node_id: str, op: str, payload: dict[str, Any], timeout: float) -> Any:
        assert op == "forget"
        self.asked.append((node_id, list(payload["keep"])))
        return SimpleNamespace(result={"removed": []})


async def test_no_sweep_before_the_hub_has_listed_the_flows() -> None:
    """A hub just restarted lists no flow until its first poll of the managers succeeds (it
    may not for a while: no quorum). An agent linking meanwhile must not be told to forget
    every volume: a task starting on that node would lose its volume between Swarm's volume
    create and its container create, and the engine would make an unlabelled one the agent
    rightly refuses to listen in."""
    agents = Agents()
    flows: list[str] = []
    listed = False
    sweeper = VolumeSweeper(
        keep=lambda: flows,
        linked=lambda: ["n1", "n2"],
        request=agents.request,
        ready=lambda: listed,
    )
    await sweeper.sweep(["n1"])
    await sweeper.sweep()
    assert agents.asked == []
    listed, flows[:] = True, ["f1"]
    await sweeper.sweep(["n1"])
    assert agents.asked == [("n1", ["f1"])]
