#!/usr/bin/env bash
# Build a Docker Swarm cluster of N nodes on this one machine, for flowmgr's cluster tests
# (issue 16): N network namespaces joined by a private bridge, one dockerd in each, all managers.
#
# Usage: bash scripts/cluster-up.sh [--force] [N]        (N: 1-9, default 3)
#   --force   remove a cluster that is still running first (scripts/cluster-down.sh); a stale one
#             (its daemons dead) is always removed first
#
# What it creates (and scripts/cluster-down.sh removes), with the default prefix "fmc":
#   bridge fmc-br0 (10.213.0.1/24) on the host; netns fmc-n1..fmc-nN, each with a veth pair
#     fmc-nIh (host side, on the bridge) / eth0 (10.213.0.(10+I)/24) and lo; no default route, so
#     nothing in a node reaches any address but the bridge's subnet and its own loopback;
#   two iptables rules in the host's FORWARD chain (comment fmc-cluster): accept traffic between
#     the bridge's ports (Docker's FORWARD policy is DROP and bridged frames pass through it),
#     drop anything routed from the bridge elsewhere;
#   per node: a dockerd started with `nsenter --net=/run/netns/fmc-nI` (in its own UTS namespace,
#     hostname fmc-nI), socket unix:///run/fmc/nI/docker.sock, --exec-root /run/fmc/nI/exec (so its
#     own managed containerd), --data-root /var/lib/fmc/nI, --pidfile /run/fmc/nI/dockerd.pid,
#     --cgroup-parent /fmc-nI, containerd namespaces fmc-nI and fmc-nI-plugins, its own empty
#     --config-file, log /run/fmc/nI/dockerd.log, and DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 in its
#     environment (a task never tries to pull: there is no registry), and --no-new-privileges
#     (a 20.10 service spec cannot ask for it: docs/CLUSTER.md);
#     /run/fmc/nI/start-dockerd.sh starts it again (for drills that kill a node's daemon);
#   a swarm: init on n1, n2..nN join as managers; node label fmc.node=nI on each;
#   the images of FMC_IMAGES loaded into every node (docker save on the host | docker load);
#   /run/fmc/cluster.json (machine-readable) and /run/fmc/cluster.env (shell: FMC_N1_HOST=...).
#
# Environment:
#   FMC_IMAGES     images to load (default: flowmgr-test-busybox:latest); all must exist on the host
#   FMC_HEARTBEAT  swarm dispatcher heartbeat, e.g. 1s (default: Swarm's 5s); node-failure
#                  detection takes a few heartbeats
#   FMC_PREFIX (fmc), FMC_NET (10.213.0: the /24 used), FMC_RUN_DIR (/run/<prefix>),
#   FMC_DATA_DIR (/var/lib/<prefix>), FMC_DOCKERD_TIMEOUT (30 s per daemon to answer),
#   FMC_READY_TIMEOUT (60 s for the swarm to have every node Ready and reachable)
#
# Talk to a node: docker -H unix:///run/fmc/n1/docker.sock node ls
# Create services with `docker service create --no-resolve-image ...`: the docker CLI 28 here no
# longer reads DOCKER_SERVICE_PREFER_OFFLINE_IMAGE and would ask a registry for the digest.
# On failure, it says which step failed; run scripts/cluster-down.sh to remove what was built.
# Exit status: 0 ready, 1 a step failed, 2 bad usage, 3 refused (a cluster is running already).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX="${FMC_PREFIX:-fmc}"
NET="${FMC_NET:-10.213.0}"
RUN_DIR="${FMC_RUN_DIR:-/run/$PREFIX}"
DATA_DIR="${FMC_DATA_DIR:-/var/lib/$PREFIX}"
IMAGES="${FMC_IMAGES:-flowmgr-test-busybox:latest}"
HEARTBEAT="${FMC_HEARTBEAT:-}"
DOCKERD_TIMEOUT="${FMC_DOCKERD_TIMEOUT:-30}"
READY_TIMEOUT="${FMC_READY_TIMEOUT:-60}"
BRIDGE="$PREFIX-br0"
COMMENT="$PREFIX-cluster"
export DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1

FORCE=0
N=3
for arg in "$@"; do
    case "$arg" in
        --force) FORCE=1 ;;
        -h|--help) awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"; exit 0 ;;
        [1-9]) N=$arg ;;
        *) echo "cluster-up: unknown argument: $arg (try --help)" >&2; exit 2 ;;
    esac
done

T0=$SECONDS
STEP="checking the host"
log() { printf '[cluster-up %3ds] %s\n' $((SECONDS - T0)) "$*" >&2; }
die() { log "FAILED: $STEP: $*"; exit 1; }
on_error() {
    local rc=$?
    log "FAILED (exit $rc) while $STEP; remove what was built with: bash $ROOT/scripts/cluster-down.sh"
    exit "$rc"
}
trap on_error ERR

[[ $PREFIX =~ ^[a-z][a-z0-9]{0,7}$ ]] || die "FMC_PREFIX must be 1-8 lowercase letters/digits"
[[ $NET =~ ^[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$ ]] || die "FMC_NET must be three octets, e.g. 10.213.0"
[[ $(id -u) -eq 0 ]] || die "must run as root (namespaces, iptables, dockerd)"
for cmd in ip nsenter unshare setsid hostname iptables dockerd docker python3; do
    command -v "$cmd" >/dev/null || die "$cmd is not installed"
done
timeout 20 docker info >/dev/null 2>&1 || die "the host's Docker Engine does not answer (docker info)"
for img in $IMAGES; do
    docker image inspect "$img" >/dev/null 2>&1 \
        || die "image $img is not on the host engine (bash scripts/build-images.sh)"
done

sock_of() { echo "unix://$RUN_DIR/$1/docker.sock"; }
addr_of() { echo "$NET.$((10 + ${1#n}))"; }
dk() { local node=$1; shift; docker -H "$(sock_of "$node")" "$@"; }
NODES=()
for i in $(seq 1 "$N"); do NODES+=("n$i"); done

# --- an earlier cluster? ------------------------------------------------------------------------
STEP="looking for an earlier cluster"
earlier=0
[[ -e $RUN_DIR || -e $DATA_DIR ]] && earlier=1
ip link show "$BRIDGE" >/dev/null 2>&1 && earlier=1
ip netns list 2>/dev/null | grep -q "^$PREFIX-n" && earlier=1
if ((earlier)); then
    running=()
    for f in "$RUN_DIR"/n*/dockerd.pid; do
        [[ -s $f ]] || continue
        pid="$(tr -dc '0-9' <"$f")"
        [[ -n $pid ]] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$RUN_DIR/" \
            && running+=("$(basename "$(dirname "$f")"):$pid")
    done
    if ((${#running[@]})) && ! ((FORCE)); then
        log "FAILED: a cluster is running (dockerd ${running[*]}); use it, or remove it with scripts/cluster-down.sh (or pass --force)"
        exit 3
    fi
    log "removing the leftovers of an earlier cluster (scripts/cluster-down.sh)"
    bash "$ROOT/scripts/cluster-down.sh" || die "cluster-down.sh could not remove the earlier cluster"
fi

# --- network ------------------------------------------------------------------------------------
STEP="creating the network ($NET.0/24 on bridge $BRIDGE)"
overlap="$(ip -4 route show | awk '{print $1}' | python3 -c '
import ipaddress, sys
ours = ipaddress.ip_network(sys.argv[1] + ".0/24")
for line in sys.stdin:
    word = line.strip()
    if word == "default":
        continue
    try:
        net = ipaddress.ip_network(word, strict=False)
    except ValueError:
        continue
    if net.overlaps(ours):
        print(word)
' "$NET")"
[[ -z $overlap ]] || die "$NET.0/24 overlaps the host route(s) $overlap; choose another FMC_NET"
mkdir -p "$RUN_DIR" "$DATA_DIR"
[[ -d /run/netns ]] || touch "$RUN_DIR/created-run-netns"
ip link add "$BRIDGE" type bridge
ip addr add "$NET.1/24" dev "$BRIDGE"
ip link set "$BRIDGE" up
iptables -I FORWARD -i "$BRIDGE" ! -o "$BRIDGE" -j DROP -m comment --comment "$COMMENT"
iptables -I FORWARD ! -i "$BRIDGE" -o "$BRIDGE" -j DROP -m comment --comment "$COMMENT"
iptables -I FORWARD -i "$BRIDGE" -o "$BRIDGE" -j ACCEPT -m comment --comment "$COMMENT"
for n in "${NODES[@]}"; do
    ns="$PREFIX-$n"
    ip netns add "$ns"
    ip link add "$PREFIX-${n}h" type veth peer name eth0 netns "$ns"
    ip link set "$PREFIX-${n}h" master "$BRIDGE" up
    ip -n "$ns" addr add "$(addr_of "$n")/24" dev eth0
    ip -n "$ns" link set lo up
    ip -n "$ns" link set eth0 up
done
log "network up: $BRIDGE $NET.1/24, namespaces ${NODES[*]/#/$PREFIX-}"

# --- daemons ------------------------------------------------------------------------------------
STEP="starting the nodes' dockerd"
# The host engine writes the images out while the daemons start.
# shellcheck disable=SC2086  # IMAGES is a list of names
docker save -o "$DATA_DIR/images.tar" $IMAGES &
SAVE_PID=$!

for n in "${NODES[@]}"; do
    d="$RUN_DIR/$n"
    mkdir -p "$d" "$DATA_DIR/$n"
    echo '{}' >"$d/daemon.json"
    # The daemon's command line, in a script of its own so a drill can start it again.
    cat >"$d/start-dockerd.sh" <<EOF
#!/bin/sh
# Start node $n's dockerd (written by scripts/cluster-up.sh). Returns at once; the daemon's pid
# is in $d/dockerd.pid once it runs, its log in $d/dockerd.log.
# unshare --uts: the node's own hostname; nsenter --net (not ip netns exec, which remounts /sys
# and hides /sys/fs/cgroup): the node's network namespace; setsid: out of the caller's session.
rm -f $d/dockerd.pid
DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 setsid unshare --uts -- \\
    nsenter --net=/run/netns/$PREFIX-$n -- \\
    sh -c 'hostname $PREFIX-$n && exec "\$@"' sh \\
    dockerd \\
    --host $(sock_of "$n") \\
    --pidfile $d/dockerd.pid \\
    --data-root $DATA_DIR/$n \\
    --exec-root $d/exec \\
    --config-file $d/daemon.json \\
    --cgroup-parent /$PREFIX-$n \\
    --exec-opt native.cgroupdriver=cgroupfs \\
    --containerd-namespace $PREFIX-$n \\
    --containerd-plugins-namespace $PREFIX-$n-plugins \\
    --swarm-default-advertise-addr $(addr_of "$n") \\
    --shutdown-timeout 5 \\
    --no-new-privileges \\
    --log-level info \\
    >>$d/dockerd.log 2>&1 </dev/null &
EOF
    chmod +x "$d/start-dockerd.sh"
    "$d/start-dockerd.sh"
done

wait_dockerd() {
    local n=$1 d="$RUN_DIR/$1" deadline=$((SECONDS + DOCKERD_TIMEOUT))
    while ((SECONDS < deadline)); do
        if timeout 5 docker -H "$(sock_of "$n")" version >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    log "$n: dockerd did not answer on $(sock_of "$n") within ${DOCKERD_TIMEOUT}s; last lines of $d/dockerd.log:"
    tail -n 30 "$d/dockerd.log" >&2 || true
    return 1
}
failed=()
for n in "${NODES[@]}"; do wait_dockerd "$n" || failed+=("$n"); done
((${#failed[@]} == 0)) || die "dockerd of ${failed[*]} did not answer"
pids=()
for n in "${NODES[@]}"; do pids+=("$n:$(cat "$RUN_DIR/$n/dockerd.pid")"); done
log "dockerd answers on every node (pids ${pids[*]})"

# --- images (in the background while the swarm forms) --------------------------------------------
STEP="saving the images on the host engine ($IMAGES)"
wait "$SAVE_PID" || die "docker save $IMAGES failed"
LOAD_PIDS=()
for n in "${NODES[@]}"; do
    dk "$n" load -q -i "$DATA_DIR/images.tar" >"$RUN_DIR/$n/load.log" 2>&1 &
    LOAD_PIDS+=("$!")
done

# --- swarm --------------------------------------------------------------------------------------
STEP="initialising the swarm on n1"
init_args=(--advertise-addr "$(addr_of n1)" --listen-addr "$(addr_of n1):2377")
[[ -n $HEARTBEAT ]] && init_args+=(--dispatcher-heartbeat "$HEARTBEAT")
dk n1 swarm init "${init_args[@]}" >/dev/null
token="$(dk n1 swarm join-token -q manager)"
for n in "${NODES[@]:1}"; do
    STEP="joining $n to the swarm as a manager"
    dk "$n" swarm join --token "$token" --advertise-addr "$(addr_of "$n")" \
        --listen-addr "$(addr_of "$n"):2377" "$(addr_of n1):2377" >/dev/null
done
declare -A NODE_ID=()
for n in "${NODES[@]}"; do
    STEP="labelling $n"
    NODE_ID[$n]="$(dk "$n" info -f '{{.Swarm.NodeID}}')"
    dk n1 node update --label-add "fmc.node=$n" "${NODE_ID[$n]}" >/dev/null
done

STEP="waiting for every node to be Ready and every manager reachable"
deadline=$((SECONDS + READY_TIMEOUT))
while :; do
    states="$(dk n1 node ls --format '{{.Status}}/{{.ManagerStatus}}' 2>/dev/null || true)"
    ready="$(grep -cE '^Ready/(Leader|Reachable)$' <<<"$states" || true)"
    leaders="$(grep -c '/Leader$' <<<"$states" || true)"
    [[ $ready -eq $N && $leaders -eq 1 ]] && break
    if ((SECONDS >= deadline)); then
        dk n1 node ls >&2 || true
        die "after ${READY_TIMEOUT}s: $ready of $N nodes Ready and reachable, $leaders leader(s)"
    fi
    sleep 0.2
done
log "swarm formed: $N managers Ready, leader $(dk n1 node ls --format '{{.Hostname}} {{.ManagerStatus}}' | awk '$2 == "Leader" {print $1}')"

STEP="loading the images into the nodes"
for i in "${!NODES[@]}"; do
    n=${NODES[$i]}
    if ! wait "${LOAD_PIDS[$i]}"; then
        cat "$RUN_DIR/$n/load.log" >&2
        die "docker load on $n failed"
    fi
    for img in $IMAGES; do
        dk "$n" image inspect "$img" >/dev/null 2>&1 || die "$img missing on $n after docker load"
    done
done
rm -f "$DATA_DIR/images.tar"
log "images loaded into every node: $IMAGES"

# --- state files --------------------------------------------------------------------------------
STEP="writing $RUN_DIR/cluster.json"
{
    echo "# written by scripts/cluster-up.sh: source it for the nodes' sockets"
    echo "DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1"
    echo "FMC_NODES=\"${NODES[*]}\""
    echo "FMC_MANAGER_HOST=$(sock_of n1)"
    for n in "${NODES[@]}"; do
        u=${n^^}
        echo "FMC_${u}_HOST=$(sock_of "$n")"
        echo "FMC_${u}_ADDR=$(addr_of "$n")"
        echo "FMC_${u}_NETNS=$PREFIX-$n"
        echo "FMC_${u}_NODE_ID=${NODE_ID[$n]}"
        echo "FMC_${u}_PIDFILE=$RUN_DIR/$n/dockerd.pid"
    done
} >"$RUN_DIR/cluster.env"
nodes_json=""
for n in "${NODES[@]}"; do
    d="$RUN_DIR/$n"
    containerd_pid="$(tr -dc '0-9' <"$d/exec/containerd/containerd.pid" 2>/dev/null || true)"
    nodes_json+="${nodes_json:+,}
    {\"name\": \"$n\", \"host\": \"$(sock_of "$n")\", \"socket\": \"$d/docker.sock\",
     \"netns\": \"$PREFIX-$n\", \"netns_path\": \"/run/netns/$PREFIX-$n\", \"addr\": \"$(addr_of "$n")\",
     \"hostname\": \"$PREFIX-$n\", \"node_id\": \"${NODE_ID[$n]}\",
     \"dockerd_pid\": $(cat "$d/dockerd.pid"), \"containerd_pid\": ${containerd_pid:-null},
     \"pidfile\": \"$d/dockerd.pid\", \"start_script\": \"$d/start-dockerd.sh\",
     \"log\": \"$d/dockerd.log\", \"data_root\": \"$DATA_DIR/$n\", \"exec_root\": \"$d/exec\",
     \"cgroup_parent\": \"/$PREFIX-$n\", \"containerd_namespace\": \"$PREFIX-$n\"}"
done
cat >"$RUN_DIR/cluster.json" <<EOF
{
  "prefix": "$PREFIX",
  "bridge": "$BRIDGE",
  "subnet": "$NET.0/24",
  "bridge_addr": "$NET.1",
  "heartbeat": "${HEARTBEAT:-5s}",
  "images": "$IMAGES",
  "env": {"DOCKER_SERVICE_PREFER_OFFLINE_IMAGE": "1"},
  "nodes": [$nodes_json
  ]
}
EOF
python3 -m json.tool "$RUN_DIR/cluster.json" >/dev/null || die "cluster.json is not valid JSON"
log "ready in $((SECONDS - T0))s: state in $RUN_DIR/cluster.json and $RUN_DIR/cluster.env"
