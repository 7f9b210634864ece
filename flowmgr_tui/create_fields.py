"""Parse and check the create form's fields; each failure is an InvalidRequest naming its field."""

from __future__ import annotations

import re

from server.core.errors import InvalidRequest
from server.core.models import CreateSpec

__all__ = ["parse_name", "parse_image", "parse_env", "parse_ports", "parse_volumes",
           "build_spec"]

_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE = re.compile(
    rf"^(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?{_COMPONENT}(?:/{_COMPONENT})*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PROTOCOLS = ("tcp", "udp", "sctp")


def _items(raw: str) -> list[str]:
    return [p.strip() for p in re.split(r"[,\n]", raw) if p.strip()]


def parse_name(raw: str) -> str:
    """Docker's container-name rule: a letter or digit, then letters, digits, `_ . -`."""
    name = raw.strip()
    if not name:
        raise InvalidRequest("a name is required", field="name")
    if not _NAME.match(name):
        raise InvalidRequest("letters, digits and _ . - only; start with a letter or digit",
                             field="name")
    return name


def parse_image(raw: str) -> str | None:
    """An image reference such as `flow:latest`; empty means the configured default."""
    image = raw.strip()
    if not image:
        return None
    if not _IMAGE.match(image):
        raise InvalidRequest(f"{image!r} is not an image reference (like flow:latest)",
                             field="image")
    return image


def parse_env(raw: str) -> dict[str, str]:
    """`KEY=value, OTHER=x` (comma or newline separated)."""
    env: dict[str, str] = {}
    for item in _items(raw):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not _ENV_KEY.match(key):
            raise InvalidRequest(f"{item!r}: write KEY=value (KEY: letters, digits, _)",
                                 field="environment")
        env[key] = value
    return env


def _port(text: str, item: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise InvalidRequest(f"{item!r}: {text!r} is not a port (1-65535)", field="ports")
    return int(text)


def parse_ports(raw: str) -> dict[str, int]:
    """`8080:80, 5353:53/udp` as in `docker run -p HOST:CONTAINER[/proto]`."""
    ports: dict[str, int] = {}
    used: set[int] = set()
    for item in _items(raw):
        host, sep, rest = item.partition(":")
        if not sep:
            raise InvalidRequest(f"{item!r}: write HOST:CONTAINER, e.g. 8080:80", field="ports")
        cport, _, proto = rest.partition("/")
        proto = proto or "tcp"
        if proto not in _PROTOCOLS:
            raise InvalidRequest(f"{item!r}: protocol must be tcp, udp or sctp", field="ports")
        host_port, container_port = _port(host.strip(), item), _port(cport.strip(), item)
        if host_port in used:
            raise InvalidRequest(f"host port {host_port} is used twice", field="ports")
        used.add(host_port)
        ports[f"{container_port}/{proto}"] = host_port
    return ports


def parse_volumes(raw: str) -> dict[str, str]:
    """`/srv/data:/data` (host path : container path, both absolute); `/srv/data:/data:rw`
    asks for a writable mount (read-only otherwise; the service decides)."""
    volumes: dict[str, str] = {}
    for item in _items(raw):
        host, sep, target = item.partition(":")
        if not sep or not host.startswith("/") or not target.startswith("/"):
            raise InvalidRequest(f"{item!r}: write /host/path:/container/path",
                                 field="volumes")
        volumes[host] = target
    return volumes


def build_spec(fields: dict[str, str]) -> tuple[CreateSpec | None, dict[str, str]]:
    """All fields at once: the spec, or None and one message per bad field."""
    errors: dict[str, str] = {}
    parsed: dict[str, object] = {}
    parsers = {"name": parse_name, "image": parse_image, "environment": parse_env,
               "ports": parse_ports, "volumes": parse_volumes}
    for key, parse in parsers.items():
        try:
            parsed[key] = parse(fields.get(key, ""))
        except InvalidRequest as err:
            errors[key] = err.message
    if errors:
        return None, errors
    return CreateSpec(**parsed), {}  # type: ignore[arg-type]
