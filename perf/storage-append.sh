#!/usr/bin/env bash
# Durable append throughput of the storage engine beside the raw O_DIRECT bandwidth of the
# same file system, measured in the same run.
#
#   perf/storage-append.sh            # 3 runs, data under target/perf-data
#   RUNS=5 TERN_BENCH_DIR=/mnt/nvme/x perf/storage-append.sh
#
# Each run: dd (O_DIRECT, 2 GiB, 1 MiB blocks; once without and once with a final
# fdatasync), then the criterion benchmark `append_durable` (16 KiB and 1 MiB batches,
# 1/32/128 appends in flight, every append acknowledged after fdatasync). Prints the
# medians over runs and each append figure as a share of the median raw bandwidth, and
# writes them to perf/results/storage-append.json.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-3}
data_dir=${TERN_BENCH_DIR:-$PWD/target/perf-data}
mkdir -p "$data_dir" perf/results
export TERN_BENCH_DIR=$data_dir
results=$(mktemp -d)
trap 'rm -rf "$results" "$data_dir/dd.tmp"' EXIT

echo "machine: $(nproc) cpus, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r)"
echo "data dir: $data_dir ($(df -T "$data_dir" | awk 'NR==2 {print $2 " on " $1}'))"

dd_mib_s() { # prints MiB/s of one dd run; extra dd flags in $@
  dd if=/dev/zero of="$data_dir/dd.tmp" bs=1M count=2048 oflag=direct "$@" 2>&1 \
    | awk '/copied/ {printf "%.1f\n", $1 / $(NF-3) / 1048576}'
  rm -f "$data_dir/dd.tmp"
}

for run in $(seq 1 "$runs"); do
  echo "run $run/$runs: dd"
  dd_mib_s >>"$results/dd_direct"
  dd_mib_s conv=fdatasync >>"$results/dd_direct_fdatasync"
  echo "run $run/$runs: cargo bench append_durable"
  cargo bench --quiet --bench storage -- append_durable --noplot >/dev/null 2>&1
  python3 - "$results" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
for bench in pathlib.Path("target/criterion/append_durable").glob("*/*/new"):
    info = json.loads((bench / "benchmark.json").read_text())
    est = json.loads((bench / "estimates.json").read_text())
    nbytes = info["throughput"]["Bytes"]
    mib_s = nbytes / (est["median"]["point_estimate"] / 1e9) / 1048576
    name = f'{bench.parent.parent.name}_inflight{bench.parent.name}'
    with open(out / name, "a") as f:
        f.write(f"{mib_s:.1f}\n")
PY
done

python3 - "$results" "$runs" <<'PY'
import json, pathlib, statistics, sys, platform, os
out = pathlib.Path(sys.argv[1])
series = {p.name: [float(x) for x in p.read_text().split()] for p in out.iterdir()}
med = {k: statistics.median(v) for k, v in series.items()}
raw = med["dd_direct"]
print(f"\n{'scenario':34} {'median MiB/s':>12} {'% of dd O_DIRECT':>17}   runs")
for name in sorted(series, key=lambda n: (not n.startswith("dd"), n)):
    share = f"{100 * med[name] / raw:.0f}%" if not name.startswith("dd") else "-"
    print(f"{name:34} {med[name]:12.1f} {share:>17}   {series[name]}")
report = {
    "machine": {"nproc": os.cpu_count(), "kernel": platform.release()},
    "runs": int(sys.argv[2]),
    "median_mib_s": med,
    "share_of_dd_direct": {k: med[k] / raw for k in med if not k.startswith("dd")},
    "all_runs_mib_s": series,
}
pathlib.Path("perf/results/storage-append.json").write_text(json.dumps(report, indent=2) + "\n")
PY
