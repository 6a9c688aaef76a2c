//! `skein dlt replay`: republishes dead letters to their original topic (or to `--to TOPIC`).
//!
//! Each replayed record keeps its key, value and headers, minus Spring Kafka's `retry_topic-*`
//! headers (a kept attempts counter would make Spring skip the retries next time), plus
//! [`REPLAY_COUNT_HEADER`] (4-byte big-endian, the previous value + 1); records already replayed
//! `--max-replays` times are refused. Progress is the committed offset of a consumer group of
//! the command's own, `skein-dlt-replay.<dlt topic>` (per DLT partition, the next record to
//! consider). Where the broker serves transactions, every chunk is one Kafka transaction
//! (transactional id `skein-dlt-replay.<dlt topic>`) holding the republished records and the
//! group's new offsets, so a second run never replays twice and a run killed mid-chunk is
//! aborted (by the next run's InitProducerId, or the transaction timeout). Without
//! transactions the records are produced idempotently, then the offsets committed: at least
//! once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use skein_protocol::messages::add_offsets_to_txn_request::AddOffsetsToTxnRequest;
use skein_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnTopic,
};
use skein_protocol::messages::end_txn_request::EndTxnRequest;
use skein_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
use skein_protocol::messages::init_producer_id_request::InitProducerIdRequest;
use skein_protocol::messages::produce_request::{
    PartitionProduceData, ProduceRequest, TopicProduceData,
};
use skein_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequest, TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use skein_protocol::records::RecordBatchBuilder;
use skein_protocol::ApiKey;

use super::batch::{InRecord, OutRecord};
use super::client::{backoff, is_retriable, Cluster, Exchange, TopicInfo, RETRIES};
use super::dlt::DltInfo;
use super::errors::{self, KafkaError};
use super::fetch::read_range_isolated;
use super::offsets::{
    commit_offsets, committed_offsets, kafka_code, list_offsets, with_coordinator, EARLIEST, LATEST,
};
use super::output::print_json;
use super::partitioner::partition_for_key;
use super::time::now_ms;
use super::Common;

/// The header that counts how often a record was replayed (4-byte big-endian int).
pub const REPLAY_COUNT_HEADER: &str = "skein-dlt-replay-count";
/// Spring Kafka's retry-topic headers, dropped from replayed records.
const RETRY_HEADER_PREFIX: &str = "retry_topic-";
/// The transaction timeout asked for: a run killed mid-chunk is aborted after this at the
/// latest (the next run's InitProducerId aborts it at once).
const TRANSACTION_TIMEOUT_MS: i32 = 60_000;
const PRODUCE_TIMEOUT_MS: i32 = 30_000;
/// How long transaction coordinator calls are retried while it is busy (CONCURRENT_TRANSACTIONS
/// while an earlier transaction completes, loading, moving).
const COORDINATOR_PATIENCE: Duration = Duration::from_secs(60);
const CONCURRENT_TRANSACTIONS: i16 = 51;

#[derive(clap::Args)]
pub struct ReplayArgs {
    /// The dead-letter topic.
    pub topic: String,
    /// Replay only this partition of the DLT.
    #[arg(long)]
    pub partition: Option<i32>,
    /// Only the record at this offset (in each partition read).
    #[arg(long, conflicts_with_all = ["exception", "key", "from_offset"])]
    pub offset: Option<i64>,
    /// Start at this offset (or at the group's committed offset, when that is later).
    #[arg(long, value_name = "OFFSET")]
    pub from_offset: Option<i64>,
    /// Only records whose root cause or exception is this class (fully qualified, or its
    /// simple name).
    #[arg(long, value_name = "CLASS", conflicts_with = "key")]
    pub exception: Option<String>,
    /// Only records with this key (compared as UTF-8 text).
    #[arg(long, value_name = "K")]
    pub key: Option<String>,
    /// Where to send the records: ORIGINAL (each record's first original topic) or a topic.
    #[arg(long, default_value = "ORIGINAL", value_name = "ORIGINAL|TOPIC")]
    pub to: String,
    /// Send at most this many records per second (`N` or `N/s`).
    #[arg(long, value_name = "N/s", value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Print what would be sent where (and what is refused); send and commit nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Refuse records already replayed this many times.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub max_replays: i32,
    /// Records read per transaction (or per offset commit).
    #[arg(long, default_value_t = 500, value_name = "N")]
    pub chunk: usize,
    #[command(flatten)]
    pub common: Common,
}

fn parse_rate(text: &str) -> Result<f64, String> {
    let n = text.strip_suffix("/s").unwrap_or(text);
    match n.trim().parse::<f64>() {
        Ok(r) if r > 0.0 && r.is_finite() => Ok(r),
        _ => Err(format!(
            "{text:?} is not a rate (records per second, e.g. 50 or 50/s)"
        )),
    }
}

/// The consumer group (and transactional id) whose offsets remember a DLT's replays.
pub fn group_id(dlt: &str) -> String {
    format!("skein-dlt-replay.{dlt}")
}

// -- one record ----------------------------------------------------------------------------------

/// What happens to one selected dead letter (before its partition is chosen).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Replay {
        topic: String,
        record: OutRecord,
        count: i32,
    },
    Refuse(String),
}

/// The previous replay count: the last [`REPLAY_COUNT_HEADER`], 0 without one.
fn previous_count(headers: &[(String, Option<Vec<u8>>)]) -> Result<i32, String> {
    match headers.iter().rev().find(|(k, _)| k == REPLAY_COUNT_HEADER) {
        None => Ok(0),
        Some((_, Some(v))) if v.len() == 4 => Ok(i32::from_be_bytes([v[0], v[1], v[2], v[3]])),
        Some(_) => Err(format!(
            "its {REPLAY_COUNT_HEADER} header is not a 4-byte integer"
        )),
    }
}

/// Decides what to do with `r`: where it goes (`to`: `None` for its original topic) and the
/// record to send, or why it is refused.
pub fn prepare(r: &InRecord, to: Option<&str>, max_replays: i32, now: i64) -> Verdict {
    let previous = match previous_count(&r.headers) {
        Ok(n) => n,
        Err(e) => return Verdict::Refuse(e),
    };
    if previous >= max_replays {
        return Verdict::Refuse(format!(
            "replayed {previous} times already (--max-replays {max_replays})"
        ));
    }
    let topic = match to {
        Some(t) => t.to_owned(),
        None => match DltInfo::from_headers(&r.headers).original_topic() {
            Some(t) => t.to_owned(),
            None => return Verdict::Refuse("no original-topic header (use --to TOPIC)".into()),
        },
    };
    let count = previous + 1;
    let mut headers: Vec<(String, Option<Vec<u8>>)> = r
        .headers
        .iter()
        .filter(|(k, _)| !k.starts_with(RETRY_HEADER_PREFIX) && k != REPLAY_COUNT_HEADER)
        .cloned()
        .collect();
    headers.push((
        REPLAY_COUNT_HEADER.to_owned(),
        Some(count.to_be_bytes().to_vec()),
    ));
    Verdict::Replay {
        topic,
        record: OutRecord {
            key: r.key.clone(),
            value: r.value.clone(),
            headers,
            timestamp_ms: now,
        },
        count,
    }
}

// -- the producer --------------------------------------------------------------------------------

/// How the records and the progress are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// One transaction per chunk: records and offsets together (exactly once).
    Transactional,
    /// Idempotent produce, then OffsetCommit (at least once).
    Idempotent,
    /// Plain produce, then OffsetCommit (at least once; the broker has no InitProducerId).
    Plain,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Transactional => "transactional",
            Mode::Idempotent => "idempotent",
            Mode::Plain => "plain",
        }
    }
}

struct Producer {
    mode: Mode,
    transactional_id: String,
    group: String,
    producer_id: i64,
    epoch: i16,
    sequences: HashMap<(String, i32), i32>,
    /// Target partitions added to the open transaction.
    in_txn: BTreeSet<(String, i32)>,
    txn_coordinator: Option<i32>,
}

/// Finds the transaction coordinator of `id` (FindCoordinator with key type 1).
fn find_txn_coordinator(cluster: &mut Cluster, id: &str) -> Result<i32> {
    let conn = cluster.any()?;
    let version = conn.version(ApiKey::FindCoordinator)?;
    let mut request = FindCoordinatorRequest {
        key_type: 1,
        ..Default::default()
    };
    if version >= 4 {
        request.coordinator_keys = vec![id.to_owned()];
    } else {
        request.key = id.to_owned();
    }
    let response = conn.send(request)?;
    let (code, message, node) = if version >= 4 {
        let c = response
            .coordinators
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("FindCoordinator answered no coordinator"))?;
        (c.error_code, c.error_message, c.node_id)
    } else {
        (
            response.error_code,
            response.error_message,
            response.node_id,
        )
    };
    KafkaError::check(code, message.as_deref())
        .with_context(|| format!("transaction coordinator of {id}"))?;
    Ok(node)
}

fn first_error(codes: impl IntoIterator<Item = i16>) -> i16 {
    codes
        .into_iter()
        .find(|c| *c != errors::NONE)
        .unwrap_or(errors::NONE)
}

impl Producer {
    /// Picks the mode from what the broker serves and gets a producer id; in transactional
    /// mode this fences an earlier run and aborts its open transaction.
    fn start(cluster: &mut Cluster, dlt: &str) -> Result<Producer> {
        let conn = cluster.any()?;
        let transactions = [
            ApiKey::InitProducerId,
            ApiKey::AddPartitionsToTxn,
            ApiKey::AddOffsetsToTxn,
            ApiKey::TxnOffsetCommit,
            ApiKey::EndTxn,
        ]
        .into_iter()
        .all(|k| conn.supports(k));
        let mode = if transactions {
            Mode::Transactional
        } else if conn.supports(ApiKey::InitProducerId) {
            Mode::Idempotent
        } else {
            Mode::Plain
        };
        let mut p = Producer {
            mode,
            transactional_id: group_id(dlt),
            group: group_id(dlt),
            producer_id: -1,
            epoch: -1,
            sequences: HashMap::new(),
            in_txn: BTreeSet::new(),
            txn_coordinator: None,
        };
        match mode {
            Mode::Transactional => {
                let request = InitProducerIdRequest {
                    transactional_id: Some(p.transactional_id.clone()),
                    transaction_timeout_ms: TRANSACTION_TIMEOUT_MS,
                    producer_id: -1,
                    producer_epoch: -1,
                    unknown_tagged_fields: Vec::new(),
                };
                let r = p
                    .txn_call(cluster, request, |r| r.error_code)
                    .context("InitProducerId")?;
                p.producer_id = r.producer_id;
                p.epoch = r.producer_epoch;
            }
            Mode::Idempotent => {
                let r = cluster
                    .any()?
                    .send(InitProducerIdRequest {
                        transactional_id: None,
                        transaction_timeout_ms: TRANSACTION_TIMEOUT_MS,
                        producer_id: -1,
                        producer_epoch: -1,
                        unknown_tagged_fields: Vec::new(),
                    })
                    .context("InitProducerId")?;
                KafkaError::check(r.error_code, None).context("InitProducerId")?;
                p.producer_id = r.producer_id;
                p.epoch = r.producer_epoch;
            }
            Mode::Plain => {}
        }
        Ok(p)
    }

    /// Sends `request` to the transaction coordinator, finding it again when it moved and
    /// retrying while it is busy; `code` takes the (first) error out of the reply.
    fn txn_call<R: Exchange + Clone>(
        &mut self,
        cluster: &mut Cluster,
        request: R,
        code: impl Fn(&R::Response) -> i16,
    ) -> Result<R::Response> {
        let deadline = Instant::now() + COORDINATOR_PATIENCE;
        let mut attempt = 0;
        loop {
            let node = match self.txn_coordinator {
                Some(n) => n,
                None => match find_txn_coordinator(cluster, &self.transactional_id) {
                    Ok(n) => {
                        self.txn_coordinator = Some(n);
                        n
                    }
                    // The first transactional id makes the broker create its transaction log.
                    Err(e)
                        if Instant::now() < deadline
                            && kafka_code(&e).is_some_and(is_retriable) =>
                    {
                        attempt += 1;
                        backoff(attempt.min(4));
                        continue;
                    }
                    Err(e) => return Err(e),
                },
            };
            let outcome = cluster.broker(node)?.send(request.clone());
            let c = match &outcome {
                Ok(r) => code(r),
                Err(_) => errors::COORDINATOR_NOT_AVAILABLE,
            };
            if c == errors::NONE {
                return outcome;
            }
            let busy = c == CONCURRENT_TRANSACTIONS || is_retriable(c);
            if !busy || Instant::now() >= deadline {
                outcome?;
                return Err(KafkaError::new(c, None).into());
            }
            if matches!(
                c,
                errors::NOT_COORDINATOR | errors::COORDINATOR_NOT_AVAILABLE
            ) {
                self.txn_coordinator = None;
            }
            attempt += 1;
            backoff(attempt.min(4));
        }
    }

    /// Sends `records` (target topic, partition, record), one batch per partition, adding
    /// the partitions to the transaction first; returns each record's offset in its target.
    fn send(
        &mut self,
        cluster: &mut Cluster,
        records: &[(String, i32, OutRecord)],
    ) -> Result<Vec<i64>> {
        let mut by_partition: BTreeMap<(String, i32), Vec<usize>> = BTreeMap::new();
        for (i, (t, p, _)) in records.iter().enumerate() {
            by_partition.entry((t.clone(), *p)).or_default().push(i);
        }
        if self.mode == Mode::Transactional {
            let new: Vec<(String, i32)> = by_partition
                .keys()
                .filter(|tp| !self.in_txn.contains(*tp))
                .cloned()
                .collect();
            if !new.is_empty() {
                let mut topics: BTreeMap<String, Vec<i32>> = BTreeMap::new();
                for (t, p) in &new {
                    topics.entry(t.clone()).or_default().push(*p);
                }
                let request = AddPartitionsToTxnRequest {
                    v3_and_below_transactional_id: self.transactional_id.clone(),
                    v3_and_below_producer_id: self.producer_id,
                    v3_and_below_producer_epoch: self.epoch,
                    v3_and_below_topics: topics
                        .into_iter()
                        .map(|(name, partitions)| AddPartitionsToTxnTopic {
                            name,
                            partitions,
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                };
                self.txn_call(cluster, request, |r| {
                    first_error(
                        r.results_by_topic_v3_and_below
                            .iter()
                            .flat_map(|t| &t.results_by_partition)
                            .map(|p| p.partition_error_code),
                    )
                })
                .context("AddPartitionsToTxn")?;
                self.in_txn.extend(new);
            }
        }
        let mut offsets = vec![-1; records.len()];
        for ((topic, partition), indexes) in by_partition {
            let sequence = self
                .sequences
                .get(&(topic.clone(), partition))
                .copied()
                .unwrap_or(0);
            let mut builder = RecordBatchBuilder::new(records[indexes[0]].2.timestamp_ms);
            if self.mode != Mode::Plain {
                builder = builder.producer(self.producer_id, self.epoch, sequence);
            }
            if self.mode == Mode::Transactional {
                builder = builder.transactional();
            }
            for i in &indexes {
                builder = records[*i].2.push_to(builder);
            }
            let batch = builder.build().to_vec();
            let base = self
                .produce(cluster, &topic, partition, batch)
                .with_context(|| format!("producing to partition {partition} of {topic}"))?;
            for (n, i) in indexes.iter().enumerate() {
                offsets[*i] = base + n as i64;
            }
            self.sequences.insert(
                (topic, partition),
                sequence.wrapping_add(indexes.len() as i32),
            );
        }
        Ok(offsets)
    }

    /// Produces one batch to a partition's leader (again, with the same sequence, after a
    /// leader change); returns its base offset.
    fn produce(
        &mut self,
        cluster: &mut Cluster,
        topic: &str,
        partition: i32,
        batch: Vec<u8>,
    ) -> Result<i64> {
        let mut attempt = 0;
        loop {
            let leader = cluster
                .topic(topic)?
                .leader(partition)
                .ok_or_else(|| anyhow!("no leader"))?;
            let request = ProduceRequest {
                transactional_id: (self.mode == Mode::Transactional)
                    .then(|| self.transactional_id.clone()),
                acks: -1,
                timeout_ms: PRODUCE_TIMEOUT_MS,
                topic_data: vec![TopicProduceData {
                    name: topic.to_owned(),
                    partition_data: vec![PartitionProduceData {
                        index: partition,
                        records: Some(batch.clone().into()),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            };
            let timeout = Duration::from_millis(PRODUCE_TIMEOUT_MS as u64 + 5_000);
            let response = cluster
                .broker(leader)?
                .send_with_timeout(request, timeout)?;
            let p = response
                .responses
                .into_iter()
                .flat_map(|t| t.partition_responses)
                .find(|p| p.index == partition)
                .ok_or_else(|| anyhow!("the leader did not answer for the partition"))?;
            if p.error_code == errors::NONE {
                return Ok(p.base_offset);
            }
            if is_retriable(p.error_code) && attempt < RETRIES {
                attempt += 1;
                backoff(attempt);
                continue;
            }
            return Err(KafkaError::new(p.error_code, p.error_message).into());
        }
    }

    /// Commits the DLT partitions' new offsets: in the open transaction, then commits it; or
    /// with OffsetCommit.
    fn commit(
        &mut self,
        cluster: &mut Cluster,
        dlt: &str,
        offsets: &BTreeMap<i32, i64>,
    ) -> Result<()> {
        if self.mode != Mode::Transactional {
            let offsets: BTreeMap<(String, i32), i64> = offsets
                .iter()
                .map(|(p, o)| ((dlt.to_owned(), *p), *o))
                .collect();
            let group = self.group.clone();
            return with_coordinator(cluster, &group, |conn| {
                commit_offsets(conn, &group, -1, "", &offsets)
            })
            .context("OffsetCommit");
        }
        let request = AddOffsetsToTxnRequest {
            transactional_id: self.transactional_id.clone(),
            producer_id: self.producer_id,
            producer_epoch: self.epoch,
            group_id: self.group.clone(),
            ..Default::default()
        };
        self.txn_call(cluster, request, |r| r.error_code)
            .context("AddOffsetsToTxn")?;
        let request = TxnOffsetCommitRequest {
            transactional_id: self.transactional_id.clone(),
            group_id: self.group.clone(),
            producer_id: self.producer_id,
            producer_epoch: self.epoch,
            generation_id: -1,
            member_id: String::new(),
            group_instance_id: None,
            topics: vec![TxnOffsetCommitRequestTopic {
                name: dlt.to_owned(),
                partitions: offsets
                    .iter()
                    .map(|(p, o)| TxnOffsetCommitRequestPartition {
                        partition_index: *p,
                        committed_offset: *o,
                        committed_leader_epoch: -1,
                        committed_metadata: Some(String::new()),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let group = self.group.clone();
        let mut attempt = 0;
        loop {
            let outcome = with_coordinator(cluster, &group, |conn| {
                let r = conn.send(request.clone())?;
                let c = first_error(
                    r.topics
                        .iter()
                        .flat_map(|t| &t.partitions)
                        .map(|p| p.error_code),
                );
                KafkaError::check(c, None)?;
                Ok(())
            });
            match outcome {
                Err(e) if attempt < RETRIES && kafka_code(&e) == Some(CONCURRENT_TRANSACTIONS) => {
                    attempt += 1;
                    backoff(attempt);
                }
                other => {
                    other.context("TxnOffsetCommit")?;
                    break;
                }
            }
        }
        self.end(cluster, true)
    }

    /// Ends the open transaction (commit or abort).
    fn end(&mut self, cluster: &mut Cluster, commit: bool) -> Result<()> {
        let request = EndTxnRequest {
            transactional_id: self.transactional_id.clone(),
            producer_id: self.producer_id,
            producer_epoch: self.epoch,
            committed: commit,
            ..Default::default()
        };
        self.txn_call(cluster, request, |r| r.error_code)
            .with_context(|| format!("EndTxn({})", if commit { "commit" } else { "abort" }))?;
        self.in_txn.clear();
        Ok(())
    }
}

// -- the rate --------------------------------------------------------------------------------

/// A token bucket: `rate` tokens a second, holding at most `max(1, rate)`.
struct Bucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(rate: f64) -> Bucket {
        Bucket {
            rate,
            tokens: 1.0,
            last: Instant::now(),
        }
    }

    /// How long until a token is there (zero when one is).
    fn wait(&mut self) -> Duration {
        let now = Instant::now();
        let capacity = self.rate.max(1.0);
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(capacity);
        self.last = now;
        if self.tokens >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / self.rate)
        }
    }

    fn take(&mut self) {
        self.tokens -= 1.0;
    }
}

// -- the command -----------------------------------------------------------------------------

/// A replayed (or, in a dry run, replayable) record.
struct Replayed {
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    to_topic: String,
    to_partition: i32,
    to_offset: Option<i64>,
    count: i32,
}

struct Refused {
    partition: i32,
    offset: i64,
    reason: String,
}

impl ReplayArgs {
    fn matches(&self, r: &InRecord) -> bool {
        if let Some(o) = self.offset {
            return r.offset == o;
        }
        if let Some(class) = &self.exception {
            return DltInfo::from_headers(&r.headers).is_exception(class);
        }
        if let Some(k) = &self.key {
            return r.key.as_deref() == Some(k.as_bytes());
        }
        true
    }
}

fn key_text(key: Option<&[u8]>) -> String {
    match key {
        None => "null".to_owned(),
        Some(k) => match std::str::from_utf8(k) {
            Ok(s) => s.to_owned(),
            Err(_) => format!("(binary, {} bytes)", k.len()),
        },
    }
}

pub fn run(args: ReplayArgs) -> Result<()> {
    let context = format!("dlt replay {}", args.topic);
    replay(args).context(context)
}

fn replay(args: ReplayArgs) -> Result<()> {
    if args.offset.is_some_and(|o| o < 0) || args.from_offset.is_some_and(|o| o < 0) {
        bail!("offsets must not be negative");
    }
    if args.max_replays < 1 {
        bail!("--max-replays must be at least 1");
    }
    if args.chunk == 0 {
        bail!("--chunk must be at least 1");
    }
    let text = matches!(args.common.output, super::Output::Text);
    let to = (args.to != "ORIGINAL").then_some(args.to.as_str());
    let dlt = args.topic.clone();
    let group = group_id(&dlt);
    let mut cluster = args.common.connect()?;
    let info = cluster.topic(&dlt)?;
    let parts = super::dlt::chosen_partitions(&info, args.partition)?;
    if let Some(t) = to {
        // A missing target is an error before anything is read.
        cluster.topic(t).with_context(|| format!("--to {t}"))?;
    }
    // The producer first: its InitProducerId fences an earlier run and aborts the
    // transaction it left open, so the committed offsets read next are settled.
    let mut producer = if args.dry_run {
        None
    } else {
        Some(Producer::start(&mut cluster, &dlt)?)
    };
    let starts = list_offsets(&mut cluster, &dlt, &parts, EARLIEST)?;
    let ends = list_offsets(&mut cluster, &dlt, &parts, LATEST)?;
    let wanted = [(dlt.clone(), parts.clone())];
    let committed = with_coordinator(&mut cluster, &group, |conn| {
        committed_offsets(conn, &group, Some(&wanted))
    })
    .with_context(|| format!("committed offsets of group {group}"))?;
    let chunk = match args.rate {
        Some(r) => args.chunk.min(((r * 5.0).ceil() as usize).max(1)),
        None => args.chunk,
    };
    let mut bucket = args.rate.map(Bucket::new);
    let mut targets: HashMap<String, Option<TopicInfo>> = HashMap::new();
    let mut round_robin: HashMap<String, i32> = HashMap::new();
    let mut replayed: Vec<Replayed> = Vec::new();
    let mut refused: Vec<Refused> = Vec::new();
    let mut passed_over = 0u64;
    let mut progress: BTreeMap<i32, i64> = BTreeMap::new();
    let verb = if args.dry_run {
        "would replay"
    } else {
        "replayed"
    };
    for p in &parts {
        let start = starts.get(p).copied().flatten().unwrap_or(0);
        let end = ends.get(p).copied().flatten().unwrap_or(start);
        let mut from = start.max(committed.get(&(dlt.clone(), *p)).copied().unwrap_or(0));
        if let Some(f) = args.from_offset {
            from = from.max(f);
        }
        let to_offset = match args.offset {
            Some(o) if o < from || o >= end => continue,
            Some(o) => o + 1,
            None => end,
        };
        let mut position = from;
        while position < to_offset {
            let mut records: Vec<InRecord> = Vec::new();
            // read_committed: dead letters of a publisher's aborted transactions are no
            // dead letters.
            let next =
                read_range_isolated(&mut cluster, &dlt, *p, position, to_offset, true, |r| {
                    records.push(r.clone());
                    records.len() < chunk
                })
                .with_context(|| format!("reading partition {p}"))?;
            // The chunk's verdicts, partitions chosen.
            let mut sends: Vec<(String, i32, OutRecord)> = Vec::new();
            let mut sent: Vec<Replayed> = Vec::new();
            for r in &records {
                if !args.matches(r) {
                    passed_over += 1;
                    continue;
                }
                let (topic, record, count) = match prepare(r, to, args.max_replays, now_ms()) {
                    Verdict::Replay {
                        topic,
                        record,
                        count,
                    } => (topic, record, count),
                    Verdict::Refuse(reason) => {
                        if text {
                            println!("refused {dlt} {p}:{}: {reason}", r.offset);
                        }
                        refused.push(Refused {
                            partition: *p,
                            offset: r.offset,
                            reason,
                        });
                        continue;
                    }
                };
                if !targets.contains_key(&topic) {
                    let found = match cluster.topic(&topic) {
                        Ok(t) => Some(t),
                        Err(e) if kafka_code(&e) == Some(errors::UNKNOWN_TOPIC_OR_PARTITION) => {
                            None
                        }
                        Err(e) => return Err(e.context(format!("topic {topic}"))),
                    };
                    targets.insert(topic.clone(), found);
                }
                let Some(target) = targets.get(&topic).and_then(Option::as_ref) else {
                    let reason = format!("topic {topic} does not exist");
                    if text {
                        println!("refused {dlt} {p}:{}: {reason}", r.offset);
                    }
                    refused.push(Refused {
                        partition: *p,
                        offset: r.offset,
                        reason,
                    });
                    continue;
                };
                let n = target.partitions.len() as i32;
                let partition = match &record.key {
                    Some(k) => partition_for_key(k, n),
                    None => {
                        let next = round_robin.entry(topic.clone()).or_insert(0);
                        let chosen = *next % n;
                        *next = (*next + 1) % n;
                        chosen
                    }
                };
                sent.push(Replayed {
                    partition: *p,
                    offset: r.offset,
                    key: r.key.clone(),
                    to_topic: topic.clone(),
                    to_partition: partition,
                    to_offset: None,
                    count,
                });
                sends.push((topic, partition, record));
            }
            let outcome = match producer.as_mut() {
                None => Ok(()),
                Some(prod) => send_chunk(
                    prod,
                    &mut cluster,
                    &dlt,
                    &sends,
                    &mut sent,
                    bucket.as_mut(),
                    (next > position).then_some((*p, next)),
                ),
            };
            if let Err(e) = outcome {
                if let Some(prod) = producer.as_mut() {
                    if prod.mode == Mode::Transactional && !prod.in_txn.is_empty() {
                        let _ = prod.end(&mut cluster, false);
                    }
                }
                return Err(e);
            }
            for s in sent {
                if text {
                    let at = s.to_offset.map(|o| format!(":{o}")).unwrap_or_default();
                    println!(
                        "{verb} {dlt} {}:{} key {} -> {} {}{at} (replay {})",
                        s.partition,
                        s.offset,
                        key_text(s.key.as_deref()),
                        s.to_topic,
                        s.to_partition,
                        s.count
                    );
                }
                replayed.push(s);
            }
            if next > position {
                progress.insert(*p, next);
            }
            if next <= position || next >= to_offset {
                break;
            }
            position = next;
        }
    }
    let mode = producer.as_ref().map(|p| p.mode);
    let guarantee = match mode {
        None => "dry run: nothing was sent and nothing committed",
        Some(Mode::Transactional) => {
            "exactly once: each chunk's records and offsets were committed in one transaction"
        }
        Some(_) => {
            "at least once: the broker has no transactions, so records were produced and then the offsets committed; a crash between the two replays those records again"
        }
    };
    match args.common.output {
        super::Output::Json => print_json(&json!({
            "topic": dlt,
            "group": group,
            "dry_run": args.dry_run,
            "mode": mode.map(Mode::name),
            "to": args.to,
            "max_replays": args.max_replays,
            "replayed": replayed.iter().map(|s| json!({
                "partition": s.partition,
                "offset": s.offset,
                "key": super::output::bytes_json(s.key.as_deref()),
                "to_topic": s.to_topic,
                "to_partition": s.to_partition,
                "to_offset": s.to_offset,
                "replay_count": s.count,
            })).collect::<Vec<_>>(),
            "refused": refused.iter().map(|r| json!({
                "partition": r.partition,
                "offset": r.offset,
                "reason": r.reason,
            })).collect::<Vec<_>>(),
            "passed_over": passed_over,
            "committed": if args.dry_run { Value::Null } else { progress_json(&progress) },
            "next_offsets": progress_json(&progress),
        })),
        super::Output::Text => {
            println!(
                "{dlt}: {} {}, refused {}, passed over {} (not selected by the filters)",
                verb,
                replayed.len(),
                refused.len(),
                passed_over
            );
            if !args.dry_run {
                let at: Vec<String> = progress.iter().map(|(p, o)| format!("{p}:{o}")).collect();
                if !at.is_empty() {
                    println!("progress in group {group}: next offsets {}", at.join(" "));
                }
            }
            println!("{guarantee}");
        }
    }
    Ok(())
}

fn progress_json(progress: &BTreeMap<i32, i64>) -> Value {
    Value::Array(
        progress
            .iter()
            .map(|(p, o)| json!({"partition": p, "offset": o}))
            .collect(),
    )
}

/// Sends one chunk's records (at the bucket's rate, sending what is due before each wait) and
/// commits the DLT partition's new offset with them.
fn send_chunk(
    producer: &mut Producer,
    cluster: &mut Cluster,
    dlt: &str,
    sends: &[(String, i32, OutRecord)],
    sent: &mut [Replayed],
    mut bucket: Option<&mut Bucket>,
    commit: Option<(i32, i64)>,
) -> Result<()> {
    let mut done = 0;
    let mut i = 0;
    while i < sends.len() {
        if let Some(b) = bucket.as_deref_mut() {
            let wait = b.wait();
            if !wait.is_zero() {
                if done < i {
                    let offsets = producer.send(cluster, &sends[done..i])?;
                    for (s, o) in sent[done..i].iter_mut().zip(offsets) {
                        s.to_offset = Some(o);
                    }
                    done = i;
                }
                std::thread::sleep(wait);
                continue;
            }
            b.take();
        }
        i += 1;
    }
    if done < sends.len() {
        let offsets = producer.send(cluster, &sends[done..])?;
        for (s, o) in sent[done..].iter_mut().zip(offsets) {
            s.to_offset = Some(o);
        }
    }
    if let Some((p, o)) = commit {
        producer.commit(cluster, dlt, &BTreeMap::from([(p, o)]))?;
    } else if producer.mode == Mode::Transactional && !producer.in_txn.is_empty() {
        producer.end(cluster, true)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(headers: Vec<(&str, &[u8])>) -> InRecord {
        InRecord {
            offset: 7,
            timestamp_ms: 1,
            log_append_time: false,
            key: Some(b"k".to_vec()),
            value: Some(b"v".to_vec()),
            headers: headers
                .into_iter()
                .map(|(k, v)| (k.to_owned(), Some(v.to_vec())))
                .collect(),
        }
    }

    #[test]
    fn a_replay_drops_retry_headers_and_counts() {
        let r = record(vec![
            ("kafka_original-topic", b"orders"),
            ("retry_topic-attempts", &3i32.to_be_bytes()),
            ("traceId", b"t-1"),
            ("retry_topic-backoff-timestamp", &[1, 2]),
        ]);
        let Verdict::Replay {
            topic,
            record,
            count,
        } = prepare(&r, None, 3, 99)
        else {
            panic!("refused");
        };
        assert_eq!((topic.as_str(), count), ("orders", 1));
        let names: Vec<&str> = record.headers.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            vec!["kafka_original-topic", "traceId", REPLAY_COUNT_HEADER]
        );
        assert_eq!(record.headers[2].1, Some(vec![0, 0, 0, 1]));
        assert_eq!((record.key, record.value), (r.key.clone(), r.value.clone()));
        assert_eq!(record.timestamp_ms, 99);
        // Replayed once: counts 2, one count header only; --to overrides the origin.
        let again = record_with_count(1);
        match prepare(&again, Some("elsewhere"), 3, 0) {
            Verdict::Replay {
                topic,
                record,
                count,
            } => {
                assert_eq!((topic.as_str(), count), ("elsewhere", 2));
                let counts = record
                    .headers
                    .iter()
                    .filter(|(k, _)| k == REPLAY_COUNT_HEADER)
                    .count();
                assert_eq!(counts, 1);
            }
            Verdict::Refuse(r) => panic!("{r}"),
        }
    }

    fn record_with_count(n: i32) -> InRecord {
        let b = n.to_be_bytes();
        record(vec![
            ("kafka_dlt-original-topic", b"orders"),
            (REPLAY_COUNT_HEADER, &b),
        ])
    }

    #[test]
    fn refusals() {
        assert!(
            matches!(prepare(&record_with_count(3), None, 3, 0), Verdict::Refuse(r) if r.contains("replayed 3 times"))
        );
        assert!(matches!(
            prepare(&record_with_count(2), None, 3, 0),
            Verdict::Replay { count: 3, .. }
        ));
        assert!(
            matches!(prepare(&record(vec![]), None, 3, 0), Verdict::Refuse(r) if r.contains("no original-topic"))
        );
        assert!(matches!(
            prepare(&record(vec![]), Some("t"), 3, 0),
            Verdict::Replay { count: 1, .. }
        ));
        let bad = record(vec![
            ("kafka_original-topic", b"o"),
            (REPLAY_COUNT_HEADER, b"x"),
        ]);
        assert!(matches!(prepare(&bad, None, 3, 0), Verdict::Refuse(_)));
    }

    #[test]
    fn rates_parse() {
        assert_eq!(parse_rate("50/s"), Ok(50.0));
        assert_eq!(parse_rate("0.5"), Ok(0.5));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("fast").is_err());
    }
}
