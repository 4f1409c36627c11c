#!/usr/bin/env python3
"""Transactional vs idempotent produce on a 3-node cluster with RF=3 topics (issue 17).

Starts three `tern serve` nodes on this machine (one shard each, sharing its cores; the
`__transaction_state` partitions are Raft groups of three, as the data partitions are),
creates one RF=3 topic of 8 partitions (min.insync.replicas=2) per mode and run, and
runs `tern bench produce` against the cluster (2 producer lanes, acks=all, 100-byte
records, 10 s after 2 s of warm-up) in the modes of `perf/transactions.py`: idempotent,
and transactions of 100, 10 and 1 batches, interleaved, --runs times each. Reports the
median records/s per mode, its share of idempotent, transactions/s, produce latency,
and the three brokers' CPU per record (utime+stime from /proc over each run).

Every durable step of a transaction here is a Raft commit (a majority fdatasync'ed):
the coordinator's Ongoing and PrepareCommit records, the data, and a marker per
partition, proposed by that partition's leader (forwarded to the broker leading it).

Usage: .venv/bin/python perf/transactions_cluster.py [--runs 3] [--seconds 10] [--json out.json]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "clients"))
sys.path.insert(0, str(ROOT / "perf"))

from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

import cluster_fixture  # noqa: E402
from transactions import MODES, cpu_seconds, summarize  # noqa: E402

CLUSTER_ARGS = ["--broker-session-timeout-ms", "3000", "--broker-heartbeat-interval-ms", "300"]


def create(cluster, name):
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    admin.create_topics([NewTopic(name, 8, 3, config={"min.insync.replicas": "2"})],
                        operation_timeout=30)[name].result(timeout=60)

    def led():
        topic = cluster.metadata(1, timeout=10).topics.get(name)
        return topic is not None and len(topic.partitions) == 8 and all(p.leader >= 0 for p in topic.partitions.values())

    cluster.wait_until(led, 120, f"{name} led")


def bench(tern, cluster, topic, mode, seconds):
    before = sum(cpu_seconds(node.process.pid) for node in cluster.nodes.values())
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        command = [tern, "bench", "produce", "--brokers", cluster.bootstrap, "--topic", topic,
                   "--producers", "2", "--duration", f"{seconds}s", "--warmup", "2s", "--json", out.name,
                   *MODES[mode]]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=seconds + 120)
        result = json.loads(Path(out.name).read_text())
    spent = sum(cpu_seconds(node.process.pid) for node in cluster.nodes.values()) - before
    figures = summarize(result, mode, spent)
    figures["brokers_cpu_us_per_record"] = figures.pop("cpu_us_per_record")
    return figures


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tern", default=str(ROOT / "target" / "release" / "tern"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--json")
    args = parser.parse_args()
    cluster_fixture.BINARY = Path(args.tern)
    runs = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory(dir=str(ROOT / "target")) as tmp:
        cluster = cluster_fixture.Cluster(Path(tmp), extra_args=CLUSTER_ARGS).start()
        try:
            cluster.wait_formed()
            for run in range(args.runs):
                for mode in MODES:
                    topic = f"{mode}-{run}"
                    create(cluster, topic)
                    result = bench(args.tern, cluster, topic, mode, args.seconds)
                    runs[mode].append(result)
                    print(f"run {run} {mode:<11} {result['records_per_sec']:>10} rec/s "
                          f"{result['transactions_per_sec']:>8} txn/s  p50 {result['latency_ms']['p50_ms']:.2f} "
                          f"p99 {result['latency_ms']['p99_ms']:.2f} ms  cpu {result['brokers_cpu_us_per_record']} "
                          "us/rec", flush=True)
        finally:
            cluster.shutdown()
    base = statistics.median(r["records_per_sec"] for r in runs["idempotent"])
    report = {"machine": {"cpus": os.cpu_count(), "uname": " ".join(os.uname())}, "runs": runs, "medians": {}}
    for mode, results in runs.items():
        median = statistics.median(r["records_per_sec"] for r in results)
        report["medians"][mode] = {
            "records_per_sec": median,
            "share_of_idempotent": round(median / base, 3),
            "transactions_per_sec": statistics.median(r["transactions_per_sec"] for r in results),
            "p50_ms": statistics.median(r["latency_ms"]["p50_ms"] for r in results),
            "p99_ms": statistics.median(r["latency_ms"]["p99_ms"] for r in results),
            "brokers_cpu_us_per_record": statistics.median(r["brokers_cpu_us_per_record"] for r in results),
        }
        print(f"{mode:<11} median {median:>10.0f} rec/s ({median / base:.0%} of idempotent), "
              f"{report['medians'][mode]['transactions_per_sec']} txn/s", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
