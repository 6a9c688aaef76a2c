"""Fixtures that run the real `skein` binary for the real-client suite.

Every broker gets its own temporary data directory and ephemeral ports, so tests can run side
by side. A broker that dies when a test did not ask for it, or that logs a panic, fails the
test with its stderr.
"""

import os
import re
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from helpers import REPO, SKEIN_BIN, broker_env

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
START_LINE = re.compile(r"skein started")
KAFKA_ADDR = re.compile(r'\bkafka="?([^\s"]+)')
HTTP_ADDR = re.compile(r'\bhttp="?([^\s"]+)')


class Broker:
    """One broker on one data directory, across restarts."""

    def __init__(self, data_dir, sets=(), config=None, env=None):
        self.data_dir = Path(data_dir)
        self.sets = list(sets)
        self.config = config
        self.extra_env = dict(env or {})
        # SKEIN_TEST_BROKER_LOG=<filter> gives every broker SKEIN_LOG=<filter> (debugging).
        if os.environ.get("SKEIN_TEST_BROKER_LOG"):
            self.extra_env.setdefault("SKEIN_LOG", os.environ["SKEIN_TEST_BROKER_LOG"])
        self.proc = None
        self.bootstrap = None
        self.http = None
        self.port = 0
        self.starts = 0
        self._lines = []
        self._lock = threading.Lock()
        self._readers = []
        # True while the process is meant to be running; a process that exits while this
        # is set died unexpectedly.
        self._expect_running = False

    # -- lifecycle -----------------------------------------------------------------------------

    def command(self, port):
        args = [
            SKEIN_BIN,
            "serve",
            "--listen",
            f"127.0.0.1:{port}",
            "--http",
            "127.0.0.1:0",
            "--data-dir",
            str(self.data_dir),
        ]
        if self.config is not None:
            args += ["--config", str(self.config)]
        for kv in self.sets:
            args += ["--set", kv]
        return args

    def start(self, port=None):
        assert self.proc is None or self.proc.poll() is not None, "broker already running"
        if not Path(SKEIN_BIN).exists():
            pytest.fail(f"skein binary not found at {SKEIN_BIN} (set SKEIN_BIN or build it)")
        listen_port = self.port if port is None else port
        self.starts += 1
        run = self.starts
        started = threading.Event()
        found = {}
        self._note(f"--- start #{run}: {' '.join(self.command(listen_port))}")
        self.proc = subprocess.Popen(
            self.command(listen_port),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=broker_env(self.extra_env),
        )

        def read(stream, tag, watch):
            for raw in iter(stream.readline, b""):
                line = ANSI_ESCAPE.sub("", raw.decode("utf-8", "replace").rstrip("\n"))
                self._note(f"[{tag}#{run}] {line}")
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

        deadline = time.monotonic() + START_TIMEOUT_S
        while not started.wait(0.05):
            if self.proc.poll() is not None:
                self._join_readers()
                pytest.fail(
                    f"skein exited with {self.proc.returncode} before its start line\n{self.log()}"
                )
            if time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait()
                self._join_readers()
                pytest.fail(f"no 'skein started' line within {START_TIMEOUT_S:.0f}s\n{self.log()}")
        if not found.get("kafka"):
            self.kill9()
            pytest.fail(f"start line has no kafka=HOST:PORT\n{self.log()}")
        self.bootstrap = found["kafka"]
        self.http = found["http"]
        port_text = self.bootstrap.rsplit(":", 1)[1]
        assert port_text.isdigit() and int(port_text) != 0, (
            f"bad advertised address {self.bootstrap}"
        )
        if listen_port:
            assert int(port_text) == listen_port, (
                f"asked to listen on port {listen_port}, advertised {self.bootstrap}"
            )
        self.port = int(port_text)
        self._expect_running = True
        return self

    def stop(self):
        """Graceful shutdown with SIGTERM; the broker must exit 0."""
        if self.proc is None or self.proc.poll() is not None:
            self._expect_running = False
            return
        self._expect_running = False
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self._join_readers()
            pytest.fail(f"skein did not exit within {STOP_TIMEOUT_S:.0f}s of SIGTERM\n{self.log()}")
        self._join_readers()
        assert rc == 0, f"skein exited with {rc} after SIGTERM\n{self.log()}"

    def kill9(self):
        """Crash: SIGKILL, no chance to flush or clean up."""
        self._expect_running = False
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._join_readers()

    def restart(self):
        """Stops the broker if it runs and starts it again on the same data dir and port."""
        self.stop()
        return self.start(port=self.port)

    # -- state -----------------------------------------------------------------------------------

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def assert_alive(self):
        assert self.alive(), f"skein is not running (exit {self.proc.returncode})\n{self.log()}"

    def log(self):
        with self._lock:
            return "\n".join(self._lines)

    def _note(self, line):
        with self._lock:
            self._lines.append(line)

    def _join_readers(self):
        for t in self._readers:
            t.join(5)

    def close(self):
        """Teardown: fails if the broker died unexpectedly or panicked, else stops it."""
        if self.proc is None:
            return
        died = self._expect_running and self.proc.poll() is not None
        if died:
            self._expect_running = False
            self._join_readers()
            pytest.fail(f"skein died unexpectedly (exit {self.proc.returncode})\n{self.log()}")
        self.stop()
        if "panicked at" in self.log():
            pytest.fail(f"skein panicked during the test\n{self.log()}")


def _new_broker(data_dir, sets=(), config=None, env=None):
    return Broker(data_dir, sets=sets, config=config, env=env).start()


@pytest.fixture
def broker(tmp_path):
    """A fresh broker for one test."""
    b = _new_broker(tmp_path / "data")
    yield b
    b.close()


@pytest.fixture(scope="module")
def module_broker(tmp_path_factory):
    """One broker shared by the tests of a module; tests must use unique topic names."""
    b = _new_broker(tmp_path_factory.mktemp("skein") / "data")
    yield b
    b.close()


@pytest.fixture
def start_broker(tmp_path):
    """Factory for brokers with settings: start_broker(sets=[...], config=path, env={...})."""
    started = []

    def start(sets=(), config=None, env=None):
        b = _new_broker(tmp_path / f"data{len(started)}", sets=sets, config=config, env=env)
        started.append(b)
        return b

    yield start
    errors = []
    for b in started:
        try:
            b.close()
        except BaseException as exc:  # keep closing the others, then report
            errors.append(exc)
    if errors:
        raise errors[0]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Attaches the stderr of every broker a failed test used to its report."""
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    funcargs = getattr(item, "funcargs", {})
    seen = set()
    for value in funcargs.values():
        candidates = value if isinstance(value, (list, tuple)) else [value]
        closure = getattr(value, "__closure__", None) or ()
        for cell in closure:
            contents = cell.cell_contents
            if isinstance(contents, list):
                candidates = list(candidates) + contents
        for b in candidates:
            if isinstance(b, Broker) and id(b) not in seen:
                seen.add(id(b))
                tail = "\n".join(b.log().splitlines()[-200:])
                report.sections.append((f"skein log ({b.data_dir})", tail))


@pytest.fixture(scope="module")
def kafka_bootstrap(request):
    """The reference Kafka: KAFKA_REFERENCE_BOOTSTRAP, or one started for this module (and
    stopped after it). Without one the test is skipped saying why, or fails under
    SKEIN_REQUIRE_REFERENCE=1."""
    bootstrap = os.environ.get("KAFKA_REFERENCE_BOOTSTRAP")
    if bootstrap:
        yield bootstrap
        return
    script = REPO / "scripts" / "kafka-reference"
    directory = tempfile.mkdtemp(prefix="skein-kafka-reference")
    run = subprocess.run(
        [str(script), "start", "--dir", directory],
        stdout=subprocess.PIPE,
        text=True,
        timeout=600,
    )
    lines = [l for l in run.stdout.splitlines() if l.startswith("bootstrap=")]
    if run.returncode == 0 and lines:
        yield lines[0].split("=", 1)[1].strip()
        subprocess.run([str(script), "stop", "--dir", directory], stdout=subprocess.DEVNULL)
        return
    reason = (
        f"KAFKA_REFERENCE_BOOTSTRAP is unset and scripts/kafka-reference start failed "
        f"({run.returncode})"
    )
    if os.environ.get("SKEIN_REQUIRE_REFERENCE") == "1":
        pytest.fail(f"SKEIN_REQUIRE_REFERENCE=1 but there is no reference broker: {reason}")
    print(f"\n*** SKIPPED: {request.module.__name__} against the reference Kafka ({reason}) ***")
    pytest.skip(f"no reference Kafka broker: {reason}")
