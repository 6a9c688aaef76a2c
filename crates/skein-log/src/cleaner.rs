//! Log compaction: keep the latest record of each key in the cleanable part of a log.
//!
//! The cleaner works like Kafka's: a pass over one log
//!
//! 1. decides the cleanable range ([`Log::cleanable_below`]): from the cleaner checkpoint (or
//!    the log start) up to the first uncleanable offset: never the active segment, never a
//!    segment reaching the last stable offset (the high watermark, or the first offset of the
//!    oldest open transaction when lower), never a segment holding a record younger than
//!    `min.compaction.lag.ms`;
//! 2. builds a key → last offset map over that dirty range ([`OffsetMap`], bounded: when it is
//!    full, the pass cleans up to where it got);
//! 3. rewrites every segment from the log start up to that point, in groups of consecutive
//!    segments that fit in one segment (`segment.bytes`), keeping a record unless a later
//!    record of its key is in the map, or it is a tombstone whose delete horizon has passed;
//! 4. swaps each cleaned group in ([`Log::install_cleaned`]), which is the only step that needs
//!    the partition's lock.
//!
//! **Batches.** A rewritten batch keeps its base offset, last offset delta (so its first and
//! last offset and sequence stay those of the original, as Kafka's v2 format requires for
//! producer state), producer id, epoch, base sequence, partition leader epoch and compression
//! codec (records are recompressed with the batch's own codec); the record count, max timestamp
//! (CreateTime), length and CRC are recomputed. A batch left without records is dropped,
//! unless it is the last batch of its idempotent producer in the range being cleaned: then an
//! empty batch with the same header fields is kept, so the producer's state survives a reload.
//!
//! **Tombstones** (a null value) are kept for `delete.retention.ms` after the pass that first
//! cleaned them (KIP-534): that pass sets the batch's delete-horizon flag (attribute bit 6)
//! and stores `now + delete.retention.ms` as the batch's base timestamp (record timestamp
//! deltas are re-based, so record timestamps do not change); a later pass drops the
//! tombstones of a batch whose horizon has passed. The earliest pending horizon is kept in the
//! cleaner checkpoint so that a log is cleaned again when it passes, even without new writes.
//!
//! **Transactions** (as Kafka's cleaner). Nothing at or past the last stable offset is cleaned,
//! so every transaction a pass sees has ended. The aborted transactions of the range come from
//! the aborted-transaction index: a transactional batch of producer P inside the span
//! `[first offset, ABORT marker]` of an aborted transaction of P is aborted data; it never
//! enters the offset map (it must not hide an older value) and is removed (kept empty when it
//! is P's last batch). Committed transactional records are compacted like any other record.
//! A marker stays while data of its transaction is left in the log (followed through the pass
//! in log order, group to group); once none is left it is removed like a tombstone (KIP-534):
//! the pass that finds it alone sets its delete horizon (`now + delete.retention.ms`, attribute
//! bit 6 and base timestamp), a pass after the horizon drops it. A marker that is its
//! producer's last batch is kept whatever its age. The index entry of an aborted transaction
//! without data left is dropped from the cleaned segment's `.txnindex`: after the swap when
//! the pass removed that data (the old segments still hold it), before the swap otherwise (the
//! swap may remove the marker, and a read_committed client given an entry whose marker is gone
//! would skip the producer's later committed batches).
//!
//! **Crash safety.** A group is written to `<base>.log.cleaned` and fsynced; under the lock the
//! group is checked to be unchanged and the file is renamed to `<base>.log.swap` (the commit
//! point, directory fsynced); then the replaced segments' indexes and other log files are
//! removed, the swap file is renamed over `<base>.log` and the aborted-transaction entries are
//! merged into `<base>.txnindex` (a crash before that leaves entries of transactions without
//! data whose markers are still there: harmless, the next pass drops them). [`recover_swaps`] (run by
//! `Log::open`) deletes `.cleaned` files and finishes any `.swap`: the segments whose base lies
//! in the swap file's offset range are removed and the swap file becomes the segment. Every
//! intermediate state holds either the old records or the cleaned ones, both correct.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::hash::{Hash, Hasher};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use skein_protocol::records::{self, Compression, BATCH_HEADER_LEN};

use crate::batch::{parse_header, BatchHeader};
use crate::checkpoint;
use crate::error::{IoContext, LogError};
use crate::index::remove_if_exists;
use crate::log::Log;
use crate::recovery::{parse_base_offset, RecoveryReport};
use crate::segment::{self, Segment, INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX};
use crate::txn_index::AbortedTxn;

/// The cleaner checkpoint file in a partition directory: version `0`, the offset the log is
/// cleaned up to, and the earliest pending tombstone delete horizon (-1 for none).
pub const CLEANER_CHECKPOINT_FILE: &str = "cleaner-offset-checkpoint";
/// Suffix (after `.log`) of a cleaned group being written.
pub(crate) const CLEANED_SUFFIX: &str = "log.cleaned";
/// Suffix (after `.log`) of a cleaned group committed to replace its segments.
pub(crate) const SWAP_SUFFIX: &str = "log.swap";
/// Attribute bit of a batch whose base timestamp is its tombstones' delete horizon (KIP-534).
pub const DELETE_HORIZON_FLAG: i16 = 0x40;
/// Bytes of offset map per key, as Kafka counts them (a 16-byte hash and an 8-byte offset).
pub const OFFSET_MAP_ENTRY_BYTES: usize = 24;
/// The most bytes one batch may decompress to while cleaning.
const DECOMPRESSED_MAX: usize = 256 * 1024 * 1024;

/// What the cleaner remembers about one log (the checkpoint file).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanerCheckpoint {
    /// Offsets below this were cleaned; 0 when never cleaned.
    pub cleaned_to: i64,
    /// The earliest delete horizon of a kept tombstone batch, if any.
    pub delete_horizon: Option<i64>,
}

impl CleanerCheckpoint {
    /// Reads the checkpoint of the log in `dir` (the default when missing or unreadable: the
    /// log is then cleaned from its start, which is only slower).
    pub fn read(dir: &Path) -> CleanerCheckpoint {
        let Ok(text) = fs::read_to_string(dir.join(CLEANER_CHECKPOINT_FILE)) else {
            return CleanerCheckpoint::default();
        };
        let mut lines = text.lines().map(str::trim);
        if lines.next() != Some("0") {
            return CleanerCheckpoint::default();
        }
        let cleaned_to = lines.next().and_then(|l| l.parse().ok()).unwrap_or(0);
        let delete_horizon = lines
            .next()
            .and_then(|l| l.parse::<i64>().ok())
            .filter(|h| *h >= 0);
        CleanerCheckpoint {
            cleaned_to,
            delete_horizon,
        }
    }

    /// Writes the checkpoint atomically.
    pub fn write(&self, dir: &Path) -> Result<(), LogError> {
        let content = format!(
            "0\n{}\n{}\n",
            self.cleaned_to,
            self.delete_horizon.unwrap_or(-1)
        );
        checkpoint::write_atomic(dir, CLEANER_CHECKPOINT_FILE, &content)
    }
}

/// A topic's compaction settings and the time of the pass.
#[derive(Debug, Clone, Copy)]
pub struct CleanParams {
    /// `min.cleanable.dirty.ratio`.
    pub min_cleanable_dirty_ratio: f64,
    /// `min.compaction.lag.ms`.
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`.
    pub max_compaction_lag_ms: i64,
    /// `delete.retention.ms`.
    pub delete_retention_ms: i64,
    pub now_ms: i64,
}

/// How dirty a log is ([`Log::cleanable`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cleanable {
    /// Where the dirty part starts.
    pub first_dirty: i64,
    /// Where the cleanable part ends (a segment base offset).
    pub first_uncleanable: i64,
    /// Bytes of the segments wholly below `first_dirty`.
    pub clean_bytes: u64,
    /// Bytes of the cleanable segments from the one holding `first_dirty`.
    pub dirty_bytes: u64,
    /// A dirty record is older than `max.compaction.lag.ms`.
    pub overdue: bool,
    /// A kept tombstone's delete horizon has passed.
    pub horizon_passed: bool,
}

impl Cleanable {
    /// `dirty / (clean + dirty)`.
    pub fn ratio(&self) -> f64 {
        let total = self.clean_bytes + self.dirty_bytes;
        if total == 0 {
            0.0
        } else {
            self.dirty_bytes as f64 / total as f64
        }
    }

    /// Whether the log should be cleaned now.
    pub fn should_clean(&self, params: &CleanParams) -> bool {
        let any_dirty = self.dirty_bytes > 0 && self.first_uncleanable > self.first_dirty;
        (any_dirty && (self.ratio() >= params.min_cleanable_dirty_ratio || self.overdue))
            || (self.horizon_passed && self.first_uncleanable > 0)
    }
}

/// One segment as the cleaner sees it, read by path without the partition lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    pub base_offset: i64,
    /// The next segment's base offset.
    pub end_offset: i64,
    pub size: u64,
    pub path: PathBuf,
}

/// The segments a pass may read and rewrite: from the log start up to the first uncleanable
/// offset (taken under the lock; the segments are not active, so they do not change except
/// by deletion, which [`Log::install_cleaned`] notices).
#[derive(Debug, Clone)]
pub struct CleanJob {
    pub dir: PathBuf,
    pub segments: Vec<SegmentInfo>,
    pub first_dirty: i64,
    pub first_uncleanable: i64,
    /// `segment.bytes`: the largest a cleaned group may be.
    pub segment_bytes: u64,
    /// The aborted transactions that start below `first_uncleanable` (from the
    /// aborted-transaction index): their transactional batches are removed.
    pub aborted: Vec<AbortedTxn>,
}

/// A cleaned group written to its `.cleaned` file, waiting to be swapped in.
#[derive(Debug, Clone)]
pub struct CleanedGroup {
    /// The segments it replaces (their base offsets and sizes when read).
    pub replaces: Vec<SegmentInfo>,
    pub cleaned_path: PathBuf,
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// The earliest delete horizon of a tombstone batch or marker kept in it.
    pub delete_horizon: Option<i64>,
    /// The markers in it whose transaction has no data left after this pass: their
    /// aborted-transaction entries (if any) go from the index.
    pub finished_txns: Vec<FinishedTxn>,
}

/// A transaction whose marker a cleaned group holds (or removed) and none of whose data
/// batches is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FinishedTxn {
    pub producer_id: i64,
    /// The offset of its marker.
    pub marker_offset: i64,
    /// Whether the pass removed data of it. If not, the old segments hold none either, so its
    /// index entry may go before the swap (and must, when the marker goes with the swap: a
    /// read_committed client given an aborted transaction whose marker is gone would skip the
    /// producer's later committed batches). If so, the entry goes only once the cleaned
    /// segment is in (the old segments still hold the aborted records).
    pub data_removed: bool,
}

/// What a pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanStats {
    /// The new `cleaned_to` (the checkpoint to write).
    pub cleaned_to: i64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub groups_swapped: usize,
    /// Groups not swapped because the log changed meanwhile.
    pub groups_abandoned: usize,
    pub records_removed: u64,
    pub delete_horizon: Option<i64>,
}

impl Log {
    /// How dirty this log is, from the cleaner checkpoint (the caller knows the log is
    /// compacted).
    pub fn cleanable(&self, checkpoint: &CleanerCheckpoint, params: &CleanParams) -> Cleanable {
        self.cleanable_below(checkpoint, params, i64::MAX)
    }

    /// Like [`Log::cleanable`], for a partition whose last stable offset is
    /// `last_stable_offset` (the first offset of its oldest open transaction, or its high
    /// watermark): a segment reaching it is not cleanable, so a pass never sees a transaction
    /// whose outcome is unknown.
    pub fn cleanable_below(
        &self,
        checkpoint: &CleanerCheckpoint,
        params: &CleanParams,
        last_stable_offset: i64,
    ) -> Cleanable {
        let upper = self.high_watermark.min(last_stable_offset);
        let log_start = self.log_start_offset;
        let mut first_dirty = checkpoint.cleaned_to.max(log_start);
        if first_dirty > self.log_end_offset() {
            // The log was truncated below the checkpoint: start again from its start.
            first_dirty = log_start;
        }
        let lag_limit = params.now_ms.saturating_sub(params.min_compaction_lag_ms);
        let overdue_limit = params.now_ms.saturating_sub(params.max_compaction_lag_ms);
        let mut first_uncleanable = self.active().base_offset();
        let mut clean_bytes = 0;
        let mut dirty_bytes = 0;
        let mut overdue = false;
        let inactive = &self.segments[..self.segments.len() - 1];
        for (i, seg) in inactive.iter().enumerate() {
            let end = self.segments[i + 1].base_offset();
            if end <= first_dirty {
                clean_bytes += seg.size();
                continue;
            }
            let too_young = seg.max_timestamp().is_some_and(|m| m.timestamp > lag_limit);
            if end > upper || too_young {
                first_uncleanable = seg.base_offset();
                break;
            }
            if seg.roll_base_ms().is_some_and(|t| t < overdue_limit)
                || seg
                    .max_timestamp()
                    .is_some_and(|m| m.timestamp < overdue_limit)
            {
                overdue = true;
            }
            dirty_bytes += seg.size();
        }
        Cleanable {
            first_dirty: first_dirty.min(first_uncleanable),
            first_uncleanable,
            clean_bytes,
            dirty_bytes,
            overdue: overdue && params.max_compaction_lag_ms < i64::MAX,
            horizon_passed: checkpoint
                .delete_horizon
                .is_some_and(|h| h <= params.now_ms),
        }
    }

    /// The segments a pass over `cleanable` reads: every one from the log start below its
    /// first uncleanable offset.
    pub fn clean_job(&self, cleanable: &Cleanable) -> CleanJob {
        let mut segments = Vec::new();
        for (i, seg) in self.segments[..self.segments.len() - 1].iter().enumerate() {
            let end = self.segments[i + 1].base_offset();
            if seg.base_offset() >= cleanable.first_uncleanable {
                break;
            }
            segments.push(SegmentInfo {
                base_offset: seg.base_offset(),
                end_offset: end,
                size: seg.size(),
                path: seg.path().to_path_buf(),
            });
        }
        let aborted = self
            .all_aborted_txns()
            .into_iter()
            .filter(|t| t.first_offset < cleanable.first_uncleanable)
            .collect();
        CleanJob {
            dir: self.dir.clone(),
            segments,
            first_dirty: cleanable.first_dirty,
            first_uncleanable: cleanable.first_uncleanable,
            segment_bytes: self.config.segment_bytes.min(i32::MAX as u64),
            aborted,
        }
    }

    /// Swaps a cleaned group in for the segments it replaces, if they are still there and
    /// unchanged (else its file is deleted and `false` returned). Holds the caller's lock
    /// for a rename, a few deletions, two directory fsyncs and the new segment's index
    /// rebuild.
    pub fn install_cleaned(&mut self, group: CleanedGroup, now_ms: i64) -> Result<bool, LogError> {
        let mut unlimited = usize::MAX;
        self.install_cleaned_inner(group, now_ms, &mut unlimited)
    }

    /// For crash tests: like [`Log::install_cleaned`], but stops (with an error, the
    /// in-memory log left stale: abandon it) before the file operation number `crash_after`
    /// (0 = before renaming the cleaned file). Returns `Ok` when it got through.
    #[doc(hidden)]
    pub fn install_cleaned_crashing(
        &mut self,
        group: CleanedGroup,
        now_ms: i64,
        crash_after: usize,
    ) -> Result<bool, LogError> {
        let mut budget = crash_after;
        self.install_cleaned_inner(group, now_ms, &mut budget)
    }

    fn install_cleaned_inner(
        &mut self,
        group: CleanedGroup,
        now_ms: i64,
        budget: &mut usize,
    ) -> Result<bool, LogError> {
        let Some(first) = group.replaces.first() else {
            remove_if_exists(&group.cleaned_path).at(&group.cleaned_path)?;
            return Ok(false);
        };
        let start = self
            .segments
            .iter()
            .position(|s| s.base_offset() == first.base_offset);
        let n = group.replaces.len();
        let unchanged = start.is_some_and(|i| {
            i + n < self.segments.len()
                && self.segments[i..i + n]
                    .iter()
                    .zip(&group.replaces)
                    .all(|(s, r)| s.base_offset() == r.base_offset && s.size() == r.size)
                && self.segments[i + n].base_offset()
                    == group.replaces.last().map_or(0, |r| r.end_offset)
        });
        let (true, Some(i)) = (unchanged, start) else {
            remove_if_exists(&group.cleaned_path).at(&group.cleaned_path)?;
            return Ok(false);
        };
        let base = first.base_offset;
        let swap = self.dir.join(segment::file_name(base, SWAP_SUFFIX));
        let bases: Vec<i64> = group.replaces.iter().map(|r| r.base_offset).collect();
        // Entries of transactions with no data in the old segments either go first: the
        // swap may remove their markers.
        let early: Vec<(i64, i64)> = group
            .finished_txns
            .iter()
            .filter(|f| !f.data_removed)
            .map(|f| (f.producer_id, f.marker_offset))
            .collect();
        if self.txn.has_any(&bases, &early) {
            step(budget)?;
            self.txn.drop_entries(&self.dir, &bases, &early)?;
        }
        step(budget)?;
        fs::rename(&group.cleaned_path, &swap).at(&swap)?;
        checkpoint::sync_dir(&self.dir)?;
        finish_swap(&self.dir, base, &bases, budget)?;
        // The aborted-transaction entries of the merged segments now belong to `base`, less
        // those of transactions without data left. A crash before this leaves extra entries
        // whose markers are still in the log, which read_committed clients ignore.
        let all: Vec<(i64, i64)> = group
            .finished_txns
            .iter()
            .map(|f| (f.producer_id, f.marker_offset))
            .collect();
        self.txn
            .merge_segments(&self.dir, base, &bases[1..], &all)?;
        let (mut segment, _) = Segment::open(&self.dir, base)?;
        segment.rebuild(self.config.index_interval_bytes, false, false, now_ms)?;
        segment.extend_next_offset(self.segments[i + n].base_offset());
        segment.release_handle();
        self.segments.splice(i..i + n, [segment]);
        Ok(true)
    }
}

/// Replaces segments `bases` (ascending, `bases[0] == base`) by the committed swap file of
/// `base`: their index files and other log files go, then the swap file is renamed over
/// `<base>.log`.
fn finish_swap(dir: &Path, base: i64, bases: &[i64], budget: &mut usize) -> Result<(), LogError> {
    for &b in bases {
        let suffixes: &[&str] = if b == base {
            &[INDEX_SUFFIX, TIME_INDEX_SUFFIX]
        } else {
            &[LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX]
        };
        for suffix in suffixes {
            let p = dir.join(segment::file_name(b, suffix));
            step(budget)?;
            remove_if_exists(&p).at(&p)?;
        }
    }
    let swap = dir.join(segment::file_name(base, SWAP_SUFFIX));
    let log = dir.join(segment::file_name(base, LOG_SUFFIX));
    step(budget)?;
    fs::rename(&swap, &log).at(&log)?;
    checkpoint::sync_dir(dir)
}

/// Counts one file operation of a swap; fails once the crash-test budget is spent.
fn step(budget: &mut usize) -> Result<(), LogError> {
    if *budget == 0 {
        return Err(LogError::Io(std::io::Error::other("simulated crash")));
    }
    *budget -= 1;
    Ok(())
}

/// Finishes what a crash interrupted (called by `Log::open` before listing segments): removes
/// unfinished `.cleaned` files and completes each committed `.swap`.
pub(crate) fn recover_swaps(dir: &Path, report: &mut RecoveryReport) -> Result<(), LogError> {
    let mut swaps = Vec::new();
    let mut logs = Vec::new();
    let mut changed = false;
    for entry in fs::read_dir(dir).at(dir)? {
        let entry = entry.at(dir)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if parse_base_offset(name, CLEANED_SUFFIX).is_some() {
            remove_if_exists(&entry.path()).at(&entry.path())?;
            changed = true;
        } else if let Some(base) = parse_base_offset(name, SWAP_SUFFIX) {
            swaps.push(base);
        } else if let Some(base) = parse_base_offset(name, LOG_SUFFIX) {
            logs.push(base);
        }
    }
    swaps.sort_unstable();
    for base in swaps {
        let swap = dir.join(segment::file_name(base, SWAP_SUFFIX));
        let end = swap_end_offset(&swap)?.unwrap_or(base);
        let mut bases: Vec<i64> = logs
            .iter()
            .copied()
            .filter(|&b| b > base && b < end)
            .collect();
        bases.insert(0, base);
        let mut unlimited = usize::MAX;
        finish_swap(dir, base, &bases, &mut unlimited)?;
        logs.retain(|b| !bases[1..].contains(b));
        report.problems.push(format!(
            "finished an interrupted cleaner swap of segment {base} (offsets up to {end})"
        ));
        changed = true;
    }
    if changed {
        checkpoint::sync_dir(dir)?;
    }
    Ok(())
}

/// The offset after the last whole batch of a swap file.
fn swap_end_offset(path: &Path) -> Result<Option<i64>, LogError> {
    let file = File::open(path).at(path)?;
    let mut reader = BatchReader::new(file, path);
    let mut end = None;
    while let Some(batch) = reader.next_batch()? {
        end = Some(batch.0.last_offset() + 1);
    }
    Ok(end)
}

/// Reads whole batches from a segment file in order.
struct BatchReader<'a> {
    reader: BufReader<File>,
    path: &'a Path,
    bytes: u64,
}

impl<'a> BatchReader<'a> {
    fn new(file: File, path: &'a Path) -> Self {
        BatchReader {
            reader: BufReader::with_capacity(1 << 20, file),
            path,
            bytes: 0,
        }
    }

    /// The next batch, `None` at the end of the file (or at a torn tail, which only the
    /// active segment may have and the cleaner never reads).
    fn next_batch(&mut self) -> Result<Option<(BatchHeader, Vec<u8>)>, LogError> {
        let mut head = [0u8; BATCH_HEADER_LEN];
        let mut got = 0;
        while got < head.len() {
            let n = self.reader.read(&mut head[got..]).at(self.path)?;
            if n == 0 {
                return Ok(None);
            }
            got += n;
        }
        let Ok(header) = parse_header(&head) else {
            return Ok(None);
        };
        let mut batch = vec![0u8; header.total_len()];
        batch[..BATCH_HEADER_LEN].copy_from_slice(&head);
        if self
            .reader
            .read_exact(&mut batch[BATCH_HEADER_LEN..])
            .is_err()
        {
            return Ok(None);
        }
        self.bytes += batch.len() as u64;
        Ok(Some((header, batch)))
    }
}

/// A key → latest offset map with a bounded number of entries. Keys are kept as 128-bit
/// hashes (like Kafka's MD5), so the memory is bounded whatever the key sizes.
#[derive(Debug)]
pub struct OffsetMap {
    map: HashMap<u128, i64>,
    capacity: usize,
}

impl OffsetMap {
    /// A map for `buffer_bytes` of dedupe buffer at Kafka's 24 bytes per entry and a load
    /// factor of `load_factor`.
    pub fn with_buffer(buffer_bytes: usize, load_factor: f64) -> OffsetMap {
        let slots = buffer_bytes / OFFSET_MAP_ENTRY_BYTES;
        let capacity = ((slots as f64) * load_factor.clamp(0.1, 1.0)) as usize;
        OffsetMap::with_capacity(capacity.max(1))
    }

    /// A map holding at most `capacity` keys.
    pub fn with_capacity(capacity: usize) -> OffsetMap {
        OffsetMap {
            map: HashMap::with_capacity(capacity.min(1 << 20)),
            capacity: capacity.max(1),
        }
    }

    fn hash(key: &[u8]) -> u128 {
        let half = |salt: u8| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            salt.hash(&mut h);
            key.hash(&mut h);
            h.finish()
        };
        (u128::from(half(1)) << 64) | u128::from(half(2))
    }

    /// Records `offset` for `key`; `false` (nothing recorded) when the map is full and the key
    /// is new.
    pub fn put(&mut self, key: &[u8], offset: i64) -> bool {
        let h = Self::hash(key);
        if let Some(o) = self.map.get_mut(&h) {
            *o = (*o).max(offset);
            return true;
        }
        if self.map.len() >= self.capacity {
            return false;
        }
        self.map.insert(h, offset);
        true
    }

    /// The latest offset recorded for `key`.
    pub fn get(&self, key: &[u8]) -> Option<i64> {
        self.map.get(&Self::hash(key)).copied()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// One record of a decoded records section: its raw bytes (without the length prefix) and
/// the fields the cleaner looks at.
struct RawRecord<'a> {
    /// From the attributes byte to the end of the record.
    raw: &'a [u8],
    /// Where the offset delta starts in `raw` (after attributes and timestamp delta).
    after_timestamp: usize,
    timestamp_delta: i64,
    offset_delta: i32,
    key: Option<&'a [u8]>,
    value_is_null: bool,
}

fn read_varlong(buf: &[u8], pos: &mut usize) -> Result<i64, String> {
    let mut value: u64 = 0;
    for shift in (0..64).step_by(7) {
        let Some(&b) = buf.get(*pos) else {
            return Err("truncated varint".to_string());
        };
        *pos += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(((value >> 1) as i64) ^ -((value & 1) as i64));
        }
    }
    Err("varint too long".to_string())
}

fn write_varlong(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn parse_records(body: &[u8], count: i32) -> Result<Vec<RawRecord<'_>>, String> {
    let mut out = Vec::with_capacity((count.max(0) as usize).min(body.len() / 7 + 1));
    let mut pos = 0;
    for _ in 0..count.max(0) {
        let len = read_varlong(body, &mut pos)?;
        let len = usize::try_from(len).map_err(|_| "negative record length".to_string())?;
        let raw = body
            .get(pos..pos + len)
            .ok_or_else(|| "record runs past the batch".to_string())?;
        pos += len;
        let mut p = 1;
        let timestamp_delta = read_varlong(raw, &mut p)?;
        let after_timestamp = p;
        let offset_delta = read_varlong(raw, &mut p)? as i32;
        let klen = read_varlong(raw, &mut p)?;
        let key = if klen < 0 {
            None
        } else {
            let k = raw
                .get(p..p + klen as usize)
                .ok_or_else(|| "key runs past the record".to_string())?;
            p += klen as usize;
            Some(k)
        };
        let vlen = read_varlong(raw, &mut p)?;
        out.push(RawRecord {
            raw,
            after_timestamp,
            timestamp_delta,
            offset_delta,
            key,
            value_is_null: vlen < 0,
        });
    }
    Ok(out)
}

fn corrupt(path: &Path, reason: String) -> LogError {
    LogError::Corrupt {
        path: path.to_path_buf(),
        position: 0,
        reason,
    }
}

/// The aborted transactions of a pass by producer: `(first offset, marker offset)` spans,
/// ascending (a producer has one transaction at a time, so they do not overlap).
struct AbortedSpans(HashMap<i64, Vec<(i64, i64)>>);

impl AbortedSpans {
    fn new(txns: &[AbortedTxn]) -> AbortedSpans {
        let mut by_producer: HashMap<i64, Vec<(i64, i64)>> = HashMap::new();
        for t in txns {
            by_producer
                .entry(t.producer_id)
                .or_default()
                .push((t.first_offset, t.last_offset));
        }
        for spans in by_producer.values_mut() {
            spans.sort_unstable();
        }
        AbortedSpans(by_producer)
    }

    /// Whether `h` is a data batch of an aborted transaction: transactional, of a producer
    /// with an aborted transaction spanning it.
    fn holds(&self, h: &BatchHeader) -> bool {
        if h.is_control() || !h.is_transactional() {
            return false;
        }
        let Some(spans) = self.0.get(&h.producer_id) else {
            return false;
        };
        let i = spans.partition_point(|s| s.0 <= h.base_offset);
        i > 0 && h.last_offset() <= spans[i - 1].1
    }
}

/// Which transactions of a pass still have data (Kafka's cleaned transaction metadata):
/// a producer's transactional batches seen since its last marker, and whether any was kept.
#[derive(Default)]
struct TxnTracker {
    open: HashMap<i64, bool>,
}

impl TxnTracker {
    fn on_data(&mut self, producer_id: i64, kept: bool) {
        *self.open.entry(producer_id).or_insert(false) |= kept;
    }

    /// The marker of `producer_id`'s transaction: `Some(kept)` if data of it was seen.
    fn on_marker(&mut self, producer_id: i64) -> Option<bool> {
        self.open.remove(&producer_id)
    }
}

/// Builds the offset map over the dirty range `[first_dirty, first_uncleanable)` of `job`.
/// Returns the offset the map covers up to (exclusive): `first_uncleanable`, or less when the
/// map filled up.
pub fn build_offset_map(
    job: &CleanJob,
    map: &mut OffsetMap,
    io: &mut dyn FnMut(u64),
) -> Result<i64, LogError> {
    let aborted = AbortedSpans::new(&job.aborted);
    for seg in &job.segments {
        if seg.end_offset <= job.first_dirty {
            continue;
        }
        let file = File::open(&seg.path).at(&seg.path)?;
        let mut reader = BatchReader::new(file, &seg.path);
        while let Some((h, batch)) = reader.next_batch()? {
            io(batch.len() as u64);
            // Markers hold no keys; aborted records must not hide older values. Committed
            // transactional records count like any other.
            if h.last_offset() < job.first_dirty || h.is_control() || aborted.holds(&h) {
                continue;
            }
            if h.base_offset >= job.first_uncleanable {
                return Ok(job.first_uncleanable);
            }
            let body = records::records_section(&batch, DECOMPRESSED_MAX)
                .map_err(|e| corrupt(&seg.path, e.to_string()))?;
            let recs = parse_records(&body, h.records_count).map_err(|e| corrupt(&seg.path, e))?;
            for r in recs {
                let offset = h.base_offset + i64::from(r.offset_delta);
                if offset < job.first_dirty || offset >= job.first_uncleanable {
                    continue;
                }
                if let Some(key) = r.key {
                    if !map.put(key, offset) {
                        return Ok(offset);
                    }
                }
            }
        }
    }
    Ok(job.first_uncleanable)
}

/// Groups the segments below `end_offset` into runs that fit in one segment.
pub fn group_segments(job: &CleanJob, end_offset: i64) -> Vec<Vec<SegmentInfo>> {
    let mut groups: Vec<Vec<SegmentInfo>> = Vec::new();
    let mut size = 0u64;
    for seg in job.segments.iter().filter(|s| s.base_offset < end_offset) {
        let fits = groups.last().is_some_and(|g| {
            size + seg.size <= job.segment_bytes
                && seg.end_offset - g[0].base_offset <= i64::from(i32::MAX)
        });
        if fits {
            size += seg.size;
            if let Some(g) = groups.last_mut() {
                g.push(seg.clone());
            }
        } else {
            size = seg.size;
            groups.push(vec![seg.clone()]);
        }
    }
    groups
}

/// The last batch (its base offset) of each idempotent producer among `segments`: such a
/// batch is kept even when cleaning empties it.
fn last_batches_of_producers(
    segments: &[SegmentInfo],
    io: &mut dyn FnMut(u64),
) -> Result<HashMap<i64, i64>, LogError> {
    let mut last = HashMap::new();
    for seg in segments {
        let file = File::open(&seg.path).at(&seg.path)?;
        let mut reader = BatchReader::new(file, &seg.path);
        while let Some((h, batch)) = reader.next_batch()? {
            io(batch.len() as u64);
            if h.producer_id >= 0 {
                last.insert(h.producer_id, h.base_offset);
            }
        }
    }
    Ok(last)
}

/// The result of cleaning one batch.
enum Cleaned {
    Unchanged,
    Dropped,
    Rewritten(Vec<u8>),
}

/// Folds a kept delete horizon into the earliest one.
fn note_horizon(out: &mut Option<i64>, t: i64) {
    *out = Some(out.map_or(t, |o| o.min(t)));
}

/// Cleans one control batch (a transaction marker). `keep`: its transaction still has data,
/// or it is its producer's last batch. Otherwise it is removed like a tombstone (KIP-534, as
/// Kafka does for markers): the first pass that finds it alone sets its delete horizon
/// (`now + delete.retention.ms`), a pass after the horizon drops it. `data_removed`: this
/// pass removed the last data of its transaction, so the marker stays at least until the
/// horizon set now.
#[allow(clippy::too_many_arguments)]
fn clean_marker(
    h: &BatchHeader,
    batch: &[u8],
    params: &CleanParams,
    keep: bool,
    data_removed: bool,
    removed: &mut u64,
    horizon_out: &mut Option<i64>,
    path: &Path,
) -> Result<Cleaned, LogError> {
    if h.records_count <= 0 {
        // An empty control batch marks nothing.
        return Ok(if keep {
            Cleaned::Unchanged
        } else {
            Cleaned::Dropped
        });
    }
    if keep {
        return Ok(Cleaned::Unchanged);
    }
    let body = records::records_section(batch, DECOMPRESSED_MAX)
        .map_err(|e| corrupt(path, e.to_string()))?;
    let recs = parse_records(&body, h.records_count).map_err(|e| corrupt(path, e))?;
    let is_marker = recs
        .first()
        .and_then(|r| r.key)
        .is_some_and(|k| k.len() >= 4 && matches!(i16::from_be_bytes([k[2], k[3]]), 0 | 1));
    if !is_marker {
        // Not a control type the cleaner knows: kept, as Kafka does.
        return Ok(Cleaned::Unchanged);
    }
    if h.attributes & DELETE_HORIZON_FLAG != 0 {
        let t = h.base_timestamp;
        if t <= params.now_ms && !data_removed {
            *removed += recs.len() as u64;
            return Ok(Cleaned::Dropped);
        }
        note_horizon(horizon_out, t);
        return Ok(Cleaned::Unchanged);
    }
    let t = params.now_ms.saturating_add(params.delete_retention_ms);
    note_horizon(horizon_out, t);
    let kept: Vec<&RawRecord> = recs.iter().collect();
    Ok(Cleaned::Rewritten(rebuild_batch(h, &kept, Some(t))))
}

/// Cleans one data batch: keeps a record unless the map holds a later offset for its key, it
/// is a tombstone whose delete horizon has passed, or the batch belongs to an aborted
/// transaction (`aborted`: every record goes).
#[allow(clippy::too_many_arguments)]
fn clean_batch(
    h: &BatchHeader,
    batch: &[u8],
    map: &OffsetMap,
    params: &CleanParams,
    aborted: bool,
    keep_if_empty: bool,
    removed: &mut u64,
    horizon_out: &mut Option<i64>,
    path: &Path,
) -> Result<Cleaned, LogError> {
    if aborted {
        if !keep_if_empty {
            *removed += h.records_count.max(0) as u64;
            return Ok(Cleaned::Dropped);
        }
        if h.records_count <= 0 {
            return Ok(Cleaned::Unchanged);
        }
    }
    let body = records::records_section(batch, DECOMPRESSED_MAX)
        .map_err(|e| corrupt(path, e.to_string()))?;
    let recs = parse_records(&body, h.records_count).map_err(|e| corrupt(path, e))?;
    let horizon = (h.attributes & DELETE_HORIZON_FLAG != 0).then_some(h.base_timestamp);
    let mut kept = Vec::with_capacity(recs.len());
    let mut tombstones = false;
    for r in &recs {
        let offset = h.base_offset + i64::from(r.offset_delta);
        let superseded = r
            .key
            .and_then(|k| map.get(k))
            .is_some_and(|latest| offset < latest);
        let expired_tombstone = r.value_is_null && horizon.is_some_and(|t| t <= params.now_ms);
        if aborted || superseded || expired_tombstone {
            continue;
        }
        tombstones |= r.value_is_null;
        kept.push(r);
    }
    *removed += (recs.len() - kept.len()) as u64;
    let new_horizon = match horizon {
        Some(t) => Some(t),
        None if tombstones => Some(params.now_ms.saturating_add(params.delete_retention_ms)),
        None => None,
    };
    if tombstones {
        if let Some(t) = new_horizon {
            note_horizon(horizon_out, t);
        }
    }
    if kept.len() == recs.len() && (horizon.is_some() || !tombstones) {
        return Ok(Cleaned::Unchanged);
    }
    if kept.is_empty() && !keep_if_empty {
        return Ok(Cleaned::Dropped);
    }
    let set_horizon = if horizon.is_none() && tombstones {
        new_horizon
    } else {
        None
    };
    Ok(Cleaned::Rewritten(rebuild_batch(h, &kept, set_horizon)))
}

/// Writes batch `h` anew holding only `kept` of its records (the same header fields, an empty
/// uncompressed batch when none), with `set_horizon` as its delete horizon if given (record
/// timestamps unchanged).
fn rebuild_batch(h: &BatchHeader, kept: &[&RawRecord], set_horizon: Option<i64>) -> Vec<u8> {
    let base_timestamp = set_horizon.unwrap_or(h.base_timestamp);
    let mut section = Vec::with_capacity(kept.iter().map(|r| r.raw.len() + 5).sum());
    let mut max_ts = i64::MIN;
    let mut rec = Vec::new();
    for r in kept {
        let ts = h.base_timestamp.saturating_add(r.timestamp_delta);
        max_ts = max_ts.max(ts);
        rec.clear();
        rec.push(r.raw[0]);
        write_varlong(&mut rec, ts.saturating_sub(base_timestamp));
        rec.extend_from_slice(&r.raw[r.after_timestamp..]);
        write_varlong(&mut section, rec.len() as i64);
        section.extend_from_slice(&rec);
    }
    let codec = h.compression();
    let (attributes, records_bytes) = if kept.is_empty() {
        // Kafka's empty batch: no records, uncompressed.
        (h.attributes & !0x07, Vec::new())
    } else if codec == Compression::None {
        (h.attributes, section)
    } else {
        (
            h.attributes,
            skein_protocol::compression::compress(codec, &section),
        )
    };
    let attributes = if set_horizon.is_some() {
        attributes | DELETE_HORIZON_FLAG
    } else {
        attributes
    };
    let max_timestamp = if h.is_log_append_time() || kept.is_empty() {
        h.max_timestamp
    } else {
        max_ts
    };
    let total = BATCH_HEADER_LEN + records_bytes.len();
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&h.base_offset.to_be_bytes());
    out.extend_from_slice(&((total - 12) as i32).to_be_bytes());
    out.extend_from_slice(&h.partition_leader_epoch.to_be_bytes());
    out.push(h.magic as u8);
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&attributes.to_be_bytes());
    out.extend_from_slice(&h.last_offset_delta.to_be_bytes());
    out.extend_from_slice(&base_timestamp.to_be_bytes());
    out.extend_from_slice(&max_timestamp.to_be_bytes());
    out.extend_from_slice(&h.producer_id.to_be_bytes());
    out.extend_from_slice(&h.producer_epoch.to_be_bytes());
    out.extend_from_slice(&h.base_sequence.to_be_bytes());
    out.extend_from_slice(&(kept.len() as i32).to_be_bytes());
    out.extend_from_slice(&records_bytes);
    let crc = records::compute_crc(&out);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    out
}

/// Writes the cleaned copy of one group to `<base>.log.cleaned` (fsynced).
#[allow(clippy::too_many_arguments)]
fn clean_group(
    job: &CleanJob,
    group: &[SegmentInfo],
    map: &OffsetMap,
    params: &CleanParams,
    last_of_producer: &HashMap<i64, i64>,
    txns: &mut PassTxns,
    stats: &mut CleanStats,
    io: &mut dyn FnMut(u64),
) -> Result<CleanedGroup, LogError> {
    let base = group[0].base_offset;
    let cleaned_path = job.dir.join(segment::file_name(base, CLEANED_SUFFIX));
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&cleaned_path)
        .at(&cleaned_path)?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut written = 0u64;
    let mut read = 0u64;
    let mut horizon = None;
    let mut finished_txns = Vec::new();
    for seg in group {
        let file = File::open(&seg.path).at(&seg.path)?;
        let mut reader = BatchReader::new(file, &seg.path);
        while let Some((h, batch)) = reader.next_batch()? {
            io(batch.len() as u64);
            read += batch.len() as u64;
            let keep_if_empty =
                h.producer_id >= 0 && last_of_producer.get(&h.producer_id) == Some(&h.base_offset);
            let cleaned = if h.is_control() {
                let seen = txns.tracker.on_marker(h.producer_id);
                let data_kept = seen == Some(true);
                if !data_kept {
                    finished_txns.push(FinishedTxn {
                        producer_id: h.producer_id,
                        marker_offset: h.base_offset,
                        data_removed: seen.is_some(),
                    });
                }
                clean_marker(
                    &h,
                    &batch,
                    params,
                    data_kept || keep_if_empty,
                    seen.is_some(),
                    &mut stats.records_removed,
                    &mut horizon,
                    &seg.path,
                )?
            } else {
                let cleaned = clean_batch(
                    &h,
                    &batch,
                    map,
                    params,
                    txns.aborted.holds(&h),
                    keep_if_empty,
                    &mut stats.records_removed,
                    &mut horizon,
                    &seg.path,
                )?;
                if h.is_transactional() && h.producer_id >= 0 {
                    txns.tracker
                        .on_data(h.producer_id, !matches!(cleaned, Cleaned::Dropped));
                }
                cleaned
            };
            let bytes: &[u8] = match &cleaned {
                Cleaned::Unchanged => &batch,
                Cleaned::Dropped => continue,
                Cleaned::Rewritten(b) => b,
            };
            out.write_all(bytes).at(&cleaned_path)?;
            io(bytes.len() as u64);
            written += bytes.len() as u64;
        }
    }
    let file = out.into_inner().map_err(|e| LogError::File {
        path: cleaned_path.clone(),
        source: e.into_error(),
    })?;
    file.sync_all().at(&cleaned_path)?;
    Ok(CleanedGroup {
        replaces: group.to_vec(),
        cleaned_path,
        bytes_read: read,
        bytes_written: written,
        delete_horizon: horizon,
        finished_txns,
    })
}

/// The transactional state of one pass, carried from group to group in log order.
struct PassTxns {
    aborted: AbortedSpans,
    tracker: TxnTracker,
}

/// Runs one pass over `job` with `map` (empty; reused by the caller): builds the map, cleans
/// each group and hands it to `install` (which takes the partition lock and calls
/// [`Log::install_cleaned`]). `io` is told every byte read or written (the I/O throttle).
pub fn clean(
    job: &CleanJob,
    map: &mut OffsetMap,
    params: &CleanParams,
    io: &mut dyn FnMut(u64),
    install: &mut dyn FnMut(CleanedGroup) -> Result<bool, LogError>,
) -> Result<CleanStats, LogError> {
    let end_offset = build_offset_map(job, map, io)?.max(job.first_dirty);
    let groups = group_segments(job, end_offset);
    let covered: Vec<SegmentInfo> = groups.iter().flatten().cloned().collect();
    let last_of_producer = last_batches_of_producers(&covered, io)?;
    let mut stats = CleanStats {
        cleaned_to: end_offset,
        ..CleanStats::default()
    };
    let mut txns = PassTxns {
        aborted: AbortedSpans::new(&job.aborted),
        tracker: TxnTracker::default(),
    };
    for group in &groups {
        let cleaned = clean_group(
            job,
            group,
            map,
            params,
            &last_of_producer,
            &mut txns,
            &mut stats,
            io,
        )?;
        stats.bytes_read += cleaned.bytes_read;
        stats.bytes_written += cleaned.bytes_written;
        if let Some(h) = cleaned.delete_horizon {
            stats.delete_horizon = Some(stats.delete_horizon.map_or(h, |o| o.min(h)));
        }
        let path = cleaned.cleaned_path.clone();
        match install(cleaned) {
            Ok(true) => stats.groups_swapped += 1,
            Ok(false) => {
                stats.groups_abandoned += 1;
                // The log changed under the pass: what follows is stale too.
                stats.cleaned_to = job.first_dirty.min(stats.cleaned_to);
                let _ = remove_if_exists(&path);
                break;
            }
            Err(e) => {
                let _ = remove_if_exists(&path);
                return Err(e);
            }
        }
    }
    Ok(stats)
}
