"""Pure pieces of the core: the stopped-on-request file, crash causes, archives."""

from __future__ import annotations

from pathlib import Path

from server.core.docker_adapter import parse_time
from server.core.monitor import crash_cause
from server.core.stopped import StoppedSet


def test_stopped_set_survives_a_new_instance(tmp_path: Path) -> None:
    first = StoppedSet(str(tmp_path))
    first.load()
    first.add("a" * 64)
    first.add("b" * 64)
    first.discard("b" * 64)
    second = StoppedSet(str(tmp_path))
    second.load()
    assert "a" * 64 in second and "b" * 64 not in second
    second.retain(set())
    third = StoppedSet(str(tmp_path))
    third.load()
    assert "a" * 64 not in third
    assert second.path.parent == tmp_path  # beside, never inside, the per-container dirs


def test_stopped_set_ignores_a_damaged_file(tmp_path: Path) -> None:
    s = StoppedSet(str(tmp_path))
    s.path.write_text("{not json")
    s.load()
    assert "x" not in s


def test_crash_causes() -> None:
    assert crash_cause(3, False) == "Exited with code 3"
    assert crash_cause(137, True) == "Out of memory"
    assert crash_cause(137, False) == "Killed by signal 9"


def test_docker_times() -> None:
    t = parse_time("2026-11-27T07:31:50.197483317Z")
    assert t is not None and t.microsecond == 197483 and t.utcoffset() is not None
    assert parse_time("0001-01-01T00:00:00Z") is None
    assert parse_time("garbage") is None
