"""A consume-transform-produce worker with exactly-once transactions, run as its own process.

Usage: txn_worker.py BOOTSTRAP INPUT OUTPUT GROUP TRANSACTIONAL_ID

Reads INPUT in group GROUP (read_committed, no auto commit) and, for each input record, writes
one output record to OUTPUT: key = the input key, value = b"out:" + the input value. Each poll
batch is one transaction that also carries the group's offsets (send_offsets_to_transaction),
so the output and the progress commit or abort together. The test kills this process with
SIGKILL at random points, and kills the broker under it; a restarted worker with the same
transactional id fences the old one and carries on from the committed offsets.

Runs until SIGTERM (exit 0); exits 3 on a fatal error such as being fenced (the test
restarts it). The test decides when the work is done, from the group's committed offsets.
"""

import os
import signal
import sys

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

BATCH_MAX = 50
# SKEIN_TXN_WORKER_DEBUG=eos,cgrp,fetch (librdkafka debug contexts) also logs each batch.
DEBUG = os.environ.get("SKEIN_TXN_WORKER_DEBUG", "")
# When its only broker goes away, librdkafka (2.10 and later) starts a re-bootstrap that
# decommissions the broker handle it had cached as group coordinator, and a
# send_offsets_to_transaction in flight then never sends its TxnOffsetCommit: the worker
# hangs with no error (confluentinc/librdkafka#5511, open). Seen here after the test's
# broker kill -9, about one run in three under load. Without re-bootstrapping, the handle
# lives on and reconnects to the restarted broker at the same address.
CLIENT = {"metadata.recovery.strategy": "none"}


def log(*args):
    print("txn_worker:", *args, file=sys.stderr, flush=True)


def main():
    bootstrap, input_topic, output_topic, group, txn_id = sys.argv[1:]
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 10000,
            "reconnect.backoff.ms": 50,
            "reconnect.backoff.max.ms": 500,
            **CLIENT,
            **({"debug": DEBUG} if DEBUG else {}),
        }
    )
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": txn_id,
            "transaction.timeout.ms": 20000,
            "linger.ms": 5,
            "reconnect.backoff.ms": 50,
            "reconnect.backoff.max.ms": 500,
            **CLIENT,
            **({"debug": DEBUG} if DEBUG else {}),
        }
    )
    producer.init_transactions(60)
    consumer.subscribe([input_topic])
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    while not stop:
        msgs = [m for m in consumer.consume(BATCH_MAX, 0.5) if m.error() is None]
        if not msgs:
            continue
        try:
            producer.begin_transaction()
            for m in msgs:
                producer.produce(output_topic, key=m.key(), value=b"out:" + m.value())
            producer.send_offsets_to_transaction(
                consumer.position(consumer.assignment()),
                consumer.consumer_group_metadata(),
                60,
            )
            producer.commit_transaction(60)
            if DEBUG:
                spans = {}
                for m in msgs:
                    lo, hi = spans.get(m.partition(), (m.offset(), m.offset()))
                    spans[m.partition()] = (min(lo, m.offset()), max(hi, m.offset()))
                log(f"committed {len(msgs)} inputs: {sorted(spans.items())}")
        except KafkaException as exc:
            err = exc.args[0]
            log(f"transaction failed: {err}")
            if err.fatal():
                return 3
            if err.txn_requires_abort():
                producer.abort_transaction(60)
            # Abortable or retriable: go back to the committed offsets and do the batch again.
            rewind(consumer)
    consumer.close()
    return 0


def rewind(consumer):
    """After an aborted transaction, go back to the group's committed offsets."""
    assignment = consumer.assignment()
    committed = consumer.committed(assignment, timeout=30)
    for tp in committed:
        if tp.offset >= 0:
            consumer.seek(tp)
        else:
            consumer.seek(TopicPartition(tp.topic, tp.partition, 0))


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KafkaException as exc:
        err = exc.args[0]
        log(f"fatal: {err}")
        sys.exit(3 if isinstance(err, KafkaError) else 5)
