#!/usr/bin/env bash
# The end-to-end performance suite: the machine's raw figures, then the standard
# scenarios with `tern serve` pinned to one set of cores and `tern bench` to the others.
#
#   perf/suite.sh                                   # broker on cpu 0, load on cpu 1
#   BROKER_CORES=0-3 LOAD_CORES=4-7 DURATION=30 RUNS=3 perf/suite.sh
#   DATA_DIR=/mnt/nvme/tern perf/suite.sh           # put the log on the disk under test
#   BROKER_BIN=/path/to/older/tern perf/suite.sh    # same load tool, another broker build
#   SCENARIOS="consume e2e" perf/suite.sh           # a subset (produce, consume, e2e)
#
# Scenarios (each RUNS times; medians reported):
#   produce-100b-acks-all   100-byte records, acks=all (durable: acknowledged after fdatasync)
#   produce-1k-acks-all     1 KiB records, acks=all
#   produce-100b-acks-1     100-byte records, acks=1 (same durability on a single node)
#   consume-catchup-{1,4}   the 1 KiB scenario's data read back from disk, after a broker
#                           restart and a page-cache drop (when permitted), 1 and 4 consumers
#   e2e-rate-{10,25,50,75}  fixed-rate produce + tailing consumers at that share of the
#                           100-byte peak: produce and produce-to-consume latency
#   idle                    broker CPU over 10 s with no clients
#
# Writes perf/results/suite-<UTC time>/: machine.json, one JSON per scenario run,
# summary.json, summary.csv, summary.md (the table for perf/README.md), and plots
# (throughput-over-time.png, latency-vs-rate.png).
set -euo pipefail
cd "$(dirname "$0")/.."

data_dir=${DATA_DIR:-$PWD/target/perf-suite-data}
out=${OUT:-perf/results/suite-$(date -u +%Y%m%dT%H%M%SZ)}
source perf/common.sh
if [ ! -x target/perf-venv/bin/python ]; then
  python3 -m venv target/perf-venv
  target/perf-venv/bin/pip install --quiet -r perf/requirements.txt
fi
py=target/perf-venv/bin/python
echo "locked memory limit: $(ulimit -l) KiB"

echo "== machine"
rm -rf "$data_dir"
mkdir -p "$data_dir"
python3 perf/machine.py "$data_dir" "$out/machine.json" | sed 's/^/  /'

start_broker() {
  local admin=()
  "$broker_bin" serve --help | grep -q -- --admin-listen && admin=(--admin-listen off)
  "$broker_bin" serve "${admin[@]}" --listen "127.0.0.1:$port" --data-dir "$data_dir/broker" --cores "$broker_cores" \
    --memory 2M >>"$out/broker.log" 2>&1 &
  broker_pid=$!
  wait_for_broker
}

want() { [[ " ${SCENARIOS:-produce consume e2e} " == *" $1 "* ]]; }

bench() { # scenario-name run-number bench-args...
  local name=$1 run=$2
  shift 2
  echo "-- $name (run $run/$runs)"
  "$tern" bench "$@" --brokers "127.0.0.1:$port" --cores "$load_cores" --memory 512K \
    --json "$out/$name.run$run.json" | tail -n 4 | sed 's/^/  /'
}

fresh_broker() {
  stop_broker
  rm -rf "$data_dir/broker"
  start_broker
}

for run in $(seq "$runs"); do
  echo "== run $run/$runs"
  fresh_broker
  common=(--duration "${duration}s" --warmup "${warmup}s" --partitions 8 --producers 4 --max-request-bytes 8M)
  # The consume and e2e scenarios need the 100-byte and 1 KiB data and peak: always run
  # those; the acks=1 scenario only when produce is selected.
  bench produce-100b-acks-all "$run" produce --topic p100 "${common[@]}" --record-size 100 --batch-bytes 256K --acks all
  want produce && bench produce-100b-acks-1 "$run" produce --topic p100a1 "${common[@]}" --record-size 100 --batch-bytes 256K --acks 1
  bench produce-1k-acks-all "$run" produce --topic p1k "${common[@]}" --record-size 1024 --batch-bytes 1M --acks all

  if want consume; then
    # Catch-up: everything the 1 KiB scenario wrote, read from disk by a restarted broker.
    stop_broker
    sync
    echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || echo "  (cannot drop the page cache; reads may hit it)"
    start_broker
    bench consume-catchup-1 "$run" consume --topic p1k --consumers 1 --to-end --partition-fetch-bytes 8M
    stop_broker
    sync
    echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
    start_broker
    bench consume-catchup-4 "$run" consume --topic p1k --consumers 4 --to-end --partition-fetch-bytes 8M
  fi

  # Latency at fixed shares of this run's 100-byte peak.
  peak=$("$py" -c "import json,sys; print(int(json.load(open(sys.argv[1]))['produce']['records_per_sec']))" \
    "$out/produce-100b-acks-all.run$run.json")
  want e2e || continue
  for share in 10 25 50 75; do
    rate=$((peak * share / 100))
    bench "e2e-rate-$share" "$run" e2e --topic "e2e$share" --duration "${duration}s" --warmup "${warmup}s" \
      --partitions 8 --producers 4 --consumers 2 --record-size 100 --batch-bytes 256K --max-request-bytes 8M \
      --rate "$rate" --acks all
  done
done

echo "== idle broker CPU (10 s, no clients)"
fresh_broker
sleep 2
ticks() { awk '{print $14 + $15}' "/proc/$broker_pid/stat"; }
before=$(ticks)
sleep 10
after=$(ticks)
hz=$(getconf CLK_TCK)
"$py" -c "import json,sys; json.dump({'cpu_percent': (int(sys.argv[2]) - int(sys.argv[1])) / int(sys.argv[3]) / 10 * 100}, open(sys.argv[4], 'w'))" \
  "$before" "$after" "$hz" "$out/idle.json"
echo "  idle: $(cat "$out/idle.json")"
stop_broker

echo "== summary"
"$py" perf/suite_report.py "$out" --broker-cores "$broker_cores" --load-cores "$load_cores"
echo "results in $out"
