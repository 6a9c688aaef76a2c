//! The on-disk Raft log, vote and commit hint (openraft's `RaftLogStorage`).
//!
//! Files in the metadata directory:
//! - `log`: `SKRFTLG1` (8 bytes), then records `[u32 BE length][u32 BE crc32c of the
//!   payload][payload]`, each payload a postcard-encoded [`LogRecord`]: an entry, or the
//!   "purged up to" marker that a rewrite puts first. Appends are written by one writer thread
//!   in order and fsynced (`fdatasync`) before openraft is told they are durable. A conflict
//!   truncates the file at the first removed entry (fsynced). Purging rewrites the remaining
//!   entries to `log.tmp`, fsyncs it, renames it over `log` and fsyncs the directory.
//! - `vote`: `SKRFTVT1` + one record with the vote; `committed`: `SKRFTCM1` + one record with
//!   the last committed log id (a hint for replay on restart, not fsynced). Both are replaced
//!   atomically (temp file + rename + directory fsync).
//!
//! On open the whole log is read into memory (the metadata log is bounded by snapshots). A
//! partial record at the end, or a final record whose CRC fails, is a torn write and is cut off;
//! a bad CRC followed by more data, a record that does not decode, or non-consecutive offsets is
//! corruption and an error.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::ops::{Bound, RangeBounds};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::type_config::alias::{EntryOf, LogIdOf, VoteOf};
use openraft::OptionalSend;
use serde::{Deserialize, Serialize};

use crate::TypeConfig;

type Entry = EntryOf<TypeConfig>;
type LogId = LogIdOf<TypeConfig>;
type Vote = VoteOf<TypeConfig>;

const LOG_MAGIC: &[u8; 8] = b"SKRFTLG1";
const VOTE_MAGIC: &[u8; 8] = b"SKRFTVT1";
const COMMITTED_MAGIC: &[u8; 8] = b"SKRFTCM1";
const RECORD_HEADER: usize = 8;

/// One record of the `log` file.
#[derive(Serialize, Deserialize)]
pub enum LogRecord {
    /// A Raft log entry.
    Entry(Entry),
    /// Everything up to and including this log id was purged (first record after a rewrite).
    Purged(LogId),
}

fn corrupt(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Encode one framed record: `[len][crc32c][payload]`.
pub fn encode_record<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    let payload = postcard::to_allocvec(value).map_err(|e| corrupt(format!("encode: {e}")))?;
    let len = u32::try_from(payload.len()).map_err(|_| corrupt("record larger than 4 GiB"))?;
    let mut out = Vec::with_capacity(RECORD_HEADER + payload.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(&payload).to_be_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// The result of reading one record at the start of `buf`.
enum Scan<'a> {
    /// A whole record with a good CRC: payload, total length.
    Good(&'a [u8], usize),
    /// The buffer ends inside the record.
    Partial,
    /// The record is whole but its CRC fails; total length.
    BadCrc(usize),
}

fn scan_record(buf: &[u8]) -> Scan<'_> {
    if buf.len() < RECORD_HEADER {
        return Scan::Partial;
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let crc = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
    let Some(end) = RECORD_HEADER.checked_add(len) else {
        return Scan::Partial;
    };
    if buf.len() < end {
        return Scan::Partial;
    }
    let payload = &buf[RECORD_HEADER..end];
    if crc32c::crc32c(payload) != crc {
        return Scan::BadCrc(end);
    }
    Scan::Good(payload, end)
}

/// Write `magic + record(value)` to `path` atomically: temp file, optional fsync, rename,
/// optional directory fsync.
pub fn write_atomic<T: Serialize>(
    path: &Path,
    magic: &[u8; 8],
    value: &T,
    durable: bool,
) -> io::Result<()> {
    let mut data = magic.to_vec();
    data.extend_from_slice(&encode_record(value)?);
    write_bytes_atomic(path, &data, durable)
}

/// Write `data` to `path` atomically (temp + fsync + rename + directory fsync when `durable`).
pub fn write_bytes_atomic(path: &Path, data: &[u8], durable: bool) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        if durable {
            f.sync_all()?;
        }
    }
    fs::rename(&tmp, path)?;
    if durable {
        sync_dir(path)?;
    }
    Ok(())
}

/// fsync the directory holding `path` (makes a rename durable).
pub fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir)?.sync_all()
}

/// Read a file written by [`write_atomic`]; `None` if it does not exist.
pub fn read_atomic<T: for<'de> Deserialize<'de>>(
    path: &Path,
    magic: &[u8; 8],
) -> io::Result<Option<T>> {
    let data = match fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let name = path.display();
    if data.len() < 8 || &data[..8] != magic {
        return Err(corrupt(format!("{name}: bad magic")));
    }
    match scan_record(&data[8..]) {
        Scan::Good(payload, end) if 8 + end == data.len() => postcard::from_bytes(payload)
            .map(Some)
            .map_err(|e| corrupt(format!("{name}: {e}"))),
        Scan::Good(..) => Err(corrupt(format!("{name}: trailing bytes"))),
        Scan::Partial => Err(corrupt(format!("{name}: truncated"))),
        Scan::BadCrc(_) => Err(corrupt(format!("{name}: CRC mismatch"))),
    }
}

enum WriteCmd {
    Append {
        at: u64,
        data: Vec<u8>,
        callback: IOFlushed<TypeConfig>,
    },
    Truncate {
        len: u64,
        done: tokio::sync::oneshot::Sender<io::Result<()>>,
    },
    Replace {
        data: Vec<u8>,
        done: tokio::sync::oneshot::Sender<io::Result<()>>,
    },
}

struct Writer {
    path: PathBuf,
    file: File,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<WriteCmd>) {
        while let Ok(cmd) = rx.recv() {
            match cmd {
                WriteCmd::Append { at, data, callback } => {
                    let res = self
                        .file
                        .write_all_at(&data, at)
                        .and_then(|()| self.file.sync_data());
                    if let Err(e) = &res {
                        tracing::error!(error = %e, path = %self.path.display(), "raft log append failed");
                    }
                    callback.io_completed(res);
                }
                WriteCmd::Truncate { len, done } => {
                    let res = self.file.set_len(len).and_then(|()| self.file.sync_all());
                    let _ = done.send(res);
                }
                WriteCmd::Replace { data, done } => {
                    let res = self.replace(&data);
                    let _ = done.send(res);
                }
            }
        }
    }

    fn replace(&mut self, data: &[u8]) -> io::Result<()> {
        write_bytes_atomic(&self.path, data, true)?;
        self.file = OpenOptions::new().read(true).write(true).open(&self.path)?;
        Ok(())
    }
}

struct LogInner {
    /// index -> (entry, byte offset of its record in `log`).
    entries: BTreeMap<u64, (Entry, u64)>,
    file_len: u64,
    last_purged: Option<LogId>,
    vote: Option<Vote>,
    committed: Option<LogId>,
}

/// The on-disk log store.
pub struct LogStore {
    dir: PathBuf,
    inner: Arc<Mutex<LogInner>>,
    writer: mpsc::Sender<WriteCmd>,
}

/// A reader sharing the store's in-memory index.
#[derive(Clone)]
pub struct LogReader {
    inner: Arc<Mutex<LogInner>>,
}

fn lock(inner: &Mutex<LogInner>) -> MutexGuard<'_, LogInner> {
    // A poisoned lock only means a panic elsewhere; the data is still consistent enough to read.
    inner.lock().unwrap_or_else(|p| p.into_inner())
}

fn range_entries<RB: RangeBounds<u64>>(inner: &LogInner, range: RB) -> Vec<Entry> {
    let start = match range.start_bound() {
        Bound::Included(s) => Bound::Included(*s),
        Bound::Excluded(s) => Bound::Excluded(*s),
        Bound::Unbounded => Bound::Unbounded,
    };
    let end = match range.end_bound() {
        Bound::Included(s) => Bound::Included(*s),
        Bound::Excluded(s) => Bound::Excluded(*s),
        Bound::Unbounded => Bound::Unbounded,
    };
    if let (Bound::Included(s) | Bound::Excluded(s), Bound::Included(e) | Bound::Excluded(e)) =
        (start, end)
    {
        if s > e {
            return Vec::new();
        }
    }
    inner
        .entries
        .range((start, end))
        .map(|(_, (e, _))| e.clone())
        .collect()
}

impl LogStore {
    /// Open (or create) the store in `dir`, recovering a torn tail.
    pub fn open(dir: &Path) -> io::Result<LogStore> {
        fs::create_dir_all(dir)?;
        let path = dir.join("log");
        let (entries, last_purged, file_len) = match fs::read(&path) {
            Ok(data) => {
                let (entries, last_purged, good_len) = parse_log(&data, &path)?;
                if good_len < data.len() as u64 {
                    tracing::warn!(
                        path = %path.display(),
                        kept = good_len,
                        dropped = data.len() as u64 - good_len,
                        "raft log: cut off a torn tail"
                    );
                    let f = OpenOptions::new().write(true).open(&path)?;
                    f.set_len(good_len)?;
                    f.sync_all()?;
                }
                (entries, last_purged, good_len)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                write_bytes_atomic(&path, LOG_MAGIC, true)?;
                (BTreeMap::new(), None, LOG_MAGIC.len() as u64)
            }
            Err(e) => return Err(e),
        };
        let vote = read_atomic::<Vote>(&dir.join("vote"), VOTE_MAGIC)?;
        let committed = read_atomic::<Option<LogId>>(&dir.join("committed"), COMMITTED_MAGIC)
            .unwrap_or_else(|e| {
                // Only a hint: a bad one is dropped (replay then waits for the leader).
                tracing::warn!(error = %e, "raft: ignoring an unreadable commit hint");
                None
            })
            .flatten();
        let file = OpenOptions::new().read(true).write(true).open(&path)?;
        let (tx, rx) = mpsc::channel();
        let writer = Writer {
            path: path.clone(),
            file,
        };
        std::thread::Builder::new()
            .name("skein-raft-log".into())
            .spawn(move || writer.run(rx))?;
        Ok(LogStore {
            dir: dir.to_path_buf(),
            inner: Arc::new(Mutex::new(LogInner {
                entries,
                file_len,
                last_purged,
                vote,
                committed,
            })),
            writer: tx,
        })
    }

    /// Whether the store holds nothing at all (no vote, no entry, nothing purged).
    pub fn is_pristine(&self) -> bool {
        let inner = lock(&self.inner);
        inner.entries.is_empty() && inner.last_purged.is_none() && inner.vote.is_none()
    }

    fn send(&self, cmd: WriteCmd) -> io::Result<()> {
        self.writer
            .send(cmd)
            .map_err(|_| io::Error::other("raft log writer thread stopped"))
    }
}

type ParsedLog = (BTreeMap<u64, (Entry, u64)>, Option<LogId>, u64);

fn parse_log(data: &[u8], path: &Path) -> io::Result<ParsedLog> {
    let name = path.display();
    if data.len() < LOG_MAGIC.len() {
        // A crash while creating the file: treat as empty.
        if LOG_MAGIC.starts_with(data) {
            return Ok((BTreeMap::new(), None, 0));
        }
        return Err(corrupt(format!("{name}: bad magic")));
    }
    if &data[..8] != LOG_MAGIC {
        return Err(corrupt(format!("{name}: bad magic")));
    }
    let mut pos = 8usize;
    let mut entries: BTreeMap<u64, (Entry, u64)> = BTreeMap::new();
    let mut last_purged: Option<LogId> = None;
    while pos < data.len() {
        match scan_record(&data[pos..]) {
            Scan::Partial => break,
            Scan::BadCrc(end) => {
                if pos + end == data.len() {
                    break; // a torn final record
                }
                return Err(corrupt(format!("{name}: CRC mismatch at byte {pos}")));
            }
            Scan::Good(payload, end) => {
                let rec: LogRecord = postcard::from_bytes(payload)
                    .map_err(|e| corrupt(format!("{name}: record at byte {pos}: {e}")))?;
                match rec {
                    LogRecord::Purged(id) => {
                        if !entries.is_empty() {
                            return Err(corrupt(format!("{name}: purge marker after entries")));
                        }
                        last_purged = Some(id);
                    }
                    LogRecord::Entry(entry) => {
                        let index = entry.index();
                        let expected = match entries.last_key_value() {
                            Some((last, _)) => Some(last + 1),
                            None => last_purged.as_ref().map(|p| p.index + 1),
                        };
                        if let Some(expected) = expected {
                            if index != expected {
                                return Err(corrupt(format!(
                                    "{name}: entry {index} where {expected} was expected"
                                )));
                            }
                        }
                        entries.insert(index, (entry, pos as u64));
                    }
                }
                pos += end;
            }
        }
    }
    Ok((entries, last_purged, pos as u64))
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        Ok(range_entries(&lock(&self.inner), range))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(lock(&self.inner).vote)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        Ok(range_entries(&lock(&self.inner), range))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(lock(&self.inner).vote)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let inner = lock(&self.inner);
        let last_log_id = inner
            .entries
            .last_key_value()
            .map(|(_, (e, _))| e.log_id())
            .or(inner.last_purged);
        Ok(LogState {
            last_purged_log_id: inner.last_purged,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        LogReader {
            inner: self.inner.clone(),
        }
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        write_atomic(&self.dir.join("vote"), VOTE_MAGIC, vote, true)?;
        lock(&self.inner).vote = Some(*vote);
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        write_atomic(
            &self.dir.join("committed"),
            COMMITTED_MAGIC,
            &committed,
            false,
        )?;
        lock(&self.inner).committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(lock(&self.inner).committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut inner = lock(&self.inner);
        let at = inner.file_len;
        let mut data = Vec::new();
        for entry in entries {
            let offset = at + data.len() as u64;
            data.extend_from_slice(&encode_record(&LogRecord::Entry(entry.clone()))?);
            inner.entries.insert(entry.index(), (entry, offset));
        }
        inner.file_len = at + data.len() as u64;
        self.send(WriteCmd::Append { at, data, callback })
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let rx = {
            let mut inner = lock(&self.inner);
            let first_removed = last_log_id.as_ref().map_or(0, |l| l.index + 1);
            let removed = inner.entries.split_off(&first_removed);
            let Some((_, (_, offset))) = removed.first_key_value() else {
                return Ok(());
            };
            let len = *offset;
            inner.file_len = len;
            let (tx, rx) = tokio::sync::oneshot::channel();
            self.send(WriteCmd::Truncate { len, done: tx })?;
            rx
        };
        rx.await
            .map_err(|_| io::Error::other("raft log writer thread stopped"))?
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let rx = {
            let mut inner = lock(&self.inner);
            if inner
                .last_purged
                .as_ref()
                .is_some_and(|p| p.index >= log_id.index)
            {
                return Ok(());
            }
            let kept = inner.entries.split_off(&(log_id.index + 1));
            inner.entries = BTreeMap::new();
            inner.last_purged = Some(log_id);
            let mut data = LOG_MAGIC.to_vec();
            data.extend_from_slice(&encode_record(&LogRecord::Purged(log_id))?);
            for (index, (entry, _)) in kept {
                let offset = data.len() as u64;
                data.extend_from_slice(&encode_record(&LogRecord::Entry(entry.clone()))?);
                inner.entries.insert(index, (entry, offset));
            }
            inner.file_len = data.len() as u64;
            let (tx, rx) = tokio::sync::oneshot::channel();
            self.send(WriteCmd::Replace { data, done: tx })?;
            rx
        };
        rx.await
            .map_err(|_| io::Error::other("raft log writer thread stopped"))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::storage::RaftLogStorageExt;
    use openraft::type_config::alias::LeaderIdOf;
    use openraft::vote::RaftLeaderId;
    use openraft::EntryPayload;

    fn entry(term: u64, index: u64, body: &[u8]) -> Entry {
        let leader = LeaderIdOf::<TypeConfig>::new(term, 1).to_committed();
        Entry {
            log_id: LogId::new(leader, index),
            payload: EntryPayload::Normal(crate::EntryData(bytes::Bytes::copy_from_slice(body))),
        }
    }

    async fn indexes(store: &mut LogStore) -> Vec<u64> {
        store
            .try_get_log_entries(..)
            .await
            .unwrap()
            .iter()
            .map(|e| e.index())
            .collect()
    }

    #[tokio::test]
    async fn append_truncate_purge_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = LogStore::open(dir.path()).unwrap();
        assert!(s.is_pristine());
        s.blocking_append((0..10).map(|i| entry(1, i, b"x")))
            .await
            .unwrap();
        s.truncate_after(Some(entry(1, 6, b"").log_id))
            .await
            .unwrap();
        s.blocking_append((7..9).map(|i| entry(2, i, b"y")))
            .await
            .unwrap();
        s.purge(entry(1, 3, b"").log_id).await.unwrap();
        s.blocking_append([entry(2, 9, b"z")]).await.unwrap();
        assert_eq!(indexes(&mut s).await, (4..10).collect::<Vec<_>>());
        drop(s);
        let mut s = LogStore::open(dir.path()).unwrap();
        assert_eq!(indexes(&mut s).await, (4..10).collect::<Vec<_>>());
        let st = s.get_log_state().await.unwrap();
        assert_eq!(st.last_purged_log_id.unwrap().index, 3);
        assert_eq!(st.last_log_id.unwrap().index, 9);
        let e = s.try_get_log_entries(8..9).await.unwrap();
        assert_eq!(e[0].log_id.leader_id.term, 2);
        assert!(!s.is_pristine());
    }

    #[tokio::test]
    async fn torn_tail_is_cut_and_corruption_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = LogStore::open(dir.path()).unwrap();
        s.blocking_append((0..5).map(|i| entry(1, i, b"abc")))
            .await
            .unwrap();
        drop(s);
        let path = dir.path().join("log");
        let full = fs::read(&path).unwrap();
        // A partial last record: cut off, the four before survive.
        fs::write(&path, &full[..full.len() - 3]).unwrap();
        let mut s = LogStore::open(dir.path()).unwrap();
        assert_eq!(indexes(&mut s).await, vec![0, 1, 2, 3]);
        s.blocking_append([entry(1, 4, b"new")]).await.unwrap();
        drop(s);
        let mut s = LogStore::open(dir.path()).unwrap();
        assert_eq!(indexes(&mut s).await, vec![0, 1, 2, 3, 4]);
        drop(s);
        // A flipped byte in the middle: an error, not a panic.
        let mut bad = fs::read(&path).unwrap();
        bad[20] ^= 0xff;
        fs::write(&path, &bad).unwrap();
        let err = LogStore::open(dir.path())
            .err()
            .expect("corruption must fail");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        // Garbage instead of a log.
        fs::write(&path, b"not a raft log at all").unwrap();
        assert!(LogStore::open(dir.path()).is_err());
    }

    #[tokio::test]
    async fn vote_is_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = LogStore::open(dir.path()).unwrap();
        let vote = Vote::new(3, 2);
        s.save_vote(&vote).await.unwrap();
        drop(s);
        let mut s = LogStore::open(dir.path()).unwrap();
        assert_eq!(s.read_vote().await.unwrap(), Some(vote));
        fs::write(dir.path().join("vote"), b"SKRFTVT1garbage").unwrap();
        assert!(LogStore::open(dir.path()).is_err());
    }
}
