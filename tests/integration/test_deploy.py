"""The flow-manager image and the compose file, run for real against the local engine."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import resource
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import socketio

from server.core.token_file import read_client_token
from tests.conftest import RUN_ID, TEST_LABEL

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "flowmgr:latest"
COMPOSE_FILE = ROOT / "deploy" / "docker-compose.yml"

pytestmark = [
    pytest.mark.docker,
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("server.core.manager") is None,
        reason="the service (server.core.manager) has not landed yet",
    ),
]


def _run(*args: str, timeout: float = 120, check: bool = True) -> str:
    """Run a command; on failure show what it printed."""
    out = subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    if check and out.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}"
        )
    return out.stdout.strip()


def _docker_gid() -> int:
    return os.stat("/var/run/docker.sock").st_gid


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def flowmgr_image(docker_engine: None) -> str:
    """Build (or reuse, when its sources are unchanged) the flow-manager image, offline."""
    _run("bash", str(ROOT / "scripts" / "build-images.sh"), "flowmgr", timeout=600)
    # No USER: the entry point starts as root to join docker.sock's group, then drops to
    # flowmgr (the tests below check the service's uid; test_guide_deploy.py its groups).
    entry = _run("docker", "image", "inspect", "-f", "{{json .Config.Entrypoint}}", IMAGE)
    assert entry == '["/usr/local/bin/flowmgr-entrypoint"]'
    return IMAGE


@pytest.fixture
def deploy_dirs() -> Iterator[tuple[Path, Path]]:
    """A short socket dir set up as the README says (group of docker.sock, 3770) and a config."""
    key = uuid.uuid4().hex[:8]
    sock_dir = Path("/tmp/fm") / f"d{key}"
    sock_dir.mkdir(parents=True)
    os.chown(sock_dir, -1, _docker_gid())
    sock_dir.chmod(0o3770)
    conf_dir = Path("/tmp/fm") / f"c{key}"
    conf_dir.mkdir()
    config = json.loads((ROOT / "config.json").read_text())
    config["docker"].update(instance=RUN_ID, network=f"flowmgr-{RUN_ID}-{key}")
    conf_file = conf_dir / "config.json"
    conf_file.write_text(json.dumps(config))
    conf_file.chmod(0o644)
    yield sock_dir, conf_file
    _remove_flows_and_network(config["docker"]["network"])
    shutil.rmtree(sock_dir, ignore_errors=True)
    shutil.rmtree(conf_dir, ignore_errors=True)


def _remove_flows_and_network(network: str) -> None:
    """Best effort: flows the containerised manager made in this run, then its network."""
    ids = _run(
        "docker",
        "ps",
        "-aq",
        "--filter",
        f"label=flowmgr.instance={RUN_ID}",
        "--filter",
        f"network={network}",
        check=False,
    ).split()
    if ids:
        _run("docker", "rm", "-f", *ids, check=False)
    _run("docker", "network", "rm", network, check=False)


async def _wait_healthy(container: str, timeout: float = 120) -> None:
    """Poll Docker's view of the image's HEALTHCHECK until it reports healthy."""
    state = ""
    try:
        async with asyncio.timeout(timeout):
            while state != "healthy":
                state = await asyncio.to_thread(
                    _run,
                    "docker",
                    "inspect",
                    "-f",
                    "{{.State.Status}} {{.State.Health.Status}}",
                    container,
                )
                assert not state.startswith("exited"), _run("docker", "logs", container)
                state = state.split()[-1]
                await asyncio.sleep(0.5)
    except TimeoutError:
        logs = _run("docker", "logs", "--tail", "40", container, check=False)
        raise AssertionError(
            f"{container} not healthy within {timeout}s ({state}):\n{logs}"
        ) from None


def _generated_token(sock_dir: Path) -> str:
    """The token the containerised service generated in the mounted socket dir (no token is
    configured, as in the guide's plain `docker run`); root on the host reads it."""
    token = read_client_token(str(sock_dir / f".flowmgr-{RUN_ID}" / ".api-token"))
    assert token, "the service generated no token in the mounted socket dir"
    return token


async def _talk_to_a_flow(
    url: str, token: str, name: str | None, cid: str = "", *, restart: bool = False
) -> str:
    """Create and start a flow (when `name` is given) or restart it, message it; return its id."""
    client = socketio.AsyncClient(reconnection=False)
    welcomed: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
    received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    def welcome(data: dict[str, Any]) -> None:
        if not welcomed.done():
            welcomed.set_result(data)

    client.on("connected", welcome)
    client.on("message_received", received.put_nowait)
    await client.connect(url, auth={"token": token}, wait_timeout=20)
    try:
        async with asyncio.timeout(20):
            assert "message" in await welcomed
        if name is not None:
            created = await client.call(
                "create_container", {"name": name, "image": "flow:latest"}, timeout=60
            )
            assert created.get("status") == "created", created
            cid = created["container_id"]
            started = await client.call("start_container", {"container_id": cid}, timeout=60)
            assert started.get("status") == "running", started
        if restart:
            restarted = await client.call("restart_container", {"container_id": cid}, timeout=60)
            assert restarted.get("status") == "running", restarted
        await _send_until_echoed(client, cid, received)
        await _wait_for_resource_usage(client, cid)
        return str(cid)
    finally:
        await client.disconnect()


async def _send_until_echoed(
    client: socketio.AsyncClient, cid: str, received: asyncio.Queue[dict[str, Any]]
) -> None:
    """The flow connects to its socket a moment after it starts: retry the send until it lands."""
    message = {"hello": "from the host", "n": 1}
    async with asyncio.timeout(60):
        while True:
            sent = await client.call(
                "send_message", {"container_id": cid, "message": message}, timeout=30
            )
            if sent.get("status") == "sent":
                break
            assert sent.get("error_type") in {"socket_connection_error", "socket_error"}, sent
            await asyncio.sleep(0.5)
        while True:
            event = await received.get()
            if event["container_id"] == cid and event["message"].get("echo") == message:
                return


async def _wait_for_resource_usage(client: socketio.AsyncClient, cid: str) -> None:
    """The containerised manager samples the flow's cgroup: memory shows up within seconds."""
    status: dict[str, Any] = {}
    try:
        async with asyncio.timeout(30):
            while not (status.get("resource_usage") or {}).get("memory_usage"):
                status = await client.call(
                    "get_container_status", {"container_id": cid}, timeout=30
                )
                await asyncio.sleep(0.5)  # samples arrive on the sampler's clock, not on request
    except TimeoutError:
        raise AssertionError(f"no resource usage for the flow: {status}") from None


def _panel_in_tmux(container: str, expect: str, timeout: float = 90) -> str:
    """`docker exec -it CONTAINER flowmgr` under tmux; return the pane once `expect` shows."""
    server = f"fm-{uuid.uuid4().hex[:8]}"  # our own tmux server: other sessions stay untouched
    tmux = ("tmux", "-L", server)
    _run(
        *tmux,
        "new-session",
        "-d",
        "-x",
        "120",
        "-y",
        "40",
        "-s",
        "panel",
        f"docker exec -it {container} flowmgr",
    )
    pane = ""
    try:
        deadline = time.monotonic() + timeout
        while expect not in pane and time.monotonic() < deadline:
            time.sleep(0.5)  # a pane has no change notification to await
            pane = _run(*tmux, "capture-pane", "-p", "-t", "panel", check=False)
        _run(*tmux, "send-keys", "-t", "panel", "C-q", check=False)
        return pane
    finally:
        _run(*tmux, "kill-server", check=False)


async def test_image_serves_socketio_and_opens_the_panel(
    flowmgr_image: str, deploy_dirs: tuple[Path, Path], unique_name: Any
) -> None:
    """Run the image with the socket and socket dir mounted; talk to a flow; read the panel."""
    sock_dir, conf_file = deploy_dirs
    manager = unique_name("manager")
    flow_name = unique_name("flow")
    _run(
        "docker",
        "run",
        "-d",
        "--name",
        manager,
        "--label",
        f"{TEST_LABEL}={RUN_ID}",
        "--health-interval",
        "2s",  # the image's own check, run more often than in production
        "-v",
        "/var/run/docker.sock:/var/run/docker.sock",
        "-v",
        f"{sock_dir}:{sock_dir}",
        "-e",
        f"SOCKET_DIR={sock_dir}",
        "-v",
        f"{conf_file}:/etc/flowmgr/config.json:ro",
        "--pid=host",
        "-v",
        "/sys/fs/cgroup:/sys/fs/cgroup:ro",  # resource usage, as documented
        "-p",
        "127.0.0.1::8000",
        flowmgr_image,
    )
    try:
        await _wait_healthy(manager)
        pid = _run("docker", "inspect", "-f", "{{.State.Pid}}", manager)  # a host pid
        uid = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if "Uid" in x)
        assert uid.split()[1:] == ["10001"] * 4, f"the service must not run as root: {uid}"
        port = _run("docker", "port", manager, "8000/tcp").splitlines()[0].rsplit(":", 1)[1]
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient() as http:
            health = (await http.get(f"{url}/health", timeout=10)).json()
        assert health["status"] == "healthy" and health["socket_dir"] == str(sock_dir), health
        token = _generated_token(sock_dir)
        cid = await _talk_to_a_flow(url, token, flow_name)
        # flows' socket dirs live in the manager's private dir (owned by its uid, 0700)
        state = sock_dir / f".flowmgr-{RUN_ID}"
        assert (state.stat().st_uid, state.stat().st_mode & 0o777) == (10001, 0o700)
        assert any(p.name == flow_name for p in state.iterdir()), "flow socket dir missing"
        # The table shows the 12-character id in full (long names are cut to the column).
        pane = await asyncio.to_thread(_panel_in_tmux, manager, cid[:12])
        row = next((line for line in pane.splitlines() if cid[:12] in line), "")
        assert "running" in row, f"the panel did not list {cid[:12]} as running:\n{pane}"
        # Opening and closing the panel must leave the service's channels working, also for a
        # flow that reconnects afterwards (a restart makes it dial its socket path anew).
        await _talk_to_a_flow(url, token, None, cid, restart=True)
    finally:
        _run("docker", "rm", "-f", manager, check=False)


async def test_compose_file_runs_the_service(
    flowmgr_image: str, deploy_dirs: tuple[Path, Path], tmp_path: Path, unique_name: Any
) -> None:
    """deploy/docker-compose.yml as written, with Debian's docker-compose and no DOCKER_GID:
    /health answers with every component active."""
    sock_dir, conf_file = deploy_dirs
    port = _free_port()
    project = f"fm{RUN_ID}{uuid.uuid4().hex[:4]}"
    override = tmp_path / "test-override.yml"
    # Only test scoping is added: our config (own instance label) and the test label.
    override.write_text(
        'version: "3.8"\nservices:\n  flow-manager:\n'
        f"    volumes:\n      - {conf_file}:/etc/flowmgr/config.json:ro\n"
        f"    labels:\n      {TEST_LABEL}: {RUN_ID}\n"
    )
    env = {
        **os.environ,
        "FLOWMGR_IMAGE": flowmgr_image,
        "FLOWMGR_PORT": str(port),
        "FLOWMGR_CONTAINER_NAME": unique_name("compose"),
        "SOCKET_DIR": str(sock_dir),
    }
    env.pop("DOCKER_GID", None)  # not needed any more: the image finds the socket's group
    # this engine may not raise a container's limits above its own (the file asks for 524288)
    env["FLOWMGR_NOFILE"] = str(resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    compose = ["docker-compose", "-p", project, "-f", str(COMPOSE_FILE), "-f", str(override)]

    def run_compose(*args: str) -> None:
        out = subprocess.run(
            [*compose, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            stdin=subprocess.DEVNULL,
        )
        assert out.returncode == 0, f"docker-compose {' '.join(args)}:\n{out.stdout}\n{out.stderr}"

    try:
        run_compose("up", "-d", "--no-build")
        body: dict[str, Any] = {}
        async with httpx.AsyncClient() as http, asyncio.timeout(90):
            while True:
                try:
                    body = (await http.get(f"http://127.0.0.1:{port}/health", timeout=5)).json()
                except (httpx.TransportError, ValueError):
                    body = {}
                if body.get("status") == "healthy":
                    break
                await asyncio.sleep(0.5)  # the service is still starting: nothing to await
        assert body["socket_dir"] == str(sock_dir)
        assert set(body["components"]) >= {"container_manager", "socket_handler", "event_handler"}
        assert set(body["components"].values()) == {"active"}
    finally:
        run_compose("down", "--remove-orphans", "--timeout", "10")
    leftovers = _run(
        "docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}"
    )
    assert leftovers == ""
