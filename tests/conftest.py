"""Shared fixtures: a real Docker Engine, a per-run label scope, cleanup even on failure."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.core.config import Settings, load_settings

RUN_ID = f"t{uuid.uuid4().hex[:8]}"
"""Unique per pytest run: container names, the manager instance label and the network use it."""

TEST_LABEL = "flowmgr.test"
IMAGES = {
    "busybox": "flowmgr-test-busybox:latest",
    "unhealthy": "flowmgr-test-unhealthy:latest",
    "base": "flowmgr-base:bookworm",
    "flow": "flow:latest",
}


def _docker_ok() -> str | None:
    try:
        out = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"docker CLI failed: {err}"
    if out.returncode != 0:
        return out.stderr.strip() or "docker info failed"
    return None


def _sweep(label: str) -> None:
    """Remove every container, network and volume carrying `label` (best effort)."""
    ids = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label={label}"], capture_output=True, text=True
    ).stdout.split()
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)
    nets = subprocess.run(
        ["docker", "network", "ls", "-q", "--filter", f"label={label}"],
        capture_output=True,
        text=True,
    ).stdout.split()
    if nets:
        subprocess.run(["docker", "network", "rm", *nets], capture_output=True)
    # each flow's own data volume (flowmgr-data-<name>) outlives a container removed by hand
    vols = subprocess.run(
        ["docker", "volume", "ls", "-q", "--filter", f"label={label}"],
        capture_output=True,
        text=True,
    ).stdout.split()
    if vols:
        subprocess.run(["docker", "volume", "rm", *vols], capture_output=True)


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[None]:
    """Fail loudly (never skip) when no engine answers: CI always starts one."""
    problem = _docker_ok()
    if problem:
        pytest.fail(f"no Docker Engine answers ({problem}); start dockerd (bash .ci/run does)")
    missing = [
        img
        for img in IMAGES.values()
        if subprocess.run(["docker", "image", "inspect", img], capture_output=True).returncode != 0
    ]
    if missing:
        pytest.fail(f"test images missing: {missing}; build them with scripts/build-images.sh")
    yield
    _sweep(f"flowmgr.instance={RUN_ID}")
    _sweep(f"{TEST_LABEL}={RUN_ID}")


@pytest.fixture
def unique_name() -> Iterator[object]:
    """Makes container names unique to this run: `unique_name("web")` -> "t1a2b3c4-web-5f6a"."""

    def make(stem: str = "c") -> str:
        return f"{RUN_ID}-{stem}-{uuid.uuid4().hex[:4]}"

    yield make


@pytest.fixture
def settings(tmp_path_factory: pytest.TempPathFactory, docker_engine: None) -> Iterator[Settings]:
    """Settings scoped to this run: own instance label, own network, own short socket dir."""
    # Unix socket paths are limited to 107 bytes: keep the socket dir short.
    sock_dir = Path("/tmp/fm") / uuid.uuid4().hex[:8]
    sock_dir.mkdir(parents=True)
    s = load_settings(
        env={},
        socket_dir=str(sock_dir),
        docker__instance=RUN_ID,
        docker__network=f"flowmgr-{RUN_ID}",
        docker__stop_timeout=2,
        monitoring__health_check_interval=1.0,
    )
    yield s
    _sweep(f"flowmgr.instance={RUN_ID}")
    shutil.rmtree(sock_dir, ignore_errors=True)


def with_code_roots(settings: Settings, *roots: Path | str) -> Settings:
    """`settings` allowing `update_container` from `roots` (empty `docker.code_roots` refuses
    every update: issue 11), for tests whose code lives in a tmp directory."""
    return settings.model_copy(
        update={
            "docker": settings.docker.model_copy(update={"code_roots": [str(r) for r in roots]})
        }
    )


@pytest.fixture(scope="session", autouse=True)
def _isolate_env(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tests read no CONFIG_FILE or env overrides from the caller's shell by accident."""
    for name in (
        "CONFIG_FILE",
        "SOCKET_DIR",
        "HOST",
        "PORT",
        "CORS_ORIGINS",
        "FLOWMGR_TOKEN",
        "MESSAGING_BACKEND",
        "RABBITMQ_URL",
    ):
        os.environ.pop(name, None)
    # The panel reads (and saves its theme into) $XDG_CONFIG_HOME/flowmgr/panel.toml: never
    # the caller's own.
    os.environ["XDG_CONFIG_HOME"] = str(tmp_path_factory.mktemp("xdg-config"))
