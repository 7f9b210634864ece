"""The flow-manager image's entry point: join the group of the mounted docker.sock, leave root.

`docker run` (the guide's line has no `--group-add`) starts the container as root. This finds the
gid that owns the engine's socket *now* (whatever gid the host gave its docker group), adds it to
the supplementary groups of user `flowmgr`, keeps any group given with `--group-add`, switches
to that user for good (setgroups, setgid, setuid: no capability survives) and runs the command.
It never stays root, never changes the socket, and never joins gid 0 (root) unless told to with
`FLOWMGR_DOCKER_GID=0`; when it cannot give the service the socket it says so in one log line,
and the service's `/health` repeats the cause with the flag that fixes it.

Started as another user (`--user`, Kubernetes `runAsUser`) it only sets the umask and runs the
command: the groups are then the ones the runtime gave.

Usage: python -m server.container_entry [--quiet] [--keep-umask] COMMAND [ARG...]
"""

from __future__ import annotations

import ctypes
import json
import os
import pwd
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime

from server.core.engine_access import GID_ENV, engine_socket_path

__all__ = ["Plan", "plan_groups", "parse_gid", "parse_umask", "main"]

USER = "flowmgr"
MAX_GID = 2**32 - 2
"""The largest gid Linux accepts ((gid_t)-1 means "unchanged")."""
_PR_SET_NO_NEW_PRIVS = 38


class EntryError(Exception):
    """A setting the entry point cannot honour: it refuses to start rather than guess."""


@dataclass
class Plan:
    """The supplementary groups of the service and what to log about them."""

    groups: list[int]
    level: str
    message: str
    notes: list[str] = field(default_factory=list)


def parse_gid(raw: str) -> int:
    """A gid given in FLOWMGR_DOCKER_GID: decimal digits only, at most MAX_GID."""
    if not raw.isascii() or not raw.isdigit() or len(raw) > 10 or int(raw) > MAX_GID:
        raise EntryError(f"{GID_ENV}={raw[:32]!r} is not a group id (0 to {MAX_GID})")
    return int(raw)


def parse_umask(raw: str) -> int:
    """FLOWMGR_UMASK: octal, 0 to 0777."""
    if not raw or len(raw) > 4 or any(c not in "01234567" for c in raw):
        raise EntryError(f"FLOWMGR_UMASK={raw[:32]!r} is not an octal umask (0000 to 0777)")
    return int(raw, 8)


def plan_groups(
    socket: str | None, socket_gid: int | None, wanted: str | None, added: list[int]
) -> Plan:
    """Decide the groups: `socket` is the engine's socket path (None: a tcp engine), its gid
    (None: not there), `wanted` the FLOWMGR_DOCKER_GID override, `added` the groups the runtime
    gave root (`--group-add`; gid 0 is never taken from there)."""
    keep = sorted({g for g in added if g != 0})
    if wanted is not None and wanted != "":
        gid = parse_gid(wanted)
        note = " (the root group, as asked)" if gid == 0 else ""
        return Plan(
            sorted({gid, *keep}),
            "INFO",
            f"joining group {gid}{note} from {GID_ENV} for the Docker socket",
        )
    if socket is None:
        return Plan(keep, "INFO", "the Docker Engine is reached over the network: no socket group")
    if socket_gid is None:
        return Plan(
            keep,
            "ERROR",
            f"no Docker socket at {socket}: the service cannot manage containers; "
            f"mount it: docker run -v /var/run/docker.sock:{socket} ...",
        )
    if socket_gid == 0:
        if keep:
            note = f"keeping --group-add {','.join(map(str, keep))}"
            return Plan(keep, "WARNING", f"{socket} belongs to group 0 (root): not joined; {note}")
        return Plan(
            keep,
            "ERROR",
            f"{socket} belongs to group 0 (root), which the service does not join on its own: "
            f"run with -e {GID_ENV}=0 to accept that, or give the socket a group of its own on "
            f"the host (chgrp docker {socket})",
        )
    return Plan(
        sorted({socket_gid, *keep}),
        "INFO",
        f"joining group {socket_gid} of {socket} (found at start)",
    )


def _log(level: str, message: str) -> None:
    """One JSON line on stdout, as the service logs."""
    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    line = {"ts": now, "level": level, "logger": "flowmgr.entrypoint", "msg": message}
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


def _socket_gid(path: str | None) -> int | None:
    if path is None:
        return None
    try:
        return os.stat(path).st_gid
    except OSError:
        return None


def _drop_to(user: pwd.struct_passwd, groups: list[int]) -> None:
    """Become `user` with `groups` for good: root's capabilities go with the uid change."""
    os.setgroups(groups)
    os.setgid(user.pw_gid)
    os.setuid(user.pw_uid)
    try:
        os.setuid(0)
    except PermissionError:
        pass
    else:  # pragma: no cover - the kernel would have to ignore setuid
        raise EntryError("still able to become root after dropping privileges")
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)  # no setuid binary lifts it back up


def main(argv: list[str] | None = None) -> int:
    """Set the umask, leave root for `flowmgr` with the socket's group, exec the command."""
    args = list(sys.argv[1:] if argv is None else argv)
    quiet = keep_umask = False
    while args and args[0] in ("--quiet", "--keep-umask"):
        quiet |= args[0] == "--quiet"
        keep_umask |= args[0] == "--keep-umask"
        args.pop(0)
    if not args:
        sys.stderr.write("usage: python -m server.container_entry [--quiet] COMMAND [ARG...]\n")
        return 2
    try:
        if not keep_umask:
            # Flows run as root without CAP_DAC_OVERRIDE: sockets this user makes must be
            # writable by "other"; the manager's 0700 state dir keeps host users out.
            os.umask(parse_umask(os.environ.get("FLOWMGR_UMASK", "0000")))
        if os.geteuid() == 0:
            socket = engine_socket_path(os.environ.get("DOCKER_HOST"))
            plan = plan_groups(socket, _socket_gid(socket), os.environ.get(GID_ENV), os.getgroups())
            user = pwd.getpwnam(USER)
            if not quiet or plan.level != "INFO":
                _log(plan.level, f"{plan.message}; running as {USER} (uid {user.pw_uid})")
            _drop_to(user, sorted({user.pw_gid, *plan.groups}))
    except (EntryError, KeyError, OSError) as err:
        _log("ERROR", f"cannot start: {err}")
        return 2
    os.execvp(args[0], args)
    return 127  # pragma: no cover - execvp does not return


if __name__ == "__main__":
    sys.exit(main())
