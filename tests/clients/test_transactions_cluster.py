"""Transactions on a 3-node cluster of real `tern` processes (127.0.0.1) with librdkafka
(confluent-kafka): `__transaction_state` is replicated (Raft, three replicas per
partition) and coordinated by each partition's leader; markers reach partition leaders
on every broker and go through their Raft groups.

- Commit and abort over replicated partitions led by all three brokers, with
  `send_offsets_to_transaction` to a group whose coordinator is wherever its offsets
  partition leads: read_committed sees exactly the committed records, in order; the
  group's committed offsets are those of the last committed transaction.
- SIGKILL of each broker in turn (the transaction coordinator, partition leaders, the
  group coordinator among them) while a producer runs transactions: the producer goes
  on after each failover; every transaction it committed is visible, every one it
  aborted is not, and each transaction is all-or-nothing in read_committed.
- A zombie (an older instance of the transactional id) is fenced across brokers.
"""

import threading
import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from cluster_fixture import running_cluster

CLUSTER_ARGS = [
    "--metadata-election-timeout-ms", "600",
    "--broker-session-timeout-ms", "3000",
    "--broker-heartbeat-interval-ms", "300",
]
PARTITIONS = 6


@pytest.fixture
def cluster(tmp_path):
    yield from running_cluster(tmp_path, CLUSTER_ARGS)


def create_topic(cluster, name, partitions=PARTITIONS):
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    admin.create_topics([NewTopic(name, partitions, 3, config={"min.insync.replicas": "2"})],
                        operation_timeout=15)[name].result(timeout=15)

    def led_everywhere():
        for n, node in cluster.nodes.items():
            if not node.alive():
                continue
            topic = cluster.metadata(n).topics.get(name)
            if topic is None or len(topic.partitions) != partitions:
                return False
            if any(p.leader < 0 for p in topic.partitions.values()):
                return False
        return True

    cluster.wait_until(led_everywhere, 15, f"{name} to have leaders")


def txn_producer(bootstrap, transactional_id, **extra):
    config = {"bootstrap.servers": bootstrap, "transactional.id": transactional_id, "linger.ms": 2,
              "transaction.timeout.ms": 30000, "message.timeout.ms": 30000,
              "request.timeout.ms": 5000, "socket.timeout.ms": 5000,
              "topic.metadata.refresh.interval.ms": 500}
    config.update(extra)
    producer = Producer(config)
    producer.init_transactions(60)
    return producer


def read_committed(bootstrap, topic, partitions=PARTITIONS, idle_s=3.0, limit_s=60.0):
    """Every record of `topic` visible to read_committed, as {partition: [values]}."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{time.time()}",
                         "isolation.level": "read_committed", "enable.auto.commit": False,
                         "fetch.wait.max.ms": 100})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    by_partition = {p: [] for p in range(partitions)}
    last_new, deadline = time.time(), time.time() + limit_s
    try:
        while time.time() - last_new < idle_s and time.time() < deadline:
            for m in consumer.consume(num_messages=1000, timeout=0.3):
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        continue
                    raise AssertionError(f"consume error: {m.error()}")
                by_partition[m.partition()].append(m.value().decode())
                last_new = time.time()
    finally:
        consumer.close()
    return by_partition


def lso_reached_end(cluster, topic, partitions=PARTITIONS):
    """Whether every partition's last stable offset equals its high watermark (no
    transaction left open on it)."""
    consumer = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "lso-probe",
                         "isolation.level": "read_committed"})
    plain = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "hw-probe",
                      "isolation.level": "read_uncommitted"})
    try:
        for p in range(partitions):
            lso = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5, cached=False)[1]
            hw = plain.get_watermark_offsets(TopicPartition(topic, p), timeout=5, cached=False)[1]
            if lso != hw:
                return False
        return True
    except KafkaException:
        return False
    finally:
        consumer.close()
        plain.close()


def test_commit_and_abort_across_brokers_with_offsets(cluster):
    create_topic(cluster, "cluster-txn")
    create_topic(cluster, "cluster-txn-input", 3)
    leaders = {p.leader for p in cluster.metadata(1).topics["cluster-txn"].partitions.values()}
    assert len(leaders) > 1, f"the partitions should be led by several brokers: {leaders}"

    producer = txn_producer(cluster.nodes[2].bootstrap, "cluster-app")
    group = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "cluster-txn-group"})
    metadata = group.consumer_group_metadata()
    expected = {p: [] for p in range(PARTITIONS)}
    for t in range(12):
        producer.begin_transaction()
        values = [f"t{t}-{i}" for i in range(PARTITIONS * 2)]
        for i, value in enumerate(values):
            producer.produce("cluster-txn", value=value.encode(), partition=i % PARTITIONS)
        offsets = [TopicPartition("cluster-txn-input", p, 100 * t + p) for p in range(3)]
        producer.send_offsets_to_transaction(offsets, metadata, 30)
        if t % 3 == 2:
            producer.abort_transaction(30)
        else:
            producer.commit_transaction(30)
            for i, value in enumerate(values):
                expected[i % PARTITIONS].append(value)
    group.close()

    got = read_committed(cluster.nodes[3].bootstrap, "cluster-txn")
    assert got == expected
    cluster.wait_until(lambda: lso_reached_end(cluster, "cluster-txn"), 15, "the LSO to reach the log end")

    # The last committed transaction was t=10; the aborted t=11 left no offsets behind.
    reader = Consumer({"bootstrap.servers": cluster.nodes[1].bootstrap, "group.id": "cluster-txn-group"})
    committed = reader.committed([TopicPartition("cluster-txn-input", p) for p in range(3)], timeout=15)
    reader.close()
    assert [tp.offset for tp in committed] == [1000 + p for p in range(3)]


def test_a_zombie_is_fenced_across_brokers(cluster):
    create_topic(cluster, "cluster-zombie", 3)
    zombie = txn_producer(cluster.nodes[1].bootstrap, "cluster-zombie-app")
    zombie.begin_transaction()
    zombie.produce("cluster-zombie", value=b"zombie", partition=0)
    zombie.flush(10)
    # A new instance through another broker: fences the zombie, aborts its transaction.
    fresh = txn_producer(cluster.nodes[3].bootstrap, "cluster-zombie-app")
    fresh.begin_transaction()
    fresh.produce("cluster-zombie", value=b"fresh", partition=0)
    fresh.commit_transaction(30)
    with pytest.raises(KafkaException) as fenced:
        zombie.produce("cluster-zombie", value=b"late", partition=1)
        zombie.commit_transaction(30)
    assert fenced.value.args[0].fatal() or "fenc" in str(fenced.value).lower(), str(fenced.value)
    got = read_committed(cluster.nodes[2].bootstrap, "cluster-zombie", 3)
    assert got == {0: ["fresh"], 1: [], 2: []}


class TransactionLoop:
    """A transactional producer running numbered transactions, each with one record per
    partition, until stopped; it records which ones it committed and aborted. A
    transaction whose end failed with a retriable error is retried; an abortable error
    aborts it; a fatal one (fenced after a coordinator's timeout abort) starts a new
    producer."""

    def __init__(self, bootstrap, topic):
        self.bootstrap, self.topic = bootstrap, topic
        self.committed, self.aborted, self.unknown = [], [], []
        self.errors = []
        self.running = True
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        producer = None
        t = 0
        while self.running:
            try:
                if producer is None:
                    producer = txn_producer(self.bootstrap, "failover-app")
                producer.begin_transaction()
                for p in range(PARTITIONS):
                    producer.produce(self.topic, value=f"t{t}-{p}".encode(), partition=p)
                self.end(producer, t)
            except KafkaException as error:
                self.errors.append(str(error))
                self.unknown.append(t)
                if error.args[0].fatal():
                    producer = None
                else:
                    try:
                        producer.abort_transaction(60)
                        self.unknown.remove(t)
                        self.aborted.append(t)
                    except KafkaException as abort_error:
                        self.errors.append(f"abort: {abort_error}")
                        producer = None
                time.sleep(0.2)
            t += 1

    def end(self, producer, t):
        commit = t % 4 != 3
        for _ in range(30):
            try:
                if commit:
                    producer.commit_transaction(60)
                    self.committed.append(t)
                else:
                    producer.abort_transaction(60)
                    self.aborted.append(t)
                return
            except KafkaException as error:
                if error.args[0].retriable():
                    self.errors.append(f"retrying the end: {error}")
                    time.sleep(0.2)
                    continue
                raise
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "could not end the transaction"))

    def stop(self):
        self.running = False
        self.thread.join(timeout=180)
        assert not self.thread.is_alive(), "the transaction loop did not stop"


def test_transactions_survive_sigkill_of_each_broker(cluster):
    create_topic(cluster, "failover-txn")
    loop = TransactionLoop(cluster.bootstrap, "failover-txn")
    try:
        time.sleep(2)
        for victim in (1, 2, 3):
            before = len(loop.committed)
            cluster.kill(victim)
            time.sleep(3)
            cluster.start(victim)
            cluster.wait_formed(timeout=30)
            # The producer goes on after the failover.
            cluster.wait_until(lambda: len(loop.committed) >= before + 3, 60,
                               f"transactions to commit again after node {victim} was killed")
    finally:
        loop.stop()
    print(f"committed {len(loop.committed)}, aborted {len(loop.aborted)}, unknown {len(loop.unknown)}, "
          f"errors {len(loop.errors)}: {loop.errors[:8]}")
    assert len(loop.committed) >= 9, (loop.committed, loop.errors)

    cluster.wait_until(lambda: lso_reached_end(cluster, "failover-txn"), 60, "every transaction to end")
    got = read_committed(cluster.nodes[1].bootstrap, "failover-txn")
    seen = {}
    for p, values in got.items():
        assert len(values) == len(set(values)), f"partition {p} holds a record twice"
        for value in values:
            t, part = value[1:].split("-")
            assert int(part) == p
            seen.setdefault(int(t), set()).add(p)
    # All or nothing: a visible transaction is visible on every partition.
    partial = {t: parts for t, parts in seen.items() if len(parts) != PARTITIONS}
    assert not partial, f"transactions visible on some partitions only: {partial}"
    missing = [t for t in loop.committed if t not in seen]
    assert not missing, f"committed transactions not visible: {missing} (errors: {loop.errors[-5:]})"
    leaked = [t for t in loop.aborted if t in seen]
    assert not leaked, f"aborted transactions visible: {leaked}"
