#!/usr/bin/env python3
"""Soak test (issue 19): mixed load against one broker for a long time, with the broker's
RSS, descriptors, a producer's latency and every client error sampled, and a final check
that nothing acknowledged was lost.

The load, all at once:
- a producer (librdkafka, idempotent, acks=all) at --rate records/s to a 6-partition
  topic; each record's value is its sequence number; latency is measured from produce()
  to the delivery report;
- a consumer group of --members members reading that topic and committing; one member
  leaves and joins again every --member-churn-s seconds (rebalances);
- topic churn: a topic created, written to and deleted every --topic-churn-s seconds;
- broker restarts: SIGTERM and restart every --restart-every-s seconds (clients ride
  through; the idempotent producer resends what was not acknowledged).

Every --sample-s seconds it records the broker's RSS (VmRSS) and open descriptors
(/proc/PID/fd), the producer's p50/p99/max latency in that interval, records acked,
errors seen by any client, and the group's total lag. At the end it reads the topic from
the start and checks that every acknowledged sequence number is there exactly once, and
it judges the samples: RSS in the last quarter must not exceed the high-water mark of the
first half by more than --rss-growth-max (a leak grows without bound, a cache fills once),
and descriptors after the last restart must return to within a few of the count after
the first one.

    .venv/bin/python perf/soak.py --duration-s 3600 --out perf/results/soak   # the hour
    .venv/bin/python perf/soak.py --duration-s 60 --restart-every-s 20 ...    # CI (test_soak.py)

Writes OUT/samples.csv, OUT/summary.json and (with matplotlib) OUT/soak.png. Exit status
1 if a check failed.
"""

import argparse
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[1]
TOPIC = "soak"
PARTITIONS = 6


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    def __init__(self, binary, data_dir, log_path, extra):
        self.binary, self.data_dir, self.log_path, self.extra = binary, data_dir, log_path, extra
        self.port, self.admin_port = free_port(), free_port()
        self.process = None

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def start(self):
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [str(self.binary), "serve", "--listen", self.bootstrap, "--data-dir", str(self.data_dir),
             "--cores", "0-1", "--no-pin", "--memory", "1M", "--admin-listen", f"127.0.0.1:{self.admin_port}",
             "--group-initial-rebalance-delay-ms", "0", "--group-min-session-timeout-ms", "1000",
             "--batch-cache-bytes", "16M", *self.extra],
            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"broker exited with {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("broker did not start")

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            return self.process.wait(timeout=60)
        return self.process.returncode if self.process else 0

    def rss_bytes(self):
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return None

    def descriptors(self):
        try:
            return len(os.listdir(f"/proc/{self.process.pid}/fd"))
        except OSError:
            return None


class Stats:
    """Counters shared by the load threads; read and reset by the sampler."""

    def __init__(self):
        self.lock = threading.Lock()
        self.latencies = []
        self.acked = 0
        self.errors = {}

    def error(self, where, error):
        with self.lock:
            key = f"{where}: {error}"
            self.errors[key] = self.errors.get(key, 0) + 1

    def take(self):
        with self.lock:
            latencies, self.latencies = self.latencies, []
            acked, self.acked = self.acked, 0
            return latencies, acked


def percentile(values, q):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def produce_loop(bootstrap, rate, stop, stats, acked_seqs):
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                         "linger.ms": 2, "message.timeout.ms": 120000})
    seq = 0
    start = time.time()

    def report(error, message, sent=None, number=None):
        if error:
            stats.error("produce", error)
            return
        with stats.lock:
            stats.latencies.append(time.time() - sent)
            stats.acked += 1
            acked_seqs.append(number)

    while not stop.is_set():
        due = start + seq / rate
        now = time.time()
        if now < due:
            producer.poll(min(due - now, 0.05))
            continue
        sent = time.time()
        try:
            producer.produce(TOPIC, value=str(seq).encode(), key=str(seq % 97).encode(),
                             on_delivery=lambda e, m, s=sent, n=seq: report(e, m, s, n))
            seq += 1
        except BufferError:
            producer.poll(0.05)
        producer.poll(0)
    remaining = producer.flush(120)
    if remaining:
        stats.error("produce", f"{remaining} records never delivered")
    return seq


def member_loop(bootstrap, name, stop, stats, churn_s, consumed):
    while not stop.is_set():
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "soak-group", "client.id": name,
                             "auto.offset.reset": "earliest", "session.timeout.ms": 6000,
                             "enable.auto.commit": True, "auto.commit.interval.ms": 1000})
        consumer.subscribe([TOPIC])
        until = time.time() + churn_s if churn_s else float("inf")
        while not stop.is_set() and time.time() < until:
            for message in consumer.consume(1000, 0.5):
                if message.error():
                    if message.error().retriable() or message.error().code() < 0:
                        continue  # transient: a broker restart
                    stats.error(f"consume {name}", message.error())
                    continue
                consumed.add(int(message.value()))
        try:
            consumer.close()
        except KafkaException as error:
            stats.error(f"close {name}", error)


def topic_churn_loop(bootstrap, stop, stats, period):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    producer = Producer({"bootstrap.servers": bootstrap})
    n = 0
    while not stop.wait(period):
        name = f"churn-{n}"
        n += 1
        try:
            admin.create_topics([NewTopic(name, 2, 1)], request_timeout=10)[name].result(timeout=15)
            for i in range(100):
                producer.produce(name, value=b"x" * 100)
            producer.flush(15)
            admin.delete_topics([name], request_timeout=10)[name].result(timeout=15)
        except Exception as error:  # a restart in between: counted, retried next period
            stats.error("topic churn", type(error).__name__)


def group_lag(bootstrap):
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "soak-group"})
    try:
        parts = [TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
        committed = consumer.committed(parts, timeout=5)
        lag = 0
        for tp in committed:
            _, high = consumer.get_watermark_offsets(TopicPartition(TOPIC, tp.partition), timeout=5)
            lag += max(0, high - max(tp.offset, 0))
        return lag
    except KafkaException:
        return None
    finally:
        consumer.close()


def read_everything(bootstrap):
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "soak-verify", "enable.auto.commit": False})
    consumer.assign([TopicPartition(TOPIC, p, 0) for p in range(PARTITIONS)])
    highs = {p: consumer.get_watermark_offsets(TopicPartition(TOPIC, p), timeout=10)[1] for p in range(PARTITIONS)}
    done = {p: highs[p] == 0 for p in range(PARTITIONS)}
    values = []
    deadline = time.time() + 120
    while not all(done.values()) and time.time() < deadline:
        for message in consumer.consume(10000, 0.5):
            if message.error():
                continue
            values.append(int(message.value()))
            if message.offset() + 1 >= highs[message.partition()]:
                done[message.partition()] = True
    consumer.close()
    return values


def plot(samples, out):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    t = [s["t_s"] / 60 for s in samples]
    fig, axes = plt.subplots(4, 1, figsize=(10, 11), sharex=True)
    axes[0].plot(t, [(s["rss_bytes"] or 0) / 2**20 for s in samples])
    axes[0].set_ylabel("broker RSS (MiB)")
    axes[1].plot(t, [s["descriptors"] or 0 for s in samples])
    axes[1].set_ylabel("open descriptors")
    axes[2].plot(t, [(s["p99_ms"] or 0) for s in samples], label="p99")
    axes[2].plot(t, [(s["p50_ms"] or 0) for s in samples], label="p50")
    axes[2].set_yscale("log")
    axes[2].set_ylabel("produce latency (ms)")
    axes[2].legend()
    axes[3].plot(t, [s["errors_total"] for s in samples], label="client errors (cumulative)")
    axes[3].plot(t, [s["restarts"] for s in samples], label="broker restarts")
    axes[3].set_ylabel("count")
    axes[3].legend()
    axes[3].set_xlabel("minutes")
    fig.tight_layout()
    fig.savefig(out / "soak.png", dpi=80)
    return True


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tern", default=str(ROOT / "target" / "release" / "tern"))
    parser.add_argument("--duration-s", type=float, default=3600)
    parser.add_argument("--rate", type=float, default=2000)
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--member-churn-s", type=float, default=30)
    parser.add_argument("--topic-churn-s", type=float, default=5)
    parser.add_argument("--restart-every-s", type=float, default=600)
    parser.add_argument("--sample-s", type=float, default=5)
    parser.add_argument("--rss-growth-max", type=float, default=1.3)
    parser.add_argument("--out", default=str(ROOT / "perf" / "results" / "soak"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory() as tmp:
        broker = Broker(Path(args.tern), Path(tmp) / "data", out / "broker.log", [])
        (out / "broker.log").write_text("")
        broker.start()
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)])[TOPIC].result(timeout=15)

        stop, stats = threading.Event(), Stats()
        acked_seqs, consumed = [], set()
        threads = [threading.Thread(target=produce_loop, args=(broker.bootstrap, args.rate, stop, stats, acked_seqs)),
                   threading.Thread(target=topic_churn_loop, args=(broker.bootstrap, stop, stats, args.topic_churn_s))]
        for m in range(args.members):
            churn = args.member_churn_s if m == 0 else 0
            threads.append(threading.Thread(target=member_loop,
                                            args=(broker.bootstrap, f"member-{m}", stop, stats, churn, consumed)))
        for thread in threads:
            thread.start()

        samples, restarts, exit_codes = [], 0, []
        started = time.time()
        next_restart = started + args.restart_every_s
        fds_after_restart = []
        while time.time() - started < args.duration_s:
            time.sleep(args.sample_s)
            if time.time() >= next_restart and time.time() - started < args.duration_s - args.sample_s:
                exit_codes.append(broker.stop())
                broker.start()
                restarts += 1
                next_restart += args.restart_every_s
            latencies, acked = stats.take()
            sample = {
                "t_s": round(time.time() - started, 1),
                "rss_bytes": broker.rss_bytes(),
                "descriptors": broker.descriptors(),
                "acked": acked,
                "p50_ms": round(percentile(latencies, 0.5) * 1000, 2) if latencies else None,
                "p99_ms": round(percentile(latencies, 0.99) * 1000, 2) if latencies else None,
                "max_ms": round(max(latencies) * 1000, 2) if latencies else None,
                "errors_total": sum(stats.errors.values()),
                "restarts": restarts,
                "group_lag": group_lag(broker.bootstrap),
            }
            samples.append(sample)
            if restarts and len(fds_after_restart) < restarts:
                fds_after_restart.append(sample["descriptors"])
            print(json.dumps(sample), flush=True)

        stop.set()
        for thread in threads:
            thread.join(timeout=180)
        everything = read_everything(broker.bootstrap)
        exit_codes.append(broker.stop())

    with open(out / "samples.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(samples[0]))
        writer.writeheader()
        writer.writerows(samples)

    failures = []
    acked_set = set(acked_seqs)
    missing = acked_set - set(everything)
    duplicates = len(everything) - len(set(everything))
    if missing:
        failures.append(f"{len(missing)} acknowledged records missing (e.g. {sorted(missing)[:5]})")
    if duplicates:
        failures.append(f"{duplicates} duplicate records in the topic")
    if any(code != 0 for code in exit_codes):
        failures.append(f"broker exit codes {exit_codes} (a clean shutdown exits 0)")
    rss = [s["rss_bytes"] for s in samples if s["rss_bytes"]]
    half, last_quarter = rss[: max(1, len(rss) // 2)], rss[-max(1, len(rss) // 4):]
    rss_ratio = max(last_quarter) / max(half)
    if rss_ratio > args.rss_growth_max:
        failures.append(f"RSS grew: last quarter peak {max(last_quarter)} vs first half peak {max(half)}")
    fds = [f for f in fds_after_restart if f]
    if len(fds) >= 2 and fds[-1] > fds[0] + 16:
        failures.append(f"descriptors after restarts grew: {fds}")
    unconsumed = acked_set - consumed
    summary = {
        "duration_s": args.duration_s, "rate": args.rate, "restarts": restarts,
        "acked": len(acked_set), "in_topic": len(everything), "missing": len(missing), "duplicates": duplicates,
        "group_consumed": len(consumed & acked_set), "group_unconsumed_at_end": len(unconsumed),
        "rss_first_half_peak_mib": round(max(half) / 2**20, 1), "rss_last_quarter_peak_mib": round(max(last_quarter) / 2**20, 1),
        "descriptors_after_each_restart": fds_after_restart,
        "p99_ms_median_of_samples": percentile([s["p99_ms"] for s in samples if s["p99_ms"]], 0.5),
        "p99_ms_worst_sample": max((s["p99_ms"] for s in samples if s["p99_ms"]), default=None),
        "client_errors": stats.errors, "broker_exit_codes": exit_codes, "failures": failures,
        "plot": plot(samples, out),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
