#!/usr/bin/env bash
# The durable-latency and CPU suite (issue 14): produce latency at fixed shares of the
# peak, each beside a raw-disk baseline with the same pattern measured in the same run,
# per-stage latency from the broker's /metrics, broker CPU per record, the relaxed mode
# at the same rates, produce latency while a consumer catches up from cold disk, and the
# idle broker with 100 partitions and 10 connected clients.
#
#   perf/latency.sh                      # broker on cpu 0, load on cpu 1, 3 runs of 10 s
#   RUNS=1 DURATION=5 perf/latency.sh    # a quick look
#   BROKER_BIN=/path/to/tern perf/latency.sh
#   STEADY=1 perf/latency.sh             # the steady state of a broker with retention
#
# STEADY=1: the durable and relaxed scenarios write to one topic, `steady`, with 32 MiB
# segments and retention.bytes 64 MiB per partition, after an unmeasured 8-s warm-up at
# full speed; retention runs every second. Every partition then rolls and deletes
# segments all the time, so new segments are written into deleted segments' files
# (segment recycling, `--recycle-segments`), as on a broker that has run for longer
# than its retention. Consumers of the e2e scenarios start at the end (`--from latest`).
# BROKER_FLAGS adds flags to every broker (e.g. `--recycle-segments false`).
#
# Scenarios (100-byte records, acks=all, 8 partitions, 2 producers, default 16 KiB
# batches, as a Java client sends them):
#   peak                  as fast as possible: the peak the shares are taken of
#   e2e-{10,25,50,75}     fixed rate at that share of the peak, 1 consumer tailing
#   disk-{10,...}         raw disk (perf/machine.py disk-pattern) with the broker's own
#                         pattern in that scenario: 8 files, its average write size
#                         (rounded up to 4 KiB, as O_DIRECT writes whole blocks), its
#                         write rate; once with fdatasync after each write, once O_DSYNC
#   relaxed-peak, relaxed-e2e-*   the same with --flush-interval-ms 1000 (acknowledged
#                         before fsync, Kafka's default durability)
#   catchup-alone, catchup-during  e2e at 10% alone / while one consumer reads 1 KiB
#                         records from cold disk (both after a restart, a page-cache drop
#                         and an unmeasured warm-up run); the reader's own throughput is
#                         catchup-during-read (cold reads keep to --cold-read-budget-mb)
#   disk-catchup-{alone,reader}  raw disk with the broker's write pattern during the
#                         catch-up (O_DSYNC), alone and beside a reader paced as Tern
#                         paces one (perf/machine.py disk-pattern --read-files)
#   catchup-read-first, catchup-read-fresh, catchup-read, dd-buffered   one consumer's
#                         throughput: the first read after producing, a read right after
#                         producing, a read after a restart and a page-cache drop; and a
#                         buffered `dd` of segment files after a page-cache drop. Each
#                         reads files never read before (five topics)
#   idle                  broker CPU over 10 s with 100 partitions and 10 idle clients
#
# Around every scenario: the broker's CPU (its process: shard threads, io_uring workers),
# the load tool's, and the kernel work queues' (kworker threads, where direct-I/O
# completions and their O_DSYNC flushes run, outside the broker's process).
#
# Writes perf/results/latency-<UTC time>/ and prints the summary (perf/latency_report.py).
set -euo pipefail
cd "$(dirname "$0")/.."

data_dir=${DATA_DIR:-$PWD/target/perf-latency-data}
out=${OUT:-perf/results/latency-$(date -u +%Y%m%dT%H%M%SZ)}
admin_port=$((${PORT:-19092} + 1))
source perf/common.sh

steady=${STEADY:-0}
read -r -a broker_flags <<<"${BROKER_FLAGS:-}"
tail_from=()
if [ "$steady" = 1 ]; then
  broker_flags+=(--retention-check-interval-ms 1000)
  tail_from=(--from latest)
fi
# The topic a durable or relaxed scenario writes to.
topic_for() { if [ "$steady" = 1 ]; then echo steady; else echo "$1"; fi; }
# STEADY=1: creates the steady topic and fills it past its retention, unmeasured.
steady_warmup() {
  [ "$steady" = 1 ] || return 0
  "$tern" topic create steady --partitions 8 --brokers "127.0.0.1:$port" \
    --config segment.bytes=33554432 --config retention.bytes=67108864 >/dev/null
  taskset -c "$load_cores" "$tern" bench produce --brokers "127.0.0.1:$port" --cores "$load_cores" --memory 512K \
    --topic steady --duration 8s --warmup 0s --partitions 8 --producers 2 --record-size 100 --acks all \
    | tail -n 1 | sed 's/^/  warm-up: /'
}

python3 perf/machine.py "$data_dir/machine" "$out/machine.json" >/dev/null

start_broker() { # extra flags...
  taskset -c "$broker_cores" "$broker_bin" serve --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin_port" \
    --data-dir "$data_dir/broker" --cores "$broker_cores" --memory 2M ${broker_flags[@]+"${broker_flags[@]}"} "$@" \
    >>"$out/broker.log" 2>&1 &
  broker_pid=$!
  wait_for_broker
}

fresh_broker() {
  stop_broker
  rm -rf "$data_dir/broker"
  start_broker "$@"
}

ticks() { awk '{print $14 + $15}' "/proc/$broker_pid/stat"; }
# CPU ticks of the kernel's work queues (every kworker thread): direct-I/O completions,
# their O_DSYNC flushes and the conversion of fallocated extents run there, outside the
# broker's process, on whichever core the completion lands. Nothing else on this machine
# keeps them busy (0 ticks over 12 s idle).
# Per thread, since kworkers come and go: one that exits during a scenario takes its
# ticks with it (a total taken before and after could even fall), one that starts counts
# all of its own.
kworker_snapshot() { cat /proc/[0-9]*/stat 2>/dev/null | awk '$2 ~ /^\(kworker/ {print $1, $14 + $15}' >"$1"; }
kworker_delta() { # BEFORE AFTER
  awk 'NR == FNR {before[$1] = $2; next} {d = $2 - before[$1]; if (d > 0) s += d} END {print s + 0}' "$1" "$2"
}
# "total idle" jiffies of one CPU (idle includes iowait); nothing if $1 is not one CPU.
core_stat() { awk -v c="cpu$1" '$1 == c {t = 0; for (i = 2; i <= NF; i++) t += $i; print t, $5 + $6}' /proc/stat; }
scrape() { curl -s "http://127.0.0.1:$admin_port/metrics" >"$1"; }

# bench NAME RUN ARGS...: one measured scenario, with broker CPU and /metrics around it.
bench() {
  local name=$1 run=$2
  shift 2
  echo "-- $name (run $run/$runs)"
  scrape "$out/$name.run$run.before.metrics"
  local t0 c0 t1 c1 kworker
  t0=$(date +%s.%N)
  c0=$(ticks)
  kworker_snapshot "$out/.kworkers.before"
  local load_core0 load_core1
  load_core0=$(core_stat "$load_cores")
  # The load tool's own CPU (user + system seconds) tells whether the load core, not the
  # broker, bounds a scenario.
  local TIMEFORMAT="%U %S"
  { time taskset -c "$load_cores" "$tern" bench "$@" --brokers "127.0.0.1:$port" --cores "$load_cores" --memory 512K \
    --json "$out/$name.run$run.json" | tail -n 1 | sed 's/^/  /' ; } 2>"$out/$name.run$run.loadcpu"
  c1=$(ticks)
  load_core1=$(core_stat "$load_cores")
  kworker_snapshot "$out/.kworkers.after"
  kworker=$(kworker_delta "$out/.kworkers.before" "$out/.kworkers.after")
  t1=$(date +%s.%N)
  scrape "$out/$name.run$run.after.metrics"
  # The load core's whole busy share (the tool, the kernel workers and interrupts that
  # land there), from /proc/stat.
  python3 -c "import json,sys; busy=lambda a, b: (lambda x, y: round(100 - 100 * (y[1] - x[1]) / (y[0] - x[0]), 1) if len(x) == 2 and len(y) == 2 and y[0] > x[0] else None)([int(v) for v in a.split()], [int(v) for v in b.split()]); w=float(sys.argv[4])-float(sys.argv[3]); load=sum(float(x) for x in open(sys.argv[7]).read().split()[-2:]); json.dump({'cpu_percent': (int(sys.argv[2])-int(sys.argv[1]))/int(sys.argv[5])/w*100, 'load_cpu_percent': load/w*100, 'kworker_cpu_percent': int(sys.argv[8])/int(sys.argv[5])/w*100, 'seconds': w, 'load_core_busy_percent': busy(sys.argv[9], sys.argv[10])}, open(sys.argv[6],'w'))" \
    "$c0" "$c1" "$t0" "$t1" "$(getconf CLK_TCK)" "$out/$name.run$run.cpu.json" "$out/$name.run$run.loadcpu" "$kworker" \
    "$load_core0" "$load_core1"
}

# disk_baseline SCENARIO RUN: the raw disk with the pattern the broker had in SCENARIO.
disk_baseline() {
  local name=$1 run=$2 pattern
  pattern=$(python3 perf/latency_report.py --pattern "$out/$name.run$run.before.metrics" "$out/$name.run$run.after.metrics" "$out/$name.run$run.cpu.json")
  read -r write_bytes rate_bytes <<<"$pattern"
  for mode in fdatasync dsync; do
    taskset -c "$broker_cores" python3 perf/machine.py disk-pattern "$data_dir/disk" \
      "$out/disk-${name#e2e-}-$mode.run$run.json" --files 8 --write-bytes "$write_bytes" --rate-bytes "$rate_bytes" \
      --seconds 5 --mode "$mode" | sed 's/^/  disk: /'
  done
}

e2e_args=(--partitions 8 --producers 2 --consumers 1 --record-size 100 --acks all)

for run in $(seq "$runs"); do
  echo "== run $run/$runs: durable (default)"
  fresh_broker
  steady_warmup
  bench peak "$run" produce --topic "$(topic_for peak)" --duration "${duration}s" --warmup "${warmup}s" --partitions 8 --producers 2 \
    --record-size 100 --acks all
  peak=$(python3 -c "import json,sys; print(int(json.load(open(sys.argv[1]))['produce']['records_per_sec']))" "$out/peak.run$run.json")
  for share in 10 25 50 75; do
    bench "e2e-$share" "$run" e2e --topic "$(topic_for "e2e$share")" --duration "${duration}s" --warmup "${warmup}s" \
      "${e2e_args[@]}" ${tail_from[@]+"${tail_from[@]}"} --rate $((peak * share / 100))
    disk_baseline "e2e-$share" "$run"
  done
  # CPU at a fixed 100 k records/s (10 MB/s): linger.ms 0 (a request per batch) and 5
  # (librdkafka's and Kafka 4.0's default).
  for linger in 0 5; do
    bench "cpu100k-l$linger" "$run" produce --topic "$(topic_for "cpu$linger")" --duration "${duration}s" --warmup "${warmup}s" \
      --partitions 8 --producers 2 --record-size 100 --acks all --rate 100000 --linger-ms "$linger"
  done

  echo "== run $run/$runs: relaxed (--flush-interval-ms 1000)"
  fresh_broker --flush-interval-ms 1000
  steady_warmup
  bench relaxed-peak "$run" produce --topic "$(topic_for peak)" --duration "${duration}s" --warmup "${warmup}s" --partitions 8 \
    --producers 2 --record-size 100 --acks all
  for share in 10 25 50 75; do
    bench "relaxed-e2e-$share" "$run" e2e --topic "$(topic_for "e2e$share")" --duration "${duration}s" \
      --warmup "${warmup}s" "${e2e_args[@]}" ${tail_from[@]+"${tail_from[@]}"} --rate $((peak * share / 100))
  done
  for linger in 0 5; do
    bench "relaxed-cpu100k-l$linger" "$run" produce --topic "$(topic_for "cpu$linger")" --duration "${duration}s" \
      --warmup "${warmup}s" --partitions 8 --producers 2 --record-size 100 --acks all --rate 100000 --linger-ms "$linger"
  done

  echo "== run $run/$runs: catch-up from cold disk"
  fresh_broker
  # Five topics of about 3 GB of 1 KiB records each, so that every read below is the
  # first read of its files: on a VM a file read a second time can come from the host's
  # cache (a re-read here ran 2-3.5x faster than the first read, in the same broker).
  for topic in cold-first cold-fresh cold-restart cold-during cold-dd; do
    taskset -c "$load_cores" "$tern" bench produce --brokers "127.0.0.1:$port" --cores "$load_cores" --memory 512K \
      --topic "$topic" --partitions 8 --producers 4 --record-size 1024 --batch-bytes 1M --max-request-bytes 8M \
      --records 3000000 | tail -n 1 | sed 's/^/  /'
  done
  # On this VM the first read after a burst of writes runs at about half speed, whatever
  # it reads, across restarts and drop_caches: an order effect below the guest
  # (perf/README.md, results/catchup-order/). This read takes it, and is reported as the
  # first read; the reads measured below all come after it.
  bench catchup-read-first "$run" consume --topic cold-first --consumers 1 --to-end --partition-fetch-bytes 8M
  # Right after producing: O_DIRECT writes left nothing in the page cache.
  bench catchup-read-fresh "$run" consume --topic cold-fresh --consumers 1 --to-end --partition-fetch-bytes 8M
  stop_broker
  sync
  echo 3 >/proc/sys/vm/drop_caches
  cat "$data_dir"/broker/cold-dd-*/*.log | dd of=/dev/null bs=1M 2>"$out/dd-buffered.run$run.txt"
  tail -n 1 "$out/dd-buffered.run$run.txt" | sed 's/^/  dd buffered: /'
  echo 3 >/proc/sys/vm/drop_caches
  start_broker
  # After a restart and drop_caches, with no writes: the consumer alone.
  bench catchup-read "$run" consume --topic cold-restart --consumers 1 --to-end --partition-fetch-bytes 8M
  # Produce latency alone, then while a consumer catches up, both after the restart. The
  # first seconds of produce after a restart and drop_caches fault code and metadata back
  # in (p99 4-38 ms in a first 12-s run, 2.2-2.4 ms in the next): one unmeasured run first.
  taskset -c "$load_cores" "$tern" bench e2e --brokers "127.0.0.1:$port" --cores "$load_cores" --memory 512K \
    --topic warm --duration 5s --warmup 0s "${e2e_args[@]}" --rate $((peak / 10)) >/dev/null
  bench catchup-alone "$run" e2e --topic alone --duration "${duration}s" --warmup "${warmup}s" "${e2e_args[@]}" \
    --rate $((peak / 10))
  taskset -c "$load_cores" "$tern" bench consume --brokers "127.0.0.1:$port" --cores "$load_cores" --memory 512K \
    --topic cold-during --consumers 1 --to-end --partition-fetch-bytes 8M --json "$out/catchup-during-read.run$run.json" \
    | tail -n 1 | sed 's/^/  catch-up during produce: /' &
  reader=$!
  sleep 1
  bench catchup-during "$run" e2e --topic during --duration "${duration}s" --warmup 0s "${e2e_args[@]}" \
    --rate $((peak / 10))
  wait "$reader" || true
  # The raw disk under the catch-up's pattern: the broker's writes during the catch-up
  # (8 files, its write size and rate, O_DSYNC), alone and beside one reader paced as
  # Tern paces a catch-up (one 256 KiB read at a time, readahead off, 50 MB/s) of the
  # cold-dd topic's files (dropped from the page cache file by file: a global drop_caches
  # here made the next writes wait for ext4 to read its allocation metadata again, p99
  # 19-320 ms in the first run after it).
  read -r write_bytes rate_bytes <<<"$(python3 perf/latency_report.py --pattern "$out/catchup-during.run$run.before.metrics" \
    "$out/catchup-during.run$run.after.metrics" "$out/catchup-during.run$run.cpu.json")"
  for with in alone reader; do
    read_args=()
    if [ "$with" = reader ]; then read_args=(--read-files "$data_dir"/broker/cold-dd-*/*.log); fi
    taskset -c "$broker_cores" python3 perf/machine.py disk-pattern "$data_dir/disk" \
      "$out/disk-catchup-$with-dsync.run$run.json" --files 8 --write-bytes "$write_bytes" --rate-bytes "$rate_bytes" \
      --seconds 5 --mode dsync "${read_args[@]}" | sed "s/^/  disk ($with): /"
  done
done

echo "== idle: 100 partitions, 10 idle clients"
fresh_broker
"$tern" topic create idle --partitions 100 --brokers "127.0.0.1:$port" >/dev/null
python3 - "$port" "$out/idle.json" "$broker_pid" <<'EOF'
import json, os, socket, struct, sys, time
port, out, pid = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
clients = []
for i in range(10):
    s = socket.create_connection(("127.0.0.1", port))
    # ApiVersions v0, then stay connected and silent.
    body = struct.pack(">hhih", 18, 0, i, 4) + b"idle"
    s.sendall(struct.pack(">i", len(body)) + body)
    s.recv(65536)
    clients.append(s)
time.sleep(2)
ticks = lambda: sum(int(x) for x in open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[11:13])
before = ticks()
time.sleep(10)
after = ticks()
hz = os.sysconf("SC_CLK_TCK")
json.dump({"cpu_percent": (after - before) / hz / 10 * 100, "clients": len(clients), "partitions": 100}, open(out, "w"))
print(f"  idle: {(after - before) / hz / 10 * 100:.2f}% of a core")
EOF
stop_broker

python3 perf/latency_report.py "$out"
echo "results in $out"
