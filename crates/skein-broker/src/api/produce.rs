//! Produce: validate each partition's record batch, check idempotent sequences, append, and
//! answer once the write is as durable as the acks asked for.
//!
//! acks=0 gets no response; acks=1 is answered from the page cache; acks=-1 waits for the
//! group-commit fsync (unless `skein.acks.all.fsync=false`).

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use skein_log::SyncHandle;
use skein_protocol::messages::produce_request::ProduceRequest;
use skein_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse,
    ProduceResponse, TopicProduceResponse,
};
use skein_protocol::records::{self, BatchHeader, BatchIter, Compression};
use skein_protocol::ResponseBody;
use tokio::time::Instant;

use super::{Reply, RequestContext};
use crate::broker::{Broker, Partition};
use crate::config::EffectiveTopicConfig;
use crate::error::{ApiError, ErrorCode};
use crate::partition::{AppendOptions, Appended};

/// The first Produce version that carries record batch v2 (older ones use message sets).
const FIRST_BATCH_V2_VERSION: i16 = 3;
/// The first Produce version whose clients may send zstd (KIP-110).
const FIRST_ZSTD_VERSION: i16 = 7;
/// The first Produce version whose clients know INVALID_RECORD.
const FIRST_INVALID_RECORD_VERSION: i16 = 8;

fn invalid_record(version: i16, message: impl Into<String>) -> ApiError {
    let code = if version >= FIRST_INVALID_RECORD_VERSION {
        ErrorCode::INVALID_RECORD
    } else {
        ErrorCode::CORRUPT_MESSAGE
    };
    ApiError::new(code, message)
}

/// Checks one partition's records: exactly one valid v2 batch. Returns its header.
fn validate(
    version: i16,
    records: &[u8],
    config: &EffectiveTopicConfig,
) -> Result<BatchHeader, ApiError> {
    let mut iter = BatchIter::new(records);
    let (header, range) = match iter.next() {
        None => {
            return Err(invalid_record(
                version,
                "The produce request carries no records.",
            ))
        }
        Some(Err(e)) => {
            return Err(ApiError::new(
                ErrorCode::CORRUPT_MESSAGE,
                format!("Corrupt record batch: {e}"),
            ))
        }
        Some(Ok(first)) => first,
    };
    if range.end != records.len() {
        return Err(invalid_record(
            version,
            "A produce request must carry exactly one record batch per partition.",
        ));
    }
    if header.total_len() > config.max_message_bytes {
        return Err(ApiError::new(
            ErrorCode::MESSAGE_TOO_LARGE,
            format!(
                "The record batch is {} bytes, larger than the topic's max.message.bytes of {}.",
                header.total_len(),
                config.max_message_bytes
            ),
        ));
    }
    records::verify_crc(records).map_err(|e| {
        ApiError::new(
            ErrorCode::CORRUPT_MESSAGE,
            format!("Corrupt record batch: {e}"),
        )
    })?;
    if header.compression_code() > 4 {
        return Err(ApiError::new(
            ErrorCode::CORRUPT_MESSAGE,
            format!("Unknown compression codec {}.", header.compression_code()),
        ));
    }
    if header.compression() == Compression::Zstd && version < FIRST_ZSTD_VERSION {
        return Err(ApiError::new(
            ErrorCode::UNSUPPORTED_COMPRESSION_TYPE,
            "Produce requests before version 7 cannot carry zstd-compressed batches.",
        ));
    }
    if header.records_count <= 0
        || header.records_count as i64 != header.last_offset_delta as i64 + 1
    {
        return Err(invalid_record(
            version,
            format!(
                "The batch header says {} records but its last offset delta is {}.",
                header.records_count, header.last_offset_delta
            ),
        ));
    }
    if header.is_control() {
        return Err(invalid_record(
            version,
            "Producers may not write control batches.",
        ));
    }
    if header.is_transactional() && header.producer_id < 0 {
        return Err(invalid_record(
            version,
            "A transactional batch must carry a producer id.",
        ));
    }
    if header.producer_id >= 0 && (header.base_sequence < 0 || header.producer_epoch < 0) {
        return Err(invalid_record(
            version,
            "An idempotent batch must carry a sequence number and an epoch.",
        ));
    }
    Ok(header)
}

/// A partition write that failed: the error and, for an error about individual records
/// (timestamps out of range), the indexes of those records in the batch, which Kafka
/// reports as `record_errors`.
struct Failure {
    error: ApiError,
    records: Vec<i32>,
}

impl From<ApiError> for Failure {
    fn from(error: ApiError) -> Failure {
        Failure {
            error,
            records: Vec::new(),
        }
    }
}

/// `message.timestamp.before.max.ms` / `after.max.ms` (CreateTime topics): a batch with a
/// record out of range is refused with INVALID_TIMESTAMP, naming the records at fault.
fn check_timestamps(
    batch: &[u8],
    header: &BatchHeader,
    config: &EffectiveTopicConfig,
    now: i64,
) -> Result<(), Failure> {
    if config.log_append_time {
        return Ok(());
    }
    let newest_allowed = now.saturating_add(config.timestamp_after_max_ms);
    let oldest_allowed = now.saturating_sub(config.timestamp_before_max_ms);
    let bad = |ts: i64| ts >= 0 && (ts > newest_allowed || ts < oldest_allowed);
    // The batch's first and largest timestamps bound all of its records.
    let Some(ts) = [header.base_timestamp, header.max_timestamp]
        .into_iter()
        .find(|ts| bad(*ts))
    else {
        return Ok(());
    };
    // Uncompressed batches name each record out of range; otherwise the first record.
    let records = match header.compression() {
        Compression::None => records::decode_records(batch)
            .map(|rs| {
                (0..)
                    .zip(rs)
                    .filter(|(_, r)| bad(header.base_timestamp.saturating_add(r.timestamp_delta)))
                    .map(|(i, _)| i)
                    .collect::<Vec<i32>>()
            })
            .ok()
            .filter(|v| !v.is_empty()),
        _ => None,
    }
    .unwrap_or_else(|| vec![0]);
    Err(Failure {
        error: ApiError::new(
            ErrorCode::INVALID_TIMESTAMP,
            format!(
                "Timestamp {ts} of the batch is out of range: it must be within [{oldest_allowed}, {newest_allowed}] (message.timestamp.before.max.ms / after.max.ms)."
            ),
        ),
        records,
    })
}

/// The most bytes a batch for a compacted topic may expand to when its keys are checked.
const COMPACTED_DECOMPRESSED_MAX: usize = 128 * 1024 * 1024;

/// A compacted topic keeps the newest record of each key, so a record without one could never
/// be compacted away: like Kafka (KIP-467), such a batch is refused with INVALID_RECORD and a
/// record error for each keyless record, so that clients fail those records with the error and
/// the rest of the batch as collateral.
fn check_keys(version: i16, batch: &[u8], count: i32) -> Result<(), Failure> {
    let corrupt = |e: records::RecordsError| {
        ApiError::new(
            ErrorCode::CORRUPT_MESSAGE,
            format!("Corrupt record batch: {e}"),
        )
    };
    let body = records::records_section(batch, COMPACTED_DECOMPRESSED_MAX).map_err(corrupt)?;
    let decoded = records::decode_record_section(&body, count).map_err(corrupt)?;
    let keyless: Vec<i32> = (0..)
        .zip(&decoded)
        .filter(|(_, r)| r.key.is_none())
        .map(|(i, _)| i)
        .collect();
    if keyless.is_empty() {
        return Ok(());
    }
    Err(Failure {
        error: invalid_record(
            version,
            "Compacted topic cannot accept message without key (cleanup.policy=compact).",
        ),
        records: keyless,
    })
}

/// Validates and appends one partition's records as its leader. `acks` is the request's.
fn write(
    broker: &Broker,
    partition: &Partition,
    version: i16,
    records: Bytes,
    config: &EffectiveTopicConfig,
    (acks, transactional_id): (i16, Option<&str>),
) -> Result<Appended, Failure> {
    let now = broker.now_ms();
    let acks_all = acks == -1;
    let header = validate(version, &records, config)?;
    if let (true, Some(id)) = (header.is_transactional(), transactional_id) {
        verify_transaction(broker, id, partition, &header)?;
    }
    check_timestamps(&records, &header, config, now)?;
    if config.compacted {
        check_keys(version, &records, header.records_count)?;
    }
    let batch = records
        .try_into_mut()
        .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
    Ok(partition.append_as_leader(
        broker.node_id(),
        batch,
        &header,
        now,
        AppendOptions {
            log_append_time: config.log_append_time,
            wants_sync: acks_all && broker.config.acks_all_fsync,
            acks_all,
            min_insync: config.min_insync_replicas,
        },
    )?)
}

/// Whether any partition's records start with a transactional batch.
fn has_transactional_batch(req: &ProduceRequest) -> bool {
    req.topic_data
        .iter()
        .flat_map(|t| t.partition_data.iter())
        .filter_map(|p| p.records.as_deref())
        .filter_map(|r| BatchHeader::parse(r).ok())
        .any(|h| h.is_transactional())
}

/// KIP-890 part 1: before a transactional batch that opens a transaction on this partition
/// is written, the transaction coordinator is asked (AddPartitionsToTxn, verify only)
/// whether `transactional_id` added the partition to its ongoing transaction; if not, the
/// batch is refused (INVALID_TXN_STATE), so a late or hanging write cannot start a
/// transaction the coordinator does not know. Later batches of the same transaction pass
/// without asking. A coordinator on another broker is asked over the network while this
/// request's handling waits (the connection's later requests must not overtake it).
fn verify_transaction(
    broker: &Broker,
    transactional_id: &str,
    partition: &Partition,
    header: &BatchHeader,
) -> Result<(), ApiError> {
    let needs_verification = partition
        .lock()
        .producers
        .opens_txn(header.producer_id, header.producer_epoch);
    if !needs_verification {
        return Ok(());
    }
    let verify = broker.verify_txn_partition(
        transactional_id,
        header.producer_id,
        header.producer_epoch,
        &partition.topic,
        partition.index,
    );
    use tokio::runtime::{Handle, RuntimeFlavor};
    let result = match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| h.block_on(verify))
        }
        // A single-threaded runtime (some tests) cannot block on a peer; the local check
        // never suspends, so it is polled to completion in place.
        _ => match poll_once(verify) {
            Some(r) => r,
            None => Err(ErrorCode::NOT_ENOUGH_REPLICAS),
        },
    };
    result.map_err(|code| {
        ApiError::new(
            code,
            format!(
                "The transaction coordinator does not know producer {} (epoch {}) to have added this partition to its transaction.",
                header.producer_id, header.producer_epoch
            ),
        )
    })
}

/// Polls a future once; its output if it completed without waiting.
fn poll_once<F: std::future::Future>(f: F) -> Option<F::Output> {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

fn error_response(index: i32, version: i16, e: ApiError) -> PartitionProduceResponse {
    failure_response(index, version, e.into(), -1)
}

/// The answer for a failed partition. `log_start_offset` is the partition's when the error
/// came from checking the records against the log (as in Kafka), else -1.
fn failure_response(
    index: i32,
    version: i16,
    f: Failure,
    log_start_offset: i64,
) -> PartitionProduceResponse {
    let e = f.error;
    let record_errors = if e.code == ErrorCode::INVALID_RECORD && f.records.is_empty() {
        vec![BatchIndexAndErrorMessage {
            batch_index: 0,
            batch_index_error_message: Some(e.message.clone()),
            ..Default::default()
        }]
    } else {
        f.records
            .iter()
            .map(|i| BatchIndexAndErrorMessage {
                batch_index: *i,
                batch_index_error_message: Some(e.message.clone()),
                ..Default::default()
            })
            .collect()
    };
    let _ = version;
    PartitionProduceResponse {
        index,
        error_code: e.code.code(),
        base_offset: -1,
        log_append_time_ms: -1,
        log_start_offset,
        record_errors,
        error_message: Some(e.message),
        ..Default::default()
    }
}

/// Like Kafka, an answer refusing records carries the partition's log start offset, except
/// for errors about the partition or the request's bytes (unknown partition, too large,
/// corrupt, storage failure), which carry -1.
fn log_start_for_error(partition: &Partition, code: ErrorCode) -> i64 {
    let without = [
        ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
        ErrorCode::NOT_LEADER_OR_FOLLOWER,
        ErrorCode::MESSAGE_TOO_LARGE,
        ErrorCode::RECORD_LIST_TOO_LARGE,
        ErrorCode::CORRUPT_MESSAGE,
        ErrorCode::KAFKA_STORAGE_ERROR,
    ];
    if without.contains(&code) {
        return -1;
    }
    partition
        .lock()
        .log
        .as_ref()
        .map_or(-1, |l| l.log_start_offset())
}

/// KIP-951 (Produce v10+; older versions do not encode the fields): partitions answered
/// NOT_LEADER_OR_FOLLOWER carry the current leader, and the response those leaders' endpoints.
fn add_leader_hints(broker: &Broker, listener: &str, resp: &mut ProduceResponse) {
    let mut leaders = std::collections::BTreeSet::new();
    for t in &mut resp.responses {
        let topic = broker.topic(&t.name);
        for p in &mut t.partition_responses {
            if p.error_code != ErrorCode::NOT_LEADER_OR_FOLLOWER.code() {
                continue;
            }
            if let Some((leader_id, leader_epoch)) = super::known_leader(topic.as_ref(), p.index) {
                p.current_leader = LeaderIdAndEpoch {
                    leader_id,
                    leader_epoch,
                    ..Default::default()
                };
                leaders.insert(leader_id);
            }
        }
    }
    resp.node_endpoints = leaders
        .into_iter()
        .filter_map(|id| broker.broker_endpoint_on(listener, id))
        .map(|b| NodeEndpoint {
            node_id: b.id,
            host: b.host,
            port: b.port,
            rack: b.rack,
            ..Default::default()
        })
        .collect();
}

pub fn handle(broker: &Arc<Broker>, ctx: &RequestContext, req: ProduceRequest) -> Reply {
    let version = ctx.api_version;
    let acks = req.acks;
    let request_error = if version < FIRST_BATCH_V2_VERSION {
        Some(ApiError::new(
            ErrorCode::UNSUPPORTED_VERSION,
            "Produce v0-v2 (the old message format) is not supported; use a client that sends record batch v2 (Produce v3+).",
        ))
    } else if !matches!(acks, -1..=1) {
        Some(ApiError::new(
            ErrorCode::INVALID_REQUIRED_ACKS,
            format!("acks must be -1, 0 or 1, not {acks}."),
        ))
    } else if req.transactional_id.is_none() && has_transactional_batch(&req) {
        // As Kafka: transactional records need the request's transactional id.
        Some(ApiError::new(
            ErrorCode::TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
            "Transactional records need the request's transactional id.",
        ))
    } else {
        None
    };
    let mut resp = ProduceResponse::default();
    let mut syncs: Vec<(usize, usize, Arc<Partition>, SyncHandle)> = Vec::new();
    // acks=all answers wait for the high watermark to pass each batch's last offset.
    let mut commits: Vec<Commit> = Vec::new();
    let mut appended = false;
    for (ti, t) in req.topic_data.into_iter().enumerate() {
        let topic = broker.topic(&t.name);
        let mut tr = TopicProduceResponse {
            name: t.name,
            ..Default::default()
        };
        for (pi, p) in t.partition_data.into_iter().enumerate() {
            let partition = topic.as_ref().and_then(|t| t.partition(p.index));
            let result = match (&request_error, &topic) {
                (Some(e), _) => Err(Failure::from(e.clone())),
                (None, None) => Err(Failure::from(ApiError::new(
                    ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                    "This server does not host this topic-partition.",
                ))),
                (None, Some(topic)) => match &partition {
                    None => Err(Failure::from(ApiError::new(
                        ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                        "This server does not host this topic-partition.",
                    ))),
                    Some(partition) => {
                        let config = topic.effective();
                        let records = p.records.unwrap_or_default();
                        let txn_id = req.transactional_id.as_deref();
                        write(broker, partition, version, records, &config, (acks, txn_id))
                    }
                },
            };
            tr.partition_responses.push(match result {
                Ok(w) => {
                    appended = true;
                    if w.records > 0 {
                        broker
                            .metrics()
                            .observe_produced(&tr.name, w.bytes, w.records);
                    }
                    if let Some(partition) = &partition {
                        if acks == -1 && partition.high_watermark() <= w.last_offset {
                            commits.push(Commit {
                                ti,
                                pi,
                                partition: partition.clone(),
                                last_offset: w.last_offset,
                                leader_epoch: w.leader_epoch,
                            });
                        }
                    }
                    if let (Some(handle), Some(partition)) = (w.sync, partition) {
                        syncs.push((ti, pi, partition, handle));
                    }
                    PartitionProduceResponse {
                        index: p.index,
                        error_code: 0,
                        base_offset: w.base_offset,
                        log_append_time_ms: w.log_append_time_ms,
                        log_start_offset: w.log_start_offset,
                        ..Default::default()
                    }
                }
                Err(f) => {
                    let log_start = match (&request_error, &partition) {
                        (None, Some(partition)) => log_start_for_error(partition, f.error.code),
                        _ => -1,
                    };
                    failure_response(p.index, version, f, log_start)
                }
            });
        }
        resp.responses.push(tr);
    }
    add_leader_hints(broker, &ctx.connection.listener, &mut resp);
    if appended {
        broker.data_arrived.notify_waiters();
    }
    if acks != -1 && !syncs.is_empty() {
        // acks=0/1 on a replicated partition: answered now, but the high watermark counts
        // the leader's log only once fsynced, so fsync promptly (group commit) in the
        // background.
        let broker = broker.clone();
        let syncs = std::mem::take(&mut syncs);
        tokio::spawn(async move {
            for (_, _, partition, handle) in syncs {
                let durable = handle.end_offset();
                match broker.syncer().sync(partition.key(), handle).await {
                    Ok(_) => {
                        if partition.mark_durable(durable, min_insync_of(&broker, &partition)) {
                            broker.data_arrived.notify_waiters();
                        }
                    }
                    Err(e) => tracing::error!("fsync failed: {e}"),
                }
            }
        });
    }
    if acks == 0 {
        return Reply::Nothing;
    }
    if syncs.is_empty() && commits.is_empty() {
        return Reply::Now(ResponseBody::Produce(resp));
    }
    let broker = broker.clone();
    let timeout = Duration::from_millis(req.timeout_ms.max(0) as u64);
    Reply::Later(Box::pin(async move {
        for (ti, pi, partition, handle) in syncs {
            let durable = handle.end_offset();
            let result = broker.syncer().sync(partition.key(), handle).await;
            if result.is_ok() && partition.mark_durable(durable, min_insync_of(&broker, &partition))
            {
                broker.data_arrived.notify_waiters();
            }
            if let Err(e) = result {
                tracing::error!("fsync failed: {e}");
                let pr = &mut resp.responses[ti].partition_responses[pi];
                *pr = error_response(
                    pr.index,
                    version,
                    ApiError::new(
                        ErrorCode::KAFKA_STORAGE_ERROR,
                        "The broker could not sync to disk.",
                    ),
                );
            }
        }
        wait_for_commits(&broker, version, &mut resp, commits, timeout).await;
        ResponseBody::Produce(resp)
    }))
}

fn min_insync_of(broker: &Broker, partition: &Partition) -> usize {
    broker
        .topic(&partition.topic)
        .map_or(1, |t| t.effective().min_insync_replicas)
}

/// An acks=all batch waiting for the high watermark.
struct Commit {
    ti: usize,
    pi: usize,
    partition: Arc<Partition>,
    last_offset: i64,
    leader_epoch: i32,
}

/// Waits until the high watermark passes every batch (the ISR has it), answering
/// NOT_LEADER_OR_FOLLOWER for a partition whose leadership moved meanwhile and
/// REQUEST_TIMED_OUT for one still waiting after `timeout` (as Kafka's purgatory does; the
/// batch stays in the log and may still be committed).
async fn wait_for_commits(
    broker: &Broker,
    version: i16,
    resp: &mut ProduceResponse,
    mut commits: Vec<Commit>,
    timeout: Duration,
) {
    let deadline = Instant::now() + timeout;
    let node = broker.node_id();
    loop {
        let notified = broker.data_arrived.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        commits.retain(|c| {
            let pr = &mut resp.responses[c.ti].partition_responses[c.pi];
            if pr.error_code != 0 {
                return false; // its fsync failed
            }
            let a = c.partition.assignment();
            if a.leader != node || a.leader_epoch != c.leader_epoch {
                *pr = error_response(
                    pr.index,
                    version,
                    ApiError::new(
                        ErrorCode::NOT_LEADER_OR_FOLLOWER,
                        "Leadership moved before the write was replicated; it may or may not be committed.",
                    ),
                );
                return false;
            }
            c.partition.high_watermark() <= c.last_offset
        });
        if commits.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            for c in commits {
                let pr = &mut resp.responses[c.ti].partition_responses[c.pi];
                *pr = error_response(
                    pr.index,
                    version,
                    ApiError::new(
                        ErrorCode::REQUEST_TIMED_OUT,
                        "The in-sync replicas did not all confirm the write within the request timeout.",
                    ),
                );
            }
            return;
        }
        tokio::select! {
            _ = &mut notified => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}
