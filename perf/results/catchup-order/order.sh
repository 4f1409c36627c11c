#!/bin/bash
set -u
cd /work/main
T=target/release/tern
D=/work/main/target/fresh/data; rm -rf $D; mkdir -p $D
OUT=/work/exp/fresh; mkdir -p $OUT
start() { taskset -c 0 $T serve --cores 0 --listen 127.0.0.1:29092 --admin-listen 127.0.0.1:29644 --data-dir $D --memory 1M >> $OUT/broker.log 2>&1 & BP=$!; for i in $(seq 50); do (echo > /dev/tcp/127.0.0.1/29092) 2>/dev/null && break; sleep 0.1; done; }
prod() { taskset -c 1 $T bench produce --brokers 127.0.0.1:29092 --cores 1 --memory 512K --topic $1 --partitions 8 --producers 4 --record-size 1024 --batch-bytes 1M --max-request-bytes 8M --records ${RECORDS:-3000000} | tail -1; }
cons() { taskset -c 1 $T bench consume --brokers 127.0.0.1:29092 --cores 1 --memory 512K --topic $1 --consumers 1 --to-end --partition-fetch-bytes 8M | tail -1; }
sync; echo 3 > /proc/sys/vm/drop_caches; start
prod a >/dev/null
prod b >/dev/null
echo "a (older): $(cons a)"
echo "b (newer): $(cons b)"
echo "a again: $(cons a)"
kill $BP; wait $BP
rm -rf $D
