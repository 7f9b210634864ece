"""What crosses the agent <-> hub link: strict models (unknown keys refused), every size capped.

Unlike the API's wire models (tolerant of keys they do not know, so an older panel reads a newer
server), these refuse anything they do not declare: hub and agent are one release, and an agent
holding the agent token is still not trusted to send the hub arbitrary data.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, Self, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from server.core.errors import InvalidRequest
from server.core.models import STATES
from server.wire.answers import ResourceUsageOut

__all__ = [
    "LinkModel",
    "FlowHeld",
    "AgentHello",
    "Heartbeat",
    "AgentReport",
    "Request",
    "AgentEvent",
    "EVENT_KINDS",
    "ReplyError",
    "Reply",
    "ALLOWED_OPS",
    "ERROR_TYPES",
    "MAX_FLOWS_PER_NODE",
    "MAX_HELLO_BYTES",
    "MAX_REQUEST_BYTES",
    "MAX_MESSAGE_CHARS",
    "json_size",
]

MAX_FLOWS_PER_NODE = 10_000
"""Most flows one agent may say it holds (a hello of that many is about 2 MB)."""
MAX_HELLO_BYTES = 4 * 2**20
"""Largest hello the hub decodes (its JSON); a larger one is refused before validation."""
MAX_REQUEST_BYTES = 2 * 2**20 + 4096
"""Largest request or reply (JSON): a flow frame (`flow.max_frame_bytes`, 1 MiB by default)
escaped as JSON with room to spare."""
MAX_MESSAGE_CHARS = 2000
"""Longest error message in a reply."""

ALLOWED_OPS: frozenset[str] = frozenset(
    {"send", "logs", "update", "follow", "unfollow", "watch", "forget", "inspect"}
)
"""What the hub may ask an agent (docs/CLUSTER.md "Hub and agents"); anything else is refused
on both sides. Payloads (`container_id` is always the task's container on the agent's node):
send {container_id, message}, logs {container_id, tail, since?, timestamps?}, update
{container_id, code_path}, follow / unfollow {container_id}, watch {container_ids}, forget
{keep: [flow ids]} (remove the socket volumes of flows not listed), inspect {container_id}
(its masked configuration, `container_inspected`-shaped)."""
Op = Literal["send", "logs", "update", "follow", "unfollow", "watch", "forget", "inspect"]

ERROR_TYPES: frozenset[str] = frozenset(
    {
        "container_not_found",
        "docker_api_error",
        "image_not_found",
        "socket_error",
        "socket_timeout_error",
        "socket_connection_error",
        "validation_error",
        "system_error",
    }
)
"""The docs/PROTOCOL.md error types an agent's reply may carry."""
ErrorType = Literal[
    "container_not_found",
    "docker_api_error",
    "image_not_found",
    "socket_error",
    "socket_timeout_error",
    "socket_connection_error",
    "validation_error",
    "system_error",
]

NodeId = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
]
"""A Swarm node ID (25 characters of [0-9a-z]) or, in tests, any short plain name."""
ObjectId = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
]
"""A service, task or container ID (or a test's plain name)."""
Hostname = Annotated[
    str, StringConstraints(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
]
Token = Annotated[str, StringConstraints(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
"""An agent instance or a request id: random, URL-safe."""
FlowState = Literal[
    "created",
    "running",
    "paused",
    "restarting",
    "removing",
    "stopped",
    "exited",
    "dead",
    "unknown",
]
if not set(STATES) <= set(get_args(FlowState)):  # the core's states, plus "unknown"
    raise ImportError("FlowState lacks a state of server.core.models.STATES")


def json_size(value: Any) -> int:
    """Bytes of `value` as compact JSON (what the agent sent, near enough); huge if unencodable."""
    try:
        return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    except (TypeError, ValueError, RecursionError):
        return 2**62


class LinkModel(BaseModel):
    """Strict: no coercion ("1" is not 1), no unknown keys, frozen."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    @classmethod
    def decode(cls, data: Any, *, max_bytes: int | None = None) -> Self:
        """Validate a received payload; InvalidRequest names the first bad field."""
        if max_bytes is not None and json_size(data) > max_bytes:
            raise InvalidRequest(
                f"{cls.__name__} is larger than {max_bytes} bytes",
                field="payload",
                details={"model": cls.__name__, "max_bytes": max_bytes},
            )
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            first = err.errors(include_url=False, include_input=False)[0]
            where = ".".join(str(p) for p in first["loc"]) or "payload"
            raise InvalidRequest(
                f"{cls.__name__}: {where}: {first['msg']}",
                field=where,
                details={"model": cls.__name__},
            ) from None

    def wire(self) -> dict[str, Any]:
        """The payload to emit."""
        return self.model_dump(mode="json")


class FlowHeld(LinkModel):
    """One flow whose task runs on the agent's node."""

    flow_id: ObjectId
    """The flow's `container_id` in cluster mode: its service's ID."""
    task_id: ObjectId
    container_id: ObjectId | None = None
    """The task's container on this node (None until the engine made it)."""
    state: FlowState


class AgentHello(LinkModel):
    """The agent's first word, sent in the connect's auth next to the agent token."""

    node_id: NodeId
    hostname: Hostname
    version: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    instance: Token
    """Random per agent process: a reconnect of the same process replaces its old link; another
    process claiming a node that has a live link is refused."""
    flows: list[FlowHeld] = Field(default_factory=list, max_length=MAX_FLOWS_PER_NODE)

    @model_validator(mode="after")
    def _unique_flows(self) -> Self:
        ids = [f.flow_id for f in self.flows]
        if len(set(ids)) != len(ids):
            raise ValueError("a flow_id is listed twice")
        return self


class Heartbeat(LinkModel):
    """Every `cluster.agent_heartbeat`; the hub acks it (the agent's sign the hub is there)."""

    seq: int = Field(ge=0, le=2**53)
    flows: int = Field(ge=0, le=MAX_FLOWS_PER_NODE)
    """How many flows the agent holds (a cheap consistency check; the list comes in reports)."""


class AgentReport(LinkModel):
    """A flow's new state and/or resource sample (the API's `resource_usage` shape)."""

    flow_id: ObjectId
    task_id: ObjectId
    container_id: ObjectId | None = None
    state: FlowState
    sample: ResourceUsageOut | None = None
    gone: bool = False
    """The task left this node (removed, or moved): the hub forgets it here."""


EventKind = Literal[
    "message_received",
    "control",
    "channel_connected",
    "channel_lost",
    "frame_rejected",
    "log_line",
    "fenced",
    "refused",
]
EVENT_KINDS: frozenset[str] = frozenset(get_args(EventKind))


class AgentEvent(LinkModel):
    """Agent -> hub: something one flow's task did on the node, for the hub to publish as the
    core event of the same name under the flow's id. `data` by kind: message_received
    {message}, control {control}, channel_connected {}, channel_lost {reason}, frame_rejected
    {reason}, log_line {line}, fenced {cut_for, why} (the agent stopped the flow's task there
    while cut off from the hub and the managers; said once the link is back), refused {why}
    (the agent's guard stopped the task's container: it could not be held to the isolation
    rules, agent_guard)."""

    flow_id: ObjectId
    task_id: ObjectId
    kind: EventKind
    data: dict[str, Any] = Field(default_factory=dict)


class Request(LinkModel):
    """Hub -> agent: do `op` for a flow; answer with a Reply of the same request_id."""

    request_id: Token
    op: Op
    deadline: float = Field(gt=0, le=600)
    """Seconds the agent has, counted from receipt (the nodes' clocks are not compared)."""
    payload: dict[str, Any] = Field(default_factory=dict)


class ReplyError(LinkModel):
    """Why an agent could not do a request: a docs/PROTOCOL.md error type and message."""

    error_type: ErrorType
    message: Annotated[str, StringConstraints(max_length=MAX_MESSAGE_CHARS)]
    details: dict[str, Any] = Field(default_factory=dict)


class Reply(LinkModel):
    """Agent -> hub: the outcome of one request."""

    request_id: Token
    ok: bool
    result: dict[str, Any] | None = None
    error: ReplyError | None = None

    @model_validator(mode="after")
    def _one_outcome(self) -> Self:
        if self.ok and self.error is not None:
            raise ValueError("an ok reply carries no error")
        if not self.ok and self.error is None:
            raise ValueError("a failed reply carries an error")
        return self
