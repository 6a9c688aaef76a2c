//! The replicated metadata log of Skein's cluster mode (KRaft's `__cluster_metadata`), with
//! the [`openraft`] engine behind Skein's own [`MetadataLog`] trait so the engine could change.
//!
//! # Why this openraft version
//! openraft is pinned exactly (`=0.10.0-alpha.37`, root `Cargo.toml`). The last stable line,
//! 0.9.25, draws its randomized election timeout once per process, so two survivors of a leader
//! failure can keep timing out together and split their votes forever. The fix that re-draws the
//! timeout for every election (openraft #1838) exists only in 0.10.0-alpha.30 and later, and 0.10
//! is published only as alphas, hence the exact pin. 0.10 needs Rust 1.88 (let chains in
//! `openraft-macros`, and `validit`/`quorum-set` declare 1.88).
//!
//! # The model
//! - A log entry is an opaque [`bytes::Bytes`]: one atomic batch of metadata records, encoded by
//!   `skein-metadata`. Its **offset** is the Raft log index. Committed entries are handed, in
//!   order, to the caller's [`Applier`]; a snapshot is the applier's whole state as bytes.
//! - Offset 0 is the initial membership entry written at bootstrap; later membership changes and
//!   the blank entry every new leader writes also take offsets. The applier only sees the
//!   caller's entries, so the offsets it gets have gaps.
//! - Only the leader accepts [`MetadataLog::propose`]; elsewhere it answers
//!   [`LogError::NotLeader`] with the leader's node id and controller address when known. Every
//!   call has a bounded wait ([`Limits::request_timeout`]).
//!
//! # Bootstrap (no operator step)
//! Every node is started with the same static voter list (`controller.quorum.voters`). A voter
//! whose metadata directory is empty (no vote, no entry, no snapshot) initializes Raft with the
//! membership "these voters, directory ids unknown". Because every voter writes the *same* entry
//! at offset 0 under the same log id (Skein uses openraft's standard leader id, in which a
//! committed leader id is just the term, and initialization uses term 0), the copies are
//! identical and Raft's election then picks one leader; openraft documents initializing several
//! nodes with an identical config as safe. The lowest voter id initializes at once and the
//! others after one maximal election timeout, unless a leader reached them first: a cluster
//! started all at once then does not open with a split vote, and if the lowest voter is down the
//! others still form the quorum. A node with any state never re-initializes (if its static voter
//! list differs from the recorded voters it says so in one line; the recorded ones apply). A
//! quorum of one elects itself at once, on first start and on restart (no election timeout).
//!
//! # Using it
//! [`RaftNode::start`] with a [`RaftConfig`], the bound controller listener and the applier;
//! then [`MetadataLog`] calls. [`MetadataLog::applied`] is a `watch` of the last applied
//! offset; [`MetadataLog::status`] is answered from this node's view (log end, lag and ack
//! times of the others only on the leader). Call [`MetadataLog::shutdown`] before dropping.
//!
//! # Directory ids (KIP-853)
//! Each node's metadata directory has a directory id (a UUID the caller gives; `quorum.meta`
//! remembers it, see below, and [`RaftNode::directory_id`] reads it back or makes a fresh one
//! for a new or wiped directory). The membership stored in the log records every voter and observer
//! as `(node id, controller address, directory id)`.
//! - **At first formation** the directory ids are unknown (the bootstrap entry must be the same
//!   on every voter, and a voter knows only its own id). Every connection starts with a
//!   handshake carrying the cluster id, node id and directory id of both ends, so the first
//!   leader learns each voter's directory id from a successful handshake and commits a
//!   membership update (openraft `SetNodes`, same voter set) that records it; its own id it
//!   knows. Until a voter's id is recorded (normally a few hundred milliseconds after the first
//!   election), that voter is not protected against a wiped disk.
//! - **Afterwards** both ends of a handshake check the peer's directory id against the recorded
//!   one: a node whose node id is a recorded member but whose directory id differs (a wiped disk
//!   coming back under an old node id) is refused with a one-line reason, logged on both sides
//!   and kept in [`QuorumStatus::refusals`]. It can then neither vote nor be counted toward a
//!   quorum: its RPCs are refused, and the leader does not replicate to it. An operator
//!   replaces the voter: [`MetadataLog::remove_voter`] then [`MetadataLog::add_voter`] with the
//!   new directory id (added as a learner first, promoted once caught up).
//! - Observers (broker-only nodes, openraft learners) are recorded the same way; an observer
//!   not yet in the membership asks the voters to add it ("join") until the leader does.
//!
//! # What is on disk (the metadata directory)
//! - `quorum.meta`: text, `cluster.id=`, `node.id=`, `directory.id=` lines. Written once; a
//!   later start with another cluster id or node id is refused (it never overwrites metadata).
//! - `log`: the append-only log, see [`store`]: an 8-byte magic, then records
//!   `[u32 length][u32 crc32c][postcard record]`. fsync before a write is reported durable; a
//!   conflict truncates the file; purging below a snapshot rewrites the file (temp + rename).
//! - `vote`, `committed`: one record each, replaced atomically (temp + fsync + rename + directory
//!   fsync; `committed` is a hint and is not fsynced).
//! - `snapshot`: the last snapshot (meta + the applier's bytes, each with a CRC), written
//!   atomically. On restart the applier is restored from it, then the log is replayed into it.
//! - A torn tail (a partial last record) is cut off on open; anything else that fails its CRC is
//!   an error, never a panic.
//!
//! # The wire (the controller listener), see [`net`]
//! Frames are `[u32 big-endian length][payload]`, bounded by [`Limits::max_frame_bytes`]. A
//! connection starts with a `Hello` frame (magic, version, cluster id, node id, directory id,
//! channel) and its answer (accepted with the server's node and directory id, or refused with a
//! reason). Then request/response frames, one at a time. Two channels share the listener: the
//! Raft channel (openraft's RPCs, serde + postcard) and the **application channel** (opaque
//! bytes to a handler the caller registers, see [`RaftNode::set_app_handler`] and
//! [`AppClient`]).

pub mod net;
pub mod node;
pub mod sm;
pub mod store;
pub mod transport;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use net::AppClient;
pub use node::RaftNode;
pub use transport::{BoxStream, RareLog, Transport};

/// A boxed, sendable future (keeps [`MetadataLog`] object-safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Kafka's `node.id` (an i32 on Kafka's wire; openraft's node id here).
pub type NodeId = u64;

/// The payload of one log entry: an opaque batch of metadata records.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct EntryData(pub Bytes);

impl fmt::Display for EntryData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "entry({} bytes)", self.0.len())
    }
}

/// What the membership records about a node: its controller address and directory id
/// (`None` until recorded, see the module docs).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerNode {
    /// `host:port` of the node's controller listener.
    pub addr: String,
    /// The node's metadata directory id, once recorded.
    pub directory_id: Option<Uuid>,
}

impl fmt::Display for PeerNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.directory_id {
            Some(d) => write!(f, "{}#{}", self.addr, d),
            None => write!(f, "{}#?", self.addr),
        }
    }
}

openraft::declare_raft_types!(
    /// openraft's type configuration for the metadata log. The standard leader id (a committed
    /// leader id is the term alone) makes the bootstrap entry identical on every voter.
    pub TypeConfig:
        D = EntryData,
        R = (),
        NodeId = NodeId,
        Node = PeerNode,
        LeaderId = openraft::impls::leader_id_std::LeaderId<u64, u64>,
);

/// The openraft handle type used by this crate.
pub type Raft = openraft::Raft<TypeConfig, sm::StateMachine>;

/// The state machine the caller gives: committed entries are applied in log order.
pub trait Applier: Send + 'static {
    /// A committed entry at `offset` (the raft log index), in order, exactly once per process
    /// lifetime after the last restore.
    fn apply(&mut self, offset: u64, entry: &[u8]);
    /// The whole applied state as bytes, for a raft snapshot (skein-metadata: the image as records).
    fn snapshot(&self) -> Bytes;
    /// Replace the state with a snapshot's (taken at `offset`).
    fn restore(&mut self, offset: u64, snapshot: &[u8]) -> Result<(), String>;
}

/// Errors of [`MetadataLog`] calls. All are values; none is a hang.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    /// This node is not the leader; `leader` is `(node id, controller address)` when known.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// The leader as far as this node knows.
        leader: Option<(NodeId, String)>,
    },
    /// The bounded wait ran out; the outcome is unknown.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// Leadership changed while the entry was in flight; it may or may not be committed.
    #[error("outcome unknown: {0}")]
    Uncertain(String),
    /// A membership change is already in progress (one at a time).
    #[error("a membership change is in progress")]
    MembershipChangeInProgress,
    /// The request is invalid (unknown node, entry too large, ...).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The node is shut down or its Raft core stopped.
    #[error("shut down: {0}")]
    Shutdown(String),
}

/// Whether a node votes or only follows the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A member of `controller.quorum.voters`.
    Voter,
    /// A broker-only node: follows the log as an openraft learner, never votes.
    Observer,
}

/// Where this node stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    /// The active controller.
    Leader,
    /// A voter following the leader.
    Follower,
    /// A voter campaigning.
    Candidate,
    /// An observer (learner).
    Observer,
    /// Stopped.
    Shutdown,
}

/// One voter or observer as DescribeQuorum shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaStatus {
    /// Its node id.
    pub node_id: NodeId,
    /// Its recorded directory id (`None` until recorded).
    pub directory_id: Option<Uuid>,
    /// Its controller address.
    pub addr: String,
    /// Kafka-style log end offset (one past its last entry matched with the leader), known on
    /// the leader only (`None` elsewhere or before the first match).
    pub log_end_offset: Option<u64>,
    /// `leader's log end - its log end`, on the leader only.
    pub lag: Option<u64>,
    /// When the leader last had an acknowledgement from it (the leader itself: now).
    pub last_ack: Option<SystemTime>,
}

/// The quorum as this node sees it (DescribeQuorum, `skein cluster info`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuorumStatus {
    /// This node.
    pub node_id: NodeId,
    /// This node's directory id.
    pub directory_id: Uuid,
    /// This node's state.
    pub state: NodeState,
    /// The current leader, if known.
    pub leader: Option<NodeId>,
    /// The current term (KRaft's epoch).
    pub term: u64,
    /// Kafka-style high watermark: one past the last committed offset.
    pub high_watermark: u64,
    /// One past this node's last log entry.
    pub log_end_offset: u64,
    /// The last offset applied to the [`Applier`].
    pub last_applied: Option<u64>,
    /// The last offset included in this node's snapshot.
    pub snapshot: Option<u64>,
    /// Voters, by node id.
    pub voters: Vec<ReplicaStatus>,
    /// Observers (learners), by node id.
    pub observers: Vec<ReplicaStatus>,
    /// Recent one-line refusals (handshakes refused, by us or by a peer), newest last.
    pub refusals: Vec<String>,
}

/// The engine-independent interface of the replicated metadata log.
pub trait MetadataLog: Send + Sync {
    /// Append `entry` if this node is the leader; resolves with its offset once it is committed
    /// and applied locally.
    fn propose(&self, entry: Bytes) -> BoxFuture<'_, Result<u64, LogError>>;
    /// The last offset applied to the [`Applier`] (`None` before the first).
    fn applied(&self) -> tokio::sync::watch::Receiver<Option<u64>>;
    /// The quorum, for DescribeQuorum.
    fn status(&self) -> QuorumStatus;
    /// Add a voter (KIP-853 AddRaftVoter): first as a learner that catches up, then promoted.
    fn add_voter(
        &self,
        node_id: NodeId,
        directory_id: Uuid,
        addr: String,
    ) -> BoxFuture<'_, Result<(), LogError>>;
    /// Remove a voter (KIP-853 RemoveRaftVoter); with `directory_id`, only if it matches.
    fn remove_voter(
        &self,
        node_id: NodeId,
        directory_id: Option<Uuid>,
    ) -> BoxFuture<'_, Result<(), LogError>>;
    /// Add an observer (a learner that follows the log without voting).
    fn add_observer(
        &self,
        node_id: NodeId,
        directory_id: Uuid,
        addr: String,
    ) -> BoxFuture<'_, Result<(), LogError>>;
    /// Stop the node: Raft core, listener, connections. Idempotent.
    fn shutdown(&self) -> BoxFuture<'_, ()>;
}

/// Limits on what peers (and callers) can make a node spend.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest frame accepted or sent (a snapshot travels in one frame).
    pub max_frame_bytes: usize,
    /// Largest entry [`MetadataLog::propose`] accepts.
    pub max_entry_bytes: usize,
    /// Concurrent inbound connections on the controller listener.
    pub max_connections: usize,
    /// Timeout of one read or write of a frame, and of connect + handshake.
    pub io_timeout: Duration,
    /// An inbound connection idle this long is closed.
    pub idle_timeout: Duration,
    /// The bounded wait of propose and membership calls.
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: 64 << 20,
            max_entry_bytes: 8 << 20,
            max_connections: 256,
            io_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(120),
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// Everything [`RaftNode::start`] needs besides the listener and the applier.
#[derive(Clone, Debug)]
pub struct RaftConfig {
    /// This node's `node.id`.
    pub node_id: NodeId,
    /// The cluster id; a peer with another one is refused.
    pub cluster_id: String,
    /// This node's metadata directory id (KIP-853).
    pub directory_id: Uuid,
    /// The metadata directory, e.g. `<data_dir>/__cluster_metadata-0`.
    pub metadata_dir: PathBuf,
    /// `controller.quorum.voters`: node id -> controller `host:port`.
    pub voters: BTreeMap<NodeId, String>,
    /// Voter or observer.
    pub role: Role,
    /// The address other nodes reach this node's controller listener at; defaults to the voter
    /// list's entry, else the listener's local address.
    pub advertised_addr: Option<String>,
    /// Take a snapshot every this many entries (and purge the log below it).
    pub snapshot_every: u64,
    /// Election timeout range (a fresh random value in it for every election).
    pub election_timeout: (Duration, Duration),
    /// Leader heartbeat interval.
    pub heartbeat_interval: Duration,
    /// Resource limits.
    pub limits: Limits,
    /// What wraps the controller listener's connections, both ways (TLS); `None`: plain TCP.
    pub transport: Option<std::sync::Arc<dyn Transport>>,
}

impl RaftConfig {
    /// A voter config with Skein's defaults: election timeout 1000-2000 ms (KRaft's
    /// `controller.quorum.election.timeout.ms` is 1000, randomized up to twice that), heartbeat
    /// 250 ms, a snapshot every 10 000 entries, default [`Limits`].
    pub fn new(
        node_id: NodeId,
        cluster_id: impl Into<String>,
        directory_id: Uuid,
        metadata_dir: impl Into<PathBuf>,
        voters: BTreeMap<NodeId, String>,
    ) -> Self {
        RaftConfig {
            node_id,
            cluster_id: cluster_id.into(),
            directory_id,
            metadata_dir: metadata_dir.into(),
            voters,
            role: Role::Voter,
            advertised_addr: None,
            snapshot_every: 10_000,
            election_timeout: (Duration::from_millis(1000), Duration::from_millis(2000)),
            heartbeat_interval: Duration::from_millis(250),
            limits: Limits::default(),
            transport: None,
        }
    }
}

/// Why a node could not start. One line each.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The metadata directory belongs to another cluster or node, or the config is inconsistent.
    #[error("{0}")]
    Refused(String),
    /// Reading or writing the metadata directory failed, or it is corrupt.
    #[error("metadata storage: {0}")]
    Storage(#[from] std::io::Error),
    /// The applier refused the snapshot.
    #[error("restoring the snapshot: {0}")]
    Restore(String),
    /// openraft refused to start.
    #[error("raft: {0}")]
    Raft(String),
}
