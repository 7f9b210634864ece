"""A 3-node Swarm cluster on this machine (scripts/cluster-up.sh), built once per test session.

Every node is a dockerd in its own network namespace, reached through its own Unix socket; all
three are managers. The session always ends with scripts/cluster-down.sh, even when the cluster
did not form, and fails loudly when either script fails. Only a host where `docker info` fails
skips these tests (as tests/conftest.py does for the rest).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import docker
import pytest

from tests.conftest import IMAGES, RUN_ID, TEST_LABEL, _docker_ok

ROOT = Path(__file__).resolve().parents[2]
UP = ROOT / "scripts" / "cluster-up.sh"
DOWN = ROOT / "scripts" / "cluster-down.sh"
RUN_DIR = Path(os.environ.get("FMC_RUN_DIR") or f"/run/{os.environ.get('FMC_PREFIX') or 'fmc'}")
"""cluster-up.sh's run directory (its FMC_PREFIX and FMC_NET let two sessions run side by side)."""
REFUSED = 3
"""cluster-up.sh's exit status when a cluster (someone else's) is running already."""
NODES = 3
HEARTBEAT = "1s"
"""The dispatcher heartbeat of the test cluster: a dead node is noticed within a few seconds."""
UP_TIMEOUT = 180
BUSYBOX = IMAGES["busybox"]
FLOW_IMAGE = "flow:latest"
"""The flow runtime's image (answers {"command": "ping"} with {"pong": true}): the agent's tests."""
CLUSTER_IMAGES = (BUSYBOX, FLOW_IMAGE)
"""Loaded into every node by cluster-up.sh (FMC_IMAGES); all must exist on the host."""

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class Node:
    """One node of the cluster, as cluster-up.sh's state file describes it."""

    name: str
    host: str
    addr: str
    netns: str
    node_id: str
    pidfile: Path
    start_script: Path
    log_path: Path
    _client: docker.DockerClient | None = field(default=None, repr=False)

    @property
    def client(self) -> docker.DockerClient:
        """A Docker SDK client on this node's socket (made on first use, kept)."""
        if self._client is None:
            self._client = docker.DockerClient(base_url=self.host, timeout=30)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def dockerd_pid(self) -> int | None:
        """The pid of this node's dockerd, or None when it is not running."""
        try:
            pid = int(self.pidfile.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        return pid if str(self.pidfile.parent).encode() in cmdline else None

    def answers(self) -> bool:
        """Whether this node's dockerd answers a ping now.

        Probes the socket first: the SDK leaks its socket when a connect fails (a
        ResourceWarning, an error under this suite's filterwarnings), as it does while a
        drill has the daemon down."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.settimeout(2)
                probe.connect(self.host.removeprefix("unix://"))
        except OSError:
            self.close()
            return False
        try:
            self.client.ping()
        except Exception:  # any failure means "not answering"
            self.close()
            return False
        return True

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError as err:
            return f"(no log: {err})"


@dataclass
class Cluster:
    nodes: list[Node]
    heartbeat: str

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def by_id(self, node_id: str) -> Node:
        return next(n for n in self.nodes if n.node_id == node_id)

    def swarm_nodes(self) -> list[dict[str, Any]]:
        """`docker node ls` (as attrs) from the first node that answers as a manager."""
        for n in self.nodes:
            if n.answers():
                try:
                    return [sn.attrs for sn in n.client.nodes.list()]
                except docker.errors.APIError:
                    continue
        raise AssertionError("no manager of the cluster answers")

    def leader(self) -> Node:
        for sn in self.swarm_nodes():
            if sn.get("ManagerStatus", {}).get("Leader"):
                return self.by_id(sn["ID"])
        raise AssertionError("the swarm has no leader")

    def manager(self) -> docker.DockerClient:
        """A client on a node whose dockerd answers (every node is a manager)."""
        for n in self.nodes:
            if n.answers():
                return n.client
        raise AssertionError("no node of the cluster answers")

    def logs(self) -> str:
        return "\n".join(f"--- {n.name} ({n.log_path}):\n{n.log_tail()}" for n in self.nodes)

    def close(self) -> None:
        for n in self.nodes:
            n.close()


def wait_for(what: str, check: Callable[[], T | None], timeout: float, interval: float = 0.2) -> T:
    """Poll `check` until it returns something other than None/False; fail naming `what`."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = check()
            if value is not None and value is not False:
                return value
        except Exception as err:  # a node may be restarting: retry until the timeout
            last_error = err
        if time.monotonic() >= deadline:
            extra = f" (last error: {last_error!r})" if last_error else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{extra}")
        time.sleep(interval)


def _run(script: Path, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "FMC_HEARTBEAT": HEARTBEAT, "FMC_IMAGES": " ".join(CLUSTER_IMAGES)},
    )


def _load(state: dict[str, Any]) -> Cluster:
    nodes = [
        Node(
            name=n["name"],
            host=n["host"],
            addr=n["addr"],
            netns=n["netns"],
            node_id=n["node_id"],
            pidfile=Path(n["pidfile"]),
            start_script=Path(n["start_script"]),
            log_path=Path(n["log"]),
        )
        for n in state["nodes"]
    ]
    return Cluster(nodes=nodes, heartbeat=state["heartbeat"])


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """The running 3-manager cluster; removed at the end of the session whatever happened."""
    problem = _docker_ok()
    if problem:
        pytest.skip(f"no Docker Engine on the host ({problem})")
    if os.geteuid() != 0:
        pytest.fail("the cluster tests need root (network namespaces, iptables, dockerd)")
    for image in CLUSTER_IMAGES:
        if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode:
            pytest.fail(f"{image} missing on the host; build it with scripts/build-images.sh")
    built: Cluster | None = None
    ours = True
    try:
        started = time.monotonic()
        up = _run(UP, str(NODES), timeout=UP_TIMEOUT)
        if up.returncode == REFUSED:
            ours = False  # another session (or a person) is using that cluster: not ours to remove
            pytest.fail(f"cluster-up.sh refused:\n{up.stderr[-2000:]}")
        if up.returncode != 0:
            pytest.fail(
                f"cluster-up.sh {NODES} failed (exit {up.returncode}):\n{up.stderr[-6000:]}"
            )
        log.info("cluster-up.sh %d took %.1f s", NODES, time.monotonic() - started)
        built = _load(json.loads((RUN_DIR / "cluster.json").read_text()))
        yield built
    finally:
        if built is not None:
            built.close()
        if ours:
            started = time.monotonic()
            down = _run(DOWN, timeout=120)
            log.info("cluster-down.sh took %.1f s", time.monotonic() - started)
            if down.returncode != 0:
                pytest.fail(
                    f"cluster-down.sh failed (exit {down.returncode}):\n{down.stderr[-4000:]}"
                )


@pytest.fixture
def make_service(cluster: Cluster) -> Iterator[Callable[..., Any]]:
    """Creates busybox services labelled with this run's id; removes them after the test."""
    made: list[str] = []

    def make(stem: str, replicas: int = 1, **kwargs: Any) -> Any:
        name = f"{RUN_ID}-{stem}-{uuid.uuid4().hex[:4]}"
        service = cluster.manager().services.create(
            BUSYBOX,
            name=name,
            labels={TEST_LABEL: RUN_ID},
            container_labels={TEST_LABEL: RUN_ID},
            mode=docker.types.ServiceMode("replicated", replicas=replicas),
            stop_grace_period=2 * 10**9,
            **kwargs,
        )
        made.append(service.id)
        return service

    yield make
    for service_id in made:
        try:
            cluster.manager().services.get(service_id).remove()
        except docker.errors.NotFound:
            pass
        except Exception as err:  # cluster-down.sh removes everything anyway
            log.warning("could not remove service %s: %s", service_id, err)


def running_tasks(service: Any) -> list[dict[str, Any]]:
    """The service's tasks that are running now (fresh from the managers)."""
    return [t for t in service.tasks() if t["Status"]["State"] == "running"]
