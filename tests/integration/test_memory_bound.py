"""Memory held for partly received requests is bounded (issue 9, hole 2).

A client may announce a request of up to `socket.request.max.bytes` (100 MiB by default) and
then send almost nothing. Such a request must cost the broker only the bytes that did arrive,
and the bytes held by all partly received requests must stay under a broker-wide bound
(`queued.max.request.bytes`); past it the broker stops reading instead of allocating. Here
3,000 connections (well inside `max.connections`, 10,000) each announce 100 MB and send one
byte, against a broker with default settings, while a real client produces and consumes.
"""

import resource
import time
import urllib.request

import pytest
from confluent_kafka import OFFSET_BEGINNING, TopicPartition
from prometheus_client.openmetrics.parser import text_string_to_metric_families

import wire
from helpers import (
    assert_contiguous,
    consumer_client,
    create_topic,
    produce_all,
    producer_client,
    unique_topic,
    wait_until,
)

STALLED = 3000
# Announced by each stalled connection: 100 MB, under socket.request.max.bytes (104857600).
CLAIMED_SIZE = 100_000_000
# The whole broker's resident memory must stay under this while the stalled connections are
# open. An idle broker is ~15 MiB; a connection's tasks, queue and socket state are a few KiB,
# so 3,000 of them are tens of MiB. 300 MiB leaves room for the allocator and a busy machine,
# and is far below what a reserve sized from the frame prefix costs (1-2 MiB a connection,
# several GB in all).
RSS_LIMIT_MIB = 300
# Sockets opened at a time before waiting for the broker to accept them (the listen backlog
# is finite; waiting keeps connection attempts from being dropped and retried).
BATCH = 250
# The real client's produce and consume round trip must finish within this, stalled
# connections or not (it takes well under a second on an idle broker).
ROUND_TRIP_DEADLINE_S = 30.0
MESSAGES = 200


def raise_fd_limit(needed):
    """Raises RLIMIT_NOFILE to `needed` for this process and the broker it starts.

    Returns None, or the reason it could not."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft >= needed:
        return None
    if hard != resource.RLIM_INFINITY and hard < needed:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, needed))
            return None
        except (ValueError, OSError) as exc:
            return f"RLIMIT_NOFILE hard limit {hard} < {needed} and cannot be raised: {exc}"
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    return None


def proc_status_mib(pid):
    """VmRSS and VmHWM (peak resident) of a process, in MiB."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024  # kB -> MiB
    return values["VmRSS"], values["VmHWM"]


def metric(broker, name):
    """The value of an unlabelled metric on /metrics, or None if the broker has no such metric."""
    with urllib.request.urlopen(f"http://{broker.http}/metrics", timeout=10) as r:
        body = r.read().decode()
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            if s.name == name and not s.labels:
                return s.value
    return None


def round_trip(broker, topic):
    """Produces MESSAGES values and reads them back; returns the seconds it took."""
    started = time.monotonic()
    producer = producer_client(broker, **{"linger.ms": 5, "message.timeout.ms": 20000})
    values = [f"value-{i}".encode() for i in range(MESSAGES)]
    reports = produce_all(
        producer, [(topic, {"value": v, "partition": 0}) for v in values], ROUND_TRIP_DEADLINE_S
    )
    errors = [r for r in reports if r[0] is not None]
    assert not errors, f"{len(errors)} deliveries failed, first: {errors[:3]}"
    consumer = consumer_client(broker)
    try:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        got = []
        deadline = started + ROUND_TRIP_DEADLINE_S
        while len(got) < high:
            assert time.monotonic() < deadline, (
                f"read {len(got)} of {high} records within {ROUND_TRIP_DEADLINE_S:.0f}s"
            )
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            got.append(msg)
    finally:
        consumer.close()
    # The last MESSAGES records are this round trip's values, in order.
    assert [m.value() for m in got[-MESSAGES:]] == values
    offsets = [m.offset() for m in got]
    assert offsets == list(range(len(offsets))), f"offsets {offsets[:10]}..."
    elapsed = time.monotonic() - started
    assert elapsed < ROUND_TRIP_DEADLINE_S, f"round trip took {elapsed:.1f}s"
    return elapsed


def test_stalled_big_frames_hold_little_memory(start_broker):
    reason = raise_fd_limit(STALLED + 1024)
    if reason:
        pytest.skip(f"cannot open {STALLED} sockets: {reason}")
    broker = start_broker()
    pid = broker.proc.pid
    topic = unique_topic("memory")
    create_topic(broker, topic, partitions=1)
    baseline_s = round_trip(broker, topic)
    rss_before, _ = proc_status_mib(pid)

    stalled = []
    try:
        # Each stalled connection announces a 100 MB request and sends one byte of it.
        stall = wire.i32(CLAIMED_SIZE) + b"\x00"
        while len(stalled) < STALLED:
            for _ in range(min(BATCH, STALLED - len(stalled))):
                sock = wire.connect(broker.bootstrap, timeout=30)
                sock.sendall(stall)
                stalled.append(sock)
            opened = len(stalled)
            wait_until(
                lambda: (metric(broker, "skein_connections") or 0) >= opened,
                60,
                f"the broker to accept {opened} connections",
                interval=0.2,
            )
            rss, hwm = proc_status_mib(pid)
            # Fail as soon as the bound is crossed rather than push a broken broker to
            # gigabytes on a shared machine.
            assert rss < RSS_LIMIT_MIB and hwm < RSS_LIMIT_MIB, (
                f"broker RSS {rss:.0f} MiB (peak {hwm:.0f} MiB) with only {opened} stalled "
                f"connections, over the {RSS_LIMIT_MIB} MiB bound (before them: {rss_before:.0f} MiB)"
            )
            broker.assert_alive()

        # Every stalled connection's byte has been read: each holds a buffer for it, no more.
        queued = wait_until(
            lambda: (lambda v: v if v is not None and v >= STALLED else None)(
                metric(broker, "skein_request_bytes_queued")
            ),
            60,
            f"skein_request_bytes_queued to count the {STALLED} bytes received",
            interval=0.2,
        )
        # Buffers grow with the bytes received (at most doubling them), not with the 100 MB
        # each connection announced.
        assert queued <= 2 * STALLED, f"{queued} bytes held for {STALLED} received bytes"

        # A real client is served promptly meanwhile.
        elapsed = round_trip(broker, topic)

        rss, hwm = proc_status_mib(pid)
        assert rss < RSS_LIMIT_MIB and hwm < RSS_LIMIT_MIB, (
            f"broker RSS {rss:.0f} MiB (peak {hwm:.0f} MiB) with {STALLED} stalled connections, "
            f"over the {RSS_LIMIT_MIB} MiB bound (before them: {rss_before:.0f} MiB)"
        )
        print(
            f"\n{STALLED} stalled connections: broker RSS {rss_before:.0f} -> {rss:.0f} MiB "
            f"(peak {hwm:.0f} MiB), {queued:.0f} bytes queued, round trip {baseline_s:.2f}s "
            f"before, {elapsed:.2f}s with them"
        )
        broker.assert_alive()
    finally:
        for sock in stalled:
            sock.close()

    # Closing the connections gives their bytes back.
    wait_until(
        lambda: metric(broker, "skein_request_bytes_queued") == 0,
        60,
        "skein_request_bytes_queued to return to 0 once the stalled connections closed",
    )


def test_reading_pauses_at_queued_max_request_bytes(start_broker):
    """Past the budget, reading pauses; it goes on once the bytes are given back."""
    budget = 1024 * 1024
    broker = start_broker(
        sets=[f"queued.max.request.bytes={budget}", "message.max.bytes=4194304"]
    )
    topic = unique_topic("paused")
    create_topic(broker, topic, partitions=1)

    def queued():
        return metric(broker, "skein_request_bytes_queued")

    # A announces 8 MiB and sends 3 MiB: it takes what it can of the budget, then goes past
    # it (one frame at a time may), and holds both while it sends no more.
    a = wire.connect(broker.bootstrap)
    c = None
    try:
        a.sendall(wire.i32(8 * 1024 * 1024) + b"\x01" * (3 * 1024 * 1024))
        wait_until(
            lambda: (queued() or 0) >= 3 * 1024 * 1024, 30, "the broker to read A's 3 MiB"
        )
        # C sends a whole Produce request of 1.5 MiB. It is more than the budget, so it can
        # be read only past the budget, which A's frame is: the broker leaves it unread.
        values = [bytes([65 + i]) * (500 * 1024) for i in range(3)]
        request = wire.produce_request(3, 7, topic, 0, wire.record_batch(values), acks=1)
        assert len(request) > budget
        c = wire.connect(broker.bootstrap)
        c.sendall(request)
        c.settimeout(3)
        with pytest.raises(TimeoutError):
            c.recv(1)  # no answer while C's reading is paused

        # A goes away and gives its bytes back: C is read and answered.
        a.close()
        a = None
        corr, r = wire.recv_frame(c, timeout=30)
        assert corr == 7
        assert wire.parse_produce_response(r, 3) == {(topic, 0): (0, 0)}
        # Handled: C's bytes are given back although its connection stays open.
        wait_until(lambda: queued() == 0, 30, "skein_request_bytes_queued to return to 0")
    finally:
        for sock in (a, c):
            if sock is not None:
                sock.close()
    broker.assert_alive()
    # The records C sent are there, and a real client is served as usual.
    round_trip(broker, topic)


def test_idle_broker_stays_small(start_broker):
    """A broker at rest (default settings, its metadata log running, one small topic) holds
    under 20 MiB resident: the footprint the single binary promises. openraft's statistics
    tables (patched in third_party/base2histogram) and transparent huge pages under mimalloc
    (the no_thp feature) each once took it past 30 MiB."""
    broker = start_broker()
    round_trip(broker, unique_topic("idle"))
    rss, _peak = proc_status_mib(broker.proc.pid)
    assert rss < 20, f"idle resident memory {rss:.1f} MiB (limit 20)"


# Issue 11's target for a single node: idle resident memory under 20 MiB (README: "idle RSS
# < 20 MiB"). Measured at ~15 MiB on the 2-core CI machine after start-up and the requests
# below, so the target itself is the bound. Start-up time (< 100 ms to the first answer) is a
# benchmark figure (bench/run S0, BENCHMARKS.md), not a timed test.
IDLE_RSS_LIMIT_MIB = 20


def test_idle_single_node_stays_under_20_mib(start_broker):
    broker = start_broker()
    pid = broker.proc.pid
    topic = unique_topic("idle")
    create_topic(broker, topic, partitions=3)
    round_trip(broker, topic)
    # Auto-creation (Metadata for an unknown topic) and a second round trip, as a first
    # session with a new broker does.
    auto = unique_topic("idle-auto")
    reports = produce_all(producer_client(broker), [(auto, {"value": b"x"})])
    assert reports[0][0] is None, reports
    round_trip(broker, topic)
    rss, hwm = proc_status_mib(pid)
    assert rss < IDLE_RSS_LIMIT_MIB, (
        f"idle broker RSS {rss:.1f} MiB (peak {hwm:.1f} MiB), over the {IDLE_RSS_LIMIT_MIB} MiB target"
    )
    print(f"\nidle single node after start-up and two round trips: RSS {rss:.1f} MiB, peak {hwm:.1f} MiB")
