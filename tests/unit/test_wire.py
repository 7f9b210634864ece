"""server.wire: every event the server emits decodes with the module that encoded it, and
docs/PROTOCOL.md lists exactly the events the code handles."""

from __future__ import annotations

import ast
import json
import re
import typing
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from server.api.errors import error_payload
from server.core import errors
from server.core.events import (
    ActivityLogged,
    ContainerCrashed,
    ContainerStateChanged,
    DockerConnectionLost,
    DockerConnectionRestored,
    FlowMessageReceived,
    HealthChanged,
    LogLineReceived,
    QueuedMessageDelivered,
    StatsSampled,
    StatusReported,
)
from server.core.flow_config import config_from_inspect
from server.core.log_tail import LogTail
from server.core.models import ContainerSnapshot, ContainerStatus, ResourceSample
from server.wire.answers import (
    ConnectedOut,
    ContainerCreatedOut,
    ContainerKilledOut,
    ContainerListOut,
    ContainerLogsOut,
    ContainerPauseOut,
    ContainerStateOut,
    ContainerStatusOut,
    ContainerUpdatedOut,
    HistoryOut,
    LogSubscriptionOut,
    MessageSentOut,
)
from server.wire.base import MalformedPayload, Wire, WireModel
from server.wire.catalog import REQUESTS, SERVER_EVENTS
from server.wire.config_answer import ContainerInspectedOut
from server.wire.errors import ERROR_TYPES, ErrorOut
from server.wire.pushes import (
    BROADCASTS,
    PUSHES,
    ActivityLogOut,
    ContainerCrashedOut,
    ContainerLogOut,
    ContainerStatsOut,
    EngineStatusOut,
    HealthWarningOut,
    MessageDeliveredOut,
    MessageReceivedOut,
    StatusChangedOut,
    StatusUpdateOut,
)
from server.wire.requests import CreateContainerRequest, body, parse_request
from tests.fuzz.malformed_requests import EVENTS as FUZZED_REQUESTS
from tests.tui.recording import fake_inspect

ROOT = Path(__file__).resolve().parents[2]
PROTOCOL = ROOT / "docs" / "PROTOCOL.md"
AT = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
CID = "c" * 64
SAMPLE = ResourceSample(
    cpu_percent=12.5,
    memory_usage=1 << 20,
    memory_limit=1 << 29,
    memory_percent=0.2,
    network_rx_bytes=10,
    network_tx_bytes=20,
    disk_read_bytes=30,
    disk_write_bytes=40,
    timestamp=AT,
)
SNAP = ContainerSnapshot(
    id=CID,
    name="web",
    image="flow:latest",
    state="running",
    health="healthy",
    created=AT,
    started_at=AT,
    socket_path="/tmp/s/.flowmgr-default/web/flow.sock",
    ports={"8080": 18080, "53/udp": None},
    exit_code=None,
    socket_connected=True,
    last_communication=AT,
    resources=SAMPLE,
)
STATUS = ContainerStatus(
    container_id=CID,
    name="web",
    state="running",
    health="healthy",
    uptime=timedelta(hours=50, seconds=7),
    socket_connected=True,
    last_communication=AT,
    resource_usage=SAMPLE,
)


def _via_wire(model: type[WireModel], payload: Wire) -> Any:
    """What a client gets: the payload checked against its model exactly (the server's
    builder and the model agree), then decoded by that model."""
    assert model.model_validate(payload, strict=True).model_dump(mode="json") == payload
    return model.decode(payload)


def _close(a: datetime, b: datetime) -> bool:
    """Epoch floats carry microseconds only approximately."""
    return abs(a - b) <= timedelta(microseconds=1)


# Each event the server can emit: encode a representative core value, decode it with the same
# module, and compare with what the panel must end up with. A new event needs a case here.


def _connected() -> None:
    out = _via_wire(ConnectedOut, ConnectedOut.payload("Connected to Flow Manager", "1.2", "srv-1"))
    assert (out.message, out.version, out.server_id) == (
        "Connected to Flow Manager",
        "1.2",
        "srv-1",
    )


def _error() -> None:
    for error_type, cls in ERROR_TYPES.items():
        exc = cls("it failed", details={"x": 1})
        got = _via_wire(
            ErrorOut, error_payload(exc, "stop_container", {"container_id": "web"})
        ).to_core()
        assert type(got) is cls and got.error_type == error_type
        assert got.message == "it failed"
        assert got.details == {"x": 1, "container_id": "web", "operation": "stop_container"}
    bad = error_payload(
        errors.InvalidRequest("name: too long", field="name"),
        "create_container",
        {"name": "x" * 200},
    )
    invalid = _via_wire(ErrorOut, bad).to_core()
    assert isinstance(invalid, errors.InvalidRequest) and invalid.field == "name"


def _created() -> None:
    snap = _via_wire(ContainerCreatedOut, ContainerCreatedOut.payload(SNAP)).to_snapshot(AT)
    assert snap == ContainerSnapshot(
        id=CID,
        name="web",
        image="flow:latest",
        state="created",
        health="none",
        created=AT,
        started_at=None,
        socket_path=SNAP.socket_path,
        ports=SNAP.ports,
    )


def _state(status: typing.Literal["running", "stopped", "deleted"]) -> Callable[[], None]:
    def case() -> None:
        out = _via_wire(ContainerStateOut, ContainerStateOut.payload(CID, status))
        assert (out.container_id, out.status) == (CID, status)
        if status == "deleted":  # ext: how many queued messages went with the flow
            full = {**ContainerStateOut.payload(CID, status), "queue_dropped": 2}
            assert _via_wire(ContainerStateOut, full).queue_dropped == 2

    return case


def _paused(status: typing.Literal["paused", "running"]) -> Callable[[], None]:
    def case() -> None:
        out = _via_wire(ContainerPauseOut, ContainerPauseOut.payload(CID, status))
        assert (out.container_id, out.status) == (CID, status)

    return case


def _killed() -> None:
    out = _via_wire(ContainerKilledOut, ContainerKilledOut.payload(SNAP, "SIGTERM"))
    assert (out.container_id, out.signal, out.status) == (CID, "SIGTERM", "running")


def _updated() -> None:
    out = _via_wire(ContainerUpdatedOut, ContainerUpdatedOut.payload(CID, "/srv/code"))
    assert (out.container_id, out.code_path) == (CID, "/srv/code")


def _sent() -> None:
    message = {"a": [1, {"b": None}], "s": "é"}
    ev = _via_wire(MessageSentOut, MessageSentOut.payload(CID, message)).to_core()
    assert (ev.container_id, ev.message) == (CID, message)
    assert "message_id" not in MessageSentOut.payload(CID, message)  # a plain send: unchanged
    queued = _via_wire(MessageSentOut, MessageSentOut.payload(CID, message, "m1"))
    assert (queued.status, queued.message_id) == ("queued", "m1")


def _status() -> None:
    assert (
        _via_wire(ContainerStatusOut, ContainerStatusOut.payload(STATUS)).to_core("web") == STATUS
    )
    idle = replace(
        STATUS, state="exited", uptime=None, last_communication=None, resource_usage=None
    )
    assert _via_wire(ContainerStatusOut, ContainerStatusOut.payload(idle)).to_core("web") == idle


def _list() -> None:
    other = replace(SNAP, id="d" * 64, name="b", state="exited", ports={})
    out = _via_wire(ContainerListOut, ContainerListOut.payload([SNAP, other]))
    assert out.count == 2
    # what an item leaves out comes from the client's previous view
    assert [
        item.to_snapshot(old) for item, old in zip(out.containers, [SNAP, other], strict=True)
    ] == [SNAP, other]
    fresh = out.containers[0].to_snapshot()
    assert (fresh.id, fresh.state, fresh.created, fresh.health) == (CID, "running", AT, "none")


def _logs() -> None:
    tail = _via_wire(ContainerLogsOut, ContainerLogsOut.payload(CID, ["a", "b"], True)).to_core()
    assert isinstance(tail, LogTail) and tail == ["a", "b"] and tail.truncated


def _inspected() -> None:
    cfg = config_from_inspect(fake_inspect(SNAP))
    assert _via_wire(ContainerInspectedOut, ContainerInspectedOut.payload(cfg)).to_core() == cfg
    assert "hunter2" not in json.dumps(ContainerInspectedOut.payload(cfg))


def _message_delivered() -> None:
    ev = QueuedMessageDelivered(at=AT, container_id=CID, message_id="m1")
    assert _via_wire(MessageDeliveredOut, MessageDeliveredOut.payload(ev)).to_core() == ev


def _message_received() -> None:
    ev = FlowMessageReceived(at=AT, container_id=CID, message={"n": 1})
    assert _via_wire(MessageReceivedOut, MessageReceivedOut.payload(ev)).to_core() == ev


def _status_changed() -> None:
    ev = ContainerStateChanged(
        at=AT, container_id=CID, old_state="running", new_state="exited", snapshot=SNAP
    )
    out = _via_wire(StatusChangedOut, StatusChangedOut.payload(ev))
    assert (out.container_id, out.old_state, out.new_state) == (CID, "running", "exited")
    assert _close(out.at, AT)


def _health_warning() -> None:
    ev = HealthChanged(at=AT, container_id=CID, old_health="healthy", new_health="unhealthy")
    got = _via_wire(HealthWarningOut, HealthWarningOut.payload(ev)).to_core("healthy")
    assert _close(got.at, AT) and replace(got, at=AT) == ev


def _crashed() -> None:
    ev = ContainerCrashed(
        at=AT,
        container_id=CID,
        name="web",
        exit_code=137,
        error="Out of memory",
        logs=["one", "", "three"],
    )
    got = _via_wire(ContainerCrashedOut, ContainerCrashedOut.payload(ev)).to_core("web")
    assert _close(got.at, AT) and replace(got, at=AT) == ev


def _status_update() -> None:
    payload = StatusUpdateOut.payload(StatusReported(at=AT, status=STATUS))
    # the periodic update carries no last communication
    assert _via_wire(StatusUpdateOut, payload).to_core("web") == replace(
        STATUS, last_communication=None
    )


def _activity() -> None:
    ev = ActivityLogged(
        at=AT,
        activity_type="container_started",
        container_id=CID,
        message="started web",
        details={"name": "web"},
    )
    assert _via_wire(ActivityLogOut, ActivityLogOut.payload(ev)).to_core() == ev
    host = ActivityLogged(
        at=AT, activity_type="container_error", container_id=None, message="engine lost"
    )
    assert _via_wire(ActivityLogOut, ActivityLogOut.payload(host)).to_core() == host


def _container_log() -> None:
    ev = LogLineReceived(at=AT, container_id=CID, line="hello \x1b[1mworld")
    assert _via_wire(ContainerLogOut, ContainerLogOut.payload(ev)).to_core() == ev


def _container_stats() -> None:
    ev = StatsSampled(at=AT, container_id=CID, sample=SAMPLE)
    out = _via_wire(ContainerStatsOut, ContainerStatsOut.payload(ev)).to_core()
    assert (out.container_id, out.sample) == (CID, SAMPLE)  # `at` is the receipt's


def _engine_status() -> None:
    lost = DockerConnectionLost(at=AT, reason="events stream ended")
    back = DockerConnectionRestored(at=AT)
    assert _via_wire(EngineStatusOut, EngineStatusOut.payload(lost)).to_core() == lost
    assert _via_wire(EngineStatusOut, EngineStatusOut.payload(back)).to_core() == back
    first = _via_wire(EngineStatusOut, EngineStatusOut.current(False, None)).to_core()
    assert isinstance(first, DockerConnectionLost) and first.reason


def _node_status() -> None:
    from server.core.events import NodeStatusReported
    from server.wire.pushes import NodeStatusOut

    ev = NodeStatusReported(
        at=AT,
        node_id="n2id",
        node="fmc-n2",
        state="down",
        agent="disconnected",
        reason="agent_link_lost",
        down_for=0.4,
    )
    assert _via_wire(NodeStatusOut, NodeStatusOut.payload(ev)).to_core() == ev


def _history() -> None:
    from server.core.journal.records import HistoryPage, JournalRecord

    ev = FlowMessageReceived(at=AT, container_id=CID, message={"n": 1})
    rec = JournalRecord(7, "message_received", MessageReceivedOut.payload(ev), CID)
    page = HistoryPage(events=[rec], last_seq=9, oldest_seq=3)
    out = _via_wire(HistoryOut, HistoryOut.payload(page))
    assert out.to_page() == page
    # a record's data is the push as sent: it decodes with that push's model, seq and all
    pushed = MessageReceivedOut.decode({**out.events[0].data, "seq": out.events[0].seq})
    assert pushed.seq == 7 and pushed.to_core() == ev


def _shell() -> None:
    from server.wire.shell import ShellClosedOut, ShellExitedOut, ShellOpenedOut, ShellOutputOut

    assert _via_wire(ShellOpenedOut, ShellOpenedOut.payload("s1", CID, 80, 24)).cols == 80
    assert _via_wire(ShellClosedOut, ShellClosedOut.payload("s1")).status == "closed"
    out = _via_wire(ShellOutputOut, ShellOutputOut.payload("s1", "héllo\r\n"))
    assert (out.data, out.seq) == ("héllo\r\n", None)  # never journalled
    for code in (0, 129, None):
        assert _via_wire(ShellExitedOut, ShellExitedOut.payload("s1", CID, code)).exit_code == code


CASES: dict[str, Callable[[], None]] = {
    "connected": _connected,
    "error": _error,
    "container_created": _created,
    "container_started": _state("running"),
    "container_stopped": _state("stopped"),
    "container_restarted": _state("running"),
    "container_deleted": _state("deleted"),
    "container_updated": _updated,
    "container_paused": _paused("paused"),
    "container_unpaused": _paused("running"),
    "container_killed": _killed,
    "message_sent": _sent,
    "container_status": _status,
    "container_list": _list,
    "container_logs": _logs,
    "container_inspected": _inspected,
    "message_received": _message_received,
    "status_changed": _status_changed,
    "container_health_warning": _health_warning,
    "container_crashed": _crashed,
    "container_status_update": _status_update,
    "activity_log": _activity,
    "container_log": _container_log,
    "engine_status": _engine_status,
    "message_delivered": _message_delivered,
    "history": _history,
    "container_stats": _container_stats,
    "node_status": _node_status,
    "shell_opened": _shell,
    "shell_closed": _shell,
    "shell_output": _shell,
    "shell_exited": _shell,
}


def test_every_server_event_has_a_round_trip_case() -> None:
    assert set(CASES) == set(SERVER_EVENTS)


@pytest.mark.parametrize("event", sorted(CASES))
def test_server_event_decodes_with_the_module_that_encodes_it(event: str) -> None:
    CASES[event]()


def _emits() -> list[tuple[str, ast.expr]]:
    """(file, first argument) of every `emit(...)` call in server/api (but `super().emit`: the
    client manager's pass-through)."""
    found = []
    for path in sorted((ROOT / "server" / "api").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "emit"
                and node.args
                and not _is_super(node.func.value)
            ):
                found.append((path.name, node.args[0]))
    return found


def _is_super(node: ast.expr) -> bool:
    return (
        isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "super"
    )


def test_every_emit_in_the_service_sends_a_catalogued_event() -> None:
    """A literal name must be in the catalog; `X.event` must be a push model; a computed name
    comes from the catalog's tables (the answer of a request, or a broadcast)."""
    emits = _emits()
    assert emits
    for where, arg in emits:
        if isinstance(arg, ast.Constant):
            assert arg.value in SERVER_EVENTS, f"{where}: emits {arg.value!r}"
        elif isinstance(arg, ast.Attribute) and arg.attr == "event":
            assert isinstance(arg.value, ast.Name), where
            assert any(m.__name__ == arg.value.id for m in PUSHES.values()), where
        else:  # the namespace's `answer`, the bridge's `name`, the shell broker's `event`
            # (server/api/shells.py passes only server.wire.shell's push names)
            assert isinstance(arg, ast.Name) and arg.id in {"answer", "name", "event"}, (
                f"{where}: emits {ast.unparse(arg)}"
            )
    assert {name for name, _ in BROADCASTS.values()} == set(PUSHES)
    for name, encode in BROADCASTS.values():  # each encoded by its own model
        assert encode.__qualname__ == f"{PUSHES[name].__name__}.payload"


def test_malformed_payloads_raise_a_typed_error() -> None:
    with pytest.raises(MalformedPayload, match="timestamp"):
        StatusChangedOut.decode({"container_id": CID, "old_state": "a", "new_state": "b"})
    with pytest.raises(MalformedPayload):
        ContainerListOut.decode([1])
    # keys a model does not know (an echoed request_id, a newer server's field) are ignored
    out = LogSubscriptionOut.decode(
        {"container_id": CID, "status": "subscribed", "request_id": "r1", "new": 1}
    )
    assert out.container_id == CID


def test_a_request_a_client_encodes_is_the_one_the_server_parses() -> None:
    request = CreateContainerRequest.model_construct(
        name="web", image=None, environment={"A": "1"}, volumes={}, ports={"8080": 18080}
    )
    sent = body(request)
    assert sent == {
        "name": "web",
        "environment": {"A": "1"},
        "volumes": {},
        "ports": {"8080": 18080},
    }
    assert parse_request(CreateContainerRequest, sent) == request


def test_error_types_are_the_taxonomy() -> None:
    literal = typing.get_args(ErrorOut.model_fields["error_type"].annotation)
    assert set(literal) == set(ERROR_TYPES)
    assert all(cls.error_type == name for name, cls in ERROR_TYPES.items())


# ------------------------------------------------------------------ docs/PROTOCOL.md


def _tables() -> dict[str, list[list[str]]]:
    """The rows of each markdown table, by the heading above it."""
    tables: dict[str, list[list[str]]] = {}
    heading = ""
    for line in PROTOCOL.read_text().splitlines():
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif line.startswith("|") and not re.match(r"^\|[\s|:-]+\|$", line):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            tables.setdefault(heading, []).append(cells)
    return {k: rows[1:] for k, rows in tables.items()}  # without the header row


def _names(cell: str) -> set[str]:
    return set(re.findall(r"`([a-z_]+)`", cell))


def test_protocol_lists_exactly_the_requests_the_server_takes() -> None:
    rows = _tables()["Requests and their answers"]
    assert {name for row in rows for name in _names(row[0])} == set(REQUESTS)
    for row in rows:
        (request,) = _names(row[0])
        assert _names(row[2]) == ({REQUESTS[request].answer} - {""}), row[0]
        assert row[0].startswith("**ext**") == (request in _EXT_REQUESTS), row[0]


_EXT_REQUESTS = {
    "get_container_logs",
    "subscribe_logs",
    "unsubscribe_logs",
    "get_history",
    "watch_stats",
    "pause_container",
    "unpause_container",
    "kill_container",
    "open_shell",
    "write_shell",
    "resize_shell",
    "close_shell",
    "inspect_container",
}
_EXT_EVENTS = {
    "container_logs",
    "container_log",
    "engine_status",
    "history",
    "message_delivered",
    "container_stats",
    "node_status",
}


def test_protocol_lists_exactly_the_events_the_server_emits() -> None:
    tables = _tables()
    answers = {name for row in tables["Requests and their answers"] for name in _names(row[2])}
    connection = {name for row in tables["Connection"] for name in _names(row[0])}
    pushes = {
        name
        for row in tables["Events the server sends on its own (to every connected client)"]
        for name in _names(row[0])
    }
    shells = {name for row in tables["Shells (ext)"] for name in _names(row[0])}
    assert connection - {"connect", "disconnect"} | answers | pushes | shells == set(SERVER_EVENTS)
    assert pushes - {"error"} == set(PUSHES)
    for row in tables["Events the server sends on its own (to every connected client)"]:
        (event,) = _names(row[0])
        assert row[0].startswith("**ext**") == (event in _EXT_EVENTS), row[0]


def test_protocol_lists_the_error_types() -> None:
    text = PROTOCOL.read_text()
    paragraph = text[text.index("Error types:") :].split("\n\n")[0]
    assert _names(paragraph) == set(ERROR_TYPES)


def test_the_fuzzer_covers_every_request() -> None:
    # get_history's hostile inputs are tests/integration/test_api_history.py's own,
    # watch_stats's tests/integration/test_api_scale.py's
    # and the shells' tests/integration/test_api_shell.py's
    shells = {"open_shell", "write_shell", "resize_shell", "close_shell"}
    assert set(FUZZED_REQUESTS) | {"get_history", "watch_stats"} | shells == set(REQUESTS)
