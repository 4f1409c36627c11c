"""librdkafka (confluent-kafka) against the real broker with 2 shards: keyed messages
over 8 partitions (both shards own some), exactly once and in order per partition with
keys, headers and timestamps intact; compressed batches of every codec round-trip;
restart replays everything and accepts more."""

import collections

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from helpers import consume_all, create_topic, producer

MESSAGES = 100_000
PARTITIONS = 8


def produce_keyed(bootstrap, topic, count, compression="none", start=0):
    acked = []
    errors = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(err)
        else:
            acked.append((msg.partition(), msg.offset(), msg.key()))

    p = producer(bootstrap, **{"compression.type": compression, "batch.size": 65536})
    for i in range(start, start + count):
        key = f"key-{i % 1000}".encode()
        p.produce(topic, key=key, value=f"value-{i}".encode(), headers=[("seq", str(i).encode()), ("codec", compression.encode())],
                  timestamp=1_700_000_000_000 + i, on_delivery=on_delivery)
        if i % 10_000 == 0:
            p.poll(0)
    assert p.flush(60) == 0, "every message delivered"
    assert not errors, errors[:5]
    return acked


def check_messages(messages, start, count, compression="none"):
    assert len(messages) == count, f"expected {count} messages, got {len(messages)}"
    by_partition = collections.defaultdict(list)
    seen = set()
    for m in messages:
        headers = dict(m.headers())
        seq = int(headers["seq"])
        assert seq not in seen, f"duplicate message {seq}"
        seen.add(seq)
        assert m.key() == f"key-{seq % 1000}".encode()
        assert m.value() == f"value-{seq}".encode()
        assert headers["codec"] == compression.encode()
        assert m.timestamp()[1] == 1_700_000_000_000 + seq
        by_partition[m.partition()].append((m.offset(), seq))
    assert seen == set(range(start, start + count))
    for partition, entries in by_partition.items():
        offsets = [o for o, _ in entries]
        seqs = [s for _, s in entries]
        assert offsets == sorted(offsets), f"partition {partition} out of offset order"
        assert seqs == sorted(seqs), f"partition {partition} out of produce order"
    return by_partition


def test_100k_keyed_messages_exactly_once_in_order(broker):
    create_topic(broker.bootstrap, "keyed", PARTITIONS)
    acked = produce_keyed(broker.bootstrap, "keyed", MESSAGES)
    assert len(acked) == MESSAGES
    messages = consume_all(broker.bootstrap, "keyed", PARTITIONS, MESSAGES)
    by_partition = check_messages(messages, 0, MESSAGES)
    assert len(by_partition) == PARTITIONS, "keys spread over every partition"
    # Same key, same partition.
    key_partition = {}
    for m in messages:
        assert key_partition.setdefault(m.key(), m.partition()) == m.partition()


@pytest.mark.parametrize("codec", ["gzip", "lz4", "zstd", "snappy"])
def test_compressed_batches_round_trip(broker, codec):
    topic = f"compressed-{codec}"
    create_topic(broker.bootstrap, topic, 2)
    produce_keyed(broker.bootstrap, topic, 5_000, compression=codec)
    messages = consume_all(broker.bootstrap, topic, 2, 5_000)
    check_messages(messages, 0, 5_000, compression=codec)


def test_restart_replays_from_zero_and_accepts_more(broker_factory, tmp_path):
    data = tmp_path / "restart-data"
    first = broker_factory(data_dir=data)
    create_topic(first.bootstrap, "replay", 4)
    produce_keyed(first.bootstrap, "replay", 20_000)
    assert first.stop() == 0
    second = broker_factory(data_dir=data)
    messages = consume_all(second.bootstrap, "replay", 4, 20_000)
    check_messages(messages, 0, 20_000)
    produce_keyed(second.bootstrap, "replay", 1_000, start=20_000)
    messages = consume_all(second.bootstrap, "replay", 4, 21_000)
    check_messages(messages, 0, 21_000)
    assert second.stop() == 0


def test_unknown_topic_and_bad_partition_are_errors_not_hangs(broker):
    create_topic(broker.bootstrap, "exists", 1)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    metadata = admin.list_topics(timeout=10)
    assert "exists" in metadata.topics
    assert len(metadata.topics["exists"].partitions) == 1
    errors = []
    p = producer(broker.bootstrap, **{"message.timeout.ms": 5000})
    try:
        p.produce("exists", value=b"x", partition=5, on_delivery=lambda err, msg: errors.append(err))
    except KafkaException as error:  # librdkafka may refuse at once when metadata is known
        errors.append(error.args[0])
    p.flush(10)
    assert len(errors) == 1 and errors[0] is not None, "a partition that does not exist is an error"


def test_acks_zero_and_acks_one_are_written(broker):
    create_topic(broker.bootstrap, "acks", 2)
    for acks, start in (("0", 0), ("1", 5_000)):
        p = producer(broker.bootstrap, acks=acks)
        for i in range(start, start + 5_000):
            p.produce("acks", value=f"{i}".encode(), partition=i % 2)
        assert p.flush(30) == 0
    messages = consume_all(broker.bootstrap, "acks", 2, 10_000)
    assert sorted(int(m.value()) for m in messages) == list(range(10_000))
