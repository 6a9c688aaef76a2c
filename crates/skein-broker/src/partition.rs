//! One replica of a partition on this node: its log, its idempotent producer state, and its
//! place in the partition's assignment (leader or follower, leader epoch, replicas, ISR).
//!
//! Everything that changes a replica goes through [`Partition`], so that the rules live in
//! one place rather than in the API handlers: appends as the leader (leadership and epoch
//! checked under the replica's lock, the leader epoch stamped into each batch, idempotent
//! sequences checked and recorded, the high watermark advanced), and the producer-state
//! snapshots taken at segment roll; DeleteRecords as the leader; and replication: the
//! leader's view of its followers ([`LeaderState`]), the high watermark and low watermark it
//! derives, a follower's append of what it fetched and its truncation where its log diverged
//! from the leader's. Transactions too: Kafka's transactional rules on a leader append, the
//! COMMIT/ABORT markers the coordinator asks for ([`Partition::append_marker_as_leader`]),
//! the aborted-transaction index they feed, and the last stable offset
//! ([`Partition::last_stable_offset`]); a follower and a restart rebuild the same from the
//! batches. And the reads, so that the Fetch and ListOffsets handlers only map requests and
//! answers: [`Partition::read_for_fetch`] (leadership and epochs, a follower's progress, the
//! bound by isolation level, the aborted transactions of the range read) and
//! [`Partition::lookup_offset`] (earliest, latest, by timestamp, max timestamp, KIP-207).

use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use bytes::BytesMut;
use skein_log::{AbortedTxn, Log, SyncHandle};
use skein_protocol::records::{self, BatchHeader, EndTxnMarker};

use crate::error::{ApiError, ErrorCode};
use crate::producer_state::{CompletedTxn, ProducerLimits, ProducerStates, SequenceCheck};
use crate::replication::{self, LeaderState};

/// The mutable part of a partition, behind its lock.
pub struct PartitionState {
    /// `None` once the partition was deleted.
    pub log: Option<Log>,
    pub producers: ProducerStates,
    /// Set while this node leads the partition (in the current leader epoch).
    pub leader: Option<LeaderState>,
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
            state: Mutex::new(PartitionState {
                log,
                producers,
                leader: None,
            }),
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

    /// The high watermark (-1 without a local log).
    pub fn high_watermark(&self) -> i64 {
        self.lock().log.as_ref().map_or(-1, |l| l.high_watermark())
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
        let a = self.assignment.read().unwrap_or_else(|e| e.into_inner());
        if a.leader != node {
            return ErrorCode::NOT_LEADER_OR_FOLLOWER;
        }
        Self::compare_epochs(current_leader_epoch, a.leader_epoch)
    }

    /// The log of this replica for a write as leader `node`: NOT_LEADER_OR_FOLLOWER if this
    /// node does not lead, the deleted error if the replica has no log any more. Call it
    /// under the partition's lock (`log` is its state's), which assignment changes also take.
    fn leader_log<'s>(&self, node: i32, log: &'s mut Option<Log>) -> Result<&'s mut Log, ApiError> {
        let check = self.check_leader(node, -1);
        if !check.is_ok() {
            return Err(ApiError::new(
                check,
                "This node is not the leader of this partition.",
            ));
        }
        log.as_mut().ok_or_else(deleted)
    }

    /// Like [`Partition::check_leader`] for a replica that need not lead (a debugging
    /// ListOffsets, replica id -2): only the client's leader epoch is checked.
    pub fn check_epoch(&self, current_leader_epoch: i32) -> ErrorCode {
        Self::compare_epochs(current_leader_epoch, self.leader_epoch())
    }

    fn compare_epochs(current_leader_epoch: i32, ours: i32) -> ErrorCode {
        use std::cmp::Ordering;
        match current_leader_epoch.cmp(&ours) {
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

/// The answer for a partition deleted while a request used it.
fn deleted() -> ApiError {
    ApiError::new(
        ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
        "This partition was deleted.",
    )
}

/// What rebuilding a follower's producer state after a truncation needs.
pub(crate) struct ProducerRebuild {
    pub limits: Arc<ProducerLimits>,
    pub now: i64,
    pub expiration_ms: i64,
}

/// How a leader append is made.
#[derive(Debug, Clone, Copy)]
pub struct AppendOptions {
    /// Write LogAppendTime into the batch (`message.timestamp.type`).
    pub log_append_time: bool,
    /// Hand back a handle to fsync the append (acks=all with `skein.acks.all.fsync`).
    pub wants_sync: bool,
    /// acks=all: refused with NOT_ENOUGH_REPLICAS when the ISR is below `min_insync`.
    pub acks_all: bool,
    /// The topic's `min.insync.replicas`: below it the high watermark does not move.
    pub min_insync: usize,
}

/// What a leader append did.
pub struct Appended {
    /// Bytes and records appended (0 for a duplicate of an earlier batch).
    pub bytes: usize,
    pub records: i32,
    /// The batch's first offset (a duplicate's: the original's).
    pub base_offset: i64,
    /// The offset an acks=all answer waits for the high watermark to pass: the batch's last.
    pub last_offset: i64,
    /// The leader epoch the batch was written in.
    pub leader_epoch: i32,
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
        now: i64,
        opts: AppendOptions,
    ) -> Result<Appended, ApiError> {
        let AppendOptions {
            log_append_time,
            wants_sync,
            acks_all,
            min_insync,
        } = opts;
        let mut state = self.lock();
        let state = &mut *state;
        // Read under the partition's lock, which assignment changes also take: the batch is
        // appended by the leader of the epoch it is stamped with.
        let log = self.leader_log(node, &mut state.log)?;
        let leader_epoch = self.leader_epoch();
        if acks_all {
            let min = min_insync;
            let isr = self
                .assignment
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .isr
                .len();
            if isr < min {
                return Err(ApiError::new(
                    ErrorCode::NOT_ENOUGH_REPLICAS,
                    format!("The ISR has {isr} replica(s), fewer than min.insync.replicas={min}."),
                ));
            }
        }
        if header.producer_id >= 0 {
            match state.producers.check(
                header.producer_id,
                header.producer_epoch,
                header.base_sequence,
                header.last_sequence(),
            ) {
                SequenceCheck::Append => {
                    if let Some(code) = state.producers.check_txn(
                        header.producer_id,
                        header.producer_epoch,
                        header.is_transactional(),
                    ) {
                        return Err(ApiError::new(
                            code,
                            format!(
                                "Producer {} has an open transaction here; it takes only transactional batches of epoch {} until its coordinator ends it.",
                                header.producer_id, header.producer_epoch
                            ),
                        ));
                    }
                }
                SequenceCheck::Duplicate { base_offset } => {
                    // Already written: answer as the first time. It may not be on disk yet if
                    // the first attempt is still waiting for its fsync, so wait for one too.
                    let sync = wants_sync.then(|| log.sync_handle());
                    return Ok(Appended {
                        bytes: 0,
                        records: 0,
                        base_offset,
                        last_offset: base_offset + i64::from(header.last_offset_delta),
                        leader_epoch,
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
            // As Kafka, the producer's last write is the batch's newest timestamp (what a
            // follower reads back from the same batch), so every replica describes it alike.
            let written_ms = if log_append_time {
                now
            } else {
                written_at(header.max_timestamp, now)
            };
            state.producers.record(
                header.producer_id,
                header.producer_epoch,
                header.base_sequence,
                header.last_sequence(),
                info.base_offset,
                written_ms,
            );
            if header.is_transactional() {
                state
                    .producers
                    .begin_txn(header.producer_id, info.base_offset);
            }
        }
        snapshot_producers_after_roll(log, &state.producers, &self.topic, self.index);
        let durable_only = state.leader.as_ref().is_some_and(|l| l.durable_only);
        let sync = (wants_sync || durable_only).then(|| log.sync_handle());
        let log_start_offset = log.log_start_offset();
        self.advance_high_watermark(state, min_insync);
        Ok(Appended {
            bytes: info.bytes,
            records: header.records_count,
            base_offset: info.base_offset,
            last_offset: info.last_offset,
            leader_epoch,
            log_append_time_ms,
            log_start_offset,
            sync,
        })
    }
}

/// The transaction marker a coordinator asks a leader to write (WriteTxnMarkers).
#[derive(Debug, Clone, Copy)]
pub struct MarkerRequest {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub coordinator_epoch: i32,
    pub committed: bool,
}

impl Partition {
    /// The last stable offset: the first offset of the oldest open transaction, or the high
    /// watermark when that is lower (or nothing is open). Read_committed consumers read below it.
    pub fn last_stable_offset(state: &PartitionState) -> i64 {
        let Some(log) = state.log.as_ref() else {
            return -1;
        };
        let hw = log.high_watermark();
        state
            .producers
            .first_unstable_offset()
            .map_or(hw, |first| first.min(hw))
    }

    /// Appends a COMMIT or ABORT control batch for `m.producer_id` as this partition's
    /// leader (`node`), ending its open transaction. Refuses it with Kafka's errors: not the
    /// leader, a producer epoch older than the producer's (INVALID_PRODUCER_EPOCH), a
    /// coordinator epoch older than its last marker's (TRANSACTION_COORDINATOR_FENCED). An
    /// aborted transaction is recorded in the aborted-transaction index.
    pub fn append_marker_as_leader(
        &self,
        node: i32,
        m: MarkerRequest,
        now: i64,
        wants_sync: bool,
        min_insync: usize,
    ) -> Result<Appended, ApiError> {
        let mut state = self.lock();
        let state = &mut *state;
        let log = self.leader_log(node, &mut state.log)?;
        if let Some(code) =
            state
                .producers
                .check_marker(m.producer_id, m.producer_epoch, m.coordinator_epoch)
        {
            return Err(ApiError::new(
                code,
                format!(
                    "Marker for producer {} epoch {} (coordinator epoch {}) is older than what this partition has seen.",
                    m.producer_id, m.producer_epoch, m.coordinator_epoch
                ),
            ));
        }
        let leader_epoch = self.leader_epoch();
        let marker = EndTxnMarker {
            committed: m.committed,
            coordinator_epoch: m.coordinator_epoch,
        };
        let mut batch = records::end_txn_marker_batch(m.producer_id, m.producer_epoch, marker, now);
        records::set_partition_leader_epoch(&mut batch, leader_epoch);
        let storage = |e: skein_log::LogError| {
            tracing::error!(topic = %self.topic, partition = self.index, "marker append failed: {e}");
            ApiError::new(
                ErrorCode::KAFKA_STORAGE_ERROR,
                "The broker could not write to disk.",
            )
        };
        let info = log.append(&mut batch, now).map_err(storage)?;
        let done = state.producers.complete_txn(
            m.producer_id,
            m.producer_epoch,
            m.coordinator_epoch,
            info.base_offset,
            now,
        );
        if let Some(done) = done.filter(|_| !m.committed) {
            log.append_aborted_txn(aborted(done)).map_err(storage)?;
        }
        snapshot_producers_after_roll(log, &state.producers, &self.topic, self.index);
        let durable_only = state.leader.as_ref().is_some_and(|l| l.durable_only);
        let sync = (wants_sync || durable_only).then(|| log.sync_handle());
        let log_start_offset = log.log_start_offset();
        self.advance_high_watermark(state, min_insync);
        Ok(Appended {
            bytes: info.bytes,
            records: 1,
            base_offset: info.base_offset,
            last_offset: info.last_offset,
            leader_epoch,
            log_append_time_ms: -1,
            log_start_offset,
            sync,
        })
    }
}

fn aborted(t: CompletedTxn) -> AbortedTxn {
    AbortedTxn {
        producer_id: t.producer_id,
        first_offset: t.first_offset,
        last_offset: t.last_offset,
        last_stable_offset: t.last_stable_offset,
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

/// A partition's producer state rebuilt from its log (see [`load_producers`]).
pub(crate) struct LoadedProducers {
    pub producers: ProducerStates,
    pub from_snapshot: bool,
    pub scanned: u64,
}

/// The partition's producer state: its newest snapshot, then every batch after it (or the
/// whole log without one), less the producers idle past their expiry. Used at start and
/// after a follower truncates its log (snapshots past the new end are gone by then).
pub(crate) fn load_producers(
    log: &mut Log,
    limits: Arc<ProducerLimits>,
    now: i64,
    expiration_ms: i64,
    topic: &str,
    index: i32,
) -> Result<LoadedProducers, skein_log::LogError> {
    let mut from_snapshot = false;
    let (mut producers, scan_from) = match log.read_snapshot() {
        Some((offset, bytes)) => match ProducerStates::decode(&bytes, limits.clone()) {
            Ok(states) => {
                from_snapshot = true;
                (states, offset)
            }
            Err(e) => {
                tracing::warn!(
                    topic,
                    partition = index,
                    "ignoring producer snapshot at offset {offset}: {e}"
                );
                (ProducerStates::new(limits), log.log_start_offset())
            }
        },
        None => (ProducerStates::new(limits), log.log_start_offset()),
    };
    let mut scanned = 0u64;
    let scan_from = scan_from.max(log.log_start_offset());
    // The aborted transactions whose markers come after the snapshot are rebuilt from the
    // batches (their index entries may not have reached the disk before a crash).
    log.truncate_txn_index_from(scan_from)?;
    let mut aborts = Vec::new();
    let mut failed = None;
    {
        let reader: &Log = log;
        reader.scan_batches(scan_from, |h: &BatchHeader| {
            scanned += 1;
            let marker = if h.is_control() {
                match reader.read(h.base_offset, 1, Some(h.base_offset + 1)) {
                    Ok(r) => records::parse_end_txn_marker(&r.records),
                    Err(e) => {
                        failed.get_or_insert(e);
                        None
                    }
                }
            } else {
                None
            };
            if let Some(done) = record_producer(&mut producers, h, marker, now) {
                aborts.push(aborted(done));
            }
        })?;
    }
    if let Some(e) = failed {
        return Err(e);
    }
    for t in aborts {
        log.append_aborted_txn(t)?;
    }
    producers.expire(now, expiration_ms);
    tracing::debug!(
        topic,
        partition = index,
        scan_from,
        scanned,
        producers = producers.len(),
        "loaded producer state"
    );
    Ok(LoadedProducers {
        producers,
        from_snapshot,
        scanned,
    })
}

/// When a batch with newest timestamp `max_timestamp` counts as written: then, or now when
/// it has none or comes from a client clock ahead of ours.
fn written_at(max_timestamp: i64, now: i64) -> i64 {
    if max_timestamp >= 0 {
        max_timestamp.min(now)
    } else {
        now
    }
}

/// Records an idempotent or transactional batch read back from a log (at start, or
/// replicated from the leader): its sequences, the transaction it opens, or, for a control
/// batch with its `marker`, the transaction the marker ends (returned when it was an ABORT,
/// for the aborted-transaction index). A batch's own newest timestamp stands for when it was
/// written; one from a client clock ahead of ours counts as now. As Kafka's replicas do, the
/// leader's checks are not repeated.
fn record_producer(
    producers: &mut ProducerStates,
    h: &BatchHeader,
    marker: Option<EndTxnMarker>,
    now: i64,
) -> Option<CompletedTxn> {
    if h.producer_id < 0 {
        return None;
    }
    let written_ms = written_at(h.max_timestamp, now);
    if h.is_control() {
        let m = marker?;
        let done = producers.complete_txn(
            h.producer_id,
            h.producer_epoch,
            m.coordinator_epoch,
            h.base_offset,
            written_ms,
        );
        return done.filter(|_| !m.committed);
    }
    if h.base_sequence >= 0 {
        producers.record(
            h.producer_id,
            h.producer_epoch,
            h.base_sequence,
            h.last_sequence(),
            h.base_offset,
            written_ms,
        );
        if h.is_transactional() {
            producers.begin_txn(h.producer_id, h.base_offset);
        }
    }
    None
}

/// Where a follower's fetch stands: the offset it fetches from (its log end), its log start
/// (-1 before Fetch v5) and the leader epoch of its last fetched batch (-1: unknown).
#[derive(Debug, Clone, Copy)]
pub struct FetchPosition {
    pub fetch_offset: i64,
    pub log_start_offset: i64,
    pub last_fetched_epoch: i32,
}

/// DeleteRecords' offset that means "up to the high watermark".
pub const DELETE_TO_HIGH_WATERMARK: i64 = -1;

/// What a leader's DeleteRecords did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeletedRecords {
    /// The new log start asked for (the high watermark for -1).
    pub requested: i64,
    /// The partition's low watermark right after the leader's deletion.
    pub low_watermark: i64,
}

/// What a follower's fetch told the leader.
pub(crate) enum FollowerFetch {
    /// Serve records from the fetch offset up to the log end.
    Serve,
    /// The follower's log diverged: it must truncate to `end_offset` of `epoch` first.
    Diverging { epoch: i32, end_offset: i64 },
}

impl Partition {
    /// Brings this replica's role in line with its assignment; callers hold the state lock
    /// and have just set the assignment. A leader in a new epoch starts a fresh
    /// [`LeaderState`]; a partition with no other replica has everything it holds committed,
    /// so its high watermark is its log end.
    pub(crate) fn sync_role(&self, state: &mut PartitionState, node: i32, now: i64, fsync: bool) {
        let a = self.assignment();
        let Some(log) = state.log.as_mut() else {
            state.leader = None;
            return;
        };
        if a.replicas == [node] {
            let leo = log.log_end_offset();
            log.set_high_watermark(leo);
        }
        if a.leader != node {
            state.leader = None;
            return;
        }
        match &mut state.leader {
            Some(l) if l.leader_epoch == a.leader_epoch => l.reassigned(&a, now),
            _ => state.leader = Some(LeaderState::new(&a, log.log_end_offset(), now)),
        }
        if let Some(l) = state.leader.as_mut() {
            // Alone, everything in the log is committed as soon as it is written (an acks=all
            // answer still waits for the fsync); with followers, whose reported ends are
            // fsynced, the leader's own part of the high watermark is its fsynced end too.
            l.durable_only = fsync && a.replicas.len() > 1;
        }
    }

    /// Records that the log is fsynced below `end` and lets the high watermark follow (a
    /// leader whose own part counts only as far as it is fsynced). Returns whether the high
    /// watermark advanced.
    pub(crate) fn mark_durable(&self, end: i64, min_insync: usize) -> bool {
        let mut state = self.lock();
        let Some(log) = state.log.as_mut() else {
            return false;
        };
        log.mark_durable(end);
        self.advance_high_watermark(&mut state, min_insync)
    }

    /// As the leader, moves the high watermark to what the ISR has confirmed; returns
    /// whether it advanced.
    pub(crate) fn advance_high_watermark(
        &self,
        state: &mut PartitionState,
        min_insync: usize,
    ) -> bool {
        let (Some(leader), Some(log)) = (state.leader.as_ref(), state.log.as_mut()) else {
            return false;
        };
        let a = self.assignment.read().unwrap_or_else(|e| e.into_inner());
        let current = log.high_watermark();
        let own_end = if leader.durable_only {
            log.recovery_point().min(log.log_end_offset())
        } else {
            log.log_end_offset()
        };
        let hw = leader.high_watermark(&a, own_end, current, min_insync);
        if hw > current {
            log.set_high_watermark(hw);
            true
        } else {
            false
        }
    }

    /// As the leader, records a fetch by `follower` (with the broker epoch its fetch states,
    /// -1 before Fetch v15) at `at` (its fetch offset, its log start, and the epoch of its
    /// last fetched batch). Answers whether to serve it or make it truncate first, and
    /// whether waiters should look again: the high watermark advanced, or the follower's log
    /// start moved (which may complete a DeleteRecords).
    pub(crate) fn follower_fetched(
        &self,
        state: &mut PartitionState,
        (follower, broker_epoch): (i32, i64),
        at: FetchPosition,
        now: i64,
        min_insync: usize,
    ) -> Result<(FollowerFetch, bool), ErrorCode> {
        let FetchPosition {
            fetch_offset,
            log_start_offset,
            last_fetched_epoch,
        } = at;
        let Some(log) = state.log.as_ref() else {
            return Err(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION);
        };
        let leader_end = (last_fetched_epoch >= 0)
            .then(|| log.end_offset_for_epoch(last_fetched_epoch))
            .flatten();
        if let Some((epoch, end_offset)) =
            replication::diverging_epoch(last_fetched_epoch, fetch_offset, leader_end)
        {
            return Ok((FollowerFetch::Diverging { epoch, end_offset }, false));
        }
        let leo = log.log_end_offset();
        if fetch_offset > leo || fetch_offset < log.log_start_offset() {
            return Err(ErrorCode::OFFSET_OUT_OF_RANGE);
        }
        let Some(leader) = state.leader.as_mut() else {
            return Err(ErrorCode::NOT_LEADER_OR_FOLLOWER);
        };
        leader.note_broker_epoch(follower, broker_epoch);
        if !leader.on_fetch(follower, fetch_offset, leo, now) {
            return Err(ErrorCode::NOT_LEADER_OR_FOLLOWER);
        }
        let start_moved = leader.note_log_start(follower, log_start_offset);
        let advanced = self.advance_high_watermark(state, min_insync);
        Ok((FollowerFetch::Serve, advanced || start_moved))
    }

    /// As the leader, the partition's low watermark: the lowest log start across this
    /// replica and the followers whose brokers are `alive` (see
    /// [`LeaderState::low_watermark`]). `None` unless this replica leads.
    pub(crate) fn low_watermark(&self, node: i32, alive: impl Fn(i32) -> bool) -> Option<i64> {
        let state = self.lock();
        if !self.check_leader(node, -1).is_ok() {
            return None;
        }
        let log = state.log.as_ref()?;
        Some(match &state.leader {
            Some(l) => l.low_watermark(log.log_start_offset(), alive),
            None => log.log_start_offset(),
        })
    }

    /// As the leader (`node`), raises the log start to `offset` (-1: the high watermark),
    /// as DeleteRecords asks. Refuses a log whose `cleanup.policy` has no `delete`
    /// (POLICY_VIOLATION) and an offset past the high watermark (OFFSET_OUT_OF_RANGE).
    /// Answers the offset asked for and the partition's low watermark now: the followers
    /// raise their log starts when they next fetch, and the caller waits for them.
    pub fn delete_records(
        &self,
        node: i32,
        offset: i64,
        alive: impl Fn(i32) -> bool,
    ) -> Result<DeletedRecords, ApiError> {
        let mut state = self.lock();
        let state = &mut *state;
        let log = self.leader_log(node, &mut state.log)?;
        if !log.config().delete_retention {
            return Err(ApiError::new(
                ErrorCode::POLICY_VIOLATION,
                "Records of this partition cannot be deleted: its cleanup.policy has no delete.",
            ));
        }
        let hw = log.high_watermark();
        let requested = if offset == DELETE_TO_HIGH_WATERMARK {
            hw
        } else {
            offset
        };
        if requested < 0 || requested > hw {
            return Err(ApiError::new(
                ErrorCode::OFFSET_OUT_OF_RANGE,
                format!("Offset {requested} is outside the partition (high watermark {hw})."),
            ));
        }
        log.delete_records_before(requested).map_err(|e| {
            tracing::warn!(topic = %self.topic, partition = self.index, "delete records failed: {e}");
            ApiError::new(
                ErrorCode::KAFKA_STORAGE_ERROR,
                "The broker could not delete the records.",
            )
        })?;
        let leader_start = log.log_start_offset();
        let low_watermark = match &state.leader {
            Some(l) => l.low_watermark(leader_start, alive),
            None => leader_start,
        };
        Ok(DeletedRecords {
            requested,
            low_watermark,
        })
    }

    /// As the leader, whether the high watermark still lags the start of this leader's epoch
    /// (see [`LeaderState::lags_epoch_start`]); false for a follower.
    pub(crate) fn high_watermark_lags_epoch_start(state: &PartitionState) -> bool {
        match (&state.leader, &state.log) {
            (Some(l), Some(log)) => l.lags_epoch_start(log.high_watermark()),
            _ => false,
        }
    }

    /// As a follower of the leader of `leader_epoch`, appends batches fetched from it (their
    /// offsets kept), records their producers, and takes the leader's high watermark and log
    /// start as far as this log reaches. Returns the bytes appended and a handle to fsync them.
    pub(crate) fn append_as_follower(
        &self,
        node: i32,
        leader_epoch: i32,
        batches: &mut [u8],
        leader_high_watermark: i64,
        leader_log_start: i64,
        now: i64,
    ) -> Result<(usize, Option<SyncHandle>), ApiError> {
        let mut state = self.lock();
        let state = &mut *state;
        {
            let a = self.assignment.read().unwrap_or_else(|e| e.into_inner());
            if a.leader == node || a.leader_epoch != leader_epoch {
                return Err(ApiError::new(
                    ErrorCode::FENCED_LEADER_EPOCH,
                    "The fetched data is from another leader epoch.",
                ));
            }
        }
        let Some(log) = state.log.as_mut() else {
            return Err(deleted());
        };
        let mut bytes = 0;
        let mut sync = None;
        if !batches.is_empty() {
            let info = log.append_replicated(batches, now).map_err(|e| {
                ApiError::new(
                    ErrorCode::CORRUPT_MESSAGE,
                    format!("replicated append: {e}"),
                )
            })?;
            bytes = info.bytes;
            let mut pos = 0;
            let mut aborts = Vec::new();
            while pos < batches.len() {
                let Ok(h) = BatchHeader::parse(&batches[pos..]) else {
                    break;
                };
                let end = (pos + h.total_len()).min(batches.len());
                let marker = h
                    .is_control()
                    .then(|| records::parse_end_txn_marker(&batches[pos..end]))
                    .flatten();
                if let Some(done) = record_producer(&mut state.producers, &h, marker, now) {
                    aborts.push(aborted(done));
                }
                pos += h.total_len();
            }
            for t in aborts {
                log.append_aborted_txn(t).map_err(|e| {
                    ApiError::new(
                        ErrorCode::KAFKA_STORAGE_ERROR,
                        format!("aborted-transaction index: {e}"),
                    )
                })?;
            }
            snapshot_producers_after_roll(log, &state.producers, &self.topic, self.index);
            sync = Some(log.sync_handle());
        }
        let hw = leader_high_watermark.min(log.log_end_offset());
        if hw > log.high_watermark() {
            log.set_high_watermark(hw);
        }
        // Records the leader deleted (DeleteRecords, retention) go here too, as far as this
        // log reaches (Kafka's follower raises its log start from the fetch response).
        let start = leader_log_start.min(log.log_end_offset());
        if start > log.log_start_offset() {
            if let Err(e) = log.delete_records_before(start) {
                tracing::warn!(topic = %self.topic, partition = self.index, "raising the log start to the leader's: {e}");
            }
        }
        Ok((bytes, sync))
    }

    /// As a follower, cuts the log where it diverged from the leader's: at the end of
    /// `epoch` in the leader's log, or earlier where this log's own `epoch` ended. Rebuilds
    /// the producer state from what remains.
    pub(crate) fn truncate_diverged(
        &self,
        epoch: i32,
        leader_end_offset: i64,
        rebuild: ProducerRebuild,
    ) -> Result<i64, ApiError> {
        let mut state = self.lock();
        let state = &mut *state;
        let Some(log) = state.log.as_mut() else {
            return Err(deleted());
        };
        let own_end = log
            .end_offset_for_epoch(epoch)
            .map_or(log.log_end_offset(), |(_, end)| end);
        let target = replication::truncation_offset(leader_end_offset, own_end);
        self.cut_to(state, target, rebuild)
    }

    /// As a follower whose fetch offset the leader does not have: restart this log at the
    /// leader's log start when it is behind it, else cut it to the leader's log end.
    pub(crate) fn reset_out_of_range(
        &self,
        leader_log_start: i64,
        leader_log_end: i64,
        rebuild: ProducerRebuild,
    ) -> Result<i64, ApiError> {
        let mut state = self.lock();
        let state = &mut *state;
        let Some(log) = state.log.as_mut() else {
            return Err(deleted());
        };
        let storage =
            |e: skein_log::LogError| ApiError::new(ErrorCode::KAFKA_STORAGE_ERROR, e.to_string());
        if log.log_end_offset() < leader_log_start {
            log.restart_at(leader_log_start).map_err(storage)?;
            state.producers = ProducerStates::new(rebuild.limits);
            return Ok(log.log_end_offset());
        }
        let target = leader_log_end.max(0);
        self.cut_to(state, target, rebuild)
    }

    /// Rebuilds the producer state from the log (a leader elected uncleanly recovering,
    /// KIP-704); callers hold the state lock.
    pub(crate) fn reload_producers(
        &self,
        state: &mut PartitionState,
        rebuild: ProducerRebuild,
    ) -> Result<(), ApiError> {
        let Some(log) = state.log.as_mut() else {
            return Err(deleted());
        };
        let loaded = load_producers(
            log,
            rebuild.limits,
            rebuild.now,
            rebuild.expiration_ms,
            &self.topic,
            self.index,
        )
        .map_err(|e| ApiError::new(ErrorCode::KAFKA_STORAGE_ERROR, e.to_string()))?;
        state.producers = loaded.producers;
        Ok(())
    }

    fn cut_to(
        &self,
        state: &mut PartitionState,
        target: i64,
        rebuild: ProducerRebuild,
    ) -> Result<i64, ApiError> {
        let ProducerRebuild {
            limits,
            now,
            expiration_ms,
        } = rebuild;
        let storage =
            |e: skein_log::LogError| ApiError::new(ErrorCode::KAFKA_STORAGE_ERROR, e.to_string());
        let Some(log) = state.log.as_mut() else {
            return Ok(0);
        };
        if target >= log.log_end_offset() {
            return Ok(log.log_end_offset());
        }
        tracing::info!(
            topic = %self.topic,
            partition = self.index,
            from = log.log_end_offset(),
            to = target,
            "truncating the follower's log where it diverged from the leader's"
        );
        log.truncate_to(target).map_err(storage)?;
        let loaded = load_producers(log, limits, now, expiration_ms, &self.topic, self.index)
            .map_err(storage)?;
        state.producers = loaded.producers;
        Ok(log.log_end_offset())
    }
}

/// Who reads a partition with Fetch, and how.
#[derive(Debug, Clone, Copy)]
pub struct FetchRead {
    pub fetch_offset: i64,
    /// The leader epoch the reader believes in (-1: no check, KIP-320).
    pub current_leader_epoch: i32,
    /// A follower's fetch; `None` for a consumer's.
    pub follower: Option<FollowerRead>,
    /// A consumer reading below the last stable offset rather than the high watermark.
    pub read_committed: bool,
    /// The most bytes this partition may return: its `partition_max_bytes` within what the
    /// response has left.
    pub max_bytes: usize,
    /// The bytes the response has left.
    pub remaining: usize,
    /// Whether the response already carries records: then this partition returns none over
    /// `remaining`, and none at all when `max_bytes` is 0 (KIP-74 lets only the first
    /// partition with data go over the limits, so that a large batch still makes progress).
    pub response_has_data: bool,
}

/// A follower's side of a Fetch read.
#[derive(Debug, Clone, Copy)]
pub struct FollowerRead {
    /// The follower's node id, and its broker epoch (-1 before Fetch v15).
    pub id: (i32, i64),
    pub at: FetchPosition,
    pub now: i64,
    /// The topic's `min.insync.replicas`, for the high watermark the fetch may move.
    pub min_insync: usize,
}

/// What a Fetch read of one partition found.
#[derive(Debug)]
pub enum FetchOutcome {
    /// Records from the fetch offset (none when there are none yet, or when they do not fit),
    /// with the partition's watermarks.
    Data(FetchedData),
    /// A follower whose log diverged from this leader's: it truncates to `end_offset` of
    /// `epoch` before fetching again.
    Diverging {
        epoch: i32,
        end_offset: i64,
        high_watermark: i64,
        log_start_offset: i64,
    },
    /// Refused with `code`. A follower's refusal carries this leader's log start and high
    /// watermark (to recover from an offset out of range, and a safe place to cut to); the
    /// others carry -1, as Kafka answers (clients look offsets up with ListOffsets).
    Refused {
        code: ErrorCode,
        high_watermark: i64,
        log_start_offset: i64,
    },
    /// This node leads the partition but has no log of it any more (deleted meanwhile).
    NoLog,
}

/// Records a Fetch read returns, with the partition's watermarks.
#[derive(Debug)]
pub struct FetchedData {
    pub high_watermark: i64,
    /// A consumer's last stable offset; the high watermark for a follower.
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    /// The file ranges of the batches read; `None` when nothing was returned.
    pub records: Option<skein_log::RangeRead>,
    /// For a read_committed consumer that got records: the aborted transactions those
    /// batches may hold records of. `None` otherwise.
    pub aborted: Option<Vec<AbortedTxn>>,
}

/// A Fetch read and whether it moved what waiters wait for (see
/// [`Partition::follower_fetched`]).
#[derive(Debug)]
pub struct FetchResult {
    pub outcome: FetchOutcome,
    pub hw_advanced: bool,
}

impl Partition {
    /// Reads for Fetch as this partition's leader (`node`): checks leadership and the
    /// reader's leader epoch; for a follower, records its progress as the leader sees it
    /// (which may move the high watermark) and reads up to the log end; for a consumer,
    /// reads below the high watermark (the last stable offset when read_committed) and
    /// returns the aborted transactions of the range read when read_committed.
    pub fn read_for_fetch(&self, node: i32, r: FetchRead) -> FetchResult {
        let refused = |code: ErrorCode| FetchResult {
            outcome: FetchOutcome::Refused {
                code,
                high_watermark: -1,
                log_start_offset: -1,
            },
            hw_advanced: false,
        };
        let check = self.check_leader(node, r.current_leader_epoch);
        if !check.is_ok() {
            return refused(check);
        }
        let mut state = self.lock();
        if state.log.is_none() {
            return FetchResult {
                outcome: FetchOutcome::NoLog,
                hw_advanced: false,
            };
        }
        let mut hw_advanced = false;
        if let Some(f) = r.follower {
            match self.follower_fetched(&mut state, f.id, f.at, f.now, f.min_insync) {
                Ok((FollowerFetch::Serve, advanced)) => hw_advanced = advanced,
                Ok((FollowerFetch::Diverging { epoch, end_offset }, _)) => {
                    let log = state.log.as_ref().expect("checked above");
                    return FetchResult {
                        outcome: FetchOutcome::Diverging {
                            epoch,
                            end_offset,
                            high_watermark: log.high_watermark(),
                            log_start_offset: log.log_start_offset(),
                        },
                        hw_advanced: false,
                    };
                }
                Err(code) => {
                    let log = state.log.as_ref().expect("checked above");
                    return FetchResult {
                        outcome: FetchOutcome::Refused {
                            code,
                            high_watermark: log.high_watermark(),
                            log_start_offset: log.log_start_offset(),
                        },
                        hw_advanced: false,
                    };
                }
            }
        }
        let consumer = r.follower.is_none();
        let log = state.log.as_ref().expect("checked above");
        let hw = log.high_watermark();
        // Consumers read below the high watermark, read_committed ones below the last stable
        // offset (no record of a transaction still open); followers up to the log end.
        let lso = Self::last_stable_offset(&state);
        let max_offset = consumer.then_some(if r.read_committed { lso } else { hw });
        let mut data = FetchedData {
            high_watermark: hw,
            last_stable_offset: if consumer { lso } else { hw },
            log_start_offset: log.log_start_offset(),
            records: None,
            aborted: None,
        };
        if r.max_bytes == 0 && r.response_has_data {
            return FetchResult {
                outcome: FetchOutcome::Data(data),
                hw_advanced,
            };
        }
        let outcome = match log.read_ranges(r.fetch_offset, r.max_bytes.max(1), max_offset) {
            Ok(read) if read.bytes > 0 && (!r.response_has_data || read.bytes <= r.remaining) => {
                if r.read_committed && consumer {
                    data.aborted = Some(log.aborted_txns(r.fetch_offset, read.next_offset));
                }
                data.records = Some(read);
                FetchOutcome::Data(data)
            }
            Ok(_) => FetchOutcome::Data(data),
            Err(skein_log::LogError::OffsetOutOfRange { .. }) => {
                return FetchResult {
                    hw_advanced,
                    ..refused(ErrorCode::OFFSET_OUT_OF_RANGE)
                }
            }
            Err(e) => {
                tracing::error!(topic = %self.topic, partition = self.index, "read failed: {e}");
                return FetchResult {
                    hw_advanced,
                    ..refused(ErrorCode::KAFKA_STORAGE_ERROR)
                };
            }
        };
        FetchResult {
            outcome,
            hw_advanced,
        }
    }
}

/// What ListOffsets asks of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetQuery {
    /// The log start offset.
    Earliest,
    /// The local log start offset (the same here: no tiered storage).
    EarliestLocal,
    /// The last fetchable offset: the high watermark (a read_committed consumer: the last
    /// stable offset), or the log end for a replica or a debugging request.
    Latest,
    /// The offset and timestamp of the record with the newest timestamp.
    MaxTimestamp,
    /// The first offset whose timestamp is at or after this one (ms).
    Timestamp(i64),
    /// A special value with no answer here (such as latest tiered): answered with none.
    Unanswered,
}

/// Who asks ListOffsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetsReader {
    /// A consumer (replica id -1): only the leader answers, below the high watermark (the
    /// last stable offset when read_committed), and not at all while a new leader's high
    /// watermark lags the start of its epoch (KIP-207).
    Consumer { read_committed: bool },
    /// A replica: only the leader answers, up to the log end.
    Replica,
    /// A debugging request (replica id -2): any replica answers, up to the log end.
    Debugging,
}

/// What a ListOffsets lookup found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FoundOffset {
    pub offset: i64,
    /// The record's timestamp for a lookup by timestamp, else -1.
    pub timestamp: i64,
    /// The partition's leader epoch when it answered.
    pub leader_epoch: i32,
}

impl Partition {
    /// Answers one ListOffsets lookup on this replica (this node is `node`), checking
    /// leadership (unless a debugging request) and the reader's leader epoch: the offset
    /// found, none (no error, -1 in the answer), or an error; OFFSET_NOT_AVAILABLE when a
    /// consumer asks a new leader whose high watermark still lags the start of its epoch for
    /// the latest offset or for one not found below the high watermark (KIP-207).
    pub fn lookup_offset(
        &self,
        node: i32,
        reader: OffsetsReader,
        current_leader_epoch: i32,
        query: OffsetQuery,
    ) -> Result<Option<FoundOffset>, ErrorCode> {
        let check = match reader {
            OffsetsReader::Debugging => self.check_epoch(current_leader_epoch),
            _ => self.check_leader(node, current_leader_epoch),
        };
        if !check.is_ok() {
            return Err(check);
        }
        let state = self.lock();
        let Some(log) = state.log.as_ref() else {
            // A node without a replica, asked by a debugging request: another node has it.
            return Err(if reader == OffsetsReader::Debugging {
                ErrorCode::NOT_LEADER_OR_FOLLOWER
            } else {
                ErrorCode::UNKNOWN_TOPIC_OR_PARTITION
            });
        };
        let found = match query {
            OffsetQuery::MaxTimestamp => log.max_timestamp(),
            OffsetQuery::Timestamp(ts) => log.offset_for_timestamp(ts),
            _ => Ok(None),
        };
        let found = found.map_err(|e| {
            tracing::error!(topic = %self.topic, partition = self.index, "offset lookup failed: {e}");
            ErrorCode::KAFKA_STORAGE_ERROR
        })?;
        let (last_fetchable, not_available) = match reader {
            OffsetsReader::Consumer { read_committed } => (
                if read_committed {
                    Self::last_stable_offset(&state)
                } else {
                    log.high_watermark()
                },
                Self::high_watermark_lags_epoch_start(&state),
            ),
            _ => (log.log_end_offset(), false),
        };
        let answer = answer_lookup(OffsetLookup {
            query,
            log_start: log.log_start_offset(),
            found,
            last_fetchable,
            not_available,
        })?;
        let leader_epoch = self.leader_epoch();
        Ok(answer.map(|(offset, timestamp)| FoundOffset {
            offset,
            timestamp,
            leader_epoch,
        }))
    }
}

/// What the replica knows for one ListOffsets lookup.
#[derive(Debug, Clone, Copy)]
struct OffsetLookup {
    query: OffsetQuery,
    log_start: i64,
    /// What a lookup by timestamp found in the whole log: `(offset, timestamp)`.
    found: Option<(i64, i64)>,
    /// The high watermark (or last stable offset) for a consumer, the log end otherwise.
    last_fetchable: i64,
    /// A consumer asks while the leader's high watermark lags the start of its epoch.
    not_available: bool,
}

/// The answer to one lookup: `(offset, timestamp)`, none, or OFFSET_NOT_AVAILABLE.
fn answer_lookup(l: OffsetLookup) -> Result<Option<(i64, i64)>, ErrorCode> {
    let unavailable = || {
        if l.not_available {
            Err(ErrorCode::OFFSET_NOT_AVAILABLE)
        } else {
            Ok(None)
        }
    };
    match l.query {
        OffsetQuery::Earliest | OffsetQuery::EarliestLocal => Ok(Some((l.log_start, -1))),
        OffsetQuery::Latest if l.not_available => Err(ErrorCode::OFFSET_NOT_AVAILABLE),
        OffsetQuery::Latest => Ok(Some((l.last_fetchable, -1))),
        // By timestamp and max timestamp: only what lies below the last fetchable offset.
        OffsetQuery::MaxTimestamp | OffsetQuery::Timestamp(_) => match l.found {
            Some((offset, ts)) if offset < l.last_fetchable => Ok(Some((offset, ts))),
            _ => unavailable(),
        },
        OffsetQuery::Unanswered => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(query: OffsetQuery, found: Option<(i64, i64)>, not_available: bool) -> OffsetLookup {
        OffsetLookup {
            query,
            log_start: 3,
            found,
            last_fetchable: 10,
            not_available,
        }
    }

    #[test]
    fn a_lagging_new_leader_refuses_latest_and_lookups_past_its_high_watermark() {
        use OffsetQuery::*;
        // Normal answers.
        assert_eq!(
            answer_lookup(lookup(Latest, None, false)),
            Ok(Some((10, -1)))
        );
        assert_eq!(
            answer_lookup(lookup(Earliest, None, false)),
            Ok(Some((3, -1)))
        );
        assert_eq!(
            answer_lookup(lookup(Timestamp(500), Some((7, 600)), false)),
            Ok(Some((7, 600)))
        );
        assert_eq!(
            answer_lookup(lookup(Timestamp(500), Some((12, 600)), false)),
            Ok(None)
        );
        assert_eq!(answer_lookup(lookup(Timestamp(500), None, false)), Ok(None));
        assert_eq!(
            answer_lookup(lookup(MaxTimestamp, Some((12, 900)), false)),
            Ok(None)
        );
        // In the window: latest and whatever lies at or past the high watermark are not
        // available; what lies below it, and the earliest offset, still are.
        let na = Err(ErrorCode::OFFSET_NOT_AVAILABLE);
        assert_eq!(answer_lookup(lookup(Latest, None, true)), na);
        assert_eq!(
            answer_lookup(lookup(Timestamp(500), Some((12, 600)), true)),
            na
        );
        assert_eq!(answer_lookup(lookup(Timestamp(500), None, true)), na);
        assert_eq!(
            answer_lookup(lookup(MaxTimestamp, Some((12, 900)), true)),
            na
        );
        assert_eq!(
            answer_lookup(lookup(MaxTimestamp, Some((9, 900)), true)),
            Ok(Some((9, 900)))
        );
        assert_eq!(
            answer_lookup(lookup(Timestamp(500), Some((7, 600)), true)),
            Ok(Some((7, 600)))
        );
        assert_eq!(
            answer_lookup(lookup(Earliest, None, true)),
            Ok(Some((3, -1)))
        );
        assert_eq!(
            answer_lookup(lookup(EarliestLocal, None, true)),
            Ok(Some((3, -1)))
        );
        assert_eq!(answer_lookup(lookup(Unanswered, None, true)), Ok(None));
    }
}
