"""The create form's text -> a create request, then the core's one validator on it.

The parsers here know only the fields' text syntax (`KEY=value`, `HOST:CONTAINER[/proto]`,
`/host:/container[:rw]`, items split by commas or newlines); every rule on the values is the
validator's (server/core/validation/shapes.py), so the form shows exactly its messages.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from server.core.errors import InvalidRequest
from server.core.models import CreateSpec
from server.core.validation import shape_problems

__all__ = ["parse_name", "parse_image", "parse_env", "parse_ports", "parse_volumes", "build_spec"]


def _items(raw: str) -> list[str]:
    return [p.strip() for p in re.split(r"[,\n]", raw) if p.strip()]


def _once(seen: Mapping[str, object], key: str, item: str, what: str, field: str) -> None:
    """A map holds each key once: a second one would silently replace the first."""
    if key in seen:
        raise InvalidRequest(f"{item!r}: {what} {key} is given twice", field=field)


def parse_name(raw: str) -> str:
    """The name as typed, without surrounding blanks."""
    return raw.strip()


def parse_image(raw: str) -> str | None:
    """An image reference such as `flow:latest`; empty means the configured default."""
    return raw.strip() or None


def parse_env(raw: str) -> dict[str, str]:
    """`KEY=value, OTHER=x` (comma or newline separated)."""
    env: dict[str, str] = {}
    for item in _items(raw):
        key, sep, value = item.partition("=")
        if not sep:
            raise InvalidRequest(f"{item!r}: write KEY=value", field="environment")
        _once(env, key.strip(), item, "variable", "environment")
        env[key.strip()] = value
    return env


def parse_ports(raw: str) -> dict[str, int]:
    """`8080:80, 5353:53/udp` as in `docker run -p HOST:CONTAINER[/proto]` -> {"80": 8080}."""
    ports: dict[str, int] = {}
    for item in _items(raw):
        host, sep, container = (s.strip() for s in item.partition(":"))
        if not sep or not (host.isascii() and host.isdigit()):
            raise InvalidRequest(
                f"{item!r}: write HOST:CONTAINER with a number as HOST, e.g. 8080:80", field="ports"
            )
        _once(ports, container, item, "container port", "ports")
        ports[container] = int(host)
    return ports


def parse_volumes(raw: str) -> dict[str, str]:
    """`/srv/data:/data` (host path : container path); `/srv/data:/data:rw` asks for a
    writable mount (read-only otherwise; the service decides)."""
    volumes: dict[str, str] = {}
    for item in _items(raw):
        host, sep, target = item.partition(":")
        if not sep:
            raise InvalidRequest(f"{item!r}: write /host/path:/container/path", field="volumes")
        _once(volumes, host, item, "host path", "volumes")
        volumes[host] = target
    return volumes


def build_spec(fields: dict[str, str]) -> tuple[CreateSpec | None, dict[str, str]]:
    """All fields at once: the spec, or None and one message per bad field (a field's text
    syntax first, then the validator's rules on what parsed)."""
    errors: dict[str, str] = {}
    parsed: dict[str, object] = {}
    parsers = {
        "name": parse_name,
        "image": parse_image,
        "environment": parse_env,
        "ports": parse_ports,
        "volumes": parse_volumes,
    }
    for key, parse in parsers.items():
        try:
            parsed[key] = parse(fields.get(key, ""))
        except InvalidRequest as err:
            errors[key] = err.message
    spec = CreateSpec(**parsed)  # type: ignore[arg-type]
    for key, message in shape_problems(spec).items():
        errors.setdefault(key, message)
    if errors:
        return None, errors
    return spec, {}
