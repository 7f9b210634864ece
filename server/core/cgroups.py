"""Resource usage of a local container from cgroup v1 or v2 files and /proc/<pid>/net/dev."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from server.core.models import ResourceSample
from server.core.sample_files import SampleFiles, read_once

__all__ = [
    "CgroupPaths",
    "RawUsage",
    "find_paths",
    "read_usage",
    "read_system_cpu_ns",
    "host_memory",
    "parse_proc_cgroup",
    "parse_mountinfo",
    "parse_net_dev",
    "parse_blkio_v1",
    "parse_io_stat",
    "parse_kv",
    "compute_sample",
    "UsageReader",
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
        rel = path[len(root) :]
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


def _raw(text: str | bytes) -> bytes:
    return text.encode("ascii", "replace") if isinstance(text, str) else text


def parse_net_dev(text: str | bytes) -> tuple[int, int]:
    """Received and sent bytes over every interface but loopback."""
    rx = tx = 0
    for line in _raw(text).split(b"\n")[2:]:
        name, _, counters = line.partition(b":")
        cols = counters.split()
        if name.strip() == b"lo" or len(cols) < 9:
            continue
        rx += int(cols[0])
        tx += int(cols[8])
    return rx, tx


def parse_blkio_v1(text: str | bytes) -> tuple[int, int]:
    """`blkio.throttle.io_service_bytes(_recursive)`: summed Read and Write bytes."""
    read = write = 0
    for line in _raw(text).split(b"\n"):
        cols = line.split()
        if len(cols) == 3 and cols[2].isdigit():
            op = cols[1].lower()
            if op == b"read":
                read += int(cols[2])
            elif op == b"write":
                write += int(cols[2])
    return read, write


def parse_io_stat(text: str | bytes) -> tuple[int, int]:
    """cgroup v2 `io.stat`: summed rbytes and wbytes over devices."""
    read = write = 0
    for line in _raw(text).split(b"\n"):
        for item in line.split()[1:]:
            key, _, value = item.partition(b"=")
            if key == b"rbytes" and value.isdigit():
                read += int(value)
            elif key == b"wbytes" and value.isdigit():
                write += int(value)
    return read, write


def _read(path: Path) -> str:
    with open(path, encoding="ascii", errors="replace") as f:
        return f.read()


def _int_or(raw: bytes, default: int) -> int:
    raw = raw.strip()
    return int(raw) if raw.isdigit() else default


def _kv_value(raw: bytes, key: bytes) -> int:
    """The value of `key` in a "key value" file, without parsing the other lines."""
    pos = 0 if raw.startswith(key + b" ") else raw.find(b"\n" + key + b" ")
    if pos < 0:
        return 0
    start = raw.index(b" ", pos + 1) + 1
    stop = raw.find(b"\n", start)
    return _int_or(raw[start : stop if stop >= 0 else None], 0)


def read_system_cpu_ns(proc_root: str = "/proc") -> int:
    """Host CPU time as `docker stats` counts it (all /proc/stat `cpu` columns but guest)."""
    # the first line only: on a large host the rest (per-CPU lines, interrupts) is kilobytes
    fd = os.open(f"{proc_root}/stat", os.O_RDONLY | os.O_CLOEXEC)
    try:
        head = os.pread(fd, 512, 0)
    finally:
        os.close(fd)
    first = head.split(b"\n", 1)[0].split()
    ticks = sum(int(v) for v in first[1:8])
    return ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def host_memory(proc_root: str = "/proc") -> int:
    """MemTotal in bytes: the limit shown for a container without one."""
    for line in _read(Path(proc_root) / "meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0


_CPU, _USAGE, _STAT, _NET, _BLK = range(5)
"""Indexes of a reader's sample files (the block I/O file last: v2 hosts may lack it)."""


class UsageReader:
    """Reads one container's counters; caches what rarely changes between sweeps.

    The memory limit is re-read every `REFRESH` reads (opened per read: not worth a kept
    descriptor); `memory.stat` (the costliest file) only when the usage counter moved or every
    `REFRESH` reads, so idle containers cost a handful of tiny reads. `phase` shifts that
    tenth read so that flows do not all re-read `memory.stat` in the same second.
    The other files are `files` (kept open while the sampler's budget allows).
    """

    REFRESH = 10

    def __init__(
        self, paths: CgroupPaths, net_dev: str | Path, host_mem: int, phase: int = 0
    ) -> None:
        self.version = paths.version
        self._host_mem = host_mem
        blk: Path | None
        if paths.version == 1:
            cpu = paths.cpu / "cpuacct.usage"
            usage = paths.memory / "memory.usage_in_bytes"
            self._limit = str(paths.memory / "memory.limit_in_bytes")
            self._inactive_key = b"total_inactive_file"
            blk = paths.blkio / "blkio.throttle.io_service_bytes_recursive"
            if not blk.exists():
                blk = paths.blkio / "blkio.throttle.io_service_bytes"
        else:
            cpu = paths.cpu / "cpu.stat"
            usage = paths.memory / "memory.current"
            self._limit = str(paths.memory / "memory.max")
            self._inactive_key = b"inactive_file"
            blk = paths.blkio / "io.stat"
            if not blk.exists():
                blk = None
        self._has_blk = blk is not None
        names = [cpu, usage, paths.memory / "memory.stat", net_dev, *([blk] if blk else [])]
        self.files = SampleFiles([str(p) for p in names])
        self.reads = 0
        self._phase = phase % self.REFRESH
        self._last_usage = -1
        self._inactive = 0
        self._limit_value = host_mem

    def read(self, system_ns: int) -> RawUsage:
        """One reading; raises OSError when the cgroup is gone or unreadable."""
        files = self.files
        fresh = self.reads == 0 or (self.reads + self._phase) % self.REFRESH == 0
        self.reads += 1
        if self.version == 1:
            cpu_ns = _int_or(files.read(_CPU), 0)
        else:
            cpu_ns = _kv_value(files.read(_CPU), b"usage_usec") * 1000
        usage = _int_or(files.read(_USAGE), 0)
        if fresh or usage != self._last_usage:
            self._inactive = _kv_value(files.read(_STAT), self._inactive_key)
            self._last_usage = usage
        if fresh:
            self._limit_value = _int_or(read_once(self._limit), self._host_mem)
        limit = self._limit_value
        if not self._has_blk:
            blk = (0, 0)
        elif self.version == 1:
            blk = parse_blkio_v1(files.read(_BLK))
        else:
            blk = parse_io_stat(files.read(_BLK))
        if self._inactive < usage:
            usage -= self._inactive
        if self._host_mem and limit > self._host_mem:
            limit = self._host_mem
        rx, tx = parse_net_dev(files.read(_NET))
        return RawUsage(cpu_ns, system_ns, usage, limit, rx, tx, blk[0], blk[1])


def read_usage(paths: CgroupPaths, net_dev: Path, system_ns: int, host_mem: int) -> RawUsage:
    """Read one container's counters once (no descriptor kept); raises OSError when they are
    gone or unreadable."""
    return UsageReader(paths, net_dev, host_mem).read(system_ns)


def compute_sample(
    prev: RawUsage | None, cur: RawUsage, online_cpus: int, when: datetime
) -> ResourceSample:
    """`docker stats` arithmetic: CPU % from the deltas against the host's CPU time."""
    cpu = 0.0
    if prev is not None:
        cpu_delta = cur.cpu_ns - prev.cpu_ns
        sys_delta = cur.system_ns - prev.system_ns
        if cpu_delta > 0 and sys_delta > 0:
            cpu = cpu_delta / sys_delta * online_cpus * 100.0
    mem_pct = cur.memory_usage / cur.memory_limit * 100.0 if cur.memory_limit else 0.0
    return ResourceSample(
        cpu_percent=round(cpu, 2),
        memory_usage=cur.memory_usage,
        memory_limit=cur.memory_limit,
        memory_percent=round(mem_pct, 2),
        network_rx_bytes=cur.rx,
        network_tx_bytes=cur.tx,
        disk_read_bytes=cur.blk_read,
        disk_write_bytes=cur.blk_write,
        timestamp=when,
    )
