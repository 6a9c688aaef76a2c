//! `skein-group`: consumer group coordinators as pure state machines.
//!
//! [`Coordinator`] holds every group of this node: classic groups (JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup; KIP-345 static members, KIP-394, KIP-814), KIP-848 consumer
//! groups (ConsumerGroupHeartbeat with server-side assignors and incremental
//! reconciliation), and their committed offsets.
//!
//! **This crate knows nothing about sockets, the clock, the wire codec or the log.** Time is
//! an `i64` of milliseconds passed to each call, randomness is a seeded PRNG, and every
//! outcome is data: responses, and [`Effect`]s the caller carries out in order — answer a
//! delayed JoinGroup/SyncGroup ([`Token`]) or append a [`GroupRecord`] to
//! `__consumer_offsets`. At startup the caller feeds those records back through
//! [`Coordinator::replay`]; [`Coordinator::snapshot`] gives the records to keep when the
//! log is cleaned.
//!
//! Transactional offset commits (TxnOffsetCommit) stay pending per producer id until the
//! transaction's marker reaches the group's partition ([`Coordinator::complete_txn`]).
//!
//! Kafka error codes are data ([`ErrorCode`]); Rust errors are only for undecodable
//! records ([`RecordError`]).

mod assignor;
mod classic;
mod config;
mod consumer;
mod coordinator;
mod error;
mod record;
mod rng;
pub mod subscription;
mod types;

pub use config::{Assignor, GroupConfig};
pub use coordinator::{Coordinator, TxnCommitRequest, TxnOffsetRecords};
pub use error::{ErrorCode, RecordError};
pub use record::{
    ClassicGroupRecord, ClassicMemberRecord, ConsumerGroupRecord, ConsumerMemberRecord,
    GroupRecord, TopicId, TopicPartitions, KEY_TYPE_GROUP, KEY_TYPE_OFFSET,
};
pub use types::{
    CommitOffset, CommitRequest, CommittedOffset, ConsumerGroupDescription, ConsumerHeartbeat,
    ConsumerHeartbeatResult, ConsumerMemberDescription, Effect, FetchedOffset, GroupDescription,
    GroupListing, JoinMember, JoinRequest, JoinResult, LeaveMemberResult, MemberDescription,
    PartitionResult, SyncRequest, SyncResult, Token, TopicView,
};
