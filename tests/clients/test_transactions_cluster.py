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
    """An RF=3 topic with min.insync.replicas=2, led on every live node."""
    from test_replication import create_topic as create_replicated
    create_replicated(cluster, name, partitions, config={"min.insync.replicas": "2"})


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

    # The operator's view through any broker: the CLI finds the id's coordinator.
    import subprocess
    from conftest import BINARY
    described = subprocess.run([str(BINARY), "transaction", "describe", "cluster-app",
                                "--brokers", cluster.nodes[1].bootstrap],
                               capture_output=True, text=True, timeout=30)
    assert described.returncode == 0, described.stderr
    assert "CompleteAbort" in described.stdout, described.stdout
    listed = subprocess.run([str(BINARY), "transaction", "list", "--brokers", cluster.nodes[3].bootstrap],
                            capture_output=True, text=True, timeout=30)
    assert listed.returncode == 0 and "cluster-app" in listed.stdout, listed.stdout + listed.stderr

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


class ClusterLogs:
    """What the Quix helpers need of a broker: where to connect, and logs on failure."""

    def __init__(self, cluster):
        self.cluster = cluster
        self.bootstrap = cluster.bootstrap

    def log_text(self):
        return "\n".join(f"--- node {n}:\n{node.log_text()[-2000:]}" for n, node in self.cluster.nodes.items())


@pytest.fixture
def quix_cluster(tmp_path):
    yield from running_cluster(tmp_path, CLUSTER_ARGS + ["--group-min-session-timeout-ms", "1000"])


def test_quix_exactly_once_through_app_and_broker_kills(quix_cluster, tmp_path):
    """Quix Streams exactly-once on a 3-node cluster (RF=3 topics): the app is SIGKILLed
    and restarted twice, and a broker is SIGKILLed and restarted in between, while the
    input still arrives. The read_committed output holds every input number exactly
    once."""
    from test_transactions_frameworks import QUIX_APP, quix_input
    from txn_helpers import PacedFeeder, QuixApp, read_partitions, stop_feeder_and_apps, wait_committed_output
    import json
    import random

    cluster = quix_cluster
    broker = ClusterLogs(cluster)
    source, sink, group = "quix-cluster-in", "quix-cluster-out", "quix-cluster"
    create_topic(cluster, source, 3)
    create_topic(cluster, sink, 3)
    script = tmp_path / "quix_eos_app.py"
    script.write_text(QUIX_APP)
    args = [broker.bootstrap, source, sink, group, str(tmp_path / "state"), "quix-cluster-txn", "60000"]
    records = quix_input()
    feeder = PacedFeeder(broker.bootstrap, source, records, batch=25, duration_s=20)
    rng = random.Random(int(__import__("os").environ.get("TERN_TEST_SEED", "20261130")))
    apps = []
    feeder.start()
    try:
        for round_ in range(3):
            app = QuixApp(script, args, tmp_path / f"quix-{round_}.log")
            apps.append(app)
            app.wait_processing(f"round {round_}", broker, 40)
            if round_ == 2:
                break
            time.sleep(rng.uniform(0.5, 2.0))
            if round_ == 0:
                # A broker dies under the running app, and comes back.
                cluster.kill(2)
                time.sleep(2)
                cluster.start(2)
                time.sleep(rng.uniform(0.5, 2.0))
            app.sigkill()
        feeder.finish(timeout=60)
        final = apps[-1]
        wait_committed_output(broker, sink, set(range(len(records))), final, "final round", 60)
        assert final.sigterm() == 0, final.output()
    finally:
        stop_feeder_and_apps(feeder, apps)

    numbers = [json.loads(m.value())["n"] for msgs in read_partitions(broker.bootstrap, sink, "read_committed",
                                                                        partitions=3).values() for m in msgs]
    assert len(numbers) == len(set(numbers)) == len(records), (
        f"every input exactly once: {len(numbers)} outputs, {len(set(numbers))} distinct, {len(records)} inputs")


def raw_transactional_produce(bootstrap, transactional_id, topic, partition, producer_id, epoch):
    """Sends one transactional batch with Produce v3 over a plain socket, as a producer
    that skipped AddPartitionsToTxn would; returns the partition's error code."""
    import struct
    from kafka.record.default_records import DefaultRecordBatchBuilder

    from helpers import kafka_string, raw_request

    builder = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=True,
                                        producer_id=producer_id, producer_epoch=epoch, base_sequence=0,
                                        batch_size=1 << 20)
    builder.append(0, int(time.time() * 1000), None, b"sneaked-in", [])
    batch = bytes(builder.build())
    body = (kafka_string(transactional_id) + struct.pack(">hi", -1, 10000) + struct.pack(">i", 1)
            + kafka_string(topic) + struct.pack(">ii", 1, partition) + struct.pack(">i", len(batch)) + batch)
    answer = raw_request(bootstrap, 0, 3, 7, body)
    # topics (1): name, partitions (1): index, error code, ...
    (name_len,) = struct.unpack_from(">h", answer, 4)
    index, error = struct.unpack_from(">ih", answer, 4 + 2 + name_len + 4)
    assert index == partition
    return error


def test_a_batch_outside_the_transaction_is_refused_by_every_leader(cluster):
    """KIP-890's check in a cluster: a partition leader asks the id's coordinator (on
    whichever broker that is) before a producer's first transactional batch; a batch
    for a partition the transaction never added is refused with INVALID_TXN_STATE and
    never reaches the log."""
    from kafka import KafkaProducer

    create_topic(cluster, "kip890", 3)
    producer = KafkaProducer(bootstrap_servers=cluster.bootstrap, transactional_id="kip890-app",
                             enable_idempotence=True, acks="all")
    producer.init_transactions()
    producer.begin_transaction()
    ids = producer._transaction_manager.producer_id_and_epoch
    producer.send("kip890", value=b"inside", partition=0)
    producer.flush()
    leaders = {p: part.leader for p, part in cluster.metadata(1).topics["kip890"].partitions.items()}
    for partition in (1, 2):
        leader = cluster.nodes[leaders[partition]]
        error = raw_transactional_produce(leader.bootstrap, "kip890-app", "kip890", partition,
                                          ids.producer_id, ids.epoch)
        assert error == 48, f"partition {partition} on node {leaders[partition]}: error {error}, not INVALID_TXN_STATE"
    producer.commit_transaction()
    producer.close()
    got = read_committed(cluster.nodes[2].bootstrap, "kip890", 3)
    assert got == {0: ["inside"], 1: [], 2: []}
    uncommitted = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "kip890-raw",
                            "isolation.level": "read_uncommitted", "enable.partition.eof": True})
    uncommitted.assign([TopicPartition("kip890", p, 0) for p in (1, 2)])
    seen, at_end, deadline = [], set(), time.time() + 20
    while len(at_end) < 2 and time.time() < deadline:
        m = uncommitted.poll(0.2)
        if m is None:
            continue
        if m.error():
            if m.error().code() == KafkaError._PARTITION_EOF:
                at_end.add(m.partition())
            continue
        seen.append(m.value())
    uncommitted.close()
    assert at_end == {1, 2} and seen == [], f"a refused batch reached a log: {seen}"
