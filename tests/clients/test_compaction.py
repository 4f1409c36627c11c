"""Log compaction (cleanup.policy=compact) seen through real clients: librdkafka
(confluent-kafka) and kafka-python.

Every test starts its own broker whose cleaner runs every 200 ms, creates a 1-partition
compacted topic with 4 KiB segments (so each round of updates closes a segment), and
produces KEYS x ROUNDS updates. Offsets of every acknowledged record come from the
delivery reports, so every record a consumer reads is checked against what was produced
at that offset. The tests cover: the latest value per key survives while superseded
records disappear (offsets kept, gaps), tombstones disappear after delete.retention.ms,
keyless records are refused with INVALID_RECORD, a committed offset that was compacted
away stays a valid position, and a restart reads the same compacted log.
"""

import subprocess
import time

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KpTopicPartition
from kafka.errors import InvalidRecordError

from conftest import BINARY
from helpers import metric, scrape

TOPIC = "compacted"
KEYS = [f"key-{i:03d}" for i in range(50)]
ROUNDS = 40
CLEANER_ARGS = ["--log-cleaner-backoff-ms", "200", "--group-initial-rebalance-delay-ms", "0"]
TOPIC_CONFIG = {
    "cleanup.policy": "compact",
    "segment.bytes": "4096",
    "min.cleanable.dirty.ratio": "0.01",
    "delete.retention.ms": "0",
}
WAIT_S = 20
PUBLISH_S = 2.5  # shards publish partition figures every second (a scrape this long after shows later state)


# --- the broker and its metrics ------------------------------------------------------


@pytest.fixture
def compact_broker(broker_factory):
    b = broker_factory(extra_args=CLEANER_ARGS)
    yield b
    code = b.stop()
    assert code == 0, f"clean shutdown must exit 0, got {code}:\n{b.log_text()}"


def partition_records_removed(text, topic, partition=0):
    """Records the cleaner removed from one partition (the broker-wide counter where the
    per-partition one is not published)."""
    removed = metric(text, "tern_partition_cleaner_records_removed_total", topic=topic, partition=partition)
    return removed if removed is not None else metric(text, "tern_cleaner_records_removed_total")


def wait_cleaned(broker, since, topic=TOPIC, timeout_s=WAIT_S):
    """Waits until the cleaner removed records and the partition has no dirty closed
    segment left, as seen by a scrape published after `since` (so every segment closed
    before `since` has been cleaned). Returns the scrape."""
    deadline = time.time() + timeout_s
    text = ""
    while time.time() < deadline:
        text = scrape(broker)
        removed = partition_records_removed(text, topic)
        ratio = metric(text, "tern_partition_dirty_ratio", topic=topic, partition=0)
        if time.time() >= since + PUBLISH_S and removed and ratio == 0:
            return text
        time.sleep(0.2)
    lines = [line for line in text.splitlines() if "cleaner" in line or "dirty" in line]
    raise AssertionError("the cleaner did not clean in time:\n" + "\n".join(lines) + "\n" + broker.log_text())


# --- producing -----------------------------------------------------------------------


def create_compacted(broker, topic=TOPIC):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    futures = admin.create_topics([NewTopic(topic, num_partitions=1, config=TOPIC_CONFIG)], request_timeout=15)
    futures[topic].result(timeout=30)


class Produced:
    """A librdkafka producer that records every acknowledged record by offset."""

    def __init__(self, broker, topic=TOPIC):
        self.topic = topic
        self.producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5, "acks": "all"})
        self.by_offset = {}  # offset -> (key, value)
        self.errors = []

    def _on_delivery(self, err, msg):
        if err is not None:
            self.errors.append(err)
        else:
            self.by_offset[msg.offset()] = (msg.key(), msg.value())

    def send(self, records):
        """Produces (key, value) pairs as one flush (one batch, roughly)."""
        for key, value in records:
            self.producer.produce(self.topic, key=key, value=value, partition=0, on_delivery=self._on_delivery)
        assert self.producer.flush(30) == 0
        assert not self.errors, f"produce failed: {self.errors[:5]}"

    def last_by_key(self):
        last = {}
        for offset in sorted(self.by_offset):
            key, value = self.by_offset[offset]
            last[key] = value
        return last


def value(key, n):
    return f"{key}:{n}:".ljust(50, "x").encode()


def produce_rounds(produced, rounds=range(ROUNDS)):
    for n in rounds:
        produced.send([(k.encode(), value(k, n)) for k in KEYS])


def produce_filler(produced, count=3, tag="filler"):
    """Big records under their own keys, one flush each: each rolls the 4 KiB segment
    holding what was produced before it."""
    for i in range(count):
        produced.send([(f"{tag}-{i}".encode(), b"f" * 1500)])


def produce_dataset(broker):
    """KEYS x ROUNDS updates, then filler so the last round is in a closed segment;
    returns the Produced and the time production ended."""
    create_compacted(broker)
    produced = Produced(broker)
    produce_rounds(produced)
    produce_filler(produced)
    assert len(produced.by_offset) == len(KEYS) * ROUNDS + 3
    return produced, time.time()


# --- reading -------------------------------------------------------------------------


def read_confluent(broker, topic=TOPIC, group="unused-manual-assignment", timeout_s=20):
    """Reads partition 0 from offset 0 to its high watermark: [(offset, key, value)]."""
    consumer = Consumer({
        "bootstrap.servers": broker.bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": 100,
    })
    try:
        end = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1]
        consumer.assign([TopicPartition(topic, 0, 0)])
        records, position = [], 0
        deadline = time.time() + timeout_s
        while position < end and time.time() < deadline:
            for m in consumer.consume(num_messages=10_000, timeout=0.5):
                if m.error():
                    raise AssertionError(f"consume error: {m.error()}")
                records.append((m.offset(), m.key(), m.value()))
                position = m.offset() + 1
    finally:
        consumer.close()
    assert position >= end, f"confluent-kafka did not reach the high watermark {end}: at {position}"
    return records, end


def read_kafka_python(broker, topic=TOPIC, timeout_s=20):
    """The same with kafka-python."""
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False,
                             auto_offset_reset="earliest", fetch_max_wait_ms=100, request_timeout_ms=15000)
    tp = KpTopicPartition(topic, 0)
    try:
        consumer.assign([tp])
        end = consumer.end_offsets([tp])[tp]
        consumer.seek_to_beginning(tp)
        records, position = [], 0
        deadline = time.time() + timeout_s
        while position < end and time.time() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                for r in batch:
                    records.append((r.offset, r.key, r.value))
                    position = r.offset + 1
    finally:
        consumer.close()
    assert position >= end, f"kafka-python did not reach the high watermark {end}: at {position}"
    return records, end


def check_compacted(client, records, end, produced, deleted=()):
    """What every reader of a compacted log must see."""
    offsets = [r[0] for r in records]
    assert all(a < b for a, b in zip(offsets, offsets[1:])), f"{client}: offsets not strictly increasing"
    for offset, key, val in records:
        assert produced.by_offset.get(offset) == (key, val), (
            f"{client}: offset {offset} holds {key!r}={val!r}, produced {produced.by_offset.get(offset)!r}")
    assert end == max(produced.by_offset) + 1, f"{client}: high watermark {end}"
    assert len(records) < end, f"{client}: no gaps ({len(records)} records below {end})"
    assert len(records) < 0.4 * len(produced.by_offset), (
        f"{client}: {len(records)} of {len(produced.by_offset)} records left after compaction")
    last_read = {}
    for _, key, val in records:
        last_read[key] = val
    expected = {k: v for k, v in produced.last_by_key().items() if k not in deleted}
    assert {k: v for k, v in last_read.items() if k not in deleted} == expected, f"{client}: latest values differ"
    present = sorted(k for k in deleted if k in last_read or any(r[1] == k for r in records))
    assert not present, f"{client}: deleted keys still present: {present}"


# --- tests ---------------------------------------------------------------------------


def test_compaction_keeps_latest_value_per_key(compact_broker):
    produced, done = produce_dataset(compact_broker)
    text = wait_cleaned(compact_broker, done)
    assert metric(text, "tern_cleaner_passes_total") >= 1
    assert metric(text, "tern_partition_cleaner_last_run_timestamp_seconds", topic=TOPIC, partition=0) > 0

    for client, read in (("confluent-kafka", read_confluent), ("kafka-python", read_kafka_python)):
        records, end = read(compact_broker)
        check_compacted(client, records, end, produced)
        # Every record before the active segment is its key's latest: one per key.
        keys = [key for _, key, _ in records]
        assert len(keys) == len(set(keys)), f"{client}: superseded records left: {len(keys)} for {len(set(keys))} keys"

    # The cleaner's work is on /metrics: it read the dirty segments (twice: to map the
    # keys, then to rewrite), and the partition shrank. (Bytes written can be 0 here: the
    # latest value of every key is in the last segments, which need no rewrite, so every
    # rewritten segment came out empty.)
    read = metric(text, "tern_partition_cleaner_bytes_read_total", topic=TOPIC, partition=0)
    written = metric(text, "tern_partition_cleaner_bytes_written_total", topic=TOPIC, partition=0)
    size = metric(text, "tern_partition_size_bytes", topic=TOPIC, partition=0)
    produced_bytes = sum(len(k or b"") + len(v or b"") for k, v in produced.by_offset.values())
    assert read and read > produced_bytes, f"cleaner read {read} bytes of a {produced_bytes}-byte log"
    assert written is not None and written < read
    assert size < 0.2 * produced_bytes, f"partition is {size} bytes after compaction of {produced_bytes}"
    assert metric(text, "tern_cleaner_bytes_read_total") >= read

    # `tern topic describe` shows the same figures for a compacted topic.
    described = subprocess.run(
        [str(BINARY), "topic", "--brokers", compact_broker.bootstrap, "describe", TOPIC,
         "--admin-address", f"127.0.0.1:{compact_broker.admin_port}"],
        capture_output=True, text=True, timeout=30, check=True).stdout
    assert "cleanup.policy=compact" in described, described
    header = next(line for line in described.splitlines() if "DIRTY-RATIO" in line)
    row = described.splitlines()[described.splitlines().index(header) + 1].split()
    columns = dict(zip(header.split(), row))
    assert columns["PARTITION"] == "0" and int(columns["PASSES"]) >= 1, described
    assert int(columns["RECORDS-REMOVED"]) > 0 and int(columns["BYTES-READ"]) == int(read), described


def test_tombstones_removed_after_delete_retention(compact_broker):
    produced, done = produce_dataset(compact_broker)
    wait_cleaned(compact_broker, done)
    deleted = {k.encode() for k in KEYS[:10]}
    produced.send([(k, None) for k in sorted(deleted)])
    produce_filler(produced, tag="roll-tombstones")
    wait_cleaned(compact_broker, time.time())

    # The pass that first sees the tombstones removes every earlier value of their keys
    # but keeps the tombstones; with no new dirty data there is no further pass.
    records, _ = read_confluent(compact_broker)
    left = sorted((k, v) for _, k, v in records if k in deleted)
    assert left == [(k, None) for k in sorted(deleted)], f"after the first pass over the tombstones: {left}"

    # A later pass (which needs new dirty data) removes them: filler rolls a segment
    # about every second.
    deadline = time.time() + WAIT_S
    n = 0
    while True:
        produced.send([(f"more-{n % 2}".encode(), b"m" * 1000), (f"more-{(n + 1) % 2}".encode(), b"m" * 1000)])
        n += 1
        records, _ = read_confluent(compact_broker)
        if not any(key in deleted for _, key, _ in records):
            break
        assert time.time() < deadline, (
            f"deleted keys still present after {WAIT_S}s: "
            f"{sorted({(o, k, v is None) for o, k, v in records if k in deleted})[:12]}\n"
            + "\n".join(line for line in scrape(compact_broker).splitlines() if "cleaner" in line)
            + "\n" + compact_broker.log_text())
        time.sleep(0.25)

    for client, read in (("confluent-kafka", read_confluent), ("kafka-python", read_kafka_python)):
        records, end = read(compact_broker)
        check_compacted(client, records, end, produced, deleted=deleted)


def test_keyless_record_refused(compact_broker):
    create_compacted(compact_broker)
    produced = Produced(compact_broker)
    produced.send([(b"k", b"keyed")])

    reports = []
    p = Producer({"bootstrap.servers": compact_broker.bootstrap, "linger.ms": 5, "acks": "all",
                  "message.timeout.ms": 10000})
    p.produce(TOPIC, value=b"x", partition=0, on_delivery=lambda err, msg: reports.append(err))
    assert p.flush(15) == 0
    assert len(reports) == 1 and reports[0] is not None, f"keyless record accepted: {reports}"
    assert reports[0].code() == KafkaError.INVALID_RECORD, f"confluent-kafka got {reports[0]}"

    kp = KafkaProducer(bootstrap_servers=compact_broker.bootstrap, acks="all", linger_ms=5, retries=0,
                       request_timeout_ms=10000)
    try:
        future = kp.send(TOPIC, value=b"x", partition=0)
        with pytest.raises(InvalidRecordError):
            future.get(timeout=15)
        # A keyed record still goes through on the same producer.
        assert kp.send(TOPIC, key=b"k", value=b"keyed-2", partition=0).get(timeout=15).offset == 1
    finally:
        kp.close()

    records, end = read_confluent(compact_broker)
    assert end == 2 and records == [(0, b"k", b"keyed"), (1, b"k", b"keyed-2")], (records, end)


def test_committed_offset_in_compacted_range_stays_valid(compact_broker):
    produced, done = produce_dataset(compact_broker)
    wait_cleaned(compact_broker, done)
    records, end = read_confluent(compact_broker)
    present = {r[0] for r in records}
    assert 5 not in present, "offset 5 (a superseded update) should have been compacted away"
    expected = [r for r in records if r[0] > 5]

    group = "resume-in-gap"
    committer = Consumer({"bootstrap.servers": compact_broker.bootstrap, "group.id": group,
                          "enable.auto.commit": False})
    try:
        committer.commit(offsets=[TopicPartition(TOPIC, 0, 5)], asynchronous=False)
        committed = committer.committed([TopicPartition(TOPIC, 0)], timeout=10)
        assert committed[0].offset == 5, committed
    finally:
        committer.close()

    # librdkafka, joining the group; "error" turns an out-of-range position into an error.
    consumer = Consumer({"bootstrap.servers": compact_broker.bootstrap, "group.id": group,
                         "enable.auto.commit": False, "auto.offset.reset": "error", "fetch.wait.max.ms": 100,
                         "session.timeout.ms": 6000})
    got = []
    try:
        consumer.subscribe([TOPIC])
        deadline = time.time() + 20
        while (not got or got[-1][0] < end - 1) and time.time() < deadline:
            for m in consumer.consume(num_messages=10_000, timeout=0.5):
                if m.error():
                    raise AssertionError(f"resuming from a compacted-away offset failed: {m.error()}")
                got.append((m.offset(), m.key(), m.value()))
    finally:
        consumer.close()
    assert got == expected, f"confluent-kafka resumed with {got[:3]}..., expected {expected[:3]}..."

    # kafka-python, taking the committed position; a reset policy other than
    # earliest/latest raises on OFFSET_OUT_OF_RANGE.
    kc = KafkaConsumer(bootstrap_servers=compact_broker.bootstrap, group_id=group, enable_auto_commit=False,
                       auto_offset_reset="none", fetch_max_wait_ms=100, request_timeout_ms=15000)
    tp = KpTopicPartition(TOPIC, 0)
    got = []
    try:
        kc.assign([tp])
        assert kc.committed(tp) == 5
        deadline = time.time() + 20
        while (not got or got[-1][0] < end - 1) and time.time() < deadline:
            for batch in kc.poll(timeout_ms=500).values():
                got.extend((r.offset, r.key, r.value) for r in batch)
    finally:
        kc.close()
    assert got == expected, f"kafka-python resumed with {got[:3]}..., expected {expected[:3]}..."


def test_compacted_log_survives_restart(broker_factory):
    first = broker_factory(extra_args=CLEANER_ARGS)
    produced, done = produce_dataset(first)
    wait_cleaned(first, done)
    before_confluent = read_confluent(first)
    before_kafka_python = read_kafka_python(first)
    check_compacted("confluent-kafka", *before_confluent, produced)
    assert before_kafka_python == before_confluent
    code = first.stop()
    assert code == 0, f"clean shutdown must exit 0, got {code}:\n{first.log_text()}"

    second = broker_factory(data_dir=first.data_dir, extra_args=CLEANER_ARGS)
    assert read_confluent(second) == before_confluent
    assert read_kafka_python(second) == before_confluent

    # The cleaner goes on after the restart: one more round, cleaned, still one record
    # per key below the active segment and the latest values.
    produced.producer = Producer({"bootstrap.servers": second.bootstrap, "linger.ms": 5, "acks": "all"})
    produce_rounds(produced, rounds=[ROUNDS])
    produce_filler(produced, tag="filler-after-restart")
    wait_cleaned(second, time.time())
    for client, read in (("confluent-kafka", read_confluent), ("kafka-python", read_kafka_python)):
        records, end = read(second)
        check_compacted(client, records, end, produced)
    code = second.stop()
    assert code == 0, f"clean shutdown must exit 0, got {code}:\n{second.log_text()}"
