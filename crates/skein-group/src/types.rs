//! Plain Rust inputs and outputs of the coordinator: what the request handlers translate
//! wire messages to and from.

use bytes::Bytes;

use crate::error::ErrorCode;
use crate::record::{GroupRecord, TopicId, TopicPartitions};

/// Opaque id of a waiting request: JoinGroup and SyncGroup responses may be delayed until
/// the rebalance they wait for progresses, and arrive as [`Effect`]s carrying this token.
pub type Token = u64;

/// Something the caller must do after a coordinator call, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Answer the waiting JoinGroup request `Token`.
    Join(Token, JoinResult),
    /// Answer the waiting SyncGroup request `Token`.
    Sync(Token, SyncResult),
    /// Append this record to `__consumer_offsets` (partition chosen by
    /// [`GroupRecord::partition_key`]). Records must be appended in the order given, and a
    /// response emitted after a `Persist` should be sent only once the append is durable.
    Persist(GroupRecord),
}

/// A JoinGroup request (all versions).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JoinRequest {
    pub group_id: String,
    /// "" for a member joining for the first time.
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub protocol_type: String,
    /// (name, metadata) in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    pub session_timeout_ms: i32,
    /// v0 has no rebalance timeout: pass the session timeout, as Kafka does.
    pub rebalance_timeout_ms: i32,
    pub client_id: String,
    pub client_host: String,
    /// JoinGroup v4+: a new dynamic member first gets MEMBER_ID_REQUIRED with its id.
    pub require_known_member_id: bool,
    /// JoinGroup v9+ (KIP-814): the leader can be told to skip computing an assignment.
    pub supports_skip_assignment: bool,
    pub reason: Option<String>,
}

/// A member as the JoinGroup leader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub metadata: Bytes,
}

/// The JoinGroup response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinResult {
    pub error: ErrorCode,
    /// -1 on error.
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// "" on error.
    pub leader: String,
    pub skip_assignment: bool,
    /// The member's id: the new one for MEMBER_ID_REQUIRED and fresh joins.
    pub member_id: String,
    /// Non-empty only for the leader.
    pub members: Vec<JoinMember>,
}

impl JoinResult {
    pub(crate) fn error(error: ErrorCode, member_id: &str) -> Self {
        JoinResult {
            error,
            generation_id: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            skip_assignment: false,
            member_id: member_id.to_owned(),
            members: Vec::new(),
        }
    }
}

/// A SyncGroup request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyncRequest {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    /// SyncGroup v5+; checked against the group's when present.
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// (member id, assignment): only the leader's are used.
    pub assignments: Vec<(String, Bytes)>,
}

/// The SyncGroup response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncResult {
    pub error: ErrorCode,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResult {
    pub(crate) fn error(error: ErrorCode) -> Self {
        SyncResult {
            error,
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        }
    }
}

/// One LeaveGroup result per leaving member: (member id, instance id, error).
pub type LeaveMemberResult = (String, Option<String>, ErrorCode);

/// A per-partition outcome: ((topic, partition), error).
pub type PartitionResult = ((String, i32), ErrorCode);

/// One OffsetFetch answer: (topic, partition, committed offset).
pub type FetchedOffset = (String, i32, CommittedOffset);

/// One partition of an OffsetCommit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitOffset {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// -1 when absent.
    pub leader_epoch: i32,
    /// A null metadata is stored and returned as "", like Kafka.
    pub metadata: Option<String>,
}

/// An OffsetCommit request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommitRequest {
    pub group_id: String,
    /// The generation (classic) or member epoch (consumer); -1 for standalone consumers
    /// and admin tools.
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub offsets: Vec<CommitOffset>,
}

/// A committed offset as OffsetFetch returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    /// -1 when nothing is committed.
    pub offset: i64,
    /// -1 when unknown.
    pub leader_epoch: i32,
    pub metadata: String,
}

impl CommittedOffset {
    pub(crate) fn none() -> Self {
        CommittedOffset {
            offset: -1,
            leader_epoch: -1,
            metadata: String::new(),
        }
    }
}

/// A member in DescribeGroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// Empty unless the group is Stable (as Kafka).
    pub metadata: Bytes,
    /// Empty unless the group is Stable (as Kafka).
    pub assignment: Bytes,
}

/// A classic group in DescribeGroups. Unknown and non-classic groups are "Dead".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub error: ErrorCode,
    pub group_id: String,
    pub state: String,
    pub protocol_type: String,
    /// "" unless the group is Stable (as Kafka).
    pub protocol_name: String,
    pub members: Vec<MemberDescription>,
}

/// A group in ListGroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    pub group_id: String,
    pub protocol_type: String,
    pub state: String,
    /// "classic" or "consumer".
    pub group_type: String,
}

/// The broker's view of topics, for KIP-848 assignment: (name, id, partition count).
pub trait TopicView {
    fn topics(&self) -> Vec<(String, TopicId, i32)>;

    /// Whether a subscription regex resolved now may match `topic`: Kafka resolves regexes
    /// only to the topics the member whose heartbeat triggers the resolution may describe.
    fn regex_may_match(&self, _topic: &str) -> bool {
        true
    }
}

impl TopicView for Vec<(String, TopicId, i32)> {
    fn topics(&self) -> Vec<(String, TopicId, i32)> {
        self.clone()
    }
}

/// A ConsumerGroupHeartbeat request (KIP-848).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConsumerHeartbeat {
    pub group_id: String,
    /// Client-generated; "" lets the coordinator generate one (version 0 semantics).
    pub member_id: String,
    /// 0 = join, -1 = leave, -2 = static member leaving temporarily.
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    /// -1 = unchanged.
    pub rebalance_timeout_ms: i32,
    /// `None` = unchanged.
    pub subscribed_topic_names: Option<Vec<String>>,
    /// `None` = unchanged; `Some("")` clears it.
    pub subscribed_topic_regex: Option<String>,
    /// `None` = unchanged.
    pub server_assignor: Option<String>,
    /// What the member owns now; `None` = unchanged since the last heartbeat.
    pub topic_partitions: Option<TopicPartitions>,
    /// From the request header and connection.
    pub client_id: String,
    pub client_host: String,
}

/// The ConsumerGroupHeartbeat response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerHeartbeatResult {
    pub error: ErrorCode,
    pub error_message: Option<String>,
    pub member_id: String,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: i32,
    /// The partitions the member should own now; `None` = unchanged.
    pub assignment: Option<TopicPartitions>,
}

impl ConsumerHeartbeatResult {
    pub(crate) fn error(error: ErrorCode, message: impl Into<String>, member_id: &str) -> Self {
        ConsumerHeartbeatResult {
            error,
            error_message: Some(message.into()),
            member_id: member_id.to_owned(),
            member_epoch: -1,
            heartbeat_interval_ms: 0,
            assignment: None,
        }
    }
}

/// A member in ConsumerGroupDescribe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerMemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub member_epoch: i32,
    pub client_id: String,
    pub client_host: String,
    pub subscribed_topic_names: Vec<String>,
    pub subscribed_topic_regex: Option<String>,
    /// The partitions the member owns (has been given).
    pub assignment: TopicPartitions,
    /// The partitions the assignor wants it to own.
    pub target_assignment: TopicPartitions,
}

/// A consumer group in ConsumerGroupDescribe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerGroupDescription {
    /// GROUP_ID_NOT_FOUND for unknown and classic groups.
    pub error: ErrorCode,
    pub group_id: String,
    pub state: String,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub assignor_name: String,
    pub members: Vec<ConsumerMemberDescription>,
}
