#!/bin/bash
# Issue 14's open question from issue 6: do sendfile jobs wait on EAGAIN while the client
# waits too (a lost wakeup), or is it the client's backpressure? One broker on CPU 0, a
# cold single-consumer catch-up on CPU 1, the broker's sendfile/poll calls traced.
# Run as root from anywhere: perf/results/sendfile-eagain/run.sh
# CLIENT_TRACE=1 also traces the consumer's io_uring_enter calls (slows it down).
set -u
cd "$(dirname "$0")/../../.."
T=target/release/tern
D=target/sendfile-eagain/data; rm -rf "$D"; mkdir -p "$D"
OUT=${OUT:-target/sendfile-eagain/out}; rm -rf "$OUT"; mkdir -p "$OUT"
start() {
  taskset -c 0 $T serve --cores 0 --listen 127.0.0.1:29092 --admin-listen 127.0.0.1:29644 --data-dir "$D" \
    --memory 1M >> "$OUT/broker.log" 2>&1 &
  BP=$!
  for _ in $(seq 50); do (echo > /dev/tcp/127.0.0.1/29092) 2>/dev/null && break; sleep 0.1; done
}
start
taskset -c 1 $T bench produce --brokers 127.0.0.1:29092 --cores 1 --memory 512K --topic cold --partitions 8 \
  --producers 4 --record-size 1024 --batch-bytes 1M --max-request-bytes 8M --records "${RECORDS:-3000000}" | tail -1
kill $BP; wait $BP
sync; echo 3 > /proc/sys/vm/drop_caches
start
sleep 1
strace -f -tt -T -e trace=sendfile,poll -o "$OUT/broker.strace" -p $BP &
SB=$!
sleep 1
client=(taskset -c 1 $T bench consume --brokers 127.0.0.1:29092 --cores 1 --memory 512K --topic cold --consumers 1
        --to-end --partition-fetch-bytes 8M --json "$OUT/consume.json")
if [ -n "${CLIENT_TRACE:-}" ]; then
  strace -f -tt -T -e trace=io_uring_enter -o "$OUT/client.strace" "${client[@]}" | tail -1
else
  /usr/bin/time -f "client wall %e s, user %U s, sys %S s" "${client[@]}" | tail -1
fi
kill $SB; sleep 0.5
kill $BP; wait $BP
