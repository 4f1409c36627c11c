#!/bin/bash
# One broker (BROKER_BIN) on CPU 0, the e2e scenario of perf/latency.sh STEADY=1 at RATE from TOOL_BIN on CPU 1, RUNS times,
# after an 8-s warm-up at full speed on the steady topic; per run: records/s, produce p99, request round trip, time records waited for a request slot.
# usage: e2e_ab.sh BROKER_BIN TOOL_BIN RATE RUNS
B=$1; T=$2; R=$3; N=${4:-3}
D=$(mktemp -d -p "$(cd "$(dirname "$0")/../../.." && pwd)/target")
taskset -c 0 $B serve --data-dir $D/data --listen 127.0.0.1:19092 --admin-listen 127.0.0.1:19644 --cores 0 --memory 2M --retention-check-interval-ms 1000 >$D/log 2>&1 &
P=$!; sleep 2
$T topic create steady --partitions 8 --brokers 127.0.0.1:19092 --config segment.bytes=33554432 --config retention.bytes=67108864 >/dev/null
taskset -c 1 $T bench produce --brokers 127.0.0.1:19092 --cores 1 --memory 512K --topic steady --duration 8s --warmup 0s --partitions 8 --producers 2 --record-size 100 --acks all >/dev/null 2>&1
for i in $(seq $N); do
taskset -c 1 $T bench e2e --brokers 127.0.0.1:19092 --cores 1 --memory 512K --topic steady --duration 10s --warmup 2s --partitions 8 --producers 2 --consumers 1 --record-size 100 --acks all --rate $R --from latest --json $D/o.json >/dev/null 2>&1
python3 - $D/o.json "$(basename $B)/$(basename $T)" <<'PY'
import json,sys
d=json.load(open(sys.argv[1])); d=d.get('summary',d); p=d['produce']; pr=d['produce_requests']
print(sys.argv[2], round(p['records_per_sec']), 'p99', p['latency']['p99_ms'], 'rt avg', round(pr['round_trip']['avg_ms'],3), 'send_wait avg', round(pr['send_wait']['avg_ms'],3), 'p99', pr['send_wait']['p99_ms'])
PY
done
kill $P; wait $P 2>/dev/null; rm -rf $D
