"""Startup checks with clear messages, and Fetch/ListOffsets behaviour clients rely on:
long polling woken by a produce, OFFSET_OUT_OF_RANGE past the end, offsets by time."""

import socket
import subprocess
import threading
import time

from confluent_kafka import Consumer, KafkaError, TopicPartition

from conftest import BINARY, free_port
from helpers import create_topic, producer


def serve(*args, timeout=20):
    return subprocess.run([str(BINARY), "serve", "--cores", "0-1", "--no-pin", "--admin-listen", "off", *args],
                          capture_output=True, timeout=timeout, text=True)


def test_port_in_use_and_bad_data_dir_are_reported(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = serve("--listen", f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "d"))
    assert result.returncode != 0
    assert "is in use" in result.stderr

    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    result = serve("--listen", f"127.0.0.1:{free_port()}", "--data-dir", str(not_a_dir / "sub"))
    assert result.returncode != 0
    assert "data dir" in result.stderr


def test_a_data_dir_in_use_is_refused(broker):
    # Same data dir, another port: two brokers would corrupt each other's logs.
    result = serve("--listen", f"127.0.0.1:{free_port()}", "--data-dir", str(broker.data_dir), "--memory", "1M")
    assert result.returncode != 0
    assert "in use by another tern process" in result.stderr


def test_locked_memory_limit_is_checked(tmp_path):
    result = serve("--listen", f"127.0.0.1:{free_port()}", "--data-dir", str(tmp_path / "d"), "--memory", "1G")
    assert result.returncode != 0
    assert "locked-memory limit" in result.stderr and "ulimit -l" in result.stderr


def test_help_documents_every_flag():
    out = subprocess.run([str(BINARY), "serve", "--help"], capture_output=True, text=True, check=True).stdout
    for flag in ["--listen", "--advertised-address", "--data-dir", "--cores", "--no-pin", "--node-id", "--memory",
                 "--max-request-bytes", "--auto-create-topics", "--default-partitions", "--flush-interval-ms",
                 "--flush-bytes", "--group-initial-rebalance-delay-ms", "--offsets-retention-ms",
                 "--batch-cache-bytes", "--admin-listen", "--config", "--print-config", "--cold-read-budget-mb"]:
        assert flag in out, flag


def test_long_poll_is_woken_by_produce_and_out_of_range_is_reported(broker):
    create_topic(broker.bootstrap, "poll", 1)
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "g", "enable.auto.commit": False,
                         "fetch.wait.max.ms": 5000})
    consumer.assign([TopicPartition("poll", 0, 0)])
    consumer.poll(0.5)  # fetch is now parked in a long poll on the empty partition

    def produce_later():
        time.sleep(0.5)
        p = producer(broker.bootstrap)
        p.produce("poll", value=b"wake")
        p.flush(10)

    threading.Thread(target=produce_later).start()
    started = time.time()
    message = None
    while message is None and time.time() - started < 10:
        message = consumer.poll(0.1)
    assert message is not None and message.value() == b"wake"
    assert time.time() - started < 3, "the long poll returned when data arrived, not at max wait"
    consumer.close()

    strict = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "g2", "auto.offset.reset": "error"})
    strict.assign([TopicPartition("poll", 0, 50)])
    error = None
    deadline = time.time() + 10
    while error is None and time.time() < deadline:
        m = strict.poll(0.2)
        if m is not None and m.error():
            error = m.error()
    strict.close()
    assert error is not None and error.code() == KafkaError._AUTO_OFFSET_RESET, error


def test_offsets_for_times(broker):
    create_topic(broker.bootstrap, "times", 1)
    p = producer(broker.bootstrap, **{"linger.ms": 0})
    for i in range(100):
        p.produce("times", value=f"{i}".encode(), timestamp=1_000_000 + i * 10)
        p.flush(10)
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "t"})
    found = consumer.offsets_for_times([TopicPartition("times", 0, 1_000_505)], timeout=10)
    assert found[0].offset == 51, "first message with timestamp >= 1_000_505"
    later = consumer.offsets_for_times([TopicPartition("times", 0, 9_000_000)], timeout=10)
    assert later[0].offset == -1, "nothing that late"
    low, high = consumer.get_watermark_offsets(TopicPartition("times", 0), timeout=10)
    assert (low, high) == (0, 100)
    consumer.close()
