"""What a flow may get: checks on a create request before any Docker call (STUB)."""

from __future__ import annotations

from server.core.config import Settings
from server.core.errors import InvalidRequest
from server.core.models import CreateSpec

__all__ = ["validate_create"]


def validate_create(spec: CreateSpec, settings: Settings) -> CreateSpec:
    """Return the spec when allowed; raise InvalidRequest naming the field otherwise."""
    if not spec.name:
        raise InvalidRequest("name must not be empty", field="name")
    return spec
