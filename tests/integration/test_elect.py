"""Leader elections driven by operators and policy (issue 12's operations), against real
processes: ElectLeaders through confluent-kafka's AdminClient and Apache Kafka's own
`kafka-leader-election` tool (org.apache.kafka.tools.LeaderElectionCommand, run with java),
automatic preferred-leader balancing, and unclean leader election (KIP-704).

Each test starts its own cluster (`cluster.py`) and asserts real values: leader ids, leader
epochs (raw Metadata v7), error codes, offsets. Every wait has a deadline; no fixed sleeps."""

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import wire
from confluent_kafka import ElectionType, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic

from cluster import BASE_SETS, Cluster
from helpers import future_error, wait_until
from test_replication import read_all

WAIT_S = 60.0
LAG_MS = 4000
SETS = BASE_SETS + [f"replica.lag.time.max.ms={LAG_MS}"]

ELECTION_NOT_NEEDED = 84
PREFERRED_LEADER_NOT_AVAILABLE = 80
KAFKA_VERSION = "4.1.1"


@pytest.fixture
def start_cluster(tmp_path):
    nodes, clusters = [], []

    def start(voters=3, sets=()):
        c = Cluster(tmp_path / f"cluster{len(clusters)}", voters=voters, sets=SETS + list(sets), registry=nodes)
        clusters.append(c)
        return c.start()

    yield start
    for c in clusters:
        c.close()


# -- observing -----------------------------------------------------------------------------------


def partitions_v7(bootstrap, topic, timeout=10.0):
    """{partition: (leader, leader_epoch, replicas, isr)} of `topic` from a Metadata v7 request
    answered by the first node of `bootstrap` that answers; None while none does or the topic
    is absent."""
    for address in bootstrap.split(","):
        state = partitions_v7_of(address, topic, timeout)
        if state is not None:
            return state
    return None


def partitions_v7_of(bootstrap, topic, timeout):
    try:
        body = wire.i32(1) + wire.string(topic) + wire.i8(0)
        correlation, r = wire.roundtrip(bootstrap, wire.request(3, 7, 11, body), timeout)
    except (OSError, AssertionError):
        return None
    assert correlation == 11
    r.i32()  # throttle
    for _ in range(r.i32()):
        r.i32(), r.string(), r.i32(), r.string()
    r.string()  # cluster id
    r.i32()  # controller
    out = None
    for _ in range(r.i32()):
        error, name = r.i16(), r.string()
        r.i8()
        parts = {}
        for _ in range(r.i32()):
            r.i16()
            index, leader, epoch = r.i32(), r.i32(), r.i32()
            replicas = [r.i32() for _ in range(r.i32())]
            isr = [r.i32() for _ in range(r.i32())]
            [r.i32() for _ in range(r.i32())]  # offline replicas
            parts[index] = (leader, epoch, replicas, isr)
        if name == topic and error == 0:
            out = parts
    return out


def wait_state(bootstrap, topic, cond, what):
    """Waits until cond({partition: (leader, epoch, replicas, isr)}) holds; returns the state."""
    last = {}

    def check():
        s = partitions_v7(bootstrap, topic)
        last["seen"] = s
        return s if s and cond(s) else None

    try:
        return wait_until(check, WAIT_S, what, interval=0.1)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last seen {last.get('seen')}") from None


def create_assigned(bootstrap, topic, assignment, config=None):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    fut = admin.create_topics(
        [NewTopic(topic, num_partitions=len(assignment), replica_assignment=assignment, config=dict(config or {}))], operation_timeout=30
    )[topic]
    err = future_error(fut, timeout=60)
    assert err is None, f"creating {topic}: {err}"


def full_isrs(state, rf=3):
    return all(len(isr) == rf for _, _, _, isr in state.values())


def elect(bootstrap, election, partitions):
    """{(topic, partition): error code} of an AdminClient.elect_leaders call (0: elected)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    tps = None if partitions is None else [TopicPartition(t, p) for t, p in partitions]
    # (This confluent-kafka version mishandles the timeout keywords of elect_leaders.)
    result = admin.elect_leaders(election, tps).result(90)
    codes = {}
    for tp, e in result.items():
        # A KafkaError (or a KafkaException wrapping one) for a failed partition.
        e = e.args[0] if isinstance(e, Exception) else e
        codes[(tp.topic, tp.partition)] = 0 if e is None else e.code()
    return codes


def produce(bootstrap, topic, partition, values, acks):
    p = Producer({"bootstrap.servers": bootstrap, "acks": acks, "linger.ms": 5, "message.timeout.ms": 30000})
    acked, failed = {}, {}

    def report(err, msg):
        (failed if err else acked)[msg.value().decode()] = err or msg.offset()

    for v in values:
        p.produce(topic, v.encode(), partition=partition, on_delivery=report)
        p.poll(0)
    assert p.flush(60) == 0
    return acked, failed


# -- Apache Kafka's kafka-leader-election ----------------------------------------------------------


def kafka_libs():
    cache = Path(os.environ.get("SKEIN_CACHE", Path.home() / ".cache" / "skein"))
    libs = cache / f"kafka-{KAFKA_VERSION}" / "libs"
    if not (libs / f"kafka-tools-{KAFKA_VERSION}.jar").exists():
        repo = Path(__file__).resolve().parents[2]
        subprocess.run([str(repo / "scripts" / "kafka-reference"), "fetch"], capture_output=True, timeout=900)
    return libs if (libs / f"kafka-tools-{KAFKA_VERSION}.jar").exists() else None


def leader_election_tool(libs, bootstrap, *args):
    java = shutil.which("java")
    jdk17 = Path("/usr/lib/jvm/java-17-openjdk-amd64/bin/java")
    if jdk17.exists():
        java = str(jdk17)
    proc = subprocess.run(
        [java, "-cp", f"{libs}/*", "org.apache.kafka.tools.LeaderElectionCommand", "--bootstrap-server", bootstrap, *args],
        capture_output=True,
        text=True,
        timeout=180,
    )
    return proc.returncode, proc.stdout + proc.stderr


# -- tests ---------------------------------------------------------------------------------------


def test_preferred_election_with_the_admin_client_and_kafka_leader_election(start_cluster):
    c = start_cluster(sets=["auto.leader.rebalance.enable=false"])
    b = c.bootstrap_all()
    topic = "pref"
    create_assigned(b, topic, [[1, 2, 3], [2, 3, 1]])
    state = wait_state(b, topic, lambda s: full_isrs(s) and s[0][0] == 1 and s[1][0] == 2, "leaders 1 and 2, full ISRs")
    epoch0 = state[0][1]

    def move_away_from_1():
        # A restart of broker 1 (controlled shutdown) hands partition 0 to another ISR member;
        # broker 1 comes back as a follower and rejoins the ISR.
        c.restart(1)
        s = wait_state(b, topic, lambda s: full_isrs(s) and s[0][0] in (2, 3), "partition 0 led by 2 or 3, ISR full again")
        assert s[1][0] == 2, s  # partition 1 kept its preferred leader
        return s

    moved = move_away_from_1()
    assert moved[0][1] > epoch0, moved

    # confluent-kafka: partition 0 elected, partition 1 not needed.
    results = elect(b, ElectionType.PREFERRED, [(topic, 0), (topic, 1)])
    assert results == {(topic, 0): 0, (topic, 1): ELECTION_NOT_NEEDED}, results
    after = wait_state(b, topic, lambda s: s[0][0] == 1, "partition 0 led by broker 1 again")
    assert after[0][1] == moved[0][1] + 1, (moved, after)
    assert after[1][:2] == moved[1][:2], (moved, after)
    assert elect(b, ElectionType.PREFERRED, [(topic, 0)]) == {(topic, 0): ELECTION_NOT_NEEDED}
    # All partitions (null list): nothing to do, and Kafka leaves those out of the answer.
    assert elect(b, ElectionType.PREFERRED, None) == {}
    # An unknown partition.
    assert elect(b, ElectionType.PREFERRED, [(topic, 7)]) == {(topic, 7): KafkaError.UNKNOWN_TOPIC_OR_PART}

    # The preferred replica down: PREFERRED_LEADER_NOT_AVAILABLE.
    c.stop(1)
    wait_state(c.bootstrap_all(), topic, lambda s: s[0][0] in (2, 3) and 1 not in s[0][3], "broker 1 out of partition 0's ISR")
    assert elect(c.bootstrap_all(), ElectionType.PREFERRED, [(topic, 0)]) == {(topic, 0): PREFERRED_LEADER_NOT_AVAILABLE}
    c.restart(1)
    wait_state(b, topic, full_isrs, "broker 1 back in every ISR")

    # Apache Kafka's own tool against Skein.
    libs = kafka_libs()
    if libs is None:
        pytest.skip("Apache Kafka's kafka-tools jar is not available (scripts/kafka-reference fetch failed); the AdminClient part passed")
    moved = move_away_from_1() if wait_state(b, topic, full_isrs, "full ISRs")[0][0] == 1 else partitions_v7(b, topic)
    rc, out = leader_election_tool(libs, b, "--election-type", "PREFERRED", "--topic", topic, "--partition", "0")
    assert rc == 0 and f"Successfully completed leader election (PREFERRED) for partitions {topic}-0" in out, out
    after = wait_state(b, topic, lambda s: s[0][0] == 1, "partition 0 led by broker 1 after kafka-leader-election")
    assert after[0][1] == moved[0][1] + 1, (moved, after)
    rc, out = leader_election_tool(libs, b, "--election-type", "PREFERRED", "--topic", topic, "--partition", "1")
    assert rc == 0 and f"Valid replica already elected for partitions {topic}-1" in out, out
    rc, out = leader_election_tool(libs, b, "--election-type", "PREFERRED", "--all-topic-partitions")
    assert rc == 0, out


def test_automatic_balancing_moves_leadership_back_without_an_admin_call(start_cluster):
    c = start_cluster(sets=["leader.imbalance.check.interval.seconds=1", "leader.imbalance.per.broker.percentage=10"])
    b = c.bootstrap_all()
    topic = "balanced"
    create_assigned(b, topic, [[1, 2, 3], [1, 3, 2], [2, 3, 1]])
    before = wait_state(b, topic, lambda s: full_isrs(s) and [s[p][0] for p in range(3)] == [1, 1, 2], "preferred leaders")
    c.stop(1)
    away = wait_state(c.bootstrap_all(), topic, lambda s: s[0][0] not in (-1, 1) and s[1][0] not in (-1, 1), "partitions 0 and 1 led elsewhere")
    c.restart(1)
    # No admin call: the controller's balancing moves both back once broker 1 is in the ISRs.
    back = wait_state(b, topic, lambda s: full_isrs(s) and [s[p][0] for p in range(3)] == [1, 1, 2], "leadership back on broker 1")
    for p in (0, 1):
        assert back[p][1] > away[p][1] > before[p][1], (before, away, back)
    assert back[2][1] == before[2][1], (before, back)


def test_unclean_election_only_when_allowed_and_the_lost_suffix_is_gone(start_cluster):
    # One controller (node 1) and three broker-only nodes holding the topic, so that two
    # replicas can be down while the quorum stays up.
    c = start_cluster(voters=1, sets=["auto.leader.rebalance.enable=false"])
    for i in (2, 3, 4):
        c.add_broker(i)
    ctl = c[1].bootstrap
    topic = "unclean"
    create_assigned(ctl, topic, [[2, 3, 4], [2, 4, 3]], config={"min.insync.replicas": "1"})
    wait_state(ctl, topic, lambda s: full_isrs(s) and s[0][0] == 2 and s[1][0] == 2, "leader 2, full ISRs")
    committed = {}
    for p in (0, 1):
        acked, failed = produce(c.bootstrap_all(), topic, p, [f"p{p}-safe{i}" for i in range(5)], acks="all")
        assert not failed and sorted(acked.values()) == list(range(5)), (acked, failed)
        committed[p] = acked
    # The followers go (controlled shutdown): the ISR shrinks to the leader, which takes more
    # writes with acks=1 that only it has.
    c.stop(3)
    c.stop(4)
    shrunk = wait_state(ctl, topic, lambda s: all(s[p][3] == [2] for p in (0, 1)), "ISRs shrunk to [2]")
    for p in (0, 1):
        acked, failed = produce(c[2].bootstrap, topic, p, [f"p{p}-lost{i}" for i in range(5)], acks="1")
        assert not failed and sorted(acked.values()) == list(range(5, 10)), (acked, failed)
    # The leader dies; the others return. Unclean elections are off: the partitions wait,
    # leaderless, for broker 2 (with KIP-966's ELR, on by default, the ISR empties and 2 is
    # the one eligible leader replica; 3 and 4 left the ISR while it was at the minimum).
    c.kill9(2)
    c.restart(3)
    c.restart(4)
    offline = wait_state(ctl, topic, lambda s: all(s[p][0] == -1 and s[p][3] == [] for p in (0, 1)), "both partitions leaderless")
    p = Producer({"bootstrap.servers": ctl, "acks": "all", "message.timeout.ms": 3000, "retries": 0})
    errors = []
    p.produce(topic, b"refused", partition=0, on_delivery=lambda err, msg: errors.append(err))
    assert p.flush(30) == 0
    assert errors and errors[0] is not None, errors
    still = partitions_v7(ctl, topic)
    assert all(still[q][0] == -1 for q in (0, 1)), still

    # ElectLeaders UNCLEAN on partition 1 (allowed whatever the config, as in Kafka): the
    # first live replica (4) leads alone, in a new epoch.
    assert elect(ctl, ElectionType.UNCLEAN, [(topic, 1)]) == {(topic, 1): 0}
    s = wait_state(ctl, topic, lambda s: s[1][0] == 4, "partition 1 led by broker 4")
    assert s[1][1] == offline[1][1] + 1, (offline, s)
    assert s[0][0] == -1, s  # partition 0 still waits
    # Turning the config on elects partition 0's first live replica (3).
    admin = AdminClient({"bootstrap.servers": ctl})
    res = ConfigResource(
        ConfigResource.Type.TOPIC,
        topic,
        incremental_configs=[ConfigEntry("unclean.leader.election.enable", "true", incremental_operation=AlterConfigOpType.SET)],
    )
    admin.incremental_alter_configs([res])[res].result(60)
    s = wait_state(ctl, topic, lambda s: s[0][0] == 3, "partition 0 led by broker 3")
    assert s[0][1] == offline[0][1] + 1, (offline, s)
    # Once recovered (RECOVERED reported), the other live replica rejoins the ISR.
    wait_state(ctl, topic, lambda s: sorted(s[0][3]) == [3, 4] and sorted(s[1][3]) == [3, 4], "ISRs [3, 4]")
    # Serving again: the records only the dead leader had are gone; new ones take their offsets.
    b = c.bootstrap_all()
    for q in (0, 1):
        records = read_all(b, topic, q)
        assert records == [(i, f"p{q}-safe{i}") for i in range(5)], records
        acked, failed = produce(b, topic, q, [f"p{q}-new{i}" for i in range(3)], acks="all")
        assert not failed and sorted(acked.values()) == [5, 6, 7], (acked, failed)
    assert shrunk[0][2] == [2, 3, 4]
    # The cluster-wide dynamic default (broker resource "", which librdkafka cannot name, so
    # a raw IncrementalAlterConfigs v0) is settable too, as in Kafka; a key that is not
    # dynamic in Skein is still refused.
    assert alter_cluster_default(ctl, "unclean.leader.election.enable", "false") == (0, None)
    code, message = alter_cluster_default(ctl, "num.partitions", "5")
    assert code == KafkaError.INVALID_REQUEST, (code, message)


def alter_cluster_default(bootstrap, key, value):
    """(error code, message) of IncrementalAlterConfigs v0 SET `key`=`value` on broker ""."""
    body = (
        wire.i32(1) + wire.i8(4) + wire.string("")
        + wire.i32(1) + wire.string(key) + wire.i8(0) + wire.string(value)
        + wire.i8(0)
    )
    correlation, r = wire.roundtrip(bootstrap, wire.request(44, 0, 13, body), 60.0)
    assert correlation == 13
    r.i32()
    assert r.i32() == 1
    code, message = r.i16(), r.string()
    assert (r.i8(), r.string()) == (4, "")
    return code, message
