"""kafka-python 3 with its default (idempotent) producer: InitProducerId, sequence
numbers, produce and consume through the pure-Python client."""

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic


def test_kafka_python_idempotent_produce_and_consume(broker):
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=15000)
    admin.create_topics([NewTopic("kp-topic", num_partitions=3, replication_factor=1)])
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", enable_idempotence=True, linger_ms=5)
    futures = [producer.send("kp-topic", key=f"k{i % 10}".encode(), value=f"v{i}".encode()) for i in range(3000)]
    producer.flush(30)
    metadata = [f.get(timeout=30) for f in futures]
    assert len({(m.partition, m.offset) for m in metadata}) == 3000, "every message got its own offset"
    producer.close()

    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False, consumer_timeout_ms=5000,
                             auto_offset_reset="earliest")
    consumer.assign([TopicPartition("kp-topic", p) for p in range(3)])
    consumer.seek_to_beginning()
    values = set()
    for message in consumer:
        values.add(message.value)
        if len(values) == 3000:
            break
    consumer.close()
    assert values == {f"v{i}".encode() for i in range(3000)}
