"""A consumer that pipelines Fetch requests and never reads its socket (issue 19):
- the broker closes it once a response write makes no progress for
  `--response-write-timeout-ms` (counted in tern_connections_timed_out_total), and keeps
  serving everyone else;
- a shutdown while such a connection is stuck takes the short shutdown grace (2 s), not
  the write timeout or the 30 s drain.
Raw sockets with a tiny receive buffer; everything is bounded in time."""
import socket
import struct
import time

from confluent_kafka import Producer
from helpers import metric, scrape

TOPIC = "fat"


def fetch_v4(correlation_id: int) -> bytes:
    client_id = b"abandoned"
    header = struct.pack(">hhih", 1, 4, correlation_id, len(client_id)) + client_id
    topic = TOPIC.encode()
    body = struct.pack(">iiiib", -1, 0, 1, 50 << 20, 0)  # replica, max wait, min bytes, max bytes, isolation
    body += struct.pack(">ih", 1, len(topic)) + topic
    body += struct.pack(">iiqi", 1, 0, 0, 8 << 20)  # one partition: 0, offset 0, 8 MiB
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def abandoned_consumer(broker) -> socket.socket:
    """Connects with a 4 KiB receive buffer and sends 100 large fetches it never reads."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", broker.port))
    s.sendall(b"".join(fetch_v4(n) for n in range(100)))
    return s


def fill(broker):
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5, "batch.size": 1 << 20})
    value = b"x" * 10_000
    for _ in range(1500):  # 15 MB: far more than any socket buffer holds
        producer.produce(TOPIC, value=value, partition=0)
    assert producer.flush(30) == 0


def answers_api_versions(broker) -> bool:
    with socket.create_connection(("127.0.0.1", broker.port), timeout=5) as s:
        client_id = b"probe"
        payload = struct.pack(">hhih", 18, 0, 9, len(client_id)) + client_id
        s.sendall(struct.pack(">i", len(payload)) + payload)
        length = struct.unpack(">i", s.recv(4))[0]
        return length > 0


def test_abandoned_pipelined_consumer_is_closed_and_does_not_hold_shutdown(broker_factory):
    broker = broker_factory(extra_args=["--response-write-timeout-ms", "2000", "--auto-create-topics", "true"])
    fill(broker)
    before = metric(scrape(broker), "tern_connections_timed_out_total") or 0
    stuck = abandoned_consumer(broker)
    deadline = time.time() + 20
    timed_out = before
    while time.time() < deadline and timed_out <= before:
        time.sleep(0.25)
        timed_out = metric(scrape(broker), "tern_connections_timed_out_total") or 0
    assert timed_out > before, "the broker did not close a connection whose responses were not read"
    assert answers_api_versions(broker), "the broker keeps serving other clients"
    stuck.close()

    # Stuck again, then a shutdown right away: bounded by the shutdown grace.
    stuck = abandoned_consumer(broker)
    time.sleep(0.5)
    started = time.time()
    assert broker.stop(timeout=20) == 0
    took = time.time() - started
    stuck.close()
    print(f"shutdown with an abandoned consumer: {took:.2f} s")
    assert took < 5, f"shutdown took {took:.1f} s with an abandoned consumer connected"
