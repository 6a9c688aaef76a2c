//! Coordinator configuration, with Kafka's broker defaults.

/// A KIP-848 server-side assignor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Assignor {
    /// Kafka's `uniform` assignor: partitions spread evenly, sticky to the previous target.
    #[default]
    Uniform,
    /// Kafka's `range` assignor: per topic, contiguous ranges by sorted member id.
    Range,
}

impl Assignor {
    /// The name clients send in `ServerAssignor`.
    pub fn name(self) -> &'static str {
        match self {
            Assignor::Uniform => "uniform",
            Assignor::Range => "range",
        }
    }

    /// Parses a client-supplied assignor name; `None` means UNSUPPORTED_ASSIGNOR.
    pub fn from_name(name: &str) -> Option<Assignor> {
        match name {
            "uniform" => Some(Assignor::Uniform),
            "range" => Some(Assignor::Range),
            _ => None,
        }
    }
}

/// Limits and timeouts of the group coordinator (`group.*` and `offsets.*` broker configs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    /// `group.min.session.timeout.ms`.
    pub min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms`.
    pub max_session_timeout_ms: i32,
    /// `group.initial.rebalance.delay.ms`: how long the first rebalance of an empty group
    /// waits for more members.
    pub initial_rebalance_delay_ms: i64,
    /// `group.max.size` (classic groups) and `group.consumer.max.size` (consumer groups).
    pub max_group_size: usize,
    /// `offsets.retention.minutes`, in milliseconds.
    pub offsets_retention_ms: i64,
    /// `offsets.retention.check.interval.ms`: how often expired offsets are removed and
    /// empty groups without offsets are deleted (until then an emptied group stays listed
    /// as Empty, as in Kafka).
    pub offsets_retention_check_interval_ms: i64,
    /// `offset.metadata.max.bytes`: longer commit metadata is OFFSET_METADATA_TOO_LARGE.
    pub offset_metadata_max_bytes: usize,
    /// How long a new classic member waiting in its first JoinGroup may stay silent
    /// (Kafka's `newMemberJoinTimeoutMs`, KIP-394).
    pub new_member_join_timeout_ms: i64,
    /// `group.consumer.session.timeout.ms` (KIP-848).
    pub consumer_session_timeout_ms: i32,
    /// `group.consumer.heartbeat.interval.ms` (KIP-848).
    pub consumer_heartbeat_interval_ms: i32,
    /// The default KIP-848 server assignor (`group.consumer.assignors`, first entry).
    pub consumer_assignor: Assignor,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            max_group_size: i32::MAX as usize,
            offsets_retention_ms: 7 * 24 * 60 * 60 * 1000,
            offsets_retention_check_interval_ms: 600_000,
            offset_metadata_max_bytes: 4096,
            new_member_join_timeout_ms: 5 * 60 * 1000,
            consumer_session_timeout_ms: 45_000,
            consumer_heartbeat_interval_ms: 5_000,
            consumer_assignor: Assignor::Uniform,
        }
    }
}
