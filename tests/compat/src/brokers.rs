//! The two brokers under comparison: a Skein process started for the run (release binary,
//! ephemeral port, temporary data directory) and the reference Apache Kafka broker, either
//! already running (`KAFKA_REFERENCE_BOOTSTRAP`) or started through `scripts/kafka-reference`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// Where results go: `target/compat/` (or `$CARGO_TARGET_DIR/compat/`).
pub fn results_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    target.join("compat")
}

/// The binary under test: `$SKEIN_BIN`, default `target/release/skein`.
pub fn skein_bin() -> PathBuf {
    std::env::var_os("SKEIN_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/release/skein"))
}

/// A running Skein broker; killed when dropped.
pub struct Skein {
    child: Child,
    pub bootstrap: String,
    log: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Skein {
    /// Starts `$SKEIN_BIN` (default `target/release/skein`) on an ephemeral port.
    pub fn start() -> Result<Skein> {
        let bin = skein_bin();
        if !bin.exists() {
            bail!(
                "skein binary not found at {} (build it with `cargo build --release --bin skein` \
                 or set SKEIN_BIN)",
                bin.display()
            );
        }
        let dir = tempfile::tempdir()?;
        let mut child = Command::new(&bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir.path())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        let stderr = child.stderr.take().expect("piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let lines = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("skein started") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(line.clone());
                    }
                }
                lines.lock().unwrap().push(line);
            }
        });
        let line = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                bail!("skein printed no start line within 60 s");
            }
        };
        let bootstrap = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("kafka="))
            .map(|a| a.trim_matches('"').to_owned())
            .context("start line without kafka=")?;
        Ok(Skein {
            child,
            bootstrap,
            log,
            _dir: dir,
        })
    }

    /// The broker's stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// True while the process runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Skein {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The reference broker, and whether this run started it (then it is stopped on drop).
pub struct Reference {
    pub bootstrap: String,
    started_dir: Option<tempfile::TempDir>,
}

impl Reference {
    /// `KAFKA_REFERENCE_BOOTSTRAP` if set, else a broker started with `scripts/kafka-reference`.
    /// `Err` carries the reason there is none.
    pub fn find_or_start() -> Result<Reference> {
        if let Ok(b) = std::env::var("KAFKA_REFERENCE_BOOTSTRAP") {
            if !b.is_empty() {
                return Ok(Reference {
                    bootstrap: b,
                    started_dir: None,
                });
            }
        }
        let script = workspace_root().join("scripts/kafka-reference");
        if !script.exists() {
            bail!(
                "KAFKA_REFERENCE_BOOTSTRAP is unset and {} does not exist",
                script.display()
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("skein-compat-kafka")
            .tempdir()?;
        let out = Command::new(&script)
            .arg("start")
            .arg("--dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("run {}", script.display()))?;
        if !out.status.success() {
            bail!("{} start failed ({})", script.display(), out.status);
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let bootstrap = stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix("bootstrap="))
            .map(str::to_owned)
            .with_context(|| format!("no bootstrap= line from kafka-reference: {stdout}"))?;
        Ok(Reference {
            bootstrap,
            started_dir: Some(dir),
        })
    }
}

impl Drop for Reference {
    fn drop(&mut self) {
        if let Some(dir) = &self.started_dir {
            let _ = Command::new(workspace_root().join("scripts/kafka-reference"))
                .arg("stop")
                .arg("--dir")
                .arg(dir.path())
                .stdout(Stdio::null())
                .status();
        }
    }
}
