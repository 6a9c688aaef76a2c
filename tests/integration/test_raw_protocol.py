"""Protocol rules clients rely on but rarely show: acks=0 and idempotent sequence checks."""

import wire
from helpers import create_topic, unique_topic

NONE = 0
OUT_OF_ORDER_SEQUENCE_NUMBER = 45
DUPLICATE_SEQUENCE_NUMBER = 46


def produce(sock, corr, topic, batch, acks=-1):
    sock.sendall(wire.produce_request(3, corr, topic, 0, batch, acks=acks))
    got, r = wire.recv_frame(sock)
    assert got == corr, f"response for correlation id {got}, expected {corr}"
    return wire.parse_produce_response(r, 3)[(topic, 0)]


def test_acks_zero_gets_no_response(broker):
    topic = unique_topic("acks0")
    create_topic(broker, topic, partitions=1)
    with wire.connect(broker.bootstrap) as sock:
        sock.sendall(
            wire.produce_request(3, 1, topic, 0, wire.record_batch([b"fire", b"forget"]), acks=0)
        )
        sock.sendall(wire.api_versions_request(0, 2))
        corr, r = wire.recv_frame(sock)
        assert corr == 2, "the broker answered an acks=0 Produce"
        assert wire.parse_api_versions_v0(r)[0] == NONE
        # The acks=0 records were appended before the next request on the connection.
        assert produce(sock, 3, topic, wire.record_batch([b"next"])) == (NONE, 2)


def test_idempotent_sequence_checks(broker):
    topic = unique_topic("seq")
    create_topic(broker, topic, partitions=1)
    with wire.connect(broker.bootstrap) as sock:
        sock.sendall(wire.init_producer_id_request(1))
        corr, r = wire.recv_frame(sock)
        assert corr == 1
        error, pid, epoch = wire.parse_init_producer_id_v0(r)
        assert error == NONE and pid >= 0 and epoch >= 0, (error, pid, epoch)

        def batch(seq, values):
            return wire.record_batch(
                values, producer_id=pid, producer_epoch=epoch, base_sequence=seq
            )

        first = batch(0, [b"a", b"b"])
        assert produce(sock, 2, topic, first) == (NONE, 0)
        # A retry of an already written batch is answered with its original offset and is
        # not written again (Kafka answers NONE; DUPLICATE_SEQUENCE_NUMBER is accepted too).
        error, offset = produce(sock, 3, topic, first)
        assert error in (NONE, DUPLICATE_SEQUENCE_NUMBER) and offset == 0, (error, offset)
        assert produce(sock, 4, topic, batch(2, [b"c"])) == (NONE, 2)
        # A gap in the sequence is refused.
        error, _ = produce(sock, 5, topic, batch(5, [b"gap"]))
        assert error == OUT_OF_ORDER_SEQUENCE_NUMBER, error
        assert produce(sock, 6, topic, batch(3, [b"d"])) == (NONE, 3)
        # Nothing was written twice: a plain batch lands at offset 4.
        assert produce(sock, 7, topic, wire.record_batch([b"plain"])) == (NONE, 4)
