#!/usr/bin/env python3
"""Metadata-quorum failover and idle cost of a 3-node cluster on this machine (issue 15).

Starts three `tern serve` nodes (one shard each, sharing the machine's cores), then for
each of --rounds rounds: finds the controller, SIGKILLs it, and measures
- election: time from the SIGKILL until a surviving node reports a different controller
  (Metadata polled every 20 ms through librdkafka), and
- create: time from the SIGKILL until a CreateTopics through a survivor succeeds;
then restarts the killed node and waits until all three agree again. Also measures the
idle CPU of each node over --idle-seconds (utime+stime from /proc) with --idle-topics
topics created, before the rounds.

Usage: perf/cluster_failover.py [--tern target/release/tern] [--rounds 20] [--json out.json]
Needs confluent-kafka (the tests' venv: .venv/bin/python perf/cluster_failover.py).
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "clients"))

from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

import cluster_fixture  # noqa: E402


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def create(bootstrap, name):
    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 2000})
    admin.create_topics([NewTopic(name, 1, 1)], operation_timeout=5, request_timeout=5)[name].result(timeout=10)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tern", default=str(ROOT / "target" / "release" / "tern"))
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--idle-seconds", type=float, default=10)
    parser.add_argument("--idle-topics", type=int, default=100)
    parser.add_argument("--json")
    args = parser.parse_args()
    cluster_fixture.BINARY = Path(args.tern)

    with tempfile.TemporaryDirectory() as tmp:
        cluster = cluster_fixture.Cluster(Path(tmp), extra_args=["--broker-session-timeout-ms", "9000"]).start()
        try:
            cluster.wait_formed()
            for i in range(args.idle_topics):
                create(cluster.bootstrap, f"idle-{i}")
            time.sleep(1.0)
            before = {n: cpu_seconds(node.process.pid) for n, node in cluster.nodes.items()}
            time.sleep(args.idle_seconds)
            idle = {n: (cpu_seconds(node.process.pid) - before[n]) / args.idle_seconds * 100
                    for n, node in cluster.nodes.items()}
            print(f"idle CPU per node with {args.idle_topics} topics: "
                  + ", ".join(f"node {n} {pct:.2f}%" for n, pct in idle.items()))

            elections, creates = [], []
            for round_ in range(args.rounds):
                controller = cluster.wait_formed()
                survivors = [n for n in cluster.nodes if n != controller]
                killed = time.time()
                cluster.kill(controller)
                while True:
                    now = cluster.controller(survivors[0])
                    if now not in (None, controller):
                        break
                    time.sleep(0.02)
                elections.append(time.time() - killed)
                while True:
                    try:
                        create(cluster.nodes[survivors[1]].bootstrap, f"round-{round_}")
                        break
                    except Exception:
                        time.sleep(0.02)
                creates.append(time.time() - killed)
                print(f"round {round_ + 1}: controller {controller} killed; new controller after "
                      f"{elections[-1]:.3f}s, CreateTopics ok after {creates[-1]:.3f}s")
                cluster.start(controller)
            cluster.wait_formed()
        finally:
            cluster.shutdown()

    def summary(values):
        return {"p50": statistics.median(values), "max": max(values), "min": min(values)}

    result = {"rounds": args.rounds, "election_s": summary(elections), "create_s": summary(creates),
              "idle_cpu_percent": idle, "idle_topics": args.idle_topics}
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
