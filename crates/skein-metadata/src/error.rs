//! Errors: [`Error`] for bytes or records that cannot be applied (a corrupt or inconsistent
//! metadata log entry or snapshot), and [`ApiError`] (from `skein-protocol`) for a controller
//! operation refused with a Kafka error code, which is data for the reply, never a failure of
//! the controller.

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

/// Kafka error codes and refused operations: the table shared with the broker.
pub use skein_protocol::error::{ApiError, ErrorCode};
