//! One replica of a partition on this node: its log, its idempotent producer state, and its
//! place in the partition's assignment (leader or follower, leader epoch, replicas, ISR).
//!
//! Everything that changes a replica goes through [`Partition`], so that the rules live in
//! one place rather than in the API handlers: appends as the leader (leadership and epoch
//! checked under the replica's lock, the leader epoch stamped into each batch, idempotent
//! sequences checked and recorded, the high watermark advanced), and the producer-state
//! snapshots taken at segment roll. Replication (followers appending what they fetch, the
//! high watermark following the ISR) and transactions belong here too.

use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use bytes::BytesMut;
use skein_log::{Log, SyncHandle};
use skein_protocol::records::{self, BatchHeader};

use crate::error::{ApiError, ErrorCode};
use crate::producer_state::{ProducerStates, SequenceCheck};

/// The mutable part of a partition, behind its lock.
pub struct PartitionState {
    /// `None` once the partition was deleted.
    pub log: Option<Log>,
    pub producers: ProducerStates,
}

/// Where a partition's replicas are and which one leads, as the controller decided it and
/// Metadata reports it. On a single node this node is the only replica and the leader, at
/// epoch 0; in a cluster the metadata log sets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The leader's node id; -1 while the partition is offline.
    pub leader: i32,
    /// Grows with every change of leader; clients and followers are fenced with it.
    pub leader_epoch: i32,
    /// Grows with every change of the assignment.
    pub partition_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

impl Assignment {
    /// A partition whose only replica is `node`, leading from the first epoch.
    pub fn single(node: i32) -> Assignment {
        Assignment {
            leader: node,
            leader_epoch: crate::api::LEADER_EPOCH,
            partition_epoch: 0,
            replicas: vec![node],
            isr: vec![node],
        }
    }
}

/// One partition of a topic.
pub struct Partition {
    pub topic: Arc<str>,
    pub index: i32,
    state: Mutex<PartitionState>,
    /// Apart from the log's lock, so that Metadata never waits for an append. Changed only
    /// while holding the state lock too, so an append sees one assignment throughout.
    assignment: RwLock<Assignment>,
}

impl Partition {
    pub fn new(
        topic: Arc<str>,
        index: i32,
        log: Log,
        producers: ProducerStates,
        assignment: Assignment,
    ) -> Partition {
        Self::with_log(topic, index, Some(log), producers, assignment)
    }

    /// A partition this node does not host (no log here): it knows the assignment, so
    /// requests for it are answered NOT_LEADER_OR_FOLLOWER and Metadata lists it.
    pub fn remote(
        topic: Arc<str>,
        index: i32,
        producers: ProducerStates,
        assignment: Assignment,
    ) -> Partition {
        Self::with_log(topic, index, None, producers, assignment)
    }

    fn with_log(
        topic: Arc<str>,
        index: i32,
        log: Option<Log>,
        producers: ProducerStates,
        assignment: Assignment,
    ) -> Partition {
        Partition {
            topic,
            index,
            state: Mutex::new(PartitionState { log, producers }),
            assignment: RwLock::new(assignment),
        }
    }

    /// The leader's node id (-1 while offline), without copying the assignment.
    pub fn leader(&self) -> i32 {
        self.assignment
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .leader
    }

    /// Whether this node holds a replica (a log) of the partition.
    pub fn is_local(&self) -> bool {
        self.lock().log.is_some()
    }

    pub fn assignment(&self) -> Assignment {
        self.assignment
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the assignment; callers hold the replica's state lock (see the field).
    pub(crate) fn set_assignment(&self, assignment: Assignment) {
        *self.assignment.write().unwrap_or_else(|e| e.into_inner()) = assignment;
    }

    pub fn leader_epoch(&self) -> i32 {
        self.assignment
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .leader_epoch
    }

    /// Whether `node` may serve this partition's reads and writes to a client that believes
    /// in `current_leader_epoch` (-1: no belief, no check; KIP-320): NOT_LEADER_OR_FOLLOWER
    /// when another node leads, FENCED_LEADER_EPOCH when the client's epoch is older than
    /// ours, UNKNOWN_LEADER_EPOCH when it is newer (we have not heard of it yet).
    pub fn check_leader(&self, node: i32, current_leader_epoch: i32) -> ErrorCode {
        use std::cmp::Ordering;
        let a = self.assignment.read().unwrap_or_else(|e| e.into_inner());
        if a.leader != node {
            return ErrorCode::NOT_LEADER_OR_FOLLOWER;
        }
        match current_leader_epoch.cmp(&a.leader_epoch) {
            _ if current_leader_epoch < 0 => ErrorCode::NONE,
            Ordering::Greater => ErrorCode::UNKNOWN_LEADER_EPOCH,
            Ordering::Less => ErrorCode::FENCED_LEADER_EPOCH,
            Ordering::Equal => ErrorCode::NONE,
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, PartitionState> {
        // A panic while holding the lock is a bug; the state is still the best we have.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A key that identifies this partition while it lives (for group commit).
    pub fn key(&self) -> usize {
        &self.state as *const _ as usize
    }
}

/// What a leader append did.
pub struct Appended {
    /// Bytes and records appended (0 for a duplicate of an earlier batch).
    pub bytes: usize,
    pub records: i32,
    /// The batch's first offset (a duplicate's: the original's).
    pub base_offset: i64,
    /// The LogAppendTime written into the batch, or -1.
    pub log_append_time_ms: i64,
    pub log_start_offset: i64,
    /// Set when the caller asked to wait for durability.
    pub sync: Option<SyncHandle>,
}

impl Partition {
    /// Appends one validated batch as this partition's leader (`node`): refuses it unless
    /// `node` leads, answers a duplicate idempotent batch with the original offset, refuses a
    /// sequence out of order, stamps the leader epoch (and LogAppendTime when
    /// `log_append_time`), appends, records the producer's sequence, snapshots producer state
    /// after a roll, and advances the high watermark (a single node is the whole ISR).
    pub fn append_as_leader(
        &self,
        node: i32,
        mut batch: BytesMut,
        header: &BatchHeader,
        log_append_time: bool,
        now: i64,
        wants_sync: bool,
    ) -> Result<Appended, ApiError> {
        let mut state = self.lock();
        let state = &mut *state;
        // Read under the partition's lock, which assignment changes also take: the batch is
        // appended by the leader of the epoch it is stamped with.
        let check = self.check_leader(node, -1);
        if !check.is_ok() {
            return Err(ApiError::new(
                check,
                "This node is not the leader of this partition.",
            ));
        }
        let Some(log) = state.log.as_mut() else {
            return Err(ApiError::new(
                ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                "This partition was deleted.",
            ));
        };
        let leader_epoch = self.leader_epoch();
        if header.producer_id >= 0 {
            match state.producers.check(
                header.producer_id,
                header.producer_epoch,
                header.base_sequence,
                header.last_sequence(),
            ) {
                SequenceCheck::Append => {}
                SequenceCheck::Duplicate { base_offset } => {
                    // Already written: answer as the first time. It may not be on disk yet if
                    // the first attempt is still waiting for its fsync, so wait for one too.
                    let sync = wants_sync.then(|| log.sync_handle());
                    return Ok(Appended {
                        bytes: 0,
                        records: 0,
                        base_offset,
                        log_append_time_ms: -1,
                        log_start_offset: log.log_start_offset(),
                        sync,
                    });
                }
                SequenceCheck::Reject(code) => {
                    return Err(ApiError::new(
                        code,
                        format!(
                            "Producer {} epoch {} sent sequence {}..{} out of order for this partition.",
                            header.producer_id,
                            header.producer_epoch,
                            header.base_sequence,
                            header.last_sequence()
                        ),
                    ))
                }
            }
        }
        // Like Kafka, the leader stamps its epoch into every batch (outside the CRC), so that
        // followers can later find where their logs diverge.
        records::set_partition_leader_epoch(&mut batch, leader_epoch);
        let log_append_time_ms = if log_append_time {
            records::set_log_append_time(&mut batch, now);
            now
        } else {
            -1
        };
        let info = log.append(&mut batch, now).map_err(|e| {
            tracing::error!(topic = %self.topic, partition = self.index, "append failed: {e}");
            ApiError::new(
                ErrorCode::KAFKA_STORAGE_ERROR,
                "The broker could not write to disk.",
            )
        })?;
        if header.producer_id >= 0 {
            state.producers.record(
                header.producer_id,
                header.producer_epoch,
                header.base_sequence,
                header.last_sequence(),
                info.base_offset,
                now,
            );
        }
        snapshot_producers_after_roll(log, &state.producers, &self.topic, self.index);
        let leo = log.log_end_offset();
        log.set_high_watermark(leo);
        let sync = wants_sync.then(|| log.sync_handle());
        Ok(Appended {
            bytes: info.bytes,
            records: header.records_count,
            base_offset: info.base_offset,
            log_append_time_ms,
            log_start_offset: log.log_start_offset(),
            sync,
        })
    }
}

/// Writes the partition's producer-state snapshot when its log has rolled since the last one
/// (as Kafka does at roll), so that a restart after a crash scans at most the batches written
/// since that roll. A failure costs only a longer scan later, so it is logged, not returned.
pub(crate) fn snapshot_producers_after_roll(
    log: &mut Log,
    producers: &ProducerStates,
    topic: &str,
    partition: i32,
) {
    let active = log.active_segment_base_offset();
    let rolled = match log.snapshot_offset() {
        Some(taken) => active > taken,
        None => active > 0,
    };
    if rolled {
        if let Err(e) = log.write_snapshot(&producers.encode()) {
            tracing::warn!(
                topic,
                partition,
                "could not write the producer snapshot: {e}"
            );
        }
    }
}
