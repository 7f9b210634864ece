"""SwarmEngine's one translation boundary (server/core/swarm/engine.py), without an engine:
each engine answer becomes its error type, a lost quorum says so, a hang is bounded."""

from __future__ import annotations

import time
from typing import Any

import docker.errors
import pytest
import requests

from server.core.errors import (
    ContainerNotFound,
    DockerApiError,
    DockerUnavailable,
    ImageNotFound,
)
from server.core.swarm.engine import NO_QUORUM, SwarmEngine, translated

NO_LEADER = (
    "rpc error: code = Unknown desc = The swarm does not have a leader. It's possible that too "
    "few managers are online. Make sure more than half of the managers are online."
)


def _api_error(
    status: int, explanation: str, cls: type[docker.errors.APIError] = docker.errors.APIError
) -> Any:
    response = requests.Response()
    response.status_code = status
    return cls("engine said no", response=response, explanation=explanation)


def _raise(err: BaseException) -> None:
    with translated():
        raise err


def test_no_leader_is_no_quorum_and_says_mutations_wait() -> None:
    with pytest.raises(DockerApiError) as err:
        _raise(_api_error(503, NO_LEADER))
    assert err.value.details["reason"] == NO_QUORUM
    assert "refused until enough managers are back" in err.value.message
    assert type(err.value) is DockerApiError


@pytest.mark.parametrize(
    "text", ["raft: no elected cluster leader", "rpc error: lost quorum", "no leader"]
)
def test_other_spellings_of_a_lost_quorum(text: str) -> None:
    with pytest.raises(DockerApiError) as err:
        _raise(_api_error(500, text))
    assert err.value.details["reason"] == NO_QUORUM


def test_not_found_image_not_found_and_not_a_manager() -> None:
    with pytest.raises(ContainerNotFound):
        _raise(_api_error(404, "service xyz not found", docker.errors.NotFound))
    with pytest.raises(ImageNotFound):
        _raise(_api_error(404, "No such image: nope:latest", docker.errors.ImageNotFound))
    with pytest.raises(ImageNotFound):
        _raise(_api_error(400, "No such image: nope:latest"))
    with pytest.raises(DockerApiError) as err:
        _raise(
            _api_error(
                503,
                'This node is not a swarm manager. Use "docker swarm init" or '
                '"docker swarm join" to connect this node to swarm and try again.',
            )
        )
    assert err.value.details["reason"] == "not_a_manager"


def test_refused_connection_is_docker_unavailable() -> None:
    with pytest.raises(DockerUnavailable):
        _raise(requests.exceptions.ConnectionError("[Errno 111] Connection refused"))
    with pytest.raises(DockerUnavailable):
        _raise(ConnectionRefusedError(111, "Connection refused"))


def test_other_engine_errors_keep_status_and_explanation() -> None:
    with pytest.raises(DockerApiError) as err:
        _raise(_api_error(400, "invalid mount config"))
    assert err.value.details == {"status": 400, "explanation": "invalid mount config"}


async def test_a_hung_mutation_with_managers_that_hang_too_is_no_quorum() -> None:
    """Without a leader the engine may hold a call: the mutation gives up after its timeout,
    the node-list probe after its own, and the answer is the typed no-quorum error."""
    engine = _HangingEngine(nodes_answer=False, mutation_timeout=0.3, probe_timeout=0.2)
    started = time.monotonic()
    with pytest.raises(DockerApiError) as err:
        await engine.remove("a" * 25)
    elapsed = time.monotonic() - started
    assert err.value.details["reason"] == NO_QUORUM
    assert elapsed < 2.0
    await engine.close()


async def test_a_hung_mutation_on_a_healthy_swarm_stays_a_timeout() -> None:
    engine = _HangingEngine(nodes_answer=True, mutation_timeout=0.3, probe_timeout=0.5)
    with pytest.raises(DockerApiError) as err:
        await engine.remove("a" * 25)
    assert err.value.details["reason"] == "timeout"
    await engine.close()


async def test_a_refused_engine_is_unavailable_not_a_hang() -> None:
    engine = SwarmEngine("unix:///nonexistent/flowmgr-test.sock", call_timeout=5)
    started = time.monotonic()
    with pytest.raises(DockerUnavailable):
        await engine.nodes()
    assert time.monotonic() - started < 5
    await engine.close()


class _Hanging:
    """An APIClient whose mutations never answer (a manager without a leader)."""

    def __init__(self, nodes_answer: bool) -> None:
        self.nodes_answer = nodes_answer

    def remove_service(self, service_id: str) -> bool:
        time.sleep(1.0)
        return True

    def nodes(self) -> list[dict[str, Any]]:
        if not self.nodes_answer:
            time.sleep(1.0)
        return []


class _HangingEngine(SwarmEngine):
    def __init__(self, *, nodes_answer: bool, **timeouts: float) -> None:
        super().__init__("unix:///nonexistent/flowmgr-test.sock", **timeouts)
        self.fake = _Hanging(nodes_answer)

    def _client(self) -> Any:
        return self.fake
