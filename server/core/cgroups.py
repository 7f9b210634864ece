"""Resource usage of a local container from cgroup v1 or v2 files and /proc/<pid>/net/dev."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from server.core.models import ResourceSample

__all__ = [
    "CgroupPaths", "RawUsage", "find_paths", "read_usage", "read_system_cpu_ns", "host_memory",
    "parse_proc_cgroup", "parse_mountinfo", "parse_net_dev", "parse_blkio_v1", "parse_io_stat",
    "parse_kv", "compute_sample",
]

_V1_CONTROLLERS = ("cpuacct", "memory", "blkio")


@dataclass(frozen=True, slots=True)
class CgroupPaths:
    """Where one container's counters live (v2: one directory for all)."""

    version: int
    cpu: Path
    memory: Path
    blkio: Path


@dataclass(frozen=True, slots=True)
class RawUsage:
    """Counters read at one instant; CPU % needs two of these."""

    cpu_ns: int
    system_ns: int
    memory_usage: int
    memory_limit: int
    rx: int
    tx: int
    blk_read: int
    blk_write: int


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """`/proc/<pid>/cgroup` -> controller -> path ("" is the v2 unified hierarchy)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        for ctrl in controllers.split(",") if controllers else [""]:
            out[ctrl] = path
    return out


def parse_mountinfo(text: str) -> dict[str, tuple[str, str]]:
    """`/proc/self/mountinfo` -> controller ("" for cgroup2) -> (mount root, mount point)."""
    out: dict[str, tuple[str, str]] = {}
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, rfields = left.split(), right.split()
        if len(fields) < 5 or len(rfields) < 3:
            continue
        root, point, fstype = fields[3], fields[4], rfields[0]
        if fstype == "cgroup2":
            out.setdefault("", (root, point))
        elif fstype == "cgroup":
            for opt in rfields[2].split(","):
                if opt in _V1_CONTROLLERS:
                    out.setdefault(opt, (root, point))
    return out


def _join(mount: tuple[str, str], path: str, fs_root: str) -> Path:
    root, point = mount
    rel = path
    if root != "/" and (path == root or path.startswith(root + "/")):
        rel = path[len(root):]
    return Path(fs_root + point) / rel.lstrip("/")


def find_paths(proc_cgroup: str, mountinfo: str, fs_root: str = "") -> CgroupPaths | None:
    """Locate a process's cgroup directories (v1 controllers win on hybrid hosts).

    `fs_root` prefixes the mount points (tests point it at recorded files).
    """
    groups = parse_proc_cgroup(proc_cgroup)
    mounts = parse_mountinfo(mountinfo)
    if all(c in groups and c in mounts for c in _V1_CONTROLLERS):
        return CgroupPaths(1, *(_join(mounts[c], groups[c], fs_root) for c in _V1_CONTROLLERS))
    if "" in groups and "" in mounts:
        path = _join(mounts[""], groups[""], fs_root)
        return CgroupPaths(2, path, path, path)
    return None


def parse_kv(text: str) -> dict[str, int]:
    """`memory.stat` / `cpu.stat` style "key value" lines."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            out[key] = int(value)
    return out


def parse_net_dev(text: str) -> tuple[int, int]:
    """Received and sent bytes over every interface but loopback."""
    rx = tx = 0
    for line in text.splitlines()[2:]:
        name, _, counters = line.partition(":")
        cols = counters.split()
        if name.strip() == "lo" or len(cols) < 9:
            continue
        rx += int(cols[0])
        tx += int(cols[8])
    return rx, tx


def parse_blkio_v1(text: str) -> tuple[int, int]:
    """`blkio.throttle.io_service_bytes(_recursive)`: summed Read and Write bytes."""
    read = write = 0
    for line in text.splitlines():
        cols = line.split()
        if len(cols) == 3 and cols[2].isdigit():
            op = cols[1].lower()
            if op == "read":
                read += int(cols[2])
            elif op == "write":
                write += int(cols[2])
    return read, write


def parse_io_stat(text: str) -> tuple[int, int]:
    """cgroup v2 `io.stat`: summed rbytes and wbytes over devices."""
    read = write = 0
    for line in text.splitlines():
        for item in line.split()[1:]:
            key, _, value = item.partition("=")
            if key == "rbytes" and value.isdigit():
                read += int(value)
            elif key == "wbytes" and value.isdigit():
                write += int(value)
    return read, write


def _read(path: Path) -> str:
    with open(path, encoding="ascii", errors="replace") as f:
        return f.read()


def _read_int(path: Path, default: int = 0) -> int:
    text = _read(path).strip()
    return int(text) if text.isdigit() else default


def read_system_cpu_ns(proc_root: str = "/proc") -> int:
    """Host CPU time as `docker stats` counts it (all /proc/stat `cpu` columns but guest)."""
    first = _read(Path(proc_root) / "stat").splitlines()[0].split()
    ticks = sum(int(v) for v in first[1:8])
    return ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def host_memory(proc_root: str = "/proc") -> int:
    """MemTotal in bytes: the limit shown for a container without one."""
    for line in _read(Path(proc_root) / "meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0


def read_usage(paths: CgroupPaths, net_dev: Path, system_ns: int, host_mem: int) -> RawUsage:
    """Read one container's counters; raises OSError when they are gone or unreadable."""
    if paths.version == 1:
        cpu_ns = _read_int(paths.cpu / "cpuacct.usage")
        usage = _read_int(paths.memory / "memory.usage_in_bytes")
        inactive = parse_kv(_read(paths.memory / "memory.stat")).get("total_inactive_file", 0)
        limit = _read_int(paths.memory / "memory.limit_in_bytes", host_mem)
        blk_file = paths.blkio / "blkio.throttle.io_service_bytes_recursive"
        if not blk_file.exists():
            blk_file = paths.blkio / "blkio.throttle.io_service_bytes"
        blk = parse_blkio_v1(_read(blk_file))
    else:
        cpu_ns = parse_kv(_read(paths.cpu / "cpu.stat")).get("usage_usec", 0) * 1000
        usage = _read_int(paths.memory / "memory.current")
        inactive = parse_kv(_read(paths.memory / "memory.stat")).get("inactive_file", 0)
        limit = _read_int(paths.memory / "memory.max", host_mem)
        io_file = paths.blkio / "io.stat"
        blk = parse_io_stat(_read(io_file)) if io_file.exists() else (0, 0)
    if inactive < usage:
        usage -= inactive
    if host_mem and limit > host_mem:
        limit = host_mem
    rx, tx = parse_net_dev(_read(net_dev))
    return RawUsage(cpu_ns, system_ns, usage, limit, rx, tx, blk[0], blk[1])


def compute_sample(prev: RawUsage | None, cur: RawUsage, online_cpus: int,
                   when: datetime) -> ResourceSample:
    """`docker stats` arithmetic: CPU % from the deltas against the host's CPU time."""
    cpu = 0.0
    if prev is not None:
        cpu_delta = cur.cpu_ns - prev.cpu_ns
        sys_delta = cur.system_ns - prev.system_ns
        if cpu_delta > 0 and sys_delta > 0:
            cpu = cpu_delta / sys_delta * online_cpus * 100.0
    mem_pct = cur.memory_usage / cur.memory_limit * 100.0 if cur.memory_limit else 0.0
    return ResourceSample(
        cpu_percent=round(cpu, 2), memory_usage=cur.memory_usage, memory_limit=cur.memory_limit,
        memory_percent=round(mem_pct, 2), network_rx_bytes=cur.rx, network_tx_bytes=cur.tx,
        disk_read_bytes=cur.blk_read, disk_write_bytes=cur.blk_write, timestamp=when)
