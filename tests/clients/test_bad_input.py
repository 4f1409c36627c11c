"""Bad input on the wire: oversized frames, unknown API keys, unsupported versions,
garbage and truncated bodies. Each gets an error response where the protocol has one
(ApiVersions, KIP-511) or closes only that connection; the broker keeps serving
everyone else and never panics (the fixture fails the test if the log shows a panic)."""

import socket
import struct

from confluent_kafka.admin import AdminClient


def connect(broker):
    s = socket.create_connection(("127.0.0.1", broker.port), timeout=5)
    return s


def closed(s) -> bool:
    try:
        return s.recv(1) == b""
    except (ConnectionResetError, socket.timeout):
        return True


def request(api_key, version, correlation_id, body=b"", client_id=b"t"):
    header = struct.pack(">hhih", api_key, version, correlation_id, len(client_id)) + client_id
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def still_serves(broker):
    metadata = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=10)
    assert 0 in metadata.brokers


def test_unsupported_api_versions_version_gets_kip511_answer(broker):
    s = connect(broker)
    s.sendall(request(18, 99, 1234))
    length = struct.unpack(">i", s.recv(4))[0]
    data = b""
    while len(data) < length:
        data += s.recv(length - len(data))
    correlation_id, error_code, count = struct.unpack(">ihi", data[:10])
    assert correlation_id == 1234
    assert error_code == 35, "UNSUPPORTED_VERSION"
    ranges = {struct.unpack(">hhh", data[10 + 6 * i: 16 + 6 * i])[0]: struct.unpack(">hhh", data[10 + 6 * i: 16 + 6 * i])[1:] for i in range(count)}
    assert ranges[18] == (0, 4) and ranges[0] == (3, 11) and ranges[1] == (4, 17)
    s.close()


def test_oversized_unknown_garbage_and_truncated_frames_close_only_that_connection(broker_factory):
    broker = broker_factory(extra_args=["--max-request-bytes", "1M"])
    cases = {
        "oversized": struct.pack(">i", 2 << 20) + b"\x00" * 64,
        "negative length": struct.pack(">i", -5),
        "unknown api key": request(999, 0, 1),
        "unsupported produce version": request(0, 99, 1),
        "garbage metadata body": request(3, 12, 1, body=b"\xff" * 40),
        "short header": struct.pack(">i", 3) + b"abc",
    }
    for name, data in cases.items():
        s = connect(broker)
        s.sendall(data)
        assert closed(s), f"{name}: connection should be closed"
        s.close()
        still_serves(broker)
    # A truncated frame followed by a hang-up must not wedge anything.
    s = connect(broker)
    s.sendall(struct.pack(">i", 100) + b"\x00\x03\x00\x0c")
    s.close()
    still_serves(broker)
    assert broker.stop() == 0


def test_a_storm_of_bad_connections_is_counted_not_logged_line_by_line(broker):
    """2,000 connections that each send garbage are all closed and counted in
    tern_connections_bad_total; the log keeps about one line a second per shard."""
    from helpers import metric, scrape
    import time

    started = time.time()
    for n in range(2000):
        with socket.create_connection(("127.0.0.1", broker.port), timeout=5) as s:
            s.sendall(struct.pack(">i", -5))  # a negative frame length
            s.settimeout(5)
            assert closed(s), f"connection {n} was not closed"
    seconds = time.time() - started
    deadline = time.time() + 5
    bad = 0
    while time.time() < deadline and bad < 2000:
        bad = metric(scrape(broker), "tern_connections_bad_total") or 0
        time.sleep(0.2)
    assert bad >= 2000, f"tern_connections_bad_total is {bad}"
    lines = [line for line in broker.log_path.read_text(errors="replace").splitlines() if "closing connection" in line]
    # At most one line per shard per second of storm (and a little slack for the edges).
    assert len(lines) <= 2 * (seconds + 2), f"{len(lines)} 'closing connection' lines for {seconds:.1f} s of storm"
    assert any("similar_held_back" in line for line in lines)
    still_serves(broker)
