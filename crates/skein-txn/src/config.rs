//! Coordinator configuration, with Kafka's broker defaults (`transaction.*`).

/// Limits and timeouts of the transaction coordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnConfig {
    /// `transaction.state.log.num.partitions`: how many `__transaction_state` partitions
    /// transactional ids are spread over.
    pub state_partitions: i32,
    /// `transaction.max.timeout.ms`: a larger `transaction.timeout.ms` in InitProducerId is
    /// INVALID_TRANSACTION_TIMEOUT.
    pub max_timeout_ms: i32,
    /// `transactional.id.expiration.ms`: an id idle this long (and not in a transaction) is
    /// forgotten (a tombstone is written).
    pub id_expiration_ms: i64,
    /// How long after a failed write of a Complete state the coordinator tries again
    /// (Kafka retries from its marker thread).
    pub retry_backoff_ms: i64,
    /// When true (the default), a successful EndTxn is answered only once every marker is
    /// written and the Complete state is persisted. Kafka answers as soon as the Prepare
    /// state is persisted and writes the markers afterwards; set false for that.
    pub end_txn_waits_for_markers: bool,
}

impl Default for TxnConfig {
    fn default() -> Self {
        TxnConfig {
            state_partitions: 50,
            max_timeout_ms: 900_000,
            id_expiration_ms: 7 * 24 * 60 * 60 * 1000,
            retry_backoff_ms: 100,
            end_txn_waits_for_markers: true,
        }
    }
}
