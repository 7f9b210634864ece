"""The one FlowMgrError -> `error` payload translation."""

from __future__ import annotations

import json
import logging
from datetime import datetime

import pytest

from server.api.errors import error_payload
from server.core.errors import ContainerNotFound, DockerApiError, InvalidRequest
from server.core.events import ACTIVITY_TYPES

ERROR_TYPES = {
    "image_not_found",
    "container_not_found",
    "docker_api_error",
    "socket_error",
    "socket_timeout_error",
    "socket_connection_error",
    "validation_error",
    "system_error",
}


def test_typed_error_keeps_its_type_and_echoes_the_request() -> None:
    out = error_payload(
        ContainerNotFound("no container 'x'"),
        "stop_container",
        {"container_id": "x", "request_id": "r1"},
    )
    assert set(out) == {"error", "error_type", "message", "details", "timestamp"}
    assert out["error"] is True and out["error_type"] == "container_not_found"
    assert out["details"] == {"operation": "stop_container", "container_id": "x"}
    datetime.fromisoformat(out["timestamp"])


def test_secrets_are_masked_in_details_and_message() -> None:
    request = {
        "name": "db",
        "environment": {"DB_PASSWORD": "hunter2", "MODE": "x"},
        "image": "http://bob:s3cret@registry/img",
    }
    out = error_payload(DockerApiError("failed with API_KEY=abc123"), "create_container", request)
    text = repr(out)
    assert "hunter2" not in text and "s3cret" not in text and "abc123" not in text
    assert out["details"]["environment"] == {"DB_PASSWORD": "***", "MODE": "x"}
    assert out["details"]["operation"] == "create_container"


def test_validation_field_survives() -> None:
    out = error_payload(
        InvalidRequest("container_id: Field required", field="container_id"), "start_container", {}
    )
    assert out["details"]["field"] == "container_id"
    assert out["details"]["operation"] == "start_container"


def test_operation_cannot_be_overridden_by_the_request() -> None:
    out = error_payload(ContainerNotFound("x"), "stop_container", {"operation": "evil"})
    assert out["details"]["operation"] == "stop_container"


def test_unexpected_exception_is_system_error_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="server.api.errors"):
        out = error_payload(KeyError("boom"), "list_containers", {})
    assert out["error_type"] == "system_error"
    assert "boom" not in out["message"]
    assert any(r.exc_info for r in caplog.records)


def test_large_fields_are_not_echoed_back() -> None:
    out = error_payload(
        ContainerNotFound("x"),
        "send_message",
        {"container_id": "x", "message": {"blob": "z" * 100_000}},
    )
    assert out["details"]["message"].endswith("bytes not echoed>")
    assert out["details"]["container_id"] == "x"


def test_lone_surrogates_are_echoed_escaped() -> None:
    # JSON carries "\ud800"; UTF-8 cannot, and building the payload used to raise (no answer).
    out = error_payload(
        InvalidRequest("host path /x\udfff does not exist", field="volumes"),
        "op\ud800",
        {"environment": {"K\ud800": "v"}, "x": ["\udfff"]},
    )
    json.dumps(out, ensure_ascii=False).encode("utf-8")  # any encoder takes it now
    assert out["error_type"] == "validation_error"
    assert out["message"] == "host path /x\\udfff does not exist"
    assert out["details"]["environment"] == {"K\\ud800": "v"}
    assert out["details"]["x"] == ["\\udfff"]
    assert out["details"]["operation"] == "op\\ud800"


def test_vocabularies_match_protocol() -> None:
    assert len(ERROR_TYPES) == 8 and len(ACTIVITY_TYPES) == 15
