"""The cluster roles as processes on the test cluster: one hub (`flowmgr --hub` on the host,
listening on the cluster bridge's address, over node 1's engine) and one agent per node
(`flowmgr --agent`, started inside that node's network namespace with `nsenter --net`, so a
cut node loses its hub link as a real one would)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.cluster.conftest import ROOT, Cluster, Node, wait_for
from tests.integration.api_harness import TEST_TOKEN

FLOWMGR = str(ROOT / ".venv" / "bin" / "flowmgr")
BRIDGE_ADDR = os.environ.get("FMC_NET", "10.213.0") + ".1"
"""The host's address on the cluster bridge: the one address both the host and the nodes'
namespaces reach (cluster-up.sh)."""


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class Roles:
    """The hub and agents of one test module, their config and logs under `base`."""

    cluster: Cluster
    base: Path
    instance: str = field(default_factory=lambda: "fmh" + uuid.uuid4().hex[:8])
    port: int = 0
    fence_seconds: float = 4.0
    hub: subprocess.Popen[bytes] | None = None
    agents: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{BRIDGE_ADDR}:{self.port}"

    def config(self, role: str) -> Path:
        """The config file of `role` ("hub" or a node's name): one cluster, its own dirs."""
        if not self.port:
            self.port = free_port(BRIDGE_ADDR)
        data: dict[str, Any] = {
            "socket_dir": str(self.base / role / "sockets"),
            "log_level": "INFO",
            "server": {"token": TEST_TOKEN, "host": BRIDGE_ADDR, "port": self.port},
            "docker": {
                "instance": self.instance,
                "default_image": "flow:latest",
                "stop_timeout": 2,
                "call_timeout": 30,
            },
            "journal": {"path": str(self.base / role / "journal.db")},
            "cluster": {
                "mode": "swarm",
                "hub_url": self.url,
                "agent_token_file": str(self.base / "agent.token"),
                "fence_seconds": self.fence_seconds,
                "agent_heartbeat": 0.5,
                "agent_timeout": 2.0,
            },
        }
        path = self.base / f"{role}.json"
        (self.base / role).mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data))
        return path

    def start_hub(self, node: Node | None = None) -> None:
        node = node or self.cluster.nodes[0]
        with open(self.base / "hub.log", "ab") as log:  # the child keeps its own copy
            self.hub = subprocess.Popen(
                [FLOWMGR, "--hub", "--config", str(self.config("hub"))],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "DOCKER_HOST": node.host},
                start_new_session=True,
            )
        wait_for("the hub's /health", self._hub_listens, 30)

    def _hub_listens(self) -> bool:
        if self.hub is not None and self.hub.poll() is not None:
            raise AssertionError(f"the hub exited ({self.hub.returncode}):\n{self.hub_log()}")
        try:
            with socket.create_connection((BRIDGE_ADDR, self.port), timeout=1):
                return True
        except OSError:
            return False

    def start_agent(self, node: Node) -> None:
        with open(self.base / f"agent-{node.name}.log", "ab") as log:
            self.agents[node.name] = subprocess.Popen(
                [
                    "nsenter",
                    f"--net=/run/netns/{node.netns}",
                    FLOWMGR,
                    "--agent",
                    "--config",
                    str(self.config(node.name)),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "DOCKER_HOST": node.host},
                start_new_session=True,
            )

    def stop_agent(self, node: Node) -> None:
        proc = self.agents.pop(node.name, None)
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)

    def kill_hub(self) -> None:
        if self.hub is not None and self.hub.poll() is None:
            os.killpg(self.hub.pid, signal.SIGKILL)
            self.hub.wait(10)

    def stop_all(self) -> None:
        procs = [p for p in [self.hub, *self.agents.values()] if p is not None]
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for p in procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)

    def hub_log(self, lines: int = 60) -> str:
        return _tail(self.base / "hub.log", lines)

    def agent_log(self, name: str, lines: int = 40) -> str:
        return _tail(self.base / f"agent-{name}.log", lines)

    def logs(self) -> str:
        parts = [f"--- hub:\n{self.hub_log()}"]
        parts += [f"--- agent {n}:\n{self.agent_log(n)}" for n in self.agents]
        return "\n".join(parts)

    def evidence(self, service_id: str) -> str:
        """What each node holds of one flow (its task containers, their state, the flow's own
        log and its socket file): printed when a flow does not answer, so a failure shows
        where the channel broke."""
        out = []
        for node in self.cluster.nodes:
            try:
                found = node.client.containers.list(
                    all=True, filters={"label": f"com.docker.swarm.service.id={service_id}"}
                )
            except Exception as err:  # noqa: BLE001 - a dead node is evidence too
                out.append(f"{node.name}: engine: {err}")
                continue
            for c in found:
                state = c.attrs["State"]
                mounts = [m.get("Source", "") for m in c.attrs.get("Mounts", [])]
                sock = [
                    f"{m}: {sorted(os.listdir(m)) if os.path.isdir(m) else 'absent'}"
                    for m in mounts
                ]
                try:
                    tail = c.logs(tail=15, timestamps=True).decode(errors="replace")
                except Exception as err:  # noqa: BLE001
                    tail = f"(no logs: {err})"
                out.append(
                    f"{node.name}: {c.short_id} task {c.labels.get('com.docker.swarm.task.id')} "
                    f"{state.get('Status')} started {state.get('StartedAt')} finished "
                    f"{state.get('FinishedAt')} mounts {sock}\n{tail}"
                )
        return "\n".join(out) or f"no container of {service_id} on any node"

    def remove_services(self) -> None:
        """Every service of this instance, whatever the hub did (cleanup even on failure)."""
        try:
            client = self.cluster.manager()
        except AssertionError:
            return
        for svc in client.services.list(filters={"label": f"flowmgr.instance={self.instance}"}):
            try:
                svc.remove()
            except Exception:  # noqa: BLE001 - best effort, reported by the next list
                pass


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as err:
        return f"(no log: {err})"


PREFIX = os.environ.get("FMC_PREFIX") or "fmc"
_SWARM_PORTS = ("-p", "tcp", "-m", "multiport", "--dports", "2377,7946")
_GOSSIP = ("-p", "udp", "--dport", "7946")


def swarm_traffic(blocked: bool) -> None:
    """Cut (or restore) the managers' traffic to each other (Raft 2377, gossip 7946) on the
    cluster bridge, leaving every other path alone: each manager is alone, so the swarm has
    no leader, while the nodes' agents still reach the hub (the host's address). The rules
    carry cluster-up.sh's comment: cluster-down.sh removes any left behind."""
    action = "-I" if blocked else "-D"
    bridge = f"{PREFIX}-br0"
    for match in (_SWARM_PORTS, _GOSSIP):
        cmd = ["iptables", action, "FORWARD", "-i", bridge, "-o", bridge, *match, "-j", "DROP"]
        cmd += ["-m", "comment", "--comment", f"{PREFIX}-cluster"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode and blocked:
            raise AssertionError(f"{' '.join(cmd)}: {done.stderr}")


def node_link(node: Node, up: bool) -> None:
    """Cut (or restore) a node's only network link: its veth on the cluster bridge."""
    name = f"{PREFIX}-{node.name}h"
    subprocess.run(["ip", "link", "set", name, "up" if up else "down"], check=True)
