#!/bin/bash
# usage: single-broker-cpu.sh [bench args...]: one broker on CPU 0 (env passed through), tern bench on CPU 1;
# prints records/s, p99, broker ticks, machine busy ticks (all CPUs, over the bench), kworker+iou ticks
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
BIN=${BIN:-$ROOT/target/release/tern}
D=$(mktemp -d -p "$ROOT/target")
taskset -c 0 $BIN serve --data-dir $D/data --listen 127.0.0.1:19092 --admin-listen 127.0.0.1:19644 >$D/log 2>&1 &
P=$!; sleep 2
busy() { awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat; }
kw() { cat /proc/[0-9]*/stat 2>/dev/null | awk '$2 ~ /kworker/ {s+=$14+$15} END{print s}'; }
T0=$(awk '{print $14+$15}' /proc/$P/stat); B0=$(busy); K0=$(kw)
taskset -c 1 $BIN bench produce --brokers 127.0.0.1:19092 --json $D/out.json "$@" >/dev/null 2>&1
T1=$(awk '{print $14+$15}' /proc/$P/stat); B1=$(busy); K1=$(kw)
python3 - "$D/out.json" "$((T1-T0))" "$((B1-B0))" "$((K1-K0))" <<'PY'
import json,sys
d=json.load(open(sys.argv[1])); p=d.get('summary',d)['produce']; l=p['latency']
print(round(p['records_per_sec']), 'p99', l.get('p99_ms', l.get('p99')), 'broker_ticks', sys.argv[2], 'machine_busy_ticks', sys.argv[3], 'kworker_ticks', sys.argv[4])
PY
kill $P; wait $P 2>/dev/null; rm -rf $D
