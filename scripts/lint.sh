#!/usr/bin/env bash
# The linters, in the order CI runs them before the tests (`task lint` runs this too): ruff's
# checks, ruff's formatting, mypy (strict, over tests and benchmarks too) and the import-layering
# contracts. Runs them all and fails when any fails, so one run shows every problem.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BIN="${VENV:-.venv}/bin"
PATHS=(server flowmgr_tui tests bench main.py)

failed=()
step() {
    local name="$1"; shift
    echo "[lint] $name: $*" >&2
    "$@" || failed+=("$name")
}

step "ruff check" "$BIN/ruff" check "${PATHS[@]}"
step "ruff format" "$BIN/ruff" format --check "${PATHS[@]}"
step "mypy" "$BIN/mypy"                      # files and strictness: [tool.mypy] in pyproject.toml
step "import contracts" "$BIN/lint-imports"  # [tool.importlinter] in pyproject.toml

if ((${#failed[@]})); then
    echo "[lint] failed: ${failed[*]}" >&2
    exit 1
fi
echo "[lint] all passed" >&2
