"""Save the log pane's shown lines to a file on the panel's machine, refusing surprises.

An existing file is not overwritten and a symlink is not followed unless the user confirmed
(`question` says what they would confirm); a directory or an unwritable path is a clear error,
never a traceback. Blocking: the caller runs it in a thread.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence

__all__ = ["SaveError", "question", "save_lines"]


class SaveError(Exception):
    """Why the lines could not be written (a sentence for the user)."""


def question(path: str) -> str | None:
    """What the user must confirm before `path` is written (None: a new file)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise SaveError(_why(path, err)) from None
    if stat.S_ISLNK(st.st_mode):
        try:
            target = os.readlink(path)
        except OSError as err:
            raise SaveError(_why(path, err)) from None
        return f"{path} is a symlink to {target}: write there?"
    if stat.S_ISDIR(st.st_mode):
        raise SaveError(f"{path} is a directory: give a file name")
    return f"{path} exists: overwrite it?"


def save_lines(path: str, lines: Sequence[str], *, confirmed: bool = False) -> int:
    """Write `lines` (one per line) to `path`; returns how many. A new file is made 0600 (logs
    may hold what only the flow's owner should read). Without `confirmed` the file must not
    exist yet, checked by the open itself (O_EXCL also refuses any symlink), so a file that
    appeared since `question` is not clobbered."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC
    flags |= os.O_TRUNC if confirmed else os.O_EXCL
    try:
        fd = os.open(path, flags, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8", errors="replace") as out:
            for line in lines:
                out.write(line + "\n")
    except OSError as err:
        raise SaveError(_why(path, err)) from None
    return len(lines)


def _why(path: str, err: OSError) -> str:
    reasons = {
        errno.EISDIR: f"{path} is a directory: give a file name",
        errno.EACCES: f"cannot write {path}: permission denied",
        errno.EPERM: f"cannot write {path}: permission denied",
        errno.ENOENT: f"cannot write {path}: its directory does not exist",
        errno.ENOTDIR: f"cannot write {path}: a part of the path is not a directory",
        errno.EEXIST: f"{path} appeared meanwhile: save again to be asked about it",
        errno.EROFS: f"cannot write {path}: read-only file system",
        errno.ENOSPC: f"cannot write {path}: no space left",
    }
    return reasons.get(err.errno or 0, f"cannot write {path}: {err.strerror or err}")
