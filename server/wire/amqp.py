"""The RabbitMQ interface's envelopes (docs/PROTOCOL.md "RabbitMQ interface (ext)"): a command,
its answer; `data` inside is the Socket.IO request's payload, parsed by the same models."""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import Field

from server.core.models import CreateSpec
from server.wire.base import Wire, WireModel
from server.wire.requests import CreateContainerRequest, RequestIn

__all__ = [
    "ACTIONS",
    "Action",
    "CommandEnvelope",
    "CreateCommandData",
    "AnswerOut",
    "answer_payload",
]

Action = Literal[
    "create_container",
    "start_container",
    "stop_container",
    "restart_container",
    "update_container",
    "delete_container",
    "send_message",
    "get_status",
    "list_containers",
]
"""Every action a command may name (the platform's names; `get_status` is Socket.IO's
`get_container_status`)."""
ACTIONS: tuple[str, ...] = get_args(Action)


class CommandEnvelope(RequestIn):
    """A command's body. Strict, like the Socket.IO requests: "5" is not a number."""

    action: Action
    data: dict[str, Any]
    """Required, an object (`{}` for `list_containers`)."""
    reply_to: str | None = Field(default=None, min_length=1, max_length=255, pattern=r"^[ -~]+$")
    """A queue name (AMQP: at most 255 bytes); printable ASCII here."""
    correlation_id: str | None = Field(default=None, min_length=1, max_length=255)


class CreateCommandData(CreateContainerRequest):
    """`create_container`'s data: the Socket.IO request's fields, and the platform's."""

    command: list[str] | None = Field(default=None, max_length=1024)
    labels: dict[str, str] = Field(default_factory=dict)
    """The caller's labels; never a `flowmgr.*` key (the core's validator refuses it)."""
    flow_id: str | None = None
    flow_run_id: str | None = None
    flow_name: str | None = None
    graph_hash: str | None = None

    def to_spec(self, correlation_id: str | None = None) -> CreateSpec:
        """The core's create request, the platform's ids among the labels it keeps."""
        meta = {
            key: value
            for key in ("flow_id", "flow_run_id", "flow_name", "graph_hash")
            if (value := getattr(self, key)) is not None
        }
        if correlation_id is not None:
            meta["correlation_id"] = correlation_id
        spec = super().to_spec()
        return CreateSpec(
            name=spec.name,
            image=spec.image,
            environment=spec.environment,
            volumes=spec.volumes,
            ports=spec.ports,
            node=spec.node,
            command=None if self.command is None else list(self.command),
            labels=dict(self.labels),
            flow_meta=meta,
        )


class AnswerOut(WireModel):
    """A command's successful answer."""

    ok: Literal[True] = True
    action: str
    data: dict[str, Any]
    """The Socket.IO answer's payload."""
    instance: str
    """ext: the manager that answered (`docker.instance`): where to route its flows' commands."""


def answer_payload(action: str, data: Wire, instance: str) -> Wire:
    """`AnswerOut` as sent."""
    return {"ok": True, "action": action, "data": data, "instance": instance}
