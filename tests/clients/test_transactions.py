"""Transactions with librdkafka (confluent-kafka): commit and abort over many partitions,
read_committed vs read_uncommitted, the last stable offset holding back readers, zombie
fencing, coordinator timeouts, consume-transform-produce under SIGKILL of the processor,
and SIGKILL of the broker in the middle of transactions."""

import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


PARTITIONS = 8


def create_topic(bootstrap, name, partitions=PARTITIONS):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(10)


def txn_producer(bootstrap, transactional_id, **extra):
    config = {"bootstrap.servers": bootstrap, "transactional.id": transactional_id, "linger.ms": 2}
    config.update(extra)
    producer = Producer(config)
    producer.init_transactions(20)
    return producer


def open_transaction(bootstrap, transactional_id, topic, value, partition, **extra):
    """A new transactional producer with a transaction left open, holding `value` in
    `topic`'s `partition` (sent, not committed)."""
    producer = txn_producer(bootstrap, transactional_id, **extra)
    producer.begin_transaction()
    producer.produce(topic, value=value, partition=partition)
    producer.flush(10)
    return producer


def high_watermark(bootstrap, topic, partition):
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "hw-probe", "isolation.level": "read_uncommitted"})
    try:
        return consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=5)[1]
    finally:
        consumer.close()


def read_all(bootstrap, topic, isolation, partitions=PARTITIONS, idle_s=2.0, limit_s=30.0):
    """Every record of `topic` visible under `isolation`, as {partition: [values]}, read
    until nothing new arrives for `idle_s`."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"reader-{random.random()}",
        "isolation.level": isolation,
        "enable.auto.commit": False,
    })
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    seen = {p: [] for p in range(partitions)}
    deadline = time.time() + limit_s
    last_new = time.time()
    try:
        while time.time() < deadline and time.time() - last_new < idle_s:
            message = consumer.poll(0.2)
            if message is None:
                continue
            assert message.error() is None, message.error()
            seen[message.partition()].append(message.value().decode())
            last_new = time.time()
    finally:
        consumer.close()
    return seen


def test_commit_and_abort_across_partitions(broker):
    create_topic(broker.bootstrap, "orders")
    producer = txn_producer(broker.bootstrap, "orders-app")
    committed = {p: [] for p in range(PARTITIONS)}
    everything = {p: [] for p in range(PARTITIONS)}
    for txn in range(12):
        commit = txn % 3 != 1
        producer.begin_transaction()
        for i in range(40):
            partition = (txn + i) % PARTITIONS
            value = f"t{txn}-r{i}"
            producer.produce("orders", value=value.encode(), partition=partition)
            everything[partition].append(value)
            if commit:
                committed[partition].append(value)
        if commit:
            producer.commit_transaction(20)
        else:
            producer.flush(20)
            producer.abort_transaction(20)

    assert read_all(broker.bootstrap, "orders", "read_committed") == committed, \
        "read_committed sees exactly the committed records, in order per partition"
    assert read_all(broker.bootstrap, "orders", "read_uncommitted") == everything, \
        "read_uncommitted sees every record, aborted ones too"


def test_open_transaction_holds_back_read_committed_readers(broker):
    create_topic(broker.bootstrap, "held", partitions=1)
    producer = txn_producer(broker.bootstrap, "holder")
    plain = Producer({"bootstrap.servers": broker.bootstrap})
    plain.produce("held", value=b"before", partition=0)
    plain.flush(10)
    producer.begin_transaction()
    producer.produce("held", value=b"in-txn", partition=0)
    producer.flush(10)
    plain.produce("held", value=b"after", partition=0)
    plain.flush(10)

    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "held-reader",
                         "isolation.level": "read_committed", "enable.auto.commit": False})
    consumer.assign([TopicPartition("held", 0, 0)])
    seen = []
    deadline = time.time() + 3
    while time.time() < deadline:
        message = consumer.poll(0.2)
        if message is not None and message.error() is None:
            seen.append(message.value())
    assert seen == [b"before"], "records after the open transaction's first offset wait for its end"
    _, stable = consumer.get_watermark_offsets(TopicPartition("held", 0), timeout=5)
    assert stable == 1, "a read_committed ListOffsets answers the last stable offset"
    assert high_watermark(broker.bootstrap, "held", 0) == 3, "the high watermark is not held back"

    producer.commit_transaction(10)
    deadline = time.time() + 10
    while time.time() < deadline and len(seen) < 3:
        message = consumer.poll(0.2)
        if message is not None and message.error() is None:
            seen.append(message.value())
    consumer.close()
    assert seen == [b"before", b"in-txn", b"after"]


def test_a_zombie_producer_is_fenced(broker):
    create_topic(broker.bootstrap, "fenced", partitions=2)
    zombie = open_transaction(broker.bootstrap, "same-id", "fenced", b"zombie", partition=0)

    successor = txn_producer(broker.bootstrap, "same-id")  # aborts the zombie's transaction
    with pytest.raises(KafkaException) as refused:
        zombie.produce("fenced", value=b"zombie-2", partition=1)
        zombie.commit_transaction(10)
    error = refused.value.args[0]
    assert error.fatal() or error.txn_requires_abort(), f"the zombie is fenced: {error}"

    successor.begin_transaction()
    successor.produce("fenced", value=b"successor", partition=0)
    successor.commit_transaction(10)
    seen = read_all(broker.bootstrap, "fenced", "read_committed", partitions=2)
    assert seen == {0: ["successor"], 1: []}


def test_the_coordinator_aborts_a_transaction_past_its_timeout(broker):
    create_topic(broker.bootstrap, "slow", partitions=2)
    producer = open_transaction(broker.bootstrap, "slow-app", "slow", b"too-late", partition=0,
                                **{"transaction.timeout.ms": 2000})
    time.sleep(4.5)
    with pytest.raises(KafkaException):
        producer.commit_transaction(10)
    seen = read_all(broker.bootstrap, "slow", "read_committed", partitions=2)
    assert seen == {0: [], 1: []}, "the timed-out transaction was aborted"
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "slow-lso",
                         "isolation.level": "read_committed"})
    _, stable = consumer.get_watermark_offsets(TopicPartition("slow", 0), timeout=5)
    consumer.close()
    assert stable == 2 == high_watermark(broker.bootstrap, "slow", 0), \
        "the record and the abort marker are in the log, and nothing is held back"


def test_transaction_timeout_above_the_broker_maximum_is_refused(broker_factory):
    broker = broker_factory(extra_args=["--transaction-max-timeout-ms", "5000"])
    producer = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": "greedy",
                         "transaction.timeout.ms": 60000})
    with pytest.raises(KafkaException) as refused:
        producer.init_transactions(10)
    assert "INVALID_TRANSACTION_TIMEOUT" in str(refused.value) or "timeout" in str(refused.value).lower()


PROCESSOR = textwrap.dedent("""
    import sys
    from confluent_kafka import Consumer, Producer, TopicPartition
    bootstrap, source, sink = sys.argv[1:4]
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": "ctp", "group.instance.id": "ctp-1",
        "session.timeout.ms": 6000, "isolation.level": "read_committed",
        "enable.auto.commit": False, "auto.offset.reset": "earliest",
    })
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": "ctp-processor",
                         "transaction.timeout.ms": 10000, "linger.ms": 5})
    producer.init_transactions(30)
    consumer.subscribe([source])
    while True:
        messages = consumer.consume(num_messages=25, timeout=0.5)
        messages = [m for m in messages if m.error() is None]
        if not messages:
            continue
        producer.begin_transaction()
        for m in messages:
            producer.produce(sink, key=m.key(), value=m.value().upper(), partition=m.partition())
        producer.send_offsets_to_transaction(
            consumer.position(consumer.assignment()), consumer.consumer_group_metadata(), 30)
        producer.commit_transaction(30)
""")


def test_consume_transform_produce_survives_sigkill_exactly_once(broker, tmp_path):
    count = 3000
    create_topic(broker.bootstrap, "ctp-in", partitions=4)
    create_topic(broker.bootstrap, "ctp-out", partitions=4)
    source = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True})
    for n in range(count):
        source.produce("ctp-in", key=str(n).encode(), value=f"in-{n}".encode(), partition=n % 4)
    source.flush(30)

    script = tmp_path / "processor.py"
    script.write_text(PROCESSOR)
    rng = random.Random(7)
    rounds = 5
    process = None
    try:
        for round_ in range(rounds + 1):
            process = subprocess.Popen([sys.executable, str(script), broker.bootstrap, "ctp-in", "ctp-out"],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            if round_ < rounds:
                time.sleep(rng.uniform(1.5, 3.5))
                process.send_signal(signal.SIGKILL)
                process.wait(10)
                continue
            # The last run finishes the input.
            deadline = time.time() + 60
            while time.time() < deadline:
                seen = read_all(broker.bootstrap, "ctp-out", "read_committed", partitions=4, idle_s=1.0)
                if sum(len(v) for v in seen.values()) >= count:
                    break
                assert process.poll() is None, f"processor died: {process.stderr.read().decode()[-2000:]}"
            process.terminate()
            process.wait(10)
    finally:
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(10)

    seen = read_all(broker.bootstrap, "ctp-out", "read_committed", partitions=4)
    values = [v for values in seen.values() for v in values]
    numbers = sorted(int(v.split("-")[1]) for v in values)
    duplicates = len(numbers) - len(set(numbers))
    missing = set(range(count)) - set(numbers)
    assert duplicates == 0 and not missing, f"{duplicates} duplicates, {len(missing)} missing of {count}"
    for partition, values in seen.items():
        ordered = [int(v.split("-")[1]) for v in values]
        assert ordered == sorted(ordered), f"partition {partition} keeps the input order"


TXN_WRITER = textwrap.dedent("""
    import sys
    from confluent_kafka import Producer
    bootstrap, topic, partitions = sys.argv[1], sys.argv[2], int(sys.argv[3])
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": "crash-writer",
                         "transaction.timeout.ms": 3000, "linger.ms": 1,
                         "message.timeout.ms": 3000})
    producer.init_transactions(30)
    txn = 0
    while True:
        producer.begin_transaction()
        for i in range(10):
            producer.produce(topic, value=f"{txn}:{i}".encode(), partition=(txn + i) % partitions)
        producer.commit_transaction(30)
        print(txn, flush=True)
        txn += 1
""")


def test_broker_sigkill_mid_transactions_leaves_each_whole_or_gone(broker_factory, tmp_path):
    data_dir = tmp_path / "crash-data"
    broker = broker_factory(data_dir=data_dir)
    create_topic(broker.bootstrap, "crash", partitions=4)
    script = tmp_path / "writer.py"
    script.write_text(TXN_WRITER)
    writer = subprocess.Popen([sys.executable, str(script), broker.bootstrap, "crash", "4"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    acknowledged = []
    try:
        deadline = time.time() + 30
        while len(acknowledged) < 40 and time.time() < deadline:
            line = writer.stdout.readline()
            if line:
                acknowledged.append(int(line))
        assert len(acknowledged) >= 40, "the writer commits transactions"
        broker.process.send_signal(signal.SIGKILL)
        broker.process.wait(10)
    finally:
        writer.kill()
        writer.wait(10)
    for line in writer.stdout.read().split():
        acknowledged.append(int(line))

    restarted = broker_factory(data_dir=data_dir)
    # The interrupted transaction (if any) times out (3 s) and is aborted: the last
    # stable offset then reaches the high watermark on every partition.
    consumer = Consumer({"bootstrap.servers": restarted.bootstrap, "group.id": "crash-lso",
                         "isolation.level": "read_committed", "enable.auto.commit": False})
    consumer.assign([TopicPartition("crash", p, 0) for p in range(4)])
    deadline = time.time() + 20
    caught_up = False
    seen = []
    while time.time() < deadline and not caught_up:
        message = consumer.poll(0.2)
        if message is not None and message.error() is None:
            seen.append(message.value().decode())
        ends = [high_watermark(restarted.bootstrap, "crash", p) for p in range(4)]
        positions = consumer.position([TopicPartition("crash", p) for p in range(4)])
        caught_up = all(tp.offset >= end for tp, end in zip(positions, ends))
    consumer.close()
    assert caught_up, "read_committed readers reach the log end once the open transaction is aborted"

    by_txn = {}
    for value in seen:
        txn, record = value.split(":")
        by_txn.setdefault(int(txn), []).append(int(record))
    partial = {txn: records for txn, records in by_txn.items() if sorted(records) != list(range(10))}
    assert not partial, f"transactions seen in part: {partial}"
    lost = [txn for txn in acknowledged if txn not in by_txn]
    assert not lost, f"acknowledged commits lost: {lost}"
    assert restarted.stop() == 0


def test_tern_transaction_list_and_describe(broker):
    from conftest import BINARY
    create_topic(broker.bootstrap, "cli-txn", partitions=2)
    producer = open_transaction(broker.bootstrap, "cli-app", "cli-txn", b"x", partition=1)

    def tern(*args):
        result = subprocess.run([str(BINARY), "transaction", *args, "--brokers", broker.bootstrap],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        return result.stdout

    listed = tern("list")
    assert "cli-app" in listed and "Ongoing" in listed, listed
    assert "cli-app" in tern("list", "--state", "Ongoing")
    assert "cli-app" not in tern("list", "--state", "CompleteCommit")
    described = tern("describe", "cli-app")
    assert "state:            Ongoing" in described and "cli-txn-1" in described, described
    producer.commit_transaction(10)
    assert "CompleteCommit" in tern("list")
    missing = subprocess.run([str(BINARY), "transaction", "describe", "nobody", "--brokers", broker.bootstrap],
                             capture_output=True, text=True, timeout=30)
    assert missing.returncode != 0 and "TRANSACTIONAL_ID_NOT_FOUND" in missing.stderr, missing.stderr


def test_tern_transaction_producers_find_hanging_and_abort(broker):
    from conftest import BINARY
    create_topic(broker.bootstrap, "stuck", partitions=1)
    producer = txn_producer(broker.bootstrap, "stuck-app")
    producer.begin_transaction()
    producer.produce("stuck", value=b"held", partition=0)
    producer.flush(10)
    plain = Producer({"bootstrap.servers": broker.bootstrap})
    plain.produce("stuck", value=b"after", partition=0)
    plain.flush(10)

    def tern(*args, ok=True):
        result = subprocess.run([str(BINARY), "transaction", *args, "--brokers", broker.bootstrap],
                                capture_output=True, text=True, timeout=30)
        assert (result.returncode == 0) == ok, result.stderr
        return result

    rows = [line.split() for line in tern("producers", "--topic", "stuck").stdout.splitlines()[1:]]
    open_rows = [row for row in rows if row[-1] != "-"]
    assert len(open_rows) == 1 and open_rows[0][-1] == "0", rows
    producer_id = open_rows[0][2]
    hanging = tern("find-hanging", "--min-age-ms", "0")
    assert "0 hanging" in hanging.stderr and "stuck" not in hanging.stdout, "its coordinator has it open: not hanging"

    assert read_all(broker.bootstrap, "stuck", "read_committed", partitions=1, idle_s=1.0) == {0: []}
    aborted = tern("abort", "--topic", "stuck", "--partition", "0", "--producer-id", producer_id)
    assert "aborted" in aborted.stdout
    assert read_all(broker.bootstrap, "stuck", "read_committed", partitions=1, idle_s=1.0) == {0: ["after"]}, \
        "the abort moved the last stable offset past the transaction, whose record is dropped"
    tern("abort", "--topic", "stuck", "--partition", "0", "--producer-id", producer_id, ok=False)
    producer.commit_transaction(10)  # the coordinator's own marker finds nothing open there
    assert read_all(broker.bootstrap, "stuck", "read_committed", partitions=1, idle_s=1.0) == {0: ["after"]}
