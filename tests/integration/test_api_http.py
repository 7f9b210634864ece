"""HTTP side and start modes: /health, OpenAPI, the lifespan, headless start and SIGTERM."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_harness import BUSYBOX, TEST_TOKEN, client, docker_cli, running_service

from server.core.config import Settings
from server.core.token_file import read_client_token

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]


async def test_health_openapi_and_lifespan(settings: Settings) -> None:
    async with running_service(settings) as svc:
        assert svc.app.api.state.started is True  # FastAPI's lifespan ran, not the wrapper's
        assert svc.app.bridge.running and svc.manager.bus.subscriber_count >= 1
        async with httpx.AsyncClient(base_url=svc.url) as http:
            health = await http.get("/health")
            assert health.status_code == 200
            assert health.json() == {
                "status": "healthy",
                "service": "flow-manager",
                "socket_dir": settings.socket_dir,
                "components": {
                    "container_manager": "active",
                    "socket_handler": "active",
                    "event_handler": "active",
                    "journal": "active",
                },
            }
            # The OpenAPI document for token holders only; no /docs pages (see test_api_auth)
            spec = (
                await http.get("/openapi.json", headers={"Authorization": f"Bearer {TEST_TOKEN}"})
            ).json()
            assert "/health" in spec["paths"]
    assert svc.app.api.state.started is False and not svc.app.bridge.running


async def test_health_is_503_when_docker_is_unreachable(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix:///tmp/fm-dead-{uuid.uuid4().hex[:8]}.sock")
    quick = settings.model_copy(
        update={"docker": settings.docker.model_copy(update={"call_timeout": 3.0})}
    )
    async with running_service(quick) as svc:
        async with httpx.AsyncClient(base_url=svc.url) as http:
            health = await http.get("/health")
        assert health.status_code == 503
        body = health.json()
        assert body["status"] != "healthy"
        assert body["components"]["container_manager"] != "active"
        assert "container_manager" in body["failing"]
        async with client(svc.url) as (sio, rec):  # requests still get answers, not silence
            # ext: a client connecting while the engine is away is told so after the welcome
            status = await rec.wait_for("engine_status")
            assert status["available"] is False and status["reason"]
            assert rec.events["connected"]
            answer = await sio.call("stop_container", {"container_id": "x"}, timeout=30)
            assert answer["error"] is True
            assert answer["error_type"] in {"docker_api_error", "container_not_found"}
    del svc
    gc.collect()  # a socket left open by the refused connect would warn (an error) here


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _config(settings: Settings, path: Path, *, token: str | None = TEST_TOKEN) -> Path:
    """`settings` as a config file, requiring `token` (None: the service makes its own)."""
    data = settings.model_dump(exclude={"config_file"})
    data["server"]["host"] = "0.0.0.0"  # the command lines below override it
    data["server"]["token"] = token
    path.write_text(json.dumps(data))
    return path


async def _wait_healthy(url: str, proc: subprocess.Popen[str]) -> None:
    async with httpx.AsyncClient() as http, asyncio.timeout(60):
        while True:
            assert proc.poll() is None, proc.communicate()
            try:
                if (await http.get(f"{url}/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)


def _spawn(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _stop(proc: subprocess.Popen[str], sig: int) -> tuple[float, str]:
    """Signal the process; how long it took to exit, and everything it printed."""
    began = time.monotonic()
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=30)
    return time.monotonic() - began, out


async def test_headless_start_sigterm_and_readoption(
    settings: Settings, unique_name: Any, tmp_path: Path
) -> None:
    # No token configured: the service makes one in its token file, clients read it there.
    config = _config(settings, tmp_path / "config.json", token=None)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _spawn(
        "-m", "server", "--host", "127.0.0.1", "--port", str(port), "--config", str(config)
    )
    try:
        await _wait_healthy(url, proc)
        token = read_client_token(settings.token_path)
        assert token
        async with client(url, auth={"token": token}) as (sio, rec):
            name = unique_name("keep")
            cid = (
                await sio.call("create_container", {"image": BUSYBOX, "name": name}, timeout=60)
            )["container_id"]
            await sio.call("start_container", {"container_id": cid}, timeout=60)
            took, out = await asyncio.to_thread(_stop, proc, signal.SIGTERM)
            async with asyncio.timeout(10):
                await rec.disconnected.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert took < 5.0, f"shutdown took {took:.1f} s"
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert lines and all({"ts", "level", "logger", "msg"} <= set(line) for line in lines)
    text = " ".join(line["msg"] for line in lines)
    assert "CORS allows any origin" not in text  # default: the service's own origin only
    assert f"API token generated in {settings.token_path}" in text and token not in out
    assert await docker_cli("inspect", "-f", "{{.State.Running}}", cid) == "true"

    # `flowmgr --server-only` adopts the container the first run left running
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _spawn(
        "-m",
        "flowmgr_tui",
        "--server-only",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--config",
        str(config),
    )
    try:
        await _wait_healthy(url, proc)
        # the second start reads the same token back
        async with client(url, auth={"token": token}) as (sio, _):
            listed = await sio.call("list_containers", {})
            item = next(i for i in listed["containers"] if i["id"] == cid)
            assert item["status"] == "running"
        took, out = await asyncio.to_thread(_stop, proc, signal.SIGINT)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and took < 5.0, out
    assert f"API token kept in {settings.token_path}" in out and token not in out


async def test_uvicorn_module_app_honours_config_file_and_env(
    settings: Settings, tmp_path: Path
) -> None:
    config = _config(settings, tmp_path / "config.json")
    port = _free_port()
    proc = _spawn(
        "-m",
        "uvicorn",
        "server.app:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        env={
            "CONFIG_FILE": str(config),
            "CORS_ORIGINS": "http://only.example",
            "LOG_LEVEL": "DEBUG",
        },
    )
    try:
        await _wait_healthy(f"http://127.0.0.1:{port}", proc)
        async with httpx.AsyncClient() as http:
            health = (await http.get(f"http://127.0.0.1:{port}/health")).json()
            assert health["socket_dir"] == settings.socket_dir
            refused = await http.get(
                f"http://127.0.0.1:{port}/socket.io/?EIO=4&transport=polling",
                headers={"Origin": "http://elsewhere.example"},
            )
            assert refused.status_code == 400
        took, out = await asyncio.to_thread(_stop, proc, signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
    # uvicorn's own runner re-raises the signal once it has shut down cleanly
    assert proc.returncode in (0, -signal.SIGTERM) and took < 5.0, out
    assert '"level": "DEBUG"' in out and "Application shutdown complete" in out


async def test_a_bad_config_stops_start_up(tmp_path: Path) -> None:
    bad = tmp_path / "config.json"
    bad.write_text(json.dumps({"server": {"port": "eighty"}, "surprise": 1}))
    proc = _spawn("-m", "server", "--config", str(bad))
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert "surprise" in out and "server.port" in out


@pytest.mark.parametrize(
    "how",
    [
        ("-m", "server"),
        ("-m", "flowmgr_tui"),
        ("-m", "uvicorn", "main:app", "--host", "127.0.0.1", "--port", "0"),
    ],
)
def test_a_cluster_config_does_not_start_a_one_host_manager(
    tmp_path: Path, how: tuple[str, ...]
) -> None:
    """cluster.mode "swarm" is refused by the service (both start modes) and the local panel:
    never a one-host manager of flows a cluster's hub would manage too."""
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"cluster": {"mode": "swarm"}, "socket_dir": str(tmp_path / "s")}))
    args = how if how[1] == "uvicorn" else (*how, "--config", str(config))
    proc = _spawn(*args, env={"CONFIG_FILE": str(config)})
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode != 0 and "cluster.mode is 'swarm'" in out, out
    if how[1] != "uvicorn":
        assert proc.returncode == 2, out
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").rglob("*.sock"))
