"""Wire schemas (server.wire): request validation at the edge and the time formats
docs/PROTOCOL.md fixes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from server.core.errors import InvalidRequest
from server.core.events import (
    ActivityLogged,
    ContainerCrashed,
    ContainerStateChanged,
    DockerConnectionLost,
    DockerConnectionRestored,
    FlowMessageReceived,
    HealthChanged,
    LogLineReceived,
    StatusReported,
)
from server.core.models import ContainerSnapshot, ContainerStatus, ResourceSample
from server.wire.answers import (
    ContainerCreatedOut,
    ContainerItemOut,
    ContainerListOut,
    ContainerLogsOut,
    ContainerStateOut,
    ContainerStatusOut,
    ContainerUpdatedOut,
    LogSubscriptionOut,
    MessageSentOut,
)
from server.wire.pushes import (
    ActivityLogOut,
    ContainerCrashedOut,
    ContainerLogOut,
    EngineStatusOut,
    HealthWarningOut,
    MessageReceivedOut,
    StatusChangedOut,
    StatusUpdateOut,
)
from server.wire.requests import (
    ContainerRef,
    CreateContainerRequest,
    GetLogsRequest,
    ListContainersRequest,
    SendMessageRequest,
    parse_request,
    request_id_of,
)
from server.wire.times import uptime_text

AT = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
CID = "a" * 64


def _snap(**kw: Any) -> ContainerSnapshot:
    base: dict[str, Any] = {
        "id": CID,
        "name": "web",
        "image": "flow:latest",
        "state": "running",
        "health": "none",
        "created": AT,
        "started_at": AT,
        "socket_path": "/tmp/s/web/flow.sock",
        "ports": {"8080/tcp": 18080},
    }
    base.update(kw)
    return ContainerSnapshot(**base)


def _sample() -> ResourceSample:
    return ResourceSample(
        cpu_percent=1.5,
        memory_usage=1024,
        memory_limit=4096,
        memory_percent=25.0,
        network_rx_bytes=1,
        network_tx_bytes=2,
        disk_read_bytes=3,
        disk_write_bytes=4,
        timestamp=AT,
    )


def _checked(model: type[BaseModel], payload: dict[str, Any]) -> dict[str, Any]:
    """The builder's dict must be exactly what the model declares (same keys, valid types)."""
    strict = model.model_validate(payload, strict=True)
    assert strict.model_dump(mode="json") == payload
    return payload


def test_small_answers_match_their_models() -> None:
    _checked(ContainerCreatedOut, ContainerCreatedOut.payload(_snap()))
    _checked(ContainerStateOut, ContainerStateOut.payload(CID, "stopped"))
    _checked(ContainerUpdatedOut, ContainerUpdatedOut.payload(CID, "/srv/code"))
    _checked(MessageSentOut, MessageSentOut.payload(CID, {"a": [1, {"b": None}]}))
    _checked(ContainerLogsOut, ContainerLogsOut.payload(CID, ["x", "y"]))
    assert _checked(ContainerLogsOut, ContainerLogsOut.payload(CID, ["y"], True))["truncated"]
    _checked(LogSubscriptionOut, LogSubscriptionOut.payload(CID, "subscribed"))
    _checked(
        ContainerLogOut,
        ContainerLogOut.payload(LogLineReceived(at=AT, container_id=CID, line="hello")),
    )
    _checked(
        ActivityLogOut,
        ActivityLogOut.payload(
            ActivityLogged(
                at=AT,
                activity_type="container_started",
                container_id=CID,
                message="started web",
                details={"name": "web"},
            )
        ),
    )


def _invalid(schema: type[Any], data: Any) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        parse_request(schema, data)
    assert info.value.error_type == "validation_error"
    return info.value


def test_missing_field_is_named() -> None:
    err = _invalid(ContainerRef, {})
    assert err.field == "container_id"
    assert "container_id" in err.message


def test_wrong_type_is_named_and_not_coerced() -> None:
    assert _invalid(ContainerRef, {"container_id": 5}).field == "container_id"
    assert _invalid(GetLogsRequest, {"container_id": "x", "tail": "10"}).field == "tail"
    assert _invalid(GetLogsRequest, {"container_id": "x", "tail": True}).field == "tail"
    assert _invalid(SendMessageRequest, {"container_id": "x", "message": [1]}).field == "message"
    assert _invalid(ContainerRef, {"container_id": "x", "request_id": 7}).field == "request_id"


@pytest.mark.parametrize("payload", [[], "x", 3, 2.5, True, ["container_id"]])
def test_non_object_payload_is_refused(payload: Any) -> None:
    err = _invalid(ContainerRef, payload)
    assert "JSON object" in err.message


def test_absent_payload_means_empty_object() -> None:
    assert parse_request(ListContainersRequest, None) == ListContainersRequest()
    assert _invalid(ContainerRef, None).field == "container_id"


def test_unknown_keys_are_ignored_and_request_id_kept() -> None:
    req = parse_request(ContainerRef, {"container_id": "web", "extra": 1, "request_id": "r1"})
    assert req.container_id == "web" and req.request_id == "r1"
    assert request_id_of({"request_id": "r1"}) == "r1"
    assert request_id_of({"request_id": 1}) is None
    assert request_id_of([1]) is None


def test_create_request_builds_a_spec() -> None:
    req = parse_request(
        CreateContainerRequest,
        {
            "name": "web-1",
            "environment": {"A": "1"},
            "volumes": {"/srv/data": "/data"},
            "ports": {"8080": 18080, "53/udp": 5353},
        },
    )
    spec = req.to_spec()
    assert spec.image is None and spec.name == "web-1"
    assert spec.environment == {"A": "1"} and spec.volumes == {"/srv/data": "/data"}
    assert spec.ports == {"8080": 18080, "53/udp": 5353}


# JSON types only: a name's or image's text is judged by the core's one validator (issue 12;
# "" and "bad name" were refused here too, by a pattern of its own: tests/integration/
# test_one_validator.py now sees the same verdict from every front end).
@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "name"),
        ({"name": 3}, "name"),
        ({"name": "ok", "image": 3}, "image"),
        ({"name": "ok", "environment": {"PORT": 8080}}, "environment.PORT"),
        ({"name": "ok", "environment": ["A=1"]}, "environment"),
        ({"name": "ok", "volumes": {"/a": 1}}, "volumes./a"),
        ({"name": "ok", "ports": {"8080": "18080"}}, "ports.8080"),
    ],
)
def test_create_request_errors_name_the_field(payload: dict[str, Any], field: str) -> None:
    assert _invalid(CreateContainerRequest, payload).field == field


def test_uptime_text() -> None:
    assert uptime_text(None) is None
    assert uptime_text(timedelta(seconds=5)) == "0:00:05"
    assert uptime_text(timedelta(hours=1, minutes=2, seconds=3)) == "1:02:03"
    assert uptime_text(timedelta(days=2, seconds=61)) == "48:01:01"


def test_broadcast_time_formats() -> None:
    changed = _checked(
        StatusChangedOut,
        StatusChangedOut.payload(
            ContainerStateChanged(
                at=AT,
                container_id=CID,
                old_state="running",
                new_state="stopped",
                snapshot=_snap(state="stopped"),
            )
        ),
    )
    assert changed == {
        "container_id": CID,
        "old_state": "running",
        "new_state": "stopped",
        "timestamp": AT.timestamp(),
    }
    assert isinstance(changed["timestamp"], float)
    warn = _checked(
        HealthWarningOut,
        HealthWarningOut.payload(
            HealthChanged(at=AT, container_id=CID, old_health="healthy", new_health="unhealthy")
        ),
    )
    assert warn == {"container_id": CID, "health": "unhealthy", "timestamp": AT.timestamp()}
    got = _checked(
        MessageReceivedOut,
        MessageReceivedOut.payload(FlowMessageReceived(at=AT, container_id=CID, message={"n": 1})),
    )
    assert got["timestamp"] == "2026-01-02T03:04:05.678000+00:00"


def test_engine_status_payloads() -> None:
    lost = DockerConnectionLost(at=AT, reason="events stream ended")
    assert _checked(EngineStatusOut, EngineStatusOut.payload(lost)) == {
        "available": False,
        "reason": "events stream ended",
        "timestamp": AT.isoformat(),
    }
    back = DockerConnectionRestored(at=AT)
    assert _checked(EngineStatusOut, EngineStatusOut.payload(back))["available"] is True
    # a new client gets the last change while it holds; otherwise what holds now
    assert EngineStatusOut.current(False, lost) == EngineStatusOut.payload(lost)
    assert EngineStatusOut.current(True, back) == EngineStatusOut.payload(back)
    up = _checked(EngineStatusOut, EngineStatusOut.current(True, None))
    assert up["available"] is True and up["reason"] is None and up["timestamp"] != AT.isoformat()
    stale = _checked(EngineStatusOut, EngineStatusOut.current(True, lost))
    assert stale["available"] is True and stale["reason"] is None
    never = _checked(EngineStatusOut, EngineStatusOut.current(False, None))
    assert never["available"] is False and never["reason"]


def test_crash_payload() -> None:
    out = _checked(
        ContainerCrashedOut,
        ContainerCrashedOut.payload(
            ContainerCrashed(
                at=AT,
                container_id=CID,
                name="web",
                exit_code=137,
                error="Out of memory",
                logs=["a", "b"],
            )
        ),
    )
    assert out == {
        "container_id": CID,
        "exit_code": 137,
        "crash_details": {"error": "Out of memory", "logs": "a\nb"},
        "timestamp": AT.timestamp(),
    }


def test_status_payloads() -> None:
    status = ContainerStatus(
        container_id=CID,
        name="web",
        state="running",
        health="healthy",
        uptime=timedelta(seconds=3725),
        socket_connected=True,
        last_communication=AT,
        resource_usage=_sample(),
    )
    out = _checked(ContainerStatusOut, ContainerStatusOut.payload(status))
    assert set(out) == {
        "container_id",
        "state",
        "health",
        "uptime",
        "socket_connected",
        "last_communication",
        "resource_usage",
    }
    assert out["uptime"] == "1:02:05" and out["last_communication"] == AT.isoformat()
    usage = out["resource_usage"]
    assert set(usage) == {
        "cpu_percent",
        "memory_usage",
        "memory_limit",
        "memory_percent",
        "network_rx_bytes",
        "network_tx_bytes",
        "disk_read_bytes",
        "disk_write_bytes",
        "timestamp",
    }
    assert isinstance(usage["memory_usage"], int) and isinstance(usage["cpu_percent"], float)
    assert usage["timestamp"] == AT.isoformat()
    update = _checked(
        StatusUpdateOut, StatusUpdateOut.payload(StatusReported(at=AT, status=status))
    )
    assert update["container_id"] == CID
    assert set(update["status"]) == {
        "state",
        "health",
        "socket_connected",
        "uptime",
        "resource_usage",
    }
    idle = _checked(
        ContainerStatusOut,
        ContainerStatusOut.payload(
            ContainerStatus(CID, "web", "exited", "none", None, False, None, None)
        ),
    )
    assert idle["uptime"] is None and idle["resource_usage"] is None


def test_list_items() -> None:
    out = _checked(ContainerListOut, ContainerListOut.payload([_snap(), _snap(name="b")]))
    assert out["count"] == 2
    assert out["containers"][0] == {
        "id": CID,
        "name": "web",
        "status": "running",
        "image": "flow:latest",
        "created": AT.isoformat(),
        "socket_path": "/tmp/s/web/flow.sock",
        "ports": {"8080/tcp": 18080},
    }
    assert set(ContainerItemOut.model_fields) == {
        "id",
        "name",
        "status",
        "image",
        "created",
        "socket_path",
        "ports",
        "node",  # ext, a cluster hub's only (left out on one host, as asserted above)
        "node_id",
        "task_id",
    }


def test_cluster_fields_only_on_a_cluster_flow() -> None:
    snap = _snap()
    on_hub = ContainerSnapshot(
        **{
            **{f: getattr(snap, f) for f in snap.__slots__},
            "node": "n2",
            "node_id": "abc",
            "task_id": "t1",
        }
    )
    out = _checked(ContainerListOut, ContainerListOut.payload([on_hub], nodes=[]))
    assert out["containers"][0]["node"] == "n2"
    assert out["containers"][0]["task_id"] == "t1"
    assert out["nodes"] == []
    one_host = ContainerListOut.payload([snap])
    assert "nodes" not in one_host and "node" not in one_host["containers"][0]
