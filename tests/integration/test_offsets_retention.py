"""Time retention must never delete live committed offsets from `__consumer_offsets`.

The offsets topic is `cleanup.policy=compact`: its oldest segment may hold the only record of a
group that commits rarely. Kafka applies `retention.ms` only to topics whose policy includes
`delete`; so must Skein, or a restart after a week of quiet replays the topic without that
group's offsets and the group starts over from `auto.offset.reset`.
"""

import time

from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition

from helpers import (
    admin_client,
    consumer_client,
    create_topic,
    producer_client,
    unique_topic,
    wait_until,
)

RETENTION_MS = 2000
ROLL_MS = 1000
SETS = [
    f"log.retention.ms={RETENTION_MS}",
    f"log.roll.ms={ROLL_MS}",
    "log.retention.check.interval.ms=100",
    # Every group's records in one partition, so a later commit rolls the rare group's segment.
    "offsets.topic.num.partitions=1",
]


def commit(admin, group, topic, offset, metadata):
    request = ConsumerGroupTopicPartitions(
        group, [TopicPartition(topic, 0, offset, metadata=metadata)]
    )
    result = admin.alter_consumer_group_offsets([request])[group].result(timeout=30)
    assert [tp.error for tp in result.topic_partitions] == [None], result


def committed(admin, group):
    request = ConsumerGroupTopicPartitions(group)
    listed = admin.list_consumer_group_offsets([request])[group].result(timeout=30)
    return {(tp.topic, tp.partition): (tp.offset, tp.metadata) for tp in listed.topic_partitions}


def low_watermark(broker, topic):
    probe = consumer_client(broker)
    try:
        return probe.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[0]
    finally:
        probe.close()


def test_rarely_committing_group_keeps_its_offsets_through_retention_and_restart(start_broker):
    broker = start_broker(sets=SETS)
    topic = unique_topic("orders")
    canary = unique_topic("canary")
    create_topic(broker, topic, partitions=1)
    create_topic(broker, canary, partitions=1)
    admin = admin_client(broker)

    rare, busy = unique_topic("g-rare"), unique_topic("g-busy")
    commit(admin, rare, topic, 5, "rare")
    committed_at = time.time()

    producer = producer_client(broker)
    producer.produce(canary, value=b"old", partition=0)
    assert producer.flush(30) == 0

    # Once the rare group's record is older than segment.ms, the next commit (another group's)
    # rolls the offsets partition: the rare record is alone in an old, inactive segment.
    wait_until(
        lambda: time.time() > committed_at + (ROLL_MS + 200) / 1000,
        10,
        "the first offsets segment to be older than segment.ms",
    )
    commit(admin, busy, topic, 1, "busy")
    producer.produce(canary, value=b"new", partition=0)
    assert producer.flush(30) == 0

    # Retention has run past the rare record's age: the canary topic (policy delete, the same
    # retention.ms, a segment written after the rare commit) lost its first segment.
    wait_until(lambda: low_watermark(broker, canary) == 1, 30, "retention to trim the canary")
    assert low_watermark(broker, "__consumer_offsets") == 0, (
        "retention deleted a segment of the compacted offsets topic"
    )
    assert committed(admin, rare) == {(topic, 0): (5, "rare")}

    # A restart replays __consumer_offsets from disk: the rare group's offsets are still there.
    broker.restart()
    admin = admin_client(broker)
    assert committed(admin, rare) == {(topic, 0): (5, "rare")}
    assert committed(admin, busy) == {(topic, 0): (1, "busy")}
