//! Fetch (v4+): read stored batches, long-polling until `min_bytes` arrive or `max_wait_ms`
//! passes. Appends wake waiting fetches at once. Fetch sessions are declined (session id 0),
//! which every client accepts by sending full fetches. Each partition's read (leadership and
//! epochs, a follower's progress, the bound by isolation level, aborted transactions) is
//! [`Partition::read_for_fetch`](crate::partition::Partition::read_for_fetch); this maps the
//! request onto it, shares the response's byte budget and holds the files until sent.
//!
//! Records are not copied: the read names the byte ranges of the segment files that hold the
//! batches, and the network layer sends them with `sendfile(2)` after the encoded fields
//! (see [`FetchReply`]). Small responses are read into memory instead, where one write is
//! cheaper than several system calls.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use skein_log::FileRange;
use skein_protocol::messages::fetch_request::{FetchPartition, FetchRequest};
use skein_protocol::messages::fetch_response::{
    AbortedTransaction, EpochEndOffset, FetchResponse, FetchableTopicResponse, LeaderIdAndEpoch,
    NodeEndpoint, PartitionData,
};
use skein_protocol::ResponseBody;
use tokio::time::Instant;

use crate::broker::{Broker, Topic};
use crate::error::ErrorCode;
use crate::partition::{FetchOutcome, FetchPosition, FetchRead, FollowerRead};

/// Fetch v13 replaced topic names with topic ids.
const FIRST_TOPIC_ID_VERSION: i16 = 13;
/// Fetch v15 moved the follower's id into `replica_state` (KIP-903).
const FIRST_REPLICA_STATE_VERSION: i16 = 15;
const READ_COMMITTED: i8 = 1;
const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;
const INVALID_FETCH_SESSION_EPOCH: i16 = 71;

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

/// Below this many bytes of records, a response carries them inline.
const SENDFILE_MIN_BYTES: usize = 64 * 1024;

/// A Fetch response whose records may still be in segment files: `ranges` has one entry per
/// partition of `body`, in encoding order, each to be written right after that partition's
/// inline records (which are then empty). `ranges` is empty when everything is inline.
pub struct FetchReply {
    pub body: ResponseBody,
    pub ranges: Vec<Vec<FileRange>>,
    held: HeldFiles,
}

/// Counts the files a fetch reply holds against `skein.fetch.max.open.files` until dropped.
#[derive(Default)]
pub struct HeldFiles {
    counter: Option<Arc<AtomicUsize>>,
    n: usize,
}

impl HeldFiles {
    /// Reserves `n` more files if the total stays within `max`.
    fn try_add(&mut self, counter: &Arc<AtomicUsize>, n: usize, max: usize) -> bool {
        let before = counter.fetch_add(n, Ordering::SeqCst);
        if before + n > max {
            counter.fetch_sub(n, Ordering::SeqCst);
            return false;
        }
        self.counter = Some(counter.clone());
        self.n += n;
        true
    }
}

impl Drop for HeldFiles {
    fn drop(&mut self) {
        if let Some(c) = &self.counter {
            c.fetch_sub(self.n, Ordering::SeqCst);
        }
    }
}

impl FetchReply {
    fn inline(body: ResponseBody) -> FetchReply {
        FetchReply {
            body,
            ranges: Vec::new(),
            held: HeldFiles::default(),
        }
    }

    /// Makes this the answer to a throttled fetch, as Kafka's: no partitions (so no records),
    /// no fetch session; a top-level error stays.
    pub fn throttled(&mut self) {
        if let ResponseBody::Fetch(r) = &mut self.body {
            r.responses.clear();
            r.node_endpoints.clear();
            r.session_id = 0;
        }
        self.ranges.clear();
        self.held = HeldFiles::default();
    }

    /// The bytes of records the reply carries (inline and in ranges), what a fetch quota
    /// measures.
    pub fn size(&self) -> usize {
        let inline: usize = match &self.body {
            ResponseBody::Fetch(r) => r
                .responses
                .iter()
                .flat_map(|t| t.partitions.iter())
                .map(|p| p.records.as_ref().map_or(0, |b| b.len()))
                .sum(),
            _ => 0,
        };
        inline + self.splice_lengths().iter().sum::<usize>()
    }

    /// The bytes each partition's ranges add, for `encode_response_spliced`.
    pub fn splice_lengths(&self) -> Vec<usize> {
        self.ranges
            .iter()
            .map(|r| r.iter().map(|f| f.len).sum())
            .collect()
    }

    /// The body, the ranges in encoding order, and the guard that counts their files until
    /// they are sent (drop it after writing).
    pub fn into_parts(self) -> (ResponseBody, Vec<FileRange>, HeldFiles) {
        let FetchReply { body, ranges, held } = self;
        (body, ranges.into_iter().flatten().collect(), held)
    }

    /// The response with every range read into memory.
    pub fn into_inline(self) -> std::io::Result<ResponseBody> {
        let FetchReply {
            mut body, ranges, ..
        } = self;
        if ranges.is_empty() {
            return Ok(body);
        }
        let ResponseBody::Fetch(resp) = &mut body else {
            return Ok(body);
        };
        let partitions = resp
            .responses
            .iter_mut()
            .flat_map(|t| t.partitions.iter_mut());
        for (pd, ranges) in partitions.zip(ranges) {
            if !ranges.is_empty() {
                pd.records = Some(read_ranges(&ranges)?);
            }
        }
        Ok(body)
    }
}

fn read_ranges(ranges: &[FileRange]) -> std::io::Result<Bytes> {
    let mut buf = Vec::with_capacity(ranges.iter().map(|r| r.len).sum());
    for r in ranges {
        r.read_into(&mut buf)?;
    }
    Ok(Bytes::from(buf))
}

/// What one pass over the requested partitions found.
struct Pass {
    resp: FetchResponse,
    /// Per partition in encoding order.
    ranges: Vec<Vec<FileRange>>,
    /// `(topic, bytes, records)` of every partition with data, for the metrics.
    fetched: Vec<(Arc<Topic>, usize, i64)>,
    bytes: usize,
    any_error: bool,
    /// A follower's fetch moved a high watermark or a follower's log start (waiters, such
    /// as acks=all produces and DeleteRecords, are woken).
    hw_advanced: bool,
    held: HeldFiles,
}

/// One pass over every requested partition.
fn read_once(broker: &Broker, version: i16, req: &FetchRequest, max_bytes: usize) -> Pass {
    let mut pass = Pass {
        resp: FetchResponse::default(),
        ranges: Vec::new(),
        fetched: Vec::new(),
        bytes: 0,
        any_error: false,
        hw_advanced: false,
        held: HeldFiles::default(),
    };
    let (replica, replica_epoch) = if version >= FIRST_REPLICA_STATE_VERSION {
        (
            req.replica_state.replica_id,
            req.replica_state.replica_epoch,
        )
    } else {
        (req.replica_id, -1)
    };
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
            let (pd, ranges) = read_partition(
                broker,
                topic.as_ref(),
                p,
                unknown,
                max_bytes,
                (
                    replica,
                    replica_epoch,
                    req.isolation_level == READ_COMMITTED,
                ),
                &mut pass,
            );
            tr.partitions.push(pd);
            pass.ranges.push(ranges);
        }
        pass.resp.responses.push(tr);
    }
    pass
}

fn read_partition(
    broker: &Broker,
    topic: Option<&Arc<Topic>>,
    p: &FetchPartition,
    unknown: ErrorCode,
    max_bytes: usize,
    (replica, replica_epoch, read_committed): (i32, i64, bool),
    pass: &mut Pass,
) -> (PartitionData, Vec<FileRange>) {
    let Some((topic, partition)) =
        topic.and_then(|topic| topic.partition(p.partition).map(|part| (topic, part)))
    else {
        pass.any_error = true;
        // A topic found (by name or id) without this partition: the partition is unknown.
        let code = if topic.is_some() {
            ErrorCode::UNKNOWN_TOPIC_OR_PARTITION
        } else {
            unknown
        };
        return (empty_partition(p.partition, code), Vec::new());
    };
    // A follower's fetch tells the leader how far the follower got, which may move the high
    // watermark, and reads up to the log end rather than the high watermark.
    let follower = (replica >= 0).then(|| FollowerRead {
        id: (replica, replica_epoch),
        at: FetchPosition {
            fetch_offset: p.fetch_offset,
            log_start_offset: p.log_start_offset,
            last_fetched_epoch: p.last_fetched_epoch,
        },
        now: broker.now_ms(),
        min_insync: topic.effective().min_insync_replicas,
    });
    let remaining = max_bytes.saturating_sub(pass.bytes);
    let read = FetchRead {
        fetch_offset: p.fetch_offset,
        current_leader_epoch: p.current_leader_epoch,
        follower,
        read_committed,
        max_bytes: (p.partition_max_bytes.max(0) as usize).min(remaining),
        remaining,
        response_has_data: pass.bytes > 0,
    };
    let result = partition.read_for_fetch(broker.node_id(), read);
    pass.hw_advanced |= result.hw_advanced;
    let data = match result.outcome {
        FetchOutcome::Data(data) => data,
        FetchOutcome::Diverging {
            epoch,
            end_offset,
            high_watermark,
            log_start_offset,
        } => {
            pass.any_error = true; // answer at once: the follower has work to do
            let pd = PartitionData {
                partition_index: p.partition,
                high_watermark,
                last_stable_offset: high_watermark,
                log_start_offset,
                diverging_epoch: EpochEndOffset {
                    epoch,
                    end_offset,
                    ..Default::default()
                },
                preferred_read_replica: -1,
                records: Some(Bytes::new()),
                ..Default::default()
            };
            return (pd, Vec::new());
        }
        FetchOutcome::Refused {
            code,
            high_watermark,
            log_start_offset,
        } => {
            pass.any_error = true;
            let mut pd = empty_partition(p.partition, code);
            pd.high_watermark = high_watermark;
            pd.log_start_offset = log_start_offset;
            return (pd, Vec::new());
        }
        FetchOutcome::NoLog => {
            pass.any_error = true;
            return (empty_partition(p.partition, unknown), Vec::new());
        }
    };
    let mut pd = PartitionData {
        partition_index: p.partition,
        high_watermark: data.high_watermark,
        last_stable_offset: data.last_stable_offset,
        log_start_offset: data.log_start_offset,
        preferred_read_replica: -1,
        records: Some(Bytes::new()),
        aborted_transactions: data.aborted.map(|aborted| {
            aborted
                .into_iter()
                .map(|t| AbortedTransaction {
                    producer_id: t.producer_id,
                    first_offset: t.first_offset,
                    ..Default::default()
                })
                .collect()
        }),
        ..Default::default()
    };
    let Some(read) = data.records else {
        return (pd, Vec::new());
    };
    pass.bytes += read.bytes;
    pass.fetched.push((topic.clone(), read.bytes, read.records));
    let counter = &broker.fetch_files_held;
    let max = broker.config.fetch_max_open_files;
    if pass.held.try_add(counter, read.ranges.len(), max) {
        return (pd, read.ranges);
    }
    // Too many files held by unsent responses: copy the records instead.
    match read_ranges(&read.ranges) {
        Ok(records) => pd.records = Some(records),
        Err(e) => {
            pass.any_error = true;
            tracing::error!(topic = %partition.topic, partition = p.partition, "read failed: {e}");
            pd.error_code = ErrorCode::KAFKA_STORAGE_ERROR.code();
        }
    }
    (pd, Vec::new())
}

/// Turns a pass into the reply: small responses get their records read into memory.
fn finish(broker: &Broker, listener: &str, req: &FetchRequest, mut pass: Pass) -> FetchReply {
    for (topic, bytes, records) in &pass.fetched {
        broker
            .metrics()
            .observe_fetched(&topic.name, *bytes, *records);
    }
    // Null unless read_committed, as Kafka answers; empty where nothing was aborted.
    let read_committed = req.isolation_level == READ_COMMITTED;
    let partitions = pass
        .resp
        .responses
        .iter_mut()
        .flat_map(|t| t.partitions.iter_mut());
    for pd in partitions {
        if !read_committed {
            pd.aborted_transactions = None;
        } else if pd.aborted_transactions.is_none() {
            pd.aborted_transactions = Some(Vec::new());
        }
    }
    add_leader_hints(broker, listener, &mut pass.resp);
    let reply = FetchReply {
        body: ResponseBody::Fetch(pass.resp),
        ranges: pass.ranges,
        held: pass.held,
    };
    if pass.bytes >= SENDFILE_MIN_BYTES {
        return reply;
    }
    match reply.into_inline() {
        Ok(body) => FetchReply::inline(body),
        Err(e) => {
            tracing::error!("fetch: reading records failed: {e}");
            FetchReply::inline(ResponseBody::Fetch(FetchResponse {
                error_code: ErrorCode::KAFKA_STORAGE_ERROR.code(),
                ..Default::default()
            }))
        }
    }
}

/// KIP-951 (Fetch v12+ for the leader, v16+ for the endpoints; older versions do not encode
/// them): partitions answered NOT_LEADER_OR_FOLLOWER carry the current leader.
fn add_leader_hints(broker: &Broker, listener: &str, resp: &mut FetchResponse) {
    let mut leaders = std::collections::BTreeSet::new();
    for t in &mut resp.responses {
        let topic = if t.topic_id != skein_protocol::Uuid::ZERO {
            broker.topic_by_id(&t.topic_id)
        } else {
            broker.topic(&t.topic)
        };
        for p in &mut t.partitions {
            if p.error_code != ErrorCode::NOT_LEADER_OR_FOLLOWER.code() {
                continue;
            }
            if let Some((leader_id, leader_epoch)) =
                super::known_leader(topic.as_ref(), p.partition_index)
            {
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

pub async fn handle(
    broker: Arc<Broker>,
    listener: String,
    version: i16,
    req: FetchRequest,
) -> FetchReply {
    let error = |code: i16| {
        FetchReply::inline(ResponseBody::Fetch(FetchResponse {
            error_code: code,
            ..Default::default()
        }))
    };
    if req.session_id != 0 {
        return error(FETCH_SESSION_ID_NOT_FOUND);
    }
    if req.session_epoch > 0 {
        return error(INVALID_FETCH_SESSION_EPOCH);
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
        let pass = read_once(&broker, version, &req, max_bytes);
        if pass.hw_advanced {
            // Consumers long-polling for data below it, and acks=all produces, can go on.
            broker.data_arrived.notify_waiters();
        }
        if pass.bytes >= min_bytes.max(1)
            || pass.any_error
            || Instant::now() >= deadline
            || !broker.is_ready()
        {
            return finish(&broker, &listener, &req, pass);
        }
        tokio::select! {
            _ = &mut notified => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}
