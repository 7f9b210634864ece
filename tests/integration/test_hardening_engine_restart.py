"""A real dockerd restarted and SIGKILLed under a running manager, five rounds.

The machine's own dockerd may be shared, so this starts a second dockerd of its own (own
socket, data root, exec root) and stops exactly that one. It runs in a network namespace of its
own (`unshare --net`): a second daemon on the host's network deletes the shared engine's
`docker0` at start (seen here), while its Unix socket is reachable from any namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import psutil
import pytest

from server.core.bus import Subscription
from server.core.config import Settings
from server.core.docker_adapter import DockerAdapter
from server.core.events import (
    ContainerStateChanged,
    DockerConnectionLost,
    DockerConnectionRestored,
    Event,
)
from server.core.manager import ContainerManager
from server.core.models import CreateSpec
from tests.integration.manager_helpers import BUSYBOX, WAIT, wait_event

pytestmark = [
    pytest.mark.docker,
    pytest.mark.slow,
    # docker-py leaks the socket of each refused connect while the engine is down (SDK matter)
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
]


class SecondEngine:
    """A private dockerd: started, signalled and stopped by its own pid only."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.sock = root / "docker.sock"
        self.url = f"unix://{self.sock}"
        self.proc: subprocess.Popen[bytes] | None = None

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["docker", "-H", self.url, *args], capture_output=True, text=True,
                              timeout=120)

    async def start(self) -> float:
        """Start dockerd (a second try when its containerd is slow to come up); seconds taken."""
        began = time.monotonic()
        for _attempt in range(3):
            if await self._try_start():
                return time.monotonic() - began
            # dockerd gives its containerd a fixed time to start: a loaded machine can miss it
            await asyncio.to_thread(self._kill_leftovers)
        raise AssertionError((self.root / "dockerd.log").read_text()[-2000:])

    async def _try_start(self) -> bool:
        log = open(self.root / "dockerd.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            # unshare execs dockerd: the pid we signal is the daemon's own
            ["unshare", "--net", "dockerd", "--host", self.url,
             "--data-root", str(self.root / "data"), "--exec-root", str(self.root / "exec"),
             "--pidfile", str(self.root / "pid"), "--iptables=false", "--ip-masq=false",
             "--cgroup-parent", f"flowmgr-{self.root.name}"], stdout=log, stderr=log)
        log.close()
        async with asyncio.timeout(90):
            while (await asyncio.to_thread(self.cli, "info")).returncode != 0:
                if self.proc.poll() is not None:
                    return False
                await asyncio.sleep(0.2)
        return True

    async def signal(self, sig: int) -> None:
        """Send `sig` to our dockerd and wait for it to exit."""
        assert self.proc is not None
        self.proc.send_signal(sig)
        await asyncio.to_thread(self.proc.wait, 60)

    def cleanup(self) -> None:
        """Stop our dockerd, then what it left (found by our private path), unmount, remove."""
        if self.proc is not None and self.proc.poll() is None:
            ids = self.cli("ps", "-aq").stdout.split()
            if ids:
                self.cli("rm", "-f", *ids)
            self.cli("network", "prune", "-f")
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(30)
        self._kill_leftovers()
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
                  if line.split()[1].startswith(str(self.root))]
        for mount in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", mount], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)

    def _kill_leftovers(self) -> None:
        """containerd and shims started for our dockerd: their command lines hold our path."""
        mine = [p for p in psutil.process_iter(["pid", "cmdline"])
                if any(str(self.root) in arg for arg in (p.info["cmdline"] or []))]
        for proc in mine:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(mine, timeout=10)


@pytest.fixture
async def engine() -> AsyncIterator[SecondEngine]:
    if shutil.which("dockerd") is None:
        pytest.fail("dockerd is not installed (scripts/ensure-dockerd.sh installs it)")
    eng = SecondEngine(Path(f"/tmp/fme-{uuid.uuid4().hex[:6]}"))
    eng.root.mkdir()
    try:
        await eng.start()
        save = subprocess.Popen(["docker", "save", BUSYBOX], stdout=subprocess.PIPE)
        load = subprocess.run(["docker", "-H", eng.url, "load"], stdin=save.stdout,
                              capture_output=True, text=True, timeout=120)
        save.wait(60)
        assert load.returncode == 0, load.stderr
        yield eng
    finally:
        await asyncio.to_thread(eng.cleanup)


async def _until(sub: Subscription, kind: type[Event]) -> list[Event]:
    """Every event up to and including the first of `kind`."""
    seen: list[Event] = []
    async with asyncio.timeout(WAIT):
        async for event in sub:
            seen.append(event)
            if isinstance(event, kind):
                return seen
    raise AssertionError("the bus closed")


def _usage() -> tuple[int, int]:
    proc = psutil.Process()
    return proc.num_threads(), proc.num_fds()


async def test_five_engine_restarts_and_kills(engine: SecondEngine, settings: Settings,
                                              unique_name: Callable[[str], str]) -> None:
    m = ContainerManager(settings, adapter=DockerAdapter(10.0, base_url=engine.url))
    async with m, m.bus.subscribe(maxsize=100_000) as sub:
        flow = await m.create_container(CreateSpec(name=unique_name("eng"), image=BUSYBOX))
        await m.start_container(flow.id)
        before: tuple[int, int] | None = None
        for round_ in range(5):
            sig = signal.SIGKILL if round_ % 2 else signal.SIGTERM
            began = time.monotonic()
            await engine.signal(sig)
            seen = await _until(sub, DockerConnectionLost)
            assert time.monotonic() - began < 5.0  # the 2 s, plus this box's load
            assert m.health()["container_manager"] != "active"
            await engine.start()
            answering = time.monotonic()
            seen += await _until(sub, DockerConnectionRestored)
            assert time.monotonic() - answering < 10.0  # the 5 s, plus load
            # the flow ended with the engine (SIGTERM: seen live; SIGKILL: while the manager
            # was blind, found by the resync from labels): reported either way
            ended = [e for e in seen if isinstance(e, ContainerStateChanged)
                     and e.container_id == flow.id and e.new_state in ("exited", "stopped")]
            assert ended, f"round {round_} ({sig.name}): no end reported; saw {seen}"
            assert m.get(flow.id).state in ("exited", "stopped")
            await m.start_container(flow.id)  # events resumed: the start is seen
            await wait_event(sub, ContainerStateChanged,
                             lambda e: e.container_id == flow.id and e.new_state == "running")
            if before is None:
                before = _usage()  # after the first round: pools and threads are warm
        after = _usage()
    assert before is not None
    assert after[0] <= before[0] + 2, f"threads {before[0]} -> {after[0]}"
    assert after[1] <= before[1] + 4, f"open files {before[1]} -> {after[1]}"
