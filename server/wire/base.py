"""What every payload model shares: decoding (tolerant of keys it does not know) and its error."""

from __future__ import annotations

from typing import Any, Self

from pydantic import BaseModel, ConfigDict, ValidationError

from server.core.errors import FlowMgrError

__all__ = ["Wire", "WireModel", "MalformedPayload"]

Wire = dict[str, Any]
"""A payload as it goes on the wire: a JSON object."""


class MalformedPayload(FlowMgrError):
    """A payload from the other side does not have its event's shape."""


class WireModel(BaseModel):
    """The shape of one payload. The server builds plain dicts with each model's `payload()`
    (validating its own output on every emit costs several times more than building it:
    bench/RESULTS.md), and the unit tests check each builder against its model;
    a client validates what it receives with `decode()`."""

    # Keys a model does not declare are ignored when decoding: an answer echoes `request_id`
    # (ext), and a newer server may add fields an older client does not know.
    model_config = ConfigDict(frozen=True, extra="ignore")

    @classmethod
    def decode(cls, data: Any) -> Self:
        """Validate a received payload; MalformedPayload names the first bad field."""
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            first = err.errors(include_url=False, include_input=False)[0]
            where = ".".join(str(p) for p in first["loc"]) or "payload"
            raise MalformedPayload(
                f"{where}: {first['msg']}", details={"model": cls.__name__}
            ) from None
