"""Shared helpers for the real-client suite: waiting, topic names and confluent-kafka shortcuts.

Everything here waits on a condition with a deadline; nothing sleeps a fixed time to
synchronise with the broker, because the suite must stay steady on a busy 2-core machine.
"""

import os
import subprocess
import time
import uuid
from pathlib import Path

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

REPO = Path(__file__).resolve().parents[2]
SKEIN_BIN = os.environ.get("SKEIN_BIN", str(REPO / "target" / "release" / "skein"))

# Generous deadlines: CI machines have two cores shared with a Rust build.
DEFAULT_TIMEOUT_S = 30.0


def wait_until(cond, timeout, what, interval=0.05):
    """Polls `cond()` until it returns something truthy, and returns that value.

    Raises AssertionError naming `what` when `timeout` seconds pass first. Exceptions raised
    by `cond` propagate: a condition that can fail transiently must catch its own errors.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def broker_env(extra=None):
    """The environment for a broker: the caller's, less any SKEIN_* settings, plus `extra`.

    SKEIN_* variables set around the test run (SKEIN_BIN, for one) must not leak into the
    broker's configuration; tests that want one pass it in `extra`.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKEIN_")}
    env.update({"RUST_LOG": "info", "RUST_BACKTRACE": "1", "NO_COLOR": "1"})
    env.update(extra or {})
    return env


def unique_topic(prefix="t"):
    """A topic name no other test uses, so tests can share a broker."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def admin_client(broker, **conf):
    return AdminClient({"bootstrap.servers": broker.bootstrap, **conf})


def producer_client(broker, **conf):
    return Producer({"bootstrap.servers": broker.bootstrap, **conf})


def consumer_client(broker, **conf):
    # A standalone consumer for tests of the log itself: assign() with explicit offsets and
    # no commits (test_groups.py covers groups). librdkafka wants a group.id all the same.
    base = {
        "bootstrap.servers": broker.bootstrap,
        "group.id": "skein-tests-no-commit",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
    }
    base.update(conf)
    return Consumer(base)


def future_error(future, timeout=DEFAULT_TIMEOUT_S):
    """Waits for an admin future; returns None on success or the KafkaError it failed with."""
    try:
        future.result(timeout=timeout)
    except KafkaException as exc:
        return exc.args[0]
    return None


def create_topic(broker, name, partitions=3, config=None, timeout=DEFAULT_TIMEOUT_S):
    """Creates a topic with CreateTopics and waits until Metadata shows all its partitions."""
    admin = admin_client(broker)
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})],
        operation_timeout=timeout,
    )
    futures[name].result(timeout=timeout)
    wait_until(
        lambda: topic_partition_count(admin, name) == partitions,
        timeout,
        f"topic {name} to show {partitions} partitions in Metadata",
    )
    return admin


def topic_partition_count(admin, name, timeout=10):
    """Partitions of `name` in a Metadata response for all topics, or None if it is absent.

    It asks for all topics, not for `name`, because a Metadata request naming a topic may
    auto-create it.
    """
    md = admin.list_topics(timeout=timeout)
    topic = md.topics.get(name)
    if topic is None or topic.error is not None:
        return None
    return len(topic.partitions)


def produce_all(producer, messages, timeout=DEFAULT_TIMEOUT_S):
    """Produces (topic, kwargs) pairs and returns the delivery reports in produce order.

    Each report is (error, partition, offset, value). Fails if flush cannot finish in time.
    """
    reports = [None] * len(messages)

    def on_delivery_for(i):
        def on_delivery(err, msg):
            reports[i] = (err, msg.partition(), msg.offset(), msg.value())

        return on_delivery

    for i, (topic, kwargs) in enumerate(messages):
        while True:
            try:
                producer.produce(topic, on_delivery=on_delivery_for(i), **kwargs)
                break
            except BufferError:
                # The local queue is full: serve delivery reports to make room.
                producer.poll(0.1)
        producer.poll(0)
    remaining = producer.flush(timeout)
    assert remaining == 0, f"{remaining} messages still undelivered after {timeout}s"
    assert all(r is not None for r in reports), "a delivery report is missing"
    return reports


def assert_delivered(reports):
    errors = [(i, r[0]) for i, r in enumerate(reports) if r[0] is not None]
    assert not errors, f"{len(errors)} deliveries failed, first: {errors[:5]}"


class Record:
    """A consumed record, detached from librdkafka's Message."""

    __slots__ = ("partition", "offset", "key", "value", "headers", "timestamp")

    def __init__(self, msg):
        self.partition = msg.partition()
        self.offset = msg.offset()
        self.key = msg.key()
        self.value = msg.value()
        self.headers = msg.headers()
        self.timestamp = msg.timestamp()

    def __repr__(self):
        return f"Record(p={self.partition}, o={self.offset}, k={self.key!r}, v={self.value!r})"


def consume_to_end(broker, topic, partitions, timeout=DEFAULT_TIMEOUT_S, **conf):
    """Reads `partitions` of `topic` from the beginning up to their current high watermarks.

    Returns {partition: [Record, ...]} in log order. Uses assign(), never a group.
    """
    consumer = consumer_client(broker, **conf)
    try:
        ends = {}
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            ends[p] = (low, high)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        records = {p: [] for p in partitions}

        def next_offset(p):
            return records[p][-1].offset + 1 if records[p] else ends[p][0]

        deadline = time.monotonic() + timeout
        while any(next_offset(p) < ends[p][1] for p in partitions):
            if time.monotonic() > deadline:
                progress = {p: (next_offset(p), ends[p]) for p in partitions}
                raise AssertionError(
                    f"timed out reading {topic} to its high watermarks; "
                    f"partition: (next offset, (low, high)) = {progress}"
                )
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                if not msg.topic() and not err.fatal():
                    # Client-wide, non-fatal events (librdkafka looks for a group coordinator
                    # because it insists on a group.id) do not concern these partitions.
                    continue
                raise AssertionError(f"consumer error on {topic}: {err}")
            records[msg.partition()].append(Record(msg))
        return records
    finally:
        consumer.close()


def assert_contiguous(records, start=0):
    """Offsets of one partition's records are start, start+1, ... with no gap or repeat."""
    offsets = [r.offset for r in records]
    assert offsets == list(range(start, start + len(offsets))), (
        f"offsets not contiguous from {start}: first differences at "
        f"{[(i, o) for i, o in enumerate(offsets) if o != start + i][:5]}"
    )


CLI_TIMEOUT_S = 60.0


def skein(*args, bootstrap, check=None):
    """Runs the `skein` CLI against `bootstrap`; returns the CompletedProcess. `check` asserts
    the exit code."""
    proc = subprocess.run(
        [SKEIN_BIN, *args, "--bootstrap", bootstrap],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
    )
    if check is not None:
        assert proc.returncode == check, (
            f"skein {' '.join(args)} exited {proc.returncode}, expected {check}\n"
            f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
        )
    return proc
