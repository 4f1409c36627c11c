#!/usr/bin/env python3
"""Consumer group timing against a local tern broker, with librdkafka consumers:

1. failover: 3 consumers share a 6-partition topic; one is SIGKILLed; time until the
   group is Stable again with the 2 survivors owning all 6 partitions (bounded below by
   the session timeout, 6 s here).
2. rebalance: 10 consumers subscribe at once; time from the first subscribe until the 6
   partitions are spread one each over 6 of them (includes group.initial.rebalance.delay,
   3 s, as in Kafka).

Usage: .venv/bin/python perf/group-rebalance.py [runs]   (build target/release/tern first)
"""

import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[1]
CHILD = r"""
import sys
from confluent_kafka import Consumer
c = Consumer({"bootstrap.servers": sys.argv[1], "group.id": sys.argv[2], "session.timeout.ms": 6000,
              "heartbeat.interval.ms": 500})
c.subscribe([sys.argv[3]])
while True:
    c.poll(0.2)
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_stable(admin, group, members, partitions, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        d = admin.describe_consumer_groups([group])[group].result(timeout=10)
        owned = sorted(tp.partition for m in d.members for tp in m.assignment.topic_partitions)
        if len(d.members) == members and owned == list(range(partitions)) and str(d.state).endswith("STABLE"):
            return time.time()
        time.sleep(0.05)
    raise TimeoutError(f"group {group} not stable with {members} members")


def main(runs):
    data = tempfile.mkdtemp(prefix="tern-perf-groups-")
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    broker = subprocess.Popen([str(ROOT / "target/release/tern"), "serve", "--admin-listen", "off", "--listen", bootstrap, "--data-dir", data,
                               "--cores", "0", "--memory", "1M"], stderr=subprocess.DEVNULL)
    time.sleep(1)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    failovers, rebalances = [], []
    try:
        for run in range(runs):
            topic = f"perf-groups-{run}"
            admin.create_topics([NewTopic(topic, 6)])[topic].result(timeout=30)
            group = f"failover-{run}"
            script = Path(data) / "child.py"
            script.write_text(CHILD)
            children = [subprocess.Popen([sys.executable, str(script), bootstrap, group, topic]) for _ in range(3)]
            wait_stable(admin, group, 3, 6)
            killed = time.time()
            children[0].send_signal(signal.SIGKILL)
            failovers.append(wait_stable(admin, group, 2, 6) - killed)
            for c in children:
                c.kill()
                c.wait()

            group = f"rebalance-{run}"
            started = time.time()
            consumers = [Consumer({"bootstrap.servers": bootstrap, "group.id": group, "session.timeout.ms": 6000})
                         for _ in range(10)]
            for c in consumers:
                c.subscribe([topic])
            deadline = time.time() + 60
            while time.time() < deadline:
                for c in consumers:
                    c.poll(0.01)
                sizes = [len(c.assignment()) for c in consumers]
                if sum(sizes) == 6 and sizes.count(1) == 6:
                    break
            else:
                raise TimeoutError("10-member group never settled")
            rebalances.append(time.time() - started)
            for c in consumers:
                c.close()
    finally:
        broker.send_signal(signal.SIGTERM)
        broker.wait(timeout=30)
    print(f"failover (SIGKILL -> stable, session.timeout.ms=6000): median {statistics.median(failovers):.2f} s, runs {[round(x, 2) for x in failovers]}")
    print(f"10-member rebalance (subscribe -> assigned, incl. 3 s initial delay): median {statistics.median(rebalances):.2f} s, runs {[round(x, 2) for x in rebalances]}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
