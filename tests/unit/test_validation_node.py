"""A create request's ext `node`: a cluster hub's option, refused (not ignored) on one host."""

from __future__ import annotations

from typing import Any

import pytest

from server.core.config import Settings
from server.core.errors import InvalidRequest
from server.core.models import CreateSpec
from server.core.validation.host import validate_create
from server.wire.requests import CreateContainerRequest, parse_request


def _settings(mode: str) -> Settings:
    return Settings.model_validate({"socket_dir": "/tmp/fm-node-test", "cluster": {"mode": mode}})


def test_one_host_refuses_a_node() -> None:
    with pytest.raises(InvalidRequest) as err:
        validate_create(CreateSpec(name="ab", node="worker-1"), _settings("single"))
    assert err.value.details["field"] == "node"
    assert validate_create(CreateSpec(name="ab"), _settings("single")).node is None


def test_a_hub_takes_a_node_name_for_the_node_list_to_match() -> None:
    spec = validate_create(CreateSpec(name="ab", node="worker-1"), _settings("swarm"))
    assert spec.node == "worker-1"


@pytest.mark.parametrize("bad", ["", "x" * 254, 5, ["worker-1"], {"$ne": None}])
def test_a_hub_refuses_what_cannot_be_a_node(bad: Any) -> None:
    with pytest.raises(InvalidRequest) as err:
        validate_create(CreateSpec(name="ab", node=bad), _settings("swarm"))
    assert err.value.details["field"] == "node"


@pytest.mark.parametrize("bad", [5, ["n1"], {"id": "n1"}, True])
def test_the_wire_takes_only_a_string(bad: Any) -> None:
    with pytest.raises(InvalidRequest) as err:
        parse_request(CreateContainerRequest, {"name": "ab", "node": bad})
    assert "node" in str(err.value.details)
    good = parse_request(CreateContainerRequest, {"name": "ab", "node": "n1"})
    assert good.to_spec().node == "n1"
