#!/bin/bash
# Produce latency alone and while one consumer catches up from cold disk, for each
# --cold-read-budget-mb given (perf/README.md, "Catch-up reads while producing").
#   perf/results/cold-read-budget/catchup_ab.sh 0 100 200     # as root, from anywhere
# A budget may carry `/niceN`: the broker's sendfile pool threads (every thread named like
# the shard's but the shard's own) are then reniced to N after the start, e.g. 200/nice19.
# One broker on CPU 0 (this tree's build), the load tool on CPU 1, `tern bench e2e` at
# RATE (400 k) records/s, a 3 GB topic of 1 KiB records per budget. Each budget: restart
# with drop_caches, an unmeasured produce run, a measured one (alone), then the catch-up
# reader and a measured produce run beside it (during); p99 from the client, and from the
# broker's /metrics (perf/latency_report.py's stages).
cd "$(dirname "$0")/../../.."
BIN=$PWD/target/release/tern
ROOT=$PWD
RATE=${RATE:-400000}
D=$ROOT/target/catchup-ab; rm -rf $D; mkdir -p $D
start() { taskset -c 0 $BIN serve $1 --data-dir $D/data --listen 127.0.0.1:19092 --admin-listen 127.0.0.1:19644 --memory 2M >>$D/log 2>&1 & P=$!; sleep 3; }
S() { curl -s http://127.0.0.1:19644/metrics > $1; }
stop() { kill $P; wait $P 2>/dev/null; }
renice_pool() { # N: a shard's pool threads share its name; all but the first (the shard) get nice N
  local seen=" "
  for t in $(ls /proc/$P/task | sort -n); do
    local name; name=$(cat /proc/$P/task/$t/comm)
    case $name in tern-shard-*) ;; *) continue;; esac
    case $seen in *" $name "*) renice -n "$1" -p "$t" >/dev/null;; *) seen="$seen$name ";; esac
  done
}
B() { taskset -c 1 $BIN bench "$@" --brokers 127.0.0.1:19092 --memory 512K; }
p99() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); p=d.get('summary',d)['produce']['latency']; print(p['p50_ms'], p['p99_ms'], p['p999_ms'])" $1; }
mb() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(round(d.get('summary',d)['consume']['mb_per_sec']))" $1; }
start ""
for t in warm "$@"; do t=${t//\//-}; B produce --topic cold-$t --partitions 8 --producers 4 --record-size 1024 --batch-bytes 1M --max-request-bytes 8M --records 3000000 >/dev/null 2>&1; done
B consume --topic cold-warm --consumers 1 --to-end --partition-fetch-bytes 8M --json $D/w.json >/dev/null 2>&1; echo "warm-up read $(mb $D/w.json) MB/s"
for variant in "$@"; do
  b=${variant%%/*}
  stop; sync; echo 3 > /proc/sys/vm/drop_caches; start "--cold-read-budget-mb $b"
  case $variant in */nice*) renice_pool "${variant##*/nice}";; esac
  b=${variant//\//-}
  B e2e --topic alone-$b --partitions 8 --producers 2 --consumers 1 --acks all --rate $RATE --duration 10s --warmup 2s --json $D/a0.json >/dev/null 2>&1
  S $D/a.before; T0=$(awk '{print $14+$15}' /proc/$P/stat)
  B e2e --topic alone2-$b --partitions 8 --producers 2 --consumers 1 --acks all --rate $RATE --duration 10s --warmup 2s --json $D/a.json >/dev/null 2>&1
  S $D/a.after; T1=$(awk '{print $14+$15}' /proc/$P/stat)
  B consume --topic cold-$b --consumers 1 --to-end --partition-fetch-bytes 8M --json $D/c.json >/dev/null 2>&1 &
  R=$!; sleep 1
  S $D/d.before; T2=$(awk '{print $14+$15}' /proc/$P/stat)
  B e2e --topic during-$b --partitions 8 --producers 2 --consumers 1 --acks all --rate $RATE --duration 10s --warmup 0s --json $D/d.json >/dev/null 2>&1
  S $D/d.after; T3=$(awk '{print $14+$15}' /proc/$P/stat)
  wait $R
  echo "   alone ticks $((T1-T0)) $(python3 $ROOT/perf/results/cold-read-budget/stages.py $D/a.before $D/a.after)"
  echo "   during ticks $((T3-T2)) $(python3 $ROOT/perf/results/cold-read-budget/stages.py $D/d.before $D/d.after)"
  echo "budget $variant: first alone $(p99 $D/a0.json) | alone p50/p99/p999 $(p99 $D/a.json) | during $(p99 $D/d.json) | reader $(mb $D/c.json) MB/s"
done
stop; rm -rf $D
