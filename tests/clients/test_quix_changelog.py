"""Quix Streams (a stateful stream-processing library on librdkafka) against Tern: a
pipeline that sums values per key in RocksDB-backed State restores that State from its
changelog topic after the local state directory is deleted.

Run 1 consumes 3 keys x 10 increments and emits a running total per key; Quix creates
the changelog topic itself (cleanup.policy=compact) and writes every State update to it.
The local state dir is then deleted, 3 x 5 more increments are produced and a new
Application with the same consumer group runs: its totals must continue from run 1's
(the only place they can come from is the changelog), and it must not reprocess run 1's
input (committed offsets).
"""

import json
import shutil
import signal
import threading

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource

from quixstreams import Application

from helpers import create_topic, producer

INPUT = "quix-input"
GROUP = "quix-sums"
KEYS = ["a", "b", "c"]
FIRST = range(1, 11)    # run 1: 1..10 per key -> total 55
SECOND = range(11, 16)  # run 2: 11..15 per key -> 66, 78, 91, 105, 120
RUN_DEADLINE_S = 25     # hard bound per Application run (a watchdog calls app.stop())


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


def run_app(bootstrap, state_dir, expected):
    """Runs a fresh Application until it emitted `expected` outputs (or went idle for
    10 s, or RUN_DEADLINE_S passed); returns the collected outputs."""
    app = Application(
        broker_address=bootstrap,
        consumer_group=GROUP,
        auto_offset_reset="earliest",
        state_dir=str(state_dir),
        commit_interval=1.0,
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

    assert state_dir.exists()
    shutil.rmtree(state_dir)

    produce(broker.bootstrap, SECOND)
    out2 = run_app(broker.bootstrap, state_dir, expected=len(KEYS) * len(SECOND))
    running = sum(FIRST)
    expected2 = [(n, running := running + n) for n in SECOND]
    # Totals start from 55 (restored), not from 0; and run 1's input is not reprocessed.
    assert totals_by_key(out2) == {k: expected2 for k in KEYS}, out2
    assert all(totals_by_key(out2)[k][-1][1] == sum(FIRST) + sum(SECOND) for k in KEYS)
