"""The topic config compression.type decides how batches are stored. A zstd topic receives
uncompressed and lz4 batches from librdkafka and gzip batches from kafka-python; both
clients read back every record (value, key, headers, timestamp) with CRC checks on, and
the segment file on disk holds only zstd batches with valid CRCs. compression.type
=uncompressed stores gzip batches decompressed; =producer keeps each producer's codec
(gzip, zstd); a broker-wide `--broker-config compression.type=zstd` applies to topics
without their own.

The on-disk proof parses the partition's .log files as Kafka RecordBatch v2 (baseOffset
i64, batchLength i32, leaderEpoch i32, magic i8, crc u32, attributes i16 at byte 21, ...;
codec = attributes & 7). Active segments are preallocated, so parsing stops at the
zero-filled tail (batchLength 0). kafka-python reads zstd only with the `zstandard`
package (tests/clients/requirements.txt)."""

import struct
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KpTopicPartition
from kafka.record.util import calc_crc32c

from helpers import create_topic

NONE, GZIP, ZSTD = 0, 1, 4  # codec ids in a batch's attributes


def stored_batches(broker, topic, partition=0):
    """(base offset, record count, codec) of every batch in the partition's segment files,
    checking magic 2 and each batch's CRC-32C."""
    batches = []
    for segment in sorted((broker.data_dir / f"{topic}-{partition}").glob("*.log")):
        data = segment.read_bytes()
        pos = 0
        while pos + 61 <= len(data):
            base_offset, batch_length = struct.unpack_from(">qi", data, pos)
            if batch_length == 0:
                break  # preallocated, zero-filled tail of the active segment
            end = pos + 12 + batch_length
            assert end <= len(data), f"{segment.name}: batch at {pos} runs past the end of the file"
            magic = data[pos + 16]
            (crc,) = struct.unpack_from(">I", data, pos + 17)
            (attributes,) = struct.unpack_from(">h", data, pos + 21)
            (record_count,) = struct.unpack_from(">i", data, pos + 57)
            assert magic == 2, f"{segment.name}: batch at {pos} has magic {magic}"
            assert crc == calc_crc32c(memoryview(data)[pos + 21:end]), f"{segment.name}: bad CRC at offset {base_offset}"
            batches.append((base_offset, record_count, attributes & 0x7))
            pos = end
    return batches


def records(source, n):
    """n records (key, value, headers, timestamp ms) tagged with their producer; every
    tenth one is large and compressible, so batches span several KiB."""
    now_ms = int(time.time() * 1000)
    out = []
    for i in range(n):
        value = f"{source}-{i}".encode() + (b"." * 20_000 if i % 10 == 0 else b"")
        out.append((f"k{i % 7}".encode(), value, [("source", source.encode()), ("i", str(i).encode())], now_ms - n + i))
    return out


def produce_confluent(bootstrap, topic, codec, recs):
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5, "compression.type": codec})
    errors = []
    for key, value, headers, ts in recs:
        p.produce(topic, key=key, value=value, headers=headers, timestamp=ts,
                  on_delivery=lambda err, msg: err and errors.append(err))
    assert p.flush(30) == 0
    assert not errors, errors


def produce_kafka_python(bootstrap, topic, codec, recs):
    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, compression_type=codec)
    try:
        futures = [p.send(topic, key=key, value=value, headers=headers, timestamp_ms=ts)
                   for key, value, headers, ts in recs]
        p.flush(30)
        for f in futures:
            f.get(timeout=30)
    finally:
        p.close(timeout=10)


def read_confluent(bootstrap, topic, expected, timeout_s=30):
    """Every record of partition 0 from offset 0 as (key, value, headers, timestamp)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused-manual-assignment",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 100, "check.crcs": True})
    consumer.assign([TopicPartition(topic, 0, 0)])
    out = []
    deadline = time.time() + timeout_s
    try:
        while len(out) < expected and time.time() < deadline:
            for m in consumer.consume(num_messages=1000, timeout=0.5):
                assert not m.error(), f"consume error: {m.error()}"
                out.append((m.key(), m.value(), m.headers() or [], m.timestamp()[1]))
    finally:
        consumer.close()
    return out


def read_kafka_python(bootstrap, topic, expected, timeout_s=30):
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, check_crcs=True,
                             auto_offset_reset="earliest", fetch_max_wait_ms=100)
    consumer.assign([KpTopicPartition(topic, 0)])
    consumer.seek_to_beginning()
    out = []
    deadline = time.time() + timeout_s
    try:
        while len(out) < expected and time.time() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                out.extend((m.key, m.value, list(m.headers), m.timestamp) for m in batch)
    finally:
        consumer.close()
    return out


def check_read_back(bootstrap, topic, produced):
    """Both clients read exactly the produced records, in order (one partition)."""
    expected = list(produced)
    for name, read in [("librdkafka", read_confluent), ("kafka-python", read_kafka_python)]:
        got = read(bootstrap, topic, len(expected))
        assert len(got) == len(expected), f"{name}: read {len(got)} of {len(expected)} records"
        for i, (g, e) in enumerate(zip(got, expected)):
            assert g == e, f"{name}: record {i} differs: {g[:2]!r}... vs {e[:2]!r}..."


def test_zstd_topic_recompresses_every_producer_codec(broker):
    create_topic(broker.bootstrap, "zstd-topic", 1, {"compression.type": "zstd"})
    plain, gzipped, lz4 = records("none", 150), records("gzip", 150), records("lz4", 150)
    produce_confluent(broker.bootstrap, "zstd-topic", "none", plain)
    produce_kafka_python(broker.bootstrap, "zstd-topic", "gzip", gzipped)
    produce_confluent(broker.bootstrap, "zstd-topic", "lz4", lz4)

    batches = stored_batches(broker, "zstd-topic")
    assert sum(count for _, count, _ in batches) == 450
    assert len(batches) >= 3
    assert {codec for _, _, codec in batches} == {ZSTD}, f"every batch stored as zstd: {batches}"
    assert [b[0] for b in batches] == sorted(b[0] for b in batches)
    check_read_back(broker.bootstrap, "zstd-topic", plain + gzipped + lz4)


def test_uncompressed_topic_stores_gzip_batches_decompressed(broker):
    create_topic(broker.bootstrap, "plain-topic", 1, {"compression.type": "uncompressed"})
    gzipped, confluent_gzipped = records("kp-gzip", 100), records("rd-gzip", 100)
    produce_kafka_python(broker.bootstrap, "plain-topic", "gzip", gzipped)
    produce_confluent(broker.bootstrap, "plain-topic", "gzip", confluent_gzipped)

    batches = stored_batches(broker, "plain-topic")
    assert sum(count for _, count, _ in batches) == 200
    assert {codec for _, _, codec in batches} == {NONE}, f"every batch stored uncompressed: {batches}"
    check_read_back(broker.bootstrap, "plain-topic", gzipped + confluent_gzipped)


def test_producer_policy_keeps_each_producers_codec(broker):
    # (zstd from librdkafka as the second codec: kafka-python reads lz4 and snappy only with
    # more optional packages.)
    create_topic(broker.bootstrap, "as-sent", 1, {"compression.type": "producer"})
    gzipped, zstd = records("gzip", 100), records("zstd", 100)
    produce_kafka_python(broker.bootstrap, "as-sent", "gzip", gzipped)
    produce_confluent(broker.bootstrap, "as-sent", "zstd", zstd)

    batches = stored_batches(broker, "as-sent")
    assert sum(count for _, count, _ in batches) == 200
    codecs = [codec for _, _, codec in batches]
    gzip_batches = [c for c in codecs if c == GZIP]
    assert codecs == gzip_batches + [ZSTD] * (len(codecs) - len(gzip_batches)), f"gzip then zstd: {batches}"
    assert gzip_batches and len(gzip_batches) < len(codecs)
    check_read_back(broker.bootstrap, "as-sent", gzipped + zstd)


def test_broker_wide_compression_type_applies_to_topics_without_their_own(broker_factory):
    broker = broker_factory(extra_args=["--broker-config", "compression.type=zstd"])
    create_topic(broker.bootstrap, "broker-default", 1)
    create_topic(broker.bootstrap, "own-codec", 1, {"compression.type": "producer"})
    for topic in ["broker-default", "own-codec"]:
        produce_confluent(broker.bootstrap, topic, "gzip", records(topic, 50))
    assert {codec for _, _, codec in stored_batches(broker, "broker-default")} == {ZSTD}
    assert {codec for _, _, codec in stored_batches(broker, "own-codec")} == {GZIP}
    assert len(read_confluent(broker.bootstrap, "broker-default", 50)) == 50
    assert broker.stop() == 0
