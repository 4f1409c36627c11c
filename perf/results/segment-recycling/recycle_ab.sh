#!/bin/bash
# usage: recycle_ab.sh MODE... (each MODE is `true` or `false`, the value of --recycle-segments)
#
# One broker on CPU 0, `tern bench` on CPU 1, a fresh data directory per MODE. The topic
# (8 partitions) has 32 MiB segments and retention.bytes 64 MiB per partition, and
# retention runs every second, so once warm every partition rolls and deletes segments
# continuously: the steady state of a broker with retention. Then, per MODE:
#   warm-up  peak produce for 8 s (about 1.5 GB: every partition rolls several times)
#   peak     produce, 2 producers, default batching, 10 s
#   100k/l5  --rate 100000 --linger-ms 5, 10 s;  100k/l0  the same with --linger-ms 0
# Each line: records/s, produce p50/p99 ms, broker CPU ticks (its threads, io_uring's
# workers included), kernel worker (kworker) ticks machine-wide, segments recycled.
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
BIN=${BIN:-$ROOT/target/release/tern}
kw() { cat /proc/[0-9]*/stat 2>/dev/null | awk '$2 ~ /kworker/ {s+=$14+$15} END{print s+0}'; }
for MODE in "$@"; do
  D=$(mktemp -d -p "$ROOT/target")
  taskset -c 0 "$BIN" serve --data-dir "$D/data" --listen 127.0.0.1:19092 --admin-listen 127.0.0.1:19644 \
    --recycle-segments "$MODE" --retention-check-interval-ms 1000 >"$D/log" 2>&1 &
  P=$!; sleep 2
  "$BIN" topic create tern-bench --brokers 127.0.0.1:19092 --partitions 8 \
    --config segment.bytes=33554432 --config retention.bytes=67108864 >/dev/null
  run() { # name, bench args...
    local name=$1; shift
    local T0 K0 T1 K1
    T0=$(awk '{print $14+$15}' /proc/$P/stat); K0=$(kw)
    taskset -c 1 "$BIN" bench produce --brokers 127.0.0.1:19092 --partitions 8 --producers 2 \
      --json "$D/$name.json" "$@" >/dev/null 2>&1
    T1=$(awk '{print $14+$15}' /proc/$P/stat); K1=$(kw)
    local recycled
    recycled=$(curl -s http://127.0.0.1:19644/metrics | awk '/^tern_segments_recycled_total/ {s+=$2} END{print s+0}')
    python3 - "$D/$name.json" "$MODE" "$name" "$((T1-T0))" "$((K1-K0))" "$recycled" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); p = d.get('summary', d)['produce']; l = p['latency']
print(f"recycle={sys.argv[2]:5} {sys.argv[3]:8} {round(p['records_per_sec']):>9} rec/s  p50 {l.get('p50_ms')} p99 {l.get('p99_ms')} ms"
      f"  broker_ticks {sys.argv[4]}  kworker_ticks {sys.argv[5]}  recycled {sys.argv[6]}")
PY
  }
  run warmup --duration 8 --warmup 0 >/dev/null
  run peak --duration 10 --warmup 2
  run 100k-l5 --rate 100000 --linger-ms 5 --duration 10 --warmup 2
  run 100k-l0 --rate 100000 --linger-ms 0 --duration 10 --warmup 2
  kill $P; wait $P 2>/dev/null; rm -rf "$D"
done
