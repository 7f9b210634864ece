"""deploy/: the Kubernetes manifest against the API schema, the systemd unit through systemd."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pydantic import BaseModel

from server.core.config import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROTOCOL_ENV = {"SOCKET_DIR", "LOG_LEVEL", "HOST", "PORT", "CORS_ORIGINS", "CONFIG_FILE"}
K8S_VERSION = "1.30.0"
NOFILE = 524288
"""The open-files limit the unit and the compose file set (each flow holds a few)."""


def _k8s_docs() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((DEPLOY / "kubernetes.yaml").read_text()) if d]


def _k8s_errors(doc: dict[str, Any]) -> str | None:
    """The schema validator's complaint about one resource, or None when it is valid."""
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as err:
        return str(err)
    return None


def _deployment() -> dict[str, Any]:
    return next(d for d in _k8s_docs() if d["kind"] == "Deployment")


def test_kubernetes_manifest_passes_the_schema() -> None:
    """Every resource validates strictly (unknown fields refused) against the API schema."""
    docs = _k8s_docs()
    assert {d["kind"] for d in docs} == {"Deployment", "Service"}
    for doc in docs:
        assert _k8s_errors(doc) is None


def test_the_schema_check_can_fail() -> None:
    """A wrong type and an unknown field are both caught, so a pass above means something."""
    bad = copy.deepcopy(_deployment())
    bad["spec"]["replicas"] = "one"
    assert _k8s_errors(bad)
    bad = copy.deepcopy(_deployment())
    bad["spec"]["template"]["spec"]["containers"][0]["volumeMount"] = []
    assert _k8s_errors(bad)


def test_kubernetes_mounts_socket_dir_at_the_same_path() -> None:
    """docker.sock and the socket dir are hostPaths; the socket dir keeps its host path inside."""
    pod = _deployment()["spec"]["template"]["spec"]
    host_paths = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    container = next(c for c in pod["containers"] if c["name"] == "flow-manager")
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert host_paths["docker-sock"] == mounts["docker-sock"] == "/var/run/docker.sock"
    assert host_paths["socket-dir"] == mounts["socket-dir"] == env["SOCKET_DIR"]
    assert host_paths["cgroup"] == mounts["cgroup"] == "/sys/fs/cgroup" and pod["hostPID"]
    assert PROTOCOL_ENV | {"FLOWMGR_TOKEN"} <= set(env)
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    # a pod has no ulimit field: the manifest says where its open-files limit comes from
    assert "inherits the container runtime's limit" in (DEPLOY / "kubernetes.yaml").read_text()


def test_compose_file_mounts_socket_dir_at_the_same_path() -> None:
    """The compose service mounts docker.sock and SOCKET_DIR at its own path, with the env."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"SOCKET_DIR", "FLOWMGR_IMAGE", "FLOWMGR_NOFILE"}
    }
    out = subprocess.run(
        ["docker-compose", "-f", str(DEPLOY / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert out.returncode == 0, out.stderr
    service = yaml.safe_load(out.stdout)["services"]["flow-manager"]
    volumes = {v.split(":")[0]: v.split(":")[1] for v in service["volumes"]}
    assert volumes["/var/run/docker.sock"] == "/var/run/docker.sock"
    assert volumes["/tmp/kawaflow/sockets"] == "/tmp/kawaflow/sockets"
    assert volumes["/sys/fs/cgroup"] == "/sys/fs/cgroup" and service["pid"] == "host"
    assert service["environment"]["SOCKET_DIR"] == "/tmp/kawaflow/sockets"
    assert PROTOCOL_ENV | {"FLOWMGR_TOKEN"} <= set(service["environment"])
    assert service["ports"][0].startswith("127.0.0.1:8000:8000")
    # descriptors are budgeted (issue 15): a thousand flows need more than the default 1,024
    assert service["ulimits"]["nofile"] == NOFILE


def _systemd_verify(
    unit_text: str, tmp_path: Path, name: str = "flowmgr.service"
) -> subprocess.CompletedProcess[str]:
    """`systemd-analyze verify` in a scratch root holding systemd's units and a stub binary."""
    root = tmp_path / "root"
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "etc/systemd/system" / name).write_text(unit_text)
    binary = root / "opt/flowmgr/bin/flowmgr"  # the unit's ExecStart must exist to verify
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    return subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", name],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_systemd_unit_verifies_cleanly(tmp_path: Path) -> None:
    """No error and no warning (systemd only warns about lines it ignores)."""
    unit = (DEPLOY / "flowmgr.service").read_text()
    out = _systemd_verify(unit, tmp_path)
    assert out.returncode == 0 and out.stderr.strip() == "", out.stderr
    for line in (
        "ExecStart=/opt/flowmgr/bin/flowmgr --server-only",
        "SupplementaryGroups=docker",
        "RuntimeDirectoryPreserve=yes",
        f"LimitNOFILE={NOFILE}",
    ):
        assert line in unit
    env = {line.split("=", 2)[1] for line in unit.splitlines() if line.startswith("Environment=")}
    assert PROTOCOL_ENV <= env


@pytest.mark.parametrize(
    ("name", "start"),
    [("flowmgr-hub.service", "--hub"), ("flowmgr-agent.service", "--agent")],
)
def test_cluster_units_verify_cleanly(tmp_path: Path, name: str, start: str) -> None:
    """The cluster roles' units (docs/CLUSTER.md, README "Cluster mode")."""
    unit = (DEPLOY / name).read_text()
    out = _systemd_verify(unit, tmp_path, name)
    assert out.returncode == 0 and out.stderr.strip() == "", out.stderr
    assert f"ExecStart=/opt/flowmgr/bin/flowmgr {start}" in unit


def test_systemd_check_can_fail(tmp_path: Path) -> None:
    """A misspelt setting is reported, so the clean pass above means something."""
    unit = (
        (DEPLOY / "flowmgr.service").read_text().replace("Restart=on-failure", "Restart=sometimes")
    )
    assert "restart specifier" in _systemd_verify(unit, tmp_path).stderr


def _setting_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        if name == "config_file":  # where the settings came from, not a file key
            continue
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            keys += _setting_keys(sub, f"{prefix}{name}.")
        else:
            keys.append(prefix + name)
    return keys


def test_readme_documents_every_setting() -> None:
    """Each config.json key and env var has a row in the README's tables, with its default."""
    readme = (ROOT / "README.md").read_text()
    defaults = Settings()
    for key in _setting_keys(Settings):
        value: Any = defaults
        for part in key.split("."):
            value = getattr(value, part)
        row = next((line for line in readme.splitlines() if line.startswith(f"| `{key}` |")), "")
        assert row, f"README has no row for {key}"
        assert f"`{json.dumps(value)}`" in row, f"README row for {key} lacks its default {value!r}"
    for var in PROTOCOL_ENV | {"FLOWMGR_TOKEN"}:
        assert f"| `{var}` |" in readme, f"README has no row for {var}"


def test_readme_opens_with_setup_and_test_commands() -> None:
    """The first code block: set up and run, then the test command that .ci/run runs."""
    block = (ROOT / "README.md").read_text().split("```bash\n", 1)[1].split("```", 1)[0]
    first, second = (line.split("#")[0].strip() for line in block.splitlines()[:2])
    assert first == "bash scripts/setup.sh && .venv/bin/flowmgr"
    assert second.startswith(".venv/bin/pytest")


def test_readme_links_resolve() -> None:
    """Every relative link and image in the README points at a file of the checkout."""
    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
    local = [t for t in targets if "://" not in t]
    assert local, "no relative links found"
    missing = [t for t in local if not (ROOT / t).exists()]
    assert not missing, f"README links to missing files: {missing}"


def _task(*args: str) -> subprocess.CompletedProcess[str]:
    task = Path(sys.executable).parent / "task"  # go-task-bin, installed with the dev tools
    return subprocess.run(
        [str(task), "--color=false", "--taskfile", str(ROOT / "Taskfile.yml"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "NO_COLOR": "1"},
    )


def test_taskfile_has_the_documented_tasks() -> None:
    """`task --list` parses the Taskfile and names every task the README promises."""
    out = _task("--list")
    assert out.returncode == 0, out.stderr
    names = {line.split(":")[0].lstrip("* ").strip() for line in out.stdout.splitlines()[1:]}
    assert {"setup", "test", "run", "serve", "images", "bench", "lint", "clean"} <= names


def test_task_clean_targets_only_this_project() -> None:
    """A dry run of `task clean` names only flowmgr's labels, images and build leftovers."""
    out = _task("clean", "DRY_RUN=1")
    assert out.returncode == 0, out.stderr
    planned = [
        line.removeprefix("would run: ")
        for line in out.stdout.splitlines()
        if line.startswith("would run: ")
    ]
    allowed_images = {
        "kawaflow/flow-manager:latest",
        "flowmgr:latest",
        "flow:latest",
        "flowmgr-test-unhealthy:latest",
        "flowmgr-test-busybox:latest",
        "flowmgr-base:bookworm",
    }
    for cmd in planned:
        if cmd.startswith("docker image rm "):
            assert cmd.removeprefix("docker image rm ") in allowed_images, cmd
        elif cmd.startswith(("docker rm -f ", "docker network rm ")):
            continue  # ids found by the project's label filters (checked below)
        else:
            assert cmd == "rm -rf build .pytest_cache .ruff_cache .mypy_cache", cmd
    script = (ROOT / "Taskfile.yml").read_text()
    assert "LABELS: flowmgr.managed=true flowmgr.test flowmgr.component" in script
