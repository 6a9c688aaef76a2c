//! State snapshots: bytes the log's owner derived from the log up to an offset (the broker's
//! idempotent producer state), kept beside the segments so a restart reads the newest snapshot
//! and then only the batches after it, instead of every batch header in the log.
//!
//! `<offset>.snapshot` holds the magic `SKSN`, a format version byte, the offset (i64), the
//! payload length (u32) and the payload's CRC32C (u32), all big-endian, then the payload. The
//! log does not interpret the payload. A snapshot is an optimisation, never the only copy of
//! anything: a torn, corrupt or missing one only means a longer scan. So it is written without
//! a directory fsync (the next checkpoint or close makes its rename durable), and the newest
//! two are kept, in case a crash loses the last one.
//!
//! A snapshot taken at offset `o` describes the log below `o`. One beyond the log end (the log
//! was cut back by recovery or truncation) describes records that are gone, so it is deleted at
//! open and by `truncate_to`; otherwise new records would later reach its offset and make it
//! look valid.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use crate::error::{IoContext, LogError};
use crate::index::remove_if_exists;
use crate::log::Log;
use crate::segment;

pub(crate) const SNAPSHOT_SUFFIX: &str = "snapshot";
const MAGIC: &[u8; 4] = b"SKSN";
const VERSION: u8 = 1;
const HEADER_LEN: usize = 4 + 1 + 8 + 4 + 4;
/// Snapshots kept after a new one is written.
const KEEP: usize = 2;

/// Encodes a snapshot file's content.
fn encode(offset: i64, payload: &[u8]) -> Result<Vec<u8>, String> {
    let len = u32::try_from(payload.len()).map_err(|_| "snapshot payload over 4 GiB")?;
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&offset.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_be_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

/// Checks a snapshot file's content and returns its payload.
fn decode(offset: i64, content: &[u8]) -> Result<&[u8], String> {
    if content.len() < HEADER_LEN {
        return Err(format!("{} bytes, shorter than a header", content.len()));
    }
    let (header, payload) = content.split_at(HEADER_LEN);
    let be_u32 = |at: usize| u32::from_be_bytes(header[at..at + 4].try_into().expect("4 bytes"));
    if &header[..4] != MAGIC {
        return Err("bad magic".into());
    }
    if header[4] != VERSION {
        return Err(format!("unknown version {}", header[4]));
    }
    let stored_offset = i64::from_be_bytes(header[5..13].try_into().expect("8 bytes"));
    if stored_offset != offset {
        return Err(format!("names offset {stored_offset}, not {offset}"));
    }
    if be_u32(13) as usize != payload.len() {
        return Err(format!(
            "payload of {} bytes, header says {}",
            payload.len(),
            be_u32(13)
        ));
    }
    if crc32c::crc32c(payload) != be_u32(17) {
        return Err("CRC mismatch".into());
    }
    Ok(payload)
}

fn path(dir: &Path, offset: i64) -> std::path::PathBuf {
    dir.join(segment::file_name(offset, SNAPSHOT_SUFFIX))
}

/// Deletes the snapshots of `dir` above `log_end`, which describe records no longer in the log.
pub(crate) fn delete_above(
    dir: &Path,
    snapshots: &mut Vec<i64>,
    log_end: i64,
) -> Result<(), LogError> {
    while snapshots.last().is_some_and(|&o| o > log_end) {
        let offset = snapshots.pop().expect("checked");
        let p = path(dir, offset);
        remove_if_exists(&p).at(&p)?;
    }
    Ok(())
}

impl Log {
    /// Writes `payload` as the snapshot of the state derived from this log up to its end
    /// offset (file fsynced, directory not), keeps the newest two snapshots, and returns the
    /// offset it was taken at.
    pub fn write_snapshot(&mut self, payload: &[u8]) -> Result<i64, LogError> {
        let offset = self.log_end_offset();
        // The aborted transactions below `offset` are trusted from their files once a
        // snapshot there exists: make them durable first.
        self.sync_txn_indexes()?;
        let content = encode(offset, payload).map_err(|reason| LogError::Checkpoint {
            path: path(&self.dir, offset),
            reason,
        })?;
        let target = path(&self.dir, offset);
        let tmp = self.dir.join(format!(
            "{}.tmp",
            segment::file_name(offset, SNAPSHOT_SUFFIX)
        ));
        let mut f = File::create(&tmp).at(&tmp)?;
        f.write_all(&content).at(&tmp)?;
        f.sync_data().at(&tmp)?;
        fs::rename(&tmp, &target).at(&target)?;
        self.snapshots.retain(|&o| o != offset);
        self.snapshots.push(offset);
        while self.snapshots.len() > KEEP {
            let old = path(&self.dir, self.snapshots.remove(0));
            remove_if_exists(&old).at(&old)?;
        }
        Ok(offset)
    }

    /// The offset of the newest snapshot, if any.
    pub fn snapshot_offset(&self) -> Option<i64> {
        self.snapshots.last().copied()
    }

    /// The newest readable snapshot: its offset and payload. Unreadable ones are skipped with
    /// a warning (and the next older one tried), as a snapshot only saves a scan.
    pub fn read_snapshot(&self) -> Option<(i64, Vec<u8>)> {
        for &offset in self.snapshots.iter().rev() {
            let p = path(&self.dir, offset);
            let checked = fs::read(&p)
                .map_err(|e| e.to_string())
                .and_then(|content| decode(offset, &content).map(<[u8]>::to_vec));
            match checked {
                Ok(payload) => return Some((offset, payload)),
                Err(reason) => {
                    tracing::warn!(path = %p.display(), "ignoring unreadable snapshot: {reason}")
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage_is_detected() {
        let content = encode(42, b"state").unwrap();
        assert_eq!(decode(42, &content).unwrap(), b"state");
        assert!(decode(43, &content).unwrap_err().contains("offset"));
        for cut in 0..content.len() {
            assert!(decode(42, &content[..cut]).is_err(), "cut at {cut}");
        }
        let mut flipped = content.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(decode(42, &flipped).unwrap_err().contains("CRC"));
        let mut versioned = content;
        versioned[4] = 9;
        assert!(decode(42, &versioned).unwrap_err().contains("version"));
    }
}
