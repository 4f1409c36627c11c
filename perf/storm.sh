#!/usr/bin/env bash
# Connection storm beside a producer (issue 19): starts a broker with one shard on CPU 0
# and runs perf/storm.py (quiet phase, then storm + `tern bench produce`) on CPU 1.
#
#   perf/storm.sh OUT_DIR [TERN_BINARY]
#
# Environment: BROKER_CPU (default 0) and STORM_CPU (default 1) swap the two sides (on
# this VM the disk's interrupts are all delivered to CPU 1, see perf/README.md);
# BROKER_ARGS (more `tern serve` flags, e.g. --max-connection-creation-rate 5000),
# STORM_ARGS (more perf/storm.py flags, e.g. --storm-nice 19, --load-cpus 0).
set -euo pipefail
OUT=${1:?usage: perf/storm.sh OUT_DIR [TERN_BINARY]}
BIN=${2:-target/release/tern}
# The broker's CPU and the storm's (with the load tool unless STORM_ARGS has --load-cpus).
BROKER_CPU=${BROKER_CPU:-0}
STORM_CPU=${STORM_CPU:-1}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DATA=$(mktemp -d)
mkdir -p "$OUT"
# shellcheck disable=SC2086 # BROKER_ARGS is a list of flags
taskset -c "$BROKER_CPU" "$BIN" serve --cores "$BROKER_CPU" --listen 127.0.0.1:19092 --admin-listen 127.0.0.1:19644 \
    --data-dir "$DATA" --memory 1M ${BROKER_ARGS:-} >"$OUT/broker.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true; wait $PID 2>/dev/null || true; rm -rf "$DATA"' EXIT
for _ in $(seq 1 50); do (echo >/dev/tcp/127.0.0.1/19092) 2>/dev/null && break; sleep 0.1; done
# shellcheck disable=SC2086 # STORM_ARGS is a list of flags
taskset -c "$STORM_CPU" "$ROOT/.venv/bin/python" "$ROOT/perf/storm.py" --tern "$BIN" --port 19092 --admin-port 19644 \
    --out "$OUT" ${STORM_ARGS:-}
