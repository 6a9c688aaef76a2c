"""Authorization (issue 15): ACLs in the cluster metadata, Kafka's StandardAuthorizer semantics.

One broker for the module, with the authorizer on, two listeners: PLAINTEXT (the fixture's and
the `skein` CLI's; its principal User:ANONYMOUS is a super user, as Kafka's docs have it for a
PLAINTEXT inter-broker listener) and SASL_PLAINTEXT with PLAIN users. Clients log in as those
users with confluent-kafka and kafka-python and get Kafka's authorization errors.
"""

import json
import socket
import time
import urllib.request
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from conftest import _new_broker
from helpers import DEFAULT_TIMEOUT_S, create_topic, skein, wait_until

AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
USERS = {"admin": "admin-pw", "alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw",
         "dave": "dave-pw"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AclBroker:
    def __init__(self, broker, port):
        self.broker = broker
        self.bootstrap = broker.bootstrap
        self.sasl = f"127.0.0.1:{port}"

    def conf(self, user):
        return {
            "bootstrap.servers": self.sasl,
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "PLAIN",
            "sasl.username": user,
            "sasl.password": USERS[user],
        }

    def acl(self, *args, check=0):
        return skein("acl", *args, bootstrap=self.bootstrap, check=check)


@pytest.fixture(scope="module")
def ab(tmp_path_factory):
    port = free_port()
    jaas = "org.apache.kafka.common.security.plain.PlainLoginModule required " + " ".join(
        f'user_{u}="{p}"' for u, p in USERS.items()) + ";"
    b = _new_broker(
        tmp_path_factory.mktemp("acl") / "data",
        sets=[
            f"listeners=PLAINTEXT://127.0.0.1:{free_port()},SASL_PLAINTEXT://127.0.0.1:{port}",
            "sasl.enabled.mechanisms=PLAIN",
            f"listener.name.sasl_plaintext.plain.sasl.jaas.config={jaas}",
            f"authorizer.class.name={AUTHORIZER}",
            "super.users=User:ANONYMOUS;User:admin",
        ],
    )
    yield AclBroker(b, port)
    b.close()


def uniq(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def produce_one(ab, user, topic, **conf):
    """Produces one record as `user`; returns the delivery error code (None on success)."""
    p = Producer({**ab.conf(user), "message.timeout.ms": 15000, **conf})
    result = []
    p.produce(topic, b"v", on_delivery=lambda err, msg: result.append(err))
    p.flush(30)
    assert result, "no delivery report"
    return None if result[0] is None else result[0].code()


def admin_error(future):
    try:
        future.result(timeout=DEFAULT_TIMEOUT_S)
    except KafkaException as e:
        return e.args[0].code()
    return None


def topics_seen(ab, user):
    md = AdminClient(ab.conf(user)).list_topics(timeout=15)
    return set(md.topics)


def consume_group(ab, user, topic, group, want, timeout=DEFAULT_TIMEOUT_S):
    """Consumes `topic` in `group` until `want` records arrive or an error does."""
    c = Consumer({**ab.conf(user), "group.id": group, "auto.offset.reset": "earliest",
                  "enable.auto.commit": False})
    try:
        c.subscribe([topic])
        got = []
        deadline = time.monotonic() + timeout
        while len(got) < want and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    continue
                return got, msg.error().code()
            got.append(msg)
        if got:
            c.commit(asynchronous=False)
        return got, None
    finally:
        c.close()


def test_a_principal_does_exactly_what_it_is_allowed(ab):
    orders, other = "orders", uniq("other")
    create_topic(ab.broker, orders, partitions=1)
    create_topic(ab.broker, other, partitions=1)
    ab.acl("add", "--allow-principal", "User:alice", "--operation", "Write",
           "--operation", "Read", "--topic", orders)
    ab.acl("add", "--allow-principal", "User:alice", "--operation", "Read", "--group", "billing")

    # Allowed: produce to orders (plain and idempotent), consume it in group billing.
    assert produce_one(ab, "alice", orders) is None
    assert produce_one(ab, "alice", orders, **{"enable.idempotence": True}) is None
    got, err = consume_group(ab, "alice", orders, "billing", 2)
    assert err is None and len(got) == 2

    # Everything else: the matching authorization error.
    assert produce_one(ab, "alice", other) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    _, err = consume_group(ab, "alice", orders, "not-billing", 1, timeout=20)
    assert err == KafkaError.GROUP_AUTHORIZATION_FAILED
    admin = AdminClient(ab.conf("alice"))
    fs = admin.create_topics([NewTopic(uniq("new"), num_partitions=1, replication_factor=1)])
    assert admin_error(list(fs.values())[0]) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    fs = admin.delete_topics([orders], operation_timeout=10)
    assert admin_error(fs[orders]) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    fs = admin.describe_configs([ConfigResource(ResourceType.TOPIC, orders)])
    assert admin_error(list(fs.values())[0]) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    fs = admin.describe_configs([ConfigResource(ResourceType.BROKER, "1")])
    assert admin_error(list(fs.values())[0]) == KafkaError.CLUSTER_AUTHORIZATION_FAILED
    # The topics are still there (the super user sees both).
    assert {orders, other} <= topics_seen(ab, "admin")

    # Metadata leaves out what alice may not describe.
    seen = topics_seen(ab, "alice")
    assert orders in seen and other not in seen

    # Denials are counted in /metrics.
    with urllib.request.urlopen(f"http://{ab.broker.http}/metrics", timeout=10) as r:
        text = r.read().decode()
    denials = [line for line in text.splitlines()
               if line.startswith("skein_authorization_denials_total")]
    assert denials and float(denials[0].split()[-1]) > 0
    assert "authorization denied" in ab.broker.log()


def test_literal_prefixed_and_wildcard_acls_match_and_deny_wins(ab):
    pay, payx, secret, anyt = uniq("pay"), uniq("payx"), uniq("secret"), uniq("any")
    for t in (pay, payx, secret, anyt):
        create_topic(ab.broker, t, partitions=1)
    # bob: a prefixed ALLOW on "pay-" (payx-… does not start with it).
    ab.acl("add", "--allow-principal", "User:bob", "--operation", "Write", "--topic", "pay-",
           "--resource-pattern-type", "prefixed")
    assert produce_one(ab, "bob", pay) is None
    assert produce_one(ab, "bob", payx) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # carol: a wildcard ALLOW, and a literal DENY on one topic, which wins.
    ab.acl("add", "--allow-principal", "User:carol", "--operation", "All", "--topic", "*")
    ab.acl("add", "--deny-principal", "User:carol", "--operation", "Write", "--topic", secret)
    assert produce_one(ab, "carol", anyt) is None
    assert produce_one(ab, "carol", secret) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # A DENY for User:* applies to carol too, and on a prefix.
    ab.acl("add", "--deny-principal", "User:*", "--operation", "Describe", "--topic", "secret-",
           "--resource-pattern-type", "prefixed")
    assert secret not in topics_seen(ab, "carol")
    assert anyt in topics_seen(ab, "carol")
    # dave has no ACL at all: nothing (allow.everyone.if.no.acl.found is false).
    assert produce_one(ab, "dave", anyt) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert not {pay, payx, secret, anyt} & topics_seen(ab, "dave")


def test_super_users_bypass(ab):
    t = uniq("super")
    admin = AdminClient(ab.conf("admin"))
    fs = admin.create_topics([NewTopic(t, num_partitions=1, replication_factor=1)])
    assert admin_error(fs[t]) is None
    wait_until(lambda: t in topics_seen(ab, "admin"), DEFAULT_TIMEOUT_S, f"{t} in Metadata")
    # A DENY of everything to everyone does not stop a super user.
    ab.acl("add", "--deny-principal", "User:*", "--operation", "All", "--topic", t)
    assert produce_one(ab, "admin", t) is None
    got, err = consume_group(ab, "admin", t, uniq("g"), 1)
    assert err is None and len(got) == 1
    assert produce_one(ab, "carol", t) == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_cli_add_list_remove_round_trip(ab):
    t = uniq("cli")
    ab.acl("add", "--allow-principal", "User:erin", "--allow-principal", "User:frank",
           "--operation", "Read", "--operation", "Describe", "--topic", t,
           "--allow-host", "10.0.0.1")
    listed = json.loads(ab.acl("list", "--topic", t, "--output", "json").stdout)
    assert len(listed) == 4
    assert {(a["principal"], a["operation"], a["host"], a["permission"], a["pattern_type"])
            for a in listed} == {
        (p, o, "10.0.0.1", "ALLOW", "LITERAL")
        for p in ("User:erin", "User:frank") for o in ("READ", "DESCRIBE")}
    # Adding the same binding again is a success that adds nothing.
    ab.acl("add", "--allow-principal", "User:erin", "--operation", "Read", "--topic", t,
           "--allow-host", "10.0.0.1")
    assert len(json.loads(ab.acl("list", "--topic", t, "--output", "json").stdout)) == 4
    # --principal filters the list.
    mine = json.loads(ab.acl("list", "--topic", t, "--principal", "User:erin",
                             "--output", "json").stdout)
    assert {a["principal"] for a in mine} == {"User:erin"}
    removed = json.loads(ab.acl("remove", "--allow-principal", "User:erin", "--topic", t,
                                "--output", "json").stdout)
    assert len(removed) == 2
    left = json.loads(ab.acl("list", "--topic", t, "--output", "json").stdout)
    assert {a["principal"] for a in left} == {"User:frank"}
    ab.acl("remove", "--topic", t)
    assert json.loads(ab.acl("list", "--topic", t, "--output", "json").stdout) == []
    # Bad input: the CLI refuses what Kafka would refuse.
    assert "unknown operation" in ab.acl("add", "--allow-principal", "User:x", "--operation",
                                         "Fly", "--topic", t, check=1).stderr


def test_acl_apis_need_cluster_permissions(ab):
    from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation,
                                       AclPermissionType, ResourcePatternType)
    from confluent_kafka.admin import ResourceType as RT

    binding = AclBinding(RT.TOPIC, "x", ResourcePatternType.LITERAL, "User:alice", "*",
                         AclOperation.READ, AclPermissionType.ALLOW)
    alice = AdminClient(ab.conf("alice"))
    fs = alice.create_acls([binding])
    assert admin_error(fs[binding]) == KafkaError.CLUSTER_AUTHORIZATION_FAILED
    flt = AclBindingFilter(RT.ANY, None, ResourcePatternType.ANY, None, None,
                           AclOperation.ANY, AclPermissionType.ANY)
    # librdkafka 2.16 hands back an empty list for a DescribeAcls error: ask with kafka-python.
    from kafka.admin import (ACLFilter, ACLOperation, ACLPermissionType,
                             ACLResourcePatternType, KafkaAdminClient, ResourcePatternFilter)
    from kafka.admin import ResourceType as KRT
    from kafka.errors import ClusterAuthorizationFailedError
    kp = KafkaAdminClient(bootstrap_servers=ab.sasl, security_protocol="SASL_PLAINTEXT",
                          sasl_mechanism="PLAIN", sasl_plain_username="alice",
                          sasl_plain_password=USERS["alice"])
    try:
        with pytest.raises(ClusterAuthorizationFailedError):
            kp.describe_acls(ACLFilter(
                principal=None, host=None, operation=ACLOperation.ANY,
                permission_type=ACLPermissionType.ANY,
                resource_pattern=ResourcePatternFilter(KRT.ANY, None,
                                                       ACLResourcePatternType.ANY)))
    finally:
        kp.close()
    # The super user may.
    admin = AdminClient(ab.conf("admin"))
    assert admin_error(admin.create_acls([binding])[binding]) is None
    found = admin.describe_acls(flt).result(timeout=DEFAULT_TIMEOUT_S)
    assert binding in found
    exact = AclBindingFilter(RT.TOPIC, "x", ResourcePatternType.LITERAL, "User:alice", "*",
                             AclOperation.READ, AclPermissionType.ALLOW)
    deleted = admin.delete_acls([exact])[exact].result(timeout=DEFAULT_TIMEOUT_S)
    assert deleted == [binding]


def test_kafka_python_admin_acls(ab):
    from kafka.admin import (ACL, ACLFilter, ACLOperation, ACLPermissionType,
                             ACLResourcePatternType, KafkaAdminClient, ResourcePattern,
                             ResourcePatternFilter, ResourceType)

    name = uniq("kp")
    admin = KafkaAdminClient(bootstrap_servers=ab.bootstrap)
    try:
        acl = ACL(principal="User:gina", host="*", operation=ACLOperation.WRITE,
                  permission_type=ACLPermissionType.ALLOW,
                  resource_pattern=ResourcePattern(ResourceType.TOPIC, name,
                                                   ACLResourcePatternType.PREFIXED))
        result = admin.create_acls([acl])
        assert len(result["succeeded"]) == 1 and not result["failed"]
        flt = ACLFilter(principal=None, host=None, operation=ACLOperation.ANY,
                        permission_type=ACLPermissionType.ANY,
                        resource_pattern=ResourcePatternFilter(ResourceType.TOPIC, name,
                                                               ACLResourcePatternType.ANY))
        acls, error = admin.describe_acls(flt)
        assert error.errno == 0
        assert [(a.principal, a.operation, a.resource_pattern.pattern_type) for a in acls] == [
            ("User:gina", ACLOperation.WRITE, ACLResourcePatternType.PREFIXED)]
        # MATCH finds the prefixed ACL from a longer literal name (and the wildcard ACLs an
        # earlier test made, as Kafka does).
        match = ACLFilter(principal=None, host=None, operation=ACLOperation.ANY,
                          permission_type=ACLPermissionType.ANY,
                          resource_pattern=ResourcePatternFilter(
                              ResourceType.TOPIC, name + "-orders",
                              ACLResourcePatternType.MATCH))
        acls, _ = admin.describe_acls(match)
        assert "User:gina" in {a.principal for a in acls}
        assert all(a.principal == "User:gina" or a.resource_pattern.resource_name == "*"
                   for a in acls)
        deleted = admin.delete_acls([flt])
        assert len(deleted) == 1
        _, matched, error = deleted[0]
        assert error.errno == 0
        assert [a.principal for a in matched] == ["User:gina"]
        acls, _ = admin.describe_acls(flt)
        assert acls == []
    finally:
        admin.close()


def test_acl_apis_without_an_authorizer(broker):
    out = skein("acl", "list", bootstrap=broker.bootstrap, check=1)
    assert "SECURITY_DISABLED" in out.stderr


def test_acls_survive_a_restart(tmp_path):
    b = _new_broker(tmp_path / "data", sets=[f"authorizer.class.name={AUTHORIZER}",
                                             "super.users=User:ANONYMOUS"])
    try:
        skein("acl", "add", "--allow-principal", "User:kept", "--operation", "Read",
              "--group", "g1", bootstrap=b.bootstrap, check=0)
        b.restart()
        listed = json.loads(skein("acl", "list", "--output", "json",
                                  bootstrap=b.bootstrap, check=0).stdout)
        assert [(a["principal"], a["resource_type"], a["resource_name"]) for a in listed] == [
            ("User:kept", "GROUP", "g1")]
    finally:
        b.close()


def test_cluster_with_the_authorizer_on(tmp_path):
    """Three voters, the authorizer on and the PLAINTEXT inter-broker principal
    (User:ANONYMOUS) a super user, as Kafka's docs require: replication (follower fetches
    need CLUSTER_ACTION) works, and an ACL created through one node is applied by all."""
    from cluster import BASE_SETS, Cluster, create_topics

    nodes = []
    c = Cluster(tmp_path / "cluster", voters=3, registry=nodes,
                sets=BASE_SETS + [f"authorizer.class.name={AUTHORIZER}",
                                  "super.users=User:ANONYMOUS"]).start()
    try:
        topic = uniq("acl-rf3")
        create_topics(c[1].bootstrap, {topic: 1}, replication_factor=3)
        p = Producer({"bootstrap.servers": c[2].bootstrap, "acks": "all",
                      "enable.idempotence": True, "message.timeout.ms": 60000})
        reports = []
        for i in range(5):
            p.produce(topic, f"v{i}".encode(), on_delivery=lambda e, m: reports.append(e))
        p.flush(90)
        assert reports == [None] * 5
        skein("acl", "add", "--allow-principal", "User:zed", "--operation", "Read",
              "--topic", topic, bootstrap=c[1].bootstrap, check=0)
        for n in (2, 3):
            def listed(n=n):
                out = skein("acl", "list", "--topic", topic, "--output", "json",
                            bootstrap=c[n].bootstrap, check=0).stdout
                return [a["principal"] for a in json.loads(out)] == ["User:zed"]
            wait_until(listed, DEFAULT_TIMEOUT_S, f"node {n} to list the ACL")
    finally:
        c.close()


def test_bad_acls_and_filters_are_invalid_request(ab):
    """Hand-made CreateAcls v1 and DescribeAcls v1 (what a client library would refuse to
    send): each bad ACL gets INVALID_REQUEST, the good one in the same request is created."""
    import wire

    def creation(rtype, name, ptype, principal, host, operation, permission):
        return (wire.i8(rtype) + wire.string(name) + wire.i8(ptype) + wire.string(principal)
                + wire.string(host) + wire.i8(operation) + wire.i8(permission))

    good = uniq("wire")
    creations = [
        creation(2, good, 3, "User:h", "*", 3, 3),  # TOPIC literal READ ALLOW
        creation(2, good, 2, "User:h", "*", 3, 3),  # pattern MATCH
        creation(2, good, 3, "User:h", "*", 1, 3),  # operation ANY
        creation(4, "other", 3, "User:h", "*", 7, 3),  # CLUSTER not named kafka-cluster
        creation(2, good, 3, "h", "*", 3, 3),  # principal not Type:Name
        creation(1, good, 3, "User:h", "*", 3, 3),  # resource type ANY
    ]
    body = wire.i32(len(creations)) + b"".join(creations)
    _, r = wire.roundtrip(ab.bootstrap, wire.request(30, 1, 7, body))
    r.i32()  # throttle_time_ms
    codes = []
    for _ in range(r.i32()):
        codes.append(r.i16())
        r.string()
    r.assert_at_end("a CreateAcls v1 response")
    assert codes == [0, 42, 42, 42, 42, 42]
    listed = json.loads(ab.acl("list", "--topic", good, "--output", "json").stdout)
    assert [(a["principal"], a["operation"]) for a in listed] == [("User:h", "READ")]
    # DescribeAcls v1 with an UNKNOWN resource type: INVALID_REQUEST.
    body = (wire.i8(0) + wire.string(None) + wire.i8(1) + wire.string(None) + wire.string(None)
            + wire.i8(1) + wire.i8(1))
    _, r = wire.roundtrip(ab.bootstrap, wire.request(29, 1, 8, body))
    r.i32()
    assert r.i16() == 42
