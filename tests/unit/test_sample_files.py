"""Kept-open sample files: positioned reads of whole files (also the kernel's multi-record
seq files), descriptors counted in the budget, closed and given back, never leaked."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from server.core.fd_budget import FdBudget
from server.core.sample_files import CHUNK, SampleFiles, pread_all, read_once


def open_fds() -> dict[int, str]:
    """This process's descriptors -> what they point to, from /proc/self/fd."""
    out: dict[int, str] = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            out[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # the listing's own descriptor, closed meanwhile
            pass
    return out


def _stable(read_a: object, read_b: object, attempts: int = 5) -> tuple[object, object]:
    """Two reads that agree (a busy host's mounts and interfaces change now and then)."""
    for _ in range(attempts):
        a, b = read_a(), read_b()  # type: ignore[operator]
        if a == b:
            break
    return a, b


@pytest.mark.parametrize("path", ["/proc/self/mountinfo", "/proc/net/dev", "/proc/self/status"])
def test_pread_all_reads_a_seq_file_whole_like_a_plain_read(path: str) -> None:
    """Multi-record seq files stop a read short of a page even when more was asked for: the
    rest is read at its offset (here /proc/net/dev is 14 KB with the engine's veths)."""

    def plain() -> list[bytes]:
        with open(path, "rb") as f:
            return [line.split()[0] for line in f.read().splitlines() if line.split()]

    def ours() -> list[bytes]:
        return [line.split()[0] for line in read_once(path).splitlines() if line.split()]

    a, b = _stable(plain, ours)
    assert a == b and len(a) > 2  # type: ignore[arg-type]


def test_pread_all_of_plain_files_short_long_and_empty(tmp_path: Path) -> None:
    for size in (0, 1, 2047, 2048, CHUNK, CHUNK + 1, 5 * CHUNK + 7):
        f = tmp_path / f"f{size}"
        data = bytes(i % 251 for i in range(size))
        f.write_bytes(data)
        assert read_once(str(f)) == data, size
        fd = os.open(f, os.O_RDONLY)
        try:  # positioned: the second read sees the file from its start again
            assert pread_all(fd) == data and pread_all(fd) == data
        finally:
            os.close(fd)


def test_kept_files_see_new_content_and_count_in_the_budget(tmp_path: Path) -> None:
    paths = [tmp_path / n for n in ("a", "b", "c")]
    for p in paths:
        p.write_text("1\n")
    files = SampleFiles([str(p) for p in paths])
    budget = FdBudget(limit=1000, reserve=0)
    before = open_fds()
    assert files.hold(budget, "cid", spare=0) and files.kept == 3
    assert budget.held("cid") == 3
    assert files.hold(budget, "cid", spare=0) and budget.held("cid") == 3  # held once
    kept = set(open_fds()) - set(before)
    assert sorted(open_fds()[fd] for fd in kept) == sorted(str(p) for p in paths)
    paths[1].write_text("22\n")  # rewritten in place, as the kernel's counters are
    assert files.read(1) == b"22\n"
    files.release(budget, "cid")
    files.release(budget, "cid")  # idempotent: nothing more given back
    assert budget.held("cid") == 0 and files.kept == 0 and open_fds().keys() == before.keys()
    assert files.read(1) == b"22\n"  # still readable, one open per read


def test_refused_by_the_budget_nothing_is_taken_or_opened(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("5\n")
    files = SampleFiles([str(tmp_path / "a")])
    budget = FdBudget(limit=300, reserve=256)  # 44 available
    before = open_fds()
    assert not files.hold(budget, "cid", spare=44)  # would leave 43 < spare
    assert budget.held("cid") == 0 and files.kept == 0 and open_fds() == before
    assert files.read(0) == b"5\n"


def test_a_missing_file_holds_nothing_and_leaks_nothing(tmp_path: Path) -> None:
    """Hostile: the cgroup vanished between locating and opening (the flow exited)."""
    (tmp_path / "a").write_text("5\n")
    files = SampleFiles([str(tmp_path / "a"), str(tmp_path / "gone")])
    budget = FdBudget(limit=1000, reserve=0)
    before = open_fds()
    assert not files.hold(budget, "cid", spare=0)
    assert budget.total_held == 0 and files.kept == 0 and open_fds() == before
    with pytest.raises(FileNotFoundError):
        files.read(1)


def test_no_descriptor_leak_after_1000_hold_release_cycles(tmp_path: Path) -> None:
    paths = []
    for n in range(5):
        (tmp_path / str(n)).write_text(f"{n}\n")
        paths.append(str(tmp_path / str(n)))
    budget = FdBudget(limit=10_000, reserve=0)
    before = len(open_fds())
    for i in range(1000):
        files = SampleFiles(paths)
        assert files.hold(budget, f"c{i}", spare=0)
        assert files.read(4) == b"4\n"
        files.release(budget, f"c{i}")
    assert len(open_fds()) == before and budget.total_held == 0
