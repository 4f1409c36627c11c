"""Partition replication on 3-node clusters of real `tern` processes (127.0.0.1), with
real clients: librdkafka (confluent-kafka) and kafka-python.

- SIGKILL of a busy partition's leader, round after round (also with two shards per
  node), under an idempotent acks=all
  producer: every acknowledged record is afterwards at its offset exactly once, no value
  twice, and once healed every replica holds byte-identical segment files.
- SIGSTOP of a leader for longer than an election: a new leader takes over; resumed, the
  old one rejoins as a follower and the logs converge.
- A SIGKILLed leader (of a busy partition, of a quiet one, of the metadata quorum) is
  replaced without waiting for the election timeout: its port refuses connections, so
  the survivors know its process is gone and elect at once.
- A record only the leader has (acks=1 while both followers are down) is not visible to
  consumers, and is gone once the leader dies: the old leader cuts it when it rejoins.
- A follower down while 30 MB are written (more than Raft keeps in memory) copies the
  leader's log and follows again.
- Leaders return to their preferred replicas once those are back and caught up.
- A broker holding no replica of a partition reports its current leader (leaders tell
  every broker), so clients bootstrapped to it find the new leader after a failover.
- A consumer group keeps consuming when its coordinator's broker dies: the group's
  `__consumer_offsets` partition is replicated, its new leader coordinates, and no
  committed offset is lost.
- `tern consume --exit-at-end` reaches the end of a replicated partition (past its
  control batches).
- min.insync.replicas: acks=all fails with NOT_ENOUGH_REPLICAS when too few replicas
  are in sync, acks=1 still works.
- Leader epochs (KIP-101/320): OffsetForLeaderEpoch answers where each epoch ends, and a
  stale or unknown current epoch is refused (Fetch applies the same check).

TERN_REPLICATION_ROUNDS sets the kill rounds (CI: 5; `perf/replication_failover.py` runs
20 and reports the failover times).
"""

import os
import subprocess
import struct
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KafkaTopicPartition
from kafka.errors import NotEnoughReplicasError

from cluster_fixture import Cluster, running_cluster
from conftest import BINARY
from helpers import fetch_v12, metric, read_uvarint, scrape

ROUNDS = int(os.environ.get("TERN_REPLICATION_ROUNDS", "5"))
# TERN_REPLICATION_SHARDS=2 runs every test's nodes with two shards.
SHARDS = int(os.environ.get("TERN_REPLICATION_SHARDS", "1"))
CLUSTER_ARGS = [
    "--metadata-election-timeout-ms", "600",
    "--broker-session-timeout-ms", "3000",
    "--broker-heartbeat-interval-ms", "300",
    "--auto-leader-rebalance-interval-ms", "2000",
] + (["--cores", ",".join(str(c % 2) for c in range(SHARDS))] if SHARDS > 1 else [])


@pytest.fixture
def cluster(tmp_path):
    yield from running_cluster(tmp_path, CLUSTER_ARGS)


def full_log(node):
    """A node's whole log (`Node.log_text` keeps only its tail)."""
    return node.log_path.read_text(errors="replace")


def create_topic(cluster, name, partitions, config=None):
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    futures = admin.create_topics([NewTopic(name, partitions, 3, config=config or {})], operation_timeout=15)
    futures[name].result(timeout=15)

    def led_everywhere():
        for n, node in cluster.nodes.items():
            if not node.alive() or node.paused:
                continue
            topic = cluster.metadata(n).topics.get(name)
            if topic is None or len(topic.partitions) != partitions:
                return False
            if any(p.leader < 0 for p in topic.partitions.values()):
                return False
        return True

    cluster.wait_until(led_everywhere, 15, f"{name} to have leaders")


def leader_of(cluster, topic, partition):
    """The leader a live node reports (None: none right now)."""
    for n, node in cluster.nodes.items():
        if not node.alive() or node.paused:
            continue
        try:
            leader = cluster.metadata(n, timeout=2).topics[topic].partitions[partition].leader
        except Exception:
            continue
        if leader >= 0 and cluster.nodes[leader].alive() and not cluster.nodes[leader].paused:
            return leader
    return None


class BackgroundProducer:
    """An idempotent acks=all librdkafka producer sending numbered values until stopped."""

    def __init__(self, bootstrap, topic, partitions, prefix="v"):
        self.prefix = prefix
        self.producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                                  "linger.ms": 2, "message.timeout.ms": 120000,
                                  # A paused broker never answers: give up on its
                                  # requests (produce, and the metadata requests that
                                  # would find the new leader) after 3 s, not 30-60.
                                  "request.timeout.ms": 3000, "socket.timeout.ms": 3000,
                                  "topic.metadata.refresh.interval.ms": 500})
        self.topic, self.partitions = topic, partitions
        self.acked, self.errors = [], []
        self.sent = 0
        self.running = True
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def report(self, error, message):
        if error:
            self.errors.append(error)
        else:
            self.acked.append((message.partition(), message.offset(), message.value()))

    def run(self):
        while self.running:
            try:
                self.producer.produce(self.topic, value=f"{self.prefix}{self.sent}".encode(),
                                      partition=self.sent % self.partitions, on_delivery=self.report)
                self.sent += 1
            except BufferError:
                pass
            self.producer.poll(0.001 if self.sent % 20 else 0.005)

    def stop(self):
        self.running = False
        self.thread.join(10)
        remaining = self.producer.flush(120)
        assert remaining == 0, f"{remaining} records never delivered"


def read_partition(bootstrap, topic, partition, end, timeout=60):
    """Every record of a partition below `end`: {offset: value}."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{time.time()}",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 100})
    consumer.assign([TopicPartition(topic, partition, 0)])
    got = {}
    deadline = time.time() + timeout
    position = 0
    while position < end and time.time() < deadline:
        message = consumer.poll(0.5)
        if message is None or message.error():
            # The partition may end with control batches (a new leader's first entry):
            # the consumer's position moves past them without a message.
            position = max(position, consumer.position([TopicPartition(topic, partition)])[0].offset)
            continue
        got[message.offset()] = message.value()
        position = message.offset() + 1
    consumer.close()
    return got


def high_watermarks(bootstrap, topic, partitions):
    """Each partition's high watermark. A node that has just restarted may answer the
    client's first Metadata before it has caught up with the topic (librdkafka then says
    "Local: Unknown partition"): asked again until a node that knows it answers."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"hw-{time.time()}",
                         "topic.metadata.refresh.interval.ms": 250})
    marks = []
    try:
        for p in range(partitions):
            deadline = time.time() + 20
            while True:
                try:
                    marks.append(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1])
                    break
                except KafkaException as error:
                    if error.args[0].code() != KafkaError._UNKNOWN_PARTITION or time.time() > deadline:
                        raise
                    time.sleep(0.25)
    finally:
        consumer.close()
    return marks


def check_acked(cluster, topic, partitions, acked):
    """Every acknowledged record is at its offset; no value is in the log twice."""
    marks = high_watermarks(cluster.bootstrap, topic, partitions)
    for p in range(partitions):
        got = read_partition(cluster.bootstrap, topic, p, marks[p])
        mine = [(o, v) for q, o, v in acked if q == p]
        missing = [(o, v) for o, v in mine if got.get(o) != v]
        assert not missing, f"partition {p}: {len(missing)} acknowledged records missing, e.g. {missing[:5]}"
        values = list(got.values())
        assert len(values) == len(set(values)), f"partition {p}: duplicated values"
    return marks


def log_bytes(node_dir: Path, topic, partition):
    directory = node_dir / f"{topic}-{partition}"
    return b"".join(path.read_bytes() for path in sorted(directory.glob("*.log")))


LEADER_NOOP_CONTROL_TYPE = 0x7401  # src/replication/entry.rs


def describe_batches(data: bytes):
    """(base offset, leader epoch, records, control type or None) of each record batch."""
    batches = []
    while len(data) >= 61:
        base, length, epoch = struct.unpack_from(">qii", data, 0)
        attributes, = struct.unpack_from(">h", data, 21)
        count, = struct.unpack_from(">i", data, 57)
        control = None
        if attributes & 0x20:
            # The first record: length, attributes, timestamp and offset deltas, key length
            # (all varints but the attributes byte), then the key: version, type (int16s).
            at = 61
            _, at = read_uvarint(data, at)
            at += 1
            for _ in range(3):
                _, at = read_uvarint(data, at)
            control, = struct.unpack_from(">h", data, at + 2)
        batches.append((base, epoch, count, control))
        data = data[12 + length:]
    return batches


def check_identical_replicas(cluster, topic, partitions, hosts=None):
    """Stops the nodes cleanly and compares the segment bytes of every replica. A
    follower may miss the last entries when it stops (committed on the others): its
    log must then be a prefix of theirs. If it misses records, it must catch up to the
    same bytes after a restart. What it may miss for good is the leader no-op batches of
    elections held while the nodes stop one after another: a stopping leader abdicates,
    and the others elect a leader, which writes its no-op, before they stop in turn.
    `hosts` (partition: node ids) names the replicas of each partition (default: every
    node)."""
    for attempt in range(3):
        time.sleep(2)  # followers learn the last commit with the next heartbeat
        for n in list(cluster.nodes):
            assert cluster.stop(n) == 0, f"node {n} did not stop cleanly"
        lagging = False
        for p in range(partitions):
            holders = hosts[p] if hosts else list(cluster.nodes)
            copies = {n: log_bytes(cluster.nodes[n].data_dir, topic, p) for n in holders}
            longest = max(copies.values(), key=len)
            sizes = {n: len(b) for n, b in copies.items()}
            for n, data in copies.items():
                assert longest.startswith(data), f"partition {p}: replica {n} diverged (sizes {sizes})"
                missing = describe_batches(longest[len(data):])
                if any(control != LEADER_NOOP_CONTROL_TYPE for _, _, _, control in missing):
                    print(f"attempt {attempt}: partition {p}: replica {n} lacks {missing}")
                    lagging = True
        if not lagging:
            return
        cluster.start()
        cluster.wait_formed()
    raise AssertionError(f"{topic}: a replica still lags after three restarts")


def wait_caught_up(cluster, topic, partitions, timeout=30):
    """Every partition has a leader whose ISR is all three replicas."""
    def caught_up():
        for n, node in cluster.nodes.items():
            topic_md = cluster.metadata(n, timeout=2).topics.get(topic)
            if topic_md is None:
                return False
            for p in topic_md.partitions.values():
                if p.leader < 0 or sorted(p.isrs) != [1, 2, 3]:
                    return False
        return True

    cluster.wait_until(caught_up, timeout, f"{topic}: every replica in sync")


def kill_leaders(cluster, topic, partitions, rounds):
    """`rounds` SIGKILLs of a busy partition's leader under an idempotent acks=all
    producer, then the checks: every acknowledged record exactly once at its offset,
    identical replicas."""
    create_topic(cluster, topic, partitions, {"min.insync.replicas": "2"})
    producer = BackgroundProducer(cluster.bootstrap, topic, partitions)
    failovers = []
    try:
        for round_ in range(rounds):
            time.sleep(1.0)
            leader = cluster.wait_until(lambda: leader_of(cluster, topic, round_ % partitions), 15, "a leader")
            before = len(producer.acked)
            killed_at = time.time()
            cluster.kill(leader)

            def new_leader_takes_writes():
                current = leader_of(cluster, topic, round_ % partitions)
                return current is not None and current != leader and len(producer.acked) > before + 20

            cluster.wait_until(new_leader_takes_writes, 20, f"round {round_}: writes on a new leader")
            failovers.append(time.time() - killed_at)
            cluster.start(leader)
            wait_caught_up(cluster, topic, partitions)
    finally:
        producer.stop()
    assert not producer.errors, producer.errors[:5]
    assert len(producer.acked) > 100 * rounds
    print(f"failovers (s): {[round(f, 2) for f in failovers]}; acked {len(producer.acked)}")
    check_acked(cluster, topic, partitions, producer.acked)
    wait_caught_up(cluster, topic, partitions)
    check_identical_replicas(cluster, topic, partitions)


def test_acknowledged_records_survive_leader_kills(cluster):
    kill_leaders(cluster, "busy", 2, ROUNDS)


def test_two_shards_per_node_replicate_too(tmp_path):
    """Partition traffic crosses from shard 0 (the inter-broker links) to the owning
    shard and back."""
    cluster = Cluster(tmp_path, extra_args=CLUSTER_ARGS + ["--cores", "0,1"]).start()
    try:
        cluster.wait_formed()
        kill_leaders(cluster, "sharded", 4, 2)
    finally:
        cluster.shutdown()


def test_a_killed_leader_is_replaced_without_waiting_for_an_election_timeout(tmp_path):
    """Election timeouts of 6 s: a failover that waited for one would take 6 to 12 s.
    A killed process's port refuses connections at once, so its partitions (a busy one
    and a quiet one) and the metadata quorum (it is the controller) elect within a tick
    or two."""
    timeout_s = 6
    args = list(CLUSTER_ARGS)
    for flag in ("--metadata-election-timeout-ms", "--auto-leader-rebalance-interval-ms"):
        i = args.index(flag)
        del args[i:i + 2]
    args += ["--metadata-election-timeout-ms", str(timeout_s * 1000),
             "--replica-election-timeout-ms", str(timeout_s * 1000),
             "--broker-session-timeout-ms", "20000"]
    cluster = Cluster(tmp_path, extra_args=args).start()
    try:
        victim = cluster.wait_formed(timeout=60)
        survivors = [n for n in cluster.nodes if n != victim]
        # The controller leads both partitions (a new partition's first replica leads);
        # the survivors' turns come in opposite orders.
        admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
        topic = NewTopic("gone", num_partitions=2, replica_assignment=[[victim] + survivors, [victim] + survivors[::-1]])
        admin.create_topics([topic], operation_timeout=15)["gone"].result(timeout=15)
        cluster.wait_until(lambda: leader_of(cluster, "gone", 0) == victim == leader_of(cluster, "gone", 1), 20,
                           "the controller to lead both partitions")
        producer = BackgroundProducer(cluster.bootstrap, "gone", 1)
        try:
            # Partition 1 takes no writes: quiet after an election timeout, as is every
            # group on the node but the busy one.
            def awake_groups():
                text = scrape(cluster.nodes[victim])
                return metric(text, "tern_replication_groups") - metric(text, "tern_replication_quiesced_groups")

            cluster.wait_until(lambda: awake_groups() == 1, 4 * timeout_s, "the idle partition to go quiet")
            before = len(producer.acked)
            killed = time.time()
            cluster.kill(victim)
            for partition in (0, 1):
                cluster.wait_until(lambda: leader_of(cluster, "gone", partition) not in (None, victim),
                                   timeout_s - 1, f"a new leader of gone-{partition}")
            elected = time.time() - killed
            cluster.wait_until(lambda: cluster.controller(survivors[0]) in survivors, timeout_s - 1,
                               "a new controller")
            controller = time.time() - killed
            cluster.wait_until(lambda: len(producer.acked) > before + 20, 10, "writes on the new leader")
        finally:
            producer.stop()
        print(f"killed {victim}: partition leaders {elected:.2f} s, controller {controller:.2f} s after")
        campaigns = sum(full_log(cluster.nodes[n]).count("the leader's process is gone; campaigning")
                        for n in survivors)
        assert campaigns >= 3, campaigns  # two partitions and the metadata quorum
        assert not producer.errors, producer.errors[:5]
        check_acked(cluster, "gone", 1, producer.acked)
    finally:
        cluster.shutdown()


def test_a_paused_leader_rejoins_as_follower(cluster):
    create_topic(cluster, "paused", 1)
    producer = BackgroundProducer(cluster.bootstrap, "paused", 1)
    try:
        time.sleep(1.0)
        leader = leader_of(cluster, "paused", 0)
        before = len(producer.acked)
        cluster.pause(leader)
        cluster.wait_until(lambda: (leader_of(cluster, "paused", 0) not in (None, leader))
                           and len(producer.acked) > before + 50, 20, "a new leader taking writes")
        time.sleep(3)
        cluster.resume(leader)
        wait_caught_up(cluster, "paused", 1)
        time.sleep(1.0)
    finally:
        producer.stop()
    assert not producer.errors, producer.errors[:5]
    check_acked(cluster, "paused", 1, producer.acked)
    check_identical_replicas(cluster, "paused", 1)


def test_records_only_the_leader_has_are_never_seen(cluster):
    create_topic(cluster, "lonely", 1)
    leader = leader_of(cluster, "lonely", 0)
    committed = Producer({"bootstrap.servers": cluster.nodes[leader].bootstrap, "acks": "all"})
    committed.produce("lonely", value=b"committed")
    assert committed.flush(15) == 0
    # Connected (and with metadata) before the followers stop: a leader cut off from
    # its majority steps down after one to two election timeouts (check-quorum), so
    # what follows happens right after the pause.
    lonely = KafkaProducer(bootstrap_servers=cluster.nodes[leader].bootstrap, acks=1, retries=0)
    lonely.partitions_for("lonely")
    watcher = KafkaConsumer(bootstrap_servers=cluster.nodes[leader].bootstrap)
    partition = KafkaTopicPartition("lonely", 0)
    assert watcher.end_offsets([partition])[partition] == 2  # the leader's control batch + 1
    # The followers die (a paused one would still take the leader's next append into
    # its socket buffer, and could then commit it after all).
    followers = [n for n in cluster.nodes if n != leader]
    for n in followers:
        cluster.kill(n)
    # acks=1: acknowledged once the leader alone has it on disk, but not committed.
    sent = lonely.send("lonely", b"uncommitted").get(timeout=10)
    assert sent.offset == 2
    assert watcher.end_offsets([partition])[partition] == 2, "the high watermark stays at the commit"
    watcher.close()
    lonely.close(timeout=1)

    cluster.kill(leader)
    for n in followers:
        cluster.start(n)
    cluster.wait_until(lambda: leader_of(cluster, "lonely", 0) in followers, 20, "a follower elected")
    after = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all"})
    after.produce("lonely", value=b"after")
    assert after.flush(20) == 0
    cluster.start(leader)
    wait_caught_up(cluster, "lonely", 1)
    end = high_watermarks(cluster.bootstrap, "lonely", 1)[0]
    values = list(read_partition(cluster.bootstrap, "lonely", 0, end).values())
    assert values == [b"committed", b"after"], values
    assert "cut its uncommitted entries back" in full_log(cluster.nodes[leader])
    assert metric(scrape(cluster.nodes[leader]), "tern_replication_truncations_total") >= 1
    check_identical_replicas(cluster, "lonely", 1)


def test_a_follower_far_behind_catches_up_from_the_leaders_log(cluster):
    create_topic(cluster, "far", 1)
    leader = leader_of(cluster, "far", 0)
    follower = next(n for n in cluster.nodes if n != leader)
    cluster.kill(follower)
    # 30 MB while it is down: more than the leader keeps in memory for Raft (16 MiB), so
    # the follower must copy the leader's log before it can follow again.
    producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all", "enable.idempotence": True,
                         "linger.ms": 5})
    acked = []
    value = os.urandom(100_000)

    def report(error, message):
        assert error is None, error
        acked.append((message.partition(), message.offset(), message.value()))

    for i in range(300):
        producer.produce("far", value=b"%06d" % i + value, on_delivery=report)
        producer.poll(0)
    assert producer.flush(60) == 0
    assert len(acked) == 300
    time.sleep(1)
    cluster.start(follower)
    # (The in-sync set alone does not say it: a follower stays in it for up to 5 s.)
    cluster.wait_until(lambda: "caught up from the leader's log" in full_log(cluster.nodes[follower]), 60,
                       "the follower copying the leader's log")
    wait_caught_up(cluster, "far", 1, timeout=60)
    metrics = scrape(cluster.nodes[follower])
    assert metric(metrics, "tern_replication_catch_ups_total") >= 1
    assert metric(metrics, "tern_replication_catch_up_bytes_total") > 10_000_000
    check_acked(cluster, "far", 1, acked)
    check_identical_replicas(cluster, "far", 1)


def test_leaders_return_to_their_preferred_replicas(cluster):
    create_topic(cluster, "spread", 3)
    preferred = {p.id: p.replicas[0] for p in cluster.metadata(1).topics["spread"].partitions.values()}
    assert sorted(preferred.values()) == [1, 2, 3]
    victim = preferred[0]
    cluster.kill(victim)
    cluster.wait_until(lambda: leader_of(cluster, "spread", 0) not in (None, victim), 15, "a new leader")
    cluster.start(victim)

    def back_home():
        partitions = cluster.metadata(1).topics["spread"].partitions.values()
        return all(p.leader == preferred[p.id] for p in partitions)

    cluster.wait_until(back_home, 30, "every partition led by its preferred replica again")
    assert "handing the leadership back to the preferred replica" in "".join(
        full_log(n) for n in cluster.nodes.values())


def test_a_broker_without_a_replica_learns_the_leader(tmp_path):
    cluster = Cluster(tmp_path, size=4, extra_args=CLUSTER_ARGS).start()
    try:
        cluster.wait_formed()
        create_topic(cluster, "three-of-four", 1)
        replicas = cluster.metadata(1).topics["three-of-four"].partitions[0].replicas
        outsider = next(n for n in cluster.nodes if n not in replicas)
        leader = leader_of(cluster, "three-of-four", 0)
        cluster.kill(leader)

        def outsider_knows():
            p = cluster.metadata(outsider, timeout=2).topics["three-of-four"].partitions[0]
            return p.leader not in (-1, leader) and p.leader in replicas and sorted(p.isrs) == sorted(
                r for r in replicas if r != leader)

        cluster.wait_until(outsider_knows, 20, f"node {outsider} (no replica) reporting the new leader")
        # A client that knows only that broker finds the new leader through it.
        producer = Producer({"bootstrap.servers": cluster.nodes[outsider].bootstrap, "acks": "all"})
        producer.produce("three-of-four", value=b"via the outsider")
        assert producer.flush(20) == 0
    finally:
        cluster.shutdown()


def test_tern_consume_reaches_the_end_past_control_batches(cluster):
    """A replicated partition holds control batches (one per leader change), which carry
    no record to print: `tern consume --exit-at-end` must still reach the end offset."""
    create_topic(cluster, "cli", 2)
    producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all"})
    for value in (b"one", b"two", b"three"):
        producer.produce("cli", value=value, partition=0)
    assert producer.flush(15) == 0
    done = subprocess.run([str(BINARY), "consume", "--topic", "cli", "--from", "beginning", "--exit-at-end",
                           "--brokers", cluster.bootstrap], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["one", "two", "three"], done.stdout


def coordinator_of(cluster, group):
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    description = admin.describe_consumer_groups([group])[group].result(timeout=10)
    return description.coordinator.id


def test_consumer_groups_keep_consuming_through_a_coordinator_failover(cluster):
    create_topic(cluster, "work", 3)
    acked = []
    producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all", "enable.idempotence": True})
    for i in range(300):
        producer.produce("work", value=b"job-%d" % i, partition=i % 3,
                         on_delivery=lambda e, m: e or acked.append((m.partition(), m.offset(), m.value())))
    assert producer.flush(30) == 0 and len(acked) == 300

    consumer = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "workers",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "session.timeout.ms": 6000, "heartbeat.interval.ms": 500,
                         "socket.timeout.ms": 3000, "topic.metadata.refresh.interval.ms": 500})
    consumer.subscribe(["work"])
    seen = []

    def consume(count, timeout):
        """Until `count` distinct records were seen (a rebalance may replay some)."""
        deadline = time.time() + timeout
        while len(set(seen)) < count and time.time() < deadline:
            message = consumer.poll(0.2)
            if message is None or message.error():
                continue
            seen.append(message.value())
            if len(seen) % 10 == 0:
                try:
                    consumer.commit(asynchronous=False)
                except Exception:
                    pass  # the coordinator may be moving; the next commit covers it
        return len(set(seen)) >= count

    assert consume(150, 30), f"only {len(seen)} consumed before the failover"
    before = {tp.partition: tp.offset for tp in consumer.committed(
        [TopicPartition("work", p) for p in range(3)], timeout=10)}
    coordinator = coordinator_of(cluster, "workers")
    cluster.kill(coordinator)
    assert consume(300, 60), f"only {len(seen)} consumed after the coordinator {coordinator} died"
    for _ in range(20):
        try:
            consumer.commit(asynchronous=False)
            break
        except Exception:
            time.sleep(0.5)
    consumer.close()
    assert {v for _, _, v in acked} <= set(seen), "every record consumed (some twice after a rebalance, none lost)"

    new_coordinator = coordinator_of(cluster, "workers")
    assert new_coordinator != coordinator
    reader = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "workers"})
    after = {tp.partition: tp.offset for tp in reader.committed(
        [TopicPartition("work", p) for p in range(3)], timeout=10)}
    reader.close()
    assert all(after[p] >= before[p] for p in range(3)), f"no committed offset lost: {before} -> {after}"
    # Committed: after each partition's last record, or past control batches a new leader
    # wrote after it (librdkafka's position moves past them).
    last = {p: max(o for q, o, _ in acked if q == p) + 1 for p in range(3)}
    ends = high_watermarks(cluster.bootstrap, "work", 3)
    assert all(last[p] <= after[p] <= ends[p] for p in range(3)), (after, last, ends)
    # The old coordinator rejoins as a follower of the offsets partition.
    cluster.start(coordinator)
    cluster.wait_until(lambda: coordinator_of(cluster, "workers") >= 0, 15, "a coordinator")


def test_min_insync_replicas_refuses_acks_all(cluster):
    create_topic(cluster, "strict", 1, {"min.insync.replicas": "3"})
    leader = leader_of(cluster, "strict", 0)
    producer = KafkaProducer(bootstrap_servers=cluster.nodes[leader].bootstrap, acks="all", retries=0)
    producer.send("strict", b"all three").get(timeout=10)
    follower = next(n for n in cluster.nodes if n != leader)
    cluster.kill(follower)

    def refused():
        try:
            producer.send("strict", b"two of three").get(timeout=10)
            return False
        except NotEnoughReplicasError:
            return True

    cluster.wait_until(refused, 15, "NOT_ENOUGH_REPLICAS for acks=all")
    # The leader counts the partition as under-replicated.
    cluster.wait_until(
        lambda: metric(scrape(cluster.nodes[leader]), "tern_replication_under_replicated_partitions") >= 1,
        10, "the under-replicated gauge")
    producer.close()
    relaxed = KafkaProducer(bootstrap_servers=cluster.nodes[leader].bootstrap, acks=1, retries=0)
    relaxed.send("strict", b"acks=1 still works").get(timeout=10)
    relaxed.close()


def offset_for_leader_epoch(bootstrap, topic, partition, current, requested):
    """OffsetForLeaderEpoch v2 over a plain socket: (error, leader epoch, end offset)."""
    import struct

    from helpers import kafka_string, raw_request

    body = (struct.pack(">i", 1) + kafka_string(topic) + struct.pack(">i", 1)
            + struct.pack(">iii", partition, current, requested))
    answer = raw_request(bootstrap, 23, 2, 11, body)
    # throttle ms, topics (1): name, partitions (1): error, partition, epoch, end
    (name_len,) = struct.unpack_from(">h", answer, 4 + 4)
    error, index, epoch, end = struct.unpack_from(">hiiq", answer, 4 + 4 + 2 + name_len + 4)
    assert index == partition
    return error, epoch, end


def list_latest_offset(bootstrap, topic, partition, current):
    """ListOffsets v4 (latest) over a plain socket: (error, offset, leader epoch)."""
    import struct

    from helpers import kafka_string, raw_request

    body = (struct.pack(">ib", -1, 0) + struct.pack(">i", 1) + kafka_string(topic) + struct.pack(">i", 1)
            + struct.pack(">iiq", partition, current, -1))
    answer = raw_request(bootstrap, 2, 4, 12, body)
    # throttle ms, topics (1): name, partitions (1): partition, error, timestamp, offset, epoch
    (name_len,) = struct.unpack_from(">h", answer, 4 + 4)
    index, error, _, offset, epoch = struct.unpack_from(">ihqqi", answer, 4 + 4 + 2 + name_len + 4)
    assert index == partition
    return error, offset, epoch


def test_leader_epochs_tell_where_each_epoch_ends(cluster):
    create_topic(cluster, "epochs", 1)
    first = cluster.wait_until(lambda: leader_of(cluster, "epochs", 0), 15, "a leader")
    p = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all", "enable.idempotence": True})
    for i in range(10):
        p.produce("epochs", value=f"a{i}".encode(), partition=0)
    assert p.flush(30) == 0
    # A consumer reading across the leader change: librdkafka checks its position with
    # the new leader (OffsetForLeaderEpoch) before it fetches there.
    live = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "epochs-live",
                     "auto.offset.reset": "earliest", "enable.auto.commit": False,
                     "topic.metadata.refresh.interval.ms": 500})
    live.assign([TopicPartition("epochs", 0, 0)])
    live_values = []
    deadline = time.time() + 30
    while len(live_values) < 10 and time.time() < deadline:
        m = live.poll(0.2)
        if m is not None and not m.error():
            live_values.append(m.value().decode())

    cluster.kill(first)
    second = cluster.wait_until(lambda: leader_of(cluster, "epochs", 0) not in (None, first) and
                                leader_of(cluster, "epochs", 0), 15, "a new leader")
    for i in range(10):
        p.produce("epochs", value=f"b{i}".encode(), partition=0)
    assert p.flush(60) == 0
    deadline = time.time() + 30
    while len(live_values) < 20 and time.time() < deadline:
        m = live.poll(0.2)
        if m is not None and not m.error():
            live_values.append(m.value().decode())
    live.close()
    assert live_values == [f"a{i}" for i in range(10)] + [f"b{i}" for i in range(10)], live_values
    validations = metric(scrape(cluster.nodes[second]), "tern_requests_total", api="OffsetForLeaderEpoch")
    assert validations, "librdkafka checked its position with the new leader (KIP-320)"

    # The epochs the records were written in, as a consumer sees them.
    c = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "epochs-reader",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.assign([TopicPartition("epochs", 0, 0)])
    seen = []
    deadline = time.time() + 30
    while len(seen) < 20 and time.time() < deadline:
        m = c.poll(0.2)
        if m is not None and not m.error():
            seen.append((m.value().decode(), m.offset(), m.leader_epoch()))
    c.close()
    assert len(seen) == 20, seen
    old_epoch = {e for v, _, e in seen if v.startswith("a")}
    new_epoch = {e for v, _, e in seen if v.startswith("b")}
    assert len(old_epoch) == 1 and len(new_epoch) == 1, seen
    (old_epoch,), (new_epoch,) = old_epoch, new_epoch
    assert new_epoch > old_epoch
    first_b = min(o for v, o, _ in seen if v.startswith("b"))
    last_a = max(o for v, o, _ in seen if v.startswith("a"))

    leader = cluster.nodes[second].bootstrap
    # The old epoch ends where the new leader's first batch (its control batch) begins.
    error, epoch, end = offset_for_leader_epoch(leader, "epochs", 0, new_epoch, old_epoch)
    assert error == 0 and epoch <= old_epoch, (error, epoch, end)
    assert last_a < end < first_b, (last_a, end, first_b)
    old_end = end
    # Fetch v12+ (KIP-320): a client whose last fetched batch is of the old epoch, asking
    # past that epoch's end, is told where its log diverges; at the end, it reads on.
    diverged = fetch_v12(leader, "epochs", 0, first_b + 2, old_epoch, new_epoch)
    assert diverged["error"] == 0 and diverged["diverging_epoch"] == (old_epoch, old_end), diverged
    assert diverged["records"] == b"" and diverged["high_watermark"] == first_b + 10
    at_end = fetch_v12(leader, "epochs", 0, old_end, old_epoch, new_epoch)
    assert at_end["diverging_epoch"] is None and at_end["records"], at_end
    current = fetch_v12(leader, "epochs", 0, first_b + 2, new_epoch, new_epoch)
    assert current["diverging_epoch"] is None and current["records"], current
    assert fetch_v12(leader, "epochs", 0, first_b + 2, new_epoch + 3)["error"] == 1  # OFFSET_OUT_OF_RANGE
    # The current epoch ends at the log end.
    error, epoch, end = offset_for_leader_epoch(leader, "epochs", 0, new_epoch, new_epoch)
    assert (error, epoch) == (0, new_epoch) and end == first_b + 10, (error, epoch, end)
    # A client with an old or a future current epoch is refused.
    assert offset_for_leader_epoch(leader, "epochs", 0, old_epoch, old_epoch)[0] == 74  # FENCED_LEADER_EPOCH
    assert offset_for_leader_epoch(leader, "epochs", 0, new_epoch + 5, old_epoch)[0] == 75  # UNKNOWN_LEADER_EPOCH
    # ListOffsets answers the leader's epoch, and checks the client's as Fetch does.
    assert list_latest_offset(leader, "epochs", 0, new_epoch) == (0, first_b + 10, new_epoch)
    assert list_latest_offset(leader, "epochs", 0, old_epoch)[0] == 74
    follower = next(n for n, node in cluster.nodes.items() if node.alive() and n != second)
    assert offset_for_leader_epoch(cluster.nodes[follower].bootstrap, "epochs", 0, -1, new_epoch)[0] == 6

    # The killed node comes back as a follower; consumers read on through the change.
    cluster.start(first)
    c = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "epochs-reader-2",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.assign([TopicPartition("epochs", 0, 0)])
    values = []
    deadline = time.time() + 30
    while len(values) < 20 and time.time() < deadline:
        m = c.poll(0.2)
        if m is not None and not m.error():
            values.append(m.value().decode())
    c.close()
    assert values == [f"a{i}" for i in range(10)] + [f"b{i}" for i in range(10)]


def test_replication_latency_histograms(cluster):
    """`tern_replication_commit_seconds` counts each acks=all batch once, at its leader
    (proposal to commit); `tern_replication_follower_ack_seconds` counts the appends each
    follower acknowledged (arrival to acknowledgement); acks=1 batches are not commits."""
    create_topic(cluster, "timed", 1)
    leader = leader_of(cluster, "timed", 0)
    followers = [n for n in cluster.nodes if n != leader]

    def counts():
        commits = metric(scrape(cluster.nodes[leader]), "tern_replication_commit_seconds_count") or 0
        acks = [metric(scrape(cluster.nodes[n]), "tern_replication_follower_ack_seconds_count") or 0 for n in followers]
        return commits, acks

    commits_before, acks_before = counts()
    producer = Producer({"bootstrap.servers": cluster.nodes[leader].bootstrap, "acks": "all", "linger.ms": 0})
    for i in range(20):
        producer.produce("timed", f"record {i}".encode(), partition=0)
        assert producer.flush(10) == 0
    commits, acks = counts()
    # One batch per flush; the internal topics' groups may commit too, never fewer.
    assert commits - commits_before >= 20
    assert all(after - before >= 1 for before, after in zip(acks_before, acks))
    assert metric(scrape(cluster.nodes[leader]), "tern_replication_commit_seconds_sum") > 0

    relaxed = Producer({"bootstrap.servers": cluster.nodes[leader].bootstrap, "acks": "1", "linger.ms": 0})
    for i in range(5):
        relaxed.produce("timed", f"acks=1 {i}".encode(), partition=0)
        assert relaxed.flush(10) == 0
    assert counts()[0] - commits < 5
