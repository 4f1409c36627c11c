"""`tern produce` and `tern consume` against the real broker: keys land where Java
clients put them (murmur2), headers and keys survive, every --from form works, JSON
output is complete, and --group resumes from the committed offsets."""

import json
import subprocess
import time

from confluent_kafka import Consumer, Producer, TopicPartition

from conftest import BINARY


def tern(broker, *args, stdin=None, check=True):
    result = subprocess.run([str(BINARY), *args, "--brokers", broker.bootstrap], input=stdin,
                            capture_output=True, text=True, timeout=60)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_produce_and_consume_round_trip(broker):
    tern(broker, "topic", "create", "lines", "--partitions", "3")
    lines = "".join(f"key-{n}:value {n}\n" for n in range(60))
    result = tern(broker, "produce", "--topic", "lines", "--key-separator", ":", "--header", "source=cli",
                  stdin=lines)
    assert "produced 60 records to lines" in result.stderr

    # librdkafka's murmur2 partitioner (Java's default) must agree with ours.
    reference = Producer({"bootstrap.servers": broker.bootstrap, "partitioner": "murmur2"})
    expected_partition = {}
    for n in range(60):
        def remember(err, msg, n=n):
            expected_partition[f"key-{n}"] = msg.partition()
        reference.produce("lines", key=f"key-{n}", value=b"ref", on_delivery=remember)
    reference.flush(10)

    out = tern(broker, "consume", "--topic", "lines", "--exit-at-end", "--format", "json").stdout
    records = [json.loads(line) for line in out.splitlines()]
    ours = [r for r in records if r["value"] != "ref"]
    assert sorted(r["value"] for r in ours) == sorted(f"value {n}" for n in range(60))
    for r in ours:
        assert r["partition"] == expected_partition[r["key"]], r
        assert r["headers"] == {"source": "cli"}
        assert r["topic"] == "lines" and r["offset"] >= 0 and r["timestamp"] > 0

    text = tern(broker, "consume", "--topic", "lines", "--partition", "0", "--from", "offset:2", "--max-records",
                "3", "--print-key", "--key-separator", "=").stdout.splitlines()
    assert len(text) == 3 and all("=" in line for line in text)

    end = tern(broker, "consume", "--topic", "lines", "--from", "end", "--exit-at-end").stdout
    assert end == ""
    future = int(time.time() * 1000) + 3_600_000
    assert tern(broker, "consume", "--topic", "lines", "--from", f"timestamp:{future}", "--exit-at-end").stdout == ""
    assert len(tern(broker, "consume", "--topic", "lines", "--from", "timestamp:0", "--exit-at-end")
               .stdout.splitlines()) == 120


def test_group_consumption_resumes_from_committed_offsets(broker):
    tern(broker, "topic", "create", "jobs", "--partitions", "2")
    tern(broker, "produce", "--topic", "jobs", stdin="".join(f"job {n}\n" for n in range(10)))
    first = tern(broker, "consume", "--topic", "jobs", "--group", "workers", "--exit-at-end").stdout.splitlines()
    assert sorted(first) == sorted(f"job {n}" for n in range(10))
    assert tern(broker, "consume", "--topic", "jobs", "--group", "workers", "--exit-at-end").stdout == ""
    tern(broker, "produce", "--topic", "jobs", stdin="job 10\njob 11\n")
    assert sorted(tern(broker, "consume", "--topic", "jobs", "--group", "workers", "--exit-at-end")
                  .stdout.splitlines()) == ["job 10", "job 11"]
    # A real client sees the group's committed offsets.
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "workers"})
    committed = consumer.committed([TopicPartition("jobs", 0), TopicPartition("jobs", 1)], timeout=10)
    consumer.close()
    assert sum(tp.offset for tp in committed) == 12


def test_bad_usage_is_reported(broker):
    missing = tern(broker, "produce", "--topic", "nope-missing", stdin="x\n", check=False)
    assert missing.returncode != 0
    bad_from = tern(broker, "consume", "--topic", "lines", "--from", "yesterday", check=False)
    assert bad_from.returncode != 0 and "--from" in bad_from.stderr
