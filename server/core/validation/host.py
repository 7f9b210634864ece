"""The create rules only the core can run: they read its settings and its host's disk.

`validate_create` runs each field's shape rule (`shapes`, the same the panels run) and then
the server's: the name's socket path, host ports below 1024, container paths that would cover
the flow's own mounts, and host binds (the `docker.bind_roots` allow-list lexically first, so no
answer tells what exists outside the roots; then the walk of `host_paths`; the protected paths
as a second line). Also the start-up checks of the bind roots and the re-walk of an adopted
container's binds.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Mapping
from dataclasses import replace

from server.core.config import DEFAULT_CONFIG_FILE, Settings
from server.core.container_info import BindMount
from server.core.errors import ConfigError, InvalidRequest
from server.core.host_paths import (
    HostPathError,
    Mode,
    Pin,
    closed_to_others,
    plain_path_problem,
    root_for,
    walk,
)
from server.core.models import CreateSpec
from server.core.validation.environment import check_environment
from server.core.validation.shapes import (
    check_command,
    check_image,
    check_labels,
    check_memory_limit,
    check_name,
    check_ports,
    check_volumes,
    lexical,
    related,
)

__all__ = ["validate_create", "protected_host_paths", "validate_bind_roots", "adopted_pins"]

_MAX_SOCKET_PATH = 107
"""sun_path holds 108 bytes including the terminating NUL."""
_SOCKET_FILE = "flow.sock"

_SYSTEM_PATHS = (
    "/proc",
    "/sys",
    "/dev",
    "/etc",
    "/boot",
    "/run",
    "/var/run",
    "/var/lib/containerd",
    "/var/run/docker.sock",
    "/run/docker.sock",
)
"""Host paths no flow may mount, nor anything beneath them, nor any directory holding them."""


def validate_create(
    spec: CreateSpec, settings: Settings, *, env: Mapping[str, str] | None = None
) -> CreateSpec:
    """Return the spec (binds checked and pinned, host ports as ints) or raise InvalidRequest
    for the first failing field, in `shapes.FIELDS` order.

    Walks the host bind sources on disk: call it in a thread when there are volumes.
    """
    env = os.environ if env is None else env
    check_name(spec.name)
    _check_socket_path(spec.name, settings)
    check_image(spec.image)
    check_environment(spec.environment)  # environment.REFUSED_ENV: the one list
    binds = _check_binds(check_volumes(spec.volumes), settings, env)
    ports = check_ports(spec.ports)
    _check_privileged(ports, settings)
    check_command(spec.command)
    check_memory_limit(spec.memory_limit)
    check_labels(spec.labels, spec.flow_meta)  # never a `flowmgr.*` key from a caller
    _check_node(spec.node, settings)
    return replace(
        spec,
        volumes={p.source: f"{p.target}:{p.mode}" for p in binds},
        binds=binds,
        ports=ports,
        environment=dict(spec.environment),
    )


def protected_host_paths(settings: Settings, env: Mapping[str, str]) -> list[str]:
    """Every host path a flow may not mount, contain or reach, each absolute."""
    paths = [
        *_SYSTEM_PATHS,
        settings.docker.data_root,
        settings.socket_dir,
        *settings.docker.forbidden_host_paths,
    ]
    docker_host = env.get("DOCKER_HOST", "")
    if docker_host.startswith("unix://"):
        paths.append(docker_host[len("unix://") :])
    out: list[str] = []
    for p in paths:
        if p.startswith("/"):
            out.extend({lexical(p), os.path.realpath(p)})
    return out


def _check_node(node: object, settings: Settings) -> None:
    """A request's `node` (ext) is a cluster hub's: on one host it is refused, not ignored (a
    client that asks for a node must not believe it got one); the hub matches it exactly
    against the Swarm's node list (`swarm.spec.resolve_node`)."""
    if node is None:
        return
    if settings.cluster.mode != "swarm":
        raise InvalidRequest(
            "node names a Swarm node: only a cluster hub (cluster.mode swarm) places flows",
            field="node",
        )
    if not isinstance(node, str) or not 1 <= len(node) <= 253:
        raise InvalidRequest("node must be a node ID or hostname of 1-253 characters", field="node")


def _check_socket_path(name: str, settings: Settings) -> None:
    """`<state_dir>/<name>/flow.sock` must fit in a Unix socket address."""
    sock = posixpath.join(settings.state_dir, name, _SOCKET_FILE)
    size = len(sock.encode())
    if size > _MAX_SOCKET_PATH:
        room = _MAX_SOCKET_PATH - (size - len(name.encode()))
        raise InvalidRequest(
            f"name is too long: the flow's socket path {sock} would be {size} bytes, and Unix "
            f"socket paths hold at most {_MAX_SOCKET_PATH}; with socket_dir "
            f"{settings.socket_dir} (and instance {settings.docker.instance!r}) names may be "
            f"at most {max(room, 0)} characters: choose a shorter name or socket_dir",
            field="name",
            details={"socket_path_bytes": size, "max_name": max(room, 0)},
        )


def _check_binds(
    binds: list[tuple[str, str, Mode]], settings: Settings, env: Mapping[str, str]
) -> tuple[Pin, ...]:
    if not binds:
        return ()
    dk = settings.docker
    if not dk.bind_roots:
        raise InvalidRequest(
            "host binds are disabled: set docker.bind_roots in the "
            "configuration to allow mounts from beneath chosen directories",
            field="volumes",
        )
    roots = [(r.path, r.writable) for r in dk.bind_roots]
    protected = _bind_protected(settings, env)
    out: list[Pin] = []
    for host, target, mode in binds:
        for mount, what in (
            (dk.socket_mount, "the flow's socket mount"),
            (dk.data_mount, "the flow's own data volume"),
        ):
            if mount and related(target, lexical(mount)):
                raise InvalidRequest(
                    f"container path {target} would cover {what} {mount}", field="volumes"
                )
        out.append(_check_bind_source(host, target, mode, roots, protected))
    return tuple(out)


def _check_bind_source(
    host: str, target: str, mode: Mode, roots: list[tuple[str, bool]], protected: list[str]
) -> Pin:
    """Lexically first (so no answer tells what exists outside the roots), then on disk.
    `host` is plain already (`shapes.check_volumes`)."""
    found = root_for(host, roots)
    if found is None:
        raise InvalidRequest(
            f"host path {host} is not at or beneath any of docker.bind_roots",
            field="volumes",
            details={"host_path": host},
        )
    root, writable = found
    if mode == "rw" and not writable:
        raise InvalidRequest(
            f"host path {host} may only be mounted read-only: its bind root "
            f"{root} is not writable (docker.bind_roots writable: false)",
            field="volumes",
            details={"host_path": host, "bind_root": root},
        )
    _refuse_related(host, host, protected)  # a second line: roots are checked at start
    try:
        dev, ino = walk(host)
    except HostPathError as err:
        raise InvalidRequest(
            f"host path {host} may not be mounted: {err}",
            field="volumes",
            details={"host_path": host},
        ) from None
    for p in protected:
        if _same_file(host, p):
            raise InvalidRequest(
                f"host path {host} is the protected path {p} under another name",
                field="volumes",
                details={"host_path": host},
            )
    return Pin(host, target, mode, root, dev, ino)


def _bind_protected(settings: Settings, env: Mapping[str, str]) -> list[str]:
    """What no bind root may be, hold or lie beneath: the protected paths, and the manager's
    own checkout, configuration file and token (they hold the token and code run as root)."""
    extra = [str(DEFAULT_CONFIG_FILE.parent), settings.token_path, settings.state_dir]
    if settings.config_file:
        extra.append(settings.config_file)
    out = protected_host_paths(settings, env)
    for p in extra:
        if p.startswith("/"):
            out.extend({lexical(p), os.path.realpath(p)})
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
            if related(path, p):
                raise ConfigError(
                    f"{where} is, holds or lies beneath the protected path {p}",
                    details={"field": "docker.bind_roots"},
                )
        try:
            walk(path, want_dir=True)
        except HostPathError as err:
            hint = ""
            real = os.path.realpath(path)
            if real != path:
                hint = f" (its real path is {real}: name that instead, if it is safe)"
            raise ConfigError(
                f"{where} cannot serve as a bind root: {err}{hint}",
                details={"field": "docker.bind_roots"},
            ) from None
        for p in protected:
            if _same_file(path, p):
                raise ConfigError(
                    f"{where} is the protected path {p} under another name",
                    details={"field": "docker.bind_roots"},
                )
        if root.writable and not closed_to_others(path):
            # flows write there as root: a setuid file one plants must not be run by a user
            raise ConfigError(
                f"{where} is writable by flows and other users can reach it: "
                f"chmod 700 it (or a directory above it)",
                details={"field": "docker.bind_roots"},
            )


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
            raise HostPathError(
                f"host path {b.source} (at {b.target}) is not beneath any of docker.bind_roots"
            )
        if not b.read_only and not found[1]:
            raise HostPathError(
                f"host path {b.source} is mounted read-write but its bind root "
                f"{found[0]} is not writable"
            )
        dev, ino = walk(b.source)
        out.append(Pin(b.source, b.target, "ro" if b.read_only else "rw", found[0], dev, ino))
    return tuple(out)


def _refuse_related(host: str, candidate: str, protected: list[str]) -> None:
    for p in protected:
        if related(candidate, p):
            raise InvalidRequest(
                f"host path {host} may not be mounted: it is, holds or lies "
                f"beneath the protected path {p}",
                field="volumes",
                details={"host_path": host},
            )


def _check_privileged(ports: Mapping[str, int], settings: Settings) -> None:
    if settings.docker.allow_privileged_ports:
        return
    for host in ports.values():
        if host < 1024:
            raise InvalidRequest(
                f"host port {host} is privileged (below 1024); set "
                "docker.allow_privileged_ports to allow it",
                field="ports",
            )


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
