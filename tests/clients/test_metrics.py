"""The admin endpoint: /health is 503 while shards recover their logs and 200 after;
/metrics counters move by exactly what a client did, and partition, cache, fsync and
consumer-group-lag figures match the data."""

import json
import re
import socket
import struct
import subprocess
import time
import urllib.error
import urllib.request

from confluent_kafka import Consumer, Producer, TopicPartition

from conftest import BINARY, ROOT, free_port

SCRAPE_WAIT_S = 1.5  # shards publish partition and group figures every second


def get(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def metric(text, name, required=True, **labels):
    """Sum of a metric's samples whose labels include `labels`."""
    total, found = 0.0, False
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        match = re.match(r"^([a-z_]+)(\{(.*)\})? (\S+)$", line)
        if match.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', match.group(3) or ""))
        if all(have.get(k) == str(v) for k, v in labels.items()):
            total += float(match.group(4))
            found = True
    assert found or not required, f"{name} {labels} not in the scrape"
    return total


def api_versions_frame(correlation_id):
    client_id = b"probe"
    body = struct.pack(">hhih", 18, 0, correlation_id, len(client_id)) + client_id
    return struct.pack(">i", len(body)) + body


def test_health_waits_for_recovery_and_metrics_follow_the_traffic(tmp_path):
    data = tmp_path / "data"
    port, admin = free_port(), free_port()
    command = [str(BINARY), "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", str(data), "--cores", "0-1",
               "--no-pin", "--memory", "1M", "--admin-listen", f"127.0.0.1:{admin}"]
    log = open(tmp_path / "broker.log", "ab")

    def start():
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        statuses = []
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                status, body = get(admin, "/health")
                statuses.append(status)
                if status == 200:
                    return process, statuses, body
            except (ConnectionError, urllib.error.URLError, socket.timeout):
                pass
            time.sleep(0.005)
        process.kill()
        raise AssertionError("never became healthy")

    # A big partition, then a crash: the next start scans its tail before it is ready.
    process, _, _ = start()
    subprocess.run([str(BINARY), "bench", "produce", "--brokers", f"127.0.0.1:{port}", "--topic", "big",
                    "--partitions", "1", "--records", "300000", "--record-size", "1000", "--batch-bytes", "1M",
                    "--memory", "256K"], check=True, capture_output=True, timeout=120)
    process.kill()
    process.wait()

    process, statuses, body = start()
    try:
        print("health statuses while starting:", statuses[:5], "...", statuses[-3:])
        assert 503 in statuses, "not ready while the shards recover"
        assert "ready: 2 of 2 shards" in body
        assert get(admin, "/nope")[0] == 404

        _, before = get(admin, "/metrics")
        with socket.create_connection(("127.0.0.1", port)) as s:
            for n in range(7):
                s.sendall(api_versions_frame(n))
                length = struct.unpack(">i", s.recv(4, socket.MSG_WAITALL))[0]
                s.recv(length, socket.MSG_WAITALL)
        _, after = get(admin, "/metrics")
        assert metric(after, "tern_requests_total", api="ApiVersions") - \
            metric(before, "tern_requests_total", required=False, api="ApiVersions") == 7
        frame = len(api_versions_frame(0))
        assert metric(after, "tern_bytes_received_total") - metric(before, "tern_bytes_received_total") == 7 * frame

        producer = Producer({"bootstrap.servers": f"127.0.0.1:{port}", "acks": "all", "linger.ms": 5})
        for n in range(1000):
            producer.produce("m", key=str(n).encode(), value=b"x" * 100)
        assert producer.flush(30) == 0
        consumer = Consumer({"bootstrap.servers": f"127.0.0.1:{port}", "group.id": "g", "enable.auto.commit": False,
                             "auto.offset.reset": "earliest"})
        consumer.assign([TopicPartition("m", 0, 0)])
        received = 0
        while received < 1000:
            received += len([m for m in consumer.consume(1000, timeout=5) if m.error() is None])
        consumer.commit(offsets=[TopicPartition("m", 0, 400)], asynchronous=False)
        consumer.close()
        time.sleep(SCRAPE_WAIT_S)

        status, text = get(admin, "/metrics")
        assert status == 200
        assert metric(text, "tern_partition_high_watermark", topic="m", partition=0) == 1000
        assert metric(text, "tern_partition_log_end_offset", topic="m", partition=0) == 1000
        assert metric(text, "tern_partition_size_bytes", topic="m", partition=0) > 100_000
        assert metric(text, "tern_partition_high_watermark", topic="big", partition=0) == 300000
        assert metric(text, "tern_consumer_group_committed_offset", group="g", topic="m", partition=0) == 400
        assert metric(text, "tern_consumer_group_lag", group="g", topic="m", partition=0) == 600
        assert metric(text, "tern_requests_total", api="Produce") >= 1
        assert metric(text, "tern_produce_latency_seconds_count") == metric(text, "tern_requests_total", api="Produce")
        # Durable writes are write-through (O_DSYNC): the flush is part of each write round,
        # which the stage histograms count; no separate fdatasync ran for these appends.
        assert metric(text, "tern_log_write_seconds_count") >= 1
        assert metric(text, "tern_log_queue_wait_seconds_count") >= metric(text, "tern_log_write_seconds_count")
        assert metric(text, "tern_produce_response_write_seconds_count") >= 1
        assert metric(text, "tern_batch_cache_hits_total") >= 1, "the consumer read the new batches from memory"
        assert metric(text, "tern_connections_opened_total") >= 3
        assert metric(text, "tern_shards_ready") == 2
        assert metric(text, "tern_event_loop_lag_seconds_count") > 0

        # Every series the sample Grafana dashboard queries exists.
        dashboard = json.loads((ROOT / "tuning" / "grafana-dashboard.json").read_text())
        exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
        for name in sorted({n for e in exprs for n in re.findall(r"tern_[a-z_]+", e)}):
            assert re.search(rf"^{name}[{{ ]", text, re.M), f"dashboard queries {name}, which /metrics lacks"
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0
