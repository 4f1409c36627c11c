#!/usr/bin/env python3
"""Partition replication figures on a 3-node cluster of this machine (issue 16).

Starts three `tern serve` nodes (one shard each, all sharing the machine's cores), then:
1. throughput: `tern bench produce` (acks=all, 100-byte records, 6 partitions) against an
   RF=1 topic and an RF=3 topic, alternating, --runs times each; the RF=3 share is the
   ratio of the medians (same run, same machine). A pair of runs writes about 9 GB and
   nothing is deleted by retention, so when less than 20 GiB is free before a pair, both
   topics are deleted and created again first (a run of --runs 9 filled the 65 GiB free
   on the benchmark machine at its eighth pair);
2. latency: produce p50/p99/p99.9 at 25% of the RF=3 median peak (--rate);
   every run of 1 and 2 also records, from the brokers' /metrics, where the time went
   inside the brokers (`stages_ms`: the request at the leader, its batch's proposal to
   commit, a follower's append from arrival to acknowledgement, the write rounds);
3. failover, --rounds rounds: an idempotent acks=all librdkafka producer writes a
   one-partition RF=3 topic without pause; the partition's leader gets SIGKILL; measured
   are `elected` (until a survivor's Metadata names another leader, polled every 20 ms)
   and `first_ack` (until the producer's first acknowledgement after the kill, which can
   only come from the new leader: what a client sees); the node restarts and every
   replica is back in sync before the next round;
4. idle cost: CPU of each node (utime+stime from /proc) over --idle-seconds with
   --idle-partitions RF=3 partitions and no clients, once every group has gone quiet
   (`tern_replication_quiesced_groups` equals `tern_replication_groups` on every node);
5. failover of a quiet partition, --idle-rounds rounds: SIGKILL of the leader of one of
   the idle partitions, and the time until a survivor's Metadata names another leader
   (a quiet group's followers learn of the death from the pair heartbeats).

Usage: .venv/bin/python perf/replication.py [--rounds 20] [--runs 3] [--batch-bytes 16K] [--json out.json]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "clients"))

from confluent_kafka import Producer  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

import cluster_fixture  # noqa: E402
import helpers  # noqa: E402

sys.path.insert(0, str(ROOT / "perf"))
import latency_report  # noqa: E402

CLUSTER_ARGS = ["--broker-session-timeout-ms", "3000", "--broker-heartbeat-interval-ms", "300"]


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def create(cluster, name, partitions, rf):
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    admin.create_topics([NewTopic(name, partitions, rf)], operation_timeout=30)[name].result(timeout=60)

    def led():
        topic = cluster.metadata(1, timeout=10).topics.get(name)
        return topic is not None and len(topic.partitions) == partitions and all(
            p.leader >= 0 for p in topic.partitions.values())

    cluster.wait_until(led, 120, f"{name} led")


def delete(cluster, names):
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    for future in admin.delete_topics(list(names), operation_timeout=30).values():
        future.result(timeout=60)

    def gone():
        topics = cluster.metadata(1, timeout=10).topics
        return not any(name in topics for name in names)

    cluster.wait_until(gone, 120, f"{names} deleted")


def free_bytes(path):
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


# Each pair of peak runs writes about 9 GB (RF=3 writes every record three times), and
# the topics keep it all (no retention limit): before a pair that could fill the disk,
# the two topics are deleted and created again, as fresh as for the first run.
FREE_BYTES_PER_RUN_MIN = 20 << 30


def make_room(cluster, data_dir, partitions):
    if free_bytes(data_dir) >= FREE_BYTES_PER_RUN_MIN:
        return
    print(f"free space {free_bytes(data_dir) >> 30} GiB: deleting and creating rf1 and rf3 again", flush=True)
    delete(cluster, ["rf1", "rf3"])
    deadline = time.time() + 120
    while free_bytes(data_dir) < FREE_BYTES_PER_RUN_MIN and time.time() < deadline:
        time.sleep(1)
    if free_bytes(data_dir) < FREE_BYTES_PER_RUN_MIN:
        raise SystemExit(f"only {free_bytes(data_dir) >> 30} GiB free in {data_dir} after deleting the "
                         f"benchmark topics; a pair of runs needs about {FREE_BYTES_PER_RUN_MIN >> 30} GiB")
    create(cluster, "rf1", partitions, 1)
    create(cluster, "rf3", partitions, 3)


def leader_of(cluster, topic, partition):
    for n, node in cluster.nodes.items():
        if not node.alive():
            continue
        try:
            leader = cluster.metadata(n, timeout=2).topics[topic].partitions[partition].leader
        except Exception:
            continue
        if leader >= 0 and cluster.nodes[leader].alive():
            return leader
    return None


BATCH_BYTES = "16K"


def machine_ticks():
    """(busy, total) clock ticks of the whole machine so far, from /proc/stat (idle and
    iowait count as not busy)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return sum(fields) - fields[3] - fields[4], sum(fields)


# Where a replicated produce's time goes, from the brokers' /metrics (all three nodes):
# the request inside the leader, its batch's proposal to commit, a follower's append from
# arrival to acknowledgement, and every write round (leaders' and followers').
STAGES = [
    ("tern_produce_latency_seconds", "request"),
    ("tern_replication_commit_seconds", "commit"),
    ("tern_replication_follower_ack_seconds", "follower_ack"),
    ("tern_log_queue_wait_seconds", "write_queue"),
    ("tern_log_write_seconds", "write"),
]


def scrape_all(cluster, folder, name):
    """Each node's /metrics text into folder/name.N (parsed by `latency_report`)."""
    paths = []
    for n, node in cluster.nodes.items():
        path = Path(folder) / f"{name}.{n}"
        path.write_text(helpers.scrape(node))
        paths.append(path)
    return paths


def stage_split(before_paths, after_paths):
    """{stage: {p50, p99, mean, count}} in ms over the run, summed over the nodes."""
    totals = {}
    for before, after in zip(before_paths, after_paths):
        values, buckets = latency_report.delta(latency_report.parse_metrics(before),
                                               latency_report.parse_metrics(after))
        for metric, stage in STAGES:
            entry = totals.setdefault(stage, {"buckets": {}, "sum": 0.0, "count": 0.0})
            for le, count in buckets.get(metric, {}).items():
                entry["buckets"][le] = entry["buckets"].get(le, 0.0) + count
            entry["sum"] += values.get((metric + "_sum", ""), 0.0)
            entry["count"] += values.get((metric + "_count", ""), 0.0)
    split = {}
    for stage, entry in totals.items():
        if entry["count"] <= 0:
            continue
        p50, p99 = (latency_report.quantile(entry["buckets"], q) for q in (0.5, 0.99))
        split[stage] = {"p50": round(p50, 3), "p99": round(p99, 3),
                        "mean": round(1e3 * entry["sum"] / entry["count"], 3), "count": int(entry["count"])}
    return split


def bench(tern, cluster, topic, seconds, rate=0):
    """One `tern bench produce` run; adds the brokers' CPU per record (all three nodes'
    utime+stime over the run, warm-up included, divided by the records measured), how
    busy the whole machine was over the run (brokers, load tool and everything else) and
    the stages inside the brokers (`STAGES`)."""
    with tempfile.TemporaryDirectory() as scrapes:
        metrics_before = scrape_all(cluster, scrapes, "before")
        before = sum(cpu_seconds(node.process.pid) for node in cluster.nodes.values())
        busy_before, total_before = machine_ticks()
        result = run_bench(tern, cluster, topic, seconds, rate)
        spent = sum(cpu_seconds(node.process.pid) for node in cluster.nodes.values()) - before
        busy_after, total_after = machine_ticks()
        split = stage_split(metrics_before, scrape_all(cluster, scrapes, "after"))
    produce = result.get("summary", result)["produce"]
    produce["stages_ms"] = split
    produce["machine_busy"] = round((busy_after - busy_before) / max(1, total_after - total_before), 3)
    produce["broker_cpu_seconds"] = round(spent, 2)
    produce["broker_cpu_us_per_record"] = round(1e6 * spent / max(1, produce["records"]), 3)
    return result


def run_bench(tern, cluster, topic, seconds, rate):
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        command = [tern, "bench", "produce", "--brokers", cluster.bootstrap, "--topic", topic,
                   "--duration", f"{seconds}s", "--warmup", "2s", "--producers", "2", "--batch-bytes", BATCH_BYTES,
                   "--json", out.name]
        if rate:
            command += ["--rate", str(rate), "--linger-ms", "5"]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
        return json.loads(Path(out.name).read_text())


def summary(result):
    produce = result.get("summary", result)["produce"]
    return {"records_per_sec": round(produce["records_per_sec"]), "mb_per_sec": round(produce["mb_per_sec"], 1),
            "broker_cpu_us_per_record": produce["broker_cpu_us_per_record"], "machine_busy": produce["machine_busy"],
            "broker_cpu_seconds": produce["broker_cpu_seconds"], "latency_ms": produce["latency"],
            "stages_ms": produce.get("stages_ms", {})}


def failover_rounds(cluster, rounds):
    create(cluster, "failover", 1, 3)
    acks = []
    producer = Producer({"bootstrap.servers": cluster.bootstrap, "enable.idempotence": True, "acks": "all",
                         "linger.ms": 1, "request.timeout.ms": 3000, "socket.timeout.ms": 3000,
                         "topic.metadata.refresh.interval.ms": 200, "reconnect.backoff.max.ms": 200})
    running = True

    def produce():
        n = 0
        while running:
            try:
                producer.produce("failover", value=b"%d" % n, on_delivery=lambda e, m: e or acks.append(time.time()))
                n += 1
            except BufferError:
                pass
            producer.poll(0.002)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    results = []
    try:
        for round_ in range(rounds):
            time.sleep(1.5)
            victim = cluster.wait_until(lambda: leader_of(cluster, "failover", 0), 20, "a leader")
            killed = time.time()
            cluster.kill(victim)
            elected = None
            while time.time() - killed < 30:
                now_leader = leader_of(cluster, "failover", 0)
                if elected is None and now_leader not in (None, victim):
                    elected = time.time() - killed
                after = [t for t in acks[-2000:] if t > killed + 0.05]
                if elected is not None and after:
                    break
                time.sleep(0.02)
            # Answers the old leader sent just before it died can still be on their way
            # (or in the client's queue): the first 50 ms after the kill are its.
            after = [t for t in acks[-5000:] if t > killed + 0.05]
            first_ack = (min(after) - killed) if after else None
            results.append({"round": round_, "killed": victim, "elected_s": elected, "first_ack_s": first_ack})
            print(f"round {round_}: leader {victim} killed, elected {elected}, first ack {first_ack}", flush=True)
            cluster.start(victim)

            def in_sync():
                p = cluster.metadata(victim, timeout=2).topics["failover"].partitions[0]
                return p.leader >= 0 and sorted(p.isrs) == [1, 2, 3]

            cluster.wait_until(in_sync, 60, "all replicas in sync")
    finally:
        running = False
        thread.join(5)
        producer.flush(30)
    return results


def group_counts(cluster):
    """(quiesced, groups) replica groups per live node, from /metrics."""
    counts = {}
    for n, node in cluster.nodes.items():
        if node.alive():
            text = helpers.scrape(node)
            counts[n] = (int(helpers.metric(text, "tern_replication_quiesced_groups") or 0),
                         int(helpers.metric(text, "tern_replication_groups") or 0))
    return counts


def all_quiet(cluster):
    counts = group_counts(cluster)
    return all(quiet == groups for quiet, groups in counts.values()) and counts


def idle_failover_rounds(cluster, topic, rounds):
    """SIGKILL of the leader of a quiet partition; seconds until a survivor names another."""
    results = []
    for round_ in range(rounds):
        cluster.wait_until(lambda: all_quiet(cluster), 60, "every group quiet")
        partition = round_ % 10
        victim = cluster.wait_until(lambda: leader_of(cluster, topic, partition), 20, "a leader")
        killed = time.time()
        cluster.kill(victim)
        elected = None
        while time.time() - killed < 30:
            now_leader = leader_of(cluster, topic, partition)
            if now_leader not in (None, victim):
                elected = time.time() - killed
                break
            time.sleep(0.02)
        results.append({"round": round_, "partition": partition, "killed": victim, "elected_s": elected})
        print(f"quiet round {round_}: leader {victim} of {topic}-{partition} killed, elected {elected}", flush=True)
        cluster.start(victim)

        def in_sync():
            p = cluster.metadata(victim, timeout=2).topics[topic].partitions[partition]
            return p.leader >= 0 and sorted(p.isrs) == [1, 2, 3]

        cluster.wait_until(in_sync, 60, "all replicas in sync")
    return results


def stats(values):
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    return {"p50": round(statistics.median(values), 3), "max": round(values[-1], 3), "n": len(values)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tern", default=str(ROOT / "target" / "release" / "tern"))
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--idle-seconds", type=float, default=10)
    parser.add_argument("--idle-partitions", type=int, default=1000)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--idle-rounds", type=int, default=10)
    parser.add_argument("--batch-bytes", default="16K",
                        help="the load tool's batch size per partition (16K: Kafka's default batch.size)")
    parser.add_argument("--json")
    args = parser.parse_args()
    global BATCH_BYTES
    BATCH_BYTES = args.batch_bytes
    cluster_fixture.BINARY = Path(args.tern)
    report = {"machine": {"cpus": os.cpu_count(), "uname": " ".join(os.uname())}, "batch_bytes": args.batch_bytes}

    with tempfile.TemporaryDirectory(dir=str(ROOT / "target")) as tmp:
        cluster = cluster_fixture.Cluster(Path(tmp), extra_args=CLUSTER_ARGS).start()
        try:
            cluster.wait_formed()
            create(cluster, "rf1", 6, 1)
            create(cluster, "rf3", 6, 3)
            runs = {"rf1": [], "rf3": []}
            for run in range(0 if args.skip_throughput else args.runs):
                make_room(cluster, tmp, 6)
                for topic in ("rf1", "rf3"):
                    result = summary(bench(args.tern, cluster, topic, args.seconds))
                    runs[topic].append(result)
                    print(f"run {run} {topic}: {result}", flush=True)
            if not args.skip_throughput:
                peak = {t: statistics.median(r["records_per_sec"] for r in rs) for t, rs in runs.items()}
                cpu = {t: statistics.median(r["broker_cpu_us_per_record"] for r in rs) for t, rs in runs.items()}
                report["throughput"] = {"runs": runs, "median_records_per_sec": peak,
                                        "median_broker_cpu_us_per_record": cpu,
                                        "rf3_share_of_rf1": round(peak["rf3"] / peak["rf1"], 3)}
                rate = int(peak["rf3"] * 0.25)
                latency = [summary(bench(args.tern, cluster, "rf3", args.seconds, rate=rate))
                           for _ in range(args.runs)]
                report["latency_at_25_percent"] = {"rate": rate, "runs": latency}
                print(f"25% of the RF=3 peak ({rate}/s): {latency}", flush=True)

            if args.rounds:
                rounds = failover_rounds(cluster, args.rounds)
                report["failover"] = {"rounds": rounds, "elected_s": stats(r["elected_s"] for r in rounds),
                                      "first_ack_s": stats(r["first_ack_s"] for r in rounds)}
                print(f"failover: {report['failover']['elected_s']} elected, "
                      f"{report['failover']['first_ack_s']} first ack", flush=True)

            if args.idle_partitions:
                def idle_cpu():
                    before = {n: cpu_seconds(node.process.pid) for n, node in cluster.nodes.items()}
                    time.sleep(args.idle_seconds)
                    after = {n: cpu_seconds(node.process.pid) for n, node in cluster.nodes.items()}
                    return {n: round(100 * (after[n] - before[n]) / args.idle_seconds, 2) for n in before}

                # The same cluster before the idle topic: the metadata quorum, the pair
                # heartbeats and the internal topics' 32 groups per node.
                cluster.wait_until(lambda: all_quiet(cluster), 120, "every group quiet")
                baseline = idle_cpu()
                print(f"idle CPU % before the {args.idle_partitions} partitions: {baseline}", flush=True)
                create(cluster, "idle", args.idle_partitions, 3)
                started = time.time()
                quiet = cluster.wait_until(lambda: all_quiet(cluster), 120, "every group quiet")
                quiet_after = round(time.time() - started, 1)
                idle = idle_cpu()
                report["idle_cpu_percent"] = {"partitions": args.idle_partitions, "per_node": idle,
                                              "per_node_before_the_topic": baseline,
                                              "quiet_groups_per_node": quiet, "all_quiet_after_s": quiet_after}
                print(f"idle CPU % with {args.idle_partitions} RF=3 partitions: {idle} "
                      f"(all quiet {quiet_after} s after the topic was led: {quiet})", flush=True)
                if args.idle_rounds:
                    rounds = idle_failover_rounds(cluster, "idle", args.idle_rounds)
                    report["quiet_failover"] = {"rounds": rounds, "elected_s": stats(r["elected_s"] for r in rounds)}
                    print(f"quiet failover: {report['quiet_failover']['elected_s']} elected", flush=True)
        finally:
            cluster.shutdown()
    text = json.dumps(report, indent=2)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
