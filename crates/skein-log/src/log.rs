//! `Log`: one partition's durable log, a list of segments plus its checkpoints.
//!
//! Offsets are assigned here. The log is not thread-safe by itself (the broker wraps it in a
//! mutex); everything is synchronous `std::fs` I/O. `append` writes to the page cache only;
//! durability comes from `flush`, a `SyncHandle`, or rolling a segment (which fsyncs it).

use std::fs;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::batch::{parse_header, set_base_offset, BatchHeader, BATCH_HEADER_LEN};
use crate::checkpoint::{self, HIGH_WATERMARK_FILE, LOG_START_OFFSET_FILE, RECOVERY_POINT_FILE};
use crate::config::LogConfig;
use crate::epoch::LeaderEpochCache;
use crate::error::{IoContext, LogError};
use crate::record_scan;
use crate::segment::{ScanOptions, Segment};
use crate::sync::SyncHandle;

/// What an `append` wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// The offset assigned to the first record.
    pub base_offset: i64,
    /// The offset of the last record.
    pub last_offset: i64,
    /// The number of batches appended.
    pub batch_count: usize,
    /// The number of bytes appended.
    pub bytes: usize,
    /// The largest batch `max_timestamp` among the appended batches.
    pub max_timestamp: i64,
}

/// What a `read` returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadResult {
    /// Whole record batches, exactly as stored.
    pub records: Bytes,
    /// The offset after the last returned batch (the requested offset when nothing returned).
    pub next_offset: i64,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
    pub high_watermark: i64,
}

/// Whole record batches as a range of one segment file (see [`Log::read_ranges`]).
#[derive(Debug, Clone)]
pub struct FileRange {
    pub file: std::sync::Arc<std::fs::File>,
    pub position: u64,
    pub len: usize,
}

impl FileRange {
    /// Appends the range's bytes to `out`.
    pub fn read_into(&self, out: &mut Vec<u8>) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let old = out.len();
        out.resize(old + self.len, 0);
        let result = self.file.read_exact_at(&mut out[old..], self.position);
        if result.is_err() {
            out.truncate(old);
        }
        result
    }
}

/// What a `read_ranges` returned.
#[derive(Debug, Clone)]
pub struct RangeRead {
    /// In order; at most one per segment.
    pub ranges: Vec<FileRange>,
    /// The total length of the ranges.
    pub bytes: usize,
    /// The records in them, from the batch headers.
    pub records: i64,
    /// The offset after the last returned batch (the requested offset when nothing returned).
    pub next_offset: i64,
}

/// What `apply_retention` deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub deleted_segments: usize,
    pub deleted_bytes: u64,
    /// The log start offset afterwards.
    pub log_start_offset: i64,
}

/// The values last written to the single-value checkpoint files, to skip rewriting them.
#[derive(Debug, Default)]
pub(crate) struct Written {
    pub recovery_point: Option<i64>,
    pub high_watermark: Option<i64>,
    pub log_start_offset: Option<i64>,
}

/// One partition's log. See the crate documentation for the on-disk layout.
#[derive(Debug)]
pub struct Log {
    pub(crate) dir: PathBuf,
    pub(crate) config: LogConfig,
    /// Sorted by base offset, never empty; the last one is the active segment.
    pub(crate) segments: Vec<Segment>,
    pub(crate) log_start_offset: i64,
    pub(crate) high_watermark: i64,
    pub(crate) recovery_point: i64,
    pub(crate) epochs: LeaderEpochCache,
    pub(crate) written: Written,
    pub(crate) closed: bool,
    /// Whether the partition directory and its entry in the parent are known durable. A log
    /// created in a new, empty directory defers those fsyncs until it first writes something
    /// that must survive (until then a lost directory is simply recreated empty).
    pub(crate) dir_durable: bool,
    /// Offsets of the state snapshot files in the directory, ascending (`snapshot.rs`).
    pub(crate) snapshots: Vec<i64>,
    /// The aborted-transaction index of every segment (`txn_index.rs`).
    pub(crate) txn: crate::txn_index::TxnIndexes,
}

/// Splits `buf` into batches, checking that each header parses and each batch is whole.
fn split_batches(buf: &[u8]) -> Result<Vec<(usize, BatchHeader)>, LogError> {
    if buf.is_empty() {
        return Err(LogError::InvalidBatch {
            position: 0,
            reason: "no batches to append".to_string(),
        });
    }
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let rest = &buf[pos..];
        if rest.len() < BATCH_HEADER_LEN {
            return Err(LogError::InvalidBatch {
                position: pos,
                reason: format!("{} trailing bytes, shorter than a batch header", rest.len()),
            });
        }
        let header = parse_header(rest).map_err(|reason| LogError::InvalidBatch {
            position: pos,
            reason,
        })?;
        if header.total_len() > rest.len() {
            return Err(LogError::InvalidBatch {
                position: pos,
                reason: format!(
                    "batch of {} bytes but only {} remain",
                    header.total_len(),
                    rest.len()
                ),
            });
        }
        out.push((pos, header));
        pos += header.total_len();
    }
    Ok(out)
}

impl Log {
    pub(crate) fn active(&self) -> &Segment {
        self.segments
            .last()
            .expect("invariant: a log always has an active segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .last_mut()
            .expect("invariant: a log always has an active segment")
    }

    /// The base offset of the active (last) segment.
    pub fn active_segment_base_offset(&self) -> i64 {
        self.active().base_offset()
    }

    /// The partition directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The current configuration.
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Appends one or more validated v2 batches laid out back to back.
    ///
    /// Offsets are assigned from the log end offset and written into each batch's `base_offset`
    /// in place (the CRC does not cover that field). The active segment rolls first when the
    /// append would make it larger than `segment_bytes`, when its first append is more than
    /// `segment_ms` before `now_ms` (after a restart: its first batch's max timestamp, capped at
    /// the open time), when an index would grow past `segment_index_bytes`, or when offsets would overflow its 32-bit relative
    /// offsets. A batch whose `partition_leader_epoch` is newer than the latest known epoch
    /// starts that epoch in the leader-epoch cache (Kafka's rule). CRCs are not re-verified:
    /// the broker validated the batches.
    pub fn append(&mut self, batches: &mut [u8], now_ms: i64) -> Result<AppendInfo, LogError> {
        self.append_inner(batches, now_ms, true)
    }

    /// Appends batches a partition's leader wrote, keeping their offsets (a follower's
    /// append): the first batch must start at or after the log end offset and each next one
    /// after the previous one's last offset. Leader epochs enter the cache as in `append`.
    pub fn append_replicated(
        &mut self,
        batches: &mut [u8],
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        self.append_inner(batches, now_ms, false)
    }

    fn append_inner(
        &mut self,
        batches: &mut [u8],
        now_ms: i64,
        assign_offsets: bool,
    ) -> Result<AppendInfo, LogError> {
        let mut headers = split_batches(batches)?;
        if !assign_offsets {
            let mut next = self.log_end_offset();
            for (pos, h) in &headers {
                if h.base_offset < next || h.last_offset_delta < 0 {
                    return Err(LogError::InvalidBatch {
                        position: *pos,
                        reason: format!(
                            "replicated batch at offset {} (last offset delta {}) is not after offset {}",
                            h.base_offset,
                            h.last_offset_delta,
                            next - 1
                        ),
                    });
                }
                next = h.last_offset() + 1;
            }
        }
        self.ensure_dir_durable()?;
        if u32::try_from(batches.len()).is_err() {
            return Err(LogError::InvalidBatch {
                position: 0,
                reason: format!("append of {} bytes is too large", batches.len()),
            });
        }
        let offset_count: i64 = if assign_offsets {
            headers
                .iter()
                .map(|(_, h)| i64::from(h.last_offset_delta) + 1)
                .sum()
        } else {
            // Offsets the append spans, gaps left by compaction included.
            headers.last().map_or(0, |(_, h)| h.last_offset() + 1) - self.log_end_offset()
        };
        if offset_count > i64::from(u32::MAX) {
            return Err(LogError::InvalidBatch {
                position: 0,
                reason: format!("append of {offset_count} offsets is too large"),
            });
        }
        self.maybe_roll(batches.len(), offset_count, now_ms)?;

        let base_offset = if assign_offsets {
            self.log_end_offset()
        } else {
            headers[0].1.base_offset
        };
        let mut next = base_offset;
        let mut max_timestamp = i64::MIN;
        let mut epochs_changed = false;
        for (pos, header) in headers.iter_mut() {
            if assign_offsets {
                set_base_offset(&mut batches[*pos..], next);
                header.base_offset = next;
            }
            next = header.last_offset() + 1;
            max_timestamp = max_timestamp.max(header.max_timestamp);
            let epoch = header.partition_leader_epoch;
            if epoch >= 0 && self.epochs.latest_epoch().is_none_or(|e| epoch > e) {
                epochs_changed |= self.epochs.assign(epoch, header.base_offset);
            }
        }
        if epochs_changed {
            checkpoint::write_epochs(&self.dir, self.epochs.entries())?;
        }
        let interval = self.config.index_interval_bytes;
        self.active_mut()
            .append(batches, &headers, interval, now_ms)?;
        Ok(AppendInfo {
            base_offset,
            last_offset: next - 1,
            batch_count: headers.len(),
            bytes: batches.len(),
            max_timestamp,
        })
    }

    fn maybe_roll(&mut self, bytes: usize, offsets: i64, now_ms: i64) -> Result<(), LogError> {
        let segment = self.active();
        if segment.is_empty() {
            return Ok(());
        }
        // Positions in the offset index are 32-bit, like Kafka's int `segment.bytes`.
        let segment_bytes_max = self.config.segment_bytes.min(u64::from(u32::MAX));
        let too_big = segment.size() + bytes as u64 > segment_bytes_max;
        let too_old = segment
            .roll_base_ms()
            .is_some_and(|t| now_ms.saturating_sub(t) > self.config.segment_ms);
        let indexes_full = segment.indexes_full(self.config.segment_index_bytes);
        let last_relative = self.log_end_offset() + offsets - 1 - segment.base_offset();
        let offsets_overflow = last_relative > i64::from(u32::MAX);
        if too_big || too_old || indexes_full || offsets_overflow {
            self.roll()?;
        }
        Ok(())
    }

    /// Starts a new active segment at the log end offset, sealing (and fsyncing) the old one.
    /// Does nothing when the active segment is empty.
    pub fn roll(&mut self) -> Result<(), LogError> {
        if self.active().is_empty() {
            return Ok(());
        }
        let leo = self.log_end_offset();
        self.ensure_dir_durable()?;
        self.active_mut().seal()?;
        let segment = Segment::create(&self.dir, leo)?;
        checkpoint::sync_dir(&self.dir)?;
        tracing::debug!(dir = %self.dir.display(), base_offset = leo, "rolled segment");
        // The sealed segment is read rarely: its file is reopened per read.
        self.active_mut().release_handle();
        self.segments.push(segment);
        // Every earlier segment was fsynced when it stopped being active.
        self.recovery_point = leo;
        Ok(())
    }

    /// Reads whole batches starting with the one containing `start_offset`.
    ///
    /// At least one batch is returned even when it is larger than `max_bytes` (KIP-74); after
    /// it, batches are added while the total stays within `max_bytes`, across segments. No
    /// batch whose last offset is at or after `max_offset_exclusive` (the high watermark for
    /// consumers) is returned. `start_offset == log_end_offset` gives an empty result; outside
    /// `[log_start_offset, log_end_offset]` is `OffsetOutOfRange`.
    pub fn read(
        &self,
        start_offset: i64,
        max_bytes: usize,
        max_offset_exclusive: Option<i64>,
    ) -> Result<ReadResult, LogError> {
        let limit = self.read_limit(start_offset, max_offset_exclusive)?;
        let mut out = Vec::new();
        let mut next_offset = start_offset;
        if start_offset < limit {
            let (mut index, mut pos_header) = self.find_batch_from(start_offset)?;
            while let Some((pos, header)) = pos_header {
                let segment = &self.segments[index];
                let remaining = max_bytes.saturating_sub(out.len());
                let (last, reached_end) = segment.read_batches(
                    pos,
                    &header,
                    remaining,
                    out.is_empty(),
                    limit,
                    &mut out,
                )?;
                if let Some(last) = last {
                    next_offset = last + 1;
                }
                if !reached_end || index + 1 >= self.segments.len() || out.len() >= max_bytes {
                    break;
                }
                index += 1;
                pos_header = self.first_batch(index)?;
            }
        }
        Ok(ReadResult {
            records: Bytes::from(out),
            next_offset,
            log_start_offset: self.log_start_offset,
            log_end_offset: self.log_end_offset(),
            high_watermark: self.high_watermark,
        })
    }

    /// Like [`Log::read`], but returns the batches as ranges of the segment files instead of
    /// copying them into memory: a caller can `sendfile(2)` them to a socket. Reads only
    /// the batch headers. The ranges stay readable after the segment is deleted (the file is
    /// open); they are valid as long as the log is not truncated below them.
    pub fn read_ranges(
        &self,
        start_offset: i64,
        max_bytes: usize,
        max_offset_exclusive: Option<i64>,
    ) -> Result<RangeRead, LogError> {
        let limit = self.read_limit(start_offset, max_offset_exclusive)?;
        let mut read = RangeRead {
            ranges: Vec::new(),
            bytes: 0,
            records: 0,
            next_offset: start_offset,
        };
        if start_offset >= limit {
            return Ok(read);
        }
        let (mut index, mut pos_header) = self.find_batch_from(start_offset)?;
        while let Some((pos, header)) = pos_header {
            let segment = &self.segments[index];
            let remaining = max_bytes.saturating_sub(read.bytes);
            let range = segment.range_batches(pos, &header, remaining, read.bytes == 0, limit)?;
            if let (Some(last), Some(file)) = (range.last, range.file) {
                let len = (range.end - pos) as usize;
                read.next_offset = last + 1;
                read.bytes += len;
                read.records += range.records;
                read.ranges.push(FileRange {
                    file,
                    position: pos,
                    len,
                });
            }
            if !range.reached_end || index + 1 >= self.segments.len() || read.bytes >= max_bytes {
                break;
            }
            index += 1;
            pos_header = self.first_batch(index)?;
        }
        Ok(read)
    }

    /// The segment index, position and header of the batch holding `offset`, or of the first
    /// batch after it: compaction may have emptied the end of a segment (or all of it), so
    /// the search goes on into the next segments.
    fn find_batch_from(
        &self,
        offset: i64,
    ) -> Result<(usize, Option<(u64, BatchHeader)>), LogError> {
        let mut index = self.segment_index_for(offset);
        let mut found = self.segments[index].find_batch(offset)?;
        while found.is_none() && index + 1 < self.segments.len() {
            index += 1;
            found = self.first_batch(index)?;
        }
        Ok((index, found))
    }

    /// The position and header of segment `index`'s first batch, if it has one (a read that
    /// goes on into the next segment).
    fn first_batch(&self, index: usize) -> Result<Option<(u64, BatchHeader)>, LogError> {
        let segment = &self.segments[index];
        if segment.is_empty() {
            return Ok(None);
        }
        Ok(Some((0, segment.read_header_at(0)?)))
    }

    /// Checks a read's start offset and returns the offset no returned batch may reach.
    fn read_limit(
        &self,
        start_offset: i64,
        max_offset_exclusive: Option<i64>,
    ) -> Result<i64, LogError> {
        let leo = self.log_end_offset();
        if start_offset < self.log_start_offset || start_offset > leo {
            return Err(LogError::OffsetOutOfRange {
                requested: start_offset,
                log_start: self.log_start_offset,
                log_end: leo,
            });
        }
        Ok(max_offset_exclusive.unwrap_or(leo).min(leo))
    }

    /// The index of the segment that holds `offset` (the last one whose base is `<=` it).
    pub(crate) fn segment_index_for(&self, offset: i64) -> usize {
        self.segments
            .partition_point(|s| s.base_offset() <= offset)
            .saturating_sub(1)
    }

    /// The first offset that may be read.
    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    /// The offset the next appended record gets.
    pub fn log_end_offset(&self) -> i64 {
        self.active().next_offset()
    }

    /// The high watermark: kept apart from the log end offset and set by the broker.
    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }

    /// Sets the high watermark, clamped to `[log_start_offset, log_end_offset]`. Persisted by
    /// `flush`, `checkpoint` and `close`.
    pub fn set_high_watermark(&mut self, hw: i64) {
        self.high_watermark = hw.clamp(self.log_start_offset, self.log_end_offset());
    }

    /// Bytes in all segment log files.
    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(Segment::size).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Base offsets of the segments, oldest first.
    pub fn segment_base_offsets(&self) -> Vec<i64> {
        self.segments.iter().map(Segment::base_offset).collect()
    }

    /// fdatasyncs the active segment (earlier ones were synced when they rolled), advances the
    /// recovery point to the log end offset and writes the checkpoint files that changed.
    /// Returns the new recovery point.
    pub fn flush(&mut self) -> Result<i64, LogError> {
        self.active_mut().sync()?;
        self.recovery_point = self.log_end_offset();
        self.checkpoint()?;
        Ok(self.recovery_point)
    }

    /// A handle to fsync the active segment without holding the partition lock.
    pub fn sync_handle(&self) -> SyncHandle {
        let active = self.active();
        SyncHandle {
            file: std::sync::Arc::clone(active.log_file()),
            path: active.path().to_path_buf(),
            end_offset: self.log_end_offset(),
        }
    }

    /// Records that offsets below `offset` are durable (the result of `SyncHandle::sync`).
    pub fn mark_durable(&mut self, offset: i64) {
        let leo = self.log_end_offset();
        if offset > self.recovery_point {
            self.recovery_point = offset.min(leo);
        }
        if offset >= leo {
            // Nothing was appended since the handle was taken, so it synced the active file.
            self.active_mut().mark_synced();
        }
    }

    /// Offsets below the recovery point are known to be durable.
    pub fn recovery_point(&self) -> i64 {
        self.recovery_point
    }

    /// Writes the recovery point, high watermark and log start checkpoints that changed since
    /// they were last written. Meant for a periodic task; `flush` and `close` call it too.
    pub fn checkpoint(&mut self) -> Result<(), LogError> {
        let files = self.changed_checkpoints()?;
        self.write_checkpoints(files)
    }

    /// The checkpoint files whose values changed since they were last written; brings the
    /// active segment's index files up to date on the way.
    fn changed_checkpoints(&mut self) -> Result<Vec<(&'static str, i64)>, LogError> {
        if !self.dir_durable {
            // A log created in a new directory and never written since: its missing
            // checkpoint files already mean what the current values say (all at the base).
            return Ok(Vec::new());
        }
        // The active segment's index entries live in memory; bring the files up to date
        // (without fsync: recovery rebuilds the active segment's indexes after a crash).
        self.active_mut().write_indexes()?;
        let values = [
            (
                RECOVERY_POINT_FILE,
                self.recovery_point,
                self.written.recovery_point,
            ),
            (
                HIGH_WATERMARK_FILE,
                self.high_watermark,
                self.written.high_watermark,
            ),
            (
                LOG_START_OFFSET_FILE,
                self.log_start_offset,
                self.written.log_start_offset,
            ),
        ];
        Ok(values
            .into_iter()
            .filter(|(_, value, last)| *last != Some(*value))
            .map(|(name, value, _)| (name, value))
            .collect())
    }

    /// Writes checkpoint values with one directory fsync, and remembers them.
    fn write_checkpoints(&mut self, files: Vec<(&'static str, i64)>) -> Result<(), LogError> {
        let contents: Vec<(&str, String)> = files
            .iter()
            .map(|(name, value)| (*name, checkpoint::value_content(*value)))
            .collect();
        checkpoint::write_atomic_many(&self.dir, &contents)?;
        self.write_checkpoints_done(files);
        Ok(())
    }

    fn write_checkpoints_done(&mut self, files: Vec<(&'static str, i64)>) {
        for (name, value) in files {
            match name {
                RECOVERY_POINT_FILE => self.written.recovery_point = Some(value),
                HIGH_WATERMARK_FILE => self.written.high_watermark = Some(value),
                _ => self.written.log_start_offset = Some(value),
            }
        }
    }

    /// fsyncs the partition directory and its parent once, for a log created in a new
    /// directory, before the first write that must survive a crash.
    fn ensure_dir_durable(&mut self) -> Result<(), LogError> {
        if !self.dir_durable {
            checkpoint::sync_dir(&self.dir)?;
            if let Some(parent) = self.dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                checkpoint::sync_dir(parent)?;
            }
            self.dir_durable = true;
        }
        Ok(())
    }

    fn write_log_start_checkpoint(&mut self) -> Result<(), LogError> {
        checkpoint::write_value(&self.dir, LOG_START_OFFSET_FILE, self.log_start_offset)?;
        self.written.log_start_offset = Some(self.log_start_offset);
        Ok(())
    }

    /// The first record with a timestamp `>= ts_ms` at or after the log start offset, as
    /// `(offset, timestamp)`, for ListOffsets by timestamp.
    ///
    /// The time index gives the starting point; the batch is found by its `max_timestamp`,
    /// then its records are decoded (decompressed if need be) to find the exact record.
    pub fn offset_for_timestamp(&self, ts_ms: i64) -> Result<Option<(i64, i64)>, LogError> {
        let log_start = self.log_start_offset;
        for segment in &self.segments {
            if segment.next_offset() <= log_start
                || segment.max_timestamp().is_none_or(|m| m.timestamp < ts_ms)
            {
                continue;
            }
            let mut found = None;
            let opts = ScanOptions {
                expected_offset: None,
                verify_crc: false,
                chunk: 64 * 1024,
            };
            let end = segment.scan(segment.time_search_start(ts_ms), opts, |h, pos| {
                if h.max_timestamp < ts_ms || h.last_offset() < log_start {
                    return Ok(ControlFlow::Continue(()));
                }
                let batch = segment.read_batch(pos, h)?;
                match record_scan::first_record_at_or_after(&batch, h, ts_ms, log_start) {
                    Ok(Some(hit)) => {
                        found = Some(hit);
                        Ok(ControlFlow::Break(()))
                    }
                    Ok(None) => Ok(ControlFlow::Continue(())),
                    Err(reason) => Err(LogError::Corrupt {
                        path: segment.path().to_path_buf(),
                        position: pos,
                        reason,
                    }),
                }
            })?;
            if found.is_some() {
                return Ok(found);
            }
            if let Some(problem) = end.problem {
                return Err(LogError::Corrupt {
                    path: segment.path().to_path_buf(),
                    position: end.end_pos,
                    reason: problem,
                });
            }
        }
        Ok(None)
    }

    /// The record with the largest timestamp, as `(offset, timestamp)`, for ListOffsets
    /// `MAX_TIMESTAMP` (-3); the earliest one on ties.
    ///
    /// Segments track the largest batch `max_timestamp` and the batch carrying it; that batch
    /// is read (and decompressed if need be) to find the exact record. Records below the log start offset are not excluded
    /// (as long as their segment exists).
    pub fn max_timestamp(&self) -> Result<Option<(i64, i64)>, LogError> {
        let mut best: Option<(&Segment, crate::segment::MaxTimestamp)> = None;
        for segment in &self.segments {
            if let Some(m) = segment.max_timestamp() {
                if best.is_none_or(|(_, b)| m.timestamp > b.timestamp) {
                    best = Some((segment, m));
                }
            }
        }
        let Some((segment, max)) = best else {
            return Ok(None);
        };
        let Some((pos, header)) = segment.find_batch(max.batch_base_offset)? else {
            return Ok(Some((max.batch_base_offset, max.timestamp)));
        };
        let batch = segment.read_batch(pos, &header)?;
        let exact =
            record_scan::first_record_with_max_timestamp(&batch, &header).map_err(|reason| {
                LogError::Corrupt {
                    path: segment.path().to_path_buf(),
                    position: pos,
                    reason,
                }
            })?;
        Ok(Some(exact.unwrap_or((header.last_offset(), max.timestamp))))
    }

    /// DeleteRecords: raises the log start offset to `offset` (persisted at once) and deletes
    /// the segments wholly below it, never the active one. Returns the new log start offset.
    pub fn delete_records_before(&mut self, offset: i64) -> Result<i64, LogError> {
        let leo = self.log_end_offset();
        if offset > leo || offset < 0 {
            return Err(LogError::OffsetOutOfRange {
                requested: offset,
                log_start: self.log_start_offset,
                log_end: leo,
            });
        }
        if offset <= self.log_start_offset {
            return Ok(self.log_start_offset);
        }
        self.ensure_dir_durable()?;
        self.raise_log_start(offset)?;
        while self.segments.len() > 1 && self.segments[0].next_offset() <= offset {
            self.segments.remove(0).delete_files()?;
        }
        self.forget_deleted_txn_segments();
        Ok(self.log_start_offset)
    }

    /// Raises the log start offset, persisting it and trimming the epoch cache.
    fn raise_log_start(&mut self, offset: i64) -> Result<(), LogError> {
        self.log_start_offset = offset;
        self.high_watermark = self.high_watermark.max(offset);
        self.recovery_point = self.recovery_point.max(offset);
        self.write_log_start_checkpoint()?;
        if self.epochs.truncate_from_start(offset) {
            checkpoint::write_epochs(&self.dir, self.epochs.entries())?;
        }
        Ok(())
    }

    /// Deletes the oldest segments (never the active one) whose largest timestamp is more than
    /// `retention_ms` old, then, while the log is larger than `retention_bytes`, the oldest
    /// segments whose removal keeps it at or above that size. Raises the log start offset.
    /// Does nothing unless the cleanup policy includes `delete`.
    pub fn apply_retention(&mut self, now_ms: i64) -> Result<RetentionReport, LogError> {
        let mut doomed = 0usize;
        if !self.config.delete_retention {
            return Ok(RetentionReport {
                log_start_offset: self.log_start_offset,
                ..RetentionReport::default()
            });
        }
        if self.config.retention_ms >= 0 {
            while doomed + 1 < self.segments.len() {
                let expired = match self.segments[doomed].max_timestamp() {
                    Some(m) => now_ms.saturating_sub(m.timestamp) > self.config.retention_ms,
                    None => true,
                };
                if !expired {
                    break;
                }
                doomed += 1;
            }
        }
        if self.config.retention_bytes >= 0 {
            let kept: u64 = self.segments[doomed..].iter().map(Segment::size).sum();
            let mut excess = kept as i64 - self.config.retention_bytes;
            while doomed + 1 < self.segments.len() {
                let size = self.segments[doomed].size() as i64;
                if excess - size < 0 {
                    break;
                }
                excess -= size;
                doomed += 1;
            }
        }
        let mut report = RetentionReport {
            log_start_offset: self.log_start_offset,
            ..RetentionReport::default()
        };
        if doomed == 0 {
            return Ok(report);
        }
        let new_start = self.segments[doomed].base_offset();
        if new_start > self.log_start_offset {
            // Persist first: a crash mid-deletion must not resurrect deleted offsets.
            self.raise_log_start(new_start)?;
        }
        for segment in self.segments.drain(..doomed).collect::<Vec<_>>() {
            report.deleted_segments += 1;
            report.deleted_bytes += segment.size();
            tracing::info!(segment = %segment.path().display(), "deleting segment by retention");
            segment.delete_files()?;
        }
        self.forget_deleted_txn_segments();
        report.log_start_offset = self.log_start_offset;
        Ok(report)
    }

    /// Replaces the configuration; it applies from the next append or retention pass.
    pub fn update_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    /// Removes every record at or after `offset` (for replication). Cuts at the start of the
    /// batch containing `offset`, so the new log end offset is that batch's base offset (it is
    /// `offset` itself when `offset` is a batch boundary). An `offset` below the log start
    /// empties the log and starts it at `offset`.
    pub fn truncate_to(&mut self, offset: i64) -> Result<(), LogError> {
        let leo = self.log_end_offset();
        if offset >= leo {
            return Ok(());
        }
        self.ensure_dir_durable()?;
        if offset < self.log_start_offset || offset < self.segments[0].base_offset() {
            let offset = offset.max(0);
            for segment in std::mem::take(&mut self.segments) {
                segment.delete_files()?;
            }
            self.segments.push(Segment::create(&self.dir, offset)?);
            checkpoint::sync_dir(&self.dir)?;
            self.log_start_offset = offset;
            self.write_log_start_checkpoint()?;
        } else {
            while self.segments.len() > 1 && self.active().base_offset() >= offset {
                if let Some(segment) = self.segments.pop() {
                    segment.delete_files()?;
                }
            }
            let interval = self.config.index_interval_bytes;
            // A formerly inactive segment becomes active again: it keeps its file open.
            self.active_mut().ensure_handle()?;
            self.active_mut().truncate_to(offset, interval)?;
        }
        let leo = self.log_end_offset();
        crate::snapshot::delete_above(&self.dir, &mut self.snapshots, leo)?;
        self.truncate_txn_index_from(leo)?;
        self.forget_deleted_txn_segments();
        self.high_watermark = self.high_watermark.min(leo);
        if self.recovery_point > leo {
            // Persist at once: a stale, larger recovery point would let new, unsynced appends
            // below it skip recovery after a crash.
            self.recovery_point = leo;
            checkpoint::write_value(&self.dir, RECOVERY_POINT_FILE, leo)?;
            self.written.recovery_point = Some(leo);
        }
        if self.epochs.truncate_from_end(leo) {
            checkpoint::write_epochs(&self.dir, self.epochs.entries())?;
        }
        Ok(())
    }

    /// Empties the log and starts it again at `offset` (a follower whose log ends before the
    /// leader's log start): every segment, snapshot and leader epoch goes.
    pub fn restart_at(&mut self, offset: i64) -> Result<(), LogError> {
        let offset = offset.max(0);
        self.ensure_dir_durable()?;
        for segment in std::mem::take(&mut self.segments) {
            segment.delete_files()?;
        }
        self.segments.push(Segment::create(&self.dir, offset)?);
        checkpoint::sync_dir(&self.dir)?;
        crate::snapshot::delete_above(&self.dir, &mut self.snapshots, -1)?;
        self.truncate_txn_index_from(i64::MIN)?;
        self.log_start_offset = offset;
        self.write_log_start_checkpoint()?;
        self.high_watermark = offset;
        self.recovery_point = offset;
        checkpoint::write_value(&self.dir, RECOVERY_POINT_FILE, offset)?;
        self.written.recovery_point = Some(offset);
        if self.epochs.truncate_from_end(i64::MIN) {
            checkpoint::write_epochs(&self.dir, self.epochs.entries())?;
        }
        Ok(())
    }

    /// Records that leader `epoch` starts at `start_offset` (no-op when it is already the
    /// latest epoch) and persists the leader-epoch checkpoint.
    pub fn assign_epoch(&mut self, epoch: i32, start_offset: i64) -> Result<(), LogError> {
        if self.epochs.assign(epoch, start_offset) {
            self.ensure_dir_durable()?;
            checkpoint::write_epochs(&self.dir, self.epochs.entries())?;
        }
        Ok(())
    }

    /// The latest leader epoch, if any was recorded.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.epochs.latest_epoch()
    }

    /// OffsetForLeaderEpoch: `(largest epoch <= epoch, end offset of that epoch)`; `None`
    /// when undefined (no epochs, or `epoch` newer than the latest).
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, i64)> {
        self.epochs.end_offset_for(epoch, self.log_end_offset())
    }

    /// The leader-epoch cache entries, `(epoch, start_offset)`, oldest first.
    pub fn leader_epochs(&self) -> &[(i32, i64)] {
        self.epochs.entries()
    }

    /// Calls `f` with the header of every batch whose last offset is at or after
    /// `from_offset`, in offset order (used to rebuild producer state at startup).
    pub fn scan_batches(
        &self,
        from_offset: i64,
        mut f: impl FnMut(&BatchHeader),
    ) -> Result<(), LogError> {
        let first = self.segment_index_for(from_offset);
        for segment in &self.segments[first..] {
            let _always_continues = segment.for_each_batch_from(from_offset, |h, _| {
                f(h);
                Ok(ControlFlow::Continue(()))
            })?;
        }
        Ok(())
    }

    /// Flushes, writes all checkpoints and the clean-shutdown marker.
    pub fn close(mut self) -> Result<(), LogError> {
        self.close_inner()
    }

    fn close_inner(&mut self) -> Result<(), LogError> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        self.active_mut().seal()?;
        self.recovery_point = self.log_end_offset();
        // The changed checkpoints and the clean-shutdown marker share one directory fsync.
        let files = self.changed_checkpoints()?;
        let mut contents: Vec<(&str, String)> = files
            .iter()
            .map(|(name, value)| (*name, checkpoint::value_content(*value)))
            .collect();
        contents.push((checkpoint::CLEAN_SHUTDOWN_FILE, String::new()));
        checkpoint::write_atomic_many(&self.dir, &contents)?;
        self.write_checkpoints_done(files);
        Ok(())
    }

    /// Drops the log without flushing, checkpointing or writing the clean-shutdown marker, as
    /// a crash would. Meant for tests of recovery.
    pub fn abandon(mut self) {
        self.closed = true;
    }

    /// Removes the partition directory and everything in it (topic deletion).
    pub fn delete(mut self) -> Result<(), LogError> {
        self.closed = true;
        let dir = self.dir.clone();
        self.segments.clear();
        drop(self);
        fs::remove_dir_all(&dir).at(&dir)?;
        if let Some(parent) = dir.parent() {
            checkpoint::sync_dir(parent)?;
        }
        Ok(())
    }
}

impl Drop for Log {
    /// Closes the log cleanly if `close` was not called; errors are logged, not raised.
    fn drop(&mut self) {
        if let Err(e) = self.close_inner() {
            tracing::warn!(dir = %self.dir.display(), error = %e, "closing log on drop failed");
        }
    }
}
