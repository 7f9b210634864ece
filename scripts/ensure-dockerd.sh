#!/usr/bin/env bash
# Make sure the host tools and a Docker Engine are there; start dockerd only when none answers.
#
# Usage: bash scripts/ensure-dockerd.sh [PIDFILE]
#   Installs (apt-get) what is missing, then starts dockerd in the background when `docker info`
#   fails, logging to $DOCKERD_LOG (default /tmp/flowmgr-dockerd.log). When it starts dockerd it
#   writes dockerd's pid to PIDFILE (if given) so the caller can stop exactly that process later.
set -euo pipefail

PIDFILE="${1:-}"
DOCKERD_LOG="${DOCKERD_LOG:-/tmp/flowmgr-dockerd.log}"
# command -> Debian package that provides it
declare -A NEEDED=(
    [dockerd]=docker.io
    [mmdebstrap]=mmdebstrap
    [docker-compose]=docker-compose
    [tmux]=tmux
    [systemd-analyze]=systemd
)

log() { echo "[ensure-dockerd] $*" >&2; }

sudo_if_needed() {
    if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

install_missing() {
    local pkgs=() cmd
    for cmd in "${!NEEDED[@]}"; do
        command -v "$cmd" >/dev/null 2>&1 || pkgs+=("${NEEDED[$cmd]}")
    done
    # busybox-static ships a static /bin/busybox; the plain busybox package is dynamic.
    dpkg -s busybox-static >/dev/null 2>&1 || pkgs+=(busybox-static)
    command -v python3 >/dev/null 2>&1 || pkgs+=(python3)
    python3 -c 'import ensurepip' >/dev/null 2>&1 || pkgs+=(python3-venv)
    command -v git >/dev/null 2>&1 || pkgs+=(git)
    if ((${#pkgs[@]})); then
        log "installing: ${pkgs[*]}"
        sudo_if_needed apt-get update -qq
        sudo_if_needed env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends "${pkgs[@]}" </dev/null
    fi
}

engine_answers() { timeout 20 docker info >/dev/null 2>&1; }

start_dockerd() {
    log "no Docker Engine answers; starting dockerd (log: $DOCKERD_LOG)"
    # setsid: dockerd must not die with the shell that started it, nor get its signals. Run as
    # a plain command (not through a function) so that $! is dockerd's own pid.
    if [[ $(id -u) -eq 0 ]]; then
        setsid dockerd >"$DOCKERD_LOG" 2>&1 </dev/null &
    else
        sudo setsid dockerd >"$DOCKERD_LOG" 2>&1 </dev/null &
    fi
    local pid=$! i
    [[ -n "$PIDFILE" ]] && echo "$pid" >"$PIDFILE"
    for i in $(seq 1 60); do
        if engine_answers; then
            log "dockerd answers after ${i}s (pid $pid)"
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            log "dockerd exited; last lines of $DOCKERD_LOG:"
            tail -n 30 "$DOCKERD_LOG" >&2
            return 1
        fi
        sleep 1
    done
    log "dockerd did not answer within 60s; last lines of $DOCKERD_LOG:"
    tail -n 30 "$DOCKERD_LOG" >&2
    return 1
}

install_missing
if engine_answers; then
    log "Docker Engine answers: $(docker info --format '{{.ServerVersion}}' 2>/dev/null)"
else
    start_dockerd
fi
