"""`tern bench` against the real broker: counts, summaries, JSON, and errors that are
shown rather than retried away. The bench's records are then read back with librdkafka
to prove they are real, well-formed Kafka records."""

import json
import subprocess

from confluent_kafka import Consumer, TopicPartition

from conftest import BINARY
from helpers import create_topic

BENCH_TIMEOUT_S = 120


def bench(broker, mode, *args, check=True):
    command = [str(BINARY), "bench", mode, "--brokers", broker.bootstrap, "--memory", "256K", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=BENCH_TIMEOUT_S)
    print(" ".join(command))
    print(result.stdout)
    print(result.stderr)
    if check:
        assert result.returncode == 0, f"bench failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result


def test_produce_then_consume_counts_match_and_json_is_written(broker, tmp_path):
    out = tmp_path / "produce.json"
    result = bench(broker, "produce", "--topic", "b1", "--partitions", "4", "--records", "200000",
                   "--record-size", "100", "--key-size", "8", "--producers", "2", "--json", str(out))
    assert "200000 records sent" in result.stdout
    assert "ms 99.9th" in result.stdout and "no errors" in result.stdout
    summary = json.loads(out.read_text())
    assert summary["mode"] == "produce"
    assert summary["produce"]["records"] == 200000
    assert summary["produce"]["records_per_sec"] > 0
    latency = summary["produce"]["latency"]
    assert 0 < latency["p50_ms"] <= latency["p99_ms"] <= latency["max_ms"]
    assert summary["errors"] == {}
    assert len(summary["timeline"]) >= 1

    out = tmp_path / "consume.json"
    result = bench(broker, "consume", "--topic", "b1", "--to-end", "--consumers", "2", "--json", str(out))
    assert "200000 records received" in result.stdout
    assert json.loads(out.read_text())["consume"]["records"] == 200000

    # A real client reads the same records: 8-byte keys, 100-byte values.
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "check", "enable.auto.commit": False})
    consumer.assign([TopicPartition("b1", p, 0) for p in range(4)])
    seen = 0
    try:
        while seen < 200000:
            messages = consumer.consume(10000, timeout=10)
            assert messages, f"stalled after {seen} records"
            for message in messages:
                assert message.error() is None, message.error()
                assert len(message.key()) == 8 and len(message.value()) == 100
                seen += 1
    finally:
        consumer.close()
    assert seen == 200000


def test_compressed_fixed_rate_e2e_reports_latency(broker, tmp_path):
    out = tmp_path / "e2e.json"
    result = bench(broker, "e2e", "--topic", "b2", "--partitions", "2", "--rate", "20000", "--duration", "3s",
                   "--warmup", "1s", "--compression", "lz4", "--linger-ms", "2", "--json", str(out))
    assert "end-to-end latency" in result.stdout and "99.99th" in result.stdout
    summary = json.loads(out.read_text())
    produced = summary["produce"]["records"]
    # 3 s at 20k/s after the warmup; allow for scheduling slack at both ends.
    assert 40000 <= produced <= 70000, produced
    assert summary["e2e"]["p50_ms"] > 0
    assert summary["e2e"]["p9999_ms"] >= summary["e2e"]["p99_ms"]
    assert [e["phase"] for e in summary["timeline"]][:1] == ["warmup"]


def test_broker_errors_are_counted_and_fail_the_run(broker, tmp_path):
    # Batches of ~64 KiB into a topic that takes at most 1 KiB per batch.
    create_topic(broker.bootstrap, "small", 1, {"max.message.bytes": "1024"})
    out = tmp_path / "errors.json"
    result = bench(broker, "produce", "--topic", "small", "--records", "5000", "--batch-bytes", "64K",
                   "--json", str(out), check=False)
    assert result.returncode != 0
    assert "MESSAGE_TOO_LARGE" in result.stdout
    summary = json.loads(out.read_text())
    assert summary["errors"]["MESSAGE_TOO_LARGE"] == 5000
    assert summary["produce"]["records"] == 0


def test_unreachable_broker_is_a_clear_error(tmp_path):
    result = subprocess.run([str(BINARY), "bench", "produce", "--brokers", "127.0.0.1:1", "--records", "10",
                             "--memory", "256K"], capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "cannot connect to 127.0.0.1:1" in result.stderr
