"""Three edges of replication against real processes, each as Apache Kafka behaves:

- DeleteRecords on a replicated partition answers once every live replica has raised its
  log start to the offset asked for (Kafka's DelayedDeleteRecords and the leader's low
  watermark), and REQUEST_TIMED_OUT when a live follower does not within the timeout.
- DescribeProducers is answered by every replica (the Admin's `brokerId`), and
  NOT_LEADER_OR_FOLLOWER by a broker without one.
- A new leader whose high watermark still lags the log end it had when its epoch began
  answers ListOffsets with OFFSET_NOT_AVAILABLE (KIP-207) and consumer fetches only below
  that high watermark, until the ISR confirms in its epoch.

One cluster for the module: three voters (1-3) and a broker-only node 4, so that freezing
node 4 (SIGSTOP) never costs the controller quorum. The session timeout is long, so a
frozen node stays registered and unfenced (alive, and in the ISR) while a test looks.
Requests whose error codes are asserted are hand-made (`wire.py`) and sent to one chosen
node, so that no client library retries or reroutes them.
"""

import os
import re
import shutil
import struct
import subprocess
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaAdminClient
from kafka import TopicPartition as KTopicPartition
from kafka.errors import NotLeaderForPartitionError

import wire
from cluster import HEARTBEAT_INTERVAL_MS, RETRIABLE_ADMIN_ERRORS, Cluster, try_metadata_of
from helpers import future_error, wait_until

WAIT_S = 60.0
# A frozen node stays alive (unfenced) this long; the tests that freeze one take seconds.
SESSION_TIMEOUT_MS = 45000
SETS = [
    f"broker.session.timeout.ms={SESSION_TIMEOUT_MS}",
    f"broker.heartbeat.interval.ms={HEARTBEAT_INTERVAL_MS}",
    # No ISR shrink while a follower is frozen: the tests need it to stay a member.
    "replica.lag.time.max.ms=120000",
    "group.initial.rebalance.delay.ms=0",
]

NONE = 0
OFFSET_OUT_OF_RANGE = 1
LEADER_NOT_AVAILABLE = 5
NOT_LEADER_OR_FOLLOWER = 6
REQUEST_TIMED_OUT = 7
OFFSET_NOT_AVAILABLE = 78

LATEST = -1
EARLIEST = -2
MAX_TIMESTAMP = -3
CONSUMER = -1
DEBUGGING = -2


@pytest.fixture(scope="module")
def edges(tmp_path_factory):
    nodes = []
    c = Cluster(tmp_path_factory.mktemp("edges") / "cluster", voters=3, sets=SETS, registry=nodes)
    c.start()
    c.add_broker(4)
    wait_until(
        lambda: (md := try_metadata_of(c[1].address)) and sorted(md.brokers) == [1, 2, 3, 4],
        WAIT_S,
        "four registered brokers",
    )
    yield c
    c.close()


@pytest.fixture
def cluster(edges):
    """The module's cluster, checked whole after each test."""
    yield edges
    for n in edges.nodes.values():
        n.sigcont()
        if not n.alive():
            edges.restart(n.node_id)


@pytest.fixture
def logs(edges):
    """The nodes, as a list, so that a failed test's report carries their logs."""
    return list(edges.registry)


# -- hand-made requests --------------------------------------------------------------------------


def roundtrip(node, frame, timeout=60.0):
    correlation, r = wire.roundtrip(node.address, frame, timeout)
    assert correlation == 1, correlation
    return r


def list_offsets(node, topic, timestamp, version=5, replica_id=CONSUMER, partition=0):
    """One ListOffsets lookup answered by `node`: (error_code, offset, timestamp)."""
    if version >= 6:
        part = wire.i32(partition) + wire.i32(-1) + wire.i64(timestamp) + wire.EMPTY_TAGGED_FIELDS
        body = (
            wire.i32(replica_id)
            + wire.i8(0)
            + wire.uvarint(2)
            + wire.compact_string(topic)
            + wire.uvarint(2)
            + part
            + wire.EMPTY_TAGGED_FIELDS
            + wire.EMPTY_TAGGED_FIELDS
        )
        r = roundtrip(node, wire.request(wire.API_LIST_OFFSETS, version, 1, body, flexible=True))
        r.tagged_fields()  # response header
        r.i32()  # throttle
        assert r.uvarint() == 2
        assert r.compact_string() == topic
        assert r.uvarint() == 2
        assert r.i32() == partition
        error, ts, offset = r.i16(), r.i64(), r.i64()
        r.i32()  # leader epoch
        return error, offset, ts
    part = wire.i32(partition)
    if version >= 4:
        part += wire.i32(-1)  # current leader epoch: no check
    part += wire.i64(timestamp)
    body = wire.i32(replica_id)
    if version >= 2:
        body += wire.i8(0)
    body += wire.array([wire.string(topic) + wire.array([part])])
    r = roundtrip(node, wire.request(wire.API_LIST_OFFSETS, version, 1, body))
    if version >= 2:
        r.i32()  # throttle
    assert r.i32() == 1
    assert r.string() == topic
    assert r.i32() == 1
    assert r.i32() == partition
    error, ts, offset = r.i16(), r.i64(), r.i64()
    return error, offset, ts


def log_start_of(node, topic):
    """The log start of `node`'s replica, leader or follower (a debugging ListOffsets)."""
    error, offset, _ = list_offsets(node, topic, EARLIEST, version=1, replica_id=DEBUGGING)
    assert error == NONE, f"debugging ListOffsets at node {node.node_id}: error {error}"
    return offset


def log_end_of(node, topic):
    error, offset, _ = list_offsets(node, topic, LATEST, version=1, replica_id=DEBUGGING)
    assert error == NONE, f"debugging ListOffsets at node {node.node_id}: error {error}"
    return offset


def checkpointed_log_start(node, topic):
    """The log start offset file the replica keeps in its partition directory."""
    text = (Path(node.data_dir) / f"{topic}-0" / "log-start-offset").read_text()
    return int(text.split()[1])


def delete_records(node, topic, offset, timeout_ms):
    """DeleteRecords v1 answered by `node`: (error_code, low_watermark, seconds taken)."""
    body = wire.array([wire.string(topic) + wire.array([wire.i32(0) + wire.i64(offset)])])
    body += wire.i32(timeout_ms)
    began = time.monotonic()
    r = roundtrip(node, wire.request(wire.API_DELETE_RECORDS, 1, 1, body), timeout=timeout_ms / 1000 + 60)
    took = time.monotonic() - began
    r.i32()  # throttle
    assert r.i32() == 1 and r.string() == topic and r.i32() == 1
    assert r.i32() == 0
    low, error = r.i64(), r.i16()
    return error, low, took


def fetch(node, topic, offset):
    """A consumer's Fetch v4 answered by `node`: (error_code, high_watermark, [(first, last)]
    offsets of each batch returned)."""
    part = wire.i32(0) + wire.i64(offset) + wire.i32(1 << 20)
    body = (
        wire.i32(-1)  # replica id: a consumer
        + wire.i32(0)  # max wait: answer at once
        + wire.i32(0)  # min bytes
        + wire.i32(1 << 20)
        + wire.i8(0)  # read_uncommitted
        + wire.array([wire.string(topic) + wire.array([part])])
    )
    r = roundtrip(node, wire.request(wire.API_FETCH, 4, 1, body))
    r.i32()  # throttle
    assert r.i32() == 1 and r.string() == topic and r.i32() == 1
    assert r.i32() == 0
    error, hw = r.i16(), r.i64()
    r.i64()  # last stable offset
    aborted = r.i32()
    for _ in range(max(aborted, 0)):
        r.i64(), r.i64()
    size = r.i32()
    records = r.take(size) if size > 0 else b""
    batches = []
    pos = 0
    while pos + 61 <= len(records):
        base, length = struct.unpack_from(">qi", records, pos)
        if pos + 12 + length > len(records):
            break  # a partial batch at the end of the answer
        last_delta = struct.unpack_from(">i", records, pos + 23)[0]
        batches.append((base, base + last_delta))
        pos += 12 + length
    return error, hw, batches


# -- setup helpers -----------------------------------------------------------------------------


def create_assigned(cluster, topic, replicas):
    """A one-partition topic on `replicas` (the first leads) with every replica in the ISR."""
    b = cluster.bootstrap_all()
    admin = AdminClient({"bootstrap.servers": b})
    deadline = time.monotonic() + WAIT_S
    while True:
        (future,) = admin.create_topics(
            [NewTopic(topic, num_partitions=1, replica_assignment=[replicas])], operation_timeout=10, request_timeout=15
        ).values()
        err = future_error(future, timeout=30)
        if err is None or err.code() == 36:  # TOPIC_ALREADY_EXISTS after a lost answer
            break
        assert err.code() in RETRIABLE_ADMIN_ERRORS or err.retriable(), f"creating {topic}: {err}"
        assert time.monotonic() < deadline, f"creating {topic}: {err}"
        time.sleep(0.2)  # back off before retrying (not a synchronisation)

    def settled():
        md = try_metadata_of(cluster[replicas[0]].address)
        info = md and md.topics.get(topic, {}).get(0)
        return info and info.leader == replicas[0] and sorted(info.isr) == sorted(replicas) and info

    return wait_until(settled, WAIT_S, f"{topic}: led by {replicas[0]}, ISR {replicas}")


def produce(bootstrap, topic, values, acks="all", timestamps=None):
    """Produces `values` to partition 0; returns their offsets (all must be acknowledged)."""
    idempotent = acks == "all"
    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": acks,
            "enable.idempotence": idempotent,
            "linger.ms": 5,
            "message.timeout.ms": 60000,
        }
    )
    offsets, errors = {}, []

    def report(err, msg):
        if err is None:
            offsets[msg.value().decode()] = msg.offset()
        else:
            errors.append(err)

    for i, v in enumerate(values):
        kwargs = {"timestamp": timestamps[i]} if timestamps else {}
        p.produce(topic, v.encode(), partition=0, on_delivery=report, **kwargs)
        p.poll(0)
    assert p.flush(90) == 0, "records unanswered after 90 s"
    assert not errors, errors
    return [offsets[v] for v in values]


def partition_info(node, topic):
    md = try_metadata_of(node.address)
    return md and md.topics.get(topic, {}).get(0)


# -- DeleteRecords -------------------------------------------------------------------------------


def test_delete_records_answers_once_every_replica_moved_its_log_start(cluster, logs):
    topic = "edges-delete"
    create_assigned(cluster, topic, [1, 2, 4])
    offsets = produce(cluster.bootstrap_all(), topic, [f"d{i}" for i in range(300)])
    assert offsets == list(range(300))
    leader, followers = cluster[1], [cluster[2], cluster[4]]

    # Refused where Kafka refuses: at a follower, and past the high watermark.
    error, low, _ = delete_records(followers[0], topic, 120, 30000)
    assert (error, low) == (NOT_LEADER_OR_FOLLOWER, -1)
    error, low, _ = delete_records(leader, topic, 301, 30000)
    assert (error, low) == (OFFSET_OUT_OF_RANGE, -1)

    # The answer comes once every replica raised its log start: right after it, each
    # replica's own log start (asked of it, and in its checkpoint file) is already there.
    error, low, took = delete_records(leader, topic, 120, 30000)
    assert (error, low) == (NONE, 120), took
    for n in [leader] + followers:
        assert checkpointed_log_start(n, topic) == 120, n
        assert log_start_of(n, topic) == 120, n

    # -1: up to the high watermark.
    error, low, _ = delete_records(leader, topic, -1, 30000)
    assert (error, low) == (NONE, 300)
    for n in [leader] + followers:
        assert checkpointed_log_start(n, topic) == 300, n
        assert log_start_of(n, topic) == 300, n
    # Asking again for what is already done answers at once.
    error, low, took = delete_records(leader, topic, 250, 30000)
    assert (error, low) == (NONE, 300)

    # What remains is still replicated and served: the new leader after a controlled
    # shutdown of this one starts at 300 too.
    more = produce(cluster.bootstrap_all(), topic, [f"e{i}" for i in range(5)])
    assert more == list(range(300, 305))
    cluster.stop(1)
    new = wait_until(
        lambda: (i := partition_info(cluster[2], topic)) and i.leader in (2, 4) and i,
        WAIT_S,
        "a new leader for the partition",
    )
    assert list_offsets(cluster[new.leader], topic, EARLIEST)[:2] == (NONE, 300)
    wait_until(
        lambda: list_offsets(cluster[new.leader], topic, LATEST)[:2] == (NONE, 305),
        WAIT_S,
        "the new leader's high watermark at 305",
    )
    cluster.restart(1)


def test_delete_records_times_out_while_a_live_follower_is_frozen(cluster, logs):
    topic = "edges-frozen"
    create_assigned(cluster, topic, [1, 2, 4])
    assert produce(cluster.bootstrap_all(), topic, [f"f{i}" for i in range(100)]) == list(range(100))
    leader, frozen = cluster[1], cluster[4]
    cluster.sigstop(4)
    try:
        # Node 4 is frozen but alive (registered, unfenced) and in the ISR: the leader waits
        # for its log start, as Kafka does, until the request's timeout.
        error, low, took = delete_records(leader, topic, 40, 2000)
        # The low watermark the deletion first answered: node 4 (and maybe node 2) still at 0.
        assert (error, low) == (REQUEST_TIMED_OUT, 0), took
        assert 1.9 <= took < 30, took
        info = partition_info(leader, topic)
        assert sorted(info.isr) == [1, 2, 4], info
        # The deletion itself stands on the leader, and the live follower follows it.
        assert log_start_of(leader, topic) == 40
        wait_until(lambda: log_start_of(cluster[2], topic) == 40, WAIT_S, "node 2 at log start 40")
    finally:
        cluster.sigcont(4)
    # Back: node 4 raises its log start from its next fetch, and the same request succeeds.
    error, low, took = delete_records(leader, topic, 40, 30000)
    assert (error, low) == (NONE, 40), took
    assert log_start_of(frozen, topic) == 40
    assert checkpointed_log_start(frozen, topic) == 40


# -- DescribeProducers ---------------------------------------------------------------------------


def test_describe_producers_is_answered_by_every_replica(cluster, logs):
    topic = "edges-producers"
    create_assigned(cluster, topic, [2, 4, 1])
    assert produce(cluster.bootstrap_all(), topic, [f"p{i}" for i in range(7)]) == list(range(7))
    tp = KTopicPartition(topic, 0)
    admin = KafkaAdminClient(bootstrap_servers=cluster.bootstrap_all(), request_timeout_ms=30000)
    try:
        def states(broker_id=None):
            result = admin.describe_producers([tp], broker_id=broker_id)[tp]
            return sorted(
                (s.producer_id, s.producer_epoch, s.last_sequence, s.last_timestamp)
                for s in result.active_producers
            )

        at_leader = states()
        assert len(at_leader) == 1, at_leader
        producer_id, epoch, last_sequence, last_timestamp = at_leader[0]
        assert producer_id >= 0 and epoch >= 0 and last_sequence == 6, at_leader
        assert last_timestamp > 0, at_leader
        assert states(2) == at_leader
        # The followers rebuilt the same producer from the batches they replicated.
        for follower in (4, 1):
            wait_until(lambda: states(follower) == at_leader, WAIT_S, f"node {follower}'s producers")
        # Node 3 holds no replica: NOT_LEADER_OR_FOLLOWER, as Kafka answers.
        with pytest.raises(NotLeaderForPartitionError):
            admin.describe_producers([tp], broker_id=3)
    finally:
        admin.close()
    # The same asked by hand of each node: the three replicas answer, node 3 refuses.
    assert {n: describe_producers_error(cluster[n], topic) for n in (1, 2, 3, 4)} == {
        1: NONE, 2: NONE, 3: NOT_LEADER_OR_FOLLOWER, 4: NONE
    }
    # The Java Admin, with and without brokerId: the same producer from every replica, and
    # from node 3 the NotLeaderOrFollowerException it makes of NOT_LEADER_OR_FOLLOWER when a
    # brokerId was given.
    java = java_describe_producers(cluster.bootstrap_all(), topic, ["leader", 2, 4, 1, 3])
    if java is not None:
        for target in ("leader", "2", "4", "1"):
            assert java[target] == ("ok", at_leader), (target, java)
        assert java["3"] == ("error", "NotLeaderOrFollowerException"), java


REPO = Path(__file__).resolve().parents[2]


def describe_producers_error(node, topic):
    """The error code of a DescribeProducers v0 for partition 0, answered by `node`."""
    body = (
        wire.uvarint(2) + wire.compact_string(topic) + wire.uvarint(2) + wire.i32(0)
        + wire.EMPTY_TAGGED_FIELDS + wire.EMPTY_TAGGED_FIELDS
    )
    r = roundtrip(node, wire.request(61, 0, 1, body, flexible=True))
    r.tagged_fields()
    r.i32()  # throttle
    assert r.uvarint() == 2 and r.compact_string() == topic and r.uvarint() == 2
    assert r.i32() == 0
    return r.i16()


def kafka_libs():
    """Apache Kafka's jars as `scripts/kafka-reference fetch` caches them, or None."""
    pom = (REPO / "scripts" / "kafka-reference.d" / "pom.xml").read_text()
    version = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", pom).group(1).strip()
    root = os.environ.get("SKEIN_CACHE") or str(Path.home() / ".cache" / "skein")
    libs = Path(root) / f"kafka-{version}" / "libs"
    return libs if any(libs.glob("kafka-clients-*.jar")) else None


def java_describe_producers(bootstrap, topic, targets):
    """The Java Admin's describeProducers for each target (`leader` or a broker id), by
    `DescribeProducers.java`: {target: ("ok", [(id, epoch, last sequence, last timestamp)])
    or ("error", exception class name)}. None (after saying so) without Java or Kafka's jars."""
    libs = kafka_libs()
    java = shutil.which("java")
    if libs is None or java is None:
        print("\n*** SKIPPED: the Java Admin's describeProducers (no `java` or no Kafka jars; "
              "run scripts/kafka-reference fetch) ***")
        return None
    run = subprocess.run(
        [java, "-cp", f"{libs}/*", str(Path(__file__).with_name("DescribeProducers.java")), bootstrap, topic]
        + [str(t) for t in targets],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, f"DescribeProducers.java exited {run.returncode}\n{run.stderr[-3000:]}"
    out = {}
    for line in run.stdout.splitlines():
        target, kind, *rest = line.split()
        if kind == "ok":
            out[target] = ("ok", sorted(tuple(int(x) for x in r.split(":")) for r in rest))
        else:
            out[target] = ("error", rest[0])
    return out


# -- a new leader's high watermark ---------------------------------------------------------------


def test_a_new_leader_withholds_offsets_until_its_epoch_is_confirmed(cluster, logs):
    topic = "edges-window"
    create_assigned(cluster, topic, [1, 2, 4])
    t0 = int(time.time() * 1000) - 60_000
    ts = [t0 + i * 1000 for i in range(15)]
    # Ten records committed everywhere (high watermark 10 on every replica).
    assert produce(cluster.bootstrap_all(), topic, [f"w{i}" for i in range(10)], timestamps=ts[:10]) == list(range(10))
    # Node 4 frozen: five more, acks=1, reach node 2 but stay uncommitted (node 4, in the
    # ISR, has not confirmed them), so node 2 holds them with a high watermark of 10.
    cluster.sigstop(4)
    try:
        acked = produce(cluster[1].address, topic, [f"w{i}" for i in range(10, 15)], acks="1", timestamps=ts[10:])
        assert acked == list(range(10, 15))
        wait_until(lambda: log_end_of(cluster[2], topic) == 15, WAIT_S, "node 2 holding offsets 10-14")
        assert list_offsets(cluster[1], topic, LATEST)[:2] == (NONE, 10)

        # The leader shuts down: node 2 leads epoch+1 from log end 15, its high watermark 10.
        cluster.stop(1)
        wait_until(
            lambda: (i := partition_info(cluster[2], topic)) and i.leader == 2,
            WAIT_S,
            "node 2 leading the partition",
        )
        b = cluster[2]
        # KIP-207: the latest offset and lookups that land at or past the high watermark
        # are not available (LEADER_NOT_AVAILABLE before v5); what lies below it is.
        assert list_offsets(b, topic, LATEST)[0] == OFFSET_NOT_AVAILABLE
        assert list_offsets(b, topic, LATEST, version=1)[0] == LEADER_NOT_AVAILABLE
        assert list_offsets(b, topic, ts[12])[0] == OFFSET_NOT_AVAILABLE
        assert list_offsets(b, topic, MAX_TIMESTAMP, version=7)[0] == OFFSET_NOT_AVAILABLE
        assert list_offsets(b, topic, EARLIEST)[:2] == (NONE, 0)
        assert list_offsets(b, topic, ts[3]) == (NONE, 3, ts[3])
        # A debugging request sees the log end.
        assert list_offsets(b, topic, LATEST, version=1, replica_id=DEBUGGING)[:2] == (NONE, 15)
        # Consumers are served below the high watermark, without an error, as in Kafka.
        error, hw, batches = fetch(b, topic, 0)
        assert (error, hw) == (NONE, 10)
        assert batches and batches[0][0] == 0 and batches[-1][1] == 9, batches
        assert fetch(b, topic, 10) == (NONE, 10, [])
        # Still so: node 4 (in the ISR) has not fetched from the new leader.
        info = partition_info(b, topic)
        assert info.leader == 2 and sorted(info.isr) == [2, 4], info
        assert list_offsets(b, topic, LATEST)[0] == OFFSET_NOT_AVAILABLE
    finally:
        cluster.sigcont(4)

    # Node 4 fetches from node 2 in the new epoch: the high watermark reaches 15, and never
    # went below the 10 the old leader showed.
    wait_until(lambda: list_offsets(b, topic, LATEST)[:2] == (NONE, 15), WAIT_S, "the latest offset at 15")
    assert list_offsets(b, topic, ts[12]) == (NONE, 12, ts[12])
    assert list_offsets(b, topic, MAX_TIMESTAMP, version=7) == (NONE, 14, ts[14])
    error, hw, batches = fetch(b, topic, 10)
    assert (error, hw) == (NONE, 15)
    assert batches[0][0] == 10 and batches[-1][1] == 14, batches
    cluster.restart(1)
