"""The deployment guide's container commands, typed as written, on the real engine.

`task flow-manager:build` makes the image; then the guide's `docker run` line, its compose file
with `docker-compose up -d`, and `task flow-manager:run` each deploy it in turn (one deployment
per class, torn down before the next: they share the guide's fixed name `flow-manager` and host
port 8000). Each is checked as the issue says: `/health` healthy with every component active, a
flow created through the API runs and answers, and `docker exec -it ... flowmgr` shows it.

A container named flow-manager or a listener on port 8000 that this run did not start makes
these tests skip (with the reason) rather than touch someone else's deployment.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import socketio

from tests.conftest import RUN_ID, TEST_LABEL
from tests.integration import guide_text as guide

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "kawaflow/flow-manager:latest"
NAME = "flow-manager"
SOCKETS = "/tmp/kawaflow/sockets"
TOKEN_FILE = f"{SOCKETS}/.flowmgr-default/.api-token"
URL = "http://127.0.0.1:8000"

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def _run(
    *args: str, timeout: float = 120, check: bool = True, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, cwd=cwd, stdin=subprocess.DEVNULL
    )
    if check and out.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}"
        )
    return out


def _bash(script: str, *, cwd: Path | None = None, timeout: float = 180) -> str:
    """Run the guide's text exactly as a user pastes it into bash."""
    return _run("bash", "-euc", script, cwd=cwd, timeout=timeout).stdout


def _task(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    task = Path(sys.executable).parent / "task"
    return subprocess.run(
        [str(task), "--color=false", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "NO_COLOR": "1"},
    )


def _port_8000_taken() -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", 8000)) == 0


def _slot_or_skip() -> None:
    """The guide fixes the name and the port: never run over a deployment that is not ours."""
    if _run("docker", "container", "inspect", NAME, check=False).returncode == 0:
        pytest.skip(f"a container named {NAME} exists (not this run's): the guide's name is taken")
    if _port_8000_taken():
        pytest.skip("something listens on port 8000: the guide's port is taken")


def _health() -> dict[str, Any]:
    """The guide's `curl http://localhost:8000/health`, as typed."""
    out = _run(*guide.HEALTH_CHECK.split(), "-s", check=False, timeout=10)
    try:
        body: dict[str, Any] = json.loads(out.stdout)
    except ValueError:
        return {}
    return body


def _wait_healthy(container: str, timeout: float = 90) -> dict[str, Any]:
    body: dict[str, Any] = {}
    deadline = time.monotonic() + timeout
    while body.get("status") != "healthy" and time.monotonic() < deadline:
        time.sleep(0.5)  # the service is starting: nothing to await but its port
        body = _health()
    logs = _run("docker", "logs", "--tail", "30", container, check=False)
    assert body.get("status") == "healthy", f"{body}\n{logs.stdout}{logs.stderr}"
    return body


@dataclass
class Deployment:
    """One running deployment of the guide and what the tests made in it."""

    container: str
    token: str
    flows: list[str] = field(default_factory=list)
    flow_id: str = ""
    ids: list[str] = field(default_factory=list)
    """The manager containers this run started (the upgrade replaces one)."""


def _token(container: str) -> str:
    """The token the service generated on first start (no token is configured in the guide)."""
    token = _run("docker", "exec", container, "cat", TOKEN_FILE).stdout.strip()
    assert token, f"no token in {TOKEN_FILE}"
    return token


async def _delete_through_the_api(dep: Deployment) -> None:
    client = socketio.AsyncClient(reconnection=False)
    await client.connect(URL, auth={"token": dep.token}, wait_timeout=20)
    try:
        for name in dep.flows:
            await client.call("delete_container", {"container_id": name}, timeout=60)
    finally:
        await client.disconnect()


def _remove_flows(dep: Deployment) -> None:
    """Best effort, also after a failure: the flows this run made (through the API, so the
    manager drops their socket dirs; then by name), and their data volumes."""
    if dep.flows and dep.token:
        try:
            asyncio.run(_delete_through_the_api(dep))
        except Exception as err:  # noqa: BLE001 - the fallback below still removes them
            print(f"deleting flows through the API failed: {err!r}", file=sys.stderr)  # noqa: T201
    ids = _run("docker", "ps", "-aq", "--filter", f"name={RUN_ID}-guide", check=False).stdout
    if ids.split():
        _run("docker", "rm", "-f", *ids.split(), check=False)
    for name in dep.flows:
        _run("docker", "volume", "rm", f"flowmgr-data-{name}", check=False)


@pytest.fixture(scope="module")
def guide_image(docker_engine: None) -> Iterator[subprocess.CompletedProcess[str]]:
    """`task flow-manager:build` (offline here; reused when its sources are unchanged). At the
    end, the guide's network `kawaflow` goes again if these deployments made it."""
    had_network = _run("docker", "network", "inspect", "kawaflow", check=False).returncode == 0
    out = _task("flow-manager:build")
    assert out.returncode == 0, out.stdout + out.stderr
    yield out
    if not had_network:
        _run("docker", "network", "rm", "kawaflow", check=False)  # refused while in use


def _prepare_socket_dir() -> None:
    """The guide's step 2, as typed (mode 777 on a directory the test box keeps for it)."""
    _bash(guide.SOCKET_DIR_STEP)


async def _flow_runs_and_answers(dep: Deployment, *, existing: str = "") -> None:
    """Create and start a flow through the API (or take the `existing` one), check that it is
    running, message it through its socket."""
    client = socketio.AsyncClient(reconnection=False)
    received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    client.on("message_received", received.put_nowait)
    await client.connect(URL, auth={"token": dep.token}, wait_timeout=20)
    try:
        cid = existing
        if not cid:
            name = f"{RUN_ID}-guide-{uuid.uuid4().hex[:4]}"
            dep.flows.append(name)
            created = await client.call("create_container", {"name": name}, timeout=60)
            assert created.get("status") == "created", created
            cid = str(created["container_id"])
            started = await client.call("start_container", {"container_id": cid}, timeout=60)
            assert started.get("status") == "running", started
        status = await client.call("get_container_status", {"container_id": cid}, timeout=30)
        assert status["state"] == "running", status
        message = {"hello": "guide"}
        async with asyncio.timeout(60):
            while True:  # the flow dials its socket a moment after it starts
                sent = await client.call(
                    "send_message", {"container_id": cid, "message": message}, timeout=30
                )
                if sent.get("status") == "sent":
                    break
                assert sent.get("error_type") in {"socket_connection_error", "socket_error"}
                await asyncio.sleep(0.5)
            while (event := await received.get())["message"].get("echo") != message:
                pass
        assert event["container_id"] == cid
        dep.flow_id = cid
    finally:
        await client.disconnect()


async def _memory_of_the_flow(dep: Deployment) -> dict[str, Any]:
    """`container_status.resource_usage` of the flow once memory shows (or the last one)."""
    client = socketio.AsyncClient(reconnection=False)
    await client.connect(URL, auth={"token": dep.token}, wait_timeout=20)
    status: dict[str, Any] = {}
    try:
        async with asyncio.timeout(30):
            while not (status.get("resource_usage") or {}).get("memory_usage"):
                status = await client.call(
                    "get_container_status", {"container_id": dep.flow_id}, timeout=30
                )
                await asyncio.sleep(0.5)  # samples come on the sampler's clock
    except TimeoutError:
        pass
    finally:
        await client.disconnect()
    return status


def _panel(container: str, expect: str, timeout: float = 90) -> str:
    """`docker exec -it CONTAINER flowmgr` under our own tmux server; the pane once `expect`
    shows (or at the deadline)."""
    server = f"fm-{uuid.uuid4().hex[:8]}"
    tmux = ("tmux", "-L", server)
    _run(*tmux, "new-session", "-d", "-x", "120", "-y", "40", "-s", "p",
         f"docker exec -it {container} flowmgr")  # fmt: skip
    pane = ""
    try:
        deadline = time.monotonic() + timeout
        while expect not in pane and time.monotonic() < deadline:
            time.sleep(0.5)  # a pane has no change notification to await
            pane = _run(*tmux, "capture-pane", "-p", "-t", "p", check=False).stdout
        _run(*tmux, "send-keys", "-t", "p", "C-q", check=False)
        return pane
    finally:
        _run(*tmux, "kill-server", check=False)


def _service_identity(container: str) -> dict[str, str]:
    """The service process's ids, groups and capabilities (its host pid, read on the host)."""
    pid = _run("docker", "inspect", "-f", "{{.State.Pid}}", container).stdout.strip()
    status = Path(f"/proc/{pid}/status").read_text()
    return {
        k: v.strip() for k, v in (line.split(":", 1) for line in status.splitlines() if ":" in line)
    }


def _check_panel_shows_the_flow(dep: Deployment) -> None:
    assert dep.flow_id, "no flow was started in this deployment"
    short = dep.flow_id[:12]
    pane = _panel(dep.container, short)
    row = next((line for line in pane.splitlines() if short in line), "")
    assert "running" in row, f"the panel did not list {short} as running:\n{pane}"


# ---- the guide's `docker run` line -------------------------------------------------------


@pytest.fixture(scope="class")
def guide_docker_run(guide_image: Any) -> Iterator[Deployment]:
    _slot_or_skip()
    _prepare_socket_dir()
    dep = Deployment(container=NAME, token="")
    dep.ids.append(_bash(guide.DOCKER_RUN).strip())
    try:
        _wait_healthy(NAME)
        dep.token = _token(NAME)
        yield dep
    finally:
        _remove_flows(dep)
        _run("docker", "rm", "-f", *dep.ids, check=False)  # only the containers we started


class TestGuideDockerRun:
    """Installation, "Using Docker": steps 2 and 3 and the health check, as written."""

    def test_health_is_healthy_with_every_component_active(
        self, guide_docker_run: Deployment
    ) -> None:
        body = _health()
        assert body["status"] == "healthy" and body["service"] == "flow-manager", body
        assert body["socket_dir"] == SOCKETS
        assert body["components"] == dict.fromkeys(
            ("container_manager", "socket_handler", "event_handler", "journal"), "active"
        )

    def test_service_runs_as_flowmgr_in_the_sockets_group(
        self, guide_docker_run: Deployment
    ) -> None:
        """Not root: uid 10001 with the gid of the host's docker.sock, found at start."""
        ident = _service_identity(NAME)
        gid = os.stat("/var/run/docker.sock").st_gid
        assert ident["Uid"].split() == ["10001"] * 4 and ident["Gid"].split() == ["10001"] * 4
        assert str(gid) in ident["Groups"].split() and "0" not in ident["Groups"].split()
        assert ident["CapEff"] == "0000000000000000" and ident["NoNewPrivs"] == "1"
        logs = _run("docker", "logs", NAME).stdout
        assert f"joining group {gid} of /var/run/docker.sock" in logs

    async def test_a_flow_created_through_the_api_runs(self, guide_docker_run: Deployment) -> None:
        await _flow_runs_and_answers(guide_docker_run)

    async def test_the_flow_reports_memory(self, guide_docker_run: Deployment) -> None:
        status = await _memory_of_the_flow(guide_docker_run)
        assert (status.get("resource_usage") or {}).get("memory_usage", 0) > 0, status

    def test_docker_exec_flowmgr_shows_the_flow(self, guide_docker_run: Deployment) -> None:
        _check_panel_shows_the_flow(guide_docker_run)

    async def test_the_guides_upgrade_keeps_the_flow(self, guide_docker_run: Deployment) -> None:
        """Upgrading: `docker pull` has no registry here (`task flow-manager:build` made the
        image); then `docker stop`, `docker rm` and the same `docker run`, as written. The new
        manager re-adopts the running flow and talks to it again."""
        dep = guide_docker_run
        assert dep.flow_id, "no flow was started in this deployment"
        await asyncio.to_thread(_bash, "docker stop flow-manager\ndocker rm flow-manager")
        dep.ids.append((await asyncio.to_thread(_bash, guide.DOCKER_RUN)).strip())
        await asyncio.to_thread(_wait_healthy, NAME)
        await _flow_runs_and_answers(dep, existing=dep.flow_id)


# ---- the guide's docker-compose.yml and `docker-compose up -d` ---------------------------


@pytest.fixture(scope="class")
def guide_compose(
    guide_image: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    _slot_or_skip()
    _prepare_socket_dir()
    project_dir = tmp_path_factory.mktemp(f"{RUN_ID}guide")  # the project's name comes from it
    (project_dir / "docker-compose.yml").write_text(guide.COMPOSE_FILE)
    dep = Deployment(container="", token="")
    try:
        _bash(guide.COMPOSE_UP, cwd=project_dir)
        dep.container = _run(
            "docker-compose", "ps", "-q", "flow-manager", cwd=project_dir
        ).stdout.strip()
        _wait_healthy(dep.container)
        dep.token = _token(dep.container)
        yield dep
    finally:
        _remove_flows(dep)
        _run("docker-compose", "down", "--timeout", "10", cwd=project_dir, check=False)


class TestGuideCompose:
    """Deployment Options, "Docker Compose": the guide's file, `docker-compose up -d`."""

    def test_health_is_healthy_with_every_component_active(self, guide_compose: Deployment) -> None:
        body = _health()
        assert body["status"] == "healthy" and body["socket_dir"] == SOCKETS, body
        assert set(body["components"].values()) == {"active"}

    async def test_a_flow_created_through_the_api_runs(self, guide_compose: Deployment) -> None:
        await _flow_runs_and_answers(guide_compose)

    async def test_the_flow_reports_memory(self, guide_compose: Deployment) -> None:
        status = await _memory_of_the_flow(guide_compose)
        assert (status.get("resource_usage") or {}).get("memory_usage", 0) > 0, status

    def test_docker_exec_flowmgr_shows_the_flow(self, guide_compose: Deployment) -> None:
        _check_panel_shows_the_flow(guide_compose)


# ---- the Taskfile commands -----------------------------------------------------------------


def test_task_flow_manager_build_tags_the_guides_name(
    guide_image: subprocess.CompletedProcess[str],
) -> None:
    """Both names on one image; a second build with unchanged sources reuses it."""
    ids = {
        tag: _run("docker", "image", "inspect", "-f", "{{.Id}}", tag).stdout.strip()
        for tag in (IMAGE, "flowmgr:latest")
    }
    assert len(set(ids.values())) == 1, ids
    again = _task("flow-manager:build")
    assert again.returncode == 0, again.stdout + again.stderr
    if "building offline" in guide_image.stdout + again.stdout:
        assert "present and up to date" in again.stderr, again.stderr
    assert _run("docker", "image", "inspect", "-f", "{{.Id}}", IMAGE).stdout.strip() == ids[IMAGE]


def test_task_flow_manager_run_runs_the_service(guide_image: Any) -> None:
    """`task flow-manager:run`: the guide's container, healthy; refuses a second one."""
    _slot_or_skip()
    out = _task("flow-manager:run", timeout=180)
    try:
        assert out.returncode == 0, out.stdout + out.stderr
        assert _health()["status"] == "healthy"
        inspect = _run("docker", "inspect", NAME).stdout
        assert IMAGE in inspect and '"8000/tcp"' in inspect
        again = _task("flow-manager:run", timeout=60)
        assert again.returncode != 0 and "docker stop flow-manager" in again.stderr
    finally:
        _run("docker", "rm", "-f", NAME, check=False)


# ---- what the image says when it cannot reach the engine -----------------------------------


def test_the_image_says_what_keeps_it_from_the_engine(
    guide_image: Any, tmp_path: Path, unique_name: Any
) -> None:
    """No socket, a socket of gid 0, started as the user without the group: each one `/health`
    reason with its fix, and one log line; the service never runs as root."""
    fake = Path("/tmp/fm") / f"g0{uuid.uuid4().hex[:6]}"
    fake.mkdir(parents=True, exist_ok=True)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(fake / "docker.sock"))  # owned by root:root, as on a host without a group
    (fake / "docker.sock").chmod(0o660)
    gid = os.stat("/var/run/docker.sock").st_gid
    cases = {
        "no socket": ([], "no Docker socket at /var/run/docker.sock"),
        "gid 0": (
            ["-v", f"{fake}/docker.sock:/var/run/docker.sock"],
            "belongs to group 0 (root), which the service does not join on its own; "
            "accept it with -e FLOWMGR_DOCKER_GID=0",
        ),
        "no group": (
            ["--user", "10001", "-v", "/var/run/docker.sock:/var/run/docker.sock"],
            f"docker run --group-add {gid}",
        ),
    }
    names = {case: unique_name("noengine") for case in cases}
    try:
        for case, (flags, _) in cases.items():
            _run("docker", "run", "-d", "--name", names[case], "--label", f"{TEST_LABEL}={RUN_ID}",
                 "-p", "127.0.0.1::8000", *flags, IMAGE)  # fmt: skip
        for case, (_, expect) in cases.items():
            port = _run("docker", "port", names[case], "8000/tcp").stdout.split(":")[-1].strip()
            body: dict[str, Any] = {}
            deadline = time.monotonic() + 60
            while expect not in str(body.get("reason")) and time.monotonic() < deadline:
                time.sleep(0.5)  # the first engine attempt happens at start
                out = _run("curl", "-s", f"http://127.0.0.1:{port}/health", check=False)
                body = json.loads(out.stdout) if out.stdout.startswith("{") else {}
            assert body.get("status") == "unhealthy" and expect in body["reason"], (case, body)
            logs = _run("docker", "logs", names[case]).stdout
            assert sum("Docker Engine unreachable" in line for line in logs.splitlines()) == 1
            assert _service_identity(names[case])["Uid"].split()[0] == "10001", case
        bad = _run("docker", "run", "--rm", "-e", "FLOWMGR_DOCKER_GID=0; id", IMAGE, check=False)
        assert bad.returncode == 2 and "is not a group id" in bad.stdout, bad
    finally:
        _run("docker", "rm", "-f", *names.values(), check=False)
        sock.close()
        (fake / "docker.sock").unlink(missing_ok=True)
        fake.rmdir()
