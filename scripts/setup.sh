#!/usr/bin/env bash
# Set up a checkout: host tools and a Docker Engine, the .venv with flowmgr, the local images.
#
# Usage: bash scripts/setup.sh
#   FLOWMGR_DOCKERD_PIDFILE=FILE  where to note dockerd's pid if this run had to start it
#   FLOWMGR_SKIP_IMAGES=1         skip building the images
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
log() { echo "[setup] $*" >&2; }

bash scripts/ensure-dockerd.sh "${FLOWMGR_DOCKERD_PIDFILE:-}"

if [[ ! -x .venv/bin/python ]]; then
    log "creating .venv"
    python3 -m venv .venv
fi
log "installing flowmgr and its dev tools into .venv"
# uv resolves and downloads in parallel (about 20 s here against 100 s for pip); pip is the
# fallback when uv cannot be had. constraints.txt pins the versions the suite was run green with
# (a newer pytest-textual-snapshot/syrupy pair, for one, reads snapshots differently).
if .venv/bin/python -m pip install --quiet --disable-pip-version-check uv </dev/null; then
    .venv/bin/uv pip install --quiet --python .venv/bin/python -c constraints.txt -e '.[dev]' </dev/null
else
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]' </dev/null
fi

if [[ "${FLOWMGR_SKIP_IMAGES:-0}" != 1 ]]; then
    bash scripts/build-images.sh
fi
log "ready: .venv/bin/flowmgr opens the panel, .venv/bin/flowmgr --server-only runs the service"
