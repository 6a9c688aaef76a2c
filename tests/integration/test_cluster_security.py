"""Cluster traffic over TLS and SASL (issue 15: "brokers and controllers talk over SASL_SSL when
configured to"), against real processes: three voters whose inter-broker listener is SASL_SSL
(PLAIN or SCRAM-SHA-512), whose controller listener is SSL with mutual TLS, and whose clients
use a PLAINTEXT listener. Clients are confluent-kafka; the certificates (a CA and one
certificate per node, valid for both server and client use, SAN 127.0.0.1) are made here with
the `cryptography` package.

- a topic with replication factor 3 takes acks=all writes, every record reads back, and after
  a kill -9 of a partition leader the leadership moves and every record is still there;
- a node with the wrong inter-broker password gets SASL_AUTHENTICATION_FAILED from its peers,
  logs it, and never gets back into an ISR it has to fetch for;
- the links are TLS: each node logs its outbound TLS handshakes (inter-broker and controller)
  at debug, and a plaintext client on the inter-broker or controller port, or a TLS client
  without a certificate on the controller port, is closed.
"""

import datetime
import ipaddress
import re
import socket
import ssl
import struct
import time

import pytest
from confluent_kafka import KafkaError, Producer

from cluster import BASE_SETS, Cluster, Node, create_topics, free_port, try_metadata_of
from helpers import assert_delivered, consume_to_end, produce_all, unique_topic, wait_until

x509 = pytest.importorskip("cryptography.x509", reason="the cryptography package is needed")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402

WAIT_S = 60.0
PASSWORD = "broker-secret"
CONTROLLER_PASSWORD = "controller-secret"
# What Skein logs at debug for its own TLS handshakes, and the per-node log filter for them.
TLS_LOG = {
    "SKEIN_LOG": "info,openraft=error,skein_server::tls=debug,skein_broker::sasl::controller=debug"
}


# -- certificates ------------------------------------------------------------------------------


def _cert(cn, key, issuer, issuer_key, ca=False):
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    b = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        b = b.add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
    else:
        # A node is a TLS server (its listeners) and a TLS client (its links to the others).
        b = b.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        ).add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return b.sign(issuer_key, hashes.SHA256()), name


def _pem(cert, key=None):
    out = cert.public_bytes(serialization.Encoding.PEM)
    if key is not None:
        out += key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    return out


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("cluster-pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca, ca_name = _cert("Skein Cluster CA", ca_key, None, ca_key, ca=True)
    (d / "ca.pem").write_bytes(_pem(ca))
    for i in (1, 2, 3):
        key = ec.generate_private_key(ec.SECP256R1())
        cert, _ = _cert(f"node-{i}", key, ca_name, ca_key)
        (d / f"node{i}.pem").write_bytes(_pem(cert, key))
    return d


# -- a cluster whose links are secured ----------------------------------------------------------


class SecureNode(Node):
    """A voter with three listeners: INTERNAL (SASL_SSL, inter-broker, on the node's port),
    CLIENT (PLAINTEXT, port 0: what the tests' clients use as `bootstrap`) and CONTROLLER (SSL,
    mutual TLS)."""

    def __init__(self, *args, node_sets=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.node_sets = list(node_sets)
        self.extra_env = dict(TLS_LOG)

    def command(self, port):
        listeners = (
            f"INTERNAL://127.0.0.1:{port},CLIENT://127.0.0.1:0,"
            f"CONTROLLER://127.0.0.1:{self.controller_port}"
        )
        args = super().command(port) + ["--set", f"listeners={listeners}"]
        for kv in self.node_sets:
            args += ["--set", kv]
        return args

    def wait_started(self, deadline):
        why = super().wait_started(deadline)
        if why is None:
            self.internal = self.bootstrap
            found = None
            for line in self.log().splitlines():
                m = re.search(r"skein started .*listeners=\S*?\bCLIENT://(127\.0\.0\.1:\d+)", line)
                if m:
                    found = m.group(1)  # the last start's
            assert found, f"no CLIENT listener in node {self.node_id}'s start line"
            self.bootstrap = found
        return why


class SecureCluster(Cluster):
    def __init__(self, base_dir, pki, mechanism, per_node=None, controller=None, **kwargs):
        super().__init__(base_dir, **kwargs)
        self.pki = pki
        self.mechanism = mechanism
        self.per_node = per_node or {}
        # None: the controller listener is SSL with mutual TLS; else SASL_SSL with this
        # mechanism (sasl.mechanism.controller.protocol).
        self.controller = controller

    def node_sets(self, i):
        password = self.per_node.get(i, {}).get("password", PASSWORD)
        mech = self.mechanism.lower()
        module = (
            "org.apache.kafka.common.security.plain.PlainLoginModule"
            if self.mechanism == "PLAIN"
            else "org.apache.kafka.common.security.scram.ScramLoginModule"
        )
        jaas = f'{module} required username="broker" password="{password}"'
        if self.mechanism == "PLAIN":
            jaas += f' user_broker="{PASSWORD}"'
        sets = [
            f"listener.security.protocol.map=INTERNAL:SASL_SSL,CLIENT:PLAINTEXT,"
            f"CONTROLLER:{'SASL_SSL' if self.controller else 'SSL'}",
            "inter.broker.listener.name=INTERNAL",
            f"listener.name.internal.sasl.enabled.mechanisms={self.mechanism}",
            f"sasl.mechanism.inter.broker.protocol={self.mechanism}",
            f"listener.name.internal.{mech}.sasl.jaas.config={jaas};",
            f"ssl.keystore.location={self.pki / f'node{i}.pem'}",
            f"ssl.truststore.location={self.pki / 'ca.pem'}",
            "replica.lag.time.max.ms=3000",
        ]
        if not self.controller:
            return sets + ["listener.name.controller.ssl.client.auth=required"]
        # Controllers log in with PLAIN, as Kafka advises (SCRAM users live in the metadata
        # log the controllers serve). The same line holds the node's login and the users it
        # accepts: a node given another secret can neither log in nor be logged in to.
        secret = self.per_node.get(i, {}).get("controller_password", CONTROLLER_PASSWORD)
        cmech = self.controller.lower()
        return sets + [
            f"listener.name.controller.sasl.enabled.mechanisms={self.controller}",
            f"sasl.mechanism.controller.protocol={self.controller}",
            f"listener.name.controller.{cmech}.sasl.jaas.config="
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'username="controller" password="{secret}" user_controller="{secret}";',
        ]

    def new_voters(self):
        controller_ports = {i: free_port() for i in self.voter_ids}
        self.quorum = ",".join(f"{i}@127.0.0.1:{controller_ports[i]}" for i in self.voter_ids)
        return {
            i: SecureNode(
                i,
                self.base_dir / f"attempt{self.attempt}" / f"node{i}",
                free_port(),
                controller_ports[i],
                self.quorum,
                sets=self.sets,
                node_sets=self.node_sets(i),
            )
            for i in self.voter_ids
        }


@pytest.fixture
def secure_cluster(tmp_path, pki):
    clusters = []
    nodes = []  # conftest attaches their logs to a failed test's report

    def start(mechanism="PLAIN", per_node=None, controller=None, launch_only=False):
        c = SecureCluster(
            tmp_path / f"cluster{len(clusters)}", pki, mechanism, per_node=per_node,
            controller=controller, sets=BASE_SETS, registry=nodes,
        )
        clusters.append(c)
        if launch_only:
            # The caller waits for the nodes it expects to start.
            c.attempt += 1
            c.nodes = c.new_voters()
            nodes.extend(c.nodes.values())
            for n in c.nodes.values():
                n.launch()
            return c
        return c.start()

    yield start
    for c in clusters:
        c.close()


def scram_users(cluster, mechanism):
    """SCRAM credentials live in the metadata log (which travels over the controller
    listener): created through a client listener, they reach every node."""
    from helpers import skein

    node = cluster.running()[0]
    skein("user", "create", "broker", "--password", PASSWORD, "--mechanism", mechanism,
          bootstrap=node.bootstrap, check=0)


def isr_of(cluster, topic, via=None):
    nodes = [via] if via else cluster.running()
    for n in nodes:
        md = try_metadata_of(n.bootstrap)
        if md and topic in md.topics and "error" not in md.topics[topic]:
            return md.topics[topic]
    return None


def read_all(node, topic):
    """Every record of `topic` (3 partitions) through `node`, or None while a partition's
    new leader says OFFSET_NOT_AVAILABLE."""
    from confluent_kafka import KafkaException

    try:
        return consume_to_end(node, topic, [0, 1, 2], timeout=WAIT_S)
    except KafkaException as e:
        if e.args[0].code() == KafkaError.OFFSET_NOT_AVAILABLE:
            return None
        raise


def replicate_300(c, topic):
    """Creates `topic` (3 partitions, RF=3, min.insync.replicas=2), waits for every ISR to be
    [1, 2, 3], produces 300 records with acks=all and reads them all back from node 2 (a
    follower of some partitions) with dense offsets. Returns the partitions' state, the values
    and the producer."""
    create_topics(c[1].bootstrap, {topic: 3}, replication_factor=3,
                  config={"min.insync.replicas": "2"})
    full = wait_until(
        lambda: (lambda p: p if p and all(sorted(i.isr) == [1, 2, 3] for i in p.values()) else None)(
            isr_of(c, topic)
        ),
        WAIT_S, f"{topic}: every partition with ISR [1, 2, 3]",
    )
    producer = Producer({"bootstrap.servers": c.bootstrap_all(), "acks": "all",
                         "enable.idempotence": True, "linger.ms": 5})
    values = [f"v{i}".encode() for i in range(300)]
    reports = produce_all(producer, [(topic, {"key": f"k{i % 17}".encode(), "value": v})
                                     for i, v in enumerate(values)], timeout=WAIT_S)
    assert_delivered(reports)
    got = consume_to_end(c[2], topic, [0, 1, 2], timeout=WAIT_S)
    assert sorted(r.value for rs in got.values() for r in rs) == sorted(values)
    for p, rs in got.items():
        assert [r.offset for r in rs] == list(range(len(rs))), p
    return full, values, producer


def node_output(node):
    """What the node's process wrote (the harness's own lines, such as the command line with
    its settings, left out)."""
    return [line for line in node.log().splitlines() if re.match(r"\[node \d+ std(err|out)#", line)]


def closed_within(sock, timeout):
    sock.settimeout(timeout)
    try:
        while True:
            if not sock.recv(4096):
                return True
    except socket.timeout:
        return False
    except (ConnectionResetError, ssl.SSLError, OSError):
        return True


# -- tests -------------------------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-512"])
def test_replication_over_sasl_ssl_and_controllers_over_mutual_tls(secure_cluster, mechanism):
    c = secure_cluster(mechanism)
    if mechanism != "PLAIN":
        # Until the user exists the followers' logins fail; they retry and get in.
        scram_users(c, mechanism)
    topic = unique_topic("secure")
    # Every follower has everything: the high watermarks moved past it over SASL_SSL fetches.
    full, values, producer = replicate_300(c, topic)

    victim = full[0].leader
    c.kill9(victim)
    survivors = [n for n in c.running()]
    moved = wait_until(
        lambda: (lambda p: p if p and all(i.leader not in (-1, victim) for i in p.values()) else None)(
            isr_of(c, topic, via=survivors[0])
        ),
        WAIT_S, f"{topic}: leaders off node {victim}",
    )
    assert moved[0].leader != victim
    # A new leader answers OFFSET_NOT_AVAILABLE until its high watermark caught up, as Kafka.
    got = wait_until(lambda: read_all(survivors[0], topic), WAIT_S, f"{topic} readable")
    assert sorted(r.value for rs in got.values() for r in rs) == sorted(values)
    # And writes go on with acks=all on the two that are left (min.insync.replicas=2).
    more = produce_all(producer, [(topic, {"key": b"after", "value": b"after-kill"})],
                       timeout=WAIT_S)
    assert_delivered(more)

    # The links were TLS: outbound handshakes logged by every survivor, both kinds.
    for n in survivors:
        lines = node_output(n)
        for listener in ("INTERNAL", "CONTROLLER"):
            assert any("outbound TLS handshake done" in line and f"listener={listener}" in line
                       for line in lines), f"node {n.node_id}: no outbound TLS to {listener}"
        assert any("controller listener: TLS handshake done" in line for line in lines), n


def test_plaintext_and_certificateless_clients_are_closed(secure_cluster, pki):
    c = secure_cluster("PLAIN")
    n = c[1]
    # A Kafka ApiVersions request in plaintext on the SASL_SSL inter-broker port.
    host, port = n.internal.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(struct.pack(">i", 10) + struct.pack(">hhih", 18, 0, 7, -1))
        assert closed_within(s, 20), "a plaintext request on the SASL_SSL listener got an answer"
    # Skein's controller protocol in plaintext (a length prefix and garbage).
    with socket.create_connection(("127.0.0.1", n.controller_port), timeout=10) as s:
        s.sendall(struct.pack(">I", 8) + b"SKRF\x00\x01\x00\x00")
        assert closed_within(s, 20), "a plaintext client on the controller listener got an answer"
    # TLS without a client certificate: mutual TLS refuses it.
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    with socket.create_connection(("127.0.0.1", n.controller_port), timeout=10) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                s.sendall(struct.pack(">I", 8) + b"SKRF\x00\x01\x00\x00")
                assert closed_within(s, 20), "a client without a certificate was served"
        except (ssl.SSLError, ConnectionResetError):
            pass  # refused during the handshake (TLS 1.2), as good


def test_a_wrong_inter_broker_password_keeps_the_node_out_of_the_isr(secure_cluster):
    c = secure_cluster("PLAIN", per_node={3: {"password": "wrong"}})
    topic = unique_topic("wrong-pw")
    create_topics(c[1].bootstrap, {topic: 3}, replication_factor=3)
    producer = Producer({"bootstrap.servers": c.bootstrap_all(), "acks": "1", "linger.ms": 5})
    assert_delivered(produce_all(
        producer, [(topic, {"key": f"k{i}".encode(), "value": b"x"}) for i in range(30)],
        timeout=WAIT_S,
    ))
    # Node 3 cannot fetch from the other two: out of those partitions' ISR once the leader
    # has waited replica.lag.time.max.ms; the partitions it leads keep their followers.
    parts = wait_until(
        lambda: (lambda p: p if p and all(
            (3 not in i.isr) if i.leader != 3 else sorted(i.isr) == [1, 2, 3]
            for i in p.values()
        ) else None)(isr_of(c, topic, via=c[1])),
        WAIT_S, f"{topic}: node 3 out of the ISR of every partition it follows",
    )
    assert any(i.leader != 3 for i in parts.values())
    lines = node_output(c[3])
    failed = [line for line in lines if "inter-broker authentication failed" in line]
    assert failed, "\n".join(lines[-40:])
    assert any("error 58" in line for line in failed), failed  # SASL_AUTHENTICATION_FAILED
    assert not any(PASSWORD in line or 'password="' in line for line in lines), "a password was logged"


def test_controllers_over_sasl_ssl(secure_cluster):
    """Controller listener SASL_SSL (PLAIN) and inter-broker SASL_SSL: Raft between the
    controllers and the brokers' registrations and heartbeats all log in."""
    c = secure_cluster("PLAIN", controller="PLAIN")
    topic = unique_topic("ctl-sasl")
    replicate_300(c, topic)
    # Every node accepted SASL logins on its controller listener, after TLS.
    for n in c.running():
        lines = node_output(n)
        assert any("controller listener: SASL login done" in line and "User:controller" in line
                   for line in lines), f"node {n.node_id}: no SASL login on the controller listener"
        assert any("outbound TLS handshake done" in line and "listener=CONTROLLER" in line
                   for line in lines), f"node {n.node_id}: no outbound TLS to CONTROLLER"
        assert not any(CONTROLLER_PASSWORD in line for line in lines), "a password was logged"


def test_a_wrong_controller_password_keeps_the_node_out(secure_cluster):
    c = secure_cluster("PLAIN", controller="PLAIN",
                       per_node={3: {"controller_password": "wrong"}}, launch_only=True)
    deadline = time.monotonic() + 90
    for i in (1, 2):
        why = c[i].wait_started(deadline)
        assert why is None, why
    # The healthy two refuse node 3's logins with SASL_AUTHENTICATION_FAILED...
    wait_until(
        lambda: all(any("closing controller connection" in line
                        and "SASL authentication failed" in line for line in node_output(c[i]))
                    for i in (1, 2)),
        WAIT_S, "nodes 1 and 2 refusing node 3's SASL logins",
    )
    # ... node 3 logs its failed logins and never starts (it cannot register) ...
    wait_until(lambda: any("SASL PLAIN login to the controller" in line and "failed" in line
                           for line in node_output(c[3])),
               WAIT_S, "node 3 logging its failed controller logins")
    assert c[3].alive() and "skein started" not in c[3].log()
    # ... is not a registered broker ...
    md = wait_until(lambda: try_metadata_of(c[1].bootstrap), WAIT_S, "metadata from node 1")
    assert sorted(md.brokers) == [1, 2], md.brokers
    # ... and the other two keep working: RF=2 topic, acks=all, offsets as expected.
    topic = unique_topic("ctl-wrong")
    create_topics(c[1].bootstrap, {topic: 1}, replication_factor=2)
    producer = Producer({"bootstrap.servers": f"{c[1].bootstrap},{c[2].bootstrap}",
                         "acks": "all", "linger.ms": 5})
    assert_delivered(produce_all(
        producer, [(topic, {"key": b"k", "value": f"v{i}".encode()}) for i in range(20)],
        timeout=WAIT_S,
    ))
    got = consume_to_end(c[2], topic, [0], timeout=WAIT_S)
    assert [r.offset for r in got[0]] == list(range(20))
    for n in (c[1], c[2], c[3]):
        assert not any("wrong" in line and "password" in line for line in node_output(n))
