"""SIGKILL under acks=all load: every message the broker acknowledged is there after a
restart, at the offset it was acknowledged with, with its value."""

import threading
import time

from helpers import consume_to_end, create_topic, producer


def test_acknowledged_messages_survive_sigkill(broker_factory, tmp_path):
    data = tmp_path / "kill9-data"
    first = broker_factory(data_dir=data)
    create_topic(first.bootstrap, "durable", 4)
    acked = {}
    lock = threading.Lock()

    def on_delivery(err, msg):
        if err is None:
            with lock:
                acked[(msg.partition(), msg.offset())] = msg.value()

    p = producer(first.bootstrap, **{"message.timeout.ms": 3000, "retries": 0, "linger.ms": 1})
    started = time.time()
    i = 0
    killed = False
    while time.time() - started < 8:
        try:
            p.produce("durable", key=str(i % 64).encode(), value=f"m-{i}".encode(), on_delivery=on_delivery)
        except BufferError:
            p.poll(0.01)
            continue
        i += 1
        if i % 500 == 0:
            p.poll(0)
        if not killed and len(acked) > 20_000:
            first.kill()  # SIGKILL while requests are in flight
            killed = True
            break
    p.flush(10)
    assert killed, f"only {len(acked)} messages were acknowledged before the deadline"
    snapshot = dict(acked)

    second = broker_factory(data_dir=data)
    messages = consume_to_end(second.bootstrap, "durable", 4)
    stored = {(m.partition(), m.offset()): m.value() for m in messages}
    missing = [k for k in snapshot if stored.get(k) != snapshot[k]]
    assert not missing, f"{len(missing)} acknowledged messages lost or changed, e.g. {missing[:5]}"
    assert second.stop() == 0
