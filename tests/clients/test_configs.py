"""Topic and broker configs through both admin clients, librdkafka's AdminClient and
kafka-python's KafkaAdminClient: CreateTopics accepts every Kafka 3.9 topic config and
refuses unknown names and bad values; DescribeConfigs reports all 37 topic configs with
value, source, synonyms and documentation, and the broker's own configs with read-only
flags; legacy AlterConfigs replaces a topic's set; IncrementalAlterConfigs SET, DELETE,
APPEND and SUBTRACT; dynamic broker configs (per broker, or cluster-wide below the
per-broker value) apply to topics without an override and survive a restart; manual
replica assignment; and the configs the produce path honours (min.insync.replicas,
message.timestamp.before/after.max.ms) refuse what they should, seen as the error codes a
producer gets. Where neither client's admin API reaches (documentation, the "" broker
resource, AlterConfigs without kafka-python's client-side merge) the request is sent as
it is on the wire through kafka-python's connection manager."""

import time

import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ConfigSource,
                                   NewTopic, ResourceType)
from kafka import errors as kafka_errors
from kafka.admin import ConfigResource as KpConfigResource
from kafka.admin import ConfigResourceType, KafkaAdminClient
from kafka.protocol.admin import DescribeConfigsRequest, IncrementalAlterConfigsRequest

from helpers import create_topic

# DescribeConfigs config_source values (KIP-226).
TOPIC_CONFIG, DYNAMIC_BROKER, DYNAMIC_DEFAULT_BROKER, STATIC_BROKER, DEFAULT = 1, 2, 3, 4, 5

# Apache Kafka 3.9's topic configs (TopicConfig / LogConfig), plus Tern's flush.bytes.
KAFKA_39_TOPIC_CONFIGS = {
    "cleanup.policy", "compression.gzip.level", "compression.lz4.level", "compression.type",
    "compression.zstd.level", "delete.retention.ms", "file.delete.delay.ms", "flush.messages", "flush.ms",
    "follower.replication.throttled.replicas", "index.interval.bytes", "leader.replication.throttled.replicas",
    "local.retention.bytes", "local.retention.ms", "max.compaction.lag.ms", "max.message.bytes",
    "message.downconversion.enable", "message.format.version", "message.timestamp.after.max.ms",
    "message.timestamp.before.max.ms", "message.timestamp.difference.max.ms", "message.timestamp.type",
    "min.cleanable.dirty.ratio", "min.compaction.lag.ms", "min.insync.replicas", "preallocate",
    "remote.log.copy.disable", "remote.log.delete.on.disable", "remote.storage.enable", "retention.bytes",
    "retention.ms", "segment.bytes", "segment.index.bytes", "segment.jitter.ms", "segment.ms",
    "unclean.leader.election.enable",
}
assert len(KAFKA_39_TOPIC_CONFIGS) == 36
TERN_TOPIC_CONFIGS = KAFKA_39_TOPIC_CONFIGS | {"flush.bytes"}

WEEK_MS = str(7 * 24 * 3600 * 1000)


def admin_for(broker):
    return AdminClient({"bootstrap.servers": broker.bootstrap})


def kp_admin_for(broker):
    return KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=15000)


def describe(admin, resource_type, name):
    resource = ConfigResource(resource_type, name)
    return admin.describe_configs([resource])[resource].result(timeout=15)


def kp_describe(kp, resource_type, name):
    """Every config of one resource through kafka-python, synonyms included."""
    result = kp.describe_configs([KpConfigResource(resource_type, name)], include_synonyms=True, config_filter="all")
    return result[resource_type.name.lower()][name]


def incremental(admin, resource_type, name, *changes):
    """IncrementalAlterConfigs through librdkafka; changes are (name, value, op)."""
    resource = ConfigResource(resource_type, name, incremental_configs=[
        ConfigEntry(key, value, incremental_operation=op) for key, value, op in changes])
    admin.incremental_alter_configs([resource])[resource].result(timeout=15)


def kp_send(kp, request):
    """Sends a protocol request through kafka-python's connection manager (for what
    neither client's admin API offers: documentation, the "" broker resource)."""
    async def send():
        return await kp._manager.send(request)

    return kp._manager.run(send)


def error_name(excinfo):
    return excinfo.value.args[0].name()


def delivery_errors(bootstrap, topic, acks, **produce_args):
    """Produces one record with the given acks (no retries) and returns its delivery error
    (None when it was written)."""
    p = Producer({"bootstrap.servers": bootstrap, "acks": acks, "retries": 0, "linger.ms": 0,
                  "message.timeout.ms": 10000})
    reports = []
    p.produce(topic, value=b"x", on_delivery=lambda err, msg: reports.append(err), **produce_args)
    assert p.flush(15) == 0, "delivery report not received"
    assert len(reports) == 1
    return reports[0]


def test_create_topics_accepts_every_kafka_config_and_refuses_bad_ones(broker):
    admin = admin_for(broker)
    accepted = {
        "compression.type": "zstd", "delete.retention.ms": "3600000", "min.insync.replicas": "1",
        "message.format.version": "2.8", "message.timestamp.before.max.ms": "60000", "segment.jitter.ms": "1000",
        "index.interval.bytes": "8192", "cleanup.policy": "compact,delete", "min.cleanable.dirty.ratio": "0.3",
        "leader.replication.throttled.replicas": "*", "preallocate": "true",
    }
    admin.create_topics([NewTopic("every-config", 1, config=accepted)])["every-config"].result(timeout=30)
    configs = describe(admin, ResourceType.TOPIC, "every-config")
    for key, value in accepted.items():
        assert configs[key].value == value, key
        assert configs[key].source == TOPIC_CONFIG, key

    refused = [{"compression.typo": "zstd"}, {"compression.type": "brotli"}, {"cleanup.policy": "shred"},
               {"segment.bytes": "12"}, {"remote.storage.enable": "true"}]
    for i, config in enumerate(refused):
        name = f"refused-{i}"
        with pytest.raises(KafkaException) as error:
            admin.create_topics([NewTopic(name, 1, config=config)])[name].result(timeout=30)
        assert error_name(error) == "INVALID_CONFIG", config
    assert not any(t.startswith("refused-") for t in admin.list_topics(timeout=10).topics)

    # kafka-python sends the same request: the same answers.
    kp = kp_admin_for(broker)
    try:
        kp.create_topics({"kp-every-config": {"num_partitions": 1, "configs": accepted}})
        assert kp_describe(kp, ConfigResourceType.TOPIC, "kp-every-config")["compression.type"]["value"] == "zstd"
        for config in refused:
            with pytest.raises(kafka_errors.InvalidConfigurationError):
                kp.create_topics({"kp-refused": {"num_partitions": 1, "configs": config}})
    finally:
        kp.close()
    assert "kp-refused" not in admin.list_topics(timeout=10).topics


def test_describe_reports_every_topic_config_with_source_synonyms_and_documentation(broker):
    admin = admin_for(broker)
    create_topic(broker.bootstrap, "described", 1, {"retention.bytes": "1048576", "compression.type": "lz4"})
    configs = describe(admin, ResourceType.TOPIC, "described")
    assert set(configs) == TERN_TOPIC_CONFIGS
    assert (configs["retention.bytes"].value, configs["retention.bytes"].source) == ("1048576", TOPIC_CONFIG)
    assert configs["retention.bytes"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert (configs["retention.ms"].value, configs["retention.ms"].source) == (WEEK_MS, DEFAULT)
    assert configs["retention.ms"].is_default
    assert (configs["cleanup.policy"].value, configs["cleanup.policy"].source) == ("delete", DEFAULT)
    assert configs["segment.bytes"].value == str(1 << 30)
    assert configs["message.format.version"].value == "3.0-IV1"
    assert not any(c.is_read_only for c in configs.values()), "every topic config is alterable"
    # librdkafka keys synonyms by name, so only the names are comparable here.
    assert "log.retention.hours" in configs["retention.ms"].synonyms
    assert {"retention.bytes", "log.retention.bytes"} <= set(configs["retention.bytes"].synonyms)
    assert "log.roll.hours" in configs["segment.ms"].synonyms

    kp = kp_admin_for(broker)
    try:
        described = kp_describe(kp, ConfigResourceType.TOPIC, "described")
        assert set(described) == TERN_TOPIC_CONFIGS
        compression = described["compression.type"]
        assert (compression["value"], compression["config_source"]) == ("lz4", "DYNAMIC_TOPIC_CONFIG")
        assert [(s["name"], s["value"], s["source"]) for s in compression["synonyms"]] == [
            ("compression.type", "lz4", "DYNAMIC_TOPIC_CONFIG"), ("compression.type", "producer", "DEFAULT_CONFIG")]
        retention = described["retention.ms"]
        assert (retention["value"], retention["config_source"]) == (WEEK_MS, "DEFAULT_CONFIG")
        assert [(s["name"], s["value"]) for s in retention["synonyms"]] == [("log.retention.hours", "168")]
        assert retention["config_type"] == "LONG"
        assert described["cleanup.policy"]["config_type"] == "LIST"

        # kafka-python's describe_configs does not ask for documentation: send the request
        # (v3+, include_documentation) through its connection manager.
        response = kp_send(kp, DescribeConfigsRequest(
            resources=[(ConfigResourceType.TOPIC, "described", None)], include_synonyms=True,
            include_documentation=True, min_version=3))
        (result,) = response.results
        assert result.error_code == 0
        docs = {c.name: c.documentation for c in result.configs}
        assert set(docs) == TERN_TOPIC_CONFIGS
        assert all(docs.values()), "every config is documented"
        assert "Tern" in docs["remote.storage.enable"], "no-effect configs say why"
    finally:
        kp.close()


def test_static_broker_config_is_the_topic_default(broker_factory):
    broker = broker_factory(extra_args=["--broker-config", "log.retention.hours=24"])
    admin = admin_for(broker)
    create_topic(broker.bootstrap, "static-default", 1)
    create_topic(broker.bootstrap, "static-override", 1, {"retention.ms": "1000"})
    retention = describe(admin, ResourceType.TOPIC, "static-default")["retention.ms"]
    assert (retention.value, retention.source) == ("86400000", STATIC_BROKER)
    override = describe(admin, ResourceType.TOPIC, "static-override")["retention.ms"]
    assert (override.value, override.source) == ("1000", TOPIC_CONFIG), "a topic override beats the broker"
    hours = describe(admin, ResourceType.BROKER, "0")["log.retention.hours"]
    assert (hours.value, hours.source, hours.is_read_only) == ("24", STATIC_BROKER, True)

    kp = kp_admin_for(broker)
    try:
        retention = kp_describe(kp, ConfigResourceType.TOPIC, "static-default")["retention.ms"]
        assert (retention["value"], retention["config_source"]) == ("86400000", "STATIC_BROKER_CONFIG")
        assert [(s["name"], s["value"], s["source"]) for s in retention["synonyms"]] == [
            ("log.retention.hours", "24", "STATIC_BROKER_CONFIG"), ("log.retention.hours", "168", "DEFAULT_CONFIG")]
    finally:
        kp.close()
    assert broker.stop() == 0


def test_legacy_alter_configs_replaces_the_whole_set(broker):
    admin = admin_for(broker)
    create_topic(broker.bootstrap, "legacy", 1, {"retention.ms": "60000", "retention.bytes": "1048576"})

    # librdkafka's (deprecated) alter_configs is the plain AlterConfigs request.
    resource = ConfigResource(ResourceType.TOPIC, "legacy", set_config={"retention.bytes": "2097152"})
    admin.alter_configs([resource])[resource].result(timeout=15)
    configs = describe(admin, ResourceType.TOPIC, "legacy")
    assert (configs["retention.bytes"].value, configs["retention.bytes"].source) == ("2097152", TOPIC_CONFIG)
    assert (configs["retention.ms"].value, configs["retention.ms"].source) == (WEEK_MS, DEFAULT), \
        "a key not listed goes back to its default"

    kp = kp_admin_for(broker)
    try:
        # kafka-python's public alter_configs(incremental=False) re-sends every other
        # modified key on purpose (to avoid resetting them); send the AlterConfigs request
        # as given to see the broker's replace semantics.
        result = kp._manager.run(kp._send_alter_configs_requests,
                                 [KpConfigResource(ConfigResourceType.TOPIC, "legacy", {"segment.ms": "3600000"})],
                                 False, False)
        assert result == {"topic": {"legacy": "OK"}}
        described = kp_describe(kp, ConfigResourceType.TOPIC, "legacy")
        assert (described["segment.ms"]["value"], described["segment.ms"]["config_source"]) == (
            "3600000", "DYNAMIC_TOPIC_CONFIG")
        assert (described["retention.bytes"]["value"], described["retention.bytes"]["config_source"]) == (
            "-1", "DEFAULT_CONFIG")

        # The public path, which keeps the other overrides client-side.
        result = kp.alter_configs([KpConfigResource(ConfigResourceType.TOPIC, "legacy", {"retention.ms": "120000"})],
                                  incremental=False)
        assert result == {"topic": {"legacy": "OK"}}
        described = kp_describe(kp, ConfigResourceType.TOPIC, "legacy")
        assert described["retention.ms"]["value"] == "120000"
        assert described["segment.ms"]["value"] == "3600000"

        # A bad key in a legacy request changes nothing.
        result = kp._manager.run(kp._send_alter_configs_requests,
                                 [KpConfigResource(ConfigResourceType.TOPIC, "legacy", {"retention.msx": "1"})],
                                 False, False)
        assert "Error 40" in result["topic"]["legacy"], result  # INVALID_CONFIG
        assert kp_describe(kp, ConfigResourceType.TOPIC, "legacy")["retention.ms"]["value"] == "120000"
    finally:
        kp.close()


def test_incremental_set_delete_append_and_subtract(broker):
    admin = admin_for(broker)
    create_topic(broker.bootstrap, "lists", 1)
    T = ResourceType.TOPIC

    incremental(admin, T, "lists", ("cleanup.policy", "compact", AlterConfigOpType.APPEND))
    policy = describe(admin, T, "lists")["cleanup.policy"]
    assert (policy.value, policy.source) == ("delete,compact", TOPIC_CONFIG), "APPEND starts from the default"
    incremental(admin, T, "lists", ("cleanup.policy", "compact", AlterConfigOpType.APPEND))
    assert describe(admin, T, "lists")["cleanup.policy"].value == "delete,compact", "no duplicate element"
    incremental(admin, T, "lists", ("cleanup.policy", "delete", AlterConfigOpType.SUBTRACT))
    assert describe(admin, T, "lists")["cleanup.policy"].value == "compact"

    with pytest.raises(KafkaException) as error:
        incremental(admin, T, "lists", ("retention.ms", "1000", AlterConfigOpType.APPEND))
    assert error_name(error) == "INVALID_CONFIG"
    with pytest.raises(KafkaException) as error:
        incremental(admin, T, "lists", ("cleanup.policy", "shred", AlterConfigOpType.APPEND))
    assert error_name(error) == "INVALID_CONFIG"
    assert describe(admin, T, "lists")["retention.ms"].source == DEFAULT, "a refused change changes nothing"

    incremental(admin, T, "lists", ("retention.ms", "60000", AlterConfigOpType.SET),
                ("cleanup.policy", None, AlterConfigOpType.DELETE))
    configs = describe(admin, T, "lists")
    assert (configs["retention.ms"].value, configs["retention.ms"].source) == ("60000", TOPIC_CONFIG)
    assert (configs["cleanup.policy"].value, configs["cleanup.policy"].source) == ("delete", DEFAULT)

    # The same operations through kafka-python (IncrementalAlterConfigs is its default).
    kp = kp_admin_for(broker)
    try:
        def kp_alter(configs):
            return kp.alter_configs([KpConfigResource(ConfigResourceType.TOPIC, "lists", configs)])["topic"]["lists"]

        assert kp_alter({"leader.replication.throttled.replicas": ("APPEND", "0:0")}) == "OK"
        assert kp_alter({"leader.replication.throttled.replicas": ("APPEND", "1:0")}) == "OK"
        assert kp_alter({"leader.replication.throttled.replicas": ("SUBTRACT", "0:0")}) == "OK"
        assert kp_alter({"retention.ms": ("DELETE", None), "segment.ms": "3600000"}) == "OK"
        assert "Error 40" in kp_alter({"retention.bytes": ("APPEND", "5")})  # INVALID_CONFIG
        described = kp_describe(kp, ConfigResourceType.TOPIC, "lists")
        assert described["leader.replication.throttled.replicas"]["value"] == "1:0"
        assert (described["retention.ms"]["value"], described["retention.ms"]["config_source"]) == (
            WEEK_MS, "DEFAULT_CONFIG")
        assert described["segment.ms"]["value"] == "3600000"
        assert described["retention.bytes"]["value"] == "-1"
    finally:
        kp.close()


def test_broker_resource_describes_every_broker_config(broker_factory):
    broker = broker_factory(extra_args=["--default-partitions", "3"])
    admin = admin_for(broker)
    configs = describe(admin, ResourceType.BROKER, "0")
    for name in ["advertised.listeners", "listeners", "log.dirs", "log.retention.ms", "log.retention.hours",
                 "log.segment.bytes", "num.partitions", "default.replication.factor", "min.insync.replicas",
                 "group.min.session.timeout.ms", "group.max.session.timeout.ms", "group.initial.rebalance.delay.ms",
                 "offsets.retention.minutes", "offsets.topic.num.partitions",
                 "transaction.state.log.replication.factor", "message.max.bytes", "compression.type",
                 "log.cleanup.policy", "log.roll.hours"]:
        assert name in configs, name

    def entry(name):
        c = configs[name]
        return c.value, c.source, c.is_read_only

    assert entry("num.partitions") == ("3", STATIC_BROKER, True), "an explicit flag is a static config"
    assert entry("log.dirs") == (str(broker.data_dir), STATIC_BROKER, True)
    assert entry("listeners") == (f"PLAINTEXT://{broker.bootstrap}", STATIC_BROKER, True)
    assert entry("advertised.listeners")[0] == f"PLAINTEXT://{broker.bootstrap}"
    assert entry("group.min.session.timeout.ms") == ("6000", DEFAULT, True)
    assert entry("group.max.session.timeout.ms") == ("1800000", DEFAULT, True)
    assert entry("group.initial.rebalance.delay.ms") == ("3000", DEFAULT, True)
    assert entry("offsets.retention.minutes") == ("10080", DEFAULT, True)
    assert entry("default.replication.factor") == ("1", DEFAULT, True)
    assert entry("transaction.state.log.replication.factor") == ("1", DEFAULT, True)
    assert entry("log.retention.hours") == ("168", DEFAULT, True), "only the first synonym is dynamic"
    assert entry("log.retention.ms") == (None, DEFAULT, False), "Kafka's default is null; it is dynamic"
    assert entry("log.segment.bytes") == (str(1 << 30), DEFAULT, False)
    assert entry("message.max.bytes") == ("1048588", DEFAULT, False)
    assert entry("compression.type") == ("producer", DEFAULT, False)
    assert entry("min.insync.replicas") == ("1", DEFAULT, False)
    assert entry("log.message.format.version")[2] is True, "message.format.version is not dynamic"

    kp = kp_admin_for(broker)
    try:
        described = kp_describe(kp, ConfigResourceType.BROKER, "0")
        assert set(described) == set(configs), "both clients see the same configs"
        assert (described["num.partitions"]["value"], described["num.partitions"]["config_source"]) == (
            "3", "STATIC_BROKER_CONFIG")
        assert described["log.dirs"]["read_only"] is True
        assert described["log.retention.ms"]["read_only"] is False
        assert described["num.partitions"]["synonyms"] == [
            {"name": "num.partitions", "value": "3", "source": "STATIC_BROKER_CONFIG"}]
    finally:
        kp.close()
    assert broker.stop() == 0


def test_dynamic_broker_config_applies_to_topics_and_survives_a_restart(broker):
    admin = admin_for(broker)
    create_topic(broker.bootstrap, "follows-broker", 1)
    create_topic(broker.bootstrap, "own-retention", 1, {"retention.ms": "1000"})
    B, T = ResourceType.BROKER, ResourceType.TOPIC

    incremental(admin, B, "0", ("log.retention.ms", "3600000", AlterConfigOpType.SET))
    broker_value = describe(admin, B, "0")["log.retention.ms"]
    assert (broker_value.value, broker_value.source) == ("3600000", DYNAMIC_BROKER)
    retention = describe(admin, T, "follows-broker")["retention.ms"]
    assert (retention.value, retention.source) == ("3600000", DYNAMIC_BROKER)
    assert "log.retention.ms" in retention.synonyms
    own = describe(admin, T, "own-retention")["retention.ms"]
    assert (own.value, own.source) == ("1000", TOPIC_CONFIG)

    with pytest.raises(KafkaException) as error:
        incremental(admin, B, "0", ("log.dirs", "/elsewhere", AlterConfigOpType.SET))
    assert error_name(error) == "INVALID_REQUEST", "read-only broker config"
    with pytest.raises(KafkaException) as error:
        incremental(admin, B, "0", ("log.retention.ms", "-5", AlterConfigOpType.SET))
    assert error_name(error) == "INVALID_CONFIG"
    assert describe(admin, B, "0")["log.retention.ms"].value == "3600000", "a refused change changes nothing"

    # Persisted in the cluster metadata: the same broker (port, data dir) restarted.
    assert broker.stop() == 0
    broker.start()
    admin = admin_for(broker)
    retention = describe(admin, T, "follows-broker")["retention.ms"]
    assert (retention.value, retention.source) == ("3600000", DYNAMIC_BROKER), "survives a restart"
    assert describe(admin, B, "0")["log.retention.ms"].source == DYNAMIC_BROKER

    # kafka-python sees the same and can change broker configs too.
    kp = kp_admin_for(broker)
    try:
        described = kp_describe(kp, ConfigResourceType.TOPIC, "follows-broker")["retention.ms"]
        assert (described["value"], described["config_source"]) == ("3600000", "DYNAMIC_BROKER_CONFIG")
        assert described["synonyms"][0] == {"name": "log.retention.ms", "value": "3600000",
                                            "source": "DYNAMIC_BROKER_CONFIG"}
        result = kp.alter_configs([KpConfigResource(ConfigResourceType.BROKER, "0", {"log.dirs": "/elsewhere"})],
                                  raise_on_unknown=False)
        assert "Error 42" in result["broker"]["0"], result  # INVALID_REQUEST
        result = kp.alter_configs([KpConfigResource(ConfigResourceType.BROKER, "0",
                                                    {"log.segment.bytes": "104857600"})])
        assert result == {"broker": {"0": "OK"}}
        segment = kp_describe(kp, ConfigResourceType.TOPIC, "follows-broker")["segment.bytes"]
        assert (segment["value"], segment["config_source"]) == ("104857600", "DYNAMIC_BROKER_CONFIG")
    finally:
        kp.close()

    incremental(admin, B, "0", ("log.retention.ms", None, AlterConfigOpType.DELETE),
                ("log.segment.bytes", None, AlterConfigOpType.DELETE))
    configs = describe(admin, T, "follows-broker")
    assert (configs["retention.ms"].value, configs["retention.ms"].source) == (WEEK_MS, DEFAULT)
    assert (configs["segment.bytes"].value, configs["segment.bytes"].source) == (str(1 << 30), DEFAULT)
    assert describe(admin, B, "0")["log.retention.ms"].value is None


def test_cluster_wide_default_ranks_below_the_per_broker_value(broker):
    # Both clients refuse an empty BROKER resource name client-side, so the requests are
    # sent as they are on the wire.
    admin = admin_for(broker)
    create_topic(broker.bootstrap, "layers", 1)
    B, T = ResourceType.BROKER, ResourceType.TOPIC
    kp = kp_admin_for(broker)
    try:
        response = kp_send(kp, IncrementalAlterConfigsRequest(
            resources=[(ConfigResourceType.BROKER, "", [("log.retention.ms", 0, "7200000")])], validate_only=False))
        assert [r.error_code for r in response.responses] == [0]
        retention = describe(admin, T, "layers")["retention.ms"]
        assert (retention.value, retention.source) == ("7200000", DYNAMIC_DEFAULT_BROKER)
        response = kp_send(kp, DescribeConfigsRequest(resources=[(ConfigResourceType.BROKER, "", None)],
                                                      include_synonyms=True))
        (result,) = response.results
        assert [(c.name, c.value, c.config_source) for c in result.configs] == [
            ("log.retention.ms", "7200000", DYNAMIC_DEFAULT_BROKER)], "the cluster default lists what it sets"
    finally:
        kp.close()

    incremental(admin, B, "0", ("log.retention.ms", "3600000", AlterConfigOpType.SET))
    retention = describe(admin, T, "layers")["retention.ms"]
    assert (retention.value, retention.source) == ("3600000", DYNAMIC_BROKER), "per-broker beats cluster-wide"
    assert describe(admin, B, "0")["log.retention.ms"].source == DYNAMIC_BROKER

    # Legacy AlterConfigs on the broker replaces its per-broker set: retention falls back to
    # the cluster-wide value.
    resource = ConfigResource(B, "0", set_config={"log.segment.bytes": "104857600"})
    admin.alter_configs([resource])[resource].result(timeout=15)
    configs = describe(admin, T, "layers")
    assert (configs["retention.ms"].value, configs["retention.ms"].source) == ("7200000", DYNAMIC_DEFAULT_BROKER)
    assert (configs["segment.bytes"].value, configs["segment.bytes"].source) == ("104857600", DYNAMIC_BROKER)

    # validate_only checks without changing anything.
    resource = ConfigResource(T, "layers", incremental_configs=[
        ConfigEntry("retention.ms", "5", incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([resource], validate_only=True)[resource].result(timeout=15)
    assert describe(admin, T, "layers")["retention.ms"].source == DYNAMIC_DEFAULT_BROKER

    assert broker.stop() == 0
    broker.start()
    admin = admin_for(broker)
    retention = describe(admin, T, "layers")["retention.ms"]
    assert (retention.value, retention.source) == ("7200000", DYNAMIC_DEFAULT_BROKER), "survives a restart"


def test_dynamic_broker_min_insync_replicas_refuses_acks_all(broker):
    admin = admin_for(broker)
    create_topic(broker.bootstrap, "isr-default", 1)
    create_topic(broker.bootstrap, "isr-override", 1, {"min.insync.replicas": "1"})
    assert delivery_errors(broker.bootstrap, "isr-default", "all") is None

    incremental(admin, ResourceType.BROKER, "0", ("min.insync.replicas", "2", AlterConfigOpType.SET))
    described = describe(admin, ResourceType.TOPIC, "isr-default")["min.insync.replicas"]
    assert (described.value, described.source) == ("2", DYNAMIC_BROKER)
    error = delivery_errors(broker.bootstrap, "isr-default", "all")
    assert error is not None and error.name() == "NOT_ENOUGH_REPLICAS", error
    assert delivery_errors(broker.bootstrap, "isr-default", "1") is None, "acks=1 does not wait for replicas"
    assert delivery_errors(broker.bootstrap, "isr-override", "all") is None, "the topic's own value wins"

    incremental(admin, ResourceType.BROKER, "0", ("min.insync.replicas", None, AlterConfigOpType.DELETE))
    assert delivery_errors(broker.bootstrap, "isr-default", "all") is None


def test_manual_replica_assignment(broker):
    admin = admin_for(broker)
    # librdkafka wants num_partitions to match the assignment and sends -1 on the wire.
    admin.create_topics([NewTopic("assigned", num_partitions=3, replica_assignment=[[0], [0], [0]])])[
        "assigned"].result(timeout=30)
    assert len(admin.list_topics(timeout=10).topics["assigned"].partitions) == 3
    with pytest.raises(KafkaException) as error:
        admin.create_topics([NewTopic("assigned-elsewhere", num_partitions=2, replica_assignment=[[0], [1]])])[
            "assigned-elsewhere"].result(timeout=30)
    assert error_name(error) == "INVALID_REPLICA_ASSIGNMENT"
    assert "assigned-elsewhere" not in admin.list_topics(timeout=10).topics

    kp = kp_admin_for(broker)
    try:
        kp.create_topics({"kp-assigned": {"assignments": {0: [0], 1: [0]}}})
        with pytest.raises(kafka_errors.InvalidReplicationAssignmentError):
            kp.create_topics({"kp-assigned-elsewhere": {"assignments": {0: [1]}}})
    finally:
        kp.close()
    assert len(admin.list_topics(timeout=10).topics["kp-assigned"].partitions) == 2


def test_topic_min_insync_replicas_refuses_acks_all(broker):
    create_topic(broker.bootstrap, "needs-two", 1, {"min.insync.replicas": "2"})
    error = delivery_errors(broker.bootstrap, "needs-two", "all")
    assert error is not None and error.name() == "NOT_ENOUGH_REPLICAS", error
    assert delivery_errors(broker.bootstrap, "needs-two", "1") is None


def test_timestamp_before_max_refuses_old_records(broker):
    create_topic(broker.bootstrap, "recent-only", 1, {"message.timestamp.before.max.ms": "60000"})
    now_ms = int(time.time() * 1000)
    error = delivery_errors(broker.bootstrap, "recent-only", "all", timestamp=now_ms - 3600 * 1000)
    assert error is not None and error.name() == "INVALID_TIMESTAMP", error
    assert delivery_errors(broker.bootstrap, "recent-only", "all", timestamp=now_ms) is None
    create_topic(broker.bootstrap, "any-age", 1)
    assert delivery_errors(broker.bootstrap, "any-age", "all", timestamp=now_ms - 3600 * 1000) is None
    assert delivery_errors(broker.bootstrap, "any-age", "all", timestamp=now_ms + 3600 * 1000) is None


def test_timestamp_after_max_refuses_future_records(broker):
    create_topic(broker.bootstrap, "not-ahead", 1, {"message.timestamp.after.max.ms": "60000"})
    now_ms = int(time.time() * 1000)
    error = delivery_errors(broker.bootstrap, "not-ahead", "all", timestamp=now_ms + 3600 * 1000)
    assert error is not None and error.name() == "INVALID_TIMESTAMP", error
    assert delivery_errors(broker.bootstrap, "not-ahead", "all", timestamp=now_ms) is None
