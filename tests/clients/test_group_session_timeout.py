"""`tern serve --group-min-session-timeout-ms` / `--group-max-session-timeout-ms` bound the
session timeout a consumer group member may ask for (Kafka's group.min/max.session
.timeout.ms). With the minimum lowered to 1000, two kafka-python members with a 3 s
session split a 4-partition topic, and when one is SIGKILLed (no LeaveGroup) the broker
expires it after its session and the survivor owns all 4 partitions within 10 s. With the
default minimum (6000) the same 3 s session is refused with INVALID_SESSION_TIMEOUT, seen
by both kafka-python and librdkafka; a session above the maximum is refused the same way."""

import subprocess
import sys
import threading
import time

import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType
from kafka import KafkaConsumer
from kafka.errors import InvalidSessionTimeoutError

from helpers import create_topic

ALL = {0, 1, 2, 3}

# A group member in its own process, so that it can die without leaving the group. It
# prints its assignment (comma-separated partitions) every time it changes.
MEMBER = r"""
import sys
from kafka import KafkaConsumer
bootstrap, topic, group = sys.argv[1:4]
consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, session_timeout_ms=3000,
                         heartbeat_interval_ms=1000, enable_auto_commit=False)
last = None
while True:
    consumer.poll(timeout_ms=200)
    now = sorted(tp.partition for tp in consumer.assignment())
    if now != last:
        print(",".join(map(str, now)), flush=True)
        last = now
"""


class MemberProcess:
    def __init__(self, bootstrap, topic, group):
        self.process = subprocess.Popen([sys.executable, "-c", MEMBER, bootstrap, topic, group],
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.assignment = set()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stdout:
            self.assignment = {int(p) for p in line.strip().split(",") if p}

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)


def partitions(consumer):
    return {tp.partition for tp in consumer.assignment()}


def poll_until(consumer, condition, timeout_s):
    """Polls the kafka-python consumer (which drives its group membership) until
    condition() holds; returns the seconds it took, or None on timeout."""
    start = time.time()
    while time.time() - start < timeout_s:
        consumer.poll(timeout_ms=100)
        if condition():
            return time.time() - start
    return None


def test_short_sessions_allowed_and_a_dead_member_expires(broker_factory):
    broker = broker_factory(extra_args=["--group-min-session-timeout-ms", "1000"])
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    resource = ConfigResource(ResourceType.BROKER, "0")
    minimum = admin.describe_configs([resource])[resource].result(timeout=15)["group.min.session.timeout.ms"]
    assert (minimum.value, minimum.source) == ("1000", 4), "the flag is a static broker config"
    create_topic(broker.bootstrap, "short-sessions", 4)

    survivor = KafkaConsumer("short-sessions", bootstrap_servers=broker.bootstrap, group_id="short",
                             session_timeout_ms=3000, heartbeat_interval_ms=1000, enable_auto_commit=False)
    doomed = MemberProcess(broker.bootstrap, "short-sessions", "short")
    try:
        def split():
            mine, theirs = partitions(survivor), doomed.assignment
            return mine and theirs and not mine & theirs and mine | theirs == ALL

        assert poll_until(survivor, split, 30) is not None, \
            f"no 2-way split: {partitions(survivor)} / {doomed.assignment}"

        doomed.kill()  # no LeaveGroup: only the session timeout can remove it
        took = poll_until(survivor, lambda: partitions(survivor) == ALL, 10)
        assert took is not None, f"the survivor still has {partitions(survivor)} 10 s after the kill"
        # Its last heartbeat was at most 1 s before the kill, so a 3 s session ends >= 2 s after it.
        assert took > 1.5, f"the dead member was removed after {took:.1f}s, before its session expired"
    finally:
        doomed.kill()
        survivor.close()
    assert broker.stop() == 0


def test_a_session_below_the_minimum_is_refused(broker):
    create_topic(broker.bootstrap, "long-sessions", 4)
    consumer = KafkaConsumer("long-sessions", bootstrap_servers=broker.bootstrap, group_id="too-short",
                             session_timeout_ms=3000, heartbeat_interval_ms=1000, enable_auto_commit=False)
    try:
        with pytest.raises(InvalidSessionTimeoutError):
            deadline = time.time() + 10
            while time.time() < deadline:
                consumer.poll(timeout_ms=200)
        assert not consumer.assignment()
    finally:
        consumer.close()

    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "too-short-rd",
                         "session.timeout.ms": 3000, "heartbeat.interval.ms": 1000})
    consumer.subscribe(["long-sessions"])
    errors = []
    try:
        deadline = time.time() + 10
        while time.time() < deadline and not errors:
            m = consumer.poll(0.2)
            if m is not None and m.error():
                errors.append(m.error())
        assert not consumer.assignment()
    finally:
        consumer.close()
    assert [e.name() for e in errors] == ["INVALID_SESSION_TIMEOUT"], errors


def test_a_session_above_the_maximum_is_refused(broker_factory):
    broker = broker_factory(extra_args=["--group-max-session-timeout-ms", "10000"])
    create_topic(broker.bootstrap, "capped-sessions", 1)
    consumer = KafkaConsumer("capped-sessions", bootstrap_servers=broker.bootstrap, group_id="too-long",
                             session_timeout_ms=20000, heartbeat_interval_ms=3000, request_timeout_ms=30000,
                             enable_auto_commit=False)
    try:
        with pytest.raises(InvalidSessionTimeoutError):
            deadline = time.time() + 10
            while time.time() < deadline:
                consumer.poll(timeout_ms=200)
    finally:
        consumer.close()
    assert broker.stop() == 0
