//! Errors: [`Error`] for bytes or records that cannot be applied (a corrupt or inconsistent
//! metadata log entry or snapshot), and [`ApiError`] for a controller operation refused with a
//! Kafka error code, which is data for the reply, never a failure of the controller.

use std::fmt;

/// Why a batch could not be decoded or an entry or snapshot could not be applied. The image is
/// left unchanged when this is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The bytes are not a valid batch.
    #[error("bad metadata batch: {0}")]
    Batch(String),
    /// A record does not fit the image (unknown topic, bad replica list, stale epoch...).
    #[error("bad metadata record {record} at offset {offset}: {reason}")]
    Record {
        /// The log offset of the entry holding the record.
        offset: u64,
        /// The record type's name.
        record: &'static str,
        reason: String,
    },
    /// Entries must be applied in increasing offset order.
    #[error("entry at offset {offset} is not after the last applied offset {last}")]
    OffsetNotIncreasing { offset: u64, last: u64 },
}

/// A Kafka error code (the numbers of Kafka's `Errors` enum). `skein-protocol` has none and
/// `skein-broker`'s live in a crate this one must not depend on, so the few the controller
/// answers with are defined here with the same values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ErrorCode(pub i16);

impl ErrorCode {
    pub const NONE: ErrorCode = ErrorCode(0);
    pub const UNKNOWN_SERVER_ERROR: ErrorCode = ErrorCode(-1);
    pub const UNKNOWN_TOPIC_OR_PARTITION: ErrorCode = ErrorCode(3);
    pub const NOT_LEADER_OR_FOLLOWER: ErrorCode = ErrorCode(6);
    pub const INVALID_TOPIC_EXCEPTION: ErrorCode = ErrorCode(17);
    pub const TOPIC_ALREADY_EXISTS: ErrorCode = ErrorCode(36);
    pub const INVALID_PARTITIONS: ErrorCode = ErrorCode(37);
    pub const INVALID_REPLICATION_FACTOR: ErrorCode = ErrorCode(38);
    pub const INVALID_REPLICA_ASSIGNMENT: ErrorCode = ErrorCode(39);
    pub const INVALID_CONFIG: ErrorCode = ErrorCode(40);
    pub const INVALID_REQUEST: ErrorCode = ErrorCode(42);
    pub const POLICY_VIOLATION: ErrorCode = ErrorCode(44);
    pub const FENCED_LEADER_EPOCH: ErrorCode = ErrorCode(74);
    pub const STALE_BROKER_EPOCH: ErrorCode = ErrorCode(77);
    pub const INVALID_UPDATE_VERSION: ErrorCode = ErrorCode(95);
    pub const UNKNOWN_TOPIC_ID: ErrorCode = ErrorCode(100);
    pub const DUPLICATE_BROKER_REGISTRATION: ErrorCode = ErrorCode(101);
    pub const INELIGIBLE_REPLICA: ErrorCode = ErrorCode(107);
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match *self {
            ErrorCode::NONE => "NONE",
            ErrorCode::UNKNOWN_SERVER_ERROR => "UNKNOWN_SERVER_ERROR",
            ErrorCode::UNKNOWN_TOPIC_OR_PARTITION => "UNKNOWN_TOPIC_OR_PARTITION",
            ErrorCode::NOT_LEADER_OR_FOLLOWER => "NOT_LEADER_OR_FOLLOWER",
            ErrorCode::INVALID_TOPIC_EXCEPTION => "INVALID_TOPIC_EXCEPTION",
            ErrorCode::TOPIC_ALREADY_EXISTS => "TOPIC_ALREADY_EXISTS",
            ErrorCode::INVALID_PARTITIONS => "INVALID_PARTITIONS",
            ErrorCode::INVALID_REPLICATION_FACTOR => "INVALID_REPLICATION_FACTOR",
            ErrorCode::INVALID_REPLICA_ASSIGNMENT => "INVALID_REPLICA_ASSIGNMENT",
            ErrorCode::INVALID_CONFIG => "INVALID_CONFIG",
            ErrorCode::INVALID_REQUEST => "INVALID_REQUEST",
            ErrorCode::POLICY_VIOLATION => "POLICY_VIOLATION",
            ErrorCode::FENCED_LEADER_EPOCH => "FENCED_LEADER_EPOCH",
            ErrorCode::STALE_BROKER_EPOCH => "STALE_BROKER_EPOCH",
            ErrorCode::INVALID_UPDATE_VERSION => "INVALID_UPDATE_VERSION",
            ErrorCode::UNKNOWN_TOPIC_ID => "UNKNOWN_TOPIC_ID",
            ErrorCode::DUPLICATE_BROKER_REGISTRATION => "DUPLICATE_BROKER_REGISTRATION",
            ErrorCode::INELIGIBLE_REPLICA => "INELIGIBLE_REPLICA",
            ErrorCode(other) => return write!(f, "error code {other}"),
        };
        f.write_str(name)
    }
}

/// A refused operation: the Kafka error code and a message for the reply's `error_message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}
