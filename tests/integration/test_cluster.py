"""Cluster mode (issue 11) against real processes: three voters (and a broker-only node) on
loopback, each a separate `skein serve`, observed through librdkafka (confluent-kafka),
kafka-python, the `skein cluster` CLI and raw Metadata requests answered by one chosen node.
One test per line of the issue's "Done means" list:

- three voters form a quorum and spread a topic's leaders; both clients produce and consume
  across the nodes;
- kill -9 of the active controller: re-election, topic creation through a survivor, the
  restarted node catches up and serves again;
- a frozen broker (SIGSTOP) is fenced after the session timeout and its partitions reported
  offline; SIGCONT brings it back;
- SIGTERM is a controlled shutdown;
- a broker-only node joins and leads partitions of new topics;
- consumer groups of both protocols with coordinators on different nodes;

and beyond that list: admin requests without a quorum answered within their timeout,
CreatePartitions with manual replica assignments, and a waiting JoinGroup answered
NOT_COORDINATOR when its coordinator moves.

Every topic here has replication factor 1 (replication is issue 12), so a partition whose only
replica is down has no leader: the tests assert that, and that the other nodes keep serving.
Each test starts its own cluster (temp directories, ephemeral ports); the nodes are fenced
after 3 s of silence (`broker.session.timeout.ms`), and every wait has a deadline.
"""

import itertools
from concurrent.futures import ThreadPoolExecutor
import shutil
import time
import urllib.request
from collections import Counter

import confluent_kafka
import pytest
import wire
from confluent_kafka import Consumer, ConsumerGroupState, ConsumerGroupType, ElectionType, KafkaError, Producer, TopicPartition
from confluent_kafka import ConsumerGroupTopicPartitions
from confluent_kafka.admin import AdminClient, NewPartitions
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KpTopicPartition

from cluster import (
    metadata_of,
    BASE_SETS,
    HEARTBEAT_INTERVAL_MS,
    SESSION_TIMEOUT_MS,
    Cluster,
    brokers_by_id,
    cli_json,
    cluster_info,
    create_topics,
    leaders_of,
    offsets_partition,
    skein_cli,
    try_metadata_of,
)
from helpers import (
    future_error,
    assert_contiguous,
    assert_delivered,
    consume_to_end,
    produce_all,
    unique_topic,
    wait_until,
)

WAIT_S = 60.0
TIMEOUT_MS = 30000
LEADER_NOT_AVAILABLE = 5
NOT_LEADER_OR_FOLLOWER = 6


# -- fixtures ------------------------------------------------------------------------------------


def merged_sets(*lists):
    """`key=value` settings, later lists overriding earlier ones key by key."""
    merged = {}
    for kv in itertools.chain(*lists):
        key, value = kv.split("=", 1)
        merged[key] = value
    return [f"{k}={v}" for k, v in merged.items()]


@pytest.fixture
def start_cluster(tmp_path):
    """Factory: start_cluster(voters=3, sets=[...], racks={id: rack}) -> a started Cluster."""
    nodes = []  # every Node created: conftest's report hook attaches their logs to a failure
    clusters = []

    def start(voters=3, sets=(), racks=None):
        c = Cluster(
            tmp_path / f"cluster{len(clusters)}",
            voters=voters,
            sets=merged_sets(BASE_SETS, sets),
            racks=racks,
            registry=nodes,
        )
        clusters.append(c)
        return c.start()

    yield start
    errors = []
    for c in clusters:
        try:
            c.close()
        except BaseException as exc:  # keep closing the others, then report
            errors.append(exc)
    if errors:
        raise errors[0]


@pytest.fixture
def cluster(start_cluster):
    """Three voters (node ids 1, 2, 3) with the default test settings."""
    return start_cluster()


# -- observing the cluster ------------------------------------------------------------------------


class Seen:
    """What a waited-for condition last observed, for the message when the wait times out."""

    def __init__(self):
        self.last = None

    def __call__(self, value):
        self.last = value
        return value


def wait_observing(cond, timeout, what, interval=0.2):
    """wait_until(lambda: cond(seen)), adding the last thing `cond` passed to `seen` to the
    timeout's message."""
    seen = Seen()
    try:
        return wait_until(lambda: cond(seen), timeout, what, interval=interval)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last seen: {seen.last!r}") from None


def settled_info(cluster, via, expected_brokers=None, seen=lambda v: v):
    """`skein cluster info` through node `via` once DescribeQuorum names a leader among the
    voters and every expected broker (default: every running node) is listed unfenced;
    None before."""
    info = seen(cluster_info(cluster[via].bootstrap))
    if info is None:
        return None
    seen({"quorum": info["quorum"], "brokers": info["brokers"]})
    q = info["quorum"]
    if not q.get("available") or q.get("leader_id") not in cluster.voter_ids:
        return None
    if sorted(v["id"] for v in q["voters"]) != cluster.voter_ids:
        return None
    expected = sorted(expected_brokers or [n.node_id for n in cluster.running()])
    if sorted((b["id"], b["fenced"]) for b in info["brokers"]) != [(i, False) for i in expected]:
        return None
    return info


def wait_settled(cluster, via=1, expected_brokers=None):
    return wait_observing(
        lambda seen: settled_info(cluster, via, expected_brokers, seen),
        WAIT_S,
        f"a quorum leader and every broker unfenced, as node {via} reports them",
        interval=0.2,
    )


def wait_agreed_leaders(cluster, topics, nodes=None, allow_offline=False):
    """Waits until every node in `nodes` (default: every running node) answers Metadata with
    the same leader of every partition of `topics` ({name: partition count}), all of them
    led unless `allow_offline`; returns {topic: {partition: leader}}."""

    def agreed(seen):
        views = {}
        for n in nodes or cluster.running():
            md = try_metadata_of(n.bootstrap)
            views[n.node_id] = None if md is None else {t: leaders_of(md, t) for t in topics}
        seen(views)
        for view in views.values():
            if view is None:
                return None
            for topic, count in topics.items():
                leaders = view[topic]
                if leaders is None or sorted(leaders) != list(range(count)):
                    return None
                if not allow_offline and min(leaders.values()) < 0:
                    return None
        first = next(iter(views.values()))
        return first if all(v == first for v in views.values()) else None

    return wait_observing(
        agreed, WAIT_S, f"every node to agree on the leaders of {sorted(topics)}"
    )


def wait_dropped(cluster, victim, survivors, topic, leaders, timeout, what):
    """Waits until every survivor answers Metadata without `victim` among the brokers and with
    no leader for the partitions of `topic` it led (RF 1: no other replica to move to), the
    others keeping their leaders (`leaders`: {partition: leader} before)."""
    want = {p: (-1 if l == victim else l) for p, l in leaders.items()}

    def dropped(seen):
        views = {}
        for i in survivors:
            md = try_metadata_of(cluster[i].bootstrap)
            views[i] = None if md is None else (sorted(md.brokers), leaders_of(md, topic))
        seen(views)
        return all(v == (sorted(survivors), want) for v in views.values())

    wait_observing(dropped, timeout, what, interval=0.1)


def kafka_python_view(bootstrap, topic):
    """({broker id: (host, port, rack)}, {partition: leader}) as kafka-python's admin sees them."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=TIMEOUT_MS)
    try:
        brokers = {
            b["broker_id"]: (b["host"], b["port"], b["rack"])
            for b in admin.describe_cluster()["brokers"]
        }
        (described,) = admin.describe_topics([topic])
        assert described["error_code"] == 0, described
        leaders = {p["partition_index"]: p["leader_id"] for p in described["partitions"]}
    finally:
        admin.close()
    return brokers, leaders


def confluent_view(bootstrap, topic):
    """({broker id: (host, port)}, {partition: (leader, replicas, isrs)}) from librdkafka's
    Metadata, bootstrapped on `bootstrap` only."""
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=20)
    brokers = {b.id: (b.host, b.port) for b in md.brokers.values()}
    t = md.topics[topic]
    assert t.error is None, t.error
    return brokers, {p.id: (p.leader, list(p.replicas), list(p.isrs)) for p in t.partitions.values()}


# -- producing and reading back ---------------------------------------------------------------------


def produce_confluent(bootstrap, topic, partitions, per_partition, tag, idempotent=True):
    """Keyed records, `per_partition` to each partition, through a librdkafka producer
    bootstrapped on `bootstrap` only. Returns {partition: [(offset, key, value), ...]} in
    produce order, after asserting that order is offset order."""
    producer = Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": idempotent, "acks": "all"}
    )
    messages = []
    for i in range(per_partition):
        for p in partitions:
            key = f"{tag}-key-{p}-{i % 3}".encode()
            messages.append((topic, {"key": key, "value": f"{tag}-{p}-{i}".encode(), "partition": p}))
    reports = produce_all(producer, messages)
    assert_delivered(reports)
    written = {p: [] for p in partitions}
    for (_, kwargs), (_, partition, offset, value) in zip(messages, reports):
        assert partition == kwargs["partition"] and value == kwargs["value"]
        written[partition].append((offset, kwargs["key"], value))
    for p, rows in written.items():
        offsets = [o for o, _, _ in rows]
        assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets), (
            f"partition {p}: acknowledged offsets out of produce order: {offsets}"
        )
    return written


def produce_kafka_python(bootstrap, topic, partitions, per_partition, tag):
    """The same through kafka-python (one request in flight, so acknowledged in order)."""
    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        retries=5,
        max_in_flight_requests_per_connection=1,
        request_timeout_ms=TIMEOUT_MS,
    )
    written = {p: [] for p in partitions}
    try:
        futures = []
        for i in range(per_partition):
            for p in partitions:
                key = f"{tag}-key-{p}-{i % 3}".encode()
                value = f"{tag}-{p}-{i}".encode()
                futures.append((p, key, value, producer.send(topic, key=key, value=value, partition=p)))
        producer.flush(timeout=30)
        for p, key, value, future in futures:
            meta = future.get(timeout=30)
            assert meta.partition == p
            written[p].append((meta.offset, key, value))
    finally:
        producer.close(timeout=10)
    for p, rows in written.items():
        offsets = [o for o, _, _ in rows]
        assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets), (
            f"partition {p}: kafka-python acknowledged offsets out of order: {offsets}"
        )
    return written


def merge_written(*writes):
    """{partition: [(offset, key, value)]} of several producers, in offset order."""
    merged = {}
    for w in writes:
        for p, rows in w.items():
            merged.setdefault(p, []).extend(rows)
    return {p: sorted(rows) for p, rows in merged.items()}


def read_confluent(node, topic, partitions):
    """{partition: [(offset, key, value)]} read from the start to the high watermark by a
    librdkafka consumer bootstrapped on `node` only."""
    records = consume_to_end(node, topic, list(partitions), timeout=WAIT_S)
    for p, rs in records.items():
        assert_contiguous(rs)
    return {p: [(r.offset, r.key, r.value) for r in rs] for p, rs in records.items()}


def read_kafka_python(bootstrap, topic, partitions, timeout=WAIT_S):
    """The same through kafka-python (assign, seek to the beginning, read to the end offsets)."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        request_timeout_ms=TIMEOUT_MS + 5000,
    )
    try:
        tps = [KpTopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        records = {p: [] for p in partitions}

        def done():
            return all(
                (records[tp.partition][-1][0] + 1 if records[tp.partition] else 0) >= ends[tp]
                for tp in tps
            )

        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, (
                f"kafka-python read {({p: len(r) for p, r in records.items()})} of {ends} in {timeout}s"
            )
            for tp, batch in consumer.poll(timeout_ms=500).items():
                records[tp.partition].extend((m.offset, m.key, m.value) for m in batch)
    finally:
        consumer.close()
    return records


def assert_read_back(read, written, who):
    for p, rows in written.items():
        assert read[p] == rows, (
            f"{who}, partition {p}: read {len(read[p])} records, wrote {len(rows)}; "
            f"first difference at "
            f"{next((i for i, (a, b) in enumerate(zip(read[p], rows)) if a != b), min(len(read[p]), len(rows)))}"
        )


# -- 1. three voters, leaders spread, both clients across the nodes ---------------------------


def test_three_voters_spread_leaders_and_both_clients_work_across_nodes(cluster):
    info = wait_settled(cluster, via=1)
    q = info["quorum"]
    assert [v["id"] for v in q["voters"]] == [1, 2, 3]
    assert q["observers"] == []  # every node is a voter
    assert q["leader_id"] in (1, 2, 3) and q["leader_epoch"] >= 1
    # Each voter is known by its own controller listener.
    controllers = {c["id"]: c["endpoints"] for c in q["controllers"]}
    for i in (1, 2, 3):
        assert any(
            e.endswith(f"127.0.0.1:{cluster[i].controller_port}") for e in controllers.get(i, [])
        ), (
            f"voter {i}: endpoints {controllers.get(i)}, controller port {cluster[i].controller_port}"
        )
    # Every voter catches up with the quorum's high watermark.
    wait_until(
        lambda: (i := cluster_info(cluster[2].bootstrap))
        and i["quorum"].get("available")
        and all(v["lag"] == 0 for v in i["quorum"]["voters"]),
        WAIT_S,
        "every voter's lag to reach 0",
        interval=0.2,
    )
    assert {b["id"]: (b["host"], b["port"]) for b in info["brokers"]} == {
        i: ("127.0.0.1", cluster[i].port) for i in (1, 2, 3)
    }

    topic = unique_topic("spread")
    create_topics(cluster[2].bootstrap, {topic: 6})  # through node 2 only
    leaders = wait_agreed_leaders(cluster, {topic: 6})[topic]
    # Leaders on all three nodes, balanced: 6 partitions, 2 each.
    assert Counter(leaders.values()) == {1: 2, 2: 2, 3: 2}, leaders

    # Every node answers Metadata itself: three brokers at their ports, RF 1.
    for n in cluster.running():
        md = try_metadata_of(n.bootstrap)
        assert {i: (h, p) for i, (h, p, _) in md.brokers.items()} == {
            i: ("127.0.0.1", cluster[i].port) for i in (1, 2, 3)
        }, f"node {n.node_id}: {md.brokers}"
        assert md.controller_id in (1, 2, 3)  # KIP-590: any live broker
        for p, pi in md.topics[topic].items():
            assert (pi.error, pi.replicas, pi.isr) == (0, [leaders[p]], [leaders[p]]), (n.node_id, p, pi)

    # librdkafka's view, bootstrapped on one node at a time.
    for i in (1, 3):
        brokers, parts = confluent_view(cluster[i].bootstrap, topic)
        assert brokers == {j: ("127.0.0.1", cluster[j].port) for j in (1, 2, 3)}
        assert parts == {p: (leaders[p], [leaders[p]], [leaders[p]]) for p in range(6)}
    # A produce to a node that does not lead the partition: NOT_LEADER_OR_FOLLOWER with the
    # current leader and its endpoint (KIP-951), so clients re-route at once.
    p = 0
    elsewhere = next(i for i in (1, 2, 3) if i != leaders[p])
    error, hint, endpoints = produce_v10_to(cluster[elsewhere].bootstrap, topic, p, [b"misrouted"])
    assert error == NOT_LEADER_OR_FOLLOWER, error
    assert hint is not None and hint[0] == leaders[p], hint
    assert endpoints == {leaders[p]: ("127.0.0.1", cluster[leaders[p]].port)}, endpoints
    # kafka-python's view.
    brokers, kp_leaders = kafka_python_view(cluster[3].bootstrap, topic)
    assert brokers == {j: ("127.0.0.1", cluster[j].port, None) for j in (1, 2, 3)}
    assert kp_leaders == leaders
    consumer = KafkaConsumer(bootstrap_servers=cluster[1].bootstrap, group_id=None)
    try:
        assert consumer.partitions_for_topic(topic) == set(range(6))
    finally:
        consumer.close()

    # Producers bootstrapped on one node each write to every partition (so to all three
    # nodes); consumers bootstrapped on the third read everything back.
    partitions = list(range(6))
    by_confluent = produce_confluent(cluster[1].bootstrap, topic, partitions, 20, "ck")
    by_kafka_python = produce_kafka_python(cluster[2].bootstrap, topic, partitions, 20, "kp")
    written = merge_written(by_confluent, by_kafka_python)
    for p in partitions:
        assert [o for o, _, _ in written[p]] == list(range(40)), f"partition {p}: offsets {written[p]}"
    assert_read_back(read_confluent(cluster[3], topic, partitions), written, "confluent-kafka via node 3")
    assert_read_back(
        read_kafka_python(cluster[3].bootstrap, topic, partitions), written, "kafka-python via node 3"
    )


# -- 2. kill -9 of the active controller ------------------------------------------------------


def test_kill9_of_the_active_controller(start_cluster):
    # A snapshot every 8 metadata entries (and the log dropped below it): the restarted node
    # is so far behind that it can only catch up from the leader's snapshot.
    cluster = start_cluster(sets=["skein.metadata.snapshot.entries=8"])
    info = wait_settled(cluster, via=1)
    old = info["quorum"]["leader_id"]
    old_epoch = info["quorum"]["leader_epoch"]
    survivors = [i for i in (1, 2, 3) if i != old]

    before = unique_topic("before")
    create_topics(cluster[survivors[0]].bootstrap, {before: 6})
    leaders_before = wait_agreed_leaders(cluster, {before: 6})[before]
    led_by_old = sorted(p for p, l in leaders_before.items() if l == old)
    assert led_by_old, f"the controller {old} leads none of {leaders_before}"
    written_before = produce_confluent(cluster.bootstrap_all(), before, list(range(6)), 10, "b")

    killed_at = time.monotonic()
    cluster.kill9(old)

    def new_controller(seen):
        for i in survivors:
            info = cluster_info(cluster[i].bootstrap)
            seen({i: info and info["quorum"]})
            if info and info["quorum"].get("available"):
                leader = info["quorum"]["leader_id"]
                if leader is not None and leader != old:
                    return info
        return None

    info = wait_observing(new_controller, WAIT_S, f"a new controller after killing {old}")
    new = info["quorum"]["leader_id"]
    assert new in survivors
    assert info["quorum"]["leader_epoch"] > old_epoch
    elected_after = time.monotonic() - killed_at

    # Topic creation through a survivor, retried on NOT_CONTROLLER / REQUEST_TIMED_OUT.
    after = unique_topic("after")
    took = create_topics(cluster[survivors[1]].bootstrap, {after: 6}, timeout=WAIT_S)
    print(f"controller {old} killed: {new} elected after {elected_after:.1f}s, topic created in {took:.1f}s")

    # Enough metadata changes while the node is down that it has to catch up from a snapshot
    # (the survivors snapshot every 8 entries and drop the log below).
    many = {unique_topic(f"down{i}"): 2 for i in range(30)}
    for k, topic in enumerate(many):
        create_topics(cluster[survivors[k % 2]].bootstrap, {topic: 2}, timeout=WAIT_S)
    everything = {before: 6, after: 6, **many}
    wait_agreed_leaders(cluster, everything, nodes=[cluster[i] for i in survivors], allow_offline=True)

    # Restarted, it registers, catches up and is unfenced (its start line says so).
    log_before_restart = len(cluster[old].log())
    cluster.restart(old)
    assert "installed a snapshot from the leader" in cluster[old].log()[log_before_restart:], (
        f"node {old} caught up without the leader's snapshot\n{cluster[old].log()[-3000:]}"
    )
    view = wait_agreed_leaders(cluster, everything)  # in its own Metadata too, every partition led
    md = try_metadata_of(cluster[old].bootstrap)
    assert sorted(md.brokers) == [1, 2, 3]
    assert {t for t in md.topics if not t.startswith("__")} >= set(everything)
    # RF 1: its partitions had no other replica, so it leads them again.
    assert view[before] == leaders_before
    wait_until(
        lambda: (i := cluster_info(cluster[survivors[0]].bootstrap))
        and i["quorum"].get("available")
        and {v["id"]: v["lag"] for v in i["quorum"]["voters"]}.get(old) == 0,
        WAIT_S,
        f"voter {old} to catch up with the metadata log (lag 0)",
        interval=0.2,
    )

    # It serves again: the partitions it leads keep their records and take new ones,
    # produced and read through it alone.
    mine = {t: sorted(p for p, l in view[t].items() if l == old) for t in (before, after)}
    more = produce_confluent(cluster[old].bootstrap, before, mine[before], 5, "again")
    expected = {p: written_before[p] + more[p] for p in mine[before]}
    for p in mine[before]:
        assert [o for o, _, _ in expected[p]] == list(range(15))
    assert_read_back(read_confluent(cluster[old], before, mine[before]), expected, f"node {old}")
    if mine[after]:
        fresh = produce_confluent(cluster[old].bootstrap, after, mine[after], 5, "fresh")
        assert_read_back(read_confluent(cluster[old], after, mine[after]), fresh, f"node {old}")


def compact_array(items):
    return wire.uvarint(len(items) + 1) + b"".join(items)


def produce_v10_to(bootstrap, topic, partition, values):
    """A raw Produce v10 (flexible) of one partition, answered by the node at `bootstrap`:
    (error_code, current_leader (id, epoch) or None, {node_id: (host, port)}) with KIP-951's
    tagged fields decoded."""
    batch = wire.record_batch(values)
    body = wire.uvarint(0)  # transactional_id: null (compact)
    body += wire.i16(-1) + wire.i32(10000)
    part = wire.i32(partition) + wire.uvarint(len(batch) + 1) + batch + wire.EMPTY_TAGGED_FIELDS
    body += compact_array([wire.compact_string(topic) + compact_array([part]) + wire.EMPTY_TAGGED_FIELDS])
    body += wire.EMPTY_TAGGED_FIELDS
    frame = wire.request(0, 10, 41, body, flexible=True)
    correlation, r = wire.roundtrip(bootstrap, frame, 10.0)
    assert correlation == 41
    r.tagged_fields()  # response header v1
    result = None
    for _ in range(r.uvarint() - 1):
        r.compact_string()
        for _ in range(r.uvarint() - 1):
            r.i32()
            error = r.i16()
            r.i64(), r.i64(), r.i64()
            for _ in range(r.uvarint() - 1):
                r.i32(), r.compact_string(), r.tagged_fields()
            r.compact_string()
            tags = r.tagged_fields()
            leader = None
            if 0 in tags:
                t = wire.Reader(tags[0])
                leader = (t.i32(), t.i32())
            result = (error, leader)
        r.tagged_fields()
    r.i32()
    endpoints = {}
    tags = r.tagged_fields()
    if 0 in tags:
        t = wire.Reader(tags[0])
        for _ in range(t.uvarint() - 1):
            node_id, host, port = t.i32(), t.compact_string(), t.i32()
            t.compact_string()
            t.tagged_fields()
            endpoints[node_id] = (host, port)
    return result[0], result[1], endpoints


def scrape_metrics(http):
    """The unlabelled samples of a node's /metrics, by name."""
    with urllib.request.urlopen(f"http://{http}/metrics", timeout=10) as r:
        text = r.read().decode()
    samples = {}
    for line in text.splitlines():
        if line.startswith("#") or "{" in line or " " not in line:
            continue
        name, value = line.split(" ", 1)
        samples[name] = float(value)
    return samples


# -- 3. a frozen broker is fenced; its partitions are reported offline -------------------------


def non_controller(info):
    """The highest voter id that is not the active controller (so that freezing or stopping it
    does not also start an election)."""
    return max(v["id"] for v in info["quorum"]["voters"] if v["id"] != info["quorum"]["leader_id"])


def test_a_broker_that_stops_heartbeating_is_fenced_and_reported(cluster):
    info = wait_settled(cluster, via=1)
    victim = non_controller(info)
    survivors = [i for i in (1, 2, 3) if i != victim]
    # Upper case sorts before "__consumer_offsets", whose partitions on the victim go offline
    # too: `health` names the first ten offline partitions in name order, ours among them.
    topic = unique_topic("Fence")
    create_topics(cluster[survivors[0]].bootstrap, {topic: 6})
    leaders = wait_agreed_leaders(cluster, {topic: 6})[topic]
    victim_parts = sorted(p for p, l in leaders.items() if l == victim)
    assert victim_parts, f"node {victim} leads none of {leaders}"
    health = wait_until(
        lambda: (h := cli_json("cluster", "health", bootstrap=cluster[survivors[0]].bootstrap))[0] == 0
        and h,
        WAIT_S,
        "a healthy cluster before the freeze",
        interval=0.2,
    )
    assert health[1]["status"] == "healthy", health[1]

    frozen_at = time.monotonic()
    cluster.sigstop(victim)
    via = cluster[survivors[0]].bootstrap

    def fenced(seen):
        info = cluster_info(via)
        seen(info and info["brokers"])
        if info and brokers_by_id(info).get(victim, {}).get("fenced") is True:
            return info
        return None

    info = wait_observing(fenced, WAIT_S, f"node {victim} to be reported fenced", interval=0.1)
    fenced_after = time.monotonic() - frozen_at
    # Fenced by the session timeout, not earlier: its last heartbeat was at most one interval
    # before the freeze (0.5 s slack for the clocks).
    floor = (SESSION_TIMEOUT_MS - HEARTBEAT_INTERVAL_MS) / 1000 - 0.5
    assert fenced_after >= floor, f"fenced {fenced_after:.1f}s after SIGSTOP, before the session timeout"
    assert {b["id"]: b["fenced"] for b in info["brokers"]} == {
        i: i == victim for i in (1, 2, 3)
    }, info["brokers"]

    # The survivors' Metadata no longer lists it, and its partitions have no leader (RF 1: no
    # other replica to move to); the others keep theirs.
    wait_dropped(cluster, victim, survivors, topic, leaders, WAIT_S, f"the survivors to drop node {victim}")
    for i in survivors:
        md = try_metadata_of(cluster[i].bootstrap)
        for p in victim_parts:
            assert md.topics[topic][p].error == LEADER_NOT_AVAILABLE, (i, p, md.topics[topic][p])
    brokers, parts = confluent_view(cluster[survivors[1]].bootstrap, topic)
    assert sorted(brokers) == survivors
    assert {p: l for p, (l, _, _) in parts.items()} == {
        p: (-1 if p in victim_parts else leaders[p]) for p in range(6)
    }

    # `skein cluster` reports them offline, and health exits 1 naming them.
    offline = {(o["topic"], o["partition"]) for o in cluster_info(via)["offline_partitions"]}
    assert {(topic, p) for p in victim_parts} <= offline
    rc, health, proc = cli_json("cluster", "health", bootstrap=via)
    assert rc == 1, proc
    assert health["status"] == "unhealthy" and health["exit_code"] == 1
    listed = {(o["topic"], o["partition"]): o for o in health["offline_partitions"]}
    for p in victim_parts:
        assert listed[(topic, p)]["leader"] is None and listed[(topic, p)]["replicas"] == [victim]
    # Everything offline is the victim's (the other nodes' partitions all have a leader).
    assert all(o["replicas"] == [victim] for o in listed.values()), listed
    assert health["brokers"]["fenced"] == 1
    assert any("offline" in line for line in health["problems"]), health["problems"]
    assert any(f"fenced broker(s): {victim}" in line for line in health["problems"]), health["problems"]
    text = skein_cli("cluster", "health", bootstrap=via)
    assert text.returncode == 1 and text.stdout.startswith("status      unhealthy\n"), text
    offline_line = next(l for l in text.stdout.splitlines() if "offline:" in l)
    assert offline_line.startswith("problem: ") and all(
        f"{topic}-{p}" in offline_line for p in victim_parts
    ), text.stdout
    assert f"problem: fenced broker(s): {victim}" in text.stdout, text.stdout

    # /metrics of a survivor says the same: one fenced broker, the victim's partitions
    # offline, the active controller known.
    metrics = scrape_metrics(cluster[survivors[0]].http)
    assert metrics["skein_cluster_fenced_brokers"] == 1, metrics
    assert metrics["skein_cluster_live_brokers"] == 2, metrics
    assert metrics["skein_cluster_offline_partitions"] >= len(victim_parts), metrics
    assert metrics["skein_cluster_active_controller"] == info["quorum"]["leader_id"], metrics
    assert metrics["skein_cluster_metadata_offset"] > 0, metrics

    # Thawed, it heartbeats again, is unfenced, and leads its partitions again.
    cluster.sigcont(victim)
    wait_until(
        lambda: (h := cli_json("cluster", "health", bootstrap=via))[0] == 0
        and h[1]["offline_partitions"] == []
        and h[1]["brokers"]["fenced"] == 0,
        WAIT_S,
        f"node {victim} unfenced and the cluster healthy again",
        interval=0.2,
    )
    assert wait_agreed_leaders(cluster, {topic: 6})[topic] == leaders
    cluster[victim].assert_alive()
    back = produce_confluent(cluster[victim].bootstrap, topic, victim_parts, 3, "thawed")
    assert_read_back(read_confluent(cluster[victim], topic, victim_parts), back, f"node {victim}")


# -- 4. controlled shutdown ---------------------------------------------------------------------

# Far longer than any wait below: a broker that disappears from the survivors' Metadata
# within those waits was fenced by its controlled shutdown, not by silence.
LONG_SESSION_MS = 60000


def test_sigterm_is_a_controlled_shutdown(start_cluster):
    cluster = start_cluster(sets=[f"broker.session.timeout.ms={LONG_SESSION_MS}"])
    info = wait_settled(cluster, via=1)
    victim = non_controller(info)
    survivors = [i for i in (1, 2, 3) if i != victim]
    topic = unique_topic("shutdown")
    create_topics(cluster[survivors[0]].bootstrap, {topic: 6})
    leaders = wait_agreed_leaders(cluster, {topic: 6})[topic]
    victim_parts = sorted(p for p, l in leaders.items() if l == victim)
    kept = sorted(p for p in range(6) if p not in victim_parts)
    assert victim_parts and kept, leaders
    written = produce_confluent(cluster.bootstrap_all(), topic, list(range(6)), 10, "pre")
    # A replicated topic: its partitions led by the victim move to another replica.
    replicated = unique_topic("shutdown-rf3")
    create_topics(cluster[survivors[0]].bootstrap, {replicated: 6}, replication_factor=3)
    def in_sync(seen):
        md = seen(try_metadata_of(cluster[survivors[0]].bootstrap))
        parts = md.topics.get(replicated) if md else None
        return (
            parts and "error" not in parts and len(parts) == 6
            and all(len(i.isr) == 3 for i in parts.values())
        )

    wait_observing(in_sync, WAIT_S, "every replica of the replicated topic in its ISR")
    written_rf3 = produce_confluent(cluster.bootstrap_all(), replicated, list(range(6)), 10, "pre")

    stopping = time.monotonic()
    cluster.stop(victim)  # SIGTERM: exit 0 within the stop timeout, or the test fails
    took = time.monotonic() - stopping

    # Well inside its 60 s session, every partition of the replicated topic has a leader
    # among the survivors and the victim left its ISRs: the controlled shutdown moved them.
    def moved(seen):
        md = seen(try_metadata_of(cluster[survivors[0]].bootstrap))
        parts = md.topics.get(replicated) if md else None
        return parts and "error" not in parts and all(
            i.leader in survivors and victim not in i.isr for i in parts.values()
        )

    wait_observing(moved, 15, f"the replicated topic's leaderships moved off node {victim} (exited in {took:.1f}s)")

    # The survivors stop listing it well inside its 60 s session: the controller fenced it
    # as part of the controlled shutdown. The RF 1 topic's partitions it led have no other
    # replica, so they are reported offline.
    wait_dropped(
        cluster, victim, survivors, topic, leaders, 15,
        f"the survivors to drop node {victim} after its controlled shutdown (exited in {took:.1f}s)",
    )
    info = cluster_info(cluster[survivors[0]].bootstrap)
    # Still registered, fenced (DescribeCluster v2 lists fenced brokers).
    assert brokers_by_id(info).get(victim, {}).get("fenced") is True, info["brokers"]
    assert {(o["topic"], o["partition"]) for o in info["offline_partitions"] if o["topic"] == topic} == {
        (topic, p) for p in victim_parts
    }

    # The remaining nodes' partitions keep serving: old records intact, new ones accepted.
    more = produce_confluent(cluster.bootstrap_all(), topic, kept, 5, "post")
    expected = {p: written[p] + more[p] for p in kept}
    assert_read_back(read_confluent(cluster[survivors[1]], topic, kept), expected, "survivors")
    # Every partition of the replicated topic serves, nothing lost.
    more_rf3 = produce_confluent(cluster.bootstrap_all(), replicated, list(range(6)), 5, "post")
    expected = {p: written_rf3[p] + more_rf3[p] for p in range(6)}
    assert_read_back(read_confluent(cluster[survivors[1]], replicated, list(range(6))), expected, "survivors (RF 3)")


# -- 5. a broker-only node joins ------------------------------------------------------------------


def test_a_broker_only_node_joins_and_gets_partitions_of_new_topics(start_cluster):
    racks = {1: "rack-1", 2: "rack-2", 3: "rack-3"}
    cluster = start_cluster(racks=racks)
    wait_settled(cluster, via=1)
    before = unique_topic("old")
    create_topics(cluster[1].bootstrap, {before: 3})
    wait_agreed_leaders(cluster, {before: 3})

    b4 = cluster.add_broker(4, rack="rack-4")
    racks[4] = "rack-4"
    info = wait_settled(cluster, via=4, expected_brokers=[1, 2, 3, 4])
    assert {b["id"]: b["rack"] for b in info["brokers"]} == racks
    q = info["quorum"]
    # It follows the metadata log without voting.
    assert [v["id"] for v in q["voters"]] == [1, 2, 3]
    assert 4 in [o["id"] for o in q["observers"]], q

    # Every node lists it, with its rack.
    def listed_everywhere(seen):
        views = {n.node_id: try_metadata_of(n.bootstrap) for n in cluster.running()}
        seen({i: md and sorted(md.brokers) for i, md in views.items()})
        return all(md is not None and sorted(md.brokers) == [1, 2, 3, 4] for md in views.values())

    wait_observing(listed_everywhere, WAIT_S, "every node to list node 4")
    for n in cluster.running():
        md = try_metadata_of(n.bootstrap)
        assert {i: (p, r) for i, (_, p, r) in md.brokers.items()} == {
            i: (cluster[i].port, racks[i]) for i in (1, 2, 3, 4)
        }, f"node {n.node_id}: {md.brokers}"
    admin = AdminClient({"bootstrap.servers": cluster[2].bootstrap})  # kept: its futures die with it
    described = admin.describe_cluster(request_timeout=30).result(timeout=30)
    assert {n.id: (n.port, n.rack) for n in described.nodes} == {
        i: (cluster[i].port, racks[i]) for i in (1, 2, 3, 4)
    }
    admin = KafkaAdminClient(bootstrap_servers=b4.bootstrap, request_timeout_ms=TIMEOUT_MS)
    try:
        kp = {b["broker_id"]: (b["port"], b["rack"]) for b in admin.describe_cluster()["brokers"]}
    finally:
        admin.close()
    assert kp == {i: (cluster[i].port, racks[i]) for i in (1, 2, 3, 4)}

    # A topic created afterwards (by a client bootstrapped on the new node) gets partitions
    # on it: 8 partitions over 4 brokers in 4 racks.
    topic = unique_topic("joined")
    create_topics(b4.bootstrap, {topic: 8})
    leaders = wait_agreed_leaders(cluster, {topic: 8})[topic]
    mine = sorted(p for p, l in leaders.items() if l == 4)
    assert mine, f"node 4 leads none of the new topic's partitions: {leaders}"
    # The topics that existed before it joined do not move.
    assert 4 not in wait_agreed_leaders(cluster, {before: 3})[before].values()

    written = produce_confluent(b4.bootstrap, topic, mine, 10, "b4")
    for p in mine:
        assert [o for o, _, _ in written[p]] == list(range(10))
    assert_read_back(read_confluent(b4, topic, mine), written, "node 4")
    assert_read_back(read_kafka_python(b4.bootstrap, topic, mine), written, "kafka-python via node 4")


# -- 6. consumer groups with coordinators on different nodes ------------------------------------

GROUP_SETS = [
    "group.consumer.session.timeout.ms=6000",
    "group.consumer.heartbeat.interval.ms=500",
]
OFFSETS_TOPIC = "__consumer_offsets"


def offsets_topic_leaders(cluster):
    """{partition: leader} of `__consumer_offsets` once it exists and every partition is led,
    as node 1 answers; asks for a coordinator first so that it gets created."""
    md = try_metadata_of(cluster[1].bootstrap)
    leaders = leaders_of(md, OFFSETS_TOPIC) if md else None
    if not leaders or min(leaders.values()) < 0:
        probe = AdminClient({"bootstrap.servers": cluster[1].bootstrap})
        try:
            probe.describe_consumer_groups(["skein-probe"], request_timeout=5)["skein-probe"].result(
                timeout=10
            )
        except Exception:  # noqa: BLE001 - only there to trigger the topic's creation
            pass
        return None
    return leaders


def test_consumer_groups_with_coordinators_on_different_nodes(start_cluster):
    assert confluent_kafka.libversion()[1] >= 0x02040000, (
        f"group.protocol=consumer needs librdkafka >= 2.4, have {confluent_kafka.libversion()[0]}"
    )
    cluster = start_cluster(sets=GROUP_SETS)
    wait_settled(cluster, via=1)
    topic = unique_topic("groups")
    create_topics(cluster[1].bootstrap, {topic: 6})
    wait_agreed_leaders(cluster, {topic: 6})
    written = produce_confluent(cluster.bootstrap_all(), topic, list(range(6)), 10, "g")
    ends = {p: len(rows) for p, rows in written.items()}

    off_leaders = wait_until(
        lambda: offsets_topic_leaders(cluster), WAIT_S, f"{OFFSETS_TOPIC} with a leader for each partition"
    )
    assert len(set(off_leaders.values())) >= 2, f"{OFFSETS_TOPIC} led by one node only: {off_leaders}"

    # One group per protocol and per node leading some offsets partition: each group's
    # coordinator is the leader of its offsets partition (Kafka's hash of the group id).
    prefix = unique_topic("grp")
    groups = {}  # group id -> (protocol, expected coordinator)
    for protocol in ("classic", "consumer"):
        for node in sorted(set(off_leaders.values())):
            for k in itertools.count():
                g = f"{prefix}-{protocol}-{node}-{k}"
                if off_leaders[offsets_partition(g, len(off_leaders))] == node:
                    groups[g] = (protocol, node)
                    break
    assert len(groups) >= 4

    members = {}
    try:
        for g, (protocol, coordinator) in groups.items():
            # Bootstrapped on another node than the coordinator: FindCoordinator must redirect.
            via = cluster[coordinator % 3 + 1]
            conf = {
                "bootstrap.servers": via.bootstrap,
                "group.id": g,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            }
            if protocol == "classic":
                conf.update({"session.timeout.ms": 6000, "heartbeat.interval.ms": 500})
            else:
                conf["group.protocol"] = "consumer"
            c = Consumer(conf)
            c.subscribe([topic])
            members[g] = (c, [])

        def everyone_has_everything():
            for g, (c, got) in members.items():
                msg = c.poll(0.05)
                if msg is None:
                    continue
                err = msg.error()
                if err is None:
                    got.append((msg.partition(), msg.offset(), msg.key(), msg.value()))
                elif err.code() != KafkaError._PARTITION_EOF:
                    assert not err.fatal(), f"group {g}: fatal consumer error {err}"
            return all(len(got) >= sum(ends.values()) for _, got in members.values())

        wait_until(
            everyone_has_everything,
            WAIT_S,
            f"every group to read {sum(ends.values())} records",
            interval=0,
        )
        for g, (c, got) in members.items():
            by_partition = {p: sorted((o, k, v) for q, o, k, v in got if q == p) for p in range(6)}
            assert_read_back(by_partition, written, f"group {g}")
            assert len(got) == sum(ends.values()), f"group {g} read duplicates"
            committed = c.commit(asynchronous=False)
            assert {tp.partition: (tp.offset, tp.error) for tp in committed if tp.topic == topic} == {
                p: (ends[p], None) for p in range(6)
            }, f"group {g} commit"

        # DescribeGroups / ConsumerGroupDescribe: coordinators as predicted, on several nodes.
        admin = AdminClient({"bootstrap.servers": cluster[2].bootstrap})
        futures = admin.describe_consumer_groups(list(groups), request_timeout=30)
        described = {g: f.result(timeout=30) for g, f in futures.items()}
        for g, (protocol, coordinator) in groups.items():
            d = described[g]
            assert d.coordinator.id == coordinator, (
                f"group {g}: coordinator {d.coordinator.id}, leader of its offsets partition "
                f"{offsets_partition(g, len(off_leaders))} is {coordinator}"
            )
            assert d.coordinator.port == cluster[coordinator].port
            assert d.state == ConsumerGroupState.STABLE, (g, d.state)
            assert d.type == (
                ConsumerGroupType.CLASSIC if protocol == "classic" else ConsumerGroupType.CONSUMER
            ), (g, d.type)
            assert len(d.members) == 1
            assert sorted(tp.partition for tp in d.members[0].assignment.topic_partitions) == list(
                range(6)
            )
        coordinators = {d.coordinator.id for d in described.values()}
        assert len(coordinators) >= 2, coordinators
        assert coordinators == set(off_leaders.values())
    finally:
        for c, _ in members.values():
            c.close()

    # The committed offsets read back (OffsetFetch at each coordinator) equal what was read.
    admin = AdminClient({"bootstrap.servers": cluster[3].bootstrap})
    for g in groups:
        (future,) = admin.list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(g)], request_timeout=30
        ).values()
        result = future.result(timeout=30)
        assert {tp.partition: tp.offset for tp in result.topic_partitions if tp.topic == topic} == ends, g
    kadmin = KafkaAdminClient(bootstrap_servers=cluster[1].bootstrap, request_timeout_ms=TIMEOUT_MS)
    try:
        for g in groups:  # one group per request: OffsetFetch before v8 takes one
            fetched = kadmin.list_group_offsets({g: None})[g]
            assert {tp.partition: om.offset for tp, om in fetched.items() if tp.topic == topic} == ends, g
    finally:
        kadmin.close()


# -- 7. no controller: admin requests get a retriable error within their timeout -----------------

NOT_CONTROLLER = 41
REQUEST_TIMED_OUT = 7
INVALID_REPLICA_ASSIGNMENT = 39
NOT_COORDINATOR = 16
NO_QUORUM_CODES = {NOT_CONTROLLER, REQUEST_TIMED_OUT}  # both retriable in Kafka's table
TOPIC_RESOURCE = 2


def create_topics_v1(names, partitions, timeout_ms, validate_only=False):
    """CreateTopics v1 body: each topic with `partitions` partitions, replication factor 1."""
    topics = [wire.string(n) + wire.i32(partitions) + wire.i16(1) + wire.array([]) + wire.array([]) for n in names]
    return wire.array(topics) + wire.i32(timeout_ms) + wire.i8(1 if validate_only else 0)


def parse_create_topics_v1(r):
    out = {}
    for _ in range(r.i32()):
        name = r.string()
        out[name] = (r.i16(), r.string())
    r.assert_at_end("CreateTopics v1 response")
    return out


def delete_topics_v0(names, timeout_ms):
    return wire.array([wire.string(n) for n in names]) + wire.i32(timeout_ms)


def parse_delete_topics_v0(r):
    out = {}
    for _ in range(r.i32()):
        name = r.string()
        out[name] = (r.i16(), None)
    r.assert_at_end("DeleteTopics v0 response")
    return out


def create_partitions_v0(topic, count, timeout_ms, assignments=None, validate_only=False):
    if assignments is None:
        encoded = wire.i32(-1)
    else:
        encoded = wire.array([wire.array([wire.i32(b) for b in replicas]) for replicas in assignments])
    body = wire.array([wire.string(topic) + wire.i32(count) + encoded])
    return body + wire.i32(timeout_ms) + wire.i8(1 if validate_only else 0)


def parse_create_partitions_v0(r):
    r.i32()  # throttle_time_ms
    out = {}
    for _ in range(r.i32()):
        name = r.string()
        out[name] = (r.i16(), r.string())
    r.assert_at_end("CreatePartitions v0 response")
    return out


def alter_configs_v0(topic, configs):
    entries = [wire.string(k) + wire.string(v) for k, v in configs.items()]
    return wire.array([wire.i8(TOPIC_RESOURCE) + wire.string(topic) + wire.array(entries)]) + wire.i8(0)


def incremental_alter_configs_v0(topic, configs):
    entries = [wire.string(k) + wire.i8(0) + wire.string(v) for k, v in configs.items()]  # 0: SET
    return wire.array([wire.i8(TOPIC_RESOURCE) + wire.string(topic) + wire.array(entries)]) + wire.i8(0)


def parse_alter_configs_v0(r, what):
    r.i32()  # throttle_time_ms
    out = {}
    for _ in range(r.i32()):
        code = r.i16()
        message = r.string()
        r.i8()  # resource type
        out[r.string()] = (code, message)
    r.assert_at_end(what)
    return out


def admin_exchange(bootstrap, api_key, version, body, parse, timeout):
    """One request on its own connection: (seconds until the answer, parsed answer). The read
    waits `timeout` at most, so a broker that never answers fails the test."""
    started = time.monotonic()
    with wire.connect(bootstrap) as sock:
        sock.sendall(wire.request(api_key, version, 1, body))
        correlation, r = wire.recv_frame(sock, timeout)
    took = time.monotonic() - started
    assert correlation == 1
    return took, parse(r)


def test_without_a_quorum_admin_requests_fail_within_their_timeout(cluster):
    """Two of three voters gone: no metadata change can commit. Every admin request that
    changes metadata, sent to the survivor, is answered with Kafka's retriable NOT_CONTROLLER
    or REQUEST_TIMED_OUT within its own timeout (never a hang): CreateTopics (five topics in
    one request share its deadline), DeleteTopics and CreatePartitions within their
    `timeout_ms`, AlterConfigs and IncrementalAlterConfigs (no timeout field) within the 30 s
    call limit. They run at once, each on its own connection. Creation succeeds once a quorum
    is back. A `timeout_ms` of 0 sets no deadline of its own: with a quorum the topic is
    created and the answer is NONE, as Kafka 4.1 answers (checked against the reference
    broker)."""
    info = wait_settled(cluster, via=1)
    survivor = info["quorum"]["leader_id"]  # the hardest case: a leader that lost its quorum
    others = [i for i in (1, 2, 3) if i != survivor]
    bootstrap = cluster[survivor].bootstrap
    existing = unique_topic("noquorum-existing")
    create_topics(bootstrap, {existing: 1})
    wait_agreed_leaders(cluster, {existing: 1})

    zero = unique_topic("zero-timeout")
    took, answer = admin_exchange(
        bootstrap, wire.API_CREATE_TOPICS, 1, create_topics_v1([zero], 1, 0), parse_create_topics_v1, 30
    )
    assert answer[zero][0] == 0, answer
    assert zero in metadata_of(bootstrap).topics

    for i in others:
        cluster.kill9(i)
    timeout_ms = 3000
    # Five topics in one request: one deadline for all (five times the timeout would exceed
    # the margin below).
    created = [unique_topic("noquorum") for _ in range(5)]
    requests = {
        "CreateTopics": (wire.API_CREATE_TOPICS, 1, create_topics_v1(created, 3, timeout_ms), parse_create_topics_v1, timeout_ms / 1000),
        "DeleteTopics": (wire.API_DELETE_TOPICS, 0, delete_topics_v0([existing], timeout_ms), parse_delete_topics_v0, timeout_ms / 1000),
        "CreatePartitions": (wire.API_CREATE_PARTITIONS, 0, create_partitions_v0(existing, 2, timeout_ms), parse_create_partitions_v0, timeout_ms / 1000),
        "AlterConfigs": (
            wire.API_ALTER_CONFIGS, 0, alter_configs_v0(existing, {"retention.ms": "1234567"}),
            lambda r: parse_alter_configs_v0(r, "AlterConfigs v0 response"), 30.0,
        ),
        "IncrementalAlterConfigs": (
            wire.API_INCREMENTAL_ALTER_CONFIGS, 0, incremental_alter_configs_v0(existing, {"retention.ms": "7654321"}),
            lambda r: parse_alter_configs_v0(r, "IncrementalAlterConfigs v0 response"), 30.0,
        ),
    }
    # A busy 2-core machine gets a margin, far below what a hang would take (the reads
    # themselves give up at limit + 30 s).
    margin = 10.0
    with ThreadPoolExecutor(len(requests)) as pool:
        futures = {
            name: pool.submit(admin_exchange, bootstrap, key, version, body, parse, limit + 30)
            for name, (key, version, body, parse, limit) in requests.items()
        }
        answers = {name: f.result() for name, f in futures.items()}
    for name, (took, results) in answers.items():
        limit = requests[name][4]
        assert results, f"{name}: no results"
        for item, (code, message) in results.items():
            assert code in NO_QUORUM_CODES, f"{name} {item}: error {code} ({message})"
        assert took < limit + margin, f"{name} answered after {took:.1f}s (limit {limit:.0f}s)"
    assert set(answers["CreateTopics"][1]) == set(created)
    cluster[survivor].assert_alive()

    # A quorum again (one voter back). A timed-out creation "may or may not have been made"
    # (REQUEST_TIMED_OUT's meaning): the leader had it in its log, so it can commit now.
    # Either way the topics are there once retried.
    cluster.restart(others[0])
    try:
        create_topics(bootstrap, {t: 3 for t in created}, timeout=WAIT_S)
    except AssertionError as e:
        if "TOPIC_ALREADY_EXISTS" not in str(e):
            raise
    wait_agreed_leaders(
        cluster, {t: 3 for t in created}, nodes=[cluster[survivor], cluster[others[0]]], allow_offline=True
    )


# -- 7b. CreatePartitions with a manual assignment ---------------------------------------------


def test_create_partitions_with_manual_replica_assignments(cluster):
    """NewPartitions(topic, n, replica_assignment=...) through librdkafka places the new
    partitions on the named brokers, in the named order (the first is the preferred leader);
    assignments Kafka refuses get INVALID_REPLICA_ASSIGNMENT (39) with a message, through
    librdkafka and raw CreatePartitions (also with validate_only), and change nothing."""
    wait_settled(cluster, via=1)
    topic = unique_topic("manual-parts")
    create_topics(cluster[1].bootstrap, {topic: 1}, replication_factor=2)
    wait_agreed_leaders(cluster, {topic: 1})
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap_all()})

    def grow(count, assignment, validate_only=False):
        f = admin.create_partitions(
            [NewPartitions(topic, count, replica_assignment=assignment)],
            validate_only=validate_only,
            operation_timeout=30,
            request_timeout=45,
        )[topic]
        return future_error(f, timeout=60)

    # Refused: too few assignments, a broker named twice, an unknown broker, a replication
    # factor other than the topic's (2).
    for count, assignment in [
        (3, [[1, 2]]),
        (2, [[1, 1]]),
        (2, [[1, 9]]),
        (2, [[1]]),
        (2, [[1, 2, 3]]),
    ]:
        for validate_only in (False, True):
            err = grow(count, assignment, validate_only)
            assert err is not None, f"{assignment} (validate_only={validate_only}) was accepted"
            assert err.code() == INVALID_REPLICA_ASSIGNMENT, f"{assignment}: {err}"
            assert err.str(), f"{assignment}: no message"
    # The same through the wire, for the message itself.
    _, answer = admin_exchange(
        cluster[2].bootstrap, wire.API_CREATE_PARTITIONS, 0,
        create_partitions_v0(topic, 2, 30000, assignments=[[3, 3]]), parse_create_partitions_v0, 60,
    )
    code, message = answer[topic]
    assert code == INVALID_REPLICA_ASSIGNMENT and message and "3" in message, answer
    # validate_only with a good assignment changes nothing.
    assert grow(3, [[2, 3], [3, 1]], validate_only=True) is None
    assert len(metadata_of(cluster[1].bootstrap).topics[topic]) == 1

    assert grow(3, [[2, 3], [3, 1]]) is None

    def placed(seen):
        views = [seen(try_metadata_of(n.bootstrap)) for n in cluster.running()]
        if any(v is None or topic not in v.topics or len(v.topics[topic]) != 3 for v in views):
            return None
        parts = views[0].topics[topic]
        if any(v.topics[topic] != parts for v in views):
            return None
        if parts[1].leader < 0 or parts[2].leader < 0:
            return None
        return parts

    parts = wait_observing(placed, WAIT_S, f"{topic} with 3 partitions on every node")
    assert parts[1].replicas == [2, 3], parts
    assert parts[2].replicas == [3, 1], parts
    assert parts[1].leader == 2 and parts[2].leader == 3, parts
    assert len(parts[0].replicas) == 2


# -- 7c. a group's coordinator moves: its waiting JoinGroup is answered at once ----------------


def find_coordinator_v0(bootstrap, group):
    """FindCoordinator v0 answered by the node at `bootstrap`: (error, node id)."""
    _, r = wire.roundtrip(bootstrap, wire.request(10, 0, 1, wire.string(group)))
    error, node_id = r.i16(), r.i32()
    r.string()  # host
    r.i32()  # port
    r.assert_at_end("FindCoordinator v0 response")
    return error, node_id


def join_group_v1(group, member_id="", session_timeout_ms=30000, rebalance_timeout_ms=60000):
    """A JoinGroup v1 frame of a consumer subscribed to nothing (v1: no KIP-394 round trip)."""
    body = (
        wire.string(group)
        + wire.i32(session_timeout_ms)
        + wire.i32(rebalance_timeout_ms)
        + wire.string(member_id)
        + wire.string("consumer")
        + wire.array([wire.string("range") + wire.bytes_(b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00")])
    )
    return wire.request(11, 1, 1, body)


def parse_join_group_v1(r):
    """(error, generation, member id) of a JoinGroup v1 response."""
    error, generation = r.i16(), r.i32()
    r.string()  # protocol name
    r.string()  # leader
    member_id = r.string()
    for _ in range(r.i32()):
        r.string()
        r.take(r.i32())
    r.assert_at_end("JoinGroup v1 response")
    return error, generation, member_id


def test_a_waiting_join_is_answered_not_coordinator_when_the_coordinator_moves(start_cluster):
    """Kafka's coordinator answers the waiting JoinGroup/SyncGroup requests of the groups it
    unloads with NOT_COORDINATOR, so their clients go to the new coordinator at once instead of
    waiting out the rebalance. Here member B's JoinGroup waits (member A has not rejoined, the
    rebalance timeout is 60 s) when ElectLeaders moves the group's `__consumer_offsets`
    partition (RF 3) back to its preferred replica: B is answered NOT_COORDINATOR within
    seconds, and FindCoordinator names the new leader. (Heartbeats, classic or KIP-848, are
    answered at once, so none is ever left waiting.)"""
    cluster = start_cluster(sets=GROUP_SETS + ["auto.leader.rebalance.enable=false", "offsets.topic.num.partitions=6"])
    wait_settled(cluster, via=1)
    group = unique_topic("moving-group")
    wait_until(
        lambda: find_coordinator_v0(cluster[1].bootstrap, group)[0] == 0,
        WAIT_S,
        f"a coordinator for {group} (FindCoordinator creates {OFFSETS_TOPIC})",
    )
    partition = offsets_partition(group, 6)

    def state(seen):
        """(leader, replicas) of the group's offsets partition once every node agrees and the
        ISR is all three replicas; else None."""
        views = set()
        for n in cluster.running():
            md = seen(try_metadata_of(n.bootstrap))
            info = (md.topics.get(OFFSETS_TOPIC) or {}).get(partition) if md else None
            if info is None or info.leader < 0 or sorted(info.isr) != [1, 2, 3]:
                return None
            views.add((info.leader, tuple(info.replicas)))
        return views.pop() if len(views) == 1 else None

    _, replicas = wait_observing(state, WAIT_S, f"{OFFSETS_TOPIC}-{partition} with a full ISR on every node")
    preferred = replicas[0]
    # Move the leadership off the preferred replica: a controlled shutdown moves it away and
    # the restarted node comes back as a follower (automatic rebalancing is off).
    cluster.restart(preferred)
    leader, _ = wait_observing(
        lambda seen: (lambda v: v if v and v[0] != preferred else None)(state(seen)),
        WAIT_S,
        f"{OFFSETS_TOPIC}-{partition} led by another node than {preferred}, full ISR",
    )
    wait_until(
        lambda: find_coordinator_v0(cluster[1].bootstrap, group) == (0, leader),
        WAIT_S,
        f"FindCoordinator naming node {leader}",
    )

    coordinator = cluster[leader].bootstrap
    with wire.connect(coordinator) as a, wire.connect(coordinator) as b:
        a.sendall(join_group_v1(group))
        _, r = wire.recv_frame(a, timeout=30)
        error, generation, _ = parse_join_group_v1(r)
        assert (error, generation) == (0, 1), (error, generation)
        # B's join starts a rebalance that waits for A to rejoin (up to 60 s).
        b.sendall(join_group_v1(group))
        b.setblocking(False)
        try:
            early = b.recv(1)
        except BlockingIOError:
            early = None
        b.setblocking(True)
        assert early is None, "B's JoinGroup was answered before the coordinator moved"

        admin = AdminClient({"bootstrap.servers": cluster.bootstrap_all()})
        started = time.monotonic()
        result = admin.elect_leaders(ElectionType.PREFERRED, [TopicPartition(OFFSETS_TOPIC, partition)]).result(90)
        for tp, e in result.items():
            assert e is None, f"electing {tp}: {e}"
        _, r = wire.recv_frame(b, timeout=30)
        took = time.monotonic() - started
        error, _, _ = parse_join_group_v1(r)
        assert error == NOT_COORDINATOR, f"B's JoinGroup answered {error}"
        assert took < 20, f"B waited {took:.1f}s for its answer (the rebalance timeout is 60 s)"
    wait_until(
        lambda: find_coordinator_v0(cluster[leader].bootstrap, group) == (0, preferred),
        WAIT_S,
        f"FindCoordinator naming node {preferred} again",
    )


# -- 8. a wiped voter is refused until an operator replaces it (KIP-853) -------------------------


def directory_id_of(node):
    """The directory id in a node's meta.properties."""
    for line in (node.data_dir / "meta.properties").read_text().splitlines():
        if line.startswith("directory.id="):
            return line.split("=", 1)[1].strip()
    raise AssertionError(f"no directory.id in {node.data_dir}/meta.properties")


def test_a_wiped_voter_is_refused_until_replaced(cluster):
    info = wait_settled(cluster, via=1)
    victim = non_controller(info)
    others = [i for i in (1, 2, 3) if i != victim]
    old_dir = directory_id_of(cluster[victim])
    voters = {v["id"]: v for v in info["quorum"]["voters"]}
    assert voters[victim]["directory_id"] == old_dir, voters

    # The disk is lost: same node id, empty data directory (a new directory id).
    cluster.kill9(victim)
    shutil.rmtree(cluster[victim].data_dir)
    node = cluster[victim]
    since = len(node.log())
    node.launch()
    new_dir = wait_until(
        lambda: (node.data_dir / "meta.properties").exists() and directory_id_of(node),
        WAIT_S,
        "the wiped node to write its new meta.properties",
    )
    assert new_dir != old_dir
    wait_until(
        lambda: "a wiped or replaced disk?" in node.log()[since:],
        WAIT_S,
        "the quorum to refuse the wiped voter with its reason",
        interval=0.1,
    )
    assert "skein started" not in node.log()[since:], "a wiped voter joined without an operator"
    via = cluster[others[0]].bootstrap
    assert {v["id"]: v["directory_id"] for v in cluster_info(via)["quorum"]["voters"]}[victim] == old_dir

    # The operator replaces the voter: remove the old directory, add the new one.
    removed = skein_cli(
        "cluster", "remove-voter", "--id", str(victim), "--directory-id", old_dir, bootstrap=via
    )
    assert removed.returncode == 0, removed
    added = skein_cli(
        "cluster", "add-voter", "--id", str(victim), "--directory-id", new_dir,
        "--endpoint", f"127.0.0.1:{node.controller_port}", bootstrap=via,
    )
    assert added.returncode == 0, added
    why = node.wait_started(time.monotonic() + WAIT_S)
    assert why is None, f"{why}\n{node.log()}"
    wait_until(
        lambda: (i := cluster_info(via))
        and i["quorum"].get("available")
        and {v["id"]: (v["directory_id"], v["lag"]) for v in i["quorum"]["voters"]}.get(victim)
        == (new_dir, 0),
        WAIT_S,
        f"voter {victim} recorded with its new directory and caught up",
        interval=0.2,
    )
    # It serves as a broker again: a new topic's partitions spread over all three.
    topic = unique_topic("replaced")
    create_topics(via, {topic: 6})
    leaders = wait_agreed_leaders(cluster, {topic: 6})[topic]
    assert set(leaders.values()) == {1, 2, 3}, leaders


# -- per-DLT gauges when the replay group is coordinated elsewhere ------------------------------


def dlt_samples(http, topic):
    """(records, unhandled, oldest unhandled age) of `topic` in a node's /metrics, each None
    when the node has no such series (it leads none of the topic's partitions)."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://{http}/metrics", timeout=10) as r:
        text = r.read().decode()
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.startswith("skein_dlt_") and s.labels.get("topic") == topic:
                found[s.name] = s.value
    return tuple(
        found.get(f"skein_dlt_{n}")
        for n in ("records", "unhandled_records", "oldest_unhandled_age_seconds")
    )


def test_dlt_gauges_read_the_replay_group_from_its_coordinator(start_cluster):
    """A DLT's partitions are led by all three nodes, but its replay group is coordinated by
    one: the other two must ask that one for the group's offsets, so that once the group has
    replayed everything no node reports unhandled dead letters (a node that only looked at its
    own coordinator state would count its records as unhandled forever)."""
    cluster = start_cluster(sets=["skein.dlt.metrics.interval.ms=200"])
    wait_settled(cluster, via=1)
    off_leaders = wait_until(
        lambda: offsets_topic_leaders(cluster), WAIT_S, f"{OFFSETS_TOPIC} with a leader for each partition"
    )
    dlt = unique_topic("payments") + "-dlt"
    create_topics(cluster[1].bootstrap, {dlt: 3})
    leaders = wait_agreed_leaders(cluster, {dlt: 3})[dlt]
    assert sorted(leaders.values()) == [1, 2, 3], f"one partition per node expected: {leaders}"
    group = f"skein-dlt-replay.{dlt}"
    coordinator = off_leaders[offsets_partition(group, len(off_leaders))]

    two_hours_ago = int(time.time() * 1000) - 7_200_000
    p = Producer({"bootstrap.servers": cluster.bootstrap_all(), "linger.ms": 0})
    for partition in range(3):
        for i in range(2):
            p.produce(dlt, value=b"{}", key=f"k{i}".encode(), partition=partition,
                      timestamp=two_hours_ago,
                      headers=[("kafka_dlt-original-topic", b"payments")])
    assert p.flush(30) == 0

    def per_node():
        return {n.node_id: dlt_samples(n.http, dlt) for n in cluster.running()}

    def totals(expected_unhandled):
        seen = per_node()
        records = sum(v[0] or 0 for v in seen.values())
        unhandled = sum(v[1] or 0 for v in seen.values())
        return seen if (records, unhandled) == (6, expected_unhandled) else None

    seen = wait_until(lambda: totals(6), WAIT_S, "6 dead letters, all unhandled, over the nodes")
    for node_id, (records, unhandled, age) in seen.items():
        assert (records, unhandled) == (2, 2), (node_id, seen)
        assert 7200 <= age < 7200 + 600, (node_id, seen)

    # The replay group (coordinated by one node) has handled everything.
    c = Consumer({"bootstrap.servers": cluster.bootstrap_all(), "group.id": group,
                  "enable.auto.commit": False})
    try:
        result = c.commit(offsets=[TopicPartition(dlt, q, 2) for q in range(3)], asynchronous=False)
        assert all(tp.error is None for tp in result), result
    finally:
        c.close()
    seen = wait_until(lambda: totals(0), WAIT_S,
                      f"no unhandled dead letters on any node (group coordinated by node {coordinator})")
    for node_id, (records, unhandled, age) in seen.items():
        assert (records, unhandled, age) == (2, 0, 0), (node_id, seen)
