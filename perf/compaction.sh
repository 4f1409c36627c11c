#!/usr/bin/env bash
# The log cleaner's throughput, and produce latency with and without the cleaner running,
# in the same broker run (issue 18). Per run:
#   1. a fresh broker (one shard on $BROKER_CORES); topic `compacted` (1 partition, 64 MiB
#      segments, cleanup.policy=delete for now, so nothing is cleaned yet) filled with
#      $FILL_RECORDS records of 1 KiB over $FILL_KEYS keys;
#   2. `quiet`: a durable produce load at $RATE records/s (100-byte records, 8
#      partitions, linger 5 ms) while the cleaner is idle;
#   3. `compacted` becomes cleanup.policy=compact and the same load runs again while the
#      cleaner compacts it (`cleaning`);
#   4. once the pass is over: its duration and bytes read and written, from /metrics;
#   5. the raw disk reading the same amount with O_DIRECT (dd), for the ratio.
# CLEANER_IO (default: the broker's default budget) sets --log-cleaner-io-max-bytes-per-second.
# Writes $OUT (default perf/results/compaction): JSON per phase and run, and summary.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-perf/results/compaction}
data_dir=${DATA_DIR:-$PWD/target/perf-compaction}
source perf/common.sh
rate=${RATE:-100000}
fill_records=${FILL_RECORDS:-1000000}
fill_keys=${FILL_KEYS:-200000}
admin_port=$((port + 550))
python=${PYTHON:-$PWD/.venv/bin/python}

scrape() { curl -s "http://127.0.0.1:$admin_port/metrics" >"$1"; }
metric() { # metric FILE NAME LABEL-SUBSTRING
  awk -v name="$2" -v sub_="$3" 'index($0, name"{")==1 && index($0, sub_) {v=$NF} END {print v+0}' "$1"
}

cleaner_args=()
[ -n "${CLEANER_IO:-}" ] && cleaner_args=(--log-cleaner-io-max-bytes-per-second "$CLEANER_IO")

for run in $(seq "$runs"); do
  echo "== run $run/$runs"
  stop_broker
  rm -rf "$data_dir"
  mkdir -p "$data_dir"
  taskset -c "$broker_cores" "$broker_bin" serve --listen "127.0.0.1:$port" --data-dir "$data_dir/broker" \
    --cores "$broker_cores" --memory 2M --admin-listen "127.0.0.1:$admin_port" --log-cleaner-backoff-ms 500 \
    "${cleaner_args[@]}" >"$out/broker.log" 2>&1 &
  broker_pid=$!
  wait_for_broker
  # Filled as a delete-policy topic (7 days of retention: nothing is deleted), turned into
  # a compacted one when the `cleaning` phase starts.
  "$tern" topic --brokers "127.0.0.1:$port" create compacted --partitions 1 --config cleanup.policy=delete \
    --config segment.bytes=67108864 --config min.cleanable.dirty.ratio=0.01 >/dev/null
  taskset -c "$load_cores" "$python" perf/compaction_fill.py --brokers "127.0.0.1:$port" --topic compacted \
    --records "$fill_records" --keys "$fill_keys" | sed 's/^/  /'
  # A closing record in a fresh segment, so every filled segment is closed (cleanable).
  "$tern" topic --brokers "127.0.0.1:$port" alter-config compacted --set segment.ms=1000 >/dev/null
  sleep 1.5
  echo "last:closing record" | "$tern" produce --topic compacted --brokers "127.0.0.1:$port" --key-separator : >/dev/null
  scrape "$out/fill.run$run.metrics"

  for phase in quiet cleaning; do
    if [ "$phase" = cleaning ]; then
      "$tern" topic --brokers "127.0.0.1:$port" alter-config compacted --set cleanup.policy=compact >/dev/null
    fi
    echo "-- $phase"
    taskset -c "$load_cores" "$tern" bench produce --brokers "127.0.0.1:$port" --cores "$load_cores" --memory 512K \
      --topic "lat-$phase" --partitions 8 --producers 2 --record-size 100 --acks all --rate "$rate" --linger-ms 5 \
      --duration "${duration}s" --warmup "${warmup}s" --json "$out/$phase.run$run.json" | tail -n 1 | sed 's/^/  /'
    scrape "$out/$phase.run$run.metrics"
  done
  # Wait for the pass to finish (at most 10 minutes).
  for _ in $(seq 1200); do
    scrape "$out/after.run$run.metrics"
    [ "$(metric "$out/after.run$run.metrics" tern_partition_cleaner_passes_total 'topic="compacted"')" != 0 ] && break
    sleep 0.5
  done
  size_before=$(metric "$out/fill.run$run.metrics" tern_partition_size_bytes 'topic="compacted"')
  seg=$(ls -S "$data_dir"/broker/compacted-0/*.log | head -n 1)
  dd if="$seg" of=/dev/null bs=1M iflag=direct 2>"$out/dd.run$run.txt"
  python3 - "$out" "$run" "$size_before" <<'PY'
import json, re, sys
out, run, size_before = sys.argv[1], sys.argv[2], float(sys.argv[3])
def metric(path, name):
    for line in open(path):
        if line.startswith(name + "{") and 'topic="compacted"' in line:
            return float(line.split()[-1])
    return 0.0
after = f"{out}/after.run{run}.metrics"
read, written = metric(after, "tern_partition_cleaner_bytes_read_total"), metric(after, "tern_partition_cleaner_bytes_written_total")
seconds = metric(after, "tern_partition_cleaner_last_duration_seconds")
dd = open(f"{out}/dd.run{run}.txt").read()
m = re.search(r"([\d.]+) ([GM])B/s", dd)
dd_mb = float(m.group(1)) * (1000 if m and m.group(2) == "G" else 1) if m else 0.0
lat = {p: json.load(open(f"{out}/{p}.run{run}.json"))["produce"] for p in ("quiet", "cleaning")}
result = {
    "log_bytes_before": size_before, "log_bytes_after": metric(after, "tern_partition_size_bytes"),
    "cleaner_bytes_read": read, "cleaner_bytes_written": written, "cleaner_seconds": seconds,
    "cleaner_read_mb_per_sec": read / seconds / 1e6 if seconds else 0,
    "cleaner_io_mb_per_sec": (read + written) / seconds / 1e6 if seconds else 0,
    "dd_direct_read_mb_per_sec": dd_mb,
    "records_removed": metric(after, "tern_partition_cleaner_records_removed_total"),
    "quiet": lat["quiet"]["latency"] | {"records_per_sec": lat["quiet"]["records_per_sec"]},
    "cleaning": lat["cleaning"]["latency"] | {"records_per_sec": lat["cleaning"]["records_per_sec"]},
}
json.dump(result, open(f"{out}/result.run{run}.json", "w"), indent=1)
print(f"  cleaner: {read/1e6:.0f} MB read, {written/1e6:.0f} MB written in {seconds:.1f} s "
      f"({result['cleaner_io_mb_per_sec']:.0f} MB/s of I/O); log {size_before/1e6:.0f} -> {result['log_bytes_after']/1e6:.0f} MB; dd {dd_mb:.0f} MB/s")
print(f"  produce p99 quiet {lat['quiet']['latency']['p99_ms']:.2f} ms, while cleaning {lat['cleaning']['latency']['p99_ms']:.2f} ms")
PY
done
stop_broker
python3 - "$out" "$runs" <<'PY' | tee "$out/summary.txt"
import json, statistics, sys
out, runs = sys.argv[1], int(sys.argv[2])
results = [json.load(open(f"{out}/result.run{r}.json")) for r in range(1, runs + 1)]
med = lambda f: statistics.median(f(r) for r in results)
print(f"runs: {runs} (medians)")
print(f"log before/after: {med(lambda r: r['log_bytes_before'])/1e6:.0f} MB -> {med(lambda r: r['log_bytes_after'])/1e6:.0f} MB, "
      f"records removed {med(lambda r: r['records_removed']):.0f}")
print(f"cleaner: {med(lambda r: r['cleaner_seconds']):.1f} s, read {med(lambda r: r['cleaner_read_mb_per_sec']):.0f} MB/s, "
      f"read+write {med(lambda r: r['cleaner_io_mb_per_sec']):.0f} MB/s; raw disk O_DIRECT read (dd) {med(lambda r: r['dd_direct_read_mb_per_sec']):.0f} MB/s")
for q in ("p50_ms", "p99_ms", "p999_ms", "max_ms"):
    quiet, cleaning = med(lambda r: r["quiet"][q]), med(lambda r: r["cleaning"][q])
    print(f"produce {q[:-3]}: quiet {quiet:.2f} ms, while cleaning {cleaning:.2f} ms ({cleaning/quiet:.2f}x)")
PY
