"""Small helpers shared by the client tests."""

import re
import time
import urllib.request

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def create_topic(bootstrap, name, partitions, config=None):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions, config=config or {})], request_timeout=15)
    futures[name].result(timeout=30)


def serve_until_test_ends(broker_factory, *extra_args):
    """The body of a broker fixture (`yield from` it): a broker started with `extra_args`,
    stopped with SIGTERM after the test; a clean shutdown must exit 0."""
    b = broker_factory(extra_args=list(extra_args))
    yield b
    code = b.stop()
    assert code == 0, f"clean shutdown must exit 0, got {code}:\n{b.log_text()}"


def consume_all(bootstrap, topic, partitions, expected, timeout_s=60, **extra):
    """Reads every partition from offset 0 with manual assignment until `expected`
    messages arrived; returns the messages."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "unused-manual-assignment",
        "enable.auto.commit": False,
        "fetch.wait.max.ms": 100,
        **extra,
    })
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    messages = []
    deadline = time.time() + timeout_s
    try:
        while len(messages) < expected and time.time() < deadline:
            batch = consumer.consume(num_messages=10_000, timeout=0.5)
            for m in batch:
                if m.error():
                    raise AssertionError(f"consume error: {m.error()}")
                messages.append(m)
    finally:
        consumer.close()
    return messages


def producer(bootstrap, **extra):
    return Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all", **extra})


def consume_to_end(bootstrap, topic, partitions, timeout_s=60):
    """Reads every partition from offset 0 up to its high watermark as of the start."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "unused-manual-assignment",
        "enable.auto.commit": False,
        "fetch.wait.max.ms": 100,
    })
    ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)}
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    messages = []
    positions = {p: 0 for p in range(partitions)}
    deadline = time.time() + timeout_s
    try:
        while any(positions[p] < ends[p] for p in ends) and time.time() < deadline:
            for m in consumer.consume(num_messages=10_000, timeout=0.5):
                if m.error():
                    raise AssertionError(f"consume error: {m.error()}")
                messages.append(m)
                positions[m.partition()] = m.offset() + 1
    finally:
        consumer.close()
    assert all(positions[p] >= ends[p] for p in ends), f"did not reach the end: {positions} vs {ends}"
    return messages


def metric(text, name, **labels):
    """/metrics: the sum of a metric's samples whose labels include `labels`; None if there is none."""
    total, found = 0.0, False
    for line in text.splitlines():
        match = re.match(r"^([a-z_]+)(\{(.*)\})? (\S+)$", line)
        if not match or match.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', match.group(3) or ""))
        if all(have.get(k) == str(v) for k, v in labels.items()):
            total += float(match.group(4))
            found = True
    return total if found else None


def scrape(broker):
    """The broker's /metrics text (its admin endpoint)."""
    host = getattr(broker, "host", "127.0.0.1")
    with urllib.request.urlopen(f"http://{host}:{broker.admin_port}/metrics", timeout=5) as response:
        return response.read().decode()


def kafka_string(value):
    """A Kafka protocol STRING (int16 length, UTF-8 bytes)."""
    import struct
    data = value.encode()
    return struct.pack(">h", len(data)) + data


def raw_request(bootstrap, api_key, version, correlation_id, body, client_id="raw-probe", flexible=False):
    """Sends one request over a plain socket, with a v1 header (v2, with its tagged
    fields, for a `flexible` version), and returns the response after its correlation
    id, which is checked (a flexible response's header tagged fields follow it)."""
    import socket
    import struct
    header = struct.pack(">hhi", api_key, version, correlation_id) + kafka_string(client_id)
    frame = header + (uvarint(0) if flexible else b"") + body
    host, port = bootstrap.split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(struct.pack(">i", len(frame)) + frame)
        size = struct.unpack(">i", sock.recv(4, socket.MSG_WAITALL))[0]
        answer = sock.recv(size, socket.MSG_WAITALL)
    (correlation,) = struct.unpack_from(">i", answer, 0)
    assert correlation == correlation_id, (correlation, correlation_id)
    return answer[4:]


def uvarint(value):
    """An unsigned varint (flexible versions' lengths and tags)."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def read_uvarint(data, at):
    """(value, next position) of the unsigned varint at `at`."""
    value, shift = 0, 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7


def fetch_v12(bootstrap, topic, partition, offset, last_fetched_epoch, current_epoch=-1):
    """One Fetch v12 (the first flexible version, with KIP-320's last fetched epoch) over a
    plain socket: {"error", "high_watermark", "records" (bytes), "diverging_epoch"
    ((epoch, end offset) or None)}."""
    import struct
    name = topic.encode()
    body = (struct.pack(">iiiibii", -1, 0, 0, 1 << 20, 0, 0, -1)
            + uvarint(2) + uvarint(len(name) + 1) + name
            + uvarint(2) + struct.pack(">iiqiqi", partition, current_epoch, offset, last_fetched_epoch, -1, 1 << 20)
            + uvarint(0) + uvarint(0)  # partition and topic tagged fields
            + uvarint(1) + uvarint(1) + uvarint(0))  # no forgotten topics, rack "", tagged fields
    answer = raw_request(bootstrap, 1, 12, 7, body, flexible=True)
    _, at = read_uvarint(answer, 0)  # response header tagged fields
    at += 4 + 2 + 4  # throttle, error, session id
    topics, at = read_uvarint(answer, at)
    assert topics == 2, topics
    name_len, at = read_uvarint(answer, at)
    at += name_len - 1
    partitions, at = read_uvarint(answer, at)
    assert partitions == 2, partitions
    index, error, high_watermark, _, _ = struct.unpack_from(">ihqqq", answer, at)
    assert index == partition
    at += 4 + 2 + 8 + 8 + 8
    aborted, at = read_uvarint(answer, at)
    at += max(aborted - 1, 0) * (8 + 8 + 1)
    at += 4  # preferred read replica
    records_len, at = read_uvarint(answer, at)
    records = answer[at:at + max(records_len - 1, 0)]
    at += max(records_len - 1, 0)
    diverging = None
    tags, at = read_uvarint(answer, at)
    for _ in range(tags):
        tag, at = read_uvarint(answer, at)
        tag_size, at = read_uvarint(answer, at)
        if tag == 0:
            diverging = struct.unpack_from(">iq", answer, at)
        at += tag_size
    return {"error": error, "high_watermark": high_watermark, "records": records, "diverging_epoch": diverging}
