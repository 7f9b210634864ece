"""Resource usage from cgroup v1 and v2 files, on recorded data, computed like `docker stats`."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from server.core.cgroups import (
    RawUsage,
    UsageReader,
    compute_sample,
    find_paths,
    parse_blkio_v1,
    parse_io_stat,
    parse_net_dev,
    parse_proc_cgroup,
    read_usage,
)

DATA = Path(__file__).resolve().parents[1] / "data"
V1, V2 = DATA / "cgroup_v1", DATA / "cgroup_v2"
V1_ID = "dcbaccae22537ce3fca20a4cc1babc45933bfd564a1758f5bfbfa901f0854940"
V2_ID = "3f1c9a0d2b7e4f6a8c5d1e0b9a7f3c2d4e6b8a0c1d3f5e7a9b2c4d6e8f0a1b2c"
HOST_MEM = 16 * 1024**3


def _paths(root: Path, pid: int):  # type: ignore[no-untyped-def]
    return find_paths(
        (root / f"proc/{pid}/cgroup").read_text(),
        (root / "proc/self/mountinfo").read_text(),
        str(root),
    )


def _copy_dir(src: Path, dst: Path) -> Path:
    """A writable copy of a recorded cgroup directory."""
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_text(f.read_text())
    return dst


def test_v1_paths_and_usage_from_a_real_container() -> None:
    paths = _paths(V1, 6844)
    assert paths is not None and paths.version == 1
    assert paths.memory == V1 / f"sys/fs/cgroup/memory/docker/{V1_ID}"
    assert paths.cpu == V1 / f"sys/fs/cgroup/cpuacct/docker/{V1_ID}"
    usage = read_usage(paths, V1 / "proc/6844/net/dev", 0, HOST_MEM)
    # memory.usage_in_bytes 9080832 minus total_inactive_file 8388608
    assert usage.memory_usage == 9080832 - 8388608
    assert usage.memory_limit == 64 * 1024 * 1024
    assert (usage.rx, usage.tx) == (516, 0)
    assert usage.cpu_ns > 0


def test_v2_paths_and_usage() -> None:
    paths = _paths(V2, 4242)
    assert paths is not None and paths.version == 2
    assert paths.memory == V2 / f"sys/fs/cgroup/system.slice/docker-{V2_ID}.scope"
    usage = read_usage(paths, V2 / "proc/4242/net/dev", 0, HOST_MEM)
    assert usage.cpu_ns == 1830412 * 1000
    assert usage.memory_usage == 26415104 - 9043968  # memory.current minus inactive_file
    assert usage.memory_limit == 134217728
    assert (usage.rx, usage.tx) == (548213 + 1000, 23911 + 500)  # lo excluded
    assert (usage.blk_read, usage.blk_write) == (11059200 + 1048576, 4096 + 8192)


def test_unlimited_memory_shows_host_memory(tmp_path: Path) -> None:
    paths = _paths(V2, 4242)
    assert paths is not None
    scope = _copy_dir(paths.memory, tmp_path / "scope")
    (scope / "memory.max").write_text("max\n")
    usage = read_usage(type(paths)(2, scope, scope, scope), V2 / "proc/4242/net/dev", 0, HOST_MEM)
    assert usage.memory_limit == HOST_MEM


def test_hybrid_host_prefers_v1_and_pure_v2_uses_unified() -> None:
    v1 = (V1 / "proc/6844/cgroup").read_text()
    assert parse_proc_cgroup(v1)[""] == f"/docker/{V1_ID}"
    only_unified = "0::/docker/abc\n"
    mountinfo = (V1 / "proc/self/mountinfo").read_text()
    paths = find_paths(only_unified, mountinfo)
    assert paths is not None and paths.version == 2
    assert paths.memory == Path("/sys/fs/cgroup/unified/docker/abc")
    assert find_paths("", mountinfo) is None


def test_namespaced_mount_root_is_stripped() -> None:
    mountinfo = "30 1 0:26 /docker/abc /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"
    paths = find_paths("0::/docker/abc/sub\n", mountinfo)
    assert paths is not None and paths.memory == Path("/sys/fs/cgroup/sub")


def test_blkio_v1_sums_read_and_write() -> None:
    text = (
        "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 12288\n8:0 Total 12288\n"
        "8:16 Read 100\n8:16 Write 0\nTotal 12388\n"
    )
    assert parse_blkio_v1(text) == (4196, 8192)
    assert parse_io_stat("8:0 rbytes=1 wbytes=2 rios=3\n") == (1, 2)
    assert parse_net_dev("h1\nh2\n") == (0, 0)


def test_cpu_percent_like_docker_stats() -> None:
    when = datetime.now(UTC)
    prev = RawUsage(1_000_000_000, 100_000_000_000, 10, 100, 0, 0, 0, 0)
    # the container used 0.5 s of CPU while the host's 2 CPUs ran 2 s in total
    cur = RawUsage(1_500_000_000, 102_000_000_000, 25, 100, 5, 6, 7, 8)
    sample = compute_sample(prev, cur, 2, when)
    assert sample.cpu_percent == 50.0
    assert sample.memory_percent == 25.0
    assert (sample.network_rx_bytes, sample.disk_write_bytes) == (5, 8)
    assert compute_sample(None, cur, 2, when).cpu_percent == 0.0


def test_reader_rereads_memory_stat_only_when_usage_moves(tmp_path: Path) -> None:
    paths = _paths(V2, 4242)
    assert paths is not None
    scope = _copy_dir(paths.memory, tmp_path / "scope")
    reader = UsageReader(type(paths)(2, scope, scope, scope), V2 / "proc/4242/net/dev", HOST_MEM)
    first = reader.read(0)
    assert first.memory_usage == 26415104 - 9043968
    # inactive_file alone changed: an idle container is not re-parsed every sweep
    stat = (scope / "memory.stat").read_text().replace("inactive_file 9043968", "inactive_file 0")
    (scope / "memory.stat").write_text(stat)
    assert reader.read(0).memory_usage == first.memory_usage
    # the usage counter moved: memory.stat is read again and the new inactive_file applies
    (scope / "memory.current").write_text("30000000\n")
    assert reader.read(0).memory_usage == 30000000
    # the limit is refreshed every REFRESH reads
    (scope / "memory.max").write_text("max\n")
    for _ in range(UsageReader.REFRESH):
        last = reader.read(0)
    assert last.memory_limit == HOST_MEM
