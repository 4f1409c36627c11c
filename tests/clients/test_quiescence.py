"""Quiet replica groups on 3-node clusters of real `tern` processes (127.0.0.1), with real
clients (librdkafka, kafka-python).

A replicated partition with nothing to replicate stops ticking and heartbeating
(`src/shard/quiescence.rs`); its followers watch the leader's broker through the pair
heartbeats instead. These tests check that quiet is only an optimisation:

- every group of an idle cluster goes quiet (`tern_replication_quiesced_groups`), while
  Metadata still reports every replica in sync;
- a write to a quiet partition with acks=all and min.insync.replicas=3 succeeds at once
  (a quiet leader's followers are still in sync), and the group goes quiet again after;
- SIGKILL of a quiet partition's leader: the followers notice the broker is gone, elect a
  new leader, which takes acks=all writes; the old leader comes back as a follower and
  every replica ends with the same bytes;
- SIGSTOP of a quiet leader: the same, and once resumed it rejoins as a follower;
- SIGTERM of a quiet leader: it tells its followers it stops leading (they elect
  another at once);
- a quiet leader whose replica driver hangs while its broker lives on (fault
  injection): its driver heartbeats stop and the followers elect another leader.
"""
import time

from confluent_kafka import Producer
from kafka import KafkaProducer

from cluster_fixture import running_cluster
from helpers import metric, scrape
from test_replication import (CLUSTER_ARGS, check_acked, check_identical_replicas, create_topic, full_log,
                              leader_of, wait_caught_up)

import pytest

PARTITIONS = 6


@pytest.fixture
def cluster(tmp_path):
    yield from running_cluster(tmp_path, CLUSTER_ARGS)


def group_counts(cluster):
    """{node: (quiet groups, groups)} for every running node."""
    counts = {}
    for n, node in cluster.nodes.items():
        if node.alive() and not node.paused:
            text = scrape(node)
            counts[n] = (int(metric(text, "tern_replication_quiesced_groups") or 0),
                         int(metric(text, "tern_replication_groups") or 0))
    return counts


def wait_all_quiet(cluster, timeout=30):
    def quiet():
        counts = group_counts(cluster)
        return all(q == g and g > 0 for q, g in counts.values()) and counts

    return cluster.wait_until(quiet, timeout, "every replica group quiet")


def produce_acks_all(cluster, topic, partitions, tag, bootstrap=None, idempotent=True):
    """One acks=all record per partition through librdkafka; [(partition, offset, value)]."""
    acked, errors = [], []
    producer = Producer({"bootstrap.servers": bootstrap or cluster.bootstrap, "acks": "all", "enable.idempotence": idempotent,
                         "message.timeout.ms": 30000, "topic.metadata.refresh.interval.ms": 500})
    for p in range(partitions):
        producer.produce(topic, value=f"{tag}-{p}".encode(), partition=p,
                         on_delivery=lambda e, m: errors.append(e) if e else
                         acked.append((m.partition(), m.offset(), m.value())))
    assert producer.flush(40) == 0, "records never delivered"
    assert not errors, errors
    return acked


def test_idle_groups_go_quiet_and_wake_for_writes(cluster):
    create_topic(cluster, "calm", PARTITIONS, {"min.insync.replicas": "3"})
    counts = wait_all_quiet(cluster)
    # 16 + 16 internal partitions on three nodes each, plus ours.
    assert all(g == 32 + PARTITIONS for _, g in counts.values()), counts
    wait_caught_up(cluster, "calm", PARTITIONS, timeout=5)

    # min.insync.replicas=3: answered only if the quiet leader still counts both
    # followers in sync, and only once both have the record.
    leader = leader_of(cluster, "calm", 0)
    kafka_python = KafkaProducer(bootstrap_servers=cluster.nodes[leader].bootstrap, acks="all", retries=0)
    metadata = kafka_python.send("calm", b"first after quiet", partition=0).get(timeout=10)
    kafka_python.close()
    acked = [(0, metadata.offset, b"first after quiet")]
    acked += produce_acks_all(cluster, "calm", PARTITIONS, "round-1")
    wait_all_quiet(cluster)
    acked += produce_acks_all(cluster, "calm", PARTITIONS, "round-2")
    wait_all_quiet(cluster)
    check_acked(cluster, "calm", PARTITIONS, acked)
    check_identical_replicas(cluster, "calm", PARTITIONS)


def test_a_quiet_leader_killed_is_replaced(cluster):
    create_topic(cluster, "calm", PARTITIONS)
    acked = produce_acks_all(cluster, "calm", PARTITIONS, "before")
    wait_all_quiet(cluster)
    victim = leader_of(cluster, "calm", 0)
    killed = time.time()
    cluster.kill(victim)
    cluster.wait_until(lambda: leader_of(cluster, "calm", 0) not in (None, victim), 15,
                       "a new leader for the quiet partition")
    elected = time.time() - killed
    print(f"quiet leader {victim} killed; new leader after {elected:.2f} s")
    # Every partition the dead broker led is led elsewhere, and takes acks=all writes.
    acked += produce_acks_all(cluster, "calm", PARTITIONS, "during")
    cluster.start(victim)
    wait_caught_up(cluster, "calm", PARTITIONS)
    acked += produce_acks_all(cluster, "calm", PARTITIONS, "after")
    wait_all_quiet(cluster)
    check_acked(cluster, "calm", PARTITIONS, acked)
    check_identical_replicas(cluster, "calm", PARTITIONS)


def test_a_paused_quiet_leader_rejoins_as_follower(cluster):
    create_topic(cluster, "calm", 1)
    acked = produce_acks_all(cluster, "calm", 1, "before")
    wait_all_quiet(cluster)
    victim = leader_of(cluster, "calm", 0)
    cluster.pause(victim)
    try:
        cluster.wait_until(lambda: leader_of(cluster, "calm", 0) not in (None, victim), 15,
                           "a new leader while the quiet one is paused")
        acked += produce_acks_all(cluster, "calm", 1, "while-paused")
    finally:
        cluster.resume(victim)
    wait_caught_up(cluster, "calm", 1)
    acked += produce_acks_all(cluster, "calm", 1, "after")
    wait_all_quiet(cluster)
    check_acked(cluster, "calm", 1, acked)
    check_identical_replicas(cluster, "calm", 1)


def test_a_quiet_leader_shut_down_tells_its_followers(cluster):
    """SIGTERM of a quiet leader: it tells its followers it stops leading, and they elect
    another at once instead of waiting for its broker's silence."""
    create_topic(cluster, "calm", 1)
    acked = produce_acks_all(cluster, "calm", 1, "before")
    wait_all_quiet(cluster)
    victim = leader_of(cluster, "calm", 0)
    stopped = time.time()
    assert cluster.stop(victim) == 0
    cluster.wait_until(lambda: leader_of(cluster, "calm", 0) not in (None, victim), 15, "a new leader")
    print(f"quiet leader {victim} stopped; new leader after {time.time() - stopped:.2f} s")
    told = [n for n, node in cluster.nodes.items() if n != victim
            and "calm-0" in "".join(line for line in full_log(node).splitlines() if "stops leading here" in line)]
    assert told, "the followers were not told"
    acked += produce_acks_all(cluster, "calm", 1, "after")
    cluster.start(victim)
    wait_caught_up(cluster, "calm", 1)
    check_acked(cluster, "calm", 1, acked)


STALL_FILE = "fault-stall-replicas"


@pytest.fixture
def stallable_cluster(tmp_path, monkeypatch):
    """Nodes whose replica drivers stall while `<data dir>/fault-stall-replicas` exists
    (`TERN_FAULT_STALL_REPLICAS`, as on a disk write that never returns)."""
    monkeypatch.setenv("TERN_FAULT_STALL_REPLICAS", STALL_FILE)
    yield from running_cluster(tmp_path, CLUSTER_ARGS)


def test_a_quiet_leader_whose_driver_hangs_is_replaced(stallable_cluster):
    """The leader's broker lives on (its metadata quorum, its client connections), but
    the replica driver that leads the quiet partition stops: its driver heartbeats stop,
    and the followers elect another leader."""
    cluster = stallable_cluster
    create_topic(cluster, "calm", 1)
    acked = produce_acks_all(cluster, "calm", 1, "before")
    wait_all_quiet(cluster)
    victim = leader_of(cluster, "calm", 0)
    stall = cluster.nodes[victim].data_dir / STALL_FILE
    stall.touch()
    try:
        new = cluster.wait_until(lambda: cluster.leader_agreed_without(victim, "calm", 0), 15,
                                 "the others electing a leader while the quiet leader's driver hangs")
        assert cluster.nodes[victim].alive()
        print(f"leader {victim}'s replica driver stalled; {new} leads")
        # Through the other brokers: the stalled one still names itself (its driver
        # has not seen the new term), as a hung Kafka broker would.
        others = ",".join(node.bootstrap for n, node in cluster.nodes.items() if n != victim)
        acked += produce_acks_all(cluster, "calm", 1, "during", bootstrap=others)
    finally:
        stall.unlink()
    wait_caught_up(cluster, "calm", 1)
    acked += produce_acks_all(cluster, "calm", 1, "after")
    check_acked(cluster, "calm", 1, acked)
    check_identical_replicas(cluster, "calm", 1)

