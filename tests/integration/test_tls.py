"""TLS listeners (SSL, mutual TLS) against real clients: confluent-kafka and kcat (librdkafka),
kafka-python, and Python's ssl module for what clients hide (the server certificate, refused
handshakes, garbage before the handshake).

Every certificate is generated here with the `cryptography` package: a CA, the broker's
certificate (SAN 127.0.0.1 and localhost), a client certificate, and a second "rogue" CA
with its own client certificate.
"""

import datetime
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from helpers import SKEIN_BIN, broker_env, unique_topic, wait_until

x509 = pytest.importorskip("cryptography.x509", reason="the cryptography package is needed")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

TIMEOUT_S = 30
CLIENT_DN = "CN=client-1,OU=eng,O=Acme\\, Inc,C=US"
KCAT = shutil.which("kcat")


# -- certificates ------------------------------------------------------------------------------


def _name(cn, ou=None, o=None, c=None):
    attrs = []
    if c:
        attrs.append(x509.NameAttribute(NameOID.COUNTRY_NAME, c))
    if o:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, o))
    if ou:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def _cert(subject, key, issuer_name, issuer_key, *, ca=False, server=False, serial=None):
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(serial or x509.random_serial_number())
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
        usage = x509.oid.ExtendedKeyUsageOID
        b = b.add_extension(
            x509.ExtendedKeyUsage([usage.SERVER_AUTH if server else usage.CLIENT_AUTH]),
            critical=False,
        )
    if server:
        import ipaddress

        b = b.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return b.sign(issuer_key, hashes.SHA256())


def _pem_cert(c):
    return c.public_bytes(serialization.Encoding.PEM)


def _pem_key(k, password=None):
    enc = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


class Pki:
    """The files of one test module's certificates."""

    def __init__(self, d):
        self.dir = d
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = _name("Skein Test CA", o="Acme")
        self.ca_cert = _cert(ca_name, ca_key, ca_name, ca_key, ca=True)
        self.ca_key, self.ca_name = ca_key, ca_name
        self.ca = d / "ca.pem"
        self.ca.write_bytes(_pem_cert(self.ca_cert))

        self.server = d / "server.pem"  # chain and key in one file, as Kafka's PEM key store
        self.server_serial = self.write_server_cert(self.server, "skein-broker")

        client_key = ec.generate_private_key(ec.SECP256R1())
        client = _cert(
            _name("client-1", ou="eng", o="Acme, Inc", c="US"), client_key, ca_name, ca_key
        )
        self.client_cert = d / "client.crt"
        self.client_key = d / "client.key"
        self.client_cert.write_bytes(_pem_cert(client))
        self.client_key.write_bytes(_pem_key(client_key))

        rogue_key = ec.generate_private_key(ec.SECP256R1())
        rogue_name = _name("Rogue CA")
        rogue_ca = _cert(rogue_name, rogue_key, rogue_name, rogue_key, ca=True)
        self.rogue_ca = d / "rogue-ca.pem"
        self.rogue_ca.write_bytes(_pem_cert(rogue_ca))
        rc_key = ec.generate_private_key(ec.SECP256R1())
        rc = _cert(_name("intruder"), rc_key, rogue_name, rogue_key)
        self.rogue_cert = d / "rogue.crt"
        self.rogue_key = d / "rogue.key"
        self.rogue_cert.write_bytes(_pem_cert(rc))
        self.rogue_key.write_bytes(_pem_key(rc_key))

    def write_server_cert(self, path, cn, serial=None, password=None, scheme="pbkdf2"):
        """Writes a new server certificate and key to `path` atomically; returns its serial.
        With `password`, the key is encrypted PKCS#8: by `openssl pkcs8 -topk8` with PBES2
        (`pbkdf2`: -v2 aes-256-cbc; `scrypt`: -scrypt) or by the cryptography package."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(_name(cn, o="Acme"), key, self.ca_name, self.ca_key, server=True,
                     serial=serial)
        if password is None:
            key_pem = _pem_key(key)
        elif scheme == "cryptography":
            key_pem = _pem_key(key, password.encode())
        else:
            flags = ["-v2", "aes-256-cbc"] if scheme == "pbkdf2" else ["-scrypt"]
            key_pem = subprocess.run(
                ["openssl", "pkcs8", "-topk8", *flags, "-passout", f"pass:{password}"],
                input=_pem_key(key), capture_output=True, check=True, timeout=60,
            ).stdout
            assert b"BEGIN ENCRYPTED PRIVATE KEY" in key_pem
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(_pem_cert(cert) + key_pem)
        tmp.replace(path)
        return cert.serial_number


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp("pki"))


# -- brokers and clients -----------------------------------------------------------------------


def tls_sets(pki, *extra, keystore=None):
    return [
        "listeners=PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0",
        f"ssl.keystore.location={keystore or pki.server}",
        f"ssl.truststore.location={pki.ca}",
        *extra,
    ]


def ssl_port(broker):
    found = re.search(r"skein started .*listeners=\S*?\bSSL://127\.0\.0\.1:(\d+)", broker.log())
    assert found, f"no SSL listener in the start line\n{broker.log()}"
    return int(found.group(1))


def ssl_conf(broker, pki, client_cert=True, ca=None):
    conf = {
        "bootstrap.servers": f"127.0.0.1:{ssl_port(broker)}",
        "security.protocol": "SSL",
        "ssl.ca.location": str(ca or pki.ca),
    }
    if client_cert:
        conf["ssl.certificate.location"] = str(pki.client_cert)
        conf["ssl.key.location"] = str(pki.client_key)
    return conf


def produce_and_check(conf, topic, n=20):
    """Produces n records with confluent-kafka, then reads them back; asserts offsets 0..n-1
    in order and the values."""
    reports = []
    p = Producer({**conf, "linger.ms": 5})
    for i in range(n):
        p.produce(topic, value=f"v{i}".encode(), key=b"k",
                  on_delivery=lambda err, msg: reports.append((err, msg.partition(), msg.offset())))
    assert p.flush(TIMEOUT_S) == 0, "records left unsent"
    assert [r[0] for r in reports if r[0] is not None] == []
    partitions = {r[1] for r in reports}
    assert len(partitions) == 1, "one key, one partition"
    assert [r[2] for r in reports] == list(range(n))
    c = Consumer({**conf, "group.id": "tls-check", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, partitions.pop(), 0)])
    got = []
    deadline = time.monotonic() + TIMEOUT_S
    while len(got) < n and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            got.append((m.offset(), m.value()))
    c.close()
    assert got == [(i, f"v{i}".encode()) for i in range(n)]


def tls_client_context(pki, cert=True, ca=None):
    ctx = ssl.create_default_context(cafile=str(ca or pki.ca))
    if cert:
        ctx.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    return ctx


def api_versions_over(sock):
    """Sends ApiVersions v0 and returns the response's correlation id (or raises)."""
    sock.sendall(struct.pack(">i", 10) + struct.pack(">hhih", 18, 0, 7, -1))
    head = b""
    while len(head) < 8:
        chunk = sock.recv(8 - len(head))
        if not chunk:
            raise ConnectionError("closed")
        head += chunk
    return struct.unpack(">ii", head)[1]


def closed_within(sock, timeout):
    """Whether the peer closes `sock` (EOF or reset) within `timeout` seconds."""
    sock.settimeout(timeout)
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return True
    except (ConnectionResetError, ssl.SSLError, OSError) as e:
        return not isinstance(e, socket.timeout)


# -- tests -------------------------------------------------------------------------------------


def test_ssl_produce_consume_and_metadata_names_the_ssl_listener(start_broker, pki):
    b = start_broker(sets=tls_sets(pki))
    port = ssl_port(b)
    conf = ssl_conf(b, pki, client_cert=False)
    md = AdminClient(conf).list_topics(timeout=TIMEOUT_S)
    # A client on the SSL listener is told the SSL listener's endpoint, not PLAINTEXT's.
    assert [(x.host, x.port) for x in md.brokers.values()] == [("127.0.0.1", port)]
    plain = AdminClient({"bootstrap.servers": b.bootstrap}).list_topics(timeout=TIMEOUT_S)
    assert [x.port for x in plain.brokers.values()] == [b.port]
    produce_and_check(conf, unique_topic("tls"))


def test_mutual_tls_with_every_client_and_the_principal_is_the_dn(start_broker, pki):
    b = start_broker(
        sets=tls_sets(pki, "ssl.client.auth=required"),
        env={"SKEIN_LOG": "info,openraft=error,skein_server=debug"},
    )
    conf = ssl_conf(b, pki)
    produce_and_check(conf, unique_topic("mtls"))
    wait_until(
        lambda: f"principal=User:{CLIENT_DN}" in b.log(),
        TIMEOUT_S,
        "the client certificate's DN as the connection's principal in the log",
    )

    # kafka-python
    from kafka import KafkaConsumer, KafkaProducer

    topic = unique_topic("mtls-kp")
    kp = dict(
        bootstrap_servers=f"127.0.0.1:{ssl_port(b)}",
        security_protocol="SSL",
        ssl_cafile=str(pki.ca),
        ssl_certfile=str(pki.client_cert),
        ssl_keyfile=str(pki.client_key),
        request_timeout_ms=TIMEOUT_S * 1000,
    )
    producer = KafkaProducer(**kp)
    offsets = [
        producer.send(topic, f"kp{i}".encode(), partition=0).get(TIMEOUT_S).offset
        for i in range(5)
    ]
    producer.close()
    assert offsets == list(range(5))
    consumer = KafkaConsumer(group_id=None, auto_offset_reset="earliest",
                             enable_auto_commit=False, **kp)
    consumer.assign([__import__("kafka").TopicPartition(topic, 0)])
    records = []
    deadline = time.monotonic() + TIMEOUT_S
    while len(records) < 5 and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=500).values():
            records.extend(batch)
    consumer.close()
    assert [(r.offset, r.value) for r in records] == [(i, f"kp{i}".encode()) for i in range(5)]

    # kcat (Debian's, an older librdkafka)
    if KCAT is None:
        print("\n*** SKIPPED: kcat over mutual TLS (kcat is not installed) ***")
        return
    topic = unique_topic("mtls-kcat")
    x = ["-X", "security.protocol=SSL", "-X", f"ssl.ca.location={pki.ca}",
         "-X", f"ssl.certificate.location={pki.client_cert}",
         "-X", f"ssl.key.location={pki.client_key}", "-b", f"127.0.0.1:{ssl_port(b)}"]
    lines = "".join(f"k{i}:kc{i}\n" for i in range(7))
    run = subprocess.run([KCAT, "-P", *x, "-t", topic, "-p", "0", "-K:"], input=lines.encode(),
                         capture_output=True, timeout=60)
    assert run.returncode == 0, run.stderr.decode()
    run = subprocess.run([KCAT, "-C", *x, "-t", topic, "-p", "0", "-o", "beginning", "-e", "-f", "%o %s\n"],
                         capture_output=True, timeout=60)
    assert run.returncode == 0, run.stderr.decode()
    assert run.stdout.decode().splitlines() == [f"{i} kc{i}" for i in range(7)]


def test_principal_mapping_rules(start_broker, pki):
    b = start_broker(
        sets=tls_sets(pki, "ssl.client.auth=required",
                      "ssl.principal.mapping.rules=RULE:^CN=([^,]*),OU=eng,.*$/$1@eng/U,DEFAULT"),
        env={"SKEIN_LOG": "info,openraft=error,skein_server=debug"},
    )
    with socket.create_connection(("127.0.0.1", ssl_port(b)), timeout=10) as raw:
        with tls_client_context(pki).wrap_socket(raw, server_hostname="localhost") as s:
            assert api_versions_over(s) == 7
    wait_until(lambda: "principal=User:CLIENT-1@ENG" in b.log(), TIMEOUT_S,
               "the mapped principal in the log")


def test_required_client_auth_refuses_a_client_without_certificate(start_broker, pki):
    b = start_broker(sets=tls_sets(pki, "ssl.client.auth=required"))
    port = ssl_port(b)
    # Python's ssl: the handshake (or, with TLS 1.3, the first read after it) fails.
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with tls_client_context(pki, cert=False).wrap_socket(
                raw, server_hostname="localhost"
            ) as s:
                api_versions_over(s)
    # A certificate from another CA is refused the same way.
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    ctx.load_cert_chain(str(pki.rogue_cert), str(pki.rogue_key))
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                api_versions_over(s)
    # librdkafka without a certificate cannot fetch metadata.
    admin = AdminClient({**ssl_conf(b, pki, client_cert=False), "socket.timeout.ms": 3000})
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=5)
    # With one, it can.
    assert AdminClient(ssl_conf(b, pki)).list_topics(timeout=TIMEOUT_S).brokers


def test_a_client_trusting_another_ca_refuses_the_broker(start_broker, pki):
    b = start_broker(sets=tls_sets(pki))
    with pytest.raises(ssl.SSLCertVerificationError):
        with socket.create_connection(("127.0.0.1", ssl_port(b)), timeout=10) as raw:
            ssl.create_default_context(cafile=str(pki.rogue_ca)).wrap_socket(
                raw, server_hostname="localhost"
            )
    admin = AdminClient({**ssl_conf(b, pki, client_cert=False, ca=pki.rogue_ca),
                         "socket.timeout.ms": 3000})
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=5)


def test_certificates_are_reloaded_when_the_file_changes(start_broker, pki, tmp_path):
    keystore = tmp_path / "server.pem"
    first = pki.write_server_cert(keystore, "skein-first")
    b = start_broker(sets=tls_sets(pki, "skein.ssl.reload.interval.ms=200", keystore=keystore))
    port = ssl_port(b)

    def serial():
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with ssl.create_default_context(cafile=str(pki.ca)).wrap_socket(
                raw, server_hostname="localhost"
            ) as s:
                der = s.getpeercert(binary_form=True)
        return x509.load_der_x509_certificate(der).serial_number

    assert serial() == first
    second = pki.write_server_cert(keystore, "skein-second")
    wait_until(lambda: serial() == second, TIMEOUT_S, "a new connection to see the new cert")
    # A broken file keeps the last good certificates in use.
    keystore.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64\n")
    wait_until(lambda: "TLS certificates not reloaded" in b.log(), TIMEOUT_S,
               "the failed reload in the log")
    assert serial() == second
    third = pki.write_server_cert(keystore, "skein-third")
    wait_until(lambda: serial() == third, TIMEOUT_S, "the third certificate")
    b.assert_alive()


def test_sighup_reloads_the_certificates(start_broker, pki, tmp_path):
    keystore = tmp_path / "server.pem"
    first = pki.write_server_cert(keystore, "skein-first")
    # A poll interval far beyond the test: only SIGHUP can bring the new certificate in.
    b = start_broker(sets=tls_sets(pki, "skein.ssl.reload.interval.ms=3600000",
                                   keystore=keystore))
    port = ssl_port(b)

    def serial():
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with ssl.create_default_context(cafile=str(pki.ca)).wrap_socket(
                raw, server_hostname="localhost"
            ) as s:
                der = s.getpeercert(binary_form=True)
        return x509.load_der_x509_certificate(der).serial_number

    assert serial() == first
    second = pki.write_server_cert(keystore, "skein-second")
    assert serial() == first
    b.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: serial() == second, TIMEOUT_S, "the certificate after SIGHUP")
    b.assert_alive()


def test_garbage_and_silence_before_the_handshake_close_only_that_connection(start_broker, pki):
    b = start_broker(sets=tls_sets(pki, "skein.ssl.handshake.timeout.ms=1000"))
    port = ssl_port(b)
    conf = ssl_conf(b, pki, client_cert=False)
    topic = unique_topic("tls-steady")
    delivered = []
    stop = threading.Event()

    def produce():
        p = Producer({**conf, "linger.ms": 1})
        i = 0
        while not stop.is_set():
            p.produce(topic, value=f"s{i}".encode(), partition=0,
                      on_delivery=lambda err, msg: delivered.append((err, msg.offset())))
            p.poll(0.01)
            i += 1
        p.flush(TIMEOUT_S)

    t = threading.Thread(target=produce, daemon=True)
    t.start()
    wait_until(lambda: len(delivered) > 10, TIMEOUT_S, "the steady producer to get going")
    garbage = [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x16\x03\x01\xff\xff" + b"\x00" * 300,  # a handshake record claiming 64 KiB
        bytes(range(256)) * 64,
        struct.pack(">i", 10) + struct.pack(">hhih", 18, 0, 7, -1),  # Kafka in the clear
    ]
    for g in garbage:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            try:
                s.sendall(g)
            except OSError:
                pass  # closed already while sending
            assert closed_within(s, 15), f"connection not closed after {g[:16]!r}"
    # Silence: closed by the handshake timeout.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        started = time.monotonic()
        assert closed_within(s, 15)
        assert time.monotonic() - started < 10
    # Garbage after a good start of the handshake (mid-handshake).
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        ctx = ssl.create_default_context(cafile=str(pki.ca))
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(inc, out, server_hostname="localhost")
        with pytest.raises(ssl.SSLWantReadError):
            obj.do_handshake()
        raw.sendall(out.read())
        raw.recv(65536)  # the server's first flight
        raw.sendall(b"\x15\x03\x03\x00\x02\x02\x28" + b"junk" * 100)
        assert closed_within(raw, 15)
    n = len(delivered)
    wait_until(lambda: len(delivered) > n + 10, TIMEOUT_S, "the steady producer to keep going")
    stop.set()
    t.join(TIMEOUT_S + 5)
    errors = [e for e, _ in delivered if e is not None]
    assert errors == []
    offsets = [o for _, o in delivered]
    assert offsets == list(range(len(offsets)))
    b.assert_alive()


def test_sensitive_settings_are_hidden(start_broker, pki):
    b = start_broker(sets=tls_sets(pki, "ssl.key.password=hunter2",
                                   "listener.name.ssl.ssl.key.password=hunter3"))
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    resource = ConfigResource(ResourceType.BROKER, "1")
    configs = admin.describe_configs([resource])[resource].result(timeout=TIMEOUT_S)
    entry = configs["ssl.key.password"]
    assert entry.is_sensitive and entry.value is None
    assert configs["ssl.keystore.location"].value == str(pki.server)
    assert not configs["ssl.keystore.location"].is_sensitive
    # The broker's own output (the log also records the command line the test ran).
    output = "\n".join(l for l in b.log().splitlines() if l.startswith("[std"))
    assert "skein started" in output
    assert "hunter2" not in output and "hunter3" not in output


def start_and_exit(tmp_path, *sets):
    """Runs a broker that is expected to refuse to start; returns the finished process."""
    args = [SKEIN_BIN, "serve", "--http", "127.0.0.1:0", "--data-dir", str(tmp_path / "d")]
    for s in sets:
        args += ["--set", s]
    return subprocess.run(args, capture_output=True, timeout=60, env=broker_env())


def test_wrong_or_missing_key_passwords_and_missing_key_stores_are_refused_at_start(tmp_path,
                                                                                  pki):
    keystore = tmp_path / "encrypted.pem"
    pki.write_server_cert(keystore, "skein-encrypted", password="hunter2")
    run = start_and_exit(tmp_path, *tls_sets(pki, "ssl.key.password=hunter3",
                                             keystore=keystore))
    assert run.returncode == 1, run
    err = run.stderr.decode()
    assert "could not be decrypted with ssl.key.password (wrong password?)" in err, err
    assert str(keystore) in err and "listener SSL" in err, err
    assert "hunter3" not in err and "hunter2" not in err, err
    run = start_and_exit(tmp_path, *tls_sets(pki, keystore=keystore))
    assert run.returncode == 1
    assert "ssl.key.password is not set" in run.stderr.decode()
    run = start_and_exit(tmp_path, "listeners=PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0")
    assert run.returncode != 0
    assert "ssl.keystore.location" in run.stderr.decode()


@pytest.mark.parametrize("scheme", ["pbkdf2", "scrypt", "cryptography"])
def test_an_encrypted_key_with_its_password_serves_tls(start_broker, pki, tmp_path, scheme):
    keystore = tmp_path / "encrypted.pem"
    serial = pki.write_server_cert(keystore, "skein-encrypted", password="s3cret pw",
                                   scheme=scheme)
    b = start_broker(sets=tls_sets(pki, "ssl.key.password=s3cret pw", keystore=keystore))
    produce_and_check(ssl_conf(b, pki, client_cert=False), unique_topic("tls-enc"))
    with socket.create_connection(("127.0.0.1", ssl_port(b)), timeout=10) as raw:
        with tls_client_context(pki, cert=False).wrap_socket(raw, server_hostname="localhost") as s:
            der = s.getpeercert(binary_form=True)
    assert x509.load_der_x509_certificate(der).serial_number == serial
    assert "s3cret" not in b.log().split("skein started", 1)[1]
    b.assert_alive()


def test_a_reload_with_the_wrong_password_keeps_the_previous_certificates(start_broker, pki,
                                                                          tmp_path):
    keystore = tmp_path / "encrypted.pem"
    first = pki.write_server_cert(keystore, "skein-first", password="pw-1")
    b = start_broker(sets=tls_sets(pki, "ssl.key.password=pw-1",
                                   "skein.ssl.reload.interval.ms=200", keystore=keystore))
    port = ssl_port(b)

    def serial():
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with tls_client_context(pki, cert=False).wrap_socket(
                raw, server_hostname="localhost"
            ) as s:
                der = s.getpeercert(binary_form=True)
        return x509.load_der_x509_certificate(der).serial_number

    assert serial() == first
    pki.write_server_cert(keystore, "skein-second", password="pw-2")
    wait_until(lambda: "wrong password?" in b.log(), TIMEOUT_S, "the failed reload in the log")
    assert "TLS certificates not reloaded" in b.log()
    assert serial() == first
    third = pki.write_server_cert(keystore, "skein-third", password="pw-1")
    wait_until(lambda: serial() == third, TIMEOUT_S, "the certificate encrypted with pw-1")
    b.assert_alive()


def test_tls_failures_are_counted_and_give_their_connection_slots_back(start_broker, pki):
    """max.connections.per.ip=4 on an SSL listener: rounds of garbage and silent connections
    (each closed by the failed or late handshake) leave all 4 slots free; the metrics count
    them per listener."""
    from test_connlimit import scrape

    b = start_broker(sets=tls_sets(pki, "skein.ssl.handshake.timeout.ms=1000",
                                   "max.connections.per.ip=4"))
    port = ssl_port(b)
    labels = frozenset({"listener": "SSL", "protocol": "SSL"}.items())
    for round_ in range(3):
        # The broker gives a slot back just after it closes the socket (as Kafka does), so a
        # client that reconnects the instant it sees the close can still be refused: each
        # round starts once the previous round's slots are free.
        wait_until(lambda: scrape(b.http).get(("skein_listener_connections", labels), 0) == 0,
                   TIMEOUT_S, f"round {round_}: the previous connections to be given back")
        socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(4)]
        for i, s in enumerate(socks):
            if i % 2 == 0:
                try:
                    s.sendall(b"GET / HTTP/1.1\r\n\r\n" * 4)
                except OSError:
                    pass
            # The odd ones stay silent: closed by skein.ssl.handshake.timeout.ms.
        for s in socks:
            assert closed_within(s, 15), f"round {round_}: a bad handshake left open"
            s.close()
    wait_until(lambda: scrape(b.http).get(("skein_listener_connections", labels)) == 0,
               TIMEOUT_S, "the failed connections to be given back")
    samples = scrape(b.http)
    assert samples[("skein_tls_handshake_failures_total", labels)] == 12
    auth = frozenset({"listener": "SSL", "mechanism": "SSL"}.items())
    assert samples[("skein_authentication_failures_total", auth)] == 12
    # All four slots are free again; a fifth is refused.
    good = []
    try:
        for _ in range(4):
            raw = socket.create_connection(("127.0.0.1", port), timeout=10)
            s = tls_client_context(pki).wrap_socket(raw, server_hostname="localhost")
            assert api_versions_over(s) == 7
            good.append(s)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as extra:
            assert closed_within(extra, 10)
        samples = scrape(b.http)
        assert samples[("skein_authentication_successes_total", auth)] == 4
        assert samples[("skein_listener_connections", labels)] == 4
        refused = frozenset({"listener": "SSL", "limit": "max.connections.per.ip"}.items())
        assert samples[("skein_listener_connections_refused_total", refused)] == 1
        assert samples[("skein_tls_handshake_failures_total", labels)] == 12
    finally:
        for s in good:
            s.close()
    b.assert_alive()


# -- SASL over TLS -----------------------------------------------------------------------------


def sasl_ssl_port(broker):
    found = re.search(r"skein started .*listeners=\S*?SASL_SSL://127\.0\.0\.1:(\d+)", broker.log())
    assert found, f"no SASL_SSL listener in the start line\n{broker.log()}"
    return int(found.group(1))


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_ssl_with_every_mechanism(start_broker, pki, mechanism):
    """SASL_SSL: the TLS transport and the SASL login on one listener. confluent-kafka and
    kafka-python produce and read back; a wrong password is an authentication error."""
    from helpers import create_topic, skein
    from kafka import KafkaProducer

    jaas = (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        'user_carol="carol-secret";'
    )
    b = start_broker(
        sets=[
            "listeners=PLAINTEXT://127.0.0.1:0,SASL_SSL://127.0.0.1:0",
            f"ssl.keystore.location={pki.server}",
            "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
            f"listener.name.sasl_ssl.plain.sasl.jaas.config={jaas}",
        ]
    )
    # SCRAM users live in the cluster metadata; the CLI talks to the PLAINTEXT listener.
    skein("user", "create", "alice", "--password", "alice-secret", bootstrap=b.bootstrap, check=0)
    user, pw = ("carol", "carol-secret") if mechanism == "PLAIN" else ("alice", "alice-secret")
    port = sasl_ssl_port(b)
    conf = {
        "bootstrap.servers": f"127.0.0.1:{port}",
        "security.protocol": "SASL_SSL",
        "ssl.ca.location": str(pki.ca),
        "sasl.mechanism": mechanism,
        "sasl.username": user,
        "sasl.password": pw,
    }
    topic = unique_topic("sasl-ssl")
    create_topic(b, topic, partitions=1)
    produce_and_check(conf, topic)

    producer = KafkaProducer(
        bootstrap_servers=f"127.0.0.1:{port}",
        security_protocol="SASL_SSL",
        ssl_cafile=str(pki.ca),
        sasl_mechanism=mechanism,
        sasl_plain_username=user,
        sasl_plain_password=pw,
    )
    offsets = [producer.send(topic, key=b"k", value=b"kp").get(timeout=TIMEOUT_S).offset
               for _ in range(3)]
    producer.close()
    assert offsets == [20, 21, 22]

    from confluent_kafka import KafkaError

    # The wrong password: librdkafka reports the authentication error through error_cb
    # (served by poll()) while its metadata request waits out its timeout, so ask in short
    # rounds until the error is there.
    errors = []
    admin = AdminClient({**conf, "sasl.password": "wrong", "error_cb": errors.append})
    deadline = time.monotonic() + 20
    while not any(e.code() == KafkaError._AUTHENTICATION for e in errors):
        assert time.monotonic() < deadline, f"no authentication error: {errors}"
        with pytest.raises(KafkaException):
            admin.list_topics(timeout=1)
        admin.poll(0.1)
