"""The transactional data plane of a partition, driven by hand.

Each transactional producer registers with the transaction coordinator (InitProducerId with
its transactional id, AddPartitionsToTxn for the partition, so the leader's KIP-890 check
passes), then its transactional batches are produced on raw sockets (Produce v3 with the
transactional id, the transactional attribute set), and the COMMIT/ABORT markers are written
with raw WriteTxnMarkers v0 requests instead of EndTxn, so the test chooses every marker's
epochs. confluent-kafka consumers then read the
partition: read_committed sees only committed (and non-transactional) records, in order,
and stops at the last stable offset while a transaction is open; read_uncommitted sees
everything; ListOffsets with read_committed answers the LSO. All of it holds again after
kill -9 and a restart, which rebuilds the open transactions and the aborted-transaction index.
"""

import struct
import time

from confluent_kafka import TopicPartition

import wire
from helpers import consumer_client, create_topic, unique_topic, wait_until
from wire import array, i8, i16, i32, i64, string, varint

NONE = 0
INVALID_PRODUCER_EPOCH = 47
INVALID_TXN_STATE = 48
TRANSACTION_COORDINATOR_FENCED = 52
TRANSACTIONAL_ID_AUTHORIZATION_FAILED = 53
API_WRITE_TXN_MARKERS = 27
API_ADD_PARTITIONS_TO_TXN = 24
API_FIND_COORDINATOR = 10
TXN_ID = "txn-log-test"


def txn_batch(values, producer_id, epoch, seq, transactional=True):
    """A magic-2 batch with null keys; transactional attribute (0x10) when asked."""
    ts = int(time.time() * 1000)
    records = b""
    for delta, value in enumerate(values):
        body = i8(0) + varint(0) + varint(delta) + varint(-1) + varint(len(value)) + value + varint(0)
        records += varint(len(body)) + body
    after_crc = (
        i16(0x10 if transactional else 0)
        + i32(len(values) - 1)
        + i64(ts)
        + i64(ts)
        + i64(producer_id)
        + i16(epoch)
        + i32(seq)
        + i32(len(values))
        + records
    )
    after_length = i32(0) + i8(2) + wire.u32(wire.crc32c(after_crc)) + after_crc
    return i64(0) + i32(len(after_length)) + after_length


class Raw:
    """One raw connection with its own correlation ids."""

    def __init__(self, broker):
        self.sock = wire.connect(broker.bootstrap)
        self.corr = 0

    def call(self, api_key, version, body):
        self.corr += 1
        self.sock.sendall(wire.request(api_key, version, self.corr, body))
        got, r = wire.recv_frame(self.sock)
        assert got == self.corr
        return r

    def init_producer(self):
        self.corr += 1
        self.sock.sendall(wire.init_producer_id_request(self.corr))
        _, r = wire.recv_frame(self.sock)
        error, pid, epoch = wire.parse_init_producer_id_v0(r)
        assert error == NONE, error
        return pid, epoch

    def txn_producer(self, transactional_id, topic):
        """A transactional producer id and epoch (InitProducerId v0 with `transactional_id`)
        whose transaction holds partition 0 of `topic` (AddPartitionsToTxn v0). This broker
        is the coordinator (the only one); FindCoordinator creates __transaction_state."""

        def coordinator_found():
            r = self.call(API_FIND_COORDINATOR, 1, string(transactional_id) + i8(1))
            r.i32()  # throttle
            return r.i16() == NONE

        wait_until(coordinator_found, 30, "the transaction coordinator")
        r = self.call(wire.API_INIT_PRODUCER_ID, 0, string(transactional_id) + i32(900000))
        r.i32()  # throttle
        error, pid, epoch = r.i16(), r.i64(), r.i16()
        assert error == NONE, error
        body = string(transactional_id) + i64(pid) + i16(epoch)
        body += array([string(topic) + array([i32(0)])])
        r = self.call(API_ADD_PARTITIONS_TO_TXN, 0, body)
        r.i32()  # throttle
        assert r.i32() == 1 and r.string() == topic and r.i32() == 1
        index, error = r.i32(), r.i16()
        assert (index, error) == (0, NONE), (index, error)
        return pid, epoch

    def produce(self, topic, batch, transactional_id=TXN_ID):
        """(error, base_offset) of a Produce v3 acks=-1 for partition 0."""
        body = string(transactional_id) + i16(-1) + i32(10000)
        body += array([string(topic) + array([i32(0) + wire.bytes_(batch)])])
        r = self.call(wire.API_PRODUCE, 3, body)
        return wire.parse_produce_response(r, 3)[(topic, 0)]

    def marker(self, topic, pid, epoch, committed, coordinator_epoch=0):
        """The error code of a WriteTxnMarkers v0 for partition 0."""
        body = array(
            [
                i64(pid)
                + i16(epoch)
                + i8(1 if committed else 0)
                + array([string(topic) + array([i32(0)])])
                + i32(coordinator_epoch)
            ]
        )
        r = self.call(API_WRITE_TXN_MARKERS, 0, body)
        out = {}
        for _ in range(r.i32()):
            got_pid = r.i64()
            for _ in range(r.i32()):
                name = r.string()
                for _ in range(r.i32()):
                    index = r.i32()
                    out[(got_pid, name, index)] = r.i16()
        r.assert_at_end("a WriteTxnMarkers v0 response")
        assert list(out) == [(pid, topic, 0)], out
        return out[(pid, topic, 0)]

    def latest(self, topic, isolation):
        """ListOffsets v2 LATEST for partition 0 at `isolation` (0 or 1)."""
        body = i32(-1) + i8(isolation) + array([string(topic) + array([i32(0) + i64(-1)])])
        r = self.call(wire.API_LIST_OFFSETS, 2, body)
        r.i32()
        assert r.i32() == 1 and r.string() == topic and r.i32() == 1
        index, error, _ts, offset = r.i32(), r.i16(), r.i64(), r.i64()
        r.assert_at_end("a ListOffsets v2 response")
        assert (index, error) == (0, NONE), (index, error)
        return offset

    def close(self):
        self.sock.close()


def read_values(broker, topic, isolation, expect_count, settle_s=1.5, timeout=30):
    """Values read from offset 0 until `expect_count` arrived, then `settle_s` more to show
    nothing else comes (the negative half of "stops at the LSO")."""
    c = consumer_client(broker, **{"isolation.level": isolation, "fetch.wait.max.ms": 100})
    c.assign([TopicPartition(topic, 0, 0)])
    got = []
    deadline = time.time() + timeout
    settle_until = None
    try:
        while time.time() < deadline:
            m = c.poll(0.2)
            if m is not None and not m.error():
                got.append((m.offset(), m.value().decode()))
            if len(got) >= expect_count and settle_until is None:
                settle_until = time.time() + settle_s
            if settle_until is not None and time.time() >= settle_until:
                break
    finally:
        c.close()
    return got


def check_state(broker, topic, committed, everything, lso, leo):
    raw = Raw(broker)
    try:
        assert raw.latest(topic, 1) == lso
        assert raw.latest(topic, 0) == leo
    finally:
        raw.close()
    rc = read_values(broker, topic, "read_committed", len(committed))
    assert rc == committed, f"read_committed saw {rc}"
    assert all(offset < lso for offset, _ in rc)
    ru = read_values(broker, topic, "read_uncommitted", len(everything))
    assert ru == everything, f"read_uncommitted saw {ru}"


def test_markers_lso_and_read_committed_survive_kill9(broker):
    topic = unique_topic("txnlog")
    create_topic(broker, topic, partitions=1)
    raw = Raw(broker)
    a_pid, a_epoch = raw.txn_producer(TXN_ID + "-a", topic)
    b_pid, b_epoch = raw.txn_producer(TXN_ID + "-b", topic)
    c_pid, c_epoch = raw.init_producer()
    A, B = TXN_ID + "-a", TXN_ID + "-b"

    # A transactional batch needs the request's transactional id.
    assert raw.produce(topic, txn_batch([b"x"], a_pid, a_epoch, 0), None)[0] == (
        TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    )
    assert raw.produce(topic, txn_batch([b"a1", b"a2"], a_pid, a_epoch, 0), A) == (NONE, 0)
    assert raw.produce(topic, txn_batch([b"b1"], b_pid, b_epoch, 0), B) == (NONE, 2)
    assert raw.produce(topic, txn_batch([b"a3"], a_pid, a_epoch, 2), A) == (NONE, 3)
    # Inside its transaction A may not write a non-transactional batch.
    plain = txn_batch([b"no"], a_pid, a_epoch, 3, transactional=False)
    assert raw.produce(topic, plain, A)[0] == INVALID_TXN_STATE
    # A newer epoch opens no transaction the coordinator knows (KIP-890 part 1): fenced.
    newer = txn_batch([b"no"], a_pid, a_epoch + 1, 0)
    assert raw.produce(topic, newer, A)[0] == INVALID_PRODUCER_EPOCH
    # Both transactions open: read_committed sees nothing, the LSO is A's first offset.
    assert Raw(broker).latest(topic, 1) == 0

    assert raw.marker(topic, a_pid, a_epoch, committed=True, coordinator_epoch=3) == NONE  # 4
    assert raw.marker(topic, b_pid, b_epoch, committed=False, coordinator_epoch=3) == NONE  # 5
    # Kafka's marker checks: an older producer epoch, then an older coordinator epoch.
    assert raw.marker(topic, a_pid, a_epoch - 1, True, 3) == INVALID_PRODUCER_EPOCH
    assert raw.marker(topic, a_pid, a_epoch, True, 2) == TRANSACTION_COORDINATOR_FENCED
    assert raw.produce(topic, txn_batch([b"c1"], c_pid, c_epoch, 0, False), None) == (NONE, 6)
    # A opens a new transaction at 7, left open.
    assert raw.produce(topic, txn_batch([b"a4"], a_pid, a_epoch, 3), A) == (NONE, 7)
    raw.close()

    committed = [(0, "a1"), (1, "a2"), (3, "a3"), (6, "c1")]
    everything = [(0, "a1"), (1, "a2"), (2, "b1"), (3, "a3"), (6, "c1"), (7, "a4")]
    check_state(broker, topic, committed, everything, lso=7, leo=8)

    broker.kill9()
    broker.restart()
    check_state(broker, topic, committed, everything, lso=7, leo=8)

    # The rebuilt state still knows A's open transaction and its epochs.
    raw = Raw(broker)
    assert raw.marker(topic, a_pid, a_epoch, True, 2) == TRANSACTION_COORDINATOR_FENCED
    plain = txn_batch([b"no"], a_pid, a_epoch, 4, transactional=False)
    assert raw.produce(topic, plain, A)[0] == INVALID_TXN_STATE
    assert raw.marker(topic, a_pid, a_epoch, committed=False, coordinator_epoch=3) == NONE  # 8
    assert raw.produce(topic, txn_batch([b"c2"], c_pid, c_epoch, 1, False), None) == (NONE, 9)
    raw.close()
    committed += [(9, "c2")]
    everything += [(9, "c2")]
    check_state(broker, topic, committed, everything, lso=10, leo=10)

    # And once more after a crash: both aborted transactions come back from the index.
    broker.kill9()
    broker.restart()
    check_state(broker, topic, committed, everything, lso=10, leo=10)
    wait_until(lambda: broker.alive(), 5, "the broker to stay up")


def test_fetch_answers_the_aborted_transactions_of_the_range(broker):
    """A raw read_committed Fetch v4 carries the LSO and the aborted transactions."""
    topic = unique_topic("txnfetch")
    create_topic(broker, topic, partitions=1)
    raw = Raw(broker)
    pid, epoch = raw.txn_producer(TXN_ID, topic)
    assert raw.produce(topic, txn_batch([b"x1", b"x2"], pid, epoch, 0)) == (NONE, 0)
    assert raw.marker(topic, pid, epoch, committed=False) == NONE  # 2
    assert raw.produce(topic, txn_batch([b"y1"], pid, epoch, 2)) == (NONE, 3)

    def fetch(isolation):
        body = i32(-1) + i32(500) + i32(1) + i32(1 << 20) + i8(isolation)
        body += array([string(topic) + array([i32(0) + i64(0) + i32(1 << 20)])])
        r = raw.call(wire.API_FETCH, 4, body)
        r.i32()  # throttle
        assert r.i32() == 1 and r.string() == topic and r.i32() == 1
        index, error, hw, lso = r.i32(), r.i16(), r.i64(), r.i64()
        n = r.i32()
        aborted = [] if n < 0 else [(r.i64(), r.i64()) for _ in range(n)]
        records = r.take(r.i32())
        return (index, error, hw, lso, None if n < 0 else aborted, len(records))

    index, error, hw, lso, aborted, size = fetch(1)
    assert (index, error, hw, lso) == (0, NONE, 4, 3)
    assert aborted == [(pid, 0)]
    assert size > 0
    index, error, hw, lso, aborted, _ = fetch(0)
    assert (error, hw, lso, aborted) == (NONE, 4, 3, None)
    raw.close()
    assert struct.calcsize(">q") == 8
