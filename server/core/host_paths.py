"""Host bind sources: the allow-list of roots, a walk that follows no symlink, and pins.

A bind source is checked in three steps. Lexically first (`root_for`): it must be written
plainly and lie at or beneath a configured root, so a refusal never tells whether a path outside
the roots exists. Then on disk (`walk`): from `/` down, one component at a time, each opened
with O_NOFOLLOW relative to its parent, so no symlink is ever followed; every directory from `/`
down to the source's parent must be owned by root or this process and writable by no one else
(unless sticky), else another local user could swap a component. The walk ends at a directory
or a single-linked regular file and yields its (st_dev, st_ino): the pin. Before every start
the walk is repeated and must end at the same inode (`BindPins.recheck`).

Flows are kept off the path by the nesting rule (`nesting_problem`): no bind source lies
beneath another's writable one, so no flow can rename a component of a path another flow (or
a later start of itself) mounts.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "Mode",
    "Pin",
    "BindPins",
    "HostPathError",
    "split_mode",
    "plain_path_problem",
    "root_for",
    "walk",
    "nesting_problem",
    "beneath",
    "closed_to_others",
]

logger = logging.getLogger(__name__)

Mode = Literal["ro", "rw"]

_DIR = os.O_PATH | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC
_ANY = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


class HostPathError(Exception):
    """A host path fails a check; the message says which component and why."""


@dataclass(frozen=True, slots=True)
class Pin:
    """One checked bind: where it comes from, where it goes, and the inode that was checked."""

    source: str
    target: str
    mode: Mode
    root: str
    """The bind root the source lies at or beneath."""
    dev: int
    ino: int


def split_mode(target: str) -> tuple[str, Mode | None]:
    """ "/data:rw" -> ("/data", "rw"); "/data" -> ("/data", None). Other suffixes stay."""
    for mode in ("rw", "ro"):
        if target.endswith(":" + mode):
            return target[: -len(mode) - 1], mode
    return target, None


def plain_path_problem(path: str) -> str | None:
    """Why `path` is not a plain absolute path (None when it is): what Docker's bind syntax
    cannot carry, and every spelling whose meaning depends on how it is resolved."""
    if not path.startswith("/"):
        return "must be absolute"
    if any(c in path for c in ("\0", ":", ",", "\n", "\r")):
        return "holds a NUL, ':', ',' or line break"
    if not path.isascii() and any("\ud800" <= c <= "\udfff" for c in path):
        return "is not UTF-8 (a lone surrogate)"
    if path != "/" and path.endswith("/"):
        return "ends with '/' (write it without)"
    parts = path.split("/")[1:]
    if path != "/" and any(p in ("", ".", "..") for p in parts):
        return "holds '//', '.' or '..' (write it in its plain form)"
    return None


def beneath(path: str, top: str) -> bool:
    """True when `path` is `top` or lies beneath it (both plain)."""
    return path == top or top == "/" or path.startswith(top + "/")


def root_for(path: str, roots: Iterable[tuple[str, bool]]) -> tuple[str, bool] | None:
    """The deepest (root, writable) holding plain `path`, lexically; None when none does."""
    best: tuple[str, bool] | None = None
    for root, writable in roots:
        if beneath(path, root) and (best is None or len(root) > len(best[0])):
            best = (root, writable)
    return best


def _owner_problem(st: os.stat_result, where: str, uid: int) -> str | None:
    if st.st_uid not in (0, uid):
        return f"{where} is owned by uid {st.st_uid} (only root or the manager may own it)"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX:
        return (
            f"{where} is writable by its group or others (mode "
            f"{stat.S_IMODE(st.st_mode):o}): another user could replace what lies beneath"
        )
    return None


def _kind(dir_fd: int, name: str) -> str:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return "not a directory"
    return "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a directory"


def walk(path: str, *, uid: int | None = None, want_dir: bool = False) -> tuple[int, int]:
    """Walk plain `path` from `/` without following any symlink; return its (st_dev, st_ino).

    Every directory from `/` down to the parent of `path` must pass the ownership rule. The end
    must be a directory, or (unless `want_dir`) a regular file with one link. Raise
    HostPathError naming the component that fails. Blocking: call it in a thread.
    """
    uid = os.geteuid() if uid is None else uid
    parts = [p for p in path.split("/") if p]
    fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        where = "/"
        for i, name in enumerate(parts):
            problem = _owner_problem(st, where, uid)
            if problem:
                raise HostPathError(problem)
            where = "/" + "/".join(parts[: i + 1])
            last = i == len(parts) - 1
            try:
                nxt = os.open(name, _ANY if last else _DIR, dir_fd=fd)
            except OSError as err:
                if err.errno == errno.ENOENT:
                    raise HostPathError(f"{where} does not exist") from None
                if err.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise HostPathError(f"{where} is {_kind(fd, name)}") from None
                raise HostPathError(f"{where} cannot be opened: {err.strerror}") from None
            os.close(fd)
            fd = nxt
            st = os.fstat(fd)
        if stat.S_ISLNK(st.st_mode):
            raise HostPathError(f"{where} is a symbolic link")
        if stat.S_ISREG(st.st_mode) and not want_dir:
            if st.st_nlink > 1:
                raise HostPathError(
                    f"{where} is a file with {st.st_nlink} hard links (it may "
                    "be another file under a second name)"
                )
        elif not stat.S_ISDIR(st.st_mode):
            raise HostPathError(
                f"{where} is not a directory" + ("" if want_dir else " or a regular file")
            )
        return st.st_dev, st.st_ino
    finally:
        os.close(fd)


def closed_to_others(path: str) -> bool:
    """True when some directory from `/` down to plain `path` (itself included) lets neither
    its group nor others search it, so no other local user can reach what lies beneath."""
    parts = [p for p in path.split("/") if p]
    for i in range(len(parts) + 1):
        st = os.lstat("/" + "/".join(parts[:i]))
        if stat.S_ISDIR(st.st_mode) and not st.st_mode & (stat.S_IXGRP | stat.S_IXOTH):
            return True
    return False


def _ancestors(path: str) -> list[str]:
    """ "/a/b/c" -> ["/a/b", "/a", "/"]: the directories strictly above `path`."""
    out: list[str] = []
    while path not in ("/", ""):
        path = path.rsplit("/", 1)[0] or "/"
        out.append(path)
    return out


def nesting_problem(new: Sequence[Pin], others: Iterable[Pin]) -> str | None:
    """Why `new` (one container's binds) may not sit beside `others` (every other managed
    container's): a source strictly beneath a writable source could be renamed or replaced by
    the flow writing there, between the check and the mount. Linear in the number of pins."""
    pool = [*others, *new]
    writable = {p.source for p in pool if p.mode == "rw"}
    held = {a: p.source for p in pool for a in _ancestors(p.source)}
    for pin in new:
        above = next((a for a in _ancestors(pin.source) if a in writable), None)
        if above is not None:
            return (
                f"host path {pin.source} lies beneath {above}, which a flow may write: it "
                "could be replaced before the mount"
            )
        if pin.mode == "rw" and pin.source in held:
            return (
                f"host path {pin.source} would be writable and holds {held[pin.source]}, "
                "mounted by a flow: the flow writing here could replace it"
            )
    return None


@dataclass
class BindPins:
    """The pins of every managed container's host binds, and containers whose binds could not
    be checked (adopted ones whose walk failed): those are never started."""

    pins: dict[str, tuple[Pin, ...]] = field(default_factory=dict)
    broken: dict[str, str] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Held from the nesting check to the record of a create, so two creates cannot race."""

    def others(self, container_id: str | None = None) -> list[Pin]:
        """Every pin except `container_id`'s."""
        return [p for cid, pins in self.pins.items() if cid != container_id for p in pins]

    def record(self, container_id: str, pins: Sequence[Pin]) -> None:
        """Remember the checked binds of a created container."""
        self.broken.pop(container_id, None)
        if pins:
            self.pins[container_id] = tuple(pins)

    def mark_broken(self, container_id: str, reason: str) -> None:
        """An adopted container whose binds failed their walk: starting it is refused."""
        self.pins.pop(container_id, None)
        self.broken[container_id] = reason

    def forget(self, container_id: str) -> None:
        """The container is gone."""
        self.pins.pop(container_id, None)
        self.broken.pop(container_id, None)

    def knows(self, container_id: str) -> bool:
        """Whether the container's binds were checked (or found broken) already."""
        return container_id in self.pins or container_id in self.broken

    def recheck(self, container_id: str) -> None:
        """Walk every bind of the container again: raise HostPathError when one is no longer
        what was checked (a symlink or a non-directory on the way, gone, another inode).
        Blocking: call it in a thread (it reads one entry of `pins`, never iterates them)."""
        reason = self.broken.get(container_id)
        if reason is not None:
            raise HostPathError(reason)
        for pin in self.pins.get(container_id, ()):
            try:
                dev_ino = walk(pin.source)
            except HostPathError as err:
                raise HostPathError(
                    f"host path {pin.source} changed since it was checked: {err}"
                ) from None
            if dev_ino != (pin.dev, pin.ino):
                raise HostPathError(
                    f"host path {pin.source} changed since it was checked: it "
                    "is another file or directory now"
                )

    def nesting(self, container_id: str) -> str | None:
        """`nesting_problem` of the container's binds against every other container's (an
        adopted set may break the rule; created ones cannot). On the loop: it iterates."""
        return nesting_problem(self.pins.get(container_id, ()), self.others(container_id))
