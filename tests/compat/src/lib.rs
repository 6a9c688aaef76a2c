//! skein-compat: differential tests. Each scenario sends the same requests to Skein and to
//! the reference Apache Kafka broker and returns a normalised observation of what a client
//! sees (error codes, offsets, counts, configs); ids, timestamps, addresses, throttle times,
//! cluster ids and error message texts are left out or replaced by what they mean. The test
//! `tests/differential.rs` compares the two observations of every scenario against the table
//! of known, justified differences in [`known`].

pub mod brokers;
pub mod client;
pub mod known;
pub mod scenarios;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Result};
use bytes::Bytes;
use serde_json::{json, Value};
use skein_protocol::messages::create_topics_request::{
    CreatableTopic, CreatableTopicConfig, CreateTopicsRequest,
};
use skein_protocol::messages::fetch_request::{FetchPartition, FetchRequest, FetchTopic};
use skein_protocol::messages::fetch_response::PartitionData;
use skein_protocol::messages::list_offsets_request::{
    ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic,
};
use skein_protocol::messages::metadata_request::{MetadataRequest, MetadataRequestTopic};
use skein_protocol::messages::metadata_response::MetadataResponse;
use skein_protocol::messages::produce_request::{
    PartitionProduceData, ProduceRequest, TopicProduceData,
};
use skein_protocol::messages::produce_response::PartitionProduceResponse;
use skein_protocol::records::{BatchIter, RecordBatchBuilder};

pub use client::Client;

/// One scenario: a name (`area.what`), and what it does against one broker.
pub struct Scenario {
    pub name: &'static str,
    pub run: fn(&Ctx) -> Result<Value>,
}

impl Scenario {
    /// The part of the name before the first dot.
    pub fn area(&self) -> &'static str {
        self.name.split('.').next().unwrap_or(self.name)
    }
}

/// What a scenario gets: the broker to talk to and a prefix that makes its topic and group
/// names unique (the reference broker is shared by a whole test run).
pub struct Ctx {
    pub bootstrap: String,
    pub prefix: String,
}

/// Versions the scenarios use unless they test a version: ones both brokers serve.
pub mod v {
    pub const METADATA: i16 = 12;
    pub const PRODUCE: i16 = 9;
    pub const FETCH: i16 = 12;
    pub const LIST_OFFSETS: i16 = 7;
    pub const CREATE_TOPICS: i16 = 7;
    pub const DELETE_TOPICS: i16 = 6;
    pub const CREATE_PARTITIONS: i16 = 3;
    pub const DESCRIBE_CONFIGS: i16 = 4;
    pub const INCREMENTAL_ALTER_CONFIGS: i16 = 1;
    pub const DELETE_RECORDS: i16 = 2;
    pub const INIT_PRODUCER_ID: i16 = 4;
    pub const FIND_COORDINATOR: i16 = 4;
    pub const JOIN_GROUP: i16 = 9;
    pub const SYNC_GROUP: i16 = 5;
    pub const HEARTBEAT: i16 = 4;
    pub const LEAVE_GROUP: i16 = 5;
    pub const OFFSET_COMMIT: i16 = 8;
    pub const OFFSET_FETCH: i16 = 8;
    pub const DESCRIBE_GROUPS: i16 = 5;
    pub const LIST_GROUPS: i16 = 5;
    pub const DELETE_GROUPS: i16 = 2;
    pub const CONSUMER_GROUP_HEARTBEAT: i16 = 0;
}

/// The current wall-clock time in milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Polls `f` until it yields a value, failing after `timeout`.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The name of a Kafka error code, for readable observations.
pub fn err(code: i16) -> Value {
    let name = match code {
        -1 => "UNKNOWN_SERVER_ERROR",
        0 => "NONE",
        1 => "OFFSET_OUT_OF_RANGE",
        2 => "CORRUPT_MESSAGE",
        3 => "UNKNOWN_TOPIC_OR_PARTITION",
        4 => "INVALID_FETCH_SIZE",
        5 => "LEADER_NOT_AVAILABLE",
        6 => "NOT_LEADER_OR_FOLLOWER",
        7 => "REQUEST_TIMED_OUT",
        10 => "MESSAGE_TOO_LARGE",
        12 => "OFFSET_METADATA_TOO_LARGE",
        14 => "COORDINATOR_LOAD_IN_PROGRESS",
        15 => "COORDINATOR_NOT_AVAILABLE",
        16 => "NOT_COORDINATOR",
        17 => "INVALID_TOPIC_EXCEPTION",
        18 => "RECORD_LIST_TOO_LARGE",
        21 => "INVALID_REQUIRED_ACKS",
        22 => "ILLEGAL_GENERATION",
        23 => "INCONSISTENT_GROUP_PROTOCOL",
        24 => "INVALID_GROUP_ID",
        25 => "UNKNOWN_MEMBER_ID",
        26 => "INVALID_SESSION_TIMEOUT",
        27 => "REBALANCE_IN_PROGRESS",
        28 => "INVALID_COMMIT_OFFSET_SIZE",
        32 => "INVALID_TIMESTAMP",
        35 => "UNSUPPORTED_VERSION",
        36 => "TOPIC_ALREADY_EXISTS",
        37 => "INVALID_PARTITIONS",
        38 => "INVALID_REPLICATION_FACTOR",
        39 => "INVALID_REPLICA_ASSIGNMENT",
        40 => "INVALID_CONFIG",
        41 => "NOT_CONTROLLER",
        42 => "INVALID_REQUEST",
        43 => "UNSUPPORTED_FOR_MESSAGE_FORMAT",
        44 => "POLICY_VIOLATION",
        45 => "OUT_OF_ORDER_SEQUENCE_NUMBER",
        46 => "DUPLICATE_SEQUENCE_NUMBER",
        47 => "INVALID_PRODUCER_EPOCH",
        48 => "INVALID_TXN_STATE",
        59 => "UNKNOWN_PRODUCER_ID",
        68 => "NON_EMPTY_GROUP",
        69 => "GROUP_ID_NOT_FOUND",
        72 => "LISTENER_NOT_FOUND",
        73 => "TOPIC_DELETION_DISABLED",
        74 => "FENCED_LEADER_EPOCH",
        75 => "UNKNOWN_LEADER_EPOCH",
        76 => "UNSUPPORTED_COMPRESSION_TYPE",
        79 => "MEMBER_ID_REQUIRED",
        82 => "FENCED_INSTANCE_ID",
        85 => "GROUP_SUBSCRIBED_TO_TOPIC",
        86 => "INVALID_RECORD",
        87 => "UNSTABLE_OFFSET_COMMIT",
        89 => "THROTTLING_QUOTA_EXCEEDED",
        100 => "UNKNOWN_TOPIC_ID",
        104 => "INVALID_CLUSTER_ID",
        106 => "INCONSISTENT_TOPIC_ID",
        110 => "FENCED_MEMBER_EPOCH",
        111 => "UNRELEASED_INSTANCE_ID",
        112 => "UNSUPPORTED_ASSIGNOR",
        113 => "STALE_MEMBER_EPOCH",
        _ => return Value::String(format!("ERROR_{code}")),
    };
    Value::String(name.to_owned())
}

/// Whether an optional string is present (its text differs between brokers).
pub fn present(s: &Option<String>) -> Value {
    json!(s.as_deref().is_some_and(|s| !s.is_empty()))
}

/// A batch of `n` records `v0..`, timestamps `ts`, `ts+1`, ...
pub fn batch(n: usize, ts: i64) -> Bytes {
    let mut b = RecordBatchBuilder::new(ts);
    for i in 0..n {
        b = b.push(
            Some(format!("k{i}").as_bytes()),
            Some(format!("v{i}").as_bytes()),
            ts + i as i64,
        );
    }
    b.build().freeze()
}

/// An idempotent batch of `n` records.
pub fn idempotent_batch(n: usize, pid: i64, epoch: i16, seq: i32) -> Bytes {
    let ts = now_ms();
    let mut b = RecordBatchBuilder::new(ts).producer(pid, epoch, seq);
    for i in 0..n {
        b = b.push(None, Some(format!("v{i}").as_bytes()), ts);
    }
    b.build().freeze()
}

/// The number of records in a fetched records section, and its batches' base offsets.
pub fn count_records(records: &Option<Bytes>) -> (i64, Vec<i64>) {
    let Some(r) = records else { return (0, vec![]) };
    let mut n = 0;
    let mut bases = vec![];
    for (b, _) in BatchIter::new(r).flatten() {
        n += b.last_offset() - b.base_offset + 1;
        bases.push(b.base_offset);
    }
    (n, bases)
}

/// A Fetch's limits and isolation level (default: 1 MiB each, read_uncommitted).
#[derive(Debug, Clone, Copy)]
pub struct FetchOpts {
    pub max_bytes: i32,
    pub partition_max_bytes: i32,
    pub isolation: i8,
}

impl Default for FetchOpts {
    fn default() -> Self {
        FetchOpts {
            max_bytes: 1 << 20,
            partition_max_bytes: 1 << 20,
            isolation: 0,
        }
    }
}

impl Ctx {
    pub fn client(&self) -> Result<Client> {
        Client::connect(&self.bootstrap)
    }

    /// A unique topic or group name.
    pub fn name(&self, s: &str) -> String {
        format!("{}-{s}", self.prefix)
    }

    /// Creates a topic (must succeed) and waits until every partition has a leader.
    pub fn create_topic(
        &self,
        c: &mut Client,
        name: &str,
        partitions: i32,
        configs: &[(&str, &str)],
    ) -> Result<()> {
        let r = c.send(
            v::CREATE_TOPICS,
            create_request(name, partitions, 1, configs),
        )?;
        let t = &r.topics[0];
        if t.error_code != 0 {
            bail!(
                "create topic {name}: error {} {:?}",
                t.error_code,
                t.error_message
            );
        }
        self.wait_ready(c, name, partitions)
    }

    /// Waits until Metadata shows `partitions` partitions of `name`, each with a leader.
    pub fn wait_ready(&self, c: &mut Client, name: &str, partitions: i32) -> Result<()> {
        wait_for(
            &format!("topic {name} ready"),
            Duration::from_secs(30),
            || {
                let m = self.metadata(c, Some(&[name]), false)?;
                let t = &m.topics[0];
                let listed = t.error_code == 0
                    && t.partitions.len() == partitions as usize
                    && t.partitions
                        .iter()
                        .all(|p| p.leader_id >= 0 && p.error_code == 0);
                // Metadata can list a leader before the partition serves requests (Kafka applies
                // the metadata change to its replica manager a moment later): ask it too.
                Ok((listed && self.partitions_serve(c, name, partitions)?).then_some(()))
            },
        )
    }

    /// True when ListOffsets (latest) answers without error for every partition.
    fn partitions_serve(&self, c: &mut Client, name: &str, partitions: i32) -> Result<bool> {
        let r = c.send(
            v::LIST_OFFSETS,
            ListOffsetsRequest {
                replica_id: -1,
                topics: vec![ListOffsetsTopic {
                    name: name.to_owned(),
                    partitions: (0..partitions)
                        .map(|p| ListOffsetsPartition {
                            partition_index: p,
                            current_leader_epoch: -1,
                            timestamp: -1,
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            },
        )?;
        Ok(r.topics
            .iter()
            .flat_map(|t| &t.partitions)
            .all(|p| p.error_code == 0))
    }

    pub fn metadata(
        &self,
        c: &mut Client,
        topics: Option<&[&str]>,
        auto_create: bool,
    ) -> Result<MetadataResponse> {
        c.send(
            v::METADATA,
            MetadataRequest {
                topics: topics.map(|ts| {
                    ts.iter()
                        .map(|t| MetadataRequestTopic {
                            name: Some((*t).to_owned()),
                            ..Default::default()
                        })
                        .collect()
                }),
                allow_auto_topic_creation: auto_create,
                ..Default::default()
            },
        )
    }

    /// Produces one batch to one partition and returns the partition's answer.
    pub fn produce(
        &self,
        c: &mut Client,
        topic: &str,
        partition: i32,
        records: Bytes,
        acks: i16,
    ) -> Result<PartitionProduceResponse> {
        let r = c.send(v::PRODUCE, produce_request(topic, partition, records, acks))?;
        Ok(r.responses
            .into_iter()
            .next()
            .and_then(|t| t.partition_responses.into_iter().next())
            .unwrap_or_default())
    }

    /// Fetches one partition from `offset` (v12, no wait).
    pub fn fetch(
        &self,
        c: &mut Client,
        topic: &str,
        partition: i32,
        offset: i64,
        opts: FetchOpts,
    ) -> Result<(i16, PartitionData)> {
        let FetchOpts {
            max_bytes,
            partition_max_bytes,
            isolation,
        } = opts;
        let r = c.send(
            v::FETCH,
            FetchRequest {
                replica_id: -1,
                max_wait_ms: 0,
                min_bytes: 0,
                max_bytes,
                isolation_level: isolation,
                session_epoch: -1,
                topics: vec![FetchTopic {
                    topic: topic.to_owned(),
                    partitions: vec![FetchPartition {
                        partition,
                        current_leader_epoch: -1,
                        fetch_offset: offset,
                        last_fetched_epoch: -1,
                        log_start_offset: -1,
                        partition_max_bytes,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            },
        )?;
        let p = r
            .responses
            .into_iter()
            .next()
            .and_then(|t| t.partitions.into_iter().next())
            .unwrap_or_default();
        Ok((r.error_code, p))
    }
}

pub fn create_request(
    name: &str,
    partitions: i32,
    rf: i16,
    configs: &[(&str, &str)],
) -> CreateTopicsRequest {
    CreateTopicsRequest {
        topics: vec![creatable(name, partitions, rf, configs)],
        timeout_ms: 30_000,
        validate_only: false,
        ..Default::default()
    }
}

pub fn creatable(name: &str, partitions: i32, rf: i16, configs: &[(&str, &str)]) -> CreatableTopic {
    CreatableTopic {
        name: name.to_owned(),
        num_partitions: partitions,
        replication_factor: rf,
        configs: configs
            .iter()
            .map(|(k, v)| CreatableTopicConfig {
                name: (*k).to_owned(),
                value: Some((*v).to_owned()),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

pub fn produce_request(topic: &str, partition: i32, records: Bytes, acks: i16) -> ProduceRequest {
    ProduceRequest {
        transactional_id: None,
        acks,
        timeout_ms: 30_000,
        topic_data: vec![TopicProduceData {
            name: topic.to_owned(),
            partition_data: vec![PartitionProduceData {
                index: partition,
                records: Some(records),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Replaces the run's unique prefix in every string of an observation by `$`.
pub fn normalise(value: Value, prefix: &str) -> Value {
    match value {
        Value::String(s) => Value::String(s.replace(prefix, "$")),
        Value::Array(a) => Value::Array(a.into_iter().map(|v| normalise(v, prefix)).collect()),
        Value::Object(o) => Value::Object(
            o.into_iter()
                .map(|(k, v)| (k.replace(prefix, "$"), normalise(v, prefix)))
                .collect(),
        ),
        v => v,
    }
}
