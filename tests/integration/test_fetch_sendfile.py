"""Large fetches: the broker sends their records straight from the segment files with
sendfile(2), between the encoded fields of the response. Every client must read exactly what
was produced, across segment boundaries and with several partitions in one response.

Responses of 64 KiB of records and more take this path; the topic here has ~2.9 MB per
partition in segments of 300 kB, so nearly every fetch does, and most span segments.
"""

import hashlib
import re
import shutil
import socket
import struct
import subprocess
import time
import urllib.request

import pytest
from kafka import KafkaConsumer
from kafka import TopicPartition as KTopicPartition

import wire
from helpers import (
    wait_until,
    assert_contiguous,
    assert_delivered,
    consume_to_end,
    create_topic,
    produce_all,
    producer_client,
    unique_topic,
)

PARTITIONS = 2
MESSAGES = 600


def value_of(i):
    # ~9.6 kB of printable text, different for every message.
    return (hashlib.sha256(str(i).encode()).hexdigest() * 150 + f"-{i}").encode()


@pytest.fixture(scope="module")
def big_topic(module_broker):
    topic = unique_topic("sendfile")
    create_topic(module_broker, topic, partitions=PARTITIONS, config={"segment.bytes": "300000"})
    producer = producer_client(
        module_broker, **{"linger.ms": 20, "batch.size": 256 * 1024, "acks": "all"}
    )
    messages = [
        (topic, {"value": value_of(i), "partition": i % PARTITIONS}) for i in range(MESSAGES)
    ]
    assert_delivered(produce_all(producer, messages))
    expected = {p: [value_of(i) for i in range(MESSAGES) if i % PARTITIONS == p] for p in range(PARTITIONS)}
    # The data spans many segments, so fetches cross segment boundaries.
    segments = list(module_broker.data_dir.glob(f"{topic}-0/*.log"))
    assert len(segments) >= 5, segments
    return topic, expected


def test_confluent_reads_every_record_in_order(module_broker, big_topic):
    topic, expected = big_topic
    records = consume_to_end(module_broker, topic, list(range(PARTITIONS)))
    for p in range(PARTITIONS):
        assert_contiguous(records[p])
        assert [r.offset for r in records[p]] == list(range(len(expected[p])))
        assert [r.value for r in records[p]] == expected[p]


def test_confluent_with_small_fetch_limits(module_broker, big_topic):
    # Limits below one batch: each response holds one whole batch per fetch (KIP-74).
    topic, expected = big_topic
    records = consume_to_end(
        module_broker,
        topic,
        list(range(PARTITIONS)),
        **{"fetch.max.bytes": 100_000, "message.max.bytes": 100_000, "max.partition.fetch.bytes": 70_000},
    )
    for p in range(PARTITIONS):
        assert [r.value for r in records[p]] == expected[p]


def test_kafka_python_reads_every_record_in_order(module_broker, big_topic):
    topic, expected = big_topic
    consumer = KafkaConsumer(
        bootstrap_servers=module_broker.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        request_timeout_ms=35_000,
    )
    try:
        consumer.assign([KTopicPartition(topic, p) for p in range(PARTITIONS)])
        consumer.seek_to_beginning()
        got = {p: [] for p in range(PARTITIONS)}
        deadline = time.monotonic() + 60
        while sum(len(v) for v in got.values()) < MESSAGES:
            assert time.monotonic() < deadline, {p: len(v) for p, v in got.items()}
            for tp, batch in consumer.poll(timeout_ms=500).items():
                got[tp.partition].extend(batch)
    finally:
        consumer.close()
    for p in range(PARTITIONS):
        assert [r.offset for r in got[p]] == list(range(len(expected[p])))
        assert [r.value for r in got[p]] == expected[p]


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not installed")
def test_kcat_reads_every_record_in_order(module_broker, big_topic):
    topic, expected = big_topic
    proc = subprocess.run(
        ["kcat", "-C", "-b", module_broker.bootstrap, "-t", topic, "-o", "beginning", "-e",
         "-q", "-f", "%p %o %s\\n"],
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    got = {p: [] for p in range(PARTITIONS)}
    for line in proc.stdout.splitlines():
        partition, offset, value = line.split(b" ")
        got[int(partition)].append((int(offset), value))
    for p in range(PARTITIONS):
        assert [o for o, _ in got[p]] == list(range(len(expected[p])))
        assert [v for _, v in got[p]] == expected[p]


def open_files_gauge(broker):
    with urllib.request.urlopen(f"http://{broker.http}/metrics", timeout=10) as r:
        body = r.read().decode()
    m = re.search(r"^skein_fetch_open_files (\d+)$", body, re.M)
    assert m, "skein_fetch_open_files missing from /metrics"
    return int(m.group(1))


def fetch_v4(correlation_id, topic, partitions, max_bytes=10_000_000, partition_max=1_048_576):
    """Fetch v4 (not flexible): every partition from offset 0."""
    parts = wire.array(
        [wire.i32(p) + wire.i64(0) + wire.i32(partition_max) for p in partitions]
    )
    body = (
        wire.i32(-1) + wire.i32(100) + wire.i32(1) + wire.i32(max_bytes) + wire.i8(0)
        + wire.array([wire.string(topic) + parts])
    )
    return wire.request(wire.API_FETCH, 4, correlation_id, body)


def parse_fetch_v4(r):
    """{partition: (error, high watermark, records bytes)}; checks nothing is left over."""
    r.i32()  # throttle time
    out = {}
    for _ in range(r.i32()):
        r.string()
        for _ in range(r.i32()):
            partition, error, hw = r.i32(), r.i16(), r.i64()
            r.i64()  # last stable offset
            aborted = r.i32()
            assert aborted == -1, aborted
            n = r.i32()
            out[partition] = (error, hw, r.take(n) if n > 0 else b"")
    r.assert_at_end("Fetch v4 response")
    return out


def batches(records):
    """[(base offset, record count)] of whole v2 batches; fails on a partial or bad one."""
    out, at = [], 0
    while at < len(records):
        base, length = struct.unpack_from(">qi", records, at)
        assert at + 12 + length <= len(records), "partial batch in a fetch response"
        assert records[at + 16] == 2, "magic"
        count = struct.unpack_from(">i", records, at + 57)[0]
        out.append((base, count))
        at += 12 + length
    return out


def test_pipelined_raw_fetches_are_framed_exactly(module_broker, big_topic):
    # Three large fetches in one write: if a spliced response's size prefix were off by a
    # byte, the second and third would not parse.
    topic, expected = big_topic
    with wire.connect(module_broker.bootstrap) as sock:
        sock.sendall(b"".join(fetch_v4(c, topic, [0, 1]) for c in (11, 12, 13)))
        for c in (11, 12, 13):
            correlation_id, r = wire.recv_frame(sock, timeout=30)
            assert correlation_id == c
            parts = parse_fetch_v4(r)
            assert sorted(parts) == [0, 1]
            for p, (error, hw, records) in parts.items():
                assert error == 0
                assert hw == len(expected[p])
                found = batches(records)
                # Whole batches from offset 0, contiguous, about 1 MiB (the partition limit).
                assert found[0][0] == 0
                for (base, count), (next_base, _) in zip(found, found[1:]):
                    assert next_base == base + count
                assert 500_000 <= len(records) <= 1_048_576 + 300_000, len(records)
    # Sent responses let go of their segment files.
    wait_until(lambda: open_files_gauge(module_broker) == 0, 30, "fetch_open_files back to 0")


def test_client_that_leaves_mid_response_does_not_hurt_the_broker(module_broker, big_topic):
    topic, expected = big_topic
    for i in range(10):
        sock = wire.connect(module_broker.bootstrap)
        sock.sendall(fetch_v4(i, topic, [0, 1], partition_max=3_000_000))
        if i % 2:
            sock.recv(100)  # take a little of the response first
        # Reset instead of a clean close: the broker's sendfile meets a dead socket.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    module_broker.assert_alive()
    records = consume_to_end(module_broker, topic, [0])
    assert [r.value for r in records[0]] == expected[0]
    # Responses that failed half-way let go of their segment files too.
    wait_until(lambda: open_files_gauge(module_broker) == 0, 30, "fetch_open_files back to 0")


@pytest.mark.parametrize("open_files", [0, 1])
def test_open_file_limit_falls_back_to_copying(start_broker, open_files):
    # skein.fetch.max.open.files bounds the segment files unsent responses hold. With 0 every
    # response is copied into memory; with 1 a two-partition response sends one partition
    # from its file and copies the other (or copies both when its range spans segments).
    broker = start_broker(sets=[f"skein.fetch.max.open.files={open_files}"])
    topic = unique_topic("openfiles")
    create_topic(broker, topic, partitions=PARTITIONS, config={"segment.bytes": "300000"})
    producer = producer_client(broker, **{"linger.ms": 20, "batch.size": 256 * 1024})
    values = [value_of(i) for i in range(200)]
    assert_delivered(
        produce_all(producer, [(topic, {"value": v, "partition": i % 2}) for i, v in enumerate(values)])
    )
    records = consume_to_end(broker, topic, [0, 1])
    for p in range(PARTITIONS):
        assert [r.value for r in records[p]] == values[p::2]
    with wire.connect(broker.bootstrap) as sock:
        sock.sendall(b"".join(fetch_v4(c, topic, [0, 1]) for c in (1, 2)))
        for c in (1, 2):
            correlation_id, r = wire.recv_frame(sock, timeout=30)
            assert correlation_id == c
            parts = parse_fetch_v4(r)
            for p in range(PARTITIONS):
                assert parts[p][0] == 0
                assert batches(parts[p][2])[0][0] == 0
    broker.assert_alive()
