//! Opening a log: finding its segments, checking indexes and recovering a torn tail.
//!
//! After a clean shutdown (the `.clean-shutdown` marker exists) no segment is scanned; only the
//! indexes are sanity-checked and the batches after the active segment's last index entry are
//! walked to find the log end offset. Otherwise every segment that may hold offsets at or after
//! the recovery point (and always the last one) is scanned from its start: headers, offset
//! contiguity and CRC32C are checked, indexes are rebuilt, and the first invalid batch is where
//! the log ends: the file is cut there and any later segments are deleted. Segments below the
//! recovery point are trusted; an inconsistent index there is rebuilt, and an invalid batch
//! there is reported as `Corrupt` rather than silently dropped.

use std::fmt;
use std::fs;
use std::path::Path;

use crate::checkpoint::{
    self, CLEAN_SHUTDOWN_FILE, HIGH_WATERMARK_FILE, LOG_START_OFFSET_FILE, RECOVERY_POINT_FILE,
};
use crate::config::LogConfig;
use crate::epoch::LeaderEpochCache;
use crate::error::{IoContext, LogError};
use crate::index::remove_if_exists;
use crate::log::{Log, Written};
use crate::segment::{self, Segment, INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX};
use crate::snapshot;
use crate::txn_index::{TxnIndexes, TXN_INDEX_SUFFIX};

/// What `Log::open` found and did, for the start-up log line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments in the log after opening.
    pub segments: usize,
    /// Whether the previous shutdown was clean (no scanning needed).
    pub clean_shutdown: bool,
    /// Segments scanned batch by batch (CRC checked).
    pub recovered_segments: usize,
    /// Bytes cut from the end of a segment because of a torn or corrupt batch.
    pub truncated_bytes: u64,
    /// Segments deleted because they followed the truncation point.
    pub deleted_segments: usize,
    /// Segments whose indexes were missing or inconsistent and were rebuilt.
    pub rebuilt_indexes: usize,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
    /// Human-readable notes on each problem found (torn batch, bad index, bad checkpoint).
    pub problems: Vec<String>,
}

impl RecoveryReport {
    /// Whether anything had to be repaired.
    pub fn repaired(&self) -> bool {
        self.truncated_bytes > 0 || self.deleted_segments > 0 || self.rebuilt_indexes > 0
    }
}

impl fmt::Display for RecoveryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} segment(s), offsets {}..{}, {} shutdown",
            self.segments,
            self.log_start_offset,
            self.log_end_offset,
            if self.clean_shutdown {
                "clean"
            } else {
                "unclean"
            }
        )?;
        if self.recovered_segments > 0 {
            write!(f, ", scanned {} segment(s)", self.recovered_segments)?;
        }
        if self.truncated_bytes > 0 {
            write!(f, ", truncated {} byte(s)", self.truncated_bytes)?;
        }
        if self.deleted_segments > 0 {
            write!(f, ", deleted {} later segment(s)", self.deleted_segments)?;
        }
        if self.rebuilt_indexes > 0 {
            write!(
                f,
                ", rebuilt indexes of {} segment(s)",
                self.rebuilt_indexes
            )?;
        }
        for p in &self.problems {
            write!(f, "; {p}")?;
        }
        Ok(())
    }
}

/// Parses `00000000000000000042.log` into 42.
pub(crate) fn parse_base_offset(name: &str, suffix: &str) -> Option<i64> {
    let stem = name.strip_suffix(suffix)?.strip_suffix('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// Reads a checkpoint, treating an unreadable one as missing (with a note): each checkpoint
/// can be derived again, at worst by scanning more.
fn read_checkpoint(dir: &Path, name: &str, report: &mut RecoveryReport) -> Option<i64> {
    match checkpoint::read_value(dir, name) {
        Ok(v) => v,
        Err(e) => {
            report.problems.push(format!("ignored {name}: {e}"));
            None
        }
    }
}

impl Log {
    /// Opens (creating if missing) the log in `dir`, recovering it if the last shutdown was
    /// not clean.
    pub fn open(
        dir: &Path,
        config: LogConfig,
        now_ms: i64,
    ) -> Result<(Log, RecoveryReport), LogError> {
        fs::create_dir_all(dir).at(dir)?;
        let mut report = RecoveryReport::default();
        // A new (or empty) directory holds nothing to recover or lose: the log is created
        // without any fsync, which is deferred to its first durable write.
        let mut fresh = true;

        // A cleaning interrupted by a crash: finish its committed swap, drop its unfinished
        // copy (`cleaner.rs`), before the segments are listed.
        crate::cleaner::recover_swaps(dir, &mut report)?;
        let mut bases = Vec::new();
        let mut index_files = Vec::new();
        let mut txn_index_files = Vec::new();
        let mut snapshots = Vec::new();
        for entry in fs::read_dir(dir).at(dir)? {
            let entry = entry.at(dir)?;
            fresh = false;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(".tmp") || name.ends_with(".deleted") {
                remove_if_exists(&entry.path()).at(&entry.path())?;
            } else if let Some(base) = parse_base_offset(name, LOG_SUFFIX) {
                bases.push(base);
            } else if let Some(offset) = parse_base_offset(name, snapshot::SNAPSHOT_SUFFIX) {
                snapshots.push(offset);
            } else if let Some(base) = parse_base_offset(name, INDEX_SUFFIX)
                .or_else(|| parse_base_offset(name, TIME_INDEX_SUFFIX))
            {
                index_files.push((base, entry.path()));
            } else if let Some(base) = parse_base_offset(name, TXN_INDEX_SUFFIX) {
                txn_index_files.push((base, entry.path()));
            }
        }
        bases.sort_unstable();
        // An aborted-transaction index inside the log's range without its segment was left
        // by a cleaner swap that merged that segment into an earlier one: its entries are
        // moved when the indexes load. One before the first segment is a leftover of a
        // deletion, like the other index files.
        let first_base = bases.first().copied().unwrap_or(i64::MAX);
        index_files.extend(txn_index_files.into_iter().filter(|(b, _)| *b < first_base));
        for (base, path) in index_files {
            if bases.binary_search(&base).is_err() {
                // Left behind by a deletion interrupted after removing the log file.
                remove_if_exists(&path).at(&path)?;
            }
        }

        let marker = dir.join(CLEAN_SHUTDOWN_FILE);
        // An empty directory has no marker or checkpoints to read.
        report.clean_shutdown = !fresh && marker.exists();
        if report.clean_shutdown {
            // The marker must be gone for good before anything is appended, or a later crash
            // would skip recovery.
            remove_if_exists(&marker).at(&marker)?;
            checkpoint::sync_dir(dir)?;
        }
        let mut read = |name| (!fresh).then(|| read_checkpoint(dir, name, &mut report))?;
        let recovery_point = read(RECOVERY_POINT_FILE);
        let start_checkpoint = read(LOG_START_OFFSET_FILE);
        let hw_checkpoint = read(HIGH_WATERMARK_FILE);
        let epochs_read = if fresh {
            Ok(Vec::new())
        } else {
            checkpoint::read_epochs(dir)
        };
        let epochs = match epochs_read {
            Ok(entries) => entries,
            Err(e) => {
                report.problems.push(format!("ignored leader epochs: {e}"));
                Vec::new()
            }
        };

        let interval = config.index_interval_bytes;
        let mut segments: Vec<Segment> = Vec::with_capacity(bases.len());
        for (i, &base) in bases.iter().enumerate() {
            let next_base = bases.get(i + 1).copied();
            let is_last = next_base.is_none();
            let (mut segment, index_problem) = Segment::open(dir, base)?;
            let needs_recovery = !report.clean_shutdown
                && (is_last || recovery_point.is_none_or(|rp| next_base.is_some_and(|nb| nb > rp)));
            let mut torn = None;
            if needs_recovery {
                report.recovered_segments += 1;
                let outcome = segment.rebuild(interval, true, true, now_ms)?;
                report.truncated_bytes += outcome.truncated_bytes;
                torn = outcome.problem;
                // A segment may end before the next one starts (compaction removed its last
                // offsets), never after it.
                if torn.is_none() && next_base.is_some_and(|nb| segment.next_offset() > nb) {
                    torn = Some(format!(
                        "ends at offset {} after the next segment's start {}",
                        segment.next_offset(),
                        next_base.unwrap_or_default()
                    ));
                }
            } else {
                let problem = match index_problem {
                    Some(p) => Some(p),
                    None => segment.load_from_indexes(next_base, now_ms)?,
                };
                if let Some(p) = problem {
                    report.rebuilt_indexes += 1;
                    report.problems.push(format!(
                        "{}: {p}; indexes rebuilt",
                        segment.path().display()
                    ));
                    // Only the active segment may have a torn tail to cut; below the recovery
                    // point an invalid batch is corruption.
                    let outcome = segment.rebuild(interval, is_last, is_last, now_ms)?;
                    report.truncated_bytes += outcome.truncated_bytes;
                    torn = outcome.problem;
                    if let Some(nb) = next_base.filter(|&nb| segment.next_offset() > nb) {
                        return Err(LogError::Corrupt {
                            path: segment.path().to_path_buf(),
                            position: segment.size(),
                            reason: format!(
                                "segment ends at offset {} but the next segment starts at {nb}",
                                segment.next_offset()
                            ),
                        });
                    }
                }
            }
            if torn.is_none() {
                if let Some(nb) = next_base {
                    segment.extend_next_offset(nb);
                }
            }
            let path = segment.path().to_path_buf();
            segments.push(segment);
            if let Some(problem) = torn {
                report.problems.push(format!(
                    "{}: {problem}; log truncated there",
                    path.display()
                ));
                for &later in &bases[i + 1..] {
                    for suffix in [
                        LOG_SUFFIX,
                        INDEX_SUFFIX,
                        TIME_INDEX_SUFFIX,
                        TXN_INDEX_SUFFIX,
                    ] {
                        let p = dir.join(segment::file_name(later, suffix));
                        remove_if_exists(&p).at(&p)?;
                    }
                    report.deleted_segments += 1;
                }
                checkpoint::sync_dir(dir)?;
                break;
            }
        }
        if segments.is_empty() {
            let base = start_checkpoint.unwrap_or(0).max(0);
            segments.push(Segment::create(dir, base)?);
            if !fresh {
                checkpoint::sync_dir(dir)?;
            }
        }
        // Only the active segment keeps its log file open; the others are opened per read.
        if let Some((_, inactive)) = segments.split_last_mut() {
            for segment in inactive {
                segment.release_handle();
            }
        }

        let first_base = segments[0].base_offset();
        let leo = segments.last().map_or(first_base, Segment::next_offset);
        let log_start_offset = start_checkpoint
            .unwrap_or(first_base)
            .max(first_base)
            .min(leo);
        let mut epochs = LeaderEpochCache::from_entries(epochs);
        let trimmed_end = epochs.truncate_from_end(leo);
        let trimmed_start = epochs.truncate_from_start(log_start_offset);
        if trimmed_end || trimmed_start {
            checkpoint::write_epochs(dir, epochs.entries())?;
        }
        let high_watermark = hw_checkpoint
            .unwrap_or(log_start_offset)
            .clamp(log_start_offset, leo);

        snapshots.sort_unstable();
        snapshot::delete_above(dir, &mut snapshots, leo)?;

        let segment_bases: Vec<i64> = segments.iter().map(Segment::base_offset).collect();
        let txn = TxnIndexes::load(dir, &segment_bases, leo, &mut report.problems)?;

        report.segments = segments.len();
        report.log_start_offset = log_start_offset;
        report.log_end_offset = leo;
        for p in &report.problems {
            tracing::warn!(dir = %dir.display(), "log recovery: {p}");
        }

        let mut log = Log {
            dir: dir.to_path_buf(),
            config,
            segments,
            log_start_offset,
            high_watermark,
            // Everything kept was either trusted, or scanned and fsynced just now.
            recovery_point: leo,
            epochs,
            // What the checkpoint files hold, so that unchanged values are not rewritten.
            written: Written {
                recovery_point,
                high_watermark: hw_checkpoint,
                log_start_offset: start_checkpoint,
            },
            closed: false,
            dir_durable: !fresh,
            snapshots,
            txn,
        };
        if !fresh {
            log.checkpoint()?;
        }
        Ok((log, report))
    }
}
