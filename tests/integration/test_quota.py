"""Client quotas (issue 15): AlterClientQuotas / DescribeClientQuotas through `skein quota`
and raw requests (both versions), Kafka's errors for bad requests, quotas kept in the cluster
metadata across a restart, and enforcement: a produce quota of 1 MB/s holds a librdkafka
producer at that rate within 10% over 30 s while an unthrottled producer on the same broker
keeps a rate well above it, the throttled client sees throttle_time_ms (librdkafka's
`throttle` statistics, a raw Produce response) and /metrics counts it; a fetch quota holds a
consumer back, and a fetch past it is answered at once without records, as Kafka answers it.

Rates are measured as Kafka measures them: `quota.window.num` samples of
`quota.window.size.seconds`. With Kafka's default (11 samples of 1 s) a greedy client may
send ten seconds' worth of its quota at once whenever the sample holding its last burst
expires, so over 30 s its rate swings by about ±25% around the quota (as on Kafka); the
30 s test sets `quota.window.num=3` (a Kafka setting), which keeps Kafka's algorithm and
makes those bursts small, and measures after a warm-up.
"""

import json
import struct
import threading
import time
import urllib.request

from confluent_kafka import Consumer, Producer, TopicPartition

import wire
from helpers import DEFAULT_TIMEOUT_S, create_topic, skein, unique_topic, wait_until

MB = 1024 * 1024
INVALID_REQUEST = 42
UNSUPPORTED_VERSION = 35
API_DESCRIBE_CLIENT_QUOTAS = 48
API_ALTER_CLIENT_QUOTAS = 49


def quota(broker, *args, check=0):
    return skein("quota", *args, bootstrap=broker.bootstrap, check=check)


def describe_json(broker, *args):
    out = quota(broker, "describe", *args, "--output", "json").stdout
    return {
        tuple(sorted(e["entity"].items())): e["quotas"] for e in json.loads(out)
    }


# -- raw requests ------------------------------------------------------------------------------


def alter_request(version, correlation_id, entries, validate_only=False):
    """AlterClientQuotas v0 (classic) or v1 (flexible). entries: [(entity, ops)] with entity
    [(type, name)] and ops [(key, value, remove)]."""
    flexible = version >= 1

    def s(v):
        return wire.compact_string(v) if flexible else wire.string(v)

    def arr(items):
        if flexible:
            return wire.uvarint(len(items) + 1) + b"".join(items)
        return wire.array(items)

    tags = wire.EMPTY_TAGGED_FIELDS if flexible else b""
    body = arr(
        [
            arr([s(t) + s(n) + tags for t, n in entity])
            + arr([s(k) + struct.pack(">d", v) + wire.i8(int(r)) + tags for k, v, r in ops])
            + tags
            for entity, ops in entries
        ]
    )
    body += wire.i8(int(validate_only)) + tags
    return wire.request(API_ALTER_CLIENT_QUOTAS, version, correlation_id, body, flexible=flexible)


def parse_alter(r, version):
    """[(error_code, message, [(type, name)])]."""
    flexible = version >= 1
    s = r.compact_string if flexible else r.string

    def count():
        return r.uvarint() - 1 if flexible else r.i32()

    if flexible:
        r.tagged_fields()  # response header v1
    r.i32()  # throttle_time_ms
    out = []
    for _ in range(count()):
        code, message = r.i16(), s()
        entity = []
        for _ in range(count()):
            entity.append((s(), s()))
            if flexible:
                r.tagged_fields()
        if flexible:
            r.tagged_fields()
        out.append((code, message, entity))
    return out


def describe_request(version, correlation_id, components, strict=False):
    """DescribeClientQuotas; components: [(type, match_type, match)]."""
    flexible = version >= 1

    def s(v):
        return wire.compact_string(v) if flexible else wire.string(v)

    tags = wire.EMPTY_TAGGED_FIELDS if flexible else b""
    items = [s(t) + wire.i8(m) + s(n) + tags for t, m, n in components]
    body = (wire.uvarint(len(items) + 1) + b"".join(items)) if flexible else wire.array(items)
    body += wire.i8(int(strict)) + tags
    return wire.request(API_DESCRIBE_CLIENT_QUOTAS, version, correlation_id, body, flexible=flexible)


def parse_describe_error(r, version):
    """(error_code, message) of a DescribeClientQuotas response."""
    if version >= 1:
        r.tagged_fields()
    r.i32()
    code = r.i16()
    message = r.compact_string() if version >= 1 else r.string()
    return code, message


def alter_raw(broker, version, entries, validate_only=False):
    # The controller may still be being elected (a cluster just started): up to its 30 s.
    corr, r = wire.roundtrip(
        broker.bootstrap, alter_request(version, 7, entries, validate_only), timeout=45
    )
    assert corr == 7
    return parse_alter(r, version)


# -- admin -------------------------------------------------------------------------------------


def test_cli_round_trip_with_defaults_and_restart(broker):
    quota(broker, "set", "--user-default", "--producer-byte-rate", "1000")
    quota(broker, "set", "--user", "alice", "--producer-byte-rate", "2000")
    quota(
        broker, "set", "--user", "alice", "--client-id", "app",
        "--consumer-byte-rate", "3000", "--request-percentage", "25.5",
    )
    quota(broker, "set", "--client-id-default", "--consumer-byte-rate", "4000")
    # validate_only stores nothing.
    out = quota(broker, "set", "--user", "bob", "--producer-byte-rate", "5000", "--validate-only")
    assert out.stdout.startswith("valid user=bob")

    everything = {
        (("user", None),): {"producer_byte_rate": 1000.0},
        (("user", "alice"),): {"producer_byte_rate": 2000.0},
        (("client-id", "app"), ("user", "alice")): {
            "consumer_byte_rate": 3000.0,
            "request_percentage": 25.5,
        },
        (("client-id", None),): {"consumer_byte_rate": 4000.0},
    }
    assert describe_json(broker) == everything
    # Filters as Kafka's: exact name, default, strict.
    assert set(describe_json(broker, "--user", "alice")) == {
        (("user", "alice"),),
        (("client-id", "app"), ("user", "alice")),
    }
    assert set(describe_json(broker, "--user", "alice", "--strict")) == {(("user", "alice"),)}
    assert set(describe_json(broker, "--user-default")) == {(("user", None),)}
    assert set(describe_json(broker, "--client-id-default", "--strict")) == {(("client-id", None),)}
    text = quota(broker, "describe").stdout
    assert "user=alice, client-id=app" in text and "user=<default>" in text

    # Kept in the cluster metadata: a restart keeps them.
    broker.restart()
    assert describe_json(broker) == everything

    # Remove one key, then every key of an entity.
    quota(broker, "remove", "--user", "alice", "--client-id", "app", "--request-percentage")
    assert describe_json(broker, "--user", "alice", "--client-id", "app", "--strict") == {
        (("client-id", "app"), ("user", "alice")): {"consumer_byte_rate": 3000.0}
    }
    quota(broker, "remove", "--user", "alice")
    assert (("user", "alice"),) not in describe_json(broker)
    # Removing what an entity does not have is not an error (as Kafka).
    quota(broker, "remove", "--user", "alice", "--producer-byte-rate")


def test_bad_requests_get_kafkas_errors(broker):
    for version in (0, 1):
        cases = [
            ([("user", "a")], [("no_such_quota", 1.0, False)], INVALID_REQUEST),
            ([("user", "a")], [("producer_byte_rate", 0.0, False)], INVALID_REQUEST),
            ([("user", "a")], [("producer_byte_rate", -5.0, False)], INVALID_REQUEST),
            ([("user", "a")], [("producer_byte_rate", 10.5, False)], INVALID_REQUEST),
            ([("user", "a")], [("controller_mutation_rate", 10.0, False)], INVALID_REQUEST),
            (
                [("user", "a")],
                [("producer_byte_rate", 10.0, False), ("producer_byte_rate", 20.0, False)],
                INVALID_REQUEST,
            ),
            ([("group", "g")], [("producer_byte_rate", 10.0, False)], UNSUPPORTED_VERSION),
            ([], [("producer_byte_rate", 10.0, False)], INVALID_REQUEST),
            ([("user", "")], [("producer_byte_rate", 10.0, False)], INVALID_REQUEST),
            ([("user", "a"), ("user", "b")], [("producer_byte_rate", 10.0, False)], INVALID_REQUEST),
            ([("ip", "10.0.0.1"), ("user", "a")], [("connection_creation_rate", 5.0, False)], INVALID_REQUEST),
            ([("ip", "not-an-ip")], [("connection_creation_rate", 5.0, False)], INVALID_REQUEST),
            ([("ip", "10.0.0.1")], [("producer_byte_rate", 5.0, False)], INVALID_REQUEST),
        ]
        good = ([("client-id", f"ok-v{version}")], [("producer_byte_rate", 100.0, False)])
        results = alter_raw(broker, version, [good] + [(e, o) for e, o, _ in cases])
        assert len(results) == len(cases) + 1
        assert results[0][0] == 0, results[0]
        for (entity, ops, want), (code, message, echoed) in zip(cases, results[1:]):
            assert code == want, f"{entity} {ops}: got {code} {message}"
            assert message, f"{entity} {ops}: no error message"
            assert echoed == entity
    # The good entries were applied, the bad ones not; an ip quota is stored.
    assert alter_raw(broker, 1, [([("ip", "10.0.0.1")], [("connection_creation_rate", 5.0, False)])])[0][0] == 0
    stored = describe_json(broker)
    assert set(stored) == {
        (("client-id", "ok-v0"),),
        (("client-id", "ok-v1"),),
        (("ip", "10.0.0.1"),),
    }
    # validate_only answers the same errors and stores nothing.
    res = alter_raw(
        broker,
        1,
        [([("user", "v")], [("producer_byte_rate", 7.0, False)]), ([("user", "w")], [("bogus", 1.0, False)])],
        validate_only=True,
    )
    assert [c for c, _, _ in res] == [0, INVALID_REQUEST]
    assert set(describe_json(broker)) == set(stored)
    # The CLI reports the error by name.
    out = quota(broker, "set", "--user", "x", "--producer-byte-rate", "1.5", check=1)
    assert "INVALID_REQUEST" in out.stderr

    # DescribeClientQuotas: bad filters.
    for version in (0, 1):
        for components, want in [
            ([("user", 0, None)], INVALID_REQUEST),  # exact without a name
            ([("user", 1, "a")], INVALID_REQUEST),  # default with a name
            ([("user", 2, "a")], INVALID_REQUEST),  # specified with a name
            ([("user", 0, "a"), ("user", 2, None)], INVALID_REQUEST),  # a type twice
            ([("", 2, None)], INVALID_REQUEST),
            ([("ip", 2, None), ("user", 2, None)], INVALID_REQUEST),
            ([("group", 2, None)], UNSUPPORTED_VERSION),
            ([("user", 9, None)], UNSUPPORTED_VERSION),
        ]:
            corr, r = wire.roundtrip(broker.bootstrap, describe_request(version, 3, components))
            code, message = parse_describe_error(r, version)
            assert code == want and message, (version, components, code, message)


# -- enforcement -------------------------------------------------------------------------------


def scrape_throttle(http):
    """{(quota, user, client_id): ms} from /metrics."""
    with urllib.request.urlopen(f"http://{http}/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("skein_client_throttle_time_ms_total{"):
            labels, value = line[len("skein_client_throttle_time_ms_total{"):].rsplit("} ", 1)
            kv = dict(part.split("=", 1) for part in labels.split(","))
            kv = {k: v.strip('"') for k, v in kv.items()}
            out[(kv["quota"], kv["user"], kv["client_id"])] = float(value)
    return out


class Pacer:
    """Produces `size`-byte records as fast as the client lets it, or at `limit` bytes/s,
    and records (time, bytes) of each delivery."""

    def __init__(self, bootstrap, topic, client_id, size, limit=None):
        self.topic = topic
        self.size = size
        self.limit = limit
        self.deliveries = []
        self.errors = []
        self.throttle_max = 0
        self.stop = threading.Event()
        self.producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "client.id": client_id,
                "linger.ms": 5,
                "acks": 1,
                # Small requests and a small client buffer: the rate is measured on
                # deliveries, so neither a request nor the queue may be large against it.
                "batch.size": 65536,
                "max.in.flight.requests.per.connection": 5,
                "queue.buffering.max.kbytes": 2048,
                "statistics.interval.ms": 1000,
                "stats_cb": self._stats,
            }
        )
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _stats(self, text):
        for b in json.loads(text).get("brokers", {}).values():
            self.throttle_max = max(self.throttle_max, b.get("throttle", {}).get("max", 0))

    def _delivered(self, err, msg):
        if err is not None:
            self.errors.append(err)
        else:
            self.deliveries.append((time.monotonic(), len(msg.value())))

    def _run(self):
        value = b"x" * self.size
        started = time.monotonic()
        sent = 0
        while not self.stop.is_set():
            if self.limit is not None and sent > self.limit * (time.monotonic() - started):
                self.producer.poll(0.005)
                continue
            try:
                self.producer.produce(self.topic, value, on_delivery=self._delivered)
                sent += self.size
            except BufferError:
                self.producer.poll(0.05)
            self.producer.poll(0)
        self.producer.flush(DEFAULT_TIMEOUT_S)
        self.producer = None  # closes it before the broker stops

    def rate(self, start, end):
        total = sum(n for t, n in self.deliveries if start <= t < end)
        return total / (end - start)


def test_produce_quota_holds_one_client_and_spares_another(start_broker):
    b = start_broker(sets=["quota.window.num=3"])
    topic = unique_topic("quota")
    create_topic(b, topic, partitions=3)
    q = 1 * MB
    quota(b, "set", "--client-id", "throttled", "--producer-byte-rate", str(q))

    throttled = Pacer(b.bootstrap, topic, "throttled", 10_000)
    # The other client is paced by itself at 4 MB/s (four times the quota, and little disk).
    free = Pacer(b.bootstrap, topic, "free", 10_000, limit=4 * MB)
    throttled.thread.start()
    free.thread.start()
    t0 = time.monotonic()
    warmup, measure = 5.0, 30.0
    try:
        wait_until(lambda: time.monotonic() >= t0 + warmup + measure + 1, warmup + measure + 30, "the run")
    finally:
        throttled.stop.set()
        free.stop.set()
        throttled.thread.join(60)
        free.thread.join(60)
    assert not throttled.errors and not free.errors, (throttled.errors[:3], free.errors[:3])
    start, end = t0 + warmup, t0 + warmup + measure
    held = throttled.rate(start, end)
    kept = free.rate(start, end)
    print(f"throttled {held / MB:.3f} MB/s, free {kept / MB:.3f} MB/s, throttle max {throttled.throttle_max} ms")
    assert 0.9 * q <= held <= 1.1 * q, f"throttled client at {held / MB:.3f} MB/s, quota 1 MB/s"
    assert kept >= 3 * q, f"unthrottled client at only {kept / MB:.3f} MB/s"
    # The client was told: librdkafka's throttle statistics, and /metrics.
    assert throttled.throttle_max > 0, "librdkafka never saw a non-zero throttle_time_ms"
    assert free.throttle_max == 0
    metrics = scrape_throttle(b.http)
    assert metrics.get(("produce", "", "throttled"), 0) > 0, metrics
    assert not any(k[2] == "free" for k in metrics), metrics


def test_throttled_raw_produce_carries_throttle_time_and_mutes(broker):
    """A client past its quota gets throttle_time_ms in the response at once; the connection's
    next request is answered only after that time (KIP-219). acks=0 is held back too."""
    topic = unique_topic("rawq")
    create_topic(broker, topic, partitions=1)
    quota(broker, "set", "--client-id", "skein-tests", "--producer-byte-rate", "10000")
    batch = wire.record_batch([b"y" * 150_000])  # 15 s of quota at once, 10 s allowed
    with wire.connect(broker.bootstrap) as sock:
        sock.sendall(wire.produce_request(3, 1, topic, 0, batch, acks=1))
        _, r = wire.recv_frame(sock)
        for _ in range(r.i32()):
            r.string()
            for _ in range(r.i32()):
                r.i32()
                assert r.i16() == 0
                r.i64()
                r.i64()
        throttle_ms = r.i32()
        # (150 000 / 10 s - 10 000) / 10 000 * 10 s ≈ 5 s.
        assert 3_000 <= throttle_ms <= 7_000, throttle_ms
        sent = time.monotonic()
        sock.sendall(wire.api_versions_request(0, 2))
        wire.recv_frame(sock, timeout=throttle_ms / 1000 + 30)
        waited = time.monotonic() - sent
        assert waited >= throttle_ms / 1000 * 0.8, (waited, throttle_ms)
    # acks=0: no response, but the connection is muted all the same (the client is still
    # past its quota: any bytes more are throttled for about as long).
    with wire.connect(broker.bootstrap) as sock:
        sock.sendall(wire.produce_request(3, 1, topic, 0, wire.record_batch([b"w"]), acks=0))
        sent = time.monotonic()
        sock.sendall(wire.api_versions_request(0, 2))
        wire.recv_frame(sock, timeout=60)
        assert time.monotonic() - sent >= 2.0
    # Another client id is not affected.
    other = wire.request(18, 0, 5, b"", client_id="someone-else")
    sent = time.monotonic()
    wire.roundtrip(broker.bootstrap, other)
    assert time.monotonic() - sent < 2.0


def test_fetch_quota_holds_a_consumer(start_broker):
    b = start_broker()
    topic = unique_topic("fq")
    create_topic(b, topic, partitions=1)
    p = Producer({"bootstrap.servers": b.bootstrap, "client.id": "loader", "linger.ms": 20})
    value = b"z" * 10_000
    for _ in range(1000):  # 10 MB
        while True:
            try:
                p.produce(topic, value)
                break
            except BufferError:
                p.poll(0.05)
    assert p.flush(DEFAULT_TIMEOUT_S) == 0
    q = 100_000
    quota(b, "set", "--client-id", "slow-reader", "--consumer-byte-rate", str(q))
    throttle = {"max": 0}

    def stats(text):
        for br in json.loads(text).get("brokers", {}).values():
            throttle["max"] = max(throttle["max"], br.get("throttle", {}).get("max", 0))

    c = Consumer(
        {
            "bootstrap.servers": b.bootstrap,
            "group.id": "fq",
            "client.id": "slow-reader",
            "enable.auto.commit": False,
            "statistics.interval.ms": 1000,
            "stats_cb": stats,
        }
    )
    c.assign([TopicPartition(topic, 0, 0)])
    got = 0
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < 12:
            m = c.poll(0.2)
            if m is not None and m.error() is None:
                got += len(m.value())
    finally:
        c.close()
    elapsed = time.monotonic() - t0
    print(f"fetched {got} bytes in {elapsed:.1f}s, throttle max {throttle['max']} ms")
    # Within the quota over the time plus the ten seconds' allowance of Kafka's window and
    # a fetch or two of slack (a fetch is bounded by that allowance, 1 MB here); unthrottled,
    # the 10 MB are read in a second or two.
    assert got <= q * (elapsed + 10) + 2 * MB, f"{got} bytes in {elapsed:.1f}s"
    assert got >= q * 5, f"only {got} bytes in {elapsed:.1f}s"
    assert throttle["max"] > 0
    assert scrape_throttle(b.http).get(("fetch", "", "slow-reader"), 0) > 0


def raw_fetch_v4(correlation_id, topic, offset, client_id, max_bytes=10_000_000):
    """Fetch v4 of partition 0 from `offset`; returns (throttle ms, [(partition, records)])."""
    parts = wire.array([wire.i32(0) + wire.i64(offset) + wire.i32(max_bytes)])
    body = (wire.i32(-1) + wire.i32(100) + wire.i32(1) + wire.i32(max_bytes) + wire.i8(0)
            + wire.array([wire.string(topic) + parts]))
    return wire.request(wire.API_FETCH, 4, correlation_id, body, client_id=client_id)


def parse_raw_fetch_v4(r):
    throttle, out = r.i32(), []
    for _ in range(r.i32()):
        r.string()
        for _ in range(r.i32()):
            partition, error, _hw, _lso = r.i32(), r.i16(), r.i64(), r.i64()
            assert error == 0, error
            assert r.i32() == -1  # aborted transactions
            n = r.i32()
            out.append((partition, r.take(n) if n > 0 else b""))
    r.assert_at_end("Fetch v4 response")
    return throttle, out


def test_throttled_fetch_is_answered_at_once_without_records(start_broker):
    """As Kafka: a fetch past its quota is answered at once with no partitions (the bytes are
    not counted) and throttle_time_ms, and the connection is muted that long; a librdkafka
    consumer under the quota reads every record once, in order, at about the quota."""
    # Kafka's window with 3 samples of 1 s: a fetch is bounded to 2 s of quota.
    b = start_broker(sets=["quota.window.num=3"])
    topic = unique_topic("tfq")
    create_topic(b, topic, partitions=1)
    p = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 20, "batch.size": 20_000})
    n, value = 60, b"q" * 10_000  # 600 kB, in small batches
    for i in range(n):
        p.produce(topic, value, key=str(i).encode())
    assert p.flush(DEFAULT_TIMEOUT_S) == 0
    q = 100_000
    quota(b, "set", "--client-id", "raw-reader", "--consumer-byte-rate", str(q))
    quota(b, "set", "--client-id", "throttled-reader", "--consumer-byte-rate", str(q))

    with wire.connect(b.bootstrap) as sock:
        # The first fetch fits the window (at most 2 s of quota): records, no throttle.
        sock.sendall(raw_fetch_v4(1, topic, 0, "raw-reader"))
        _, r = wire.recv_frame(sock)
        throttle, parts = parse_raw_fetch_v4(r)
        assert throttle == 0 and parts and 0 < len(parts[0][1]) <= 2 * q + 30_000
        # The second is past the quota: answered at once, empty, with the throttle time.
        sent = time.monotonic()
        sock.sendall(raw_fetch_v4(2, topic, 0, "raw-reader"))
        _, r = wire.recv_frame(sock)
        throttle, parts = parse_raw_fetch_v4(r)
        assert time.monotonic() - sent < 2.0
        assert throttle > 0 and parts == [], (throttle, parts)
        # The connection is muted for that time.
        sent = time.monotonic()
        sock.sendall(wire.api_versions_request(0, 3))
        wire.recv_frame(sock, timeout=throttle / 1000 + 30)
        assert time.monotonic() - sent >= throttle / 1000 * 0.8

    throttled = {"max": 0}

    def stats(text):
        for br in json.loads(text).get("brokers", {}).values():
            throttled["max"] = max(throttled["max"], br.get("throttle", {}).get("max", 0))

    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "tfq",
                  "client.id": "throttled-reader", "enable.auto.commit": False,
                  "statistics.interval.ms": 500, "stats_cb": stats})
    c.assign([TopicPartition(topic, 0, 0)])
    offsets, got = [], 0
    t0 = time.monotonic()
    try:
        while len(offsets) < n and time.monotonic() - t0 < 60:
            m = c.poll(0.2)
            if m is not None and m.error() is None:
                offsets.append(m.offset())
                got += len(m.value())
        deadline = time.monotonic() + 1.5  # nothing more arrives (no duplicates)
        while time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is not None and m.error() is None:
                offsets.append(m.offset())
    finally:
        c.close()
    elapsed = time.monotonic() - t0
    print(f"read {got} bytes in {elapsed:.1f}s, throttle max {throttled['max']} ms")
    assert offsets == list(range(n))
    assert throttled["max"] > 0
    # At most the quota over the time plus the window's 2 s allowance and a fetch of slack;
    # unthrottled the 600 kB take well under a second.
    assert got <= q * (elapsed + 2) + 2 * q + 30_000, f"{got} bytes in {elapsed:.1f}s"
    assert elapsed >= 600_000 / q - 3, f"{got} bytes in {elapsed:.1f}s"


def describe_raw(bootstrap, version=1):
    """Every quota one node describes from its own metadata image: {entity: {key: value}}."""
    corr, r = wire.roundtrip(bootstrap, describe_request(version, 4, []))
    r.tagged_fields()
    r.i32()
    code = r.i16()
    assert code == 0, r.compact_string()
    r.compact_string()
    out = {}
    for _ in range(r.uvarint() - 1):
        entity = []
        for _ in range(r.uvarint() - 1):
            entity.append((r.compact_string(), r.compact_string()))
            r.tagged_fields()
        values = {}
        for _ in range(r.uvarint() - 1):
            key = r.compact_string()
            values[key] = struct.unpack(">d", r.take(8))[0]
            r.tagged_fields()
        r.tagged_fields()
        out[tuple(sorted(entity))] = values
    return out


def test_quotas_in_a_cluster_reach_every_node(tmp_path):
    """AlterClientQuotas on any node goes to the active controller; every node then
    describes (and enforces) the quota from its own metadata."""
    from cluster import BASE_SETS, Cluster

    c = Cluster(tmp_path / "cluster", voters=3, sets=BASE_SETS).start()
    try:
        for node_id in (1, 2, 3):
            res = alter_raw(
                c[node_id],
                node_id % 2,
                [([("user", f"u{node_id}")], [("producer_byte_rate", 1000.0 * node_id, False)])],
            )
            assert res[0][0] == 0, res
        want = {(("user", f"u{i}"),): {"producer_byte_rate": 1000.0 * i} for i in (1, 2, 3)}
        for node_id in (1, 2, 3):
            wait_until(
                lambda: describe_raw(c[node_id].bootstrap) == want,
                DEFAULT_TIMEOUT_S,
                f"node {node_id} to describe every quota",
            )
    finally:
        c.close()
