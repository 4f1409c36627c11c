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
