//! Fetch from one partition leader: a sessionless (full) fetch of some partitions of one
//! topic, with the records of each partition decoded.

use std::time::Duration;

use anyhow::{Context, Result};
use skein_protocol::messages::fetch_request::{FetchPartition, FetchRequest, FetchTopic};

use super::batch::{decode_batches, Decoded};
use super::client::{Connection, REQUEST_TIMEOUT};
use super::errors::KafkaError;

/// The most one fetch response may carry.
const FETCH_MAX_BYTES: i32 = 50 * 1024 * 1024;
/// The most one partition may contribute to a fetch, unless its first batch is larger.
pub const PARTITION_MAX_BYTES: i32 = 1024 * 1024;

/// Where to read one partition from.
#[derive(Debug, Clone, Copy)]
pub struct FetchPosition {
    pub partition: i32,
    pub offset: i64,
    pub max_bytes: i32,
}

/// One partition's part of a fetch response.
#[derive(Debug)]
pub struct FetchedPartition {
    pub partition: i32,
    pub error_code: i16,
    /// True when the broker sent bytes but no complete batch: the next batch is larger than
    /// the partition's byte limit.
    pub batch_too_large: bool,
    pub decoded: Decoded,
}

/// Fetches `positions` of `topic` from the connection's broker, waiting up to `max_wait_ms`
/// for data to arrive.
pub fn fetch(
    conn: &mut Connection,
    topic: &str,
    positions: &[FetchPosition],
    max_wait_ms: i32,
) -> Result<Vec<FetchedPartition>> {
    let request = FetchRequest {
        replica_id: -1,
        max_wait_ms,
        min_bytes: 1,
        max_bytes: FETCH_MAX_BYTES,
        isolation_level: 0,
        session_id: 0,
        session_epoch: -1,
        topics: vec![FetchTopic {
            topic: topic.to_owned(),
            partitions: positions
                .iter()
                .map(|p| FetchPartition {
                    partition: p.partition,
                    current_leader_epoch: -1,
                    fetch_offset: p.offset,
                    last_fetched_epoch: -1,
                    log_start_offset: -1,
                    partition_max_bytes: p.max_bytes,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let timeout = REQUEST_TIMEOUT + Duration::from_millis(max_wait_ms.max(0) as u64);
    let response = conn.send_with_timeout(request, timeout)?;
    KafkaError::check(response.error_code, None).context("Fetch")?;
    let mut out = Vec::new();
    for t in response.responses.into_iter().filter(|t| t.topic == topic) {
        for p in t.partitions {
            let bytes = p.records.as_deref().unwrap_or(&[]);
            let decoded = if p.error_code == 0 {
                decode_batches(bytes).with_context(|| {
                    format!("records of partition {} of {topic}", p.partition_index)
                })?
            } else {
                Decoded::default()
            };
            out.push(FetchedPartition {
                partition: p.partition_index,
                error_code: p.error_code,
                batch_too_large: !bytes.is_empty() && decoded.next_offset.is_none(),
                decoded,
            });
        }
    }
    Ok(out)
}
