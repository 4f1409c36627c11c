#!/bin/bash
# Produce latency (e2e at RATE, default 400 k records/s) alone and while one consumer
# catches up from cold disk, for each VARIANT, after a restart and drop_caches:
#   normal        the broker's defaults
#   niceN         the broker's sendfile pool threads (every tern-shard-0-1 thread but the
#                 shard's own) reniced to N
#   budgetN       --cold-read-budget-mb N
# usage (from the project root, as root): perf/results/cold-read-budget/nice_ab.sh BIN VARIANT...
# (perf/README.md, "Catch-up reads while producing: the budget's level")
BIN=$1; shift
RATE=${RATE:-400000}
D=${D:-target/nice-ab}; rm -rf $D; mkdir -p $D
start() { taskset -c 0 $BIN serve $EXTRA --data-dir $D/data --listen 127.0.0.1:19092 --admin-listen 127.0.0.1:19644 --cores 0 --memory 2M >>$D/log 2>&1 & P=$!; sleep 3; }
renice_pool() { local n=$1; local first=1; for t in $(ls /proc/$P/task | sort -n); do c=$(cat /proc/$P/task/$t/comm); if [ "$c" = "tern-shard-0-1" ]; then if [ $first = 1 ]; then first=0; else renice -n $n -p $t >/dev/null; fi; fi; done; }
S() { curl -s http://127.0.0.1:19644/metrics > $1; }
stop() { kill $P; wait $P 2>/dev/null; }
B() { taskset -c 1 "${LOAD_BIN:-target/release/tern}" bench "$@" --brokers 127.0.0.1:19092 --cores 1 --memory 512K; }
p99() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); p=d.get('summary',d)['produce']['latency']; print(p['p50_ms'], p['p99_ms'], p['p999_ms'])" $1; }
mb() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(round(d.get('summary',d)['consume']['mb_per_sec']))" $1; }
start
i=0; for v in warm "$@"; do i=$((i+1)); B produce --topic cold-$i --partitions 8 --producers 4 --record-size 1024 --batch-bytes 1M --max-request-bytes 8M --records 3000000 >/dev/null 2>&1; done
B consume --topic cold-1 --consumers 1 --to-end --partition-fetch-bytes 8M --json $D/w.json >/dev/null 2>&1; echo "warm-up read $(mb $D/w.json) MB/s"
i=1; for v in "$@"; do i=$((i+1))
  stop; sync; echo 3 > /proc/sys/vm/drop_caches
  case $v in budget*) EXTRA="--cold-read-budget-mb ${v#budget}";; *) EXTRA="";; esac
  start
  case $v in nice*) renice_pool ${v#nice};; esac
  B e2e --topic warm-$i --partitions 8 --producers 2 --consumers 1 --acks all --rate $RATE --duration 5s --warmup 0s >/dev/null 2>&1
  S $D/a.before; T0=$(awk '{print $14+$15}' /proc/$P/stat)
  B e2e --topic alone-$i --partitions 8 --producers 2 --consumers 1 --acks all --rate $RATE --duration 10s --warmup 2s --json $D/a.json >/dev/null 2>&1
  S $D/a.after; T1=$(awk '{print $14+$15}' /proc/$P/stat)
  B consume --topic cold-$i --consumers 1 --to-end --partition-fetch-bytes 8M --json $D/c.json >/dev/null 2>&1 &
  R=$!; sleep 1
  S $D/d.before; T2=$(awk '{print $14+$15}' /proc/$P/stat)
  B e2e --topic during-$i --partitions 8 --producers 2 --consumers 1 --acks all --rate $RATE --duration 10s --warmup 0s --json $D/d.json >/dev/null 2>&1
  S $D/d.after; T3=$(awk '{print $14+$15}' /proc/$P/stat)
  wait $R
  echo "$v: alone p50/p99/p999 $(p99 $D/a.json) | during $(p99 $D/d.json) | reader $(mb $D/c.json) MB/s"
  echo "   alone ticks $((T1-T0)) $(python3 "$(dirname "$0")"/stages.py $D/a.before $D/a.after)"
  echo "   during ticks $((T3-T2)) $(python3 "$(dirname "$0")"/stages.py $D/d.before $D/d.after)"
done
stop; rm -rf $D
