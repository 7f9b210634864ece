"""One flow's sample files: kept open and read with positioned reads, or opened per read.

An open, read and close of a cgroup file costs ~3x a positioned read of a descriptor kept
open (path walk and allocation in the kernel; issue 15: 104-126 vs 38-49 us per flow and
sweep). Kept-open descriptors are counted in the descriptor budget under the flow's id and
given back when the flow stops, restarts (new pid: new files) or is removed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from server.core.fd_budget import FdBudget

__all__ = ["SampleFiles", "pread_all", "read_once"]

CHUNK = 8192
MORE = 2048
"""A seq_file read of several records (net/dev: one per interface) stops short of a page even
when more was asked for; a chunk of at least half a page may therefore have a rest, read at
its offset. Shorter chunks are whole: our files' records are far below MORE bytes."""

_FLAGS = os.O_RDONLY | os.O_CLOEXEC


def pread_all(fd: int) -> bytes:
    """The whole file from offset 0: usually one system call."""
    data = os.pread(fd, CHUNK, 0)
    if len(data) < MORE:
        return data
    parts = [data]
    offset = len(data)
    while chunk := os.pread(fd, CHUNK, offset):
        parts.append(chunk)
        offset += len(chunk)
    return b"".join(parts)


def read_once(path: str) -> bytes:
    """Open, read, close: for files read rarely, or when no descriptor may be kept."""
    fd = os.open(path, _FLAGS)
    try:
        return pread_all(fd)
    finally:
        os.close(fd)


class SampleFiles:
    """The files of one flow's sample, by index; kept open only while the budget allows."""

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = tuple(paths)
        self._fds: list[int] = []

    @property
    def kept(self) -> int:
        """Descriptors held now (0: each read opens its file)."""
        return len(self._fds)

    def read(self, index: int) -> bytes:
        """One file's content; OSError when it is gone (the cgroup removed: ENODEV/ENOENT)."""
        if self._fds:
            return pread_all(self._fds[index])
        return read_once(self.paths[index])

    def hold(self, budget: FdBudget, owner: str, spare: int) -> bool:
        """Open every file and keep it, if the budget gives `len(paths)` descriptors under
        `owner` and still has `spare` left; False (nothing held, nothing taken) otherwise."""
        if self._fds:
            return True
        n = len(self.paths)
        if not budget.try_take(owner, n, spare=spare):
            return False
        fds: list[int] = []
        try:
            for path in self.paths:
                fds.append(os.open(path, _FLAGS))
        except OSError:
            _close_all(fds)
            budget.release(owner, n)
            return False
        self._fds = fds
        return True

    def release(self, budget: FdBudget, owner: str) -> None:
        """Close what is held and give it back to the budget (idempotent)."""
        fds, self._fds = self._fds, []
        _close_all(fds)
        if fds:
            budget.release(owner, len(fds))


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:  # already gone: nothing is left to give back
            pass
