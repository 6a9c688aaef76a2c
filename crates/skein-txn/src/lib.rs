//! `skein-txn`: Kafka's transaction coordinator as a pure state machine.
//!
//! [`TxnCoordinator`] holds every transactional id of the `__transaction_state` partitions
//! this node leads and answers InitProducerId (with a transactional id: epoch bumps,
//! fencing, KIP-360 recovery, producer id rotation), AddPartitionsToTxn (including the
//! KIP-890 part 1 verify-only check), AddOffsetsToTxn, EndTxn (transaction version 1:
//! EndTxn up to version 4), DescribeTransactions and ListTransactions, and aborts timed-out
//! transactions and expires idle ids on [`TxnCoordinator::tick`].
//!
//! **This crate knows nothing about sockets, the clock, the wire codec or the log.** Time is
//! an `i64` of milliseconds passed to each call and every outcome is data: answers, and
//! [`Effect`]s the caller carries out in order — persist a [`TxnRecord`] (Kafka's
//! `TransactionLogKey`/`TransactionLogValue`) to `__transaction_state` and report back with
//! [`TxnCoordinator::persisted`], write COMMIT/ABORT [`Markers`] and report back with
//! [`TxnCoordinator::markers_written`], or answer a waiting request ([`Token`]). At startup
//! or on gaining leadership the caller replays a partition's records with
//! [`TxnCoordinator::load_partition`]. `docs/transactions.md` describes how the broker
//! drives it.
//!
//! Kafka error codes are data ([`ErrorCode`]); Rust errors are only for undecodable
//! records ([`RecordError`]).

mod config;
mod coordinator;
mod error;
mod record;
mod types;

pub use config::TxnConfig;
pub use coordinator::{
    append_error, java_string_hash, partition_for, TxnCoordinator, NO_PRODUCER_EPOCH,
    NO_PRODUCER_ID,
};
pub use error::{ErrorCode, RecordError};
pub use record::{TxnLogValue, TxnRecord, TxnState, VALUE_VERSION};
pub use types::{
    Effect, InitProducerId, Markers, Persist, Response, Token, TopicPartition, TxnDescription,
    TxnList, TxnListing, TxnView, CONSUMER_OFFSETS_TOPIC, TRANSACTION_STATE_TOPIC,
};
