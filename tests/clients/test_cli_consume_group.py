"""`tern consume --group` as a real consumer group member: assignments shared with other
members (Tern's own and librdkafka's), rebalances when a member leaves or dies, and
commits that let the next owner continue without loss or duplicates."""

import json
import signal
import subprocess
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from conftest import BINARY

DEADLINE_S = 45


class TernMember:
    """A `tern consume --group` process printing JSON lines to a file."""

    def __init__(self, broker, tmp_path, name, topic, group):
        self.out_path = tmp_path / f"{name}.out"
        self.err_path = tmp_path / f"{name}.err"
        self.process = subprocess.Popen(
            [str(BINARY), "consume", "--brokers", broker.bootstrap, "--topic", topic, "--group", group,
             "--format", "json", "--session-timeout-ms", "6000", "--commit-interval-ms", "500"],
            stdout=open(self.out_path, "w"), stderr=open(self.err_path, "w"))

    def records(self):
        lines = self.out_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.endswith("}")]

    def stop(self, sig=signal.SIGINT):
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=30)
        finally:
            print(self.err_path.read_text())

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)


def create_topic(broker, name, partitions):
    subprocess.run([str(BINARY), "topic", "create", name, "--partitions", str(partitions),
                    "--brokers", broker.bootstrap], check=True, timeout=30)


def produce(broker, topic, values, partitions):
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
    for n, value in enumerate(values):
        producer.produce(topic, value=value.encode(), partition=n % partitions)
    assert producer.flush(15) == 0


def assignments(broker, group):
    """member id -> sorted partitions, once the group is Stable; None before."""
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    description = admin.describe_consumer_groups([group])[group].result(timeout=10)
    if description.state.name != "STABLE":
        return None
    return {m.member_id: sorted(tp.partition for tp in m.assignment.topic_partitions)
            for m in description.members}


def wait_for(condition, what, poll=None):
    deadline = time.time() + DEADLINE_S
    while time.time() < deadline:
        if poll:
            poll()
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def committed_total(broker, group, topic, partitions):
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group})
    try:
        offsets = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return {tp.partition: tp.offset for tp in offsets}
    finally:
        consumer.close()


def test_two_tern_members_split_the_topic_and_hand_over_on_leave(broker, tmp_path):
    create_topic(broker, "work", 6)
    first = [f"first {n}" for n in range(600)]
    produce(broker, "work", first, 6)
    a = TernMember(broker, tmp_path, "a", "work", "crew")
    b = TernMember(broker, tmp_path, "b", "work", "crew")
    try:
        def split():
            members = assignments(broker, "crew")
            return members if members and len(members) == 2 else None
        members = wait_for(split, "two members with an assignment")
        # Range assignor: the member with the smaller id gets partitions 0-2.
        ordered = [members[m] for m in sorted(members)]
        assert ordered == [[0, 1, 2], [3, 4, 5]], members

        def seen():
            return [r["value"] for r in a.records() + b.records()]
        wait_for(lambda: len(seen()) >= 600, "the first 600 records")
        # Each member printed only its own partitions.
        owned = {frozenset(r["partition"] for r in member.records()) for member in (a, b)}
        assert owned == {frozenset({0, 1, 2}), frozenset({3, 4, 5})}, owned

        second = [f"second {n}" for n in range(300)]
        produce(broker, "work", second, 6)
        wait_for(lambda: len(seen()) >= 900, "the next 300 records")
        a_id = a.err_path.read_text().split("joined group crew as ")[1].split()[0]
        assert a.stop() == 0
        assert "consumed" in a.err_path.read_text()
        # It left the group on the way out (a dead member would stay listed until its
        # session timed out).
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        described = admin.describe_consumer_groups(["crew"])["crew"].result(timeout=10)
        assert a_id not in [m.member_id for m in described.members], described
        # A left the group: B takes over all six partitions at once (no session wait).
        wait_for(lambda: assignments(broker, "crew") and list(assignments(broker, "crew").values()) == [list(range(6))],
                 "b to own every partition")

        third = [f"third {n}" for n in range(300)]
        produce(broker, "work", third, 6)
        wait_for(lambda: len(seen()) >= 1200, "the last 300 records")
        time.sleep(1)  # anything read twice would show up here
        assert sorted(seen()) == sorted(first + second + third), "every record exactly once"
        assert b.stop() == 0
        assert sum(committed_total(broker, "crew", "work", 6).values()) == 1200
        assert assignments(broker, "crew") is None or assignments(broker, "crew") == {}
    finally:
        a.kill()
        b.kill()


def test_tern_and_librdkafka_share_a_group_and_survive_a_killed_member(broker, tmp_path):
    create_topic(broker, "mixed", 4)
    rdkafka = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "mix",
                        "partition.assignment.strategy": "range", "session.timeout.ms": 6000,
                        "auto.offset.reset": "earliest", "enable.auto.commit": True,
                        "auto.commit.interval.ms": 500})
    rdkafka.subscribe(["mixed"])
    got = []

    def poll():
        for message in rdkafka.consume(num_messages=1000, timeout=0.1):
            if message.error() is None:
                got.append((message.partition(), message.value().decode()))

    tern = TernMember(broker, tmp_path, "tern", "mixed", "mix")
    try:
        def both():
            members = assignments(broker, "mix")
            return members if members and len(members) == 2 and all(members.values()) else None
        members = wait_for(both, "librdkafka and tern sharing the group", poll)
        assert sorted(sorted(p) for p in members.values()) == [[0, 1], [2, 3]], members

        values = [f"v{n}" for n in range(400)]
        produce(broker, "mixed", values, 4)
        wait_for(lambda: len(got) + len(tern.records()) >= 400, "400 records between the two", poll)
        theirs = {p for p, _ in got}
        ours = {r["partition"] for r in tern.records()}
        assert theirs and ours and not theirs & ours, (theirs, ours)
        assert sorted([v for _, v in got] + [r["value"] for r in tern.records()]) == sorted(values)

        # Let tern commit, then kill it without a goodbye: after its session times out,
        # librdkafka owns every partition and continues from tern's committed offsets.
        wait_for(lambda: all(committed_total(broker, "mix", "mixed", 4)[p] == 100 for p in ours),
                 "tern's commits", poll)
        tern.kill()
        wait_for(lambda: len(rdkafka.assignment()) == 4, "librdkafka to take over tern's partitions", poll)
        more = [f"w{n}" for n in range(100)]
        produce(broker, "mixed", more, 4)
        wait_for(lambda: sum(1 for _, v in got if v.startswith("w")) >= 100, "the records after the kill", poll)
        for _ in range(10):
            poll()
        assert sorted(v for _, v in got if v.startswith("w")) == sorted(more)
        assert not [v for p, v in got if p in ours and v.startswith("v")], "tern's committed records not read again"
    finally:
        tern.kill()
        rdkafka.close()


def test_a_member_starting_at_the_end_commits_that_position(broker, tmp_path):
    """--from end is committed even before anything is read, so the next owner of the
    partitions starts there too instead of at the beginning (nothing is skipped or
    replayed around a hand-over)."""
    create_topic(broker, "tail", 2)
    produce(broker, "tail", [f"old {n}" for n in range(50)], 2)
    member = subprocess.Popen(
        [str(BINARY), "consume", "--brokers", broker.bootstrap, "--topic", "tail", "--group", "late",
         "--from", "end", "--commit-interval-ms", "300"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: committed_total(broker, "late", "tail", 2) == {0: 25, 1: 25}, "the end offsets committed")
    finally:
        member.send_signal(signal.SIGINT)
        out, err = member.communicate(timeout=30)
        print(err)
    assert member.returncode == 0 and out == ""
    produce(broker, "tail", [f"new {n}" for n in range(10)], 2)
    after = subprocess.run(
        [str(BINARY), "consume", "--brokers", broker.bootstrap, "--topic", "tail", "--group", "late",
         "--exit-at-end"], capture_output=True, text=True, timeout=60)
    assert after.returncode == 0, after.stderr
    assert sorted(after.stdout.splitlines()) == sorted(f"new {n}" for n in range(10))


def test_a_member_rides_out_a_broker_restart(broker, tmp_path):
    create_topic(broker, "steady", 3)
    before = [f"before {n}" for n in range(300)]
    produce(broker, "steady", before, 3)
    member = TernMember(broker, tmp_path, "steady", "steady", "survivors")
    try:
        wait_for(lambda: len(member.records()) >= 300, "the records before the restart")
        time.sleep(1)  # let it commit (every 500 ms)
        assert broker.stop() == 0
        time.sleep(1)
        broker.start()
        after = [f"after {n}" for n in range(300)]
        produce(broker, "steady", after, 3)
        wait_for(lambda: {r["value"] for r in member.records()} >= set(after), "the records after the restart")
        assert member.process.poll() is None, "the member is still running"
        values = [r["value"] for r in member.records()]
        # At least once: everything arrives; what was committed is not read again.
        assert set(values) == set(before + after)
        assert sorted(v for v in values if v.startswith("before")) == sorted(before)
        assert member.stop() == 0
        assert "retrying" in member.err_path.read_text()
    finally:
        member.kill()
