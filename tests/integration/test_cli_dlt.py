"""`skein dlt list|show` against a Skein broker and the reference Apache Kafka.

Dead letters are produced with confluent-kafka carrying the headers Spring Kafka 3.x/4.x's
DeadLetterPublishingRecoverer writes, with its encodings: `kafka_dlt-original-topic` and the
exception class names, message and stack trace as UTF-8, `kafka_dlt-original-partition` as a
4-byte and `-offset`/`-timestamp` as 8-byte big-endian integers, `retry_topic-attempts` as a
4-byte integer and `retry_topic-backoff-timestamp` as `BigInteger` bytes. One record went
through two retry topics, so it carries three `kafka_dlt-original-*` sets (appended at each
hop); the first names the real origin. The topics: a `-dlt` topic of two partitions, a `.DLT`
topic, a `-dlq` topic that only `--suffix -dlq` finds, and a plain topic and a retry topic
that must never be listed. Every name carries a unique tag, and assertions look only at the
tagged topics, since the reference broker is shared with other suites.
"""

import json
import struct
import time
import uuid
from datetime import datetime, timezone

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from helpers import skein, wait_until

LEFE = "org.springframework.kafka.listener.ListenerExecutionFailedException"
TIMEOUT = "java.net.SocketTimeoutException"
STOCK = "com.example.commerce.InsufficientStockException"
DESER = "org.springframework.kafka.support.serializer.DeserializationException"
ILLEGAL = "java.lang.IllegalArgumentException"


def skein_json(*args, bootstrap):
    proc = skein(*args, "--output", "json", bootstrap=bootstrap, check=0)
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, f"one JSON line expected: {proc.stdout!r}"
    return json.loads(lines[0])


# -- the reference broker ------------------------------------------------------------------------


# -- Spring Kafka's headers ----------------------------------------------------------------------


def i32(n):
    return struct.pack(">i", n)


def i64(n):
    return struct.pack(">q", n)


def big_integer(n):
    """Java's BigInteger.toByteArray: big-endian two's complement, as short as possible."""
    length = (n.bit_length() + 8) // 8
    return n.to_bytes(length, "big", signed=True)


def original(topic, partition, offset, timestamp):
    """The `kafka_dlt-original-*` set DeadLetterPublishingRecoverer adds at one hop."""
    return [
        ("kafka_dlt-original-topic", topic.encode()),
        ("kafka_dlt-original-partition", i32(partition)),
        ("kafka_dlt-original-offset", i64(offset)),
        ("kafka_dlt-original-timestamp", i64(timestamp)),
        ("kafka_dlt-original-timestamp-type", b"CreateTime"),
        ("kafka_dlt-original-consumer-group", b"orders-service"),
    ]


def stacktrace(cause, message):
    return (
        f"{LEFE}: Listener method 'public void com.example.commerce.OrderListener.on(Order)' "
        f"threw exception\n"
        f"\tat org.springframework.kafka.listener.KafkaMessageListenerContainer"
        f"$ListenerConsumer.decorateException(KafkaMessageListenerContainer.java:2996)\n"
        f"Caused by: {cause}: {message}\n"
        f"\tat com.example.commerce.OrderListener.on(OrderListener.java:42)\n"
    )


def exception(cause, message, wrapper=LEFE):
    """The exception headers (Spring replaces them at each hop, so there is one set)."""
    headers = [("kafka_dlt-exception-fqcn", wrapper.encode())]
    if cause is not None:
        headers.append(("kafka_dlt-exception-cause-fqcn", cause.encode()))
    headers += [
        ("kafka_dlt-exception-message", f"Listener failed; {message}".encode()),
        ("kafka_dlt-exception-stacktrace", stacktrace(cause or wrapper, message).encode()),
    ]
    return headers


class Setup:
    """The topics and records of one broker, with what the CLI must say about them."""

    def __init__(self, bootstrap):
        self.bootstrap = bootstrap
        tag = uuid.uuid4().hex[:10]
        self.orders = f"orders-{tag}"
        self.payments = f"payments-{tag}"
        self.dlt = f"{self.orders}-dlt"
        self.retry = f"{self.orders}-retry-0"
        self.legacy = f"{self.payments}.DLT"
        self.dlq = f"events-{tag}-dlq"
        now = int(time.time() * 1000)
        # Record timestamps, oldest first, all in the past.
        self.ts = [now - 3_600_000, now - 600_000, now - 60_000, now - 30_000]
        self.two_hops = (
            original(self.orders, 2, 41, self.ts[1] - 5000)
            + original(self.retry, 0, 7, self.ts[1] - 4000)
            + original(f"{self.orders}-retry-1", 0, 3, self.ts[1] - 2000)
            + exception(TIMEOUT, "Read timed out")
            + [
                ("retry_topic-attempts", i32(3)),
                ("retry_topic-backoff-timestamp", big_integer(self.ts[1] - 1000)),
            ]
        )
        # (topic, partition, key, value, timestamp, headers)
        self.records = [
            (self.dlt, 0, b"order-1", b'{"orderId":1}', self.ts[0],
             original(self.orders, 2, 40, self.ts[0] - 1000) + exception(TIMEOUT, "Read timed out")),
            (self.dlt, 0, b"order-2", b'{"orderId":2}', self.ts[1], self.two_hops),
            (self.dlt, 1, b"order-3", b'{"orderId":3}', self.ts[2],
             original(self.payments, 0, 5, self.ts[2] - 1000)
             + exception(STOCK, "only 0 left of product 9")),
            # A poison record: neither key nor value is UTF-8; no cause header, so the
            # exception class is its root cause.
            (self.dlt, 1, b"\xff\x00", b"\x00\x01\xfe", self.ts[3],
             original(self.orders, 1, 12, self.ts[3] - 1000)
             + exception(None, "failed to deserialize", wrapper=DESER)),
            (self.legacy, 0, b"p-1", b"{}", self.ts[1],
             original(self.payments, 0, 1, self.ts[1] - 1000) + exception(ILLEGAL, "bad amount")),
            (self.legacy, 0, b"p-2", b"{}", self.ts[2],
             original(self.payments, 0, 2, self.ts[2] - 1000) + exception(ILLEGAL, "bad amount")),
            (self.dlq, 0, b"e-1", b"{}", self.ts[2],
             original("events", 0, 1, self.ts[2] - 1000) + exception(ILLEGAL, "bad event")),
            (self.orders, 0, b"order-9", b'{"orderId":9}', self.ts[3], []),
            (self.retry, 0, b"order-2", b'{"orderId":2}', self.ts[1], self.two_hops[:6]),
        ]
        admin = AdminClient({"bootstrap.servers": bootstrap})
        topics = {self.dlt: 2, self.legacy: 1, self.dlq: 1, self.orders: 1, self.retry: 1}
        futures = admin.create_topics(
            [NewTopic(t, num_partitions=n, replication_factor=1) for t, n in topics.items()],
            operation_timeout=30,
        )
        for f in futures.values():
            f.result(timeout=60)
        wait_until(
            lambda: set(topics) <= set(admin.list_topics(timeout=10).topics),
            60,
            "the topics in metadata",
        )
        producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
        failures = []
        for topic, partition, key, value, ts, headers in self.records:
            producer.produce(
                topic,
                key=key,
                value=value,
                partition=partition,
                timestamp=ts,
                headers=headers,
                on_delivery=lambda err, msg: err and failures.append(err),
            )
        assert producer.flush(60) == 0, "records not delivered within 60 s"
        assert failures == [], failures


@pytest.fixture(scope="module", params=["skein", "kafka"])
def setup(request):
    if request.param == "skein":
        bootstrap = request.getfixturevalue("module_broker").bootstrap
    else:
        bootstrap = request.getfixturevalue("kafka_bootstrap")
    return Setup(bootstrap)


def listed(setup, *args):
    out = skein_json("dlt", "list", *args, bootstrap=setup.bootstrap)
    return out, {t["topic"]: t for t in out["topics"]}


def counts(entries):
    return {e["name"]: e["count"] for e in entries}


# -- list ----------------------------------------------------------------------------------------


def test_list_finds_the_dlts_with_counts_causes_origins_and_ages(setup):
    out, topics = listed(setup)
    assert out["suffixes"] == ["-dlt", ".DLT"]
    assert out["scan_limit"] == 10000
    mine = {t for t in topics if setup.orders in t or setup.payments in t or setup.dlq in t}
    # Neither the plain topic, nor the retry topic, nor the -dlq topic is a DLT by default.
    assert mine == {setup.dlt, setup.legacy}, mine

    t = topics[setup.dlt]
    assert t["partitions"] == 2
    assert t["records"] == 4 and t["records_are_offsets"] is True
    assert t["scanned"] == 4 and t["sampled"] is False
    # The root cause is the cause header, else the exception header.
    assert counts(t["by_cause"]) == {TIMEOUT: 2, STOCK: 1, DESER: 1}
    assert t["by_cause"][0] == {"name": TIMEOUT, "count": 2}, "largest count first"
    # The two-hop record counts for its first original topic, not for a retry topic.
    assert counts(t["by_original_topic"]) == {setup.orders: 3, setup.payments: 1}
    assert t["oldest_timestamp"] == setup.ts[0]
    assert t["newest_timestamp"] == setup.ts[3]
    assert t["oldest_age_ms"] > t["newest_age_ms"] >= 25_000

    t = topics[setup.legacy]
    assert (t["partitions"], t["records"], t["scanned"], t["sampled"]) == (1, 2, 2, False)
    assert counts(t["by_cause"]) == {ILLEGAL: 2}
    assert counts(t["by_original_topic"]) == {setup.payments: 2}
    assert (t["oldest_timestamp"], t["newest_timestamp"]) == (setup.ts[1], setup.ts[2])

    text = skein("dlt", "list", bootstrap=setup.bootstrap, check=0).stdout
    row = next(l for l in text.splitlines() if l.startswith(setup.dlt + " "))
    assert row.split()[1:3] == ["2", "4"], row
    assert f"{setup.dlt}:" in text
    assert f"2  {TIMEOUT}" in text
    assert f"3  {setup.orders}" in text
    assert "counts offsets" in text


def test_list_samples_at_most_the_scan_limit_and_says_so(setup):
    _, topics = listed(setup, "--scan-limit", "2")
    t = topics[setup.dlt]
    assert t["records"] == 4
    assert t["scanned"] == 2 and t["sampled"] is True
    assert sum(counts(t["by_cause"]).values()) == 2
    assert sum(counts(t["by_original_topic"]).values()) == 2
    # Ages still span the whole topic: each partition's last record is read.
    assert (t["oldest_timestamp"], t["newest_timestamp"]) == (setup.ts[0], setup.ts[3])
    assert topics[setup.legacy]["sampled"] is False

    text = skein("dlt", "list", "--scan-limit", "2", bootstrap=setup.bootstrap, check=0).stdout
    assert f"{setup.dlt}: counts from a sample, the first 2 of 4 records" in text
    assert "(sample)" in next(l for l in text.splitlines() if l.startswith(setup.dlt + " "))


def test_list_counts_offsets_and_transaction_markers_are_no_sample(setup):
    """A transactional publisher's commit marker takes an offset: RECORDS counts it (offsets),
    the scan reads the three records, and the counts are not called a sample."""
    topic = f"txn-{uuid.uuid4().hex[:10]}-dlt"
    admin = AdminClient({"bootstrap.servers": setup.bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)], operation_timeout=30)[topic].result(timeout=60)
    producer = Producer(
        {"bootstrap.servers": setup.bootstrap, "transactional.id": f"dlt-{topic}"}
    )
    producer.init_transactions(60)
    producer.begin_transaction()
    for i, ts in enumerate(setup.ts[:3]):
        producer.produce(
            topic,
            key=f"k{i}".encode(),
            value=b"{}",
            timestamp=ts,
            headers=original(setup.orders, 0, i, ts - 1000) + exception(TIMEOUT, "slow"),
        )
    producer.commit_transaction(60)
    # The coordinator writes the commit marker after it answers EndTxn: wait for it.
    consumer = Consumer({"bootstrap.servers": setup.bootstrap, "group.id": f"dlt-{topic}"})
    try:
        wait_until(
            lambda: consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1] == 4,
            60,
            "the commit marker at offset 3",
        )
    finally:
        consumer.close()
    _, topics = listed(setup)
    t = topics[topic]
    assert t["records"] == 4, "three records and a commit marker"
    assert (t["scanned"], t["sampled"]) == (3, False)
    assert counts(t["by_cause"]) == {TIMEOUT: 3}
    assert (t["oldest_timestamp"], t["newest_timestamp"]) == (setup.ts[0], setup.ts[2])
    # A scan limit of 2 cuts it: a sample, and the newest record is still found past the marker.
    _, topics = listed(setup, "--scan-limit", "2")
    t = topics[topic]
    assert (t["scanned"], t["sampled"]) == (2, True)
    assert t["newest_timestamp"] == setup.ts[2]


def test_list_suffixes_replace_the_defaults(setup):
    _, topics = listed(setup, "--suffix", "-dlq", "--suffix", ".DLT")
    assert setup.dlq in topics and setup.legacy in topics
    assert setup.dlt not in topics
    assert counts(topics[setup.dlq]["by_cause"]) == {ILLEGAL: 1}
    assert counts(topics[setup.dlq]["by_original_topic"]) == {"events": 1}


# -- show ----------------------------------------------------------------------------------------


def show(setup, *args):
    return skein_json("dlt", "show", setup.dlt, *args, bootstrap=setup.bootstrap)


def header_values(record, name):
    return [(h["value"], h["encoding"]) for h in record["headers"] if h["key"] == name]


def test_show_decodes_spring_headers(setup):
    out = show(setup)
    assert out["topic"] == setup.dlt and out["partitions"] == [0, 1]
    records = out["records"]
    assert [(r["partition"], r["offset"]) for r in records] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert [r["timestamp"] for r in records] == setup.ts
    assert records[0]["key"] == "order-1" and records[0]["value"] == '{"orderId":1}'

    two = records[1]
    assert header_values(two, "kafka_dlt-original-topic") == [
        (setup.orders, "utf8"),
        (setup.retry, "utf8"),
        (f"{setup.orders}-retry-1", "utf8"),
    ]
    assert header_values(two, "kafka_dlt-original-partition") == [
        (2, "int32"), (0, "int32"), (0, "int32")
    ]
    assert header_values(two, "kafka_dlt-original-offset") == [
        (41, "int64"), (7, "int64"), (3, "int64")
    ]
    assert header_values(two, "kafka_dlt-original-timestamp")[0] == (setup.ts[1] - 5000, "int64")
    assert header_values(two, "retry_topic-attempts") == [(3, "int32")]
    assert header_values(two, "retry_topic-backoff-timestamp") == [(setup.ts[1] - 1000, "bigint")]
    d = two["dlt"]
    assert d["original_topic"] == setup.orders
    assert d["original_topics"] == [setup.orders, setup.retry, f"{setup.orders}-retry-1"]
    assert (d["original_partition"], d["original_offset"]) == (2, 41)
    assert d["original_timestamp"] == setup.ts[1] - 5000
    assert d["consumer_group"] == "orders-service"
    assert (d["exception"], d["cause"], d["root_cause"]) == (LEFE, TIMEOUT, TIMEOUT)
    assert d["message"] == "Listener failed; Read timed out"
    assert d["stacktrace"].startswith(LEFE) and f"Caused by: {TIMEOUT}" in d["stacktrace"]

    poison = records[3]
    assert poison["key"] == {"base64": "/wA="}
    assert poison["value"] == {"base64": "AAH+"}
    assert poison["dlt"]["cause"] is None and poison["dlt"]["root_cause"] == DESER

    text = skein("dlt", "show", setup.dlt, bootstrap=setup.bootstrap, check=0).stdout
    assert f"{setup.dlt}  partition 0  offset 1  CreateTime" in text
    assert (
        f"original: {setup.orders} partition 2 offset 41 at " in text
        and f"(then {setup.retry}, {setup.orders}-retry-1)" in text
    )
    assert f"root cause: {TIMEOUT}" in text and f"exception: {LEFE}" in text
    assert "kafka_dlt-original-offset: 41 (int64)" in text
    assert "retry_topic-attempts: 3 (int32)" in text
    assert "key: (binary, 2 bytes, hex) ff00" in text
    assert "payload: (binary, 3 bytes, hex) 0001fe" in text
    assert f"    Caused by: {TIMEOUT}: Read timed out" in text


def test_show_filters(setup):
    keys = lambda out: [r["key"] for r in out["records"]]  # noqa: E731
    assert keys(show(setup, "--exception", TIMEOUT)) == ["order-1", "order-2"]
    assert keys(show(setup, "--exception", "SocketTimeoutException")) == ["order-1", "order-2"]
    # The wrapper is matched too, and a class no record has matches nothing.
    assert len(show(setup, "--exception", LEFE)["records"]) == 3
    assert keys(show(setup, "--exception", "InsufficientStockException")) == ["order-3"]
    assert show(setup, "--exception", "Timeout")["records"] == []
    assert [(r["partition"], r["offset"]) for r in show(setup, "--key", "order-3")["records"]] == [
        (1, 0)
    ]
    out = show(setup, "--partition", "1", "--offset", "1")
    assert out["partitions"] == [1]
    assert [(r["partition"], r["offset"], r["key"]) for r in out["records"]] == [
        (1, 1, {"base64": "/wA="})
    ]
    # --offset alone: that offset in each partition.
    assert [(r["partition"], r["key"]) for r in show(setup, "--offset", "0")["records"]] == [
        (0, "order-1"), (1, "order-3")
    ]
    assert show(setup, "--offset", "9")["records"] == []
    assert keys(show(setup, "--limit", "1")) == ["order-1"]
    assert keys(show(setup, "--partition", "1", "--limit", "5")) == ["order-3", {"base64": "/wA="}]
    text = skein("dlt", "show", setup.dlt, "--key", "nobody", bootstrap=setup.bootstrap, check=0)
    assert f"no records matched in {setup.dlt}" in text.stdout


def test_show_errors(setup):
    missing = f"{setup.orders}-missing-dlt"
    proc = skein("dlt", "show", missing, bootstrap=setup.bootstrap, check=1)
    assert proc.stdout == ""
    assert proc.stderr.strip() == (
        f"skein: dlt show {missing}: UNKNOWN_TOPIC_OR_PARTITION: Topic '{missing}' does not exist."
    )
    proc = skein("dlt", "show", setup.dlt, "--partition", "7", bootstrap=setup.bootstrap, check=1)
    assert proc.stderr.strip() == (
        f"skein: dlt show {setup.dlt}: partition 7 does not exist (the topic has 2 partitions)"
    )
    # The filters exclude each other (clap's usage error).
    proc = skein(
        "dlt", "show", setup.dlt, "--offset", "1", "--key", "k", bootstrap=setup.bootstrap, check=2
    )
    assert "cannot be used with" in proc.stderr


# -- replay --------------------------------------------------------------------------------------

COUNT = "skein-dlt-replay-count"


def java_partition(key, partitions):
    """The Java client's default partitioner (kafka-python's port of Kafka's murmur2)."""
    from kafka.partitioner.default import murmur2

    return (murmur2(key) & 0x7FFFFFFF) % partitions


def new_topics(bootstrap, topics):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=n, replication_factor=1) for t, n in topics.items()],
        operation_timeout=30,
    )
    for f in futures.values():
        f.result(timeout=60)
    wait_until(
        lambda: set(topics) <= set(admin.list_topics(timeout=10).topics),
        60,
        "the topics in metadata",
    )


def put_all(bootstrap, records):
    """Produces (topic, partition, key, value, headers) records, in order."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    failures = []
    for topic, partition, key, value, headers in records:
        producer.produce(
            topic,
            key=key,
            value=value,
            partition=partition,
            headers=headers,
            on_delivery=lambda err, msg: err and failures.append(err),
        )
    assert producer.flush(60) == 0, "records not delivered within 60 s"
    assert failures == [], failures


def read_committed(bootstrap, topic, partitions):
    """Every committed record of `topic`, read with isolation.level=read_committed until each
    partition reports its end."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"check-{uuid.uuid4().hex[:8]}",
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    records, at_end = [], set()
    deadline = time.monotonic() + 60
    try:
        while len(at_end) < partitions:
            assert time.monotonic() < deadline, f"{topic} not read to its end within 60 s"
            m = consumer.poll(1.0)
            if m is None:
                continue
            if m.error():
                assert m.error().code() == -191, m.error()  # _PARTITION_EOF
                at_end.add(m.partition())
                continue
            at_end.discard(m.partition())
            records.append(m)
    finally:
        consumer.close()
    return records


def end_offsets(bootstrap, topic, partitions):
    """The high watermarks (read_uncommitted: records of open transactions count)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "end-offsets",
            "isolation.level": "read_uncommitted",
        }
    )
    try:
        return [
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(partitions)
        ]
    finally:
        consumer.close()


def committed(bootstrap, dlt, partitions):
    """The replay group's committed offsets (None where it has none)."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"skein-dlt-replay.{dlt}"}
    )
    try:
        got = consumer.committed([TopicPartition(dlt, p) for p in range(partitions)], timeout=30)
    finally:
        consumer.close()
    return [tp.offset if tp.offset >= 0 else None for tp in got]


def headers_of(message):
    return message.headers() or []


def replay(setup, dlt, *args, check=0):
    """`skein dlt replay` as JSON; with a non-zero `check`, the process (asserting that exit)."""
    if check:
        return skein("dlt", "replay", dlt, *args, bootstrap=setup.bootstrap, check=check)
    return skein_json("dlt", "replay", dlt, *args, bootstrap=setup.bootstrap)


class ReplayTopics:
    """A 3-partition original topic and its 2-partition DLT with four dead letters: two keyed,
    one keyless, one without an original-topic header."""

    def __init__(self, setup):
        tag = uuid.uuid4().hex[:10]
        self.orig = f"replay-{tag}"
        self.dlt = f"{self.orig}-dlt"
        self.other = f"other-{tag}"
        new_topics(setup.bootstrap, {self.orig: 3, self.dlt: 2, self.other: 1})
        retry = [
            ("retry_topic-attempts", i32(3)),
            ("retry_topic-backoff-timestamp", big_integer(setup.ts[1])),
            ("retry_topic-original-timestamp", big_integer(setup.ts[0])),
        ]
        self.records = [
            (self.dlt, 0, b"order-1", b'{"orderId":1}',
             [("traceId", b"trace-1")] + original(self.orig, 2, 40, setup.ts[0])
             + exception(TIMEOUT, "Read timed out") + retry),
            (self.dlt, 0, None, b'{"orderId":2}',
             original(self.orig, 0, 41, setup.ts[0]) + exception(TIMEOUT, "Read timed out")),
            (self.dlt, 1, b"order-3", b'{"orderId":3}',
             [("kafka_original-topic", self.orig.encode())]
             + exception(STOCK, "none left") + retry),
            (self.dlt, 1, b"order-4", b'{"orderId":4}', exception(ILLEGAL, "no origin")),
        ]
        put_all(setup.bootstrap, self.records)


def test_replay_to_the_original_topic_once(setup):
    t = ReplayTopics(setup)
    out = replay(setup, t.dlt)
    assert out["group"] == f"skein-dlt-replay.{t.dlt}"
    assert out["mode"] == "transactional" and out["dry_run"] is False
    got = {(r["partition"], r["offset"]): r for r in out["replayed"]}
    assert sorted(got) == [(0, 0), (0, 1), (1, 0)]
    assert [(r["partition"], r["offset"]) for r in out["refused"]] == [(1, 1)]
    assert "no original-topic" in out["refused"][0]["reason"]
    assert got[(0, 0)]["to_partition"] == java_partition(b"order-1", 3)
    assert got[(1, 0)]["to_partition"] == java_partition(b"order-3", 3)
    assert all(r["to_topic"] == t.orig and r["replay_count"] == 1 for r in got.values())
    assert sorted(out["committed"], key=lambda c: c["partition"]) == [
        {"partition": 0, "offset": 2},
        {"partition": 1, "offset": 2},
    ]
    assert committed(setup.bootstrap, t.dlt, 2) == [2, 2]

    target = read_committed(setup.bootstrap, t.orig, 3)
    assert len(target) == 3
    by_value = {m.value(): m for m in target}
    sources = {r[3]: r for r in t.records[:3]}
    assert set(by_value) == set(sources)
    for value, m in by_value.items():
        _, _, key, _, headers = sources[value]
        assert m.key() == key
        names = [k for k, _ in headers_of(m)]
        assert not [n for n in names if n.startswith("retry_topic-")], names
        kept = [(k, v) for k, v in headers if not k.startswith("retry_topic-")]
        assert headers_of(m) == kept + [(COUNT, i32(1))]
        r = next(r for r in got.values() if r["to_offset"] == m.offset()
                 and r["to_partition"] == m.partition())
        assert r["key"] == (key.decode() if key else None)
    assert dict(headers_of(by_value[b'{"orderId":1}']))["traceId"] == b"trace-1"

    # A second run replays nothing and moves nothing.
    before = end_offsets(setup.bootstrap, t.orig, 3)
    again = replay(setup, t.dlt)
    assert (again["replayed"], again["refused"], again["passed_over"]) == ([], [], 0)
    assert end_offsets(setup.bootstrap, t.orig, 3) == before
    assert committed(setup.bootstrap, t.dlt, 2) == [2, 2]
    text = skein("dlt", "replay", t.dlt, bootstrap=setup.bootstrap, check=0).stdout
    assert f"{t.dlt}: replayed 0, refused 0" in text
    assert "exactly once" in text


def test_a_dry_run_changes_nothing(setup):
    t = ReplayTopics(setup)
    before = end_offsets(setup.bootstrap, t.orig, 3)
    out = replay(setup, t.dlt, "--dry-run")
    assert out["dry_run"] is True and out["mode"] is None and out["committed"] is None
    assert sorted((r["partition"], r["offset"]) for r in out["replayed"]) == [(0, 0), (0, 1), (1, 0)]
    assert all(r["to_offset"] is None for r in out["replayed"])
    assert [(r["partition"], r["offset"]) for r in out["refused"]] == [(1, 1)]
    text = skein("dlt", "replay", t.dlt, "--dry-run", bootstrap=setup.bootstrap, check=0).stdout
    assert f"would replay {t.dlt} 0:0 key order-1 -> {t.orig} {java_partition(b'order-1', 3)}" in text
    assert f"refused {t.dlt} 1:1: no original-topic header" in text
    assert "dry run: nothing was sent and nothing committed" in text
    assert committed(setup.bootstrap, t.dlt, 2) == [None, None]
    assert end_offsets(setup.bootstrap, t.orig, 3) == before


def test_replay_counts_grow_and_are_refused_at_the_max(setup):
    t = ReplayTopics(setup)
    replay(setup, t.dlt, "--partition", "0", "--key", "order-1")
    (first,) = [m for m in read_committed(setup.bootstrap, t.orig, 3) if m.key() == b"order-1"]
    assert dict(headers_of(first))[COUNT] == i32(1)
    # The replayed record fails again: its consumer's recoverer sends it back to the DLT with
    # its headers (the replay count among them).
    put_all(setup.bootstrap, [(t.dlt, 0, first.key(), first.value(), headers_of(first))])
    out = replay(setup, t.dlt, "--partition", "0", "--max-replays", "2")
    # Offset 1 (keyless) was passed over by the --key run; offset 2 is the record again.
    assert [(r["offset"], r["replay_count"]) for r in out["replayed"]] == [(2, 2)]
    seconds = [m for m in read_committed(setup.bootstrap, t.orig, 3) if m.key() == b"order-1"]
    assert sorted(dict(headers_of(m))[COUNT] for m in seconds) == [i32(1), i32(2)]
    assert [k for k, _ in headers_of(max(seconds, key=lambda m: dict(headers_of(m))[COUNT]))].count(COUNT) == 1
    # Back again: at the max it is refused, and reported.
    second = next(m for m in seconds if dict(headers_of(m))[COUNT] == i32(2))
    put_all(setup.bootstrap, [(t.dlt, 0, second.key(), second.value(), headers_of(second))])
    before = end_offsets(setup.bootstrap, t.orig, 3)
    out = replay(setup, t.dlt, "--partition", "0", "--max-replays", "2")
    assert out["replayed"] == []
    assert [(r["offset"], r["reason"]) for r in out["refused"]] == [
        (3, "replayed 2 times already (--max-replays 2)")
    ]
    assert end_offsets(setup.bootstrap, t.orig, 3) == before
    assert committed(setup.bootstrap, t.dlt, 2)[0] == 4


def test_replay_to_another_topic_with_a_filter(setup):
    t = ReplayTopics(setup)
    out = replay(setup, t.dlt, "--to", t.other, "--exception", "IllegalArgumentException")
    assert [(r["partition"], r["offset"], r["to_topic"]) for r in out["replayed"]] == [
        (1, 1, t.other)
    ]
    assert out["passed_over"] == 3
    (m,) = read_committed(setup.bootstrap, t.other, 1)
    assert (m.key(), m.value()) == (b"order-4", b'{"orderId":4}')
    assert dict(headers_of(m))[COUNT] == i32(1)
    assert end_offsets(setup.bootstrap, t.orig, 3) == [0, 0, 0]
    # Errors: one line, exit 1.
    proc = replay(setup, t.dlt, "--to", f"missing-{uuid.uuid4().hex[:6]}", check=1)
    assert proc.stderr.startswith(f"skein: dlt replay {t.dlt}: --to missing-"), proc.stderr
    proc = replay(setup, f"missing-{uuid.uuid4().hex[:6]}-dlt", check=1)
    assert "UNKNOWN_TOPIC_OR_PARTITION" in proc.stderr


def test_a_replay_killed_midway_then_rerun_gives_each_record_once(setup):
    """kill -9 of the CLI in the middle of a chunk's transaction (slowed by --rate): the rerun
    aborts it (InitProducerId with the same transactional id) and replays from the committed
    offsets, so a read_committed consumer sees every record exactly once."""
    import signal
    import subprocess

    from helpers import SKEIN_BIN

    tag = uuid.uuid4().hex[:10]
    orig, dlt = f"killed-{tag}", f"killed-{tag}-dlt"
    new_topics(setup.bootstrap, {orig: 1, dlt: 1})
    n = 20
    put_all(setup.bootstrap, [
        (dlt, 0, f"k{i}".encode(), f"v{i}".encode(), original(orig, 0, i, setup.ts[0]))
        for i in range(n)
    ])
    proc = subprocess.Popen(
        [SKEIN_BIN, "dlt", "replay", dlt, "--rate", "1/s", "--chunk", "5",
         "--bootstrap", setup.bootstrap],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        # At one record a second, chunk 1 (offsets 0-4, its commit marker at 5) is committed
        # after about 5 s; chunk 2 has written two records (offsets 6, 7) of its open
        # transaction by about 7 s, and would commit at about 10 s.
        wait_until(lambda: end_offsets(setup.bootstrap, orig, 1)[0] >= 8, 60,
                   "the second chunk under way")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert committed(setup.bootstrap, dlt, 1) == [5]
    assert len(read_committed(setup.bootstrap, orig, 1)) == 5
    out = replay(setup, dlt)
    assert [r["offset"] for r in out["replayed"]] == list(range(5, n))
    records = read_committed(setup.bootstrap, orig, 1)
    assert sorted(m.key() for m in records) == sorted(f"k{i}".encode() for i in range(n))
    assert len(records) == n
    assert committed(setup.bootstrap, dlt, 1) == [n]


def test_replay_reads_the_dlt_read_committed(setup):
    """Dead letters of a publisher's aborted transaction are not replayed; its committed ones
    are."""
    tag = uuid.uuid4().hex[:10]
    orig, dlt = f"aborted-{tag}", f"aborted-{tag}-dlt"
    new_topics(setup.bootstrap, {orig: 1, dlt: 1})
    producer = Producer({"bootstrap.servers": setup.bootstrap, "transactional.id": f"t-{tag}"})
    producer.init_transactions(60)
    for keys, commit in [([b"a1", b"a2"], False), ([b"c1"], True)]:
        producer.begin_transaction()
        for k in keys:
            producer.produce(dlt, key=k, value=b"{}", headers=original(orig, 0, 0, setup.ts[0]))
        # Written before the abort (abort_transaction drops what is still queued).
        assert producer.flush(60) == 0
        if commit:
            producer.commit_transaction(60)
        else:
            producer.abort_transaction(60)
    # a1, a2, abort marker, c1, commit marker: wait for the last marker.
    wait_until(lambda: end_offsets(setup.bootstrap, dlt, 1)[0] == 5, 60, "the commit marker")
    out = replay(setup, dlt)
    assert [(r["offset"], r["key"]) for r in out["replayed"]] == [(3, "c1")]
    assert [m.key() for m in read_committed(setup.bootstrap, orig, 1)] == [b"c1"]
    assert committed(setup.bootstrap, dlt, 1) == [5]
# -- purge ---------------------------------------------------------------------------------------


class Purge:
    """A DLT of two partitions, four dead letters each, one second apart; partition 1's are
    ten seconds younger than partition 0's, so a time finds different offsets in each."""

    def __init__(self, bootstrap):
        self.bootstrap = bootstrap
        self.topic = f"purge-{uuid.uuid4().hex[:10]}-dlt"
        self.group = f"skein-dlt-replay.{self.topic}"
        base = int(time.time() * 1000) - 3_600_000
        self.ts = {p: [base + p * 10_000 + i * 1000 for i in range(4)] for p in (0, 1)}
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic(self.topic, 2, 1)], operation_timeout=30)[
            self.topic
        ].result(timeout=60)
        producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
        for p in (0, 1):
            for i, ts in enumerate(self.ts[p]):
                producer.produce(
                    self.topic,
                    key=f"k{p}-{i}".encode(),
                    value=b"{}",
                    partition=p,
                    timestamp=ts,
                    headers=original("orders", p, i, ts - 1000) + exception(TIMEOUT, "slow"),
                )
        assert producer.flush(60) == 0
        assert self.watermarks() == {0: (0, 4), 1: (0, 4)}

    def watermarks(self):
        """(log start, high watermark) per partition, as confluent-kafka sees them."""
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"wm-{self.topic}"})
        try:
            return {
                p: c.get_watermark_offsets(TopicPartition(self.topic, p), timeout=10)
                for p in (0, 1)
            }
        finally:
            c.close()

    def remaining(self):
        """The keys still readable from each partition, read from the beginning."""
        c = Consumer(
            {"bootstrap.servers": self.bootstrap, "group.id": f"read-{self.topic}",
             "enable.auto.commit": False}
        )
        try:
            out = {}
            for p, (low, high) in self.watermarks().items():
                keys = []
                if high > low:
                    c.assign([TopicPartition(self.topic, p, low)])
                    deadline = time.time() + 30
                    while len(keys) < high - low and time.time() < deadline:
                        m = c.poll(1)
                        if m is not None and not m.error():
                            keys.append(m.key().decode())
                out[p] = keys
            return out
        finally:
            c.close()

    def commit(self, offsets):
        """Commits the replay group's offsets, as `skein dlt replay` would."""
        c = Consumer(
            {"bootstrap.servers": self.bootstrap, "group.id": self.group,
             "enable.auto.commit": False}
        )
        try:
            tps = [TopicPartition(self.topic, p, o) for p, o in offsets.items()]
            assert all(tp.error is None for tp in c.commit(offsets=tps, asynchronous=False))
        finally:
            c.close()

    def purge(self, *args, check=0):
        proc = skein("dlt", "purge", self.topic, *args, "--output", "json",
                     bootstrap=self.bootstrap, check=check)
        return json.loads(proc.stdout) if check == 0 else proc


@pytest.fixture(params=["skein", "kafka"])
def purge(request):
    if request.param == "skein":
        bootstrap = request.getfixturevalue("module_broker").bootstrap
    else:
        bootstrap = request.getfixturevalue("kafka_bootstrap")
    return Purge(bootstrap)


def rows(out):
    return {r["partition"]: (r["old_log_start"], r["new_log_start"], r["removed"])
            for r in out["partitions"]}


def test_purge_by_offset_dry_run_and_the_high_watermark_cap(purge):
    # A dry run says what would go and changes nothing.
    out = purge.purge("--before", "2", "--dry-run")
    assert out["dry_run"] is True and out["before"] == {"offset": 2}
    assert rows(out) == {0: (0, 2, 2), 1: (0, 2, 2)} and out["removed"] == 4
    assert purge.watermarks() == {0: (0, 4), 1: (0, 4)}
    assert purge.remaining() == {p: [f"k{p}-{i}" for i in range(4)] for p in (0, 1)}

    # One partition.
    out = purge.purge("--before", "2", "--partition", "0")
    assert out["dry_run"] is False
    assert rows(out) == {0: (0, 2, 2)} and out["removed"] == 2
    assert out["replay_group"] == purge.group and out["replay_group_has_offsets"] is False
    assert purge.watermarks() == {0: (2, 4), 1: (0, 4)}
    assert purge.remaining() == {0: ["k0-2", "k0-3"], 1: [f"k1-{i}" for i in range(4)]}

    # Past the end: capped at each high watermark; below the log start: nothing to do.
    out = purge.purge("--before", "offset:99")
    assert rows(out) == {0: (2, 4, 2), 1: (0, 4, 4)} and out["removed"] == 6
    assert purge.watermarks() == {0: (4, 4), 1: (4, 4)}
    assert purge.remaining() == {0: [], 1: []}
    out = purge.purge("--before", "1")
    assert rows(out) == {0: (4, 4, 0), 1: (4, 4, 0)} and out["removed"] == 0

    text = skein("dlt", "purge", purge.topic, "--before", "4", bootstrap=purge.bootstrap,
                 check=0).stdout
    assert f"removed 0 records of {purge.topic} before offset 4" in text
    assert f"the replay group {purge.group} has no committed offsets" in text


def test_purge_by_time(purge):
    ts0, ts1 = purge.ts[0], purge.ts[1]
    # Between partition 0's second and third record: partition 1's are all younger.
    at = ts0[2] - 500
    rfc = datetime.fromtimestamp(at / 1000, tz=timezone.utc).isoformat(timespec="milliseconds")
    out = purge.purge("--before", rfc, "--dry-run")
    assert out["before"] == {"timestamp": at}
    assert rows(out) == {0: (0, 2, 2), 1: (0, 0, 0)}
    assert purge.watermarks() == {0: (0, 4), 1: (0, 4)}

    out = purge.purge("--before", rfc)
    assert rows(out) == {0: (0, 2, 2), 1: (0, 0, 0)}
    assert purge.watermarks() == {0: (2, 4), 1: (0, 4)}
    assert purge.remaining() == {0: ["k0-2", "k0-3"], 1: [f"k1-{i}" for i in range(4)]}

    # In milliseconds, partition 1's second record: partition 0 has none that recent, so it
    # goes up to its high watermark.
    out = purge.purge("--before", f"timestamp:{ts1[1]}")
    assert rows(out) == {0: (2, 4, 2), 1: (0, 1, 1)}
    assert purge.remaining() == {0: [], 1: ["k1-1", "k1-2", "k1-3"]}
    # After every record: up to the high watermark.
    out = purge.purge("--before", f"timestamp:{ts1[3] + 1}")
    assert rows(out) == {0: (4, 4, 0), 1: (1, 4, 3)}
    assert purge.watermarks() == {0: (4, 4), 1: (4, 4)}


def test_purge_refuses_dead_letters_never_replayed(purge):
    # The replay group has replayed partition 0 up to offset 1, partition 1 not at all.
    purge.commit({0: 1})
    proc = purge.purge("--before", "3", check=1)
    assert proc.stdout == ""
    assert proc.stderr.strip() == (
        f"skein: dlt purge {purge.topic}: refusing to purge 5 dead letters the replay group "
        f"{purge.group} has not replayed (partition 0 replayed up to 1, purge up to 3; "
        f"partition 1 replayed up to nothing, purge up to 3); --force purges them anyway"
    )
    assert purge.watermarks() == {0: (0, 4), 1: (0, 4)}

    # A dry run shows it and deletes nothing.
    out = purge.purge("--before", "3", "--dry-run")
    assert out["replay_group_has_offsets"] is True and out["unreplayed"] == 5
    assert [r["replayed_up_to"] for r in out["partitions"]] == [1, None]
    assert purge.watermarks() == {0: (0, 4), 1: (0, 4)}

    # Partition 1 alone: the group has offsets (in partition 0), none here, so it is refused.
    proc = purge.purge("--before", "1", "--partition", "1", check=1)
    assert "refusing to purge 1 dead letters" in proc.stderr
    assert purge.watermarks() == {0: (0, 4), 1: (0, 4)}

    # Up to what was replayed is fine without --force.
    out = purge.purge("--before", "1", "--partition", "0")
    assert rows(out) == {0: (0, 1, 1)} and out["unreplayed"] == 0
    text = skein("dlt", "purge", purge.topic, "--before", "1", "--partition", "0",
                 bootstrap=purge.bootstrap, check=0).stdout
    assert f"the replay group {purge.group} has replayed every record purged" in text

    # --force purges anyway, and warns.
    proc = skein("dlt", "purge", purge.topic, "--before", "3", "--force", "--output", "json",
                 bootstrap=purge.bootstrap, check=0)
    out = json.loads(proc.stdout)
    assert rows(out) == {0: (1, 3, 2), 1: (0, 3, 3)}
    assert out["forced"] is True and out["unreplayed"] == 5
    assert "5 of these dead letters were never replayed" in proc.stderr
    assert purge.watermarks() == {0: (3, 4), 1: (3, 4)}
    assert purge.remaining() == {0: ["k0-3"], 1: ["k1-3"]}


def test_purge_errors(purge):
    missing = f"{purge.topic}-missing"
    cases = [
        (["dlt", "purge", missing, "--before", "1"],
         f"skein: dlt purge {missing}: UNKNOWN_TOPIC_OR_PARTITION: Topic '{missing}' does not exist."),
        (["dlt", "purge", purge.topic, "--before", "1", "--partition", "7"],
         f"skein: dlt purge {purge.topic}: partition 7 does not exist (the topic has 2 partitions)"),
        (["dlt", "purge", purge.topic, "--before", "yesterday"],
         f"skein: dlt purge {purge.topic}: invalid --before \"yesterday\": expected an offset "
         "(N or offset:N) or a time (RFC 3339, e.g. 2026-12-01T03:00:00Z, or timestamp:MS)"),
        (["dlt", "purge", purge.topic, "--before", "2026-12-01T03:00:00"],
         f"skein: dlt purge {purge.topic}: invalid date-time \"2026-12-01T03:00:00\": "
         "a time zone offset (Z or ±HH:MM) is required"),
    ]
    for args, line in cases:
        proc = skein(*args, bootstrap=purge.bootstrap, check=1)
        assert proc.stdout == ""
        assert proc.stderr.strip() == line
    assert purge.watermarks() == {0: (0, 4), 1: (0, 4)}
