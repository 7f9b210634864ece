"""Where the agent listens for a flow's task: in the flow's socket volume on this node.

docs/CLUSTER.md "The flow channel follows the flow": a flow's service mounts the named local
volume `flowmgr-sock-<flow name>` (server/core/swarm/spec.py) at `docker.socket_mount`; Swarm
creates it on whichever node runs the task. The agent listens at `<mountpoint>/flow.sock`,
and ONLY when everything about that mount is ours:

- the container carries our labels (`flowmgr.managed`, our `flowmgr.instance`, a plain
  `flowmgr.name`) and Swarm's service and task ids;
- its one mount at `socket_mount` is a volume named exactly `flowmgr-sock-<its flowmgr.name>`,
  of the `local` driver, whose source is `<DockerRootDir>/volumes/<that name>/_data`;
- the volume carries our labels and has no driver options (a local volume with options can
  be a bind of any host path in disguise: `-o type=none -o o=bind -o device=/etc`);
- every directory from `/` to `_data` is a directory (not a link), owned by root, and not
  writable by others unless sticky; `_data` is then made 0711 (a flow of any uid may reach the
  socket, none may list or change the directory but root).

Anything else (a bind of /etc, a volume of another name or owner, a `_data` that is a link)
gets no channel: FlowSocketError, said once by the core as an activity line.
"""

from __future__ import annotations

import asyncio
import os
import re
import stat
from collections.abc import Callable
from typing import Any

from server.cluster.agent_docker import AgentAdapter
from server.core.container_info import ContainerInfo
from server.core.errors import FlowMgrError, FlowSocketError
from server.core.swarm.spec import socket_volume

__all__ = [
    "SERVICE_LABEL",
    "TASK_LABEL",
    "SOCKET_FILE",
    "VolumePlace",
    "flow_name_of",
    "mount_problem",
    "secure_data_dir",
]

SERVICE_LABEL = "com.docker.swarm.service.id"
"""Swarm's label on a task's container: the service, i.e. the flow's id in cluster mode."""
TASK_LABEL = "com.docker.swarm.task.id"
SOCKET_FILE = "flow.sock"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}", re.ASCII)
"""A flow's name as the validator allows it (a container name)."""
_ID = re.compile(r"[0-9a-z]{25}", re.ASCII)


def flow_name_of(labels: dict[str, str]) -> str | None:
    """The container's `flowmgr.name` label when it is a plain flow name, else None."""
    name = labels.get("flowmgr.name")
    return name if isinstance(name, str) and _NAME.fullmatch(name) else None


def mount_problem(
    container: dict[str, Any],
    volume: dict[str, Any] | None,
    *,
    socket_mount: str,
    docker_root: str,
    instance: str,
) -> str | None:
    """Why the raw inspects of a task's container and of its socket volume do not make a socket
    place the agent owns (None: they do). Pure."""
    labels = (container.get("Config") or {}).get("Labels") or {}
    if labels.get("flowmgr.managed") != "true" or labels.get("flowmgr.instance") != instance:
        return "it does not carry this instance's labels"
    name = flow_name_of(labels)
    if name is None:
        return "its flowmgr.name label is not a flow name"
    if not _ID.fullmatch(str(labels.get(SERVICE_LABEL, ""))) or not _ID.fullmatch(
        str(labels.get(TASK_LABEL, ""))
    ):
        return "it is not a Swarm task (no service and task ids)"
    mounts = [m for m in container.get("Mounts") or [] if m.get("Destination") == socket_mount]
    if len(mounts) != 1:
        return f"it has {len(mounts)} mounts at {socket_mount}, not one"
    mount = mounts[0]
    want = socket_volume(name)
    data = os.path.join(docker_root, "volumes", want, "_data")
    if mount.get("Type") != "volume":
        return f"its {socket_mount} is a {mount.get('Type')} mount, not the volume {want}"
    if mount.get("Name") != want:
        return f"its {socket_mount} is the volume {str(mount.get('Name'))[:80]!r}, not {want}"
    if mount.get("Driver") != "local":
        return f"the volume {want} uses the driver {str(mount.get('Driver'))[:40]!r}, not local"
    if mount.get("Source") != data:
        return f"the volume {want} is mounted from {str(mount.get('Source'))[:200]!r}, not {data}"
    if volume is None:
        return f"the volume {want} does not exist"
    vlabels = volume.get("Labels") or {}
    if (
        volume.get("Name") != want
        or vlabels.get("flowmgr.managed") != "true"
        or vlabels.get("flowmgr.instance") != instance
        or vlabels.get("flowmgr.name") != name
    ):
        return f"the volume {want} does not carry this flow's labels"
    if volume.get("Driver") != "local" or volume.get("Options"):
        return f"the volume {want} is not a plain local volume (driver options)"
    if volume.get("Mountpoint") != data:
        return f"the volume {want} lives at {str(volume.get('Mountpoint'))[:200]!r}, not {data}"
    return None


def secure_data_dir(path: str) -> None:
    """Walk `path` (absolute) from `/` without following any link: every step a directory
    owned by root, not writable by group or others unless sticky (the last one, `_data`, may
    be: its mode is the flow's to change), then make the last one 0711. OSError or
    FlowSocketError when that does not hold. Blocking."""
    if not os.path.isabs(path) or ".." in path.split("/"):
        raise FlowSocketError(f"{path[:200]!r} is not a plain absolute path")
    parts = [p for p in path.split("/") if p]
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
    try:
        _check_step(fd, "/")
        where = ""
        for n, part in enumerate(parts, 1):
            where += "/" + part
            try:
                nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as err:
                raise FlowSocketError(
                    f"{where} is not a directory reached without links: {err.strerror}"
                ) from None
            os.close(fd)
            fd = nxt
            # the flow (root in its container) owns the inside of `_data` and may chmod it:
            # its mode is set below, not held against it
            _check_step(fd, where, mode_checked=n < len(parts))
        os.fchmod(fd, 0o711)
    finally:
        os.close(fd)


def _check_step(fd: int, where: str, *, mode_checked: bool = True) -> None:
    st = os.fstat(fd)
    if not stat.S_ISDIR(st.st_mode):
        raise FlowSocketError(f"{where} is not a directory")
    if st.st_uid != 0:
        raise FlowSocketError(f"{where} is owned by uid {st.st_uid}, not root")
    if mode_checked and st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        raise FlowSocketError(f"{where} is writable by others (mode {stat.S_IMODE(st.st_mode):o})")


class VolumePlace:
    """The core's SocketPlace on a node: a task's socket is in its flow's volume."""

    def __init__(
        self,
        adapter: AgentAdapter,
        *,
        docker_root: str,
        socket_mount: str,
        instance: str,
        newest: Callable[[ContainerInfo], bool] | None = None,
    ) -> None:
        self.adapter = adapter
        self.docker_root = docker_root
        self.socket_mount = socket_mount
        self.instance = instance
        self.newest = newest
        """Whether a container is its flow's newest task container here: the tasks of one flow
        on one node share its volume, so only the newest may hold the socket (an older one
        listening again would take the path, and the running flow's connection with it)."""

    def data_dir(self, flow_name: str) -> str:
        """Where the volume of `flow_name` lives on this node."""
        return os.path.join(self.docker_root, "volumes", socket_volume(flow_name), "_data")

    def socket_path_for(self, info: ContainerInfo) -> str:
        name = flow_name_of(info.labels) or "-"
        return os.path.join(self.data_dir(name), SOCKET_FILE)

    async def verify(self, info: ContainerInfo) -> None:
        if self.newest is not None and not self.newest(info):
            raise FlowSocketError(
                f"no flow socket for {info.name}: an older task of its flow (the newest one "
                "on this node holds the flow's socket)",
                details={"container_id": info.id, "reason": "older_task"},
            )
        try:
            raw = await self.adapter.inspect_raw(info.id)
            name = flow_name_of((raw.get("Config") or {}).get("Labels") or {})
            volume: dict[str, Any] | None = None
            if name is not None:
                try:
                    volume = await self.adapter.inspect_volume(socket_volume(name))
                except FlowMgrError:
                    volume = None
        except FlowMgrError as err:
            raise FlowSocketError(f"cannot inspect {info.name}: {err}") from None
        problem = mount_problem(
            raw,
            volume,
            socket_mount=self.socket_mount,
            docker_root=self.docker_root,
            instance=self.instance,
        )
        if problem is None and name is not None:
            try:
                await asyncio.to_thread(secure_data_dir, self.data_dir(name))
            except OSError as err:
                problem = f"cannot secure {self.data_dir(name)}: {err.strerror}"
            except FlowSocketError as err:
                problem = err.message
        if problem is not None:
            raise FlowSocketError(
                f"no flow socket for {info.name}: {problem}",
                details={"container_id": info.id, "reason": "socket_mount_refused"},
            )
