//! Kafka error codes (the numbers of Kafka's `Errors` enum), as data: brokers and the
//! controller put them in responses. Shared by every crate that answers a request.

use std::fmt;

/// A Kafka protocol error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ErrorCode(pub i16);

impl ErrorCode {
    pub const UNKNOWN_SERVER_ERROR: ErrorCode = ErrorCode(-1);
    pub const NONE: ErrorCode = ErrorCode(0);
    pub const OFFSET_OUT_OF_RANGE: ErrorCode = ErrorCode(1);
    pub const CORRUPT_MESSAGE: ErrorCode = ErrorCode(2);
    pub const UNKNOWN_TOPIC_OR_PARTITION: ErrorCode = ErrorCode(3);
    pub const INVALID_FETCH_SIZE: ErrorCode = ErrorCode(4);
    pub const LEADER_NOT_AVAILABLE: ErrorCode = ErrorCode(5);
    pub const NOT_LEADER_OR_FOLLOWER: ErrorCode = ErrorCode(6);
    pub const REQUEST_TIMED_OUT: ErrorCode = ErrorCode(7);
    pub const MESSAGE_TOO_LARGE: ErrorCode = ErrorCode(10);
    pub const COORDINATOR_LOAD_IN_PROGRESS: ErrorCode = ErrorCode(14);
    pub const COORDINATOR_NOT_AVAILABLE: ErrorCode = ErrorCode(15);
    pub const NOT_COORDINATOR: ErrorCode = ErrorCode(16);
    pub const INVALID_TOPIC_EXCEPTION: ErrorCode = ErrorCode(17);
    pub const RECORD_LIST_TOO_LARGE: ErrorCode = ErrorCode(18);
    pub const NOT_ENOUGH_REPLICAS: ErrorCode = ErrorCode(19);
    pub const NOT_ENOUGH_REPLICAS_AFTER_APPEND: ErrorCode = ErrorCode(20);
    pub const INVALID_REQUIRED_ACKS: ErrorCode = ErrorCode(21);
    pub const TOPIC_AUTHORIZATION_FAILED: ErrorCode = ErrorCode(29);
    pub const GROUP_AUTHORIZATION_FAILED: ErrorCode = ErrorCode(30);
    pub const CLUSTER_AUTHORIZATION_FAILED: ErrorCode = ErrorCode(31);
    pub const INVALID_TIMESTAMP: ErrorCode = ErrorCode(32);
    pub const UNSUPPORTED_VERSION: ErrorCode = ErrorCode(35);
    pub const TOPIC_ALREADY_EXISTS: ErrorCode = ErrorCode(36);
    pub const INVALID_PARTITIONS: ErrorCode = ErrorCode(37);
    pub const INVALID_REPLICATION_FACTOR: ErrorCode = ErrorCode(38);
    pub const INVALID_REPLICA_ASSIGNMENT: ErrorCode = ErrorCode(39);
    pub const INVALID_CONFIG: ErrorCode = ErrorCode(40);
    pub const NOT_CONTROLLER: ErrorCode = ErrorCode(41);
    pub const INVALID_REQUEST: ErrorCode = ErrorCode(42);
    pub const UNSUPPORTED_FOR_MESSAGE_FORMAT: ErrorCode = ErrorCode(43);
    pub const POLICY_VIOLATION: ErrorCode = ErrorCode(44);
    pub const OUT_OF_ORDER_SEQUENCE_NUMBER: ErrorCode = ErrorCode(45);
    pub const DUPLICATE_SEQUENCE_NUMBER: ErrorCode = ErrorCode(46);
    pub const INVALID_PRODUCER_EPOCH: ErrorCode = ErrorCode(47);
    pub const INVALID_TXN_STATE: ErrorCode = ErrorCode(48);
    pub const CONCURRENT_TRANSACTIONS: ErrorCode = ErrorCode(51);
    pub const TRANSACTION_COORDINATOR_FENCED: ErrorCode = ErrorCode(52);
    pub const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: ErrorCode = ErrorCode(53);
    pub const SECURITY_DISABLED: ErrorCode = ErrorCode(54);
    pub const OPERATION_NOT_ATTEMPTED: ErrorCode = ErrorCode(55);
    pub const KAFKA_STORAGE_ERROR: ErrorCode = ErrorCode(56);
    pub const UNKNOWN_PRODUCER_ID: ErrorCode = ErrorCode(59);
    pub const FENCED_LEADER_EPOCH: ErrorCode = ErrorCode(74);
    pub const UNKNOWN_LEADER_EPOCH: ErrorCode = ErrorCode(75);
    pub const UNSUPPORTED_COMPRESSION_TYPE: ErrorCode = ErrorCode(76);
    pub const STALE_BROKER_EPOCH: ErrorCode = ErrorCode(77);
    pub const OFFSET_NOT_AVAILABLE: ErrorCode = ErrorCode(78);
    pub const PREFERRED_LEADER_NOT_AVAILABLE: ErrorCode = ErrorCode(80);
    pub const ELIGIBLE_LEADERS_NOT_AVAILABLE: ErrorCode = ErrorCode(83);
    pub const ELECTION_NOT_NEEDED: ErrorCode = ErrorCode(84);
    pub const NO_REASSIGNMENT_IN_PROGRESS: ErrorCode = ErrorCode(85);
    pub const INVALID_RECORD: ErrorCode = ErrorCode(87);
    pub const INVALID_UPDATE_VERSION: ErrorCode = ErrorCode(95);
    pub const PRODUCER_FENCED: ErrorCode = ErrorCode(90);
    pub const UNKNOWN_TOPIC_ID: ErrorCode = ErrorCode(100);
    pub const DUPLICATE_BROKER_REGISTRATION: ErrorCode = ErrorCode(101);
    pub const INVALID_CLUSTER_ID: ErrorCode = ErrorCode(104);
    pub const INELIGIBLE_REPLICA: ErrorCode = ErrorCode(107);

    pub fn code(self) -> i16 {
        self.0
    }

    pub fn is_ok(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match *self {
            ErrorCode::UNKNOWN_SERVER_ERROR => "UNKNOWN_SERVER_ERROR",
            ErrorCode::NONE => "NONE",
            ErrorCode::OFFSET_OUT_OF_RANGE => "OFFSET_OUT_OF_RANGE",
            ErrorCode::CORRUPT_MESSAGE => "CORRUPT_MESSAGE",
            ErrorCode::UNKNOWN_TOPIC_OR_PARTITION => "UNKNOWN_TOPIC_OR_PARTITION",
            ErrorCode::INVALID_FETCH_SIZE => "INVALID_FETCH_SIZE",
            ErrorCode::LEADER_NOT_AVAILABLE => "LEADER_NOT_AVAILABLE",
            ErrorCode::NOT_LEADER_OR_FOLLOWER => "NOT_LEADER_OR_FOLLOWER",
            ErrorCode::REQUEST_TIMED_OUT => "REQUEST_TIMED_OUT",
            ErrorCode::MESSAGE_TOO_LARGE => "MESSAGE_TOO_LARGE",
            ErrorCode::COORDINATOR_NOT_AVAILABLE => "COORDINATOR_NOT_AVAILABLE",
            ErrorCode::NOT_COORDINATOR => "NOT_COORDINATOR",
            ErrorCode::COORDINATOR_LOAD_IN_PROGRESS => "COORDINATOR_LOAD_IN_PROGRESS",
            ErrorCode::INVALID_TOPIC_EXCEPTION => "INVALID_TOPIC_EXCEPTION",
            ErrorCode::RECORD_LIST_TOO_LARGE => "RECORD_LIST_TOO_LARGE",
            ErrorCode::NOT_ENOUGH_REPLICAS => "NOT_ENOUGH_REPLICAS",
            ErrorCode::NOT_ENOUGH_REPLICAS_AFTER_APPEND => "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
            ErrorCode::INVALID_REQUIRED_ACKS => "INVALID_REQUIRED_ACKS",
            ErrorCode::TOPIC_AUTHORIZATION_FAILED => "TOPIC_AUTHORIZATION_FAILED",
            ErrorCode::GROUP_AUTHORIZATION_FAILED => "GROUP_AUTHORIZATION_FAILED",
            ErrorCode::CLUSTER_AUTHORIZATION_FAILED => "CLUSTER_AUTHORIZATION_FAILED",
            ErrorCode::SECURITY_DISABLED => "SECURITY_DISABLED",
            ErrorCode::INVALID_TIMESTAMP => "INVALID_TIMESTAMP",
            ErrorCode::UNSUPPORTED_VERSION => "UNSUPPORTED_VERSION",
            ErrorCode::TOPIC_ALREADY_EXISTS => "TOPIC_ALREADY_EXISTS",
            ErrorCode::INVALID_PARTITIONS => "INVALID_PARTITIONS",
            ErrorCode::INVALID_REPLICATION_FACTOR => "INVALID_REPLICATION_FACTOR",
            ErrorCode::INVALID_REPLICA_ASSIGNMENT => "INVALID_REPLICA_ASSIGNMENT",
            ErrorCode::NO_REASSIGNMENT_IN_PROGRESS => "NO_REASSIGNMENT_IN_PROGRESS",
            ErrorCode::INVALID_CONFIG => "INVALID_CONFIG",
            ErrorCode::NOT_CONTROLLER => "NOT_CONTROLLER",
            ErrorCode::INVALID_REQUEST => "INVALID_REQUEST",
            ErrorCode::UNSUPPORTED_FOR_MESSAGE_FORMAT => "UNSUPPORTED_FOR_MESSAGE_FORMAT",
            ErrorCode::POLICY_VIOLATION => "POLICY_VIOLATION",
            ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER => "OUT_OF_ORDER_SEQUENCE_NUMBER",
            ErrorCode::DUPLICATE_SEQUENCE_NUMBER => "DUPLICATE_SEQUENCE_NUMBER",
            ErrorCode::INVALID_PRODUCER_EPOCH => "INVALID_PRODUCER_EPOCH",
            ErrorCode::INVALID_TXN_STATE => "INVALID_TXN_STATE",
            ErrorCode::CONCURRENT_TRANSACTIONS => "CONCURRENT_TRANSACTIONS",
            ErrorCode::TRANSACTION_COORDINATOR_FENCED => "TRANSACTION_COORDINATOR_FENCED",
            ErrorCode::OPERATION_NOT_ATTEMPTED => "OPERATION_NOT_ATTEMPTED",
            ErrorCode::PRODUCER_FENCED => "PRODUCER_FENCED",
            ErrorCode::TRANSACTIONAL_ID_AUTHORIZATION_FAILED => {
                "TRANSACTIONAL_ID_AUTHORIZATION_FAILED"
            }
            ErrorCode::KAFKA_STORAGE_ERROR => "KAFKA_STORAGE_ERROR",
            ErrorCode::UNKNOWN_PRODUCER_ID => "UNKNOWN_PRODUCER_ID",
            ErrorCode::FENCED_LEADER_EPOCH => "FENCED_LEADER_EPOCH",
            ErrorCode::UNKNOWN_LEADER_EPOCH => "UNKNOWN_LEADER_EPOCH",
            ErrorCode::UNSUPPORTED_COMPRESSION_TYPE => "UNSUPPORTED_COMPRESSION_TYPE",
            ErrorCode::STALE_BROKER_EPOCH => "STALE_BROKER_EPOCH",
            ErrorCode::OFFSET_NOT_AVAILABLE => "OFFSET_NOT_AVAILABLE",
            ErrorCode::PREFERRED_LEADER_NOT_AVAILABLE => "PREFERRED_LEADER_NOT_AVAILABLE",
            ErrorCode::ELIGIBLE_LEADERS_NOT_AVAILABLE => "ELIGIBLE_LEADERS_NOT_AVAILABLE",
            ErrorCode::ELECTION_NOT_NEEDED => "ELECTION_NOT_NEEDED",
            ErrorCode::INVALID_RECORD => "INVALID_RECORD",
            ErrorCode::INVALID_UPDATE_VERSION => "INVALID_UPDATE_VERSION",
            ErrorCode::UNKNOWN_TOPIC_ID => "UNKNOWN_TOPIC_ID",
            ErrorCode::DUPLICATE_BROKER_REGISTRATION => "DUPLICATE_BROKER_REGISTRATION",
            ErrorCode::INVALID_CLUSTER_ID => "INVALID_CLUSTER_ID",
            ErrorCode::INELIGIBLE_REPLICA => "INELIGIBLE_REPLICA",
            ErrorCode(other) => return write!(f, "error code {other}"),
        };
        f.write_str(name)
    }
}

/// A refused request: the error code and the message that versions with an error message
/// field carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
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
