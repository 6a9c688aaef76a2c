"""kafka-python (a pure-Python client with its own protocol code) against the real broker."""

import time

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka import errors as kerrors

from helpers import unique_topic, wait_until

TIMEOUT_MS = 30000


@pytest.fixture
def kadmin(module_broker):
    admin = KafkaAdminClient(
        bootstrap_servers=module_broker.bootstrap, request_timeout_ms=TIMEOUT_MS
    )
    yield admin
    admin.close()


def new_consumer(broker):
    # group_id=None: no group coordinator, no commits (consumer groups are not built yet).
    return KafkaConsumer(
        bootstrap_servers=broker.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        request_timeout_ms=TIMEOUT_MS + 5000,
    )


def consume(consumer, expected, timeout=30):
    """Polls until `expected` records have arrived; returns them in arrival order."""
    records = []
    deadline = time.monotonic() + timeout
    while len(records) < expected:
        assert time.monotonic() < deadline, (
            f"got {len(records)} of {expected} records in {timeout}s"
        )
        for batch in consumer.poll(timeout_ms=500).values():
            records.extend(batch)
    return records


def create(kadmin, topic, partitions):
    kadmin.create_topics({topic: {"num_partitions": partitions, "replication_factor": 1}})
    wait_until(lambda: topic in kadmin.list_topics(), 30, f"{topic} in the topic list")


def test_admin_create_list_describe_delete(module_broker, kadmin):
    topic = unique_topic("kp-admin")
    create(kadmin, topic, 3)
    (described,) = kadmin.describe_topics([topic])
    assert described["error_code"] == 0
    assert sorted(p["partition_index"] for p in described["partitions"]) == [0, 1, 2]

    with pytest.raises(kerrors.TopicAlreadyExistsError):
        kadmin.create_topics({topic: {"num_partitions": 3, "replication_factor": 1}})
    with pytest.raises(kerrors.InvalidReplicationFactorError):
        kadmin.create_topics(
            {unique_topic("kp-rf"): {"num_partitions": 1, "replication_factor": 3}}
        )

    cluster = kadmin.describe_cluster()
    assert cluster["cluster_id"], cluster
    assert len(cluster["brokers"]) == 1

    kadmin.delete_topics([topic])
    wait_until(lambda: topic not in kadmin.list_topics(), 30, f"{topic} gone from the list")


def test_produce_and_consume_with_offsets(module_broker, kadmin):
    topic = unique_topic("kp")
    create(kadmin, topic, 3)
    producer = KafkaProducer(
        bootstrap_servers=module_broker.bootstrap, acks="all", linger_ms=5, retries=5
    )
    try:
        assert producer.partitions_for(topic) == {0, 1, 2}
        n = 300
        futures = [
            producer.send(topic, key=f"key-{i % 11}".encode(), value=f"v{i}".encode())
            for i in range(n)
        ]
        producer.flush(timeout=30)
        metadata = [f.get(timeout=30) for f in futures]
    finally:
        producer.close(timeout=10)

    # Offsets per partition are 0, 1, 2, ... in send order, and each key has one partition.
    by_partition = {}
    key_partition = {}
    for i, md in enumerate(metadata):
        assert md.topic == topic
        by_partition.setdefault(md.partition, []).append((md.offset, f"v{i}".encode()))
        key = f"key-{i % 11}"
        assert key_partition.setdefault(key, md.partition) == md.partition
    for p, entries in by_partition.items():
        assert [o for o, _ in entries] == list(range(len(entries))), f"partition {p}"

    consumer = new_consumer(module_broker)
    try:
        assert consumer.partitions_for_topic(topic) == {0, 1, 2}
        partitions = [TopicPartition(topic, p) for p in range(3)]
        consumer.assign(partitions)
        consumer.seek_to_beginning()
        records = consume(consumer, n)
        # Nothing more than what was sent.
        assert not any(consumer.poll(timeout_ms=1000).values())
        ends = consumer.end_offsets(partitions)
        starts = consumer.beginning_offsets(partitions)
    finally:
        consumer.close()

    assert len(records) == n
    got = {}
    for r in records:
        got.setdefault(r.partition, []).append((r.offset, r.value))
        assert r.key.decode() == f"key-{int(r.value[1:]) % 11}"
    assert got == by_partition
    for tp in partitions:
        assert starts[tp] == 0
        assert ends[tp] == len(by_partition.get(tp.partition, []))


def test_gzip_and_timestamps(module_broker, kadmin):
    topic = unique_topic("kp-gzip")
    create(kadmin, topic, 1)
    base = (int(time.time()) - 600) * 1000
    producer = KafkaProducer(
        bootstrap_servers=module_broker.bootstrap, acks="all", compression_type="gzip"
    )
    try:
        futures = [
            producer.send(
                topic,
                value=f"gz{i}".encode() * 50,
                partition=0,
                timestamp_ms=base + i * 1000,
                headers=[("h", b"1"), ("h", b"2")],
            )
            for i in range(20)
        ]
        producer.flush(timeout=30)
        assert [f.get(timeout=30).offset for f in futures] == list(range(20))
    finally:
        producer.close(timeout=10)

    consumer = new_consumer(module_broker)
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        found = consumer.offsets_for_times({tp: base + 9500})
        assert found[tp] is not None and found[tp].offset == 10
        assert found[tp].timestamp == base + 10_000
        consumer.seek_to_beginning()
        records = consume(consumer, 20)
    finally:
        consumer.close()
    assert [r.offset for r in records] == list(range(20))
    assert [r.value for r in records] == [f"gz{i}".encode() * 50 for i in range(20)]
    assert [r.timestamp for r in records] == [base + i * 1000 for i in range(20)]
    assert all(list(r.headers) == [("h", b"1"), ("h", b"2")] for r in records)
