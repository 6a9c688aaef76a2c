"""Log compaction with a real broker and librdkafka (confluent-kafka).

Topics are compacted with small segments, a low min.cleanable.dirty.ratio and a cleaner that
backs off briefly, so passes happen within seconds. Each test waits for the state it expects
with a deadline and then checks exact keys, values and offsets.
"""

import random
import threading
import time
import urllib.request

import pytest
from confluent_kafka import KafkaError, Producer, TopicPartition

from conftest import _new_broker
from helpers import (
    consumer_client,
    create_topic,
    produce_all,
    assert_delivered,
    producer_client,
    unique_topic,
    wait_until,
)

CLEANER_SETS = ["log.cleaner.backoff.ms=100", "log.retention.check.interval.ms=1000"]

COMPACTED = {
    "cleanup.policy": "compact",
    "segment.bytes": "4096",
    "min.cleanable.dirty.ratio": "0.01",
    "min.compaction.lag.ms": "0",
    "delete.retention.ms": "3000",
}


@pytest.fixture
def cleaner_broker(tmp_path):
    b = _new_broker(tmp_path / "data", sets=CLEANER_SETS)
    yield b
    b.close()


def read_partition(broker, topic, partition=0, timeout=30):
    """Every record of one partition from its start to the high watermark taken first, as a
    list of (offset, key, value)."""
    consumer = consumer_client(broker, **{"enable.partition.eof": True})
    try:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        consumer.assign([TopicPartition(topic, partition, 0)])
        out = []
        deadline = time.monotonic() + timeout
        while True:
            assert time.monotonic() < deadline, f"timed out reading {topic}; got {len(out)}"
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    if msg.offset() >= high:
                        return out
                    continue
                if not msg.topic() and not err.fatal():
                    continue
                raise AssertionError(f"consumer error on {topic}: {err}")
            out.append((msg.offset(), msg.key(), msg.value()))
            if msg.offset() >= high - 1:
                # Under live writes no end-of-partition event may come: the high watermark
                # taken at the start is the end (its last record is the latest of its key,
                # which the cleaner keeps).
                return out
    finally:
        consumer.close()


def produce_updates(broker, topic, updates, **conf):
    """Produces (key, value) pairs to partition 0; returns their delivery reports."""
    producer = producer_client(broker, **{"linger.ms": 5, "acks": "all", **conf})
    reports = produce_all(
        producer, [(topic, {"key": k, "value": v, "partition": 0}) for k, v in updates]
    )
    assert_delivered(reports)
    return reports


def filler(n, tag="f"):
    """Distinct-key records that push everything before them out of the active segment."""
    return [(f"{tag}-{i}".encode(), b"x" * 100) for i in range(n)]


def latest_by_key(updates, reports):
    latest = {}
    for (k, v), (_, _, offset, _) in zip(updates, reports):
        latest[k] = (offset, v)
    return latest


def test_compaction_keeps_the_latest_value_of_each_key_at_its_offset(cleaner_broker):
    topic = unique_topic("compact")
    create_topic(cleaner_broker, topic, partitions=1, config=COMPACTED)
    keys = [f"key-{i}".encode() for i in range(20)]
    updates = [(k, f"{k.decode()}-v{round_}".encode().ljust(60, b".")) for round_ in range(50) for k in keys]
    reports = produce_updates(cleaner_broker, topic, updates)
    produce_updates(cleaner_broker, topic, filler(100))
    want = latest_by_key(updates, reports)

    def compacted():
        records = read_partition(cleaner_broker, topic)
        mine = [(o, k, v) for o, k, v in records if k in want]
        return len(mine) == len(want), records

    wait_until(lambda: compacted()[0], 90, "every key's older values to be cleaned away")
    records = read_partition(cleaner_broker, topic)
    got = {k: (o, v) for o, k, v in records if k in want}
    assert got == want
    # Offsets only grow, and the kept filler is intact.
    offsets = [o for o, _, _ in records]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    assert sum(1 for _, k, _ in records if k.startswith(b"f-")) == 100
    # ListOffsets still answers the original end.
    consumer = consumer_client(cleaner_broker)
    low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    consumer.close()
    assert (low, high) == (0, len(updates) + 100)
    # The cleaner's counters in /metrics.
    with urllib.request.urlopen(f"http://{cleaner_broker.http}/metrics", timeout=10) as resp:
        metrics = resp.read().decode()
    passes = [line for line in metrics.splitlines() if line.startswith("skein_log_cleaner_passes_total ")]
    assert passes and float(passes[0].split()[1]) >= 1, metrics[-2000:]
    removed = [line for line in metrics.splitlines()
               if line.startswith("skein_log_cleaner_records_removed_total ")]
    assert removed and float(removed[0].split()[1]) >= len(updates) - len(want), removed
    # A restart opens the compacted log without truncating anything.
    cleaner_broker.restart()
    assert read_partition(cleaner_broker, topic) == records
    assert "truncated" not in cleaner_broker.log()


def test_tombstones_are_kept_for_delete_retention_then_removed(cleaner_broker):
    topic = unique_topic("tomb")
    create_topic(cleaner_broker, topic, partitions=1, config=COMPACTED)
    keys = [f"t-{i}".encode() for i in range(10)]
    updates = [(k, b"value-" + k) for k in keys] * 3
    produce_updates(cleaner_broker, topic, updates)
    deleted = keys[:5]
    produce_updates(cleaner_broker, topic, [(k, None) for k in deleted])
    produced_at = time.monotonic()
    produce_updates(cleaner_broker, topic, filler(100))

    def by_key():
        out = {}
        for _, k, v in read_partition(cleaner_broker, topic):
            out.setdefault(k, []).append(v)
        return out

    # First pass: old values of deleted keys go, the tombstones stay.
    wait_until(
        lambda: all(by_key().get(k) in (None, [None]) for k in deleted),
        60,
        "the deleted keys' values to be cleaned away",
    )
    seen = by_key()
    if time.monotonic() - produced_at < 3.0:
        assert all(seen.get(k) == [None] for k in deleted), seen
    # After delete.retention.ms a later pass drops the tombstones, without new writes.
    wait_until(
        lambda: all(k not in by_key() for k in deleted), 60, "the tombstones to be removed"
    )
    final = by_key()
    for k in keys[5:]:
        assert final[k] == [b"value-" + k], final.get(k)


def test_a_consumer_reading_during_cleaning_sees_every_keys_latest_value(cleaner_broker):
    topic = unique_topic("live")
    create_topic(cleaner_broker, topic, partitions=1, config=COMPACTED)
    keys = [f"live-{i}".encode() for i in range(30)]
    acked = {}  # key -> highest version acknowledged
    lock = threading.Lock()
    stop = threading.Event()
    errors = []

    def writer():
        producer = producer_client(cleaner_broker, **{"linger.ms": 2, "acks": "all"})
        version = 0

        def report(err, msg):
            if err is not None:
                errors.append(err)
                return
            v = int(msg.value().split(b":")[1])
            with lock:
                acked[msg.key()] = max(acked.get(msg.key(), -1), v)

        while not stop.is_set():
            for k in keys:
                producer.produce(topic, key=k, value=b"v:%d:" % version + b"." * 80, partition=0,
                                 on_delivery=report)
            version += 1
            producer.poll(0)
            producer.flush(10)
        producer.flush(30)

    thread = threading.Thread(target=writer)
    cleaned_before = cleaner_broker.log().count("cleaned log")
    thread.start()
    reads = 0
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline or reads < 3:
            with lock:
                before = dict(acked)
            seen = {}
            for _, k, v in read_partition(cleaner_broker, topic):
                seen[k] = max(seen.get(k, -1), int(v.split(b":")[1]))
            for k, version in before.items():
                assert seen.get(k, -1) >= version, (k, version, seen.get(k))
            reads += 1
    finally:
        stop.set()
        thread.join(60)
    assert not errors, errors[:3]
    passes = cleaner_broker.log().count("cleaned log") - cleaned_before
    assert passes >= 1, "the cleaner never ran while the consumer read"


def test_kill9_during_cleaning_loses_no_latest_value(tmp_path):
    # A slow cleaner (I/O throttled) so that the kills land in the middle of passes.
    sets = CLEANER_SETS + ["log.cleaner.io.max.bytes.per.second=150000"]
    broker = _new_broker(tmp_path / "data", sets=sets)
    try:
        topic = unique_topic("kill")
        config = dict(COMPACTED, **{"segment.bytes": "16384"})
        create_topic(broker, topic, partitions=1, config=config)
        keys = [f"k-{i}".encode() for i in range(50)]
        want = {}
        rng = random.Random(13)
        mid_pass = 0
        for round_ in range(6):
            updates = [(k, f"{k.decode()}:{round_}:{j}".encode().ljust(100, b"."))
                       for j in range(8) for k in keys]
            reports = produce_updates(broker, topic, updates)
            for k, (offset, v) in latest_by_key(updates, reports).items():
                want[k] = (offset, v)
            # Kill at a random point of the (throttled) pass that these updates start: a pass
            # begins within log.cleaner.backoff.ms and reads for about half a second before
            # it writes its cleaned copy, which is on disk only briefly. When the copy is seen,
            # the kill lands while it is there. (The swap's every step is crashed
            # deterministically in skein-log's tests/compaction.rs.)
            part_dir = broker.data_dir / f"{topic}-0"
            deadline = time.monotonic() + rng.uniform(0.05, 0.8)
            while time.monotonic() < deadline:
                if any(part_dir.glob("*.log.cleaned")):
                    mid_pass += 1
                    break
                time.sleep(0.005)
            broker.kill9()
            broker.start(port=broker.port)
            got = {}
            for o, k, v in read_partition(broker, topic):
                got[k] = (o, v)
            assert got == want, f"round {round_}: {len(got)} keys, {len(want)} expected"
        # Left alone, the cleaner finishes: one record per key at its original offset.
        produce_updates(broker, topic, filler(200))

        def done():
            records = read_partition(broker, topic)
            return sum(1 for _, k, _ in records if k in want) == len(want)

        wait_until(done, 120, "the log to be fully compacted after the kills")
        got = {k: (o, v) for o, k, v in read_partition(broker, topic) if k in want}
        assert got == want
        print(f"\nkills that landed with a cleaned copy on disk: {mid_pass} of 6")
    finally:
        broker.close()


@pytest.mark.parametrize("codec", ["none", "lz4"])
def test_keyless_records_to_a_compacted_topic_are_refused_per_record(cleaner_broker, codec):
    topic = unique_topic("nokey")
    create_topic(cleaner_broker, topic, partitions=1, config=COMPACTED)
    producer = producer_client(cleaner_broker, **{"linger.ms": 200, "batch.num.messages": 100,
                                                  "compression.type": codec})
    reports = {}

    def on_delivery_for(i):
        def cb(err, msg):
            reports[i] = err
        return cb

    keyless = {3, 7}
    for i in range(10):
        key = None if i in keyless else f"k{i}".encode()
        producer.produce(topic, key=key, value=b"v%d" % i, partition=0,
                         on_delivery=on_delivery_for(i))
    assert producer.flush(30) == 0
    assert sorted(reports) == list(range(10))
    for i in range(10):
        err = reports[i]
        assert err is not None, f"record {i} was accepted"
        if i in keyless:
            assert err.code() == KafkaError.INVALID_RECORD, (i, err)
        else:
            assert err.code() == KafkaError._INVALID_DIFFERENT_RECORD, (i, err)
    # Nothing of the refused batch was written; keyed records alone are accepted.
    assert read_partition(cleaner_broker, topic) == []
    produce_updates(cleaner_broker, topic, [(b"ok", b"1")])
    assert [(k, v) for _, k, v in read_partition(cleaner_broker, topic)] == [(b"ok", b"1")]


def log_batches(part_dir):
    """(base offset, records count, is control) of every batch in the segment files of a
    partition directory, read from the files (a torn active tail ends its file's list)."""
    out = []
    for seg in sorted(part_dir.glob("*.log")):
        data = seg.read_bytes()
        pos = 0
        while pos + 61 <= len(data):
            base = int.from_bytes(data[pos:pos + 8], "big", signed=True)
            length = int.from_bytes(data[pos + 8:pos + 12], "big", signed=True)
            if length < 49 or pos + 12 + length > len(data):
                break
            attributes = int.from_bytes(data[pos + 21:pos + 23], "big", signed=True)
            count = int.from_bytes(data[pos + 57:pos + 61], "big", signed=True)
            out.append((base, count, bool(attributes & 0x20)))
            pos += 12 + length
    return out


def read_isolated(broker, topic, isolation, timeout=60):
    """Every record of partition 0 a consumer with `isolation` reads now (to partition EOF,
    which librdkafka reports at the high watermark or at the last stable offset)."""
    c = consumer_client(broker, **{"isolation.level": isolation, "enable.partition.eof": True})
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        out = []
        deadline = time.monotonic() + timeout
        while True:
            assert time.monotonic() < deadline, f"timed out reading {topic} ({isolation})"
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error() is not None:
                if m.error().code() == KafkaError._PARTITION_EOF:
                    return out
                if not m.topic() and not m.error().fatal():
                    continue
                raise AssertionError(f"consumer error: {m.error()}")
            out.append((m.offset(), m.key(), m.value()))
    finally:
        c.close()


def test_committed_transactions_are_compacted_and_aborted_ones_removed(cleaner_broker):
    """A transactional producer updates every key in each transaction, committing some and
    aborting others, with plain updates in between. After cleaning, both isolation levels read
    exactly the latest committed value of each key and nothing aborted; the aborted records
    are gone from the files, and the markers of transactions without data go after
    delete.retention.ms (the producer's last marker and those of kept data stay)."""
    topic = unique_topic("txncompact")
    create_topic(cleaner_broker, topic, partitions=1, config=COMPACTED)
    keys = [f"key-{i}".encode() for i in range(10)]
    producer = Producer({"bootstrap.servers": cleaner_broker.bootstrap,
                         "transactional.id": unique_topic("tid"), "linger.ms": 5})
    producer.init_transactions(30)
    want = {}
    aborted_values = set()
    delivered = []

    def on_delivery(err, msg):
        delivered.append((err, msg.offset()))

    rounds = 12
    for r in range(rounds):
        commit = r % 3 != 1 and r != rounds - 1  # rounds 1, 4, 7, 10 and the last abort
        producer.begin_transaction()
        for k in keys:
            value = f"{k.decode()}-txn{r}-{'c' if commit else 'a'}".encode()
            producer.produce(topic, key=k, value=value, partition=0, on_delivery=on_delivery)
            if commit:
                want[k] = value
            else:
                aborted_values.add(value)
        # Written before the outcome (abort_transaction would purge unsent records).
        assert producer.flush(30) == 0
        if commit:
            producer.commit_transaction(30)
        else:
            producer.abort_transaction(30)
        if r == 5:
            # Plain updates between transactions, then committed ones supersede them.
            plain = [(k, f"{k.decode()}-plain".encode()) for k in keys[:5]]
            produce_updates(cleaner_broker, topic, plain)
    # The last committed round wrote every key.
    assert all(v.endswith(b"-txn9-c") for v in want.values()), want
    # Every transactional record reached the log, the aborted ones included.
    assert len(delivered) == rounds * len(keys)
    assert all(err is None and offset >= 0 for err, offset in delivered), delivered[:5]
    produce_updates(cleaner_broker, topic, filler(100))
    part_dir = cleaner_broker.data_dir / f"{topic}-0"
    produced = (rounds * len(keys) + 5 + 100, rounds)

    def mine(records):
        return [(o, k, v) for o, k, v in records if k in want]

    def cleaned():
        got = mine(read_isolated(cleaner_broker, topic, "read_uncommitted"))
        return len(got) == len(want)

    wait_until(cleaned, 90, "the aborted and older values to be cleaned away")
    for isolation in ("read_uncommitted", "read_committed"):
        got = mine(read_isolated(cleaner_broker, topic, isolation))
        assert {k: v for _, k, v in got} == want, isolation
        assert not {v for _, _, v in got} & aborted_values, isolation
        offsets = [o for o, _, _ in got]
        assert offsets == sorted(offsets), isolation

    # In the files: the aborted and older records are gone, not only hidden (left: the latest
    # of each key and the filler), and the markers of transactions without data go once
    # delete.retention.ms (3 s) has passed. Left are the last committed round's COMMIT (its
    # data is the latest) and the producer's last marker (its state); never a marker whose
    # data is still there.
    def file_counts():
        batches = log_batches(part_dir)
        return (sum(c for _, c, control in batches if not control),
                sum(1 for _, _, control in batches if control))

    wait_until(lambda: file_counts() == (len(want) + 100, 2), 90,
               f"the files to hold {len(want) + 100} records and 2 markers (produced {produced})")
    batches = log_batches(part_dir)
    control_offsets = [b for b, _, control in batches if control]
    data_offsets = {o for o, _, _ in mine(read_isolated(cleaner_broker, topic, "read_uncommitted"))}
    # The kept COMMIT comes right after the latest values.
    assert control_offsets[0] == max(data_offsets) + 1, (control_offsets, sorted(data_offsets))
    for isolation in ("read_uncommitted", "read_committed"):
        assert {k: v for _, k, v in mine(read_isolated(cleaner_broker, topic, isolation))} == want
    # A restart reopens the cleaned log and its aborted-transaction index: the same reads.
    cleaner_broker.restart()
    for isolation in ("read_uncommitted", "read_committed"):
        got = mine(read_isolated(cleaner_broker, topic, isolation))
        assert {k: v for _, k, v in got} == want, isolation
    assert "truncated" not in cleaner_broker.log()
    # The producer goes on after the restart (its state survived the cleaning).
    producer.begin_transaction()
    producer.produce(topic, key=keys[0], value=b"after", partition=0)
    producer.commit_transaction(30)
    got = read_isolated(cleaner_broker, topic, "read_committed")
    assert got[-1][1:] == (keys[0], b"after")


def cleaned_to_offsets(broker, topic):
    """The `cleaned_to` of every pass the broker logged over partition 0 of `topic`."""
    import re

    pattern = re.compile(rf"cleaned log topic={re.escape(topic)} partition=0 cleaned_to=(\d+)")
    return [int(m.group(1)) for m in pattern.finditer(broker.log())]


def test_an_open_transaction_stops_cleaning_at_the_last_stable_offset(cleaner_broker):
    """While a transaction is open the cleaner cleans only below its first offset (the LSO):
    the updates after it keep their older values; once it commits, cleaning goes on and its
    record, now committed, is kept as the latest of its key."""
    topic = unique_topic("lsocompact")
    create_topic(cleaner_broker, topic, partitions=1, config=COMPACTED)
    keys = [f"key-{i}".encode() for i in range(10)]
    produce_updates(cleaner_broker, topic, [(k, b"r0") for k in keys] + filler(40, "a"))
    producer = Producer({"bootstrap.servers": cleaner_broker.bootstrap,
                         "transactional.id": unique_topic("tid"), "linger.ms": 5})
    producer.init_transactions(30)
    producer.begin_transaction()
    offsets = []
    producer.produce(topic, key=b"t", value=b"open", partition=0,
                     on_delivery=lambda err, msg: offsets.append((err, msg.offset())))
    assert producer.flush(30) == 0
    assert offsets == [(None, 50)], offsets
    lso = 50
    later = [(k, b"r1") for k in keys] + [(k, b"r2") for k in keys]
    # In batches of their own, so that a segment past the LSO holds them (cleanable but for
    # the open transaction) and the filler's batch rolls to a new active segment.
    produce_updates(cleaner_broker, topic, later[:10])
    produce_updates(cleaner_broker, topic, later[10:])
    produce_updates(cleaner_broker, topic, filler(100, "b"))

    # The segments below the LSO get cleaned (they are dirty), never past it.
    wait_until(lambda: cleaned_to_offsets(cleaner_broker, topic), 60,
               "a pass over the segments below the open transaction")
    # Later loops of the cleaner find nothing more to clean in it while the transaction is
    # open: wait for passes over two other topics, one after the other (the cleaner loops
    # at once after a pass, so it has looked at this topic again in between).
    for i in range(2):
        other = unique_topic(f"pace{i}")
        create_topic(cleaner_broker, other, partitions=1, config=COMPACTED)
        produce_updates(cleaner_broker, other, [(b"x", b"1"), (b"x", b"2")])
        produce_updates(cleaner_broker, other, filler(60, "c"))
        wait_until(lambda: cleaned_to_offsets(cleaner_broker, other), 60,
                   f"a pass over another topic ({i})")
    passes = cleaned_to_offsets(cleaner_broker, topic)
    assert passes and max(passes) <= lso, passes
    records = read_isolated(cleaner_broker, topic, "read_uncommitted")
    past = [(k, v) for o, k, v in records if o > lso and k in keys]
    assert past == later, "records after the LSO must be untouched"
    assert (lso, b"t", b"open") in records
    committed = read_isolated(cleaner_broker, topic, "read_committed")
    assert max(o for o, _, _ in committed) < lso

    # Committed: the LSO moves to the end and cleaning goes on past the old one.
    producer.commit_transaction(30)

    def latest_only():
        got = [(k, v) for _, k, v in read_isolated(cleaner_broker, topic, "read_uncommitted")
               if k in keys]
        return sorted(got) == sorted((k, b"r2") for k in keys)

    wait_until(latest_only, 90, "the updates after the old LSO to be cleaned")
    assert max(cleaned_to_offsets(cleaner_broker, topic)) > lso
    for isolation in ("read_uncommitted", "read_committed"):
        records = read_isolated(cleaner_broker, topic, isolation)
        assert (lso, b"t", b"open") in records, isolation
        assert sorted((k, v) for _, k, v in records if k in keys) == sorted((k, b"r2") for k in keys)
