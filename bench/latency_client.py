#!/usr/bin/env python3
"""Fixed-rate producer and latency-recording consumer for bench/run.py's S2 scenario.

Both are librdkafka underneath (confluent-kafka). rdkafka_performance's `-r` rate limiter
busy-polls between messages, so on a one-core client its spinning thread competes with its own
and the consumer's librdkafka threads and adds milliseconds to every percentile. This producer
sleeps between 1 ms ticks instead, sending rate/1000 messages per tick; each payload starts with
its send time (µs since the epoch, big-endian int64), so the consumer can compute end-to-end
latency on the same clock.

    latency_client.py produce --bootstrap H:P | --mock  --topic T --rate R --count N --out FILE
    latency_client.py consume --bootstrap H:P --topic T --count N --out FILE

Protocol with the driver: each prints `READY [bootstrap]` once it can start (the producer when
connected, the consumer when it reached the end of the empty partition), the producer then
waits for a line on stdin; at the end each prints one JSON line with its counts, and the
producer stays (it may host the mock broker) until stdin gives another line or closes.
Latencies (µs) go to FILE, one a line.
"""

import argparse
import json
import struct
import sys
import time


def now_us():
    return time.time_ns() // 1000


def produce(args):
    from confluent_kafka import Producer

    mock_addr = []

    class _Log:
        """Catches librdkafka's log line that names the mock cluster's address."""

        def log(self, _level, msg, *a, **_kw):
            text = msg % a if a else msg
            if "Mock cluster enabled" in text and "replaced with" in text:
                mock_addr.append(text.rsplit("replaced with", 1)[1].strip())

        debug = info = warning = error = critical = exception = lambda self, *a, **k: None

    conf = {
        "bootstrap.servers": args.bootstrap or "127.0.0.1:1",
        "acks": "all",
        "linger.ms": args.linger_ms,
        "batch.size": args.batch_size,
        "log_level": 6,
        "logger": _Log(),
    }
    if args.mock:
        conf["test.mock.num.brokers"] = 1
    p = Producer(conf)
    # A Metadata request connects, and makes the mock broker create the topic.
    p.list_topics(args.topic, timeout=30)
    deadline = time.monotonic() + 5
    while args.mock and not mock_addr and time.monotonic() < deadline:
        p.poll(0.05)
    print("READY" + (f" {mock_addr[0]}" if mock_addr else ""), flush=True)
    sys.stdin.readline()

    lat = []
    errors = [0]

    def delivered(err, msg):
        if err is None:
            lat.append(now_us() - struct.unpack_from(">q", msg.value())[0])
        else:
            errors[0] += 1

    pad = b"x" * max(0, args.size - 8)
    per_tick = args.rate / 1000.0
    sent = tick = 0
    start = time.monotonic()
    while sent < args.count:
        tick += 1
        due = min(args.count, int(per_tick * tick))
        while sent < due:
            try:
                p.produce(args.topic, struct.pack(">q", now_us()) + pad, partition=args.partition,
                          on_delivery=delivered)
                sent += 1
            except BufferError:
                p.poll(0.001)
        p.poll(0)
        wait = start + tick / 1000.0 - time.monotonic()
        if wait > 0:
            p.poll(wait)  # sleeps in librdkafka, serving delivery reports as they come
    left = p.flush(60)
    elapsed = time.monotonic() - start
    with open(args.out, "w") as f:
        f.write("\n".join(map(str, lat)) + "\n")
    print(json.dumps({"sent": sent, "delivered": len(lat), "errors": errors[0] + left, "seconds": elapsed}),
          flush=True)
    # The mock broker dies with this process: stay until the driver says the consumer is done.
    sys.stdin.readline()


def consume(args):
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    c = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": "skein-bench-latency",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "log_level": 3,
    })
    c.assign([TopicPartition(args.topic, args.partition, 0)])
    lat = []
    nbytes = 0
    ready = False
    first = last = None
    deadline = time.monotonic() + args.timeout
    while len(lat) < args.count and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            if m.error().code() == KafkaError._PARTITION_EOF and not ready:
                ready = True
                print("READY", flush=True)
            continue
        t = now_us()
        v = m.value()
        lat.append(t - struct.unpack_from(">q", v)[0])
        nbytes += len(v)
        if first is None:
            first = time.monotonic()
        last = time.monotonic()
        if not ready:
            ready = True
            print("READY", flush=True)
    c.close()
    with open(args.out, "w") as f:
        f.write("\n".join(map(str, lat)) + "\n")
    secs = (last - first) if first is not None and last > first else None
    print(json.dumps({"received": len(lat), "bytes": nbytes, "seconds": secs}), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["produce", "consume"])
    ap.add_argument("--bootstrap")
    ap.add_argument("--mock", action="store_true", help="produce to librdkafka's in-process mock broker")
    ap.add_argument("--topic", required=True)
    ap.add_argument("--partition", type=int, default=0)
    ap.add_argument("--rate", type=int, default=5000)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--linger-ms", type=float, default=1)
    ap.add_argument("--batch-size", type=int, default=128 * 1024)
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    (produce if args.mode == "produce" else consume)(args)


if __name__ == "__main__":
    main()
