"""--cold-read-budget-mb: a consumer catching up on old data from disk, while the broker
takes produce writes, reads at most the budget, so that durable writes do not queue
behind its reads at the disk. With no writes, or with the budget off, it reads at full
speed. The broker runs two shards, and the consumer's connection may land on either: the
reads are paced whichever shard sends them. (perf/README.md has what the budget does to
produce latency.)"""

import threading
import time

from confluent_kafka import Consumer, TopicPartition

from helpers import create_topic, metric, producer, scrape

TOPIC = "history"
RECORD_BYTES = 10_000
RECORDS = 4_000  # 40 MB of old data
BUDGET_MB = 10


def fill(broker):
    p = producer(broker.bootstrap, **{"linger.ms": 20, "batch.size": 1_000_000})
    value = b"h" * RECORD_BYTES
    for _ in range(RECORDS):
        while True:
            try:
                p.produce(TOPIC, value=value, partition=0)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    assert p.flush(60) == 0


class Writer:
    """Small produce requests, so the broker keeps taking writes while the reads run."""

    def __init__(self, bootstrap):
        self.producer = producer(bootstrap, **{"linger.ms": 1})
        self.stop = threading.Event()
        self.acknowledged = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        def delivered(error, _message):
            if error is None:
                self.acknowledged.set()

        while not self.stop.is_set():
            try:
                self.producer.produce(TOPIC, value=b"new", partition=0, on_delivery=delivered)
            except BufferError:
                pass
            self.producer.poll(0.002)

    def __enter__(self):
        self.thread.start()
        # Reads are paced only once the shard writes: wait for the first acknowledged
        # write (a fresh producer first fetches metadata and connects), then a little more.
        assert self.acknowledged.wait(30), "the writer's records were never acknowledged"
        time.sleep(0.2)
        return self

    def __exit__(self, *_):
        self.stop.set()
        self.thread.join(10)
        self.producer.flush(10)


def read_old(broker, timeout_s=60) -> float:
    """Seconds to read the old records (offsets 0 .. RECORDS-1) from the start."""
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "unused", "enable.auto.commit": False,
                         "fetch.wait.max.ms": 100})
    consumer.assign([TopicPartition(TOPIC, 0, 0)])
    started = time.time()
    position = 0
    try:
        while position < RECORDS and time.time() - started < timeout_s:
            for m in consumer.consume(num_messages=1_000, timeout=0.5):
                assert not m.error(), m.error()
                position = max(position, m.offset() + 1)
    finally:
        consumer.close()
    assert position >= RECORDS, f"read only {position} of {RECORDS} old records in {timeout_s} s"
    return time.time() - started


def restart(broker, extra_args):
    """A restart empties the batch cache: every old record is then sent from its segment
    file (sendfile), the path the budget applies to."""
    assert broker.stop() == 0
    broker.extra_args = list(extra_args)
    broker.start()


def counters(broker):
    text = scrape(broker)
    return metric(text, "tern_paced_read_bytes_total"), metric(text, "tern_cold_read_budget_waits_total")


def test_cold_reads_keep_to_the_budget_only_while_the_shard_takes_writes(broker_factory):
    budget = ["--cold-read-budget-mb", str(BUDGET_MB)]
    broker = broker_factory(extra_args=budget)
    create_topic(broker.bootstrap, TOPIC, 1)
    fill(broker)
    old_mb = RECORDS * RECORD_BYTES / 1e6

    restart(broker, budget)
    with Writer(broker.bootstrap):
        budgeted = read_old(broker)
    paced_bytes, waits = counters(broker)
    print(f"{old_mb:.0f} MB read in {budgeted:.2f} s with writes and a {BUDGET_MB} MB/s budget "
          f"({paced_bytes / 1e6:.1f} MB paced, {waits:.0f} waits)")
    assert paced_bytes >= 0.9 * old_mb * 1e6, "the reads ran while the broker wrote, so they were paced"
    assert waits > 0
    assert budgeted >= 0.7 * old_mb / BUDGET_MB, f"{old_mb:.0f} MB in {budgeted:.2f} s is over the budget"
    assert budgeted <= 4 * old_mb / BUDGET_MB, "the budget slows reads, it must not stall them"

    # No writes: the same reads are not limited.
    restart(broker, budget)
    idle = read_old(broker)
    paced_bytes, waits = counters(broker)
    print(f"the same with no writes: {idle:.2f} s ({paced_bytes / 1e6:.1f} MB paced)")
    assert paced_bytes == 0 and waits == 0
    assert idle < budgeted / 2

    # Writes, and the budget off: paced (one job at a time, no readahead) but not limited.
    restart(broker, ["--cold-read-budget-mb", "0"])
    with Writer(broker.bootstrap):
        unlimited = read_old(broker)
    paced_bytes, waits = counters(broker)
    print(f"with writes and no budget: {unlimited:.2f} s ({paced_bytes / 1e6:.1f} MB paced, {waits:.0f} waits)")
    assert paced_bytes > 0 and waits == 0
    assert unlimited < budgeted / 2
