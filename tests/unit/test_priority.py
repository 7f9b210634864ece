"""apply_priority in real child processes (so the test run's own priority is left alone)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, logging, os, sys
from pathlib import Path
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
from server.core.priority import apply_priority
if os.environ.get("AS_NOBODY"):  # after the import: a fresh clone's folder may be 0700
    os.setuid(65534)
ag = Path("/proc/self/autogroup")
changed = apply_priority(int(sys.argv[1]))
print(json.dumps({"changed": changed, "nice": os.getpriority(os.PRIO_PROCESS, 0),
                  "autogroup": ag.read_text() if ag.exists() else None}))
"""


def run_probe(nice: int, *, session: bool, nobody: bool = False) -> tuple[dict[str, Any], str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if nobody:
        env["AS_NOBODY"] = "1"
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(nice)],
        capture_output=True,
        text=True,
        env=env,
        start_new_session=session,
        timeout=30,
        check=True,
    )
    return json.loads(proc.stdout), proc.stderr


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="raising priority needs root")
has_autogroup = Path("/proc/self/autogroup").exists()


@needs_root
def test_session_leader_raises_its_nice_and_its_autogroup() -> None:
    out, _ = run_probe(-4, session=True)
    assert out["nice"] == -4
    assert "nice -4" in out["changed"]
    if has_autogroup:
        assert out["autogroup"].split()[-1] == "-4"
        assert "autogroup nice -4" in out["changed"]


@needs_root
def test_a_process_in_someone_elses_session_leaves_the_autogroup_alone() -> None:
    before = Path("/proc/self/autogroup").read_text() if has_autogroup else None
    out, _ = run_probe(-3, session=False)
    assert out["nice"] == -3
    assert out["changed"] == ["nice -3"]
    assert out["autogroup"] == before


def test_zero_changes_nothing() -> None:
    out, _ = run_probe(0, session=True)
    assert out["changed"] == []
    assert out["nice"] == os.getpriority(os.PRIO_PROCESS, 0)


@needs_root
def test_without_the_right_it_warns_and_goes_on() -> None:
    out, err = run_probe(-5, session=True, nobody=True)
    assert out["changed"] == []
    assert out["nice"] >= 0
    assert "could not set CPU priority nice=-5" in err
    assert "server.nice" in err
