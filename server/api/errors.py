"""The one translation of exceptions into the `error` payload (docs/PROTOCOL.md; its shape:
`server.wire.errors.ErrorOut`)."""

from __future__ import annotations

import json
import logging
from typing import Any

from server.core.errors import FlowMgrError, InternalError
from server.core.events import now
from server.core.masking import mask_text, mask_value
from server.wire.errors import ErrorOut

__all__ = ["error_payload"]

logger = logging.getLogger(__name__)

# A request field larger than this is summarised in `details` rather than echoed back whole.
_ECHO_LIMIT = 2048


def error_payload(exc: BaseException, operation: str, request: Any) -> dict[str, Any]:
    """`error` for a failed request: typed errors as they are, anything else `system_error`."""
    if not isinstance(exc, FlowMgrError):
        logger.error("unexpected failure in %s", operation, exc_info=exc)
        exc = InternalError(f"internal error while handling {operation}; see the server log")
    details: dict[str, Any] = dict(mask_value(exc.details))
    if isinstance(request, dict):
        fields = {k: v for k, v in request.items() if k != "request_id"}
        details.update(_clipped(mask_value(fields)))
    details["operation"] = operation
    out: dict[str, Any] = {
        "error_type": exc.error_type,
        "message": mask_text(exc.message),
        "details": details,
        "timestamp": now().isoformat(),
    }
    try:
        return ErrorOut.model_validate(out).model_dump(mode="json")
    except UnicodeEncodeError:
        # JSON may carry lone surrogates ("\ud800") that UTF-8 cannot: the request's own text
        # echoed, or quoted in the message. Without this the client got no answer at all.
        return ErrorOut.model_validate(_escaped(out)).model_dump(mode="json")


def _escaped(value: Any) -> Any:
    """Every string (and key) with its lone surrogates written as backslash escapes."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_escaped(k): _escaped(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escaped(v) for v in value]
    return value


def _clipped(fields: dict[str, Any]) -> dict[str, Any]:
    """Echo small JSON fields whole; summarise large or binary ones, so an error stays small
    and JSON-only (the server's packets never carry binary attachments)."""
    out: dict[str, Any] = {}
    for key, value in fields.items():
        try:
            size = len(json.dumps(value))
        except (TypeError, ValueError):  # bytes from a binary Socket.IO event, or worse
            out[str(key)] = f"<{type(value).__name__}, not echoed>"
            continue
        out[str(key)] = value if size <= _ECHO_LIMIT else f"<{size} bytes not echoed>"
    return out
