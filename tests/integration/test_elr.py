"""KIP-966 eligible leader replicas on real processes: one controller (node 1) and three
broker-only nodes (2, 3, 4) holding an RF=3 topic with min.insync.replicas=2, so that replicas
can go while the quorum stays up.

- Replicas stop so that the ISR falls below min.insync.replicas: the one that leaves then is
  in the partition's ELR, as DescribeTopicPartitions (raw, api 75) and Apache Kafka's own
  `kafka-topics --describe` ("Elr:") show. The last ISR member is killed (kill -9): the ISR
  empties, the partition waits. An ELR member returns and leads; nothing acknowledged with
  acks=all is lost.
- With `skein.acks.all.fsync=false` a kill -9 is an unclean shutdown (the page cache may
  have lost records): the restarted broker leaves the ELR for the last known ELR and may not
  lead; only an unclean election brings the partition back.

Every wait has a deadline; no fixed sleeps."""

import shutil
import subprocess
from pathlib import Path

import pytest
import wire
from confluent_kafka import ElectionType, KafkaError, Producer

from cluster import BASE_SETS, Cluster, cli_json, skein_cli
from helpers import wait_until
from test_elect import create_assigned, elect, kafka_libs, produce, wait_state
from test_replication import read_all

WAIT_S = 60.0
SETS = BASE_SETS + ["replica.lag.time.max.ms=4000", "auto.leader.rebalance.enable=false"]
UNKNOWN_TOPIC_OR_PARTITION = 3
LEADER_NOT_AVAILABLE = 5


@pytest.fixture
def start_cluster(tmp_path):
    nodes, clusters = [], []

    def start(sets=()):
        c = Cluster(tmp_path / f"cluster{len(clusters)}", voters=1, sets=SETS + list(sets), registry=nodes)
        clusters.append(c)
        c.start()
        for i in (2, 3, 4):
            c.add_broker(i)
        return c

    yield start
    for c in clusters:
        c.close()


# -- DescribeTopicPartitions (api 75, v0, flexible) --------------------------------------------


def _compact_i32s(r):
    n = r.uvarint()
    return None if n == 0 else [r.i32() for _ in range(n - 1)]


def describe_topic_partitions(bootstrap, topics, limit=2000, cursor=None, timeout=10.0):
    """(topics, next_cursor) of a raw DescribeTopicPartitions v0 request. topics:
    [(error, name, {partition: dict})]; next_cursor: (topic, partition) or None."""
    body = wire.uvarint(len(topics) + 1)
    for t in topics:
        body += wire.compact_string(t) + wire.EMPTY_TAGGED_FIELDS
    body += wire.i32(limit)
    if cursor is None:
        body += wire.i8(-1)
    else:
        body += wire.i8(1) + wire.compact_string(cursor[0]) + wire.i32(cursor[1]) + wire.EMPTY_TAGGED_FIELDS
    body += wire.EMPTY_TAGGED_FIELDS
    correlation, r = wire.roundtrip(bootstrap, wire.request(75, 0, 75, body, flexible=True), timeout)
    assert correlation == 75
    r.tagged_fields()  # response header v1
    r.i32()  # throttle
    out = []
    for _ in range(r.uvarint() - 1):
        error = r.i16()
        name = r.compact_string()
        r.take(16)  # topic id
        r.i8()  # internal
        parts = {}
        for _ in range(r.uvarint() - 1):
            p = {"error": r.i16()}
            index = r.i32()
            p["leader"], p["epoch"] = r.i32(), r.i32()
            p["replicas"], p["isr"] = _compact_i32s(r), _compact_i32s(r)
            p["elr"], p["last_known_elr"] = _compact_i32s(r), _compact_i32s(r)
            p["offline"] = _compact_i32s(r)
            r.tagged_fields()
            parts[index] = p
        r.i32()  # authorized operations
        r.tagged_fields()
        out.append((error, name, parts))
    next_cursor = None
    if r.i8() >= 0:
        next_cursor = (r.compact_string(), r.i32())
        r.tagged_fields()
    r.tagged_fields()
    r.assert_at_end("DescribeTopicPartitions v0")
    return out, next_cursor


def partition_elr(bootstrap, topic, p=0):
    topics, _ = describe_topic_partitions(bootstrap, [topic])
    assert len(topics) == 1 and topics[0][0] == 0 and topics[0][1] == topic, topics
    return topics[0][2][p]


def wait_elr(bootstrap, topic, cond, what):
    seen = {}

    def check():
        try:
            p = partition_elr(bootstrap, topic)
        except (OSError, AssertionError) as exc:
            seen["last"] = exc
            return None
        seen["last"] = p
        return p if cond(p) else None

    try:
        return wait_until(check, WAIT_S, what, interval=0.1)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last seen {seen.get('last')}") from None


def kafka_topics_describe(libs, bootstrap, topic):
    """Apache Kafka's `kafka-topics --describe` (TopicCommand) output."""
    java = shutil.which("java")
    jdk17 = Path("/usr/lib/jvm/java-17-openjdk-amd64/bin/java")
    if jdk17.exists():
        java = str(jdk17)
    proc = subprocess.run(
        [java, "-cp", f"{libs}/*", "org.apache.kafka.tools.TopicCommand", "--bootstrap-server", bootstrap, "--describe", "--topic", topic],
        capture_output=True,
        text=True,
        timeout=180,
    )
    return proc.returncode, proc.stdout + proc.stderr


def refused_acks_all(bootstrap, topic):
    """The error of one acks=all produce without retries (None if it was acknowledged)."""
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "message.timeout.ms": 5000, "retries": 0})
    errors = []
    p.produce(topic, b"refused?", partition=0, on_delivery=lambda err, msg: errors.append(err))
    assert p.flush(30) == 0
    assert len(errors) == 1
    return errors[0]


# -- tests ---------------------------------------------------------------------------------------


def test_an_elr_member_leads_after_the_last_isr_member_dies_and_nothing_acked_is_lost(start_cluster):
    c = start_cluster()
    ctl = c[1].bootstrap
    topic = "elr"
    create_assigned(ctl, topic, [[2, 3, 4]], config={"min.insync.replicas": "2"})
    wait_state(ctl, topic, lambda s: sorted(s[0][3]) == [2, 3, 4] and s[0][0] == 2, "leader 2, full ISR")
    p = partition_elr(ctl, topic)
    assert (p["elr"], p["last_known_elr"], p["offline"]) == ([], [], []), p

    acked = {}
    a, failed = produce(c.bootstrap_all(), topic, 0, [f"a{i}" for i in range(20)], acks="all")
    assert not failed and sorted(a.values()) == list(range(20)), (a, failed)
    acked.update(a)

    # 4 goes (controlled shutdown): the ISR [2, 3] is still at the minimum, no ELR.
    c.stop(4)
    wait_state(ctl, topic, lambda s: sorted(s[0][3]) == [2, 3], "ISR [2, 3]")
    assert partition_elr(ctl, topic)["elr"] == []
    b, failed = produce(c.bootstrap_all(exclude=(4,)), topic, 0, [f"b{i}" for i in range(20)], acks="all")
    assert not failed and sorted(b.values()) == list(range(20, 40)), (b, failed)
    acked.update(b)

    # 3 goes: the ISR [2] is below the minimum, so 3 (which has every committed record: the
    # high watermark stopped when it left) is eligible.
    c.stop(3)
    p = wait_elr(ctl, topic, lambda p: p["isr"] == [2], "ISR [2]")
    assert p["elr"] == [3], p
    assert p["leader"] == 2 and sorted(p["offline"]) == [3, 4], p
    err = refused_acks_all(c[2].bootstrap, topic)
    assert err is not None and err.code() == KafkaError.NOT_ENOUGH_REPLICAS, err
    # `skein topic describe` shows it: JSON fields, and ELR columns in the text table.
    rc, out, proc = cli_json("topic", "describe", topic, bootstrap=ctl)
    assert rc == 0, proc.stderr
    part = out["partitions"][0]
    assert (part["isr"], part["eligible_leader_replicas"], part["last_known_elr"]) == ([2], [3], []), part
    proc = skein_cli("topic", "describe", topic, bootstrap=ctl)
    assert proc.returncode == 0 and "ELR" in proc.stdout and "LAST-KNOWN-ELR" in proc.stdout, proc.stdout

    # Apache Kafka's kafka-topics shows it too (it describes topics with api 75).
    libs = kafka_libs()
    if libs is None:
        kafka_checked = "skipped: Apache Kafka's jars are not available (scripts/kafka-reference fetch failed)"
    else:
        rc, out = kafka_topics_describe(libs, ctl, topic)
        assert rc == 0, out
        line = next((l for l in out.splitlines() if "Partition: 0" in l), None)
        assert line is not None, out
        assert "Elr: 3" in line, out
        assert "Isr: 2" in line, out
        kafka_checked = "kafka-topics --describe shows Elr: 3"

    # The last ISR member dies. The ISR empties (2 joins the ELR), the partition waits.
    epoch_before = partition_elr(ctl, topic)["epoch"]
    c.kill9(2)
    p = wait_elr(ctl, topic, lambda p: p["leader"] == -1, "partition leaderless")
    assert p["isr"] == [] and sorted(p["elr"]) == [2, 3], p
    assert p["error"] == LEADER_NOT_AVAILABLE, p

    # 3, an ELR member, returns: it leads alone, 2 stays eligible.
    c.restart(3)
    p = wait_elr(ctl, topic, lambda p: p["leader"] == 3, "ELR member 3 leads")
    assert p["isr"] == [3] and p["elr"] == [2], p
    assert p["epoch"] > epoch_before, p
    # 4 returns and catches up: the ISR reaches the minimum, the ELR is cleared, acks=all
    # works again.
    c.restart(4)
    p = wait_elr(ctl, topic, lambda p: sorted(p["isr"]) == [3, 4], "ISR [3, 4]")
    assert p["elr"] == [] and p["last_known_elr"] == [], p
    d, failed = produce(c.bootstrap_all(exclude=(2,)), topic, 0, [f"d{i}" for i in range(10)], acks="all")
    assert not failed and sorted(d.values()) == list(range(40, 50)), (d, failed)
    acked.update(d)

    # Nothing acknowledged is lost: every record at the offset it was acknowledged with.
    records = dict(read_all(c.bootstrap_all(exclude=(2,)), topic, 0))
    for value, offset in acked.items():
        assert records.get(offset) == value, (offset, value, records.get(offset))
    assert len(records) == 50, sorted(records)
    # 2 comes back as a follower of 3 and rejoins.
    c.restart(2)
    wait_state(ctl, topic, lambda s: sorted(s[0][3]) == [2, 3, 4], "full ISR again")
    print(kafka_checked)


def test_an_unclean_shutdown_leaves_the_elr_without_fsync(start_cluster):
    c = start_cluster(sets=["skein.acks.all.fsync=false"])
    ctl = c[1].bootstrap
    topic = "elr-unclean"
    create_assigned(ctl, topic, [[2, 3, 4]], config={"min.insync.replicas": "2"})
    wait_state(ctl, topic, lambda s: sorted(s[0][3]) == [2, 3, 4] and s[0][0] == 2, "leader 2, full ISR")
    acked, failed = produce(c.bootstrap_all(), topic, 0, [f"a{i}" for i in range(10)], acks="all")
    assert not failed and sorted(acked.values()) == list(range(10)), (acked, failed)

    c.stop(4)
    wait_state(ctl, topic, lambda s: sorted(s[0][3]) == [2, 3], "ISR [2, 3]")
    # 3 is killed: without fsync before acks its page cache may have lost records.
    c.kill9(3)
    p = wait_elr(ctl, topic, lambda p: p["isr"] == [2], "ISR [2]")
    assert p["elr"] == [3], p
    c.kill9(2)
    p = wait_elr(ctl, topic, lambda p: p["leader"] == -1, "partition leaderless")
    assert p["isr"] == [] and sorted(p["elr"]) == [2, 3], p

    # 3 returns after its unclean shutdown: out of the ELR, into the last known ELR, and it
    # may not lead.
    c.restart(3)
    p = wait_elr(ctl, topic, lambda p: p["last_known_elr"] == [3], "3 in the last known ELR")
    assert p["elr"] == [2] and p["leader"] == -1 and p["isr"] == [], p
    # 4 (stopped cleanly, but never eligible) returns: still no leader.
    c.restart(4)
    wait_until(lambda: partition_elr(ctl, topic)["offline"] == [2] or None, WAIT_S, "3 and 4 online")
    p = partition_elr(ctl, topic)
    assert p["leader"] == -1 and p["elr"] == [2], p

    # Only an unclean election brings it back; it clears the ELR and the last known ELR.
    assert elect(ctl, ElectionType.UNCLEAN, [(topic, 0)]) == {(topic, 0): 0}
    p = wait_elr(ctl, topic, lambda p: p["leader"] in (3, 4), "an unclean leader")
    assert p["elr"] == [] and p["last_known_elr"] == [], p


def test_describe_topic_partitions_pages_with_a_cursor(start_cluster):
    c = start_cluster()
    ctl = c[1].bootstrap
    create_assigned(ctl, "page-a", [[2, 3, 4]] * 3)
    create_assigned(ctl, "page-b", [[3, 4, 2]] * 2)
    wait_state(ctl, "page-b", lambda s: len(s) == 2 and all(len(v[3]) == 3 for v in s.values()), "page-b in sync")
    topics, cursor = describe_topic_partitions(ctl, ["page-b", "page-a", "zz-nope"], limit=2)
    assert [(e, n, sorted(ps)) for e, n, ps in topics] == [(0, "page-a", [0, 1])], topics
    assert cursor == ("page-a", 2), cursor
    topics, cursor = describe_topic_partitions(ctl, ["page-b", "page-a", "zz-nope"], limit=2, cursor=cursor)
    assert [(e, n, sorted(ps)) for e, n, ps in topics] == [(0, "page-a", [2]), (0, "page-b", [0])], topics
    assert cursor == ("page-b", 1), cursor
    topics, cursor = describe_topic_partitions(ctl, ["page-b", "page-a", "zz-nope"], limit=2, cursor=cursor)
    assert [(e, n, sorted(ps)) for e, n, ps in topics] == [
        (0, "page-b", [1]),
        (UNKNOWN_TOPIC_OR_PARTITION, "zz-nope", []),
    ], topics
    assert cursor is None
    # Every topic (none named), and the ELR fields of a healthy partition are empty.
    topics, cursor = describe_topic_partitions(c[2].bootstrap, [])
    names = [n for _, n, _ in topics]
    assert "page-a" in names and "page-b" in names and names == sorted(names), names
    p = dict((n, ps) for _, n, ps in topics)["page-b"][1]
    assert p["replicas"] == [3, 4, 2] and p["elr"] == [] and p["last_known_elr"] == [], p
