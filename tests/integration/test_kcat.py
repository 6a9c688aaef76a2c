"""Debian's kcat, which links an old librdkafka (2.0.2), against the real broker.

Old librdkafka is stricter about some responses (ApiVersions v3 tagged fields, for one) than
the current one, which is the point of running it.
"""

import json
import shutil
import subprocess

import pytest

from helpers import create_topic, unique_topic

KCAT = shutil.which("kcat")
pytestmark = pytest.mark.skipif(
    KCAT is None, reason="kcat is not installed (CI installs Debian's kcat: apt-get install kcat)"
)


def kcat(*args, stdin=None, timeout=60):
    proc = subprocess.run(
        [KCAT, *args],
        input=stdin,
        capture_output=True,
        timeout=timeout,
    )
    stderr = proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, f"kcat {' '.join(args)} exited {proc.returncode}\n{stderr}"
    return proc.stdout.decode()


def produce_lines(broker, topic, lines, *extra):
    kcat("-P", "-b", broker.bootstrap, "-t", topic, "-K:", *extra, stdin="".join(lines).encode())


def consume_all(broker, topic):
    """Reads the whole topic; returns [(key, value, partition, offset)]."""
    out = kcat(
        "-C", "-b", broker.bootstrap, "-t", topic, "-o", "beginning", "-e", "-q",
        "-f", "%k:%s:%p:%o\\n",
    )
    rows = []
    for line in out.splitlines():
        key, value, partition, offset = line.split(":")
        rows.append((key, value, int(partition), int(offset)))
    return rows


def test_metadata_lists_broker_and_topics(module_broker):
    topic = unique_topic("kcat-md")
    create_topic(module_broker, topic, partitions=3)
    md = json.loads(kcat("-L", "-b", module_broker.bootstrap, "-J"))
    assert [b["name"] for b in md["brokers"]] == [module_broker.bootstrap]
    topics = {t["topic"]: t for t in md["topics"]}
    assert topic in topics, f"{topic} not in {sorted(topics)}"
    partitions = topics[topic]["partitions"]
    assert sorted(p["partition"] for p in partitions) == [0, 1, 2]
    broker_id = md["brokers"][0]["id"]
    assert all(p["leader"] == broker_id for p in partitions)


@pytest.mark.parametrize("codec", [None, "gzip", "snappy", "lz4", "zstd"])
def test_produce_and_consume_keyed_lines(module_broker, codec):
    topic = unique_topic(f"kcat-{codec or 'plain'}")
    create_topic(module_broker, topic, partitions=3)
    n = 300
    lines = [f"key{i % 13}:value{i}-{'z' * (i % 50)}\n" for i in range(n)]
    produce_lines(module_broker, topic, lines, *(["-z", codec] if codec else []))

    rows = consume_all(module_broker, topic)
    assert len(rows) == n
    expected = {f"value{i}-{'z' * (i % 50)}": f"key{i % 13}" for i in range(n)}
    assert {value: key for key, value, _, _ in rows} == expected

    by_partition = {}
    key_partition = {}
    for key, value, partition, offset in rows:
        by_partition.setdefault(partition, []).append((offset, int(value[5:].split("-")[0])))
        assert key_partition.setdefault(key, partition) == partition, f"{key} in two partitions"
    for p, entries in by_partition.items():
        offsets = [o for o, _ in entries]
        assert offsets == list(range(len(entries))), f"partition {p} offsets {offsets[:20]}"
        sequence = [i for _, i in entries]
        assert sequence == sorted(sequence), f"partition {p} out of produce order"
