"""Idempotent producer state stays bounded and restarts cheaply.

Every idempotent producer leaves an entry (its epoch and last sequences) in each partition it
writes. Like Kafka, Skein forgets a producer idle for `producer.id.expiration.ms` (its next
batch is then accepted whatever its sequence), caps the entries of all partitions together
(`skein.producer.ids.max`, forgetting the least recently active first), and snapshots the
state at segment roll and shutdown so that a restart reads the snapshot and scans only the
batches written after it.
"""

import re
import urllib.request
from pathlib import Path

import wire
from helpers import create_topic, unique_topic, wait_until

NONE = 0
OUT_OF_ORDER_SEQUENCE_NUMBER = 45
DUPLICATE_SEQUENCE_NUMBER = 46
SUMMARY = re.compile(
    r"\[stderr#(\d+)\].*rebuilt idempotent producer state"
    r".*from_snapshots=(\d+).*batches_scanned=(\d+).*producers=(\d+)"
)


class RawProducer:
    """An idempotent producer on a raw socket: InitProducerId, then batches with sequences."""

    def __init__(self, sock, corr_start=1):
        self.sock = sock
        self.corr = corr_start
        self.sock.sendall(wire.init_producer_id_request(self._next()))
        _, r = wire.recv_frame(sock)
        error, self.pid, self.epoch = wire.parse_init_producer_id_v0(r)
        assert error == NONE, error
        self.next_seq = 0

    def _next(self):
        self.corr += 1
        return self.corr

    def batch(self, seq, values):
        return wire.record_batch(
            values, producer_id=self.pid, producer_epoch=self.epoch, base_sequence=seq
        )

    def send(self, topic, batch):
        """(error_code, base_offset) of one Produce v3 for partition 0."""
        corr = self._next()
        self.sock.sendall(wire.produce_request(3, corr, topic, 0, batch))
        got, r = wire.recv_frame(self.sock)
        assert got == corr, f"response for correlation id {got}, expected {corr}"
        return wire.parse_produce_response(r, 3)[(topic, 0)]

    def produce(self, topic, values):
        """Sends the next batch in sequence; returns (batch bytes, base offset)."""
        batch = self.batch(self.next_seq, values)
        error, offset = self.send(topic, batch)
        assert error == NONE, error
        self.next_seq += len(values)
        return batch, offset


def scrape(broker, name):
    with urllib.request.urlopen(f"http://{broker.http}/metrics", timeout=10) as r:
        text = r.read().decode()
    match = re.search(rf"^{name} (\d+)", text, re.M)
    assert match, f"{name} missing from /metrics"
    return int(match.group(1))


def producer_summary(broker):
    """(from_snapshots, batches_scanned, producers) logged by the latest start."""
    starts = [m for m in SUMMARY.finditer(broker.log()) if int(m.group(1)) == broker.starts]
    assert starts, f"no producer state summary for start #{broker.starts}\n{broker.log()}"
    return tuple(int(g) for g in starts[-1].groups()[1:])


def test_expired_producer_is_accepted_whatever_its_sequence(start_broker):
    broker = start_broker(
        sets=["producer.id.expiration.ms=1500", "producer.id.expiration.check.interval.ms=100"]
    )
    topic = unique_topic("expiry")
    create_topic(broker, topic, partitions=1)
    with wire.connect(broker.bootstrap) as sock:
        p = RawProducer(sock)
        assert p.send(topic, p.batch(0, [b"a", b"b"])) == (NONE, 0)
        # While the producer is remembered, a gap is refused.
        assert p.send(topic, p.batch(10, [b"gap"]))[0] == OUT_OF_ORDER_SEQUENCE_NUMBER
        assert scrape(broker, "skein_producer_ids") == 1
        wait_until(
            lambda: scrape(broker, "skein_producer_ids") == 0,
            30,
            "the idle producer to expire",
        )
        assert scrape(broker, "skein_producer_ids_expired_total") == 1
        # Forgotten: its next batch is accepted whatever its sequence, as Kafka does, and it
        # is tracked again from there (a retry is a duplicate, a gap is refused).
        late = p.batch(10, [b"late"])
        assert p.send(topic, late) == (NONE, 2)
        assert p.send(topic, late) in {(NONE, 2), (DUPLICATE_SEQUENCE_NUMBER, 2)}
        assert p.send(topic, p.batch(13, [b"gap"]))[0] == OUT_OF_ORDER_SEQUENCE_NUMBER
        assert p.send(topic, p.batch(11, [b"next"])) == (NONE, 3)


def test_many_short_lived_producers_leave_bounded_state(start_broker):
    cap, producers = 50, 400
    broker = start_broker(sets=[f"skein.producer.ids.max={cap}"])
    topic = unique_topic("churn")
    create_topic(broker, topic, partitions=1)
    offsets = []
    with wire.connect(broker.bootstrap) as sock:
        for i in range(producers):
            p = RawProducer(sock, corr_start=i * 10)
            last_batch, offset = p.produce(topic, [f"v{i}".encode()])
            offsets.append(offset)
            held = scrape(broker, "skein_producer_ids") if i % 50 == 49 else 0
            assert held <= cap, f"{held} producer states held after {i + 1} producers"
        # Every batch was written once, in order.
        assert offsets == list(range(producers))
        held = scrape(broker, "skein_producer_ids")
        assert 0 < held <= cap, held
        assert scrape(broker, "skein_producer_ids_evicted_total") == producers - held
        # The most recent producer is still remembered: its retry is answered, not rewritten.
        assert p.send(topic, last_batch) in {
            (NONE, producers - 1),
            (DUPLICATE_SEQUENCE_NUMBER, producers - 1),
        }
        assert p.produce(topic, [b"after"])[1] == producers


def snapshot_offsets(broker, topic):
    return sorted(int(f.stem) for f in Path(broker.data_dir, f"{topic}-0").glob("*.snapshot"))


def test_restart_reads_the_snapshot_and_only_the_tail(start_broker):
    broker = start_broker()
    topic = unique_topic("snap")
    # Small segments, so that produce rolls several and snapshots at each roll.
    create_topic(broker, topic, partitions=1, config={"segment.bytes": "20000"})
    value = b"x" * 1000
    with wire.connect(broker.bootstrap) as sock:
        producers = [RawProducer(sock, corr_start=i * 1000) for i in range(3)]
        written = [[p.produce(topic, [value]) for _ in range(30)] for p in producers]
    assert len(snapshot_offsets(broker, topic)) == 2, "snapshots taken at roll (newest two kept)"

    def check_state(sock):
        for p, batches in zip(producers, written):
            p.sock = sock
            # Each producer's last batch is recognised as already written, at its offset.
            batch, offset = batches[-1]
            assert p.send(topic, batch) in {(NONE, offset), (DUPLICATE_SEQUENCE_NUMBER, offset)}
            # A gap is still refused: the sequences came back, not just the producer ids.
            gap = p.batch(p.next_seq + 5, [b"gap"])
            assert p.send(topic, gap)[0] == OUT_OF_ORDER_SEQUENCE_NUMBER

    # A clean shutdown snapshots every partition at its end: the restart scans nothing.
    broker.restart()
    assert producer_summary(broker) == (1, 0, 3)
    with wire.connect(broker.bootstrap) as sock:
        check_state(sock)
        # More batches: more rolls, then a few batches after the last snapshot.
        for p, batches in zip(producers, written):
            batches.extend(p.produce(topic, [value]) for _ in range(25))
    end = max(offset for batches in written for _, offset in batches) + 1

    # A crash: no shutdown snapshot. The restart reads the snapshot taken at the last roll and
    # scans exactly the batches written after it.
    newest = snapshot_offsets(broker, topic)[-1]
    assert 0 < newest < end, (newest, end)
    tail = sum(1 for batches in written for _, offset in batches if offset >= newest)
    broker.kill9()
    broker.start(port=broker.port)
    assert producer_summary(broker) == (1, tail, 3)
    with wire.connect(broker.bootstrap) as sock:
        check_state(sock)
