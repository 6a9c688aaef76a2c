//! One segment: a `.log` file of record batches plus its `.index` and `.timeindex`.
//!
//! The segment knows nothing about the partition's offsets beyond its own; the `Log` decides
//! when to roll, what to delete and where recovery starts.

use std::fs::{File, OpenOptions};
use std::ops::ControlFlow;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::batch::{parse_header, BatchHeader, BATCH_HEADER_LEN};
use crate::error::{IoContext, LogError};
use crate::index::{remove_if_exists, IndexFile, OffsetEntry, TimeEntry};

pub(crate) const LOG_SUFFIX: &str = "log";
pub(crate) const INDEX_SUFFIX: &str = "index";
pub(crate) const TIME_INDEX_SUFFIX: &str = "timeindex";

/// Bytes read at a time while scanning a whole segment (recovery, index rebuild).
const SCAN_CHUNK_BYTES: usize = 256 * 1024;
/// Bytes read at a time while walking from an index entry to a target offset.
const LOOKUP_CHUNK_BYTES: usize = 16 * 1024;

/// What [`Segment::range_batches`] found: batches from the start position up to `end`.
pub(crate) struct BatchRange {
    /// The open log file, when a read happened.
    pub file: Option<Arc<File>>,
    pub end: u64,
    /// The last offset of the last batch in the range.
    pub last: Option<i64>,
    /// The records in the range, from the batch headers.
    pub records: i64,
    /// Whether the range reached the end of the segment without hitting a limit.
    pub reached_end: bool,
}

/// The bytes a read from batch `first` may take: `None` when not even `first` may be returned
/// (it reaches `offset_limit`, or is over `max_bytes` and not the read's first batch).
fn first_budget(
    first: &BatchHeader,
    max_bytes: usize,
    take_first: bool,
    offset_limit: i64,
) -> Option<usize> {
    if first.last_offset() >= offset_limit {
        return None;
    }
    let budget = if take_first {
        max_bytes.max(first.total_len())
    } else {
        max_bytes
    };
    (first.total_len() <= budget).then_some(budget)
}

/// The file name of a segment file: the base offset zero-padded to 20 digits.
pub(crate) fn file_name(base_offset: i64, suffix: &str) -> String {
    format!("{base_offset:020}.{suffix}")
}

/// The largest timestamp in a segment and the base offset of the first batch carrying it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MaxTimestamp {
    pub timestamp: i64,
    pub batch_base_offset: i64,
}

/// Where a scan stopped.
#[derive(Debug)]
pub(crate) struct ScanEnd {
    /// Byte position after the last valid batch visited (or where the callback stopped).
    pub end_pos: u64,
    /// The offset after the last valid batch visited, if any was.
    pub next_offset: Option<i64>,
    /// Why the scan stopped before the end of the file, if it found something invalid.
    pub problem: Option<String>,
}

/// Reads a file through a window buffer so that walking many small batches costs few syscalls.
struct ChunkReader<'a> {
    file: &'a File,
    path: &'a Path,
    file_len: u64,
    chunk: usize,
    buf: Vec<u8>,
    buf_start: u64,
}

impl<'a> ChunkReader<'a> {
    fn new(file: &'a File, path: &'a Path, file_len: u64, chunk: usize) -> Self {
        ChunkReader {
            file,
            path,
            file_len,
            chunk,
            buf: Vec::new(),
            buf_start: 0,
        }
    }

    /// `n <= chunk` bytes at `pos`; the caller guarantees `pos + n <= file_len`.
    fn slice(&mut self, pos: u64, n: usize) -> Result<&[u8], LogError> {
        let buf_end = self.buf_start + self.buf.len() as u64;
        if pos < self.buf_start || pos + n as u64 > buf_end {
            let want = (self.chunk as u64).min(self.file_len - pos) as usize;
            self.buf.resize(want, 0);
            self.file.read_exact_at(&mut self.buf, pos).at(self.path)?;
            self.buf_start = pos;
        }
        let at = (pos - self.buf_start) as usize;
        Ok(&self.buf[at..at + n])
    }
}

/// Options of a scan.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ScanOptions {
    /// The smallest base offset the first batch may have; each later batch must start after
    /// the previous one's last offset (gaps left by compaction are allowed).
    pub expected_offset: Option<i64>,
    pub verify_crc: bool,
    pub chunk: usize,
}

/// Walks the batches of `file` from `from_pos` to `file_len`, validating each header (and CRC
/// when asked), calling `f(header, position)` for each valid one until it breaks.
fn scan_file(
    file: &File,
    path: &Path,
    file_len: u64,
    from_pos: u64,
    opts: ScanOptions,
    mut f: impl FnMut(&BatchHeader, u64) -> Result<ControlFlow<()>, LogError>,
) -> Result<ScanEnd, LogError> {
    let mut reader = ChunkReader::new(file, path, file_len, opts.chunk);
    let mut pos = from_pos;
    let mut next_offset = None;
    let mut expected = opts.expected_offset;
    let stop = |pos: u64, next_offset: Option<i64>, why: String| {
        Ok(ScanEnd {
            end_pos: pos,
            next_offset,
            problem: Some(format!("at byte {pos}: {why}")),
        })
    };
    while pos < file_len {
        let remaining = file_len - pos;
        if remaining < BATCH_HEADER_LEN as u64 {
            return stop(
                pos,
                next_offset,
                format!("{remaining} trailing bytes, shorter than a batch header"),
            );
        }
        let header = match parse_header(reader.slice(pos, BATCH_HEADER_LEN)?) {
            Ok(h) => h,
            Err(e) => return stop(pos, next_offset, format!("invalid batch header: {e}")),
        };
        let total = header.total_len() as u64;
        if total > remaining {
            return stop(
                pos,
                next_offset,
                format!(
                    "batch of {total} bytes runs past the end of the file ({remaining} bytes left)"
                ),
            );
        }
        if let Some(want) = expected {
            // Compaction leaves gaps between batches (and a cleaned segment may start after
            // its base offset), so offsets only have to grow.
            if header.base_offset < want {
                return stop(
                    pos,
                    next_offset,
                    format!(
                        "batch base offset {} where {want} or more was expected",
                        header.base_offset
                    ),
                );
            }
        }
        if opts.verify_crc {
            let end = pos + total;
            let mut at = pos + 21;
            let mut crc = 0u32;
            while at < end {
                let n = (opts.chunk as u64).min(end - at) as usize;
                crc = crc32c::crc32c_append(crc, reader.slice(at, n)?);
                at += n as u64;
            }
            if crc != header.crc {
                return stop(
                    pos,
                    next_offset,
                    format!(
                        "CRC32C mismatch in batch at offset {}: stored {:#010x}, computed {crc:#010x}",
                        header.base_offset, header.crc
                    ),
                );
            }
        }
        if f(&header, pos)?.is_break() {
            return Ok(ScanEnd {
                end_pos: pos,
                next_offset,
                problem: None,
            });
        }
        next_offset = Some(header.last_offset() + 1);
        expected = next_offset;
        pos += total;
    }
    Ok(ScanEnd {
        end_pos: pos,
        next_offset,
        problem: None,
    })
}

/// What `Segment::rebuild` found.
#[derive(Debug)]
pub(crate) struct RebuildOutcome {
    /// Bytes cut from the end of the log file.
    pub truncated_bytes: u64,
    /// The invalid data that caused the truncation.
    pub problem: Option<String>,
}

#[derive(Debug)]
pub(crate) struct Segment {
    base_offset: i64,
    log_path: PathBuf,
    /// The open log file: always present for the active segment; inactive segments drop it
    /// and open the file per read, so a partition holds one descriptor in steady state.
    log: Option<Arc<File>>,
    size: u64,
    /// The offset after the last batch (== `base_offset` when empty).
    next_offset: i64,
    offset_index: IndexFile<OffsetEntry>,
    time_index: IndexFile<TimeEntry>,
    bytes_since_index_entry: u64,
    max_timestamp: Option<MaxTimestamp>,
    /// When the segment's first batch was appended (for `segment.ms`).
    roll_base_ms: Option<i64>,
    /// Whether the log file was written since it was last fsynced.
    log_dirty: bool,
}

fn open_rw(path: &Path, truncate: bool) -> Result<File, LogError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(truncate)
        .open(path)
        .at(path)
}

impl Segment {
    /// Creates a new empty segment (truncating any leftover files of the same name).
    pub(crate) fn create(dir: &Path, base_offset: i64) -> Result<Segment, LogError> {
        let log_path = dir.join(file_name(base_offset, LOG_SUFFIX));
        let log = open_rw(&log_path, true)?;
        Ok(Segment {
            base_offset,
            log_path,
            log: Some(Arc::new(log)),
            size: 0,
            next_offset: base_offset,
            offset_index: IndexFile::create_empty(&dir.join(file_name(base_offset, INDEX_SUFFIX)))?,
            time_index: IndexFile::create_empty(
                &dir.join(file_name(base_offset, TIME_INDEX_SUFFIX)),
            )?,
            bytes_since_index_entry: 0,
            max_timestamp: None,
            roll_base_ms: None,
            log_dirty: true,
        })
    }

    /// Opens an existing segment's files. Offsets and timestamps are not known yet: the caller
    /// follows up with `rebuild`, `load_from_indexes` or `set_next_offset`. Returns the reasons
    /// (if any) the indexes cannot be trusted.
    pub(crate) fn open(
        dir: &Path,
        base_offset: i64,
    ) -> Result<(Segment, Option<String>), LogError> {
        let log_path = dir.join(file_name(base_offset, LOG_SUFFIX));
        let log = open_rw(&log_path, false)?;
        let size = log.metadata().at(&log_path)?.len();
        let (offset_index, p1) = IndexFile::load(&dir.join(file_name(base_offset, INDEX_SUFFIX)))?;
        let (time_index, p2) =
            IndexFile::load(&dir.join(file_name(base_offset, TIME_INDEX_SUFFIX)))?;
        let segment = Segment {
            base_offset,
            log_path,
            log: Some(Arc::new(log)),
            size,
            next_offset: base_offset,
            offset_index,
            time_index,
            bytes_since_index_entry: 0,
            max_timestamp: None,
            roll_base_ms: None,
            log_dirty: false,
        };
        Ok((segment, p1.or(p2)))
    }

    pub(crate) fn base_offset(&self) -> i64 {
        self.base_offset
    }
    /// Sets the offset after this segment to the next segment's base: for a segment that is
    /// not the last one, compaction may have removed its last offsets.
    pub(crate) fn extend_next_offset(&mut self, next_segment_base: i64) {
        self.next_offset = self.next_offset.max(next_segment_base);
    }
    pub(crate) fn next_offset(&self) -> i64 {
        self.next_offset
    }
    pub(crate) fn size(&self) -> u64 {
        self.size
    }
    pub(crate) fn is_empty(&self) -> bool {
        self.size == 0
    }
    pub(crate) fn path(&self) -> &Path {
        &self.log_path
    }
    pub(crate) fn max_timestamp(&self) -> Option<MaxTimestamp> {
        self.max_timestamp
    }
    pub(crate) fn roll_base_ms(&self) -> Option<i64> {
        self.roll_base_ms
    }
    pub(crate) fn log_file(&self) -> &Arc<File> {
        self.log
            .as_ref()
            .expect("invariant: the active segment keeps its log file open")
    }

    /// The log file: the held handle, or a fresh one for a segment that released it.
    fn handle(&self) -> Result<Arc<File>, LogError> {
        match &self.log {
            Some(f) => Ok(Arc::clone(f)),
            None => Ok(Arc::new(
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&self.log_path)
                    .at(&self.log_path)?,
            )),
        }
    }

    /// Closes the held log file of a segment that is no longer active (reads reopen it).
    /// Only a segment with nothing left to fsync lets go of its handle.
    pub(crate) fn release_handle(&mut self) {
        if !self.log_dirty {
            self.log = None;
        }
    }

    /// Opens the log file again if it was released (the segment becomes active again).
    pub(crate) fn ensure_handle(&mut self) -> Result<(), LogError> {
        if self.log.is_none() {
            self.log = Some(self.handle()?);
        }
        Ok(())
    }

    /// Writes index entries not yet in the index files, without fsync.
    pub(crate) fn write_indexes(&mut self) -> Result<(), LogError> {
        self.offset_index.write_out(false)?;
        self.time_index.write_out(false)
    }
    pub(crate) fn indexes_full(&self, max_index_bytes: u32) -> bool {
        self.offset_index.is_full(max_index_bytes) || self.time_index.is_full(max_index_bytes)
    }

    fn relative(&self, offset: i64) -> u32 {
        // Callers only pass offsets inside this segment; rolling keeps them within u32.
        u32::try_from(offset - self.base_offset).unwrap_or(u32::MAX)
    }

    fn corrupt(&self, position: u64, reason: impl Into<String>) -> LogError {
        LogError::Corrupt {
            path: self.log_path.clone(),
            position,
            reason: reason.into(),
        }
    }

    /// Scans the batches from `from_pos` to the end of the file.
    pub(crate) fn scan(
        &self,
        from_pos: u64,
        opts: ScanOptions,
        f: impl FnMut(&BatchHeader, u64) -> Result<ControlFlow<()>, LogError>,
    ) -> Result<ScanEnd, LogError> {
        let file = self.handle()?;
        scan_file(&file, &self.log_path, self.size, from_pos, opts, f)
    }

    /// Records one appended batch (at `position`) in the indexes and the timestamp tracking.
    fn index_batch(
        &mut self,
        header: &BatchHeader,
        position: u64,
        index_interval_bytes: u32,
    ) -> Result<(), LogError> {
        if self
            .max_timestamp
            .is_none_or(|m| header.max_timestamp > m.timestamp)
        {
            self.max_timestamp = Some(MaxTimestamp {
                timestamp: header.max_timestamp,
                batch_base_offset: header.base_offset,
            });
        }
        if self.bytes_since_index_entry > u64::from(index_interval_bytes) {
            self.offset_index.append(OffsetEntry {
                relative_offset: self.relative(header.base_offset),
                position: u32::try_from(position).unwrap_or(u32::MAX),
            });
            self.maybe_append_time_entry()?;
            self.bytes_since_index_entry = 0;
        }
        self.bytes_since_index_entry += header.total_len() as u64;
        Ok(())
    }

    /// Appends a time index entry for the current maximum when it is newer than the last one.
    fn maybe_append_time_entry(&mut self) -> Result<(), LogError> {
        if let Some(m) = self.max_timestamp {
            if self
                .time_index
                .last()
                .is_none_or(|t| m.timestamp > t.timestamp)
            {
                self.time_index.append(TimeEntry {
                    timestamp: m.timestamp,
                    relative_offset: self.relative(m.batch_base_offset),
                });
            }
        }
        Ok(())
    }

    /// Writes `buf` (the batches described by `headers`, with final offsets) at the end of the
    /// log file and indexes them. Writes go to the page cache only.
    pub(crate) fn append(
        &mut self,
        buf: &[u8],
        headers: &[(usize, BatchHeader)],
        index_interval_bytes: u32,
        now_ms: i64,
    ) -> Result<(), LogError> {
        let start = self.size;
        let file = self.handle()?;
        if let Err(e) = file.write_all_at(buf, start) {
            // Cut any partial write so the next append starts from a clean boundary.
            let _ = file.set_len(start);
            return Err(LogError::File {
                path: self.log_path.clone(),
                source: e,
            });
        }
        self.log_dirty = true;
        self.size += buf.len() as u64;
        if self.roll_base_ms.is_none() {
            self.roll_base_ms = Some(now_ms);
        }
        if let Some((_, last)) = headers.last() {
            self.next_offset = last.last_offset() + 1;
        }
        for (pos, header) in headers {
            self.index_batch(header, start + *pos as u64, index_interval_bytes)?;
        }
        Ok(())
    }

    /// Scans the whole log file and rebuilds both indexes and the in-memory state.
    ///
    /// With `truncate_invalid`, the file is cut at the first invalid batch (torn tail) and
    /// fsynced; otherwise an invalid batch is a `Corrupt` error.
    pub(crate) fn rebuild(
        &mut self,
        index_interval_bytes: u32,
        verify_crc: bool,
        truncate_invalid: bool,
        now_ms: i64,
    ) -> Result<RebuildOutcome, LogError> {
        self.offset_index.reset();
        self.time_index.reset();
        // Whatever was read may sit only in the page cache (a process crash keeps it there):
        // after a rebuild the whole segment is fsynced, so it counts as durable.
        self.log_dirty = true;
        self.max_timestamp = None;
        self.bytes_since_index_entry = 0;
        self.next_offset = self.base_offset;
        let mut first_batch_ts = None;
        // The scan reads through its own handle so that the closure may update `self`.
        let file = self.handle()?;
        let path = self.log_path.clone();
        let size = self.size;
        let opts = ScanOptions {
            expected_offset: Some(self.base_offset),
            verify_crc,
            chunk: SCAN_CHUNK_BYTES,
        };
        let end = scan_file(&file, &path, size, 0, opts, |h, pos| {
            if first_batch_ts.is_none() {
                first_batch_ts = Some(h.max_timestamp);
            }
            self.index_batch(h, pos, index_interval_bytes)?;
            Ok(ControlFlow::Continue(()))
        })?;
        self.next_offset = end.next_offset.unwrap_or(self.base_offset);
        self.roll_base_ms = first_batch_ts.map(|ts| ts.min(now_ms));
        // Like a sealed segment, the time index ends with the segment's maximum, so that the
        // next open can take it from there without a scan.
        self.maybe_append_time_entry()?;
        let mut truncated_bytes = 0;
        if let Some(problem) = &end.problem {
            if !truncate_invalid {
                return Err(self.corrupt(end.end_pos, problem.clone()));
            }
            truncated_bytes = self.size - end.end_pos;
            file.set_len(end.end_pos).at(&self.log_path)?;
            self.size = end.end_pos;
            self.log_dirty = true;
        }
        self.sync_with(&file)?;
        self.offset_index.write_out(true)?;
        self.time_index.write_out(true)?;
        Ok(RebuildOutcome {
            truncated_bytes,
            problem: end.problem,
        })
    }

    /// Restores the in-memory state of a segment whose indexes passed their checks, without a
    /// full scan. For the last segment (`next_segment_base == None`) the batches after the last
    /// offset index entry are walked to find the next offset; for others it is the next
    /// segment's base. Returns a reason when the indexes turn out to be inconsistent with the
    /// log (the caller then rebuilds).
    pub(crate) fn load_from_indexes(
        &mut self,
        next_segment_base: Option<i64>,
        now_ms: i64,
    ) -> Result<Option<String>, LogError> {
        let known_end = next_segment_base.map(|n| (n - self.base_offset).max(0) as u64);
        if let Some(p) = self.offset_index.sanity_check(self.size, known_end) {
            return Ok(Some(p));
        }
        if let Some(p) = self.time_index.sanity_check(known_end) {
            return Ok(Some(p));
        }
        self.max_timestamp = self.time_index.last().map(|t| MaxTimestamp {
            timestamp: t.timestamp,
            batch_base_offset: self.base_offset + i64::from(t.relative_offset),
        });
        match next_segment_base {
            Some(next) => {
                self.next_offset = next;
                self.bytes_since_index_entry = 0;
            }
            None => {
                let (start_offset, start_pos) = match self.offset_index.last() {
                    Some(e) => (
                        self.base_offset + i64::from(e.relative_offset),
                        u64::from(e.position),
                    ),
                    None => (self.base_offset, 0),
                };
                let mut max_ts = self.max_timestamp;
                let mut first_ts = None;
                let opts = ScanOptions {
                    expected_offset: Some(start_offset),
                    verify_crc: false,
                    chunk: SCAN_CHUNK_BYTES,
                };
                let end = self.scan(start_pos, opts, |h, pos| {
                    if pos == 0 {
                        first_ts = Some(h.max_timestamp);
                    }
                    if max_ts.is_none_or(|m| h.max_timestamp > m.timestamp) {
                        max_ts = Some(MaxTimestamp {
                            timestamp: h.max_timestamp,
                            batch_base_offset: h.base_offset,
                        });
                    }
                    Ok(ControlFlow::Continue(()))
                })?;
                if let Some(p) = end.problem {
                    return Ok(Some(p));
                }
                self.next_offset = end.next_offset.unwrap_or(self.base_offset);
                let relative_end = (self.next_offset - self.base_offset) as u64;
                if let Some(p) = self.time_index.sanity_check(Some(relative_end)) {
                    return Ok(Some(p));
                }
                if let Some(p) = self
                    .offset_index
                    .sanity_check(self.size, Some(relative_end))
                {
                    return Ok(Some(p));
                }
                self.max_timestamp = max_ts;
                self.bytes_since_index_entry = self.size - start_pos;
                if self.size > 0 && first_ts.is_none() {
                    first_ts = Some(self.read_header_at(0)?.max_timestamp);
                }
                self.roll_base_ms = first_ts.map(|ts| ts.min(now_ms));
            }
        }
        Ok(None)
    }

    /// Reads and parses the batch header at `pos`.
    pub(crate) fn read_header_at(&self, pos: u64) -> Result<BatchHeader, LogError> {
        if pos + BATCH_HEADER_LEN as u64 > self.size {
            return Err(self.corrupt(pos, "batch header runs past the end of the segment"));
        }
        let mut buf = [0u8; BATCH_HEADER_LEN];
        self.handle()?
            .read_exact_at(&mut buf, pos)
            .at(&self.log_path)?;
        parse_header(&buf).map_err(|e| self.corrupt(pos, format!("invalid batch header: {e}")))
    }

    /// Reads the whole batch at `pos`.
    pub(crate) fn read_batch(&self, pos: u64, header: &BatchHeader) -> Result<Vec<u8>, LogError> {
        let len = header.total_len();
        if pos + len as u64 > self.size {
            return Err(self.corrupt(pos, "batch runs past the end of the segment"));
        }
        let mut buf = vec![0u8; len];
        self.handle()?
            .read_exact_at(&mut buf, pos)
            .at(&self.log_path)?;
        Ok(buf)
    }

    /// The position and header of the batch containing `offset` (or the first batch after
    /// it), walking forward from the nearest offset index entry. `None` when the segment has no
    /// batch ending at or after `offset`.
    pub(crate) fn find_batch(&self, offset: i64) -> Result<Option<(u64, BatchHeader)>, LogError> {
        self.find_batch_from_pos(offset, self.position_hint(offset))
    }

    /// The position of the nearest indexed batch at or before `offset`.
    fn position_hint(&self, offset: i64) -> u64 {
        if offset <= self.base_offset {
            return 0;
        }
        let relative = u32::try_from(offset - self.base_offset).unwrap_or(u32::MAX);
        self.offset_index
            .floor(relative)
            .map_or(0, |e| u64::from(e.position))
    }

    fn find_batch_from_pos(
        &self,
        offset: i64,
        from_pos: u64,
    ) -> Result<Option<(u64, BatchHeader)>, LogError> {
        let mut found = None;
        let opts = ScanOptions {
            expected_offset: None,
            verify_crc: false,
            chunk: LOOKUP_CHUNK_BYTES,
        };
        let end = self.scan(from_pos, opts, |h, pos| {
            if h.last_offset() >= offset {
                found = Some((pos, *h));
                Ok(ControlFlow::Break(()))
            } else {
                Ok(ControlFlow::Continue(()))
            }
        })?;
        if found.is_none() {
            if let Some(p) = end.problem {
                return Err(self.corrupt(end.end_pos, p));
            }
        }
        Ok(found)
    }

    /// Calls `f(header, position)` for every batch whose last offset is at or after
    /// `from_offset`, in order, until it breaks.
    pub(crate) fn for_each_batch_from(
        &self,
        from_offset: i64,
        mut f: impl FnMut(&BatchHeader, u64) -> Result<ControlFlow<()>, LogError>,
    ) -> Result<ControlFlow<()>, LogError> {
        let opts = ScanOptions {
            expected_offset: None,
            verify_crc: false,
            chunk: SCAN_CHUNK_BYTES,
        };
        let mut flow = ControlFlow::Continue(());
        let end = self.scan(self.position_hint(from_offset), opts, |h, pos| {
            if h.last_offset() < from_offset {
                return Ok(ControlFlow::Continue(()));
            }
            flow = f(h, pos)?;
            Ok(flow)
        })?;
        if let Some(p) = end.problem {
            return Err(self.corrupt(end.end_pos, p));
        }
        Ok(flow)
    }

    /// The position to start a time search for `timestamp`: every batch before it has a
    /// `max_timestamp` below `timestamp`.
    pub(crate) fn time_search_start(&self, timestamp: i64) -> u64 {
        match self.time_index.last_below(timestamp) {
            Some(t) => self.position_hint(self.base_offset + i64::from(t.relative_offset)),
            None => 0,
        }
    }

    /// Appends whole batches from `pos` to `out`: always the first one when `take_first`,
    /// then more while the total stays within `max_bytes`; none whose last offset is at or
    /// after `offset_limit`. Returns the last offset appended and whether the read reached the
    /// end of the segment without hitting a limit.
    pub(crate) fn read_batches(
        &self,
        pos: u64,
        first: &BatchHeader,
        max_bytes: usize,
        take_first: bool,
        offset_limit: i64,
        out: &mut Vec<u8>,
    ) -> Result<(Option<i64>, bool), LogError> {
        let Some(budget) = first_budget(first, max_bytes, take_first, offset_limit) else {
            return Ok((None, false));
        };
        let want = (budget as u64).min(self.size.saturating_sub(pos)) as usize;
        let old = out.len();
        out.resize(old + want, 0);
        let file = self.handle()?;
        if let Err(e) = file.read_exact_at(&mut out[old..], pos) {
            out.truncate(old);
            return Err(LogError::File {
                path: self.log_path.clone(),
                source: e,
            });
        }
        let mut taken = 0usize;
        let mut last = None;
        let mut hit_limit = false;
        while want - taken >= BATCH_HEADER_LEN {
            let header = match parse_header(&out[old + taken..old + want]) {
                Ok(h) => h,
                Err(e) => {
                    out.truncate(old);
                    return Err(
                        self.corrupt(pos + taken as u64, format!("invalid batch header: {e}"))
                    );
                }
            };
            if header.total_len() > want - taken {
                hit_limit = true;
                break;
            }
            if header.last_offset() >= offset_limit {
                hit_limit = true;
                break;
            }
            taken += header.total_len();
            last = Some(header.last_offset());
        }
        out.truncate(old + taken);
        let reached_end = !hit_limit && pos + taken as u64 == self.size;
        Ok((last, reached_end))
    }

    /// Like [`Segment::read_batches`], but returns the byte range to send (`pos..end`) instead
    /// of the bytes: the record data stays in the page cache, for `sendfile(2)`. Same limits
    /// and results. Only a few batch headers are read: the offset index finds the indexed
    /// batch nearest the size limit, and the walk goes on from there. Offsets are dense (each
    /// batch starts right after the previous one's last offset), so the records in the range
    /// are its offset span.
    pub(crate) fn range_batches(
        &self,
        pos: u64,
        first: &BatchHeader,
        max_bytes: usize,
        take_first: bool,
        offset_limit: i64,
    ) -> Result<BatchRange, LogError> {
        let mut range = BatchRange {
            file: None,
            end: pos,
            last: None,
            records: 0,
            reached_end: false,
        };
        let Some(budget) = first_budget(first, max_bytes, take_first, offset_limit) else {
            return Ok(range);
        };
        let file = self.handle()?;
        let mut limit = pos + (budget as u64).min(self.size.saturating_sub(pos));
        let mut hit_limit = false;
        if offset_limit < self.next_offset {
            // The limit (high watermark) falls in this segment: nothing from the batch that
            // holds it on.
            hit_limit = true;
            if let Some((at, _)) = self.find_batch(offset_limit)? {
                limit = limit.min(at);
            }
        }
        // Start the walk at the last indexed batch within the limit, past the first batch.
        let mut at = pos + first.total_len() as u64;
        range.last = Some(first.last_offset());
        if let Some(e) = self.offset_index.floor_position(limit) {
            let indexed = u64::from(e.position);
            if indexed > at {
                at = indexed;
                range.last = Some(self.base_offset + i64::from(e.relative_offset) - 1);
            }
        }
        // Headers are read HEADER_PEEK bytes at a time, so small batches cost one read for
        // many headers and large ones one small read each.
        const HEADER_PEEK: usize = 4096;
        let mut peek = [0u8; HEADER_PEEK];
        let (mut peek_pos, mut peek_len) = (at, 0usize);
        while limit.saturating_sub(at) >= BATCH_HEADER_LEN as u64 {
            if at < peek_pos || at + BATCH_HEADER_LEN as u64 > peek_pos + peek_len as u64 {
                let n = (HEADER_PEEK as u64).min(self.size - at) as usize;
                file.read_exact_at(&mut peek[..n], at).at(&self.log_path)?;
                (peek_pos, peek_len) = (at, n);
            }
            let from = (at - peek_pos) as usize;
            let header = parse_header(&peek[from..peek_len])
                .map_err(|e| self.corrupt(at, format!("invalid batch header: {e}")))?;
            if header.total_len() as u64 > limit - at || header.last_offset() >= offset_limit {
                hit_limit = true;
                break;
            }
            at += header.total_len() as u64;
            range.last = Some(header.last_offset());
        }
        if at < limit {
            // Stopped short of the size limit: a batch did not fit.
            hit_limit = true;
        }
        range.end = at;
        range.records = range.last.map_or(0, |last| last - first.base_offset + 1);
        range.reached_end = !hit_limit && at == self.size;
        range.file = Some(file);
        Ok(range)
    }

    /// Removes every batch at or after `offset` (cut at the start of the batch containing it)
    /// and rebuilds the indexes. Returns the bytes removed.
    pub(crate) fn truncate_to(
        &mut self,
        offset: i64,
        index_interval_bytes: u32,
    ) -> Result<u64, LogError> {
        let Some((pos, _)) = self.find_batch(offset)? else {
            return Ok(0);
        };
        let removed = self.size - pos;
        let roll_base_ms = self.roll_base_ms;
        self.handle()?.set_len(pos).at(&self.log_path)?;
        self.size = pos;
        self.rebuild(index_interval_bytes, false, false, i64::MAX)?;
        // The segment keeps its age unless it lost its first batch.
        self.roll_base_ms = if self.is_empty() { None } else { roll_base_ms };
        Ok(removed)
    }

    /// Prepares the segment for no longer being active (roll or close): records the final
    /// maximum timestamp in the time index and fsyncs everything that was written.
    pub(crate) fn seal(&mut self) -> Result<(), LogError> {
        self.maybe_append_time_entry()?;
        self.sync()?;
        self.offset_index.write_out(true)?;
        self.time_index.write_out(true)
    }

    /// fdatasyncs the log file if it was written since the last sync.
    pub(crate) fn sync(&mut self) -> Result<(), LogError> {
        if self.log_dirty {
            let file = self.handle()?;
            self.sync_with(&file)?;
        }
        Ok(())
    }

    fn sync_with(&mut self, file: &File) -> Result<(), LogError> {
        if self.log_dirty {
            file.sync_data().at(&self.log_path)?;
            self.log_dirty = false;
        }
        Ok(())
    }

    /// Records that the log file was fsynced by someone else (a `SyncHandle`).
    pub(crate) fn mark_synced(&mut self) {
        self.log_dirty = false;
    }

    /// Removes the segment's files.
    pub(crate) fn delete_files(self) -> Result<(), LogError> {
        // The log file goes first: an index without its log is removed at the next open,
        // while a log without its index is merely re-indexed.
        remove_if_exists(&self.log_path).at(&self.log_path)?;
        remove_if_exists(self.offset_index.path()).at(self.offset_index.path())?;
        remove_if_exists(self.time_index.path()).at(self.time_index.path())?;
        let dir = self.log_path.parent().unwrap_or(Path::new("."));
        crate::txn_index::remove(dir, self.base_offset)?;
        Ok(())
    }
}
