"""A 3-node Tern cluster (three `tern serve` processes, each with its own data dir) driven
by real clients: librdkafka (confluent-kafka) and kafka-python.

What is proven here:
- topics created through one broker are visible from every broker, with the same
  replica placement and leaders spread over the brokers; produce and consume (with a
  consumer group and committed offsets) through any bootstrap broker;
- idempotent producers bootstrapped to different brokers get distinct producer ids
  (ids come from replicated blocks): three of them writing one partition lose nothing;
- SIGKILL of the controller (metadata quorum leader): a new one (2 s target, measured by perf/cluster_failover.py), topic
  creation works again, every committed topic is still there, and the killed node
  catches up when restarted (including a topic created while it was down);
- SIGSTOP of a node for longer than its session: it is fenced (gone from Metadata, its
  partitions without a leader), and after SIGCONT it rejoins and leads them again;
- a minority (two nodes stopped) cannot change metadata: CreateTopics fails with a
  clear error, and once the majority is back the topic does not exist;
- a standalone node's data dir becomes node 1 of a cluster without losing its records.
"""

import os
import shutil
import subprocess
import time

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaConsumer

from cluster_fixture import Cluster, running_cluster
from conftest import BINARY
from helpers import metric, scrape

SESSION_MS = 3000
CLUSTER_ARGS = [
    "--broker-session-timeout-ms", str(SESSION_MS),
    "--broker-heartbeat-interval-ms", "300",
    "--group-initial-rebalance-delay-ms", "0",
    "--group-min-session-timeout-ms", "1000",
]


@pytest.fixture
def cluster(tmp_path):
    yield from running_cluster(tmp_path, CLUSTER_ARGS)


def create_topic(bootstrap, name, partitions, replication_factor=1, timeout=15):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(name, partitions, replication_factor)], operation_timeout=timeout)
    futures[name].result(timeout=timeout)


def produce(bootstrap, topic, count, prefix="v", partition=None, **config):
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                         "linger.ms": 5, **config})
    acked, errors = [], []

    def report(error, message):
        (errors if error else acked).append(error or (message.partition(), message.offset(), message.value()))

    for i in range(count):
        kwargs = {"partition": partition} if partition is not None else {}
        producer.produce(topic, key=f"k{i}".encode(), value=f"{prefix}{i}".encode(), on_delivery=report, **kwargs)
        producer.poll(0)
    assert producer.flush(30) == 0, "undelivered records"
    assert not errors, errors[:5]
    return acked


def consume_all(bootstrap, topic, partitions, expected, timeout=30):
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{time.time()}",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    got = {}
    deadline = time.time() + timeout
    while len(got) < expected and time.time() < deadline:
        message = consumer.poll(0.5)
        if message is None or message.error():
            continue
        got[(message.partition(), message.offset())] = message.value()
    consumer.close()
    return got


def test_topics_are_visible_from_every_broker_and_clients_work_through_any(cluster):
    create_topic(cluster.nodes[1].bootstrap, "orders", 6, replication_factor=3)
    create_topic(cluster.nodes[2].bootstrap, "events", 3)

    def agreed_layouts():
        # Replicated partitions are led once their Raft group elects (at once: the
        # preferred replica campaigns when the group starts); every broker must then
        # describe the same leaders and placement.
        layouts = []
        for n in cluster.nodes:
            metadata = cluster.metadata(n)
            if not {"orders", "events"} <= set(metadata.topics) or sorted(metadata.brokers) != [1, 2, 3]:
                return None
            partitions = [(t, p) for t in ("orders", "events") for p in metadata.topics[t].partitions.values()]
            if any(p.leader < 0 for _, p in partitions):
                return None
            layouts.append({(t, p.id): (p.leader, tuple(p.replicas)) for t, p in partitions})
        return layouts if layouts[0] == layouts[1] == layouts[2] else None

    layouts = cluster.wait_until(agreed_layouts, 15, "every broker describing the same leaders and placement")
    orders = {k: v for k, v in layouts[0].items() if k[0] == "orders"}
    assert all(len(set(replicas)) == 3 for _, replicas in orders.values()), "RF=3 on three distinct brokers"
    leaders = [leader for leader, _ in orders.values()]
    assert sorted(leaders.count(b) for b in (1, 2, 3)) == [2, 2, 2], f"leaders spread round-robin: {leaders}"

    # Produce through node 3, consume through node 1 (librdkafka) and in a group through
    # node 2 (kafka-python), committing offsets to the group's coordinator.
    acked = produce(cluster.nodes[3].bootstrap, "orders", 300)
    assert len(acked) == 300
    got = consume_all(cluster.nodes[1].bootstrap, "orders", 6, 300)
    assert got == {(p, o): v for p, o, v in acked}

    consumer = KafkaConsumer("orders", bootstrap_servers=cluster.nodes[2].bootstrap, group_id="cluster-group",
                             auto_offset_reset="earliest", enable_auto_commit=False, consumer_timeout_ms=15000)
    seen = 0
    for _ in consumer:
        seen += 1
        if seen == 300:
            break
    consumer.commit()
    committed = {p: consumer.committed(p) for p in consumer.assignment()}
    ends = consumer.end_offsets(list(consumer.assignment()))
    consumer.close()
    assert seen == 300
    # Each replicated partition starts with its first leader's control batch (one
    # offset, skipped by clients), so the group is at each partition's end offset.
    assert committed == ends, (committed, ends)

    # The group's committed offsets are served by its coordinator whichever broker asks.
    reader = Consumer({"bootstrap.servers": cluster.nodes[3].bootstrap, "group.id": "cluster-group"})
    offsets = reader.committed([TopicPartition("orders", p) for p in range(6)], timeout=10)
    reader.close()
    assert sum(tp.offset for tp in offsets) == sum(ends.values())


def test_idempotent_producers_on_different_brokers_get_distinct_ids(cluster):
    create_topic(cluster.nodes[1].bootstrap, "shared", 1)
    # Each producer writes the same keys with sequence numbers from 0: had two of them
    # been given the same producer id, the leader would drop one's batches as duplicates.
    acked = []
    for n in cluster.nodes:
        acked += produce(cluster.nodes[n].bootstrap, "shared", 50, prefix=f"p{n}-", partition=0)
    assert len(acked) == 150
    got = consume_all(cluster.nodes[2].bootstrap, "shared", 1, 150)
    assert len(got) == 150
    assert sorted(got.values()) == sorted(v for _, _, v in acked)


def test_killing_the_controller_elects_a_new_one_and_loses_no_metadata(cluster):
    for i in range(3):
        create_topic(cluster.bootstrap, f"before-{i}", 2)
    controller = cluster.wait_formed()
    survivors = [n for n in cluster.nodes if n != controller]

    killed_at = time.time()
    cluster.kill(controller)
    def new_controller():
        current = cluster.controller(survivors[0])
        return current if current not in (None, controller) else None

    new = cluster.wait_until(new_controller, 10, "a new controller")
    elapsed = time.time() - killed_at
    print(f"new controller {new} {elapsed:.2f}s after SIGKILL of {controller}")
    # The 2 s target is measured by perf/cluster_failover.py (20 rounds, median and max,
    # 0.9-1.4 s here when run alone); this bound only catches an election that waits for
    # something else (a session timeout), not a slow moment of a loaded CI machine (2.5 s
    # was seen once).
    assert elapsed < 5.0, f"new controller after {elapsed:.2f}s"

    create_topic(cluster.nodes[survivors[1]].bootstrap, "after-kill", 2)
    for n in survivors:
        topics = set(cluster.metadata(n).topics)
        assert {"before-0", "before-1", "before-2", "after-kill"} <= topics, topics

    cluster.start(controller)
    cluster.wait_formed()
    caught_up = cluster.wait_until(
        lambda: {"before-0", "after-kill"} <= set(cluster.metadata(controller).topics), 10,
        "the restarted node to catch up")
    assert caught_up
    # And its shards opened the partitions it was given while it was down.
    assert produce(cluster.nodes[controller].bootstrap, "after-kill", 20)


def test_a_paused_broker_is_fenced_then_rejoins(cluster):
    create_topic(cluster.nodes[1].bootstrap, "fenced", 3)
    controller = cluster.wait_formed()
    paused = next(n for n in cluster.nodes if n != controller)
    watcher = controller

    cluster.pause(paused)
    cluster.wait_until(lambda: paused not in cluster.live_brokers(watcher), SESSION_MS / 1000 + 5,
                       f"node {paused} to be fenced")
    metadata = cluster.metadata(watcher)
    offline = [p.id for p in metadata.topics["fenced"].partitions.values() if p.leader == -1]
    assert offline, "the paused node's partitions have no leader"
    text = scrape(cluster.nodes[watcher])
    assert metric(text, "tern_cluster_brokers_fenced") == 1, text
    assert metric(text, "tern_cluster_brokers_live") == 2
    assert metric(text, "tern_cluster_is_controller") == 1
    assert metric(text, "tern_cluster_controller_id") == watcher

    cluster.resume(paused)
    cluster.wait_until(lambda: paused in cluster.live_brokers(watcher), 10, f"node {paused} to rejoin")
    cluster.wait_until(
        lambda: all(p.leader >= 0 for p in cluster.metadata(watcher).topics["fenced"].partitions.values()), 10,
        "every partition to have a leader again")
    assert len(produce(cluster.bootstrap, "fenced", 30)) == 30


def test_a_paused_controller_is_replaced_and_rejoins_as_follower(cluster):
    controller = cluster.wait_formed()
    cluster.pause(controller)
    others = [n for n in cluster.nodes if n != controller]
    cluster.wait_until(lambda: cluster.controller(others[0]) not in (None, controller), 10, "a new controller")
    create_topic(cluster.nodes[others[0]].bootstrap, "while-paused", 1)
    cluster.resume(controller)
    # Pre-vote and check-quorum: the old leader learns the new term and follows.
    cluster.wait_formed()
    cluster.wait_until(lambda: "while-paused" in cluster.metadata(controller).topics, 10,
                       "the old controller to learn the new topic")


def test_a_minority_cannot_change_metadata(cluster):
    controller = cluster.wait_formed()
    survivor = next(n for n in cluster.nodes if n != controller)
    stopped = [n for n in cluster.nodes if n != survivor]
    for n in stopped:
        cluster.pause(n)
    # Give check-quorum time to depose a leader cut off from its majority.
    time.sleep(2.0)
    admin = AdminClient({"bootstrap.servers": cluster.nodes[survivor].bootstrap})
    future = admin.create_topics([NewTopic("minority", 1, 1)], operation_timeout=5, request_timeout=5)["minority"]
    with pytest.raises(KafkaException) as refused:
        future.result(timeout=40)
    message = str(refused.value)
    print("minority CreateTopics (librdkafka):", message)
    # librdkafka sends CreateTopics only to a controller, and Metadata reports none.
    assert "controller" in message.lower(), message
    # `tern topic create` sends it to the survivor, which answers with the reason.
    result = subprocess.run([str(BINARY), "topic", "create", "minority", "--partitions", "1",
                             "--brokers", cluster.nodes[survivor].bootstrap],
                            capture_output=True, text=True, timeout=60)
    print("minority CreateTopics (tern topic create):", result.stderr.strip())
    assert result.returncode != 0
    assert "quorum" in result.stderr, result.stderr

    for n in stopped:
        cluster.resume(n)
    cluster.wait_formed()
    time.sleep(1.0)
    for n in cluster.nodes:
        assert "minority" not in cluster.metadata(n).topics, "nothing half-applied"
    create_topic(cluster.nodes[survivor].bootstrap, "minority", 1)


def test_a_standalone_node_becomes_the_first_node_of_a_cluster(tmp_path, broker_factory):
    data = tmp_path / "standalone"
    standalone = broker_factory(data_dir=data)
    create_topic(standalone.bootstrap, "legacy", 2)
    acked = produce(standalone.bootstrap, "legacy", 100)
    assert standalone.stop() == 0

    cluster = Cluster(tmp_path / "cluster", extra_args=CLUSTER_ARGS)
    cluster.nodes[1].data_dir = data
    try:
        cluster.start()
        cluster.wait_formed()
        cluster.wait_until(lambda: "legacy" in cluster.metadata(3).topics, 15, "the standalone topics imported")
        metadata = cluster.metadata(2)
        assert all(p.leader == 1 for p in metadata.topics["legacy"].partitions.values())
        got = consume_all(cluster.nodes[3].bootstrap, "legacy", 2, 100)
        assert got == {(p, o): v for p, o, v in acked}
        more = produce(cluster.nodes[2].bootstrap, "legacy", 10, prefix="new")
        assert all(o >= 0 for _, o, _ in more)
    finally:
        cluster.shutdown()
    # Once a cluster node, the data dir refuses to start without the cluster flags.
    alone = subprocess.run([str(BINARY), "serve", "--data-dir", str(data), "--listen", "127.0.0.1:0",
                            "--admin-listen", "off", "--cores", "0", "--no-pin", "--memory", "1M"],
                           capture_output=True, text=True, timeout=30)
    assert alone.returncode != 0
    assert "belongs to a cluster node" in alone.stderr, alone.stderr


def test_the_local_cluster_script_starts_reports_and_stops_three_nodes():
    """`tests/local-cluster.sh` as the README shows it (ports 9092-9094), with a relative
    cluster dir."""
    root = BINARY.parents[2]
    env = {**os.environ, "CLUSTER_DIR": "target/test-local-cluster", "TERN": str(BINARY)}
    shutil.rmtree(root / "target" / "test-local-cluster", ignore_errors=True)
    script = str(root / "tests" / "local-cluster.sh")
    try:
        started = subprocess.run([script, "start"], env=env, capture_output=True, text=True, timeout=60)
        assert started.returncode == 0, started.stdout + started.stderr
        assert "brokers: 3" in started.stdout, started.stdout
        created = subprocess.run([str(BINARY), "topic", "create", "scripted", "--partitions", "3",
                                  "--replication-factor", "3", "--brokers", "127.0.0.1:9094"],
                                 capture_output=True, text=True, timeout=30)
        assert created.returncode == 0, created.stderr
        # The new partitions' replica groups elect their leaders within moments.
        deadline = time.time() + 15
        while True:
            status = subprocess.run([script, "status"], env=env, capture_output=True, text=True, timeout=30)
            assert status.returncode == 0, status.stderr
            if "partitions: 3, without a leader: 0, under-replicated: 0" in status.stdout or time.time() > deadline:
                break
            time.sleep(0.2)
        assert "partitions: 3, without a leader: 0, under-replicated: 0" in status.stdout, status.stdout
    finally:
        stopped = subprocess.run([script, "stop"], env=env, capture_output=True, text=True, timeout=60)
    assert stopped.returncode == 0, stopped.stderr
    assert "did not stop" not in stopped.stderr
    pids = list((root / "target" / "test-local-cluster").glob("node-*.pid"))
    assert not pids, "stop removes the pid files"


def test_a_partition_directory_of_another_topic_id_is_set_aside_not_served(tmp_path, broker_factory):
    """`partition.metadata` names the topic id a partition directory belongs to. A
    directory left by another topic of the same name (a deleted one, or a standalone
    node's topic that was never imported) is kept aside and never served as this one."""
    data = tmp_path / "data"
    broker = broker_factory(data_dir=data)
    create_topic(broker.bootstrap, "named", 1)
    produce(broker.bootstrap, "named", 10)
    assert broker.stop() == 0
    claim = (data / "named-0" / "partition.metadata").read_text()
    assert "topic_id: " in claim
    (data / "named-0" / "partition.metadata").write_text("version: 0\ntopic_id: " + "ab" * 16 + "\n")

    broker = broker_factory(data_dir=data)
    orphans = list(data.glob("named-0.orphan-*"))
    assert len(orphans) == 1, list(data.iterdir())
    assert any(f.stat().st_size > 0 for f in orphans[0].glob("*.log")), "the other topic's data is kept"
    assert consume_all(broker.bootstrap, "named", 1, 1, timeout=3) == {}, "and not served as this topic"
    assert broker.stop() == 0


def test_cluster_flags_from_a_config_file_and_clear_errors(tmp_path):
    config = tmp_path / "tern.toml"
    config.write_text('node_id = 2\ncluster_listen = "127.0.0.1:19193"\n'
                      'peers = "1@127.0.0.1:19192,2@127.0.0.1:19193,3@127.0.0.1:19194"\nrack = "a"\n')
    printed = subprocess.run([str(BINARY), "serve", "--config", str(config), "--print-config"],
                             capture_output=True, text=True, timeout=30)
    assert printed.returncode == 0, printed.stderr
    assert 'peers = "1@127.0.0.1:19192,2@127.0.0.1:19193,3@127.0.0.1:19194"' in printed.stdout
    assert "node_id = 2" in printed.stdout

    def refused(*flags):
        result = subprocess.run([str(BINARY), "serve", "--data-dir", str(tmp_path / "d"), *flags],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode != 0
        return result.stderr

    assert "all three" in refused("--peers", "1@127.0.0.1:19192")
    assert "this node" in refused("--node-id", "4", "--cluster-listen", "127.0.0.1:19192",
                                  "--peers", "1@127.0.0.1:19192,2@127.0.0.1:19193")
    assert "start at 1" in refused("--node-id", "0", "--cluster-listen", "127.0.0.1:19192",
                                   "--peers", "0@127.0.0.1:19192")
    assert "must differ" in refused("--node-id", "1", "--listen", "127.0.0.1:19192",
                                    "--cluster-listen", "127.0.0.1:19192", "--peers", "1@127.0.0.1:19192")
