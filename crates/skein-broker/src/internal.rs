//! What the coordinators share about their internal topics (`__consumer_offsets` for groups,
//! `__transaction_state` for transactions): appending one record as the partition's leader,
//! waiting until such appends are durable and in the ISR, and reading a partition back at
//! load time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use skein_log::SyncHandle;
use skein_protocol::records::{self, BatchIter, RecordBatchBuilder};

use crate::broker::{Broker, Partition};
use crate::error::ErrorCode;
use crate::producer_state::SequenceCheck;

/// Most bytes read at a time while replaying an internal topic.
const REPLAY_CHUNK_BYTES: usize = 1024 * 1024;

/// One record appended to an internal topic by its leader.
pub(crate) struct Appended {
    pub partition: Arc<Partition>,
    /// The record's offset.
    pub offset: i64,
    /// What to fsync, when acks=all writes are fsynced.
    pub sync: Option<SyncHandle>,
    pub min_insync: usize,
}

impl Broker {
    /// Appends one record (`value` None = tombstone) to partition `index` of the internal
    /// topic `topic`, as its leader, stamped with the leader epoch. Fails with
    /// NOT_LEADER_OR_FOLLOWER when this node does not lead it, NOT_ENOUGH_REPLICAS when its
    /// ISR is below `min.insync.replicas`, KAFKA_STORAGE_ERROR when the log refuses it.
    pub(crate) fn append_internal(
        &self,
        topic: &str,
        index: i32,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<Appended, ErrorCode> {
        self.append_internal_records(topic, index, &[(key, value)], None)
    }

    /// Appends `records` as one batch, like [`Broker::append_internal`]; with `txn`
    /// (producer id, epoch) as a transactional batch of that producer without sequence
    /// numbers, as a coordinator writes it (Kafka's TxnOffsetCommit), which opens the
    /// producer's transaction on the partition until its marker.
    pub(crate) fn append_internal_records(
        &self,
        topic: &str,
        index: i32,
        records: &[(&[u8], Option<&[u8]>)],
        txn: Option<(i64, i16)>,
    ) -> Result<Appended, ErrorCode> {
        let Some(t) = self.topic(topic) else {
            return Err(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION);
        };
        let partition = t
            .partition(index)
            .ok_or(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION)?;
        let min_insync = t.effective().min_insync_replicas;
        if !partition.is_local() || partition.leader() != self.node_id() {
            return Err(ErrorCode::NOT_LEADER_OR_FOLLOWER);
        }
        if partition.assignment().isr.len() < min_insync {
            return Err(ErrorCode::NOT_ENOUGH_REPLICAS);
        }
        let now = self.now_ms();
        let mut builder = RecordBatchBuilder::new(now);
        if let Some((producer_id, producer_epoch)) = txn {
            builder = builder
                .producer(producer_id, producer_epoch, -1)
                .transactional();
        }
        for (key, value) in records {
            builder = builder.push(Some(key), *value, now);
        }
        let mut batch = builder.build();
        // Stamped with the leader epoch like any leader's write, so followers keep the same
        // epoch history.
        records::set_partition_leader_epoch(&mut batch, partition.leader_epoch());
        let mut guard = partition.lock();
        let state = &mut *guard;
        if let Some((producer_id, epoch)) = txn {
            // A coordinator's write has no sequence numbers; only the epoch is checked.
            if let SequenceCheck::Reject(ErrorCode::INVALID_PRODUCER_EPOCH) =
                state.producers.check(producer_id, epoch, -1, -1)
            {
                return Err(ErrorCode::INVALID_PRODUCER_EPOCH);
            }
        }
        let log = state
            .log
            .as_mut()
            .ok_or(ErrorCode::NOT_LEADER_OR_FOLLOWER)?;
        let info = match log.append(&mut batch, now) {
            Ok(info) => info,
            Err(e) => {
                tracing::error!(partition = index, "could not write to {topic}: {e}");
                return Err(ErrorCode::KAFKA_STORAGE_ERROR);
            }
        };
        if let Some((producer_id, epoch)) = txn {
            state
                .producers
                .record(producer_id, epoch, -1, -1, info.base_offset, now);
            state.producers.begin_txn(producer_id, info.base_offset);
        }
        let log = state
            .log
            .as_mut()
            .ok_or(ErrorCode::NOT_LEADER_OR_FOLLOWER)?;
        let sync = self.config.acks_all_fsync.then(|| log.sync_handle());
        let offset = log.log_end_offset() - 1;
        partition.advance_high_watermark(state, min_insync);
        drop(guard);
        Ok(Appended {
            partition,
            offset,
            sync,
            min_insync,
        })
    }

    /// Waits until every append is fsynced (where acks=all writes are) and below its
    /// partition's high watermark, so the ISR holds it and a new leader replays it. False
    /// when `timeout` passed first.
    pub(crate) async fn wait_internal_durable(
        &self,
        appends: &[Appended],
        timeout: Duration,
    ) -> bool {
        for a in appends {
            let Some(handle) = a.sync.clone() else {
                continue;
            };
            let end = handle.end_offset();
            if self.syncer().sync(a.partition.key(), handle).await.is_ok() {
                a.partition.mark_durable(end, a.min_insync);
            }
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.data_arrived.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if appends
                .iter()
                .all(|a| a.partition.high_watermark() > a.offset)
            {
                return true;
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(deadline) => return false,
            }
        }
    }

    /// Calls `f` with every keyed record and every transaction marker of `partition`'s log,
    /// in log order; returns how many batches could not be decoded (skipped).
    pub(crate) fn for_each_internal_record(
        &self,
        partition: &Partition,
        topic: &str,
        mut f: impl FnMut(InternalItem<'_>),
    ) -> u64 {
        let state = partition.lock();
        let Some(log) = state.log.as_ref() else {
            return 0;
        };
        let mut skipped = 0;
        let mut offset = log.log_start_offset();
        let end = log.log_end_offset();
        while offset < end {
            let read = match log.read(offset, REPLAY_CHUNK_BYTES, None) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(partition = partition.index, "cannot replay {topic}: {e}");
                    break;
                }
            };
            if read.records.is_empty() {
                break;
            }
            for item in BatchIter::new(&read.records) {
                let Ok((header, range)) = item else { break };
                offset = header.last_offset() + 1;
                let Ok(recs) = records::decode_records(&read.records[range]) else {
                    skipped += 1;
                    continue;
                };
                let transactional = header.is_transactional().then_some(header.producer_id);
                for r in recs {
                    let Some(key) = r.key else { continue };
                    if header.is_control() {
                        // A control record's key: version (int16), type (int16: 0 abort, 1 commit).
                        if key.len() >= 4 {
                            let kind = i16::from_be_bytes([key[2], key[3]]);
                            if kind == 0 || kind == 1 {
                                f(InternalItem::Marker {
                                    producer_id: header.producer_id,
                                    committed: kind == 1,
                                });
                            }
                        }
                    } else {
                        f(InternalItem::Record {
                            key,
                            value: r.value,
                            transactional,
                        });
                    }
                }
            }
        }
        skipped
    }
}

/// Requests waiting for a coordinator's delayed answer, by token.
pub(crate) struct Waiters<T> {
    map: Mutex<HashMap<u64, oneshot::Sender<T>>>,
    next: AtomicU64,
}

impl<T> Waiters<T> {
    pub(crate) fn new() -> Waiters<T> {
        Waiters {
            map: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
        }
    }

    /// Registers a waiting request; its answer arrives on the receiver.
    pub(crate) fn wait(&self) -> (u64, oneshot::Receiver<T>) {
        let token = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token, tx);
        (token, rx)
    }

    /// Sends `value` to the request waiting on `token`, if it still waits.
    pub(crate) fn answer(&self, token: u64, value: T) {
        let tx = self
            .map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&token);
        if let Some(tx) = tx {
            let _ = tx.send(value);
        }
    }
}

/// What [`Broker::for_each_internal_record`] finds in an internal topic.
pub(crate) enum InternalItem<'a> {
    /// A record; `transactional` is the producer id of a transactional batch.
    Record {
        key: &'a [u8],
        value: Option<&'a [u8]>,
        transactional: Option<i64>,
    },
    /// A COMMIT or ABORT marker ending `producer_id`'s transaction.
    Marker { producer_id: i64, committed: bool },
}
