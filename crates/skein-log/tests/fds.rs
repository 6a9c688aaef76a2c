//! File descriptors held per log, lazily written indexes and their recovery, creation cost.
//!
//! This file holds a single default test because it counts the process's open descriptors:
//! other tests running on parallel threads would disturb the count.

mod common;

use std::fs;
use std::path::Path;
use std::time::Instant;

use common::*;
use skein_log::{Log, LogConfig};
use skein_protocol::records::BatchHeader;

fn open_fds() -> usize {
    fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

fn first_timestamp(b: &[u8]) -> (i64, i64) {
    let h = BatchHeader::parse(b).unwrap();
    (h.base_offset, h.base_timestamp)
}

#[test]
fn one_descriptor_per_log_and_old_segments_stay_readable() {
    if !Path::new("/proc/self/fd").exists() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let before = open_fds();
    let mut logs = Vec::new();
    let mut stored = Vec::new();
    for p in 0..200 {
        let mut log = Log::open(&dir.path().join(format!("t-{p}")), small_config(), NOW)
            .unwrap()
            .0;
        stored.push(fill(&mut log, 60, NOW));
        assert!(log.segment_count() >= 4, "{}", log.segment_count());
        log.flush().unwrap();
        logs.push(log);
    }
    let during = open_fds();
    assert!(
        during <= before + 200 + 10,
        "{} descriptors for 200 logs",
        during - before
    );
    // Reads from the oldest segments (reopened per read) and timestamp lookups still work.
    for (log, stored) in logs.iter().zip(&stored) {
        let all: Vec<Vec<u8>> = read_all(log).into_iter().map(|(_, b)| b).collect();
        assert_eq!(&all, stored);
        for b in stored.iter().step_by(7) {
            let (offset, ts) = first_timestamp(b);
            assert_eq!(log.offset_for_timestamp(ts).unwrap(), Some((offset, ts)));
        }
    }
    assert!(open_fds() <= before + 200 + 10);
    // Closed and reopened, the logs hold one descriptor each again.
    let dirs: Vec<_> = logs.iter().map(|l| l.dir().to_path_buf()).collect();
    for log in logs {
        log.close().unwrap();
    }
    let mut reopened = Vec::new();
    for (d, stored) in dirs.iter().zip(&stored) {
        let (log, report) = Log::open(d, small_config(), NOW).unwrap();
        assert!(report.clean_shutdown);
        let all: Vec<Vec<u8>> = read_all(&log).into_iter().map(|(_, b)| b).collect();
        assert_eq!(&all, stored);
        reopened.push(log);
    }
    assert!(open_fds() <= before + 200 + 10);
}

/// Opens 2,000 logs in new directories and prints the time per log.
/// `cargo test --release -p skein-log --test fds -- --ignored --nocapture`
#[test]
#[ignore]
fn bench_create_2000_logs() {
    let dir = tempfile::Builder::new()
        .tempdir_in(std::env::var("BENCH_DIR").unwrap_or_else(|_| ".".to_string()))
        .unwrap();
    let before = open_fds();
    let start = Instant::now();
    let mut logs = Vec::new();
    for p in 0..2000 {
        logs.push(
            Log::open(
                &dir.path().join(format!("t-{p}")),
                LogConfig::default(),
                NOW,
            )
            .unwrap()
            .0,
        );
    }
    let elapsed = start.elapsed();
    println!(
        "created 2000 logs in {:?} ({:?} per log), {} descriptors open",
        elapsed,
        elapsed / 2000,
        open_fds() - before
    );
    for log in logs {
        log.abandon();
    }
}
