"""A data directory's identity (`meta.properties`: cluster id, node id, directory id) and the
cluster settings checked at start: a directory is never taken over by another node or cluster,
and one written before `meta.properties` existed opens with everything it held."""

import base64
import json
import shutil
import subprocess

import pytest

from helpers import (
    SKEIN_BIN,
    admin_client,
    assert_contiguous,
    assert_delivered,
    consume_to_end,
    create_topic,
    produce_all,
    producer_client,
    unique_topic,
    wait_until,
)
from conftest import Broker
from test_config import serve_must_fail


def read_properties(data_dir):
    props = {}
    for line in (data_dir / "meta.properties").read_text().splitlines():
        if line and not line.startswith("#"):
            k, v = line.split("=", 1)
            props[k] = v
    return props


def test_identity_is_written_once_and_kept(tmp_path):
    b = Broker(tmp_path / "data").start()
    try:
        first = read_properties(b.data_dir)
        assert first["version"] == "1"
        assert first["node.id"] == "1"
        assert len(first["directory.id"]) == 22, first
        md = admin_client(b).list_topics(timeout=10)
        assert md.cluster_id == first["cluster.id"]
        b.restart()
        assert read_properties(b.data_dir) == first
    finally:
        b.close()


def test_a_directory_of_another_node_or_cluster_is_refused(tmp_path):
    b = Broker(tmp_path / "data").start()
    cluster = read_properties(b.data_dir)["cluster.id"]
    b.close()
    before = (tmp_path / "data" / "meta.properties").read_text()
    err = serve_must_fail(tmp_path, "--node-id", "2")
    assert "belongs to node 1" in err and "node.id=2" in err, err
    err = serve_must_fail(tmp_path, "--set", "skein.cluster.id=someOtherCluster")
    assert f"belongs to cluster {cluster}" in err, err
    # Refusing never rewrites the identity.
    assert (tmp_path / "data" / "meta.properties").read_text() == before


@pytest.mark.parametrize(
    "args,expected",
    [
        (["--quorum", "1@127.0.0.1:1", "--node-id", "4"], "not in controller.quorum.voters"),
        (["--roles", "broker"], "needs controller.quorum.voters"),
        (["--roles", "broker", "--quorum", "1@127.0.0.1:1"], "no controller role"),
        (["--quorum", "1@127.0.0.1:1,1@127.0.0.1:2"], "listed twice"),
        (["--quorum", "1@nowhere"], "controller.quorum.voters"),
        (["--roles", "controller"], "not supported yet"),
        (["--set", "broker.heartbeat.interval.ms=9000"], "must be below broker.session.timeout.ms"),
    ],
)
def test_inconsistent_cluster_settings_are_refused(tmp_path, args, expected):
    err = serve_must_fail(tmp_path, *args)
    assert expected in err, err
    assert not (tmp_path / "data" / "meta.properties").exists()


def legacy_layout(b, cluster_id, producer_id_block_end):
    """Turns a stopped broker's data directory into the previous release's layout: partition
    directories as they are, `skein-meta.json` (cluster id, node id, producer-id block, each
    topic's id, partition count and overrides) instead of `meta.properties` and the metadata
    log."""
    topics = json.loads(
        subprocess.run(
            [SKEIN_BIN, "topic", "list", "--internal", "--bootstrap", b.bootstrap, "--output", "json"],
            check=True, capture_output=True, text=True, timeout=30,
        ).stdout
    )["topics"]
    b.stop()
    stored = {}
    for t in topics:
        raw = base64.urlsafe_b64decode(t["topic_id"] + "==")
        configs = {"cleanup.policy": "compact", "segment.bytes": "104857600"} if t["internal"] else {}
        stored[t["name"]] = {"id": raw.hex(), "partitions": t["partitions"], "configs": configs}
    (b.data_dir / "meta.properties").unlink()
    shutil.rmtree(b.data_dir / "__cluster_metadata-0")
    (b.data_dir / "skein-meta.json").write_text(json.dumps({
        "cluster_id": cluster_id,
        "node_id": 1,
        "producer_id_block_end": producer_id_block_end,
        "topics": stored,
    }, indent=2))
    return {t["name"]: t["topic_id"] for t in topics}


def test_a_directory_from_the_previous_release_opens_with_everything(tmp_path):
    """The previous release kept topics in `skein-meta.json`; such a directory opens with
    its topics (same ids), records and committed offsets, keeps its cluster id, and its
    topics move into the metadata log once."""
    b = Broker(tmp_path / "data").start()
    topic = unique_topic("legacy")
    create_topic(b, topic, partitions=2)
    producer = producer_client(b)
    messages = [(topic, {"value": f"v{i}".encode(), "partition": i % 2}) for i in range(20)]
    assert_delivered(produce_all(producer, messages))
    from confluent_kafka import Consumer, TopicPartition

    group = unique_topic("legacy-group")
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": group, "enable.auto.commit": False})
    c.commit(offsets=[TopicPartition(topic, 0, 7), TopicPartition(topic, 1, 3)], asynchronous=False)
    c.close()
    cluster = read_properties(b.data_dir)["cluster.id"]
    ids = legacy_layout(b, "legacyCluster0123456789", 5000)
    b.start()
    try:
        props = read_properties(b.data_dir)
        assert props["cluster.id"] == "legacyCluster0123456789", "the old cluster id is kept"
        assert cluster != props["cluster.id"]
        assert admin_client(b).list_topics(timeout=10).cluster_id == "legacyCluster0123456789"
        assert not (b.data_dir / "skein-meta.json").exists()
        assert (b.data_dir / "skein-meta.json.migrated").exists()
        after = json.loads(
            subprocess.run(
                [SKEIN_BIN, "topic", "list", "--internal", "--bootstrap", b.bootstrap, "--output", "json"],
                check=True, capture_output=True, text=True, timeout=30,
            ).stdout
        )["topics"]
        assert {t["name"]: t["topic_id"] for t in after} == ids, "same topics, same ids"
        records = consume_to_end(b, topic, [0, 1])
        for p in (0, 1):
            assert_contiguous(records[p])
            assert [r.value for r in records[p]] == [f"v{i}".encode() for i in range(p, 20, 2)]
        c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": group})
        committed = c.committed([TopicPartition(topic, 0), TopicPartition(topic, 1)], timeout=10)
        c.close()
        assert [tp.offset for tp in committed] == [7, 3]
        # Producer ids continue past the old block: never handed out twice.
        from confluent_kafka import Producer

        p = Producer({"bootstrap.servers": b.bootstrap, "enable.idempotence": True})
        assert_delivered(produce_all(p, [(topic, {"value": b"after", "partition": 0})]))
        described = subprocess.run(
            [SKEIN_BIN, "topic", "describe", topic, "--bootstrap", b.bootstrap, "--output", "json"],
            check=True, capture_output=True, text=True, timeout=30,
        )
        assert described.returncode == 0
        # The migration happens once: a restart finds the topics in the log.
        b.restart()
        assert [t for t in json.loads(
            subprocess.run(
                [SKEIN_BIN, "topic", "list", "--internal", "--bootstrap", b.bootstrap, "--output", "json"],
                check=True, capture_output=True, text=True, timeout=30,
            ).stdout
        )["topics"] if t["name"] == topic][0]["topic_id"] == ids[topic]
        assert "moved the topics of skein-meta.json" not in b.log().split("--- start #3")[-1]
    finally:
        b.close()


def test_broker_rack_is_reported(tmp_path):
    """`broker.rack` reaches clients in DescribeCluster and Metadata (rack-aware consumers
    and placement depend on it)."""
    b = Broker(tmp_path / "data", sets=["broker.rack=az-1"]).start()
    try:
        admin = admin_client(b)
        cluster = admin.describe_cluster().result(timeout=10)
        assert [(n.id, n.rack) for n in cluster.nodes] == [(1, "az-1")]
        from kafka import KafkaAdminClient

        admin = KafkaAdminClient(bootstrap_servers=b.bootstrap)
        try:
            brokers = admin.describe_cluster()["brokers"]
        finally:
            admin.close()
        assert [(x["broker_id"], x["rack"]) for x in brokers] == [(1, "az-1")], brokers
    finally:
        b.close()


def test_a_topic_deleted_and_created_again_keeps_its_records_across_restarts(tmp_path):
    # The metadata log holds the first topic's creation and deletion before the second
    # creation; a restart replays all three. The second topic's records live in the same
    # directories the first one's did, and must still be there after the restart (a replay
    # that opened and then deleted the first topic would remove them).
    b = Broker(tmp_path / "data").start()
    try:
        topic = unique_topic("again")
        admin = admin_client(b)
        create_topic(b, topic, partitions=2)
        assert_delivered(produce_all(producer_client(b), [(topic, {"value": b"old", "partition": 0})]))
        for f in admin.delete_topics([topic], operation_timeout=30).values():
            f.result(timeout=30)
        wait_until(lambda: topic not in admin.list_topics(timeout=10).topics, 30, f"{topic} deleted")
        create_topic(b, topic, partitions=2)
        values = [f"new-{i}".encode() for i in range(10)]
        assert_delivered(produce_all(
            producer_client(b), [(topic, {"value": v, "partition": i % 2}) for i, v in enumerate(values)]
        ))
        for _ in range(2):
            b.restart()
            records = consume_to_end(b, topic, [0, 1])
            for p in (0, 1):
                assert_contiguous(records[p])
                assert [r.value for r in records[p]] == values[p::2], (p, records[p])
    finally:
        b.close()
