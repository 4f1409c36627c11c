"""Quix Streams (a stateful stream-processing library on librdkafka) against Tern: a
pipeline that sums values per key in RocksDB-backed State restores that State from its
changelog topic after the local state directory is deleted.

Run 1 consumes 3 keys x 10 increments and emits a running total per key; Quix creates
the changelog topic itself (cleanup.policy=compact) and writes every State update to it.
The changelog is then given 4 KiB segments and min.cleanable.dirty.ratio=0.01
(IncrementalAlterConfigs), and a second run on the same state dir processes 3 x 60 more
increments committing after every message, so every update is its own changelog record
and the changelog rolls several segments; the broker's cleaner (every 200 ms here)
compacts them, which the test checks in the metrics and by reading the changelog.
The local state dir is then deleted, 3 x 5 more increments are produced and a new
Application with the same consumer group runs: its totals must continue from the
earlier runs' (the only place they can come from is the compacted changelog), and it
must not reprocess their input (committed offsets).
"""

import json
import shutil
import signal
import threading
import time

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

from quixstreams import Application

from helpers import create_topic, metric, producer, scrape, serve_until_test_ends

INPUT = "quix-input"
GROUP = "quix-sums"
KEYS = ["a", "b", "c"]
FIRST = range(1, 11)     # run 1: 1..10 per key -> total 55
MIDDLE = range(11, 71)   # run 1b, same state dir, one changelog record per message -> 2485
SECOND = range(71, 76)   # run 2, restored: 2556, 2628, 2701, 2775, 2850
RUN_DEADLINE_S = 25      # hard bound per Application run (a watchdog calls app.stop())
CLEANER_WAIT_S = 20
COMPACT_CONFIGS = {"segment.bytes": "4096", "min.cleanable.dirty.ratio": "0.01"}


@pytest.fixture
def broker(broker_factory):
    """This test's broker runs the log cleaner every 200 ms (default: 15 s)."""
    yield from serve_until_test_ends(broker_factory, "--log-cleaner-backoff-ms", "200")


def produce(bootstrap, values):
    p = producer(bootstrap)
    for n in values:
        for i, k in enumerate(KEYS):
            # Keys on both partitions (a, c -> 0; b -> 1), so both changelog partitions restore.
            p.produce(INPUT, key=k.encode(), value=json.dumps({"k": k, "n": n}).encode(), partition=i % 2)
    assert p.flush(30) == 0


def add(value, state):
    total = state.get("total", 0) + value["n"]
    state.set("total", total)
    return {"k": value["k"], "n": value["n"], "total": total}


def run_app(bootstrap, state_dir, expected, commit_every=0):
    """Runs a fresh Application until it emitted `expected` outputs (or went idle for
    10 s, or RUN_DEADLINE_S passed); returns the collected outputs."""
    app = Application(
        broker_address=bootstrap,
        consumer_group=GROUP,
        auto_offset_reset="earliest",
        state_dir=str(state_dir),
        commit_interval=1.0,
        commit_every=commit_every,
        consumer_extra_config={"session.timeout.ms": 6000, "heartbeat.interval.ms": 500,
                               "fetch.wait.max.ms": 100},
        broker_availability_timeout=30,
        loglevel="INFO",
    )
    sdf = app.dataframe(app.topic(INPUT, value_deserializer="json"))
    sdf = sdf.apply(add, stateful=True)
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    watchdog = threading.Timer(RUN_DEADLINE_S, app.stop)
    watchdog.start()
    try:
        return app.run(count=expected, timeout=10)
    finally:
        watchdog.cancel()
        signal.signal(signal.SIGINT, handlers[0])
        signal.signal(signal.SIGTERM, handlers[1])


def totals_by_key(outputs):
    by_key = {}
    for o in outputs:
        by_key.setdefault(o["k"], []).append((o["n"], o["total"]))
    return by_key


def changelog_end_offsets(bootstrap, topic):
    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused-watermarks"})
    try:
        return [consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in sorted(metadata.topics[topic].partitions)]
    finally:
        consumer.close()


def expected_totals(values, start=0):
    running = start
    return [(n, running := running + n) for n in values]


def records_removed(text, topic, partitions):
    """Records the cleaner removed from the topic's partitions: the per-partition counter
    where the broker publishes it, else the broker-wide one (the changelog is then the
    only compacted topic with data)."""
    per_partition = [metric(text, "tern_partition_cleaner_records_removed_total", topic=topic, partition=p)
                     for p in partitions]
    if all(v is not None for v in per_partition):
        return min(per_partition)
    return metric(text, "tern_cleaner_records_removed_total") or 0


def read_changelog(bootstrap, topic, partition, end, timeout_s=15):
    """Offsets of the changelog partition's records below `end`."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused-changelog-reader",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 100})
    offsets = []
    try:
        consumer.assign([TopicPartition(topic, partition, 0)])
        deadline = time.time() + timeout_s
        while (not offsets or offsets[-1] < end - 1) and time.time() < deadline:
            for m in consumer.consume(num_messages=10_000, timeout=0.5):
                assert not m.error(), f"changelog read error: {m.error()}"
                offsets.append(m.offset())
    finally:
        consumer.close()
    assert offsets and offsets[-1] == end - 1, f"changelog {topic}/{partition} read to {offsets[-1:]} of {end}"
    return offsets


def test_state_restored_from_changelog_after_state_dir_deleted(broker, tmp_path):
    create_topic(broker.bootstrap, INPUT, 2)
    state_dir = tmp_path / "quix-state"

    produce(broker.bootstrap, FIRST)
    out1 = run_app(broker.bootstrap, state_dir, expected=len(KEYS) * len(FIRST))
    running = 0
    expected1 = [(n, running := running + n) for n in FIRST]
    assert totals_by_key(out1) == {k: expected1 for k in KEYS}, out1

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    changelogs = [t for t in admin.list_topics(timeout=10).topics if t.startswith("changelog__")]
    assert len(changelogs) == 1, f"expected one changelog topic, got {changelogs}"
    changelog = changelogs[0]
    assert GROUP in changelog, changelog
    resource = ConfigResource(ConfigResource.Type.TOPIC, changelog)
    configs = admin.describe_configs([resource])[resource].result(timeout=15)
    assert configs["cleanup.policy"].value == "compact"
    ends = changelog_end_offsets(broker.bootstrap, changelog)
    assert len(ends) == 2, "changelog has as many partitions as the input topic"
    assert all(end > 0 for end in ends), f"both changelog partitions hold State updates: {ends}"

    # Small segments and an eager cleaner for the changelog; then many more updates on
    # the same state dir, one changelog record each, roll several segments.
    alter = ConfigResource(ConfigResource.Type.TOPIC, changelog, incremental_configs=[
        ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)
        for name, value in COMPACT_CONFIGS.items()])
    admin.incremental_alter_configs([alter])[alter].result(timeout=15)
    configs = admin.describe_configs([resource])[resource].result(timeout=15)
    assert {name: configs[name].value for name in COMPACT_CONFIGS} == COMPACT_CONFIGS

    produce(broker.bootstrap, MIDDLE)
    out1b = run_app(broker.bootstrap, state_dir, expected=len(KEYS) * len(MIDDLE), commit_every=1)
    assert totals_by_key(out1b) == {k: expected_totals(MIDDLE, sum(FIRST)) for k in KEYS}, out1b
    ends = changelog_end_offsets(broker.bootstrap, changelog)

    # The cleaner compacts both changelog partitions (every segment but the active one).
    deadline = time.time() + CLEANER_WAIT_S
    while True:
        text = scrape(broker)
        removed = records_removed(text, changelog, range(len(ends)))
        last_runs = [metric(text, "tern_partition_cleaner_last_run_timestamp_seconds", topic=changelog, partition=p)
                     for p in range(len(ends))]
        if removed > 0 and all(last_runs):
            break
        assert time.time() < deadline, (
            f"the changelog was not compacted in {CLEANER_WAIT_S}s (ends {ends}):\n"
            + "\n".join(line for line in text.splitlines() if "cleaner" in line or "dirty" in line or "size" in line)
            + "\n" + broker.log_text())
        time.sleep(0.2)
    for p, end in enumerate(ends):
        offsets = read_changelog(broker.bootstrap, changelog, p, end)
        assert len(offsets) < end, f"changelog partition {p} has no gaps after compaction: {len(offsets)} of {end}"

    assert state_dir.exists()
    shutil.rmtree(state_dir)

    produce(broker.bootstrap, SECOND)
    out2 = run_app(broker.bootstrap, state_dir, expected=len(KEYS) * len(SECOND))
    expected2 = expected_totals(SECOND, sum(FIRST) + sum(MIDDLE))
    # Totals continue from 2485 (restored from the compacted changelog), not from 0;
    # and the earlier runs' input is not reprocessed.
    assert totals_by_key(out2) == {k: expected2 for k in KEYS}, out2
    assert all(totals_by_key(out2)[k][-1][1] == sum(FIRST) + sum(MIDDLE) + sum(SECOND) for k in KEYS)
