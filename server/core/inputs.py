"""Checks on what callers hand the manager (the code `update_container` copies: code_update)."""

from __future__ import annotations

import re
from typing import Any

from server.core.errors import InvalidRequest
from server.core.flow_env import check_environment
from server.core.models import CreateSpec

__all__ = ["check_spec", "normalise_ports", "NAME_RE"]

NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")
"""Docker's own rule for container names (also keeps socket directories inside socket_dir)."""


def _str_map(value: Any, field: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise InvalidRequest(f"{field} must be an object of strings", field=field)
    for key, val in value.items():
        if not isinstance(key, str) or not isinstance(val, str):
            raise InvalidRequest(f"{field}: {key!r} must map a string to a string",
                                 field=field, details={"key": str(key)})
    return dict(value)


def check_spec(spec: CreateSpec) -> None:
    """Raise InvalidRequest naming the field for anything Docker would choke on later."""
    if not isinstance(spec.name, str) or not spec.name:
        raise InvalidRequest("name must be a non-empty string", field="name")
    if not NAME_RE.match(spec.name):
        raise InvalidRequest(f"name {spec.name!r} is not allowed: use letters, digits, '_', '.' "
                             "and '-', starting with a letter or digit", field="name")
    if spec.image is not None and (not isinstance(spec.image, str) or not spec.image.strip()):
        raise InvalidRequest("image must be a non-empty string", field="image")
    check_environment(spec.environment)  # the same check as policy.validate_create's
    # types only: the host paths are checked by policy.validate_create, allow-list first, so
    # no answer tells whether a path outside the bind roots exists
    _str_map(spec.volumes, "volumes")
    normalise_ports(spec.ports)
    if spec.command is not None and (not isinstance(spec.command, list)
                                     or not all(isinstance(c, str) for c in spec.command)):
        raise InvalidRequest("command must be a list of strings", field="command")
    if spec.memory_limit is not None and not isinstance(spec.memory_limit, str):
        raise InvalidRequest("memory_limit must be a string like '64m'", field="memory_limit")


def normalise_ports(ports: Any) -> dict[str, int]:
    """{"8080": 18080} -> {"8080/tcp": 18080}; raise InvalidRequest naming `ports`."""
    if not isinstance(ports, dict):
        raise InvalidRequest("ports must be an object container port -> host port", field="ports")
    out: dict[str, int] = {}
    for cport, hport in ports.items():
        num, _, proto = str(cport).partition("/")
        proto = proto or "tcp"
        # ASCII digits only: "²" passes isdigit() and then fails int(); "٨٠" would be port 80.
        if not (num.isascii() and num.isdigit()) or not 0 < int(num) < 65536 \
                or proto not in ("tcp", "udp", "sctp"):
            raise InvalidRequest(f"container port {cport!r} is not valid", field="ports")
        if isinstance(hport, bool) or not isinstance(hport, int) or not 0 < hport < 65536:
            raise InvalidRequest(f"host port for {cport!r} must be an integer 1-65535",
                                 field="ports")
        out[f"{int(num)}/{proto}"] = hport
    return out
