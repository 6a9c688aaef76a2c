//! Fetch (v4+): read stored batches, long-polling until `min_bytes` arrive or `max_wait_ms`
//! passes. Appends wake waiting fetches at once. Fetch sessions are declined (session id 0),
//! which every client accepts by sending full fetches.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use skein_log::LogError;
use skein_protocol::messages::fetch_request::FetchRequest;
use skein_protocol::messages::fetch_response::{
    FetchResponse, FetchableTopicResponse, PartitionData,
};
use skein_protocol::ResponseBody;
use tokio::time::Instant;

use super::metadata::LEADER_EPOCH;
use crate::broker::{Broker, Topic};
use crate::error::ErrorCode;

/// Fetch v13 replaced topic names with topic ids.
const FIRST_TOPIC_ID_VERSION: i16 = 13;
const READ_COMMITTED: i8 = 1;
const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;
const INVALID_FETCH_SESSION_EPOCH: i16 = 71;

/// Checks the leader epoch a client believes in against ours.
pub fn check_leader_epoch(current_leader_epoch: i32) -> ErrorCode {
    use std::cmp::Ordering;
    // -1 means the client does not know the epoch: no check.
    match current_leader_epoch.cmp(&LEADER_EPOCH) {
        _ if current_leader_epoch < 0 => ErrorCode::NONE,
        Ordering::Greater => ErrorCode::UNKNOWN_LEADER_EPOCH,
        Ordering::Less => ErrorCode::FENCED_LEADER_EPOCH,
        Ordering::Equal => ErrorCode::NONE,
    }
}

fn empty_partition(index: i32, code: ErrorCode) -> PartitionData {
    PartitionData {
        partition_index: index,
        error_code: code.code(),
        high_watermark: -1,
        last_stable_offset: -1,
        log_start_offset: -1,
        preferred_read_replica: -1,
        records: Some(Bytes::new()),
        ..Default::default()
    }
}

/// One pass over every requested partition. Returns the response and the bytes it carries.
fn read_once(
    broker: &Broker,
    version: i16,
    req: &FetchRequest,
    max_bytes: usize,
) -> (FetchResponse, usize, bool) {
    let mut resp = FetchResponse::default();
    let mut total = 0usize;
    let mut any_error = false;
    for t in &req.topics {
        let topic: Option<Arc<Topic>> = if version >= FIRST_TOPIC_ID_VERSION {
            broker.topic_by_id(&t.topic_id)
        } else {
            broker.topic(&t.topic)
        };
        let unknown = if version >= FIRST_TOPIC_ID_VERSION {
            ErrorCode::UNKNOWN_TOPIC_ID
        } else {
            ErrorCode::UNKNOWN_TOPIC_OR_PARTITION
        };
        let mut tr = FetchableTopicResponse {
            topic: t.topic.clone(),
            topic_id: t.topic_id,
            ..Default::default()
        };
        for p in &t.partitions {
            let Some(partition) = topic
                .as_ref()
                .and_then(|topic| topic.partition(p.partition))
            else {
                any_error = true;
                tr.partitions.push(empty_partition(p.partition, unknown));
                continue;
            };
            let epoch_check = check_leader_epoch(p.current_leader_epoch);
            if !epoch_check.is_ok() {
                any_error = true;
                tr.partitions
                    .push(empty_partition(p.partition, epoch_check));
                continue;
            }
            let state = partition.lock();
            let Some(log) = state.log.as_ref() else {
                any_error = true;
                tr.partitions.push(empty_partition(p.partition, unknown));
                continue;
            };
            let hw = log.high_watermark();
            let mut pd = PartitionData {
                partition_index: p.partition,
                high_watermark: hw,
                last_stable_offset: hw,
                log_start_offset: log.log_start_offset(),
                aborted_transactions: (req.isolation_level == READ_COMMITTED).then(Vec::new),
                preferred_read_replica: -1,
                records: Some(Bytes::new()),
                ..Default::default()
            };
            let remaining = max_bytes.saturating_sub(total);
            let limit = (p.partition_max_bytes.max(0) as usize).min(remaining);
            if limit == 0 && total > 0 {
                tr.partitions.push(pd);
                continue;
            }
            match log.read(p.fetch_offset, limit.max(1), Some(hw)) {
                Ok(read) => {
                    let data = read.records;
                    // Only the first partition with data may go over the limits (KIP-74),
                    // so that a batch larger than the limit still makes progress.
                    if total == 0 || data.len() <= remaining {
                        total += data.len();
                        pd.records = Some(data);
                    }
                }
                Err(LogError::OffsetOutOfRange { .. }) => {
                    any_error = true;
                    pd.error_code = ErrorCode::OFFSET_OUT_OF_RANGE.code();
                }
                Err(e) => {
                    any_error = true;
                    tracing::error!(topic = %partition.topic, partition = p.partition, "read failed: {e}");
                    pd.error_code = ErrorCode::KAFKA_STORAGE_ERROR.code();
                }
            }
            tr.partitions.push(pd);
        }
        resp.responses.push(tr);
    }
    (resp, total, any_error)
}

fn observe(broker: &Broker, version: i16, resp: &FetchResponse) {
    for t in &resp.responses {
        let by_id;
        let name = if version >= FIRST_TOPIC_ID_VERSION {
            by_id = broker
                .topic_by_id(&t.topic_id)
                .map(|topic| topic.name.clone())
                .unwrap_or_default();
            &by_id
        } else {
            &t.topic
        };
        for p in &t.partitions {
            if let Some(records) = &p.records {
                broker.metrics().observe_fetched(name, records);
            }
        }
    }
}

pub async fn handle(broker: Arc<Broker>, version: i16, req: FetchRequest) -> ResponseBody {
    if req.session_id != 0 {
        return ResponseBody::Fetch(FetchResponse {
            error_code: FETCH_SESSION_ID_NOT_FOUND,
            ..Default::default()
        });
    }
    if req.session_epoch > 0 {
        return ResponseBody::Fetch(FetchResponse {
            error_code: INVALID_FETCH_SESSION_EPOCH,
            ..Default::default()
        });
    }
    let max_bytes = (req.max_bytes.max(0) as usize).min(broker.config.fetch_max_bytes);
    let min_bytes = req.min_bytes.max(0) as usize;
    let deadline = Instant::now() + Duration::from_millis(req.max_wait_ms.max(0) as u64);
    loop {
        // Register for wake-ups before reading, so an append between the read and the wait
        // is not missed.
        let notified = broker.data_arrived.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let (resp, bytes, any_error) = read_once(&broker, version, &req, max_bytes);
        if bytes >= min_bytes.max(1)
            || any_error
            || Instant::now() >= deadline
            || !broker.is_ready()
        {
            observe(&broker, version, &resp);
            return ResponseBody::Fetch(resp);
        }
        tokio::select! {
            _ = &mut notified => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}
