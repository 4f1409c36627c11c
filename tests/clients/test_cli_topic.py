"""`tern topic ...` against the real broker, checked with its own output and with
librdkafka's view of the cluster."""

import subprocess

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, ConfigResource

from conftest import BINARY


def tern(broker, *args, check=True):
    result = subprocess.run([str(BINARY), "topic", *args, "--brokers", broker.bootstrap],
                            capture_output=True, text=True, timeout=60)
    print(result.stdout, result.stderr)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_topic_lifecycle(broker):
    assert "created topic orders" in tern(broker, "create", "orders", "--partitions", "3",
                                          "--config", "retention.ms=3600000").stdout
    again = tern(broker, "create", "orders", "--partitions", "3", check=False)
    assert again.returncode != 0 and "already exists" in again.stderr

    listed = tern(broker, "list").stdout.split()
    assert "orders" in listed and "__consumer_offsets" not in listed
    # Tern keeps its internal topic out of Metadata; --internal matters against Kafka.
    assert "orders" in tern(broker, "list", "--internal").stdout

    producer = Producer({"bootstrap.servers": broker.bootstrap})
    for n in range(30):
        producer.produce("orders", value=b"x", partition=n % 3)
    assert producer.flush(10) == 0
    described = tern(broker, "describe", "orders").stdout
    assert "topic orders: 3 partitions" in described
    rows = [line.split() for line in described.splitlines() if line.strip()[:1].isdigit()]
    assert [(r[0], r[2], r[3], r[4]) for r in rows] == [(str(p), "0", "10", "10") for p in range(3)]
    assert "retention.ms=3600000 (topic)" in described

    assert "set retention.ms=60000" in tern(broker, "alter-config", "orders", "--set", "retention.ms=60000").stdout
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    resource = ConfigResource(ConfigResource.Type.TOPIC, "orders")
    configs = admin.describe_configs([resource])[resource].result()
    assert configs["retention.ms"].value == "60000"
    tern(broker, "alter-config", "orders", "--delete", "retention.ms")
    configs = admin.describe_configs([resource])[resource].result()
    assert configs["retention.ms"].value != "60000"
    bad = tern(broker, "alter-config", "orders", "--set", "no.such.key=1", check=False)
    assert bad.returncode != 0 and "INVALID_CONFIG" in bad.stderr

    assert "deleted topic orders" in tern(broker, "delete", "orders").stdout
    assert "orders" not in tern(broker, "list").stdout.split()
    missing = tern(broker, "describe", "orders", check=False)
    assert missing.returncode != 0 and "does not exist" in missing.stderr


def test_unreachable_broker_says_what_to_do(tmp_path):
    result = subprocess.run([str(BINARY), "topic", "list", "--brokers", "127.0.0.1:1"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "cannot connect to 127.0.0.1:1" in result.stderr and "--brokers" in result.stderr


def logical_log_bytes(partition_dir):
    """Bytes of whole record batches in a partition's segment files, found by walking the
    batch headers (segments are preallocated, so the file length is not the log size)."""
    total = 0
    for segment in sorted(partition_dir.glob("*.log")):
        data = segment.read_bytes()
        position = 0
        while position + 17 <= len(data):
            length = int.from_bytes(data[position + 8:position + 12], "big", signed=True)
            if length <= 0 or data[position + 16] != 2 or position + 12 + length > len(data):
                break
            position += 12 + length
        total += position
    return total


def test_describe_shows_partition_sizes_from_describe_log_dirs(broker):
    from kafka import KafkaAdminClient

    tern(broker, "create", "sized", "--partitions", "3")
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
    for n in range(300):
        producer.produce("sized", value=b"v" * (n % 50), key=str(n).encode(), partition=n % 3)
        if n % 7 == 0:
            producer.flush(10)
    assert producer.flush(10) == 0

    on_disk = {p: logical_log_bytes(broker.data_dir / f"sized-{p}") for p in range(3)}
    assert all(size > 100 * 12 for size in on_disk.values()), on_disk

    described = tern(broker, "describe", "sized").stdout
    assert "SIZE-BYTES" in described
    rows = [line.split() for line in described.splitlines() if line.strip()[:1].isdigit()]
    assert {int(r[0]): int(r[5]) for r in rows} == on_disk

    # kafka-python, a second real client, reads the same figures over DescribeLogDirs.
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=10000)
    try:
        for query in (None, {"sized": [0, 1, 2]}, ["sized"]):
            (answer,) = admin.describe_log_dirs(query)
            (log_dir,) = answer["log_dirs"]
            assert log_dir["error_code"] == 0
            assert log_dir["log_dir"] == str(broker.data_dir)
            assert 0 < log_dir["usable_bytes"] <= log_dir["total_bytes"]
            topics = {t["name"]: t for t in log_dir["topics"]}
            assert {p["partition_index"]: p["partition_size"] for p in topics["sized"]["partitions"]} == on_disk
            if query is not None:
                assert set(topics) == {"sized"}
        # Unknown topics and partitions are left out, as Kafka does.
        (answer,) = admin.describe_log_dirs({"sized": [1, 7], "no-such-topic": [0]})
        topics = {t["name"]: t for t in answer["log_dirs"][0]["topics"]}
        assert list(topics) == ["sized"]
        assert [p["partition_index"] for p in topics["sized"]["partitions"]] == [1]
    finally:
        admin.close()


def test_a_closed_stdout_ends_report_commands_quietly(broker):
    tern(broker, "create", "piped", "--partitions", "2")
    # The reader exits before tern prints: like other Unix tools tern ends on SIGPIPE,
    # without a panic message.
    for command in (["topic", "describe", "piped"], ["topic", "list"], ["group", "list"]):
        result = subprocess.run(
            f"{BINARY} {' '.join(command)} --brokers {broker.bootstrap} | true; echo \"rc=${{PIPESTATUS[0]}}\"",
            shell=True, executable="/bin/bash", capture_output=True, text=True, timeout=60)
        assert "panicked" not in result.stderr, result.stderr
        assert result.stdout.strip() in ("rc=0", "rc=141"), (command, result.stdout, result.stderr)
