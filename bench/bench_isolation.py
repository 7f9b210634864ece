"""What the isolation checks cost: the core's lifecycle before and after them, side by side.

Runs `bench/bench_core.py --only lifecycle --containers 0` alternately from a base checkout (the
tree before the checks; a git worktree made here, removed at the end) and from this tree, so
both see the same machine at nearly the same moment. Each run times create/start/stop/delete
through the manager and the same containers through the Docker SDK; the SDK median of the run
corrects for drift between runs.

Run: .venv/bin/python bench/bench_isolation.py [--base 4472cf7] [--pairs 5] [--rounds 8]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def lifecycle(tree: Path, rounds: int, extra: list[str]) -> dict[str, float]:
    """One bench_core lifecycle run from `tree`; its manager and SDK medians (s)."""
    out = subprocess.run(
        [
            sys.executable,
            str(tree / "bench/bench_core.py"),
            "--only",
            "lifecycle",
            "--containers",
            "0",
            "--rounds",
            str(rounds),
            "--json",
            *extra,
        ],
        cwd=tree,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/local/bin:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
        timeout=900,
    ).stdout
    start, end = out.index("{"), out.index("\n}") + 2
    result: dict[str, float] = json.loads(out[start:end])["lifecycle"]
    return result


def main(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="flowmgr-bench-base-") as tmp:
        base = Path(tmp) / "base"
        subprocess.run(
            ["git", "worktree", "add", "-q", "--detach", str(base), args.base], cwd=ROOT, check=True
        )
        try:
            variants: dict[str, tuple[Path, list[str]]] = {
                "base": (base, []),
                "checks": (ROOT, ["--data-mount", "none"]),
                "checks+data volume": (ROOT, []),
            }
            rows: dict[str, list[dict[str, float]]] = {k: [] for k in variants}
            for i in range(args.pairs):
                order = list(variants) if i % 2 == 0 else list(reversed(variants))
                for name in order:
                    tree, extra = variants[name]
                    rows[name].append(lifecycle(tree, args.rounds, extra))
                    sys.stderr.write(f"pair {i + 1} {name}: {rows[name][-1]}\n")
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT)
    summary: dict[str, Any] = {}
    for name, runs in rows.items():
        summary[name] = {
            "manager": statistics.median(r["manager"] for r in runs),
            "sdk": statistics.median(r["sdk"] for r in runs),
            "manager_over_sdk": statistics.median(r["manager"] / r["sdk"] for r in runs),
        }
    for name in ("checks", "checks+data volume"):
        summary[name]["vs_base"] = (
            summary[name]["manager_over_sdk"] / summary["base"]["manager_over_sdk"] - 1
        )
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base", default="4472cf7", help="the commit before the checks")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=8)
    res = main(parser.parse_args())
    sys.stdout.write(json.dumps(res, indent=1) + "\n")
    for name, r in res.items():
        extra = f", {r['vs_base'] * 100:+.1f} % vs base" if "vs_base" in r else ""
        sys.stdout.write(
            f"{name}: manager {r['manager']:.3f} s, SDK {r['sdk']:.3f} s, "
            f"manager/SDK {r['manager_over_sdk']:.3f}{extra}\n"
        )
