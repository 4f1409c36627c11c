#!/bin/bash
# usage: split.sh BIN ROUNDS: client-side split of produce latency alone / during a cold catch-up
BIN=$1; ROUNDS=${2:-2}
RATE=${RATE:-390000}
D=$(cd "$(dirname "$0")"/../../.. && pwd)/target/split; rm -rf $D; mkdir -p $D
start() { taskset -c 0 $BIN serve --data-dir $D/data --listen 127.0.0.1:19092 --admin-listen 127.0.0.1:19644 --memory 2M $EXTRA >>$D/log 2>&1 & P=$!; sleep 3; }
stop() { kill $P; wait $P 2>/dev/null; }
B() { taskset -c 1 $BIN bench "$@" --brokers 127.0.0.1:19092 --cores 1 --memory 512K; }
show() { python3 -c "
import json,sys; d=json.load(open(sys.argv[1])); p=d['produce']['latency']; r=d['produce_requests']
print(sys.argv[2], 'rec p50/p99/p999 %.2f %.2f %.2f' % (p['p50_ms'],p['p99_ms'],p['p999_ms']), '| rtt p50/p99/p999 %.2f %.2f %.2f' % (r['round_trip']['p50_ms'],r['round_trip']['p99_ms'],r['round_trip']['p999_ms']), '| wait p50/p99/p999 %.2f %.2f %.2f' % (r['send_wait']['p50_ms'],r['send_wait']['p99_ms'],r['send_wait']['p999_ms']))" $1 $2; }
start
for r in $(seq $ROUNDS); do B produce --topic cold-$r --partitions 8 --producers 4 --record-size 1024 --batch-bytes 1M --max-request-bytes 8M --records 3000000 >/dev/null 2>&1; done
for r in $(seq $ROUNDS); do
  stop; sync; echo 3 > /proc/sys/vm/drop_caches; start
  B e2e --topic warm-$r --partitions 8 --producers 2 --consumers 1 --record-size 100 --acks all --rate $RATE --duration 5s --warmup 0s >/dev/null 2>&1
  curl -s http://127.0.0.1:19644/metrics > $D/a.before
  B e2e --topic alone-$r --partitions 8 --producers 2 --consumers 1 --record-size 100 --acks all --rate $RATE --duration 10s --warmup 2s --json $D/a.json >/dev/null 2>&1
  curl -s http://127.0.0.1:19644/metrics > $D/a.after
  B consume --topic cold-$r --consumers 1 --to-end --partition-fetch-bytes 8M --json $D/c.json >/dev/null 2>&1 &
  R=$!; sleep 1
  curl -s http://127.0.0.1:19644/metrics > $D/d.before
  B e2e --topic during-$r --partitions 8 --producers 2 --consumers 1 --record-size 100 --acks all --rate $RATE --duration 10s --warmup 0s --json $D/d.json >/dev/null 2>&1
  curl -s http://127.0.0.1:19644/metrics > $D/d.after
  wait $R
  show $D/a.json alone; python3 "$(dirname "$0")"/stages2.py $D/a.before $D/a.after; show $D/d.json during; python3 "$(dirname "$0")"/stages2.py $D/d.before $D/d.after
done
stop; rm -rf $D
