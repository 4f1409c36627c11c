"""Partition reassignment in a 4-node cluster (issue 16): `tern topic reassign` and
Kafka's AlterPartitionReassignments (kafkajs) move replicas to another broker while an
idempotent acks=all producer writes. Afterwards every acknowledged record is at its
offset, Metadata names the new replicas, the brokers that left have deleted their copy,
the replicas that hold the partition have identical logs, and a restart of every broker
(SIGKILL) brings the moved groups back. A move that cannot finish
(its new broker's replicas stalled) is listed, cancelled, and the partition is back where it was.
A voter whose copy is wiped right after a move (the configuration changes still among the
leader's in-memory entries) copies the leader's log and votes correctly afterwards."""

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from cluster_fixture import running_cluster
from conftest import BINARY
from test_replication import (CLUSTER_ARGS, BackgroundProducer, check_acked, check_identical_replicas, create_topic,
                              leader_of)

JS = Path(__file__).parent / "js"


STALL_FILE = "fault-stall-replicas"


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    # A node's replica driver stalls while `<data dir>/fault-stall-replicas` exists
    # (`TERN_FAULT_STALL_REPLICAS`): a new replica that cannot catch up, on a broker whose
    # metadata quorum member (maybe the controller) goes on answering.
    monkeypatch.setenv("TERN_FAULT_STALL_REPLICAS", STALL_FILE)
    yield from running_cluster(tmp_path, CLUSTER_ARGS, size=4)


def stall(cluster, node):
    (cluster.nodes[node].data_dir / STALL_FILE).touch()


def unstall(cluster, node):
    (cluster.nodes[node].data_dir / STALL_FILE).unlink(missing_ok=True)


def kafkajs(cluster, command):
    if not (JS / "node_modules" / "kafkajs").is_dir():
        pytest.skip("kafkajs is not installed (tests/run.sh runs npm ci in tests/clients/js)")
    command = {"brokers": [node.bootstrap for node in cluster.nodes.values() if node.alive() and not node.paused],
               **command}
    done = subprocess.run(["node", str(JS / "reassign.js"), json.dumps(command)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def tern_topic(cluster, *args, timeout=180):
    return subprocess.run([BINARY, "topic", "--brokers", cluster.bootstrap, *args], capture_output=True,
                          text=True, timeout=timeout)


def replicas_seen(cluster, topic, partition, settle_s=10):
    """Replicas and in-sync replicas of a partition in every running node's Metadata
    (they must agree: leaders announce changes to every broker, so agreement may take a
    moment after one, such as a new topic's first in-sync set)."""
    deadline = time.time() + settle_s
    while True:
        seen = set()
        for n, node in cluster.nodes.items():
            if node.alive() and not node.paused:
                p = cluster.metadata(n).topics[topic].partitions[partition]
                seen.add((tuple(p.replicas), tuple(sorted(p.isrs))))
        if len(seen) == 1 or time.time() >= deadline:
            break
        time.sleep(0.1)
    assert len(seen) == 1, f"the nodes disagree: {seen}"
    return seen.pop()


def partition_dir_exists(cluster, node, topic, partition):
    return (cluster.nodes[node].data_dir / f"{topic}-{partition}").exists()


def test_replicas_move_to_another_broker_while_traffic_flows(cluster):
    topic, partitions = "moving", 2
    create_topic(cluster, topic, partitions)
    before = {p: list(replicas_seen(cluster, topic, p)[0]) for p in range(partitions)}
    leader0 = leader_of(cluster, topic, 0)
    leader1 = leader_of(cluster, topic, 1)
    # Partition 0 swaps a follower for the broker it lacks; partition 1 loses its leader.
    spare0 = next(n for n in cluster.nodes if n not in before[0])
    gone0 = next(n for n in before[0] if n != leader0)
    target0 = [n for n in before[0] if n != gone0] + [spare0]
    spare1 = next(n for n in cluster.nodes if n not in before[1])
    target1 = [spare1] + [n for n in before[1] if n != leader1]
    producer = BackgroundProducer(cluster.bootstrap, topic, partitions)
    try:
        time.sleep(2)
        done = tern_topic(cluster, "reassign", topic, "--move", f"0={','.join(map(str, target0))}",
                          "--move", f"1={','.join(map(str, target1))}", "--wait", "120")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "every requested move is complete" in done.stdout
        time.sleep(2)
    finally:
        producer.stop()
    assert not producer.errors, producer.errors[:5]
    assert len(producer.acked) > 1000, f"only {len(producer.acked)} records acknowledged during the move"
    for p, target in ((0, target0), (1, target1)):
        cluster.wait_until(lambda: replicas_seen(cluster, topic, p) == (tuple(target), tuple(sorted(target))), 30,
                           f"partition {p} on {target}, all in sync")
    assert tern_topic(cluster, "reassignments").stdout.strip().count("\n") == 0, "no move in progress"
    cluster.wait_until(lambda: not partition_dir_exists(cluster, gone0, topic, 0), 30,
                       f"broker {gone0} to delete its copy of partition 0")
    cluster.wait_until(lambda: not partition_dir_exists(cluster, leader1, topic, 1), 30,
                       f"broker {leader1} to delete its copy of partition 1")
    assert leader_of(cluster, topic, 1) in target1
    acked = [(p, o, v) for p, o, v in producer.acked]
    # Every broker killed and restarted: each reopens its replica with the configuration
    # it had (the state file's), and writes go on through the new leaders.
    for n in list(cluster.nodes):
        cluster.kill(n)
    cluster.start()
    cluster.wait_formed()
    for p, target in ((0, target0), (1, target1)):
        cluster.wait_until(lambda: replicas_seen(cluster, topic, p) == (tuple(target), tuple(sorted(target))), 30,
                           f"partition {p} led on {target} after the restart")
    late = BackgroundProducer(cluster.bootstrap, topic, partitions, prefix="late")
    time.sleep(2)
    late.stop()
    assert not late.errors, late.errors[:5]
    check_acked(cluster, topic, partitions, acked + late.acked)
    check_identical_replicas(cluster, topic, partitions, hosts={0: target0, 1: target1})


def test_kafkajs_moves_a_replica_and_a_stuck_move_is_cancelled(cluster):
    topic = "stuck"
    create_topic(cluster, topic, 1)
    before = list(replicas_seen(cluster, topic, 0)[0])
    spare = next(n for n in cluster.nodes if n not in before)
    # Bad requests get Kafka's error codes.
    refused = kafkajs(cluster, {"op": "alter", "topic": topic, "moves": {"0": [before[0], 99]}})
    assert not refused["ok"] and refused["errors"][0]["type"] == "INVALID_REPLICA_ASSIGNMENT", refused
    refused = kafkajs(cluster, {"op": "alter", "topic": topic, "moves": {"5": [1, 2]}})
    assert not refused["ok"] and refused["errors"][0]["type"] == "UNKNOWN_TOPIC_OR_PARTITION", refused
    nothing = tern_topic(cluster, "reassign", topic, "--cancel", "0")
    assert nothing.returncode != 0 and "NO_REASSIGNMENT_IN_PROGRESS" in nothing.stdout + nothing.stderr

    # The new broker's replicas stall: the move cannot finish; it is listed, then cancelled.
    stall(cluster, spare)
    try:
        target = before[:2] + [spare]
        assert kafkajs(cluster, {"op": "alter", "topic": topic, "moves": {"0": target}}) == {"ok": True}
        listed = kafkajs(cluster, {"op": "list"})
        moves = [(t["name"], p) for t in listed["topics"] for p in t["partitions"]]
        assert len(moves) == 1, listed
        name, move = moves[0]
        assert (name, move["partition"], move["addingReplicas"], move["removingReplicas"]) == (
            topic, 0, [spare], [before[2]]), listed
        assert sorted(move["replicas"]) == sorted(before + [spare])
        producer = BackgroundProducer(cluster.bootstrap, topic, 1)
        time.sleep(3)
        cancelled = tern_topic(cluster, "reassign", topic, "--cancel", "0", "--wait", "60")
        assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
        time.sleep(1)
        producer.stop()
    finally:
        unstall(cluster, spare)
    assert not producer.errors, producer.errors[:5]
    assert kafkajs(cluster, {"op": "list"})["topics"] == []
    cluster.wait_until(lambda: replicas_seen(cluster, topic, 0) == (tuple(before), tuple(sorted(before))), 30,
                       "the partition back on its replicas, all in sync")
    cluster.wait_until(lambda: not partition_dir_exists(cluster, spare, topic, 0), 30,
                       f"broker {spare} to delete the copy it had started")

    # Now kafkajs moves it for real, and the metadata kafkajs reads follows.
    assert kafkajs(cluster, {"op": "alter", "topic": topic, "moves": {"0": target}}) == {"ok": True}
    cluster.wait_until(lambda: kafkajs(cluster, {"op": "list"})["topics"] == [], 60, "the move to finish")

    def kafkajs_sees_the_target():
        seen = kafkajs(cluster, {"op": "metadata", "topic": topic})["topics"][0]["partitions"][0]
        return seen["replicas"] == target and sorted(seen["isr"]) == sorted(target)

    cluster.wait_until(kafkajs_sees_the_target, 30, "kafkajs to see the target replicas, all in sync")
    check_acked(cluster, topic, 1, producer.acked)
    check_identical_replicas(cluster, topic, 1, hosts={0: target})


def test_a_move_goes_on_when_the_leader_dies_midway(cluster):
    topic = "handover"
    create_topic(cluster, topic, 1)
    before = list(replicas_seen(cluster, topic, 0)[0])
    spare = next(n for n in cluster.nodes if n not in before)
    target = before[1:] + [spare]
    producer = BackgroundProducer(cluster.bootstrap, topic, 1)
    try:
        # The new broker stalled: the move waits for it as a learner when the leader dies.
        stall(cluster, spare)
        started = tern_topic(cluster, "reassign", topic, "--move", f"0={','.join(map(str, target))}")
        assert started.returncode == 0, started.stdout + started.stderr
        time.sleep(2)
        victim = leader_of(cluster, topic, 0)
        cluster.kill(victim)
        unstall(cluster, spare)
        cluster.wait_until(lambda: tern_topic(cluster, "reassignments").stdout.strip().count("\n") == 0, 90,
                           "a new leader to finish the move")
        time.sleep(1)
    finally:
        unstall(cluster, spare)
        producer.stop()
    assert not producer.errors, producer.errors[:5]
    cluster.start(victim)
    cluster.wait_formed()
    cluster.wait_until(lambda: replicas_seen(cluster, topic, 0) == (tuple(target), tuple(sorted(target))), 30,
                       "the partition on its target, all in sync")
    if victim not in target:
        cluster.wait_until(lambda: not partition_dir_exists(cluster, victim, topic, 0), 30,
                           f"broker {victim}, back, to delete the copy it no longer needs")
    check_acked(cluster, topic, 1, producer.acked)
    check_identical_replicas(cluster, topic, 1, hosts={0: target})


def test_a_voter_wiped_right_after_a_move_copies_the_leaders_log(cluster):
    """The wiped voter starts with no state: were it sent the log's entries from the
    start, it would replay the move's configuration changes onto the replicas the
    metadata names now. It takes the leader's snapshot (and a copy of its log) instead."""
    topic = "wiped"
    create_topic(cluster, topic, 1)
    before = list(replicas_seen(cluster, topic, 0)[0])
    leader = leader_of(cluster, topic, 0)
    spare = next(n for n in cluster.nodes if n not in before)
    gone = next(n for n in before if n != leader)
    target = [n for n in before if n != gone] + [spare]
    producer = BackgroundProducer(cluster.bootstrap, topic, 1)
    try:
        time.sleep(1)
        done = tern_topic(cluster, "reassign", topic, "--move", f"0={','.join(map(str, target))}", "--wait", "60")
        assert done.returncode == 0, done.stdout + done.stderr
        # A follower of the moved group, its copy wiped while the changes are recent.
        wiped = next(n for n in target if n != leader_of(cluster, topic, 0))
        cluster.kill(wiped)
        shutil.rmtree(cluster.nodes[wiped].data_dir / f"{topic}-0")
        cluster.start(wiped)
        cluster.wait_until(lambda: replicas_seen(cluster, topic, 0) == (tuple(target), tuple(sorted(target))), 30,
                           "the wiped voter back in sync")
        # It must count as the voter it is: with the leader gone, it and the other
        # survivor elect a leader that takes writes.
        before_kill = len(producer.acked)
        victim = leader_of(cluster, topic, 0)
        cluster.kill(victim)
        cluster.wait_until(lambda: leader_of(cluster, topic, 0) not in (None, victim)
                           and len(producer.acked) > before_kill + 50, 30, "writes through a new leader")
        cluster.start(victim)
        cluster.wait_formed()
        cluster.wait_until(lambda: replicas_seen(cluster, topic, 0) == (tuple(target), tuple(sorted(target))), 30,
                           "every replica back in sync")
    finally:
        producer.stop()
    assert not producer.errors, producer.errors[:5]
    assert "catching up from its log" in cluster.nodes[wiped].log_text() or \
        "catching up" in (cluster.nodes[wiped].log_path.read_text(errors="replace"))
    check_acked(cluster, topic, 1, producer.acked)
    check_identical_replicas(cluster, topic, 1, hosts={0: target})
