#!/usr/bin/env python3
"""Transactional produce vs idempotent produce on one standalone broker (issue 17).

Starts `tern serve` (one shard, pinned to CPU 0, durable defaults) and runs
`tern bench produce` pinned to CPU 1 (8 partitions, acks=all, 100-byte records, 16 KiB
batches, 2 producer lanes, 10 s after 2 s of warm-up) in these modes, interleaved,
--runs times each:

- idempotent: `--idempotent` (a producer id and sequences, no transactions);
- transactions of 1, 10 and 100 batches: `--transactional N` (per lane: AddPartitionsToTxn
  for the partitions the next N batches go to, the batches, EndTxn commit once all are
  acknowledged, then the next transaction).

Reports per mode the median records/s, its share of the idempotent median, the
transactions committed per second, produce latency, and the broker's CPU per record
(utime+stime of the broker process over each run, from /proc, divided by the records
measured). A transaction waits for 4 durable writes in a row (its Ongoing state, its
data, PrepareCommit, its markers), so the disk's own latency for that pattern is
measured in the same run, in the broker's data directory: 3,000 x (4 KiB O_DIRECT
pwrite + fdatasync), and the 1-batch transaction time per lane is compared with 4 of
those.

Usage: .venv/bin/python perf/transactions.py [--runs 3] [--seconds 10] [--json out.json]
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TERN = str(ROOT / "target" / "release" / "tern")
MODES = {
    "idempotent": ["--idempotent"],
    "txn-1": ["--transactional", "1"],
    "txn-10": ["--transactional", "10"],
    "txn-100": ["--transactional", "100"],
}


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench(broker, bootstrap, topic, mode, seconds):
    before = cpu_seconds(broker.pid)
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        command = [TERN, "bench", "produce", "--brokers", bootstrap, "--topic", topic, "--partitions", "8",
                   "--producers", "2", "--cores", "1", "--duration", f"{seconds}s", "--warmup", "2s",
                   "--json", out.name, *MODES[mode]]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=seconds + 120)
        result = json.loads(Path(out.name).read_text())
    spent = cpu_seconds(broker.pid) - before
    figures = summarize(result, mode, spent)
    figures["broker_cpu_seconds"] = round(spent, 2)
    figures["broker_cpu_us_per_record"] = figures.pop("cpu_us_per_record")
    return figures


def summarize(result, mode, cpu_spent):
    """A bench run's figures: records/s, transactions/s, latency and the broker CPU
    (`cpu_spent` seconds) per record; fails on errors."""
    summary = result.get("summary", result)
    produce = summary["produce"]
    if summary.get("errors"):
        raise RuntimeError(f"{mode}: errors {summary['errors']}")
    return {
        "records_per_sec": round(produce["records_per_sec"]),
        "transactions_per_sec": round(summary.get("transactions", 0) / summary["measured_sec"], 1),
        "latency_ms": produce["latency"],
        "cpu_us_per_record": round(1e6 * cpu_spent / max(1, produce["records"]), 3),
    }


def disk_probe(directory, count=3000):
    """Median and p99 of a 4 KiB O_DIRECT write + fdatasync, in seconds."""
    import mmap
    path = Path(directory) / "fsync-probe"
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_DIRECT, 0o644)
    buffer = mmap.mmap(-1, 4096)
    buffer.write(b"x" * 4096)
    latencies = []
    try:
        for i in range(count):
            start = time.perf_counter()
            os.pwrite(fd, buffer, (i % 256) * 4096)
            os.fdatasync(fd)
            latencies.append(time.perf_counter() - start)
    finally:
        os.close(fd)
        path.unlink()
    latencies.sort()
    return latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--json")
    args = parser.parse_args()
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(dir=ROOT / "target") as data:
        broker = subprocess.Popen(
            [TERN, "serve", "--listen", bootstrap, "--data-dir", data, "--cores", "0", "--memory", "1M",
             "--admin-listen", "off"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.time() + 20
            while time.time() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    time.sleep(0.05)
            fsync_p50, fsync_p99 = disk_probe(data)
            print(f"disk: 4 KiB O_DIRECT write + fdatasync p50 {fsync_p50 * 1e3:.3f} ms, p99 {fsync_p99 * 1e3:.3f} ms")
            runs = {mode: [] for mode in MODES}
            for run in range(args.runs):
                for mode in MODES:
                    result = bench(broker, bootstrap, f"{mode}-{run}", mode, args.seconds)
                    runs[mode].append(result)
                    print(f"run {run} {mode:<11} {result['records_per_sec']:>10} rec/s "
                          f"{result['transactions_per_sec']:>8} txn/s  p99 {result['latency_ms']['p99_ms']:.2f} ms  "
                          f"cpu {result['broker_cpu_us_per_record']} us/rec", flush=True)
        finally:
            broker.terminate()
            broker.wait(30)
    base = statistics.median(r["records_per_sec"] for r in runs["idempotent"])
    report = {"machine": os.uname().nodename, "runs": runs, "medians": {},
              "disk_fsync_ms": {"p50": round(fsync_p50 * 1e3, 3), "p99": round(fsync_p99 * 1e3, 3)}}
    for mode, results in runs.items():
        median = statistics.median(r["records_per_sec"] for r in results)
        report["medians"][mode] = {
            "records_per_sec": median,
            "share_of_idempotent": round(median / base, 3),
            "transactions_per_sec": statistics.median(r["transactions_per_sec"] for r in results),
            "p99_ms": statistics.median(r["latency_ms"]["p99_ms"] for r in results),
            "broker_cpu_us_per_record": statistics.median(r["broker_cpu_us_per_record"] for r in results),
        }
        print(f"{mode:<11} median {median:>10.0f} rec/s ({median / base:.0%} of idempotent), "
              f"{report['medians'][mode]['transactions_per_sec']} txn/s, "
              f"{report['medians'][mode]['broker_cpu_us_per_record']} us/rec")
    per_lane = statistics.median(r["transactions_per_sec"] for r in runs["txn-1"]) / 2
    txn_ms = 1e3 / per_lane
    report["txn1_ms_per_transaction_per_lane"] = round(txn_ms, 3)
    report["txn1_vs_four_fsyncs"] = round(txn_ms / (4 * fsync_p50 * 1e3), 2)
    print(f"1-batch transaction per lane: {txn_ms:.3f} ms = {report['txn1_vs_four_fsyncs']}x four disk fsyncs")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
