"""The layering contracts in pyproject.toml hold (import-linter), and they catch a forbidden
import added anywhere, a new module included, without editing the contracts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [LINT_IMPORTS, "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=120
    )


def test_import_contracts_are_kept() -> None:
    out = _lint(ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


@pytest.mark.parametrize(
    ("path", "line", "contract"),
    [
        ("server/core/policy.py", "import docker", "Only the docker adapter imports docker"),
        ("server/core/new_mod.py", "import docker", "Only the docker adapter imports docker"),
        ("server/core/new_mod.py", "import textual", "The core imports no front end"),
        ("server/core/stats.py", "import server.api", "The core imports no front end"),
        ("flowmgr_tui/remote.py", "import server.api", "The panel and the API are front ends"),
        (
            "flowmgr_tui/new_screen.py",
            "import server.api.app",
            "The panel and the API are front ends",
        ),
        (
            "server/api/new_route.py",
            "import flowmgr_tui.app",
            "The panel and the API are front ends",
        ),
        ("flowmgr_tui/widgets/new_widget.py", "import docker", "Only the docker adapter imports"),
    ],
)
def test_a_forbidden_import_breaks_a_contract(
    tmp_path: Path, path: str, line: str, contract: str
) -> None:
    for package in ("server", "flowmgr_tui"):
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / path
    before = target.read_text(encoding="utf-8") if target.exists() else ""
    target.write_text(f"{before}\n{line}  # noqa\n", encoding="utf-8")
    out = _lint(tmp_path)
    assert out.returncode != 0, out.stdout
    assert "1 broken" in out.stdout or "2 broken" in out.stdout, out.stdout
    broken = out.stdout.split("Broken contracts", 1)[1]
    assert contract in " ".join(broken.split()), out.stdout
