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


CHILD = r"""
import sys, time
from confluent_kafka import Consumer
c = Consumer({"bootstrap.servers": sys.argv[1], "group.id": sys.argv[2], "auto.offset.reset": "earliest",
              "enable.auto.commit": False, "session.timeout.ms": 6000, "heartbeat.interval.ms": 500})
c.subscribe([sys.argv[3]])
while True:
    m = c.poll(0.2)
    if m is not None and not m.error():
        print(m.value().decode(), flush=True)
        c.commit(message=m, asynchronous=False)
"""


def test_killed_consumer_partitions_move_to_the_survivors(broker, tmp_path):
    import subprocess
    import sys

    create_topic(broker.bootstrap, "failover", 6)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    children = [subprocess.Popen([sys.executable, str(script), broker.bootstrap, "gk", "failover"],
                                 stdout=subprocess.PIPE, text=True) for _ in range(3)]
    try:
        produce_n(broker.bootstrap, "failover", 600)
        time.sleep(8)  # all three joined and are consuming
        children[0].kill()  # SIGKILL: no LeaveGroup, the session timeout must notice
        killed_at = time.time()
        produce_n(broker.bootstrap, "failover", 600, start=600)
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        deadline = time.time() + 40
        members = None
        while time.time() < deadline:
            described = admin.describe_consumer_groups(["gk"])["gk"].result(timeout=10)
            members = described.members
            owned = sorted(tp.partition for m in members for tp in m.assignment.topic_partitions)
            if len(members) == 2 and owned == list(range(6)) and str(described.state).endswith("STABLE"):
                break
            time.sleep(0.5)
        rebalanced_after = time.time() - killed_at
        assert members is not None and len(members) == 2, f"the dead member is gone: {members}"
        time.sleep(3)
    finally:
        for child in children:
            child.kill()
    outputs = [int(line) for child in children for line in child.communicate(timeout=10)[0].split()]
    assert set(outputs) >= set(range(1200)), "nothing lost"
    duplicates = len(outputs) - len(set(outputs))
    assert duplicates <= 50, f"{duplicates} duplicates: only the uncommitted window may be replayed"
    assert rebalanced_after < 30, f"the group rebalanced {rebalanced_after:.1f}s after the kill"


def test_kafka_python_group_consumer_interoperates(broker):
    from kafka import KafkaConsumer

    create_topic(broker.bootstrap, "kp-group", 2)
    produce_n(broker.bootstrap, "kp-group", 500)
    consumer = KafkaConsumer("kp-group", bootstrap_servers=broker.bootstrap, group_id="kp", auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=10000)
    got = []
    for message in consumer:
        got.append(int(message.value))
        if len(got) == 500:
            break
    consumer.commit()
    consumer.close()
    assert sorted(got) == list(range(500))
    # librdkafka in the same group resumes where kafka-python committed.
    produce_n(broker.bootstrap, "kp-group", 20, start=500)
    c = group_consumer(broker.bootstrap, "kp")
    c.subscribe(["kp-group"])
    more = []
    deadline = time.time() + 30
    while len(more) < 20 and time.time() < deadline:
        m = c.poll(0.2)
        if m is not None and not m.error():
            more.append(int(m.value()))
    c.close()
    assert sorted(more) == list(range(500, 520))


def test_group_resumes_from_committed_offsets_after_broker_restart(broker_factory, tmp_path):
    data = tmp_path / "groups-restart"
    first = broker_factory(data_dir=data)
    create_topic(first.bootstrap, "resume", 3)
    produce_n(first.bootstrap, "resume", 300)
    c = group_consumer(first.bootstrap, "gr")
    c.subscribe(["resume"])
    got = []
    deadline = time.time() + 30
    while len(got) < 150 and time.time() < deadline:
        m = c.poll(0.2)
        if m is not None and not m.error():
            got.append(int(m.value()))
            c.commit(message=m, asynchronous=False)
    c.close()
    assert first.stop() == 0
    second = broker_factory(data_dir=data)
    c = group_consumer(second.bootstrap, "gr")
    c.subscribe(["resume"])
    rest = []
    deadline = time.time() + 30
    while len(got) + len(rest) < 300 and time.time() < deadline:
        m = c.poll(0.2)
        if m is not None and not m.error():
            rest.append(int(m.value()))
    c.close()
    assert not set(got) & set(rest), "committed messages are not consumed again after the restart"
    assert sorted(got + rest) == list(range(300))
    assert second.stop() == 0


def test_static_member_restart_does_not_rebalance_and_offsets_can_be_deleted(broker):
    from confluent_kafka import TopicPartition

    create_topic(broker.bootstrap, "static", 2)
    produce_n(broker.bootstrap, "static", 100)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})

    def member():
        c = group_consumer(broker.bootstrap, "gs", **{"group.instance.id": "instance-1", "session.timeout.ms": 10000})
        c.subscribe(["static"])
        got = 0
        deadline = time.time() + 20
        while got < 1 and time.time() < deadline:
            m = c.poll(0.2)
            if m is not None and not m.error():
                got += 1
                c.commit(message=m, asynchronous=False)
        return c

    first = member()
    state_before = admin.describe_consumer_groups(["gs"])["gs"].result(timeout=10)
    first.close()  # a static member's close does not leave the group
    second = member()
    state_after = admin.describe_consumer_groups(["gs"])["gs"].result(timeout=10)
    assert len(state_after.members) == 1
    assert state_after.members[0].group_instance_id == "instance-1"
    assert [tp.partition for tp in state_before.members[0].assignment.topic_partitions] == \
        [tp.partition for tp in state_after.members[0].assignment.topic_partitions]
    second.close()

    # Offsets of an empty group can be deleted (OffsetDelete through kafka-python's admin).
    from kafka.admin import KafkaAdminClient
    from kafka.structs import TopicPartition as KpTopicPartition

    c = group_consumer(broker.bootstrap, "g-offsets")
    c.commit(offsets=[TopicPartition("static", 0, 42)], asynchronous=False)
    c.close()
    kp_admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    result = kp_admin.delete_group_offsets("g-offsets", [KpTopicPartition("static", 0)])
    kp_admin.close()
    assert all(getattr(e, "errno", 0) in (0, None) for e in (result.values() if isinstance(result, dict) else [])), result
    check = group_consumer(broker.bootstrap, "g-offsets")
    committed = check.committed([TopicPartition("static", 0)], timeout=10)
    check.close()
    assert committed[0].offset < 0, "the committed offset is gone"


def test_cooperative_sticky_assignor_works(broker):
    create_topic(broker.bootstrap, "coop", 4)
    produce_n(broker.bootstrap, "coop", 400)
    consumers = [group_consumer(broker.bootstrap, "gc", **{"partition.assignment.strategy": "cooperative-sticky"})
                 for _ in range(2)]
    for c in consumers:
        c.subscribe(["coop"])
    seen = set()
    deadline = time.time() + 30
    while len(seen) < 400 and time.time() < deadline:
        for c in consumers:
            m = c.poll(0.1)
            if m is not None and not m.error():
                seen.add(int(m.value()))
    owned = sorted(tp.partition for c in consumers for tp in c.assignment())
    for c in consumers:
        c.close()
    assert seen == set(range(400))
    assert owned == [0, 1, 2, 3], "incremental assignment covers every partition once"


def test_deleting_a_topic_deletes_its_committed_offsets(broker):
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition

    create_topic(broker.bootstrap, "doomed", 2)
    create_topic(broker.bootstrap, "kept", 1)
    c = group_consumer(broker.bootstrap, "gd")
    c.commit(offsets=[TopicPartition("doomed", 0, 5), TopicPartition("doomed", 1, 6), TopicPartition("kept", 0, 7)],
             asynchronous=False)
    c.close()
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})

    def committed():
        result = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions("gd")])["gd"].result(timeout=10)
        return {(tp.topic, tp.partition): tp.offset for tp in result.topic_partitions}

    assert committed() == {("doomed", 0): 5, ("doomed", 1): 6, ("kept", 0): 7}
    admin.delete_topics(["doomed"])["doomed"].result(timeout=30)
    assert committed() == {("kept", 0): 7}


def test_offsets_of_an_empty_group_expire_after_the_retention(broker_factory):
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition

    broker = broker_factory(extra_args=["--offsets-retention-ms", "2000"])
    create_topic(broker.bootstrap, "expiring", 1)
    c = group_consumer(broker.bootstrap, "ge")
    c.commit(offsets=[TopicPartition("expiring", 0, 3)], asynchronous=False)
    c.close()
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})

    def committed():
        result = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions("ge")])["ge"].result(timeout=10)
        return {(tp.topic, tp.partition): tp.offset for tp in result.topic_partitions}

    assert committed() == {("expiring", 0): 3}
    deadline = time.time() + 15
    while committed() and time.time() < deadline:
        time.sleep(0.5)
    assert committed() == {}, "expired after offsets.retention with no members and no commits"
    assert broker.stop() == 0


def test_a_stable_group_survives_a_broker_crash_without_rebalancing(broker_factory, tmp_path):
    """The group's generation and members are in `__consumer_offsets`: after a SIGKILL and
    restart of the broker, the members go on with their generation (no revoke, no new
    assignment) and consume what is produced after the restart."""
    broker = broker_factory(data_dir=tmp_path / "membership")
    create_topic(broker.bootstrap, "steady", 4)
    rebalances = []
    consumers = []
    for index in range(2):
        c = group_consumer(broker.bootstrap, "gm", **{"session.timeout.ms": 10000})
        c.subscribe(["steady"], on_assign=lambda _c, parts, i=index: rebalances.append(("assign", i, len(parts))),
                    on_revoke=lambda _c, parts, i=index: rebalances.append(("revoke", i, len(parts))))
        consumers.append(c)
    got = set()

    def poll_until(condition, timeout_s):
        deadline = time.time() + timeout_s
        while not condition() and time.time() < deadline:
            for c in consumers:
                m = c.poll(0.1)
                if m is not None and not m.error():
                    got.add(int(m.value()))
        return condition()

    produce_n(broker.bootstrap, "steady", 100)
    assert poll_until(lambda: len(got) == 100, 30), f"consumed {len(got)} of 100 before the crash"
    settled = [r for r in rebalances if r[0] == "assign"]
    assert sorted(r[2] for r in settled[-2:]) == [2, 2], f"two members with two partitions each: {rebalances}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    described = admin.describe_consumer_groups(["gm"])["gm"].result(10)
    members_before = sorted(m.member_id for m in described.members)
    history = list(rebalances)

    broker.kill()
    broker.start()
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    described = admin.describe_consumer_groups(["gm"])["gm"].result(10)
    assert sorted(m.member_id for m in described.members) == members_before, "the restarted broker knows the members"
    assert str(described.state).endswith("STABLE"), described.state
    produce_n(broker.bootstrap, "steady", 100, start=100)
    assert poll_until(lambda: len(got) == 200, 30), f"consumed {len(got)} of 200 after the restart"
    assert rebalances == history, f"no rebalance across the restart: {rebalances[len(history):]}"
    for c in consumers:
        c.close()
