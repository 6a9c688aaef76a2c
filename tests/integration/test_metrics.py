"""The admin HTTP endpoint: /health, /ready, and /metrics parsed with the Prometheus project's
own OpenMetrics parser, checking consumer lag against what the clients see."""

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from helpers import SKEIN_BIN, unique_topic, wait_until

GROUP_SETTINGS = ("group.initial.rebalance.delay.ms=0",)


def get(http, path):
    try:
        with urllib.request.urlopen(f"http://{http}{path}", timeout=10) as r:
            return r.status, r.headers.get("content-type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("content-type", ""), e.read().decode()


def scrape(http):
    """Samples by (name, frozenset(labels)), from a parse that fails on malformed output."""
    status, ctype, body = get(http, "/metrics")
    assert status == 200, body
    assert ctype.startswith("application/openmetrics-text"), ctype
    samples = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def sample(samples, name, **labels):
    key = (name, frozenset((k, str(v)) for k, v in labels.items()))
    return samples.get(key)


def produce(bootstrap, topic, partition, n):
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    for i in range(n):
        p.produce(topic, value=f"v{i}".encode(), partition=partition)
    assert p.flush(30) == 0


def commit(bootstrap, group, topic, offsets):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        tps = [TopicPartition(topic, p, off) for p, off in offsets.items()]
        result = c.commit(offsets=tps, asynchronous=False)
        assert all(tp.error is None for tp in result), result
    finally:
        c.close()


def cli_lag(bootstrap, group):
    """Lag per (topic, partition) as `skein group describe --output json` reports it."""
    out = subprocess.run(
        [SKEIN_BIN, "group", "describe", group, "--bootstrap", bootstrap, "--output", "json"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    return {(p["topic"], p["partition"]): p["lag"] for p in json.loads(out)["partitions"]}


def metrics_lag(samples, group):
    return {
        (dict(labels)["topic"], int(dict(labels)["partition"])): value
        for (name, labels), value in samples.items()
        if name == "skein_group_lag_records" and dict(labels).get("group") == group
    }


def test_health_ready_and_unknown_paths(broker):
    assert get(broker.http, "/health")[0] == 200
    status, _, body = get(broker.http, "/ready")
    assert (status, body.strip()) == (200, "ready")
    assert get(broker.http, "/nope")[0] == 404


def test_lag_series_follow_produce_and_commit(start_broker):
    b = start_broker(sets=GROUP_SETTINGS)
    topic = unique_topic("lag")
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(30)
    produce(b.bootstrap, topic, 0, 10)
    produce(b.bootstrap, topic, 1, 5)
    commit(b.bootstrap, "lag-group", topic, {0: 4, 1: 5})

    s = scrape(b.http)
    assert sample(s, "skein_partition_log_end_offset", topic=topic, partition=0) == 10
    assert sample(s, "skein_partition_high_watermark", topic=topic, partition=1) == 5
    assert sample(s, "skein_group_committed_offset", group="lag-group", topic=topic, partition=0) == 4
    assert sample(s, "skein_group_lag_records", group="lag-group", topic=topic, partition=0) == 6
    assert sample(s, "skein_group_lag_records", group="lag-group", topic=topic, partition=1) == 0
    assert sample(s, "skein_group_lag_seconds", group="lag-group", topic=topic, partition=1) == 0
    assert sample(s, "skein_group_lag_seconds", group="lag-group", topic=topic, partition=0) >= 0
    assert sample(s, "skein_records_in_total", topic=topic) == 15
    assert sample(s, "skein_requests_total", api="Produce") >= 2
    assert sample(s, "skein_requests_total", api="OffsetCommit") >= 1
    assert sample(s, "skein_request_latency_seconds_count", api="Produce") >= 2
    assert sample(s, "skein_fsync_latency_seconds_count") >= 1

    # The metrics and the operator's tool agree.
    assert metrics_lag(s, "lag-group") == cli_lag(b.bootstrap, "lag-group") == {(topic, 0): 6, (topic, 1): 0}

    # Lag grows while a producer runs...
    produce(b.bootstrap, topic, 1, 7)
    s = scrape(b.http)
    assert sample(s, "skein_group_lag_records", group="lag-group", topic=topic, partition=1) == 7
    assert metrics_lag(s, "lag-group") == cli_lag(b.bootstrap, "lag-group")
    # ...and shrinks as the group catches up.
    commit(b.bootstrap, "lag-group", topic, {0: 10, 1: 12})
    s = scrape(b.http)
    assert sample(s, "skein_group_lag_records", group="lag-group", topic=topic, partition=0) == 0
    assert sample(s, "skein_group_lag_records", group="lag-group", topic=topic, partition=1) == 0


def test_errors_are_counted_by_code(broker):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    topic = unique_topic("dup")
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    try:
        admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    except Exception:
        pass
    s = scrape(broker.http)
    # TOPIC_ALREADY_EXISTS is 36.
    assert sample(s, "skein_request_errors_total", api="CreateTopics", error_code=36) == 1


def test_connections_gauge(broker):
    host, port = broker.bootstrap.rsplit(":", 1)
    conns = [socket.create_connection((host, int(port)), timeout=10) for _ in range(3)]
    wait_until(lambda: sample(scrape(broker.http), "skein_connections") == 3, 30, "three connections")
    for c in conns:
        c.close()
    wait_until(lambda: sample(scrape(broker.http), "skein_connections") == 0, 30, "connections to close")


def dlt_gauges(samples, topic):
    return tuple(
        sample(samples, f"skein_dlt_{name}", topic=topic)
        for name in ("records", "unhandled_records", "oldest_unhandled_age_seconds")
    )


def test_dlt_gauges_follow_dead_letters_and_the_replay_group(start_broker):
    """skein_dlt_* for a `-dlt` topic: records, unhandled past the replay group's committed
    offset, and the oldest unhandled record's age; a plain topic has none; a deleted DLT's
    series go away. The pass runs every 200 ms here (30 s by default)."""
    b = start_broker(sets=GROUP_SETTINGS + ("skein.dlt.metrics.interval.ms=200",))
    dlt = unique_topic("orders") + "-dlt"
    plain = unique_topic("orders")
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    for f in admin.create_topics([NewTopic(dlt, 2, 1), NewTopic(plain, 1, 1)]).values():
        f.result(30)
    now = int(time.time() * 1000)
    # Partition 0: two hours, one hour and 58 minutes old; partition 1: ten and nine minutes.
    # One batch per record, so each record's batch carries its own timestamp.
    ages = {0: [7200, 3600, 3480], 1: [600, 540]}
    p = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 0})
    for partition, secs in ages.items():
        for i, age in enumerate(secs):
            p.produce(dlt, key=f"order-{i}".encode(), value=b"{}", partition=partition,
                      timestamp=now - age * 1000,
                      headers=[("kafka_dlt-original-topic", plain.encode()),
                               ("kafka_dlt-exception-fqcn", b"java.net.SocketTimeoutException")])
            assert p.flush(30) == 0
    produce(b.bootstrap, plain, 0, 3)

    def gauges_are(records, unhandled, min_age, max_age):
        def check():
            got = dlt_gauges(scrape(b.http), dlt)
            return (got[0], got[1]) == (records, unhandled) and min_age <= got[2] < max_age
        return check

    # Nothing replayed: everything is unhandled, and the oldest is two hours old.
    wait_until(gauges_are(5, 5, 7200, 7200 + 300), 30, "5 records, 5 unhandled, age 2 h")
    s = scrape(b.http)
    assert dlt_gauges(s, plain) == (None, None, None)

    # The replay group has handled partition 0's first record: the oldest is now 1 h old.
    group = f"skein-dlt-replay.{dlt}"
    commit(b.bootstrap, group, dlt, {0: 1})
    wait_until(gauges_are(5, 4, 3600, 3600 + 300), 30, "4 unhandled, age 1 h")

    # Replayed to the end: nothing unhandled, age 0; the records stay.
    commit(b.bootstrap, group, dlt, {0: 3, 1: 2})
    wait_until(gauges_are(5, 0, 0, 1e-9), 30, "0 unhandled, age 0")

    # More dead letters arrive: unhandled again, with their (fresh) age.
    p.produce(dlt, value=b"{}", partition=1, timestamp=now - 60_000)
    assert p.flush(30) == 0
    wait_until(gauges_are(6, 1, 60, 60 + 300), 30, "1 unhandled, age 1 min")

    # A deleted DLT's series go.
    admin.delete_topics([dlt])[dlt].result(30)
    wait_until(lambda: dlt_gauges(scrape(b.http), dlt) == (None, None, None), 30,
               "the deleted DLT's series gone")
