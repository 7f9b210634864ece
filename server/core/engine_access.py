"""Why this process cannot use the Docker Engine's Unix socket, and the flag that fixes it.

The monitor asks when the engine does not answer, so the one log line, `/health` and the
`engine_status` push all name the cause (a missing mount, a group the process lacks) instead of
a bare "Permission denied". Blocking (a stat): call it from a worker thread.
"""

from __future__ import annotations

import os
import stat

__all__ = ["DEFAULT_SOCKET", "GID_ENV", "engine_socket_path", "socket_access_problem"]

DEFAULT_SOCKET = "/var/run/docker.sock"
GID_ENV = "FLOWMGR_DOCKER_GID"
"""The flow-manager image's override of the group it joins (the only way it joins gid 0)."""


def engine_socket_path(url: str | None) -> str | None:
    """The Unix socket behind an engine URL (None or "" = DOCKER_HOST's default); None for
    tcp:// and ssh://, which need no socket group."""
    if not url:
        return DEFAULT_SOCKET
    for prefix in ("unix://", "http+unix://"):
        if url.startswith(prefix):
            return url[len(prefix) :] or DEFAULT_SOCKET
    return None


def socket_access_problem(path: str) -> str | None:
    """One sentence on what keeps this process from `path` and what fixes it; None when the
    socket is there and this process may read and write it."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return (
            f"no Docker socket at {path}: mount the engine's socket into the service "
            f"(docker run -v /var/run/docker.sock:{path}; compose and Kubernetes: the same volume)"
        )
    except OSError as err:
        return f"cannot look at the Docker socket {path}: {err.strerror}"
    if not stat.S_ISSOCK(st.st_mode):
        return f"{path} is not a socket: mount the engine's socket there"
    if os.access(path, os.R_OK | os.W_OK):
        return None
    who = f"uid {os.getuid()} (groups {','.join(str(g) for g in _groups())})"
    if st.st_gid == 0:
        return (
            f"permission denied on {path} for {who}: the socket belongs to group 0 (root), "
            f"which the service does not join on its own; accept it with -e {GID_ENV}=0 "
            f"(the flow-manager image) or give the socket a group of its own on the host"
        )
    return (
        f"permission denied on {path} (group {st.st_gid}, mode {stat.S_IMODE(st.st_mode):04o}) "
        f"for {who}: add that group, docker run --group-add {st.st_gid} (compose: group_add: "
        f'["{st.st_gid}"]; Kubernetes: supplementalGroups; systemd: SupplementaryGroups=); '
        f"the flow-manager image joins it by itself when it starts as root"
    )


def _groups() -> list[int]:
    return sorted({os.getgid(), *os.getgroups()})
