//! Kafka error codes as the operator sees them: the name Kafka gives each code, and an error
//! type that carries the code with the broker's message (or Kafka's own description when the
//! broker sent none).

use std::fmt;

/// Error codes the client acts on by number.
pub const NONE: i16 = 0;
pub const OFFSET_OUT_OF_RANGE: i16 = 1;
pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
pub const LEADER_NOT_AVAILABLE: i16 = 5;
pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
pub const REQUEST_TIMED_OUT: i16 = 7;
pub const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
pub const NOT_COORDINATOR: i16 = 16;
pub const ILLEGAL_GENERATION: i16 = 22;
pub const UNKNOWN_MEMBER_ID: i16 = 25;
pub const REBALANCE_IN_PROGRESS: i16 = 27;
pub const UNSUPPORTED_VERSION: i16 = 35;
pub const GROUP_ID_NOT_FOUND: i16 = 69;
pub const FENCED_LEADER_EPOCH: i16 = 74;
pub const UNKNOWN_LEADER_EPOCH: i16 = 75;
pub const MEMBER_ID_REQUIRED: i16 = 79;
pub const FENCED_INSTANCE_ID: i16 = 82;

/// Kafka's name for an error code (`Errors.java`), or `None` for a code this table lacks.
pub fn name(code: i16) -> Option<&'static str> {
    const NAMES: &[&str] = &[
        "NONE",
        "OFFSET_OUT_OF_RANGE",
        "CORRUPT_MESSAGE",
        "UNKNOWN_TOPIC_OR_PARTITION",
        "INVALID_FETCH_SIZE",
        "LEADER_NOT_AVAILABLE",
        "NOT_LEADER_OR_FOLLOWER",
        "REQUEST_TIMED_OUT",
        "BROKER_NOT_AVAILABLE",
        "REPLICA_NOT_AVAILABLE",
        "MESSAGE_TOO_LARGE",
        "STALE_CONTROLLER_EPOCH",
        "OFFSET_METADATA_TOO_LARGE",
        "NETWORK_EXCEPTION",
        "COORDINATOR_LOAD_IN_PROGRESS",
        "COORDINATOR_NOT_AVAILABLE",
        "NOT_COORDINATOR",
        "INVALID_TOPIC_EXCEPTION",
        "RECORD_LIST_TOO_LARGE",
        "NOT_ENOUGH_REPLICAS",
        "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
        "INVALID_REQUIRED_ACKS",
        "ILLEGAL_GENERATION",
        "INCONSISTENT_GROUP_PROTOCOL",
        "INVALID_GROUP_ID",
        "UNKNOWN_MEMBER_ID",
        "INVALID_SESSION_TIMEOUT",
        "REBALANCE_IN_PROGRESS",
        "INVALID_COMMIT_OFFSET_SIZE",
        "TOPIC_AUTHORIZATION_FAILED",
        "GROUP_AUTHORIZATION_FAILED",
        "CLUSTER_AUTHORIZATION_FAILED",
        "INVALID_TIMESTAMP",
        "UNSUPPORTED_SASL_MECHANISM",
        "ILLEGAL_SASL_STATE",
        "UNSUPPORTED_VERSION",
        "TOPIC_ALREADY_EXISTS",
        "INVALID_PARTITIONS",
        "INVALID_REPLICATION_FACTOR",
        "INVALID_REPLICA_ASSIGNMENT",
        "INVALID_CONFIG",
        "NOT_CONTROLLER",
        "INVALID_REQUEST",
        "UNSUPPORTED_FOR_MESSAGE_FORMAT",
        "POLICY_VIOLATION",
        "OUT_OF_ORDER_SEQUENCE_NUMBER",
        "DUPLICATE_SEQUENCE_NUMBER",
        "INVALID_PRODUCER_EPOCH",
        "INVALID_TXN_STATE",
        "INVALID_PRODUCER_ID_MAPPING",
        "INVALID_TRANSACTION_TIMEOUT",
        "CONCURRENT_TRANSACTIONS",
        "TRANSACTION_COORDINATOR_FENCED",
        "TRANSACTIONAL_ID_AUTHORIZATION_FAILED",
        "SECURITY_DISABLED",
        "OPERATION_NOT_ATTEMPTED",
        "KAFKA_STORAGE_ERROR",
        "LOG_DIR_NOT_FOUND",
        "SASL_AUTHENTICATION_FAILED",
        "UNKNOWN_PRODUCER_ID",
        "REASSIGNMENT_IN_PROGRESS",
        "DELEGATION_TOKEN_AUTH_DISABLED",
        "DELEGATION_TOKEN_NOT_FOUND",
        "DELEGATION_TOKEN_OWNER_MISMATCH",
        "DELEGATION_TOKEN_REQUEST_NOT_ALLOWED",
        "DELEGATION_TOKEN_AUTHORIZATION_FAILED",
        "DELEGATION_TOKEN_EXPIRED",
        "INVALID_PRINCIPAL_TYPE",
        "NON_EMPTY_GROUP",
        "GROUP_ID_NOT_FOUND",
        "FETCH_SESSION_ID_NOT_FOUND",
        "INVALID_FETCH_SESSION_EPOCH",
        "LISTENER_NOT_FOUND",
        "TOPIC_DELETION_DISABLED",
        "FENCED_LEADER_EPOCH",
        "UNKNOWN_LEADER_EPOCH",
        "UNSUPPORTED_COMPRESSION_TYPE",
        "STALE_BROKER_EPOCH",
        "OFFSET_NOT_AVAILABLE",
        "MEMBER_ID_REQUIRED",
        "PREFERRED_LEADER_NOT_AVAILABLE",
        "GROUP_MAX_SIZE_REACHED",
        "FENCED_INSTANCE_ID",
        "ELIGIBLE_LEADERS_NOT_AVAILABLE",
        "ELECTION_NOT_NEEDED",
        "NO_REASSIGNMENT_IN_PROGRESS",
        "GROUP_SUBSCRIBED_TO_TOPIC",
        "INVALID_RECORD",
        "UNSTABLE_OFFSET_COMMIT",
        "THROTTLING_QUOTA_EXCEEDED",
        "PRODUCER_FENCED",
        "RESOURCE_NOT_FOUND",
        "DUPLICATE_RESOURCE",
        "UNACCEPTABLE_CREDENTIAL",
        "INCONSISTENT_VOTER_SET",
        "INVALID_UPDATE_VERSION",
        "FEATURE_UPDATE_FAILED",
        "PRINCIPAL_DESERIALIZATION_FAILURE",
        "SNAPSHOT_NOT_FOUND",
        "POSITION_OUT_OF_RANGE",
        "UNKNOWN_TOPIC_ID",
        "DUPLICATE_BROKER_REGISTRATION",
        "BROKER_ID_NOT_REGISTERED",
        "INCONSISTENT_TOPIC_ID",
        "INCONSISTENT_CLUSTER_ID",
        "TRANSACTIONAL_ID_NOT_FOUND",
        "FETCH_SESSION_TOPIC_ID_ERROR",
        "INELIGIBLE_REPLICA",
        "NEW_LEADER_ELECTED",
        "OFFSET_MOVED_TO_TIERED_STORAGE",
        "FENCED_MEMBER_EPOCH",
        "UNRELEASED_INSTANCE_ID",
        "UNSUPPORTED_ASSIGNOR",
        "STALE_MEMBER_EPOCH",
        "MISMATCHED_ENDPOINT_TYPE",
        "UNSUPPORTED_ENDPOINT_TYPE",
        "UNKNOWN_CONTROLLER_ID",
        "UNKNOWN_SUBSCRIPTION_ID",
        "TELEMETRY_TOO_LARGE",
        "INVALID_REGISTRATION",
        "TRANSACTION_ABORTABLE",
        "INVALID_RECORD_STATE",
        "SHARE_SESSION_NOT_FOUND",
        "INVALID_SHARE_SESSION_EPOCH",
        "FENCED_STATE_EPOCH",
        "INVALID_VOTER_KEY",
        "DUPLICATE_VOTER",
        "VOTER_NOT_FOUND",
        "INVALID_REGULAR_EXPRESSION",
        "REBOOTSTRAP_REQUIRED",
    ];
    if code == -1 {
        return Some("UNKNOWN_SERVER_ERROR");
    }
    usize::try_from(code)
        .ok()
        .and_then(|i| NAMES.get(i).copied())
}

/// Kafka's description of the codes an operator meets most, for replies without a message.
fn description(code: i16) -> Option<&'static str> {
    Some(match code {
        -1 => "The server experienced an unexpected error when processing the request.",
        1 => "The requested offset is not within the range of offsets maintained by the server.",
        3 => "This server does not host this topic-partition.",
        5 => "There is no leader for this topic-partition as we are in the middle of a leadership election.",
        6 => "For requests intended only for the leader, this error indicates that the broker is not the current leader.",
        7 => "The request timed out.",
        10 => "The request included a message larger than the max message size the server will accept.",
        15 => "The coordinator is not available.",
        16 => "This is not the correct coordinator.",
        17 => "The request attempted to perform an operation on an invalid topic.",
        22 => "The provided generation id is not the current generation.",
        25 => "The coordinator is not aware of this member.",
        27 => "The group is rebalancing, so a rejoin is needed.",
        35 => "The version of API is not supported.",
        36 => "Topic with this name already exists.",
        37 => "Number of partitions is below 1.",
        38 => "Replication factor is below 1 or larger than the number of available brokers.",
        40 => "Configuration is invalid.",
        42 => "This most likely occurs because of a request being malformed by the client library or the message was sent to an incompatible broker.",
        68 => "The group is not empty.",
        69 => "The group id does not exist.",
        76 => "The requesting client does not support the compression type of given partition.",
        87 => "This record has failed the validation on broker and hence will be rejected.",
        _ => return None,
    })
}

/// An error code from a broker, with the message that came with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaError {
    pub code: i16,
    pub message: Option<String>,
}

impl KafkaError {
    pub fn new(code: i16, message: Option<String>) -> Self {
        KafkaError {
            code,
            message: message.filter(|m| !m.is_empty()),
        }
    }

    /// `Ok` for code 0, the error otherwise.
    pub fn check(code: i16, message: Option<&str>) -> Result<(), KafkaError> {
        if code == NONE {
            Ok(())
        } else {
            Err(KafkaError::new(code, message.map(str::to_owned)))
        }
    }
}

impl fmt::Display for KafkaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match name(self.code) {
            Some(n) => write!(f, "{n}")?,
            None => write!(f, "error code {}", self.code)?,
        }
        match self.message.as_deref().or_else(|| description(self.code)) {
            Some(m) => write!(f, ": {m}"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for KafkaError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_line_up_with_codes() {
        assert_eq!(name(0), Some("NONE"));
        assert_eq!(name(-1), Some("UNKNOWN_SERVER_ERROR"));
        assert_eq!(name(36), Some("TOPIC_ALREADY_EXISTS"));
        assert_eq!(name(68), Some("NON_EMPTY_GROUP"));
        assert_eq!(name(79), Some("MEMBER_ID_REQUIRED"));
        assert_eq!(name(100), Some("UNKNOWN_TOPIC_ID"));
        assert_eq!(name(113), Some("STALE_MEMBER_EPOCH"));
        assert_eq!(name(129), Some("REBOOTSTRAP_REQUIRED"));
        assert_eq!(name(130), None);
        assert_eq!(name(-2), None);
    }

    #[test]
    fn display_prefers_the_broker_message() {
        let e = KafkaError::new(36, Some("Topic 'orders' already exists.".into()));
        assert_eq!(
            e.to_string(),
            "TOPIC_ALREADY_EXISTS: Topic 'orders' already exists."
        );
        let e = KafkaError::new(69, Some(String::new()));
        assert_eq!(
            e.to_string(),
            "GROUP_ID_NOT_FOUND: The group id does not exist."
        );
        assert_eq!(KafkaError::new(999, None).to_string(), "error code 999");
    }
}
