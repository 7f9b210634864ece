"""The create rules every front end can run: the shape of each field, no settings, no disk.

The remote panel runs these before sending (it cannot see the server's host); the core runs
them first too (`host.validate_create`), so both give the same message for the same input.
Each refusal is an InvalidRequest naming its field. Where the earlier copies disagreed, Docker's
own rules won (docs/CORE.md "Create rules").
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Callable, Mapping

from server.core.errors import InvalidRequest
from server.core.host_paths import Mode, plain_path_problem, split_mode
from server.core.models import CreateSpec
from server.core.validation.environment import check_environment, utf8_text

__all__ = [
    "FIELDS",
    "MAX_NAME_LENGTH",
    "MAX_BINDS",
    "check_shapes",
    "shape_problems",
    "check_name",
    "check_image",
    "check_volumes",
    "check_ports",
    "port_bindings",
    "PORTS_LABEL",
    "ports_label",
    "ports_as_written",
    "check_command",
    "check_memory_limit",
    "check_labels",
    "FLOW_META",
    "MANAGER_LABEL_PREFIX",
    "memory_bytes",
    "lexical",
    "related",
]

FIELDS = (
    "name",
    "image",
    "environment",
    "volumes",
    "ports",
    "command",
    "memory_limit",
    "labels",
)
"""The order fields are checked in: the core reports the first failing one."""

MAX_NAME_LENGTH = 63
"""Longest container name: one DNS label, so flows on the network can resolve each other by
name (Docker itself takes longer names); the server also bounds it by its socket path."""
_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")
"""Docker's rule: at least two characters (the engine refuses "a")."""

MAX_BINDS = 64
"""Most host binds one create may ask for (each is walked, and checked against every other)."""

_PORT_KEY = re.compile(r"([0-9]{1,5})(?:/([a-z]+))?")
_PROTOCOLS = ("tcp", "udp")
_MEMORY = re.compile(r"([0-9]{1,15})([bkmg]?)", re.IGNORECASE)
_MEMORY_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
_MIN_MEMORY = 6 << 20

MANAGER_LABEL_PREFIX = "flowmgr."
"""The manager's own label keys (ownership, instance, ports): no caller may set one."""
FLOW_META = ("flow_id", "flow_run_id", "flow_name", "graph_hash", "correlation_id")
"""The platform's ids a create may carry, kept as `flowmgr.<key>` labels (the command's
correlation_id too: a redelivered create finds the container it made)."""
_LABEL_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_./-]{0,127}", re.ASCII)
_MAX_LABELS = 64
_MAX_LABEL_VALUE = 1024
"""Docker refuses memory limits below 6 MiB."""

# The distribution reference grammar (what the engine's create accepts), kept in one regex;
# a digest as the engine checks it: a known algorithm and exactly its length of lower-case hex.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_DOMAIN = rf"{_LABEL}(?:\.{_LABEL})*(?::[0-9]+)?"
_DIGEST = r"sha256:[0-9a-f]{64}|sha384:[0-9a-f]{96}|sha512:[0-9a-f]{128}"
_IMAGE = re.compile(
    rf"(?:(?:{_DOMAIN})/)?{_COMPONENT}(?:/{_COMPONENT})*"
    rf"(?::[\w][\w.-]{{0,127}})?(?:@(?:{_DIGEST}))?",
    re.ASCII,
)
_IMAGE_ID = re.compile(r"sha256:[0-9a-f]{64}")


def check_shapes(spec: CreateSpec) -> None:
    """Raise the InvalidRequest of the first field (in FIELDS order) whose shape is wrong."""
    for field in FIELDS:
        _CHECKS[field](spec)


def shape_problems(spec: CreateSpec) -> dict[str, str]:
    """Every field's first problem (field -> message), for a form showing them all at once."""
    out: dict[str, str] = {}
    for field in FIELDS:
        try:
            _CHECKS[field](spec)
        except InvalidRequest as err:
            out[str(err.details.get("field", field))] = err.message
    return out


def check_name(name: object) -> None:
    """Docker's name rule, at most MAX_NAME_LENGTH characters."""
    if not isinstance(name, str) or not name:
        raise InvalidRequest("name must be a non-empty string", field="name")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidRequest(f"name must be at most {MAX_NAME_LENGTH} characters", field="name")
    if not _NAME.fullmatch(name):
        raise InvalidRequest(
            "name may hold only letters, digits, '_', '.' and '-', must "
            "start with a letter or digit and be at least 2 characters long",
            field="name",
        )


def check_image(image: object) -> None:
    """None (the configured default) or a reference the engine would parse."""
    if image is None:
        return
    if not isinstance(image, str) or not image:
        raise InvalidRequest("image must be a non-empty string", field="image")
    if len(image) > 255 or not (_IMAGE.fullmatch(image) or _IMAGE_ID.fullmatch(image)):
        raise InvalidRequest(
            f"image {image[:80]!r} is not a valid image reference (like "
            "flow:latest; a digest is sha256: and 64 lower-case hex digits)",
            field="image",
        )


def check_volumes(volumes: object) -> list[tuple[str, str, Mode]]:
    """(host path, clean container path, mode) per bind: each host path plain and absolute,
    each container path absolute and used once, the mode "ro" unless ":rw" is asked for.
    Whether a host path may be mounted is the server's (`host.py`): lexically first."""
    if not isinstance(volumes, Mapping):
        raise InvalidRequest("volumes must map host paths to container paths", field="volumes")
    if len(volumes) > MAX_BINDS:
        raise InvalidRequest(f"volumes may hold at most {MAX_BINDS} mounts", field="volumes")
    out: list[tuple[str, str, Mode]] = []
    targets: set[str] = set()
    for host, target in volumes.items():
        clean, mode = _container_path(target)
        if clean in targets:
            raise InvalidRequest(f"container path {clean} is mounted twice", field="volumes")
        targets.add(clean)
        if not isinstance(host, str):
            raise InvalidRequest("host path must be a string", field="volumes")
        problem = plain_path_problem(host)
        if problem:
            raise InvalidRequest(f"host path {host[:200]!r} {problem}", field="volumes")
        out.append((host, clean, mode))
    return out


def _container_path(target: object) -> tuple[str, Mode]:
    if not isinstance(target, str):
        raise InvalidRequest(
            f"container path {str(target)[:200]!r} must be a string", field="volumes"
        )
    target, mode = split_mode(target)
    if not target.startswith("/"):
        raise InvalidRequest(f"container path {target[:200]!r} must be absolute", field="volumes")
    if any(c in target for c in ("\0", ":", ",", "\n")):
        raise InvalidRequest(
            f"container path {target[:200]!r} holds a NUL, ':', ',' or newline", field="volumes"
        )
    if not utf8_text(target):
        raise InvalidRequest(
            f"container path {target[:200]!r} is not UTF-8 (a lone surrogate)", field="volumes"
        )
    if ".." in target.split("/"):
        raise InvalidRequest(f"container path {target[:200]!r} may not hold '..'", field="volumes")
    clean = lexical(target)
    if clean == "/":
        raise InvalidRequest("container path may not be /", field="volumes")
    return clean, mode or "ro"


def check_ports(ports: object) -> dict[str, int]:
    """Container port ("8080", "8080/tcp", "53/udp") -> host port 1-65535, as given (host
    ports written as ASCII digits become ints); no host port twice per protocol, no container
    port twice. SCTP is refused: the service checks a host port is free for TCP/UDP only."""
    if not isinstance(ports, Mapping):
        raise InvalidRequest("ports must map container ports to host ports", field="ports")
    out: dict[str, int] = {}
    used: set[tuple[int, str]] = set()
    seen: set[str] = set()
    for key, host in ports.items():
        m = _PORT_KEY.fullmatch(key) if isinstance(key, str) else None
        if m is None or not 1 <= int(m.group(1)) <= 65535:
            raise InvalidRequest(
                f"container port {str(key)[:40]!r} must be 1-65535, optionally with /tcp or /udp",
                field="ports",
            )
        proto = m.group(2) or "tcp"
        if proto not in _PROTOCOLS:
            raise InvalidRequest(
                f"container port {key!r}: protocol must be tcp or udp", field="ports"
            )
        binding = f"{int(m.group(1))}/{proto}"
        if binding in seen:
            raise InvalidRequest(f"container port {binding} is published twice", field="ports")
        seen.add(binding)
        number = _host_port(key, host)
        if (number, proto) in used:
            raise InvalidRequest(f"host port {number}/{proto} is published twice", field="ports")
        used.add((number, proto))
        out[key] = number
    return out


def _host_port(key: str, host: object) -> int:
    if isinstance(host, str) and host.isascii() and host.isdigit():
        host = int(host)
    if isinstance(host, bool) or not isinstance(host, int) or not 1 <= host <= 65535:
        raise InvalidRequest(
            f"host port {str(host)[:20]!r} for {key!r} is not a port (a number 1-65535)",
            field="ports",
        )
    return host


def port_bindings(ports: Mapping[str, int]) -> dict[str, int]:
    """Checked ports in the engine's spelling: {"8080": 18080} -> {"8080/tcp": 18080}."""
    out: dict[str, int] = {}
    for key, host in ports.items():
        number, _, proto = key.partition("/")
        out[f"{int(number)}/{proto or 'tcp'}"] = host
    return out


PORTS_LABEL = "flowmgr.ports"
"""The container label holding a create's `ports` as the client wrote them (`{"8080": 8080}`),
so they are echoed in that spelling after a manager restart too (the engine keeps "8080/tcp")."""
MAX_PORTS_LABEL = 16 << 10
"""Longest ports label read back (~1,200 ports; parsed on the loop at every inspect, ~5 ms at
this size): a create publishing more shows the engine's spelling."""


def ports_label(ports: Mapping[str, int]) -> str:
    """The checked ports of a create, for PORTS_LABEL."""
    return json.dumps(dict(ports), separators=(",", ":"))


def ports_as_written(
    label: object, engine: Mapping[str, int | None]
) -> tuple[dict[str, int | None], str | None]:
    """The ports as the client wrote them, from a container's PORTS_LABEL and the engine's
    bindings ("8080/tcp" -> host port); with the reason, the engine's spelling instead.

    The label comes back from the engine: untrusted input. It is used only when it passes the
    create rules (`check_ports`) and names exactly the bindings the engine has, host ports
    included; otherwise the engine's own spelling is shown, which is always true."""
    if label is None:
        return dict(engine), None
    if not isinstance(label, str) or len(label) > MAX_PORTS_LABEL:
        return dict(engine), f"label {PORTS_LABEL} is not a string of at most 16 KiB"
    try:
        decoded = json.loads(label)
    except (ValueError, RecursionError):
        return dict(engine), f"label {PORTS_LABEL} is not JSON"
    try:
        written = check_ports(decoded)
    except InvalidRequest as err:
        return dict(engine), f"label {PORTS_LABEL}: {err.message}"
    if port_bindings(written) != dict(engine):
        return dict(engine), f"label {PORTS_LABEL} does not match the published ports"
    return dict(written), None


def check_command(command: object) -> None:
    """None (the image's) or a list of strings without NUL."""
    if command is None:
        return
    if not isinstance(command, list) or not all(
        isinstance(a, str) and "\0" not in a for a in command
    ):
        raise InvalidRequest("command must be a list of strings without NUL", field="command")


def check_labels(labels: object, flow_meta: object) -> None:
    """User labels: at most 64 plain keys, none in (or case-folding into) the manager's own
    `flowmgr.` namespace, no key beginning or ending in a dot (Docker's reserved forms); short
    values without NUL. The platform's ids: known keys, the same value rules."""
    if not isinstance(labels, dict) or len(labels) > _MAX_LABELS:
        raise InvalidRequest(f"labels must be an object of at most {_MAX_LABELS}", field="labels")
    for key, value in labels.items():
        if not isinstance(key, str) or not _LABEL_KEY.fullmatch(key) or key.endswith("."):
            raise InvalidRequest(
                "a label key holds letters, digits, '_', '.', '/' and '-' (at most 128), "
                "starting with a letter or digit",
                field="labels",
            )
        if key.lower().startswith(MANAGER_LABEL_PREFIX):
            raise InvalidRequest(
                f"label {key!r}: the {MANAGER_LABEL_PREFIX}* labels are the manager's own",
                field="labels",
            )
        _check_label_value(value, "labels")
    if not isinstance(flow_meta, dict):
        raise InvalidRequest("the flow ids must be strings", field="flow_id")
    for key, value in flow_meta.items():
        if key not in FLOW_META:
            raise InvalidRequest(f"{str(key)[:40]!r} is not a flow id", field="flow_id")
        _check_label_value(value, key)


def _check_label_value(value: object, field: str) -> None:
    if not isinstance(value, str) or len(value) > _MAX_LABEL_VALUE or "\0" in value:
        raise InvalidRequest(
            f"{field}: values are strings of at most {_MAX_LABEL_VALUE} characters without NUL",
            field=field,
        )


def check_memory_limit(value: object) -> None:
    """None (the configured default) or a Docker memory size of at least 6m."""
    if value is not None:
        memory_bytes(value, field="memory_limit")


def memory_bytes(value: object, *, field: str) -> int:
    """Parse a Docker memory size ("64m", "1g", "1048576"); raise InvalidRequest when bad."""
    m = _MEMORY.fullmatch(value) if isinstance(value, str) else None
    if m is None:
        raise InvalidRequest(f"{field} must look like 64m, 1g or a byte count", field=field)
    size = int(m.group(1)) * _MEMORY_UNITS[m.group(2).lower()]
    if size < _MIN_MEMORY:
        raise InvalidRequest(f"{field} must be at least 6m (Docker's minimum)", field=field)
    return size


def lexical(path: str) -> str:
    """Normalise slashes and '.' without touching the disk ('//x/./y/' -> '/x/y')."""
    return "/" + posixpath.normpath(path).lstrip("/") if path.strip("/") else "/"


def related(a: str, b: str) -> bool:
    """True when a is b, lies beneath b, or holds b."""
    return a == b or a.startswith(b.rstrip("/") + "/") or b.startswith(a.rstrip("/") + "/")


_CHECKS: dict[str, Callable[[CreateSpec], object]] = {
    "name": lambda s: check_name(s.name),
    "image": lambda s: check_image(s.image),
    "environment": lambda s: check_environment(s.environment),
    "volumes": lambda s: check_volumes(s.volumes),
    "ports": lambda s: check_ports(s.ports),
    "command": lambda s: check_command(s.command),
    "memory_limit": lambda s: check_memory_limit(s.memory_limit),
    "labels": lambda s: check_labels(s.labels, s.flow_meta),
}
