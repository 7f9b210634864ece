"""A flow owns the inside of its socket directory: it must not steer the manager's chmod."""

from __future__ import annotations

import shutil
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.core.bus import EventBus
from server.core.config import FlowSettings
from server.core.errors import FlowSocketError
from server.core.flow_channel import FlowChannelHub

# A root flow (no CAP_DAC_OVERRIDE, but the owner of its directory when the manager is root)
# swaps `flow.sock` for a symbolic link to a host file, over and over.
_SWAPPER = """
import os, stat, sys, time
own, victim = sys.argv[1], sys.argv[2]
tmp, sock = os.path.join(own, ".l"), os.path.join(own, "flow.sock")
os.symlink(victim, tmp)
while True:
    try:
        if not stat.S_ISSOCK(os.lstat(sock).st_mode):
            continue
    except FileNotFoundError:
        continue
    os.rename(tmp, sock)  # the manager's socket just appeared: put the link in its place
    time.sleep(0.005)
    os.unlink(sock)
    os.symlink(victim, tmp)
"""


@pytest.fixture
def base() -> Iterator[Path]:
    path = Path(f"/tmp/fm/race-{uuid.uuid4().hex[:8]}")
    path.mkdir(parents=True, mode=0o700)
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def test_a_flow_swapping_its_socket_for_a_link_never_gets_a_host_file_chmodded(
    base: Path,
) -> None:
    own = base / "flow"
    own.mkdir()
    victim = base / "victim"
    victim.write_text("host secret")
    victim.chmod(0o600)
    hub = FlowChannelHub(EventBus(), FlowSettings())
    swapper = subprocess.Popen([sys.executable, "-c", _SWAPPER, str(own), str(victim)])
    try:
        for _ in range(400):
            try:
                await hub.open("c", str(own / "flow.sock"))
            except FlowSocketError:
                pass  # the link was there first: refused, nothing touched
            await hub.close("c")
            assert stat.S_IMODE(victim.stat().st_mode) == 0o600
    finally:
        swapper.kill()
        swapper.wait()
        await hub.aclose()
    assert stat.S_IMODE(victim.stat().st_mode) == 0o600
    assert victim.read_text() == "host secret"
