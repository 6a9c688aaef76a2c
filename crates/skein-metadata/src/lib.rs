//! skein-metadata: cluster metadata for Skein's cluster mode, pure (no I/O, no clock, no
//! sockets, no async).
//!
//! Skein keeps its cluster metadata the KRaft way: a Raft-replicated **metadata log** whose
//! entries are batches of Kafka-shaped records (`TopicRecord`, `PartitionRecord`,
//! `PartitionChangeRecord`, `RegisterBrokerRecord`, `BrokerRegistrationChangeRecord`,
//! `ConfigRecord`, `ProducerIdsRecord`...; generated in `skein_protocol::metadata_records`).
//! This crate is everything about that log except its replication (`skein-raft`):
//!
//! - [`batch`]: one log entry = one atomic batch of records ([`encode_batch`],
//!   [`decode_batch`]), with limits checked before allocation.
//! - [`image`]: the [`MetadataImage`] every node builds by applying committed entries in order
//!   ([`MetadataImage::apply_entry`] returns a [`MetadataDelta`] saying what changed and, per
//!   broker, what to lead, follow or drop), its snapshot as one batch and its restore. It
//!   matches the `Applier` contract of `skein-raft` (apply / snapshot / restore).
//! - [`controller`]: the [`QuorumController`]'s decisions over the committed image plus its
//!   volatile broker sessions: registration, heartbeats (fencing, unfencing, controlled
//!   shutdown), session expiry, topic creation with rack-aware placement ([`placement`]),
//!   deletion, growth, configs, producer-id blocks, and ISR changes asked by partition leaders
//!   (AlterPartition, for replication); [`reassign`]: partition reassignment (KIP-455). Each
//!   returns the records to propose and the reply; the
//!   caller proposes, waits for the commit, then answers.
//!
//! What is in the log vs volatile: everything brokers must agree on is in the log and
//! therefore in the image (registrations, epochs, fenced flags, partitions, configs,
//! producer-id blocks, the last applied offset). Only the active controller's broker session
//! deadlines are volatile; a new active controller restarts them
//! ([`QuorumController::activate`]).
//!
//! Why one operation at a time against the committed image: every decision reads state that
//! is durable on a quorum, so a controller failover can never expose a decision based on
//! state that was lost, and no two decisions in flight can conflict. The cost (one commit
//! latency per state-changing operation) is fine for metadata rates.
//!
//! Determinism: no clock (callers pass `now_ms`), no global randomness (callers pass a seed
//! for topic ids and placement), ordered maps only, so the seeded simulation in
//! `tests/sim.rs` replays exactly.

pub mod batch;
pub mod controller;
mod error;
pub mod image;
pub mod placement;
pub mod reassign;

pub use batch::{decode_batch, encode_batch};
pub use controller::{ControllerConfig, Outcome, QuorumController};
pub use error::{ApiError, Error, ErrorCode};
pub use image::{MetadataDelta, MetadataImage};
