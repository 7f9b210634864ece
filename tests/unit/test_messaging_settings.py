"""The RabbitMQ interface's configuration, its action table, and the label rules."""

from __future__ import annotations

import pytest

from server.core.config import load_settings
from server.core.errors import ConfigError, InvalidRequest
from server.core.validation.shapes import check_labels
from server.messaging.operations import OPERATIONS
from server.wire.amqp import ACTIONS, AnswerOut, answer_payload


def test_env_vars_set_the_interface() -> None:
    env = {
        "MESSAGING_BACKEND": "rabbitmq",
        "RABBITMQ_URL": "amqp://u:p@broker:5672/v",
        "FLOW_MANAGER_COMMAND_QUEUE": "c",
        "FLOW_MANAGER_RESPONSE_QUEUE": "r",
        "FLOW_MANAGER_EVENT_EXCHANGE": "e",
    }
    m = load_settings(env=env).messaging
    assert (m.backend, m.rabbitmq_url) == ("rabbitmq", "amqp://u:p@broker:5672/v")
    assert (m.command_queue, m.response_queue, m.event_exchange) == ("c", "r", "e")
    assert load_settings(env={}).messaging.backend == "socketio"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MESSAGING_BACKEND", "kafka"),
        ("RABBITMQ_URL", "http://broker"),
        ("FLOW_MANAGER_COMMAND_QUEUE", "a b"),
        ("FLOW_MANAGER_EVENT_EXCHANGE", "x" * 201),
    ],
)
def test_a_bad_value_stops_start_up_naming_the_key(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match="messaging"):
        load_settings(env={name: value})


def test_every_action_has_its_operation() -> None:
    assert set(OPERATIONS) == set(ACTIONS)


def test_the_answer_builder_matches_its_model() -> None:
    answer = answer_payload("list_containers", {"containers": [], "count": 0}, "default")
    assert AnswerOut.decode(answer).model_dump() == answer


@pytest.mark.parametrize(
    "labels",
    [
        {"flowmgr.instance": "x"},
        {"FlowMgr.Managed": "x"},
        {"flowmgr.": "x"},
        {".hidden": "x"},
        {"a" * 129: "x"},
        {"ok": "nul\0"},
        {"ok": "x" * 1025},
        {f"k{i}": "v" for i in range(65)},
    ],
)
def test_labels_never_reach_the_managers_own(labels: dict[str, str]) -> None:
    with pytest.raises(InvalidRequest) as err:
        check_labels(labels, {})
    assert err.value.details["field"] == "labels"


def test_flow_ids_are_known_keys_only() -> None:
    check_labels({"team": "a", "com.example/x": "b"}, {"flow_id": "f", "graph_hash": "h"})
    with pytest.raises(InvalidRequest):
        check_labels({}, {"managed": "false"})
