"""A broker with 5,000 partitions stops and starts quickly (issue 19): every partition's
log is closed concurrently (clean-shutdown hints written without syncs, see
`storage::disk::write_hint_file`) and the process does not wait for its executors to
tear down. The figures are printed; the bound asserted here is loose (a regression to
one-by-one closing took 5 s, a stuck drain 30 s), the targets are in perf/README.md."""
import time
import urllib.request

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

PARTITIONS = 5000


def ready(broker, timeout_s=30):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{broker.admin_port}/health", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.01)
    raise AssertionError(f"not ready in {timeout_s} s:\n{broker.log_text()}")


def test_5000_partitions_stop_and_start_quickly(broker_factory, tmp_path):
    data = tmp_path / "data"
    # 64 KiB segments: each partition preallocates 64 KiB instead of 1 MiB (5,000 of
    # them would otherwise hold 5 GB of the CI machine's disk).
    small_segments = ["--broker-config", "log.segment.bytes=65536"]
    broker = broker_factory(data_dir=data, extra_args=small_segments)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("wide", num_partitions=PARTITIONS)], request_timeout=60)["wide"].result(timeout=60)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 20, "acks": "all"})
    delivered = []
    for p in range(PARTITIONS):
        producer.produce("wide", value=b"x%d" % p, partition=p, on_delivery=lambda e, m: delivered.append(e))
    assert producer.flush(60) == 0
    assert delivered.count(None) == PARTITIONS, [e for e in delivered if e][:3]

    started = time.time()
    assert broker.stop() == 0
    stop_s = time.time() - started

    started = time.time()
    again = broker_factory(data_dir=data, extra_args=small_segments)
    ready(again)
    start_s = time.time() - started
    log = again.log_text()
    print(f"5,000 partitions: shutdown {stop_s:.2f} s, startup to ready {start_s:.2f} s")
    assert "scanning" not in log, "a clean shutdown lets every log skip its tail scan"
    ends = admin_offsets(again)
    assert ends == PARTITIONS, f"{ends} of {PARTITIONS} partitions hold their record after the restart"
    assert again.stop() == 0
    assert stop_s < 10 and start_s < 10, (stop_s, start_s)


def admin_offsets(broker):
    """How many partitions of `wide` have a high watermark of 1."""
    from confluent_kafka import Consumer, TopicPartition
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "probe"})
    try:
        count = 0
        for start in range(0, PARTITIONS, 500):
            for p in range(start, min(start + 500, PARTITIONS)):
                low, high = consumer.get_watermark_offsets(TopicPartition("wide", p), timeout=10)
                count += high == 1
        return count
    finally:
        consumer.close()
