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
    [ip]=iproute2
    [iptables]=iptables
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
    # Debian's own python3 and its venv module: setup.sh builds the .venv from it (PGO/LTO build).
    [[ -x /usr/bin/python3 ]] || pkgs+=(python3)
    /usr/bin/python3 -c 'import ensurepip' >/dev/null 2>&1 || pkgs+=(python3-venv)
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

# A dockerd started elsewhere with `--bridge none` deletes the host's docker0 at its start-up, and
# the running engine then fails every container on the default bridge (and every `docker build`
# RUN step) until it restarts. Put the interface back, with the gateway address Docker expects.
repair_default_bridge() {
    local name subnet
    name="$(docker network inspect bridge \
        -f '{{index .Options "com.docker.network.bridge.name"}}' 2>/dev/null)" || return 0
    [[ -n "$name" && $(id -u) -eq 0 ]] || return 0
    ip link show "$name" >/dev/null 2>&1 && return 0
    subnet="$(docker network inspect bridge -f '{{range .IPAM.Config}}{{.Subnet}}{{end}}')"
    log "the default bridge $name is missing; re-creating it for $subnet"
    ip link add name "$name" type bridge
    ip addr add "$(python3 -c 'import ipaddress, sys; n = ipaddress.ip_network(sys.argv[1]); print(f"{next(n.hosts())}/{n.prefixlen}")' "$subnet")" dev "$name"
    ip link set "$name" up
}

install_missing
if engine_answers; then
    log "Docker Engine answers: $(docker info --format '{{.ServerVersion}}' 2>/dev/null)"
    repair_default_bridge
else
    start_dockerd
fi
