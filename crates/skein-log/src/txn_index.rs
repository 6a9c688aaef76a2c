//! The aborted-transaction index: for every transaction that ended with an ABORT marker, the
//! producer id, the transaction's first offset, the marker's offset (its last offset) and the
//! partition's last stable offset once it ended. A `read_committed` fetch answers the aborted
//! transactions that overlap what it returns, so the client can drop their records.
//!
//! As in Kafka, the entries live beside the segment that holds the marker, in
//! `<base>.txnindex`: fixed 34-byte entries, big-endian, `version i16 (0)`, `producer_id i64`,
//! `first_offset i64`, `last_offset i64`, `last_stable_offset i64`, in marker order. A
//! transaction may start in an earlier segment than its marker; a lookup from an offset
//! therefore reads the index of the segment holding that offset and of every later one.
//!
//! Entries are appended to the file as the markers are written, without an fsync: the owner
//! rebuilds the entries whose markers lie after its newest state snapshot when it loads
//! (see [`Log::truncate_txn_index_from`]), and [`Log::write_snapshot`] fsyncs the files written
//! since the last snapshot first, so what a snapshot covers is durable. A torn last entry is cut
//! off at open; entries past the log end (records lost in recovery) are dropped; the file goes
//! with its segment (retention, DeleteRecords, truncation).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{IoContext, LogError};
use crate::index::remove_if_exists;
use crate::log::Log;
use crate::segment;

pub(crate) const TXN_INDEX_SUFFIX: &str = "txnindex";
const ENTRY_VERSION: i16 = 0;
/// Bytes of one entry on disk.
pub(crate) const ENTRY_LEN: usize = 2 + 8 + 8 + 8 + 8;

/// One aborted transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    /// The offset of the transaction's first batch in this partition.
    pub first_offset: i64,
    /// The offset of its ABORT marker.
    pub last_offset: i64,
    /// The partition's last stable offset right after the marker (the first offset of the
    /// oldest transaction still open, or the offset after the marker).
    pub last_stable_offset: i64,
}

impl AbortedTxn {
    fn encode(&self) -> [u8; ENTRY_LEN] {
        let mut out = [0u8; ENTRY_LEN];
        out[0..2].copy_from_slice(&ENTRY_VERSION.to_be_bytes());
        out[2..10].copy_from_slice(&self.producer_id.to_be_bytes());
        out[10..18].copy_from_slice(&self.first_offset.to_be_bytes());
        out[18..26].copy_from_slice(&self.last_offset.to_be_bytes());
        out[26..34].copy_from_slice(&self.last_stable_offset.to_be_bytes());
        out
    }

    fn decode(b: &[u8]) -> Result<AbortedTxn, String> {
        let i64_at =
            |at: usize| i64::from_be_bytes(b[at..at + 8].try_into().expect("an entry is 34 bytes"));
        let version = i16::from_be_bytes([b[0], b[1]]);
        if version != ENTRY_VERSION {
            return Err(format!("unknown entry version {version}"));
        }
        let txn = AbortedTxn {
            producer_id: i64_at(2),
            first_offset: i64_at(10),
            last_offset: i64_at(18),
            last_stable_offset: i64_at(26),
        };
        if txn.first_offset < 0 || txn.last_offset < txn.first_offset {
            return Err(format!(
                "entry spans offsets {}..={}",
                txn.first_offset, txn.last_offset
            ));
        }
        Ok(txn)
    }
}

fn path(dir: &Path, base: i64) -> PathBuf {
    dir.join(segment::file_name(base, TXN_INDEX_SUFFIX))
}

/// The aborted transactions of every segment, by segment base offset.
#[derive(Debug, Default)]
pub(crate) struct TxnIndexes {
    by_segment: BTreeMap<i64, Vec<AbortedTxn>>,
    /// Segments whose files were appended to since the last [`TxnIndexes::sync`].
    dirty: BTreeSet<i64>,
}

impl TxnIndexes {
    /// Loads the index files of the segments `bases` (ascending) of a log ending at `leo`.
    /// Damage is repaired by dropping the entries from the first bad one on, and reported
    /// in `problems`; entries whose marker is at or past `leo` are dropped too.
    pub(crate) fn load(
        dir: &Path,
        bases: &[i64],
        leo: i64,
        problems: &mut Vec<String>,
    ) -> Result<TxnIndexes, LogError> {
        merge_orphans(dir, bases)?;
        let mut indexes = TxnIndexes::default();
        for (i, &base) in bases.iter().enumerate() {
            let p = path(dir, base);
            let bytes = match fs::read(&p) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(LogError::File { path: p, source: e }),
            };
            let end = bases.get(i + 1).copied().unwrap_or(leo).min(leo);
            let mut entries = Vec::with_capacity(bytes.len() / ENTRY_LEN);
            let mut problem = None;
            for chunk in bytes.chunks(ENTRY_LEN) {
                if chunk.len() < ENTRY_LEN {
                    problem = Some(format!("a torn entry of {} bytes", chunk.len()));
                    break;
                }
                match AbortedTxn::decode(chunk) {
                    Ok(t) if t.last_offset < base => {
                        problem = Some(format!("a marker at {} before the segment", t.last_offset));
                        break;
                    }
                    Ok(t) if t.last_offset >= end => {
                        // The marker is gone (the log was cut back): so is everything after.
                        break;
                    }
                    Ok(t)
                        if entries
                            .last()
                            .is_some_and(|l: &AbortedTxn| l.last_offset >= t.last_offset) =>
                    {
                        problem = Some(format!("markers out of order at {}", t.last_offset));
                        break;
                    }
                    Ok(t) => entries.push(t),
                    Err(reason) => {
                        problem = Some(reason);
                        break;
                    }
                }
            }
            if let Some(reason) = &problem {
                problems.push(format!("{}: {reason}; later entries dropped", p.display()));
            }
            if entries.len() * ENTRY_LEN != bytes.len() {
                set_len(&p, entries.len())?;
            }
            if !entries.is_empty() {
                indexes.by_segment.insert(base, entries);
            }
        }
        Ok(indexes)
    }

    /// Appends an entry to the index of the segment based at `base`.
    pub(crate) fn append(
        &mut self,
        dir: &Path,
        base: i64,
        txn: AbortedTxn,
    ) -> Result<(), LogError> {
        let p = path(dir, base);
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .at(&p)?;
        f.write_all(&txn.encode()).at(&p)?;
        self.by_segment.entry(base).or_default().push(txn);
        self.dirty.insert(base);
        Ok(())
    }

    /// The entries whose marker is at or after `from` and whose transaction starts before
    /// `upper`, in marker order.
    pub(crate) fn collect(&self, from: i64, upper: i64, from_segment: i64) -> Vec<AbortedTxn> {
        self.by_segment
            .range(from_segment..)
            .flat_map(|(_, v)| v.iter())
            .filter(|t| t.last_offset >= from && t.first_offset < upper)
            .copied()
            .collect()
    }

    /// Drops the entries whose marker is at or after `offset` (files cut to match).
    pub(crate) fn truncate_from(&mut self, dir: &Path, offset: i64) -> Result<(), LogError> {
        let bases: Vec<i64> = self.by_segment.keys().copied().collect();
        for base in bases {
            let Some(entries) = self.by_segment.get_mut(&base) else {
                continue;
            };
            let keep = entries.partition_point(|t| t.last_offset < offset);
            if keep == entries.len() {
                continue;
            }
            entries.truncate(keep);
            let p = path(dir, base);
            if keep == 0 {
                self.by_segment.remove(&base);
                self.dirty.remove(&base);
                remove_if_exists(&p).at(&p)?;
            } else {
                set_len(&p, keep)?;
                self.dirty.insert(base);
            }
        }
        Ok(())
    }

    /// Whether segments `bases` hold an entry of one of `txns` (producer id, marker offset).
    pub(crate) fn has_any(&self, bases: &[i64], txns: &[(i64, i64)]) -> bool {
        bases.iter().any(|b| {
            self.by_segment.get(b).is_some_and(|v| {
                v.iter()
                    .any(|t| txns.contains(&(t.producer_id, t.last_offset)))
            })
        })
    }

    /// Drops the entries of `txns` (producer id, marker offset) from the indexes of segments
    /// `bases` (each changed file rewritten atomically, or removed when left empty).
    pub(crate) fn drop_entries(
        &mut self,
        dir: &Path,
        bases: &[i64],
        txns: &[(i64, i64)],
    ) -> Result<(), LogError> {
        for &b in bases {
            let Some(entries) = self.by_segment.get_mut(&b) else {
                continue;
            };
            let before = entries.len();
            entries.retain(|t| !txns.contains(&(t.producer_id, t.last_offset)));
            if entries.len() == before {
                continue;
            }
            if entries.is_empty() {
                self.by_segment.remove(&b);
                remove(dir, b)?;
                crate::checkpoint::sync_dir(dir)?;
            } else {
                write_atomically(dir, b, entries)?;
            }
            self.dirty.remove(&b);
        }
        Ok(())
    }

    /// The cleaner merged segments `others` into the one based at `base`: their entries
    /// move into `base`'s index (its file rewritten atomically), less those of `gone`
    /// (producer id, marker offset: transactions the cleaner left without data), then their
    /// files go. A crash in between is finished by [`TxnIndexes::load`] (`merge_orphans`).
    pub(crate) fn merge_segments(
        &mut self,
        dir: &Path,
        base: i64,
        others: &[i64],
        gone: &[(i64, i64)],
    ) -> Result<(), LogError> {
        let mut merged = self.by_segment.remove(&base).unwrap_or_default();
        let mut changed = false;
        for b in others {
            if let Some(entries) = self.by_segment.remove(b) {
                merged.extend(entries);
                changed = true;
            }
            self.dirty.remove(b);
        }
        let before = merged.len();
        merged.retain(|t| !gone.contains(&(t.producer_id, t.last_offset)));
        changed |= merged.len() != before;
        if changed {
            merged.sort_by_key(|t| t.last_offset);
            merged.dedup();
            if merged.is_empty() {
                remove(dir, base)?;
            } else {
                write_atomically(dir, base, &merged)?;
            }
            self.dirty.remove(&base);
        }
        for b in others {
            remove(dir, *b)?;
        }
        if !merged.is_empty() {
            self.by_segment.insert(base, merged);
        }
        Ok(())
    }

    /// Forgets the entries of segments no longer in the log (their files were deleted with
    /// the segment).
    pub(crate) fn retain_segments(&mut self, first_base: i64) {
        self.by_segment.retain(|&b, _| b >= first_base);
        self.dirty.retain(|&b| b >= first_base);
    }

    /// fsyncs the files appended to since the last call.
    pub(crate) fn sync(&mut self, dir: &Path) -> Result<(), LogError> {
        for base in std::mem::take(&mut self.dirty) {
            let p = path(dir, base);
            match File::open(&p) {
                Ok(f) => f.sync_data().at(&p)?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(LogError::File { path: p, source: e }),
            }
        }
        Ok(())
    }

    /// Every entry, in marker order (tests and tools).
    pub(crate) fn all(&self) -> Vec<AbortedTxn> {
        self.by_segment.values().flatten().copied().collect()
    }
}

/// Reads every whole, decodable entry of an index file (none if it is missing).
fn read_entries(p: &Path) -> Result<Vec<AbortedTxn>, LogError> {
    let bytes = match fs::read(p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(LogError::File {
                path: p.to_path_buf(),
                source: e,
            })
        }
    };
    Ok(bytes
        .chunks_exact(ENTRY_LEN)
        .map_while(|c| AbortedTxn::decode(c).ok())
        .collect())
}

/// Writes segment `base`'s index as exactly `entries` (a temporary file renamed over it,
/// fsynced with its directory).
fn write_atomically(dir: &Path, base: i64, entries: &[AbortedTxn]) -> Result<(), LogError> {
    let p = path(dir, base);
    let tmp = p.with_extension("txnindex.tmp");
    {
        let mut f = File::create(&tmp).at(&tmp)?;
        for t in entries {
            f.write_all(&t.encode()).at(&tmp)?;
        }
        f.sync_all().at(&tmp)?;
    }
    fs::rename(&tmp, &p).at(&p)?;
    crate::checkpoint::sync_dir(dir)
}

/// Index files of segments that no longer exist (the cleaner merged them into the segment
/// before, and a crash came before it moved their entries): their entries move into the
/// index of the segment now holding those offsets (duplicates dropped), then they go.
fn merge_orphans(dir: &Path, bases: &[i64]) -> Result<(), LogError> {
    let mut orphans = Vec::new();
    for entry in fs::read_dir(dir).at(dir)? {
        let entry = entry.at(dir)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(b) = crate::recovery::parse_base_offset(name, TXN_INDEX_SUFFIX) {
            if bases.binary_search(&b).is_err() {
                orphans.push(b);
            }
        }
    }
    orphans.sort_unstable();
    for orphan in orphans {
        let owner = bases.iter().copied().take_while(|&b| b < orphan).last();
        if let Some(owner) = owner {
            let mut entries = read_entries(&path(dir, owner))?;
            entries.extend(read_entries(&path(dir, orphan))?);
            entries.sort_by_key(|t| t.last_offset);
            entries.dedup();
            write_atomically(dir, owner, &entries)?;
        }
        remove(dir, orphan)?;
    }
    Ok(())
}

/// Cuts an index file to `entries` entries.
fn set_len(p: &Path, entries: usize) -> Result<(), LogError> {
    let f = OpenOptions::new().write(true).open(p).at(p)?;
    f.set_len((entries * ENTRY_LEN) as u64).at(p)?;
    Ok(())
}

/// Removes the index file of the segment based at `base`, if any.
pub(crate) fn remove(dir: &Path, base: i64) -> Result<(), LogError> {
    let p = path(dir, base);
    remove_if_exists(&p).at(&p)
}

impl Log {
    /// Records an aborted transaction in the index of the segment holding its marker
    /// (`txn.last_offset`, which must be in the log).
    pub fn append_aborted_txn(&mut self, txn: AbortedTxn) -> Result<(), LogError> {
        let leo = self.log_end_offset();
        if txn.last_offset < self.segments[0].base_offset()
            || txn.last_offset >= leo
            || txn.first_offset > txn.last_offset
        {
            return Err(LogError::OffsetOutOfRange {
                requested: txn.last_offset,
                log_start: self.segments[0].base_offset(),
                log_end: leo,
            });
        }
        let base = self.segments[self.segment_index_for(txn.last_offset)].base_offset();
        self.txn.append(&self.dir, base, txn)
    }

    /// The aborted transactions that overlap `[from, upper)`: marker at or after `from`,
    /// first offset before `upper`, in marker order (what a read_committed fetch of that
    /// range answers).
    pub fn aborted_txns(&self, from: i64, upper: i64) -> Vec<AbortedTxn> {
        let from_segment = self.segments[self.segment_index_for(from)].base_offset();
        self.txn.collect(from, upper, from_segment)
    }

    /// Every aborted transaction the index holds, in marker order.
    pub fn all_aborted_txns(&self) -> Vec<AbortedTxn> {
        self.txn.all()
    }

    /// Drops the index entries whose marker is at or after `offset`: the owner rebuilds them
    /// from the batches after its state snapshot, or the log was cut there.
    pub fn truncate_txn_index_from(&mut self, offset: i64) -> Result<(), LogError> {
        self.txn.truncate_from(&self.dir, offset)
    }

    /// fsyncs the index files appended to since the last call (before a snapshot).
    pub(crate) fn sync_txn_indexes(&mut self) -> Result<(), LogError> {
        self.txn.sync(&self.dir)
    }

    /// Forgets the entries of segments deleted from the front of the log.
    pub(crate) fn forget_deleted_txn_segments(&mut self) {
        let first = self.segments[0].base_offset();
        self.txn.retain_segments(first);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txn(pid: i64, first: i64, last: i64) -> AbortedTxn {
        AbortedTxn {
            producer_id: pid,
            first_offset: first,
            last_offset: last,
            last_stable_offset: last + 1,
        }
    }

    #[test]
    fn entries_round_trip_and_damage_is_refused() {
        let t = txn(7, 3, 9);
        assert_eq!(AbortedTxn::decode(&t.encode()).unwrap(), t);
        let mut bad = t.encode();
        bad[1] = 1;
        assert!(AbortedTxn::decode(&bad).unwrap_err().contains("version"));
        assert!(AbortedTxn::decode(&txn(7, 9, 3).encode()).is_err());
    }

    #[test]
    fn load_cuts_torn_tails_and_entries_past_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let mut idx = TxnIndexes::default();
        idx.append(dir.path(), 0, txn(1, 0, 4)).unwrap();
        idx.append(dir.path(), 0, txn(2, 2, 8)).unwrap();
        idx.append(dir.path(), 10, txn(3, 5, 12)).unwrap();
        // A torn third entry in segment 0.
        let p0 = path(dir.path(), 0);
        let mut f = OpenOptions::new().append(true).open(&p0).unwrap();
        f.write_all(&[0, 0, 1, 2]).unwrap();
        drop(f);
        let mut problems = Vec::new();
        let loaded = TxnIndexes::load(dir.path(), &[0, 10], 20, &mut problems).unwrap();
        assert_eq!(
            loaded.all(),
            vec![txn(1, 0, 4), txn(2, 2, 8), txn(3, 5, 12)]
        );
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(fs::metadata(&p0).unwrap().len(), 2 * ENTRY_LEN as u64);
        // The log now ends at 8: the markers at 8 and 12 are gone.
        let loaded = TxnIndexes::load(dir.path(), &[0, 10], 8, &mut problems).unwrap();
        assert_eq!(loaded.all(), vec![txn(1, 0, 4)]);
        assert_eq!(fs::metadata(&p0).unwrap().len(), ENTRY_LEN as u64);
        assert_eq!(fs::metadata(path(dir.path(), 10)).unwrap().len(), 0);
    }

    #[test]
    fn collect_reads_overlapping_ranges_and_truncation_cuts_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut idx = TxnIndexes::default();
        idx.append(dir.path(), 0, txn(1, 0, 4)).unwrap();
        idx.append(dir.path(), 0, txn(2, 2, 8)).unwrap();
        idx.append(dir.path(), 10, txn(3, 5, 12)).unwrap();
        idx.append(dir.path(), 10, txn(4, 13, 15)).unwrap();
        let pids = |v: Vec<AbortedTxn>| v.iter().map(|t| t.producer_id).collect::<Vec<_>>();
        assert_eq!(pids(idx.collect(0, 100, 0)), vec![1, 2, 3, 4]);
        assert_eq!(pids(idx.collect(5, 13, 0)), vec![2, 3]);
        assert_eq!(pids(idx.collect(9, 14, 0)), vec![3, 4]);
        assert_eq!(pids(idx.collect(13, 14, 10)), vec![4]);
        assert_eq!(pids(idx.collect(16, 100, 10)), Vec::<i64>::new());
        idx.truncate_from(dir.path(), 12).unwrap();
        assert_eq!(pids(idx.all()), vec![1, 2]);
        assert!(!path(dir.path(), 10).exists());
        idx.truncate_from(dir.path(), 5).unwrap();
        assert_eq!(pids(idx.all()), vec![1]);
        assert_eq!(
            fs::metadata(path(dir.path(), 0)).unwrap().len(),
            ENTRY_LEN as u64
        );
        idx.sync(dir.path()).unwrap();
    }

    fn one_record_batch(ts: i64) -> Vec<u8> {
        skein_protocol::records::RecordBatchBuilder::new(ts)
            .push(Some(b"k"), Some(b"v"), ts)
            .build()
            .to_vec()
    }

    #[test]
    fn the_log_keeps_txn_indexes_per_segment_through_reopen_truncation_and_retention() {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::LogConfig {
            segment_bytes: 300,
            retention_bytes: 0,
            ..crate::LogConfig::default()
        };
        let (mut log, _) = Log::open(dir.path(), config.clone(), 1_000).unwrap();
        for _ in 0..12 {
            log.append(&mut one_record_batch(1_000), 1_000).unwrap();
        }
        let bases = log.segment_base_offsets();
        assert!(bases.len() >= 3, "{bases:?}");
        // Markers at 3 (segment 0), at the second segment's base + 1, and at 11.
        let second = bases[1];
        log.append_aborted_txn(txn(1, 0, 3)).unwrap();
        log.append_aborted_txn(txn(2, 2, second + 1)).unwrap();
        log.append_aborted_txn(txn(3, 9, 11)).unwrap();
        assert!(
            log.append_aborted_txn(txn(4, 9, 12)).is_err(),
            "past the end"
        );
        assert!(path(dir.path(), 0).exists() && path(dir.path(), second).exists());
        let pids = |v: Vec<AbortedTxn>| v.iter().map(|t| t.producer_id).collect::<Vec<_>>();
        assert_eq!(pids(log.aborted_txns(4, 12)), vec![2, 3]);
        assert_eq!(pids(log.aborted_txns(0, 2)), vec![1]);
        assert_eq!(pids(log.aborted_txns(0, 1)), vec![1]);
        log.abandon();

        // A crash: everything comes back from the files.
        let (mut log, _) = Log::open(dir.path(), config.clone(), 1_000).unwrap();
        assert_eq!(pids(log.all_aborted_txns()), vec![1, 2, 3]);
        // Truncation below the last marker drops its entry.
        log.truncate_to(10).unwrap();
        assert_eq!(pids(log.all_aborted_txns()), vec![1, 2]);
        log.truncate_to(second).unwrap();
        assert_eq!(pids(log.all_aborted_txns()), vec![1]);
        assert!(!path(dir.path(), second).exists());
        drop(log);
        let (mut log, _) = Log::open(dir.path(), config, 1_000).unwrap();
        assert_eq!(pids(log.all_aborted_txns()), vec![1]);
        // Retention deletes the first segment and its index file with it.
        for _ in 0..4 {
            log.append(&mut one_record_batch(1_000), 1_000).unwrap();
        }
        log.set_high_watermark(log.log_end_offset());
        let report = log.apply_retention(1_000).unwrap();
        assert!(report.deleted_segments >= 1);
        assert!(!path(dir.path(), 0).exists());
        assert!(log.all_aborted_txns().is_empty());
    }
}
