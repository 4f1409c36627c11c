"""`tern group ...` against the real broker with a real librdkafka group member."""

import subprocess
import time

from confluent_kafka import Consumer, Producer

from conftest import BINARY


def tern(broker, *args, check=True):
    result = subprocess.run([str(BINARY), "group", *args, "--brokers", broker.bootstrap],
                            capture_output=True, text=True, timeout=60)
    print(result.stdout, result.stderr)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def rows(output):
    """Data rows of the describe table: topic, partition, current, end, lag, consumer..."""
    return [line.split() for line in output.splitlines() if line.startswith("g1 ")]


def test_group_commands(broker):
    subprocess.run([str(BINARY), "topic", "create", "g1", "--partitions", "2", "--brokers", broker.bootstrap],
                   check=True, capture_output=True, timeout=30)
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    for n in range(20):
        producer.produce("g1", value=str(n).encode(), partition=n % 2)
    assert producer.flush(10) == 0

    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "active", "client.id": "worker-1",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe(["g1"])
    seen = 0
    deadline = time.time() + 30
    while seen < 20 and time.time() < deadline:
        message = consumer.poll(1)
        if message is not None and message.error() is None:
            seen += 1
    assert seen == 20
    consumer.commit(asynchronous=False)

    assert "active" in tern(broker, "list").stdout
    described = tern(broker, "describe", "active").stdout
    assert "group active: Stable, 1 members" in described
    table = rows(described)
    assert [(r[1], r[2], r[3], r[4]) for r in table] == [("0", "10", "10", "0"), ("1", "10", "10", "0")]
    assert all("(worker-1)" in " ".join(r) for r in table), "each partition shows its consumer"
    busy = tern(broker, "reset-offsets", "active", "--topic", "g1", "--to", "earliest", "--execute", check=False)
    assert busy.returncode != 0 and "inactive" in busy.stderr
    consumer.close()

    dry = tern(broker, "reset-offsets", "active", "--topic", "g1", "--to", "earliest").stdout
    assert "dry run" in dry
    assert [(r[2], r[4]) for r in rows(tern(broker, "describe", "active").stdout)] == [("10", "0"), ("10", "0")]

    tern(broker, "reset-offsets", "active", "--topic", "g1", "--to", "earliest", "--execute")
    assert [(r[2], r[4]) for r in rows(tern(broker, "describe", "active").stdout)] == [("0", "10"), ("0", "10")]
    tern(broker, "reset-offsets", "active", "--topic", "g1", "--to", "offset:3", "--execute")
    assert [r[2] for r in rows(tern(broker, "describe", "active").stdout)] == ["3", "3"]
    tern(broker, "reset-offsets", "active", "--topic", "g1", "--to", "latest", "--execute")
    assert [r[4] for r in rows(tern(broker, "describe", "active").stdout)] == ["0", "0"]

    # The next member starts where the reset put the offsets.
    tern(broker, "reset-offsets", "active", "--topic", "g1", "--to", "offset:8", "--execute")
    again = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "active", "auto.offset.reset": "latest"})
    again.subscribe(["g1"])
    values = set()
    deadline = time.time() + 30
    while len(values) < 4 and time.time() < deadline:
        message = again.poll(1)
        if message is not None and message.error() is None:
            values.add(int(message.value()))
    again.close()
    assert values == {16, 17, 18, 19}

    assert "deleted group active" in tern(broker, "delete", "active").stdout
    assert "active" not in tern(broker, "list").stdout
    missing = tern(broker, "describe", "active", check=False)
    assert missing.returncode != 0 and "does not exist" in missing.stderr
