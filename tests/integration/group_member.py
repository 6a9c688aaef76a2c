"""One consumer-group member for the group tests, run as a separate process so it can be killed.

Usage: group_member.py BOOTSTRAP TOPIC GROUP [KEY=VALUE ...]

Subscribes to TOPIC in GROUP with confluent-kafka (KEY=VALUE pairs are extra librdkafka
settings, e.g. group.protocol=consumer) and consumes one record at a time. It never auto-commits:
after every few records (and at most 200 ms after the last commit) it commits, synchronously and
with explicit offsets, what it has processed on the partitions it owns; it also commits the
processed offsets of partitions it is about to lose in the revoke callback, and everything it
processed when it is asked to stop (SIGTERM), before it closes the consumer and so leaves the
group.

Everything it does is printed to stdout as one JSON object a line, flushed at once, so the test
sees exactly what happened even after a kill -9 (a partly written last line must be skipped).
Every line has "ev" and "t" (time.monotonic(), comparable across processes on one machine):

    {"ev": "start"}
    {"ev": "assign" | "revoke" | "lost", "partitions": [p, ...]}     rebalance callbacks
    {"ev": "assignment", "partitions": [p, ...], "member_id": ...}   assignment() when it changed
    {"ev": "rec", "p": p, "o": offset, "v": value}                   a record was processed
    {"ev": "commit", "offsets": {"p": next_offset, ...}}             a commit succeeded
    {"ev": "commit_error", "error": "...", "offsets": {...}}         a commit failed
    {"ev": "error", "error": "...", "fatal": bool}                   a consumer error
    {"ev": "closed"}
"""

import json
import signal
import sys
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

COMMIT_EVERY_RECORDS = 10
COMMIT_EVERY_S = 0.2


def emit(ev, **fields):
    fields["ev"] = ev
    fields["t"] = time.monotonic()
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def main():
    bootstrap, topic, group = sys.argv[1:4]
    extra = dict(kv.split("=", 1) for kv in sys.argv[4:])
    conf = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    }
    conf.update(extra)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))

    consumer = Consumer(conf)
    # Next offset to commit (last processed + 1) per partition, and what was last committed.
    processed = {}
    committed = {}

    def commit(partitions):
        offsets = {
            p: processed[p] for p in partitions if processed.get(p, -1) > committed.get(p, -1)
        }
        if not offsets:
            return
        try:
            consumer.commit(
                offsets=[TopicPartition(topic, p, o) for p, o in sorted(offsets.items())],
                asynchronous=False,
            )
        except KafkaException as exc:
            emit("commit_error", error=str(exc.args[0]), offsets=offsets)
            return
        committed.update(offsets)
        emit("commit", offsets=offsets)

    def on_assign(c, partitions):
        emit("assign", partitions=sorted(tp.partition for tp in partitions))

    def on_revoke(c, partitions):
        revoked = sorted(tp.partition for tp in partitions)
        emit("revoke", partitions=revoked)
        commit(revoked)
        for p in revoked:
            processed.pop(p, None)
            committed.pop(p, None)

    def on_lost(c, partitions):
        lost = sorted(tp.partition for tp in partitions)
        emit("lost", partitions=lost)
        for p in lost:
            processed.pop(p, None)
            committed.pop(p, None)

    emit("start")
    consumer.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke, on_lost=on_lost)
    last_assignment = None
    last_commit = time.monotonic()
    since_commit = 0
    while not stop:
        msg = consumer.poll(0.1)
        assignment = sorted(tp.partition for tp in consumer.assignment())
        if assignment != last_assignment:
            last_assignment = assignment
            emit("assignment", partitions=assignment, member_id=consumer.memberid())
        if msg is not None:
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    emit("error", error=str(err), fatal=err.fatal())
            else:
                emit("rec", p=msg.partition(), o=msg.offset(), v=msg.value().decode())
                processed[msg.partition()] = msg.offset() + 1
                since_commit += 1
        if since_commit >= COMMIT_EVERY_RECORDS or (
            since_commit and time.monotonic() - last_commit >= COMMIT_EVERY_S
        ):
            commit(assignment)
            since_commit = 0
            last_commit = time.monotonic()
    commit(sorted(tp.partition for tp in consumer.assignment()))
    consumer.close()
    emit("closed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
