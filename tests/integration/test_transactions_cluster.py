"""Transactions across a three-node cluster (issue 13), with librdkafka (confluent-kafka).

`test_transactions.py` runs on one broker, where the transaction coordinator, the group
coordinator and every partition leader are the same process. Here they are not: the
coordinator of a transactional id is the leader of its `__transaction_state` partition, the
partitions a transaction writes are led by other nodes (markers travel as WriteTxnMarkers,
the KIP-890 verification as AddPartitionsToTxn between brokers), and the coordinator is
killed with kill -9 in the middle of a transaction, so a new one must take over from the
replicated `__transaction_state` and finish (or abort) what the old one started.
"""

import time

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

import wire
from cluster import BASE_SETS, Cluster, create_topics, try_metadata_of
from helpers import unique_topic, wait_until
from test_transactions import read_all, stable_end, txn_producer, values

WAIT_S = 60.0
PARTITIONS = 3
SETS = BASE_SETS + [
    # A few coordinator partitions, so that they spread over the nodes like the data does.
    "transaction.state.log.num.partitions=3",
    "offsets.topic.num.partitions=3",
    # A follower that stops fetching leaves the ISR after 4 s (Kafka's default is 30 s).
    "replica.lag.time.max.ms=4000",
]


@pytest.fixture
def cluster(tmp_path):
    nodes = []
    c = Cluster(tmp_path / "cluster", voters=3, sets=SETS, registry=nodes)
    c.start()
    yield c
    c.close()


def find_coordinator(bootstrap, key, key_type=1):
    """FindCoordinator v1 answered by the node at `bootstrap`: (error, node id)."""
    body = wire.string(key) + wire.i8(key_type)
    correlation, r = wire.roundtrip(bootstrap, wire.request(10, 1, 11, body))
    assert correlation == 11
    r.i32()  # throttle
    error = r.i16()
    r.string()  # error message
    node_id = r.i32()
    r.string()  # host
    r.i32()  # port
    r.assert_at_end("FindCoordinator v1 response")
    return error, node_id


def transaction_coordinator(bootstrap, tid, not_node=None):
    """The node coordinating `tid`, once a node answers one without error (and other than
    `not_node`: until a dead node is fenced, the survivors still name it)."""

    def ask():
        for b in bootstrap.split(","):
            try:
                error, node = find_coordinator(b, tid)
            except (OSError, AssertionError):
                continue
            if error == 0 and node != not_node:
                return node
        return None

    return wait_until(ask, WAIT_S, f"a coordinator for {tid}")


def replicated_topic(cluster, topic):
    """An RF=3, min.insync.replicas=2 topic with every ISR full; returns {partition: leader}."""
    b = cluster.bootstrap_all()
    create_topics(b, {topic: PARTITIONS}, replication_factor=3, config={"min.insync.replicas": "2"})
    return wait_full_isr(cluster, topic)


def wait_full_isr(cluster, topic, exclude=()):
    one = cluster.bootstrap_all(exclude=exclude).split(",")[0]

    def full():
        md = try_metadata_of(one)
        parts = md and md.topics.get(topic)
        if not parts or "error" in parts or len(parts) != PARTITIONS:
            return None
        if all(len(i.isr) == 3 - len(exclude) and i.leader >= 0 for i in parts.values()):
            return {p: i.leader for p, i in parts.items()}
        return None

    return wait_until(full, WAIT_S, f"{topic}: every ISR full")


def produce_round(p, topic, tag, per_partition=10):
    """Produces `per_partition` records to each partition; returns {partition: [values]}."""
    sent = {part: [] for part in range(PARTITIONS)}
    for i in range(per_partition):
        for part in range(PARTITIONS):
            v = f"{tag}-{part}-{i}".encode()
            p.produce(topic, key=b"k%d" % i, value=v, partition=part)
            sent[part].append(v)
    return sent


def commit(p, timeout=WAIT_S):
    """commit_transaction, retried while librdkafka calls the failure retriable (its documented
    contract for commit_transaction while a coordinator moves)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            p.commit_transaction(max(1.0, deadline - time.monotonic()))
            return
        except KafkaException as e:
            err = e.args[0]
            if not err.retriable() or time.monotonic() > deadline:
                raise
            time.sleep(0.2)  # back off before the retry (not a synchronisation)


def test_coordinator_and_partition_leaders_on_different_nodes(cluster):
    b = cluster.bootstrap_all()
    topic, source = unique_topic("txn-out"), unique_topic("txn-in")
    leaders = replicated_topic(cluster, topic)
    create_topics(b, {source: 1}, replication_factor=3)
    tid, group = unique_topic("tid"), unique_topic("g")

    p = txn_producer(b, tid)
    p.init_transactions(WAIT_S)
    coordinator = transaction_coordinator(b, tid)
    # Three partitions spread over three nodes: at least two are led by another node than
    # the coordinator, so their markers go over the network.
    remote = [part for part, leader in leaders.items() if leader != coordinator]
    assert len(remote) >= 2, (coordinator, leaders)

    # The group's offsets go through the transaction too (TxnOffsetCommit to the group
    # coordinator, wherever its `__consumer_offsets` partition is led).
    gc = Consumer({"bootstrap.servers": b, "group.id": group, "enable.auto.commit": False})
    try:
        committed = {part: [] for part in range(PARTITIONS)}
        everything = {part: [] for part in range(PARTITIONS)}
        for t, outcome in enumerate(["commit", "abort", "commit"]):
            p.begin_transaction()
            sent = produce_round(p, topic, f"t{t}")
            for part in range(PARTITIONS):
                everything[part] += sent[part]
            if outcome == "commit":
                p.send_offsets_to_transaction(
                    [TopicPartition(source, 0, 100 + t)], gc.consumer_group_metadata(), WAIT_S
                )
                commit(p)
                for part in range(PARTITIONS):
                    committed[part] += sent[part]
            else:
                p.flush(WAIT_S)  # the records are in the logs before the abort
                p.abort_transaction(WAIT_S)

        got = gc.committed([TopicPartition(source, 0)], timeout=WAIT_S)
        assert got[0].offset == 102, got
    finally:
        gc.close()

    parts = tuple(range(PARTITIONS))
    rc = read_all(b, topic, "read_committed", partitions=parts)
    ru = read_all(b, topic, "read_uncommitted", partitions=parts)
    for part in parts:
        assert values(rc[part]) == committed[part], part
        assert values(ru[part]) == everything[part], part
        # 10 records + 1 marker per transaction on every partition, on whichever node leads it.
        assert stable_end(b, topic, part) == (33, 33), part


def kill_the_coordinator_mid_transaction(cluster, name, tag, timeout_ms):
    """Opens a transaction on every partition of a new RF=3 topic (its records acknowledged),
    then kill -9 the transaction coordinator. Returns (topic, transactional id, producer, the
    killed node, {partition: values sent})."""
    b = cluster.bootstrap_all()
    topic = unique_topic(name)
    replicated_topic(cluster, topic)
    tid = unique_topic("tid")
    p = txn_producer(b, tid, **{"transaction.timeout.ms": timeout_ms})
    p.init_transactions(WAIT_S)
    coordinator = transaction_coordinator(b, tid)
    p.begin_transaction()
    sent = produce_round(p, topic, tag)
    p.flush(WAIT_S)  # acknowledged: in the logs, the transaction open on every partition
    cluster.kill9(coordinator)
    return topic, tid, p, coordinator, sent


def test_the_coordinator_killed_mid_transaction_is_replaced(cluster):
    b = cluster.bootstrap_all()
    topic, tid, p, coordinator, first = kill_the_coordinator_mid_transaction(
        cluster, "txn-failover", "before-kill", 60000
    )
    survivors = cluster.bootstrap_all(exclude=(coordinator,))
    # A survivor now leads the coordinator's `__transaction_state` partition, replays it and
    # commits the transaction the dead node had open.
    transaction_coordinator(survivors, tid, not_node=coordinator)
    second = produce_round(p, topic, "after-kill")
    commit(p)
    # The new coordinator serves the next transaction as well.
    p.begin_transaction()
    third = produce_round(p, topic, "next")
    commit(p)

    cluster.restart(coordinator)
    wait_full_isr(cluster, topic)
    parts = tuple(range(PARTITIONS))
    rc = read_all(b, topic, "read_committed", partitions=parts)
    ru = read_all(b, topic, "read_uncommitted", partitions=parts)
    for part in parts:
        expected = first[part] + second[part] + third[part]
        assert values(rc[part]) == expected, part
        assert values(ru[part]) == expected, part
        lso, high = stable_end(b, topic, part)
        assert lso == high, (part, lso, high)


def test_an_abandoned_transaction_is_aborted_by_the_new_coordinator(cluster):
    topic, _, zombie, coordinator, abandoned = kill_the_coordinator_mid_transaction(
        cluster, "txn-abandoned", "abandoned", 4000
    )
    survivors = cluster.bootstrap_all(exclude=(coordinator,))

    # Written after the abandoned transaction began: read_committed consumers see it only
    # once the new coordinator has aborted that transaction (its timeout is 4 s) and the
    # markers moved the last stable offsets.
    plain = Producer({"bootstrap.servers": survivors, "acks": "all", "enable.idempotence": True})
    for part in range(PARTITIONS):
        plain.produce(topic, value=b"after-%d" % part, partition=part)
    assert plain.flush(WAIT_S) == 0
    parts = tuple(range(PARTITIONS))

    def stable():
        return all(lso == high for lso, high in (stable_end(survivors, topic, q) for q in parts))

    wait_until(stable, WAIT_S, "the abandoned transaction to be aborted on every partition")
    rc = read_all(survivors, topic, "read_committed", partitions=parts)
    ru = read_all(survivors, topic, "read_uncommitted", partitions=parts)
    for part in parts:
        assert values(rc[part]) == [b"after-%d" % part], part
        assert values(ru[part]) == abandoned[part] + [b"after-%d" % part], part
    # The zombie producer is not used again: its epoch was bumped by the abort.
    del zombie
