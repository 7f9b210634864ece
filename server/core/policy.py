"""What a flow may get: checks on a create request before any Docker call, and safe defaults."""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from server.core.code_update import check_code_settings, open_code_tree
from server.core.config import DEFAULT_CONFIG_FILE, Settings
from server.core.container_info import BindMount
from server.core.errors import ConfigError, InvalidRequest
from server.core.flow_env import check_environment
from server.core.host_paths import (
    HostPathError,
    Pin,
    closed_to_others,
    plain_path_problem,
    root_for,
    split_mode,
    walk,
)
from server.core.models import CreateSpec

__all__ = ["validate_create", "validate_code_path", "validate_code_settings",
           "host_config_defaults", "protected_host_paths", "validate_bind_roots", "adopted_pins",
           "MAX_NAME_LENGTH"]

MAX_NAME_LENGTH = 63
"""Longest container name accepted; `<state_dir>/<name>/flow.sock` must fit in 107 bytes too."""
_MAX_SOCKET_PATH = 107
"""sun_path holds 108 bytes including the terminating NUL."""
_SOCKET_FILE = "flow.sock"

_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
_PORT_KEY = re.compile(r"([0-9]{1,5})(?:/([a-z]+))?")
_MEMORY = re.compile(r"([0-9]{1,15})([bkmg]?)", re.IGNORECASE)
_MEMORY_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
_MIN_MEMORY = 6 << 20
"""Docker refuses memory limits below 6 MiB."""

# The distribution reference grammar (what `docker create` accepts), kept in one regex.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_DOMAIN = rf"{_LABEL}(?:\.{_LABEL})*(?::[0-9]+)?"
_IMAGE = re.compile(
    rf"(?:(?:{_DOMAIN})/)?{_COMPONENT}(?:/{_COMPONENT})*"
    r"(?::[\w][\w.-]{0,127})?(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?",
    re.ASCII,
)
_IMAGE_ID = re.compile(r"sha256:[0-9a-f]{64}")

MAX_BINDS = 64
"""Most host binds one create may ask for (each is walked, and checked against every other)."""

_SYSTEM_PATHS = ("/proc", "/sys", "/dev", "/etc", "/boot", "/run", "/var/run",
                 "/var/lib/containerd", "/var/run/docker.sock", "/run/docker.sock")
"""Host paths no flow may mount, nor anything beneath them, nor any directory holding them."""


def validate_create(
    spec: CreateSpec, settings: Settings, *, env: Mapping[str, str] | None = None
) -> CreateSpec:
    """Return the spec (binds checked and pinned, host ports as ints) or raise InvalidRequest.

    Walks the host bind sources on disk: call it in a thread.
    """
    env = os.environ if env is None else env
    _check_name(spec.name, settings)
    if spec.image is not None:
        _check_image(spec.image)
    check_environment(spec.environment)  # flow_env.REFUSED_ENV: the one list
    binds = _check_volumes(spec.volumes, settings, env)
    ports = _check_ports(spec.ports, settings)
    _check_command(spec.command)
    if spec.memory_limit is not None:
        memory_bytes(spec.memory_limit, field="memory_limit")
    return replace(spec, volumes={p.source: f"{p.target}:{p.mode}" for p in binds},
                   binds=binds, ports=ports, environment=dict(spec.environment))


def validate_code_path(
    code_path: object, settings: Settings, *, env: Mapping[str, str] | None = None
) -> str:
    """The normalised `update_container` source, or InvalidRequest(field="code_path"): it must
    lie at or beneath one of `docker.code_roots` (checked lexically first, so no answer tells
    what exists outside them) and be reached without any symbolic link (`code_update`)."""
    with open_code_tree(code_path, settings) as tree:
        return tree.path


def validate_code_settings(settings: Settings, *, env: Mapping[str, str] | None = None) -> None:
    """At manager start: ConfigError unless `docker.code_dir` and `docker.code_roots` are safe
    (no root is, holds or lies beneath a protected host path, the config or the token file)."""
    env = os.environ if env is None else env
    check_code_settings(settings, protected_host_paths(settings, env))


def host_config_defaults(settings: Settings) -> dict[str, Any]:
    """The `containers.create` keyword arguments every flow gets (docker-py names)."""
    d = settings.docker
    restart: dict[str, Any] = {"Name": d.restart_policy}
    if d.restart_policy == "on-failure":
        restart["MaximumRetryCount"] = d.restart_max_retries
    kwargs: dict[str, Any] = {
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "pids_limit": d.pids_limit,
        "mem_limit": d.memory_limit,
        "nano_cpus": int(d.cpu_limit * 1_000_000_000),
        "restart_policy": restart,
        "read_only": d.read_only,
        # the engine rotates each flow's output: a chatty flow cannot fill the host's disk
        "log_config": {"type": "json-file", "config": {
            "max-size": d.log_max_size, "max-file": str(d.log_max_files)}},
    }
    if d.cap_add:
        kwargs["cap_add"] = list(d.cap_add)
    if d.read_only:
        # Most programs need a writable /tmp; it stays in memory and dies with the container.
        kwargs["tmpfs"] = {"/tmp": "rw,nosuid,nodev,size=64m"}
    return kwargs


def memory_bytes(value: str, *, field: str) -> int:
    """Parse a Docker memory size ("64m", "1g", "1048576"); raise InvalidRequest when bad."""
    m = _MEMORY.fullmatch(value) if isinstance(value, str) else None
    if m is None:
        raise InvalidRequest(f"{field} must look like 64m, 1g or a byte count", field=field)
    size = int(m.group(1)) * _MEMORY_UNITS[m.group(2).lower()]
    if size < _MIN_MEMORY:
        raise InvalidRequest(f"{field} must be at least 6m (Docker's minimum)", field=field)
    return size


def protected_host_paths(settings: Settings, env: Mapping[str, str]) -> list[str]:
    """Every host path a flow may not mount, contain or reach, each absolute."""
    paths = [*_SYSTEM_PATHS, settings.docker.data_root, settings.socket_dir,
             *settings.docker.forbidden_host_paths]
    docker_host = env.get("DOCKER_HOST", "")
    if docker_host.startswith("unix://"):
        paths.append(docker_host[len("unix://"):])
    out: list[str] = []
    for p in paths:
        if p.startswith("/"):
            out.extend({_lexical(p), os.path.realpath(p)})
    return out


def _check_name(name: object, settings: Settings) -> None:
    if not isinstance(name, str) or not name:
        raise InvalidRequest("name must be a non-empty string", field="name")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidRequest(f"name must be at most {MAX_NAME_LENGTH} characters", field="name")
    if not _NAME.fullmatch(name):
        raise InvalidRequest("name may hold only letters, digits, '_', '.' and '-', and must "
                             "start with a letter or digit", field="name")
    sock = posixpath.join(settings.state_dir, name, _SOCKET_FILE)
    size = len(sock.encode())
    if size > _MAX_SOCKET_PATH:
        room = _MAX_SOCKET_PATH - (size - len(name.encode()))
        raise InvalidRequest(
            f"name is too long: the flow's socket path {sock} would be {size} bytes, and Unix "
            f"socket paths hold at most {_MAX_SOCKET_PATH}; with socket_dir "
            f"{settings.socket_dir} (and instance {settings.docker.instance!r}) names may be "
            f"at most {max(room, 0)} characters: choose a shorter name or socket_dir",
            field="name", details={"socket_path_bytes": size, "max_name": max(room, 0)})


def _check_image(image: object) -> None:
    if not isinstance(image, str) or not image:
        raise InvalidRequest("image must be a non-empty string", field="image")
    if len(image) > 255 or not (_IMAGE.fullmatch(image) or _IMAGE_ID.fullmatch(image)):
        raise InvalidRequest(f"image {image[:80]!r} is not a valid image reference",
                             field="image")


def _utf8(text: str) -> bool:
    """False for text holding a lone surrogate: JSON can carry "\\ud800", but the engine would
    receive U+FFFD instead, so the value checked would not be the value used."""
    return text.isascii() or not any("\ud800" <= c <= "\udfff" for c in text)


def _check_volumes(
    volumes: object, settings: Settings, env: Mapping[str, str]
) -> tuple[Pin, ...]:
    if not isinstance(volumes, Mapping):
        raise InvalidRequest("volumes must map host paths to container paths", field="volumes")
    if not volumes:
        return ()
    dk = settings.docker
    if len(volumes) > MAX_BINDS:
        raise InvalidRequest(f"volumes may hold at most {MAX_BINDS} mounts", field="volumes")
    if not dk.bind_roots:
        raise InvalidRequest("host binds are disabled: set docker.bind_roots in the "
                             "configuration to allow mounts from beneath chosen directories",
                             field="volumes")
    roots = [(r.path, r.writable) for r in dk.bind_roots]
    protected = _bind_protected(settings, env)
    out: list[Pin] = []
    targets: set[str] = set()
    for host, target in volumes.items():
        clean, mode = _check_container_path(target, settings)
        if clean in targets:
            raise InvalidRequest(f"container path {clean} is mounted twice", field="volumes")
        targets.add(clean)
        out.append(_check_bind_source(host, clean, mode, roots, protected))
    return tuple(out)


def _check_bind_source(host: object, target: str, mode: str,
                       roots: list[tuple[str, bool]], protected: list[str]) -> Pin:
    """Lexically first (so no answer tells what exists outside the roots), then on disk."""
    if not isinstance(host, str):
        raise InvalidRequest("host path must be a string", field="volumes")
    problem = plain_path_problem(host)
    if problem:
        raise InvalidRequest(f"host path {host[:200]!r} {problem}", field="volumes")
    found = root_for(host, roots)
    if found is None:
        raise InvalidRequest(f"host path {host} is not at or beneath any of docker.bind_roots",
                             field="volumes", details={"host_path": host})
    root, writable = found
    if mode == "rw" and not writable:
        raise InvalidRequest(f"host path {host} may only be mounted read-only: its bind root "
                             f"{root} is not writable (docker.bind_roots writable: false)",
                             field="volumes", details={"host_path": host, "bind_root": root})
    _refuse_related(host, host, protected)  # a second line: roots are checked at start
    try:
        dev, ino = walk(host)
    except HostPathError as err:
        raise InvalidRequest(f"host path {host} may not be mounted: {err}", field="volumes",
                             details={"host_path": host}) from None
    for p in protected:
        if _same_file(host, p):
            raise InvalidRequest(f"host path {host} is the protected path {p} under another name",
                                 field="volumes", details={"host_path": host})
    return Pin(host, target, "rw" if mode == "rw" else "ro", root, dev, ino)


def _bind_protected(settings: Settings, env: Mapping[str, str]) -> list[str]:
    """What no bind root may be, hold or lie beneath: the protected paths, and the manager's
    own checkout, configuration file and token (they hold the token and code run as root)."""
    extra = [str(DEFAULT_CONFIG_FILE.parent), settings.token_path, settings.state_dir]
    if settings.config_file:
        extra.append(settings.config_file)
    out = protected_host_paths(settings, env)
    for p in extra:
        if p.startswith("/"):
            out.extend({_lexical(p), os.path.realpath(p)})
    return out


def validate_bind_roots(settings: Settings, env: Mapping[str, str] | None = None) -> None:
    """Raise ConfigError unless every bind root is a plain absolute path to an existing
    directory reached through no symlink and no directory another user controls, that is not,
    holds nor lies beneath a protected path. Blocking: call it in a thread at start-up."""
    env = os.environ if env is None else env
    protected = _bind_protected(settings, env)
    for root in settings.docker.bind_roots:
        path = root.path
        where = f"docker.bind_roots: {path!r}"
        problem = plain_path_problem(path)
        if problem:
            raise ConfigError(f"{where} {problem}", details={"field": "docker.bind_roots"})
        for p in protected:
            if _related(path, p):
                raise ConfigError(f"{where} is, holds or lies beneath the protected path {p}",
                                  details={"field": "docker.bind_roots"})
        try:
            walk(path, want_dir=True)
        except HostPathError as err:
            hint = ""
            real = os.path.realpath(path)
            if real != path:
                hint = f" (its real path is {real}: name that instead, if it is safe)"
            raise ConfigError(f"{where} cannot serve as a bind root: {err}{hint}",
                              details={"field": "docker.bind_roots"}) from None
        for p in protected:
            if _same_file(path, p):
                raise ConfigError(f"{where} is the protected path {p} under another name",
                                  details={"field": "docker.bind_roots"})
        if root.writable and not closed_to_others(path):
            # flows write there as root: a setuid file one plants must not be run by a user
            raise ConfigError(f"{where} is writable by flows and other users can reach it: "
                              f"chmod 700 it (or a directory above it)",
                              details={"field": "docker.bind_roots"})


def adopted_pins(binds: tuple[BindMount, ...], settings: Settings) -> tuple[Pin, ...]:
    """Pins for the host binds of a container found on the engine (not the socket mount),
    walked again now; HostPathError when one is outside today's roots or fails its walk.
    Blocking: call it in a thread."""
    roots = [(r.path, r.writable) for r in settings.docker.bind_roots]
    out: list[Pin] = []
    for b in binds:
        if b.target == settings.docker.socket_mount:
            continue
        problem = plain_path_problem(b.source)
        found = None if problem else root_for(b.source, roots)
        if found is None:
            raise HostPathError(f"host path {b.source} (at {b.target}) is not beneath any of "
                                "docker.bind_roots")
        if not b.read_only and not found[1]:
            raise HostPathError(f"host path {b.source} is mounted read-write but its bind root "
                                f"{found[0]} is not writable")
        dev, ino = walk(b.source)
        out.append(Pin(b.source, b.target, "ro" if b.read_only else "rw", found[0], dev, ino))
    return tuple(out)


def _check_host_path(host: object, protected: list[str]) -> str:
    if not isinstance(host, str) or not host.startswith("/"):
        raise InvalidRequest(f"host path {str(host)[:200]!r} must be absolute", field="volumes")
    _check_path_text(host, "host path")
    _refuse_related(host, _lexical(host), protected)
    try:
        real = os.path.realpath(host)
    except OSError as err:
        raise InvalidRequest(f"host path {host} cannot be resolved: {err.strerror}",
                             field="volumes", details={"host_path": host}) from None
    _refuse_related(host, real, protected)
    if not os.path.exists(real):
        # Docker would create a missing bind source as root on the host.
        raise InvalidRequest(f"host path {host} does not exist", field="volumes",
                             details={"host_path": host})
    for p in protected:
        if _same_file(real, p):
            raise InvalidRequest(f"host path {host} is the protected path {p} under another name",
                                 field="volumes", details={"host_path": host})
    return real


def _refuse_related(host: str, candidate: str, protected: list[str]) -> None:
    for p in protected:
        if _related(candidate, p):
            raise InvalidRequest(f"host path {host} may not be mounted: it is, holds or lies "
                                 f"beneath the protected path {p}", field="volumes",
                                 details={"host_path": host})


def _check_container_path(target: object, settings: Settings) -> tuple[str, str]:
    """The clean container path and the mode asked for ("ro" unless it ends with ":rw")."""
    if not isinstance(target, str):
        raise InvalidRequest(f"container path {str(target)[:200]!r} must be a string",
                             field="volumes")
    target, mode = split_mode(target)
    if not target.startswith("/"):
        raise InvalidRequest(f"container path {target[:200]!r} must be absolute",
                             field="volumes")
    _check_path_text(target, "container path")
    clean = _lexical(target)
    if clean == "/":
        raise InvalidRequest("container path may not be /", field="volumes")
    dk = settings.docker
    for mount, what in ((dk.socket_mount, "the flow's socket mount"),
                        (dk.data_mount, "the flow's own data volume")):
        if mount and _related(clean, _lexical(mount)):
            raise InvalidRequest(f"container path {target} would cover {what} {mount}",
                                 field="volumes")
    return clean, mode or "ro"


def _check_path_text(path: str, what: str) -> None:
    """Refuse what Docker's bind syntax or a clear reading of the path cannot hold."""
    if any(c in path for c in ("\0", ":", ",", "\n")):
        raise InvalidRequest(f"{what} {path[:200]!r} holds a NUL, ':', ',' or newline",
                             field="volumes")
    if not _utf8(path):
        raise InvalidRequest(f"{what} {path[:200]!r} is not UTF-8 (a lone surrogate)",
                             field="volumes")
    if ".." in path.split("/"):
        raise InvalidRequest(f"{what} {path[:200]!r} may not hold '..'", field="volumes")


def _check_ports(ports: object, settings: Settings) -> dict[str, int]:
    if not isinstance(ports, Mapping):
        raise InvalidRequest("ports must map container ports to host ports", field="ports")
    out: dict[str, int] = {}
    used: set[tuple[int, str]] = set()
    for key, host in ports.items():
        m = _PORT_KEY.fullmatch(str(key))
        if m is None or not 1 <= int(m.group(1)) <= 65535:
            raise InvalidRequest(f"container port {str(key)[:40]!r} must be 1-65535, optionally "
                                 "with /tcp or /udp", field="ports")
        proto = m.group(2) or "tcp"
        if proto not in ("tcp", "udp"):
            raise InvalidRequest(f"container port {key!r}: protocol must be tcp or udp",
                                 field="ports")
        number = _host_port(key, host, settings)
        if (number, proto) in used:
            raise InvalidRequest(f"host port {number}/{proto} is published twice", field="ports")
        used.add((number, proto))
        out[str(key)] = number
    return out


def _host_port(key: object, host: object, settings: Settings) -> int:
    if isinstance(host, str) and host.isascii() and host.isdigit():
        host = int(host)
    if isinstance(host, bool) or not isinstance(host, int) or not 1 <= host <= 65535:
        raise InvalidRequest(f"host port for {key!r} must be a number 1-65535", field="ports")
    if host < 1024 and not settings.docker.allow_privileged_ports:
        raise InvalidRequest(f"host port {host} is privileged (below 1024); set "
                             "docker.allow_privileged_ports to allow it", field="ports")
    return host


def _check_command(command: object) -> None:
    if command is None:
        return
    if not isinstance(command, list) or not all(
        isinstance(a, str) and "\0" not in a for a in command
    ):
        raise InvalidRequest("command must be a list of strings without NUL", field="command")


def _lexical(path: str) -> str:
    """Normalise slashes and '.' without touching the disk ('//x/./y/' -> '/x/y')."""
    return "/" + posixpath.normpath(path).lstrip("/") if path.strip("/") else "/"


def _related(a: str, b: str) -> bool:
    """True when a is b, lies beneath b, or holds b."""
    return a == b or a.startswith(b.rstrip("/") + "/") or b.startswith(a.rstrip("/") + "/")


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
