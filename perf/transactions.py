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
measured). Each transaction costs the coordinator three durable writes of its state
(Ongoing, PrepareCommit, CompleteCommit) and one marker per partition.

Usage: .venv/bin/python perf/transactions.py [--runs 3] [--seconds 10] [--json out.json]
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
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
    summary = result.get("summary", result)
    produce = summary["produce"]
    if summary.get("errors"):
        raise RuntimeError(f"{mode}: errors {summary['errors']}")
    return {
        "records_per_sec": round(produce["records_per_sec"]),
        "transactions_per_sec": round(summary.get("transactions", 0) / summary["measured_sec"], 1),
        "latency_ms": produce["latency"],
        "broker_cpu_seconds": round(spent, 2),
        "broker_cpu_us_per_record": round(1e6 * spent / max(1, produce["records"]), 3),
    }


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
    report = {"machine": os.uname().nodename, "runs": runs, "medians": {}}
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
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
