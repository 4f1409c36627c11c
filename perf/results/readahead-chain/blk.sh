#!/bin/bash
# usage: blk.sh BIN: block-request latency (perf block tracepoints) alone / during a cold catch-up
BIN=$1
RATE=${RATE:-390000}
D=$(cd "$(dirname "$0")"/../../.. && pwd)/target/blk; rm -rf $D; mkdir -p $D
start() { taskset -c 0 $BIN serve --data-dir $D/data --listen 127.0.0.1:19092 --admin-listen 127.0.0.1:19644 --memory 2M $EXTRA >>$D/log 2>&1 & P=$!; sleep 3; }
stop() { kill $P; wait $P 2>/dev/null; }
B() { taskset -c 1 $BIN bench "$@" --brokers 127.0.0.1:19092 --cores 1 --memory 512K; }
start
B produce --topic cold --partitions 8 --producers 4 --record-size 1024 --batch-bytes 1M --max-request-bytes 8M --records 3000000 >/dev/null 2>&1
stop; sync; echo 3 > /proc/sys/vm/drop_caches; start
B e2e --topic warm --partitions 8 --producers 2 --consumers 1 --record-size 100 --acks all --rate $RATE --duration 5s --warmup 0s >/dev/null 2>&1
B e2e --topic alone --partitions 8 --producers 2 --consumers 1 --record-size 100 --acks all --rate $RATE --duration 10s --warmup 0s --json $D/a.json >/dev/null 2>&1 &
E=$!; sleep 3; perf record -q -a -e block:block_rq_issue -e block:block_rq_complete -o $D/alone.data -- sleep 5 2>/dev/null; wait $E
B consume --topic cold --consumers 1 --to-end --partition-fetch-bytes 8M --json $D/c.json >/dev/null 2>&1 &
R=$!; sleep 1
curl -s http://127.0.0.1:19644/metrics > $D/d.before
B e2e --topic during --partitions 8 --producers 2 --consumers 1 --record-size 100 --acks all --rate $RATE --duration 10s --warmup 0s --json $D/d.json >/dev/null 2>&1 &
E=$!; sleep 3; perf record -q -a -e block:block_rq_issue -e block:block_rq_complete -o $D/during.data -- sleep 5 2>/dev/null; wait $E
curl -s http://127.0.0.1:19644/metrics > $D/d.after
wait $R
python3 "$(dirname "$0")"/stages2.py $D/d.before $D/d.after
for x in alone during; do perf script -i $D/$x.data -F time,event,trace 2>/dev/null > $D/$x.txt; echo "== $x"; python3 "$(dirname "$0")"/blklat.py $D/$x.txt; done
stop
