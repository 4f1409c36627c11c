#!/bin/bash
# usage: roll_ab.sh BINARY... : for each broker binary (alternate them), one broker on
# CPU 0 and `tern bench e2e` on CPU 1 in the steady state of STEADY=1 perf/latency.sh:
# topic `steady` (8 partitions, 32 MiB segments, retention.bytes 64 MiB, retention every
# second) filled for 8 s at full speed, then e2e at RATE (default 1.5 M records/s, about
# half the peak) for 10 s + 2 s warm-up, consumers from the end. At that rate each
# partition rolls about every 1.6 s. Prints produce p50/p99/p99.9, e2e p99, and the
# in-broker queue-wait and write-stage p99 from /metrics.
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
TERN=$ROOT/target/release/tern
RATE=${RATE:-1500000}
for BIN in "$@"; do
  D=$(mktemp -d -p "$ROOT/target")
  taskset -c 0 "$BIN" serve --data-dir "$D/data" --listen 127.0.0.1:19092 --admin-listen 127.0.0.1:19644 \
    --cores 0 --memory 2M --retention-check-interval-ms 1000 >"$D/log" 2>&1 &
  P=$!; sleep 2
  "$TERN" topic create steady --brokers 127.0.0.1:19092 --partitions 8 \
    --config segment.bytes=33554432 --config retention.bytes=67108864 >/dev/null
  taskset -c 1 "$TERN" bench produce --brokers 127.0.0.1:19092 --cores 1 --memory 512K --topic steady --partitions 8 \
    --producers 2 --duration 8s --warmup 0s >/dev/null 2>&1
  curl -s http://127.0.0.1:19644/metrics >"$D/before"
  taskset -c 1 "$TERN" bench e2e --brokers 127.0.0.1:19092 --cores 1 --memory 512K --topic steady --partitions 8 \
    --producers 2 --consumers 1 --from latest --rate "$RATE" --duration 10s --warmup 2s --json "$D/e2e.json" >/dev/null 2>&1
  curl -s http://127.0.0.1:19644/metrics >"$D/after"
  python3 - "$D" "$BIN" "$ROOT" <<'PY'
import json, sys
sys.path.insert(0, sys.argv[3] + "/perf")
import latency_report as r
d = json.load(open(sys.argv[1] + "/e2e.json"))
p, e = d["produce"]["latency"], d.get("e2e") or {}
from pathlib import Path
_, buckets = r.delta(r.parse_metrics(Path(sys.argv[1]) / "before"), r.parse_metrics(Path(sys.argv[1]) / "after"))
def q(name):
    value = r.quantile(buckets.get(name, {}), 0.99)  # ms
    return round(value, 2) if value is not None else None
print(f"{sys.argv[2].split('/')[-1]:14} {round(d['produce']['records_per_sec']):>9} rec/s  produce p50 {p.get('p50_ms')} p99 {p.get('p99_ms')} p99.9 {p.get('p999_ms')}"
      f"  e2e p99 {e.get('p99_ms')}  queue p99 {q('tern_log_queue_wait_seconds')}  write p99 {q('tern_log_write_seconds')}")
PY
  kill $P; wait $P 2>/dev/null; rm -rf "$D"
done
