"""The deployment guide from a checkout: its blocks verbatim, `uvicorn main:app`, `pip install -r
requirements.txt` in a fresh venv, its systemd unit and Kubernetes manifest, the Taskfile list.

The container commands run in test_guide_deploy.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from server.core.config import Settings
from tests.integration import guide_text as guide

ROOT = Path(__file__).resolve().parents[2]
K8S_VERSION = "1.30.0"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- the guide's text ------------------------------------------------------------------------


def test_the_blocks_run_here_are_the_guides_own() -> None:
    """Every command and file the tests type appears in the guide character for character."""
    path = guide.guide_path()
    if path is None:
        pytest.skip(f"the guide is not on this machine (looked in {guide.GUIDE_CANDIDATES})")
    text = path.read_text()
    for block in (
        guide.SOCKET_DIR_STEP,
        guide.DOCKER_RUN,
        guide.HEALTH_CHECK,
        guide.COMPOSE_FILE,
        guide.COMPOSE_UP,
        guide.KUBERNETES_FILE,
        guide.SYSTEMD_UNIT,
        guide.UVICORN,
        guide.PIP_INSTALL,
        guide.TASK_BUILD,
        guide.TASK_RUN,
    ):
        assert block in text, f"not in the guide as written:\n{block}"


# ---- `uvicorn main:app` ----------------------------------------------------------------------


def _config_file(settings: Settings, path: Path) -> Path:
    data = settings.model_dump(exclude={"config_file"})
    data["server"].update(host="0.0.0.0", port=8000, token="t" * 32)
    path.write_text(json.dumps(data))
    return path


def _serve(
    uvicorn: Path, args: list[str], env: dict[str, str], cwd: Path, port: int
) -> tuple[dict[str, Any], str]:
    """Start `uvicorn ARGS`, read /health on `port`, stop it; the body and what it printed."""
    proc = subprocess.Popen(
        [str(uvicorn), *args],
        cwd=cwd,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    body: dict[str, Any] = {}
    try:
        deadline = time.monotonic() + 60
        while not body and time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    body = json.loads(r.read())
            except OSError:
                time.sleep(0.1)  # still starting: no readiness signal but the port
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert body, f"no /health on port {port}:\n{out}"
    return body, out


def test_uvicorn_main_app_with_the_guides_options(settings: Settings, tmp_path: Path) -> None:
    """`uvicorn main:app --host ... --port ...` from the checkout: the service, healthy."""
    port = _free_port()
    env = {"CONFIG_FILE": str(_config_file(settings, tmp_path / "c.json")), "PORT": "1"}
    args = ["main:app", "--host", "127.0.0.1", "--port", str(port)]  # uvicorn's own win
    body, out = _serve(Path(sys.executable).parent / "uvicorn", args, env, ROOT, port)
    assert body["status"] == "healthy" and body["socket_dir"] == settings.socket_dir, body
    assert f"Uvicorn running on http://127.0.0.1:{port}" in out


def test_uvicorn_main_app_listens_where_host_and_port_say(
    settings: Settings, tmp_path: Path
) -> None:
    """The guide's table: HOST and PORT (and LOG_LEVEL, SOCKET_DIR) from the environment."""
    port = _free_port()
    sockets = Path("/tmp/fm") / f"u{port}"
    env = {
        "CONFIG_FILE": str(_config_file(settings, tmp_path / "c.json")),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "LOG_LEVEL": "DEBUG",
        "SOCKET_DIR": str(sockets),
    }
    try:
        body, out = _serve(Path(sys.executable).parent / "uvicorn", ["main:app"], env, ROOT, port)
    finally:
        shutil.rmtree(sockets, ignore_errors=True)
    assert body["status"] == "healthy" and body["socket_dir"] == str(sockets), body
    assert f"Uvicorn running on http://127.0.0.1:{port}" in out and '"level": "DEBUG"' in out


def test_main_app_is_the_service_flowmgr_server_only_builds(
    settings: Settings, tmp_path: Path
) -> None:
    """One app: main.app is server.app.app, made by serving.build_service."""
    code = (
        "import main, server.app, server.api.app as a; "
        "assert main.app is server.app.app and isinstance(main.app, a.FlowMgrASGIApp); "
        "print('same')"
    )
    env = {**os.environ, "CONFIG_FILE": str(_config_file(settings, tmp_path / "c.json"))}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.stdout.strip().endswith("same"), out.stderr
    source = (ROOT / "server" / "app.py").read_text()
    assert "app = build_service(_settings)" in source


# ---- `pip install -r requirements.txt` in a fresh venv -------------------------------------


def _checkout_copy(dest: Path) -> Path:
    """The files a clone would hold (tracked and new, not ignored), as in the guide's step 1."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (n.decode() for n in listed)):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


@pytest.mark.slow
def test_pip_install_requirements_in_a_fresh_venv(settings: Settings, tmp_path: Path) -> None:
    """The guide's manual installation: venv, `pip install -r requirements.txt`, then
    `uvicorn main:app` from that venv serves /health. About 25 s with the wheels the offline
    image build keeps in build/wheels (PyPI fills the rest)."""
    checkout = _checkout_copy(tmp_path / "flow-manager")
    subprocess.run([sys.executable, "-m", "venv", ".venv"], cwd=checkout, check=True, timeout=120)
    wheels = [f"--find-links={d}" for d in (ROOT / "build" / "wheels",) if d.is_dir()]
    pip = [str(checkout / ".venv/bin/pip"), *guide.PIP_INSTALL.split()[1:]]
    out = subprocess.run(
        [*pip, "--quiet", "--disable-pip-version-check", *wheels],
        cwd=checkout,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    port = _free_port()
    env = {"CONFIG_FILE": str(_config_file(settings, tmp_path / "c.json")), "PYTHONPATH": ""}
    args = ["main:app", "--host", "127.0.0.1", "--port", str(port)]
    body, _ = _serve(checkout / ".venv/bin/uvicorn", args, env, checkout, port)
    assert body["status"] == "healthy", body


# ---- the guide's systemd unit --------------------------------------------------------------


def _verify_unit(unit: str, tmp_path: Path, stub: str) -> subprocess.CompletedProcess[str]:
    """`systemd-analyze verify` in a scratch root with systemd's units and a stub ExecStart."""
    root = tmp_path / "root"
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "etc/systemd/system/flow-manager.service").write_text(unit)
    binary = root / stub.lstrip("/")
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    return subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", "flow-manager.service"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_the_guides_systemd_unit_verifies(tmp_path: Path) -> None:
    """As written, with its two placeholders filled in (a dedicated user, as the guide advises,
    and the checkout's path)."""
    checkout = "/srv/flow-manager"
    unit = guide.SYSTEMD_UNIT.replace("<your_user>", "flowmgr").replace(
        "/path/to/flow-manager", checkout
    )
    out = _verify_unit(unit, tmp_path, f"{checkout}/.venv/bin/uvicorn")
    assert out.returncode == 0 and out.stderr.strip() == "", out.stderr
    assert "ExecStart=/srv/flow-manager/.venv/bin/uvicorn main:app" in unit


def test_the_systemd_check_can_fail(tmp_path: Path) -> None:
    unit = guide.SYSTEMD_UNIT.replace("<your_user>", "flowmgr").replace("Type=simple", "Type=sure")
    out = _verify_unit(unit, tmp_path, "/path/to/flow-manager/.venv/bin/uvicorn")
    assert "Failed to parse service type" in out.stderr, out.stderr


# ---- the guide's Kubernetes manifest -------------------------------------------------------


def test_the_guides_kubernetes_manifest_validates() -> None:
    """Offline (kubectl's --dry-run=client still asks a cluster for its schema): each resource
    against the API schema, unknown fields refused; it names the image the build tags and needs
    no gid, user or node label (the image finds the socket's group itself)."""
    docs = [d for d in yaml.safe_load_all(guide.KUBERNETES_FILE) if d]
    assert [d["kind"] for d in docs] == ["Deployment", "Service"]
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    pod = docs[0]["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "kawaflow/flow-manager:latest"
    assert "securityContext" not in pod and "nodeSelector" not in pod


# ---- the Taskfile ------------------------------------------------------------------------


def _task(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "task"), "--color=false", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "NO_COLOR": "1"},
    )


def test_every_task_says_what_it_does() -> None:
    """`task --list` shows only tasks with a desc: it must show every task of the file."""
    declared = set(yaml.safe_load((ROOT / "Taskfile.yml").read_text())["tasks"])
    out = _task("--list")
    listed = {
        line[2:].split(": ", 1)[0].strip(): line.split(": ", 1)[1].strip()
        for line in out.stdout.splitlines()
        if line.startswith("* ")
    }
    assert set(listed) == declared, declared ^ set(listed)
    assert "panel" in listed["run"].lower()
    assert "kawaflow/flow-manager:latest" in listed["flow-manager:build"]
    assert "docker run" in listed["flow-manager:run"]


def test_task_flow_manager_run_is_the_guides_docker_run() -> None:
    """A dry run prints the commands: the guide's flags and image, nothing else added."""
    out = _task("--dry", "flow-manager:run")
    assert out.returncode == 0, out.stderr
    text = out.stdout + out.stderr
    for part in guide.DOCKER_RUN.replace("\\\n", " ").split()[2:]:
        assert part in text, part
    assert "--group-add" not in text and "--pid" not in text
