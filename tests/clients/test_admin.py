"""Admin operations through librdkafka's AdminClient: create and delete topics (data
removed), describe and alter topic configs (retention honoured by the storage engine,
unknown keys rejected), grow partitions, delete records, describe the cluster."""

import pytest
from confluent_kafka import KafkaException, TopicPartition
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewPartitions,
                                   NewTopic, ResourceType)

from helpers import consume_all, create_topic, producer


def admin_for(broker):
    return AdminClient({"bootstrap.servers": broker.bootstrap})


def describe(admin, topic):
    resource = ConfigResource(ResourceType.TOPIC, topic)
    return admin.describe_configs([resource])[resource].result(timeout=15)


def test_create_describe_and_delete_topics(broker):
    admin = admin_for(broker)
    futures = admin.create_topics([NewTopic("admin-a", 4), NewTopic("admin-b", 2, config={"retention.ms": "3600000"})])
    for f in futures.values():
        f.result(timeout=30)
    with pytest.raises(KafkaException) as exists:
        admin.create_topics([NewTopic("admin-a", 1)])["admin-a"].result(timeout=30)
    assert "TOPIC_ALREADY_EXISTS" in str(exists.value)
    with pytest.raises(KafkaException) as bad_name:
        admin.create_topics([NewTopic("bad name!", 1)])["bad name!"].result(timeout=30)
    assert "TOPIC_EXCEPTION" in str(bad_name.value)  # INVALID_TOPIC_EXCEPTION (17)
    with pytest.raises(KafkaException) as bad_config:
        admin.create_topics([NewTopic("bad-config", 1, config={"no.such.key": "1"})])["bad-config"].result(timeout=30)
    assert "INVALID_CONFIG" in str(bad_config.value)

    topics = admin.list_topics(timeout=10).topics
    assert len(topics["admin-a"].partitions) == 4 and len(topics["admin-b"].partitions) == 2
    assert "bad-config" not in topics

    configs = describe(admin, "admin-b")
    assert configs["retention.ms"].value == "3600000"
    assert configs["segment.bytes"].value == str(1 << 30)

    p = producer(broker.bootstrap)
    for i in range(100):
        p.produce("admin-a", value=b"x", partition=i % 4)
    assert p.flush(30) == 0
    assert any(d.name.startswith("admin-a-") for d in broker.data_dir.iterdir())
    admin.delete_topics(["admin-a"])["admin-a"].result(timeout=30)
    assert "admin-a" not in admin.list_topics(timeout=10).topics
    assert not any(d.name.startswith("admin-a-") for d in broker.data_dir.iterdir()), "topic data removed"


def test_alter_retention_and_reject_unknown_keys(broker):
    admin = admin_for(broker)
    create_topic(broker.bootstrap, "alter-me", 1)
    resource = ConfigResource(ResourceType.TOPIC, "alter-me",
                              incremental_configs=[ConfigEntry("retention.ms", "60000", incremental_operation=AlterConfigOpType.SET),
                                                   ConfigEntry("retention.bytes", "1048576", incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([resource])[resource].result(timeout=15)
    configs = describe(admin, "alter-me")
    assert configs["retention.ms"].value == "60000"
    assert configs["retention.bytes"].value == "1048576"

    bad = ConfigResource(ResourceType.TOPIC, "alter-me",
                         incremental_configs=[ConfigEntry("retention.msx", "1", incremental_operation=AlterConfigOpType.SET)])
    with pytest.raises(KafkaException) as error:
        admin.incremental_alter_configs([bad])[bad].result(timeout=15)
    assert "INVALID_CONFIG" in str(error.value)
    assert describe(admin, "alter-me")["retention.ms"].value == "60000", "a rejected change changes nothing"

    delete = ConfigResource(ResourceType.TOPIC, "alter-me",
                            incremental_configs=[ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE)])
    admin.incremental_alter_configs([delete])[delete].result(timeout=15)
    assert describe(admin, "alter-me")["retention.ms"].value == str(7 * 24 * 3600 * 1000)


def test_create_partitions_delete_records_and_describe_cluster(broker):
    admin = admin_for(broker)
    create_topic(broker.bootstrap, "grow", 2)
    admin.create_partitions([NewPartitions("grow", 5)])["grow"].result(timeout=15)
    assert len(admin.list_topics(timeout=10).topics["grow"].partitions) == 5

    p = producer(broker.bootstrap)
    for i in range(50):
        p.produce("grow", value=f"m{i}".encode(), partition=4)
    assert p.flush(30) == 0
    result = admin.delete_records([TopicPartition("grow", 4, 20)])
    low = list(result.values())[0].result(timeout=15)
    assert low.low_watermark == 20
    messages = consume_all(broker.bootstrap, "grow", 5, 30, **{"auto.offset.reset": "earliest"})
    assert all(m.offset() >= 20 for m in messages if m.partition() == 4)

    cluster = admin.describe_cluster().result(timeout=15)
    assert cluster.controller.id == 0
    assert [n.port for n in cluster.nodes] == [broker.port]
