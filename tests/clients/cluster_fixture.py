"""A Tern cluster of real `tern serve` processes on 127.0.0.1, for the cluster tests.

Each node has its own data dir, client port, cluster (inter-broker) port and admin port,
all picked free, and runs one shard (`--cores 0 --no-pin`). Nodes are stopped by PID:
the fixture kills whatever is still running, resumes paused nodes first, and fails the
test if a node panicked.
"""

import signal
import subprocess
import time
from pathlib import Path

from confluent_kafka.admin import AdminClient

from conftest import BINARY, free_port

START_TIMEOUT_S = 20


class Node:
    def __init__(self, node_id: int, data_dir: Path, log_path: Path, network=None):
        self.node_id = node_id
        network = network or {}
        # Clients and the admin endpoint use `host`, the brokers' link `cluster_host`;
        # `namespace` is a network namespace to run in (`ip netns exec`), for the
        # network partition tests (test_partitions.py).
        self.host = network.get("host", "127.0.0.1")
        self.cluster_host = network.get("cluster_host", self.host)
        self.namespace = network.get("namespace")
        self.data_dir = data_dir
        self.log_path = log_path
        self.port = free_port()
        self.cluster_port = free_port()
        self.admin_port = free_port()
        self.process = None
        self.paused = False

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""


class Cluster:
    def __init__(self, root: Path, size=3, extra_args=(), network=None):
        """`network`: {node id: {"host", "cluster_host", "namespace"}} to run nodes in
        network namespaces (see test_partitions.py); default: all on 127.0.0.1."""
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.extra_args = list(extra_args)
        network = network or {}
        self.nodes = {n: Node(n, root / f"node-{n}", root / f"node-{n}.log", network.get(n))
                      for n in range(1, size + 1)}

    @property
    def peers(self) -> str:
        return ",".join(f"{n.node_id}@{n.cluster_host}:{n.cluster_port}" for n in self.nodes.values())

    @property
    def bootstrap(self) -> str:
        return ",".join(n.bootstrap for n in self.nodes.values())

    def start(self, node_id=None, data_dir=None):
        """Starts one node (or all); returns once each listens for clients."""
        ids = [node_id] if node_id is not None else list(self.nodes)
        for n in ids:
            node = self.nodes[n]
            if data_dir is not None:
                node.data_dir = data_dir
            log = open(node.log_path, "ab")
            # `ip netns exec` execs the broker: the PID is still the broker's.
            prefix = ["ip", "netns", "exec", node.namespace] if node.namespace else []
            node.process = subprocess.Popen(
                [*prefix, str(BINARY), "serve", "--node-id", str(n), "--listen", node.bootstrap,
                 "--cluster-listen", f"{node.cluster_host}:{node.cluster_port}", "--peers", self.peers,
                 "--data-dir", str(node.data_dir), "--cores", "0", "--no-pin", "--memory", "1M",
                 "--admin-listen", f"{node.host}:{node.admin_port}", *self.extra_args],
                stdout=log, stderr=subprocess.STDOUT,
            )
            node.paused = False
        for n in ids:
            self._wait_listening(self.nodes[n])
        return self

    def _wait_listening(self, node: Node):
        import socket
        deadline = time.time() + START_TIMEOUT_S
        while time.time() < deadline:
            if node.process.poll() is not None:
                raise RuntimeError(f"node {node.node_id} exited with {node.process.returncode}:\n{node.log_text()}")
            try:
                with socket.create_connection((node.host, node.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"node {node.node_id} did not listen in {START_TIMEOUT_S}s:\n{node.log_text()}")

    def kill(self, node_id: int):
        node = self.nodes[node_id]
        if node.alive():
            if node.paused:
                node.process.send_signal(signal.SIGCONT)
            node.process.kill()
            node.process.wait(timeout=10)
        node.paused = False

    def stop(self, node_id: int, timeout=30) -> int:
        node = self.nodes[node_id]
        if not node.alive():
            return node.process.returncode if node.process else 0
        node.process.send_signal(signal.SIGTERM)
        return node.process.wait(timeout=timeout)

    def pause(self, node_id: int):
        self.nodes[node_id].process.send_signal(signal.SIGSTOP)
        self.nodes[node_id].paused = True

    def resume(self, node_id: int):
        self.nodes[node_id].process.send_signal(signal.SIGCONT)
        self.nodes[node_id].paused = False

    def shutdown(self):
        for n in self.nodes:
            self.kill(n)

    # --- what the cluster says, through one node's Kafka API (librdkafka admin) ---

    def metadata(self, node_id: int, timeout=5):
        admin = AdminClient({"bootstrap.servers": self.nodes[node_id].bootstrap, "socket.timeout.ms": 2000})
        return admin.list_topics(timeout=timeout)

    def leader_seen_by(self, node_id: int, topic, partition):
        """The leader of `topic`-`partition` in node `node_id`'s Metadata (None: unknown
        or unreachable)."""
        try:
            return self.metadata(node_id, timeout=2).topics[topic].partitions[partition].leader
        except Exception:
            return None

    def leader_agreed_without(self, excluded: int, topic, partition):
        """The leader every node but `excluded` names, if they agree on one that is not
        `excluded` (None otherwise)."""
        seen = {self.leader_seen_by(n, topic, partition) for n in self.nodes if n != excluded}
        leader = seen.pop() if len(seen) == 1 else None
        return leader if leader not in (None, -1, excluded) else None

    def controller(self, node_id: int):
        """The controller id node `node_id` reports (None: none or unreachable)."""
        try:
            metadata = self.metadata(node_id, timeout=2)
        except Exception:
            return None
        return metadata.controller_id if metadata.controller_id >= 0 else None

    def live_brokers(self, node_id: int):
        return sorted(self.metadata(node_id).brokers)

    def wait_until(self, condition, timeout, what):
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            try:
                last = condition()
                if last:
                    return last
            except Exception as error:  # a node may be restarting
                last = error
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})\n"
                             + "\n".join(f"--- node {n.node_id}:\n{n.log_text()[-1500:]}" for n in self.nodes.values()))

    def wait_formed(self, timeout=20):
        """Every running node reports the same controller and every running node live."""
        running = [n for n, node in self.nodes.items() if node.alive() and not node.paused]

        def formed():
            controllers = {self.controller(n) for n in running}
            if len(controllers) != 1 or None in controllers:
                return False
            return all(set(running) <= set(self.live_brokers(n)) for n in running)

        self.wait_until(formed, timeout, f"nodes {running} to form a cluster")
        return self.controller(running[0])


def running_cluster(tmp_path, extra_args, size=3, network=None):
    """A pytest fixture body: a formed cluster for the test, killed after it, and the
    test failed if any node panicked."""
    import pytest
    cluster = Cluster(tmp_path, size=size, extra_args=extra_args, network=network).start()
    cluster.wait_formed()
    yield cluster
    cluster.shutdown()
    for node in cluster.nodes.values():
        if "panicked" in node.log_path.read_text(errors="replace"):
            pytest.fail(f"node {node.node_id} panicked:\n{node.log_text()}")
