"""Plain values the Docker adapter hands out, and the thread-to-loop plumbing of its streams."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from server.core.masking import secret_env_values
from server.core.validation.shapes import PORTS_LABEL, ports_as_written

__all__ = [
    "ContainerInfo",
    "BindMount",
    "StreamHandle",
    "parse_time",
    "to_loop",
    "info_from_inspect",
]

logger = logging.getLogger(__name__)


_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?$")


def parse_time(value: str | None) -> datetime | None:
    """Docker's RFC 3339 timestamps (nanoseconds, `Z`) as aware datetimes; zero time is None."""
    if not value or value.startswith("0001-01-01"):
        return None
    m = _TIME.match(value)
    if m is None:
        return None
    tz = m.group(3) or "Z"
    stamp = f"{m.group(1)}.{(m.group(2) or '0')[:6]}{'+00:00' if tz == 'Z' else tz}"
    return datetime.fromisoformat(stamp).astimezone(UTC)


@dataclass(frozen=True, slots=True)
class BindMount:
    """One host bind of a container: host source, container target, and whether it is
    read-only (what `DockerAdapter.create` takes and what an inspect's Mounts say)."""

    source: str
    target: str
    read_only: bool = True


@dataclass(frozen=True, slots=True)
class ContainerInfo:
    """What an inspect tells the manager, without the raw dict."""

    id: str
    name: str
    image: str
    status: str
    """Docker's own state word: created, running, paused, restarting, removing, exited, dead."""
    health: str
    created: datetime
    started_at: datetime | None
    finished_at: datetime | None
    exit_code: int
    oom_killed: bool
    pid: int
    labels: dict[str, str] = field(default_factory=dict)
    ports: dict[str, int | None] = field(default_factory=dict)
    """Container port -> host port, the keys as the create request wrote them ("8080",
    "53/udp"); in the engine's spelling ("8080/tcp") when that is not known."""
    ports_problem: str | None = None
    """Why its ports label was not used (an adopted container's label is untrusted)."""
    mounts: dict[str, str] = field(default_factory=dict)
    """Container path -> host path of bind mounts."""
    binds: tuple[BindMount, ...] = ()
    """Every bind mount, with its mode (the manager re-checks host sources before a start)."""
    asked_ns: int = 0
    """Wall clock (ns) when the inspect was sent: it reflects every event older than this."""
    secret_values: tuple[str, ...] = field(default=(), repr=False)
    node: str | None = None
    """Cluster mode: where the flow's current task runs (hostname, node ID, task ID)."""
    node_id: str | None = None
    task_id: str | None = None
    """Its secret-named env values (`masking.secret_env_values`), masked in its output. Kept out
    of repr; snapshots and wire payloads copy named fields only, never this one."""


def info_from_inspect(raw: dict[str, Any], asked_ns: int = 0) -> ContainerInfo:
    """An inspect answer as a ContainerInfo (called by the adapter only)."""
    state = raw.get("State") or {}
    cfg = raw.get("Config") or {}
    health = (state.get("Health") or {}).get("Status") or "none"
    ports: dict[str, int | None] = {}
    bindings = (raw.get("HostConfig") or {}).get("PortBindings") or {}
    for cport, binds in bindings.items():
        host = (binds or [{}])[0].get("HostPort") or ""
        ports[cport] = int(host) if host.isdigit() else None
    labels = dict(cfg.get("Labels") or {})
    ports, ports_problem = ports_as_written(labels.get(PORTS_LABEL), ports)
    mounts = {
        m["Destination"]: m.get("Source", "")
        for m in raw.get("Mounts") or []
        if m.get("Type") == "bind"
    }
    binds = tuple(
        BindMount(str(m.get("Source", "")), str(m.get("Destination", "")), not m.get("RW", False))
        for m in raw.get("Mounts") or []
        if m.get("Type") == "bind"
    )
    return ContainerInfo(
        id=raw["Id"],
        name=str(raw.get("Name", "")).lstrip("/"),
        image=str(cfg.get("Image") or raw.get("Image", "")),
        status=str(state.get("Status", "dead")),
        health=health if health in ("healthy", "unhealthy", "starting") else "none",
        created=parse_time(raw.get("Created")) or datetime.now(UTC),
        started_at=parse_time(state.get("StartedAt")),
        finished_at=parse_time(state.get("FinishedAt")),
        exit_code=int(state.get("ExitCode") or 0),
        oom_killed=bool(state.get("OOMKilled")),
        pid=int(state.get("Pid") or 0),
        labels=labels,
        ports=ports,
        ports_problem=ports_problem,
        mounts=mounts,
        binds=binds,
        asked_ns=asked_ns,
        secret_values=secret_env_values(cfg.get("Env") or []),
    )


def to_loop(loop: asyncio.AbstractEventLoop, fn: Any, arg: Any) -> None:
    """Hand an item from a stream thread to the loop; after shutdown there is no one to tell."""
    try:
        loop.call_soon_threadsafe(fn, arg)
    except RuntimeError:
        logger.debug("event loop closed; dropping a late Docker stream item")


class StreamHandle:
    """A long stream (events, logs) read in its own thread; `close()` ends it from any thread."""

    def __init__(self) -> None:
        self._stream: Any = None
        self._closed = False
        self._lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def _attach(self, stream: Any) -> bool:
        with self._lock:
            self._stream = stream
            return not self._closed

    def close(self) -> None:
        """Stop the stream; its reader thread then ends."""
        with self._lock:
            self._closed = True
            stream = self._stream
        if stream is not None:
            try:
                stream.close()
            except Exception:  # noqa: BLE001 - closing a dead socket is best effort
                logger.debug("closing a docker stream failed", exc_info=True)

    @property
    def closed(self) -> bool:
        """True once `close()` was called."""
        return self._closed
