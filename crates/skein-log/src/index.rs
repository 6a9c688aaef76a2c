//! Sparse offset and time indexes of one segment.
//!
//! Both are flat files of fixed-size big-endian entries, kept in a `Vec` for binary search (no
//! mmap: the workspace denies `unsafe_code`) and written to their files without holding a
//! descriptor: pending entries are appended at roll, checkpoint and close (see `IndexFile`).
//!
//! - `.index`: `(relative_offset u32, position u32)`, where `relative_offset` is a batch's base
//!   offset minus the segment's base offset and `position` is where that batch starts in the
//!   `.log` file. One entry every `index_interval_bytes` of log.
//! - `.timeindex`: `(timestamp i64, relative_offset u32)`. `timestamp` is the largest batch
//!   `max_timestamp` in the segment up to and including the batch at `relative_offset`, and that
//!   batch is the first one to reach it. Entries are strictly increasing in timestamp.
//!   Consequence used by lookups: every batch at or before the entry's offset has
//!   `max_timestamp <= timestamp`.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{IoContext, LogError};

/// Index files larger than this are treated as damaged and rebuilt rather than read into
/// memory; a healthy index is bounded by `segment_index_bytes` (10 MiB by default).
const MAX_INDEX_FILE_BYTES: u64 = 256 * 1024 * 1024;

/// A fixed-size index entry.
pub(crate) trait IndexEntry: Copy {
    const SIZE: usize;
    fn encode(&self, out: &mut [u8]);
    fn decode(buf: &[u8]) -> Self;
}

/// `(relative offset, file position)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

impl IndexEntry for OffsetEntry {
    const SIZE: usize = 8;
    fn encode(&self, out: &mut [u8]) {
        out[0..4].copy_from_slice(&self.relative_offset.to_be_bytes());
        out[4..8].copy_from_slice(&self.position.to_be_bytes());
    }
    fn decode(b: &[u8]) -> Self {
        OffsetEntry {
            relative_offset: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            position: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        }
    }
}

/// `(timestamp, relative offset)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    pub timestamp: i64,
    pub relative_offset: u32,
}

impl IndexEntry for TimeEntry {
    const SIZE: usize = 12;
    fn encode(&self, out: &mut [u8]) {
        out[0..8].copy_from_slice(&self.timestamp.to_be_bytes());
        out[8..12].copy_from_slice(&self.relative_offset.to_be_bytes());
    }
    fn decode(b: &[u8]) -> Self {
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&b[0..8]);
        TimeEntry {
            timestamp: i64::from_be_bytes(ts),
            relative_offset: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
        }
    }
}

/// One index file and its in-memory copy.
///
/// No file descriptor is held: entries are kept in memory and written out (open, write,
/// close) by `write_out`, at roll, checkpoint and close. The file on disk may therefore lag
/// the log (or, after a `reset`, hold stale entries past the log end) until then; recovery
/// rebuilds the active segment's indexes after an unclean shutdown and sanity-checks the others.
#[derive(Debug)]
pub(crate) struct IndexFile<E: IndexEntry> {
    path: PathBuf,
    entries: Vec<E>,
    /// How many leading entries are in the file.
    persisted: usize,
    /// Whether the file may hold bytes past `persisted` entries (after `reset` or creation),
    /// to be cut at the next write.
    stale_tail: bool,
    /// Whether the file is known to exist.
    exists: bool,
    /// Whether entries were written since the last fsync.
    dirty: bool,
}

/// Result of loading an index: the index, and why it cannot be trusted (if it cannot).
pub(crate) type Loaded<E> = (IndexFile<E>, Option<String>);

impl<E: IndexEntry> IndexFile<E> {
    /// Loads an index file without keeping it open. A missing file, a size that is not a
    /// multiple of the entry size, or an oversized file is reported as a problem; the caller
    /// decides whether to rebuild.
    pub(crate) fn load(path: &Path) -> Result<Loaded<E>, LogError> {
        let mut index = IndexFile {
            path: path.to_path_buf(),
            entries: Vec::new(),
            persisted: 0,
            stale_tail: true,
            exists: true,
            dirty: false,
        };
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                index.exists = false;
                index.stale_tail = false;
                return Ok((index, Some("index file is missing".to_string())));
            }
            Err(e) => {
                return Err(LogError::File {
                    path: path.to_path_buf(),
                    source: e,
                })
            }
        };
        let len = file.metadata().at(path)?.len();
        if len > MAX_INDEX_FILE_BYTES {
            return Ok((index, Some(format!("index file is {len} bytes"))));
        }
        if len % E::SIZE as u64 != 0 {
            return Ok((
                index,
                Some(format!(
                    "index file size {len} is not a multiple of {}",
                    E::SIZE
                )),
            ));
        }
        let mut buf = vec![0u8; len as usize];
        file.read_exact_at(&mut buf, 0).at(path)?;
        index.entries = buf.chunks_exact(E::SIZE).map(E::decode).collect();
        index.persisted = index.entries.len();
        index.stale_tail = false;
        Ok((index, None))
    }

    /// Creates or empties an index file (closed again at once: entries are written lazily).
    pub(crate) fn create_empty(path: &Path) -> Result<Self, LogError> {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .at(path)?;
        Ok(IndexFile {
            path: path.to_path_buf(),
            entries: Vec::new(),
            persisted: 0,
            stale_tail: false,
            exists: true,
            // An empty new file needs no data sync: the directory fsync makes it exist.
            dirty: false,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn last(&self) -> Option<E> {
        self.entries.last().copied()
    }

    /// Whether another entry would make the file larger than `max_bytes`.
    pub(crate) fn is_full(&self, max_bytes: u32) -> bool {
        (self.entries.len() + 1) * E::SIZE > max_bytes as usize
    }

    /// Adds an entry in memory; `write_out` puts it in the file.
    pub(crate) fn append(&mut self, entry: E) {
        self.entries.push(entry);
    }

    /// Empties the index (the file is cut at the next `write_out`).
    pub(crate) fn reset(&mut self) {
        self.entries.clear();
        self.persisted = 0;
        self.stale_tail = self.exists;
    }

    /// Writes the entries not yet in the file (creating it if need be) and, with `sync`,
    /// fdatasyncs it. Opens and closes the file: no descriptor is kept.
    pub(crate) fn write_out(&mut self, sync: bool) -> Result<(), LogError> {
        if self.entries.is_empty() && !self.exists {
            // Nothing to keep: a missing index reads as an empty one.
            return Ok(());
        }
        let pending = self.persisted < self.entries.len() || self.stale_tail || !self.exists;
        let needs_sync = sync && self.dirty;
        if !pending && !needs_sync {
            return Ok(());
        }
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.path)
            .at(&self.path)?;
        if self.persisted < self.entries.len() {
            let mut buf = vec![0u8; (self.entries.len() - self.persisted) * E::SIZE];
            for (e, out) in self.entries[self.persisted..]
                .iter()
                .zip(buf.chunks_exact_mut(E::SIZE))
            {
                e.encode(out);
            }
            file.write_all_at(&buf, (self.persisted * E::SIZE) as u64)
                .at(&self.path)?;
            self.dirty = true;
        }
        if self.stale_tail {
            file.set_len((self.entries.len() * E::SIZE) as u64)
                .at(&self.path)?;
            self.dirty = true;
        }
        if !self.exists {
            self.dirty = true;
        }
        self.persisted = self.entries.len();
        self.stale_tail = false;
        self.exists = true;
        if sync && self.dirty {
            file.sync_data().at(&self.path)?;
            self.dirty = false;
        }
        Ok(())
    }
}

impl IndexFile<OffsetEntry> {
    /// The last entry whose relative offset is `<= relative_offset`.
    pub(crate) fn floor(&self, relative_offset: u32) -> Option<OffsetEntry> {
        let n = self
            .entries
            .partition_point(|e| e.relative_offset <= relative_offset);
        n.checked_sub(1).map(|i| self.entries[i])
    }

    /// The last entry whose position is `<= position`.
    pub(crate) fn floor_position(&self, position: u64) -> Option<OffsetEntry> {
        let n = self
            .entries
            .partition_point(|e| u64::from(e.position) <= position);
        n.checked_sub(1).map(|i| self.entries[i])
    }

    /// Checks that entries strictly increase and point inside a log of `log_size` bytes, with
    /// relative offsets below `relative_end` when that is known.
    pub(crate) fn sanity_check(&self, log_size: u64, relative_end: Option<u64>) -> Option<String> {
        let mut prev: Option<OffsetEntry> = None;
        for e in &self.entries {
            if let Some(p) = prev {
                if e.relative_offset <= p.relative_offset || e.position <= p.position {
                    return Some(format!(
                        "offset index entries not increasing: {p:?} then {e:?}"
                    ));
                }
            }
            if u64::from(e.position) >= log_size {
                return Some(format!(
                    "offset index entry {e:?} points past the log end ({log_size} bytes)"
                ));
            }
            if relative_end.is_some_and(|end| u64::from(e.relative_offset) >= end) {
                return Some(format!(
                    "offset index entry {e:?} is beyond the segment's offsets"
                ));
            }
            prev = Some(*e);
        }
        None
    }
}

impl IndexFile<TimeEntry> {
    /// The last entry whose timestamp is strictly below `timestamp`.
    pub(crate) fn last_below(&self, timestamp: i64) -> Option<TimeEntry> {
        let n = self.entries.partition_point(|e| e.timestamp < timestamp);
        n.checked_sub(1).map(|i| self.entries[i])
    }

    /// Checks that timestamps strictly increase, offsets do not decrease, and offsets are below
    /// `relative_end` when that is known.
    pub(crate) fn sanity_check(&self, relative_end: Option<u64>) -> Option<String> {
        let mut prev: Option<TimeEntry> = None;
        for e in &self.entries {
            if let Some(p) = prev {
                if e.timestamp <= p.timestamp || e.relative_offset < p.relative_offset {
                    return Some(format!(
                        "time index entries not increasing: {p:?} then {e:?}"
                    ));
                }
            }
            if relative_end.is_some_and(|end| u64::from(e.relative_offset) >= end) {
                return Some(format!(
                    "time index entry {e:?} is beyond the segment's offsets"
                ));
            }
            prev = Some(*e);
        }
        None
    }
}

/// Ignores a missing file when removing.
pub(crate) fn remove_if_exists(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}
