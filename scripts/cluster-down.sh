#!/usr/bin/env bash
# Remove the test Swarm cluster that scripts/cluster-up.sh builds, or whatever a half-failed run of
# it left behind. Touches only what carries the cluster's prefix; the host's own dockerd
# (/var/run/docker.sock) and its containers are never stopped.
#
# Usage: bash scripts/cluster-down.sh
#
# In this order, each step best effort (a missing piece is not an error):
#   1. SIGTERM every node's dockerd (pid from its --pidfile, checked against its command line),
#      the swarm's leader last, wait up to FMC_STOP_TIMEOUT seconds (default 15) each time, then
#      SIGKILL what is left;
#   2. SIGKILL what the nodes started and left running: each node's containerd and
#      containerd-shims (found by their socket under the node's exec-root), the processes in the
#      node's cgroups (/sys/fs/cgroup/*/<prefix>-nN) and in its network namespace;
#   3. unmount everything under the run and data directories and the namespaces' mount points;
#   4. delete the network namespaces (with their veth ends), the bridge, leftover veths and the
#      iptables rules tagged with the comment <prefix>-cluster;
#   5. remove the nodes' cgroup directories, the run directory and the data directory
#      (rm --one-file-system, and only when nothing is mounted below them any more).
# Finally checks that nothing is left (processes, mounts, links, namespaces, rules) and exits 1
# naming what is, 0 otherwise.
#
# Environment (the same as cluster-up.sh): FMC_PREFIX (fmc), FMC_RUN_DIR (/run/<prefix>),
# FMC_DATA_DIR (/var/lib/<prefix>), FMC_STOP_TIMEOUT (15), FMC_KEEP_LOGS (a directory: the
# nodes' dockerd logs are copied there before the run directory goes).
set -uo pipefail

PREFIX="${FMC_PREFIX:-fmc}"
RUN_DIR="${FMC_RUN_DIR:-/run/$PREFIX}"
DATA_DIR="${FMC_DATA_DIR:-/var/lib/$PREFIX}"
STOP_TIMEOUT="${FMC_STOP_TIMEOUT:-15}"
COMMENT="$PREFIX-cluster"

case "${1:-}" in
    "") ;;
    -h|--help) awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"; exit 0 ;;
    *) echo "cluster-down: no arguments expected (try --help)" >&2; exit 2 ;;
esac

log() { echo "[cluster-down] $*" >&2; }
die() { log "ERROR: $*"; exit 2; }

[[ $PREFIX =~ ^[a-z][a-z0-9]{0,7}$ ]] || die "FMC_PREFIX must be 1-8 lowercase letters/digits"
[[ $RUN_DIR == /* && $RUN_DIR != / && $DATA_DIR == /* && $DATA_DIR != / ]] \
    || die "FMC_RUN_DIR and FMC_DATA_DIR must be absolute paths below /"
[[ $(id -u) -eq 0 ]] || die "must run as root (namespaces, mounts, iptables)"

# The nodes: every name seen in the run dir, the data dir, the netns list or the cgroup tree.
node_names() {
    {
        local d
        for d in "$RUN_DIR"/n[0-9]* "$DATA_DIR"/n[0-9]*; do
            [[ -d $d ]] && basename "$d"
        done
        ip netns list 2>/dev/null | awk '{print $1}' | sed -n "s/^$PREFIX-\(n[0-9][0-9]*\)$/\1/p"
        for d in /sys/fs/cgroup/*/"$PREFIX"-n[0-9]*; do
            [[ -d $d ]] && basename "$d" | sed "s/^$PREFIX-//"
        done
    } | sort -u
}

cmdline_of() { tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline"; } 2>/dev/null

# The pid in a pidfile, only when that process's command line names `needle` (a recycled pid or
# someone else's process is never signalled).
pid_from_file() {
    local file=$1 needle=$2 pid
    [[ -s $file ]] || return 1
    pid="$(tr -dc '0-9' <"$file")"
    [[ -n $pid ]] && [[ "$(cmdline_of "$pid")" == *"$needle"* ]] || return 1
    echo "$pid"
}

alive() { kill -0 "$1" 2>/dev/null; }

# Processes started by node $1 that can outlive its dockerd.
leftover_pids() {
    local node=$1 sock="$RUN_DIR/$1/exec/containerd/containerd.sock" p f
    pid_from_file "$RUN_DIR/$node/exec/containerd/containerd.pid" "$RUN_DIR/$node/" || true
    # The shims name their containerd's socket, which is under this node's exec-root.
    pgrep -f -- "containerd-shim.* -address $sock( |\$)" || true
    for f in /sys/fs/cgroup/*/"$PREFIX-$node"; do
        [[ -d $f ]] && find "$f" -name cgroup.procs -exec cat {} + 2>/dev/null
    done
    ip netns pids "$PREFIX-$node" 2>/dev/null || true
}

# 1. dockerd: TERM, wait, KILL.
NODES=()
while read -r n; do [[ -n $n ]] && NODES+=("$n"); done < <(node_names)
((${#NODES[@]})) && log "nodes found: ${NODES[*]}"

declare -A DPID=()
for n in "${NODES[@]}"; do
    pid="$(pid_from_file "$RUN_DIR/$n/dockerd.pid" "$RUN_DIR/$n/")" && DPID[$n]=$pid
done

# The Raft leader goes last: followers whose leader is gone spend seconds in their agents'
# reconnect back-off before they stop; with the leader still there they stop in about a second.
leader=""
for n in "${!DPID[@]}"; do
    leader="$(timeout 5 docker -H "unix://$RUN_DIR/$n/docker.sock" node ls \
        --format '{{.Hostname}} {{.ManagerStatus}}' 2>/dev/null \
        | awk '$2 == "Leader" {print $1}' | sed "s/^$PREFIX-//")" && [[ -n $leader ]] && break
done

# stop_dockerds NODE...: SIGTERM, wait up to STOP_TIMEOUT seconds, SIGKILL what is left.
stop_dockerds() {
    local n pid left deadline=$((SECONDS + STOP_TIMEOUT))
    (($#)) || return 0
    for n in "$@"; do
        log "$n: SIGTERM dockerd (pid ${DPID[$n]})"
        kill -TERM "${DPID[$n]}" 2>/dev/null || true
    done
    while ((SECONDS < deadline)); do
        left=0
        for n in "$@"; do alive "${DPID[$n]}" && left=1; done
        ((left)) || break
        sleep 0.1
    done
    for n in "$@"; do
        pid=${DPID[$n]}
        if alive "$pid"; then
            log "$n: dockerd (pid $pid) still running after ${STOP_TIMEOUT}s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
}
followers=()
for n in "${!DPID[@]}"; do [[ $n == "$leader" ]] || followers+=("$n"); done
stop_dockerds "${followers[@]}"
[[ -n $leader && -n ${DPID[$leader]:-} ]] && stop_dockerds "$leader"

# 2. What the nodes' dockerds left: containerd, shims, container processes, anything in the netns.
for round in 1 2 3; do
    pids=()
    for n in "${NODES[@]}"; do
        while read -r p; do
            [[ -n $p && $p != "$$" ]] && alive "$p" && pids+=("$p")
        done < <(leftover_pids "$n" | sort -u)
    done
    ((${#pids[@]})) || break
    log "SIGKILL ${#pids[@]} leftover process(es) of the nodes (round $round): ${pids[*]}"
    kill -KILL "${pids[@]}" 2>/dev/null || true
    sleep 0.5
done

# 3. Mounts below our directories, deepest first (the namespaces' own mount points go with
#    `ip netns delete` in step 4; `our_mounts all` lists them too).
our_mounts() {
    awk '{print $5}' /proc/self/mountinfo | while read -r m; do
        case "$m" in
            "$RUN_DIR"|"$RUN_DIR"/*|"$DATA_DIR"|"$DATA_DIR"/*) echo "$m" ;;
            /run/netns/"$PREFIX"-n*) [[ ${1:-} == all ]] && echo "$m" ;;
        esac
    done | awk '{print length($0) " " $0}' | sort -rn | cut -d' ' -f2-
}
for attempt in 1 2 3; do
    mounts="$(our_mounts)"
    [[ -n $mounts ]] || break
    while read -r m; do
        umount "$m" 2>/dev/null || { ((attempt > 1)) && umount -l "$m" 2>/dev/null; } || true
    done <<<"$mounts"
done
[[ -z "$(our_mounts)" ]] || log "WARNING: still mounted: $(our_mounts | tr '\n' ' ')"

# 4. Network: namespaces (their veth ends go with them), bridge, stray veths, iptables rules.
while read -r ns; do
    [[ $ns == "$PREFIX"-n* ]] || continue
    log "deleting netns $ns"
    ip netns delete "$ns" 2>/dev/null || log "WARNING: could not delete netns $ns"
done < <(ip netns list 2>/dev/null | awk '{print $1}')
sleep 0.2  # the kernel removes a deleted namespace's veths asynchronously
while read -r link; do
    ip link show "$link" >/dev/null 2>&1 || continue
    log "deleting link $link"
    ip link delete "$link" 2>/dev/null || ! ip link show "$link" >/dev/null 2>&1 \
        || log "WARNING: could not delete link $link"
done < <(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//' \
    | grep -E "^$PREFIX-(br0|n[0-9]+h)$")
# `ip netns add` made /run/netns a mount point when cluster-up created it: undo that once empty.
if [[ -f $RUN_DIR/created-run-netns && -d /run/netns && -z "$(ls -A /run/netns)" ]]; then
    while grep -q ' /run/netns ' /proc/self/mountinfo; do umount /run/netns 2>/dev/null || break; done
    rmdir /run/netns 2>/dev/null && log "removed /run/netns (cluster-up had created it)"
fi
while read -r rule; do
    # iptables -S prints the comment quoted: eval splits the rule back into its words.
    if eval "iptables ${rule/-A /-D }" 2>/dev/null; then
        log "removed iptables rule: $rule"
    else
        log "WARNING: could not remove iptables rule: $rule"
    fi
done < <(iptables -S 2>/dev/null | grep -E -- "--comment \"?$COMMENT\"?( |$)")

# 5. cgroups, then the directories.
for n in "${NODES[@]}"; do
    for d in /sys/fs/cgroup/*/"$PREFIX-$n"; do
        [[ -d $d ]] && find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null
        [[ -d $d ]] && log "WARNING: cgroup $d still there"
    done
done
if [[ -n ${FMC_KEEP_LOGS:-} ]]; then
    mkdir -p "$FMC_KEEP_LOGS"
    for f in "$RUN_DIR"/n*/dockerd.log; do
        [[ -f $f ]] && cp "$f" "$FMC_KEEP_LOGS/$(basename "$(dirname "$f")")-dockerd.log"
    done
fi
if [[ -z "$(our_mounts)" ]]; then
    for d in "$RUN_DIR" "$DATA_DIR"; do
        [[ -e $d ]] && { rm -rf --one-file-system "$d" || log "WARNING: could not remove $d"; }
    done
else
    log "WARNING: not removing $RUN_DIR and $DATA_DIR while something is mounted below them"
fi

# What is left?
problems=()
for n in "${NODES[@]}"; do
    left="$(leftover_pids "$n" | sort -u | while read -r p; do alive "$p" && echo "$p"; done)"
    [[ -n $left ]] && problems+=("processes of $n: $(echo "$left" | tr '\n' ' ')")
done
[[ -n "$(our_mounts all)" ]] && problems+=("mounts: $(our_mounts all | tr '\n' ' ')")
ip netns list 2>/dev/null | grep -q "^$PREFIX-n" && problems+=("netns: $(ip netns list | grep "^$PREFIX-n" | tr '\n' ' ')")
ip -o link show 2>/dev/null | grep -qE ": $PREFIX-(br0|n[0-9]+h)[@:]" && problems+=("links")
iptables -S 2>/dev/null | grep -q -- "$COMMENT" && problems+=("iptables rules")
for d in "$RUN_DIR" "$DATA_DIR"; do [[ -e $d ]] && problems+=("$d"); done
if ((${#problems[@]})); then
    log "left behind: ${problems[*]}"
    exit 1
fi
log "clean: no processes, mounts, namespaces, links, rules or directories of the cluster left"
