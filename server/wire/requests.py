"""Requests (client -> server): each one's fields, parsed by the server, encoded by clients."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from server.core.errors import InvalidRequest
from server.core.log_tail import MAX_SINCE
from server.core.models import CreateSpec
from server.core.validation.signals import DEFAULT_SIGNAL, MAX_SIGNAL_TEXT
from server.wire.journal_encoding import JOURNALLED_PUSHES

__all__ = [
    "RequestIn",
    "ContainerRef",
    "CreateContainerRequest",
    "UpdateContainerRequest",
    "SendMessageRequest",
    "KillContainerRequest",
    "GetLogsRequest",
    "ListContainersRequest",
    "GetHistoryRequest",
    "WatchStatsRequest",
    "WATCH_MAX",
    "MAX_SEQ",
    "HISTORY_LIMIT",
    "parse_request",
    "request_id_of",
    "body",
]


class RequestIn(BaseModel):
    """Fields every request may carry."""

    # Strict: "5" is not a number and 5 is not a name; unknown keys are ignored, as
    # existing clients may send more than the contract lists.
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    request_id: str | None = Field(default=None, max_length=256)
    """ext: echoed in the answer or error."""


class ListContainersRequest(RequestIn):
    """`list_containers`: no fields."""


Reference = Annotated[str, Field(min_length=1, max_length=256)]
"""A container's full id, unique id prefix or name, as a request writes it."""


class ContainerRef(RequestIn):
    """A request naming one container (full id, unique prefix or name)."""

    container_id: Reference


WATCH_MAX = 1000
"""The most containers one `watch_stats` names: the core's MAX_WATCHED (server/core/stats.py,
which imports the engine's SDK the wire may not; tests/integration/test_api_scale.py holds the
two equal)."""


class WatchStatsRequest(RequestIn):
    """ext `watch_stats`: the containers this client looks at (replacing what it sent before;
    empty: none); their samples are pushed to it as `container_stats`."""

    container_ids: list[Reference] = Field(max_length=WATCH_MAX)


class UpdateContainerRequest(ContainerRef):
    """`update_container`."""

    code_path: str = Field(min_length=1, max_length=4096)


class KillContainerRequest(ContainerRef):
    """ext `kill_container`: the JSON type and length only; which signals may be sent is the
    core's one rule (server/core/validation/signals.py), so the panel gets the same answer."""

    signal: str = Field(default=DEFAULT_SIGNAL, min_length=1, max_length=MAX_SIGNAL_TEXT)
    """Absent: SIGKILL, as `docker kill`; null is refused (strict)."""


class SendMessageRequest(ContainerRef):
    """`send_message`."""

    message: dict[str, Any]
    queue: bool = False
    """ext: true keeps the message in the journal until the flow acknowledged it (a JSON bool:
    strict, so "true", 1 and null are refused)."""


class GetLogsRequest(ContainerRef):
    """ext `get_container_logs`."""

    tail: int = Field(default=100, ge=0, le=10_000)
    since: float | None = Field(default=None, gt=0, le=MAX_SINCE, allow_inf_nan=False)
    """ext: only lines from the last `since` seconds (absent or null: all)."""
    timestamps: bool = False
    """ext: each line starts with the engine's RFC 3339 timestamp and a space."""


MAX_SEQ = 2**63 - 1
"""The largest seq there can be (SQLite's INTEGER PRIMARY KEY is a signed 64-bit integer)."""
HISTORY_LIMIT = 1000
"""The most events one `history` page holds: a larger `limit` is a validation_error (not
clamped), so a client never mistakes a clamped page for the end of the journal."""


class GetHistoryRequest(RequestIn):
    """ext `get_history`: journalled pushes with seq > `since_seq`, oldest first."""

    since_seq: int | None = Field(default=None, ge=0, le=MAX_SEQ)
    container_id: str | None = Field(default=None, min_length=1, max_length=256)
    """A managed container's reference, or the full id of one deleted since."""
    types: list[str] | None = Field(default=None, min_length=1, max_length=len(JOURNALLED_PUSHES))
    """Push names to keep (an allow-list); absent: every journalled push."""
    limit: int = Field(default=100, ge=1, le=HISTORY_LIMIT)

    @field_validator("types")
    @classmethod
    def _known_types(cls, types: list[str] | None) -> list[str] | None:
        for name in types or ():
            if name not in JOURNALLED_PUSHES:
                known = ", ".join(sorted(JOURNALLED_PUSHES))
                raise ValueError(f"{name[:80]!r} is not a journalled event; known: {known}")
        return types


class CreateContainerRequest(RequestIn):
    """`create_container`: JSON types only. What the values may be is the core's one validator's
    (server/core/validation), run by `create_container`, so every front end gets its verdict."""

    name: str
    image: str | None = None
    environment: dict[str, str] = Field(default_factory=dict)
    volumes: dict[str, str] = Field(default_factory=dict)
    """Host path -> container path."""
    ports: dict[str, int] = Field(default_factory=dict)
    """Container port ("8080" or "8080/tcp") -> host port."""
    node: str | None = None
    """ext, a cluster hub only: the Swarm node (ID or hostname) to run the flow on."""

    def to_spec(self) -> CreateSpec:
        """The core's create request."""
        return CreateSpec(
            name=self.name,
            image=self.image,
            environment=dict(self.environment),
            volumes=dict(self.volumes),
            ports=dict(self.ports),
            node=self.node,
        )


RequestT = TypeVar("RequestT", bound=RequestIn)


def request_id_of(data: Any) -> str | None:
    """The request's `request_id` when it is a string (only strings are echoed)."""
    if isinstance(data, dict):
        rid = data.get("request_id")
        if isinstance(rid, str) and len(rid) <= 256:
            return rid
    return None


def parse_request(schema: type[RequestT], data: Any) -> RequestT:
    """Validate a payload; raise InvalidRequest naming the first bad field."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InvalidRequest(
            f"the payload must be a JSON object, not {_json_type(data)}",
            details={"received": _json_type(data)},
        )
    try:
        return schema.model_validate(data)
    except ValidationError as err:
        problems = [
            {"field": ".".join(str(p) for p in e["loc"]) or "payload", "message": e["msg"]}
            for e in err.errors(include_url=False, include_input=False)[:10]
        ]
        first = problems[0]
        raise InvalidRequest(
            f"{first['field']}: {first['message']}",
            field=first["field"],
            details={"errors": problems},
        ) from None


def _json_type(value: Any) -> str:
    names = {
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
    }
    return names.get(type(value), type(value).__name__)


def body(request: RequestIn) -> dict[str, Any]:
    """A request's payload as a client sends it (absent optional fields left out). Build the
    request with `model_construct`: the server, not the client, judges the values."""
    return request.model_dump(exclude_none=True)
