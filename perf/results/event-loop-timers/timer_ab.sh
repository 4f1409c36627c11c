#!/bin/bash
# usage: timer_ab.sh BINARY... (tern builds to compare, e.g. one with glommio from
# crates.io and one with vendor/glommio; each is run in turn, so alternate them)
#
# One broker on CPU 0, `tern bench` on CPU 1, a fresh data directory per BINARY. The topic
# (8 partitions) has 32 MiB segments and retention.bytes 64 MiB per partition, retention
# every second (the steady state of perf/latency.sh STEADY=1). Then, per BINARY:
#   warm-up  peak produce for 8 s, unmeasured
#   100k/l5  --rate 100000 --linger-ms 5, 10 s;  100k/l0  the same with --linger-ms 0
#   330k     --rate 330000 (about 10% of the peak), linger 0, 10 s
# Each line: records/s, produce p50/p99/p99.9 ms, broker CPU ticks over the run (its
# threads, io_uring's workers included), and from `perf stat` over the run the shard's
# io_uring submissions and io_uring_enter calls.
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
for BIN in "$@"; do
  D=$(mktemp -d -p "$ROOT/target")
  taskset -c 0 "$BIN" serve --data-dir "$D/data" --listen 127.0.0.1:19092 --admin-listen 127.0.0.1:19644 \
    --cores 0 --memory 2M --retention-check-interval-ms 1000 >"$D/log" 2>&1 &
  P=$!; sleep 2
  "$BIN" topic create tern-bench --brokers 127.0.0.1:19092 --partitions 8 \
    --config segment.bytes=33554432 --config retention.bytes=67108864 >/dev/null
  run() { # name, seconds, bench args...
    local name=$1 seconds=$2; shift 2
    local T0 T1 S
    perf stat -x, -e io_uring:io_uring_submit_req,syscalls:sys_enter_io_uring_enter -p $P \
      -o "$D/$name.stat" -- sleep "$((seconds + 1))" >/dev/null 2>&1 &
    S=$!
    T0=$(awk '{print $14+$15}' /proc/$P/stat)
    taskset -c 1 "$BIN" bench produce --brokers 127.0.0.1:19092 --cores 1 --memory 512K --partitions 8 \
      --producers 2 --json "$D/$name.json" --duration "$seconds" --warmup 0 "$@" >/dev/null 2>&1
    T1=$(awk '{print $14+$15}' /proc/$P/stat)
    wait $S
    python3 - "$D/$name.json" "$(basename "$BIN")" "$name" "$((T1-T0))" "$D/$name.stat" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); p = d.get('summary', d)['produce']; l = p['latency']
stat = {line.split(',')[2]: line.split(',')[0] for line in open(sys.argv[5]) if line.count(',') > 2}
print(f"{sys.argv[2]:10} {sys.argv[3]:8} {round(p['records_per_sec']):>7} rec/s  p50 {l.get('p50_ms')} p99 {l.get('p99_ms')}"
      f" p99.9 {l.get('p999_ms')} ms  broker_ticks {sys.argv[4]}"
      f"  sqes {stat.get('io_uring:io_uring_submit_req')}  enters {stat.get('syscalls:sys_enter_io_uring_enter')}")
PY
  }
  run warmup 8 >/dev/null
  run 100k-l5 10 --rate 100000 --linger-ms 5
  run 100k-l0 10 --rate 100000 --linger-ms 0
  run 330k 10 --rate 330000
  kill $P; wait $P 2>/dev/null; rm -rf "$D"
done
