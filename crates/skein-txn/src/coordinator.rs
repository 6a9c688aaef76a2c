//! [`TxnCoordinator`]: every transactional id of the `__transaction_state` partitions this
//! node leads, and Kafka's transaction state machine over them.
//!
//! Each public method takes plain inputs plus `now_ms` and returns its answer or the
//! [`Effect`]s to carry out. Nothing here reads a clock, touches a socket or writes a file.
//!
//! A state change is never applied directly: it becomes the *pending* transition of its
//! transactional id and an [`Effect::Persist`]; only when the caller reports the append
//! durable ([`TxnCoordinator::persisted`]) does the new state take effect and the waiting
//! request get its answer. A failed append drops the pending transition (the state stays as
//! it was, as in the log) and the request gets Kafka's error for it. While a transition is
//! pending, other requests for the same id get CONCURRENT_TRANSACTIONS.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::TxnConfig;
use crate::error::ErrorCode;
use crate::record::{TxnLogValue, TxnRecord, TxnState};
use crate::types::{
    Effect, InitProducerId, Markers, Persist, Response, Token, TopicPartition, TxnDescription,
    TxnList, TxnListing, TxnView, CONSUMER_OFFSETS_TOPIC,
};

/// No producer id (Kafka's `RecordBatch.NO_PRODUCER_ID`).
pub const NO_PRODUCER_ID: i64 = -1;
/// No producer epoch (Kafka's `RecordBatch.NO_PRODUCER_EPOCH`).
pub const NO_PRODUCER_EPOCH: i16 = -1;

/// Java's `String.hashCode`: `h = 31 * h + c` over the UTF-16 code units, wrapping.
pub fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

/// The `__transaction_state` partition of `transactional_id`, as Kafka computes it:
/// `Utils.abs(id.hashCode()) % partitions` (where `abs(i32::MIN)` is 0).
pub fn partition_for(transactional_id: &str, partitions: i32) -> i32 {
    if partitions <= 0 {
        return 0;
    }
    let h = java_string_hash(transactional_id);
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs % partitions
}

/// An epoch that cannot be bumped once more (Kafka's `isEpochExhausted`).
fn epoch_exhausted(epoch: i16) -> bool {
    epoch >= i16::MAX - 1
}

/// The persisted part of a transactional id's state (Kafka's `TransactionMetadata` minus
/// the pending state).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Meta {
    producer_id: i64,
    last_producer_id: i64,
    producer_epoch: i16,
    last_producer_epoch: i16,
    timeout_ms: i32,
    state: TxnState,
    partitions: BTreeSet<TopicPartition>,
    start_ms: i64,
    update_ms: i64,
}

impl Meta {
    fn to_value(&self) -> TxnLogValue {
        let mut partitions: Vec<(String, Vec<i32>)> = Vec::new();
        for (t, p) in &self.partitions {
            match partitions.last_mut() {
                Some((last, ps)) if last == t => ps.push(*p),
                _ => partitions.push((t.clone(), vec![*p])),
            }
        }
        TxnLogValue {
            producer_id: self.producer_id,
            previous_producer_id: self.last_producer_id,
            next_producer_id: -1,
            producer_epoch: self.producer_epoch,
            timeout_ms: self.timeout_ms,
            state: self.state,
            partitions,
            last_update_ms: self.update_ms,
            start_ms: self.start_ms,
            client_transaction_version: 0,
        }
    }

    fn from_value(v: &TxnLogValue) -> Meta {
        Meta {
            producer_id: v.producer_id,
            last_producer_id: v.previous_producer_id,
            producer_epoch: v.producer_epoch,
            // Not persisted (as in Kafka): a KIP-360 retry across a coordinator move fails.
            last_producer_epoch: NO_PRODUCER_EPOCH,
            timeout_ms: v.timeout_ms,
            state: v.state,
            partitions: v
                .partitions
                .iter()
                .flat_map(|(t, ps)| ps.iter().map(move |p| (t.clone(), *p)))
                .collect(),
            start_ms: v.start_ms,
            update_ms: v.last_update_ms,
        }
    }

    fn with(&self, state: TxnState, now_ms: i64) -> Meta {
        Meta {
            state,
            update_ms: now_ms,
            ..self.clone()
        }
    }
}

/// What happens once a pending transition is persisted (or fails to be).
#[derive(Debug, Clone, PartialEq, Eq)]
enum After {
    InitProducerId(Token),
    AddPartitions(Token),
    AddOffsets(Token),
    /// A Prepare state: answer `client` (EndTxn) and/or `fence` (InitProducerId that
    /// aborts an older epoch's transaction, answered CONCURRENT_TRANSACTIONS), then write
    /// markers. Neither for a timeout abort.
    Prepare {
        client: Option<Token>,
        fence: Option<Token>,
    },
    /// A Complete state after the markers.
    Complete,
    /// The tombstone of an expired id.
    Expire,
}

#[derive(Debug, Clone)]
struct Pending {
    write_id: u64,
    /// `None` = tombstone.
    target: Option<Meta>,
    then: After,
}

#[derive(Debug, Clone)]
struct Txn {
    meta: Meta,
    pending: Option<Pending>,
    /// Markers requested and not yet reported written.
    markers_pending: bool,
    /// An EndTxn answered once the Complete state is persisted.
    waiting_end: Option<Token>,
    /// A failed Complete write to retry at this time.
    retry_complete_at: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PartitionState {
    Loading,
    Owned { coordinator_epoch: i32 },
}

/// Kafka's mapping of a failed `__transaction_state` append to the error the client sees
/// (`TransactionStateManager.appendTransactionToLog`).
pub fn append_error(e: ErrorCode) -> ErrorCode {
    match e {
        ErrorCode::UNKNOWN_TOPIC_OR_PARTITION
        | ErrorCode::NOT_ENOUGH_REPLICAS
        | ErrorCode::NOT_ENOUGH_REPLICAS_AFTER_APPEND
        | ErrorCode::REQUEST_TIMED_OUT => ErrorCode::COORDINATOR_NOT_AVAILABLE,
        ErrorCode::NOT_LEADER_OR_FOLLOWER | ErrorCode::KAFKA_STORAGE_ERROR => {
            ErrorCode::NOT_COORDINATOR
        }
        ErrorCode::MESSAGE_TOO_LARGE | ErrorCode::RECORD_LIST_TOO_LARGE => {
            ErrorCode::UNKNOWN_SERVER_ERROR
        }
        other => other,
    }
}

/// PRODUCER_FENCED (KIP-588) is sent only from `first_version` of an API on; older clients
/// get INVALID_PRODUCER_EPOCH, which they handle the same way.
fn fenced_for(error: ErrorCode, version: i16, first_version: i16) -> ErrorCode {
    if error == ErrorCode::PRODUCER_FENCED && version < first_version {
        ErrorCode::INVALID_PRODUCER_EPOCH
    } else {
        error
    }
}

/// The transactions of every `__transaction_state` partition this node leads.
#[derive(Debug, Clone)]
pub struct TxnCoordinator {
    config: TxnConfig,
    partitions: BTreeMap<i32, PartitionState>,
    txns: BTreeMap<String, Txn>,
    next_write_id: u64,
}

impl TxnCoordinator {
    pub fn new(config: TxnConfig) -> Self {
        TxnCoordinator {
            config,
            partitions: BTreeMap::new(),
            txns: BTreeMap::new(),
            next_write_id: 1,
        }
    }

    pub fn config(&self) -> &TxnConfig {
        &self.config
    }

    /// The `__transaction_state` partition of `transactional_id`.
    pub fn partition_for(&self, transactional_id: &str) -> i32 {
        partition_for(transactional_id, self.config.state_partitions)
    }

    /// The coordinator epoch of `transactional_id`'s partition, or the error requests for
    /// it get: COORDINATOR_LOAD_IN_PROGRESS while it loads, NOT_COORDINATOR when another
    /// node leads it.
    fn owner(&self, transactional_id: &str) -> Result<i32, ErrorCode> {
        match self.partitions.get(&self.partition_for(transactional_id)) {
            Some(PartitionState::Owned { coordinator_epoch }) => Ok(*coordinator_epoch),
            Some(PartitionState::Loading) => Err(ErrorCode::COORDINATOR_LOAD_IN_PROGRESS),
            None => Err(ErrorCode::NOT_COORDINATOR),
        }
    }

    /// The transaction of `id` if the request's producer id and epoch are its current ones:
    /// INVALID_REQUEST for an empty id, the [`TxnCoordinator::owner`] errors,
    /// INVALID_PRODUCER_ID_MAPPING for an unknown id or another producer id, PRODUCER_FENCED
    /// for another epoch.
    fn producer_txn(
        &self,
        id: &str,
        producer_id: i64,
        producer_epoch: i16,
    ) -> Result<&Txn, ErrorCode> {
        if id.is_empty() {
            return Err(ErrorCode::INVALID_REQUEST);
        }
        self.owner(id)?;
        let txn = self
            .txns
            .get(id)
            .ok_or(ErrorCode::INVALID_PRODUCER_ID_MAPPING)?;
        if txn.meta.producer_id != producer_id {
            return Err(ErrorCode::INVALID_PRODUCER_ID_MAPPING);
        }
        if txn.meta.producer_epoch != producer_epoch {
            return Err(ErrorCode::PRODUCER_FENCED);
        }
        Ok(txn)
    }

    fn owns(&self, partition: i32) -> bool {
        matches!(
            self.partitions.get(&partition),
            Some(PartitionState::Owned { .. })
        )
    }

    // ------------------------------------------------------------ partition ownership

    /// This node became leader of `partition`: until [`TxnCoordinator::load_partition`]
    /// its ids answer COORDINATOR_LOAD_IN_PROGRESS. Forgets what it held of the partition.
    pub fn start_loading(&mut self, partition: i32) -> Vec<Effect> {
        let fx = self.drop_partition(partition);
        self.partitions.insert(partition, PartitionState::Loading);
        fx
    }

    /// Replays `records` (the partition's log, in order) and takes ownership of
    /// `partition` at `coordinator_epoch`. Transactions found in PrepareCommit or
    /// PrepareAbort resume: their markers are written again ([`Effect::WriteMarkers`]).
    /// Records with a state that is never persisted (Dead, PrepareEpochFence) are ignored.
    pub fn load_partition(
        &mut self,
        partition: i32,
        coordinator_epoch: i32,
        records: impl IntoIterator<Item = TxnRecord>,
    ) -> Vec<Effect> {
        let mut fx = self.drop_partition(partition);
        let mut loaded: BTreeMap<String, Meta> = BTreeMap::new();
        for r in records {
            match r.value {
                None => {
                    loaded.remove(&r.transactional_id);
                }
                Some(v) if matches!(v.state, TxnState::Dead | TxnState::PrepareEpochFence) => {}
                Some(v) => {
                    loaded.insert(r.transactional_id, Meta::from_value(&v));
                }
            }
        }
        self.partitions
            .insert(partition, PartitionState::Owned { coordinator_epoch });
        for (id, meta) in loaded {
            let resume = matches!(meta.state, TxnState::PrepareCommit | TxnState::PrepareAbort);
            self.txns.insert(
                id.clone(),
                Txn {
                    meta,
                    pending: None,
                    markers_pending: false,
                    waiting_end: None,
                    retry_complete_at: None,
                },
            );
            if resume {
                self.send_markers(&id, coordinator_epoch, &mut fx);
            }
        }
        fx
    }

    /// This node no longer leads `partition` (at `coordinator_epoch`, if known: a newer
    /// load is kept). Its ids are forgotten; requests waiting on them get NOT_COORDINATOR.
    pub fn unload_partition(
        &mut self,
        partition: i32,
        coordinator_epoch: Option<i32>,
    ) -> Vec<Effect> {
        if let (
            Some(epoch),
            Some(PartitionState::Owned {
                coordinator_epoch: held,
            }),
        ) = (coordinator_epoch, self.partitions.get(&partition))
        {
            if *held > epoch {
                return Vec::new();
            }
        }
        let fx = self.drop_partition(partition);
        self.partitions.remove(&partition);
        fx
    }

    fn drop_partition(&mut self, partition: i32) -> Vec<Effect> {
        let mut fx = Vec::new();
        let n = self.config.state_partitions;
        let ids: Vec<String> = self
            .txns
            .keys()
            .filter(|id| partition_for(id, n) == partition)
            .cloned()
            .collect();
        for id in ids {
            let txn = self.txns.remove(&id).expect("listed");
            let mut tokens: Vec<(Token, Response)> = Vec::new();
            let nc = ErrorCode::NOT_COORDINATOR;
            if let Some(p) = txn.pending {
                match p.then {
                    After::InitProducerId(t) => tokens.push((t, init_error(nc))),
                    After::AddPartitions(t) => {
                        tokens.push((t, Response::AddPartitions { error: nc }))
                    }
                    After::AddOffsets(t) => tokens.push((t, Response::AddOffsets { error: nc })),
                    After::Prepare { client, fence } => {
                        if let Some(t) = client {
                            tokens.push((t, Response::EndTxn { error: nc }));
                        }
                        if let Some(t) = fence {
                            tokens.push((t, init_error(nc)));
                        }
                    }
                    After::Complete | After::Expire => {}
                }
            }
            if let Some(t) = txn.waiting_end {
                tokens.push((t, Response::EndTxn { error: nc }));
            }
            fx.extend(tokens.into_iter().map(|(t, r)| Effect::Respond(t, r)));
        }
        fx
    }

    /// The partitions this node leads (loaded), with their coordinator epochs.
    pub fn owned_partitions(&self) -> Vec<(i32, i32)> {
        self.partitions
            .iter()
            .filter_map(|(p, s)| match s {
                PartitionState::Owned { coordinator_epoch } => Some((*p, *coordinator_epoch)),
                PartitionState::Loading => None,
            })
            .collect()
    }

    // ------------------------------------------------------------ transitions

    fn begin(&mut self, id: &str, target: Option<Meta>, then: After) -> Effect {
        let write_id = self.next_write_id;
        self.next_write_id += 1;
        let record = TxnRecord {
            transactional_id: id.to_owned(),
            value: target.as_ref().map(Meta::to_value),
        };
        let txn = self.txns.get_mut(id).expect("caller checked");
        txn.pending = Some(Pending {
            write_id,
            target,
            then,
        });
        Effect::Persist(Persist {
            partition: partition_for(id, self.config.state_partitions),
            write_id,
            record,
        })
    }

    /// The caller appended (or failed to append) the record of [`Effect::Persist`]
    /// `write_id` for `transactional_id`. On success the new state takes effect and the
    /// waiting request is answered (an EndTxn continues with its markers); on failure the
    /// state stays as before and the request gets Kafka's error for the append error
    /// (see [`append_error`]). Unknown or stale write ids are ignored.
    pub fn persisted(
        &mut self,
        now_ms: i64,
        transactional_id: &str,
        write_id: u64,
        result: Result<(), ErrorCode>,
    ) -> Vec<Effect> {
        let mut fx = Vec::new();
        let Ok(coordinator_epoch) = self.owner(transactional_id) else {
            return fx;
        };
        let Some(txn) = self.txns.get_mut(transactional_id) else {
            return fx;
        };
        if txn.pending.as_ref().map(|p| p.write_id) != Some(write_id) {
            return fx;
        }
        let pending = txn.pending.take().expect("checked");
        let error = match result {
            Ok(()) => ErrorCode::NONE,
            Err(e) if e.is_none() => ErrorCode::UNKNOWN_SERVER_ERROR,
            Err(e) => append_error(e),
        };
        if !error.is_none() {
            match pending.then {
                After::InitProducerId(t) => fx.push(Effect::Respond(t, init_error(error))),
                After::AddPartitions(t) => {
                    fx.push(Effect::Respond(t, Response::AddPartitions { error }))
                }
                After::AddOffsets(t) => fx.push(Effect::Respond(t, Response::AddOffsets { error })),
                After::Prepare { client, fence } => {
                    if let Some(t) = client {
                        fx.push(Effect::Respond(t, Response::EndTxn { error }));
                    }
                    if let Some(t) = fence {
                        fx.push(Effect::Respond(t, init_error(error)));
                    }
                }
                After::Complete => {
                    txn.retry_complete_at =
                        Some(now_ms.saturating_add(self.config.retry_backoff_ms));
                }
                After::Expire => {}
            }
            return fx;
        }
        let Some(target) = pending.target else {
            // The tombstone is durable: the id is gone.
            self.txns.remove(transactional_id);
            return fx;
        };
        txn.meta = target;
        match pending.then {
            After::InitProducerId(t) => fx.push(Effect::Respond(
                t,
                Response::InitProducerId {
                    error: ErrorCode::NONE,
                    producer_id: txn.meta.producer_id,
                    producer_epoch: txn.meta.producer_epoch,
                },
            )),
            After::AddPartitions(t) => fx.push(Effect::Respond(
                t,
                Response::AddPartitions {
                    error: ErrorCode::NONE,
                },
            )),
            After::AddOffsets(t) => fx.push(Effect::Respond(
                t,
                Response::AddOffsets {
                    error: ErrorCode::NONE,
                },
            )),
            After::Prepare { client, fence } => {
                if let Some(t) = fence {
                    fx.push(Effect::Respond(
                        t,
                        init_error(ErrorCode::CONCURRENT_TRANSACTIONS),
                    ));
                }
                if let Some(t) = client {
                    if self.config.end_txn_waits_for_markers {
                        txn.waiting_end = Some(t);
                    } else {
                        fx.push(Effect::Respond(
                            t,
                            Response::EndTxn {
                                error: ErrorCode::NONE,
                            },
                        ));
                    }
                }
                self.send_markers(transactional_id, coordinator_epoch, &mut fx);
            }
            After::Complete => {
                txn.retry_complete_at = None;
                if let Some(t) = txn.waiting_end.take() {
                    fx.push(Effect::Respond(
                        t,
                        Response::EndTxn {
                            error: ErrorCode::NONE,
                        },
                    ));
                }
            }
            After::Expire => {}
        }
        fx
    }

    /// Asks for the markers of a transaction in a Prepare state; with no partitions there
    /// is nothing to write and the Complete state is persisted at once.
    fn send_markers(&mut self, id: &str, coordinator_epoch: i32, fx: &mut Vec<Effect>) {
        let txn = self.txns.get_mut(id).expect("caller checked");
        let committed = txn.meta.state == TxnState::PrepareCommit;
        if txn.meta.partitions.is_empty() {
            let now = txn.meta.update_ms;
            self.complete(id, now, fx);
            return;
        }
        txn.markers_pending = true;
        fx.push(Effect::WriteMarkers(Markers {
            transactional_id: id.to_owned(),
            producer_id: txn.meta.producer_id,
            producer_epoch: txn.meta.producer_epoch,
            coordinator_epoch,
            committed,
            partitions: txn.meta.partitions.iter().cloned().collect(),
        }));
    }

    fn complete(&mut self, id: &str, now_ms: i64, fx: &mut Vec<Effect>) {
        let txn = self.txns.get_mut(id).expect("caller checked");
        let state = if txn.meta.state == TxnState::PrepareCommit {
            TxnState::CompleteCommit
        } else {
            TxnState::CompleteAbort
        };
        let mut target = txn.meta.with(state, now_ms);
        target.partitions.clear();
        txn.markers_pending = false;
        txn.retry_complete_at = None;
        fx.push(self.begin(id, Some(target), After::Complete));
    }

    /// Every marker of the transaction `transactional_id` / `producer_id` /
    /// `producer_epoch` is written: the Complete state is persisted, after which a waiting
    /// EndTxn is answered. Stale reports (another epoch, no markers pending, a partition
    /// no longer led here) are ignored.
    pub fn markers_written(
        &mut self,
        now_ms: i64,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
    ) -> Vec<Effect> {
        let mut fx = Vec::new();
        if self.owner(transactional_id).is_err() {
            return fx;
        }
        let Some(txn) = self.txns.get(transactional_id) else {
            return fx;
        };
        if !txn.markers_pending
            || txn.pending.is_some()
            || txn.meta.producer_id != producer_id
            || txn.meta.producer_epoch != producer_epoch
            || !matches!(
                txn.meta.state,
                TxnState::PrepareCommit | TxnState::PrepareAbort
            )
        {
            return fx;
        }
        self.complete(transactional_id, now_ms, &mut fx);
        fx
    }

    // ------------------------------------------------------------ InitProducerId

    /// InitProducerId, every version. `allocate` hands out a fresh producer id (the broker
    /// takes them from its controller-assigned block); it is called only when one is needed
    /// (a non-transactional producer, a new transactional id, an exhausted epoch), and its
    /// error (e.g. COORDINATOR_LOAD_IN_PROGRESS while no block is available) is answered.
    pub fn init_producer_id(
        &mut self,
        now_ms: i64,
        token: Token,
        version: i16,
        req: InitProducerId,
        allocate: &mut dyn FnMut() -> Result<i64, ErrorCode>,
    ) -> Vec<Effect> {
        let respond = |error: ErrorCode| {
            vec![Effect::Respond(
                token,
                init_error(fenced_for(error, version, 4)),
            )]
        };
        let expected = match (req.producer_id, req.producer_epoch) {
            (NO_PRODUCER_ID, NO_PRODUCER_EPOCH) => None,
            (NO_PRODUCER_ID, _) | (_, NO_PRODUCER_EPOCH) => {
                return respond(ErrorCode::INVALID_REQUEST)
            }
            (id, epoch) => Some((id, epoch)),
        };
        let Some(id) = req.transactional_id else {
            return match allocate() {
                Ok(producer_id) => vec![Effect::Respond(
                    token,
                    Response::InitProducerId {
                        error: ErrorCode::NONE,
                        producer_id,
                        producer_epoch: 0,
                    },
                )],
                Err(e) => respond(e),
            };
        };
        if id.is_empty() {
            return respond(ErrorCode::INVALID_REQUEST);
        }
        let timeout = req.transaction_timeout_ms;
        if timeout <= 0 || timeout > self.config.max_timeout_ms {
            return respond(ErrorCode::INVALID_TRANSACTION_TIMEOUT);
        }
        if let Err(e) = self.owner(&id) {
            return respond(e);
        }
        if !self.txns.contains_key(&id) {
            let producer_id = match allocate() {
                Ok(p) => p,
                Err(e) => return respond(e),
            };
            self.txns.insert(
                id.clone(),
                Txn {
                    meta: Meta {
                        producer_id,
                        last_producer_id: NO_PRODUCER_ID,
                        producer_epoch: NO_PRODUCER_EPOCH,
                        last_producer_epoch: NO_PRODUCER_EPOCH,
                        timeout_ms: timeout,
                        state: TxnState::Empty,
                        partitions: BTreeSet::new(),
                        start_ms: -1,
                        update_ms: now_ms,
                    },
                    pending: None,
                    markers_pending: false,
                    waiting_end: None,
                    retry_complete_at: None,
                },
            );
        }
        let txn = self.txns.get(&id).expect("present");
        let m = &txn.meta;
        if txn.pending.is_some() {
            return respond(ErrorCode::CONCURRENT_TRANSACTIONS);
        }
        if let Some((pid, epoch)) = expected {
            // KIP-360: fence unless the id is brand new, the producer id is current, or it
            // is the previous one with an exhausted epoch (a retry after a rotation).
            let valid = m.producer_epoch == NO_PRODUCER_EPOCH
                || pid == m.producer_id
                || (pid == m.last_producer_id && epoch_exhausted(epoch));
            if !valid {
                return respond(ErrorCode::PRODUCER_FENCED);
            }
        }
        let target = match m.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => {
                return respond(ErrorCode::CONCURRENT_TRANSACTIONS)
            }
            TxnState::Ongoing => {
                // Abort the older epoch's transaction first, with a bumped epoch that is
                // never handed out: the producer is told CONCURRENT_TRANSACTIONS and
                // retries, which bumps again (or rotates the id if that exhausted it).
                if m.producer_epoch == i16::MAX {
                    return respond(ErrorCode::CONCURRENT_TRANSACTIONS);
                }
                let mut t = m.with(TxnState::PrepareAbort, now_ms);
                t.producer_epoch = m.producer_epoch + 1;
                t.last_producer_epoch = NO_PRODUCER_EPOCH;
                let fx = self.begin(
                    &id,
                    Some(t),
                    After::Prepare {
                        client: None,
                        fence: Some(token),
                    },
                );
                return vec![fx];
            }
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
                let rotate = epoch_exhausted(m.producer_epoch)
                    && expected.is_none_or(|(_, e)| e == m.producer_epoch);
                let mut t = m.with(TxnState::Empty, now_ms);
                t.timeout_ms = timeout;
                t.partitions.clear();
                t.start_ms = -1;
                if rotate {
                    let new_id = match allocate() {
                        Ok(p) => p,
                        Err(e) => return respond(e),
                    };
                    t.last_producer_id = m.producer_id;
                    t.producer_id = new_id;
                    t.producer_epoch = 0;
                    t.last_producer_epoch = if expected.is_some() {
                        m.producer_epoch
                    } else {
                        NO_PRODUCER_EPOCH
                    };
                } else {
                    // Not exhausted here unless the expected epoch is the last one (no bump).
                    let bumped = m.producer_epoch.saturating_add(1);
                    let (epoch, last) = match expected {
                        None => (bumped, NO_PRODUCER_EPOCH),
                        Some((_, e))
                            if m.producer_epoch == NO_PRODUCER_EPOCH || e == m.producer_epoch =>
                        {
                            (bumped, m.producer_epoch)
                        }
                        // A retry of a bump whose answer was lost: the same epoch again.
                        Some((_, e)) if e == m.last_producer_epoch => {
                            (m.producer_epoch, m.last_producer_epoch)
                        }
                        Some(_) => return respond(ErrorCode::PRODUCER_FENCED),
                    };
                    t.producer_epoch = epoch;
                    t.last_producer_epoch = last;
                }
                t
            }
            TxnState::Dead | TxnState::PrepareEpochFence => {
                return respond(ErrorCode::CONCURRENT_TRANSACTIONS)
            }
        };
        vec![self.begin(&id, Some(target), After::InitProducerId(token))]
    }

    // ------------------------------------------------------------ AddPartitionsToTxn

    /// The checks AddPartitionsToTxn and AddOffsetsToTxn share; `Ok(None)` = nothing to
    /// persist (the partitions are already in the ongoing transaction).
    fn prepare_add(
        &self,
        now_ms: i64,
        id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &[TopicPartition],
    ) -> Result<Option<Meta>, ErrorCode> {
        let txn = self.producer_txn(id, producer_id, producer_epoch)?;
        let m = &txn.meta;
        if txn.pending.is_some()
            || matches!(m.state, TxnState::PrepareCommit | TxnState::PrepareAbort)
        {
            return Err(ErrorCode::CONCURRENT_TRANSACTIONS);
        }
        if m.state == TxnState::Ongoing && partitions.iter().all(|tp| m.partitions.contains(tp)) {
            return Ok(None);
        }
        let mut t = m.with(TxnState::Ongoing, now_ms);
        if matches!(
            m.state,
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
        ) {
            t.start_ms = now_ms;
        }
        t.partitions.extend(partitions.iter().cloned());
        Ok(Some(t))
    }

    /// AddPartitionsToTxn from a client (versions 0-3) or a version 4+ transaction that is
    /// not verify-only: one error for every partition of the request, in a
    /// [`Response::AddPartitions`] for `token`. (A batched v4+ request is one call per
    /// transaction.)
    #[allow(clippy::too_many_arguments)]
    pub fn add_partitions(
        &mut self,
        now_ms: i64,
        token: Token,
        version: i16,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &[TopicPartition],
    ) -> Vec<Effect> {
        match self.prepare_add(
            now_ms,
            transactional_id,
            producer_id,
            producer_epoch,
            partitions,
        ) {
            Err(e) => vec![Effect::Respond(
                token,
                Response::AddPartitions {
                    error: fenced_for(e, version, 2),
                },
            )],
            Ok(None) => vec![Effect::Respond(
                token,
                Response::AddPartitions {
                    error: ErrorCode::NONE,
                },
            )],
            Ok(Some(t)) => vec![self.begin(transactional_id, Some(t), After::AddPartitions(token))],
        }
    }

    /// AddPartitionsToTxn version 4+ with `VerifyOnly` (KIP-890 part 1): a partition leader
    /// asks whether each partition is in this producer's ongoing transaction before it
    /// accepts a transactional write. Answered at once (nothing is persisted), with the
    /// persisted state: a partition not in the transaction is TRANSACTION_ABORTABLE
    /// (INVALID_TXN_STATE before version 5).
    pub fn verify_partitions(
        &self,
        version: i16,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &[TopicPartition],
    ) -> Vec<(TopicPartition, ErrorCode)> {
        let all = |e: ErrorCode| partitions.iter().map(|tp| (tp.clone(), e)).collect();
        let txn = match self.producer_txn(transactional_id, producer_id, producer_epoch) {
            Ok(txn) => txn,
            Err(e) => return all(e),
        };
        let m = &txn.meta;
        if matches!(m.state, TxnState::PrepareCommit | TxnState::PrepareAbort) {
            return all(ErrorCode::CONCURRENT_TRANSACTIONS);
        }
        let missing = if version >= 5 {
            ErrorCode::TRANSACTION_ABORTABLE
        } else {
            ErrorCode::INVALID_TXN_STATE
        };
        partitions
            .iter()
            .map(|tp| {
                let e = if m.state == TxnState::Ongoing && m.partitions.contains(tp) {
                    ErrorCode::NONE
                } else {
                    missing
                };
                (tp.clone(), e)
            })
            .collect()
    }

    /// AddOffsetsToTxn: adds `__consumer_offsets` partition `offsets_partition` (the
    /// group's, which the caller computes from the group id) to the transaction.
    #[allow(clippy::too_many_arguments)]
    pub fn add_offsets(
        &mut self,
        now_ms: i64,
        token: Token,
        version: i16,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        offsets_partition: i32,
    ) -> Vec<Effect> {
        let tp = [(CONSUMER_OFFSETS_TOPIC.to_owned(), offsets_partition)];
        match self.prepare_add(now_ms, transactional_id, producer_id, producer_epoch, &tp) {
            Err(e) => vec![Effect::Respond(
                token,
                Response::AddOffsets {
                    error: fenced_for(e, version, 2),
                },
            )],
            Ok(None) => vec![Effect::Respond(
                token,
                Response::AddOffsets {
                    error: ErrorCode::NONE,
                },
            )],
            Ok(Some(t)) => vec![self.begin(transactional_id, Some(t), After::AddOffsets(token))],
        }
    }

    // ------------------------------------------------------------ EndTxn

    /// EndTxn versions 0-4 (transaction version 1; version 5 is UNSUPPORTED_VERSION).
    /// Commit or abort: the Prepare state is persisted, the markers written, the Complete
    /// state persisted, and then (by default, see
    /// [`TxnConfig::end_txn_waits_for_markers`]) the answer arrives for `token`. A retry
    /// of a completed commit or abort is answered NONE; of one in progress,
    /// CONCURRENT_TRANSACTIONS; the opposite outcome, INVALID_TXN_STATE.
    #[allow(clippy::too_many_arguments)]
    pub fn end_txn(
        &mut self,
        now_ms: i64,
        token: Token,
        version: i16,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        committed: bool,
    ) -> Vec<Effect> {
        let respond = |error: ErrorCode| {
            vec![Effect::Respond(
                token,
                Response::EndTxn {
                    error: fenced_for(error, version, 2),
                },
            )]
        };
        if version > 4 {
            return respond(ErrorCode::UNSUPPORTED_VERSION);
        }
        let txn = match self.producer_txn(transactional_id, producer_id, producer_epoch) {
            Ok(txn) => txn,
            Err(e) => return respond(e),
        };
        let m = &txn.meta;
        if txn.pending.is_some() {
            return respond(ErrorCode::CONCURRENT_TRANSACTIONS);
        }
        let error = match (m.state, committed) {
            (TxnState::Ongoing, _) => {
                let state = if committed {
                    TxnState::PrepareCommit
                } else {
                    TxnState::PrepareAbort
                };
                let t = m.with(state, now_ms);
                return vec![self.begin(
                    transactional_id,
                    Some(t),
                    After::Prepare {
                        client: Some(token),
                        fence: None,
                    },
                )];
            }
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => ErrorCode::NONE,
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
                ErrorCode::CONCURRENT_TRANSACTIONS
            }
            _ => ErrorCode::INVALID_TXN_STATE,
        };
        respond(error)
    }

    // ------------------------------------------------------------ describe / list

    /// DescribeTransactions for each id.
    pub fn describe(&self, transactional_ids: &[String]) -> Vec<TxnDescription> {
        transactional_ids
            .iter()
            .map(|id| {
                if id.is_empty() {
                    return TxnDescription::error(ErrorCode::INVALID_REQUEST, id);
                }
                if let Err(e) = self.owner(id) {
                    return TxnDescription::error(e, id);
                }
                let Some(txn) = self.txns.get(id) else {
                    return TxnDescription::error(ErrorCode::TRANSACTIONAL_ID_NOT_FOUND, id);
                };
                let m = &txn.meta;
                let mut topics: Vec<(String, Vec<i32>)> = Vec::new();
                for (t, p) in &m.partitions {
                    match topics.last_mut() {
                        Some((last, ps)) if last == t => ps.push(*p),
                        _ => topics.push((t.clone(), vec![*p])),
                    }
                }
                TxnDescription {
                    error: ErrorCode::NONE,
                    transactional_id: id.clone(),
                    state: m.state.name().to_owned(),
                    timeout_ms: m.timeout_ms,
                    start_ms: m.start_ms,
                    producer_id: m.producer_id,
                    producer_epoch: m.producer_epoch,
                    topics,
                }
            })
            .collect()
    }

    /// ListTransactions of the partitions this node leads. Empty filters match all;
    /// `duration_ms` (version 1, -1 = none) keeps transactions running longer than it.
    /// COORDINATOR_LOAD_IN_PROGRESS while any partition loads.
    pub fn list(
        &self,
        now_ms: i64,
        state_filters: &[String],
        producer_id_filters: &[i64],
        duration_ms: i64,
    ) -> TxnList {
        let mut out = TxnList {
            error: ErrorCode::NONE,
            unknown_state_filters: Vec::new(),
            transactions: Vec::new(),
        };
        if self
            .partitions
            .values()
            .any(|s| *s == PartitionState::Loading)
        {
            out.error = ErrorCode::COORDINATOR_LOAD_IN_PROGRESS;
            return out;
        }
        let mut states = BTreeSet::new();
        for name in state_filters {
            match TxnState::from_name(name) {
                Some(s) => {
                    states.insert(s);
                }
                None => out.unknown_state_filters.push(name.clone()),
            }
        }
        let n = self.config.state_partitions;
        for (id, txn) in &self.txns {
            let m = &txn.meta;
            let keep = self.owns(partition_for(id, n))
                && m.state != TxnState::Dead
                && (producer_id_filters.is_empty() || producer_id_filters.contains(&m.producer_id))
                && (state_filters.is_empty() || states.contains(&m.state))
                && (duration_ms < 0 || now_ms.saturating_sub(m.start_ms) > duration_ms);
            if keep {
                out.transactions.push(TxnListing {
                    transactional_id: id.clone(),
                    producer_id: m.producer_id,
                    state: m.state.name().to_owned(),
                });
            }
        }
        out
    }

    /// The persisted state of one transactional id led here.
    pub fn transaction(&self, transactional_id: &str) -> Option<TxnView> {
        let txn = self.txns.get(transactional_id)?;
        let m = &txn.meta;
        Some(TxnView {
            transactional_id: transactional_id.to_owned(),
            partition: self.partition_for(transactional_id),
            producer_id: m.producer_id,
            last_producer_id: m.last_producer_id,
            producer_epoch: m.producer_epoch,
            last_producer_epoch: m.last_producer_epoch,
            timeout_ms: m.timeout_ms,
            state: m.state,
            partitions: m.partitions.iter().cloned().collect(),
            start_ms: m.start_ms,
            last_update_ms: m.update_ms,
            pending_write: txn.pending.is_some(),
            markers_pending: txn.markers_pending,
        })
    }

    /// Every transactional id held (all led partitions).
    pub fn transactional_ids(&self) -> Vec<String> {
        self.txns.keys().cloned().collect()
    }

    // ------------------------------------------------------------ timers

    /// Fires everything due at `now_ms`: transactions open past their timeout are aborted
    /// with a bumped epoch (fencing their producer, as Kafka does); ids idle past
    /// `transactional.id.expiration.ms` outside a transaction are tombstoned; failed
    /// writes of a Complete state are retried.
    pub fn tick(&mut self, now_ms: i64) -> Vec<Effect> {
        let mut fx = Vec::new();
        let n = self.config.state_partitions;
        let expiration = self.config.id_expiration_ms;
        let ids: Vec<String> = self.txns.keys().cloned().collect();
        for id in ids {
            if !self.owns(partition_for(&id, n)) {
                continue;
            }
            let txn = self.txns.get(&id).expect("listed");
            if txn.pending.is_some() {
                continue;
            }
            let m = &txn.meta;
            if let Some(at) = txn.retry_complete_at {
                if at <= now_ms {
                    let mut t = m.with(
                        if m.state == TxnState::PrepareCommit {
                            TxnState::CompleteCommit
                        } else {
                            TxnState::CompleteAbort
                        },
                        now_ms,
                    );
                    t.partitions.clear();
                    self.txns.get_mut(&id).expect("listed").retry_complete_at = None;
                    fx.push(self.begin(&id, Some(t), After::Complete));
                }
                continue;
            }
            match m.state {
                TxnState::Ongoing
                    if m.start_ms.saturating_add(i64::from(m.timeout_ms)) < now_ms
                        && m.producer_epoch < i16::MAX =>
                {
                    let mut t = m.with(TxnState::PrepareAbort, now_ms);
                    t.producer_epoch = m.producer_epoch + 1;
                    t.last_producer_epoch = NO_PRODUCER_EPOCH;
                    fx.push(self.begin(
                        &id,
                        Some(t),
                        After::Prepare {
                            client: None,
                            fence: None,
                        },
                    ));
                }
                TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
                    if m.update_ms <= now_ms.saturating_sub(expiration) =>
                {
                    fx.push(self.begin(&id, None, After::Expire));
                }
                _ => {}
            }
        }
        fx
    }

    /// The earliest time [`TxnCoordinator::tick`] has work, if any.
    pub fn next_deadline(&self) -> Option<i64> {
        let n = self.config.state_partitions;
        self.txns
            .iter()
            .filter(|(id, t)| t.pending.is_none() && self.owns(partition_for(id, n)))
            .filter_map(|(_, t)| {
                if let Some(at) = t.retry_complete_at {
                    return Some(at);
                }
                let m = &t.meta;
                match m.state {
                    // An epoch that cannot be bumped is never aborted by `tick`.
                    TxnState::Ongoing if m.producer_epoch == i16::MAX => None,
                    TxnState::Ongoing => Some(
                        m.start_ms
                            .saturating_add(i64::from(m.timeout_ms))
                            .saturating_add(1),
                    ),
                    TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
                        Some(m.update_ms.saturating_add(self.config.id_expiration_ms))
                    }
                    _ => None,
                }
            })
            .min()
    }
}

fn init_error(error: ErrorCode) -> Response {
    Response::InitProducerId {
        error,
        producer_id: NO_PRODUCER_ID,
        producer_epoch: NO_PRODUCER_EPOCH,
    }
}
