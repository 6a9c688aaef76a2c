"""Malformed and hostile input on raw sockets: the broker answers or closes, and stays up.

After every abuse a fresh real client must still list topics and produce, and the broker
process must still be running.
"""

import random
import socket
import time

import pytest

import wire
from helpers import (
    admin_client,
    create_topic,
    produce_all,
    producer_client,
    unique_topic,
    wait_until,
)

UNSUPPORTED_VERSION = 35
CORRUPT_MESSAGE = 2
MESSAGE_TOO_LARGE = 10
NONE = 0


def assert_healthy(broker):
    """The broker runs, and a new real client can list topics and produce."""
    broker.assert_alive()
    admin = admin_client(broker)
    md = admin.list_topics(timeout=10)
    assert len(md.brokers) == 1, f"Metadata lists brokers {md.brokers}"
    producer = producer_client(broker, **{"message.timeout.ms": 20000})
    reports = produce_all(producer, [("health-check", {"value": b"still alive"})])
    assert reports[0][0] is None, f"produce after abuse failed: {reports[0][0]}"
    broker.assert_alive()


def assert_closed_without_answer(sock, what):
    received = wire.read_until_closed(sock, timeout=10)
    assert received == b"", f"{what}: expected the connection closed, got {received[:64]!r}"


def test_frame_size_over_limit_closes_connection(broker):
    with wire.connect(broker.bootstrap) as sock:
        sock.sendall(wire.i32(0x7FFFFFFF) + b"\x00\x12\x00\x00")
        assert_closed_without_answer(sock, "size 0x7fffffff")
    assert_healthy(broker)


def test_negative_frame_size_closes_connection(broker):
    with wire.connect(broker.bootstrap) as sock:
        sock.sendall(wire.i32(-5) + b"\x00\x12\x00\x00\x00\x00\x00\x01")
        assert_closed_without_answer(sock, "negative size")
    assert_healthy(broker)


def close_or_answer(sock, correlation_id, what):
    """The broker either closes the connection or answers with this correlation id."""
    deadline = time.monotonic() + 10
    try:
        sock.settimeout(10)
        first = sock.recv(1)
    except ConnectionResetError:
        return
    except socket.timeout:
        pytest.fail(f"{what}: neither answered nor closed within 10s")
    if not first:
        return
    rest = wire.recv_exact(sock, 7, deadline)
    header = first + rest
    size = int.from_bytes(header[:4], "big", signed=True)
    corr = int.from_bytes(header[4:8], "big", signed=True)
    assert size >= 4, f"{what}: answer with size {size}"
    assert corr == correlation_id, f"{what}: answer carries correlation id {corr}"


def test_garbage_bodies_close_or_answer(broker):
    rng = random.Random(20261125)
    known_keys = [0, 1, 2, 3, 18, 19, 20, 21, 22, 32, 33, 37, 44, 60]
    for i in range(40):
        body = bytearray(rng.getrandbits(8) for _ in range(rng.randrange(8, 300)))
        if i % 2:
            # A real api key and a plausible version, so the body decoder sees the garbage.
            body[0:4] = wire.i16(rng.choice(known_keys)) + wire.i16(rng.randrange(0, 13))
        body = bytes(body)
        corr = int.from_bytes(body[4:8], "big", signed=True)
        with wire.connect(broker.bootstrap) as sock:
            wire.send_ignoring_reset(sock, wire.i32(len(body)) + body)
            close_or_answer(sock, corr, f"garbage frame #{i} ({body[:16].hex()}...)")
    assert_healthy(broker)


def test_truncated_frame_then_close(broker):
    frame = wire.api_versions_request(0, 1)
    for cut in (1, 3, 4, 7, len(frame) - 1):
        with wire.connect(broker.bootstrap) as sock:
            sock.sendall(frame[:cut])
    # A frame whose size promises more than ever comes, on a connection that stays open.
    idle = wire.connect(broker.bootstrap)
    try:
        idle.sendall(wire.i32(1000) + b"\x00\x12")
        assert_healthy(broker)
    finally:
        idle.close()
    assert_healthy(broker)


def test_huge_array_count_does_not_allocate(broker):
    # Metadata v1: topics array claims a billion entries; only one short string follows.
    body = wire.i32(1_000_000_000) + wire.string("ab")
    frame = wire.request(wire.API_METADATA, 1, 77, body)
    with wire.connect(broker.bootstrap) as sock:
        sock.sendall(frame)
        # Closing is expected; an error answer for this request is acceptable too.
        close_or_answer(sock, 77, "Metadata v1 with a billion topics")
    assert_healthy(broker)


def test_api_versions_unknown_version_gets_v0_error_with_versions(broker):
    # KIP-511: the answer is a v0-format response with UNSUPPORTED_VERSION and the real list.
    frame = wire.api_versions_request(99, 4242)
    with wire.connect(broker.bootstrap) as sock:
        sock.sendall(frame)
        corr, r = wire.recv_frame(sock)
    assert corr == 4242
    error, keys = wire.parse_api_versions_v0(r)
    assert error == UNSUPPORTED_VERSION
    assert keys, "ApiVersions error response has an empty api_keys list"
    assert wire.API_API_VERSIONS in keys, f"ApiVersions missing from {sorted(keys)}"
    lo, hi = keys[wire.API_API_VERSIONS]
    assert lo == 0 and hi >= 3, f"ApiVersions range {lo}..{hi}"
    for key in (wire.API_PRODUCE, wire.API_FETCH, wire.API_METADATA):
        assert key in keys, f"api key {key} missing from {sorted(keys)}"
    assert_healthy(broker)


def test_metadata_unknown_version_closes_connection(broker):
    frame = wire.request(wire.API_METADATA, 99, 5, wire.i32(0))
    with wire.connect(broker.bootstrap) as sock:
        sock.sendall(frame)
        assert_closed_without_answer(sock, "Metadata v99")
    assert_healthy(broker)


def test_unknown_api_key_closes_connection(broker):
    frame = wire.request(999, 0, 6, b"")
    with wire.connect(broker.bootstrap) as sock:
        sock.sendall(frame)
        assert_closed_without_answer(sock, "api key 999")
    assert_healthy(broker)


def test_api_versions_v3_lists_supported_ranges(broker):
    corr, r = wire.roundtrip(broker.bootstrap, wire.api_versions_request(3, 31337))
    assert corr == 31337
    error, keys = wire.parse_api_versions_v3(r)
    assert error == NONE
    implemented = {
        wire.API_PRODUCE: "Produce",
        wire.API_FETCH: "Fetch",
        wire.API_LIST_OFFSETS: "ListOffsets",
        wire.API_METADATA: "Metadata",
        wire.API_API_VERSIONS: "ApiVersions",
        wire.API_CREATE_TOPICS: "CreateTopics",
        wire.API_DELETE_TOPICS: "DeleteTopics",
        wire.API_DELETE_RECORDS: "DeleteRecords",
        wire.API_INIT_PRODUCER_ID: "InitProducerId",
        wire.API_DESCRIBE_CONFIGS: "DescribeConfigs",
        wire.API_ALTER_CONFIGS: "AlterConfigs",
        wire.API_CREATE_PARTITIONS: "CreatePartitions",
        wire.API_INCREMENTAL_ALTER_CONFIGS: "IncrementalAlterConfigs",
        wire.API_DESCRIBE_CLUSTER: "DescribeCluster",
    }
    missing = [name for key, name in implemented.items() if key not in keys]
    assert not missing, f"ApiVersions does not list {missing}"
    for key, (lo, hi) in keys.items():
        assert 0 <= lo <= hi, f"api key {key} has range {lo}..{hi}"
    # Produce must be advertised from v0, or librdkafka turns compression off.
    assert keys[wire.API_PRODUCE][0] == 0, f"Produce range {keys[wire.API_PRODUCE]}"
    assert keys[wire.API_PRODUCE][1] >= 3
    assert keys[wire.API_FETCH][1] >= 11, f"Fetch range {keys[wire.API_FETCH]}"
    assert keys[wire.API_API_VERSIONS][1] >= 3


def test_pipelined_requests_answered_in_order(broker):
    ids = [1000 + 7 * i for i in range(50)]
    frames = b"".join(wire.api_versions_request(0, c) for c in ids)
    with wire.connect(broker.bootstrap) as sock:
        sock.sendall(frames)
        got = []
        for _ in ids:
            corr, r = wire.recv_frame(sock, timeout=20)
            error, keys = wire.parse_api_versions_v0(r)
            assert error == NONE and keys
            got.append(corr)
    assert got == ids


def test_produce_v2_old_message_format_is_unsupported(broker):
    topic = unique_topic("old-format")
    create_topic(broker, topic, partitions=1)
    frame = wire.produce_request(2, 91, topic, 0, wire.message_set_v1([b"old", b"format"]))
    corr, r = wire.roundtrip(broker.bootstrap, frame)
    assert corr == 91
    results = wire.parse_produce_response(r, 2)
    assert results.get((topic, 0), (None,))[0] == UNSUPPORTED_VERSION, results
    assert_healthy(broker)


def test_produce_with_bad_crc_is_corrupt_message(broker):
    topic = unique_topic("crc")
    create_topic(broker, topic, partitions=1)
    with wire.connect(broker.bootstrap) as sock:
        # A well-formed batch first, so a failure below is about the CRC and not the builder.
        sock.sendall(wire.produce_request(3, 1, topic, 0, wire.record_batch([b"a", b"b"])))
        corr, r = wire.recv_frame(sock)
        assert corr == 1
        assert wire.parse_produce_response(r, 3) == {(topic, 0): (NONE, 0)}

        bad = wire.record_batch([b"c"], corrupt_crc=True)
        sock.sendall(wire.produce_request(3, 2, topic, 0, bad))
        corr, r = wire.recv_frame(sock)
        assert corr == 2
        error, _ = wire.parse_produce_response(r, 3)[(topic, 0)]
        assert error == CORRUPT_MESSAGE, f"bad CRC answered with error {error}"

        # Nothing of the corrupt batch was appended.
        sock.sendall(wire.produce_request(3, 3, topic, 0, wire.record_batch([b"d"])))
        corr, r = wire.recv_frame(sock)
        assert corr == 3
        assert wire.parse_produce_response(r, 3) == {(topic, 0): (NONE, 2)}
    assert_healthy(broker)


def test_oversized_batch_is_message_too_large(start_broker):
    broker = start_broker(sets=["message.max.bytes=10000"])
    topic = unique_topic("big")
    create_topic(broker, topic, partitions=1)
    with wire.connect(broker.bootstrap) as sock:
        sock.sendall(wire.produce_request(3, 1, topic, 0, wire.record_batch([b"x" * 20000])))
        corr, r = wire.recv_frame(sock)
        assert corr == 1
        error, _ = wire.parse_produce_response(r, 3)[(topic, 0)]
        assert error == MESSAGE_TOO_LARGE, f"20000-byte batch answered with error {error}"

        sock.sendall(wire.produce_request(3, 2, topic, 0, wire.record_batch([b"y" * 5000])))
        corr, r = wire.recv_frame(sock)
        assert corr == 2
        assert wire.parse_produce_response(r, 3) == {(topic, 0): (NONE, 0)}
    assert_healthy(broker)


def test_connection_limit(start_broker):
    broker = start_broker(sets=["max.connections=5"])

    def api_versions_ok(sock, corr):
        sock.sendall(wire.api_versions_request(0, corr))
        got, r = wire.recv_frame(sock)
        assert got == corr
        error, _ = wire.parse_api_versions_v0(r)
        assert error == NONE

    held = [wire.connect(broker.bootstrap) for _ in range(5)]
    try:
        for i, sock in enumerate(held):
            api_versions_ok(sock, i)
        extra = wire.connect(broker.bootstrap)
        try:
            wire.send_ignoring_reset(extra, wire.api_versions_request(0, 99))
            received = wire.read_until_closed(extra, timeout=10)
            assert received == b"", f"6th connection was served: {received[:32]!r}"
        finally:
            extra.close()
        # The five held connections still work.
        for i, sock in enumerate(held):
            api_versions_ok(sock, 10 + i)

        held.pop().close()

        def new_connection_served():
            sock = wire.connect(broker.bootstrap)
            try:
                sock.sendall(wire.api_versions_request(0, 555))
                corr, _ = wire.recv_frame(sock, timeout=5)
                return corr == 555
            except (AssertionError, ConnectionResetError, BrokenPipeError):
                return False
            finally:
                sock.close()

        wait_until(new_connection_served, 15, "a new connection to be served after one closed")
    finally:
        for sock in held:
            sock.close()
    broker.assert_alive()


def test_slow_writer_is_not_confused(broker):
    """A request written one byte at a time is still one request."""
    frame = wire.api_versions_request(3, 8080)
    with wire.connect(broker.bootstrap) as sock:
        deadline = time.monotonic() + 30
        for i in range(len(frame)):
            sock.sendall(frame[i : i + 1])
            assert time.monotonic() < deadline
        corr, r = wire.recv_frame(sock)
    assert corr == 8080
    error, _ = wire.parse_api_versions_v3(r)
    assert error == NONE


def test_idle_and_stalled_connections_are_closed(start_broker):
    broker = start_broker(sets=["connections.max.idle.ms=1000"])
    idle = wire.connect(broker.bootstrap)
    # A frame that announces 100 bytes, sends 3, then stalls.
    stalled = wire.connect(broker.bootstrap)
    stalled.sendall(b"\x00\x00\x00\x64abc")
    try:
        assert_closed_without_answer(idle, "idle connection")
        assert_closed_without_answer(stalled, "stalled frame")
    finally:
        idle.close()
        stalled.close()
    # A connection that keeps talking is not affected.
    active = wire.connect(broker.bootstrap)
    try:
        deadline = time.monotonic() + 2.5
        corr = 0
        while time.monotonic() < deadline:
            active.sendall(wire.api_versions_request(0, corr))
            got, _ = wire.recv_frame(active)
            assert got == corr
            corr += 1
            time.sleep(0.3)
    finally:
        active.close()
    assert_healthy(broker)
