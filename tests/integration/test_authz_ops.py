"""Authorized operations (KIP-430) and the KIP-848 heartbeat's topic checks (issue 15).

The same scenario runs against Skein and against the reference Apache Kafka, both with
`StandardAuthorizer` on and the same ACLs for a non-super user, and asserts the exact sets:
confluent-kafka's `describe_topics` (Metadata), `describe_cluster` (DescribeCluster) and
`describe_consumer_groups` (DescribeGroups / ConsumerGroupDescribe) with
`include_authorized_operations=True`, kafka-python's `describe_topic_partitions`
(DescribeTopicPartitions) and a Metadata v10 asking for the cluster's operations. Without an
authorizer every supported operation is given, on both brokers.

The reference broker with an authorizer is started by this module (scripts/kafka-reference,
with a SASL_PLAINTEXT listener); without Kafka's jars the Kafka half is skipped (or fails
under SKEIN_REQUIRE_REFERENCE=1).
"""

import os
import socket
import subprocess
import tempfile
import time
import uuid

import pytest
import wire
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicCollection
from confluent_kafka import TopicPartition
from confluent_kafka.admin import (AclBinding, AclOperation, AclPermissionType, AdminClient,
                                   NewTopic, ResourcePatternType, ResourceType)

from conftest import _new_broker
from helpers import DEFAULT_TIMEOUT_S, REPO, wait_until

AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
USERS = {"admin": "admin-pw", "alice": "alice-pw", "bob": "bob-pw"}
JAAS = "org.apache.kafka.common.security.plain.PlainLoginModule required " + " ".join(
    f'user_{u}="{p}"' for u, p in USERS.items()) + ";"

# Kafka's AclEntry.supportedOperations, by name.
TOPIC_OPS = {"READ", "WRITE", "CREATE", "DESCRIBE", "DELETE", "ALTER", "DESCRIBE_CONFIGS",
             "ALTER_CONFIGS"}
GROUP_OPS = {"READ", "DESCRIBE", "DELETE", "DESCRIBE_CONFIGS", "ALTER_CONFIGS"}
CLUSTER_OPS = {"CREATE", "CLUSTER_ACTION", "DESCRIBE_CONFIGS", "ALTER_CONFIGS",
               "IDEMPOTENT_WRITE", "ALTER", "DESCRIBE"}
OP_CODES = {"READ": 3, "WRITE": 4, "CREATE": 5, "DELETE": 6, "ALTER": 7, "DESCRIBE": 8,
            "CLUSTER_ACTION": 9, "DESCRIBE_CONFIGS": 10, "ALTER_CONFIGS": 11,
            "IDEMPOTENT_WRITE": 12}
INT32_MIN = -(2 ** 31)


def bits(names):
    return sum(1 << OP_CODES[n] for n in names)


def codes(names):
    return {OP_CODES[n] for n in names}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def uniq(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class Target:
    """A broker with the authorizer on: `plain` (User:ANONYMOUS, a super user) and `sasl`."""

    def __init__(self, name, plain, sasl):
        self.name, self.plain, self.sasl = name, plain, sasl

    def conf(self, user):
        return {"bootstrap.servers": self.sasl, "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanism": "PLAIN", "sasl.username": user,
                "sasl.password": USERS[user]}

    def admin(self, user):
        return AdminClient(self.conf(user))

    def kp_admin(self, user):
        from kafka.admin import KafkaAdminClient
        return KafkaAdminClient(bootstrap_servers=self.sasl, security_protocol="SASL_PLAINTEXT",
                                sasl_mechanism="PLAIN", sasl_plain_username=user,
                                sasl_plain_password=USERS[user])


@pytest.fixture(scope="module")
def skein_acl(tmp_path_factory):
    port = free_port()
    b = _new_broker(
        tmp_path_factory.mktemp("authz-ops") / "data",
        sets=[
            f"listeners=PLAINTEXT://127.0.0.1:{free_port()},SASL_PLAINTEXT://127.0.0.1:{port}",
            "sasl.enabled.mechanisms=PLAIN",
            f"listener.name.sasl_plaintext.plain.sasl.jaas.config={JAAS}",
            f"authorizer.class.name={AUTHORIZER}",
            "super.users=User:ANONYMOUS;User:admin",
        ],
    )
    yield Target("skein", b.bootstrap, f"127.0.0.1:{port}")
    b.close()


@pytest.fixture(scope="module")
def kafka_acl():
    """The reference Kafka with StandardAuthorizer and a SASL_PLAINTEXT listener."""
    script = REPO / "scripts" / "kafka-reference"
    directory = tempfile.mkdtemp(prefix="skein-kafka-authz")
    p, c, s = free_port(), free_port(), free_port()
    sets = [
        f"controller.quorum.voters=1@127.0.0.1:{c}",
        f"listeners=PLAINTEXT://127.0.0.1:{p},CONTROLLER://127.0.0.1:{c},"
        f"SASL_PLAINTEXT://127.0.0.1:{s}",
        f"advertised.listeners=PLAINTEXT://127.0.0.1:{p},SASL_PLAINTEXT://127.0.0.1:{s}",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,"
        "SASL_PLAINTEXT:SASL_PLAINTEXT",
        "sasl.enabled.mechanisms=PLAIN",
        f"listener.name.sasl_plaintext.plain.sasl.jaas.config={JAAS}",
        f"authorizer.class.name={AUTHORIZER}",
        "super.users=User:ANONYMOUS;User:admin",
        "group.initial.rebalance.delay.ms=0",
    ]
    cmd = [str(script), "start", "--dir", directory, "--port", str(p), "--heap", "512m"]
    for kv in sets:
        cmd += ["--set", kv]
    try:
        run = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, timeout=600)
        ok = run.returncode == 0
    except subprocess.TimeoutExpired:
        ok = False
    if not ok:
        subprocess.run([str(script), "stop", "--dir", directory], stdout=subprocess.DEVNULL)
        reason = "scripts/kafka-reference could not start Kafka with an authorizer"
        if os.environ.get("SKEIN_REQUIRE_REFERENCE") == "1":
            pytest.fail(f"SKEIN_REQUIRE_REFERENCE=1: {reason}")
        print(f"\n*** SKIPPED: the reference Kafka half of test_authz_ops ({reason}) ***")
        pytest.skip(reason)
    yield Target("kafka", f"127.0.0.1:{p}", f"127.0.0.1:{s}")
    subprocess.run([str(script), "stop", "--dir", directory], stdout=subprocess.DEVNULL)


@pytest.fixture(params=["skein", "kafka"])
def target(request):
    return request.getfixturevalue(f"{request.param}_acl")


def ok(future):
    return future.result(timeout=DEFAULT_TIMEOUT_S)


def error_code(future):
    try:
        future.result(timeout=DEFAULT_TIMEOUT_S)
    except KafkaException as e:
        return e.args[0].code()
    return None


def names(ops):
    return None if ops is None else {o.name for o in ops}


def add_acls(t, *bindings):
    admin = t.admin("admin")
    for f in admin.create_acls(list(bindings)).values():
        ok(f)


def acl(rtype, name, user, op, permission=AclPermissionType.ALLOW):
    return AclBinding(rtype, name, ResourcePatternType.LITERAL, f"User:{user}", "*",
                      getattr(AclOperation, op), permission)


def create_topics(t, *topics):
    admin = t.admin("admin")
    fs = admin.create_topics([NewTopic(x, num_partitions=1, replication_factor=1)
                              for x in topics])
    for f in fs.values():
        ok(f)
    wait_until(lambda: set(topics) <= set(admin.list_topics(timeout=10).topics),
               DEFAULT_TIMEOUT_S, f"{topics} in Metadata")


def commit_offset(t, group, topic, protocol="classic", conf=None):
    """Leaves a group with a committed offset (so it is described with no error)."""
    conf = {**(conf or t.conf("admin")), "group.id": group, "enable.auto.commit": False,
            "auto.offset.reset": "earliest"}
    if protocol == "consumer":
        conf["group.protocol"] = "consumer"
        c = Consumer(conf)
        c.subscribe([topic])
        deadline = time.monotonic() + DEFAULT_TIMEOUT_S
        while not c.assignment() and time.monotonic() < deadline:
            c.poll(0.2)
        assert c.assignment(), "no assignment"
    else:
        c = Consumer(conf)
    # The offsets topic may still be coming up (NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE).
    deadline = time.monotonic() + DEFAULT_TIMEOUT_S
    while True:
        try:
            c.commit(offsets=[TopicPartition(topic, 0, 0)], asynchronous=False)
            break
        except KafkaException as e:
            if not e.args[0].retriable() and e.args[0].code() not in (
                    KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_NOT_AVAILABLE,
                    KafkaError.COORDINATOR_LOAD_IN_PROGRESS):
                raise
            assert time.monotonic() < deadline, f"commit to {group}: {e}"
            time.sleep(0.2)
    c.close()


def test_authorized_operations_for_a_non_super_user(target):
    t = target
    full, read_cfg, no_write, hidden = (uniq("full"), uniq("readcfg"), uniq("nowrite"),
                                        uniq("hidden"))
    classic, modern = uniq("classic"), uniq("modern")
    create_topics(t, full, read_cfg, no_write, hidden)
    T, G, C = ResourceType.TOPIC, ResourceType.GROUP, ResourceType.BROKER
    add_acls(
        t,
        acl(T, full, "alice", "ALL"),
        acl(T, read_cfg, "alice", "READ"),
        acl(T, read_cfg, "alice", "ALTER_CONFIGS"),
        acl(T, no_write, "alice", "ALL"),
        acl(T, no_write, "alice", "WRITE", AclPermissionType.DENY),
        acl(G, classic, "alice", "READ"),
        acl(G, modern, "alice", "DELETE"),
        acl(G, modern, "alice", "DESCRIBE"),
        acl(C, "kafka-cluster", "alice", "DESCRIBE"),
        acl(C, "kafka-cluster", "alice", "IDEMPOTENT_WRITE"),
    )
    commit_offset(t, classic, full)
    commit_offset(t, modern, full, protocol="consumer")
    alice = t.admin("alice")

    # Metadata (describe_topics): each topic's set; READ implies DESCRIBE, ALTER_CONFIGS
    # implies DESCRIBE_CONFIGS, ALL is every supported operation, a DENY takes one out.
    want = {full: TOPIC_OPS, read_cfg: {"READ", "DESCRIBE", "ALTER_CONFIGS", "DESCRIBE_CONFIGS"},
            no_write: TOPIC_OPS - {"WRITE"}}
    fs = alice.describe_topics(TopicCollection(list(want)), include_authorized_operations=True)
    assert {n: names(ok(f).authorized_operations) for n, f in fs.items()} == want
    # Not asked for: not given.
    fs = alice.describe_topics(TopicCollection([full]))
    assert ok(fs[full]).authorized_operations is None
    fs = alice.describe_topics(TopicCollection([hidden]), include_authorized_operations=True)
    assert error_code(fs[hidden]) == KafkaError.TOPIC_AUTHORIZATION_FAILED

    # DescribeCluster.
    d = ok(alice.describe_cluster(include_authorized_operations=True))
    assert names(d.authorized_operations) == {"DESCRIBE", "IDEMPOTENT_WRITE"}
    assert ok(alice.describe_cluster()).authorized_operations is None
    # bob may not describe the cluster: 0, no operation.
    bob = t.admin("bob")
    d = ok(bob.describe_cluster(include_authorized_operations=True))
    assert names(d.authorized_operations) in (set(), None)

    # Groups: a classic group (DescribeGroups) and a consumer-protocol one.
    fs = alice.describe_consumer_groups([classic, modern], include_authorized_operations=True)
    assert names(ok(fs[classic]).authorized_operations) == {"READ", "DESCRIBE"}
    assert names(ok(fs[modern]).authorized_operations) == {"DELETE", "DESCRIBE"}
    fs = alice.describe_consumer_groups([classic])
    assert ok(fs[classic]).authorized_operations is None

    # The same through kafka-python: DescribeGroups v3+ (which it asks with the flag),
    # DescribeTopicPartitions (always given) and Metadata v10 with the cluster's set.
    kp = t.kp_admin("alice")
    try:
        groups = kp.describe_groups([classic])
        g = groups[classic] if isinstance(groups, dict) else groups[0]
        assert set(g["authorized_operations"]) == {"READ", "DESCRIBE"}
        r = kp.describe_topic_partitions([full, read_cfg, hidden])
        got = {x["name"]: (x["error_code"], x["topic_authorized_operations"])
               for x in r["topics"]}
        assert got == {full: (0, bits(TOPIC_OPS)),
                       read_cfg: (0, bits(want[read_cfg])),
                       hidden: (29, INT32_MIN)}
        from kafka.protocol.metadata import MetadataRequest
        req = MetadataRequest(topics=[MetadataRequest.MetadataRequestTopic(name=no_write)],
                              allow_auto_topic_creation=False,
                              include_cluster_authorized_operations=True,
                              include_topic_authorized_operations=True, max_version=10)
        resp = kp._manager.run(kp._manager.send, req)
        assert resp.version == 10
        # kafka-python gives the bit fields as sets of operation codes.
        assert resp.authorized_operations == codes({"DESCRIBE", "IDEMPOTENT_WRITE"})
        assert [(x.name, x.authorized_operations) for x in resp.topics] == [
            (no_write, codes(TOPIC_OPS - {"WRITE"}))]
    finally:
        kp.close()


@pytest.fixture(params=["skein", "kafka"])
def open_target(request):
    if request.param == "kafka":
        return request.getfixturevalue("kafka_bootstrap")
    return request.getfixturevalue("module_broker").bootstrap


def test_without_an_authorizer_everything_supported_is_allowed(open_target):
    bootstrap = open_target
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topic, group = uniq("open"), uniq("open-g")
    for f in admin.create_topics([NewTopic(topic, num_partitions=1,
                                           replication_factor=1)]).values():
        ok(f)
    wait_until(lambda: topic in admin.list_topics(timeout=10).topics, DEFAULT_TIMEOUT_S,
               f"{topic} in Metadata")
    commit_offset(Target("open", bootstrap, bootstrap), group, topic, conf={
        "bootstrap.servers": bootstrap})
    fs = admin.describe_topics(TopicCollection([topic]), include_authorized_operations=True)
    assert names(ok(fs[topic]).authorized_operations) == TOPIC_OPS
    d = ok(admin.describe_cluster(include_authorized_operations=True))
    assert names(d.authorized_operations) == CLUSTER_OPS
    fs = admin.describe_consumer_groups([group], include_authorized_operations=True)
    assert names(ok(fs[group]).authorized_operations) == GROUP_OPS


# -- ConsumerGroupHeartbeat by hand (no Python client sends it with its error message) ---------


def sasl_connection(t, user):
    """A socket logged in as `user` with SASL/PLAIN (SaslHandshake v1, SaslAuthenticate v0)."""
    sock = wire.connect(t.sasl)
    sock.sendall(wire.request(17, 1, 1, wire.string("PLAIN")))
    _, r = wire.recv_frame(sock)
    assert r.i16() == 0, "SaslHandshake failed"
    token = f"\0{user}\0{USERS[user]}".encode()
    sock.sendall(wire.request(36, 0, 2, wire.bytes_(token)))
    _, r = wire.recv_frame(sock)
    assert r.i16() == 0, f"SASL login of {user} failed"
    return sock


def heartbeat(sock, group, topics=None, regex=None, correlation_id=3):
    """A first ConsumerGroupHeartbeat v1 (join); returns (error code, message, member id)."""
    member_id = str(uuid.uuid4())
    body = (wire.compact_string(group) + wire.compact_string(member_id) + wire.i32(0)
            + wire.compact_string(None) + wire.compact_string(None) + wire.i32(30000))
    if topics is None:
        body += wire.uvarint(0)
    else:
        body += wire.uvarint(len(topics) + 1) + b"".join(wire.compact_string(x) for x in topics)
    body += wire.compact_string(regex) + wire.compact_string(None)
    body += wire.uvarint(1)  # topic partitions: empty (a joining member owns nothing)
    body += wire.EMPTY_TAGGED_FIELDS
    sock.sendall(wire.request(68, 1, correlation_id, body, flexible=True))
    _, r = wire.recv_frame(sock)
    r.tagged_fields()  # response header v1
    r.i32()  # throttle
    code = r.i16()
    message = r.compact_string()
    return code, message, member_id


def test_consumer_group_heartbeat_checks_describe_on_its_topics(target):
    t = target
    base = uniq("rx")
    vis, hid = f"{base}-vis", f"{base}-hid"
    group, rgroup, dgroup = uniq("hb"), uniq("hbrx"), uniq("hbd")
    create_topics(t, vis, hid)
    T, G = ResourceType.TOPIC, ResourceType.GROUP
    add_acls(t, acl(T, vis, "alice", "READ"), acl(G, group, "alice", "READ"),
             acl(G, rgroup, "alice", "READ"), acl(G, dgroup, "alice", "DESCRIBE"))

    # Subscribed by name: every topic must be describable, known or not.
    with sasl_connection(t, "alice") as sock:
        code, message, _ = heartbeat(sock, group, topics=[vis, hid, "no-such-topic"])
        assert code == KafkaError.TOPIC_AUTHORIZATION_FAILED
        if t.name == "skein":  # Kafka sends no message
            assert message == f"Not authorized to describe topics: [no-such-topic, {hid}]"
        code, _, _ = heartbeat(sock, group, topics=[vis, "no-such-topic"], correlation_id=4)
        assert code == KafkaError.TOPIC_AUTHORIZATION_FAILED
        code, _, _ = heartbeat(sock, uniq("not-mine"), topics=[vis], correlation_id=5)
        assert code == KafkaError.GROUP_AUTHORIZATION_FAILED
        code, _, member = heartbeat(sock, group, topics=[vis], correlation_id=6)
        assert code == 0

    # A regex resolves only to what alice may describe: she is assigned vis, never hid.
    c = Consumer({**t.conf("alice"), "group.id": rgroup, "group.protocol": "consumer",
                  "auto.offset.reset": "earliest"})
    try:
        c.subscribe([f"^{base}-.*"])
        deadline = time.monotonic() + DEFAULT_TIMEOUT_S
        while not c.assignment() and time.monotonic() < deadline:
            c.poll(0.2)
        assert {tp.topic for tp in c.assignment()} == {vis}
    finally:
        c.close()

    # ConsumerGroupDescribe: a group with a topic alice may not describe is not described.
    c = Consumer({**t.conf("admin"), "group.id": dgroup, "group.protocol": "consumer",
                  "auto.offset.reset": "earliest"})
    try:
        c.subscribe([hid])
        deadline = time.monotonic() + DEFAULT_TIMEOUT_S
        while not c.assignment() and time.monotonic() < deadline:
            c.poll(0.2)
        assert c.assignment()
        alice = t.admin("alice")
        fs = alice.describe_consumer_groups([dgroup], include_authorized_operations=True)
        assert error_code(fs[dgroup]) == KafkaError.TOPIC_AUTHORIZATION_FAILED
        # The super user sees it whole.
        admin = t.admin("admin")
        d = ok(admin.describe_consumer_groups([dgroup])[dgroup])
        assert len(d.members) == 1
    finally:
        c.close()
