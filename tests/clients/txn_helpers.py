"""Helpers shared by the transaction tests that drive Quix Streams apps
(test_transactions_frameworks.py, test_transactions_stateful.py): reading topics back
with confluent-kafka consumers under an isolation level, running an app script as a
subprocess that can be SIGKILLed, and feeding its input at a steady pace."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from helpers import producer

PARTITIONS = 3


# --------------------------------------------------------------------------------------
# Reading back, read_committed or read_uncommitted
# --------------------------------------------------------------------------------------

def confluent_consumer(bootstrap, isolation, group="unused-txn-reader", **extra):
    return Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
        "fetch.wait.max.ms": 100,
        "isolation.level": isolation,
        **extra,
    })


def watermarks(bootstrap, topic, isolation, partitions=PARTITIONS):
    """High watermark per partition as the consumer sees it: for read_committed this is
    the last stable offset (ListOffsets latest with isolation level 1)."""
    consumer = confluent_consumer(bootstrap, isolation)
    try:
        return [consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1]
                for p in range(partitions)]
    finally:
        consumer.close()


def read_partitions(bootstrap, topic, isolation, partitions=PARTITIONS, timeout_s=30):
    """Every record of every partition from offset 0 up to the end as seen under
    `isolation` (the LSO for read_committed) at the start; returns {partition: [messages]}."""
    ends = watermarks(bootstrap, topic, isolation, partitions)
    consumer = confluent_consumer(bootstrap, isolation)
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    by_partition = {p: [] for p in range(partitions)}
    positions = {p: 0 for p in range(partitions)}
    deadline = time.time() + timeout_s
    try:
        while any(positions[p] < ends[p] for p in range(partitions)) and time.time() < deadline:
            for m in consumer.consume(num_messages=10_000, timeout=0.3):
                assert not m.error(), f"{isolation} consume error on {topic}: {m.error()}"
                by_partition[m.partition()].append(m)
                positions[m.partition()] = m.offset() + 1
            # Control records (transaction markers) and compacted-away offsets are never
            # delivered; the consumer's position moves past them, which is what tells us
            # we reached the end.
            for tp in consumer.position([TopicPartition(topic, p) for p in range(partitions)]):
                if tp.offset >= 0:
                    positions[tp.partition] = max(positions[tp.partition], tp.offset)
    finally:
        consumer.close()
    assert all(positions[p] >= ends[p] for p in range(partitions)), (
        f"{isolation} reader of {topic} did not reach the end in {timeout_s}s: positions {positions}, ends {ends}")
    return by_partition


# --------------------------------------------------------------------------------------
# A Quix Streams app in a subprocess, and its input
# --------------------------------------------------------------------------------------

class QuixApp:
    """An app script run with this Python; its stdout and stderr go to `log_path`. The
    scripts print "processed 1 ..." (then every 100th record) as they process."""

    def __init__(self, script, args, log_path):
        self.log_path = log_path
        self.log = open(log_path, "ab")
        self.process = subprocess.Popen([sys.executable, str(script), *args], stdout=self.log,
                                        stderr=subprocess.STDOUT, cwd=str(script.parent))

    def alive(self):
        return self.process.poll() is None

    def sigkill(self):
        if self.alive():
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self.log.close()

    def sigterm(self, timeout=20):
        if self.alive():
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.sigkill()
                raise AssertionError(f"the Quix app did not stop on SIGTERM in {timeout}s:\n{self.output()}")
        self.log.close()
        return self.process.returncode

    def output(self, tail=6000):
        try:
            text = Path(self.log_path).read_text(errors="replace")
            return text if tail is None else text[-tail:]
        except OSError:
            return ""

    def last_progress(self):
        """The last "processed ..." line the app printed."""
        return [line for line in self.output(tail=None).splitlines() if line.startswith("processed ")][-1]

    def wait_processing(self, what, broker, timeout_s):
        """Waits until this incarnation processed its first record (after any recovery;
        its own log line, as the output's high watermark also moves for transaction markers)."""
        deadline = time.time() + timeout_s
        while "processed 1 " not in self.output(tail=None):
            assert self.alive(), f"Quix app ({what}) exited:\n{self.output()}\n--- broker log:\n{broker.log_text()}"
            assert time.time() < deadline, (
                f"Quix app ({what}) processed nothing in {timeout_s}s:\n"
                f"{self.output()}\n--- broker log:\n{broker.log_text()}")
            time.sleep(0.05)


class PacedFeeder(threading.Thread):
    """Produces `messages` ([(key, value)], bytes) to `topic` from a daemon thread, `batch`
    at a time, spread over about `duration_s` seconds, so the input still arrives while
    the test kills the app; stops early once `stopping` is set. The producer gets
    helpers.producer's config plus `config`."""

    def __init__(self, bootstrap, topic, messages, batch, duration_s, **config):
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.messages = bootstrap, topic, messages
        self.batch, self.duration_s, self.config = batch, duration_s, config
        self.stopping = threading.Event()
        self.errors = []

    def run(self):
        try:
            p = producer(self.bootstrap, **self.config)
            pause = self.duration_s / (len(self.messages) / self.batch)
            for start in range(0, len(self.messages), self.batch):
                if self.stopping.is_set():
                    break
                for key, value in self.messages[start:start + self.batch]:
                    p.produce(self.topic, key=key, value=value)
                p.poll(0)
                time.sleep(pause)
            assert p.flush(30) == 0
        except BaseException as e:  # noqa: BLE001 - reported by the test thread (finish)
            self.errors.append(e)

    def finish(self, timeout):
        """Waits for every message to be sent; fails if the producer failed or is not done."""
        self.join(timeout=timeout)
        assert not self.is_alive() and not self.errors, f"input producer failed: {self.errors}"


def stop_feeder_and_apps(feeder, apps):
    """Teardown: stops the input, SIGKILLs every app still running, waits for the feeder."""
    feeder.stopping.set()
    for app in apps:
        if app.alive():
            app.sigkill()
    feeder.join(timeout=30)


def wait_committed_output(broker, sink, expected_numbers, app, what, timeout_s):
    """Waits until the read_committed output (JSON values with a number "n") holds every
    number in `expected_numbers`, while `app` is running."""
    deadline = time.time() + timeout_s
    while True:
        committed_total = sum(watermarks(broker.bootstrap, sink, "read_committed"))
        if committed_total >= len(expected_numbers):
            numbers = {json.loads(m.value())["n"] for msgs in
                       read_partitions(broker.bootstrap, sink, "read_committed").values() for m in msgs}
            if numbers >= expected_numbers:
                return
        assert app.alive(), f"Quix app ({what}) exited:\n{app.output()}"
        assert time.time() < deadline, (
            f"{what}: read_committed output did not reach {len(expected_numbers)} numbers in {timeout_s}s "
            f"(LSO sum {committed_total}, hw {watermarks(broker.bootstrap, sink, 'read_uncommitted')}):\n"
            f"{app.output()}\n--- broker log:\n{broker.log_text()}")
        time.sleep(0.3)
