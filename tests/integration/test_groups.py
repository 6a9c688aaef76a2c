"""Consumer groups through real clients: membership, rebalances, commits, restarts, admin APIs.

Most tests run twice, once per group protocol: "classic" (JoinGroup/SyncGroup/Heartbeat, the
assignment computed by the client) and "consumer" (KIP-848 ConsumerGroupHeartbeat, the
assignment computed by the broker). Each test starts its own broker with short group timers,
so a rebalance takes about a second and a dead member is noticed after six.
"""

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import (
    Consumer,
    ConsumerGroupState,
    ConsumerGroupTopicPartitions,
    ConsumerGroupType,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from helpers import (
    admin_client,
    assert_delivered,
    create_topic,
    produce_all,
    producer_client,
    unique_topic,
    wait_until,
)

MEMBER_SCRIPT = Path(__file__).with_name("group_member.py")

PROTOCOLS = ["classic", "consumer"]
SESSION_TIMEOUT_MS = 6000
HEARTBEAT_MS = 500


def group_sets(consumer_session_timeout_ms=SESSION_TIMEOUT_MS):
    """Group timers for every broker here: no initial rebalance delay, and KIP-848 members get
    the same session timeout and heartbeat interval the classic members ask for."""
    return [
        "group.initial.rebalance.delay.ms=0",
        f"group.consumer.session.timeout.ms={consumer_session_timeout_ms}",
        f"group.consumer.heartbeat.interval.ms={HEARTBEAT_MS}",
    ]


GROUP_SETS = group_sets()
# Deadline of every wait for the group to settle; far above what a rebalance needs.
WAIT_S = 60.0


# -- clients ---------------------------------------------------------------------------------


def member_conf(protocol, **extra):
    """librdkafka settings of a group member (without bootstrap.servers and group.id)."""
    conf = {"enable.auto.commit": False, "auto.offset.reset": "earliest"}
    if protocol == "classic":
        conf["session.timeout.ms"] = SESSION_TIMEOUT_MS
        conf["heartbeat.interval.ms"] = HEARTBEAT_MS
    else:
        # Session timeout, heartbeat interval and assignor come from the broker.
        conf["group.protocol"] = "consumer"
    conf.update(extra)
    return conf


def partitions_of(tps):
    return sorted(tp.partition for tp in tps)


class Member:
    """An in-process confluent-kafka group member; it only makes progress while polled."""

    def __init__(self, broker, topic, group, protocol, stats=False, **extra):
        self.topic = topic
        self.callbacks = []  # ("assign" | "revoke" | "lost", [partition, ...]) in call order
        self.records = []  # (partition, offset, value)
        self.errors = []
        self.closed = False
        # Where librdkafka fetches from, per partition, from its statistics (with
        # stats=True): position() stays unset until a record is consumed.
        self.fetch_offsets = {}
        conf = member_conf(protocol, **extra)
        conf.update({"bootstrap.servers": broker.bootstrap, "group.id": group})
        if stats:
            conf.update({"statistics.interval.ms": 100, "stats_cb": self._on_stats})
        self.consumer = Consumer(conf)
        self.consumer.subscribe(
            [topic],
            on_assign=self._callback("assign"),
            on_revoke=self._callback("revoke"),
            on_lost=self._callback("lost"),
        )

    def _on_stats(self, text):
        parts = json.loads(text)["topics"].get(self.topic, {}).get("partitions", {})
        self.fetch_offsets = {
            int(p): s["next_offset"]
            for p, s in parts.items()
            if p != "-1" and s["fetch_state"] == "active"
        }

    def _callback(self, kind):
        def callback(_consumer, tps):
            self.callbacks.append((kind, partitions_of(tps)))

        return callback

    def poll(self, timeout=0.05):
        msg = self.consumer.poll(timeout)
        if msg is None:
            return
        err = msg.error()
        if err is None:
            self.records.append((msg.partition(), msg.offset(), msg.value()))
        elif err.code() != KafkaError._PARTITION_EOF:
            assert not err.fatal(), f"fatal consumer error: {err}"
            self.errors.append(err)

    def assignment(self):
        return partitions_of(self.consumer.assignment())

    def member_id(self):
        return self.consumer.memberid()

    def offsets(self, partition):
        return [o for p, o, _ in self.records if p == partition]

    def close(self):
        if not self.closed:
            self.closed = True
            self.consumer.close()


def pump(members, cond, what, timeout=WAIT_S):
    """Polls every open member in turn until `cond()` is truthy; returns its value."""
    deadline = time.monotonic() + timeout
    while True:
        for m in members:
            if not m.closed:
                m.poll(0.05)
        value = cond()
        if value:
            return value
        if time.monotonic() >= deadline:
            state = [
                (m.member_id(), m.assignment(), len(m.records)) for m in members if not m.closed
            ]
            raise AssertionError(
                f"timed out after {timeout:.0f}s waiting for {what}; "
                f"members (id, assignment, records): {state}"
            )


def pump_for(members, seconds):
    """Keeps the members polling for a while: the window in which something must NOT happen."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for m in members:
            if not m.closed:
                m.poll(0.05)


def close_all(members):
    for m in members:
        m.close()


class MemberProcess:
    """A group member in its own process (group_member.py), so that it can be killed."""

    def __init__(self, broker, topic, group, protocol, out_dir, name, **extra):
        self.name = name
        self.out_path = Path(out_dir) / f"{name}.jsonl"
        self.err_path = Path(out_dir) / f"{name}.stderr"
        conf = member_conf(protocol, **extra)
        args = [sys.executable, str(MEMBER_SCRIPT), broker.bootstrap, topic, group]
        args += [f"{k}={v}" for k, v in conf.items()]
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=err)

    def events(self):
        """Events printed so far; a partly written last line (after kill -9) is skipped."""
        if not self.out_path.exists():
            return []
        lines = self.out_path.read_text(encoding="utf-8").split("\n")[:-1]
        return [json.loads(line) for line in lines]

    def assignment(self):
        last = [e["partitions"] for e in self.events() if e["ev"] == "assignment"]
        return last[-1] if last else []

    def records(self, partition=None):
        return [
            (e["p"], e["o"])
            for e in self.events()
            if e["ev"] == "rec" and (partition is None or e["p"] == partition)
        ]

    def committed(self):
        """The last offset this member committed successfully, per partition."""
        out = {}
        for e in self.events():
            if e["ev"] == "commit":
                out.update({int(p): o for p, o in e["offsets"].items()})
        return out

    def alive(self):
        return self.proc.poll() is None

    def kill9(self):
        self.proc.kill()
        self.proc.wait()

    def stop(self, timeout=WAIT_S):
        """SIGTERM: the member commits what it processed, closes (leaves the group), exits 0."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill9()
            raise AssertionError(f"{self.name} did not exit after SIGTERM\n{self.output()}")
        assert rc == 0, f"{self.name} exited {rc}\n{self.output()}"
        assert self.events()[-1]["ev"] == "closed", self.output()

    def output(self):
        err = self.err_path.read_text(errors="replace")[-3000:] if self.err_path.exists() else ""
        return f"--- {self.name} stderr:\n{err}"

    def cleanup(self):
        if self.proc.poll() is None:
            self.kill9()


class StreamProducer(threading.Thread):
    """Produces "0", "1", ... round-robin over the partitions at a steady rate until stopped."""

    def __init__(self, broker, topic, partitions, rate_per_s):
        super().__init__(daemon=True)
        self.broker = broker
        self.topic = topic
        self.partitions = partitions
        self.rate = rate_per_s
        self.acked = {}  # (partition, offset) -> value
        self.failed = []
        self._halt = threading.Event()

    def run(self):
        producer = producer_client(self.broker, **{"linger.ms": 5, "acks": "all"})

        def on_delivery(err, msg):
            if err is not None:
                self.failed.append(err)
            else:
                self.acked[(msg.partition(), msg.offset())] = msg.value().decode()

        started = time.monotonic()
        i = 0
        while not self._halt.is_set():
            if time.monotonic() - started < i / self.rate:
                producer.poll(0.005)
                continue
            producer.produce(
                self.topic, value=str(i).encode(), partition=i % self.partitions,
                on_delivery=on_delivery,
            )
            producer.poll(0)
            i += 1
        self.remaining = producer.flush(30)

    def finish(self):
        self._halt.set()
        self.join(60)
        assert not self.is_alive(), "the producer thread did not stop"
        assert self.remaining == 0 and not self.failed, (
            f"producer: {self.remaining} unflushed, failures {self.failed[:3]}"
        )
        return dict(self.acked)


# -- admin and topic helpers -----------------------------------------------------------------


def new_topic(broker, partitions, prefix="cg"):
    topic = unique_topic(prefix)
    create_topic(broker, topic, partitions=partitions)
    return topic


def produce_per_partition(broker, topic, partitions, count, start=0):
    """Produces `count` records to each partition; values are "p<partition>-<n>"."""
    producer = producer_client(broker)
    reports = produce_all(
        producer,
        [
            (topic, {"value": f"p{p}-{n}".encode(), "partition": p})
            for n in range(start, start + count)
            for p in range(partitions)
        ],
    )
    assert_delivered(reports)
    return reports


def describe(admin, group):
    return admin.describe_consumer_groups([group], request_timeout=10)[group].result()


def described_assignments(desc):
    return {m.member_id: partitions_of(m.assignment.topic_partitions) for m in desc.members}


def stable_as_members_see_it(admin, group, members):
    """The group's description once it is Stable and its members and their assignments are
    exactly what the open `members` report, else None."""
    expected = {m.member_id(): m.assignment() for m in members if not m.closed}
    if not all(expected):
        return None
    try:
        desc = describe(admin, group)
    except KafkaException:
        return None
    if desc.state != ConsumerGroupState.STABLE or described_assignments(desc) != expected:
        return None
    return desc


def group_type(protocol):
    return ConsumerGroupType.CLASSIC if protocol == "classic" else ConsumerGroupType.CONSUMER


def covers_without_overlap(assignments, partitions):
    flat = [p for a in assignments for p in a]
    return sorted(flat) == list(range(partitions))


def check_described(desc, protocol, group):
    assert desc.group_id == group
    assert desc.type == group_type(protocol)
    assert not desc.is_simple_consumer_group
    if protocol == "consumer":
        # The broker's default server-side assignor; reconciled members own their target.
        assert desc.partition_assignor == "uniform"
        for m in desc.members:
            assert m.target_assignment is not None
            assert partitions_of(m.target_assignment.topic_partitions) == partitions_of(
                m.assignment.topic_partitions
            ), f"member {m.member_id} has not reached its target assignment"
    else:
        # librdkafka's default partition.assignment.strategy is "range,roundrobin".
        assert desc.partition_assignor in ("range", "roundrobin")


# -- membership ------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_partitions_split_across_members_and_move_when_one_closes(start_broker, protocol):
    broker = start_broker(sets=GROUP_SETS)
    topic = new_topic(broker, 3)
    group = unique_topic("g-split")
    admin = admin_client(broker)
    members = [Member(broker, topic, group, protocol) for _ in range(3)]
    try:
        pump(
            members,
            lambda: sorted(m.assignment() for m in members) == [[0], [1], [2]],
            "three members to own one partition each",
        )
        desc = pump(
            members,
            lambda: stable_as_members_see_it(admin, group, members),
            "the described group to be Stable with the members' own assignments",
        )
        check_described(desc, protocol, group)
        assert sorted(described_assignments(desc).values()) == [[0], [1], [2]]

        # A fourth member: three partitions, so exactly one member is left without any.
        before = [m.assignment() for m in members]
        fourth = Member(broker, topic, group, protocol)
        members.append(fourth)
        desc = pump(
            members,
            lambda: stable_as_members_see_it(admin, group, members),
            "the group to settle with four members",
        )
        check_described(desc, protocol, group)
        assert len(desc.members) == 4
        assignments = [m.assignment() for m in members]
        assert covers_without_overlap(assignments, 3), assignments
        assert sorted(len(a) for a in assignments) == [0, 1, 1, 1], assignments
        if protocol == "consumer":
            # The uniform assignor is sticky: the newcomer gets nothing, nobody else moves.
            assert fourth.assignment() == []
            assert [m.assignment() for m in members[:3]] == before

        # Closing (leaving) a member that owns a partition hands it to the others.
        leaving = next(m for m in members if m.assignment())
        lost = leaving.assignment()
        leaving.close()
        survivors = [m for m in members if not m.closed]
        desc = pump(
            survivors,
            lambda: stable_as_members_see_it(admin, group, survivors),
            "the group to settle after a member left",
        )
        assert len(desc.members) == 3
        assignments = [m.assignment() for m in survivors]
        assert covers_without_overlap(assignments, 3), assignments
        assert sorted(len(a) for a in assignments) == [1, 1, 1], assignments
        assert lost[0] in [p for a in assignments for p in a]

        # And once more, down to two members for three partitions.
        survivors[0].close()
        survivors = survivors[1:]
        desc = pump(
            survivors,
            lambda: stable_as_members_see_it(admin, group, survivors),
            "the group to settle with two members",
        )
        assignments = [m.assignment() for m in survivors]
        assert covers_without_overlap(assignments, 3), assignments
        assert sorted(len(a) for a in assignments) == [1, 2], assignments
    finally:
        close_all(members)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_killed_member_partitions_move_to_survivors(start_broker, tmp_path, protocol):
    broker = start_broker(sets=GROUP_SETS)
    topic = new_topic(broker, 3)
    group = unique_topic("g-kill")
    procs = [
        MemberProcess(broker, topic, group, protocol, tmp_path, f"member{i}") for i in range(3)
    ]
    try:
        wait_until(
            lambda: sorted(m.assignment() for m in procs) == [[0], [1], [2]],
            WAIT_S,
            "three members each owning one partition",
        )
        # Every member consumes the ten records of its partition and commits them.
        produce_per_partition(broker, topic, 3, 10)
        wait_until(
            lambda: all(m.committed().get(m.assignment()[0]) == 10 for m in procs),
            WAIT_S,
            "each member to consume and commit its partition's ten records",
        )
        for m in procs:
            (p,) = m.assignment()
            assert m.records() == [(p, o) for o in range(10)]

        victim, survivors = procs[0], procs[1:]
        (lost,) = victim.assignment()
        victim.kill9()
        killed_at = time.monotonic()
        wait_until(
            lambda: covers_without_overlap([m.assignment() for m in survivors], 3),
            WAIT_S,
            "the survivors to take over the killed member's partition",
        )
        took = time.monotonic() - killed_at
        # The broker notices the silent member after the session timeout, then rebalances.
        assert took < SESSION_TIMEOUT_MS / 1000 + 20, f"reassignment took {took:.1f}s"
        heir = next(m for m in survivors if lost in m.assignment())

        # Every member committed what it read, so the new owners resume from those commits:
        # across the three members each partition is read exactly once, 0 to 14.
        produce_per_partition(broker, topic, 3, 5, start=10)
        wait_until(
            lambda: sum(len(m.records()) for m in survivors) >= 2 * 10 + 3 * 5,
            WAIT_S,
            "the survivors to consume the new records",
        )
        assert heir.records(lost) == [(lost, o) for o in range(10, 15)]
        for p in range(3):
            assert sorted(r for m in procs for r in m.records(p)) == [(p, o) for o in range(15)]
        for m in survivors:
            assert m.alive(), m.output()
            m.stop()
    finally:
        for m in procs:
            m.cleanup()


# -- delivery across rebalances --------------------------------------------------------------


def ownership_sessions(name, events):
    """Splits one member's events into ownership sessions of partitions.

    A session runs from the assign callback that gave the member a partition to the revoke
    (or lost) callback that took it away, or to the end of the member's life. It holds the
    offsets the member processed and the last offset it committed in that time (the commit
    made in the revoke callback belongs to the session being revoked).
    """
    sessions = []
    current = {}  # partition -> open session
    latest = {}  # partition -> the member's most recent session, open or not

    def open_session(p, t):
        s = {"member": name, "p": p, "start": t, "offsets": [], "commit": None, "end": None}
        sessions.append(s)
        current[p] = latest[p] = s
        return s

    for e in events:
        ev = e["ev"]
        if ev == "assign":
            for p in e["partitions"]:
                if p not in current:
                    open_session(p, e["t"])
        elif ev in ("revoke", "lost"):
            for p in e["partitions"]:
                s = current.pop(p, None)
                if s is not None:
                    s["end"] = ev
        elif ev == "rec":
            s = current.get(e["p"]) or open_session(e["p"], e["t"])
            s["offsets"].append(e["o"])
        elif ev == "commit":
            for p, o in e["offsets"].items():
                latest[int(p)]["commit"] = o
    return sessions


def check_no_redelivery_before_commit(procs, acked, partitions):
    """Every acknowledged record was consumed, with its value, and a record consumed twice
    (by two ownership sessions) lies at or after the last commit of the earlier session.

    A record below that commit was processed and committed already; reading it again means
    the next owner did not start from the committed offset.
    """
    values = {}
    sessions = []
    for m in procs:
        for e in m.events():
            if e["ev"] == "rec":
                values.setdefault((e["p"], e["o"]), set()).add(e["v"])
        sessions += ownership_sessions(m.name, m.events())

    missing = sorted(set(acked) - set(values))
    assert not missing, f"{len(missing)} acknowledged records never consumed, first {missing[:10]}"
    wrong = [(k, acked[k], v) for k, v in values.items() if k in acked and v != {acked[k]}]
    assert not wrong, f"records consumed with the wrong value: {wrong[:10]}"

    duplicates = 0
    for p in range(partitions):
        mine = sorted(
            (s for s in sessions if s["p"] == p and s["offsets"]), key=lambda s: s["start"]
        )
        for s in mine:
            o = s["offsets"]
            assert o == list(range(o[0], o[0] + len(o))), (
                f"{s['member']} read partition {p} out of order or with gaps: {o[:20]}..."
            )
        for j, later in enumerate(mine):
            for earlier in mine[:j]:
                again = sorted(set(earlier["offsets"]) & set(later["offsets"]))
                if not again:
                    continue
                duplicates += len(again)
                commit = earlier["commit"]
                assert commit is None or again[0] >= commit, (
                    f"partition {p}: {later['member']} re-read offsets {again[0]}..{again[-1]} "
                    f"after {earlier['member']} had committed {commit} and lost the partition "
                    f"({earlier['end'] or 'killed'})"
                )
    return duplicates


@pytest.mark.parametrize(
    "protocol,strategy",
    [("classic", "range"), ("classic", "cooperative-sticky"), ("consumer", None)],
    ids=["classic-eager", "classic-cooperative", "consumer"],
)
def test_stream_across_joins_leaves_and_a_kill(start_broker, tmp_path, protocol, strategy):
    """A steady stream while members join, leave and die: nothing is lost, and nothing a
    member committed is delivered again to another member."""
    broker = start_broker(sets=GROUP_SETS)
    partitions = 4
    topic = new_topic(broker, partitions)
    group = unique_topic("g-stream")
    extra = {} if strategy is None else {"partition.assignment.strategy": strategy}
    stream = StreamProducer(broker, topic, partitions, rate_per_s=150)
    procs = []

    def join(name):
        m = MemberProcess(broker, topic, group, protocol, tmp_path, name, **extra)
        procs.append(m)
        return m

    def consumed_more(m, n):
        base = len(m.records())
        return lambda: len(m.records()) >= base + n

    def settled(members, n_records=20):
        """The partitions are split among exactly `members` (with four partitions and at most
        three members, each assignor gives everyone some), and each of them has consumed
        `n_records` more records since this was asked."""
        bases = {m.name: len(m.records()) for m in members}
        return lambda: all(m.assignment() for m in members) and covers_without_overlap(
            [m.assignment() for m in members], partitions
        ) and all(len(m.records()) >= bases[m.name] + n_records for m in members)

    try:
        stream.start()
        a = join("a")
        wait_until(consumed_more(a, 50), WAIT_S, "a to consume")
        b = join("b")
        wait_until(settled([a, b]), WAIT_S, "a and b to share the partitions and consume")
        c = join("c")
        wait_until(settled([a, b, c]), WAIT_S, "a, b and c to share the partitions and consume")
        a.stop()  # graceful: commits in its revoke callback and leaves
        wait_until(settled([b, c]), WAIT_S, "b and c to take over from a")
        b.kill9()  # no commit, no leave: c waits out b's session
        wait_until(settled([c]), WAIT_S, "c to take over from the killed b")
        d = join("d")
        wait_until(settled([c, d]), WAIT_S, "c and d to share the partitions and consume")
        acked = stream.finish()
        wait_until(
            lambda: {(p, o) for m in procs for p, o in m.records()} >= set(acked),
            WAIT_S,
            "every acknowledged record to be consumed",
        )
        c.stop()
        d.stop()
        for m in procs:
            errors = [e for e in m.events() if e["ev"] == "error" and e["fatal"]]
            assert not errors, f"{m.name}: {errors}"
        duplicates = check_no_redelivery_before_commit(procs, acked, partitions)
        # Only the kill loses uncommitted progress; at 150 records/s and a commit at least
        # every 200 ms that is a few dozen records, never whole seconds of the stream.
        assert duplicates <= 100, f"{duplicates} records were delivered twice"
    finally:
        if stream.is_alive():
            stream._halt.set()
        for m in procs:
            m.cleanup()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_each_group_receives_every_record(start_broker, protocol):
    broker = start_broker(sets=GROUP_SETS)
    topic = new_topic(broker, 3)
    admin = admin_client(broker)
    groups = [unique_topic("g-one"), unique_topic("g-two")]
    members = {g: [Member(broker, topic, g, protocol) for _ in range(2)] for g in groups}
    everyone = [m for ms in members.values() for m in ms]
    try:
        # Both groups settle before anything is produced, so there is no rebalance while they
        # consume: each record must reach each group exactly once.
        for g, ms in members.items():
            pump(everyone, lambda: stable_as_members_see_it(admin, g, ms), f"group {g} to settle")
            assert covers_without_overlap([m.assignment() for m in ms], 3)
        reports = produce_per_partition(broker, topic, 3, 40)
        produced = sorted((p, o, v) for _, p, o, v in reports)

        def group_records(g):
            return sorted(r for m in members[g] for r in m.records)

        pump(
            everyone,
            lambda: all(len(group_records(g)) >= len(produced) for g in groups),
            "both groups to consume every record",
        )
        for g in groups:
            assert group_records(g) == produced, f"group {g}"
            for m in members[g]:
                assert {p for p, _, _ in m.records} <= set(m.assignment())
    finally:
        close_all(everyone)


# -- committed offsets -----------------------------------------------------------------------


def committed_offsets(consumer, topic, partitions):
    """{partition: (offset, metadata)} from OffsetFetch; retried while the broker loads."""

    def fetch():
        try:
            tps = consumer.committed(
                [TopicPartition(topic, p) for p in range(partitions)], timeout=5
            )
        except KafkaException:
            return None
        if any(tp.error is not None for tp in tps):
            return None
        return {tp.partition: (tp.offset, tp.metadata) for tp in tps}

    return wait_until(fetch, WAIT_S, "OffsetFetch to answer")


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("restart", ["graceful", "kill9"])
def test_committed_offsets_and_metadata_survive_restart(start_broker, protocol, restart):
    # The default 50 partitions of __consumer_offsets.
    broker = start_broker(sets=GROUP_SETS)
    topic = new_topic(broker, 3)
    group = unique_topic("g-commit")
    produce_per_partition(broker, topic, 3, 20)
    expected = {0: (5, "m-0"), 1: (7, "m-1"), 2: (11, "")}

    m = Member(broker, topic, group, protocol)
    try:
        pump([m], lambda: m.assignment() == [0, 1, 2], "the member to own every partition")
        # An older commit first: the replay after the restart must keep only the newest.
        for offsets in ({p: (3, "old") for p in range(3)}, expected):
            tps = [TopicPartition(topic, p, o, metadata=md) for p, (o, md) in offsets.items()]
            result = m.consumer.commit(offsets=tps, asynchronous=False)
            assert all(tp.error is None for tp in result), result
        assert committed_offsets(m.consumer, topic, 3) == expected
        id_before = m.member_id()
    finally:
        m.close()

    if restart == "kill9":
        broker.kill9()
    broker.restart()

    # Offsets and metadata come back from __consumer_offsets, for consumers and for the admin.
    fresh = Consumer(
        {"bootstrap.servers": broker.bootstrap, "group.id": group, **member_conf(protocol)}
    )
    try:
        assert committed_offsets(fresh, topic, 3) == expected
    finally:
        fresh.close()
    admin = admin_client(broker)
    request = ConsumerGroupTopicPartitions(group)
    listed = admin.list_consumer_group_offsets([request])[group].result(timeout=30)
    assert {tp.partition: (tp.offset, tp.metadata) for tp in listed.topic_partitions} == expected

    # Every acknowledged record is still there to resume from.
    probe = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group})
    try:
        ends = [
            probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in range(3)
        ]
    finally:
        probe.close()
    assert ends == [(0, 20)] * 3, "(low, high) watermarks after the restart"

    # A member of the group resumes exactly at the committed offsets.
    m = Member(broker, topic, group, protocol)
    try:
        remaining = sum(20 - start for start, _ in expected.values())
        pump([m], lambda: len(m.records) >= remaining, "the member to read from its commits")
        for p, (start, _) in expected.items():
            assert m.offsets(p) == list(range(start, 20)), f"partition {p}"
        # Member ids must not repeat across broker runs: the group state outlives a restart.
        assert m.member_id() != id_before
    finally:
        m.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_auto_offset_reset_without_commits(start_broker, protocol):
    broker = start_broker(sets=GROUP_SETS)
    topic = new_topic(broker, 3)
    produce_per_partition(broker, topic, 3, 10)
    early = Member(
        broker, topic, unique_topic("g-earliest"), protocol, **{"auto.offset.reset": "earliest"}
    )
    late = Member(
        broker, topic, unique_topic("g-latest"), protocol, stats=True,
        **{"auto.offset.reset": "latest"},
    )
    both = [early, late]
    try:
        # "latest" has resolved to the end of every partition before more is produced.
        pump(
            both,
            lambda: len(early.records) >= 30 and late.fetch_offsets == {0: 10, 1: 10, 2: 10},
            "earliest to read the backlog and latest to sit at the end",
        )
        assert late.records == []
        produce_per_partition(broker, topic, 3, 5, start=10)
        pump(both, lambda: len(early.records) >= 45 and len(late.records) >= 15, "the new records")
        for p in range(3):
            assert early.offsets(p) == list(range(15)), f"earliest, partition {p}"
            assert late.offsets(p) == list(range(10, 15)), f"latest, partition {p}"
        assert sorted(v for _, _, v in late.records) == sorted(
            f"p{p}-{n}".encode() for p in range(3) for n in range(10, 15)
        )
    finally:
        close_all(both)


# -- classic protocol specifics ----------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_static_members_restart_without_rebalance(start_broker, protocol):
    """KIP-345: a static member that restarts within its session timeout takes its old place
    and partitions back, and the other member sees no rebalance. Each member is restarted in
    turn, so with the classic protocol one of the two restarts is the group leader's: librdkafka
    joins with JoinGroup v5, too old to be told to skip assigning (KIP-814), and Kafka then
    answers with the old leader's id, as to a follower, and does not rebalance either."""
    # A longer session so a restarted member is surely back before its old one expires.
    session = {"session.timeout.ms": 15000} if protocol == "classic" else {}
    broker = start_broker(sets=group_sets(consumer_session_timeout_ms=15000))
    topic = new_topic(broker, 4)
    group = unique_topic("g-static")
    admin = admin_client(broker)

    def static_member(instance):
        return Member(broker, topic, group, protocol, **{"group.instance.id": instance}, **session)

    current = {"inst-a": static_member("inst-a"), "inst-b": static_member("inst-b")}
    everyone = list(current.values())
    try:
        desc = pump(
            everyone,
            lambda: len(current["inst-a"].assignment()) == 2
            and stable_as_members_see_it(admin, group, list(current.values())),
            "two static members to split four partitions",
        )
        assert {m.group_instance_id for m in desc.members} == {"inst-a", "inst-b"}
        parts = {i: m.assignment() for i, m in current.items()}
        assert covers_without_overlap(parts.values(), 4)

        for restarted, other in (("inst-a", "inst-b"), ("inst-b", "inst-a")):
            survivor = current[other]
            survivor_callbacks = list(survivor.callbacks)
            survivor_id = survivor.member_id()
            old = current[restarted]
            old_id = old.member_id()
            # Closing a static member sends no LeaveGroup: the group keeps it and stays Stable.
            old.close()
            desc = describe(admin, group)
            assert desc.state == ConsumerGroupState.STABLE, f"after closing {restarted}"
            assert {m.member_id for m in desc.members} == {old_id, survivor_id}

            new = current[restarted] = static_member(restarted)
            everyone.append(new)
            live = list(current.values())
            pump(
                live,
                lambda: new.assignment() == parts[restarted],
                f"the restarted {restarted} to get its partitions back",
            )
            # The survivor keeps heartbeating through several intervals: no rebalance may
            # reach it.
            pump_for(live, 6 * HEARTBEAT_MS / 1000)
            assert survivor.callbacks == survivor_callbacks, (
                f"restarting {restarted} made {other} rebalance: "
                f"{survivor.callbacks[len(survivor_callbacks):]}"
            )
            assert survivor.assignment() == parts[other]
            assert new.assignment() == parts[restarted]
            desc = pump(live, lambda: stable_as_members_see_it(admin, group, live), "the group")
            by_instance = {m.group_instance_id: m.member_id for m in desc.members}
            assert by_instance[other] == survivor_id
            assert by_instance[restarted] == new.member_id() != old_id
    finally:
        close_all(everyone)


def test_cooperative_sticky_moves_only_what_it_must(start_broker):
    broker = start_broker(sets=GROUP_SETS)
    topic = new_topic(broker, 6)
    group = unique_topic("g-coop")
    admin = admin_client(broker)
    coop = {"partition.assignment.strategy": "cooperative-sticky"}
    first = Member(broker, topic, group, "classic", **coop)
    members = [first]
    try:
        pump(members, lambda: first.assignment() == list(range(6)), "the first member to own all")
        assert first.callbacks == [("assign", list(range(6)))]

        second = Member(broker, topic, group, "classic", **coop)
        members.append(second)
        desc = pump(
            members,
            lambda: len(second.assignment()) == 3
            and stable_as_members_see_it(admin, group, members),
            "the second member to get half",
        )
        assert desc.partition_assignor == "cooperative-sticky"
        kept, moved = first.assignment(), second.assignment()
        assert covers_without_overlap([kept, moved], 6) and len(kept) == 3
        # Incremental: the first member only ever gave up the partitions that moved, and the
        # second only ever received partitions.
        revoked = [p for kind, ps in first.callbacks if kind == "revoke" for p in ps]
        assert sorted(revoked) == moved, first.callbacks
        assert all(kind == "assign" for kind, _ in second.callbacks), second.callbacks
        assert sorted(p for _, ps in second.callbacks for p in ps) == moved
        assert not any(kind == "lost" for kind, _ in first.callbacks)

        # When the second member leaves, its partitions are added to the first: nothing revoked.
        callbacks = len(first.callbacks)
        second.close()
        pump(members, lambda: first.assignment() == list(range(6)), "the first to own all again")
        # An extra cooperative round (the leave racing a rejoin) shows up as an empty assign,
        # which changes nothing; what matters is that nothing was revoked or lost.
        changes = [(kind, ps) for kind, ps in first.callbacks[callbacks:] if ps or kind != "assign"]
        assert changes == [("assign", moved)], first.callbacks
    finally:
        close_all(members)


# -- kafka-python ----------------------------------------------------------------------------


def test_kafka_python_group_members_split_commit_and_resume(start_broker):
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KTopicPartition

    broker = start_broker(sets=GROUP_SETS)
    topic = new_topic(broker, 4)
    group = unique_topic("g-kp")

    def kp_consumer():
        c = KafkaConsumer(
            bootstrap_servers=broker.bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=HEARTBEAT_MS,
            request_timeout_ms=30000,
        )
        c.subscribe([topic])
        return c

    def poll_all(consumers, got):
        for c, records in zip(consumers, got):
            # Not shorter: kafka-python 3.0.12 sometimes loses its own successful SyncGroup
            # response when poll(timeout_ms=100) times out in the middle of a rebalance; the
            # member then never heartbeats and the broker rightly expires it.
            batch = c.poll(timeout_ms=1000)
            for recs in batch.values():
                records.extend((r.partition, r.offset, r.value) for r in recs)
            if batch:
                c.commit()  # synchronous, the positions after what was just processed

    def parts(c):
        return sorted(tp.partition for tp in c.assignment())

    consumers = [kp_consumer(), kp_consumer()]
    got = [[], []]
    try:
        wait_until(
            lambda: poll_all(consumers, got) or (
                covers_without_overlap([parts(c) for c in consumers], 4)
                and [len(parts(c)) for c in consumers] == [2, 2]
            ),
            WAIT_S,
            "two kafka-python members to split four partitions",
            interval=0,
        )
        produce_per_partition(broker, topic, 4, 10)
        wait_until(
            lambda: poll_all(consumers, got) or sum(map(len, got)) >= 40,
            WAIT_S,
            "the two members to consume all forty records",
            interval=0,
        )
        for c, records in zip(consumers, got):
            got_offsets = sorted((p, o) for p, o, _ in records)
            assert got_offsets == [(p, o) for p in parts(c) for o in range(10)]
            for p in parts(c):
                assert c.committed(KTopicPartition(topic, p)) == 10
    finally:
        for c in consumers:
            c.close()  # leaves the group

    broker.restart()
    produce_per_partition(broker, topic, 4, 5, start=10)
    c = kp_consumer()
    records = []
    try:
        wait_until(
            lambda: poll_all([c], [records]) or len(records) >= 20,
            WAIT_S,
            "a new member to consume the records after the commits",
            interval=0,
        )
        got_offsets = sorted((p, o) for p, o, _ in records)
        assert got_offsets == [(p, o) for p in range(4) for o in range(10, 15)]
    finally:
        c.close()


# -- admin -----------------------------------------------------------------------------------


def listed_groups(admin, **filters):
    result = admin.list_consumer_groups(request_timeout=10, **filters).result()
    assert not result.errors, result.errors
    return {g.group_id: g for g in result.valid}


def admin_error(future):
    try:
        future.result(timeout=30)
    except KafkaException as exc:
        return exc.args[0].code()
    return None


def alter_errors(admin, request):
    """{partition: error code or None} of an AlterConsumerGroupOffsets call."""
    try:
        result = admin.alter_consumer_group_offsets([request])[request.group_id].result(timeout=30)
    except KafkaException as exc:
        return {"request": exc.args[0].code()}
    return {tp.partition: tp.error and tp.error.code() for tp in result.topic_partitions}


def test_admin_lists_describes_deletes_and_edits_offsets(start_broker):
    from kafka import KafkaAdminClient
    from kafka import TopicPartition as KTopicPartition
    from kafka import errors as kerrors

    broker = start_broker(sets=GROUP_SETS)
    topic = new_topic(broker, 3)
    produce_per_partition(broker, topic, 3, 5)
    admin = admin_client(broker)
    active, empty, kip848 = unique_topic("g-active"), unique_topic("g-empty"), unique_topic("g-848")

    gone = Member(broker, topic, empty, "classic")
    try:
        pump([gone], lambda: len(gone.records) == 15, "the soon-empty group to read everything")
        gone.consumer.commit(asynchronous=False)
    finally:
        gone.close()
    members = [Member(broker, topic, active, "classic"), Member(broker, topic, kip848, "consumer")]
    kadmin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=30000)
    try:
        for g, m in ((active, members[0]), (kip848, members[1])):
            pump(members, lambda: stable_as_members_see_it(admin, g, [m]), f"group {g} to settle")

        # ListGroups: states and types, with and without filters.
        groups = listed_groups(admin)
        assert {g: (groups[g].state, groups[g].type) for g in (active, empty, kip848)} == {
            active: (ConsumerGroupState.STABLE, ConsumerGroupType.CLASSIC),
            empty: (ConsumerGroupState.EMPTY, ConsumerGroupType.CLASSIC),
            kip848: (ConsumerGroupState.STABLE, ConsumerGroupType.CONSUMER),
        }
        assert not any(groups[g].is_simple_consumer_group for g in (active, empty, kip848))
        ours = {active, empty, kip848}
        assert ours & set(listed_groups(admin, states={ConsumerGroupState.EMPTY})) == {empty}
        assert ours & set(listed_groups(admin, types={ConsumerGroupType.CONSUMER})) == {kip848}

        # DescribeGroups / ConsumerGroupDescribe.
        node_id = next(iter(admin.list_topics(timeout=10).brokers))
        futures = admin.describe_consumer_groups([active, empty, kip848], request_timeout=10)
        described = {g: f.result() for g, f in futures.items()}
        assert described[empty].state == ConsumerGroupState.EMPTY and described[empty].members == []
        for g, m in ((active, members[0]), (kip848, members[1])):
            d = described[g]
            assert d.state == ConsumerGroupState.STABLE
            assert d.coordinator.id == node_id
            assert described_assignments(d) == {m.member_id(): [0, 1, 2]}

        # OffsetFetch through the admin: all of the empty group's partitions, or some of them.
        def group_offsets(g, partitions=None):
            req = ConsumerGroupTopicPartitions(
                g, None if partitions is None else [TopicPartition(topic, p) for p in partitions]
            )
            res = admin.list_consumer_group_offsets([req])[g].result(timeout=30)
            return {tp.partition: tp.offset for tp in res.topic_partitions if tp.offset >= 0}

        assert group_offsets(empty) == {0: 5, 1: 5, 2: 5}
        assert group_offsets(empty, [1]) == {1: 5}

        # OffsetCommit through the admin, allowed on an empty group only.
        req = ConsumerGroupTopicPartitions(
            empty, [TopicPartition(topic, 0, 2), TopicPartition(topic, 1, 3, metadata="reset")]
        )
        altered = admin.alter_consumer_group_offsets([req])[empty].result(timeout=30)
        assert {tp.partition: (tp.offset, tp.error) for tp in altered.topic_partitions} == {
            0: (2, None), 1: (3, None)
        }
        assert group_offsets(empty) == {0: 2, 1: 3, 2: 5}
        req = ConsumerGroupTopicPartitions(active, [TopicPartition(topic, 0, 1)])
        assert alter_errors(admin, req) == {0: KafkaError.UNKNOWN_MEMBER_ID}, "group with members"

        # OffsetDelete (kafka-python has it): refused for a topic the group subscribes to.
        assert kadmin.delete_group_offsets(empty, [KTopicPartition(topic, 2)]) == {
            KTopicPartition(topic, 2): kerrors.NoError
        }
        assert group_offsets(empty) == {0: 2, 1: 3}
        # Explicit offsets: whether the member has polled its records yet does not matter.
        members[0].consumer.commit(
            offsets=[TopicPartition(topic, p, 5) for p in range(3)], asynchronous=False
        )
        assert kadmin.delete_group_offsets(active, [KTopicPartition(topic, 0)]) == {
            KTopicPartition(topic, 0): kerrors.GroupSubscribedToTopicError
        }

        # DeleteGroups: refused while the group has members, done once they are gone.
        for g in (active, kip848):
            futures = admin.delete_consumer_groups([g], request_timeout=10)
            assert admin_error(futures[g]) == KafkaError.NON_EMPTY_GROUP, g
        close_all(members)
        wait_until(
            lambda: all(
                listed_groups(admin)[g].state == ConsumerGroupState.EMPTY for g in (active, kip848)
            ),
            WAIT_S,
            "both groups to be empty after their members left",
        )
        futures = admin.delete_consumer_groups([active, empty, kip848], request_timeout=10)
        assert {g: admin_error(f) for g, f in futures.items()} == {g: None for g in ours}
        assert not {active, empty, kip848} & set(listed_groups(admin))
        assert group_offsets(empty) == {}
        futures = admin.delete_consumer_groups([empty], request_timeout=10)
        assert admin_error(futures[empty]) == KafkaError.GROUP_ID_NOT_FOUND
    finally:
        close_all(members)
        kadmin.close()


@pytest.mark.parametrize("protocol", ["classic", "consumer"])
def test_regex_subscription(start_broker, protocol):
    """A pattern subscription (`^prefix-.*`) gets the matching topics only, and a matching topic
    created later joins the assignment. With KIP-848 the broker resolves the regex itself."""
    broker = start_broker(sets=GROUP_SETS)
    prefix = unique_topic("rx")
    a, b, other = f"{prefix}-a", f"{prefix}-b", unique_topic("other")
    for t in (a, b, other):
        create_topic(broker, t, partitions=2)
    conf = member_conf(protocol, **{"topic.metadata.refresh.interval.ms": 1000})
    conf.update({"bootstrap.servers": broker.bootstrap, "group.id": unique_topic("g-rx")})
    consumer = Consumer(conf)
    consumer.subscribe([f"^{prefix}-.*"])
    try:
        def assigned():
            consumer.poll(0.1)
            return {(tp.topic, tp.partition) for tp in consumer.assignment()}

        want = {(t, p) for t in (a, b) for p in (0, 1)}
        wait_until(lambda: assigned() == want, WAIT_S, f"assignment of {sorted(want)}")
        producer = producer_client(broker)
        reports = produce_all(producer, [(t, {"value": t.encode(), "partition": 0}) for t in (a, b, other)])
        assert all(r[0] is None for r in reports), reports
        seen = []

        def got_both():
            msg = consumer.poll(0.1)
            if msg is not None and msg.error() is None:
                seen.append(msg.topic())
            return sorted(seen) == sorted([a, b])

        wait_until(got_both, WAIT_S, "the records of the matching topics")
        late = f"{prefix}-late"
        create_topic(broker, late, partitions=1)
        want |= {(late, 0)}
        wait_until(lambda: assigned() == want, WAIT_S, f"the new topic {late} to be assigned")
        assert other not in {t for t, _ in assigned()}
        assert other not in seen
    finally:
        consumer.close()
