//! The state machine side (openraft's `RaftStateMachine`): committed entries go to the caller's
//! [`Applier`], snapshots are the applier's bytes, kept in the `snapshot` file.
//!
//! `snapshot`: `SKRFTSN1`, then a record (`[u32 len][u32 crc32c][postcard]`) holding the
//! snapshot meta (last log id, membership, snapshot id), then `[u64 BE length][u32 BE crc32c]`
//! and the applier's bytes. It is written to `snapshot.tmp`, fsynced, renamed, and the directory
//! fsynced, so a crash leaves the old or the new snapshot, never a mix.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use futures_util::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::type_config::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::{EntryPayload, OptionalSend};
use tokio::sync::watch;

use crate::store::{encode_record, write_bytes_atomic};
use crate::{Applier, TypeConfig};

type LogId = LogIdOf<TypeConfig>;
type Meta = SnapshotMetaOf<TypeConfig>;
type Membership = StoredMembershipOf<TypeConfig>;
type Snapshot = SnapshotOf<TypeConfig, Bytes>;

const SNAP_MAGIC: &[u8; 8] = b"SKRFTSN1";

fn corrupt(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Encode a snapshot file.
fn encode_snapshot(meta: &Meta, data: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = SNAP_MAGIC.to_vec();
    out.extend_from_slice(&encode_record(meta)?);
    out.extend_from_slice(&(data.len() as u64).to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(data).to_be_bytes());
    out.extend_from_slice(data);
    Ok(out)
}

/// Read the snapshot file of `dir`, if any.
pub fn read_snapshot(dir: &Path) -> io::Result<Option<(Meta, Bytes)>> {
    let path = dir.join("snapshot");
    let buf = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let name = path.display();
    if buf.len() < 16 || &buf[..8] != SNAP_MAGIC {
        return Err(corrupt(format!("{name}: bad magic")));
    }
    let rest = &buf[8..];
    let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    let crc = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]);
    let meta_end = 8usize
        .checked_add(len)
        .filter(|e| *e <= rest.len())
        .ok_or_else(|| corrupt(format!("{name}: truncated meta")))?;
    let meta_bytes = &rest[8..meta_end];
    if crc32c::crc32c(meta_bytes) != crc {
        return Err(corrupt(format!("{name}: meta CRC mismatch")));
    }
    let meta: Meta =
        postcard::from_bytes(meta_bytes).map_err(|e| corrupt(format!("{name}: meta: {e}")))?;
    let rest = &rest[meta_end..];
    if rest.len() < 12 {
        return Err(corrupt(format!("{name}: truncated data header")));
    }
    let mut l = [0u8; 8];
    l.copy_from_slice(&rest[..8]);
    let dlen = u64::from_be_bytes(l);
    let dcrc = u32::from_be_bytes([rest[8], rest[9], rest[10], rest[11]]);
    let data = &rest[12..];
    if data.len() as u64 != dlen {
        return Err(corrupt(format!("{name}: data length mismatch")));
    }
    if crc32c::crc32c(data) != dcrc {
        return Err(corrupt(format!("{name}: data CRC mismatch")));
    }
    Ok(Some((meta, Bytes::copy_from_slice(data))))
}

fn write_snapshot(dir: &Path, meta: &Meta, data: &[u8]) -> io::Result<()> {
    write_bytes_atomic(&dir.join("snapshot"), &encode_snapshot(meta, data)?, true)
}

struct SmInner {
    applier: Box<dyn Applier>,
    last_applied: Option<LogId>,
    membership: Membership,
}

/// The state machine handed to openraft.
pub struct StateMachine {
    dir: PathBuf,
    inner: Arc<Mutex<SmInner>>,
    current: Arc<Mutex<Option<(Meta, Bytes)>>>,
    applied_tx: watch::Sender<Option<u64>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl StateMachine {
    /// Restore from the snapshot file (if any) into `applier`.
    pub fn open(
        dir: &Path,
        mut applier: Box<dyn Applier>,
        applied_tx: watch::Sender<Option<u64>>,
    ) -> Result<StateMachine, crate::StartError> {
        let snap = read_snapshot(dir)?;
        let (last_applied, membership) = match &snap {
            Some((meta, data)) => {
                if let Some(id) = meta.last_log_id {
                    applier
                        .restore(id.index, data)
                        .map_err(crate::StartError::Restore)?;
                }
                (meta.last_log_id, meta.last_membership.clone())
            }
            None => (None, Membership::default()),
        };
        applied_tx.send_replace(last_applied.map(|l| l.index));
        Ok(StateMachine {
            dir: dir.to_path_buf(),
            inner: Arc::new(Mutex::new(SmInner {
                applier,
                last_applied,
                membership,
            })),
            current: Arc::new(Mutex::new(snap)),
            applied_tx,
        })
    }
}

/// Builds (writes) one snapshot whose bytes were taken on the state machine task.
pub struct SnapshotBuilder {
    dir: PathBuf,
    meta: Meta,
    data: Bytes,
    current: Arc<Mutex<Option<(Meta, Bytes)>>>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = Bytes;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        write_snapshot(&self.dir, &self.meta, &self.data)?;
        *lock(&self.current) = Some((self.meta.clone(), self.data.clone()));
        tracing::debug!(last = ?self.meta.last_log_id, bytes = self.data.len(), "raft snapshot written");
        Ok(Snapshot {
            meta: self.meta.clone(),
            snapshot: self.data.clone(),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = Bytes;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, Membership), io::Error> {
        let inner = lock(&self.inner);
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            let index = entry.log_id.index;
            {
                let mut inner = lock(&self.inner);
                match &entry.payload {
                    EntryPayload::Normal(data) => inner.applier.apply(index, &data.0),
                    EntryPayload::Membership(m) => {
                        inner.membership = Membership::new(Some(entry.log_id), m.clone());
                    }
                    EntryPayload::Blank => {}
                }
                inner.last_applied = Some(entry.log_id);
            }
            self.applied_tx.send_replace(Some(index));
            if let Some(r) = responder {
                r.send(());
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        let inner = lock(&self.inner);
        let meta = Meta {
            last_log_id: inner.last_applied,
            last_membership: inner.membership.clone(),
        };
        SnapshotBuilder {
            dir: self.dir.clone(),
            meta,
            data: inner.applier.snapshot(),
            current: self.current.clone(),
        }
    }

    async fn install_snapshot(&mut self, meta: &Meta, snapshot: Bytes) -> Result<(), io::Error> {
        write_snapshot(&self.dir, meta, &snapshot)?;
        {
            let mut inner = lock(&self.inner);
            if let Some(id) = meta.last_log_id {
                inner
                    .applier
                    .restore(id.index, &snapshot)
                    .map_err(|e| io::Error::other(format!("applier refused the snapshot: {e}")))?;
            }
            inner.last_applied = meta.last_log_id;
            inner.membership = meta.last_membership.clone();
        }
        *lock(&self.current) = Some((meta.clone(), snapshot));
        self.applied_tx
            .send_replace(meta.last_log_id.map(|l| l.index));
        tracing::info!(last = ?meta.last_log_id, "raft: installed a snapshot from the leader");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        Ok(lock(&self.current).as_ref().map(|(meta, data)| Snapshot {
            meta: meta.clone(),
            snapshot: data.clone(),
        }))
    }
}
