//! Plain Rust inputs and outputs of the coordinator: what the request handlers translate
//! wire messages to and from, and the [`Effect`]s the caller carries out.

use crate::error::ErrorCode;
use crate::record::TxnRecord;

/// Opaque id of a waiting request. InitProducerId, AddPartitionsToTxn, AddOffsetsToTxn and
/// EndTxn are answered once their state change is persisted (and, for EndTxn, once the
/// markers are written), as an [`Effect::Respond`] carrying this token.
pub type Token = u64;

/// The topic whose partitions hold consumer group offsets (AddOffsetsToTxn adds one).
pub const CONSUMER_OFFSETS_TOPIC: &str = "__consumer_offsets";

/// The topic the coordinator persists its state to.
pub const TRANSACTION_STATE_TOPIC: &str = "__transaction_state";

/// A topic partition: (topic, partition).
pub type TopicPartition = (String, i32);

/// Append `record` to `__transaction_state` partition `partition` (acks=all), then report
/// the outcome with [`crate::TxnCoordinator::persisted`] quoting `write_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Persist {
    pub partition: i32,
    pub write_id: u64,
    pub record: TxnRecord,
}

/// Write a COMMIT (`committed`) or ABORT control batch for `producer_id`/`producer_epoch`
/// to every partition in `partitions` (through `WriteTxnMarkers` or the local
/// `Broker::write_txn_marker`), retrying until each is written or its partition no longer
/// exists, then call [`crate::TxnCoordinator::markers_written`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Markers {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// The epoch of the `__transaction_state` partition's leadership; partition leaders
    /// refuse markers from an older coordinator epoch.
    pub coordinator_epoch: i32,
    pub committed: bool,
    /// Sorted, without duplicates.
    pub partitions: Vec<TopicPartition>,
}

/// The answer to a delayed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// InitProducerId: on error the producer id and epoch are -1.
    InitProducerId {
        error: ErrorCode,
        producer_id: i64,
        producer_epoch: i16,
    },
    /// AddPartitionsToTxn (not verify-only): the error of every partition of the request.
    AddPartitions { error: ErrorCode },
    /// AddOffsetsToTxn.
    AddOffsets { error: ErrorCode },
    /// EndTxn.
    EndTxn { error: ErrorCode },
}

impl Response {
    /// The error code of any response.
    pub fn error(&self) -> ErrorCode {
        match self {
            Response::InitProducerId { error, .. }
            | Response::AddPartitions { error }
            | Response::AddOffsets { error }
            | Response::EndTxn { error } => *error,
        }
    }
}

/// Something the caller must do after a coordinator call, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Append a record to `__transaction_state`, then call `persisted`.
    Persist(Persist),
    /// Write transaction markers, then call `markers_written`.
    WriteMarkers(Markers),
    /// Answer the waiting request `Token`.
    Respond(Token, Response),
}

/// An InitProducerId request (all versions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitProducerId {
    /// `None` for an idempotent (non-transactional) producer.
    pub transactional_id: Option<String>,
    pub transaction_timeout_ms: i32,
    /// Version 3+ (KIP-360): the producer id and epoch a producer recovers from; -1 for
    /// older versions and new producers.
    pub producer_id: i64,
    pub producer_epoch: i16,
}

/// A transaction in DescribeTransactions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnDescription {
    pub error: ErrorCode,
    pub transactional_id: String,
    pub state: String,
    pub timeout_ms: i32,
    /// -1 when no transaction was started.
    pub start_ms: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// (topic, partitions), sorted.
    pub topics: Vec<(String, Vec<i32>)>,
}

impl TxnDescription {
    pub(crate) fn error(error: ErrorCode, id: &str) -> Self {
        TxnDescription {
            error,
            transactional_id: id.to_owned(),
            state: String::new(),
            timeout_ms: 0,
            start_ms: -1,
            producer_id: -1,
            producer_epoch: -1,
            topics: Vec::new(),
        }
    }
}

/// A transaction in ListTransactions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnListing {
    pub transactional_id: String,
    pub producer_id: i64,
    pub state: String,
}

/// The ListTransactions response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnList {
    pub error: ErrorCode,
    /// Requested state names Kafka does not know.
    pub unknown_state_filters: Vec<String>,
    pub transactions: Vec<TxnListing>,
}

/// The coordinator's view of one transactional id (its persisted state), for tests and
/// operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnView {
    pub transactional_id: String,
    /// The `__transaction_state` partition it lives in.
    pub partition: i32,
    pub producer_id: i64,
    pub last_producer_id: i64,
    pub producer_epoch: i16,
    pub last_producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: crate::record::TxnState,
    pub partitions: Vec<TopicPartition>,
    pub start_ms: i64,
    pub last_update_ms: i64,
    /// A state change is being persisted.
    pub pending_write: bool,
    /// Markers were requested and not yet reported written.
    pub markers_pending: bool,
}
