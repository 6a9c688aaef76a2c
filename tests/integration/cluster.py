"""Multi-node Skein clusters for `test_cluster.py`: every node a separate `skein serve` process on
loopback, with its own data directory and ports, and the tools the cluster tests observe it
with (the `skein cluster` CLI, a raw Metadata request answered by one chosen node, admin calls
retried on Kafka's retriable errors).

A voter cannot finish starting until a quorum exists, so a cluster's processes are all
launched first and their start lines awaited afterwards. Every node names every voter's
controller port, so the ports are chosen before anything starts (bind port 0, close, use it);
if one was taken in the meantime the whole cluster is started again on new ports and fresh
data directories (a quorum's cluster id is derived from its voter list, so a data directory
written under the old ports would be refused).

`Node` is a `conftest.Broker` (same rules: stderr captured and attached to a failed test's
report, "panicked at" fails the test, an unexpected death fails it, SIGTERM must exit 0),
with the cluster flags and a start split in two (`launch`, `wait_started`).
"""

import json
import signal
import socket
import subprocess
import threading
import time
from collections import namedtuple
from pathlib import Path

import pytest
from confluent_kafka import KafkaError
from confluent_kafka.admin import AdminClient, NewTopic

import wire
from conftest import ANSI_ESCAPE, HTTP_ADDR, KAFKA_ADDR, START_LINE, STOP_TIMEOUT_S, Broker
from helpers import SKEIN_BIN, broker_env, future_error

# Every voter waits for the others; on a busy 2-core machine this is far above what it needs.
CLUSTER_START_TIMEOUT_S = 60.0
# Attempts at starting a cluster when a chosen port was taken by someone else meanwhile.
PORT_ATTEMPTS = 3
CLI_TIMEOUT_S = 60.0

# Fast failure detection: a silent broker is fenced after 3 s instead of 9 s.
SESSION_TIMEOUT_MS = 3000
HEARTBEAT_INTERVAL_MS = 500
FAST_FAILURE_SETS = [
    f"broker.session.timeout.ms={SESSION_TIMEOUT_MS}",
    f"broker.heartbeat.interval.ms={HEARTBEAT_INTERVAL_MS}",
]
# Groups settle without the 3 s initial rebalance delay.
BASE_SETS = FAST_FAILURE_SETS + ["group.initial.rebalance.delay.ms=0"]

ADDRESS_IN_USE = "Address already in use"

# Kafka error codes an admin request may get while a controller is being elected, a broker
# is being fenced or the client's metadata is stale; the request is retried on them.
RETRIABLE_ADMIN_ERRORS = {
    KafkaError.NOT_CONTROLLER,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.NOT_LEADER_FOR_PARTITION,  # NOT_LEADER_OR_FOLLOWER
    KafkaError.BROKER_NOT_AVAILABLE,
    KafkaError.NETWORK_EXCEPTION,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.NOT_COORDINATOR,
    KafkaError._TIMED_OUT,
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError._WAIT_COORD,
}


def free_port():
    """A port nobody listens on right now (bound to port 0, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node(Broker):
    """One node of a cluster (a voter, or broker-only with `roles="broker"`), across restarts.

    Its Kafka port and controller port are fixed at creation and kept across restarts."""

    def __init__(
        self, node_id, data_dir, port, controller_port, quorum, roles=None, rack=None, sets=()
    ):
        super().__init__(data_dir, sets=sets)
        self.node_id = node_id
        self.port = port
        self.controller_port = controller_port
        self.quorum = quorum
        self.roles = roles
        self.rack = rack
        self.paused = False
        self._terminated = False  # SIGTERM sent, exit not yet awaited
        self._started = None
        self._found = None

    def __repr__(self):
        return f"Node({self.node_id}, kafka=127.0.0.1:{self.port}, controller=127.0.0.1:{self.controller_port})"

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def command(self, port):
        args = super().command(port) + [
            "--node-id",
            str(self.node_id),
            "--controller-listen",
            f"127.0.0.1:{self.controller_port}",
            "--quorum",
            self.quorum,
        ]
        if self.roles is not None:
            args += ["--roles", self.roles]
        if self.rack is not None:
            args += ["--rack", self.rack]
        return args

    # -- lifecycle -----------------------------------------------------------------------------

    def launch(self):
        """Starts the process and its log readers without waiting for the start line."""
        assert self.proc is None or self.proc.poll() is not None, f"node {self.node_id} already running"
        if not Path(SKEIN_BIN).exists():
            pytest.fail(f"skein binary not found at {SKEIN_BIN} (set SKEIN_BIN or build it)")
        self.starts += 1
        run = self.starts
        started = threading.Event()
        found = {}
        command = self.command(self.port)
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._note(f"--- start #{run}: {' '.join(command)}")
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=broker_env(self.extra_env),
        )
        self.paused = False
        self._terminated = False

        def read(stream, tag, watch):
            for raw in iter(stream.readline, b""):
                line = ANSI_ESCAPE.sub("", raw.decode("utf-8", "replace").rstrip("\n"))
                self._note(f"[node {self.node_id} {tag}#{run}] {line}")
                if watch and not started.is_set() and START_LINE.search(line):
                    kafka = KAFKA_ADDR.search(line)
                    http = HTTP_ADDR.search(line)
                    found["kafka"] = kafka.group(1) if kafka else None
                    found["http"] = http.group(1) if http else None
                    started.set()
            stream.close()

        self._readers = [
            threading.Thread(target=read, args=(self.proc.stderr, "stderr", True), daemon=True),
            threading.Thread(target=read, args=(self.proc.stdout, "stdout", False), daemon=True),
        ]
        for t in self._readers:
            t.start()
        self._started = started
        self._found = found
        return self

    def wait_started(self, deadline):
        """Waits (until the monotonic `deadline`) for the start line of the last launch.

        Returns None once started, or a one-paragraph reason (with the node's log) after
        which the process is no longer running."""
        while not self._started.wait(0.05):
            if self.proc.poll() is not None:
                self._join_readers()
                return f"node {self.node_id} exited with {self.proc.returncode} before its start line"
            if time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait()
                self._join_readers()
                return f"node {self.node_id}: no 'skein started' line within the deadline"
        bootstrap = self._found.get("kafka")
        if not bootstrap:
            self.kill9()
            return f"node {self.node_id}: start line has no kafka=HOST:PORT"
        port_text = bootstrap.rsplit(":", 1)[1]
        if not port_text.isdigit() or int(port_text) != self.port:
            self.kill9()
            return f"node {self.node_id}: asked to listen on port {self.port}, advertised {bootstrap}"
        self.bootstrap = bootstrap
        self.http = self._found.get("http")
        self._expect_running = True
        return None

    def start(self, port=None):
        """Launches and waits for the start line (a restart: the quorum must be up)."""
        assert port in (None, self.port), "a cluster node keeps its port"
        self.launch()
        why = self.wait_started(time.monotonic() + CLUSTER_START_TIMEOUT_S)
        if why is not None:
            pytest.fail(f"{why}\n{self.log()}")
        return self

    def sigstop(self):
        """Freezes the process (SIGSTOP): its sockets stay open, it just stops answering."""
        self.assert_alive()
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def sigcont(self):
        if self.paused and self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def terminate(self):
        """Sends SIGTERM without waiting; `stop()` then awaits the exit (so that several nodes
        shut down at the same time)."""
        self.sigcont()  # a frozen process cannot handle SIGTERM
        self._expect_running = False
        if self.proc is not None and self.proc.poll() is None and not self._terminated:
            self.proc.send_signal(signal.SIGTERM)
            self._terminated = True

    def stop(self):
        """Graceful shutdown (SIGTERM, unless `terminate()` sent it): exit 0 within
        STOP_TIMEOUT_S, as `Broker.stop`."""
        self.sigcont()
        if self.proc is None:
            return
        if not self._terminated:
            if self.proc.poll() is not None:
                self._expect_running = False
                return
            self.terminate()
        self._terminated = False
        try:
            rc = self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self._join_readers()
            pytest.fail(
                f"node {self.node_id} did not exit within {STOP_TIMEOUT_S:.0f}s of SIGTERM\n{self.log()}"
            )
        self._join_readers()
        assert rc == 0, f"node {self.node_id} exited with {rc} after SIGTERM\n{self.log()}"

    def kill9(self):
        super().kill9()  # SIGKILL works on a frozen process too
        self.paused = False
        self._terminated = False


class Cluster:
    """`voters` voters (node ids 1..voters) plus any broker-only nodes added later."""

    def __init__(self, base_dir, voters=3, sets=(), racks=None, registry=None):
        self.base_dir = Path(base_dir)
        self.voter_ids = list(range(1, voters + 1))
        self.sets = list(sets)
        self.racks = dict(racks or {})
        self.nodes = {}  # node id -> Node
        self.quorum = None
        # Every Node ever created, shared with the fixture so that a failed test's report
        # carries their logs (conftest's hook reads lists in a fixture's closure).
        self.registry = registry if registry is not None else []
        self.attempt = 0

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self):
        """Starts every voter concurrently and waits for all their start lines."""
        for _ in range(PORT_ATTEMPTS):
            self.attempt += 1
            self.nodes = self.new_voters()
            self.registry.extend(self.nodes.values())
            for n in self.nodes.values():
                n.launch()
            deadline = time.monotonic() + CLUSTER_START_TIMEOUT_S
            failures = {}
            for n in self.nodes.values():
                why = n.wait_started(deadline)
                if why is not None:
                    failures[n.node_id] = why
                    # One node down: the others may never finish starting; do not wait the
                    # whole deadline for them.
                    deadline = min(deadline, time.monotonic() + 5)
            if not failures:
                return self
            for n in self.nodes.values():
                n.kill9()
            if any(ADDRESS_IN_USE in n.log() for n in self.nodes.values()):
                continue  # a chosen port was taken meanwhile: new ports, new directories
            pytest.fail(self._failure_report("the cluster did not start", failures))
        pytest.fail(
            f"the cluster did not start: a port was taken in each of {PORT_ATTEMPTS} attempts\n"
            + self._failure_report("last attempt", {})
        )

    def new_voters(self):
        """The voters of a start attempt, on fresh ports (sets `self.quorum`)."""
        controller_ports = {i: free_port() for i in self.voter_ids}
        self.quorum = ",".join(f"{i}@127.0.0.1:{controller_ports[i]}" for i in self.voter_ids)
        return {
            i: Node(
                i,
                self.base_dir / f"attempt{self.attempt}" / f"node{i}",
                free_port(),
                controller_ports[i],
                self.quorum,
                rack=self.racks.get(i),
                sets=self.sets,
            )
            for i in self.voter_ids
        }

    def _failure_report(self, title, failures):
        lines = [f"{title} (quorum {self.quorum}):"]
        lines += [f"  {why}" for why in failures.values()]
        for n in self.nodes.values():
            lines.append(f"--- log of node {n.node_id} ({n.data_dir}), last 60 lines")
            lines += n.log().splitlines()[-60:]
        return "\n".join(lines)

    def add_broker(self, node_id, rack=None):
        """Starts a broker-only node (`--roles broker`) that joins the running quorum."""
        assert node_id not in self.nodes, f"node {node_id} exists"
        for attempt in range(PORT_ATTEMPTS):
            node = Node(
                node_id,
                self.base_dir / f"attempt{self.attempt}" / f"node{node_id}-{attempt}",
                free_port(),
                free_port(),
                self.quorum,
                roles="broker",
                rack=rack,
                sets=self.sets,
            )
            self.registry.append(node)
            node.launch()
            why = node.wait_started(time.monotonic() + CLUSTER_START_TIMEOUT_S)
            if why is None:
                self.nodes[node_id] = node
                return node
            if ADDRESS_IN_USE not in node.log():
                pytest.fail(f"broker-only node {node_id} did not start: {why}\n{node.log()}")
        pytest.fail(f"broker-only node {node_id}: a port was taken in each of {PORT_ATTEMPTS} attempts")

    def close(self):
        """Teardown: every node must still be running (unless the test stopped it) and must
        exit 0 on SIGTERM; the first failure is raised after all are closed."""
        errors = []
        nodes = list(self.nodes.values())
        # Deaths the test did not ask for are noted before anything is stopped...
        died = {
            n.node_id
            for n in nodes
            if n._expect_running and n.proc is not None and n.proc.poll() is not None
        }
        # ...then every node gets SIGTERM at once: stopped one by one, the last voters would
        # each wait for a quorum that is already gone.
        for n in nodes:
            if n.node_id not in died:
                n.terminate()
        for n in nodes:
            try:
                n.close()
            except BaseException as exc:  # keep closing the others, then report
                errors.append(exc)
        if errors:
            raise errors[0]

    # -- access ----------------------------------------------------------------------------------

    def node(self, node_id):
        return self.nodes[node_id]

    def __getitem__(self, node_id):
        return self.nodes[node_id]

    def running(self, exclude=()):
        """Nodes whose process runs and is not frozen, except the ids in `exclude`."""
        return [
            n
            for i, n in sorted(self.nodes.items())
            if i not in exclude and n.alive() and not n.paused
        ]

    def bootstrap_all(self, exclude=()):
        """`host:port,…` of every running node (less `exclude`)."""
        return ",".join(n.bootstrap for n in self.running(exclude))

    def kill9(self, node_id):
        self.nodes[node_id].kill9()

    def stop(self, node_id):
        self.nodes[node_id].stop()

    def sigstop(self, node_id):
        self.nodes[node_id].sigstop()

    def sigcont(self, node_id):
        self.nodes[node_id].sigcont()

    def restart(self, node_id):
        """Starts a stopped or killed node again on its data directory and ports (or stops
        and starts a running one); returns once it has registered and is unfenced."""
        n = self.nodes[node_id]
        if n.alive():
            n.stop()
        return n.start()


# -- observing a cluster ----------------------------------------------------------------------

def skein_cli(*args, bootstrap, timeout=CLI_TIMEOUT_S):
    """Runs `skein ARGS --bootstrap B`; returns the CompletedProcess (text)."""
    return subprocess.run(
        [SKEIN_BIN, *args, "--bootstrap", bootstrap],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def cli_json(*args, bootstrap):
    """(exit code, parsed JSON or None, CompletedProcess) of `skein ARGS --output json`."""
    proc = skein_cli(*args, "--output", "json", bootstrap=bootstrap)
    try:
        out = json.loads(proc.stdout) if proc.stdout.strip() else None
    except ValueError:
        out = None
    return proc.returncode, out, proc


def cluster_info(bootstrap):
    """`skein cluster info --output json` through `bootstrap`, or None when it failed."""
    rc, out, _ = cli_json("cluster", "info", bootstrap=bootstrap)
    return out if rc == 0 else None


def quorum_leader(bootstrap):
    """The active controller as DescribeQuorum (through `bootstrap`) reports it, or None."""
    info = cluster_info(bootstrap)
    if info is None or not info["quorum"].get("available"):
        return None
    return info["quorum"]["leader_id"]


def brokers_by_id(info):
    return {b["id"]: b for b in info["brokers"]}


Metadata = namedtuple("Metadata", "brokers controller_id topics")
PartitionInfo = namedtuple("PartitionInfo", "error leader replicas isr")


def metadata_of(bootstrap, timeout=10.0):
    """A Metadata v1 request for every topic, answered by the node at `bootstrap` itself (not
    by whichever broker a client library picks), decoded by `wire.py`.

    Returns Metadata(brokers={id: (host, port, rack)}, controller_id,
    topics={name: {partition: PartitionInfo}}); a topic-level error maps to {"error": code}."""
    frame = wire.request(3, 1, 7, wire.i32(-1))
    correlation, r = wire.roundtrip(bootstrap, frame, timeout)
    assert correlation == 7, f"Metadata answered with correlation id {correlation}"
    brokers = {}
    for _ in range(r.i32()):
        node_id = r.i32()
        host = r.string()
        port = r.i32()
        rack = r.string()
        brokers[node_id] = (host, port, rack)
    controller_id = r.i32()
    topics = {}
    for _ in range(r.i32()):
        error = r.i16()
        name = r.string()
        r.i8()  # is_internal
        partitions = {}
        for _ in range(r.i32()):
            p_error = r.i16()
            index = r.i32()
            leader = r.i32()
            replicas = [r.i32() for _ in range(r.i32())]
            isr = [r.i32() for _ in range(r.i32())]
            partitions[index] = PartitionInfo(p_error, leader, replicas, isr)
        topics[name] = partitions if error == 0 else {"error": error}
    r.assert_at_end("Metadata v1 response")
    return Metadata(brokers, controller_id, topics)


def try_metadata_of(bootstrap, timeout=10.0):
    """metadata_of, or None when the node cannot be reached or answers something undecodable
    (for waits that poll a node which may be restarting)."""
    try:
        return metadata_of(bootstrap, timeout)
    except (OSError, AssertionError):
        return None


def leaders_of(md, topic):
    """{partition: leader} of `topic` in `md`, or None while the topic is absent or failed."""
    parts = md.topics.get(topic)
    if parts is None or "error" in parts:
        return None
    return {p: info.leader for p, info in parts.items()}


def create_topics(bootstrap, partitions_by_topic, timeout=60.0, replication_factor=1, config=None):
    """CreateTopics through a confluent-kafka AdminClient bootstrapped on `bootstrap` only,
    retried on Kafka's retriable errors (NOT_CONTROLLER, REQUEST_TIMED_OUT, ...) until
    `timeout`. TOPIC_ALREADY_EXISTS after a retried attempt counts as created (the earlier
    attempt may have been committed before its answer was lost). Returns the seconds taken."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    begin = time.monotonic()
    deadline = begin + timeout
    pending = dict(partitions_by_topic)
    retried = set()
    last = {}
    while pending:
        futures = admin.create_topics(
            [
                NewTopic(t, num_partitions=n, replication_factor=replication_factor, config=dict(config or {}))
                for t, n in pending.items()
            ],
            operation_timeout=10,
            request_timeout=15,
        )
        for topic, future in futures.items():
            err = future_error(future, timeout=30)
            if err is None or (err.code() == KafkaError.TOPIC_ALREADY_EXISTS and topic in retried):
                pending.pop(topic)
            elif err.code() in RETRIABLE_ADMIN_ERRORS or err.retriable():
                retried.add(topic)
                last[topic] = err
            else:
                raise AssertionError(f"creating {topic} through {bootstrap} failed: {err}")
        if pending and time.monotonic() > deadline:
            raise AssertionError(
                f"topics {sorted(pending)} not created through {bootstrap} within {timeout:.0f}s; "
                f"last errors: { {t: str(e) for t, e in last.items()} }"
            )
        if pending:
            time.sleep(0.2)  # back off before retrying (not a synchronisation)
    return time.monotonic() - begin


def java_string_hash(s):
    """Java's `String.hashCode()` as an unsigned 32-bit value (UTF-16 code units)."""
    h = 0
    data = s.encode("utf-16-be")
    for i in range(0, len(data), 2):
        h = (31 * h + ((data[i] << 8) | data[i + 1])) & 0xFFFFFFFF
    return h


def offsets_partition(group, partitions):
    """The `__consumer_offsets` partition of `group`: Kafka's abs(hashCode) % partitions, with
    abs masking the sign bit."""
    return (java_string_hash(group) & 0x7FFFFFFF) % partitions
