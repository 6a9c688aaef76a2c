"""A paced idempotent producer for the crash test, run as a separate process.

Usage: crash_producer.py BOOTSTRAP TOPIC PARTITIONS TOTAL ACK_FILE RATE_PER_S

Produces the values "0", "1", ... TOTAL-1; value i goes to partition i % PARTITIONS. Every
acknowledged delivery is appended to ACK_FILE as "value partition offset" and flushed at once,
so the test sees exactly what was acknowledged even if this process is killed. Exits 0 only
if every message was acknowledged.
"""

import sys
import time

from confluent_kafka import Producer

OUTSTANDING_MAX = 200


def main():
    bootstrap, topic, partitions, total, ack_path, rate = sys.argv[1:]
    partitions, total, rate = int(partitions), int(total), float(rate)
    fatal = []
    failed = []

    def on_error(err):
        # Connection errors while the broker is down are expected; only fatal ones matter.
        if err.fatal():
            fatal.append(err)
        print(f"producer error: {err}", file=sys.stderr, flush=True)

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "message.timeout.ms": 120000,
            "reconnect.backoff.ms": 50,
            "reconnect.backoff.max.ms": 500,
            "error_cb": on_error,
        }
    )
    acked = 0
    with open(ack_path, "a", encoding="ascii") as acks:

        def on_delivery(err, msg):
            nonlocal acked
            if err is not None:
                failed.append((msg.value(), err))
                print(f"delivery failed: {msg.value()!r}: {err}", file=sys.stderr, flush=True)
                return
            acks.write(f"{msg.value().decode()} {msg.partition()} {msg.offset()}\n")
            acks.flush()
            acked += 1

        started = time.monotonic()
        for i in range(total):
            # Pace the stream so the broker is killed in the middle of it, with messages in
            # flight, and keep a bounded number outstanding.
            while (
                len(producer) >= OUTSTANDING_MAX or time.monotonic() - started < i / rate
            ) and not fatal:
                producer.poll(0.005)
            if fatal:
                break
            producer.produce(topic, value=str(i).encode(), partition=i % partitions,
                             on_delivery=on_delivery)
            producer.poll(0)
        remaining = producer.flush(180)

    if fatal:
        print(f"FATAL producer error: {fatal[0]}", file=sys.stderr, flush=True)
        return 3
    if remaining or failed:
        print(
            f"unfinished: remaining={remaining} failed={len(failed)}", file=sys.stderr, flush=True
        )
        return 2
    print(f"done acked={acked}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
