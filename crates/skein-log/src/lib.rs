//! `skein-log`: one partition's durable log.
//!
//! A partition directory holds segments named by their base offset, zero-padded to 20 digits:
//!
//! - `<base>.log`: record batches (magic 2) exactly as produced; only `base_offset` was
//!   written by the log. The on-disk format is the wire format.
//! - `<base>.index`: sparse offset index, `(relative_offset u32, position u32)` big-endian,
//!   one entry every `index_interval_bytes` of log, keyed by batch base offset.
//! - `<base>.timeindex`: sparse time index, `(timestamp i64, relative_offset u32)`, strictly
//!   increasing timestamps (the running maximum and the batch that reached it).
//!
//! and checkpoint files, each replaced atomically (write, fsync, rename, fsync directory):
//! `recovery-point-offset-checkpoint`, `log-start-offset`, `high-watermark` (version line `0`
//! then the value), `leader-epoch-checkpoint` (Kafka's layout: `0`, count, `epoch offset`
//! lines), the empty `.clean-shutdown` marker written by `Log::close`, and `<offset>.snapshot`
//! files: opaque state the owner derived from the log below that offset (`snapshot.rs`), and
//! `<base>.txnindex`: the aborted transactions whose ABORT marker is in that segment
//! (`txn_index.rs`). A compacted log also has a `cleaner-offset-checkpoint`, and while a
//! cleaning runs a `<base>.log.cleaned` or `<base>.log.swap` file (`cleaner.rs`).
//!
//! Only the active segment's `.log` file stays open. Index entries live in memory and are
//! appended to their files (open, write, close) at roll (fsynced), `checkpoint` and `close`;
//! after a crash the active segment's indexes are rebuilt from its log. A log opened in a new,
//! empty directory is created without any fsync: the directory (and its parent entry) is
//! fsynced before the first write that must survive a crash.
//!
//! **This crate knows nothing about the network or consumer groups**, and never panics on bad
//! files: damage is repaired by truncation where Kafka would, and reported as an error
//! elsewhere.

mod batch;
mod checkpoint;
pub mod cleaner;
mod config;
mod epoch;
mod error;
mod index;
mod log;
mod record_scan;
mod recovery;
mod segment;
mod snapshot;
mod sync;
mod txn_index;

pub use batch::BatchHeader;
pub use cleaner::{CleanParams, Cleanable, CleanerCheckpoint};
pub use config::LogConfig;
pub use error::LogError;
pub use log::{AppendInfo, FileRange, Log, RangeRead, ReadResult, RetentionReport};
pub use recovery::RecoveryReport;
pub use sync::SyncHandle;
pub use txn_index::AbortedTxn;
