"""StateDir: the manager's private directory and the flows' socket directories inside it.

Layout: `<socket_dir>/.flowmgr-<instance>/` (the state dir, 0700, the manager's own) holds one
`<name>/` per flow (0711, the manager's own, bind-mounted into that flow alone) and the
manager's files (`.stopped.json`, the generated token). No other local user can reach, replace
or pre-create anything in it, so the directory the engine mounts is the one that was checked:
its path runs through directories that only root or the manager can change. Every mount is
still re-verified right before it happens (owner, mode, not a link, a directory), through
O_NOFOLLOW opens.

`socket_dir` itself may be shared (the guide's `chmod 777`): it gets the sticky bit, so other
users cannot rename the state dir away, and the start-up log says what is open and how to close it.
All calls block (file-system work): run them in a worker thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import stat
from collections.abc import Iterator

from server.core.config import Settings
from server.core.errors import ConfigError, FlowSocketError

__all__ = ["StateDir", "UnsafePath", "STATE_DIR_MODE", "FLOW_DIR_MODE", "SOCKET_DIR_MODE"]

logger = logging.getLogger(__name__)

SOCKET_DIR_MODE = 0o700
"""`socket_dir` when the manager creates it: nobody else needs to enter it."""
STATE_DIR_MODE = 0o700
FLOW_DIR_MODE = 0o711
"""The flow (root without CAP_DAC_OVERRIDE, or any USER its image sets) must traverse its own
mounted directory to reach `flow.sock`; it need not list it. Others never get past the 0700
state dir above it."""

_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_LINKS = 40


class UnsafePath(Exception):
    """A directory on the way to the flows' sockets that someone else could change."""


class StateDir:
    """Checks and makes the state dir and the per-flow directories (blocking calls)."""

    def __init__(self, settings: Settings) -> None:
        self.socket_dir = os.path.normpath(os.path.abspath(settings.socket_dir))
        self.path = os.path.normpath(os.path.abspath(settings.state_dir))
        self.uid = os.geteuid()

    def flow_dir(self, name: str) -> str:
        """Where the flow `name`'s socket directory lives (what the engine mounts)."""
        return os.path.join(self.path, name)

    # -- start-up --------------------------------------------------------------------------

    def prepare(self) -> None:
        """Make or check `socket_dir` and the state dir; ConfigError when they are not safe."""
        if os.path.dirname(self.path) != self.socket_dir:
            raise ConfigError(
                f"docker.instance may not hold '/' (the manager's directory "
                f"{self.path} must lie directly in socket_dir)",
                details={"field": "docker.instance"},
            )
        try:
            self._make_socket_dir()
            real = self._walk(self.socket_dir)
            fd = os.open(real, _DIR_FLAGS)
        except (UnsafePath, OSError) as err:
            raise ConfigError(
                f"socket_dir {self.socket_dir} is not safe to keep flows' sockets "
                f"in: {_reason(err)}",
                details={"field": "socket_dir", "socket_dir": self.socket_dir},
            ) from None
        try:
            self._check_socket_dir(fd)
            os.close(self._open_state(fd, ConfigError))
        except OSError as err:
            raise ConfigError(
                f"cannot prepare {self.path}: {_reason(err)}",
                details={"field": "socket_dir", "path": self.path},
            ) from None
        finally:
            os.close(fd)

    def _make_socket_dir(self) -> None:
        """Create `socket_dir` 0700 (its parents 0755) when missing."""
        if os.path.lexists(self.socket_dir):
            return
        os.makedirs(os.path.dirname(self.socket_dir), mode=0o755, exist_ok=True)
        try:
            os.mkdir(self.socket_dir, SOCKET_DIR_MODE)
        except FileExistsError:
            return  # someone was quicker: checked like any existing directory
        fd = os.open(self.socket_dir, _DIR_FLAGS)
        try:
            os.fchmod(fd, SOCKET_DIR_MODE)  # exact, whatever the umask
        finally:
            os.close(fd)
        logger.info("created socket_dir %s (mode 0700)", self.socket_dir)

    def _check_socket_dir(self, fd: int) -> None:
        """Owner root or us; shared (group/other-writable) only with the sticky bit."""
        st = os.fstat(fd)
        mode = stat.S_IMODE(st.st_mode)
        where = self.socket_dir
        if st.st_uid not in (0, self.uid):
            raise ConfigError(
                f"socket_dir {where} is owned by uid {st.st_uid}, not by root or the manager "
                f"(uid {self.uid}): its owner could rename the manager's directory in it away; "
                f"chown {self.uid} {where} (or use another socket_dir)",
                details={"field": "socket_dir", "socket_dir": where},
            )
        if mode & 0o022 and not mode & stat.S_ISVTX:
            if self.uid in (0, st.st_uid):
                mode |= stat.S_ISVTX
                os.fchmod(fd, mode)  # o+t: `chmod 777` still works; renames of others' entries not
                logger.warning(
                    "socket_dir %s was writable by others without the sticky bit; "
                    "set it (mode now %04o) so no one can rename the manager's "
                    "directory in it",
                    where,
                    mode,
                )
            else:
                logger.warning(
                    "socket_dir %s (mode %04o, owner uid %d) is writable by its group or others "
                    "without the sticky bit: they can rename the manager's directory %s away "
                    "and put their own in its place. Fix: chmod +t %s (or chmod 0700, chown %d)",
                    where,
                    mode,
                    st.st_uid,
                    self.path,
                    where,
                    self.uid,
                )
        if mode & 0o077:
            who = "other users" if mode & 0o007 else f"group {st.st_gid}"
            write = "create entries in" if mode & 0o022 else "list"
            logger.log(
                logging.WARNING if mode & 0o022 else logging.INFO,
                "socket_dir %s is mode %04o: %s can %s it. Flows' sockets stay private (they are "
                "in %s, mode 0700). To tighten: chmod 0700 %s (the manager needs no one else "
                "there)",
                where,
                mode,
                who,
                write,
                self.path,
                where,
            )

    # -- per flow --------------------------------------------------------------------------

    def make_flow_dir(self, name: str) -> str:
        """A fresh socket directory for a new flow (FlowSocketError when the way is unsafe).

        Whatever sits at its path is stale (no live flow mounts it: the caller checked), and
        only the manager or root can have put it in the 0700 state dir: it is removed without
        following links, and a new directory is made.
        """
        _check_name(name)
        try:
            self._make_flow_dir(name)
        except OSError as err:
            raise FlowSocketError(
                f"cannot make the socket directory {self.flow_dir(name)}: {_reason(err)}",
                details={"name": name},
            ) from None
        return self.flow_dir(name)

    def _make_flow_dir(self, name: str) -> None:
        with self._state_fd() as state:
            try:
                os.mkdir(name, FLOW_DIR_MODE, dir_fd=state)
            except FileExistsError:
                st = os.stat(name, dir_fd=state, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    shutil.rmtree(name, dir_fd=state)  # fd-based: never follows a link out
                else:
                    os.unlink(name, dir_fd=state)
                logger.warning(
                    "replaced a stale entry %s left in the manager's directory", self.flow_dir(name)
                )
                os.mkdir(name, FLOW_DIR_MODE, dir_fd=state)
            os.close(self._open_flow(state, name))

    def verify_flow_dir(self, source: str | None, name: str) -> None:
        """Right before the engine mounts `source` into the flow `name`: it must be the
        manager's own directory for that name, reached through safe directories, or
        FlowSocketError. A missing one is made again (the engine would make it as root 0755);
        a mode the flow itself changed (it owns the inside of its mount) is set back."""
        _check_name(name)
        want = self.flow_dir(name)
        # normpath alone would read `x/../a` as `a`, where the engine would follow a link `x`
        if source is None or ".." in source.split("/") or os.path.normpath(source) != want:
            raise FlowSocketError(
                f"the socket directory of {name} is {source or 'not mounted'}, not the "
                f"manager's directory {want} for it: recreate the flow",
                details={"name": name, "socket_dir": source, "expected": want},
            )
        try:
            with self._state_fd() as state:
                os.close(self._open_flow(state, name))
        except OSError as err:
            raise FlowSocketError(
                f"cannot check the socket directory {want}: {_reason(err)}", details={"name": name}
            ) from None

    def remove_flow_dir(self, name: str) -> None:
        """Best effort: a deleted flow's directory (a leftover is replaced at the next create)."""
        if not _NAME.fullmatch(name):
            return
        with contextlib.suppress(OSError, FlowSocketError), self._state_fd() as state:
            shutil.rmtree(name, dir_fd=state)

    # -- the checks ------------------------------------------------------------------------

    @contextlib.contextmanager
    def _state_fd(self) -> Iterator[int]:
        """An fd of the state dir, every directory on the way checked (FlowSocketError)."""
        try:
            fd = os.open(self._walk(self.socket_dir), _DIR_FLAGS)
        except (UnsafePath, OSError) as err:
            raise FlowSocketError(
                f"socket_dir {self.socket_dir} is not safe: {_reason(err)}",
                details={"socket_dir": self.socket_dir},
            ) from None
        try:
            owner = os.fstat(fd).st_uid
            if owner not in (0, self.uid):
                raise FlowSocketError(
                    f"socket_dir {self.socket_dir} is owned by uid {owner}, "
                    "not by root or the manager",
                    details={"socket_dir": self.socket_dir},
                )
            state = self._open_state(fd, FlowSocketError)
        finally:
            os.close(fd)
        try:
            yield state
        finally:
            os.close(state)

    def _open_state(self, socket_fd: int, error: type[ConfigError] | type[FlowSocketError]) -> int:
        """Open (make when missing) the state dir below `socket_fd`; it must be ours, 0700."""
        name = os.path.basename(self.path)
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=socket_fd)
        except FileNotFoundError:
            os.mkdir(name, STATE_DIR_MODE, dir_fd=socket_fd)
            fd = os.open(name, _DIR_FLAGS, dir_fd=socket_fd)
        except OSError as err:  # ELOOP: a symlink; ENOTDIR: a file
            raise error(
                f"{self.path} is not a directory of the manager's ({_reason(err)}): "
                f"another user may have put it there to catch flows' sockets; remove "
                f"it (rm {self.path}) and start again",
                details={"socket_dir": self.socket_dir, "path": self.path},
            ) from None
        try:
            self._check_own(fd, STATE_DIR_MODE, self.path, error)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _open_flow(self, state_fd: int, name: str) -> int:
        """Open (make when missing) a flow's directory; it must be ours, a real directory."""
        path = self.flow_dir(name)
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=state_fd)
        except FileNotFoundError:
            os.mkdir(name, FLOW_DIR_MODE, dir_fd=state_fd)
            fd = os.open(name, _DIR_FLAGS, dir_fd=state_fd)
        except OSError as err:
            raise FlowSocketError(
                f"the socket directory {path} is not a directory of the "
                f"manager's ({_reason(err)}); nothing was mounted",
                details={"name": name, "path": path},
            ) from None
        try:
            self._check_own(fd, FLOW_DIR_MODE, path, FlowSocketError)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _check_own(
        self, fd: int, mode: int, path: str, error: type[ConfigError] | type[FlowSocketError]
    ) -> None:
        """Ours and a directory (opened O_NOFOLLOW); a wrong mode is set right."""
        st = os.fstat(fd)
        if st.st_uid != self.uid:
            raise error(
                f"{path} is owned by uid {st.st_uid}, not by the manager (uid "
                f"{self.uid}): another user may have made it to catch flows' sockets; "
                f"remove it (rm -r {path}) and start again",
                details={"socket_dir": self.socket_dir, "path": path},
            )
        have = stat.S_IMODE(st.st_mode)
        if have != mode:
            os.fchmod(fd, mode)  # through the fd: the very directory that was checked
            logger.info("%s had mode %04o; set to %04o", path, have, mode)

    def _walk(self, path: str) -> str:
        """Resolve `path` as realpath does, checking each directory and link on the way: owned
        by root or the manager, and not writable by others unless sticky (the last one, the
        shared `socket_dir`, is judged by `_check_socket_dir`). The real path, or UnsafePath."""
        parts = [p for p in path.split("/") if p]
        cur = "/"
        self._check_dir(os.lstat(cur), cur)
        links = 0
        while parts:
            part = parts.pop(0)
            if part == ".":
                continue
            if part == "..":
                cur = os.path.dirname(cur)
                continue
            nxt = os.path.join(cur, part)
            st = os.lstat(nxt)
            if stat.S_ISLNK(st.st_mode):
                # Its directory was checked, so only its (trusted) owner can change it.
                if st.st_uid not in (0, self.uid):
                    raise UnsafePath(f"{nxt} is a symbolic link owned by uid {st.st_uid}")
                links += 1
                if links > _MAX_LINKS:
                    raise UnsafePath(f"too many symbolic links in {path}")
                target = os.readlink(nxt)
                if target.startswith("/"):
                    cur = "/"
                parts[:0] = [p for p in target.split("/") if p]
                continue
            if not stat.S_ISDIR(st.st_mode):
                raise UnsafePath(f"{nxt} is not a directory")
            if parts:
                self._check_dir(st, nxt)
            cur = nxt
        return cur

    def _check_dir(self, st: os.stat_result, path: str) -> None:
        if st.st_uid not in (0, self.uid):
            raise UnsafePath(
                f"{path} is owned by uid {st.st_uid}, not by root or the manager "
                f"(uid {self.uid}): that user could replace what lies beneath it"
            )
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o022 and not mode & stat.S_ISVTX:
            raise UnsafePath(
                f"{path} (mode {mode:04o}) is writable by other users without the "
                f"sticky bit: they could rename what lies beneath it; chmod go-w "
                f"{path} or chmod +t {path}"
            )


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise FlowSocketError(
            f"{str(name)[:80]!r} cannot name a socket directory", details={"name": str(name)[:80]}
        )


def _reason(err: BaseException) -> str:
    if isinstance(err, OSError) and err.strerror:
        where = f" ({err.filename})" if err.filename else ""
        return f"{err.strerror}{where}"
    return str(err)
