#!/usr/bin/env bash
# A 3-node Tern cluster on one machine, for trying the cluster and for tests.
#
#   tests/local-cluster.sh start    # build if needed, start nodes 1-3, wait until ready
#   tests/local-cluster.sh status   # `tern cluster status` against the cluster
#   tests/local-cluster.sh stop     # stop the nodes (SIGTERM, clean shutdown)
#
# Node N (1..3): Kafka clients on 127.0.0.1:909(1+N) (9092-9094), inter-broker traffic on
# 127.0.0.1:1909(1+N), /metrics on 127.0.0.1:964(3+N), data in $CLUSTER_DIR/node-N
# (default ./tern-cluster), log in $CLUSTER_DIR/node-N.log. Each node runs one shard;
# on a machine with fewer cores than nodes they share cores.
#
# Environment: TERN (the binary; default target/release/tern, built if missing),
# CLUSTER_DIR, NODES (default 3), EXTRA_ARGS (more `tern serve` flags for every node).
set -euo pipefail

cd "$(dirname "$0")/.."
TERN=${TERN:-target/release/tern}
CLUSTER_DIR=${CLUSTER_DIR:-./tern-cluster}
NODES=${NODES:-3}
EXTRA_ARGS=${EXTRA_ARGS:-}

peers() {
    local list="" n
    for n in $(seq 1 "$NODES"); do
        list+="${list:+,}$n@127.0.0.1:$((19091 + n))"
    done
    echo "$list"
}

start() {
    if [ ! -x "$TERN" ]; then
        cargo build --release
    fi
    mkdir -p "$CLUSTER_DIR"
    local cpus n pid
    cpus=$(nproc)
    for n in $(seq 1 "$NODES"); do
        if [ -f "$CLUSTER_DIR/node-$n.pid" ] && kill -0 "$(cat "$CLUSTER_DIR/node-$n.pid")" 2>/dev/null; then
            echo "node $n is already running (pid $(cat "$CLUSTER_DIR/node-$n.pid"))"
            continue
        fi
        # shellcheck disable=SC2086 # EXTRA_ARGS is a list of flags
        "$TERN" serve \
            --node-id "$n" \
            --listen "127.0.0.1:$((9091 + n))" \
            --cluster-listen "127.0.0.1:$((19091 + n))" \
            --peers "$(peers)" \
            --admin-listen "127.0.0.1:$((9643 + n))" \
            --data-dir "$CLUSTER_DIR/node-$n" \
            --cores "$(((n - 1) % cpus))" \
            --memory 1M \
            $EXTRA_ARGS \
            >"$CLUSTER_DIR/node-$n.log" 2>&1 &
        pid=$!
        echo "$pid" >"$CLUSTER_DIR/node-$n.pid"
        echo "node $n: pid $pid, clients 127.0.0.1:$((9091 + n)), log $CLUSTER_DIR/node-$n.log"
    done
    # Ready: every node answers /health and the cluster has a controller.
    for _ in $(seq 1 100); do
        if "$TERN" cluster status --brokers 127.0.0.1:9092 --wait-brokers "$NODES" >/dev/null 2>&1; then
            "$TERN" cluster status --brokers 127.0.0.1:9092
            return 0
        fi
        sleep 0.2
    done
    echo "the cluster did not become ready in 20 s; see $CLUSTER_DIR/node-*.log" >&2
    return 1
}

stop() {
    local n pid
    for n in $(seq 1 "$NODES"); do
        [ -f "$CLUSTER_DIR/node-$n.pid" ] || continue
        pid=$(cat "$CLUSTER_DIR/node-$n.pid")
        kill "$pid" 2>/dev/null || true
    done
    for n in $(seq 1 "$NODES"); do
        [ -f "$CLUSTER_DIR/node-$n.pid" ] || continue
        pid=$(cat "$CLUSTER_DIR/node-$n.pid")
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "node $n did not stop in 10 s; killing it" >&2
            kill -9 "$pid" 2>/dev/null || true
        fi
        rm -f "$CLUSTER_DIR/node-$n.pid"
    done
}

case "${1:-}" in
start) start ;;
stop) stop ;;
status) "$TERN" cluster status --brokers 127.0.0.1:9092,127.0.0.1:9093,127.0.0.1:9094 ;;
*)
    echo "usage: $0 start|status|stop" >&2
    exit 2
    ;;
esac
