"""A fake cgroup v2 host under a directory: /proc and /sys/fs/cgroup files for N flows, shaped
like the recorded tree in tests/data/cgroup_v2, for the sampler at a thousand flows' worth
without a thousand containers (tests and bench/bench_sampler.py)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["fake_host", "add_flow", "flow_id", "scope_of"]

_DATA = Path(__file__).resolve().parent / "data" / "cgroup_v2"
_SCOPE = next((_DATA / "sys/fs/cgroup/system.slice").iterdir())
_NET_DEV = (_DATA / "proc/4242/net/dev").read_text()


def flow_id(n: int) -> str:
    """A full container id for flow `n`."""
    return f"{n:064x}"


def scope_of(root: Path, cid: str) -> Path:
    """The flow's cgroup directory in the fake tree."""
    return root / "sys/fs/cgroup/system.slice" / f"docker-{cid}.scope"


def fake_host(root: Path, flows: int = 0, first_pid: int = 1000) -> list[tuple[str, int]]:
    """The host files (stat, meminfo, mountinfo) and `flows` flows; returns (id, pid) of each."""
    for name in ("stat", "meminfo"):
        (root / "proc").mkdir(parents=True, exist_ok=True)
        (root / "proc" / name).write_text((_DATA / "proc" / name).read_text())
    (root / "proc/self").mkdir(exist_ok=True)
    (root / "proc/self/mountinfo").write_text((_DATA / "proc/self/mountinfo").read_text())
    out = [(flow_id(n), first_pid + n) for n in range(flows)]
    for cid, pid in out:
        add_flow(root, cid, pid)
    return out


def add_flow(root: Path, cid: str, pid: int) -> None:
    """One flow's cgroup directory (made once) and its pid's cgroup and net/dev files (a
    restarted flow: the same id with a new pid)."""
    scope = scope_of(root, cid)
    if not scope.is_dir():
        scope.mkdir(parents=True)
        for f in _SCOPE.iterdir():
            (scope / f.name).write_text(f.read_text())
    proc = root / "proc" / str(pid)
    (proc / "net").mkdir(parents=True, exist_ok=True)
    (proc / "cgroup").write_text(f"0::/system.slice/docker-{cid}.scope\n")
    (proc / "net/dev").write_text(_NET_DEV)
