"""Replication (issue 12) against real processes: three nodes on loopback, topics with three
replicas, real clients (confluent-kafka / librdkafka) producing with acks=all.

Each test starts its own cluster (`cluster.py`); every record a client saw acknowledged must
be read back, once, at the offset it was acknowledged with, and the replicas' logs must end
up byte for byte the same."""

import time
import urllib.request
from pathlib import Path

import pytest
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic

from cluster import BASE_SETS, Cluster, cli_json, create_topics, try_metadata_of
from helpers import wait_until
from history import History, assert_history_ok
from netns import Lab, NetnsCluster, netns_available
from workload import ProducerWorkload, read_back

WAIT_S = 60.0
# A follower that stops fetching leaves the ISR after this long (Kafka's default is 30 s).
LAG_MS = 4000
SETS = BASE_SETS + [f"replica.lag.time.max.ms={LAG_MS}", "group.initial.rebalance.delay.ms=0"]


@pytest.fixture
def cluster(tmp_path):
    nodes = []
    c = Cluster(tmp_path / "cluster", voters=3, sets=SETS, registry=nodes)
    c.start()
    yield c
    c.close()


def partition_info(bootstrap, topic, partition):
    md = try_metadata_of(bootstrap)
    if md is None:
        return None
    parts = md.topics.get(topic)
    if not parts or "error" in parts:
        return None
    return parts.get(partition)


def produce(bootstrap, topic, values, partition=0, acks="all"):
    """Produces `values` (idempotent, acks=all) and returns {value: offset} of the ones
    acknowledged, and {value: error} of the others."""
    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": acks,
            "linger.ms": 5,
            "message.timeout.ms": 60000,
        }
    )
    acked, failed = {}, {}

    def report(err, msg):
        v = msg.value().decode()
        if err is None:
            acked[v] = msg.offset()
        else:
            failed[v] = err

    for v in values:
        p.produce(topic, v.encode(), partition=partition, on_delivery=report)
        p.poll(0)
    remaining = p.flush(90)
    assert remaining == 0, f"{remaining} records still unanswered after 90 s"
    return acked, failed


def watermarks(consumer, tp):
    """(low, high) of `tp`, or None while a new leader withholds its latest offset until its
    followers confirm its epoch (OFFSET_NOT_AVAILABLE, KIP-207, as Kafka answers)."""
    try:
        return consumer.get_watermark_offsets(tp, timeout=30)
    except KafkaException as e:
        if e.args[0].code() == KafkaError.OFFSET_NOT_AVAILABLE:
            return None
        raise


def read_all(bootstrap, topic, partition=0, timeout=WAIT_S):
    """Every record of the partition up to its high watermark: [(offset, value)]."""
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"read-{time.monotonic_ns()}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        tp = TopicPartition(topic, partition)
        _, high = wait_until(lambda: watermarks(c, tp), WAIT_S, f"the watermarks of {topic}-{partition}")
        c.assign([TopicPartition(topic, partition, 0)])
        out = []
        deadline = time.monotonic() + timeout
        while (out[-1][0] + 1 if out else 0) < high:
            assert time.monotonic() < deadline, f"read {len(out)} of {high} records of {topic}-{partition}"
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise AssertionError(f"consumer error: {m.error()}")
            out.append((m.offset(), m.value().decode()))
        return out
    finally:
        c.close()


def log_bytes(node, topic, partition):
    """The partition's records as one byte string: its segment files, in offset order."""
    d = Path(node.data_dir) / f"{topic}-{partition}"
    return b"".join(f.read_bytes() for f in sorted(d.glob("*.log")))


def metrics_text(http):
    with urllib.request.urlopen(f"http://{http}/metrics", timeout=10) as r:
        return r.read().decode()


def sample(text, name, **labels):
    """The value of the sample `name` whose labels include `labels`; fails if absent."""
    want = [f'{k}="{v}"' for k, v in labels.items()]
    for line in text.splitlines():
        if line.startswith(name) and line[len(name):len(name) + 1] in (" ", "{"):
            head, value = line.rsplit(" ", 1)
            if all(w in head for w in want):
                return float(value)
    raise AssertionError(f"no sample {name} {labels} in /metrics")


def assert_not_enough_replicas(bootstrap, topic):
    """One acks=all write without retries to partition 0 gets NOT_ENOUGH_REPLICAS."""
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": False,
                  "retries": 0, "message.timeout.ms": 10000})
    errors = []
    p.produce(topic, b"refused", partition=0, on_delivery=lambda err, msg: errors.append(err))
    assert p.flush(30) == 0
    assert errors and errors[0] is not None and errors[0].code() == KafkaError.NOT_ENOUGH_REPLICAS, errors


def check_read_back(records, acked):
    offsets = {}
    for offset, value in records:
        assert value not in offsets, f"{value} read twice, at {offsets[value]} and {offset}"
        offsets[value] = offset
    lost = {v: o for v, o in acked.items() if offsets.get(v) != o}
    assert not lost, f"{len(lost)} acknowledged records missing or moved, e.g. {sorted(lost.items())[:5]} (read at {[offsets.get(v) for v in sorted(lost)[:5]]})"


def replicated_topic(cluster, topic, partitions=None):
    """An RF=3, min.insync.replicas=2 topic (FAULT_PARTITIONS partitions unless given) with
    every ISR full; returns {partition: info}."""
    partitions = partitions or FAULT_PARTITIONS
    b = cluster.bootstrap_all()
    create_topics(b, {topic: partitions}, replication_factor=3, config={"min.insync.replicas": "2"})
    one = b.split(",")[0]

    def full():
        infos = {p: partition_info(one, topic, p) for p in range(partitions)}
        return all(i and len(i.isr) == 3 for i in infos.values()) and infos

    return wait_until(full, WAIT_S, f"{topic}: three replicas in every ISR")


def test_three_replicas_follow_the_leader_and_survive_its_kill9(cluster):
    b = cluster.bootstrap_all()
    topic = "replicated"
    info = replicated_topic(cluster, topic, partitions=1)[0]
    assert sorted(info.replicas) == [1, 2, 3], info

    acked, failed = produce(b, topic, [f"a{i}" for i in range(2000)])
    assert not failed and len(acked) == 2000, failed
    assert sorted(acked.values()) == list(range(2000))

    # Every replica gets the same bytes (the leader's batches, at the leader's offsets).
    leader = info.leader
    def replicas_equal():
        logs = [log_bytes(cluster[n], topic, 0) for n in (1, 2, 3)]
        return len(logs[0]) > 0 and logs[0] == logs[1] == logs[2]
    wait_until(replicas_equal, WAIT_S, "three identical copies of the log")

    # kill -9 of the leader: a new one is elected from the ISR, and nothing acknowledged is lost.
    cluster.kill9(leader)
    survivor = cluster.bootstrap_all(exclude=(leader,))
    one = survivor.split(",")[0]
    new = wait_until(
        lambda: (i := partition_info(one, topic, 0)) and i.leader not in (-1, leader) and i,
        WAIT_S,
        "a new leader after the kill",
    )
    assert new.leader in info.isr, new
    acked2, failed2 = produce(survivor, topic, [f"b{i}" for i in range(1000)])
    assert not failed2 and len(acked2) == 1000, failed2
    records = read_all(survivor, topic)
    check_read_back(records, {**acked, **acked2})
    assert len(records) == 3000

    # The killed node comes back as a follower, catches up and rejoins the ISR.
    cluster.restart(leader)
    wait_until(
        lambda: (i := partition_info(one, topic, 0)) and len(i.isr) == 3,
        WAIT_S,
        "the restarted node back in the ISR",
    )
    wait_until(replicas_equal, WAIT_S, "three identical copies after the restart")


def test_acks_all_needs_min_insync_replicas(cluster):
    topic = "min-isr"
    info = replicated_topic(cluster, topic, partitions=1)[0]
    followers = [n for n in info.replicas if n != info.leader]
    lb = cluster[info.leader].address
    # A first record, acknowledged once both followers have it (so both have fetched).
    first, failed = produce(lb, topic, ["c-first"])
    assert first == {"c-first": 0}, (first, failed)
    # One follower down: the ISR shrinks to two and acks=all goes on.
    cluster.kill9(followers[0])
    wait_until(
        lambda: (i := partition_info(lb, topic, 0)) and len(i.isr) == 2,
        WAIT_S,
        "the ISR shrunk to two",
    )
    acked, failed = produce(lb, topic, [f"c{i}" for i in range(200)])
    assert not failed and len(acked) == 200, failed
    # `skein topic describe` says so, as Kafka's --under-replicated-partitions would.
    rc, out, proc = cli_json("topic", "describe", topic, bootstrap=lb)
    assert rc == 0 and out["partitions"][0]["status"] == "under-replicated", proc
    # The leader reports it: an under-replicated partition, and the dead follower's lag.
    text = metrics_text(cluster[info.leader].http)
    assert sample(text, "skein_under_replicated_partitions") >= 1, text
    lag = sample(text, "skein_replica_lag_records", topic=topic, partition="0", replica=str(followers[0]))
    assert lag >= 200, lag
    assert sample(text, "skein_replica_lag_records", topic=topic, partition="0", replica=str(followers[1])) == 0
    # Fewer in-sync replicas than min.insync.replicas: NOT_ENOUGH_REPLICAS, nothing written.
    # (Two of these three nodes down would also take the controller quorum down, and with it
    # the ISR change, so the shrunk ISR is compared with a raised min.insync.replicas.)
    admin = AdminClient({"bootstrap.servers": lb})
    res = ConfigResource(
        ConfigResource.Type.TOPIC,
        topic,
        incremental_configs=[
            ConfigEntry("min.insync.replicas", "3", incremental_operation=AlterConfigOpType.SET)
        ],
    )
    admin.incremental_alter_configs([res])[res].result(30)
    assert sample(metrics_text(cluster[info.leader].http), "skein_under_min_isr_partitions") >= 1
    rc, out, proc = cli_json("topic", "describe", topic, bootstrap=lb)
    assert rc == 0 and out["partitions"][0]["status"] == "under-min-isr", proc
    assert_not_enough_replicas(lb, topic)
    # The follower returns: the ISR grows back, writes go on, and nothing was lost.
    cluster.restart(followers[0])
    wait_until(
        lambda: (i := partition_info(lb, topic, 0)) and len(i.isr) == 3,
        WAIT_S,
        "the ISR back to three",
    )
    acked2, failed2 = produce(lb, topic, [f"d{i}" for i in range(100)])
    assert not failed2 and len(acked2) == 100, failed2
    records = read_all(lb, topic)
    check_read_back(records, {**first, **acked, **acked2})
    assert [v for _, v in records] == ["c-first"] + [f"c{i}" for i in range(200)] + [f"d{i}" for i in range(100)]


# -- faults under load, judged by the history checker -------------------------------------------

FAULT_PARTITIONS = 3


def wait_full_isr(cluster, topic, exclude=()):
    b = cluster.bootstrap_all(exclude=exclude).split(",")[0]
    wait_until(
        lambda: all(
            (i := partition_info(b, topic, p)) and len(i.isr) == 3 for p in range(FAULT_PARTITIONS)
        ),
        WAIT_S,
        f"{topic}: every ISR back to three",
    )


def judge(cluster, topic, h, tmp_path, min_acknowledged):
    read_back(cluster.bootstrap_all(), topic, h)
    result = assert_history_ok(h, min_acknowledged=min_acknowledged, save_to=tmp_path / "history.json")
    assert result.lost == 0 and result.duplicated == 0, result.summary()
    return result


def leader_fault_under_load(cluster, tmp_path, topic, fault, recover):
    """Idempotent acks=all load on an RF=3 topic while `fault(victim)` strikes the leader of
    partition 0 and `recover(victim)` undoes it; the history must show no loss, no
    duplicate and a leader change on partition 0. Returns the history and the position of
    the fault in it."""
    infos = replicated_topic(cluster, topic)
    victim = infos[0].leader
    h = History()
    with ProducerWorkload(cluster.bootstrap_all(), topic, h, client="p0", rate_per_s=400) as p:
        p.wait_acknowledged(800, timeout=WAIT_S)
        struck_at = h.mark()
        fault(victim)
        p.wait_more_acknowledged(800, timeout=120)
        recover(victim)
        wait_full_isr(cluster, topic)
        p.wait_more_acknowledged(400, timeout=WAIT_S)
    judge(cluster, topic, h, tmp_path, 2000)
    epochs = h.leader_epochs(topic, 0)
    assert len(epochs) >= 2, f"no leader change was seen on partition 0: {epochs}"
    return h, struck_at


def wait_new_leader(cluster, topic, victim, what):
    others = cluster.bootstrap_all(exclude=(victim,)).split(",")[0]
    wait_until(
        lambda: (i := partition_info(others, topic, 0)) and i.leader not in (-1, victim),
        WAIT_S,
        what,
    )


def test_kill9_of_a_leader_under_load_loses_nothing(cluster, tmp_path):
    leader_fault_under_load(cluster, tmp_path, "fault-kill9", cluster.kill9, cluster.restart)


def test_sigstop_of_a_leader_past_its_session_loses_nothing(cluster, tmp_path):
    def pause(victim):
        # Paused past broker.session.timeout.ms: fenced, its leaderships move.
        cluster.sigstop(victim)
        wait_new_leader(cluster, "fault-sigstop", victim, "a new leader while the old one is paused")

    # Resumed, the old leader comes back as a follower (it truncates what it wrote alone,
    # if anything) and rejoins every ISR.
    leader_fault_under_load(cluster, tmp_path, "fault-sigstop", pause, cluster.sigcont)


def test_rolling_restart_of_every_node_loses_nothing(cluster, tmp_path):
    topic = "fault-rolling"
    replicated_topic(cluster, topic)
    h = History()
    with ProducerWorkload(cluster.bootstrap_all(), topic, h, client="p0", rate_per_s=400) as p:
        p.wait_acknowledged(500, timeout=WAIT_S)
        for node in (1, 2, 3):
            cluster.restart(node)  # SIGTERM: a controlled shutdown, then start again
            wait_full_isr(cluster, topic)
            p.wait_more_acknowledged(300, timeout=120)
    judge(cluster, topic, h, tmp_path, 1400)
    assert any(len(h.leader_epochs(topic, p)) >= 2 for p in range(FAULT_PARTITIONS)), "no leader change"


def test_a_group_keeps_its_committed_offsets_when_its_coordinator_is_killed(cluster):
    b = cluster.bootstrap_all()
    topic = "grouped"
    replicated_topic(cluster, topic)
    acked, failed = produce(b, topic, [f"g{i}" for i in range(300)], partition=0)
    assert not failed and len(acked) == 300
    group = "survivors"
    c = Consumer({"bootstrap.servers": b, "group.id": group, "enable.auto.commit": False,
                  "auto.offset.reset": "earliest"})
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        seen = []
        deadline = time.monotonic() + WAIT_S
        while len(seen) < 120:
            assert time.monotonic() < deadline, f"read {len(seen)} of 120"
            m = c.poll(0.5)
            if m is not None and not m.error():
                seen.append(m.offset())
        c.commit(offsets=[TopicPartition(topic, 0, 120)], asynchronous=False)
    finally:
        c.close()
    admin = AdminClient({"bootstrap.servers": b})
    desc = admin.describe_consumer_groups([group])[group].result(30)
    coordinator = desc.coordinator.id
    cluster.kill9(coordinator)
    survivors = cluster.bootstrap_all(exclude=(coordinator,))
    admin = AdminClient({"bootstrap.servers": survivors})

    def committed():
        try:
            req = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, 0)])
            res = admin.list_consumer_group_offsets([req])[group].result(10)
            return {tp.partition: tp.offset for tp in res.topic_partitions}
        except Exception:  # the coordinator moves: retried until the deadline
            return None

    got = wait_until(lambda: (r := committed()) and r.get(0, -1) >= 0 and r, WAIT_S,
                     "the committed offset from the new coordinator")
    assert got == {0: 120}, got
    new_coordinator = admin.describe_consumer_groups([group])[group].result(30).coordinator.id
    assert new_coordinator != coordinator
    # A member that joins now starts where the group left off.
    c = Consumer({"bootstrap.servers": survivors, "group.id": group, "enable.auto.commit": False,
                  "auto.offset.reset": "earliest"})
    try:
        c.subscribe([topic])
        deadline = time.monotonic() + WAIT_S
        first = None
        while first is None:
            assert time.monotonic() < deadline, "no record after rejoining"
            m = c.poll(0.5)
            if m is not None and not m.error() and m.partition() == 0:
                first = m.offset()
        assert first == 120, first
    finally:
        c.close()


# -- a leader cut off from the other nodes while its clients still reach it -------------------


@pytest.fixture
def netns_cluster(tmp_path):
    why = netns_available()
    if why is not None:
        pytest.skip(f"needs network namespaces: {why}")
    lab = Lab([1, 2, 3])
    nodes = []
    c = NetnsCluster(tmp_path / "cluster", lab, voters=3, sets=SETS, registry=nodes)
    try:
        c.start()
        yield c
        lab.heal()
        c.close()
    finally:
        for n in nodes:
            n.kill9()
        lab.close()


def test_a_leader_cut_off_from_its_followers_acknowledges_nothing_more(netns_cluster, tmp_path):
    cluster = netns_cluster
    topic = "fault-cut"

    def cut(victim):
        # The majority fences the cut-off node and elects a new leader of partition 0; the
        # producer's writes go on there.
        cluster.lab.cut(victim)
        wait_new_leader(cluster, topic, victim, "a new leader on the majority side")

    h, cut_at = leader_fault_under_load(cluster, tmp_path, topic, cut, lambda _: cluster.lab.heal())
    # Nothing sent after the cut was acknowledged by the cut-off leader: every such record
    # is in the final log (checked) and, where the client reported epochs, in a newer
    # leader epoch than the one the cut-off node led in.
    epochs = h.leader_epochs(topic, 0)
    late = [s for s in h.acknowledged(topic) if s.partition == 0 and s.sent_at > cut_at]
    assert late, "nothing was acknowledged on partition 0 after the cut"
    stale = [s for s in late if s.leader_epoch is not None and s.leader_epoch == min(epochs)]
    assert not stale, f"{len(stale)} writes sent after the cut were acknowledged in the old epoch, e.g. {stale[:3]}"


def test_two_of_three_replicas_down_refuses_acks_all_and_loses_nothing(tmp_path):
    """Three voters plus three broker-only nodes holding the topic's replicas, so that two
    replicas can go down while the controller quorum stays up (with three combined nodes,
    two down would take the quorum, and with it any ISR change, down too)."""
    nodes = []
    cluster = Cluster(tmp_path / "cluster", voters=3, sets=SETS, registry=nodes)
    cluster.start()
    try:
        for i in (4, 5, 6):
            cluster.add_broker(i)
        b = cluster.bootstrap_all()
        topic = "two-down"
        admin = AdminClient({"bootstrap.servers": b})
        futures = admin.create_topics(
            [NewTopic(topic, num_partitions=1, replica_assignment=[[4, 5, 6]], config={"min.insync.replicas": "2"})],
            operation_timeout=30,
        )
        futures[topic].result(60)
        lb = cluster[4].address
        info = wait_until(
            lambda: (i := partition_info(lb, topic, 0)) and len(i.isr) == 3 and i,
            WAIT_S,
            "the replicas on 4, 5, 6 in the ISR",
        )
        assert info.replicas == [4, 5, 6] and info.leader == 4, info
        acked, failed = produce(lb, topic, [f"e{i}" for i in range(200)])
        assert not failed and len(acked) == 200, failed
        # One down: the ISR shrinks to two and acks=all goes on.
        cluster.kill9(5)
        wait_until(lambda: (i := partition_info(lb, topic, 0)) and sorted(i.isr) == [4, 6],
                   WAIT_S, "the ISR shrunk to 4 and 6")
        acked2, failed2 = produce(lb, topic, [f"f{i}" for i in range(100)])
        assert not failed2 and len(acked2) == 100, failed2
        # Two down: NOT_ENOUGH_REPLICAS, nothing written.
        cluster.kill9(6)
        wait_until(lambda: (i := partition_info(lb, topic, 0)) and i.isr == [4],
                   WAIT_S, "the ISR shrunk to the leader")
        assert_not_enough_replicas(lb, topic)
        # They return: the ISR grows back, and every acknowledged record is there, once.
        cluster.restart(5)
        cluster.restart(6)
        wait_until(lambda: (i := partition_info(lb, topic, 0)) and len(i.isr) == 3,
                   WAIT_S, "the ISR back to three")
        records = read_all(lb, topic)
        check_read_back(records, {**acked, **acked2})
        assert [v for _, v in records] == [f"e{i}" for i in range(200)] + [f"f{i}" for i in range(100)]
    finally:
        cluster.close()


def test_followers_follow_the_leaders_log_start(cluster):
    b = cluster.bootstrap_all()
    topic = "deleted-records"
    info = replicated_topic(cluster, topic, partitions=1)[0]
    acked, failed = produce(b, topic, [f"h{i}" for i in range(500)])
    assert not failed and len(acked) == 500
    admin = AdminClient({"bootstrap.servers": b})
    tp = TopicPartition(topic, 0, 200)
    admin.delete_records([tp])[tp].result(30)
    # The followers raise their log start too: after the leader's kill -9, the new leader
    # starts at 200, and what remains is intact.
    acked2, failed2 = produce(b, topic, [f"i{i}" for i in range(10)])
    assert not failed2
    cluster.kill9(info.leader)
    survivors = cluster.bootstrap_all(exclude=(info.leader,))
    one = survivors.split(",")[0]
    wait_until(
        lambda: (i := partition_info(one, topic, 0)) and i.leader not in (-1, info.leader),
        WAIT_S,
        "a new leader",
    )
    c = Consumer({"bootstrap.servers": survivors, "group.id": "low-watermark"})
    try:
        # The new leader exposes the high watermark once its follower confirmed it.
        marks = wait_until(
            lambda: (m := watermarks(c, TopicPartition(topic, 0))) and m[1] == 510 and m,
            WAIT_S,
            "the new leader's high watermark at 510",
        )
    finally:
        c.close()
    assert marks == (200, 510), marks
    records = read_all(survivors, topic)
    assert [o for o, _ in records] == list(range(200, 510))
    assert [v for _, v in records] == [f"h{i}" for i in range(200, 500)] + [f"i{i}" for i in range(10)]
