"""The history checker (`history.py`) and the recording workload (`workload.py`) that the
replication fault tests are built on.

The checker is first shown hand-built histories, one per violation, and must name the exact
counterexample (partition, offset, values); then the workload runs against a real single-node
Skein and the reference Kafka, and the checker must pass with records acknowledged and none
lost; finally a real loss (a torn segment tail that recovery cuts off after kill -9, then new
records written over the lost offsets) must be reported as exactly the offsets that went.
"""

import os
import struct
import time
from pathlib import Path

import pytest
from confluent_kafka import TopicPartition

from helpers import create_topic, unique_topic, wait_until
from history import History, assert_history_ok, check
from workload import GroupConsumer, ProducerWorkload, observe_committed, read_back

T = "topic"


def acked(h, client, partition, offset, value, epoch=None):
    s = h.send(client, T, value, partition)
    h.ack(s, partition, offset, epoch)
    return s


def read_back_of(h, contents, ends=None, reader="rb"):
    """Records a read-back of T that found `contents` ({partition: [value, ...]} from offset
    0, None for a gap)."""
    ends = ends or {p: (0, len(vs)) for p, vs in contents.items()}
    rb = h.begin_read_back(reader, T, ends)
    for p, values in contents.items():
        for o, value in enumerate(values):
            if value is not None:
                h.read(rb.reader, T, p, o, value)
    h.end_read_back(rb)
    return rb


def clean_history():
    h = History()
    for i in range(3):
        acked(h, "p0", 0, i, f"p0-{i}", epoch=1)
    acked(h, "p1", 1, 0, "p1-0")
    failed = h.send("p1", T, "p1-1", 1)
    h.fail(failed, "NOT_ENOUGH_REPLICAS")
    unknown = h.send("p1", T, "p1-2", 1)
    h.indeterminate(unknown, "_MSG_TIMED_OUT")
    lost_in_flight = h.send("p1", T, "p1-3", 1)
    h.indeterminate(lost_in_flight, "_MSG_TIMED_OUT")
    c = h.reader_session("c0")
    for o in range(3):
        h.read(c, T, 0, o, f"p0-{o}", 1)
    h.commit("g", T, 0, 2, "c0")
    h.commit("g", T, 0, 3, "c0")
    h.observe_committed("g", T, 0, 3)
    read_back_of(h, {0: ["p0-0", "p0-1", "p0-2"], 1: ["p1-0", "p1-2"]})
    return h


def only(result, kind):
    """The single counterexample of `kind`, after checking no other kind was flagged."""
    flagged = {k: len(v) for k, v in result.violations.items() if v}
    assert set(flagged) == {kind}, f"expected only {kind}, got {flagged}\n{result.report()}"
    (v,) = result.of(kind)
    return v


def test_clean_history_passes():
    result = assert_history_ok(clean_history())
    assert result.ok
    assert result.acknowledged == 4
    assert result.failed == 1
    assert result.indeterminate == 2
    assert result.indeterminate_seen == 1
    assert result.indeterminate_unseen == 1
    assert result.lost == 0 and result.duplicated == 0
    assert result.read_backs == 1 and result.commits == 3
    assert result.report().startswith("history OK: ")


def test_lost_record_is_named():
    h = History()
    for i in range(4):
        acked(h, "p0", 0, i, f"p0-{i}")
    read_back_of(h, {0: ["p0-0", "p0-1", None, "p0-3"]}, ends={0: (0, 4)})
    result = check(h)
    v = only(result, "lost")
    assert (v.partition, v.offset) == (0, 2)
    assert "'p0-2'" in v.detail and "found nothing there (log [0, 4))" in v.detail
    assert result.lost == 1 and result.acknowledged == 4
    with pytest.raises(AssertionError, match=r"lost: 1\n  topic\[0\] offset 2: value 'p0-2'"):
        assert_history_ok(h)


def test_lost_suffix_below_the_log_end_is_named():
    # The log was cut back to 2 records (an unclean truncation): the read-back's high
    # watermark is 2, but offsets 2 and 3 were acknowledged before it began.
    h = History()
    for i in range(4):
        acked(h, "p0", 0, i, f"p0-{i}")
    read_back_of(h, {0: ["p0-0", "p0-1"]})
    result = check(h)
    assert {(v.partition, v.offset) for v in result.of("lost")} == {(0, 2), (0, 3)}
    assert result.lost == 2


def test_ack_after_read_back_began_is_not_required():
    h = History()
    acked(h, "p0", 0, 0, "p0-0")
    rb = h.begin_read_back("rb", T, {0: (0, 1)})
    h.read(rb.reader, T, 0, 0, "p0-0")
    acked(h, "p0", 0, 1, "p0-1")  # after the read-back began, beyond its high watermark
    h.end_read_back(rb)
    assert assert_history_ok(h).lost == 0


def test_read_back_is_judged_from_before_its_watermarks():
    # An acknowledgement that arrives while the read-back asks for the watermarks (after its
    # mark) may be above them: not required.
    h = History()
    acked(h, "p0", 0, 0, "p0-0")
    started = h.mark()
    acked(h, "p0", 0, 1, "p0-1")
    rb = h.begin_read_back("rb", T, {0: (0, 1)}, started_at=started)
    h.read(rb.reader, T, 0, 0, "p0-0")
    h.end_read_back(rb)
    assert assert_history_ok(h).lost == 0


def test_offset_fetch_under_way_during_a_commit_is_no_regression():
    # OffsetFetch began (mark), a commit of 150 was acknowledged meanwhile, then the fetch
    # answered 100: consistent. A fetch begun after that acknowledgement answering 100 is not.
    h = clean_history()
    h.commit("g2", T, 0, 100, "c1")
    started = h.mark()
    h.commit("g2", T, 0, 150, "c1")
    h.observe_committed("g2", T, 0, 100, "fetch-1", at=started)
    assert check(h).ok
    h.observe_committed("g2", T, 0, 100, "fetch-2")
    v = only(check(h), "commit_regressions")
    assert "observed offset 100 (by fetch-2" in v.detail and "commit offset 150" in v.detail


def test_duplicated_record_is_named():
    h = History()
    acked(h, "p0", 0, 0, "p0-0")
    acked(h, "p0", 0, 1, "p0-1")
    maybe = h.send("p0", T, "p0-2", 0)
    h.indeterminate(maybe, "_MSG_TIMED_OUT")
    read_back_of(h, {0: ["p0-0", "p0-1", "p0-2", "p0-2"]})
    result = check(h)
    v = only(result, "duplicated")
    assert (v.partition, v.offset) == (0, 2)
    assert "'p0-2' (info send by p0) read at [0]@2, [0]@3" in v.detail
    assert result.duplicated == 1 and result.indeterminate_seen == 1


def test_two_values_at_one_offset_are_named():
    # Two consumers disagree about offset 1; the acknowledgement sides with one of them.
    h = History()
    acked(h, "p0", 0, 0, "p0-0")
    acked(h, "p0", 0, 1, "p0-1")
    other = h.send("p1", T, "p1-0", 0)
    h.indeterminate(other, "_TRANSPORT")
    c = h.reader_session("c0")
    h.read(c, T, 0, 0, "p0-0")
    h.read(c, T, 0, 1, "p1-0")
    read_back_of(h, {0: ["p0-0", "p0-1"]})
    result = check(h)
    v = only(result, "conflicts")
    assert (v.partition, v.offset) == (0, 1)
    assert "'p0-1' seen by ack to p0 (seq 1), rb#1" in v.detail
    assert "'p1-0' seen by c0#1" in v.detail


def test_two_acknowledgements_of_one_offset_are_a_conflict():
    # Two leaders acknowledging the same offset (a split brain); the read-back has one.
    h = History()
    acked(h, "p0", 0, 0, "p0-0")
    acked(h, "p1", 0, 0, "p1-0")
    read_back_of(h, {0: ["p1-0"]})
    result = check(h)
    assert [(v.partition, v.offset) for v in result.of("conflicts")] == [(0, 0)]
    assert [(v.offset, "'p0-0'" in v.detail) for v in result.of("lost")] == [(0, True)]


def test_read_of_a_failed_send_is_named():
    h = History()
    acked(h, "p0", 0, 0, "p0-0")
    bad = h.send("p0", T, "p0-1", 0)
    h.fail(bad, "NOT_ENOUGH_REPLICAS (19)")
    read_back_of(h, {0: ["p0-0", "p0-1"]})
    result = check(h)
    v = only(result, "failed_read")
    assert (v.partition, v.offset) == (0, 1)
    assert "'p0-1'" in v.detail and "NOT_ENOUGH_REPLICAS" in v.detail and "rb#1" in v.detail


def test_unexpected_value_is_named():
    h = History()
    acked(h, "p0", 0, 0, "p0-0")
    read_back_of(h, {0: ["p0-0", "garbage"]})
    v = only(check(h), "unexpected")
    assert (v.partition, v.offset) == (0, 1) and "'garbage'" in v.detail


def test_misplaced_record_is_named():
    h = History()
    acked(h, "p0", 0, 0, "p0-0")
    acked(h, "p0", 0, 1, "p0-1")
    read_back_of(h, {0: ["p0-1", "p0-0"]})
    result = check(h)
    assert {(v.offset, v.kind) for v in result.of("misplaced")} == {(0, "misplaced"),
                                                                    (1, "misplaced")}
    assert {v.offset for v in result.of("conflicts")} == {0, 1}
    assert result.lost == 0


def test_reader_going_backwards_is_named():
    h = History()
    for i in range(3):
        acked(h, "p0", 0, i, f"p0-{i}")
    c = h.reader_session("c0")
    for o in (0, 1, 2, 1):
        h.read(c, T, 0, o, f"p0-{o}")
    # A new session (a new assignment) may go back to the committed offset.
    c2 = h.reader_session("c0")
    h.read(c2, T, 0, 1, "p0-1")
    read_back_of(h, {0: ["p0-0", "p0-1", "p0-2"]})
    v = only(check(h), "reader_order")
    assert (v.partition, v.offset) == (0, 1)
    assert "reader c0#1 read offset 1 ('p0-1') after offset 2 ('p0-2')" in v.detail


def test_producer_reordering_is_named():
    h = History()
    a = h.send("p0", T, "p0-0", 0)
    b = h.send("p0", T, "p0-1", 0)
    h.ack(b, 0, 0)
    h.ack(a, 0, 1)  # sent first, stored after: idempotence forbids it
    read_back_of(h, {0: ["p0-1", "p0-0"]})
    v = only(check(h), "producer_order")
    assert (v.partition, v.offset) == (0, 0)
    assert "'p0-1' (seq 1) after 'p0-0' (seq 0, offset 1)" in v.detail


def test_non_idempotent_producer_may_reorder():
    h = History()
    a = h.send("p0", T, "p0-0", 0, idempotent=False)
    b = h.send("p0", T, "p0-1", 0, idempotent=False)
    h.ack(b, 0, 0)
    h.ack(a, 0, 1)
    read_back_of(h, {0: ["p0-1", "p0-0"]})
    assert_history_ok(h)


def test_lost_acks1_record_is_counted_not_flagged():
    # As in Kafka: an acks=1 record acknowledged by a leader that was then cut off may be
    # gone, and the new leader may hold another record at its offset.
    h = History()
    acked(h, "p0", 0, 0, "p0-0")
    weak = h.send("w0", T, "w0-0", 0, acks="1")
    h.ack(weak, 0, 1)
    acked(h, "p0", 0, 1, "p0-1")
    read_back_of(h, {0: ["p0-0", "p0-1"]})
    result = assert_history_ok(h)
    assert result.lost == 0 and result.lost_unreplicated == 1 and result.conflicts == 0
    assert "lost_unreplicated=1" in result.report()


def test_leader_epoch_going_backwards_is_named():
    h = History()
    for i in range(3):
        acked(h, "p0", 0, i, f"p0-{i}")
    rb = h.begin_read_back("rb", T, {0: (0, 3)})
    for o, epoch in enumerate((1, 2, 1)):
        h.read(rb.reader, T, 0, o, f"p0-{o}", epoch)
    h.end_read_back(rb)
    v = only(check(h), "epoch_order")
    assert (v.partition, v.offset) == (0, 2)
    assert "leader epoch 1" in v.detail and "after epoch 2 at offset 1" in v.detail


def test_committed_offset_going_backwards_is_named():
    h = clean_history()
    h.commit("g", T, 0, 5, "c0")
    h.commit("g", T, 1, 1, "c0")  # another partition: independent
    h.observe_committed("g", T, 0, 4, "after-failover")
    h.commit("other", T, 0, 0, "c9")  # another group: independent
    result = check(h)
    v = only(result, "commit_regressions")
    assert (v.partition, v.offset) == (0, 4)
    assert "group g: observed offset 4 (by after-failover" in v.detail
    assert "after commit offset 5 (by c0" in v.detail


def test_topic_never_read_back_is_flagged():
    h = History()
    acked(h, "p0", 0, 0, "p0-0")
    v = only(check(h), "no_read_back")
    assert v.topic == T and "1 acknowledged records" in v.detail


def test_history_round_trips_through_json(tmp_path):
    h = clean_history()
    h.save(tmp_path / "history.json")
    again = History.load(tmp_path / "history.json")
    assert check(again).ok
    acked(again, "p0", 0, 3, "p0-x")
    rb = read_back_of(again, {0: ["p0-0", "p0-1", "p0-2"], 1: ["p1-0", "p1-2"]})
    assert rb.reader == "rb#2"
    with pytest.raises(AssertionError, match=r"history saved to .*broken\.json"):
        assert_history_ok(again, save_to=tmp_path / "broken.json")
    assert check(History.load(tmp_path / "broken.json")).lost == 1
    again = History.load(tmp_path / "history.json")
    assert check(again).counts == check(h).counts
    s = again.send("p0", T, "p0-3", 0)  # positions and sequences carry on
    assert s.seq == 3 and s.sent_at > max(r.at for r in again.reads)


def test_report_lists_counterexamples_and_counts_them_all():
    h = History()
    for i in range(30):
        acked(h, "p0", 0, i, f"p0-{i}")
    read_back_of(h, {0: []}, ends={0: (30, 30)})
    result = check(h)
    assert result.lost == 30
    report = result.report()
    assert "lost: 30" in report and "... and 10 more" in report
    assert "found nothing there (log [30, 30))" in report


# -- against real brokers ---------------------------------------------------------------------

# Each producer runs until this many of its sends are acknowledged (a few seconds at its rate).
ACKS_PER_PRODUCER = 600
RATE_PER_S = 300


class Remote:
    """A broker this suite did not start: only its bootstrap address."""

    def __init__(self, bootstrap):
        self.bootstrap = bootstrap


@pytest.fixture(scope="module")
def reference():
    """The reference Kafka of the test run (KAFKA_REFERENCE_BOOTSTRAP, as scripts/test exports
    it); skipped, saying why, when there is none, unless SKEIN_REQUIRE_REFERENCE=1."""
    bootstrap = os.environ.get("KAFKA_REFERENCE_BOOTSTRAP")
    if not bootstrap:
        reason = ("KAFKA_REFERENCE_BOOTSTRAP is unset (scripts/test starts the reference Kafka "
                  "and sets it; see tests/README.md)")
        if os.environ.get("SKEIN_REQUIRE_REFERENCE") == "1":
            pytest.fail(f"SKEIN_REQUIRE_REFERENCE=1 but there is no reference broker: {reason}")
        print(f"\n*** SKIPPED: history checks against the reference Kafka ({reason}) ***")
        pytest.skip(f"no reference Kafka broker: {reason}")
    return Remote(bootstrap)


def run_and_check(target, partitions=3):
    """Two idempotent acks=all producers and a live group consumer for a few seconds, with a
    read-back while they run and one after, then the committed offsets; the checker must
    pass."""
    topic = unique_topic("history")
    create_topic(target, topic, partitions=partitions)
    group = unique_topic("history-group")
    h = History()
    consumer = GroupConsumer(target.bootstrap, topic, group, h, member="c0")
    producers = [
        ProducerWorkload(target.bootstrap, topic, h, client=f"p{i}", rate_per_s=RATE_PER_S,
                         partitions=partitions if i == 0 else None)
        for i in range(2)
    ]
    try:
        consumer.start()
        for p in producers:
            p.start()
        for p in producers:
            p.wait_acknowledged(ACKS_PER_PRODUCER // 2, timeout=90)
        # A read-back while the producers run: what was acknowledged before it must be in it.
        during = read_back(target.bootstrap, topic, h)
        for p in producers:
            p.wait_acknowledged(ACKS_PER_PRODUCER, timeout=90)
    finally:
        for p in producers:
            p.stop()
    try:
        total = len(h.acknowledged())
        consumer.wait_reads(total, timeout=90)
    finally:
        consumer.stop()
    rb = read_back(target.bootstrap, topic, h)
    committed = observe_committed(target.bootstrap, group, topic, h)

    result = assert_history_ok(h, min_acknowledged=2 * ACKS_PER_PRODUCER)
    counts = h.counts()
    # Nothing went wrong on a healthy broker: every send was acknowledged, none pending.
    assert counts["fail"] == 0 and counts["info"] == 0 and counts["pending"] == 0, (
        f"{counts}; producer errors: {[p.errors[-3:] for p in producers]}")
    assert result.lost == 0 and result.duplicated == 0 and result.conflicts == 0
    assert result.acknowledged == result.sends == total
    # The last read-back read exactly the acknowledged records, each partition from 0 to its
    # end.
    assert sum(high - low for low, high in rb.ends.values()) == total
    assert all(low == 0 for low, high in rb.ends.values())
    # The live consumer read them all too, and its last commits are the log ends.
    assert committed == {p: high for p, (low, high) in rb.ends.items() if high > 0}, (
        f"committed {committed}, log ends {rb.ends}")
    assert result.commits >= partitions
    assert result.read_backs == 2 and during.finished_at < rb.started_at
    return h, result


def test_workload_on_skein_passes_the_checker(module_broker):
    h, result = run_and_check(module_broker)
    # Single node: every acknowledgement and read is in one leader epoch, and reads carry it.
    topic = h.sends[0].topic
    assert [len(h.leader_epochs(topic, p)) for p in range(3)] == [1, 1, 1]
    assert all(r.leader_epoch is not None for r in h.reads)


def test_workload_on_reference_kafka_passes_the_checker(reference):
    run_and_check(reference)


def produce_acknowledged(target, topic, h, client, count, partitions=1):
    """Runs a producer until `count` of its sends are acknowledged, then stops it."""
    with ProducerWorkload(target.bootstrap, topic, h, client=client, rate_per_s=1000,
                          partitions=partitions) as p:
        p.wait_acknowledged(count, timeout=90)
    return p


def lost_offsets(result):
    return sorted((v.partition, v.offset) for v in result.of("lost"))


@pytest.mark.parametrize("where", ["skein", "reference"])
def test_checker_names_records_removed_by_delete_records(where, module_broker, request):
    target = module_broker if where == "skein" else request.getfixturevalue("reference")
    topic = unique_topic("history-deleted")
    admin = create_topic(target, topic, partitions=2)
    h = History()
    produce_acknowledged(target, topic, h, "p0", 200, partitions=2)
    read_back(target.bootstrap, topic, h)
    assert_history_ok(h, min_acknowledged=200)

    # The checker must now see exactly partition 0's first 17 records go.
    (future,) = admin.delete_records([TopicPartition(topic, 0, 17)]).values()
    assert future.result(timeout=30).low_watermark == 17
    read_back(target.bootstrap, topic, h)
    result = check(h)
    flagged = {k for k, v in result.violations.items() if v}
    assert flagged == {"lost"}, result.report()
    assert lost_offsets(result) == [(0, o) for o in range(17)], result.report()
    assert result.lost == 17
    assert all("found nothing there (log [17," in v.detail for v in result.of("lost"))
    with pytest.raises(AssertionError, match="lost: 17"):
        assert_history_ok(h)


# A record batch (Kafka's on-disk format, which Skein's segments use): base offset (int64),
# then the length of the rest (int32); the last offset delta is an int32 at byte 23.
BATCH_PREFIX = struct.Struct(">qi")
LAST_OFFSET_DELTA = struct.Struct(">i")
LAST_OFFSET_DELTA_AT = 23


def segment_batches(path):
    """(file position, size, base offset, last offset) of every whole batch in a segment."""
    data = path.read_bytes()
    out = []
    pos = 0
    while pos + BATCH_PREFIX.size <= len(data):
        base, length = BATCH_PREFIX.unpack_from(data, pos)
        size = BATCH_PREFIX.size + length
        if length <= 0 or pos + size > len(data):
            break
        (delta,) = LAST_OFFSET_DELTA.unpack_from(data, pos + LAST_OFFSET_DELTA_AT)
        out.append((pos, size, base, base + delta))
        pos += size
    return out


def test_checker_names_records_cut_off_by_a_torn_tail(broker):
    """A real suffix loss, as an unclean failover would cause: after kill -9, a batch in the
    middle of the active segment is corrupted, so recovery cuts the log there. The checker
    must report exactly the acknowledged offsets from that batch on as lost, and once a new
    producer writes over them, each of those offsets as holding two values."""
    topic = unique_topic("history-torn")
    create_topic(broker, topic, partitions=1)
    h = History()
    produce_acknowledged(broker, topic, h, "p0", 400)
    end = read_back(broker.bootstrap, topic, h).ends[0][1]
    assert_history_ok(h, min_acknowledged=400)
    assert end == len(h.acknowledged())

    broker.kill9()
    (segment,) = sorted(Path(broker.data_dir, f"{topic}-0").glob("*.log"))
    batches = segment_batches(segment)
    assert batches and batches[-1][3] == end - 1, f"segment ends at {batches[-1:]}, log at {end}"
    # The batch starting nearest the middle of the log, but not the first: a suffix goes.
    later = [b for b in batches if b[2] > 0]
    assert later, f"one batch holds the whole log: {batches}"
    pos, size, cut, _ = min(later, key=lambda b: abs(b[2] - end // 2))
    with open(segment, "r+b") as f:
        f.seek(pos + size - 1)  # the batch's last byte: a record, under the CRC
        byte = f.read(1)
        f.seek(pos + size - 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    broker.start(port=broker.port)
    assert "log truncated there" in broker.log()

    rb = read_back(broker.bootstrap, topic, h)
    assert rb.ends[0] == (0, cut), f"log after recovery {rb.ends[0]}, expected cut at {cut}"
    result = check(h)
    assert {k for k, v in result.violations.items() if v} == {"lost"}, result.report()
    assert lost_offsets(result) == [(0, o) for o in range(cut, end)], result.report()
    assert result.lost == end - cut > 0

    # New records take the lost offsets: each now has two values (the acknowledged one that
    # went, and the new one), and stays lost.
    produce_acknowledged(broker, topic, h, "p1", end - cut + 10)
    read_back(broker.bootstrap, topic, h)
    result = check(h)
    assert {k for k, v in result.violations.items() if v} == {"lost", "conflicts"}, (
        result.report())
    assert result.lost == end - cut, result.report()
    conflicts = result.of("conflicts")
    assert [(v.partition, v.offset) for v in conflicts] == [(0, o) for o in range(cut, end)]
    first = conflicts[0]
    lost_value = next(s.value for s in h.acknowledged() if s.client == "p0" and s.offset == cut)
    assert f"{lost_value!r} seen by ack to p0" in first.detail
    assert "'p1-0' seen by ack to p1 (seq 0), read-back#3" in first.detail, first.detail
    with pytest.raises(AssertionError) as failure:
        assert_history_ok(h)
    assert f"lost: {end - cut}" in str(failure.value)
    assert f"conflicts: {end - cut}" in str(failure.value)


def test_workload_rides_out_kill9_and_restart(broker):
    """The shape of a fault test, on one node: load, kill -9, restart, more load, read back."""
    topic = unique_topic("history-kill9")
    create_topic(broker, topic, partitions=2)
    h = History()
    with ProducerWorkload(broker.bootstrap, topic, h, client="p0", rate_per_s=RATE_PER_S) as p:
        p.wait_acknowledged(300, timeout=90)
        broker.kill9()
        broker.start(port=broker.port)
        p.wait_more_acknowledged(300, timeout=120)
    read_back(broker.bootstrap, topic, h)
    result = assert_history_ok(h, min_acknowledged=600)
    assert result.lost == 0 and result.duplicated == 0
    # Idempotence and retries: nothing failed, nothing left unknown.
    assert result.failed == 0 and result.indeterminate == 0, result.report()


def test_stop_is_bounded_when_the_broker_is_gone(broker):
    """With the broker dead, stop() returns within its timeout: what was not acknowledged is
    purged and recorded as indeterminate, and nothing keeps running."""
    topic = unique_topic("history-gone")
    create_topic(broker, topic, partitions=1)
    h = History()
    p = ProducerWorkload(broker.bootstrap, topic, h, client="p0", rate_per_s=RATE_PER_S).start()
    try:
        p.wait_acknowledged(100, timeout=90)
        broker.kill9()
        wait_until(lambda: h.counts()["pending"] > 0, 30, "sends the dead broker cannot answer")
    finally:
        started = time.monotonic()
        p.stop(timeout=3)
        took = time.monotonic() - started
    assert took < 20, f"stop(timeout=3) took {took:.1f}s"
    assert not p._thread.is_alive()
    counts = h.counts()
    assert counts["pending"] == 0, counts
    assert counts["info"] > 0 and counts["fail"] == 0, counts
    assert all("_PURGE" in s.error for s in h.sends if s.outcome == "info")

    broker.start(port=broker.port)
    read_back(broker.bootstrap, topic, h)
    result = assert_history_ok(h, min_acknowledged=100)
    assert result.indeterminate == counts["info"]
    assert result.indeterminate_seen + result.indeterminate_unseen == result.indeterminate


@pytest.mark.parametrize("where", ["skein", "reference"])
def test_oversized_records_are_definite_failures(where, module_broker, request):
    """Records over the topic's max.message.bytes get MSG_SIZE_TOO_LARGE, which guarantees
    nothing was written: the workload records them as definitely failed, and the read-back
    (which would flag any of them as a failed send read) finds only the other producer's."""
    target = module_broker if where == "skein" else request.getfixturevalue("reference")
    topic = unique_topic("history-oversized")
    create_topic(target, topic, partitions=1, config={"max.message.bytes": "10000"})
    h = History()
    big = ProducerWorkload(target.bootstrap, topic, h, client="big", rate_per_s=100,
                           padding_bytes=20000)
    # The limit is on a whole batch: keep the small records' batches well under it.
    small = ProducerWorkload(target.bootstrap, topic, h, client="small", rate_per_s=100,
                             conf={"batch.size": 4000})
    try:
        big.start()
        small.start()
        big.wait_completed(20, timeout=90)
        small.wait_acknowledged(20, timeout=90)
    finally:
        big.stop()
        small.stop()
    read_back(target.bootstrap, topic, h)
    result = assert_history_ok(h, min_acknowledged=20)
    outcomes = {(s.client, s.outcome) for s in h.sends}
    assert outcomes == {("big", "fail"), ("small", "ok")}, (
        outcomes, [(s.client, s.value, s.outcome, s.error) for s in h.sends
                   if (s.client, s.outcome) not in {("big", "fail"), ("small", "ok")}][:5])
    assert all("MSG_SIZE_TOO_LARGE" in s.error for s in h.sends if s.client == "big")
    assert result.failed == big.failed > 0 and big.fatal is None


def test_acks0_sends_are_indeterminate_and_seen_once(module_broker):
    """acks=0 reports no offset: every send is indeterminate; on a healthy broker the
    read-back finds each exactly once, and the checker counts them as seen."""
    topic = unique_topic("history-acks0")
    create_topic(module_broker, topic, partitions=1)
    h = History()
    with ProducerWorkload(module_broker.bootstrap, topic, h, client="a0", rate_per_s=500,
                          conf={"acks": "0", "enable.idempotence": False}) as p:
        p.wait_completed(100, timeout=90)
    read_back(module_broker.bootstrap, topic, h)
    result = assert_history_ok(h, min_acknowledged=0)
    assert result.acknowledged == 0 and result.failed == 0
    assert result.indeterminate == result.sends == result.indeterminate_seen >= 100
    assert result.indeterminate_unseen == 0 and result.duplicated == 0
    assert {s.acks for s in h.sends} == {"0"} and not any(s.idempotent for s in h.sends)
