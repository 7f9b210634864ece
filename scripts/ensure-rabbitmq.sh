#!/usr/bin/env bash
# Make sure a RabbitMQ broker answers on 127.0.0.1:5672; start Debian's only when none answers.
#
# Usage: bash scripts/ensure-rabbitmq.sh [PIDFILE]
#   Installs rabbitmq-server (apt-get) when missing, then starts it in the background when
#   nothing answers on 127.0.0.1:5672, logging to $RABBITMQ_LOG (default
#   /tmp/flowmgr-rabbitmq.log). The node listens on 127.0.0.1 only (AMQP, epmd and the Erlang
#   distribution port): the default guest account must not be reachable from elsewhere. When
#   it starts the broker it writes the node's pid to PIDFILE (if given); stop exactly that
#   node with `rabbitmqctl stop` (what .ci/run does).
set -euo pipefail

PIDFILE="${1:-}"
RABBITMQ_LOG="${RABBITMQ_LOG:-/tmp/flowmgr-rabbitmq.log}"

log() { echo "[ensure-rabbitmq] $*" >&2; }

sudo_if_needed() {
    if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

broker_answers() { timeout 2 bash -c 'exec 3<>/dev/tcp/127.0.0.1/5672' 2>/dev/null; }

install_missing() {
    command -v rabbitmq-server >/dev/null 2>&1 || [[ -x /usr/sbin/rabbitmq-server ]] && return 0
    log "installing: rabbitmq-server"
    sudo_if_needed apt-get update -qq
    # The package's own start is not wanted (no init system here, and it would bind everywhere).
    sudo_if_needed env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 \
        apt-get install -y -qq --no-install-recommends rabbitmq-server </dev/null
}

start_broker() {
    log "no broker answers on 127.0.0.1:5672; starting rabbitmq-server (log: $RABBITMQ_LOG)"
    local pidfile_node=/tmp/flowmgr-rabbitmq.node.pid
    rm -f "$pidfile_node"
    # setsid: the broker must not die with the shell that started it. Debian's wrapper drops to
    # the rabbitmq user by itself.
    sudo_if_needed env \
        RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
        ERL_EPMD_ADDRESS=127.0.0.1 \
        RABBITMQ_PID_FILE="$pidfile_node" \
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
        setsid /usr/sbin/rabbitmq-server >"$RABBITMQ_LOG" 2>&1 </dev/null &
    local i
    for i in $(seq 1 90); do
        if broker_answers && [[ -s "$pidfile_node" ]]; then
            [[ -n "$PIDFILE" ]] && cat "$pidfile_node" >"$PIDFILE"
            log "rabbitmq-server answers after ${i}s (node pid $(cat "$pidfile_node"))"
            return 0
        fi
        sleep 1
    done
    log "rabbitmq-server did not answer within 90s; last lines of $RABBITMQ_LOG:"
    tail -n 30 "$RABBITMQ_LOG" >&2
    return 1
}

install_missing
if broker_answers; then
    log "a broker answers on 127.0.0.1:5672"
else
    start_broker
fi
