"""confluent-kafka (a current librdkafka) against the real broker: admin, produce, fetch."""

import json
import time

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    TIMESTAMP_CREATE_TIME,
    KafkaError,
    TopicPartition,
)
from confluent_kafka.admin import (
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
    OffsetSpec,
    ResourceType,
)

from helpers import (
    admin_client,
    assert_contiguous,
    assert_delivered,
    consume_to_end,
    consumer_client,
    create_topic,
    future_error,
    produce_all,
    producer_client,
    topic_partition_count,
    unique_topic,
    wait_until,
)

# -- topics ------------------------------------------------------------------------------------


def test_create_topic_shows_partitions_in_metadata(module_broker):
    topic = unique_topic("create")
    admin = create_topic(module_broker, topic, partitions=3)
    md = admin.list_topics(timeout=10)
    assert len(md.brokers) == 1
    (broker_id,) = md.brokers.keys()
    host, port = module_broker.bootstrap.rsplit(":", 1)
    assert (md.brokers[broker_id].host, md.brokers[broker_id].port) == (host, int(port))
    partitions = md.topics[topic].partitions
    assert sorted(partitions) == [0, 1, 2]
    for p in partitions.values():
        assert p.error is None, p.error
        assert p.leader == broker_id
        assert list(p.replicas) == [broker_id]
        assert list(p.isrs) == [broker_id]


def test_create_existing_topic_fails(module_broker):
    topic = unique_topic("dup")
    admin = create_topic(module_broker, topic, partitions=1)
    futures = admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    err = future_error(futures[topic])
    assert err is not None and err.code() == KafkaError.TOPIC_ALREADY_EXISTS, err


@pytest.mark.parametrize("name", ["bad name!", "..", "slash/topic", "x" * 250])
def test_create_invalid_topic_name_fails(module_broker, name):
    admin = admin_client(module_broker)
    futures = admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])
    err = future_error(futures[name])
    assert err is not None and err.code() == KafkaError.TOPIC_EXCEPTION, err
    assert name not in admin.list_topics(timeout=10).topics


def test_create_with_replication_factor_3_fails(module_broker):
    topic = unique_topic("rf3")
    admin = admin_client(module_broker)
    futures = admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=3)])
    err = future_error(futures[topic])
    assert err is not None and err.code() == KafkaError.INVALID_REPLICATION_FACTOR, err
    assert topic not in admin.list_topics(timeout=10).topics


def test_create_with_broker_defaults(module_broker):
    # CreateTopics v4+ lets partitions and replication factor be -1: the broker's defaults.
    # Spring's KafkaAdmin creates topics this way.
    defaults, two = unique_topic("defaults"), unique_topic("two")
    admin = admin_client(module_broker)
    futures = admin.create_topics([NewTopic(defaults), NewTopic(two, num_partitions=2)])
    assert future_error(futures[defaults]) is None
    assert future_error(futures[two]) is None
    wait_until(lambda: topic_partition_count(admin, defaults) == 3, 30, "default 3 partitions")
    wait_until(lambda: topic_partition_count(admin, two) == 2, 30, "2 partitions")


def test_create_partitions_grows_but_never_shrinks(module_broker):
    topic = unique_topic("grow")
    admin = create_topic(module_broker, topic, partitions=2)
    assert future_error(admin.create_partitions([NewPartitions(topic, 5)])[topic]) is None
    wait_until(lambda: topic_partition_count(admin, topic) == 5, 30, "5 partitions after grow")

    for count in (3, 5):
        err = future_error(admin.create_partitions([NewPartitions(topic, count)])[topic])
        assert err is not None and err.code() == KafkaError.INVALID_PARTITIONS, (count, err)
    assert topic_partition_count(admin, topic) == 5

    producer = producer_client(module_broker)
    reports = produce_all(producer, [(topic, {"value": b"new", "partition": 4})])
    assert_delivered(reports)
    assert reports[0][1:3] == (4, 0)


def test_delete_topic(module_broker):
    topic = unique_topic("delete")
    admin = create_topic(module_broker, topic, partitions=1)
    producer = producer_client(module_broker)
    assert_delivered(produce_all(producer, [(topic, {"value": b"gone", "partition": 0})] * 5))

    assert future_error(admin.delete_topics([topic])[topic]) is None
    wait_until(lambda: topic not in admin.list_topics(timeout=10).topics, 30, "topic deleted")

    err = future_error(admin.delete_topics([topic])[topic])
    assert err is not None and err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART, err

    # The same name again is a new, empty topic.
    create_topic(module_broker, topic, partitions=1)
    consumer = consumer_client(module_broker)
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    finally:
        consumer.close()
    assert (low, high) == (0, 0)


# -- configs ------------------------------------------------------------------------------------


def describe_topic_configs(admin, topic):
    resource = ConfigResource(ResourceType.TOPIC, topic)
    return admin.describe_configs([resource])[resource].result(timeout=30)


def source(entry):
    """The source of a described config (confluent-kafka reports it as a plain int)."""
    return ConfigSource(entry.source)


def test_describe_configs_lists_every_topic_config_with_source(module_broker):
    topic = unique_topic("describe")
    admin = create_topic(module_broker, topic, partitions=1)
    configs = describe_topic_configs(admin, topic)
    expected = {
        "cleanup.policy",
        "compression.type",
        "max.message.bytes",
        "message.timestamp.type",
        "min.insync.replicas",
        "retention.bytes",
        "retention.ms",
        "segment.bytes",
        "segment.ms",
    }
    missing = expected - set(configs)
    assert not missing, f"DescribeConfigs lacks {sorted(missing)}; has {sorted(configs)}"
    for name, entry in configs.items():
        assert entry.name == name
        assert source(entry) != ConfigSource.UNKNOWN_CONFIG, f"{name} has an unknown source"
        assert source(entry) == ConfigSource.DEFAULT_CONFIG, f"{name} source {source(entry)}"
        assert entry.is_default, name
        assert entry.is_sensitive or entry.value is not None, f"{name} has no value"
    assert configs["retention.ms"].value == "604800000"
    assert configs["cleanup.policy"].value == "delete"


@pytest.mark.filterwarnings("ignore:alter_configs has been deprecated")
def test_alter_configs_and_incremental_alter_configs(module_broker):
    topic = unique_topic("alter")
    admin = create_topic(module_broker, topic, partitions=1)
    resource = ConfigResource(ResourceType.TOPIC, topic, set_config={"retention.ms": "3600000"})
    (future,) = admin.alter_configs([resource]).values()
    assert future_error(future) is None

    configs = describe_topic_configs(admin, topic)
    assert configs["retention.ms"].value == "3600000"
    assert source(configs["retention.ms"]) == ConfigSource.DYNAMIC_TOPIC_CONFIG
    assert not configs["retention.ms"].is_default
    assert source(configs["segment.ms"]) == ConfigSource.DEFAULT_CONFIG

    def incremental(*entries):
        res = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=list(entries))
        (fut,) = admin.incremental_alter_configs([res]).values()
        return future_error(fut)

    set_op = AlterConfigOpType.SET
    assert incremental(ConfigEntry("segment.ms", "7200000", incremental_operation=set_op)) is None
    configs = describe_topic_configs(admin, topic)
    assert configs["segment.ms"].value == "7200000"
    assert source(configs["segment.ms"]) == ConfigSource.DYNAMIC_TOPIC_CONFIG
    # Incremental changes leave other overrides alone.
    assert configs["retention.ms"].value == "3600000"
    assert source(configs["retention.ms"]) == ConfigSource.DYNAMIC_TOPIC_CONFIG

    delete_op = AlterConfigOpType.DELETE
    assert incremental(ConfigEntry("segment.ms", None, incremental_operation=delete_op)) is None
    configs = describe_topic_configs(admin, topic)
    assert source(configs["segment.ms"]) == ConfigSource.DEFAULT_CONFIG
    assert source(configs["retention.ms"]) == ConfigSource.DYNAMIC_TOPIC_CONFIG

    # The legacy AlterConfigs replaces the whole set of overrides.
    resource = ConfigResource(ResourceType.TOPIC, topic, set_config={"max.message.bytes": "50000"})
    (future,) = admin.alter_configs([resource]).values()
    assert future_error(future) is None
    configs = describe_topic_configs(admin, topic)
    assert configs["max.message.bytes"].value == "50000"
    assert source(configs["max.message.bytes"]) == ConfigSource.DYNAMIC_TOPIC_CONFIG
    assert configs["retention.ms"].value == "604800000"
    assert source(configs["retention.ms"]) == ConfigSource.DEFAULT_CONFIG

    err = incremental(ConfigEntry("retention.ms", "soon", incremental_operation=set_op))
    assert err is not None and err.code() == KafkaError.INVALID_CONFIG, err
    err = incremental(ConfigEntry("no.such.config", "1", incremental_operation=set_op))
    assert err is not None and err.code() == KafkaError.INVALID_CONFIG, err
    assert describe_topic_configs(admin, topic)["retention.ms"].value == "604800000"


def test_create_topic_with_configs(module_broker):
    topic = unique_topic("withconf")
    admin = create_topic(module_broker, topic, partitions=1, config={"retention.ms": "1000000"})
    entry = describe_topic_configs(admin, topic)["retention.ms"]
    assert (entry.value, source(entry)) == ("1000000", ConfigSource.DYNAMIC_TOPIC_CONFIG)


# -- cluster ------------------------------------------------------------------------------------


def test_cluster_id_is_stable_across_restart(broker):
    admin = admin_client(broker)
    cluster = admin.describe_cluster(request_timeout=30).result(timeout=30)
    assert cluster.cluster_id, "DescribeCluster returned no cluster id"
    assert len(cluster.nodes) == 1
    node = cluster.nodes[0]
    assert f"{node.host}:{node.port}" == broker.bootstrap
    assert cluster.controller is not None and cluster.controller.id == node.id
    assert admin.list_topics(timeout=10).cluster_id == cluster.cluster_id

    broker.restart()
    admin = admin_client(broker)
    again = admin.describe_cluster(request_timeout=30).result(timeout=30)
    assert again.cluster_id == cluster.cluster_id
    assert again.nodes[0].id == node.id


def test_delete_records_raises_low_watermark(broker):
    topic = unique_topic("delrec")
    admin = create_topic(broker, topic, partitions=1)
    producer = producer_client(broker)
    values = [f"r{i}".encode() for i in range(10)]
    assert_delivered(produce_all(producer, [(topic, {"value": v, "partition": 0}) for v in values]))

    tp = TopicPartition(topic, 0, 4)
    result = admin.delete_records([tp])
    (future,) = result.values()
    assert future.result(timeout=30).low_watermark == 4

    def watermarks():
        consumer = consumer_client(broker)
        try:
            return consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        finally:
            consumer.close()

    assert watermarks() == (4, 10)
    offsets = admin.list_offsets(
        {TopicPartition(topic, 0): OffsetSpec.earliest()}, request_timeout=30
    )
    assert next(iter(offsets.values())).result(timeout=30).offset == 4

    records = consume_to_end(broker, topic, [0])[0]
    assert [r.offset for r in records] == list(range(4, 10))
    assert [r.value for r in records] == values[4:]

    (future,) = admin.delete_records([TopicPartition(topic, 0, 11)]).values()
    err = future_error(future)
    assert err is not None and err.code() == KafkaError.OFFSET_OUT_OF_RANGE, err

    # The new log start offset survives a restart.
    broker.restart()
    assert watermarks() == (4, 10)


# -- produce and fetch -------------------------------------------------------------------------


def test_produce_and_consume_three_partitions(module_broker):
    topic = unique_topic("pc")
    create_topic(module_broker, topic, partitions=3)
    producer = producer_client(module_broker, **{"linger.ms": 5})
    n = 600
    started_ms = int(time.time() * 1000)
    messages = [
        (
            topic,
            {
                "key": f"k{i}".encode(),
                "value": f"value-{i}".encode(),
                "partition": i % 3,
                "headers": [("n", str(i).encode())],
            },
        )
        for i in range(n)
    ]
    reports = produce_all(producer, messages)
    assert_delivered(reports)
    records = consume_to_end(module_broker, topic, [0, 1, 2])
    finished_ms = int(time.time() * 1000)

    assert sum(len(r) for r in records.values()) == n
    for p in range(3):
        assert_contiguous(records[p])
        expected = [i for i in range(n) if i % 3 == p]
        assert [r.value for r in records[p]] == [f"value-{i}".encode() for i in expected]
        assert [r.key for r in records[p]] == [f"k{i}".encode() for i in expected]
        assert [r.headers for r in records[p]] == [[("n", str(i).encode())] for i in expected]
        for r in records[p]:
            ts_type, ts = r.timestamp
            assert ts_type == TIMESTAMP_CREATE_TIME
            assert started_ms - 5000 <= ts <= finished_ms + 5000, ts
    # Delivery reports carry the offsets the records really have.
    for i, (_, partition, offset, value) in enumerate(reports):
        assert partition == i % 3
        assert records[partition][offset].value == value


def test_idempotent_producer_keeps_per_key_order(module_broker):
    topic = unique_topic("idem")
    create_topic(module_broker, topic, partitions=3)
    producer = producer_client(
        module_broker, **{"enable.idempotence": True, "acks": "all", "linger.ms": 5}
    )
    keys, per_key = 20, 200
    messages = [
        (topic, {"key": f"key-{k}".encode(), "value": f"key-{k}:{s}".encode()})
        for s in range(per_key)
        for k in range(keys)
    ]
    reports = produce_all(producer, messages, timeout=60)
    assert_delivered(reports)
    records = consume_to_end(module_broker, topic, [0, 1, 2], timeout=60)
    assert sum(len(r) for r in records.values()) == keys * per_key

    partition_of = {}
    seqs = {}
    for p in range(3):
        assert_contiguous(records[p])
        for r in records[p]:
            key, seq = r.value.decode().split(":")
            assert r.key.decode() == key
            assert partition_of.setdefault(key, p) == p, f"{key} found in two partitions"
            seqs.setdefault(key, []).append(int(seq))
    assert len(seqs) == keys
    for key, got in seqs.items():
        assert got == list(range(per_key)), f"{key}: sequence broken, first 20: {got[:20]}"
    assert len(set(partition_of.values())) >= 2, "all keys in one partition"
    for (_, partition, offset, value) in reports:
        assert records[partition][offset].value == value


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_compression_round_trip(module_broker, codec):
    topic = unique_topic(f"z-{codec}")
    create_topic(module_broker, topic, partitions=1)
    latest_stats = {}

    def on_stats(text):
        latest_stats.update(json.loads(text))

    producer = producer_client(
        module_broker,
        **{
            "compression.type": codec,
            "linger.ms": 50,
            "statistics.interval.ms": 100,
            "stats_cb": on_stats,
        },
    )
    n = 500
    filler = b"the quick brown fox jumps over the lazy dog " * 25
    headers = [("dup", b"first"), ("dup", b"second"), ("other", b"x"), ("null", None)]
    values = [f"{i:06d}".encode() + filler for i in range(n)]
    values[7] = None  # a tombstone among compressed records
    messages = [
        (topic, {"key": None if i % 5 == 0 else f"k{i}", "value": values[i], "headers": headers})
        for i in range(n)
    ]
    reports = produce_all(producer, messages)
    assert_delivered(reports)

    records = consume_to_end(module_broker, topic, [0])[0]
    assert_contiguous(records)
    assert [r.value for r in records] == values
    assert [r.key for r in records] == [None if i % 5 == 0 else f"k{i}".encode() for i in range(n)]
    for r in records:
        assert r.headers == headers, f"offset {r.offset}: headers {r.headers}"

    # The producer really compressed: librdkafka silently sends uncompressed batches when it
    # thinks the broker cannot take them (KAFKA-18659).
    payload = sum(len(v) for v in values if v is not None)

    def stats_cover_all_messages():
        producer.poll(0.1)
        return latest_stats.get("txmsgs", 0) >= n

    wait_until(stats_cover_all_messages, 30, "producer statistics covering all messages")
    assert latest_stats["tx_bytes"] < payload / 4, (
        f"{codec}: sent {latest_stats['tx_bytes']} bytes for {payload} bytes of values"
    )


@pytest.mark.parametrize("codec", ["none", "lz4"])
def test_compacted_topic_refuses_records_without_a_key(module_broker, codec):
    # Compaction keeps the newest record per key, so Kafka refuses keyless records on a
    # compacted topic, also inside compressed batches; keyed records and tombstones pass.
    topic = unique_topic(f"compact-{codec}")
    create_topic(module_broker, topic, partitions=1, config={"cleanup.policy": "compact"})
    producer = producer_client(
        module_broker, **{"compression.type": codec, "linger.ms": 0, "retries": 0}
    )
    keyed = [(topic, {"key": f"k{i}", "value": f"v{i}"}) for i in range(3)]
    keyed.append((topic, {"key": "k0", "value": None}))
    assert_delivered(produce_all(producer, keyed))
    reports = produce_all(producer, [(topic, {"key": None, "value": b"no key"})])
    assert reports[0][0] is not None and reports[0][0].code() == KafkaError.INVALID_RECORD, (
        reports[0][0]
    )
    records = consume_to_end(module_broker, topic, [0])[0]
    assert [(r.key, r.value) for r in records] == [
        (b"k0", b"v0"),
        (b"k1", b"v1"),
        (b"k2", b"v2"),
        (b"k0", None),
    ]


@pytest.mark.parametrize("codec", ["none", "gzip"])
def test_list_offsets_by_time_earliest_latest_and_max(module_broker, codec):
    topic = unique_topic(f"times-{codec}")
    create_topic(module_broker, topic, partitions=1)
    producer = producer_client(module_broker, **{"linger.ms": 50, "compression.type": codec})
    base = (int(time.time() * 1000) // 1000 - 3600) * 1000
    stamps = [base + i * 1000 for i in range(10)]
    stamps[7] = base + 50_000  # the maximum sits in the middle of the log
    # Two batches of five, so lookups must look both across and inside batches (which are
    # compressed with gzip: the values compress well, so librdkafka does compress them).
    for chunk in (range(0, 5), range(5, 10)):
        msgs = [
            (topic, {"value": f"m{i}-" + "x" * 500, "partition": 0, "timestamp": stamps[i]})
            for i in chunk
        ]
        assert_delivered(produce_all(producer, msgs))

    consumer = consumer_client(module_broker)
    try:
        assert consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10) == (0, 10)
        cases = {
            base - 1: 0,
            base: 0,
            base + 4000: 4,
            base + 4500: 5,
            base + 7500: 7,  # the first offset whose timestamp is >= the target
            base + 50_000: 7,
            base + 50_001: -1,
        }
        for target, expected in cases.items():
            (found,) = consumer.offsets_for_times([TopicPartition(topic, 0, target)], timeout=10)
            assert found.error is None, found.error
            assert found.offset == expected, f"timestamp base+{target - base}: {found.offset}"
    finally:
        consumer.close()

    admin = admin_client(module_broker)
    tp = TopicPartition(topic, 0)

    def list_offset(spec):
        (future,) = admin.list_offsets({tp: spec}, request_timeout=30).values()
        return future.result(timeout=30)

    assert list_offset(OffsetSpec.earliest()).offset == 0
    assert list_offset(OffsetSpec.latest()).offset == 10
    assert list_offset(OffsetSpec.for_timestamp(base + 4500)).offset == 5
    newest = list_offset(OffsetSpec.max_timestamp())
    assert (newest.offset, newest.timestamp) == (7, base + 50_000)

    records = consume_to_end(module_broker, topic, [0])[0]
    assert [r.timestamp for r in records] == [(TIMESTAMP_CREATE_TIME, s) for s in stamps]


def test_long_poll_is_woken_by_new_data(module_broker):
    topic = unique_topic("longpoll")
    create_topic(module_broker, topic, partitions=1)
    producer = producer_client(module_broker)
    assert_delivered(produce_all(producer, [(topic, {"value": b"first", "partition": 0})]))

    consumer = consumer_client(module_broker, **{"fetch.wait.max.ms": 20000})
    try:
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])

        def poll_value():
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                return None
            return msg

        first = wait_until(poll_value, 30, "the first record")
        assert (first.offset(), first.value()) == (0, b"first")

        # Stay idle long enough for the consumer's next Fetch to be parked at the broker.
        # This wait is not synchronisation: if the Fetch were not yet parked, the test would
        # pass trivially, never fail wrongly.
        idle_until = time.monotonic() + 2
        while time.monotonic() < idle_until:
            msg = poll_value()
            assert msg is None, f"unexpected record at offset {msg.offset()}"

        sent_at = time.monotonic()
        assert_delivered(produce_all(producer, [(topic, {"value": b"second", "partition": 0})]))
        second = wait_until(poll_value, 30, "the second record")
        elapsed = time.monotonic() - sent_at
        assert (second.offset(), second.value()) == (1, b"second")
        assert elapsed < 10, (
            f"record arrived {elapsed:.1f}s after produce: the Fetch sat out fetch.wait.max.ms"
        )
    finally:
        consumer.close()


def test_out_of_range_offset_is_reset(module_broker):
    topic = unique_topic("reset")
    create_topic(module_broker, topic, partitions=1)
    producer = producer_client(module_broker)
    msgs = [(topic, {"value": f"r{i}".encode(), "partition": 0}) for i in range(10)]
    assert_delivered(produce_all(producer, msgs))

    # From the middle of a batch: the first record delivered is the one asked for.
    consumer = consumer_client(module_broker)
    try:
        consumer.assign([TopicPartition(topic, 0, 5)])
        msg = wait_until(lambda: consumer.poll(0.5), 30, "a record from offset 5")
        assert msg.error() is None, msg.error()
        assert (msg.offset(), msg.value()) == (5, b"r5")
    finally:
        consumer.close()

    # Past the end: the broker answers OFFSET_OUT_OF_RANGE, which a consumer with
    # auto.offset.reset=error reports instead of silently resetting.
    consumer = consumer_client(module_broker, **{"auto.offset.reset": "error"})
    try:
        consumer.assign([TopicPartition(topic, 0, 1000)])

        def reset_error():
            msg = consumer.poll(0.5)
            if msg is None:
                return None
            assert msg.error() is not None, f"record at offset {msg.offset()} from offset 1000"
            return msg.error()

        err = wait_until(reset_error, 30, "an offset reset error")
        assert err.code() == KafkaError._AUTO_OFFSET_RESET, err
        assert "out of range" in err.str().lower(), err
    finally:
        consumer.close()


def test_topics_data_and_configs_survive_graceful_restart(broker):
    topic = unique_topic("restart")
    admin = create_topic(broker, topic, partitions=2, config={"retention.ms": "1234567"})
    assert future_error(admin.create_partitions([NewPartitions(topic, 3)])[topic]) is None
    wait_until(lambda: topic_partition_count(admin, topic) == 3, 30, "3 partitions")
    producer = producer_client(broker)
    msgs = [(topic, {"value": f"s{i}".encode(), "partition": i % 3}) for i in range(30)]
    assert_delivered(produce_all(producer, msgs))

    broker.restart()

    admin = admin_client(broker)
    assert topic_partition_count(admin, topic) == 3
    entry = describe_topic_configs(admin, topic)["retention.ms"]
    assert (entry.value, source(entry)) == ("1234567", ConfigSource.DYNAMIC_TOPIC_CONFIG)
    records = consume_to_end(broker, topic, [0, 1, 2])
    for p in range(3):
        assert_contiguous(records[p])
        assert [r.value for r in records[p]] == [f"s{i}".encode() for i in range(p, 30, 3)]
    # Offsets continue where they were.
    reports = produce_all(producer_client(broker), [(topic, {"value": b"after", "partition": 0})])
    assert_delivered(reports)
    assert reports[0][2] == 10


# -- auto-creation ------------------------------------------------------------------------------


def test_produce_auto_creates_topic_with_default_partitions(module_broker):
    topic = unique_topic("auto")
    producer = producer_client(module_broker)
    reports = produce_all(producer, [(topic, {"value": b"hello"})])
    assert_delivered(reports)
    admin = admin_client(module_broker)
    assert topic_partition_count(admin, topic) == 3


def test_auto_create_disabled(start_broker):
    broker = start_broker(sets=["auto.create.topics.enable=false"])
    topic = unique_topic("noauto")
    admin = admin_client(broker)
    md = admin.list_topics(topic=topic, timeout=10)
    assert topic in md.topics
    assert md.topics[topic].error is not None
    assert md.topics[topic].error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART

    producer = producer_client(
        broker, **{"topic.metadata.propagation.max.ms": 1000, "message.timeout.ms": 15000}
    )
    reports = produce_all(producer, [(topic, {"value": b"nowhere"})])
    err = reports[0][0]
    assert err is not None, "produce to an unknown topic succeeded with auto-create off"
    assert err.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC), err
    assert topic not in admin.list_topics(timeout=10).topics

    # Explicit creation still works.
    create_topic(broker, topic, partitions=2)
    fresh = producer_client(broker)
    assert_delivered(produce_all(fresh, [(topic, {"value": b"now", "partition": 1})]))
