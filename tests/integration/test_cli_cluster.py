"""`skein cluster info|health|add-voter|remove-voter` against a Skein broker and the reference
Apache Kafka: the release binary runs as a subprocess, its JSON is checked against what the
broker itself reports (through confluent-kafka's AdminClient) and against the broker's known
facts (node id 1, its port), and its exit codes are asserted.

Skein does not serve DescribeQuorum, DescribeCluster v2 or AddRaftVoter/RemoveRaftVoter yet,
so against Skein the tests check that those parts are reported as not shown, in one line each,
without failing the command. The reference broker (KRaft, combined mode, node id 1, a static
voter set, so `kraft.version` 0) shows the full picture.
"""

import json

from confluent_kafka.admin import AdminClient

from helpers import skein, unique_topic, wait_until

# The directory id of a voter that does not exist (any 22 characters of URL-safe base64).
NO_SUCH_DIRECTORY = "AAAAAAAAAAAAAAAAAAAAAQ"


def skein_json(*args, bootstrap, check=0):
    proc = skein(*args, "--output", "json", bootstrap=bootstrap, check=check)
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, f"one JSON line expected: {proc.stdout!r}"
    return json.loads(lines[0])


def described_cluster(bootstrap):
    """(cluster id, controller id, {id: (host, port)}) as confluent-kafka sees the cluster."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    d = admin.describe_cluster(request_timeout=30).result(timeout=30)
    return d.cluster_id, d.controller.id, {n.id: (n.host, n.port) for n in d.nodes}


def port_of(bootstrap):
    return int(bootstrap.rsplit(":", 1)[1])


# -- against Skein --------------------------------------------------------------------------------


def test_info_on_skein_shows_the_broker_and_its_quorum_of_one(module_broker):
    b = module_broker.bootstrap
    cluster_id, controller, nodes = described_cluster(b)
    info = skein_json("cluster", "info", bootstrap=b)
    assert info["cluster_id"] == cluster_id
    assert info["controller"] == controller == 1
    assert info["bootstrap"] == b
    # DescribeCluster v2: the broker is listed with its fenced flag.
    assert info["brokers"] == [
        {"id": 1, "host": "127.0.0.1", "port": module_broker.port, "rack": None, "fenced": False}
    ]
    assert nodes == {1: ("127.0.0.1", module_broker.port)}
    # DescribeQuorum: a cluster of one is its own leader, the only voter, no lag.
    q = info["quorum"]
    assert q["available"] is True, q
    assert q["leader_id"] == 1 and q["leader_epoch"] >= 1, q
    assert q["high_watermark"] > 0, q
    assert [(v["id"], v["lag"]) for v in q["voters"]] == [(1, 0)], q
    assert q["observers"] == [], q
    assert info["offline_partitions"] == []
    keys = {a["key"] for a in info["apis"]}
    assert {0, 1, 3, 18, 55, 60, 80, 81} <= keys

    text = skein("cluster", "info", bootstrap=b, check=0).stdout
    notes = [l for l in text.splitlines() if l.startswith("note: ")]
    assert notes == [], text
    assert "quorum leader 1" in text
    assert "partitions without a leader: none" in text
    assert f"1       127.0.0.1  {module_broker.port}" in text


def test_health_on_skein_is_healthy_and_counts_partitions(module_broker):
    b = module_broker.bootstrap
    topic = unique_topic("health")
    skein("topic", "create", topic, "--partitions", "3", bootstrap=b, check=0)
    health = skein_json("cluster", "health", bootstrap=b, check=0)
    assert health["status"] == "healthy", health
    assert health["exit_code"] == 0
    assert health["brokers"]["live"] == 1
    assert health["brokers"]["fenced"] == 0  # known from DescribeCluster v2
    assert [x["id"] for x in health["brokers"]["list"]] == [1]
    assert health["partitions"] >= 3
    assert health["offline_partitions"] == []
    assert health["under_replicated_partitions"] == []
    assert health["under_min_isr_partitions"] == []
    assert health["problems"] == []
    assert health["quorum"]["available"] is True

    text = skein("cluster", "health", bootstrap=b, check=0).stdout
    assert text.startswith("status      healthy\n"), text
    assert "0 offline" in text and "brokers     1 live (1)" in text


def test_health_exit_code_2_when_the_cluster_is_unreachable(tmp_path):
    # A port nobody listens on: bind one, note it, close it.
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        addr = f"127.0.0.1:{s.getsockname()[1]}"
    proc = skein("cluster", "health", bootstrap=addr, check=2)
    assert proc.stderr.startswith(f"skein: cluster health: cannot connect to {addr}"), proc.stderr
    out = skein_json("cluster", "health", bootstrap=addr, check=2)
    assert out["status"] == "unreachable" and out["exit_code"] == 2


def test_voter_changes_on_skein_are_checked(module_broker):
    b = module_broker.bootstrap
    # The only voter cannot be removed, and a node that is not a voter is named as such;
    # both leave the quorum as it was.
    proc = skein(
        "cluster", "remove-voter", "--id", "1", "--directory-id", NO_SUCH_DIRECTORY,
        bootstrap=b, check=1,
    )
    assert proc.stderr == (
        f"skein: cluster remove-voter: voter 1 ({NO_SUCH_DIRECTORY}): INVALID_REQUEST: "
        "cannot remove the last voter\n"
    ), proc.stderr
    proc = skein(
        "cluster", "remove-voter", "--id", "7", "--directory-id", NO_SUCH_DIRECTORY,
        bootstrap=b, check=1,
    )
    assert proc.stderr == (
        f"skein: cluster remove-voter: voter 7 ({NO_SUCH_DIRECTORY}): INVALID_REQUEST: "
        "node 7 is not a voter\n"
    ), proc.stderr
    # An id whose base64 form starts with '-' is a value, not an option (ids made elsewhere
    # may look like that, though Skein and Kafka never make one).
    hyphen = "-" + NO_SUCH_DIRECTORY[1:]
    proc = skein(
        "cluster", "remove-voter", "--id", "7", "--directory-id", hyphen, bootstrap=b, check=1,
    )
    assert proc.stderr == (
        f"skein: cluster remove-voter: voter 7 ({hyphen}): INVALID_REQUEST: "
        "node 7 is not a voter\n"
    ), proc.stderr
    q = skein_json("cluster", "info", bootstrap=b)["quorum"]
    assert [v["id"] for v in q["voters"]] == [1], q
    # (Replacing a voter for real, add-voter included, is in test_cluster.py.)
    # Bad arguments are refused before anything is sent (clap's usage error: exit 2).
    proc = skein(
        "cluster", "remove-voter", "--id", "1", "--directory-id", "not-a-uuid",
        bootstrap=b, check=2,
    )
    assert "22 characters" in proc.stderr
    proc = skein(
        "cluster", "add-voter", "--id", "2", "--directory-id", NO_SUCH_DIRECTORY,
        "--endpoint", "127.0.0.1", bootstrap=b, check=1,
    )
    assert "is not HOST:PORT" in proc.stderr


# -- against the reference Kafka ------------------------------------------------------------------


def test_info_on_kafka_shows_the_quorum(kafka_bootstrap):
    b = kafka_bootstrap
    cluster_id, _, nodes = described_cluster(b)
    info = skein_json("cluster", "info", bootstrap=b)
    assert info["cluster_id"] == cluster_id
    # DescribeCluster v2: the broker is listed with its fenced flag.
    assert info["brokers"] == [
        {"id": 1, "host": "127.0.0.1", "port": port_of(b), "rack": None, "fenced": False}
    ]
    assert nodes == {1: ("127.0.0.1", port_of(b))}
    q = info["quorum"]
    assert q["available"] is True
    assert q["leader_id"] == 1
    assert q["leader_epoch"] >= 1
    assert q["high_watermark"] > 0
    assert [v["id"] for v in q["voters"]] == [1]
    leader = q["voters"][0]
    assert leader["log_end_offset"] >= q["high_watermark"] > 0
    assert leader["lag"] == 0
    assert leader["directory_id"] is None  # a static voter set records no directory ids
    assert leader["last_caught_up_timestamp"] > 0
    assert q["observers"] == []  # combined mode: the broker is the voter itself
    assert q["lagging_voters"] == []
    assert len(q["controllers"]) == 1 and q["controllers"][0]["id"] == 1
    [endpoint] = q["controllers"][0]["endpoints"]
    assert endpoint.startswith("CONTROLLER://127.0.0.1:")
    assert info["offline_partitions"] == []
    assert info["notes"] == []
    assert {a["key"]: a["client_version"] for a in info["apis"]}[55] == 2

    text = skein("cluster", "info", bootstrap=b, check=0).stdout
    assert "quorum leader 1, epoch" in text
    assert f"1       127.0.0.1  {port_of(b)}  -     live" in text
    assert "note:" not in text


def test_health_on_kafka_and_under_min_isr(kafka_bootstrap):
    b = kafka_bootstrap
    health = skein_json("cluster", "health", bootstrap=b, check=0)
    assert health["brokers"]["live"] == 1 and health["brokers"]["fenced"] == 0
    assert health["quorum"]["leader_id"] == 1
    assert health["offline_partitions"] == []
    assert health["status"] in ("healthy", "degraded")  # other suites share this broker

    # A topic asking for two in-sync replicas on a one-broker cluster is under min ISR:
    # degraded, still exit 0, exit 1 with --strict.
    topic = unique_topic("minisr")
    skein(
        "topic", "create", topic, "--partitions", "2", "--config", "min.insync.replicas=2",
        bootstrap=b, check=0,
    )
    try:

        def listed():
            h = skein_json("cluster", "health", bootstrap=b, check=0)
            mine = [p for p in h["under_min_isr_partitions"] if p["topic"] == topic]
            return h if len(mine) == 2 else None

        h = wait_until(listed, 30, f"{topic} under min ISR")
        mine = sorted(
            (p for p in h["under_min_isr_partitions"] if p["topic"] == topic),
            key=lambda p: p["partition"],
        )
        assert mine == [
            {"topic": topic, "partition": i, "leader": 1, "replicas": [1], "isr": [1], "error": None}
            for i in (0, 1)
        ]
        assert h["status"] == "degraded" and h["exit_code"] == 0
        assert any(topic in p and "under min ISR" in p for p in h["problems"]), h["problems"]
        proc = skein("cluster", "health", "--strict", bootstrap=b, check=1)
        assert proc.stdout.startswith("status      degraded\n"), proc.stdout
    finally:
        skein("topic", "delete", topic, bootstrap=b, check=0)


def test_voter_changes_on_kafka_report_its_error(kafka_bootstrap):
    b = kafka_bootstrap
    # The reference broker's quorum is a static voter set (kraft.version 0), so Kafka refuses
    # any voter change with UNSUPPORTED_VERSION, whichever voter is named.
    proc = skein(
        "cluster", "remove-voter", "--id", "5", "--directory-id", NO_SUCH_DIRECTORY,
        bootstrap=b, check=1,
    )
    assert proc.stdout == ""
    assert proc.stderr == (
        f"skein: cluster remove-voter: voter 5 ({NO_SUCH_DIRECTORY}): UNSUPPORTED_VERSION: "
        "Cluster doesn't support removing voter because the kraft.version feature is 0\n"
    )
    proc = skein(
        "cluster", "add-voter", "--id", "2", "--directory-id", NO_SUCH_DIRECTORY,
        "--endpoint", "CONTROLLER://127.0.0.1:19093", bootstrap=b, check=1,
    )
    assert proc.stderr == (
        f"skein: cluster add-voter: voter 2 ({NO_SUCH_DIRECTORY}): UNSUPPORTED_VERSION: "
        "Cluster doesn't support adding voter because the kraft.version feature is 0\n"
    )
