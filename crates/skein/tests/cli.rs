//! The operator CLI end to end: the real `skein` binary serves on ephemeral ports in a temp
//! dir, and every subcommand runs as a subprocess against it, checked by its output and exit
//! code. Waits poll a condition until a deadline; nothing sleeps a fixed time to synchronize.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_skein");
const DEADLINE: Duration = Duration::from_secs(60);

/// A broker process, killed when dropped.
struct Broker {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Broker {
    fn start() -> Broker {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir.path())
            // The first rebalance of a group would otherwise wait 3 s for more members.
            .args(["--set", "group.initial.rebalance.delay.ms=0"])
            .env("SKEIN_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the broker");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        // Keep draining the log so the broker never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("skein started") {
                    let addr = line
                        .split_whitespace()
                        .find_map(|w| w.strip_prefix("kafka="))
                        .map(str::to_owned);
                    let _ = tx.send(addr);
                }
            }
        });
        let addr = rx
            .recv_timeout(DEADLINE)
            .expect("the broker logs `skein started`")
            .expect("the start line names the kafka address");
        Broker {
            child,
            addr,
            _dir: dir,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args).args(["--bootstrap", &self.addr]);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_with_stdin(args, "")
    }

    fn run_with_stdin(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run skein");
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(stdin.as_bytes())
            .expect("write stdin");
        child.wait_with_output().expect("skein output")
    }

    /// Runs a command that must succeed; returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        self.ok_with_stdin(args, "")
    }

    fn ok_with_stdin(&self, args: &[&str], stdin: &str) -> String {
        let out = self.run_with_stdin(args, stdin);
        assert!(
            out.status.success(),
            "skein {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("UTF-8 stdout")
    }

    /// Runs a command that must fail with exit code 1; returns its stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "skein {args:?} should fail; stdout: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let err = String::from_utf8(out.stderr).expect("UTF-8 stderr");
        assert_eq!(err.lines().count(), 1, "one line of error: {err}");
        err
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        serde_json::from_str(&self.ok(&all)).expect("JSON output")
    }

    /// `group describe --output json`.
    fn group(&self, group: &str) -> Value {
        self.json(&["group", "describe", group])
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A background CLI process, killed when dropped.
struct Background(Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

fn total_lag(group: &Value) -> i64 {
    group["total_lag"].as_i64().expect("total_lag")
}

fn committed(group: &Value) -> Vec<(String, i64, Option<i64>)> {
    group["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .map(|p| {
            (
                p["topic"].as_str().unwrap().to_owned(),
                p["partition"].as_i64().unwrap(),
                p["committed_offset"].as_i64(),
            )
        })
        .collect()
}

#[test]
fn topic_admin_round_trip() {
    let b = Broker::start();
    let out = b.ok(&["topic", "create", "orders", "--partitions", "3"]);
    assert_eq!(
        out.trim(),
        "created topic orders (3 partitions, replication factor 1)"
    );
    let err = b.fails(&["topic", "create", "orders", "--partitions", "3"]);
    assert!(
        err.starts_with("skein: topic create orders: TOPIC_ALREADY_EXISTS: "),
        "{err}"
    );
    b.ok(&[
        "topic",
        "create",
        "events",
        "--partitions",
        "1",
        "--config",
        "cleanup.policy=compact",
    ]);

    let list = b.ok(&["topic", "list"]);
    let rows: Vec<Vec<&str>> = list
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0], ["TOPIC", "PARTITIONS", "REPLICATION-FACTOR"]);
    assert!(rows.contains(&vec!["orders", "3", "1"]), "{list}");
    assert!(rows.contains(&vec!["events", "1", "1"]), "{list}");
    let list = b.json(&["topic", "list"]);
    assert_eq!(list["topics"].as_array().unwrap().len(), 2, "{list}");

    let describe = b.json(&["topic", "describe", "orders"]);
    let partitions = describe["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), 3);
    for (i, p) in partitions.iter().enumerate() {
        assert_eq!(p["partition"], i as i64);
        assert_eq!(p["leader"], 1);
        assert_eq!(p["log_start_offset"], 0);
        assert_eq!(p["log_end_offset"], 0);
        assert_eq!(p["size_bytes"], 0);
        assert_eq!(p["status"], "ok");
    }
    let config = |d: &Value, name: &str| -> (String, String) {
        let c = d["configs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("config {name} in {d}"));
        (
            c["value"].as_str().unwrap_or("null").to_owned(),
            c["source"].as_str().unwrap().to_owned(),
        )
    };
    assert_eq!(
        config(&describe, "cleanup.policy"),
        ("delete".into(), "DEFAULT_CONFIG".into())
    );
    let events = b.json(&["topic", "describe", "events"]);
    assert_eq!(
        config(&events, "cleanup.policy"),
        ("compact".into(), "DYNAMIC_TOPIC_CONFIG".into())
    );
    let text = b.ok(&["topic", "describe", "orders"]);
    assert!(text.contains("START-OFFSET"), "{text}");
    assert!(text.contains("cleanup.policy"), "{text}");

    let out = b.ok(&[
        "topic",
        "alter-config",
        "orders",
        "--set",
        "retention.ms=1000",
        "--set",
        "max.message.bytes=2000000",
    ]);
    assert!(out.contains("retention.ms=1000"), "{out}");
    let describe = b.json(&["topic", "describe", "orders"]);
    assert_eq!(
        config(&describe, "retention.ms"),
        ("1000".into(), "DYNAMIC_TOPIC_CONFIG".into())
    );
    b.ok(&[
        "topic",
        "alter-config",
        "orders",
        "--delete",
        "retention.ms",
    ]);
    let describe = b.json(&["topic", "describe", "orders"]);
    assert_eq!(config(&describe, "retention.ms").1, "DEFAULT_CONFIG");
    assert_eq!(
        config(&describe, "max.message.bytes"),
        ("2000000".into(), "DYNAMIC_TOPIC_CONFIG".into())
    );
    let err = b.fails(&["topic", "alter-config", "orders", "--set", "no.such=1"]);
    assert!(
        err.starts_with("skein: topic alter-config orders: INVALID_CONFIG"),
        "{err}"
    );

    let err = b.fails(&["topic", "add-partitions", "orders", "--count", "2"]);
    assert!(
        err.starts_with("skein: topic add-partitions orders: INVALID_PARTITIONS: "),
        "{err}"
    );
    // The broker's own explanation is shown.
    assert!(err.len() > "skein: topic add-partitions orders: INVALID_PARTITIONS: ".len() + 10);
    b.ok(&["topic", "add-partitions", "orders", "--count", "5"]);
    let describe = b.json(&["topic", "describe", "orders"]);
    assert_eq!(describe["partitions"].as_array().unwrap().len(), 5);

    assert_eq!(
        b.ok(&["topic", "delete", "orders"]).trim(),
        "deleted topic orders"
    );
    let list = b.ok(&["topic", "list"]);
    assert!(!list.contains("orders"), "{list}");
    let err = b.fails(&["topic", "describe", "orders"]);
    assert!(
        err.starts_with("skein: topic describe orders: UNKNOWN_TOPIC_OR_PARTITION"),
        "{err}"
    );

    let info = b.json(&["cluster", "info"]);
    assert!(info["cluster_id"].as_str().is_some_and(|c| !c.is_empty()));
    assert_eq!(info["controller"], 1);
    assert_eq!(info["brokers"].as_array().unwrap().len(), 1);
    let produce = info["apis"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "Produce")
        .expect("Produce in the API list");
    assert!(produce["client_version"].as_i64().is_some());
    let text = b.ok(&["cluster", "info"]);
    assert!(text.contains("cluster id"), "{text}");
    // A cluster of one: this node is the quorum's only voter and its leader.
    assert_eq!(info["quorum"]["available"], true, "{info}");
    assert_eq!(info["quorum"]["leader_id"], 1, "{info}");
    let voters = info["quorum"]["voters"].as_array().unwrap();
    assert_eq!(voters.len(), 1, "{info}");
    assert_eq!(voters[0]["id"], 1, "{info}");
    assert_eq!(voters[0]["lag"], 0, "{info}");
    assert!(text.contains("quorum leader 1"), "{text}");
    // DescribeCluster v2 is served: the fenced state is known (none fenced).
    assert_eq!(info["brokers"][0]["fenced"], false, "{info}");
    let health = b.json(&["cluster", "health"]);
    assert_eq!(health["status"], "healthy", "{health}");
    assert_eq!(health["offline_partitions"], serde_json::json!([]));

    // A broker that is not there: a clear error, exit code 1.
    let out = Command::new(BIN)
        .args(["topic", "list", "--bootstrap", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("skein: topic list: cannot connect to 127.0.0.1:1"),
        "{err}"
    );
}

#[test]
fn keyed_records_land_where_the_java_client_puts_them() {
    let b = Broker::start();
    b.ok(&["topic", "create", "keys", "--partitions", "4"]);
    // toPositive(murmur2("key-i")) % 4 as the Java client (and kafka-python) compute it.
    const JAVA_PARTITIONS: [i64; 20] = [1, 0, 2, 3, 1, 0, 0, 3, 3, 1, 2, 1, 0, 1, 0, 3, 1, 0, 1, 2];
    let mut produced = Vec::new();
    for (chunk, codec) in ["none", "gzip", "snappy", "lz4", "zstd"].iter().enumerate() {
        let input: String = (chunk * 4..chunk * 4 + 4)
            .map(|i| format!("key-{i}:value-{i}\n"))
            .collect();
        let out = b.ok_with_stdin(
            &[
                "produce",
                "keys",
                "--key-separator",
                ":",
                "--compression",
                codec,
                "--header",
                "codec=x",
                "--header",
                "codec=y",
                "--output",
                "json",
            ],
            &input,
        );
        produced.extend(lines(&out));
    }
    assert_eq!(produced.len(), 20);
    for (i, p) in produced.iter().enumerate() {
        assert_eq!(p["partition"], JAVA_PARTITIONS[i], "key-{i}: {p}");
    }

    let out = b.ok(&["consume", "keys", "--exit-at-end", "--format", "json"]);
    let records = lines(&out);
    assert_eq!(records.len(), 20, "{out}");
    for r in &records {
        let key = r["key"].as_str().unwrap();
        let i: usize = key.strip_prefix("key-").unwrap().parse().unwrap();
        assert_eq!(r["partition"], JAVA_PARTITIONS[i], "{r}");
        assert_eq!(r["value"], format!("value-{i}"));
        assert_eq!(
            r["headers"],
            serde_json::json!([{"key": "codec", "value": "x"}, {"key": "codec", "value": "y"}])
        );
        // The offset the producer printed is where the record is.
        assert_eq!(produced[i]["offset"], r["offset"], "{r}");
        assert!(r["timestamp"].as_i64().unwrap() > 0);
    }

    // Keyless records with a partition override, values from arguments, acks=1.
    let out = b.ok(&[
        "produce",
        "keys",
        "--partition",
        "3",
        "--acks",
        "1",
        "--value",
        "a",
        "--value",
        "b",
    ]);
    let count_3 = JAVA_PARTITIONS.iter().filter(|p| **p == 3).count();
    assert_eq!(
        out,
        format!(
            "partition 3 offset {}\npartition 3 offset {}\n",
            count_3,
            count_3 + 1
        )
    );
    let out = b.ok(&[
        "consume",
        "keys",
        "--partition",
        "3",
        "--from",
        &format!("offset:{count_3}"),
        "--count",
        "2",
    ]);
    assert_eq!(out, "a\nb\n");
    // Partition 3 now holds records, so describe reports its size (DescribeLogDirs).
    let described = b.json(&["topic", "describe", "keys"]);
    let p3 = &described["partitions"][3];
    assert_eq!(p3["log_end_offset"], count_3 as i64 + 2);
    assert!(p3["size_bytes"].as_i64().unwrap() > 0, "{p3}");
    let out = b.ok(&[
        "consume",
        "keys",
        "--partition",
        "3",
        "--from",
        "latest",
        "--timeout-ms",
        "300",
    ]);
    assert_eq!(out, "");
    // By timestamp: everything was written after the epoch.
    let out = b.ok(&[
        "consume",
        "keys",
        "--from",
        "timestamp:0",
        "--exit-at-end",
        "--key-separator",
        "=",
    ]);
    assert_eq!(out.lines().count(), 22, "{out}");
    assert!(out.lines().any(|l| l == "key-7=value-7"), "{out}");

    let err = b.fails(&["produce", "missing", "--value", "x"]);
    assert!(
        err.starts_with("skein: produce missing: UNKNOWN_TOPIC_OR_PARTITION"),
        "{err}"
    );
    let err = b.fails(&["produce", "keys", "--partition", "9", "--value", "x"]);
    assert!(err.contains("partition 9 does not exist"), "{err}");
}

#[test]
fn group_lag_and_offset_resets() {
    let b = Broker::start();
    b.ok(&["topic", "create", "work", "--partitions", "2"]);
    let ten: String = (0..10).map(|i| format!("k{i}:v{i}\n")).collect();
    b.ok_with_stdin(&["produce", "work", "--key-separator", ":"], &ten);

    // A group member reads four records and commits them.
    let out = b.ok(&["consume", "work", "--group", "g", "--count", "4"]);
    assert_eq!(out.lines().count(), 4);
    let g = b.group("g");
    assert_eq!(g["state"], "Empty", "{g}");
    assert_eq!(g["type"], "classic");
    assert_eq!(total_lag(&g), 6, "{g}");
    // Lag in time is known wherever there is lag in records.
    for p in g["partitions"].as_array().unwrap() {
        if p["lag"].as_i64().unwrap() > 0 {
            assert!(p["lag_ms"].as_i64().is_some(), "{p}");
        } else {
            assert!(p["lag_ms"].is_null(), "{p}");
        }
    }

    // Lag grows while producing...
    let five: String = (10..15).map(|i| format!("k{i}:v{i}\n")).collect();
    b.ok_with_stdin(&["produce", "work", "--key-separator", ":"], &five);
    assert_eq!(total_lag(&b.group("g")), 11);
    // ...and shrinks once a member has consumed and committed.
    let out = b.ok(&["consume", "work", "--group", "g", "--exit-at-end"]);
    assert_eq!(out.lines().count(), 11);
    let g = b.group("g");
    assert_eq!(total_lag(&g), 0, "{g}");
    let text = b.ok(&["group", "describe", "g"]);
    assert!(text.starts_with("group g: state Empty"), "{text}");
    assert!(text.contains("LAG-TIME"), "{text}");

    // A dry run prints the plan and changes nothing.
    let before = committed(&b.group("g"));
    let plan = b.ok(&[
        "group",
        "reset-offsets",
        "g",
        "--topic",
        "work",
        "--to-earliest",
    ]);
    let rows: Vec<Vec<&str>> = plan
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        ["TOPIC", "PARTITION", "CURRENT-OFFSET", "NEW-OFFSET"]
    );
    assert_eq!(rows.len(), 3, "{plan}");
    assert!(
        rows[1..].iter().all(|r| r[0] == "work" && r[3] == "0"),
        "{plan}"
    );
    assert_eq!(committed(&b.group("g")), before);

    // --execute applies it.
    let plan = b.json(&[
        "group",
        "reset-offsets",
        "g",
        "--topic",
        "work:0",
        "--to-earliest",
        "--execute",
    ]);
    assert_eq!(plan["executed"], true);
    let g = b.group("g");
    let p0 = g["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["partition"] == 0)
        .unwrap()
        .clone();
    assert_eq!(p0["committed_offset"], 0);
    assert_eq!(total_lag(&g), p0["log_end_offset"].as_i64().unwrap());
    b.ok(&[
        "group",
        "reset-offsets",
        "g",
        "--all-topics",
        "--shift-by",
        "1",
        "--execute",
    ]);
    let g = b.group("g");
    let shifted = committed(&g);
    assert!(
        shifted.iter().any(|(_, p, c)| *p == 0 && *c == Some(1)),
        "{g}"
    );

    // While a member is active the reset is refused and nothing changes.
    let mut member = Background(
        b.command(&["consume", "work", "--group", "g"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("background consumer"),
    );
    wait_until("the background member to be stable and caught up", || {
        let g = b.group("g");
        g["state"] == "Stable" && g["members"].as_array().unwrap().len() == 1 && total_lag(&g) == 0
    });
    let g = b.group("g");
    let member_id = g["members"][0]["member_id"].as_str().unwrap().to_owned();
    assert_eq!(
        g["members"][0]["assignment"]["work"],
        serde_json::json!([0, 1])
    );
    let text = b.ok(&["group", "describe", "g"]);
    assert!(
        text.contains(&member_id) && text.contains("work:0,1"),
        "{text}"
    );
    let before = committed(&g);
    let err = b.fails(&[
        "group",
        "reset-offsets",
        "g",
        "--topic",
        "work",
        "--to-earliest",
        "--execute",
    ]);
    assert!(
        err.starts_with(
            "skein: group reset-offsets g: refusing to reset offsets: group g has active members"
        ),
        "{err}"
    );
    assert_eq!(committed(&b.group("g")), before);
    let err = b.fails(&["group", "delete", "g"]);
    assert!(
        err.starts_with("skein: group delete g: NON_EMPTY_GROUP"),
        "{err}"
    );

    // SIGTERM: the member commits, leaves the group and exits 0.
    let status = Command::new("kill")
        .args(["-TERM", &member.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut exit = None;
    wait_until("the member to exit", || {
        exit = member.0.try_wait().unwrap();
        exit.is_some()
    });
    assert!(exit.unwrap().success(), "{exit:?}");
    wait_until("the group to be empty", || b.group("g")["state"] == "Empty");
    b.ok(&[
        "group",
        "reset-offsets",
        "g",
        "--topic",
        "work",
        "--to-earliest",
        "--execute",
    ]);
    assert_eq!(total_lag(&b.group("g")), 15);

    let list = b.ok(&["group", "list"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with("g ") && l.contains("Empty")),
        "{list}"
    );
    assert_eq!(b.ok(&["group", "delete", "g"]).trim(), "deleted group g");
    let err = b.fails(&["group", "describe", "g"]);
    assert!(
        err.starts_with("skein: group describe g: GROUP_ID_NOT_FOUND"),
        "{err}"
    );
}
