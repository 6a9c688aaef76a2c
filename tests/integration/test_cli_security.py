"""The `skein` CLI on secured listeners (issue 15): `--command-config FILE`, the Java-properties
file of Kafka's admin tools, with security.protocol, the PEM trust and key stores and the
SASL login (PLAIN, SCRAM-SHA-512).

One broker for the module, with the authorizer on: a PLAINTEXT listener (the fixture's; its
User:ANONYMOUS is not a super user, so it can do nothing), SASL_SSL (PLAIN user `admin`, a super
user, and SCRAM users created by admin with `skein user create` over SASL_SSL) and SSL with
`ssl.client.auth=required` (the principal is the client certificate's DN). Certificates come
from test_tls's Pki.
"""

import json
import os
import subprocess
import time

import pytest

from helpers import CLI_TIMEOUT_S, SKEIN_BIN, unique_topic
from test_acl import AUTHORIZER
from test_tls import (Pki, _cert, _name, _pem_cert, _pem_key, sasl_ssl_port, ssl_port,
                      tls_sets)

from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402  (test_tls skips without it)

PLAIN_MODULE = "org.apache.kafka.common.security.plain.PlainLoginModule"
SCRAM_MODULE = "org.apache.kafka.common.security.scram.ScramLoginModule"
ADMIN_PW = "admin-secret"
ALICE_PW = "alice-s3cret"
BOB_PW = "bob-s3cret"
CLI_DN = "CN=cli-operator,O=Acme"
KEY_PW = "key-pass-1"


def run(*args, bootstrap, config=None, stdin=None, timeout=CLI_TIMEOUT_S):
    cmd = [SKEIN_BIN, *args, "--bootstrap", bootstrap]
    if config is not None:
        cmd += ["--command-config", str(config)]
    env = {k: v for k, v in os.environ.items() if k != "SKEIN_COMMAND_CONFIG"}
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout,
                          env=env)


def ok(proc):
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}")
    return proc


class Secured:
    def __init__(self, broker, pki, d):
        self.broker = broker
        self.pki = pki
        self.dir = d
        self.sasl_ssl = f"127.0.0.1:{sasl_ssl_port(broker)}"
        self.ssl = f"127.0.0.1:{ssl_port(broker)}"

    def props(self, name, **settings):
        path = self.dir / f"{name}.properties"
        path.write_text("".join(f"{k.replace('_', '.')}={v}\n" for k, v in settings.items()))
        return path

    def sasl(self, name, mechanism, user, password, **extra):
        module = PLAIN_MODULE if mechanism == "PLAIN" else SCRAM_MODULE
        return self.props(
            name,
            security_protocol="SASL_SSL",
            ssl_truststore_location=self.pki.ca,
            ssl_truststore_type="PEM",
            sasl_mechanism=mechanism,
            # A continuation line, as such files are often written.
            sasl_jaas_config=f'{module} required \\\n    username="{user}" password="{password}";',
            **extra,
        )


@pytest.fixture(scope="module")
def sec(tmp_path_factory):
    from conftest import _new_broker

    d = tmp_path_factory.mktemp("clisec")
    pki = Pki(d)
    b = _new_broker(
        d / "data",
        sets=[
            "listeners=PLAINTEXT://127.0.0.1:0,SASL_SSL://127.0.0.1:0,SSL://127.0.0.1:0",
            f"ssl.keystore.location={pki.server}",
            f"ssl.truststore.location={pki.ca}",
            "listener.name.ssl.ssl.client.auth=required",
            "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-512",
            f"listener.name.sasl_ssl.plain.sasl.jaas.config={PLAIN_MODULE} required "
            f'user_admin="{ADMIN_PW}";',
            f"authorizer.class.name={AUTHORIZER}",
            "super.users=User:admin;User:alice",
        ],
    )
    s = Secured(b, pki, d)
    s.admin = s.sasl("admin", "PLAIN", "admin", ADMIN_PW)
    s.alice = s.sasl("alice", "SCRAM-SHA-512", "alice", ALICE_PW)
    s.bob = s.sasl("bob", "SCRAM-SHA-512", "bob", BOB_PW)
    # The SCRAM users, created by the PLAIN super user over SASL_SSL.
    for user, pw in [("alice", ALICE_PW), ("bob", BOB_PW)]:
        ok(run("user", "create", user, "--password", pw, "--mechanism", "SCRAM-SHA-512",
               bootstrap=s.sasl_ssl, config=s.admin))
    yield s
    b.close()


def test_scram_over_sasl_ssl_runs_the_admin_commands_and_produces_and_consumes(sec):
    alice = dict(bootstrap=sec.sasl_ssl, config=sec.alice)
    users = json.loads(ok(run("user", "list", "--output", "json", **alice)).stdout)
    names = json.dumps(users)
    assert '"alice"' in names and '"bob"' in names and "SCRAM-SHA-512" in names
    assert ALICE_PW not in names and BOB_PW not in names

    topic = unique_topic("clisec")
    ok(run("topic", "create", topic, "--partitions", "2", **alice))
    listed = ok(run("topic", "list", **alice)).stdout.split()
    assert topic in listed

    ok(run("acl", "add", "--allow-principal", "User:bob", "--operation", "Read",
           "--topic", topic, **alice))
    acls = json.loads(ok(run("acl", "list", "--topic", topic, "--output", "json",
                             **alice)).stdout)
    assert [(a["principal"], a["operation"], a["permission"]) for a in acls] == [
        ("User:bob", "READ", "ALLOW")]

    # Produce goes to the partition leaders Metadata names: the SASL_SSL endpoints.
    values = [f"record-{i}" for i in range(5)]
    ok(run("produce", topic, "--partition", "1", stdin="\n".join(values) + "\n", **alice))
    consumed = ok(run("consume", topic, "--partition", "1", "--exit-at-end", **alice))
    assert consumed.stdout.split() == values
    # The secrets never appear in the CLI's output.
    assert ALICE_PW not in consumed.stdout + consumed.stderr


def test_plain_login_and_the_localhost_name_are_checked_against_the_certificate(sec):
    port = sec.sasl_ssl.rsplit(":", 1)[1]
    listed = ok(run("topic", "list", bootstrap=f"localhost:{port}", config=sec.admin))
    assert listed.stderr == ""


def test_mutual_tls_principal_is_the_certificate_dn(sec):
    # A client certificate of our own, its key encrypted (PKCS#8, ssl.key.password).
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _cert(_name("cli-operator", o="Acme"), key, sec.pki.ca_name, sec.pki.ca_key)
    keystore = sec.dir / "cli-operator.pem"
    keystore.write_bytes(_pem_cert(cert) + _pem_key(key, KEY_PW.encode()))
    mtls = sec.props("mtls", security_protocol="SSL", ssl_truststore_location=sec.pki.ca,
                     ssl_keystore_location=keystore, ssl_keystore_type="PEM",
                     ssl_key_password=KEY_PW)
    seen, hidden = unique_topic("mtls-seen"), unique_topic("mtls-hidden")
    admin = dict(bootstrap=sec.sasl_ssl, config=sec.admin)
    for t in (seen, hidden):
        ok(run("topic", "create", t, "--partitions", "1", **admin))
    ok(run("acl", "add", "--allow-principal", f"User:{CLI_DN}", "--operation", "Describe",
           "--topic", seen, **admin))
    listed = ok(run("topic", "list", bootstrap=sec.ssl, config=mtls)).stdout.split()
    assert seen in listed and hidden not in listed
    # Describe does not allow Create: the principal is not a super user.
    denied = run("topic", "create", unique_topic("mtls-new"), bootstrap=sec.ssl, config=mtls)
    assert denied.returncode != 0
    assert "TOPIC_AUTHORIZATION_FAILED" in denied.stderr or \
        "CLUSTER_AUTHORIZATION_FAILED" in denied.stderr, denied.stderr

    # Without a client certificate the SSL listener refuses the handshake (in TLS 1.3 the
    # client hears of it with its first read).
    nocert = sec.props("nocert", security_protocol="SSL", ssl_truststore_location=sec.pki.ca)
    refused = run("topic", "list", bootstrap=sec.ssl, config=nocert)
    assert refused.returncode != 0 and "CertificateRequired" in refused.stderr, refused.stderr
    # A wrong key password is the key store's error, without the password.
    bad = sec.props("badkey", security_protocol="SSL", ssl_truststore_location=sec.pki.ca,
                    ssl_keystore_location=keystore, ssl_key_password="not-the-pass")
    wrong = run("topic", "list", bootstrap=sec.ssl, config=bad)
    assert wrong.returncode != 0 and "ssl.key.password" in wrong.stderr
    assert "not-the-pass" not in wrong.stderr


def test_endpoint_identification_checks_the_host_name_unless_empty(sec, start_broker, tmp_path):
    """A broker whose certificate names only broker.example: dialled as 127.0.0.1, the default
    (`https`) refuses it; `ssl.endpoint.identification.algorithm=` (empty) checks the chain
    only."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("broker.example", o="Acme"))
        .issuer_name(sec.pki.ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("broker.example")]),
                       critical=False)
        .sign(sec.pki.ca_key, hashes.SHA256())
    )
    keystore = tmp_path / "other-name.pem"
    keystore.write_bytes(_pem_cert(cert) + _pem_key(key))
    b = start_broker(sets=tls_sets(sec.pki, keystore=keystore))
    addr = f"127.0.0.1:{ssl_port(b)}"
    strict = sec.props("strict", security_protocol="SSL", ssl_truststore_location=sec.pki.ca)
    proc = run("topic", "list", bootstrap=addr, config=strict)
    assert proc.returncode != 0 and "not valid for name" in proc.stderr, proc.stderr
    lax = sec.props("lax", security_protocol="SSL", ssl_truststore_location=sec.pki.ca,
                    ssl_endpoint_identification_algorithm="")
    ok(run("topic", "list", bootstrap=addr, config=lax))
    # An empty algorithm still checks the chain.
    rogue = sec.props("lax-rogue", security_protocol="SSL",
                      ssl_truststore_location=sec.pki.rogue_ca,
                      ssl_endpoint_identification_algorithm="")
    proc = run("topic", "list", bootstrap=addr, config=rogue)
    assert proc.returncode != 0 and "UnknownIssuer" in proc.stderr, proc.stderr


def test_a_client_trusting_another_ca_refuses_the_broker(sec):
    rogue = sec.sasl("rogue", "PLAIN", "admin", ADMIN_PW,
                     ssl_endpoint_identification_algorithm="")
    rogue.write_text(rogue.read_text().replace(str(sec.pki.ca), str(sec.pki.rogue_ca)))
    proc = run("topic", "list", bootstrap=sec.sasl_ssl, config=rogue)
    assert proc.returncode != 0 and "TLS handshake" in proc.stderr, proc.stderr
    assert "UnknownIssuer" in proc.stderr or "certificate" in proc.stderr.lower()


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-512"])
def test_wrong_password_is_an_authentication_failure(sec, mechanism):
    user = "admin" if mechanism == "PLAIN" else "alice"
    wrong = sec.sasl(f"wrong-{mechanism}", mechanism, user, "Wr0ng-pa55")
    proc = run("topic", "list", bootstrap=sec.sasl_ssl, config=wrong)
    assert proc.returncode != 0
    assert "authentication failed:" in proc.stderr, proc.stderr
    assert "Wr0ng-pa55" not in proc.stderr + proc.stdout


def test_a_user_without_acls_gets_the_authorization_errors(sec):
    bob = dict(bootstrap=sec.sasl_ssl, config=sec.bob)
    proc = run("acl", "list", **bob)
    assert proc.returncode != 0 and "CLUSTER_AUTHORIZATION_FAILED" in proc.stderr, proc.stderr
    proc = run("user", "create", "mallory", "--password", "x", **bob)
    assert proc.returncode != 0 and "CLUSTER_AUTHORIZATION_FAILED" in proc.stderr, proc.stderr
    proc = run("topic", "create", unique_topic("bob"), **bob)
    assert proc.returncode != 0 and "AUTHORIZATION_FAILED" in proc.stderr, proc.stderr


@pytest.mark.parametrize("listener", ["sasl_ssl", "ssl"])
def test_plaintext_cli_on_a_tls_port_fails_fast_and_says_why(sec, listener):
    started = time.monotonic()
    proc = run("topic", "list", bootstrap=getattr(sec, listener), timeout=60)
    elapsed = time.monotonic() - started
    assert proc.returncode != 0
    assert "--command-config" in proc.stderr, proc.stderr
    # Well inside the CLI's 30 s request timeout: the broker's TLS answers or closes at once.
    assert elapsed < 25, f"took {elapsed:.1f}s: {proc.stderr}"


def test_tls_cli_on_the_plaintext_port_fails_with_the_handshake(sec):
    ssl_only = sec.props("ssl-only", security_protocol="SSL",
                         ssl_truststore_location=sec.pki.ca)
    started = time.monotonic()
    proc = run("topic", "list", bootstrap=sec.broker.bootstrap, config=ssl_only, timeout=60)
    assert proc.returncode != 0 and "TLS handshake" in proc.stderr, proc.stderr
    assert time.monotonic() - started < 45


def test_bad_command_config_files(sec, tmp_path):
    def fails(text, *want):
        path = tmp_path / "bad.properties"
        path.write_text(text)
        proc = run("topic", "list", bootstrap=sec.sasl_ssl, config=path)
        assert proc.returncode != 0, proc.stdout
        for w in want:
            assert w in proc.stderr, proc.stderr
        return proc

    fails("security.protocol=TLS\n", "security.protocol=TLS", "SASL_SSL")
    fails(f"security.protocol=SASL_SSL\nssl.truststore.location={sec.pki.ca}\n"
          "sasl.mechanism=GSSAPI\n", "GSSAPI")
    fails("security.protocol=SSL\nssl.truststore.type=JKS\nssl.truststore.location=x.jks\n",
          "JKS")
    fails("security.protocol=SASL_SSL\n"
          f"ssl.truststore.location={sec.pki.ca}\nsasl.mechanism=PLAIN\n"
          'sasl.jaas.config=com.sun.security.auth.module.Krb5LoginModule required '
          'password="hush";\n', "Krb5LoginModule")
    leak = fails("security.protocol=SASL_SSL\n"
                 f"ssl.truststore.location={sec.pki.ca}\nsasl.mechanism=PLAIN\n"
                 f'sasl.jaas.config={PLAIN_MODULE} required password="hush";\n', "username")
    assert "hush" not in leak.stderr
    fails("sasl.jaas.config=\\uZZZZ\n", "line 1", "\\u")
    missing = run("topic", "list", bootstrap=sec.sasl_ssl, config=tmp_path / "absent")
    assert missing.returncode != 0 and "absent" in missing.stderr

    # Unknown keys are ignored with one warning.
    extra = sec.admin.read_text() + "client.id=ops\nretries=3\n"
    path = tmp_path / "extra.properties"
    path.write_text(extra)
    proc = ok(run("topic", "list", bootstrap=sec.sasl_ssl, config=path))
    warnings = [line for line in proc.stderr.splitlines() if "not used" in line]
    assert len(warnings) == 1 and "client.id, retries" in warnings[0], proc.stderr
    assert ADMIN_PW not in proc.stderr


def test_the_settings_file_may_come_from_the_environment(sec):
    env = {**os.environ, "SKEIN_COMMAND_CONFIG": str(sec.admin)}
    proc = subprocess.run([SKEIN_BIN, "user", "list", "--bootstrap", sec.sasl_ssl],
                          capture_output=True, text=True, timeout=CLI_TIMEOUT_S, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "alice" in proc.stdout
