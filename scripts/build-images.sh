#!/usr/bin/env bash
# Build flowmgr's images offline, each only when missing (or stale); nothing is pulled.
#
# Usage: bash scripts/build-images.sh [--force] [IMAGE...]
#   IMAGE: base busybox unhealthy flow flowmgr (default: all of them)
#   --force   rebuild the named images even when present
#
#   base       flowmgr-base:bookworm          mmdebstrap of Debian bookworm + python3, docker import
#   busybox    flowmgr-test-busybox:latest    busybox-static; its default command exits 0 on TERM
#   unhealthy  flowmgr-test-unhealthy:latest  busybox with a HEALTHCHECK that always fails
#   flow       flow:latest                    flow/Dockerfile on the offline base
#   flowmgr    flowmgr:latest                 ./Dockerfile on the offline base, from host-built wheels,
#              also tagged kawaflow/flow-manager:latest (the deployment guide's name)
#
# Images built from a Dockerfile carry a hash of their sources (label flowmgr.source-hash) and are
# rebuilt when the sources change; the imported ones are reused whenever the tag exists.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export DOCKER_BUILDKIT=0  # the legacy builder: no buildx plugin is needed, and it works offline

BASE_TAG=flowmgr-base:bookworm
BUSYBOX_TAG=flowmgr-test-busybox:latest
UNHEALTHY_TAG=flowmgr-test-unhealthy:latest
FLOW_TAG=flow:latest
FLOWMGR_TAG=flowmgr:latest
GUIDE_TAG=kawaflow/flow-manager:latest
HASH_LABEL=flowmgr.source-hash
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
[[ -x "$PYTHON" ]] || PYTHON=python3

FORCE=0
WANTED=()
for arg in "$@"; do
    case "$arg" in
        --force) FORCE=1 ;;
        -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        base|busybox|unhealthy|flow|flowmgr) WANTED+=("$arg") ;;
        *) echo "unknown argument: $arg (try --help)" >&2; exit 2 ;;
    esac
done
((${#WANTED[@]})) || WANTED=(base busybox unhealthy flow flowmgr)

log() { echo "[build-images] $*" >&2; }
exists() { docker image inspect "$1" >/dev/null 2>&1; }
is_wanted() { local w; for w in "${WANTED[@]}"; do [[ $w == "$1" ]] && return 0; done; return 1; }
declare -A DONE=()
# Rebuild when the tag is missing, or when forced for this image and not yet rebuilt in this run.
needs_build() {
    [[ -n "${DONE[$2]:-}" ]] && return 1
    DONE[$2]=1
    { ((FORCE)) && is_wanted "$2"; } || ! exists "$1"
}

# A stable hash of the files under the given paths (skipping caches), for staleness checks.
source_hash() {
    find "$@" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 2>/dev/null \
        | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16
}
label_of() { docker image inspect -f "{{ index .Config.Labels \"$HASH_LABEL\" }}" "$1" 2>/dev/null; }
# Rebuild a Dockerfile-built image when forced, missing, or built from other sources.
stale() {
    local tag=$1 name=$2 hash=$3
    needs_build "$tag" "$name" || [[ "$(label_of "$tag")" != "$hash" ]]
}

build_base() {
    needs_build "$BASE_TAG" base || { log "$BASE_TAG present"; return 0; }
    command -v mmdebstrap >/dev/null || { log "mmdebstrap missing (apt-get install mmdebstrap)"; return 1; }
    local tmp; tmp="$(mktemp -d)"
    log "building $BASE_TAG with mmdebstrap (about 30 s)"
    # </dev/null: without a tty mmdebstrap would otherwise wait for nothing on stdin.
    mmdebstrap --quiet --variant=essential --include=python3,python3-venv,ca-certificates \
        bookworm "$tmp/base.tar" </dev/null
    docker import -c 'CMD ["/bin/bash"]' "$tmp/base.tar" "$BASE_TAG" >/dev/null
    rm -rf "$tmp"
}

build_busybox() {
    needs_build "$BUSYBOX_TAG" busybox || { log "$BUSYBOX_TAG present"; return 0; }
    local bb=/bin/busybox tmp applet
    # ldd fails on a static binary; a dynamic busybox would not run in the empty image.
    [[ -x $bb ]] && ! ldd "$bb" >/dev/null 2>&1 \
        || { log "a static /bin/busybox is needed (apt-get install busybox-static)"; return 1; }
    tmp="$(mktemp -d)"
    mkdir -p "$tmp/bin" "$tmp/etc" "$tmp/root" "$tmp/app"
    mkdir -m 1777 "$tmp/tmp"
    cp "$bb" "$tmp/bin/busybox"
    # Every applet (sh, sleep, echo, cat, ls, kill, ps, dd, ...) as a link to the one binary.
    for applet in $("$bb" --list); do
        [[ $applet == busybox ]] || ln -sf busybox "$tmp/bin/$applet"
    done
    echo 'root:x:0:0:root:/root:/bin/sh' >"$tmp/etc/passwd"
    echo 'root:x:0:' >"$tmp/etc/group"
    log "building $BUSYBOX_TAG"
    # `sleep 1 & wait $!`: the shell runs the TERM trap at once instead of after the sleep.
    tar -C "$tmp" --owner=0 --group=0 --numeric-owner -c . | docker import \
        -c 'ENV PATH=/bin' \
        -c 'CMD ["/bin/sh", "-c", "trap \"exit 0\" TERM INT; while true; do sleep 1 & wait $!; done"]' \
        - "$BUSYBOX_TAG" >/dev/null
    rm -rf "$tmp"
}

build_unhealthy() {
    needs_build "$UNHEALTHY_TAG" unhealthy || { log "$UNHEALTHY_TAG present"; return 0; }
    build_busybox
    log "building $UNHEALTHY_TAG"
    docker build -q --build-arg BASE_IMAGE="$BUSYBOX_TAG" -t "$UNHEALTHY_TAG" \
        tests/images/unhealthy >/dev/null
}

build_flow() {
    if [[ ! -f flow/Dockerfile ]]; then
        log "WARNING: flow/Dockerfile does not exist yet; $FLOW_TAG not built"
        return 0
    fi
    local hash; hash="$(source_hash flow)"
    stale "$FLOW_TAG" flow "$hash" || { log "$FLOW_TAG present and up to date"; return 0; }
    build_base
    log "building $FLOW_TAG"
    docker build -q --label "$HASH_LABEL=$hash" \
        --build-arg BASE_IMAGE=flowmgr-base:bookworm -t flow:latest flow/ >/dev/null
}

# The flow-manager image installs from wheels built here, so its build needs no network.
build_flowmgr() {
    if [[ ! -f Dockerfile ]]; then
        log "WARNING: Dockerfile does not exist yet; $FLOWMGR_TAG not built"
        return 0
    fi
    local hash
    hash="$(source_hash Dockerfile .dockerignore pyproject.toml config.json README.md server \
        flowmgr_tui deploy/container)"
    if ! stale "$FLOWMGR_TAG" flowmgr "$hash"; then
        log "$FLOWMGR_TAG present and up to date"
        # The guide's name on the same image (an older build may lack it, or carry another).
        [[ "$(image_id "$GUIDE_TAG")" == "$(image_id "$FLOWMGR_TAG")" ]] \
            || docker tag "$FLOWMGR_TAG" "$GUIDE_TAG"
        return 0
    fi
    build_base
    log "building wheels for $FLOWMGR_TAG into build/wheels"
    rm -rf build/wheels && mkdir -p build/wheels
    # pip's own chatter goes to a log, shown only when the build fails.
    if ! "$PYTHON" -m pip wheel --quiet --disable-pip-version-check --wheel-dir build/wheels . \
            </dev/null >build/pip-wheel.log 2>&1; then
        tail -n 40 build/pip-wheel.log >&2
        return 1
    fi
    log "building $FLOWMGR_TAG"
    docker build -q --label "$HASH_LABEL=$hash" --build-arg BASE_IMAGE="$BASE_TAG" \
        --build-arg OFFLINE_WHEELS=1 -t "$FLOWMGR_TAG" -t "$GUIDE_TAG" . >/dev/null
    # The legacy builder keeps the build stage as an untagged image; only ours carry this label.
    # Best effort: another prune running at the same time is not a build failure.
    docker image prune -f --filter label=flowmgr.stage=build >/dev/null 2>&1 || true
}

declare -A TAG_OF=([base]=$BASE_TAG [busybox]=$BUSYBOX_TAG [unhealthy]=$UNHEALTHY_TAG
                   [flow]=$FLOW_TAG [flowmgr]=$FLOWMGR_TAG)
image_id() { docker image inspect -f '{{.Id}}' "$1" 2>/dev/null || true; }

for name in "${WANTED[@]}"; do
    old="$(image_id "${TAG_OF[$name]}")"
    "build_$name"
    new="$(image_id "${TAG_OF[$name]}")"
    # Drop the image this one replaced; Docker refuses while any container still uses it.
    if [[ -n "$old" && "$old" != "$new" ]]; then
        docker image rm "$old" >/dev/null 2>&1 || log "kept the previous ${TAG_OF[$name]} (in use)"
    fi
done
log "done: $(docker images --format '{{.Repository}}:{{.Tag}}' | grep -E '^(flowmgr|flow:|kawaflow/flow-manager:)' | sort | tr '\n' ' ')"
