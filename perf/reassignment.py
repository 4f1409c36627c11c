#!/usr/bin/env python3
"""Reassignment figures on a 4-node cluster of this machine (issue 16).

Starts four `tern serve` nodes (one shard each, all sharing the machine's cores), creates
a one-partition RF=3 topic and fills it with --fill-mb of 1 KiB records (acks=all). Then
--runs times, alternately:
- baseline: `tern bench produce` at --rate records/s (100-byte records, acks=all) for
  --seconds, nothing moving;
- move: the same bench, and 2 s into it `tern topic reassign --move 0=<target> --wait`
  swaps one follower for the broker without a replica (the one that left is the spare of
  the next run). Measured: how long the move takes (from the request to the answer that
  the controller recorded it), the partition's size, and the bench's latency while it
  moves (the bench runs at least as long as the move).
Figures are medians over the runs; the catch-up pace is the default
`--replica-catch-up-bytes-per-sec` (100 MiB/s) unless --catch-up-bytes-per-sec is given.

Usage: .venv/bin/python perf/reassignment.py [--runs 3] [--fill-mb 512] [--json out.json]
"""
import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "clients"))

import cluster_fixture  # noqa: E402
from replication import create, leader_of  # noqa: E402  (perf/replication.py)

CLUSTER_ARGS = ["--broker-session-timeout-ms", "3000", "--broker-heartbeat-interval-ms", "300"]


def bench(tern, cluster, topic, seconds, rate, size, out):
    command = [tern, "bench", "produce", "--brokers", cluster.bootstrap, "--topic", topic, "--duration",
               f"{seconds}s", "--warmup", "1s", "--producers", "1", "--record-size", str(size), "--json", out]
    if rate:
        command += ["--rate", str(rate), "--linger-ms", "5"]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=900)
    produce = json.loads(Path(out).read_text())
    produce = produce.get("summary", produce)["produce"]
    return {"records_per_sec": round(produce["records_per_sec"]), "latency_ms": produce["latency"]}


def replicas(cluster, topic):
    return list(cluster.metadata(next(n for n, node in cluster.nodes.items() if node.alive())).topics[topic]
                .partitions[0].replicas)


def dir_bytes(path):
    return sum(f.stat().st_size for f in path.glob("*.log"))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tern", default=str(ROOT / "target" / "release" / "tern"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--fill-mb", type=int, default=512)
    parser.add_argument("--rate", type=int, default=20000)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--catch-up-bytes-per-sec", type=int)
    parser.add_argument("--json")
    args = parser.parse_args()
    extra = list(CLUSTER_ARGS)
    if args.catch_up_bytes_per_sec:
        extra += ["--replica-catch-up-bytes-per-sec", str(args.catch_up_bytes_per_sec)]
    root = Path(tempfile.mkdtemp(prefix="tern-reassign-"))
    cluster = cluster_fixture.Cluster(root, size=4, extra_args=extra).start()
    results = {"machine": subprocess.run(["uname", "-a"], capture_output=True, text=True).stdout.strip(),
               "fill_mb": args.fill_mb, "rate": args.rate, "baseline": [], "moving": [], "moves": []}
    try:
        cluster.wait_formed()
        topic = "moving"
        create(cluster, topic, 1, 3)
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            # Fill: 1 KiB records at full speed until the partition holds --fill-mb.
            seconds = 5
            while True:
                bench(args.tern, cluster, topic, seconds, 0, 1024, out.name)
                leader = leader_of(cluster, topic, 0)
                held = dir_bytes(cluster.nodes[leader].data_dir / f"{topic}-0")
                if held >= args.fill_mb << 20:
                    break
            print(f"filled: {held / 2**20:.0f} MiB", flush=True)
            for run in range(args.runs):
                baseline = bench(args.tern, cluster, topic, args.seconds, args.rate, 100, out.name)
                results["baseline"].append(baseline)
                print("baseline", baseline, flush=True)
                before = replicas(cluster, topic)
                spare = next(n for n in cluster.nodes if n not in before)
                leader = leader_of(cluster, topic, 0)
                leaving = next(n for n in reversed(before) if n != leader)
                target = [n for n in before if n != leaving] + [spare]
                move = {}

                def reassign():
                    time.sleep(2)
                    started = time.time()
                    done = subprocess.run([args.tern, "topic", "--brokers", cluster.bootstrap, "reassign", topic,
                                           "--move", "0=" + ",".join(map(str, target)), "--wait", "600"],
                                          capture_output=True, text=True)
                    move.update(seconds=round(time.time() - started, 2), ok=done.returncode == 0,
                                output=done.stdout + done.stderr)

                mover = threading.Thread(target=reassign)
                mover.start()
                moving = bench(args.tern, cluster, topic, args.seconds, args.rate, 100, out.name)
                mover.join()
                assert move["ok"], move["output"]
                size = dir_bytes(cluster.nodes[spare].data_dir / f"{topic}-0")
                move.update(size_mib=round(size / 2**20), mib_per_sec=round(size / 2**20 / move["seconds"], 1),
                            target=target)
                del move["output"]
                results["moving"].append(moving)
                results["moves"].append(move)
                print("move", move, "bench while moving", moving, flush=True)
                cluster.wait_until(lambda: not (cluster.nodes[leaving].data_dir / f"{topic}-0").exists(), 60,
                                   "the old replica deleted")
    finally:
        cluster.shutdown()
    p99 = lambda runs: statistics.median(r["latency_ms"]["p99_ms"] for r in runs)  # noqa: E731
    results["median"] = {
        "move_seconds": statistics.median(m["seconds"] for m in results["moves"]),
        "move_mib_per_sec": statistics.median(m["mib_per_sec"] for m in results["moves"]),
        "baseline_p99_ms": p99(results["baseline"]),
        "moving_p99_ms": p99(results["moving"]),
    }
    print(json.dumps(results["median"]))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
