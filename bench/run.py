#!/usr/bin/env python3
"""Skein benchmark driver: measures Skein against the limits of the machine, in one run.

Load comes from librdkafka's `rdkafka_performance`, built from the source that the
`rdkafka-sys` crate vendors (cargo registry copy) and cached outside the repo. The broker is
pinned to core 1 and every client to core 0. Each figure is the median of --runs runs; the
machine limits (loopback TCP, fdatasync'd writes, librdkafka's in-memory mock broker) are
measured in the same run, so ratios compare like with like. See BENCHMARKS.md.

    bench/run --quick                      # 4-5 minutes
    bench/run --out bench-results.md       # full run, about 15 minutes
    bench/run --scenarios S1,S2 --perf     # a subset, with a perf profile of the broker in S1
    bench/run --scenarios S7 --perf        # replication: three brokers RF=3 against RF=1, 6-7 minutes
    bench/run --against 127.0.0.1:9092     # the same scenarios against another broker too
    bench/run --against-kafka --out race.md  # race Apache Kafka (scripts/kafka-reference), 16-20 minutes

--against-kafka runs S0, S1, S2, S3 and S5 on Skein and on the reference Apache Kafka broker,
both pinned to the broker core, interleaved run by run, in two durability pairings: (a) Kafka's
default (page-cache acks) against Skein with skein.acks.all.fsync=false, (b) Kafka with
log.flush.interval.messages=1 against Skein's default (fsync before the acks=all answer). It
reports Skein/Kafka ratios of throughput, broker CPU per MB, ack and e2e p99, peak and idle RSS
and start-up time, and the JVM's settings.

S7 starts three Skein brokers as one cluster on loopback (all on the broker core), makes a
one-partition topic with RF=3 and min.insync.replicas=2, and runs S1's unthrottled producer and
S2's 5,000 msg/s clients against it and against one broker (RF=1), interleaved run by run; it
reports the RF=3 / RF=1 ratios and each node's CPU per MB by role (leader, followers).
"""

import argparse
import datetime
import glob
import json
import math
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")
KIB = 1024
MIB = 1024 * 1024
BROKER_CPU = "1"
CLIENT_CPU = "0"
ALL_SCENARIOS = ["S0", "S1", "S2", "S3", "S4", "S5", "S6", "S7"]
SCENARIO_TITLES = {
    "S0": "start-up and idle",
    "S1": "throughput, 1 KiB, acks=all, linger.ms=1, batch.size=1 MiB",
    "S2": "latency at fixed rates, batch.size=128 KiB, default fetch.wait.max.ms",
    "S3": "small messages, 100 B",
    "S4": "durability: fsync before ack vs page-cache acks",
    "S5": "catch-up: consumer reads a backlog from the beginning, page cache evicted",
    "S6": "10,000 partitions on one broker",
    "S7": "replication: three brokers, RF=3, min.insync.replicas=2, acks=all, against RF=1 in the same run",
}
S7_RATE = 5_000  # msg/s, S7's latency phase

# --against-kafka: the two durability pairings. (a) Kafka's default, which acknowledges from
# the page cache (it relies on replication), against Skein with page-cache acks; (b) Kafka
# flushing every append before it answers (flush.messages=1, here broker-wide) against Skein's
# default, fdatasync before an acks=all answer.
RACE_PAIRINGS = {
    "a": dict(title="page-cache acks: Kafka's default against Skein with skein.acks.all.fsync=false",
              short="page cache", skein=["skein.acks.all.fsync=false"], kafka=[]),
    "b": dict(title="fsync before ack: Kafka with log.flush.interval.messages=1 against Skein's default",
              short="fsync", skein=[], kafka=["log.flush.interval.messages=1"]),
}
# (key, label, higher is better) for the ratio tables.
RACE_FIGURES = [
    ("prod_MBs", "produce MB/s", True),
    ("cons_MBs", "consume MB/s", True),
    ("cpu_ms_per_MB_prod", "CPU ms/MB produced", False),
    ("cpu_ms_per_MB_cons", "CPU ms/MB consumed", False),
    ("ack_p99", "ack p99", False),
    ("e2e_p99", "e2e p99", False),
    ("peak_rss_mib", "peak RSS", False),
]
RACE_SCENARIOS = ["S0", "S1", "S2", "S3", "S5"]
# The race runs every scenario on two brokers in two pairings; to stay under ~20 minutes on a
# quiet 2-vCPU machine, a full race shortens S2 and S5 (S1 and S3 keep their full size).
RACE_FULL_SCALE = dict(s2_seconds=5, s5_bytes=2 * 1024 * MIB)
RACE_WIN_MARGIN = 0.05  # a figure counts as won when it is better by more than this

# Sizes per mode. Full: about 15 minutes on 2 vCPUs (S7 about 5 of them); quick: 4-5 minutes.
PROFILES = {
    "full": dict(
        runs=3, s1_msgs=1_000_000, s2_seconds=10, s2_rates=(5_000, 50_000), s3_msgs=3_000_000,
        s5_bytes=3 * 1024 * MIB, s6_partitions=10_000, s6_msgs_per_partition=10,
        startup_runs=5, tcp_seconds=3, disk_seconds=3, kafka_startup_runs=3,
        s7_msgs=1_000_000, s7_seconds=10,
    ),
    "quick": dict(
        runs=3, s1_msgs=150_000, s2_seconds=2, s2_rates=(5_000, 50_000), s3_msgs=500_000,
        s5_bytes=512 * MIB, s6_partitions=1_000, s6_msgs_per_partition=2,
        startup_runs=3, tcp_seconds=1, disk_seconds=1, kafka_startup_runs=2,
        s7_msgs=150_000, s7_seconds=2,
    ),
}

CHILDREN = []  # processes to end on exit


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def die(msg):
    log(f"error: {msg}")
    sys.exit(1)


def nice_cmd(cmd):
    return ["nice", "-n", "19", *cmd]


def pinned(cpu, cmd):
    return ["taskset", "-c", cpu, *cmd] if shutil.which("taskset") and os.cpu_count() >= 2 else cmd


def run_cmd(cmd, timeout=None, check=True, **kw):
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and res.returncode != 0:
        raise RuntimeError(
            f"{' '.join(map(str, cmd))} exited {res.returncode}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
        )
    return res


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def percentile(sorted_values, p):
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return None
    k = max(0, math.ceil(p / 100.0 * len(sorted_values)) - 1)
    return sorted_values[min(k, len(sorted_values) - 1)]


def latency_stats(path):
    """p50/p99/p99.9 in ms from an rdkafka_performance -A file (one latency in µs a line)."""
    try:
        with open(path) as f:
            values = sorted(int(line) for line in f if line.strip())
    except FileNotFoundError:
        return {}
    if not values:
        return {}
    return {
        "p50": percentile(values, 50) / 1000.0,
        "p99": percentile(values, 99) / 1000.0,
        "p999": percentile(values, 99.9) / 1000.0,
        "n": len(values),
    }


# ---------------------------------------------------------------------------------------------
# The machine.


def machine_info():
    model = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory": mem,
        "kernel": platform.release(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "loadavg_start": loadavg(),
    }


def install_deps(with_perf):
    pkgs = ["iperf3", "fio", "build-essential", "pkg-config", "zlib1g-dev", "libssl-dev"]
    if with_perf:
        pkgs.append("linux-perf")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    log(f"apt-get install -y {' '.join(pkgs)}")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *pkgs], check=True, env=env)
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "confluent-kafka"], check=True)


# ---------------------------------------------------------------------------------------------
# rdkafka_performance: built from the cargo registry's rdkafka-sys copy, cached.


def cache_dir():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    d = Path(base) / "skein-bench"
    d.mkdir(parents=True, exist_ok=True)
    return d


def cargo_home():
    return Path(os.environ.get("CARGO_HOME") or os.path.join(os.path.expanduser("~"), ".cargo"))


def version_key(path):
    m = re.search(r"rdkafka-sys-(\d+)\.(\d+)\.(\d+)", str(path))
    return tuple(int(x) for x in m.groups()) if m else (0, 0, 0)


def find_librdkafka_source():
    dirs = glob.glob(str(cargo_home() / "registry" / "src" / "*" / "rdkafka-sys-*" / "librdkafka"))
    dirs = [d for d in dirs if os.path.exists(os.path.join(d, "configure"))]
    return Path(max(dirs, key=version_key)) if dirs else None


def fetch_librdkafka_source():
    """Brings rdkafka-sys into the cargo registry through a throwaway crate."""
    log("rdkafka-sys is not in the cargo registry; fetching it through a temporary crate")
    tmp = Path(tempfile.mkdtemp(prefix="skein-bench-fetch-"))
    try:
        (tmp / "src").mkdir()
        (tmp / "src" / "lib.rs").write_text("")
        (tmp / "Cargo.toml").write_text(
            '[package]\nname = "skein-bench-fetch"\nversion = "0.0.0"\nedition = "2021"\n\n'
            '[dependencies]\nrdkafka-sys = "4"\n\n[workspace]\n'
        )
        run_cmd(["cargo", "fetch"], cwd=tmp, timeout=900)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    src = find_librdkafka_source()
    if src:
        return src
    # Not unpacked: unpack the downloaded .crate ourselves.
    crates = glob.glob(str(cargo_home() / "registry" / "cache" / "*" / "rdkafka-sys-*.crate"))
    if not crates:
        die("could not fetch rdkafka-sys")
    crate = max(crates, key=version_key)
    dest = cache_dir() / "unpacked"
    dest.mkdir(exist_ok=True)
    with tarfile.open(crate) as t:
        t.extractall(dest)
    return Path(glob.glob(str(dest / Path(crate).stem / "librdkafka"))[0])


def ensure_rdkafka_performance(explicit):
    if explicit:
        return Path(explicit)
    src = find_librdkafka_source() or fetch_librdkafka_source()
    m = re.search(r"rdkafka-sys-([^/]+)", str(src))
    version = m.group(1) if m else "unknown"
    binary = cache_dir() / f"rdkafka_performance-{version}"
    if binary.exists():
        return binary
    build = cache_dir() / f"build-{version}"
    shutil.rmtree(build, ignore_errors=True)
    log(f"building rdkafka_performance from {src} in {build} (a few minutes, nice -n 19, -j2)")
    shutil.copytree(src, build, symlinks=True)
    base = ["./configure", "--disable-gssapi", "--disable-curl", "--disable-zstd", "--disable-lz4-ext"]
    try:
        run_cmd(nice_cmd(base), cwd=build, timeout=600)
    except RuntimeError:
        log("configure failed with OpenSSL/zlib auto-detected; retrying without them")
        run_cmd(nice_cmd(base + ["--disable-ssl", "--disable-zlib"]), cwd=build, timeout=600)
    run_cmd(nice_cmd(["make", "-j2", "libs"]), cwd=build, timeout=1800)
    run_cmd(nice_cmd(["make", "-C", "examples", "rdkafka_performance"]), cwd=build, timeout=600)
    shutil.copy2(build / "examples" / "rdkafka_performance", binary)
    shutil.rmtree(build, ignore_errors=True)
    log(f"cached {binary}")
    return binary


def ensure_skein(explicit):
    if explicit:
        return Path(explicit)
    log("cargo build --release -j2 --bin skein (nice -n 19)")
    res = run_cmd(
        nice_cmd(["cargo", "build", "--release", "-j2", "--bin", "skein", "--message-format=json-render-diagnostics"]),
        cwd=REPO, timeout=3600,
    )
    for line in res.stdout.splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("reason") == "compiler-artifact" and msg.get("executable") and msg["target"]["name"] == "skein":
            return Path(msg["executable"])
    die("cargo build did not report the skein executable")


# ---------------------------------------------------------------------------------------------
# Processes and the Kafka wire.


def proc_cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)


def proc_status_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def api_versions(host, port, timeout=2.0):
    """Sends ApiVersions v0 and reads the reply; True when the broker answered it."""
    client_id = b"skein-bench"
    body = struct.pack(">hhih", 18, 0, 7, len(client_id)) + client_id
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(struct.pack(">i", len(body)) + body)
        head = b""
        while len(head) < 8:
            chunk = s.recv(8 - len(head))
            if not chunk:
                return False
            head += chunk
        size, corr = struct.unpack(">ii", head)
        return corr == 7 and size >= 6


def highest_nofile():
    """The highest RLIMIT_NOFILE a child of this process may be given (probed in a child)."""
    candidates = []
    try:
        candidates.append(int(open("/proc/sys/fs/nr_open").read()))
    except (OSError, ValueError):
        pass
    candidates += [1_048_576, 262_144, 65_536]
    for n in candidates:
        probe = f"import resource; resource.setrlimit(resource.RLIMIT_NOFILE, ({n}, {n}))"
        if subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0:
            return n
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def cpu_seconds(ru0, ru1):
    return (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)


def split_hostport(hp):
    host, port = hp.rsplit(":", 1)
    return host, int(port)


class Broker:
    """A `skein serve` process on its own data directory, pinned to the broker core."""

    def __init__(self, binary, data_dir, settings=(), listen="127.0.0.1:0", nofile=None, extra_args=()):
        self.binary = binary
        self.nofile = nofile
        self.data_dir = Path(data_dir)
        self.settings = list(settings)
        self.listen = listen
        self.extra_args = list(extra_args)  # e.g. a cluster node's --node-id, --quorum
        self.proc = None
        self.bootstrap = None
        self.terminated = False
        self.stderr_path = self.data_dir.parent / (self.data_dir.name + ".log")

    def start(self, wait_for_log=True, timeout=60):
        self.launch()
        if wait_for_log:
            why = self.wait_started(time.monotonic() + timeout)
            if why:
                die(why)
        return self

    def launch(self):
        """Starts the process without waiting for its start line (a cluster's voters are all
        launched first: none finishes starting until a quorum exists)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [str(self.binary), "serve", "--listen", self.listen, "--http", "127.0.0.1:0",
               "--data-dir", str(self.data_dir), *self.extra_args]
        for kv in self.settings:
            cmd += ["--set", kv]
        env = {k: v for k, v in os.environ.items() if not k.startswith("SKEIN_")}
        env.update({"NO_COLOR": "1"})
        if os.environ.get("BENCH_SKEIN_LOG"):
            env["SKEIN_LOG"] = os.environ["BENCH_SKEIN_LOG"]
        self.stderr_file = open(self.stderr_path, "w")
        self.started_at = time.monotonic()
        nofile = self.nofile

        def limits():
            if nofile:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        self.proc = subprocess.Popen(pinned(BROKER_CPU, cmd), stdout=subprocess.DEVNULL,
                                     stderr=self.stderr_file, env=env, preexec_fn=limits)
        self.terminated = False
        CHILDREN.append(self.proc)
        return self

    def wait_started(self, deadline):
        """Waits for the `skein started` line until the monotonic `deadline`; None once started,
        else why not (with the log's tail)."""
        while time.monotonic() < deadline:
            text = self.stderr_path.read_text(errors="replace")
            m = re.search(r"skein started kafka=(\S+)", text)
            if m:
                self.bootstrap = m.group(1)
                sm = re.search(r"startup_ms=(\d+)", text)
                self.startup_ms = int(sm.group(1)) if sm else None
                return None
            if self.proc.poll() is not None:
                return f"skein exited {self.proc.returncode}:\n{text[-2000:]}"
            time.sleep(0.01)
        return f"skein did not start in time:\n{self.stderr_path.read_text(errors='replace')[-2000:]}"

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def cpu_ticks(self):
        return proc_cpu_ticks(self.pid)

    def rss_kib(self):
        return proc_status_kib(self.pid, "VmRSS")

    def hwm_kib(self):
        return proc_status_kib(self.pid, "VmHWM")

    def terminate(self):
        """SIGTERM without waiting (a cluster's nodes are stopped together: one by one, the
        last voters would each wait for a quorum that is already gone)."""
        if self.proc and self.proc.poll() is None and not self.terminated:
            self.proc.send_signal(signal.SIGTERM)
            self.terminated = True

    def stop(self, timeout=60):
        if not self.proc:
            return None
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log("skein did not stop on SIGTERM; killing it")
                self.proc.kill()
                self.proc.wait()
        self.stderr_file.close()
        return time.monotonic() - t0


class SkeinCluster:
    """Three `skein serve` processes forming one cluster on loopback (S7), as
    tests/integration/cluster.py starts them: node ids 1-3, every node a voter
    (`broker,controller`) naming every voter's controller port in `--quorum`, each with its own
    data directory and ports, all pinned to the broker core with default settings. The ports
    are chosen before anything starts (bind port 0, close); if one was taken meanwhile, the
    whole cluster starts again on new ports and directories."""

    VOTERS = (1, 2, 3)
    ATTEMPTS = 3

    def __init__(self, binary, base_dir, settings=()):
        self.binary = binary
        self.base_dir = Path(base_dir)
        self.settings = list(settings)
        self.nodes = {}  # node id -> Broker

    def start(self, timeout=60):
        for attempt in range(1, self.ATTEMPTS + 1):
            cports = {i: free_port() for i in self.VOTERS}
            quorum = ",".join(f"{i}@127.0.0.1:{cports[i]}" for i in self.VOTERS)
            self.nodes = {
                i: Broker(self.binary, self.base_dir / f"attempt{attempt}" / f"node{i}", self.settings,
                          listen=f"127.0.0.1:{free_port()}",
                          extra_args=["--node-id", str(i), "--controller-listen", f"127.0.0.1:{cports[i]}",
                                      "--quorum", quorum])
                for i in self.VOTERS
            }
            for b in self.nodes.values():
                b.launch()
            deadline = time.monotonic() + timeout
            failures = {i: why for i, b in self.nodes.items() if (why := b.wait_started(deadline))}
            if not failures:
                self.pids = {i: b.pid for i, b in self.nodes.items()}
                self.bootstrap = ",".join(b.bootstrap for b in self.nodes.values())
                return self
            self.stop()
            logs = "\n".join(f"node {i}: {why}" for i, why in failures.items())
            if "Address already in use" not in logs:
                die(f"the three-node cluster did not start:\n{logs}")
            log(f"cluster start attempt {attempt}: a port was taken meanwhile; again on new ports")
        die(f"the three-node cluster did not start: a port was taken in each of {self.ATTEMPTS} attempts")

    def controller(self):
        """The active controller (the quorum leader) as `skein cluster info` reports it."""
        res = run_cmd([str(self.binary), "cluster", "info", "--output", "json", "--bootstrap", self.bootstrap],
                      timeout=60, check=False)
        try:
            return json.loads(res.stdout)["quorum"]["leader_id"]
        except (ValueError, KeyError, TypeError):
            return None

    def stop(self):
        """SIGTERM to all three at once, as tests/integration/cluster.py does (stopped one by one,
        the last voter waits for a quorum that is already gone). Whichever node is still
        waiting for its controlled shutdown when the active controller exits stops after
        Skein's 10 s limit, so this takes about 10 s; the measurements are over by then."""
        t0 = time.monotonic()
        for b in self.nodes.values():
            b.terminate()
        for b in self.nodes.values():
            b.stop()
        log(f"three-node cluster stopped in {time.monotonic() - t0:.1f} s")


class KafkaReference:
    """The reference Apache Kafka broker, started through `scripts/kafka-reference` (KRaft,
    combined mode) on its own data directory and pinned to the broker core like Skein.

    `pid` is the broker's JVM: utime+stime and VmHWM come from its /proc entry. `startup_ms` is
    the time from that process's start (its /proc starttime, 10 ms ticks) to the first
    ApiVersions answer seen by a loop that asks every 2 ms while the script waits; formatting the
    data directory (`kafka-storage format`, a separate JVM the script runs first) is not counted."""

    def __init__(self, script, data_dir, settings=(), heap=None):
        self.script = str(script)
        self.data_dir = Path(data_dir)
        self.settings = list(settings)
        self.heap = heap
        self.pid = None
        self.bootstrap = None
        self.startup_ms = None
        self.log_path = self.data_dir.parent / (self.data_dir.name + ".script.log")

    def start(self, timeout=600):
        port = free_port()
        cmd = [self.script, "start", "--port", str(port), "--dir", str(self.data_dir), "--cpus", BROKER_CPU,
               "--timeout", str(timeout)]
        for kv in self.settings:
            cmd += ["--set", kv]
        if self.heap:
            cmd += ["--heap", self.heap]
        log(f"kafka: {' '.join(cmd[1:])}")
        with open(self.log_path, "w") as err:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
        CHILDREN.append(proc)
        lines = []

        def read():  # line by line: the broker may inherit the script's stdout
            for line in proc.stdout:
                lines.append(line)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        answered = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if api_versions("127.0.0.1", port, timeout=5):
                    answered = time.clock_gettime(time.CLOCK_BOOTTIME)
                    break
            except OSError:
                pass
            if proc.poll() is not None and proc.returncode != 0:
                break
            time.sleep(0.002)
        try:
            proc.wait(timeout=max(1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
        reader.join(2)
        out = "".join(lines)
        pm = re.search(r"^pid=(\d+)", out, re.M)
        bm = re.search(r"^bootstrap=(\S+)", out, re.M)
        if proc.returncode != 0 or not pm or not bm or answered is None:
            die(f"scripts/kafka-reference start failed (exit {proc.returncode}):\n{out[-2000:]}\n"
                f"{self.log_path.read_text(errors='replace')[-3000:]}")
        self.pid = self._jvm_pid(int(pm.group(1)))
        self.bootstrap = bm.group(1)
        with open(f"/proc/{self.pid}/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22: starttime
        self.startup_ms = (answered - start_ticks / CLK_TCK) * 1000.0
        return self

    @staticmethod
    def _jvm_pid(pid):
        """The java process itself, if the script reported a wrapper (taskset execs, so usually
        it is the same process)."""
        def comm(p):
            try:
                return open(f"/proc/{p}/comm").read().strip()
            except OSError:
                return ""
        if comm(pid) == "java":
            return pid
        for child in glob.glob(f"/proc/{pid}/task/*/children"):
            for c in open(child).read().split():
                if comm(c) == "java":
                    return int(c)
        return pid

    def alive(self):
        return self.pid is not None and os.path.exists(f"/proc/{self.pid}")

    def cpu_ticks(self):
        return proc_cpu_ticks(self.pid)

    def rss_kib(self):
        return proc_status_kib(self.pid, "VmRSS")

    def set_idle(self, idle):
        """Moves every thread of the broker to SCHED_IDLE (or back to SCHED_OTHER), so that
        while Skein runs on the shared broker core the idle JVM (JIT compiler threads catching
        up, G1's concurrent work, KRaft's no-op records every 500 ms) only gets the core when
        Skein does not want it, and stays alive meanwhile (SIGSTOP would make its own
        controller fence it)."""
        policy = os.SCHED_IDLE if idle else os.SCHED_OTHER
        for tid in os.listdir(f"/proc/{self.pid}/task"):
            try:
                os.sched_setscheduler(int(tid), policy, os.sched_param(0))
            except OSError:
                pass  # a thread that just ended

    def reset_peak_rss(self):
        """Resets VmHWM to the current RSS (Linux >= 4.0, /proc/PID/clear_refs 5)."""
        try:
            with open(f"/proc/{self.pid}/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass

    def jvm_info(self):
        """Version, heap, GC and the JVM options of the running broker (jcmd, else cmdline)."""
        info = {}
        try:
            argv = open(f"/proc/{self.pid}/cmdline").read().split("\0")
        except OSError:
            argv = []
        opts = []
        skip = False
        for a in argv[1:]:
            if skip:
                skip = False
                continue
            if a in ("-cp", "-classpath", "--class-path"):
                skip = True
                continue
            if not a.startswith("-"):
                break  # the main class
            opts.append(a)
        info["options"] = " ".join(opts)
        kv = re.search(r"kafka_2\.\d+-([\w.]+?)\.jar", " ".join(argv))
        info["kafka_version"] = kv.group(1) if kv else None
        try:
            java = os.path.realpath(f"/proc/{self.pid}/exe")
        except OSError:
            java = "java"
        jcmd = os.path.join(os.path.dirname(java), "jcmd")
        if not os.path.exists(jcmd):
            jcmd = shutil.which("jcmd")
        if jcmd:
            try:
                ver = run_cmd([jcmd, str(self.pid), "VM.version"], timeout=30, check=False).stdout
                m = re.search(r"^(OpenJDK|Java HotSpot).*$", ver, re.M)
                jdk = re.search(r"^JDK (\S+)", ver, re.M)
                info["version"] = (m.group(0).strip() if m else "") + (f" (JDK {jdk.group(1)})" if jdk else "")
                flags = run_cmd([jcmd, str(self.pid), "VM.flags"], timeout=30, check=False).stdout
                info["flags"] = " ".join(f for f in flags.split() if f.startswith("-XX"))
            except (subprocess.TimeoutExpired, OSError):
                pass
        flags = info.get("flags", "") + " " + info["options"]
        gc = re.findall(r"-XX:\+Use(\w+GC)\b", flags)
        info["gc"] = gc[-1] if gc else "?"
        for key, name in (("MaxHeapSize", "max_heap"), ("InitialHeapSize", "initial_heap")):
            m = re.search(rf"-XX:{key}=(\d+)", flags)
            if m:
                info[name] = f"{int(m.group(1)) / MIB:,.0f} MiB"
        info["threads"] = " ".join(re.findall(r"-XX:(?:CICompilerCount|ConcGCThreads|ParallelGCThreads)=\d+", flags))
        try:
            info["os_threads"] = proc_status_kib(self.pid, "Threads")
        except OSError:
            pass
        return info

    def perf_map(self):
        """Writes /tmp/perf-PID.map (JDK 17+), so that perf names JIT-compiled Java frames."""
        jcmd = os.path.join(os.path.dirname(os.path.realpath(f"/proc/{self.pid}/exe")), "jcmd")
        if os.path.exists(jcmd):
            run_cmd([jcmd, str(self.pid), "Compiler.perfmap"], timeout=60, check=False)

    def stop(self):
        if self.pid is None:
            return
        res = run_cmd([self.script, "stop", "--dir", str(self.data_dir)], timeout=180, check=False)
        if res.returncode != 0:
            log(f"kafka-reference stop exited {res.returncode}: {res.stderr[-500:]}")
        if self.alive():
            try:
                os.kill(self.pid, signal.SIGKILL)
            except OSError:
                pass
        self.pid = None


def admin(bootstrap, **conf):
    from confluent_kafka.admin import AdminClient
    return AdminClient({"bootstrap.servers": bootstrap, "log_level": 2, **conf})


def create_topic(bootstrap, name, partitions, timeout=120):
    from confluent_kafka.admin import NewTopic
    # socket.timeout.ms (60 s by default) also bounds how long a request may take.
    a = admin(bootstrap, **{"socket.timeout.ms": min(300_000, max(60_000, int(timeout * 1000)))})
    fut = a.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)],
                          operation_timeout=timeout, request_timeout=timeout)
    fut[name].result(timeout=timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        md = a.list_topics(topic=None, timeout=timeout)
        t = md.topics.get(name)
        if t is not None and t.error is None and len(t.partitions) == partitions:
            return
        time.sleep(0.05)
    raise RuntimeError(f"topic {name} did not show {partitions} partitions")


# Errors a CreateTopics may meet just after a cluster started (no controller elected yet, brokers
# not yet registered or unfenced); it is retried on them.
RETRIABLE_CREATE_ERRORS = {"NOT_CONTROLLER", "REQUEST_TIMED_OUT", "LEADER_NOT_AVAILABLE", "BROKER_NOT_AVAILABLE",
                           "NETWORK_EXCEPTION", "INVALID_REPLICATION_FACTOR", "INVALID_REPLICA_ASSIGNMENT",
                           "_TIMED_OUT", "_TRANSPORT", "_ALL_BROKERS_DOWN"}


def create_replicated_topic(bootstrap, name, assignment, config, timeout=120):
    """Creates `name` with the replica list `assignment[p]` for each partition p (the first
    replica is the preferred leader) and `config`, retried on the errors of a cluster that is
    still settling, then waits until every partition has a leader and all its replicas in the
    ISR. Returns {partition: (leader, replicas, isr)}."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import NewTopic
    a = admin(bootstrap)
    deadline = time.monotonic() + timeout
    retried = False
    while True:
        fut = a.create_topics([NewTopic(name, num_partitions=len(assignment), replica_assignment=assignment,
                                       config=dict(config))],
                              operation_timeout=30, request_timeout=30)
        try:
            fut[name].result(timeout=60)
            break
        except KafkaException as e:
            err = e.args[0]
            if err.name() == "TOPIC_ALREADY_EXISTS" and retried:
                break  # an earlier attempt was committed before its answer was lost
            if (err.name() not in RETRIABLE_CREATE_ERRORS and not err.retriable()) or time.monotonic() > deadline:
                raise RuntimeError(f"creating {name}: {err}") from None
            retried = True
            time.sleep(0.2)  # back off before retrying
    while time.monotonic() < deadline:
        md = a.list_topics(topic=name, timeout=30)
        t = md.topics.get(name)
        if t is not None and t.error is None and len(t.partitions) == len(assignment):
            parts = {p: (pm.leader, list(pm.replicas), list(pm.isrs)) for p, pm in t.partitions.items()}
            if all(leader >= 0 and len(isr) == len(reps) for leader, reps, isr in parts.values()):
                return parts
        time.sleep(0.05)
    raise RuntimeError(f"topic {name}: not every partition had a leader and a full ISR within {timeout}s")


LATENCY_GROUP = "skein-bench-latency"  # bench/latency_client.py's consumer group


def find_coordinator(host, port, group, timeout=10.0):
    """FindCoordinator v0 for `group`, sent by hand (no client library state): its error code
    and the coordinator's node id."""
    client_id, key = b"skein-bench", group.encode()
    body = (struct.pack(">hhih", 10, 0, 11, len(client_id)) + client_id +
            struct.pack(">h", len(key)) + key)
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(struct.pack(">i", len(body)) + body)
        data = b""
        while len(data) < 4 or len(data) < 4 + struct.unpack(">i", data[:4])[0]:
            chunk = s.recv(65536)
            if not chunk:
                raise OSError("connection closed")
            data += chunk
    corr, error, node = struct.unpack(">ihi", data[4:14])
    if corr != 11:
        raise OSError(f"FindCoordinator answered with correlation id {corr}")
    return error, node


def settle_group_coordinator(bootstrap, group, timeout=120):
    """Asks every broker in turn for `group`'s coordinator until one names it (which makes the
    broker create __consumer_offsets; until then COORDINATOR_NOT_AVAILABLE), then waits until
    that topic is listed and every partition of every topic has a leader and all its replicas
    in the ISR. (FindCoordinator is sent by hand: librdkafka's describe_consumer_groups
    sometimes waited out its whole timeout here, and a retry then tripped an assertion in
    librdkafka 2.12.1 that killed the driver.)"""
    hosts = [split_hostport(hp) for hp in bootstrap.split(",")]
    t0 = time.monotonic()
    i, last = 0, None
    while True:
        try:
            last, _node = find_coordinator(*hosts[i % len(hosts)], group)
            if last == 0:
                break
        except (OSError, struct.error) as e:
            last = str(e)
        if time.monotonic() - t0 > timeout:
            raise RuntimeError(f"no coordinator for group {group} within {timeout}s (last answer: {last})")
        i += 1
        time.sleep(0.1)
    t1 = time.monotonic()
    a = admin(bootstrap)
    while time.monotonic() - t0 < timeout:
        md = a.list_topics(timeout=30)
        if "__consumer_offsets" in md.topics and all(
                t.error is None and all(pm.leader >= 0 and len(pm.isrs) == len(pm.replicas)
                                        for pm in t.partitions.values()) for t in md.topics.values()):
            log(f"group coordinator named after {t1 - t0:.1f} s, every ISR full {time.monotonic() - t1:.1f} s later")
            return
        time.sleep(0.1)
    raise RuntimeError(f"__consumer_offsets was not listed with every ISR full within {timeout}s")


def partition_leader(bootstrap, name, partition=0):
    try:
        md = admin(bootstrap).list_topics(topic=name, timeout=30)
        return md.topics[name].partitions[partition].leader
    except Exception:  # noqa: BLE001 - a figure, not a failure
        return None


def unique_topic(prefix):
    return f"bench-{prefix}-{uuid.uuid4().hex[:8]}"


# ---------------------------------------------------------------------------------------------
# Targets: the broker under test, librdkafka's mock broker, another broker (--against).


class Target:
    def __init__(self, name, kind, bootstrap=None, pid=None, broker=None, data_dir=None, cluster=None):
        self.name = name
        self.kind = kind  # "skein" | "mock" | "mock1" | "against" | "kafka" | "cluster"
        self.bootstrap = bootstrap
        self.pid = pid  # for a cluster: the leader of the topic last made (Bench.make_topic)
        self.broker = broker
        # The broker's data directory, when the driver knows it (page-cache eviction in S5).
        self.data_dir = data_dir or (broker.data_dir if broker else None)
        self.cluster = cluster  # SkeinCluster (S7)
        self.roles = {}  # cluster: "leader" | "follower" | "other" -> node id, set by Bench.make_topic
        self.controller = None  # cluster: the active controller's node id

    def role_ticks(self):
        """Cluster: utime+stime of each role's process, {role: ticks}; else None."""
        if not self.cluster or not self.roles:
            return None
        return {role: proc_cpu_ticks(self.cluster.pids[n]) for role, n in self.roles.items()}

    def client_args(self):
        if self.kind in ("mock", "mock1"):
            return ["-X", "test.mock.num.brokers=1"]
        return ["-b", self.bootstrap]

    def cpu_ticks(self):
        """The broker's CPU ticks; for a cluster, the sum over its three processes."""
        if self.cluster:
            return sum(proc_cpu_ticks(pid) for pid in self.cluster.pids.values())
        return proc_cpu_ticks(self.pid) if self.pid else None

    def hwm_mib(self, pid=None):
        pid = pid or self.pid
        v = proc_status_kib(pid, "VmHWM") if pid else None
        return v / 1024.0 if v else None

    def rss_mib(self):
        v = proc_status_kib(self.pid, "VmRSS") if self.pid else None
        return v / 1024.0 if v else None


class Bench:
    def __init__(self, args, profile, rdkp, skein_bin, workdir):
        self.args = args
        self.p = profile
        self.rdkp = str(rdkp)
        self.skein_bin = skein_bin
        self.work = Path(workdir)
        self.results = {}  # (scenario row label, target name) -> list of run dicts
        self.notes = []
        self.extra = {}
        self.kafka = None  # the running KafkaReference during a race pairing
        # --against-kafka: (pairing key, scenario row, "skein" | "kafka") -> list of run dicts
        self.race = {}

    # -- sessions ------------------------------------------------------------------------------

    def session(self, kind, settings=()):
        """A context manager giving a Target ready for one run."""
        bench = self

        class _S:
            def __enter__(s):
                s.cluster = None
                if kind == "skein":
                    d = bench.work / f"skein-{uuid.uuid4().hex[:8]}"
                    s.broker = Broker(bench.skein_bin, d, settings).start()
                    return Target("skein", "skein", s.broker.bootstrap, s.broker.pid, s.broker)
                s.broker = None
                if kind == "cluster":
                    t0 = time.monotonic()
                    s.cluster = SkeinCluster(bench.skein_bin, bench.work / f"cluster-{uuid.uuid4().hex[:8]}",
                                             settings).start()
                    log(f"three-node cluster up in {time.monotonic() - t0:.1f} s")
                    return Target("skein, 3 brokers", "cluster", s.cluster.bootstrap, cluster=s.cluster)
                if kind in ("mock", "mock1"):
                    return Target("librdkafka mock", kind)
                if kind == "kafka":
                    # The reference Apache Kafka broker of the current race pairing: started once
                    # per pairing (a JVM needs warming up), so each run gets new topics instead,
                    # and its peak RSS is reset so that VmHWM covers this run only.
                    k = bench.kafka
                    k.set_idle(False)
                    k.reset_peak_rss()
                    return Target("kafka", "kafka", k.bootstrap, k.pid, data_dir=k.data_dir)
                return Target("against", "against", bench.args.against, bench.args.against_pid)

            def __exit__(s, *exc):
                if s.broker:
                    s.broker.stop()
                    if not bench.args.keep:
                        shutil.rmtree(s.broker.data_dir, ignore_errors=True)
                if s.cluster:
                    s.cluster.stop()
                    if not bench.args.keep:
                        shutil.rmtree(s.cluster.base_dir, ignore_errors=True)
                return False

        return _S()

    def targets(self, mock=True, against=True):
        out = ["skein"]
        if mock and not self.args.no_mock:
            out.append("mock")
        if against and self.args.against:
            out.append("against")
        return out

    def pretouch(self, nbytes):
        """Writes and deletes a scratch file of about `nbytes` just before a produce phase.

        On this kind of VM the hypervisor takes free guest memory back within seconds (free page
        reporting), and the first touch of such a page costs about 2 ms/MB of system time to
        whoever touches it. A broker at steady state recycles its own page cache instead, so the
        driver pays that toll here, on the client core, and the broker's page cache lands on
        memory that is already backed. --no-pretouch measures without it."""
        if self.args.no_pretouch or nbytes <= 0:
            return
        path = self.work / "pretouch.scratch"
        buf = b"\0" * MIB
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            for _ in range(int(nbytes * 1.1) // MIB + 1):
                os.write(fd, buf)
        finally:
            os.close(fd)
            os.unlink(path)

    def make_topic(self, t, topic, partitions):
        """Creates the run's topic: RF=1 on one broker; on a cluster (S7) RF=3 with
        min.insync.replicas=2, its preferred leader a node that is not the active controller (so
        that the leader's CPU and the first follower's carry no controller work), waiting until
        every ISR is full. Sets t.pid to the leader's process and t.roles to the node ids."""
        if t.kind in ("mock", "mock1"):
            return
        if t.kind != "cluster":
            create_topic(t.bootstrap, topic, partitions)
            return
        t0 = time.monotonic()
        controller = t.cluster.controller()
        ids = sorted(t.cluster.pids)
        order = [i for i in ids if i != controller] + [i for i in ids if i == controller]
        assignment = [order[p % 3:] + order[:p % 3] for p in range(partitions)]
        parts = create_replicated_topic(t.bootstrap, topic, assignment, {"min.insync.replicas": "2"})
        log(f"RF=3 topic with a full ISR in {time.monotonic() - t0:.1f} s (replicas {parts[0][1]}, "
            f"leader {parts[0][0]}, active controller {controller})")
        leader, replicas, _isr = parts[0]
        followers = [n for n in replicas if n != leader]
        followers.sort(key=lambda n: n == controller)  # a follower that is not the controller first
        t.roles = {"leader": leader, "follower": followers[0], "other": followers[1]}
        t.controller = controller
        t.pid = t.cluster.pids[leader]

    def role_figures(self, t, before, after, mb, secs, phase, r):
        """S7: each node's CPU over a phase, per MB produced and as % of a core, by role."""
        if before is None or after is None:
            return
        for role, node in t.roles.items():
            secs_cpu = (after[role] - before[role]) / CLK_TCK
            r[f"cpu_ms_per_MB_{phase}_{role}"] = secs_cpu * 1000.0 / mb
            r[f"cpu_pct_{phase}_{role}"] = secs_cpu * 100.0 / secs
            r[f"peak_rss_mib_{role}"] = t.hwm_mib(t.cluster.pids[node])
            r[f"node_{role}"] = node
        r["node_controller"] = t.controller

    def record(self, row, target_name, result):
        self.results.setdefault((row, target_name), []).append(result)

    # -- rdkafka_performance -------------------------------------------------------------------

    def produce(self, t, topic, size, count, partition=None, batch=MIB, rate=None, latency_file=None,
                extra=(), timeout=600):
        cmd = [self.rdkp, "-P", "-t", topic, "-s", str(size), "-c", str(count), "-a", "-1", "-q",
               "-X", "linger.ms=1", "-X", f"batch.size={batch}",
               "-X", f"message.max.bytes={max(batch, 1_000_000)}", *t.client_args(), *extra]
        if partition is not None:
            cmd += ["-p", str(partition)]
        if rate:
            cmd += ["-r", str(rate)]
        if latency_file:
            cmd += ["-l", "-A", str(latency_file)]
        # The mock broker lives in the client's process: give it both cores, as client and broker
        # have between them when the broker is a separate process.
        cpus = f"{CLIENT_CPU},{BROKER_CPU}" if t.kind == "mock" else CLIENT_CPU
        if t.kind == "mock1":
            cpus = CLIENT_CPU
        ru0, w0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
        res = run_cmd(pinned(cpus, cmd), timeout=timeout, check=False)
        ru1, wall = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic() - w0
        m = None
        for m in re.finditer(r"% (\d+) messages produced \((\d+) bytes\), (\d+) delivered .*? in (\d+)ms: "
                             r"(\d+) msgs/s and ([\d.]+) MB/s", res.stdout):
            pass
        if not m:
            raise RuntimeError(f"producer output not understood (exit {res.returncode}):\n"
                               f"{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
        msgs, nbytes, delivered, ms = (int(m.group(i)) for i in (1, 2, 3, 4))
        if delivered < count:
            raise RuntimeError(f"only {delivered} of {count} messages were delivered:\n{res.stdout[-2000:]}")
        secs = max(ms, 1) / 1000.0
        out = {"prod_msgs_s": delivered / secs, "prod_MBs": delivered * size / secs / 1e6,
               "prod_bytes": delivered * size, "prod_ms": ms, "prod_wall_s": wall,
               "client_cpu_pct_prod": cpu_seconds(ru0, ru1) * 100 / secs}
        if latency_file:
            out.update({f"ack_{k}": v for k, v in latency_stats(latency_file).items() if k != "n"})
            if not self.args.keep:
                Path(latency_file).unlink(missing_ok=True)
        return out

    def consume_cmd(self, t, topic, partitions, count, latency_file=None, quiet=True):
        cmd = [self.rdkp, "-C", "-t", topic, "-o", "beginning", "-c", str(count), *t.client_args()]
        if quiet:
            cmd.append("-q")
        for p in partitions:
            cmd += ["-p", str(p)]
        if latency_file:
            cmd += ["-l", "-A", str(latency_file)]
        return pinned(CLIENT_CPU, cmd)

    @staticmethod
    def parse_consume(stdout):
        m = None
        for m in re.finditer(r"% (\d+) messages \((\d+) bytes\) consumed in (\d+)ms: (\d+) msgs/s", stdout):
            pass
        if not m:
            raise RuntimeError(f"consumer output not understood:\n{stdout[-2000:]}")
        msgs, nbytes, ms = int(m.group(1)), int(m.group(2)), max(int(m.group(3)), 1)
        return {"cons_msgs_s": msgs / (ms / 1000.0), "cons_MBs": nbytes / (ms / 1000.0) / 1e6,
                "cons_bytes": nbytes, "cons_ms": ms, "cons_msgs": msgs}

    def consume(self, t, topic, partitions, count, timeout=600):
        ru0, w0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
        res = run_cmd(self.consume_cmd(t, topic, partitions, count), timeout=timeout, check=False)
        ru1, wall = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic() - w0
        out = self.parse_consume(res.stdout)
        out["cons_wall_s"] = wall
        out["client_cpu_pct_cons"] = cpu_seconds(ru0, ru1) * 100 / (out["cons_ms"] / 1000.0)
        if out["cons_msgs"] < count:
            raise RuntimeError(f"consumer got {out['cons_msgs']} of {count} messages")
        return out

    # -- scenario building blocks ---------------------------------------------------------------

    def throughput_run(self, kind, size, count, partitions, settings=(), consume=True, profile_to=None):
        with self.session(kind, settings) as t:
            topic = unique_topic(f"s{size}")
            self.make_topic(t, topic, partitions)
            lat = self.work / f"ack-{uuid.uuid4().hex[:8]}.txt"
            part = 0 if partitions == 1 else None
            self.pretouch(size * count * (3 if kind == "cluster" else 1))  # a cluster writes three copies
            fs = FsyncCounter(t.pid) if (t.pid and kind in ("skein", "kafka", "cluster")) else None
            # S7: the first follower's fsyncs too, and its profile.
            follower = t.cluster.pids[t.roles["follower"]] if kind == "cluster" else None
            fs_f = FsyncCounter(follower) if follower else None
            perf = PerfRecord(t.pid, f"{profile_to}-produce") if profile_to else None
            perf_f = PerfRecord(follower, f"{profile_to}-follower-produce") if profile_to and follower else None
            c0, n0 = t.cpu_ticks(), t.role_ticks()
            r = self.produce(t, topic, size, count, partition=part, latency_file=lat)
            c1, n1 = t.cpu_ticks(), t.role_ticks()
            for p in (perf, perf_f):
                if p:
                    p.stop()
            for counter, key in ((fs, "bytes_per_fsync"), (fs_f, "bytes_per_fsync_follower")):
                n = counter.stop() if counter else None
                if n:
                    r[key.replace("bytes_per_fsync", "fsyncs")] = n
                    r[key] = r["prod_bytes"] / n
            self.role_figures(t, n0, n1, r["prod_bytes"] / 1e6, r["prod_ms"] / 1000.0, "prod", r)
            if kind == "cluster":
                r["leader_after"] = partition_leader(t.bootstrap, topic)
            if c0 is not None:
                r["cpu_ms_per_MB_prod"] = (c1 - c0) * 1000.0 / CLK_TCK / (r["prod_bytes"] / 1e6)
                r["broker_cpu_pct_prod"] = (c1 - c0) * 100.0 / CLK_TCK / (r["prod_ms"] / 1000.0)
            if consume and kind not in ("mock", "mock1"):
                perf = PerfRecord(t.pid, f"{profile_to}-consume") if profile_to else None
                c2 = t.cpu_ticks()
                r.update(self.consume(t, topic, range(partitions), count))
                c3 = t.cpu_ticks()
                if perf:
                    perf.stop()
                if c2 is not None:
                    r["cpu_ms_per_MB_cons"] = (c3 - c2) * 1000.0 / CLK_TCK / (r["cons_bytes"] / 1e6)
                    r["broker_cpu_pct_cons"] = (c3 - c2) * 100.0 / CLK_TCK / (r["cons_ms"] / 1000.0)
            r["peak_rss_mib"] = t.hwm_mib()
            return r

    def latency_run(self, kind, rate, seconds, settings=(), profile_to=None, settle_group=False):
        """S2: a paced producer and a consumer that waits on the broker's long poll.

        Uses bench/latency_client.py (confluent-kafka, i.e. librdkafka) rather than
        rdkafka_performance -r, whose rate limiter busy-polls on the one client core.
        `settle_group` (S7): before the clients start, have the consumer's group coordinator
        (and so __consumer_offsets, 50 partitions) created and every ISR full, so that creating
        it does not fall into the measured interval."""
        count = int(rate * seconds)
        client = [sys.executable, str(Path(__file__).resolve().parent / "latency_client.py")]
        e2e = self.work / f"e2e-{uuid.uuid4().hex[:8]}.txt"
        ack = self.work / f"ack-{uuid.uuid4().hex[:8]}.txt"
        procs = []

        def start(cpus, args):
            p = subprocess.Popen(pinned(cpus, client + args), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, text=True)
            CHILDREN.append(p)
            procs.append(p)
            return p

        def ready_line(p, what, timeout=60):
            box = []
            th = threading.Thread(target=lambda: box.append(p.stdout.readline()), daemon=True)
            th.start()
            th.join(timeout)
            if not box or not box[0].startswith("READY"):
                raise RuntimeError(f"the latency {what} did not get ready: {box[:1]}")
            return box[0].split()[1:]

        def result(p, timeout):
            box = []

            def read():
                for line in p.stdout:
                    if line.startswith("{"):
                        box.append(json.loads(line))
                        return

            th = threading.Thread(target=read, daemon=True)
            th.start()
            th.join(timeout)
            if not box:
                raise RuntimeError(f"the latency client printed no result (exit {p.poll()})")
            return box[0]

        with self.session(kind, settings) as t:
            topic = unique_topic(f"lat{rate}")
            try:
                common = ["--topic", topic, "--count", str(count), "--partition", "0"]
                cons = None
                if kind == "mock":
                    # The mock broker lives in the producer's process, on both cores. No consumer:
                    # librdkafka's consumer loses most messages fetched from its mock broker.
                    prod = start(f"{CLIENT_CPU},{BROKER_CPU}", ["produce", "--mock", "--rate", str(rate),
                                                               "--out", str(ack), *common])
                    ready_line(prod, "producer")
                else:
                    self.make_topic(t, topic, 1)
                    if settle_group:
                        settle_group_coordinator(t.bootstrap, LATENCY_GROUP)
                    # The consumer runs first, with librdkafka's default fetch.wait.max.ms, so the
                    # broker has to wake its long poll when the producer's batch lands.
                    cons = start(CLIENT_CPU, ["consume", "--bootstrap", t.bootstrap, "--out", str(e2e), *common])
                    ready_line(cons, "consumer")
                    prod = start(CLIENT_CPU, ["produce", "--bootstrap", t.bootstrap, "--rate", str(rate),
                                              "--out", str(ack), *common])
                    ready_line(prod, "producer")
                perf = PerfRecord(t.pid, profile_to) if profile_to else None
                c0, n0 = t.cpu_ticks(), t.role_ticks()
                prod.stdin.write("go\n")
                prod.stdin.flush()
                pr = result(prod, seconds * 3 + 120)
                cr = result(cons, 120) if cons else None
                c1, n1 = t.cpu_ticks(), t.role_ticks()
                if perf:
                    perf.stop()
                prod.stdin.close()
                for p in procs:
                    try:
                        p.wait(30)
                    except subprocess.TimeoutExpired:
                        p.kill()
            finally:
                for p in procs:
                    if p.poll() is None:
                        p.kill()
            if pr["delivered"] < count or pr["errors"]:
                raise RuntimeError(f"latency producer: {pr}")
            if cr and cr["received"] < count:
                raise RuntimeError(f"latency consumer got {cr['received']} of {count} messages")
            r = {"prod_msgs_s": pr["delivered"] / pr["seconds"], "prod_MBs": pr["delivered"] * 1024 / pr["seconds"] / 1e6,
                 "prod_bytes": pr["delivered"] * 1024, "prod_ms": pr["seconds"] * 1000}
            if cr and cr.get("seconds"):
                r.update({"cons_msgs_s": cr["received"] / cr["seconds"], "cons_MBs": cr["bytes"] / cr["seconds"] / 1e6})
            r.update({f"ack_{k}": v for k, v in latency_stats(ack).items() if k != "n"})
            r.update({f"e2e_{k}": v for k, v in latency_stats(e2e).items() if k != "n"})
            if not self.args.keep:
                ack.unlink(missing_ok=True)
                e2e.unlink(missing_ok=True)
            if c0 is not None:
                r["cpu_ms_per_MB_prod"] = (c1 - c0) * 1000.0 / CLK_TCK / (r["prod_bytes"] / 1e6)
                r["cpu_pct"] = (c1 - c0) * 100.0 / CLK_TCK / pr["seconds"]
            self.role_figures(t, n0, n1, r["prod_bytes"] / 1e6, pr["seconds"], "rate", r)
            if kind == "cluster":
                r["leader_after"] = partition_leader(t.bootstrap, topic)
            r["peak_rss_mib"] = t.hwm_mib()
            return r

    # -- scenarios -----------------------------------------------------------------------------

    def s0_startup(self):
        """Process start to the first answered ApiVersions, and the idle RSS after it."""
        for i in range(self.p["startup_runs"]):
            self.record("S0 start-up, idle", "skein", self.skein_startup_once(i))

    def skein_startup_once(self, i):
        port = free_port()
        d = self.work / f"startup-{i}-{uuid.uuid4().hex[:6]}"
        b = Broker(self.skein_bin, d, listen=f"127.0.0.1:{port}")
        t0 = time.monotonic()
        b.start(wait_for_log=False)
        answered = None
        while time.monotonic() - t0 < 30:
            try:
                if api_versions("127.0.0.1", port, timeout=1):
                    answered = time.monotonic() - t0
                    break
            except OSError:
                pass
            if not b.alive():
                break
            time.sleep(0.0005)
        time.sleep(1.0)
        r = {"startup_ms": answered * 1000 if answered else None,
             "idle_rss_mib": b.rss_kib() / 1024.0 if b.alive() else None}
        b.stop()
        shutil.rmtree(d, ignore_errors=True)
        return r

    def s1(self, profile=False):
        for parts in (1, 16):
            row = f"S1 1 KiB, {parts} partition{'s' if parts > 1 else ''}"
            kinds = self.targets()
            if "mock" in kinds:
                kinds.insert(kinds.index("mock") + 1, "mock1")
            for i in range(self.p["runs"]):
                for kind in kinds:
                    log(f"{row}: run {i + 1} {kind}")
                    r = self.throughput_run(kind, 1024, self.p["s1_msgs"], parts)
                    self.record(row, kind, r)
        if profile:
            log("S1 1 partition: profiled run (perf record -e cpu-clock -g; not counted)")
            self.throughput_run("skein", 1024, self.p["s1_msgs"], 1, profile_to=str(self.work / "perf-s1"))
            prof = self.extra.setdefault("profile", {})
            for phase in ("produce", "consume"):
                base = str(self.work / f"perf-s1-{phase}")
                prof[f"S1 1 partition, {phase}"] = perf_report(base)
                if self.args.out:
                    Path(f"{self.args.out}.perf-s1-{phase}.txt").write_text(perf_report(base, limit=0.2, text=True))

    def s2(self, profile=False):
        for rate in self.p["s2_rates"]:
            row = f"S2 {rate:,} msg/s, 1 partition"
            for i in range(self.p["runs"]):
                for kind in self.targets():
                    log(f"{row}: run {i + 1} {kind}")
                    self.record(row, kind, self.latency_run(kind, rate, self.p["s2_seconds"]))
        if profile:
            rate = self.p["s2_rates"][0]
            log(f"S2 {rate:,} msg/s: profiled run (perf record -e cpu-clock -g; not counted)")
            base = str(self.work / "perf-s2")
            self.latency_run("skein", rate, self.p["s2_seconds"], profile_to=base)
            self.extra.setdefault("profile", {})[f"S2 {rate:,} msg/s, produce and consume"] = perf_report(base)
            if self.args.out:
                Path(f"{self.args.out}.perf-s2.txt").write_text(perf_report(base, limit=0.2, text=True))

    def s3(self):
        row = "S3 100 B, 1 partition"
        for i in range(self.p["runs"]):
            for kind in self.targets():
                log(f"{row}: run {i + 1} {kind}")
                self.record(row, kind, self.throughput_run(kind, 100, self.p["s3_msgs"], 1))

    def s4(self):
        rate = self.p["s2_rates"][0]
        for i in range(self.p["runs"]):
            for fsync in ("true", "false"):
                settings = [f"skein.acks.all.fsync={fsync}"]
                label = "fsync before ack" if fsync == "true" else "page-cache ack"
                row = f"S4 S1 1 partition, {label}"
                log(f"{row}: run {i + 1}")
                self.record(row, "skein", self.throughput_run("skein", 1024, self.p["s1_msgs"], 1, settings))
                row = f"S4 S2 {rate:,} msg/s, {label}"
                log(f"{row}: run {i + 1}")
                self.record(row, "skein", self.latency_run("skein", rate, self.p["s2_seconds"], settings))

    def s5(self):
        parts = 4
        count = self.p["s5_bytes"] // 1024
        size = self.p["s5_bytes"]
        size = f"{size / 1024 / MIB:g} GiB" if size >= 1024 * MIB else f"{size / MIB:g} MiB"
        row = f"S5 catch-up, {size} backlog, {parts} partitions"
        for kind in self.targets(mock=False):
            with self.session(kind) as t:
                topic = unique_topic("backlog")
                create_topic(t.bootstrap, topic, parts)
                log(f"{row}: producing the backlog to {kind}")
                c0 = t.cpu_ticks()
                self.pretouch(1024 * count)
                p = self.produce(t, topic, 1024, count, timeout=1800)
                c1 = t.cpu_ticks()
                for i in range(self.p["runs"]):
                    evicted = False
                    if t.broker:
                        evicted = evict_page_cache(t.broker.data_dir)
                    log(f"{row}: run {i + 1} {kind} (page cache {'evicted' if evicted else 'warm'})")
                    c2 = t.cpu_ticks()
                    r = self.consume(t, topic, range(parts), count, timeout=1800)
                    c3 = t.cpu_ticks()
                    r.update({k: v for k, v in p.items() if k.startswith("prod_")})
                    if c0 is not None:
                        r["cpu_ms_per_MB_prod"] = (c1 - c0) * 1000.0 / CLK_TCK / (p["prod_bytes"] / 1e6)
                        r["cpu_ms_per_MB_cons"] = (c3 - c2) * 1000.0 / CLK_TCK / (r["cons_bytes"] / 1e6)
                        r["broker_cpu_pct_cons"] = (c3 - c2) * 100.0 / CLK_TCK / (r["cons_ms"] / 1000.0)
                    r["peak_rss_mib"] = t.hwm_mib()
                    r["cache"] = "evicted" if evicted else "warm"
                    self.record(row, kind, r)

    # -- S7: replication -------------------------------------------------------------------------

    def s7(self, profile=False):
        """Three brokers, RF=3, min.insync.replicas=2, acks=all, against one broker (RF=1) in the
        same run with the same clients and settings, interleaved run by run: S1's producer
        (1 KiB, linger.ms=1, batch.size=1 MiB, 1 partition) unthrottled, then S2's paced
        producer and long-polling consumer at S7_RATE. Each run starts a fresh broker or cluster."""
        tp_row = "S7 1 KiB, 1 partition, unthrottled"
        lat_row = f"S7 {S7_RATE:,} msg/s, 1 partition"
        for i in range(self.p["runs"]):
            for kind in ("skein", "cluster"):
                self.s7_run(tp_row, kind, i, lambda: self.throughput_run(kind, 1024, self.p["s7_msgs"], 1))
            for kind in ("skein", "cluster"):
                self.s7_run(lat_row, kind, i, lambda: self.latency_run(kind, S7_RATE, self.p["s7_seconds"],
                                                                       settle_group=True))
        if profile:
            log("S7 RF=3: profiled run of the leader and a follower (perf record; not counted)")
            base = str(self.work / "perf-s7")
            self.throughput_run("cluster", 1024, self.p["s7_msgs"], 1, consume=False, profile_to=base)
            prof = self.extra.setdefault("profile", {})
            for name, b in (("leader", f"{base}-produce"), ("follower", f"{base}-follower-produce")):
                prof[f"S7 RF=3, {name}, produce"] = perf_report(b)
                if self.args.out:
                    Path(f"{self.args.out}.perf-s7-{name}.txt").write_text(perf_report(b, limit=0.2, text=True))

    def s7_run(self, row, kind, i, fn):
        what = "RF=1, one broker" if kind == "skein" else "RF=3, three brokers"
        log(f"{row}: run {i + 1} {what}")
        try:
            r = fn()
        except (RuntimeError, subprocess.TimeoutExpired, OSError) as e:
            # A failed run is reported, and the run goes on.
            log(f"{row}: {what} run failed: {str(e)[:300]}")
            self.notes.append(f"{row}: a {what} run failed: {str(e)[:300].replace(chr(10), ' ')}")
            r = {"error": str(e)[:300]}
        if kind == "cluster" and r.get("leader_after") not in (None, r.get("node_leader")):
            self.notes.append(f"{row}, run {i + 1}: the leader moved from node {r.get('node_leader')} to node "
                              f"{r['leader_after']} during the run")
        r["load1"] = float(loadavg().split()[0])
        self.record(row, kind, r)

    # -- --against-kafka: the same scenarios against the reference Apache Kafka broker ----------

    def race_record(self, pairing, row, kind, r):
        r["load1"] = float(loadavg().split()[0])
        self.race.setdefault((pairing, row, kind), []).append(r)

    def new_kafka(self, settings=()):
        d = self.work / f"kafka-{uuid.uuid4().hex[:8]}"
        return KafkaReference(self.args.kafka_script, d, settings, heap=self.args.kafka_heap)

    def drop_kafka(self, k):
        k.stop()
        if not self.args.keep:
            shutil.rmtree(k.data_dir, ignore_errors=True)

    def against_kafka(self, scenarios):
        """S0, S1, S2, S3 and S5 against Skein and the reference Kafka broker, interleaved run by
        run, for each durability pairing (RACE_PAIRINGS)."""
        if "S0" in scenarios:
            for i in range(self.p["kafka_startup_runs"]):
                log(f"S0 start-up: run {i + 1} skein")
                self.race_record("-", "S0 start-up, idle", "skein", self.skein_startup_once(i))
                log(f"S0 start-up: run {i + 1} kafka")
                k = self.new_kafka().start()
                try:
                    time.sleep(1.0)
                    r = {"startup_ms": k.startup_ms, "idle_rss_mib": k.rss_kib() / 1024.0}
                    if i == 0:
                        self.extra["kafka_jvm_default"] = k.jvm_info()
                finally:
                    self.drop_kafka(k)
                self.race_record("-", "S0 start-up, idle", "kafka", r)
        work = [s for s in ("S1", "S2", "S3", "S5") if s in scenarios]
        if not work:
            return
        for key in self.args.pairings:
            pr = RACE_PAIRINGS[key]
            log(f"pairing ({key}): {pr['title']}")
            self.kafka = self.new_kafka(pr["kafka"]).start()
            try:
                self.extra.setdefault("kafka_jvm", {})[key] = self.kafka.jvm_info()
                # A fresh JVM interprets before it compiles: one short, uncounted run of each
                # kind first (it also makes Kafka create __consumer_offsets).
                log(f"({key}) kafka warm-up (not counted)")
                self.throughput_run("kafka", 1024, self.p["s1_msgs"], 1)
                self.throughput_run("kafka", 1024, self.p["s1_msgs"] // 4, 16)
                self.throughput_run("kafka", 100, self.p["s3_msgs"] // 3, 1)
                for rate in self.p["s2_rates"]:
                    self.latency_run("kafka", rate, 2)
                for sc in work:
                    getattr(self, f"race_{sc.lower()}")(key, pr)
                if self.args.perf:
                    self.race_profiles(key, pr)
            finally:
                self.drop_kafka(self.kafka)
                self.kafka = None

    def race_run(self, key, row, kind, fn):
        """One counted run; for Skein also how much CPU the idle Kafka broker took meanwhile."""
        log(f"({key}) {row}: run {len(self.race.get((key, row, kind), [])) + 1} {kind}")
        k0 = w0 = None
        if kind == "skein":
            self.kafka.set_idle(True)
            k0, w0 = self.kafka.cpu_ticks(), time.monotonic()
        try:
            r = fn()
        except (RuntimeError, subprocess.TimeoutExpired, OSError) as e:
            # One failed run (a broker that fell too far behind a fixed rate, say) is a figure
            # too: it is reported, and the race goes on.
            log(f"({key}) {row}: {kind} run failed: {str(e)[:300]}")
            self.notes.append(f"({key}) {row}: a {kind} run failed: {str(e)[:300].replace(chr(10), ' ')}")
            r = {"error": str(e)[:300]}
        finally:
            if kind == "skein":
                self.kafka.set_idle(False)
        if k0 is not None:
            r["kafka_idle_cpu_pct"] = (self.kafka.cpu_ticks() - k0) * 100.0 / CLK_TCK / (time.monotonic() - w0)
        self.race_record(key, row, kind, r)

    def race_s1(self, key, pr):
        for parts in (1, 16):
            row = f"S1 1 KiB, {parts} partition{'s' if parts > 1 else ''}"
            for _ in range(self.p["runs"]):
                for kind in ("skein", "kafka"):
                    self.race_run(key, row, kind, lambda: self.throughput_run(
                        kind, 1024, self.p["s1_msgs"], parts, pr[kind]))

    def race_s2(self, key, pr):
        for rate in self.p["s2_rates"]:
            row = f"S2 {rate:,} msg/s, 1 partition"
            for _ in range(self.p["runs"]):
                for kind in ("skein", "kafka"):
                    self.race_run(key, row, kind, lambda: self.latency_run(
                        kind, rate, self.p["s2_seconds"], pr[kind]))

    def race_s3(self, key, pr):
        row = "S3 100 B, 1 partition"
        for _ in range(self.p["runs"]):
            for kind in ("skein", "kafka"):
                self.race_run(key, row, kind, lambda: self.throughput_run(
                    kind, 100, self.p["s3_msgs"], 1, pr[kind]))

    def race_s5(self, key, pr):
        """Both brokers hold the backlog at once, so that the reads can alternate; each read
        starts with the broker's own data files evicted from the page cache."""
        parts = 4
        count = self.p["s5_bytes"] // 1024
        size = self.p["s5_bytes"]
        size = f"{size / 1024 / MIB:g} GiB" if size >= 1024 * MIB else f"{size / MIB:g} MiB"
        row = f"S5 catch-up, {size} backlog, {parts} partitions"
        with self.session("skein", pr["skein"]) as ts, self.session("kafka") as tk:
            backlog = {}
            for t in (ts, tk):
                topic = unique_topic("backlog")
                create_topic(t.bootstrap, topic, parts)
                log(f"({key}) {row}: producing the backlog to {t.kind}")
                self.pretouch(1024 * count)
                self.kafka.set_idle(t.kind == "skein")
                c0 = t.cpu_ticks()
                try:
                    p = self.produce(t, topic, 1024, count, timeout=1800)
                finally:
                    self.kafka.set_idle(False)
                backlog[t.kind] = (topic, p, (t.cpu_ticks() - c0) * 1000.0 / CLK_TCK / (p["prod_bytes"] / 1e6))
            for _ in range(self.p["runs"]):
                for t in (ts, tk):
                    topic, p, prod_cpu = backlog[t.kind]

                    def read(t=t, topic=topic, p=p, prod_cpu=prod_cpu):
                        evicted = evict_page_cache(t.data_dir) if t.data_dir else False
                        c2 = t.cpu_ticks()
                        r = self.consume(t, topic, range(parts), count, timeout=1800)
                        c3 = t.cpu_ticks()
                        r.update({k: v for k, v in p.items() if k.startswith("prod_")})
                        r["cpu_ms_per_MB_prod"] = prod_cpu
                        r["cpu_ms_per_MB_cons"] = (c3 - c2) * 1000.0 / CLK_TCK / (r["cons_bytes"] / 1e6)
                        r["broker_cpu_pct_cons"] = (c3 - c2) * 100.0 / CLK_TCK / (r["cons_ms"] / 1000.0)
                        r["peak_rss_mib"] = t.hwm_mib()
                        r["cache"] = "evicted" if evicted else "warm"
                        return r

                    self.race_run(key, row, t.kind, read)

    def race_profiles(self, key, pr):
        """--perf: for every scenario where Kafka won a figure in this pairing, one extra,
        uncounted run of it on each broker under `perf record` (JIT frames named through the
        JVM's perf map)."""
        rows = sorted({row for (k, row, _fig) in race_kafka_wins(self) if k == key})
        for row in rows:
            for kind in ("skein", "kafka"):
                base = str(self.work / f"perf-{key}-{kind}-{uuid.uuid4().hex[:6]}")
                log(f"({key}) {row}: profiled run of {kind} (perf record; not counted)")
                if row.startswith("S1"):
                    parts = 16 if "16" in row.split(",")[1] else 1
                    self.throughput_run(kind, 1024, self.p["s1_msgs"], parts, pr[kind], profile_to=base)
                    phases = ["produce", "consume"]
                elif row.startswith("S3"):
                    self.throughput_run(kind, 100, self.p["s3_msgs"], 1, pr[kind], profile_to=base)
                    phases = ["produce", "consume"]
                elif row.startswith("S2"):
                    rate = int(re.search(r"S2 ([\d,]+)", row).group(1).replace(",", ""))
                    self.latency_run(kind, rate, self.p["s2_seconds"], pr[kind], profile_to=base)
                    phases = [None]
                else:
                    log(f"no profiled run for {row}")
                    continue
                if kind == "kafka":
                    self.kafka.perf_map()
                prof = self.extra.setdefault("race_profile", {})
                for phase in phases:
                    b = base if phase is None else f"{base}-{phase}"
                    name = f"({key}) {row}, {kind}" + (f", {phase}" if phase else "")
                    prof[name] = perf_report(b)
                    if self.args.out:
                        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
                        Path(f"{self.args.out}.perf-{slug}.txt").write_text(perf_report(b, limit=0.2, text=True))

    def s6(self):
        """10,000 partitions: create, produce a little to each, check the broker, restart it.

        Runs once with the open-files limit the broker inherits; if that run hits EMFILE, once
        more with the limit raised to the kernel's maximum, so both answers are on record."""
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        r = self.s6_once(None)
        r["nofile"] = soft
        n = self.p["s6_partitions"]
        self.record(f"S6 {n:,} partitions, open-files limit {soft:,} (inherited)", "skein", r)
        if r.get("error"):
            raised = highest_nofile() if "Too many open files" in r["error"] else soft
            if raised <= soft:
                # The limit cannot be raised here: measure the most partitions that fit instead.
                fit = max(500, min(2_000, (soft - 500) // 4) // 500 * 500)
                why = ("ran out of file descriptors at the inherited open-files limit of "
                       f"{soft:,}, which this session cannot raise" if "Too many open files" in r["error"]
                       else "failed")
                self.notes.append(f"S6: the broker {why}; the second S6 run uses {fit:,} partitions.")
                log(f"S6: {n:,} partitions failed; again with {fit:,} partitions")
                r2 = self.s6_once(None, partitions=fit)
                r2["nofile"] = soft
                self.record(f"S6 {fit:,} partitions, open-files limit {soft:,} (inherited)", "skein", r2)
                return
            log(f"S6: the broker ran out of file descriptors; again with RLIMIT_NOFILE={raised:,}")
            r2 = self.s6_once(raised)
            r2["nofile"] = raised
            self.record(f"S6 {n:,} partitions, open-files limit {raised:,} (raised)", "skein", r2)

    def s6_once(self, nofile, partitions=None):
        n = partitions or self.p["s6_partitions"]
        per = self.p["s6_msgs_per_partition"]
        d = self.work / f"partitions-{uuid.uuid4().hex[:6]}"
        b = Broker(self.skein_bin, d, nofile=nofile).start()
        r = {}
        step = "start"

        def snapshot(prefix=""):
            if b.alive():
                r[prefix + "rss_mib"] = b.rss_kib() / 1024.0
                r[prefix + "peak_rss_mib"] = b.hwm_kib() / 1024.0
                r[prefix + "open_fds"] = len(os.listdir(f"/proc/{b.pid}/fd"))
                r[prefix + "threads"] = proc_status_kib(b.pid, "Threads")

        try:
            topic = unique_topic("many")
            step = f"CreateTopics with {n:,} partitions"
            log(f"S6: {step}")
            t0 = time.monotonic()
            probe = LivenessProbe(b.bootstrap)
            try:
                create_topic(b.bootstrap, topic, n, timeout=600)
            finally:
                r["create_s"] = time.monotonic() - t0
                r["max_apiversions_ms_during_create"] = probe.stop()
                snapshot("after_create_")
            from confluent_kafka import Producer
            prod = Producer({"bootstrap.servers": b.bootstrap, "acks": "all", "linger.ms": 5, "log_level": 2,
                             "queue.buffering.max.messages": 1_000_000})
            errors = []

            def dr(err, _msg):
                if err:
                    errors.append(err)

            payload = b"x" * 1024
            step = f"produce {per} x 1 KiB to each partition"
            log(f"S6: {step}")
            t0 = time.monotonic()
            for _ in range(per):
                for p in range(n):
                    while True:
                        try:
                            prod.produce(topic, payload, partition=p, on_delivery=dr)
                            break
                        except BufferError:
                            prod.poll(0.01)
                prod.poll(0)
            left = prod.flush(300)
            r["produce_s"] = time.monotonic() - t0
            r["produce_errors"] = len(errors) + left
            if errors:
                r["first_produce_error"] = str(errors[0])[:300]
            step = "Metadata for the topic"
            t0 = time.monotonic()
            md = admin(b.bootstrap).list_topics(topic=topic, timeout=60)
            r["metadata_ms"] = (time.monotonic() - t0) * 1000
            r["metadata_partitions"] = len(md.topics[topic].partitions)
            r["alive"] = b.alive() and api_versions(*split_hostport(b.bootstrap))
            snapshot()
            step = "SIGTERM"
            r["stop_s"] = b.stop(timeout=300)
            step = "restart on the same data directory"
            log(f"S6: {step}")
            port = free_port()
            b = Broker(self.skein_bin, d, listen=f"127.0.0.1:{port}", nofile=nofile)
            t0 = time.monotonic()
            b.start(wait_for_log=False)
            while time.monotonic() - t0 < 300 and b.alive():
                try:
                    if api_versions("127.0.0.1", port, timeout=1):
                        r["restart_ms"] = (time.monotonic() - t0) * 1000
                        break
                except OSError:
                    time.sleep(0.01)
            time.sleep(1.0)
            r["alive_after_restart"] = b.alive() and "restart_ms" in r
            snapshot("after_restart_")
        except Exception as e:  # the scenario's point is whether the broker falls over
            r["error"] = f"{step}: {str(e)[:400]}"
            try:
                tail = [line for line in b.stderr_path.read_text(errors="replace").splitlines()
                        if "WARN" in line or "ERROR" in line][-2:]
                r["broker_log"] = " / ".join(re.sub(r"^\S+\s+", "", line)[:200] for line in tail)
            except OSError:
                pass
            try:
                r["alive"] = b.alive() and api_versions(*split_hostport(b.bootstrap or f"127.0.0.1:{port}"))
            except OSError:
                r["alive"] = False
            snapshot()
            log(f"S6: {r['error']}")
        finally:
            stop_s = b.stop(timeout=300)
            if "error" in r and stop_s is not None:
                r["stop_s"] = stop_s
            if not self.args.keep:
                shutil.rmtree(d, ignore_errors=True)
        return r

    # -- machine limits -------------------------------------------------------------------------

    def limits(self):
        lim = {}
        lim["tcp"] = self.tcp_limit()
        lim["tcp_zerocopy"] = self.tcp_limit(zerocopy=True)
        sizes = [16 * KIB, MIB]
        for key in ("S1 1 KiB, 1 partition", f"S2 {self.p['s2_rates'][0]:,} msg/s, 1 partition"):
            bpf = median([r.get("bytes_per_fsync") for r in self.results.get((key, "skein"), [])] +
                         [r.get("bytes_per_fsync") for r in self.race.get(("b", key, "skein"), [])])
            if bpf:
                bs = max(4 * KIB, int(round(bpf / (4 * KIB))) * 4 * KIB)
                if bs not in sizes:
                    sizes.append(bs)
        # S7: the RF=1 broker's, the leader's and a follower's bytes per fsync in the unthrottled
        # runs; one fio size for figures within 20% of a size already measured.
        row = "S7 1 KiB, 1 partition, unthrottled"
        s7 = self.results.get((row, "cluster"), [])
        for bpf in (agg(self.results.get((row, "skein"), []), "bytes_per_fsync"), agg(s7, "bytes_per_fsync"),
                    agg(s7, "bytes_per_fsync_follower")):
            if bpf:
                bs = max(4 * KIB, int(round(bpf / (4 * KIB))) * 4 * KIB)
                if not any(abs(bs - x) <= 0.2 * x for x in sizes):
                    sizes.append(bs)
        lim["disk"] = [self.disk_limit(bs) for bs in sizes]
        lim["memory"] = self.memory_limit()
        self.extra["limits"] = lim

    def memory_limit(self):
        """CPU cost per MB of the page cache and of memory itself, as the broker meets them.

        Buffered 1 MiB writes into a new file, twice: first after 5 s idle (the hypervisor has
        taken free memory back by then, so pages are touched for the first time), then at once
        again (recycled pages). Then reads from the page cache, and a memcpy."""
        size = 512 * MIB if self.p["s1_msgs"] >= 1_000_000 else 256 * MIB
        path = self.work / "memory.scratch"
        buf = b"\0" * MIB
        out = {"bytes": size}
        time.sleep(5)
        for label in ("write_first_touch", "write_recycled"):
            t0, w0 = os.times(), time.monotonic()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            for _ in range(size // MIB):
                os.write(fd, buf)
            os.close(fd)
            t1, w1 = os.times(), time.monotonic()
            out[label + "_ms_per_MB"] = (t1.user + t1.system - t0.user - t0.system) * 1000 / (size / 1e6)
            out[label + "_GBs"] = size / (w1 - w0) / 1e9
            if label == "write_first_touch":
                os.unlink(path)
        rbuf = bytearray(MIB)
        with open(path, "rb", buffering=0) as f:
            t0, w0 = os.times(), time.monotonic()
            while f.readinto(rbuf):
                pass
            t1, w1 = os.times(), time.monotonic()
        os.unlink(path)
        out["read_ms_per_MB"] = (t1.user + t1.system - t0.user - t0.system) * 1000 / (size / 1e6)
        out["read_GBs"] = size / (w1 - w0) / 1e9
        src = bytearray(b"\1" * (256 * MIB))
        dst = bytearray(256 * MIB)
        dst[:] = src  # touch both
        w0 = time.monotonic()
        for _ in range(4):
            dst[:] = src
        out["memcpy_GBs"] = 4 * 256 * MIB / (time.monotonic() - w0) / 1e9
        del src, dst
        return out

    def tcp_limit(self, zerocopy=False):
        """Loopback TCP, one stream; with `zerocopy` the sender uses sendfile (iperf3 -Z), as
        Skein does for large fetches."""
        secs = self.p["tcp_seconds"]
        vals = []
        if zerocopy and not shutil.which("iperf3"):
            return None
        if shutil.which("iperf3"):
            for _ in range(self.p["runs"]):
                port = free_port()
                srv = subprocess.Popen(pinned(BROKER_CPU, ["iperf3", "-s", "-1", "-p", str(port)]),
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                CHILDREN.append(srv)
                time.sleep(0.3)
                res = run_cmd(pinned(CLIENT_CPU, ["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(secs),
                                                  "-J", *(["-Z"] if zerocopy else [])]),
                              timeout=secs + 30, check=False)
                srv.wait(10)
                try:
                    end = json.loads(res.stdout)["end"]
                    gbs = end["sum_received"]["bits_per_second"] / 8 / 1e9
                    cpu = end.get("cpu_utilization_percent", {})
                    mb = gbs * 1000 * secs
                    vals.append((gbs, cpu.get("host_total", 0) * 10 * secs / mb, cpu.get("remote_total", 0) * 10 * secs / mb))
                except (ValueError, KeyError, ZeroDivisionError):
                    pass
            return {"tool": "iperf3, one stream", "GBs": median([v[0] for v in vals]),
                    "sender_ms_per_MB": median([v[1] for v in vals]),
                    "receiver_ms_per_MB": median([v[2] for v in vals])}
        # A Python fallback: far below what the kernel can do, but measured the same way each run.
        code = ("import socket,sys,time\n"
                "s=socket.socket();s.bind(('127.0.0.1',0));s.listen(1);print(s.getsockname()[1],flush=True)\n"
                "c,_=s.accept();n=0;b=bytearray(1<<20);v=memoryview(b)\n"
                "while True:\n k=c.recv_into(v)\n if not k: break\n n+=k\nprint(n,flush=True)\n")
        for _ in range(self.p["runs"]):
            srv = subprocess.Popen(pinned(BROKER_CPU, [sys.executable, "-c", code]), stdout=subprocess.PIPE, text=True)
            CHILDREN.append(srv)
            port = int(srv.stdout.readline())
            buf = b"\0" * MIB
            s = socket.create_connection(("127.0.0.1", port))
            sent, t0 = 0, time.monotonic()
            while time.monotonic() - t0 < secs:
                s.sendall(buf)
                sent += len(buf)
            s.close()
            int(srv.stdout.readline())
            vals.append(sent / (time.monotonic() - t0) / 1e9)
            srv.wait(10)
        return {"tool": "Python sockets, one stream (iperf3 not installed)", "GBs": median(vals)}

    def disk_limit(self, bs):
        d = self.work / "disk"
        d.mkdir(exist_ok=True)
        secs = self.p["disk_seconds"]
        if shutil.which("fio"):
            vals = []
            for _ in range(self.p["runs"]):
                res = run_cmd(["fio", "--name=fdatasync", f"--directory={d}", "--rw=write", f"--bs={bs}",
                               "--size=256m", "--ioengine=sync", "--fdatasync=1", "--time_based",
                               f"--runtime={secs}", "--output-format=json"], timeout=secs + 120, check=False)
                try:
                    job = json.loads(res.stdout[res.stdout.index("{"):])["jobs"][0]
                    p99 = job.get("sync", {}).get("lat_ns", {}).get("percentile", {}).get("99.000000")
                    vals.append({"iops": job["write"]["iops"], "MBs": job["write"]["bw_bytes"] / 1e6,
                                 "sync_p99_ms": p99 / 1e6 if p99 else None})
                except (ValueError, KeyError, IndexError):
                    pass
            shutil.rmtree(d, ignore_errors=True)
            return {"bs": bs, "tool": "fio --fdatasync=1",
                    **{k: median([v[k] for v in vals]) for k in ("iops", "MBs", "sync_p99_ms")}}
        vals = []
        buf = os.urandom(bs)
        for _ in range(self.p["runs"]):
            path = d / "fdatasync.dat"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            lat = []
            t0 = time.monotonic()
            written = 0
            while time.monotonic() - t0 < secs and written < 256 * MIB:
                os.write(fd, buf)
                a = time.monotonic()
                os.fdatasync(fd)
                lat.append(time.monotonic() - a)
                written += bs
            el = time.monotonic() - t0
            os.close(fd)
            lat.sort()
            vals.append({"iops": len(lat) / el, "MBs": written / el / 1e6, "sync_p99_ms": percentile(lat, 99) * 1000})
        shutil.rmtree(d, ignore_errors=True)
        return {"bs": bs, "tool": "Python write + os.fdatasync (fio not installed)",
                **{k: median([v[k] for v in vals]) for k in ("iops", "MBs", "sync_p99_ms")}}


# ---------------------------------------------------------------------------------------------
# Helpers that need perf, and the page cache.


class LivenessProbe:
    """Sends ApiVersions on a new connection every 0.5 s in a thread; stop() returns the slowest
    answer in ms (a probe still waiting counts for as long as it has waited)."""

    def __init__(self, bootstrap):
        self.host, self.port = split_hostport(bootstrap)
        self.worst = 0.0
        self.pending_since = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.done.is_set():
            t0 = time.monotonic()
            self.pending_since = t0
            try:
                api_versions(self.host, self.port, timeout=600)
            except OSError:
                pass
            self.pending_since = None
            self.worst = max(self.worst, (time.monotonic() - t0) * 1000)
            self.done.wait(0.5)

    def stop(self):
        self.done.set()
        pending = self.pending_since
        if pending is not None:
            self.worst = max(self.worst, (time.monotonic() - pending) * 1000)
        return self.worst


class FsyncCounter:
    """Counts fsync/fdatasync calls of a process with perf's syscall tracepoints, if it can."""

    def __init__(self, pid):
        self.proc = None
        if not shutil.which("perf"):
            return
        self.out = tempfile.mktemp(prefix="skein-bench-fsync-")
        self.proc = subprocess.Popen(["perf", "stat", "-x", ",", "-o", self.out, "-e",
                                      "syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync",
                                      "-p", str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.3)  # let perf attach

    def stop(self):
        if not self.proc:
            return None
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return None
        total = 0
        try:
            for line in open(self.out):
                parts = line.strip().split(",")
                if len(parts) > 2 and parts[2].startswith("syscalls:") and parts[0].isdigit():
                    total += int(parts[0])
            os.unlink(self.out)
        except OSError:
            return None
        return total or None


class PerfRecord:
    def __init__(self, pid, out):
        self.proc = None
        if not shutil.which("perf"):
            log("perf is not installed (apt-get install linux-perf, or --install-deps --perf)")
            return
        self.proc = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-g", "-p", str(pid), "-o", out + ".data"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)

    def stop(self):
        if self.proc:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(60)


# Kernel entry points whose inclusive ("children") share says what the broker's time went to.
# They overlap (softirq work runs inside tcp_sendmsg, page faults inside memcpy), so the shares
# do not add up to 100%.
ACTIVITIES = [
    ("segment append: pwrite into the page cache", ["ext4_buffered_write_iter", "shmem_file_write_iter"]),
    ("fdatasync", ["__x64_sys_fdatasync", "__x64_sys_fsync"]),
    ("segment read: pread from the page cache", ["filemap_read"]),
    ("socket receive", ["tcp_recvmsg"]),
    ("socket send", ["tcp_sendmsg"]),
    ("page faults (first touch of anonymous memory)", ["asm_exc_page_fault"]),
    ("allocator giving memory back (madvise, munmap)", ["__x64_sys_madvise", "__x64_sys_munmap"]),
    ("futex (thread hand-offs and wake-ups)", ["__x64_sys_futex"]),
    ("epoll_wait", ["__x64_sys_epoll_wait"]),
    ("softirq (loopback TCP delivery)", ["handle_softirqs"]),
    ("context switches", ["finish_task_switch.isra.0", "finish_task_switch"]),
]


def _perf_lines(data, children):
    res = run_cmd(["perf", "report", "-i", data, "--stdio", "--children" if children else "--no-children",
                   "--sort", "symbol", "-g", "none", "--percent-limit=0.05"], check=False, timeout=300)
    rows = []
    for line in res.stdout.splitlines():
        if children:
            m = re.match(r"\s*([\d.]+)%\s+([\d.]+)%\s+\[([.k])\]\s+(.*)$", line)
            if m:
                rows.append((float(m.group(1)), float(m.group(2)), m.group(3), m.group(4).split("  ")[0].strip()))
        else:
            m = re.match(r"\s*([\d.]+)%\s+\[([.k])\]\s+(.*)$", line)
            if m:
                rows.append((float(m.group(1)), m.group(2), m.group(3).split("  ")[0].strip()))
    samples = re.search(r"# Samples: (\S+)", res.stdout)
    return rows, samples.group(1) if samples else "?"


def perf_report(base, limit=1.0, text=False):
    """Summarises a perf.data: activities (inclusive), top user and kernel symbols (self)."""
    data = base + ".data"
    if not os.path.exists(data):
        return "" if text else {}
    if text:
        return run_cmd(["perf", "report", "-i", data, "--stdio", "--no-children", "--sort", "symbol", "-g",
                        "caller,0.5,callee", f"--percent-limit={limit}"], check=False, timeout=300).stdout
    self_rows, samples = _perf_lines(data, children=False)
    child_rows, _ = _perf_lines(data, children=True)
    inclusive = {}
    for total, _self, _where, sym in child_rows:
        inclusive[sym] = max(inclusive.get(sym, 0.0), total)
    activities = []
    for label, syms in ACTIVITIES:
        pct = sum(inclusive.get(sym, 0.0) for sym in syms)
        if pct >= 0.5:
            activities.append((label, pct))
    return {
        "samples": samples,
        "user_self": sum(p for p, w, _ in self_rows if w == "."),
        "kernel_self": sum(p for p, w, _ in self_rows if w == "k"),
        "activities": sorted(activities, key=lambda x: -x[1]),
        "top_user": [(p, sym) for p, w, sym in self_rows if w == "."][:12],
        "top_kernel": [(p, sym) for p, w, sym in self_rows if w == "k"][:8],
    }


def evict_page_cache(directory):
    """Drops the page cache of every file below `directory` (fdatasync, then FADV_DONTNEED)."""
    if not hasattr(os, "posix_fadvise"):
        return False
    for root, _dirs, files in os.walk(directory):
        for name in files:
            try:
                fd = os.open(os.path.join(root, name), os.O_RDONLY)
            except OSError:
                continue
            try:
                os.fdatasync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            except OSError:
                pass
            finally:
                os.close(fd)
    return True


# ---------------------------------------------------------------------------------------------
# The report.


def fmt(v, digits=0, suffix=""):
    if v is None:
        return "–"
    if isinstance(v, float) and digits == 0:
        return f"{v:,.0f}{suffix}"
    if isinstance(v, (int,)):
        return f"{v:,}{suffix}"
    return f"{v:,.{digits}f}{suffix}"


def agg(runs, key):
    return median([r.get(key) for r in runs])


def pair(runs, a, b):
    va, vb = agg(runs, a), agg(runs, b)
    if va is None and vb is None:
        return "–"
    return f"{fmt(va)} / {fmt(vb)}"


def lat3(runs, prefix):
    vals = [agg(runs, f"{prefix}_{p}") for p in ("p50", "p99", "p999")]
    if all(v is None for v in vals):
        return "–"
    return " / ".join(fmt(v, 2) for v in vals)


def build_report(bench, info, args, mode):
    res = bench.results
    out = []
    w = out.append
    w(f"# Skein benchmark results ({mode} mode)\n")
    w(f"- date: {info['date']}; machine: {info['nproc']} vCPU, {info['cpu_model']}, {info['memory']}, "
      f"Linux {info['kernel']}")
    w(f"- load average (1/5/15 min): {info['loadavg_start']} at the start, {info['loadavg_end']} at the end; "
      f"the machine is shared, so compare ratios within one run")
    w(f"- broker on core {BROKER_CPU}, clients on core {CLIENT_CPU}; librdkafka {info.get('librdkafka', '?')} "
      f"`rdkafka_performance`; every figure is the median of {bench.p['runs']} runs; MB = 10^6 bytes of payload")
    built = "built by this run from" if not args.skein_bin else "given with --skein-bin; the repo is at"
    w(f"- skein: `{bench.skein_bin}` ({info.get('skein_version', '?')}; {built} {info.get('repo_head', '?')})" +
      (f"; against: `{args.against}`" if args.against else ""))
    if not args.no_pretouch:
        w("- before each produce phase the driver writes and deletes a scratch file as large as the data about to be "
          "produced, so that page cache lands on memory the hypervisor already backs (see `--no-pretouch`)")
    w("")

    rows = []
    seen = set()
    for (row, _t) in res:
        if row not in seen and not row.startswith(("S0", "S6", "S7")):
            seen.add(row)
            rows.append(row)
    if rows:
        w("## Throughput, latency and efficiency\n")
        w("| scenario | broker | produce msg/s | produce MB/s | consume msg/s | consume MB/s | "
          "ack p50 / p99 / p99.9 ms | e2e p50 / p99 / p99.9 ms | CPU ms/MB produced | CPU ms/MB consumed | "
          "CPU % broker / client, produce | CPU % broker / client, consume | bytes/fsync | peak RSS MiB |")
        w("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for row in rows:
            for tname in ("skein", "mock", "mock1", "against"):
                runs = res.get((row, tname))
                if not runs:
                    continue
                label = {"skein": "skein", "mock": "librdkafka mock", "mock1": "librdkafka mock, client core only",
                         "against": "against"}[tname]
                if tname.startswith("mock") and "16 partitions" in row:
                    label += " (4 partitions)"
                cache = runs[0].get("cache")
                w(f"| {row}{' (' + cache + ' cache)' if cache else ''} | {label} | {fmt(agg(runs, 'prod_msgs_s'))} | "
                  f"{fmt(agg(runs, 'prod_MBs'), 1)} | {fmt(agg(runs, 'cons_msgs_s'))} | "
                  f"{fmt(agg(runs, 'cons_MBs'), 1)} | {lat3(runs, 'ack')} | {lat3(runs, 'e2e')} | "
                  f"{fmt(agg(runs, 'cpu_ms_per_MB_prod'), 3)} | {fmt(agg(runs, 'cpu_ms_per_MB_cons'), 3)} | "
                  f"{pair(runs, 'broker_cpu_pct_prod', 'client_cpu_pct_prod')} | "
                  f"{pair(runs, 'broker_cpu_pct_cons', 'client_cpu_pct_cons')} | "
                  f"{fmt(agg(runs, 'bytes_per_fsync'))} | {fmt(agg(runs, 'peak_rss_mib'), 1)} |")
        w("")
        w("Ack latency is librdkafka's per-message time from `produce()` to the delivery report (it includes "
          "linger.ms=1 and, in unthrottled runs, client-side queueing). E2e latency is the consumer's receive "
          "time minus the producer's timestamp, with the consumer's default fetch.wait.max.ms (500 ms). S1, S3 "
          "and S5 use rdkafka_performance; S2 uses bench/latency_client.py (confluent-kafka, i.e. librdkafka, "
          "paced in 1 ms ticks without busy-polling). In S2 the CPU column is the broker's CPU for producing and "
          "consuming together, per MB produced. The mock broker runs inside the producer's process (in memory, "
          "no fsync) and has no consumer side; it gets both cores (client and broker together have two), and in S1 "
          "also only the client's core, which brackets the client-bound ceiling. CPU %: CPU time over the phase's "
          "active time, first message to last (broker from /proc/PID/stat, client from its rusage, both "
          "including their start and stop, so slightly high); a client near 100% is the bottleneck.")
        w("")
        rate_rows = [(row, agg(res[(row, "skein")], "cpu_pct")) for row in rows
                     if (row, "skein") in res and agg(res[(row, "skein")], "cpu_pct") is not None]
        if rate_rows:
            w("Broker CPU at fixed rates (% of one core, producing and consuming): " +
              "; ".join(f"{row}: {pct:.0f}%" for row, pct in rate_rows) + ".")
            w("")
        ratio_rows = []
        for row in rows:
            s = res.get((row, "skein"))
            for other, name in (("mock", "mock"), ("mock1", "mock on the client core only"), ("against", "against")):
                o = res.get((row, other))
                if s and o and agg(o, "prod_MBs"):
                    line = f"| {row} | skein / {name} | {agg(s, 'prod_MBs') / agg(o, 'prod_MBs'):.2f} |"
                    if agg(o, "cons_MBs") and agg(s, "cons_MBs"):
                        line += f" {agg(s, 'cons_MBs') / agg(o, 'cons_MBs'):.2f} |"
                    else:
                        line += " – |"
                    if agg(o, "ack_p99") and agg(s, "ack_p99"):
                        line += f" {agg(s, 'ack_p99') / agg(o, 'ack_p99'):.2f} |"
                    else:
                        line += " – |"
                    ratio_rows.append(line)
        if ratio_rows:
            w("### Ratios measured in this run\n")
            w("| scenario | ratio | produce MB/s | consume MB/s | ack p99 |")
            w("|---|---|---:|---:|---:|")
            out.extend(ratio_rows)
            w("")

    s0 = res.get(("S0 start-up, idle", "skein"))
    s6 = [(row, runs) for (row, t), runs in res.items() if row.startswith("S6")]
    if s0 or s6:
        w("## Start-up, memory, many partitions\n")
        w("| figure | skein |")
        w("|---|---:|")
        if s0:
            w(f"| start-up: process start to first answered ApiVersions (median of {len(s0)}) | "
              f"{fmt(agg(s0, 'startup_ms'), 1)} ms |")
            w(f"| idle RSS after start-up | {fmt(agg(s0, 'idle_rss_mib'), 1)} MiB |")
        for row, runs in s6:
            r = runs[0]
            w(f"| **{row}** | |")
            if "error" in r:
                w(f"| error | {r['error'].replace('|', '/')} |")
            if r.get("broker_log"):
                w(f"| broker's last warnings | {r['broker_log'].replace('|', '/')} |")
            w(f"| CreateTopics until Metadata shows every partition | {fmt(r.get('create_s'), 1)} s |")
            w(f"| slowest ApiVersions answer while CreateTopics ran (probe every 0.5 s) | "
              f"{fmt(r.get('max_apiversions_ms_during_create'), 0)} ms |")
            w(f"| after create: RSS, peak RSS | {fmt(r.get('after_create_rss_mib'), 1)} / "
              f"{fmt(r.get('after_create_peak_rss_mib'), 1)} MiB |")
            w(f"| after create: open file descriptors, threads | {fmt(r.get('after_create_open_fds'))} / "
              f"{fmt(r.get('after_create_threads'))} |")
            if "produce_s" in r:
                w(f"| produce {bench.p['s6_msgs_per_partition']} x 1 KiB to every partition (acks=all) | "
                  f"{fmt(r.get('produce_s'), 1)} s, {r.get('produce_errors', '?')} errors |")
            if "metadata_ms" in r:
                w(f"| Metadata for the topic | {fmt(r.get('metadata_ms'), 0)} ms |")
            w(f"| broker still answering afterwards | {'yes' if r.get('alive') else 'NO'} |")
            if "rss_mib" in r:
                w(f"| RSS / peak RSS afterwards | {fmt(r.get('rss_mib'), 1)} / {fmt(r.get('peak_rss_mib'), 1)} MiB |")
                w(f"| open file descriptors / threads afterwards | {fmt(r.get('open_fds'))} / {fmt(r.get('threads'))} |")
            if "stop_s" in r:
                w(f"| SIGTERM to exit (killed after 300 s) | {fmt(r.get('stop_s'), 1)} s |")
            if "restart_ms" in r or "alive_after_restart" in r:
                w(f"| restart to first answered ApiVersions | {fmt(r.get('restart_ms'), 0)} ms |")
                w(f"| RSS after restart | {fmt(r.get('after_restart_rss_mib'), 1)} MiB |")
        w("")

    out.extend(s7_report(bench))
    out.extend(race_report(bench, info))

    lim = bench.extra.get("limits")
    if lim:
        w("## Machine limits measured in this run\n")
        w("| limit | figure |")
        w("|---|---:|")
        tcp = lim["tcp"]
        w(f"| loopback TCP ({tcp['tool']}) | {fmt(tcp['GBs'], 2)} GB/s |")
        if tcp.get("sender_ms_per_MB") is not None:
            w(f"| loopback TCP CPU per MB: sender / receiver | {fmt(tcp['sender_ms_per_MB'], 3)} / "
              f"{fmt(tcp['receiver_ms_per_MB'], 3)} ms/MB |")
        zc = lim.get("tcp_zerocopy")
        if zc and zc.get("sender_ms_per_MB") is not None:
            w(f"| same with a sendfile sender (iperf3 -Z): GB/s; CPU per MB, sender / receiver | "
              f"{fmt(zc['GBs'], 2)} GB/s; {fmt(zc['sender_ms_per_MB'], 3)} / {fmt(zc['receiver_ms_per_MB'], 3)} ms/MB |")
        mem = lim.get("memory")
        if mem:
            w(f"| buffered 1 MiB writes to the page cache, memory touched for the first time | "
              f"{fmt(mem['write_first_touch_GBs'], 2)} GB/s, {fmt(mem['write_first_touch_ms_per_MB'], 3)} ms CPU/MB |")
            w(f"| same, recycled memory | {fmt(mem['write_recycled_GBs'], 2)} GB/s, "
              f"{fmt(mem['write_recycled_ms_per_MB'], 3)} ms CPU/MB |")
            w(f"| 1 MiB reads from the page cache | {fmt(mem['read_GBs'], 2)} GB/s, "
              f"{fmt(mem['read_ms_per_MB'], 3)} ms CPU/MB |")
            w(f"| memcpy, 256 MiB | {fmt(mem['memcpy_GBs'], 1)} GB/s |")
        for d in lim["disk"]:
            bs = d["bs"]
            size = f"{bs // MIB} MiB" if bs % MIB == 0 else f"{bs // KIB} KiB"
            w(f"| {size} writes + fdatasync each ({d['tool']}) | {fmt(d['iops'])}/s, {fmt(d['MBs'])} MB/s, "
              f"fdatasync p99 {fmt(d['sync_p99_ms'], 2)} ms |")
        w("")

    targets = target_table(bench)
    if targets:
        w("## Targets\n")
        w("| target | measured | met? |")
        w("|---|---|---|")
        out.extend(targets)
        w("")

    prof = bench.extra.get("profile")
    if prof:
        w("## Where the broker's time goes\n")
        w("`perf record -e cpu-clock -g -p <broker>` during one extra run of each phase (not counted above). "
          "Activities are inclusive shares of the broker's samples at kernel entry points (they overlap); "
          "symbols are self time.\n")
        for phase, p in prof.items():
            if not p:
                continue
            w(f"**{phase}** ({p['samples']} samples; user {p['user_self']:.0f}%, kernel {p['kernel_self']:.0f}%)\n")
            w("| activity | % of broker samples |")
            w("|---|---:|")
            for label, pct in p["activities"]:
                w(f"| {label} | {pct:.1f} |")
            w("")
            w("| top user symbols (self) | % | top kernel symbols (self) | % |")
            w("|---|---:|---|---:|")
            for i in range(max(len(p["top_user"][:10]), len(p["top_kernel"][:6]))):
                u = p["top_user"][i] if i < len(p["top_user"][:10]) else None
                k = p["top_kernel"][i] if i < len(p["top_kernel"][:6]) else None
                w(f"| {'`' + u[1][:90] + '`' if u else ''} | {f'{u[0]:.1f}' if u else ''} | "
                  f"{'`' + k[1][:60] + '`' if k else ''} | {f'{k[0]:.1f}' if k else ''} |")
            w("")
    for n in bench.notes:
        w(f"- {n}")
    return "\n".join(out) + "\n"


def s7_floors(bench):
    """The machine's floor in CPU ms per MB for S7's roles, from the limits measured in this run:
    a broker that receives a byte once and writes it once into the page cache (RF=1, a
    follower: loopback receive + page-cache write on recycled memory), and a leader that also
    sends it to two followers from the page cache (+ 2 x the sendfile sender of iperf3 -Z).
    None without the limits."""
    lim = bench.extra.get("limits") or {}
    tcp, zc, mem = lim.get("tcp") or {}, lim.get("tcp_zerocopy") or {}, lim.get("memory") or {}
    recv, write = tcp.get("receiver_ms_per_MB"), mem.get("write_recycled_ms_per_MB")
    if recv is None or write is None:
        return None
    one = recv + write
    send = zc.get("sender_ms_per_MB")
    return {"one": one, "leader": one + 2 * send if send is not None else None}


def s7_report(bench):
    """S7's section: RF=3 / RF=1 ratios, the per-node figures, and which node had which role."""
    res = bench.results
    tp_row = "S7 1 KiB, 1 partition, unthrottled"
    lat_row = f"S7 {S7_RATE:,} msg/s, 1 partition"
    t1, t3 = res.get((tp_row, "skein"), []), res.get((tp_row, "cluster"), [])
    l1, l3 = res.get((lat_row, "skein"), []), res.get((lat_row, "cluster"), [])
    if not (t1 or t3 or l1 or l3):
        return []
    out = []
    w = out.append
    w("## Replication (S7): three brokers, RF=3, min.insync.replicas=2, acks=all\n")
    p = bench.p
    w(f"Three `skein serve` processes on loopback (node ids 1-3, all three controller voters, default "
      f"settings, own data directories), all pinned to the broker core {BROKER_CPU}: the cluster gets the "
      f"same core and disk as the RF=1 broker, so the throughput ratio is the price of doing three brokers' "
      f"work there. The topic (1 partition) has RF=3 and min.insync.replicas=2, its preferred leader a node "
      f"that is not the active controller; every run starts once its ISR is full. RF=1 is one broker with "
      f"S1's settings. Both with `skein.acks.all.fsync=true` (the default), the same clients and settings, "
      f"runs alternating RF=1, RF=3: unthrottled, {p['s7_msgs']:,} x 1 KiB (rdkafka_performance, acks=all, "
      f"linger.ms=1, batch.size=1 MiB, then a consumer reads it all back), and {p['s7_seconds']} s at "
      f"{S7_RATE:,} msg/s (bench/latency_client.py, batch.size=128 KiB, the consumer waiting in the leader's "
      f"long poll: it is served only below the high watermark, so e2e includes replication). Medians of "
      f"{p['runs']} runs.\n")

    def ratio(a, b):
        return f"{a / b:.2f}" if a is not None and b else "–"

    w("| figure | RF=1, one broker | RF=3, three brokers | RF=3 / RF=1 |")
    w("|---|---:|---:|---:|")
    for label, key, digits in (("produce MB/s, unthrottled", "prod_MBs", 1),
                               ("produce msg/s, unthrottled", "prod_msgs_s", 0),
                               ("consume MB/s (RF=3: from the leader)", "cons_MBs", 1),
                               ("broker CPU ms per MB produced (RF=3: the three brokers together)",
                                "cpu_ms_per_MB_prod", 3),
                               ("broker core busy during produce, % (RF=3: the three brokers)",
                                "broker_cpu_pct_prod", 0),
                               ("client core busy during produce, %", "client_cpu_pct_prod", 0)):
        a, b = agg(t1, key), agg(t3, key)
        w(f"| {label} | {fmt(a, digits)} | {fmt(b, digits)} | {ratio(b, a)} |")
    for what in ("ack", "e2e"):
        a, b = agg(l1, f"{what}_p99"), agg(l3, f"{what}_p99")
        w(f"| at {S7_RATE:,} msg/s: {what} p50 / p99 / p99.9 ms (ratio of p99) | {lat3(l1, what)} | "
          f"{lat3(l3, what)} | {ratio(b, a)} |")
    a, b = agg(l1, "cpu_pct"), agg(l3, "cpu_pct")
    w(f"| at {S7_RATE:,} msg/s: broker core busy, % (produce and consume; RF=3: the three brokers) | "
      f"{fmt(a)} | {fmt(b)} | {ratio(b, a)} |")
    a, b = agg(l1, "cpu_ms_per_MB_prod"), agg(l3, "cpu_ms_per_MB_prod")
    w(f"| at {S7_RATE:,} msg/s: broker CPU ms per MB produced (RF=3: together) | {fmt(a, 2)} | {fmt(b, 2)} | "
      f"{ratio(b, a)} |")
    loads = [r["load1"] for r in t1 + t3 + l1 + l3 if "load1" in r]
    if loads:
        w(f"| load average (1 min) at the end of each run | {min(loads):.2f}–{max(loads):.2f} | | |")
    w("")

    floors = s7_floors(bench)
    w("Per node (RF=3: each process's utime+stime from `/proc/PID/stat` over the phase, divided by the MB "
      "produced). The machine floor is what the same run measured for the copies each role must make: "
      "loopback receive + page-cache write for a follower and for RF=1, plus two sendfile sends for the leader "
      "(see the limits).\n")
    w("| role | node | CPU ms/MB produced, unthrottled | core busy %, unthrottled | "
      f"CPU ms/MB at {S7_RATE:,} msg/s | core busy % at {S7_RATE:,} msg/s | bytes/fsync, unthrottled | "
      "peak RSS MiB | CPU ms/MB produced / machine floor |")
    w("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    f_one = floors["one"] if floors else None
    v = agg(t1, "cpu_ms_per_MB_prod")
    w(f"| RF=1 broker | – | {fmt(v, 3)} | {fmt(agg(t1, 'broker_cpu_pct_prod'))} | "
      f"{fmt(agg(l1, 'cpu_ms_per_MB_prod'), 2)} | {fmt(agg(l1, 'cpu_pct'))} | {fmt(agg(t1, 'bytes_per_fsync'))} | "
      f"{fmt(agg(t1, 'peak_rss_mib'), 1)} | {ratio(v, f_one)} |")
    runs = [r for r in t3 + l3 if "node_leader" in r]
    for role in ("leader", "follower", "other"):
        nodes = sorted({r[f"node_{role}"] for r in runs})
        ctrl = [r[f"node_{role}"] == r.get("node_controller") for r in runs]
        label = {"leader": "RF=3 leader", "follower": "RF=3 follower", "other": "RF=3 other follower"}[role]
        if ctrl and all(ctrl):
            label += " (the active controller)"
        elif any(ctrl):
            label += " (the active controller in some runs)"
        floor = (floors or {}).get("leader" if role == "leader" else "one")
        v = agg(t3, f"cpu_ms_per_MB_prod_{role}")
        bpf = {"leader": fmt(agg(t3, "bytes_per_fsync")), "follower": fmt(agg(t3, "bytes_per_fsync_follower"))}
        w(f"| {label} | {', '.join(map(str, nodes)) or '–'} | {fmt(v, 3)} | {fmt(agg(t3, f'cpu_pct_prod_{role}'))} | "
          f"{fmt(agg(l3, f'cpu_ms_per_MB_rate_{role}'), 2)} | {fmt(agg(l3, f'cpu_pct_rate_{role}'))} | "
          f"{bpf.get(role, '–')} | {fmt(agg(t3, f'peak_rss_mib_{role}'), 1)} | {ratio(v, floor)} |")
    w("")
    if floors:
        w(f"Machine floor in this run: {floors['one']:.3f} ms/MB for a broker that receives and writes each byte "
          f"once" + (f", {floors['leader']:.3f} for a leader that also sends it to two followers" if floors["leader"]
                     else "") + ".\n")
    if runs:
        w("Which node led: " + "; ".join(
            f"{'unthrottled' if r in t3 else f'{S7_RATE:,} msg/s'} run {(t3 if r in t3 else l3).index(r) + 1}: "
            f"leader {r['node_leader']}, followers {r['node_follower']} and {r['node_other']}, active controller "
            f"{r.get('node_controller', '?')}" +
            (f" (leader after the run: {r['leader_after']})" if r.get("leader_after") not in (None, r["node_leader"])
             else "") for r in runs) + ".\n")
    return out


def race_rows(bench):
    """(pairing, row) in the order they ran."""
    seen = []
    for (key, row, _kind) in bench.race:
        if (key, row) not in seen:
            seen.append((key, row))
    return seen


def race_ratio(bench, key, row, fig):
    s = bench.race.get((key, row, "skein"))
    k = bench.race.get((key, row, "kafka"))
    if not s or not k:
        return None
    a, b = agg(s, fig), agg(k, fig)
    if a is None or not b:
        return None
    return a / b


def race_kafka_wins(bench):
    """(pairing, row, figure label) for every figure where Kafka's median beats Skein's by more
    than RACE_WIN_MARGIN."""
    wins = []
    figs = RACE_FIGURES + [("startup_ms", "start-up", False), ("idle_rss_mib", "idle RSS", False)]
    for key, row in race_rows(bench):
        for fig, label, higher in figs:
            r = race_ratio(bench, key, row, fig)
            if r is None:
                continue
            if (higher and r < 1 - RACE_WIN_MARGIN) or (not higher and r > 1 + RACE_WIN_MARGIN):
                wins.append((key, row, label))
    return wins


def race_report(bench, info):
    out = []
    w = out.append
    if not bench.race:
        return out
    load = [r["load1"] for runs in bench.race.values() for r in runs if "load1" in r]
    w("## Skein against Apache Kafka (`--against-kafka`)\n")
    jvm = (bench.extra.get("kafka_jvm") or {})
    j = next(iter(jvm.values()), None) or bench.extra.get("kafka_jvm_default") or {}
    w(f"- Apache Kafka {j.get('kafka_version') or '?'} from `scripts/kafka-reference` (KRaft, combined mode, "
      f"one node), pinned like Skein (`taskset -c {BROKER_CPU}`), its data directory next to Skein's; "
      f"clients on core {CLIENT_CPU}")
    w(f"- JVM: {j.get('version', '?')}; heap initial / max {j.get('initial_heap', '?')} / {j.get('max_heap', '?')}; "
      f"GC {j.get('gc', '?')}" + (f" (`{j['threads']}`)" if j.get("threads") else "") +
      (f"; {j['os_threads']} threads" if j.get("os_threads") else ""))
    if j.get("options"):
        w(f"- JVM options: `{j['options']}`")
    for key in bench.args.pairings:
        pr = RACE_PAIRINGS[key]
        w(f"- pairing ({key}), {pr['title']}: Skein `--set {' '.join(pr['skein']) or '(defaults)'}`, "
          f"Kafka `--set {' '.join(pr['kafka']) or '(defaults)'}`")
    w("- each run of Skein starts a fresh broker on a fresh data directory, as in the Skein-only scenarios; Kafka "
      "is started once per pairing and warmed with uncounted runs of S1, S3 and S2 (a fresh JVM interprets "
      "before it compiles: its start-up is the S0 row), and each run gets new topics; its peak RSS is reset "
      "(`/proc/PID/clear_refs`) at the start of each run. Runs alternate: Skein run 1, Kafka run 1, Skein run 2, ...")
    idle = [r["kafka_idle_cpu_pct"] for runs in bench.race.values() for r in runs if "kafka_idle_cpu_pct" in r]
    if idle:
        w(f"- the idle Kafka broker shares core {BROKER_CPU} with Skein during Skein's runs, its threads moved to "
          f"SCHED_IDLE meanwhile (it runs only when Skein does not want the core); it used {median(idle):.1f}% "
          f"of that core then (median, max {max(idle):.1f}%)")
    p = bench.p
    w(f"- sizes: S1 {p['s1_msgs']:,} messages a run, S2 {p['s2_seconds']} s a run at "
      f"{' and '.join(f'{r:,}' for r in p['s2_rates'])} msg/s, S3 {p['s3_msgs']:,} messages, S5 "
      f"{p['s5_bytes'] / 1024 / MIB:g} GiB read {p['runs']} times; S0 {p['kafka_startup_runs']} starts of each")
    if load:
        w(f"- load average (1 min) at the end of each run: {min(load):.2f} to {max(load):.2f} (median "
          f"{median(load):.2f}); every figure is the median of {bench.p['runs']} runs")
    w("")
    w("### Ratios, Skein / Kafka\n")
    w("Above 1 means Skein's figure is higher: better for throughput, worse for CPU per MB, latency, RSS and "
      f"start-up. **Bold**: Kafka is better by more than {RACE_WIN_MARGIN:.0%}.\n")
    heads = [label for _f, label, _h in RACE_FIGURES]
    w("| scenario | pairing | " + " | ".join(heads) + " | load (1 min) |")
    w("|---|---|" + "---:|" * len(heads) + "---:|")
    for key, row in race_rows(bench):
        if key == "-":
            continue
        cells = []
        for fig, _label, higher in RACE_FIGURES:
            r = race_ratio(bench, key, row, fig)
            if r is None:
                cells.append("–")
                continue
            kafka_better = (higher and r < 1 - RACE_WIN_MARGIN) or (not higher and r > 1 + RACE_WIN_MARGIN)
            cells.append(f"**{r:.2f}**" if kafka_better else f"{r:.2f}")
        runs = bench.race.get((key, row, "skein"), []) + bench.race.get((key, row, "kafka"), [])
        ld = [r["load1"] for r in runs if "load1" in r]
        ld = f"{min(ld):.2f}–{max(ld):.2f}" if ld else "–"
        w(f"| {row} | ({key}) {RACE_PAIRINGS[key]['short']} | " + " | ".join(cells) + f" | {ld} |")
    s0 = bench.race.get(("-", "S0 start-up, idle", "skein"))
    k0 = bench.race.get(("-", "S0 start-up, idle", "kafka"))
    if s0 and k0:
        ld = [r["load1"] for r in s0 + k0 if "load1" in r]
        w("")
        w("| S0 | start-up to first answered ApiVersions | idle RSS 1 s later | load (1 min) |")
        w("|---|---:|---:|---:|")
        w(f"| skein | {fmt(agg(s0, 'startup_ms'), 1)} ms | {fmt(agg(s0, 'idle_rss_mib'), 1)} MiB | |")
        w(f"| kafka | {fmt(agg(k0, 'startup_ms'), 0)} ms | {fmt(agg(k0, 'idle_rss_mib'), 1)} MiB | |")
        sr = race_ratio(bench, "-", "S0 start-up, idle", "startup_ms")
        rr = race_ratio(bench, "-", "S0 start-up, idle", "idle_rss_mib")
        w(f"| skein / kafka | {fmt(sr, 4)} | {fmt(rr, 3)} | {fmt(min(ld), 2)}–{fmt(max(ld), 2)} |")
    w("")
    w("### Figures behind the ratios\n")
    w("| scenario | pairing | broker | produce MB/s | consume MB/s | ack p50 / p99 / p99.9 ms | "
      "e2e p50 / p99 / p99.9 ms | CPU ms/MB produced | CPU ms/MB consumed | CPU % broker, produce / consume | "
      "bytes/fsync | peak RSS MiB | load (1 min) |")
    w("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for key, row in race_rows(bench):
        if key == "-":
            continue
        for kind in ("skein", "kafka"):
            runs = bench.race.get((key, row, kind))
            if not runs:
                continue
            cache = runs[0].get("cache")
            loads = ", ".join(f"{r['load1']:.1f}" for r in runs if "load1" in r)
            cpu = (f"{fmt(agg(runs, 'cpu_pct'))} (both)" if agg(runs, "cpu_pct") is not None
                   else pair(runs, "broker_cpu_pct_prod", "broker_cpu_pct_cons"))
            w(f"| {row}{' (' + cache + ' cache)' if cache else ''} | ({key}) | {kind} | "
              f"{fmt(agg(runs, 'prod_MBs'), 1)} | {fmt(agg(runs, 'cons_MBs'), 1)} | {lat3(runs, 'ack')} | "
              f"{lat3(runs, 'e2e')} | {fmt(agg(runs, 'cpu_ms_per_MB_prod'), 3)} | "
              f"{fmt(agg(runs, 'cpu_ms_per_MB_cons'), 3)} | {cpu} | {fmt(agg(runs, 'bytes_per_fsync'))} | "
              f"{fmt(agg(runs, 'peak_rss_mib'), 1)} | {loads} |")
    w("")
    w("S2's CPU figure is the broker's CPU for producing and consuming together, per MB produced; its "
      "throughput is the fixed rate. S1 and S3 ack latencies include the client's own queueing (unthrottled). "
      "S5 produces the backlog once per broker and pairing; its produce figures repeat in every read.")
    w("")
    wins = race_kafka_wins(bench)
    if wins:
        w("### Where Kafka wins (by more than " + f"{RACE_WIN_MARGIN:.0%})\n")
        for key, row, label in wins:
            pairing = f"({key})" if key != "-" else ""
            r = race_ratio(bench, key, row, next(f for f, lb, _h in RACE_FIGURES + [
                ("startup_ms", "start-up", False), ("idle_rss_mib", "idle RSS", False)] if lb == label))
            w(f"- {row} {pairing}: {label}, Skein / Kafka {r:.2f}")
        w("")
    prof = bench.extra.get("race_profile")
    if prof:
        w("### Profiles of the scenarios Kafka wins\n")
        w("`perf record -e cpu-clock -g -p <broker>` during one extra, uncounted run on each broker; for Kafka "
          "the JVM's JIT-compiled frames are named from `jcmd PID Compiler.perfmap`.\n")
        for phase, p in prof.items():
            if not p:
                continue
            w(f"**{phase}** ({p['samples']} samples; user {p['user_self']:.0f}%, kernel {p['kernel_self']:.0f}%): " +
              ", ".join(f"{label} {pct:.0f}%" for label, pct in p["activities"][:8]) + "; top user symbols: " +
              ", ".join(f"`{sym[:60]}` {pct:.1f}%" for pct, sym in p["top_user"][:6]))
            w("")
    return out


def target_table(bench):
    res = bench.results
    rows = []

    def met(ok):
        return "–" if ok is None else ("met" if ok else "**missed**")

    s1 = res.get(("S1 1 KiB, 1 partition", "skein"))
    mock = res.get(("S1 1 KiB, 1 partition", "mock"))
    if s1 and mock:
        ratio = agg(s1, "prod_MBs") / agg(mock, "prod_MBs")
        rows.append(f"| produce throughput ≥ 60% of the same client against librdkafka's mock broker (S1, 1 partition, "
                    f"fsync on) | {agg(s1, 'prod_MBs'):,.0f} vs {agg(mock, 'prod_MBs'):,.0f} MB/s = {ratio:.0%} | "
                    f"{met(ratio >= 0.6)} |")
    s16 = res.get(("S1 1 KiB, 16 partitions", "skein"))
    mock16 = res.get(("S1 1 KiB, 16 partitions", "mock"))
    if s16 and mock16:
        ratio = agg(s16, "prod_MBs") / agg(mock16, "prod_MBs")
        rows.append(f"| same, S1 16 partitions (mock: 4) | {agg(s16, 'prod_MBs'):,.0f} vs "
                    f"{agg(mock16, 'prod_MBs'):,.0f} MB/s = {ratio:.0%} | {met(ratio >= 0.6)} |")
    if s1:
        p = agg(s1, "cpu_ms_per_MB_prod")
        c = agg(s1, "cpu_ms_per_MB_cons")
        if p is not None:
            rows.append(f"| broker CPU < 0.3 ms/MB produced (S1, 1 partition) | {p:.3f} ms/MB | {met(p < 0.3)} |")
        if c is not None:
            rows.append(f"| broker CPU < 0.15 ms/MB consumed (S1, 1 partition) | {c:.3f} ms/MB | {met(c < 0.15)} |")
    s2 = res.get(("S2 5,000 msg/s, 1 partition", "skein"))
    if s2:
        a = agg(s2, "ack_p99")
        e = agg(s2, "e2e_p99")
        if a is not None:
            rows.append(f"| at 5,000 msg/s produce-ack p99 < 2 ms | {a:.2f} ms | {met(a < 2)} |")
        if e is not None:
            rows.append(f"| at 5,000 msg/s e2e p99 < 3 ms (default fetch.wait.max.ms) | {e:.2f} ms | {met(e < 3)} |")
    s0 = res.get(("S0 start-up, idle", "skein"))
    if s0 and agg(s0, "idle_rss_mib") is not None:
        v = agg(s0, "idle_rss_mib")
        rows.append(f"| idle RSS < 20 MiB | {v:.1f} MiB | {met(v < 20)} |")
    for (row, t), runs in res.items():
        if row.startswith("S6"):
            r = runs[0]
            ok = bool(r.get("alive")) and not r.get("error") and r.get("produce_errors", 1) == 0
            what = "up" if r.get("alive") else "DOWN"
            detail = r.get("error", f"{r.get('produce_errors', '?')} produce errors")
            m = re.search(r"^([^:]+):.*?(KAFKA_\w+|_\w+)", detail)
            if "error" in r and m:
                why = "Too many open files" if "Too many open files" in detail else detail[m.end():][:80]
                detail = f"{m.group(1)} failed with {m.group(2)} ({why})"
            detail = detail[:200].replace("|", "/")
            judged = row.startswith("S6 10,000 partitions")
            title = ("10,000 partitions on one broker without falling over" if judged
                     else "(for comparison, not the target's size)")
            rows.append(f"| {title}: {row[3:]} | {what}; {detail}; "
                        f"peak RSS {fmt(r.get('peak_rss_mib') or r.get('after_create_peak_rss_mib'), 0)} MiB | "
                        f"{met(ok) if judged else ('ok' if ok else 'failed')} |")
    return rows


# ---------------------------------------------------------------------------------------------


def cleanup(*_):
    for p in CHILDREN:
        if p.poll() is None:
            try:
                p.kill()
            except OSError:
                pass


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller runs: 4-5 minutes")
    ap.add_argument("--scenarios",
                    help="comma-separated subset of " + ",".join(ALL_SCENARIOS) + " (default: all; with "
                         "--against-kafka: " + ",".join(RACE_SCENARIOS) + ")")
    ap.add_argument("--runs", type=int, help="runs per figure (default 3)")
    ap.add_argument("--out", help="also write the Markdown report here (and raw results to OUT.json)")
    ap.add_argument("--skein-bin", help="use this skein binary instead of building target/release/skein")
    ap.add_argument("--rdkafka-performance", help="use this rdkafka_performance instead of building one")
    ap.add_argument("--against", metavar="HOST:PORT", help="run the same scenarios against another broker too")
    ap.add_argument("--against-pid", type=int, help="that broker's pid, for its CPU and RSS figures")
    ap.add_argument("--against-kafka", action="store_true",
                    help="race the reference Apache Kafka broker (scripts/kafka-reference, pinned like Skein): "
                         "S0, S1, S2, S3 and S5 on both, interleaved run by run, in two durability pairings; "
                         "reports Skein/Kafka ratios. Other scenarios named in --scenarios run Skein-only")
    ap.add_argument("--pairings", default="a,b",
                    help="with --against-kafka: a = page-cache acks on both (Kafka's default, Skein "
                         "skein.acks.all.fsync=false), b = fsync before ack on both (Kafka "
                         "log.flush.interval.messages=1, Skein's default); default a,b")
    ap.add_argument("--kafka-heap", help="with --against-kafka: the broker's heap (scripts/kafka-reference --heap; "
                                         "default: the script's)")
    ap.add_argument("--kafka-script", default=str(REPO / "scripts" / "kafka-reference"), help=argparse.SUPPRESS)
    ap.add_argument("--no-limits", action="store_true", help="skip the machine limits (TCP, disk)")
    ap.add_argument("--no-mock", action="store_true", help="skip librdkafka's mock broker reference")
    ap.add_argument("--perf", action="store_true",
                    help="profile the broker during an extra S1 and S2 run (perf record); with --against-kafka, "
                         "both brokers in an extra run of every scenario where Kafka wins a figure")
    ap.add_argument("--install-deps", action="store_true",
                    help="apt-get install iperf3, fio, a C toolchain, zlib/OpenSSL headers (and linux-perf with --perf)")
    ap.add_argument("--work-dir", help="where data directories go (default: a new temp dir)")
    ap.add_argument("--no-pretouch", action="store_true",
                    help="do not pre-fault memory before produce phases (see Bench.pretouch)")
    ap.add_argument("--keep", action="store_true", help="keep data directories and latency files")
    args = ap.parse_args()

    mode = "quick" if args.quick else "full"
    profile = dict(PROFILES[mode])
    if args.against_kafka and mode == "full":
        profile.update(RACE_FULL_SCALE)
    if args.runs:
        profile["runs"] = args.runs
    if args.scenarios is None:
        args.scenarios = ",".join(RACE_SCENARIOS if args.against_kafka else ALL_SCENARIOS)
    scenarios = [s.strip().upper() for s in args.scenarios.split(",") if s.strip()]
    for s in scenarios:
        if s not in ALL_SCENARIOS:
            die(f"unknown scenario {s}; choose from {','.join(ALL_SCENARIOS)}")
    args.pairings = [k.strip().lower() for k in args.pairings.split(",") if k.strip()]
    for k in args.pairings:
        if k not in RACE_PAIRINGS:
            die(f"unknown pairing {k}; choose from {','.join(RACE_PAIRINGS)}")
    race = [s for s in scenarios if s in RACE_SCENARIOS] if args.against_kafka else []
    if args.against_kafka:
        if not os.access(args.kafka_script, os.X_OK):
            die(f"{args.kafka_script} is missing or not executable (it starts the reference Kafka broker)")
        if args.against:
            die("--against and --against-kafka do not mix")
        args.no_mock = True  # the race has no mock column; the mock is in the Skein-only run
    if os.cpu_count() < 2:
        log("fewer than 2 CPUs: broker and client cannot be pinned apart")

    signal.signal(signal.SIGTERM, lambda *a: (cleanup(), sys.exit(143)))
    if args.install_deps:
        install_deps(args.perf)
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        die("confluent-kafka is needed to create topics: pip install confluent-kafka (or --install-deps)")

    info = machine_info()
    rdkp = ensure_rdkafka_performance(args.rdkafka_performance)
    skein_bin = ensure_skein(args.skein_bin)
    info["librdkafka"] = re.sub(r"^rdkafka_performance-", "", rdkp.name)
    try:
        info["skein_version"] = run_cmd([str(skein_bin), "--version"], timeout=10).stdout.strip()
        head = run_cmd(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], timeout=10).stdout.strip()
        dirty = run_cmd(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"], timeout=30).stdout
        info["repo_head"] = head + (" with uncommitted changes" if dirty.strip() else "")
    except (RuntimeError, OSError, subprocess.TimeoutExpired):
        pass
    workdir = args.work_dir or tempfile.mkdtemp(prefix="skein-bench-")
    Path(workdir).mkdir(parents=True, exist_ok=True)
    # The driver itself (and every client it starts) stays on the client core.
    if hasattr(os, "sched_setaffinity") and os.cpu_count() >= 2:
        os.sched_setaffinity(0, {int(CLIENT_CPU)})
    bench = Bench(args, profile, rdkp, skein_bin, workdir)
    log(f"{mode} run of {','.join(scenarios)}; skein {skein_bin}; rdkafka_performance {rdkp}; work dir {workdir}")
    t_start = time.monotonic()
    try:
        if race:
            bench.against_kafka(race)
        if "S0" in scenarios and "S0" not in race:
            bench.s0_startup()
        if "S1" in scenarios and "S1" not in race:
            bench.s1(profile=args.perf)
        if "S2" in scenarios and "S2" not in race:
            bench.s2(profile=args.perf)
        if "S3" in scenarios and "S3" not in race:
            bench.s3()
        if "S4" in scenarios:
            bench.s4()
        if "S5" in scenarios and "S5" not in race:
            bench.s5()
        if "S6" in scenarios:
            bench.s6()
        if "S7" in scenarios:
            bench.s7(profile=args.perf)
        if not args.no_limits:
            log("machine limits: loopback TCP, fdatasync'd writes")
            bench.limits()
    finally:
        cleanup()
        if not args.keep and not args.work_dir:
            shutil.rmtree(workdir, ignore_errors=True)
    info["loadavg_end"] = loadavg()
    info["elapsed_s"] = round(time.monotonic() - t_start)
    report = build_report(bench, info, args, mode)
    report += f"\n_Run took {info['elapsed_s']} s: `bench/run {' '.join(sys.argv[1:])}`._\n"
    print(report)
    if args.out:
        Path(args.out).write_text(report)
        raw = {"info": info, "profile": profile, "extra": bench.extra,
               "results": [{"scenario": k[0], "target": k[1], "runs": v} for k, v in bench.results.items()],
               "against_kafka": [{"pairing": k[0], "scenario": k[1], "target": k[2], "runs": v}
                                 for k, v in bench.race.items()]}
        Path(args.out + ".json").write_text(json.dumps(raw, indent=1, default=str))
        log(f"wrote {args.out} and {args.out}.json")


if __name__ == "__main__":
    main()
