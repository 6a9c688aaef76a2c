//! Fetch from one partition leader: a sessionless (full) fetch of some partitions of one
//! topic, with the records of each partition decoded; and [`read_range`], which reads one
//! partition between two offsets through its leader.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use skein_protocol::messages::fetch_request::{FetchPartition, FetchRequest, FetchTopic};

use super::batch::{decode_batches_filtered, Decoded, InRecord};
use super::client::{backoff, is_retriable, Cluster, Connection, REQUEST_TIMEOUT, RETRIES};
use super::errors::{self, KafkaError};
use super::offsets::{list_offsets, EARLIEST};

/// The most one fetch response may carry.
const FETCH_MAX_BYTES: i32 = 50 * 1024 * 1024;
/// The most one partition may contribute to a fetch, unless its first batch is larger.
pub const PARTITION_MAX_BYTES: i32 = 1024 * 1024;
/// The largest partition byte limit a fetch grows to for an oversized batch.
pub const PARTITION_MAX_BYTES_CEILING: i32 = 64 * 1024 * 1024;
/// Fetches in a row that return nothing below the end offset before a range read stops (the
/// rest of the range was compacted away or truncated).
const EMPTY_FETCHES_BEFORE_END: u32 = 3;

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
    fetch_isolated(conn, topic, positions, max_wait_ms, false)
}

/// [`fetch`], read_committed when asked: the broker answers up to the last stable offset and
/// lists the aborted transactions, whose records are left out.
pub fn fetch_isolated(
    conn: &mut Connection,
    topic: &str,
    positions: &[FetchPosition],
    max_wait_ms: i32,
    read_committed: bool,
) -> Result<Vec<FetchedPartition>> {
    let request = FetchRequest {
        replica_id: -1,
        max_wait_ms,
        min_bytes: 1,
        max_bytes: FETCH_MAX_BYTES,
        isolation_level: i8::from(read_committed),
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
            let aborted: Option<Vec<(i64, i64)>> = read_committed.then(|| {
                p.aborted_transactions
                    .iter()
                    .flatten()
                    .map(|a| (a.producer_id, a.first_offset))
                    .collect()
            });
            let decoded = if p.error_code == 0 {
                decode_batches_filtered(bytes, aborted.as_deref()).with_context(|| {
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

/// Reads partition `partition` of `topic` from offset `start` up to (not including) `end`
/// through its leader, handing each data record to `visit` in offset order until `visit`
/// returns false. Transaction markers and offsets left empty by compaction are skipped; when
/// the log start moved past the position (retention, DeleteRecords), reading goes on from the
/// new log start. Returns the offset reading stopped at.
pub fn read_range(
    cluster: &mut Cluster,
    topic: &str,
    partition: i32,
    start: i64,
    end: i64,
    visit: impl FnMut(&InRecord) -> bool,
) -> Result<i64> {
    read_range_isolated(cluster, topic, partition, start, end, false, visit)
}

/// [`read_range`], read_committed when asked: records of aborted transactions are left out,
/// and reading stops at the last stable offset when that is below `end`.
pub fn read_range_isolated(
    cluster: &mut Cluster,
    topic: &str,
    partition: i32,
    start: i64,
    end: i64,
    read_committed: bool,
    mut visit: impl FnMut(&InRecord) -> bool,
) -> Result<i64> {
    let mut position = start;
    let mut max_bytes = PARTITION_MAX_BYTES;
    let mut leader = None;
    let mut failures = 0;
    let mut empty = 0;
    while position < end {
        let node = match leader {
            Some(n) => n,
            None => {
                let n = cluster.topic(topic)?.leader(partition).ok_or_else(|| {
                    anyhow::anyhow!("partition {partition} of {topic} has no leader")
                })?;
                leader = Some(n);
                n
            }
        };
        let conn = cluster.broker(node)?;
        let positions = [FetchPosition {
            partition,
            offset: position,
            max_bytes,
        }];
        let Some(f) = fetch_isolated(conn, topic, &positions, 0, read_committed)?
            .into_iter()
            .find(|f| f.partition == partition)
        else {
            bail!("the leader of partition {partition} of {topic} did not answer for it");
        };
        match f.error_code {
            errors::NONE => failures = 0,
            errors::OFFSET_OUT_OF_RANGE => {
                let starts = list_offsets(cluster, topic, &[partition], EARLIEST)?;
                match starts.get(&partition).copied().flatten() {
                    Some(s) if s > position => {
                        position = s;
                        continue;
                    }
                    // The log was truncated below the position: nothing more to read.
                    _ => return Ok(position),
                }
            }
            code if is_retriable(code) && failures < RETRIES => {
                failures += 1;
                backoff(failures);
                leader = None;
                continue;
            }
            code => {
                return Err(KafkaError::new(code, None))
                    .with_context(|| format!("partition {partition} of {topic}"))
            }
        }
        if f.batch_too_large {
            if max_bytes >= PARTITION_MAX_BYTES_CEILING {
                bail!(
                    "partition {partition} of {topic}: a batch at offset {position} is larger than {PARTITION_MAX_BYTES_CEILING} bytes"
                );
            }
            max_bytes = (max_bytes * 2).min(PARTITION_MAX_BYTES_CEILING);
            continue;
        }
        // No complete batch, or only batches before the position: no progress.
        let Some(next) = f.decoded.next_offset.filter(|n| *n > position) else {
            empty += 1;
            if empty >= EMPTY_FETCHES_BEFORE_END {
                return Ok(position);
            }
            backoff(empty);
            continue;
        };
        empty = 0;
        for r in &f.decoded.records {
            if r.offset < position {
                continue;
            }
            if r.offset >= end {
                return Ok(end);
            }
            position = r.offset + 1;
            if !visit(r) {
                return Ok(position);
            }
        }
        position = position.max(next);
    }
    Ok(position.min(end))
}
