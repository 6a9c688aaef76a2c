"""Client load for fault tests, recorded into a `history.History` for `history.check`.

- `ProducerWorkload`: an idempotent, acks=all confluent-kafka (librdkafka) producer in a
  background thread, sending unique values ("<client>-<n>") at a target rate and recording
  every attempt and its delivery report;
- `read_back`: reads a topic from the beginning up to the high watermark of every partition
  (found when it starts), with a deadline, and records each record;
- `GroupConsumer`: a live consumer in a group, in a background thread, recording what it
  reads and every commit the broker acknowledged;
- `observe_committed`: records a group's committed offsets as OffsetFetch answers them.

Start and stop are bounded: `stop()` flushes within its timeout, purges what is left (those
sends stay indeterminate), joins the thread and raises if it did not end. Use the workers as
context managers, or stop them in a `finally`, so nothing is left running after a test.

How a delivery error is classified (`classify_delivery_error`)
--------------------------------------------------------------
A send is *definitely failed* only when Kafka guarantees nothing of it was written; every
other error leaves it *indeterminate*, since the checker only allows an indeterminate value
to appear at most once, while a definite failure that is read is a violation. Wrongly calling
an error definite would make the checker cry wolf, so the rule is conservative:

- `produce()` raising (BufferError, KafkaException: unknown topic or partition, invalid
  argument, a fatal producer): the message never entered librdkafka's queue. Definite.
- Errors that depend only on the batch and the topic's settings, which the broker checks
  before appending anything, so every attempt of the same batch gets them: MSG_SIZE_TOO_LARGE,
  RECORD_LIST_TOO_LARGE, CORRUPT_MESSAGE (INVALID_MSG), INVALID_RECORD, INVALID_TIMESTAMP,
  INVALID_REQUIRED_ACKS, INVALID_TOPIC_EXCEPTION, UNSUPPORTED_FOR_MESSAGE_FORMAT,
  UNSUPPORTED_COMPRESSION_TYPE, TOPIC/CLUSTER_AUTHORIZATION_FAILED, and librdkafka's local
  _INVALID_ARG, _UNKNOWN_PARTITION, _UNKNOWN_TOPIC (raised before the message is sent).
  Definite.
- NOT_ENOUGH_REPLICAS: the request that got it wrote nothing (the leader checks the ISR size
  before appending). But librdkafka retries it (it is retriable), and an earlier attempt of
  the same batch may have been appended with its response lost; Kafka checks the ISR before
  it looks for duplicates, so the retry is refused although the batch is in the log. So it is
  definite only when the producer does not retry (`retries=0`), else indeterminate. With
  librdkafka's default infinite retries it is retried until `message.timeout.ms` anyway and
  the report says _MSG_TIMED_OUT.
- NOT_ENOUGH_REPLICAS_AFTER_APPEND: written on the leader, not replicated enough: it may
  survive or be truncated. Indeterminate.
- _MSG_TIMED_OUT, _PURGE_QUEUE / _PURGE_INFLIGHT (a purged message may have been sent before
  a retry put it back in the queue), _TRANSPORT, REQUEST_TIMED_OUT, NOT_LEADER_OR_FOLLOWER,
  _FATAL (the idempotent producer gave up, e.g. after OUT_OF_ORDER_SEQUENCE_NUMBER),
  `txn_requires_abort()` errors (an aborted transaction's records stay in the log and
  read_uncommitted readers see them), and anything not listed above: indeterminate.
  `retriable()` alone decides nothing: a retriable error in a delivery report only means
  librdkafka stopped retrying.

librdkafka tracks exactly this (rd_kafka_message_status: NOT_PERSISTED, POSSIBLY_PERSISTED,
PERSISTED) but confluent-kafka-python does not expose it, hence the table.
"""

import threading
import time
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer
from confluent_kafka import TopicPartition

from history import FAIL, INFO

DEFAULT_RATE_PER_S = 200
# Messages outstanding in librdkafka's queue at most; the producer waits beyond that, so a
# long outage does not build an unbounded backlog.
OUTSTANDING_MAX = 2000
# Long enough to ride out a leader failover; stop() bounds the wait anyway.
MESSAGE_TIMEOUT_MS = 60000
STOP_TIMEOUT_S = 60.0
READ_BACK_TIMEOUT_S = 60.0

# Errors after which Kafka guarantees the batch was not written, whichever attempt got them.
DEFINITE_ERRORS = frozenset(
    code
    for code in (
        getattr(KafkaError, name, None)
        for name in (
            "MSG_SIZE_TOO_LARGE",
            "RECORD_LIST_TOO_LARGE",
            "INVALID_MSG",  # CORRUPT_MESSAGE
            "INVALID_RECORD",
            "INVALID_TIMESTAMP",
            "INVALID_REQUIRED_ACKS",
            "TOPIC_EXCEPTION",  # INVALID_TOPIC_EXCEPTION
            "UNSUPPORTED_FOR_MESSAGE_FORMAT",
            "UNSUPPORTED_COMPRESSION_TYPE",
            "TOPIC_AUTHORIZATION_FAILED",
            "CLUSTER_AUTHORIZATION_FAILED",
            "_INVALID_ARG",
            "_UNKNOWN_PARTITION",
            "_UNKNOWN_TOPIC",
        )
    )
    if code is not None
)
# Errors that are definite only for the attempt that got them (see the module doc).
DEFINITE_IF_NOT_RETRIED = frozenset({KafkaError.NOT_ENOUGH_REPLICAS})


def classify_delivery_error(err, retries=True):
    """FAIL (definitely not written) or INFO (indeterminate) for a delivery report's error.

    `retries`: whether the producer may have sent the message more than once (librdkafka's
    `retries` > 0, the default and required by idempotence).
    """
    code = err.code()
    if err.txn_requires_abort() or err.fatal():
        return INFO
    if code in DEFINITE_ERRORS:
        return FAIL
    if code in DEFINITE_IF_NOT_RETRIED and not retries:
        return FAIL
    return INFO


def _stop_quietly_if(failing, stop):
    """Stops a worker leaving a `with` block; when the block is failing, a failure to stop
    must not hide the block's own error."""
    if not failing:
        stop()
        return
    try:
        stop()
    except AssertionError:
        pass


def _describe(err):
    return f"{err.name()} ({err.code()}): {err.str()}"


class ProducerWorkload:
    """An idempotent acks=all producer sending "<client>-<n>" at `rate_per_s` in a thread.

    `partitions`: an int spreads value n to partition n % partitions; None leaves the choice
    to librdkafka's partitioner (the value is the key). `padding_bytes` adds a header of that
    size to every record (bigger batches, or records over a topic's max.message.bytes).
    `conf` overrides producer settings (e.g. {"acks": "1"} or {"enable.idempotence": False});
    the sends' acks and idempotence are taken from it. Every attempt goes into `history`:
    acknowledged with its offset and leader epoch, definitely failed, or indeterminate (see
    the module doc; acks=0 deliveries carry no offset, so they are indeterminate).
    """

    def __init__(self, bootstrap, topic, history, client="p0", rate_per_s=DEFAULT_RATE_PER_S,
                 partitions=None, conf=None, outstanding_max=OUTSTANDING_MAX, padding_bytes=0):
        self.bootstrap = bootstrap
        self.topic = topic
        self.history = history
        self.client = client
        self.rate_per_s = float(rate_per_s)
        self.partitions = partitions
        self.outstanding_max = outstanding_max
        # Extra bytes per record, in a header (the value stays the unique id).
        self.headers = [("pad", b"x" * padding_bytes)] if padding_bytes else None
        self.conf = {
            "bootstrap.servers": bootstrap,
            "client.id": client,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "message.timeout.ms": MESSAGE_TIMEOUT_MS,
            "reconnect.backoff.ms": 50,
            "reconnect.backoff.max.ms": 1000,
            "error_cb": self._on_error,
            **(conf or {}),
        }
        self.idempotent = str(self.conf["enable.idempotence"]).lower() == "true"
        self.acks = str(self.conf.get("acks", self.conf.get("request.required.acks", "all")))
        retries = self.conf.get("retries", self.conf.get("message.send.max.retries", 1))
        self.retries = int(retries) > 0
        self.errors = []  # client-wide errors from error_cb, as text
        self.fatal = None  # the fatal KafkaError, if the producer raised one
        self.sent = 0
        self.acknowledged = 0
        self.failed = 0
        self.indeterminate = 0
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._thread = None
        self._crash = None
        self._flush_timeout_s = STOP_TIMEOUT_S
        self.unfinished_after_flush = 0

    def __enter__(self):
        return self.start()

    def __exit__(self, exc_type, exc, tb):
        _stop_quietly_if(exc_type is not None, self.stop)

    def _on_error(self, err):
        self.errors.append(_describe(err))
        if err.fatal():
            self.fatal = err

    def start(self):
        assert self._thread is None, "already started"
        self._thread = threading.Thread(target=self._run, name=f"producer-{self.client}",
                                        daemon=True)
        self._thread.start()
        return self

    def _on_delivery(self, send, err, msg):
        # An exception escaping a callback reaches poll() mangled (a SystemError), so keep
        # the original and end the run.
        try:
            self._record_delivery(send, err, msg)
        except BaseException as exc:
            self._crash = self._crash or exc
            self._stop.set()

    def _record_delivery(self, send, err, msg):
        offset = msg.offset()
        if err is None and (offset is None or offset < 0):
            # acks=0: "delivered" without an offset (None here), so nothing is known.
            self.history.indeterminate(send, "no offset (acks=0)", msg.partition())
            field = "indeterminate"
        elif err is None:
            self.history.ack(send, msg.partition(), offset, msg.leader_epoch())
            field = "acknowledged"
        else:
            error = _describe(err)
            if classify_delivery_error(err, retries=self.retries) == FAIL:
                self.history.fail(send, error, msg.partition())
                field = "failed"
            else:
                self.history.indeterminate(send, error, msg.partition())
                field = "indeterminate"
        with self._changed:
            setattr(self, field, getattr(self, field) + 1)
            self._changed.notify_all()

    def _run(self):
        try:
            producer = Producer(self.conf)
        except BaseException as exc:  # reported by stop()
            self._crash = exc
            return
        try:
            self._produce_loop(producer)
        except BaseException as exc:
            self._crash = exc
        finally:
            self._finish(producer)

    def _produce_loop(self, producer):
        started = time.monotonic()
        n = 0
        while not self._stop.is_set() and self.fatal is None:
            due = started + n / self.rate_per_s
            now = time.monotonic()
            if now - due > 1.0:
                # Behind by more than a second (an outage): do not burst to catch up.
                started = now - n / self.rate_per_s
                continue
            if now < due or len(producer) >= self.outstanding_max:
                producer.poll(min(0.05, max(0.001, due - now)))
                continue
            value = f"{self.client}-{n}"
            partition = None if self.partitions is None else n % self.partitions
            send = self.history.send(self.client, self.topic, value, partition,
                                     idempotent=self.idempotent, acks=self.acks)
            kwargs = {"value": value.encode()}
            if self.headers:
                kwargs["headers"] = self.headers
            if partition is None:
                kwargs["key"] = value.encode()
            else:
                kwargs["partition"] = partition
            try:
                producer.produce(
                    self.topic,
                    on_delivery=lambda err, msg, send=send: self._on_delivery(send, err, msg),
                    **kwargs,
                )
            except (BufferError, KafkaException) as exc:
                # Never entered librdkafka's queue: nothing was sent.
                self.history.fail(send, f"produce() raised {exc!r}", partition)
                with self._changed:
                    self.failed += 1
            with self._changed:
                self.sent += 1
            n += 1
            producer.poll(0)

    def _finish(self, producer):
        try:
            self.unfinished_after_flush = producer.flush(self._flush_timeout_s)
            if self.unfinished_after_flush:
                # Still undelivered: purge them; their reports say _PURGE_* (indeterminate).
                producer.purge(in_queue=True, in_flight=True)
                producer.flush(5)
                producer.poll(0)
        except BaseException as exc:
            self._crash = self._crash or exc

    def stop(self, timeout=STOP_TIMEOUT_S):
        """Stops sending, waits up to `timeout` for outstanding deliveries (then purges what
        is left), joins the thread. Raises if the thread crashed or did not end."""
        if self._thread is None:
            return self
        self._flush_timeout_s = timeout
        self._stop.set()
        self._thread.join(timeout + 30)
        if self._thread.is_alive():
            raise AssertionError(f"producer {self.client} did not stop within {timeout + 30:.0f}s")
        if self._crash is not None:
            raise AssertionError(
                f"producer {self.client} crashed: {self._crash!r}") from self._crash
        return self

    def wait_acknowledged(self, n, timeout=60.0):
        """Waits until this producer has `n` acknowledged sends in all; returns the count."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.acknowledged < n:
                left = deadline - time.monotonic()
                if left <= 0 or self._crash is not None or self.fatal is not None or (
                        self._thread is not None and not self._thread.is_alive()):
                    raise AssertionError(
                        f"producer {self.client}: {self.acknowledged} acknowledged, wanted {n} "
                        f"within {timeout:.0f}s (sent {self.sent}, failed {self.failed}, "
                        f"indeterminate {self.indeterminate}, fatal {self.fatal}, "
                        f"crash {self._crash!r}, last errors {self.errors[-3:]})")
                self._changed.wait(min(left, 0.5))
            return self.acknowledged

    def wait_completed(self, n, timeout=60.0):
        """Waits until `n` sends have an outcome, whichever; returns the count."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.acknowledged + self.failed + self.indeterminate < n:
                left = deadline - time.monotonic()
                if left <= 0 or self._crash is not None:
                    raise AssertionError(
                        f"producer {self.client}: {self.acknowledged} acknowledged, "
                        f"{self.failed} failed, {self.indeterminate} indeterminate; wanted {n} "
                        f"done within {timeout:.0f}s (crash {self._crash!r}, last errors "
                        f"{self.errors[-3:]})")
                self._changed.wait(min(left, 0.5))
            return self.acknowledged + self.failed + self.indeterminate

    def wait_more_acknowledged(self, more, timeout=60.0):
        """Waits for `more` acknowledgements beyond the current count (e.g. after a fault)."""
        with self._lock:
            target = self.acknowledged + more
        return self.wait_acknowledged(target, timeout)


def _consumer(bootstrap, **conf):
    base = {
        "bootstrap.servers": bootstrap,
        "group.id": f"history-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "reconnect.backoff.ms": 50,
        "reconnect.backoff.max.ms": 1000,
    }
    base.update(conf)
    return Consumer(base)


def _retry_until(deadline, what, attempt):
    """Calls attempt() until it returns a value other than None; KafkaException and None mean
    try again (the cluster may be electing leaders). Raises AssertionError at the deadline."""
    last = None
    while True:
        try:
            value = attempt()
            if value is not None:
                return value
        except KafkaException as exc:
            last = exc
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out waiting for {what} (last error: {last})")
        time.sleep(0.1)


def partitions_of(bootstrap, topic, timeout=30.0):
    """The partition ids of `topic` from Metadata (waits until it shows without error)."""
    consumer = _consumer(bootstrap)
    try:
        def attempt():
            md = consumer.list_topics(topic, timeout=5)
            t = md.topics.get(topic)
            if t is None or t.error is not None or not t.partitions:
                return None
            return sorted(t.partitions)

        return _retry_until(time.monotonic() + timeout, f"metadata of {topic}", attempt)
    finally:
        consumer.close()


def read_back(bootstrap, topic, history, reader="read-back", timeout=READ_BACK_TIMEOUT_S,
              partitions=None, conf=None):
    """Reads every partition of `topic` from its log start to the high watermark found when
    it began, recording each record in `history` as one read-back; returns the `ReadBack`.

    Waits for leaders (watermarks are retried until the deadline); raises AssertionError
    naming the progress per partition if the read does not finish within `timeout`.
    """
    deadline = time.monotonic() + timeout
    # Every acknowledgement before this point is below the high watermarks read next.
    started = history.mark()
    consumer = _consumer(bootstrap, **(conf or {}))
    try:
        if partitions is None:
            left = max(1.0, deadline - time.monotonic())
            partitions = partitions_of(bootstrap, topic, timeout=left)
        ends = {}
        for p in partitions:
            ends[p] = _retry_until(
                deadline, f"watermarks of {topic}[{p}]",
                lambda p=p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5),
            )
        rb = history.begin_read_back(reader, topic, ends, started_at=started)
        next_offset = {p: low for p, (low, high) in ends.items()}
        pending = {p for p, (low, high) in ends.items() if high > low}
        errors = []
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(pending)])
        while pending:
            if time.monotonic() > deadline:
                progress = {p: (next_offset[p], ends[p]) for p in sorted(pending)}
                raise AssertionError(
                    f"read-back of {topic} did not reach the high watermarks within "
                    f"{timeout:.0f}s; partition: (next offset, (low, high)) = {progress}; "
                    f"errors: {errors[-5:]}")
            msg = consumer.poll(0.2)
            if msg is None:
                # Control records or compacted gaps at the end: the position tells.
                for tp in consumer.position([TopicPartition(topic, p) for p in pending]):
                    if tp.offset >= ends[tp.partition][1]:
                        pending.discard(tp.partition)
                continue
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                if err.fatal():
                    raise AssertionError(f"read-back of {topic}: fatal consumer error {err}")
                errors.append(_describe(err))  # transient (leader change, reconnect): retried
                continue
            p = msg.partition()
            history.read(rb.reader, topic, p, msg.offset(), msg.value(), msg.leader_epoch())
            next_offset[p] = msg.offset() + 1
            if next_offset[p] >= ends[p][1]:
                pending.discard(p)
        history.end_read_back(rb)
        return rb
    finally:
        consumer.close()


class GroupConsumer:
    """A consumer in `group` subscribed to `topic`, reading in a background thread.

    Each assignment starts a new reader session (`history.reader_session`), since a partition
    handed over restarts from the committed offset. Offsets are committed synchronously every
    `commit_interval_s` and when partitions are revoked; each commit the broker acknowledged
    is recorded with `history.commit`.
    """

    def __init__(self, bootstrap, topic, group, history, member="c0", commit_interval_s=0.5,
                 conf=None):
        self.topic = topic
        self.group = group
        self.history = history
        self.member = member
        self.commit_interval_s = commit_interval_s
        self.conf = {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "client.id": member,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 10000,
            "heartbeat.interval.ms": 1000,
            "reconnect.backoff.ms": 50,
            "reconnect.backoff.max.ms": 1000,
            "error_cb": lambda err: self.errors.append(_describe(err)),
            **(conf or {}),
        }
        self.reads = 0
        self.commits = 0
        self.errors = []
        self._session = None
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._thread = None
        self._crash = None

    def __enter__(self):
        return self.start()

    def __exit__(self, exc_type, exc, tb):
        _stop_quietly_if(exc_type is not None, self.stop)

    def start(self):
        assert self._thread is None, "already started"
        self._thread = threading.Thread(target=self._run, name=f"consumer-{self.member}",
                                        daemon=True)
        self._thread.start()
        return self

    def _commit(self, consumer):
        try:
            done = consumer.commit(asynchronous=False)
        except KafkaException as exc:
            # Nothing new to commit, or the coordinator moved: the next round tries again.
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                self.errors.append(f"commit: {exc}")
            return
        for tp in done or []:
            if tp.error is None and tp.offset >= 0:
                self.history.commit(self.group, tp.topic, tp.partition, tp.offset, self.member)
                with self._lock:
                    self.commits += 1

    def _run(self):
        def on_assign(consumer, partitions):
            self._session = self.history.reader_session(self.member)

        def on_revoke(consumer, partitions):
            self._commit(consumer)

        try:
            consumer = Consumer(self.conf)
        except BaseException as exc:
            self._crash = exc
            return
        try:
            consumer.subscribe([self.topic], on_assign=on_assign, on_revoke=on_revoke)
            last_commit = time.monotonic()
            while not self._stop.is_set():
                msg = consumer.poll(0.2)
                if msg is not None and msg.error() is None:
                    self.history.read(self._session or self.member, msg.topic(), msg.partition(),
                                      msg.offset(), msg.value(), msg.leader_epoch())
                    with self._lock:
                        self.reads += 1
                        self._lock.notify_all()
                elif msg is not None and msg.error().fatal():
                    raise KafkaException(msg.error())
                if time.monotonic() - last_commit >= self.commit_interval_s:
                    self._commit(consumer)
                    last_commit = time.monotonic()
            self._commit(consumer)
        except BaseException as exc:
            self._crash = exc
        finally:
            try:
                consumer.close()
            except BaseException as exc:
                self._crash = self._crash or exc

    def wait_reads(self, n, timeout=60.0):
        """Waits until this consumer has read `n` records in all."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self.reads < n:
                left = deadline - time.monotonic()
                if left <= 0 or self._crash is not None:
                    raise AssertionError(
                        f"consumer {self.member}: {self.reads} reads, wanted {n} within "
                        f"{timeout:.0f}s (crash {self._crash!r}, errors {self.errors[-3:]})")
                self._lock.wait(min(left, 0.5))
            return self.reads

    def stop(self, timeout=STOP_TIMEOUT_S):
        """Commits, leaves the group, joins the thread; raises if it crashed or hung. With
        the coordinator gone, the last commit and the leave take about `session.timeout.ms`
        (10 s here) before librdkafka gives up."""
        if self._thread is None:
            return self
        self._stop.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError(f"consumer {self.member} did not stop within {timeout:.0f}s")
        if self._crash is not None:
            raise AssertionError(
                f"consumer {self.member} crashed: {self._crash!r}") from self._crash
        return self


def observe_committed(bootstrap, group, topic, history, partitions=None, timeout=30.0,
                      observer="offset-fetch"):
    """Records `group`'s committed offsets for `topic` as OffsetFetch answers them (partitions
    with no committed offset are skipped); returns {partition: offset}."""
    deadline = time.monotonic() + timeout
    if partitions is None:
        partitions = partitions_of(bootstrap, topic, timeout=timeout)
    consumer = _consumer(bootstrap, **{"group.id": group})
    try:
        started = history.mark()
        tps = _retry_until(
            deadline, f"committed offsets of group {group}",
            lambda: consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=5),
        )
        found = {}
        for tp in tps:
            if tp.error is None and tp.offset >= 0:
                history.observe_committed(group, topic, tp.partition, tp.offset, observer,
                                          at=started)
                found[tp.partition] = tp.offset
        return found
    finally:
        consumer.close()
