"""A real dockerd restarted and SIGKILLed under the running service, five rounds.

The service is the real one (uvicorn on 127.0.0.1, two Socket.IO clients connected): each loss
must reach both clients as `engine_status` and turn `/health` to 503, and each return must bring
`engine_status` back, the ended flow's `status_changed`, and working requests and events.

The machine's own dockerd may be shared, so this starts a second dockerd of its own (own
socket, data root, exec root) and stops exactly that one. It runs in a network namespace of its
own (`unshare --net`): a second daemon on the host's network deletes the shared engine's
`docker0` at start (seen here), while its Unix socket is reachable from any namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import socketio

from server.core.config import Settings
from server.core.docker_adapter import DockerAdapter
from server.core.manager import ContainerManager
from tests.integration.api_harness import BUSYBOX, WAIT, Recorder, client, running_service

logger = logging.getLogger(__name__)

pytestmark = [
    pytest.mark.docker,
    pytest.mark.slow,
]


class SecondEngine:
    """A private dockerd: started, signalled and stopped by its own pid only."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.sock = root / "docker.sock"
        self.url = f"unix://{self.sock}"
        self.proc: subprocess.Popen[bytes] | None = None

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["docker", "-H", self.url, *args], capture_output=True, text=True, timeout=120
        )

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
            [
                "unshare",
                "--net",
                "dockerd",
                "--host",
                self.url,
                "--data-root",
                str(self.root / "data"),
                "--exec-root",
                str(self.root / "exec"),
                "--pidfile",
                str(self.root / "pid"),
                "--iptables=false",
                "--ip-masq=false",
                "--cgroup-parent",
                f"flowmgr-{self.root.name}",
            ],
            stdout=log,
            stderr=log,
        )
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
        mounts = [
            line.split()[1]
            for line in Path("/proc/mounts").read_text().splitlines()
            if line.split()[1].startswith(str(self.root))
        ]
        for mount in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", mount], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)

    def _kill_leftovers(self) -> None:
        """containerd and shims started for our dockerd: their command lines hold our path."""
        mine = [
            p
            for p in psutil.process_iter(["pid", "cmdline"])
            if any(str(self.root) in arg for arg in (p.info["cmdline"] or []))
        ]
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
        with subprocess.Popen(["docker", "save", BUSYBOX], stdout=subprocess.PIPE) as save:
            load = subprocess.run(
                ["docker", "-H", eng.url, "load"],
                stdin=save.stdout,
                capture_output=True,
                text=True,
                timeout=120,
            )
            save.wait(60)
        assert load.returncode == 0, load.stderr
        yield eng
    finally:
        await asyncio.to_thread(eng.cleanup)


def _usage() -> tuple[int, int]:
    """Threads, and descriptors other than the sampler's kept-open files of the flow (cgroup
    and net/dev files: open while it runs, closed while it is stopped, by design)."""
    proc = psutil.Process()
    kept = sum(1 for f in proc.open_files() if f.path.startswith(("/sys/fs/cgroup/", "/proc/")))
    return proc.num_threads(), proc.num_fds() - kept


async def _latency(rec: Recorder, event: str, pred: Callable[[Any], bool], began: float) -> float:
    """Seconds from `began` until `rec` has an `event` matching `pred`."""
    await rec.wait_for(event, pred)
    return time.monotonic() - began


async def _everyone(
    recs: list[Recorder], event: str, pred: Callable[[Any], bool], began: float
) -> list[float]:
    """The latency of `event` at each client."""
    return list(await asyncio.gather(*(_latency(r, event, pred, began) for r in recs)))


async def _call(sio: socketio.AsyncClient, event: str, payload: dict[str, Any]) -> dict[str, Any]:
    answer: dict[str, Any] = await sio.call(event, payload, timeout=WAIT)
    assert answer.get("error") is not True, answer
    return answer


async def test_five_engine_restarts_and_kills(
    engine: SecondEngine, settings: Settings, unique_name: Callable[[str], str]
) -> None:
    """The real service (uvicorn, two Socket.IO clients) through five engine losses."""
    manager = ContainerManager(settings, adapter=DockerAdapter(10.0, base_url=engine.url))
    async with (
        running_service(settings, manager) as svc,
        client(svc.url) as (sio, rec_a),
        client(svc.url) as (_, rec_b),
        httpx.AsyncClient(base_url=svc.url, timeout=WAIT) as http,
    ):
        recs = [rec_a, rec_b]
        assert (await rec_a.wait_for("engine_status"))["available"] is True  # after the welcome
        created = await _call(
            sio, "create_container", {"name": unique_name("eng"), "image": BUSYBOX}
        )
        flow_id = created["container_id"]

        def flow_is(*states: str) -> Callable[[Any], bool]:
            return lambda d: d["container_id"] == flow_id and d["new_state"] in states

        await _call(sio, "start_container", {"container_id": flow_id})
        await _everyone(recs, "status_changed", flow_is("running"), time.monotonic())
        before: tuple[int, int] | None = None
        for round_ in range(5):
            sig = signal.SIGKILL if round_ % 2 else signal.SIGTERM
            for rec in recs:
                rec.events.clear()  # this round's events only
            began = time.monotonic()
            stopping = asyncio.create_task(engine.signal(sig))
            lost = await _everyone(recs, "engine_status", lambda d: d["available"] is False, began)
            await stopping
            health = await http.get("/health")
            assert health.status_code == 503, health.text
            assert "container_manager" in health.json()["failing"]
            reason = rec_a.events["engine_status"][-1]["reason"]
            assert reason, "a loss says why"

            await engine.start()
            answering = time.monotonic()
            back = await _everyone(
                recs, "engine_status", lambda d: d["available"] is True, answering
            )
            assert (await http.get("/health")).status_code == 200
            # the flow ended with the engine (SIGTERM: seen live; SIGKILL: while the manager
            # was blind, found by the resync from labels): reported to both clients either way
            await _everyone(recs, "status_changed", flow_is("exited", "stopped"), answering)
            logger.warning(
                "round %d %s: loss at both clients after %.2f s, return %.2f s after "
                "the engine answered (%s)",
                round_,
                sig.name,
                max(lost),
                max(back),
                reason,
            )
            assert max(lost) < 5.0  # the 2 s, plus this box's load
            assert max(back) < 10.0  # the 5 s, plus load

            # requests and events resumed: a start through Socket.IO, then a pause and an
            # unpause behind the manager's back, which only the events stream can report
            await _call(sio, "start_container", {"container_id": flow_id})
            await _everyone(recs, "status_changed", flow_is("running"), time.monotonic())
            for action, state in (("pause", "paused"), ("unpause", "running")):
                for rec in recs:
                    rec.events["status_changed"].clear()
                done = engine.cli(action, flow_id)
                assert done.returncode == 0, done.stderr
                await _everyone(recs, "status_changed", flow_is(state), time.monotonic())
            assert not rec_a.disconnected.is_set() and not rec_b.disconnected.is_set()
            if before is None:
                before = _usage()  # after the first round: pools and threads are warm
        after = _usage()
    assert before is not None
    logger.warning(
        "threads %d -> %d, open files %d -> %d", before[0], after[0], before[1], after[1]
    )
    assert after[0] <= before[0] + 2, f"threads {before[0]} -> {after[0]}"
    assert after[1] <= before[1] + 4, f"open files {before[1]} -> {after[1]}"
