"""Process management for the commerce example: Skein, PostgreSQL, Redis and the apps.

Shared by `examples/commerce/run` (one command that starts everything and waits for Ctrl-C)
and the acceptance test (tests/integration/test_commerce.py, which also kills -9 and restarts
single apps). Everything runs on loopback, on ephemeral ports, in one temporary directory:

    <dir>/skein/        Skein's data directory        <dir>/logs/skein.log
    <dir>/pg/data       PostgreSQL's cluster (initdb)  <dir>/logs/postgres.log
    <dir>/pg/socket     its Unix socket directory
    <dir>/redis/        Redis' working directory       <dir>/logs/redis.log
    <dir>/commerce-app.jar  the apps' copy of the jar  <dir>/logs/<profile>.log  (each app)

Every wait polls a condition with a deadline; nothing sleeps a fixed time. Children get
SIGKILL if the Python process that started them dies (PR_SET_PDEATHSIG, for children started
by the main thread), so a crashed test leaves nothing behind. Only the Python standard library is used (psql and redis-cli are run
as programs), so the example needs no Python packages beyond the test suite's.
"""

import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
# COMMERCE_JAR: a jar built elsewhere (then it is never rebuilt here).
JAR = Path(os.environ.get("COMMERCE_JAR", HERE / "app" / "target" / "commerce-app.jar"))

# The roles of the contract in docs/commerce.md, one JVM each.
PROFILES = ["api", "stock", "coupon-worker", "ranking", "notification", "analytics"]
CONSUMER_GROUPS = ["stock", "coupon-worker", "ranking", "notification", "analytics"]
TOPICS = {"orders": 6, "stock-requests": 6, "coupon-admissions": 6}

# Small heap and a quick-to-start JIT: six JVMs share a busy two-core machine.
JVM_OPTS = ["-Xmx256m", "-Xss512k", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"]


# Six JVMs started at once on a busy two-core machine have taken up to 165 s.
START_TIMEOUT_S = float(os.environ.get("COMMERCE_START_TIMEOUT_S", "300"))
STOP_TIMEOUT_S = 30.0

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class HarnessError(Exception):
    """Something did not start or answer in time; the message says what and where the log is."""


def wait_until(cond, timeout, what, interval=0.1):
    """Polls `cond()` until it returns something truthy, and returns that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise HarnessError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def free_port():
    """A loopback port nothing listens on now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent():
    """preexec_fn: SIGKILL this child when the process that started it dies."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def tail(path, lines=60):
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(ANSI_ESCAPE.sub("", text).splitlines()[-lines:])


def skein_bin(build=True):
    """$SKEIN_BIN, or the release binary of this checkout, built if missing."""
    path = Path(os.environ.get("SKEIN_BIN", REPO / "target" / "release" / "skein"))
    if not path.exists() and build and "SKEIN_BIN" not in os.environ:
        subprocess.run(
            ["cargo", "build", "--release", "-j2", "--bin", "skein"], cwd=REPO, check=True
        )
    if not path.exists():
        raise HarnessError(f"no skein binary at {path} (set SKEIN_BIN or build it)")
    return str(path)


def _sources_newer_than(path):
    mtime = path.stat().st_mtime
    for root in ["pom.xml", "events", "app"]:
        base = HERE / root
        files = [base] if base.is_file() else base.rglob("*")
        for f in files:
            if "target" in f.relative_to(HERE).parts:
                continue
            if f.is_file() and f.stat().st_mtime > mtime:
                return f
    return None


def ensure_jar(log=print):
    """The app's jar, built with Maven when it is missing or older than a source file."""
    if "COMMERCE_JAR" in os.environ:
        if not JAR.exists():
            raise HarnessError(f"COMMERCE_JAR={JAR} does not exist")
        return JAR
    stale = None if not JAR.exists() else _sources_newer_than(JAR)
    if JAR.exists() and stale is None:
        return JAR
    if shutil.which("mvn") is None:
        raise HarnessError(f"{JAR} is missing and there is no mvn to build it")
    why = "missing" if not JAR.exists() else f"older than {stale.relative_to(HERE)}"
    log(f"building {JAR.relative_to(REPO)} ({why}): mvn package -DskipTests")
    started = time.monotonic()
    proc = subprocess.run(
        ["mvn", "-B", "-q", "-ntp", "-Dstyle.color=never", "-f", str(HERE / "pom.xml"),
         "package", "-DskipTests"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if proc.returncode != 0 or not JAR.exists():
        raise HarnessError(f"mvn package failed ({proc.returncode}):\n{proc.stdout[-4000:]}")
    log(f"built in {time.monotonic() - started:.0f}s")
    return JAR


def postgres_bindir():
    """Debian's PostgreSQL binaries: the newest /usr/lib/postgresql/<ver>/bin with initdb."""
    base = Path("/usr/lib/postgresql")
    candidates = sorted(
        (d for d in base.glob("*/bin") if (d / "initdb").exists()),
        key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0,
    ) if base.exists() else []
    if not candidates:
        raise HarnessError("no PostgreSQL under /usr/lib/postgresql (apt-get install postgresql)")
    return candidates[-1]


def missing_prerequisites():
    """What this machine lacks to run the example, as a list of reasons (empty: all there)."""
    missing = []
    try:
        postgres_bindir()
    except HarnessError as exc:
        missing.append(str(exc))
    for prog, pkg in [("redis-server", "redis-server"), ("redis-cli", "redis-tools"),
                      ("psql", "postgresql-client"), ("java", "openjdk-17-jdk-headless")]:
        if shutil.which(prog) is None:
            missing.append(f"no {prog} (apt-get install {pkg})")
    if not JAR.exists() and shutil.which("mvn") is None:
        missing.append(f"no {JAR} and no mvn to build it")
    return missing


def _reachable_by_others(path):
    """Whether every directory from / down to `path` lets other users through (o+x)."""
    path = Path(path).resolve()
    return all(os.stat(p).st_mode & 0o001 for p in [path, *path.parents])


class Proc:
    """One child process with its log file."""

    def __init__(self, name, args, log_path, env=None, cwd=None, user=None):
        self.name = name
        self.args = [str(a) for a in args]
        self.log_path = Path(log_path)
        self.env = env
        self.cwd = cwd
        self.user = user
        self.popen = None
        self.log_offset = 0  # where the current run's output starts in the log
        self.starts = 0
        self.expect_running = False  # cleared by stop() and kill9(): an exit is not a death

    def start(self):
        assert not self.alive(), f"{self.name} already running"
        self.starts += 1
        self.expect_running = True
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"--- start #{self.starts}: {' '.join(self.args)}\n".encode())
            log.flush()
            self.log_offset = log.tell()
            kwargs = {}
            if self.user is not None:
                kwargs["user"] = self.user
            self.popen = subprocess.Popen(
                self.args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,  # Ctrl-C at a terminal reaches only `run`
                # PR_SET_PDEATHSIG fires when the *thread* that started the child ends, so
                # only children started by the main thread get it.
                preexec_fn=(_die_with_parent
                            if threading.current_thread() is threading.main_thread() else None),
                **kwargs,
            )
        return self

    def alive(self):
        return self.popen is not None and self.popen.poll() is None

    @property
    def pid(self):
        return self.popen.pid if self.popen else None

    def output(self):
        """The current run's log text."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self.log_offset)
                return ANSI_ESCAPE.sub("", f.read().decode("utf-8", "replace"))
        except OSError:
            return ""

    def wait_for_line(self, pattern, timeout, what):
        regex = re.compile(pattern)

        def found():
            m = regex.search(self.output())
            if m:
                return m
            if not self.alive():
                raise HarnessError(
                    f"{self.name} exited ({self.popen.returncode}) before {what}; "
                    f"log {self.log_path}:\n{tail(self.log_path)}"
                )
            return None

        try:
            return wait_until(found, timeout, f"{what} ({self.name})", interval=0.2)
        except HarnessError as exc:
            if "timed out" in str(exc):
                raise HarnessError(f"{exc}; log {self.log_path}:\n{tail(self.log_path)}") from None
            raise

    def stop(self, sig=signal.SIGTERM, timeout=STOP_TIMEOUT_S):
        """Signals the process and waits; SIGKILL if it outlives `timeout`. Returns its code."""
        self.expect_running = False
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            try:
                self.popen.send_signal(sig)
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode

    def kill9(self):
        self.expect_running = False
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()


class Stack:
    """Skein, PostgreSQL, Redis and the apps, in one directory, on loopback ports."""

    def __init__(self, base_dir=None, log=print, profiles=PROFILES, skein_sets=()):
        self.own_dir = base_dir is None
        self.dir = Path(base_dir or tempfile.mkdtemp(prefix="skein-commerce-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        # PostgreSQL runs as `postgres` when we are root and must reach its directory.
        os.chmod(self.dir, 0o755)
        self.logs = self.dir / "logs"
        self.logs.mkdir(exist_ok=True)
        self.say = log
        self.profiles = list(profiles)
        self.skein_sets = list(skein_sets)
        self.skein = None
        self.bootstrap = None
        self.skein_http = None
        self.postgres = None
        self.pg_port = None
        self.pg_socket = None
        self.redis = None
        self.redis_port = None
        self.api_port = None
        self.apps = {}
        self.extra_dirs = []  # removed by stop()
        self.skein_path = None
        self.pg_bin = None

    # -- infrastructure ----------------------------------------------------------------------------

    def start_skein(self):
        self.skein_path = skein_bin()
        data = self.dir / "skein"
        args = [self.skein_path, "serve", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0",
                "--data-dir", data]
        for kv in self.skein_sets:
            args += ["--set", kv]
        # SKEIN_* settings around a test run (SKEIN_BIN) are not the broker's; SKEIN_LOG is.
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("SKEIN_") or k == "SKEIN_LOG"}
        env.update({"NO_COLOR": "1", "RUST_BACKTRACE": "1"})
        self.skein = Proc("skein", args, self.logs / "skein.log", env=env).start()
        m = self.skein.wait_for_line(
            r"skein started.*?\bkafka=\"?([^\s\"]+).*?\bhttp=\"?([^\s\"]+)", 60, "'skein started'"
        )
        self.bootstrap, self.skein_http = m.group(1), m.group(2)
        return self.bootstrap

    def start_postgres(self):
        self.pg_bin = postgres_bindir()
        pg = self.dir / "pg"
        if os.geteuid() == 0 and not _reachable_by_others(self.dir):
            # PostgreSQL runs as `postgres`, which cannot reach into e.g. pytest's 0700
            # base directory: its cluster goes to a directory of its own.
            pg = Path(tempfile.mkdtemp(prefix="skein-commerce-pg-"))
            os.chmod(pg, 0o755)
            self.extra_dirs.append(pg)
        data, sock = pg / "data", pg / "socket"
        for d in (pg, sock):
            d.mkdir(parents=True, exist_ok=True)
        log_path = self.logs / "postgres.log"
        log_path.touch()
        user = None
        if os.geteuid() == 0:  # initdb refuses to run as root
            user = "postgres"
            for p in (pg, sock, log_path):
                shutil.chown(p, user, user)
        if not (data / "PG_VERSION").exists():
            proc = subprocess.run(
                [self.pg_bin / "initdb", "-D", data, "-U", "commerce", "--auth=trust",
                 "-E", "UTF8", "--no-sync", "--locale=C"],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, user=user,
            )
            if proc.returncode != 0:
                raise HarnessError(f"initdb failed ({proc.returncode}):\n{proc.stdout}")
        self.pg_port = free_port()
        self.pg_socket = sock
        # The `postgres` server itself in the foreground (pg_ctl would daemonise it): the
        # harness owns it like any other child. Throwaway data: no fsync.
        args = [self.pg_bin / "postgres", "-D", data, "-p", self.pg_port, "-k", sock,
                "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
                "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                "-c", "max_connections=200"]
        self.postgres = Proc("postgres", args, log_path, user=user).start()
        self.postgres.wait_for_line(r"ready to accept connections", 60, "'ready to accept'")
        if "commerce" not in self.psql("SELECT datname FROM pg_database", db="postgres"):
            self.psql("CREATE DATABASE commerce", db="postgres")
        return self.pg_port

    def start_redis(self):
        self.redis_port = free_port()
        work = self.dir / "redis"
        work.mkdir(exist_ok=True)
        args = ["redis-server", "--port", self.redis_port, "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", work]
        self.redis = Proc("redis", args, self.logs / "redis.log").start()
        self.redis.wait_for_line(r"Ready to accept connections", 30, "'Ready to accept'")
        return self.redis_port

    def start_infra(self):
        self.start_skein()
        self.start_postgres()
        self.start_redis()

    # -- clients ------------------------------------------------------------------------------------

    def psql(self, sql, db="commerce"):
        """Runs SQL with psql; returns the rows as lists of strings (unaligned, tab-separated)."""
        proc = subprocess.run(
            ["psql", "-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1",
             "-h", "127.0.0.1", "-p", str(self.pg_port), "-U", "commerce", "-d", db,
             "-c", sql],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
        )
        if proc.returncode != 0:
            raise HarnessError(f"psql failed ({proc.returncode}) on {sql!r}: {proc.stderr}")
        return [line.split("\t") for line in proc.stdout.splitlines() if line]

    def psql_value(self, sql):
        rows = self.psql(sql)
        return rows[0][0] if rows else None

    def redis_cli(self, *args):
        proc = subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "-p", str(self.redis_port), "--no-raw", *args],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30,
        )
        if proc.returncode != 0:
            raise HarnessError(f"redis-cli {args} failed: {proc.stderr}")
        return proc.stdout

    def redis_raw(self, *args):
        """redis-cli --raw: one value per line."""
        proc = subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "-p", str(self.redis_port), "--raw", *args],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30,
        )
        if proc.returncode != 0:
            raise HarnessError(f"redis-cli {args} failed: {proc.stderr}")
        return proc.stdout.splitlines()

    def skein_cli(self, *args, check=True, timeout=60):
        proc = subprocess.run(
            [self.skein_path, *args, "--bootstrap", self.bootstrap],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise HarnessError(
                f"skein {' '.join(args)} exited {proc.returncode}: {proc.stderr}{proc.stdout}"
            )
        return proc

    def skein_json(self, *args):
        return json.loads(self.skein_cli(*args, "--output", "json").stdout)

    def http(self, method, path, body=None, headers=None, timeout=30):
        """One HTTP call to the api app: (status, parsed JSON body or text or None)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.api_port}{path}", data=data, method=method
        )
        req.add_header("Content-Type", "application/json")
        req.add_header("Accept", "application/json")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as err:
            status, raw = err.code, err.read()
        text = raw.decode("utf-8", "replace")
        try:
            return status, json.loads(text) if text else None
        except ValueError:
            return status, text

    # -- the apps -----------------------------------------------------------------------------------

    def app_env(self, profile):
        env = dict(os.environ)
        for k in list(env):
            if k.startswith(("SPRING_", "SERVER_", "JAVA_TOOL_OPTIONS", "JDK_JAVA_OPTIONS")):
                del env[k]
        env.update({
            "SPRING_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "SPRING_DATASOURCE_URL": f"jdbc:postgresql://127.0.0.1:{self.pg_port}/commerce",
            "SPRING_DATASOURCE_USERNAME": "commerce",
            "SPRING_DATASOURCE_PASSWORD": "commerce",
            "SPRING_DATA_REDIS_HOST": "127.0.0.1",
            "SPRING_DATA_REDIS_PORT": str(self.redis_port),
            "SERVER_PORT": str(self.api_port) if profile == "api" else "0",
            "COMMERCE_DOWNSTREAM_TIMEOUT_MS": os.environ.get(
                "COMMERCE_DOWNSTREAM_TIMEOUT_MS", "500"),
        })
        return env

    def java(self):
        home = os.environ.get("JAVA_HOME")
        if home and (Path(home) / "bin" / "java").exists():
            return str(Path(home) / "bin" / "java")
        for candidate in sorted(Path("/usr/lib/jvm").glob("*17*/bin/java")):
            return str(candidate)
        return "java"

    def jar(self):
        """The apps run from a copy of the jar in the stack's directory: a JVM loads classes
        lazily from its jar, so a Maven rebuild under running apps would break them."""
        copy = self.dir / "commerce-app.jar"
        if not copy.exists():
            shutil.copyfile(ensure_jar(self.say), copy)
        return copy

    def start_app(self, profile, wait=True):
        if self.api_port is None:
            self.api_port = free_port()
        proc = self.apps.get(profile)
        if proc is None:
            args = [self.java(), *JVM_OPTS, "-jar", self.jar(),
                    f"--spring.profiles.active={profile}"]
            proc = Proc(profile, args, self.logs / f"{profile}.log", env=self.app_env(profile),
                        cwd=self.dir)
            self.apps[profile] = proc
        proc.start()
        if wait:
            self.wait_app(profile)
        return proc

    def wait_app(self, profile, timeout=START_TIMEOUT_S):
        proc = self.apps[profile]
        proc.wait_for_line(
            rf"commerce ready: {re.escape(profile)}\b", timeout, f"'commerce ready: {profile}'"
        )
        if profile == "api":
            def healthy():
                if not proc.alive():
                    raise HarnessError(f"api exited; log {proc.log_path}:\n{tail(proc.log_path)}")
                try:
                    return self.http("GET", "/health", timeout=5)[0] == 200
                except OSError:
                    return False
            wait_until(healthy, 60, "GET /health to answer 200", interval=0.3)

    def start_apps(self, profiles=None):
        """Starts the apps side by side, then waits for every one to be ready."""
        self.jar()
        profiles = list(profiles or self.profiles)
        started = time.monotonic()
        for p in profiles:
            self.start_app(p, wait=False)
        for p in profiles:
            self.wait_app(p)
        return time.monotonic() - started

    def kill9(self, profile):
        self.apps[profile].kill9()

    def restart(self, profile, wait=True):
        proc = self.apps[profile]
        if proc.alive():
            proc.stop()
        return self.start_app(profile, wait=wait)

    def dead(self):
        """Children that exited although nobody stopped them: [(name, code, log path)]."""
        out = []
        for proc in [self.skein, self.postgres, self.redis, *self.apps.values()]:
            if proc is not None and proc.expect_running and proc.popen.poll() is not None:
                out.append((proc.name, proc.popen.returncode, proc.log_path))
        return out

    # -- shutdown -----------------------------------------------------------------------------------

    def stop(self, remove_dir=None):
        """Stops the apps, then Redis, PostgreSQL (fast shutdown) and Skein."""
        for proc in self.apps.values():
            proc.expect_running = False
            if proc.alive():
                proc.popen.send_signal(signal.SIGTERM)
        for proc in self.apps.values():
            proc.stop()
        if self.redis:
            self.redis.stop()
        if self.postgres:
            self.postgres.stop(signal.SIGINT)  # PostgreSQL's "fast" shutdown
        if self.skein:
            self.skein.stop()
        for d in self.extra_dirs:
            shutil.rmtree(d, ignore_errors=True)
        if remove_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def describe(self):
        """Where everything listens and logs, as printable lines."""
        lines = [
            f"skein         kafka {self.bootstrap}  http http://{self.skein_http}  "
            f"log {self.logs / 'skein.log'}",
            f"postgresql    127.0.0.1:{self.pg_port} db commerce user commerce  "
            f"(psql -h 127.0.0.1 -p {self.pg_port} -U commerce commerce)  "
            f"log {self.logs / 'postgres.log'}",
            f"redis         127.0.0.1:{self.redis_port}  (redis-cli -p {self.redis_port})  "
            f"log {self.logs / 'redis.log'}",
        ]
        for p, proc in self.apps.items():
            where = f"http://127.0.0.1:{self.api_port}" if p == "api" else "no HTTP"
            lines.append(f"{p:<13} pid {proc.pid}  {where}  log {proc.log_path}")
        return lines
