"""Partition reassignment (KIP-455, issue 12) against real processes: a quorum of three voters
plus a broker-only node 4, real clients.

- An RF=3 topic on [1, 2, 3] (leader 1) moves to [2, 3, 4] while an idempotent acks=all
  librdkafka producer runs: ListPartitionReassignments shows the move in progress (node 4 is
  held down meanwhile, so "in progress" is observed, not raced), then empty once node 4 has
  caught up; the leader moves off node 1 in a new leader epoch; Metadata ends with replicas
  [2, 3, 4]; node 1's partition directory is deleted; node 4's log equals the new leader's
  byte for byte; the history checker finds no loss and no duplicate.
- Cancellation reverts to the original replicas (and a node that was an adding replica while
  down deletes the copy it replays); the CLI's errors; `--dry-run` changes nothing.
- Apache Kafka's own `kafka-reassign-partitions` (ReassignPartitionsCommand) run with java
  against Skein: `--execute` then `--verify` until complete.

One cluster serves the whole module (each test has its own topic) to stay within a few
minutes on a busy machine."""

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from cluster import BASE_SETS, Cluster, cli_json, skein_cli, try_metadata_of
from helpers import REPO, future_error, wait_until
from history import History, assert_history_ok
from workload import ProducerWorkload, read_back

WAIT_S = 90.0
LAG_MS = 4000
SETS = BASE_SETS + [f"replica.lag.time.max.ms={LAG_MS}"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    nodes = []
    c = Cluster(tmp_path_factory.mktemp("reassign") / "cluster", voters=3, sets=SETS, registry=nodes)
    c.start()
    try:
        c.add_broker(4)
        yield c
    finally:
        c.close()


def partition_info(bootstrap, topic, partition=0):
    md = try_metadata_of(bootstrap)
    if md is None:
        return None
    parts = md.topics.get(topic)
    if not parts or "error" in parts:
        return None
    return parts.get(partition)


def create_on(bootstrap, topic, replicas):
    """One partition on exactly `replicas` (leader: the first), min.insync.replicas=2; waits
    until its ISR is full. Returns its info."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    fut = admin.create_topics(
        [NewTopic(topic, num_partitions=1, replica_assignment=[replicas], config={"min.insync.replicas": "2"})],
        operation_timeout=30,
        request_timeout=40,
    )[topic]
    err = future_error(fut, timeout=60)
    assert err is None, f"creating {topic}: {err}"
    one = bootstrap.split(",")[0]
    return wait_until(
        lambda: (i := partition_info(one, topic)) and sorted(i.isr) == sorted(replicas) and i,
        WAIT_S,
        f"{topic}: ISR {replicas}",
    )


def log_bytes(node, topic, partition=0):
    d = Path(node.data_dir) / f"{topic}-{partition}"
    return b"".join(f.read_bytes() for f in sorted(d.glob("*.log")))


def status(bootstrap, topic=None):
    """`skein topic reassign --status` (JSON): [(topic, partition, replicas, adding, removing)]."""
    args = ["topic", "reassign", "--status"] + (["--topic", topic] if topic else [])
    rc, out, proc = cli_json(*args, bootstrap=bootstrap)
    assert rc == 0 and out is not None, proc
    return [
        (r["topic"], r["partition"], r["replicas"], r["adding"], r["removing"])
        for r in out["reassignments"]
    ]


def reassign(bootstrap, topic, replicas=None, cancel=False):
    args = ["topic", "reassign", "--topic", topic, "--partition", "0"]
    args += ["--cancel"] if cancel else ["--replicas", ",".join(map(str, replicas))]
    return cli_json(*args, bootstrap=bootstrap)


def test_move_off_the_leader_under_load(cluster, tmp_path):
    b = cluster.bootstrap_all()
    one = cluster[2].bootstrap
    topic = "moved"
    before = create_on(b, topic, [1, 2, 3])
    assert before.leader == 1 and before.replicas == [1, 2, 3], before

    h = History()
    with ProducerWorkload(b, topic, h, client="p0", rate_per_s=300) as p:
        p.wait_acknowledged(300, timeout=WAIT_S)
        # Node 4 down (controlled shutdown, so fenced): the move is accepted (it is
        # registered) and stays in progress until node 4 is back and caught up.
        cluster.stop(4)
        rc, out, proc = reassign(one, topic, [2, 3, 4])
        assert rc == 0, proc
        assert out["partitions"] == [
            {"topic": topic, "partition": 0, "error": None, "message": None}
        ], out
        assert status(one) == [(topic, 0, [2, 3, 4, 1], [4], [1])]
        assert status(cluster[3].bootstrap, topic) == [(topic, 0, [2, 3, 4, 1], [4], [1])]
        moving = partition_info(one, topic)
        assert moving.replicas == [2, 3, 4, 1] and moving.leader == 1, moving
        # Writes go on while the move waits.
        p.wait_more_acknowledged(300, timeout=WAIT_S)
        cluster.restart(4)
        done = wait_until(
            lambda: (i := partition_info(one, topic)) and i.replicas == [2, 3, 4] and i,
            WAIT_S,
            "the move completed (replicas [2, 3, 4])",
        )
        assert status(one) == []
        assert sorted(done.isr) == [2, 3, 4], done
        assert done.leader == 2, done  # node 1 led; the first target replica takes over
        p.wait_more_acknowledged(300, timeout=WAIT_S)
    judge_b = cluster.bootstrap_all()
    read_back(judge_b, topic, h)
    result = assert_history_ok(h, min_acknowledged=900, save_to=tmp_path / "history.json")
    assert result.lost == 0 and result.duplicated == 0, result.summary()

    # Node 1 deleted its copy; node 4 holds the leader's log, byte for byte.
    wait_until(
        lambda: not (Path(cluster[1].data_dir) / f"{topic}-0").exists(),
        WAIT_S,
        "node 1's moved-0 directory deleted",
    )
    assert (Path(cluster[4].data_dir) / f"{topic}-0").is_dir()
    wait_until(
        lambda: len(log_bytes(cluster[2], topic)) > 0
        and log_bytes(cluster[4], topic) == log_bytes(cluster[2], topic) == log_bytes(cluster[3], topic),
        WAIT_S,
        "node 4's log equal to the leader's",
    )
    # Every node agrees on the final assignment.
    for n in (1, 2, 3, 4):
        info = wait_until(
            lambda n=n: (i := partition_info(cluster[n].bootstrap, topic)) and i.replicas == [2, 3, 4] and i,
            WAIT_S,
            f"node {n} sees replicas [2, 3, 4]",
        )
        assert info.leader == 2, (n, info)


def test_cancel_dry_run_and_errors(cluster, tmp_path):
    b = cluster.bootstrap_all()
    one = cluster[1].bootstrap
    topic = "cancelled"
    create_on(b, topic, [1, 2, 3])

    # A dry run shows current -> proposed and changes nothing.
    rc, out, proc = cli_json("topic", "reassign", "--topic", topic, "--partition", "0",
                             "--replicas", "2,3,4", "--dry-run", bootstrap=one)
    assert rc == 0, proc
    assert out == {"dry_run": True, "partitions": [
        {"topic": topic, "partition": 0, "current": [1, 2, 3], "proposed": [2, 3, 4]}]}, out
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"version": 1, "partitions": [
        {"topic": topic, "partition": 0, "replicas": [3, 4, 1]}]}))
    proc = skein_cli("topic", "reassign", "--plan", str(plan), "--dry-run", bootstrap=one)
    assert proc.returncode == 0, proc
    assert "[1,2,3]" in proc.stdout and "[3,4,1]" in proc.stdout and "nothing was changed" in proc.stdout, proc.stdout
    assert status(one) == []
    info = partition_info(one, topic)
    assert info.replicas == [1, 2, 3] and info.leader == 1, info

    # Bad input: refused with clear errors, nothing changed.
    for args, expect in [
        (["--replicas", "1,1,2"], "listed twice"),
        (["--replicas", "1,x"], "not a broker id"),
        (["--replicas", "1,2,9"], "INVALID_REPLICA_ASSIGNMENT"),
        (["--cancel"], "NO_REASSIGNMENT_IN_PROGRESS"),
        ([], "--replicas"),
    ]:
        proc = skein_cli("topic", "reassign", "--topic", topic, "--partition", "0", *args, bootstrap=one)
        assert proc.returncode != 0 and expect in proc.stderr, (args, proc.stderr)
    proc = skein_cli("topic", "reassign", "--topic", "nope", "--partition", "0", "--replicas", "1", bootstrap=one)
    assert proc.returncode != 0 and "UNKNOWN_TOPIC_OR_PARTITION" in proc.stderr, proc.stderr
    proc = skein_cli("topic", "reassign", "--topic", topic, "--partition", "7", "--replicas", "1,2",
                     "--dry-run", bootstrap=one)
    assert proc.returncode != 0 and "no partition 7" in proc.stderr, proc.stderr
    assert partition_info(one, topic).replicas == [1, 2, 3]

    # Start a move to [1, 2, 4] with node 4 down, then cancel it: back to [1, 2, 3].
    cluster.stop(4)
    rc, out, proc = reassign(one, topic, [1, 2, 4])
    assert rc == 0, proc
    assert status(one) == [(topic, 0, [1, 2, 4, 3], [4], [3])]
    rc, out, proc = reassign(one, topic, cancel=True)
    assert rc == 0, proc
    assert status(one) == []
    info = wait_until(lambda: (i := partition_info(one, topic)) and i.replicas == [1, 2, 3] and i,
                      WAIT_S, "replicas back to [1, 2, 3]")
    assert info.leader == 1 and sorted(info.isr) == [1, 2, 3], info
    # Node 4 comes back: replaying the log, it opens the replica it was given and deletes it
    # when it reaches the cancellation.
    cluster.restart(4)
    assert not (Path(cluster[4].data_dir) / f"{topic}-0").exists()
    assert partition_info(cluster[4].bootstrap, topic).replicas == [1, 2, 3]


def kafka_libs():
    """The reference Kafka's jars (with kafka-tools), or a skip reason."""
    if shutil.which("java") is None:
        return None, "java is not installed"
    proc = subprocess.run([str(REPO / "scripts" / "kafka-reference"), "fetch"],
                          capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        return None, f"scripts/kafka-reference fetch failed: {proc.stderr[-500:]}"
    libs = Path(proc.stdout.strip().splitlines()[-1])
    if not any(libs.glob("kafka-tools-*.jar")):
        return None, f"no kafka-tools jar in {libs}"
    return libs, None


def reassign_tool(libs, bootstrap, *args):
    return subprocess.run(
        ["java", "-cp", f"{libs}/*", "org.apache.kafka.tools.reassign.ReassignPartitionsCommand",
         "--bootstrap-server", bootstrap, *args],
        capture_output=True, text=True, timeout=120,
    )


def test_kafkas_reassign_partitions_tool(cluster, tmp_path):
    libs, why = kafka_libs()
    if libs is None:
        pytest.skip(f"Kafka's ReassignPartitionsCommand cannot run: {why}")
    b = cluster.bootstrap_all()
    topic = "javatool"
    create_on(b, topic, [1, 2, 3])

    def plan_file(name, replicas):
        plan = tmp_path / name
        plan.write_text(json.dumps({"version": 1, "partitions": [
            {"topic": topic, "partition": 0, "replicas": replicas, "log_dirs": ["any"] * len(replicas)}]}))
        return str(plan)

    def verify(plan, bootstrap):
        v = reassign_tool(libs, bootstrap, "--reassignment-json-file", plan, "--verify")
        assert v.returncode == 0, v.stdout + v.stderr
        return v.stdout

    def verified(plan):
        return wait_until(
            lambda: (out := verify(plan, cluster[3].bootstrap))
            and f"Reassignment of partition {topic}-0 is completed" in out and out,
            WAIT_S, "kafka-reassign-partitions --verify says completed", interval=0.5)

    # --execute, then --verify until complete.
    plan = plan_file("plan.json", [4, 2, 3])
    proc = reassign_tool(libs, cluster[3].bootstrap, "--reassignment-json-file", plan, "--execute")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Successfully started partition reassignment" in proc.stdout, proc.stdout
    # The tool printed the current assignment for rollback, as Kafka does.
    assert f'"topic":"{topic}","partition":0,"replicas":[1,2,3]' in proc.stdout, proc.stdout
    out = verified(plan)
    # Once complete, the tool clears the replication throttles (deletes of unset configs,
    # which Skein accepts as Kafka does).
    assert "Clearing broker-level throttles on brokers 1,2,3,4" in out, out
    assert f"Clearing topic-level throttles on topic {topic}" in out, out
    info = partition_info(cluster[2].bootstrap, topic)
    assert info.replicas == [4, 2, 3] and sorted(info.isr) == [2, 3, 4], info
    assert info.leader in (2, 3, 4), info
    wait_until(lambda: not (Path(cluster[1].data_dir) / f"{topic}-0").exists(), WAIT_S,
               "node 1's javatool-0 deleted")
    listed = reassign_tool(libs, cluster[1].bootstrap, "--list")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert "No partition reassignments found." in listed.stdout, listed.stdout

    # A move the tool sees in progress: to [1, 2, 4] while node 4 is down (started with
    # Skein's CLI: Kafka's tool refuses targets that DescribeCluster does not list).
    cluster.stop(4)
    back = plan_file("back.json", [1, 2, 4])
    proc = skein_cli("topic", "reassign", "--plan", back, bootstrap=cluster[1].bootstrap)
    assert proc.returncode == 0, proc
    listed = reassign_tool(libs, cluster[1].bootstrap, "--list")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert "Current partition reassignments:" in listed.stdout, listed.stdout
    assert f"{topic}-0: replicas: 1,2,4,3. adding: 1. removing: 3." in listed.stdout, listed.stdout
    out = verify(back, cluster[2].bootstrap)
    assert f"Reassignment of partition {topic}-0 is still in progress." in out, out
    cluster.restart(4)
    verified(back)
    info = partition_info(cluster[2].bootstrap, topic)
    assert info.replicas == [1, 2, 4] and sorted(info.isr) == [1, 2, 4], info
