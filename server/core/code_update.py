"""The code `update_container` copies: a tree under `docker.code_roots`, opened and walked by
file descriptor without following any link, counted and capped, then streamed as a tar.

Why by descriptor: a path checked and then used by name can be swapped (a directory replaced
by a symlink) in between. Here every component is opened with O_NOFOLLOW relative to the
already-opened parent, and the archive is read from those descriptors, so what was checked is
what is read. The roots themselves are the operator's promise that their contents may be given
to flows; the manager also copies only what its own user could read *without privilege*, so a
manager running as root never hands a flow another user's 0700 directory or 0600 file.
"""

from __future__ import annotations

import os
import posixpath
import stat
import tarfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from server.core.config import Settings
from server.core.errors import ConfigError, InvalidRequest

__all__ = [
    "CodeTree",
    "CodeEntry",
    "check_code_path",
    "open_code_tree",
    "scan_code_tree",
    "archive_chunks",
    "check_code_mounts",
    "check_code_settings",
    "MAX_DEPTH",
]

MAX_DEPTH = 128
"""Deepest directory nesting copied: the walk holds one descriptor per level."""
_MAX_PATH = 4096
_CHUNK = 1 << 16
"""Bytes read from a file, and sent to the engine, at a time."""
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_PATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
# NONBLOCK/NOCTTY: were a FIFO or terminal swapped in after the stat, opening it must not hang
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
_FIELD = "code_path"


def _refuse(message: str, **details: Any) -> InvalidRequest:
    return InvalidRequest(message, field=_FIELD, details=details)


def _has_surrogate(text: str) -> bool:
    return not text.isascii() and any("\ud800" <= c <= "\udfff" for c in text)


def _parts(path: str) -> list[str]:
    """The components of an absolute path; '.', '//' and trailing slashes vanish."""
    return [p for p in path.split("/") if p not in ("", ".")]


def _norm(path: str) -> str:
    return "/" + "/".join(_parts(path))


def _related(a: str, b: str) -> bool:
    """True when a is b, lies beneath b, or holds b (both normalised)."""
    return a == b or a.startswith(b.rstrip("/") + "/") or b.startswith(a.rstrip("/") + "/")


def check_code_path(code_path: object, settings: Settings) -> tuple[str, str]:
    """The lexical allow-list check, before the disk is touched: (normalised path, its root).

    Errors never depend on what exists outside the roots."""
    roots = settings.docker.code_roots
    if not isinstance(code_path, str) or not code_path:
        raise _refuse("code_path must be a non-empty string")
    if not roots:
        raise _refuse(
            "update_container is disabled: no code roots are configured "
            "(set docker.code_roots to the directories code may be copied from)"
        )
    if "\0" in code_path or _has_surrogate(code_path):
        raise _refuse("code_path may not hold a NUL or a lone surrogate")
    if not code_path.startswith("/") or len(code_path.encode()) > _MAX_PATH:
        raise _refuse(
            f"code_path {code_path[:200]!r} must be an absolute path of at most {_MAX_PATH} bytes"
        )
    parts = code_path.split("/")
    if ".." in parts:
        raise _refuse(f"code_path {code_path[:200]!r} may not hold '..'")
    path = _norm(code_path)
    for root in roots:
        r = _norm(root)
        if r != "/" and (path == r or path.startswith(r + "/")):
            return path, r
    raise _refuse(
        f"code_path {code_path[:200]!r} is not beneath any of the configured code "
        "roots (docker.code_roots)"
    )


@dataclass(frozen=True, slots=True)
class CodeEntry:
    """One entry of the tree as first seen (the stream re-checks it is still that entry)."""

    rel: str
    """Path relative to code_path (never absolute: error texts show only this)."""
    depth: int
    kind: str
    """"d" directory, "f" regular file, "l" symbolic link."""
    dev: int
    ino: int
    size: int
    mode: int
    mtime_ns: int
    target: str = ""


class CodeTree:
    """An opened `code_path`: a descriptor of the directory itself, closed by `close()`."""

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self.fd = fd

    def close(self) -> None:
        """Release the descriptor (idempotent)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> CodeTree:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _bits(st: os.stat_result) -> int:
    """The rwx bits that apply to the manager's user (owner, group or other), as the kernel
    picks them for a process without privilege (ACLs aside)."""
    if st.st_uid == os.geteuid():
        return (st.st_mode >> 6) & 7
    if st.st_gid == os.getegid() or st.st_gid in os.getgroups():
        return (st.st_mode >> 3) & 7
    return st.st_mode & 7


def _readable(st: os.stat_result, *, need_list: bool) -> bool:
    """Whether the manager's user could read (and, for a directory, enter) this entry
    without privilege: root's override is never used to give a flow another user's files."""
    bits = _bits(st)
    return bits & 5 == 5 if need_list else bool(bits & 4)


def open_code_tree(code_path: object, settings: Settings) -> CodeTree:
    """Check `code_path` lexically, then open it component by component from `/`
    (O_NOFOLLOW, each relative to its parent's descriptor). Blocking: run in a thread."""
    path, root = check_code_path(code_path, settings)
    parts = _parts(path)
    root_depth = len(_parts(root))
    fd = os.open("/", _PATH_FLAGS | os.O_DIRECTORY)
    try:
        for i, name in enumerate(parts):
            shown = "/".join(parts[root_depth : i + 1]) or "."
            try:
                nxt = os.open(name, _PATH_FLAGS, dir_fd=fd)
            except OSError as err:
                raise _walk_error(err, path, shown, i < root_depth) from None
            os.close(fd)
            fd = nxt
            st = os.fstat(fd)
            if i < root_depth and not stat.S_ISDIR(st.st_mode):
                raise _refuse(
                    "the code root of this code_path is not usable (it must be a "
                    "directory without symbolic links)"
                )
            if stat.S_ISLNK(st.st_mode):
                raise _refuse(
                    f"code_path {path}: {shown!r} is a symbolic link (links are not followed)"
                )
            if not stat.S_ISDIR(st.st_mode):
                raise _refuse(f"code_path {path}: {shown!r} is not a directory")
            last = i == len(parts) - 1
            if i >= root_depth and not (_readable(st, need_list=True) if last else _bits(st) & 1):
                raise _refuse(
                    f"code_path {path}: {shown!r} is not readable by the manager's "
                    "user without privilege"
                )
        readable = os.open(".", _DIR_FLAGS, dir_fd=fd)
    except OSError as err:
        raise _refuse(f"code_path {path} cannot be opened: {err.strerror}") from None
    finally:
        os.close(fd)
    return CodeTree(path, readable)


def _walk_error(err: OSError, path: str, shown: str, in_root: bool) -> InvalidRequest:
    if in_root:
        return _refuse(
            "the code root of this code_path is not usable (it must be a directory "
            "without symbolic links)"
        )
    if err.errno == 2:  # ENOENT
        return _refuse(f"code_path {path} does not exist")
    if err.errno == 13:  # EACCES
        return _refuse(f"code_path {path}: the manager may not enter {shown!r}")
    return _refuse(f"code_path {path}: {shown!r} cannot be opened: {err.strerror}")


def _names(fd: int, count: list[int], max_files: int) -> list[str]:
    """The entries of an open directory, sorted; counting each against the cap as it comes,
    so a directory of a million names is refused after max_files of them."""
    names = []
    with os.scandir(fd) as it:
        for entry in it:
            count[0] += 1
            if count[0] > max_files:
                raise _refuse(
                    f"code_path holds more than {max_files} entries (docker.max_code_files)",
                    limit="docker.max_code_files",
                    max=max_files,
                )
            names.append(entry.name)
    return sorted(names)


def scan_code_tree(tree: CodeTree, max_bytes: int, max_files: int) -> list[CodeEntry]:
    """The first pass: every entry (pre-order), stat'ed from its parent's descriptor, counted
    and capped; refuses hard links, devices, FIFOs, sockets and unreadable entries. Nothing
    reaches the container unless this passes. Blocking: run in a thread."""
    out: list[CodeEntry] = []
    count, total = [0], 0
    root_st = os.fstat(tree.fd)
    if not _readable(root_st, need_list=True):
        raise _refuse(
            f"code_path {tree.path} is not readable by the manager's user without privilege"
        )
    frames: list[tuple[int, str, Iterator[str]]] = [
        (tree.fd, "", iter(_names(tree.fd, count, max_files)))
    ]
    try:
        while frames:
            fd, prefix, names = frames[-1]
            name = next(names, None)
            if name is None:
                if fd != tree.fd:
                    os.close(fd)
                frames.pop()
                continue
            rel = prefix + name
            if _has_surrogate(name):
                raise _refuse(f"code_path entry {rel!r} has a name that is not UTF-8")
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except OSError as err:
                raise _refuse(f"code_path entry {rel!r} cannot be read: {err.strerror}") from None
            depth = len(frames)
            mode = st.st_mode
            if stat.S_ISDIR(mode):
                if depth > MAX_DEPTH:
                    raise _refuse(f"code_path nests directories more than {MAX_DEPTH} deep")
                if not _readable(st, need_list=True):
                    raise _unreadable(rel)
                sub = _open_checked(name, fd, _DIR_FLAGS, st, rel)
                out.append(_entry(rel, depth, "d", st))
                frames.append((sub, rel + "/", iter(_names(sub, count, max_files))))
            elif stat.S_ISREG(mode):
                if st.st_nlink > 1:
                    raise _refuse(
                        f"code_path entry {rel!r} is a hard link ({st.st_nlink} "
                        "names): hard-linked files are not copied"
                    )
                if not _readable(st, need_list=False):
                    raise _unreadable(rel)
                total += st.st_size
                if total > max_bytes:
                    raise _refuse(
                        f"code_path holds more than {max_bytes} bytes of files "
                        "(docker.max_code_bytes)",
                        limit="docker.max_code_bytes",
                        max=max_bytes,
                    )
                out.append(_entry(rel, depth, "f", st))
            elif stat.S_ISLNK(mode):
                target = os.readlink(name, dir_fd=fd)
                if "\0" in target or _has_surrogate(target):
                    raise _refuse(f"code_path entry {rel!r} is a link to a name that is not UTF-8")
                out.append(_entry(rel, depth, "l", st, target))
            else:
                raise _refuse(
                    f"code_path entry {rel!r} is a {_kind(mode)}: only directories, "
                    "regular files and symbolic links are copied"
                )
    except OSError as err:
        raise _refuse(f"code_path {tree.path} cannot be read: {err.strerror}") from None
    finally:
        for fd, _, _ in frames:
            if fd != tree.fd:
                os.close(fd)
    return out


def _unreadable(rel: str) -> InvalidRequest:
    return _refuse(
        f"code_path entry {rel!r} is not readable by the manager's user without "
        "privilege (the manager copies only what its own user may read)"
    )


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "special file"


def _entry(rel: str, depth: int, kind: str, st: os.stat_result, target: str = "") -> CodeEntry:
    return CodeEntry(
        rel,
        depth,
        kind,
        st.st_dev,
        st.st_ino,
        st.st_size if kind == "f" else 0,
        stat.S_IMODE(st.st_mode),
        st.st_mtime_ns,
        target,
    )


def _changed(rel: str) -> InvalidRequest:
    return _refuse(
        f"code_path entry {rel!r} changed while it was copied; the update was aborted (try again)"
    )


def _same(st: os.stat_result, e: CodeEntry) -> bool:
    return (st.st_dev, st.st_ino) == (e.dev, e.ino) and (
        e.kind != "f"
        or (
            stat.S_ISREG(st.st_mode)
            and st.st_size == e.size
            and st.st_mtime_ns == e.mtime_ns
            and st.st_nlink == 1
        )
    )


def _open_checked(
    name: str, dir_fd: int, flags: int, expect: os.stat_result | CodeEntry, rel: str
) -> int:
    """Open `name` beneath `dir_fd` without following it; it must still be the entry seen."""
    try:
        fd = os.open(name, flags, dir_fd=dir_fd)
    except OSError:
        raise _changed(rel) from None
    st = os.fstat(fd)
    e = expect if isinstance(expect, CodeEntry) else _entry(rel, 0, "d", expect)
    if not _same(st, e):
        os.close(fd)
        raise _changed(rel)
    return fd


def _header(name: str, kind: str, mode: int, mtime: int, size: int = 0, target: str = "") -> bytes:
    info = tarfile.TarInfo(name)
    info.type = {"d": tarfile.DIRTYPE, "f": tarfile.REGTYPE, "l": tarfile.SYMTYPE}[kind]
    # the flow gets plain root-owned files: no set-id or sticky bits from the host
    info.mode = mode & 0o777
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mtime = mtime
    info.size = size
    info.linkname = target
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "strict")


def archive_chunks(tree: CodeTree, entries: Sequence[CodeEntry], code_dir: str) -> Iterator[bytes]:
    """The tar, in chunks of about 64 KiB, of `entries` placed at `code_dir` (relative to `/`).

    Every directory on the way to the code dir gets an entry of its own (root, 0755): the
    engine then replaces any symlink planted there by a real directory instead of following
    it. Each entry is reopened from its parent's descriptor and must still be what the scan
    saw (same inode, size and mtime, read to the byte); anything else aborts the stream with
    `validation_error`, so the upload fails instead of carrying mixed content."""
    prefix = "/".join(_parts(code_dir))
    buf = bytearray()
    stack = [os.dup(tree.fd)]
    try:
        comps = prefix.split("/")
        for i in range(len(comps)):
            buf += _header("/".join(comps[: i + 1]), "d", 0o755, int(os.fstat(tree.fd).st_mtime))
        for e in entries:
            while len(stack) > e.depth:
                os.close(stack.pop())
            parent = stack[-1]
            name = e.rel.rsplit("/", 1)[-1]
            arcname = f"{prefix}/{e.rel}"
            if e.kind == "d":
                stack.append(_open_checked(name, parent, _DIR_FLAGS, e, e.rel))
                buf += _header(arcname, "d", e.mode, e.mtime_ns // 10**9)
            elif e.kind == "l":
                try:
                    st = os.stat(name, dir_fd=parent, follow_symlinks=False)
                except OSError:
                    raise _changed(e.rel) from None
                if not _same(st, e):
                    raise _changed(e.rel)
                buf += _header(arcname, "l", 0o777, e.mtime_ns // 10**9, target=e.target)
            else:
                buf += _header(arcname, "f", e.mode, e.mtime_ns // 10**9, size=e.size)
                yield from _file_chunks(name, parent, e, buf)
                buf = bytearray()
            if len(buf) >= _CHUNK:
                yield bytes(buf)
                buf = bytearray()
        buf += b"\0" * (2 * tarfile.BLOCKSIZE)
        yield bytes(buf)
    except OSError as err:  # never let it pass for the engine's connection failing
        raise _refuse(f"code_path {tree.path} cannot be read: {err.strerror}") from None
    finally:
        for fd in stack:
            os.close(fd)


def _file_chunks(name: str, parent: int, e: CodeEntry, head: bytearray) -> Iterator[bytes]:
    fd = _open_checked(name, parent, _FILE_FLAGS, e, e.rel)
    try:
        left = e.size
        first = bytes(head)
        if first:
            yield first
        while left > 0:
            try:
                data = os.read(fd, min(_CHUNK, left))
            except OSError:
                raise _changed(e.rel) from None
            if not data:
                raise _changed(e.rel)  # it shrank
            left -= len(data)
            yield data
        if os.read(fd, 1) or not _same(os.fstat(fd), e):
            raise _changed(e.rel)  # it grew or was written to meanwhile
        pad = -e.size % tarfile.BLOCKSIZE
        if pad:
            yield b"\0" * pad
    finally:
        os.close(fd)


def check_code_mounts(destinations: Iterable[str], code_dir: str) -> None:
    """Refuse (field container_id) when any mount of the container is the code dir, lies
    beneath it, or holds it: the update would empty and re-own a host directory."""
    code = _norm(code_dir)
    for dest in destinations:
        if isinstance(dest, str) and dest.startswith("/") and _related(_norm(dest), code):
            raise InvalidRequest(
                f"the container has a mount at {dest}, which is, holds or lies "
                f"beneath its code directory {code}: update_container never "
                "copies into a mount",
                field="container_id",
                details={"mount": dest, "code_dir": code},
            )


def check_code_settings(
    settings: Settings, protected: Iterable[str], env: Mapping[str, str] | None = None
) -> None:
    """At manager start: `docker.code_dir` and `docker.code_roots` are usable and safe, else
    ConfigError naming the key. A root must be an absolute, existing directory spelled without
    symbolic links, and may not be, hold or lie beneath a protected path (/, /etc, the socket
    directory, the engine's data root, ...), the configuration file or the token file."""
    d = settings.docker
    code_dir = d.code_dir
    if not code_dir.startswith("/") or ".." in code_dir.split("/") or _norm(code_dir) == "/":
        raise ConfigError(
            f"docker.code_dir {code_dir!r} must be an absolute path other than /, without '..'",
            details={"field": "docker.code_dir"},
        )
    for other in (d.socket_mount, d.data_mount, "/run", "/proc", "/sys", "/dev", "/etc"):
        if other and _related(_norm(code_dir), _norm(other)):
            raise ConfigError(
                f"docker.code_dir {code_dir!r} may not be, hold or lie beneath {other}",
                details={"field": "docker.code_dir"},
            )
    guarded = [*protected, settings.token_path]
    if settings.config_file:
        guarded.append(settings.config_file)
    for root in d.code_roots:
        _check_root(root, guarded)


def _check_root(root: str, guarded: Sequence[str]) -> None:
    def bad(why: str) -> ConfigError:
        return ConfigError(
            f"docker.code_roots: {root!r} {why}",
            details={"field": "docker.code_roots", "root": root},
        )

    if not root.startswith("/") or "\0" in root or ".." in root.split("/"):
        raise bad("must be an absolute path without '..'")
    clean = _norm(root)
    if not os.path.isdir(clean):
        raise bad("is not an existing directory")
    real = os.path.realpath(clean)
    if real != clean:
        raise bad(f"goes through a symbolic link (its real path is {real}); give the real path")
    for p in guarded:
        for q in {_norm(p), posixpath.normpath(os.path.realpath(p))}:
            if _related(clean, q):
                raise bad(f"is, holds or lies beneath {q}, which flows may never receive")
