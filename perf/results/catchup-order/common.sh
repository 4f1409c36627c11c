# Shared by fresh.sh, slab.sh and order.sh (sourced): one broker on CPU 0, the load tool
# on CPU 1, 3 GB topics of 1 KiB records. Run the scripts as root from anywhere.
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/../../.."
T=target/release/tern
D=target/catchup-order/data; rm -rf "$D"; mkdir -p "$D"
OUT=${OUT:-target/catchup-order}; mkdir -p "$OUT"
start() {
  taskset -c 0 $T serve --cores 0 --listen 127.0.0.1:29092 --admin-listen 127.0.0.1:29644 --data-dir "$D" \
    --memory 1M >> "$OUT/broker.log" 2>&1 &
  BP=$!
  for _ in $(seq 50); do (echo > /dev/tcp/127.0.0.1/29092) 2>/dev/null && break; sleep 0.1; done
}
stop() { kill $BP; wait $BP; }
prod() {
  taskset -c 1 $T bench produce --brokers 127.0.0.1:29092 --cores 1 --memory 512K --topic "$1" --partitions 8 \
    --producers 4 --record-size 1024 --batch-bytes 1M --max-request-bytes 8M --records "${RECORDS:-3000000}" | tail -1
}
cons() {
  taskset -c 1 $T bench consume --brokers 127.0.0.1:29092 --cores 1 --memory 512K --topic "$1" --consumers 1 \
    --to-end --partition-fetch-bytes 8M | tail -1
}
