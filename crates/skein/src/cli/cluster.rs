//! `skein cluster info|health|add-voter|remove-voter`: the operator's view of a cluster and of
//! its KRaft controller quorum, through the Kafka protocol only, so it works against any
//! Kafka-compatible broker.
//!
//! `info` and `health` read the same [`ClusterView`]: brokers (DescribeCluster, falling back
//! to Metadata), the controller quorum (DescribeQuorum, API 55, which Kafka brokers forward to
//! the active controller), every partition from Metadata and each topic's
//! `min.insync.replicas` (DescribeConfigs). An API the broker does not serve leaves its part
//! out with a one-line note rather than failing the command. `add-voter` and `remove-voter`
//! send KIP-853's AddRaftVoter (80) and RemoveRaftVoter (81) and report the broker's answer.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use skein_protocol::messages::add_raft_voter_request::{AddRaftVoterRequest, Listener};
use skein_protocol::messages::describe_cluster_request::DescribeClusterRequest;
use skein_protocol::messages::describe_cluster_response::DescribeClusterResponse;
use skein_protocol::messages::describe_configs_request::{
    DescribeConfigsRequest, DescribeConfigsResource,
};
use skein_protocol::messages::describe_quorum_request::{
    DescribeQuorumRequest, PartitionData, TopicData,
};
use skein_protocol::messages::describe_quorum_response::{self, DescribeQuorumResponse};
use skein_protocol::messages::metadata_response::MetadataResponse;
use skein_protocol::messages::remove_raft_voter_request::RemoveRaftVoterRequest;
use skein_protocol::{ApiKey, Uuid};

use super::client::{negotiate, Cluster};
use super::errors::{self, KafkaError};
use super::output::{human_duration, or_dash, print_json, table, Output};
use super::Common;

/// The KRaft metadata log, whose partition 0 DescribeQuorum describes.
const METADATA_TOPIC: &str = "__cluster_metadata";
/// ConfigResource type of a topic.
const RESOURCE_TOPIC: i8 = 2;
/// The exit code of `health` when the cluster cannot be reached or read.
const EXIT_UNREACHABLE: u8 = 2;

#[derive(clap::Subcommand)]
pub enum ClusterCommand {
    /// Show the cluster id, controller, brokers, controller quorum, leaderless partitions and
    /// supported APIs.
    Info(InfoArgs),
    /// One-screen health summary; exits 0 when healthy, 1 when a partition is offline or no
    /// quorum leader is known, 2 when the cluster cannot be reached.
    Health(HealthArgs),
    /// Add a controller to the quorum (KIP-853 AddRaftVoter).
    AddVoter(AddVoterArgs),
    /// Remove a controller from the quorum (KIP-853 RemoveRaftVoter).
    RemoveVoter(RemoveVoterArgs),
}

#[derive(clap::Args)]
pub struct InfoArgs {
    #[command(flatten)]
    pub common: Common,
}

#[derive(clap::Args)]
pub struct HealthArgs {
    #[command(flatten)]
    pub common: Common,
    /// A voter behind the high watermark that has not been caught up for this long counts as
    /// lagging.
    #[arg(long, value_name = "MS", default_value_t = HealthArgs::DEFAULT_MAX_VOTER_LAG_MS)]
    pub max_voter_lag_ms: i64,
    /// Also exit 1 when the cluster is degraded (fenced brokers, lagging voters,
    /// under-replicated or under-min-ISR partitions).
    #[arg(long)]
    pub strict: bool,
}

#[derive(clap::Args)]
pub struct AddVoterArgs {
    #[command(flatten)]
    pub common: Common,
    /// The new voter's node id.
    #[arg(long, value_name = "N")]
    pub id: i32,
    /// The new voter's directory id (its `meta.properties` `directory.id`, 22 characters of
    /// URL-safe base64).
    #[arg(long, value_name = "UUID", value_parser = parse_uuid, allow_hyphen_values = true)]
    pub directory_id: Uuid,
    /// The new voter's controller listener, `HOST:PORT` or `NAME://HOST:PORT`; repeatable.
    #[arg(long, value_name = "HOST:PORT", required = true)]
    pub endpoint: Vec<String>,
    /// The listener name of endpoints given without one.
    #[arg(long, value_name = "NAME", default_value = "CONTROLLER")]
    pub listener_name: String,
    /// How long the controller may take to add the voter.
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    pub timeout_ms: i32,
}

#[derive(clap::Args)]
pub struct RemoveVoterArgs {
    #[command(flatten)]
    pub common: Common,
    /// The voter's node id.
    #[arg(long, value_name = "N")]
    pub id: i32,
    /// The voter's directory id.
    #[arg(long, value_name = "UUID", value_parser = parse_uuid, allow_hyphen_values = true)]
    pub directory_id: Uuid,
}

fn parse_uuid(s: &str) -> Result<Uuid, String> {
    s.parse::<Uuid>().map_err(|e| e.to_string())
}

pub fn run(command: ClusterCommand) -> Result<ExitCode> {
    match command {
        ClusterCommand::Info(a) => info(a).context("cluster info").map(|()| ExitCode::SUCCESS),
        ClusterCommand::Health(a) => Ok(health(a)),
        ClusterCommand::AddVoter(a) => add_voter(a)
            .context("cluster add-voter")
            .map(|()| ExitCode::SUCCESS),
        ClusterCommand::RemoveVoter(a) => remove_voter(a)
            .context("cluster remove-voter")
            .map(|()| ExitCode::SUCCESS),
    }
}

// ---------------------------------------------------------------------------------------------
// The view both `info` and `health` print.

/// A broker as DescribeCluster (or Metadata) lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BrokerRow {
    id: i32,
    host: String,
    port: i32,
    rack: Option<String>,
    /// `None` when the broker did not say (DescribeCluster before v2, Metadata).
    fenced: Option<bool>,
}

/// One voter or observer of the metadata log, as DescribeQuorum reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Replica {
    id: i32,
    /// `None` before DescribeQuorum v2 or when the replica has none.
    directory_id: Option<Uuid>,
    /// `None` when unknown (-1 on the wire).
    log_end_offset: Option<i64>,
    /// Leader wall-clock times in ms since the epoch; `None` when unknown.
    last_fetch_ms: Option<i64>,
    last_caught_up_ms: Option<i64>,
}

/// The controller quorum from DescribeQuorum.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Quorum {
    /// `None` when no leader is known (-1).
    leader_id: Option<i32>,
    leader_epoch: i32,
    high_watermark: i64,
    voters: Vec<Replica>,
    observers: Vec<Replica>,
    /// Controller endpoints by node id (v2).
    controllers: BTreeMap<i32, Vec<String>>,
}

impl Quorum {
    /// How far `replica` is behind the high watermark (never negative: the leader's own log
    /// end may be ahead of the high watermark); `None` when its log end is unknown.
    fn lag(&self, replica: &Replica) -> Option<i64> {
        replica
            .log_end_offset
            .map(|leo| (self.high_watermark - leo).max(0))
    }

    /// Voters that are behind and have not been caught up within `max_lag_ms` of `now_ms`,
    /// or whose position the leader does not know.
    fn lagging_voters(&self, now_ms: i64, max_lag_ms: i64) -> Vec<i32> {
        self.voters
            .iter()
            .filter(|v| Some(v.id) != self.leader_id)
            .filter(|v| match self.lag(v) {
                None => true,
                Some(0) => false,
                Some(_) => v
                    .last_caught_up_ms
                    .is_none_or(|t| now_ms.saturating_sub(t) > max_lag_ms),
            })
            .map(|v| v.id)
            .collect()
    }
}

/// What DescribeQuorum gave.
#[derive(Debug, Clone, PartialEq, Eq)]
enum QuorumState {
    Known(Quorum),
    /// The broker does not serve DescribeQuorum (in a version this client speaks).
    NotServed(String),
    /// It is served but answered an error (no controller reachable, for one).
    Failed(String),
}

/// A partition Metadata reports.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PartitionRow {
    topic: String,
    /// `None` when the whole topic reported an error (its partitions are not listed).
    partition: Option<i32>,
    leader: i32,
    replicas: Vec<i32>,
    isr: Vec<i32>,
    error_code: i16,
}

impl PartitionRow {
    /// No leader: leader -1, or LEADER_NOT_AVAILABLE.
    fn offline(&self) -> bool {
        self.leader < 0 || self.error_code == errors::LEADER_NOT_AVAILABLE
    }

    fn under_replicated(&self) -> bool {
        !self.offline() && self.isr.len() < self.replicas.len()
    }

    fn json(&self) -> Value {
        json!({
            "topic": self.topic,
            "partition": self.partition,
            "leader": (self.leader >= 0).then_some(self.leader),
            "replicas": self.replicas,
            "isr": self.isr,
            "error": (self.error_code != 0)
                .then(|| errors::name(self.error_code).map_or_else(|| self.error_code.to_string(), str::to_owned)),
        })
    }
}

/// Everything `info` and `health` show.
struct ClusterView {
    cluster_id: Option<String>,
    controller: i32,
    bootstrap: String,
    brokers: Vec<BrokerRow>,
    quorum: QuorumState,
    partitions: Vec<PartitionRow>,
    /// `min.insync.replicas` by topic; `None` when DescribeConfigs could not say.
    min_isr: Option<BTreeMap<String, usize>>,
    /// One line for each part left out.
    notes: Vec<String>,
    /// (key, name, broker min, broker max, version this client uses).
    apis: Vec<(i16, String, i16, i16, Option<i16>)>,
}

impl ClusterView {
    fn offline(&self) -> Vec<&PartitionRow> {
        self.partitions.iter().filter(|p| p.offline()).collect()
    }

    fn under_replicated(&self) -> Vec<&PartitionRow> {
        self.partitions
            .iter()
            .filter(|p| p.under_replicated())
            .collect()
    }

    /// Online partitions whose ISR is smaller than their topic's `min.insync.replicas`.
    fn under_min_isr(&self) -> Option<Vec<&PartitionRow>> {
        let min_isr = self.min_isr.as_ref()?;
        Some(
            self.partitions
                .iter()
                .filter(|p| !p.offline())
                .filter(|p| min_isr.get(&p.topic).is_some_and(|m| p.isr.len() < *m))
                .collect(),
        )
    }

    fn fenced_known(&self) -> bool {
        !self.brokers.is_empty() && self.brokers.iter().all(|b| b.fenced.is_some())
    }
}

fn gather(cluster: &mut Cluster) -> Result<ClusterView> {
    let metadata = cluster.metadata(None).context("Metadata")?;
    let mut notes = Vec::new();
    let mut cluster_id = cluster.cluster_id.clone();
    let mut controller = cluster.controller_id;
    let mut brokers: Vec<BrokerRow> = cluster
        .brokers()
        .values()
        .map(|b| BrokerRow {
            id: b.node_id,
            host: b.host.clone(),
            port: b.port,
            rack: b.rack.clone(),
            fenced: None,
        })
        .collect();
    match describe_cluster(cluster) {
        Ok(Some(described)) if described.error_code == 0 => {
            cluster_id = Some(described.cluster_id);
            controller = described.controller_id;
            brokers = described.brokers;
        }
        Ok(Some(described)) => notes.push(format!(
            "DescribeCluster failed ({}); brokers are from Metadata",
            KafkaError::new(described.error_code, described.error_message)
        )),
        Ok(None) => {}
        Err(e) => notes.push(format!(
            "DescribeCluster failed ({e:#}); brokers are from Metadata"
        )),
    }
    brokers.sort_by_key(|b| b.id);
    if !brokers.iter().all(|b| b.fenced.is_some()) {
        notes.push(
            "fenced brokers: not shown (the broker does not serve DescribeCluster v2); only \
             unfenced brokers are listed"
                .to_owned(),
        );
    }
    let quorum = describe_quorum(cluster)?;
    match &quorum {
        QuorumState::NotServed(why) | QuorumState::Failed(why) => {
            notes.push(format!("controller quorum: {why}"))
        }
        QuorumState::Known(_) => {}
    }
    let partitions = partitions(&metadata);
    let topics: Vec<String> = {
        let mut t: Vec<String> = partitions.iter().map(|p| p.topic.clone()).collect();
        t.dedup();
        t
    };
    let min_isr = match min_isr(cluster, &topics) {
        Ok(m) => Some(m),
        Err(e) => {
            notes.push(format!("under-min-ISR partitions: not known ({e:#})"));
            None
        }
    };
    let conn = cluster.any()?;
    let apis = conn
        .broker_versions()
        .iter()
        .map(|(key, range)| {
            let api = ApiKey::from_i16(*key);
            (
                *key,
                api.map_or_else(|| format!("unknown({key})"), |a| a.name().to_owned()),
                range.min,
                range.max,
                api.and_then(|a| negotiate(a, Some(*range))),
            )
        })
        .collect();
    Ok(ClusterView {
        cluster_id,
        controller,
        bootstrap: conn.addr().to_owned(),
        brokers,
        quorum,
        partitions,
        min_isr,
        notes,
        apis,
    })
}

/// What DescribeCluster answered.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DescribedCluster {
    error_code: i16,
    error_message: Option<String>,
    cluster_id: String,
    controller_id: i32,
    brokers: Vec<BrokerRow>,
}

/// DescribeCluster, the admin client's source of brokers: the highest version the codec and
/// the broker share, with fenced brokers included from v2 (KIP-1073); `None` when the broker
/// serves none (Metadata is then the source).
fn describe_cluster(cluster: &mut Cluster) -> Result<Option<DescribedCluster>> {
    let conn = cluster.any()?;
    let Ok(version) = conn.version(ApiKey::DescribeCluster) else {
        return Ok(None);
    };
    let response = conn.send(DescribeClusterRequest {
        include_cluster_authorized_operations: false,
        endpoint_type: 1,
        include_fenced_brokers: true,
        ..Default::default()
    })?;
    Ok(Some(described(response, version)))
}

/// A DescribeCluster response of `version`: brokers are marked fenced or not from v2 on
/// (before v2 the broker lists unfenced brokers only, and says nothing).
fn described(response: DescribeClusterResponse, version: i16) -> DescribedCluster {
    DescribedCluster {
        error_code: response.error_code,
        error_message: response.error_message,
        cluster_id: response.cluster_id,
        controller_id: response.controller_id,
        brokers: response
            .brokers
            .into_iter()
            .map(|b| BrokerRow {
                id: b.broker_id,
                host: b.host,
                port: b.port,
                rack: b.rack,
                fenced: (version >= 2).then_some(b.is_fenced),
            })
            .collect(),
    }
}

/// Every partition in a Metadata response, sorted by topic and partition.
fn partitions(metadata: &MetadataResponse) -> Vec<PartitionRow> {
    let mut rows = Vec::new();
    for t in &metadata.topics {
        let topic = t.name.clone().unwrap_or_default();
        if t.error_code == errors::UNKNOWN_TOPIC_OR_PARTITION {
            continue; // deleted between listing and describing
        }
        if t.error_code != 0 && t.partitions.is_empty() {
            rows.push(PartitionRow {
                topic,
                partition: None,
                leader: -1,
                replicas: Vec::new(),
                isr: Vec::new(),
                error_code: t.error_code,
            });
            continue;
        }
        for p in &t.partitions {
            rows.push(PartitionRow {
                topic: topic.clone(),
                partition: Some(p.partition_index),
                leader: p.leader_id,
                replicas: p.replica_nodes.clone(),
                isr: p.isr_nodes.clone(),
                error_code: p.error_code,
            });
        }
    }
    rows.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    rows
}

/// DescribeQuorum for `__cluster_metadata-0`.
fn describe_quorum(cluster: &mut Cluster) -> Result<QuorumState> {
    let conn = cluster.any()?;
    if let Err(e) = conn.version(ApiKey::DescribeQuorum) {
        return Ok(QuorumState::NotServed(format!("not shown ({e})")));
    }
    let response = conn.send(DescribeQuorumRequest {
        topics: vec![TopicData {
            topic_name: METADATA_TOPIC.to_owned(),
            partitions: vec![PartitionData {
                partition_index: 0,
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    })?;
    Ok(quorum_from_response(response))
}

fn quorum_from_response(response: DescribeQuorumResponse) -> QuorumState {
    let failed = |code: i16, message: Option<String>| {
        QuorumState::Failed(format!(
            "DescribeQuorum failed: {}",
            KafkaError::new(code, message)
        ))
    };
    if response.error_code != 0 {
        return failed(response.error_code, response.error_message);
    }
    let Some(p) = response
        .topics
        .into_iter()
        .filter(|t| t.topic_name == METADATA_TOPIC)
        .flat_map(|t| t.partitions)
        .find(|p| p.partition_index == 0)
    else {
        return QuorumState::Failed(format!(
            "DescribeQuorum did not describe {METADATA_TOPIC}-0"
        ));
    };
    if p.error_code != 0 {
        return failed(p.error_code, p.error_message);
    }
    let replica = |r: describe_quorum_response::ReplicaState| Replica {
        id: r.replica_id,
        directory_id: (!r.replica_directory_id.is_zero()).then_some(r.replica_directory_id),
        log_end_offset: (r.log_end_offset >= 0).then_some(r.log_end_offset),
        last_fetch_ms: (r.last_fetch_timestamp >= 0).then_some(r.last_fetch_timestamp),
        last_caught_up_ms: (r.last_caught_up_timestamp >= 0).then_some(r.last_caught_up_timestamp),
    };
    let mut voters: Vec<Replica> = p.current_voters.into_iter().map(replica).collect();
    let mut observers: Vec<Replica> = p.observers.into_iter().map(replica).collect();
    voters.sort_by_key(|r| r.id);
    observers.sort_by_key(|r| r.id);
    let controllers = response
        .nodes
        .into_iter()
        .map(|n| {
            let endpoints = n
                .listeners
                .iter()
                .map(|l| format!("{}://{}", l.name, host_port(&l.host, i32::from(l.port))))
                .collect();
            (n.node_id, endpoints)
        })
        .collect();
    QuorumState::Known(Quorum {
        leader_id: (p.leader_id >= 0).then_some(p.leader_id),
        leader_epoch: p.leader_epoch,
        high_watermark: p.high_watermark,
        voters,
        observers,
        controllers,
    })
}

/// `min.insync.replicas` of each topic, in one DescribeConfigs request.
fn min_isr(cluster: &mut Cluster, topics: &[String]) -> Result<BTreeMap<String, usize>> {
    let mut out = BTreeMap::new();
    if topics.is_empty() {
        return Ok(out);
    }
    let conn = cluster.any()?;
    conn.version(ApiKey::DescribeConfigs)?;
    let response = conn.send(DescribeConfigsRequest {
        resources: topics
            .iter()
            .map(|t| DescribeConfigsResource {
                resource_type: RESOURCE_TOPIC,
                resource_name: t.clone(),
                configuration_keys: Some(vec!["min.insync.replicas".to_owned()]),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    })?;
    for r in response.results {
        if r.error_code == errors::UNKNOWN_TOPIC_OR_PARTITION {
            continue;
        }
        KafkaError::check(r.error_code, r.error_message.as_deref())
            .with_context(|| format!("DescribeConfigs of {}", r.resource_name))?;
        let value = r
            .configs
            .iter()
            .find(|c| c.name == "min.insync.replicas")
            .and_then(|c| c.value.as_deref())
            .ok_or_else(|| anyhow!("no min.insync.replicas for {}", r.resource_name))?;
        let n = value
            .parse::<usize>()
            .with_context(|| format!("min.insync.replicas of {} is {value:?}", r.resource_name))?;
        out.insert(r.resource_name, n);
    }
    Ok(out)
}

fn host_port(host: &str, port: i32) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `12.3s ago`, or `-` when unknown.
fn ago(now_ms: i64, at: Option<i64>) -> String {
    at.map_or_else(
        || "-".to_owned(),
        |t| format!("{} ago", human_duration(now_ms.saturating_sub(t))),
    )
}

/// Node ids as `1,2,3`, or `-` for none.
fn ids(nodes: &[i32]) -> String {
    if nodes.is_empty() {
        return "-".to_owned();
    }
    nodes
        .iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn partition_name(p: &PartitionRow) -> String {
    match p.partition {
        Some(i) => format!("{}-{i}", p.topic),
        None => format!("{} (every partition)", p.topic),
    }
}

fn replica_json(q: &Quorum, r: &Replica) -> Value {
    json!({
        "id": r.id,
        "directory_id": r.directory_id.map(|d| d.to_string()),
        "log_end_offset": r.log_end_offset,
        "lag": q.lag(r),
        "last_fetch_timestamp": r.last_fetch_ms,
        "last_caught_up_timestamp": r.last_caught_up_ms,
    })
}

fn quorum_json(state: &QuorumState, now_ms: i64, max_lag_ms: i64) -> Value {
    match state {
        QuorumState::Known(q) => json!({
            "available": true,
            "leader_id": q.leader_id,
            "leader_epoch": q.leader_epoch,
            "high_watermark": q.high_watermark,
            "voters": q.voters.iter().map(|r| replica_json(q, r)).collect::<Vec<_>>(),
            "observers": q.observers.iter().map(|r| replica_json(q, r)).collect::<Vec<_>>(),
            "controllers": q.controllers.iter().map(|(id, e)| json!({"id": id, "endpoints": e})).collect::<Vec<_>>(),
            "lagging_voters": q.lagging_voters(now_ms, max_lag_ms),
        }),
        QuorumState::NotServed(why) | QuorumState::Failed(why) => json!({
            "available": false,
            "served": !matches!(state, QuorumState::NotServed(_)),
            "reason": why,
        }),
    }
}

fn brokers_json(brokers: &[BrokerRow]) -> Value {
    Value::Array(
        brokers
            .iter()
            .map(|b| {
                json!({
                    "id": b.id,
                    "host": b.host,
                    "port": b.port,
                    "rack": b.rack,
                    "fenced": b.fenced,
                })
            })
            .collect(),
    )
}

/// The voters and observers table.
fn quorum_table(q: &Quorum, now_ms: i64) -> String {
    let row = |role: &str, r: &Replica| {
        let role = if Some(r.id) == q.leader_id {
            "leader"
        } else {
            role
        };
        vec![
            r.id.to_string(),
            role.to_owned(),
            or_dash(r.directory_id),
            or_dash(r.log_end_offset),
            or_dash(q.lag(r)),
            ago(now_ms, r.last_fetch_ms),
            ago(now_ms, r.last_caught_up_ms),
            q.controllers
                .get(&r.id)
                .map_or_else(|| "-".to_owned(), |e| e.join(",")),
        ]
    };
    let rows: Vec<Vec<String>> = q
        .voters
        .iter()
        .map(|r| row("voter", r))
        .chain(q.observers.iter().map(|r| row("observer", r)))
        .collect();
    table(
        &[
            "NODE",
            "ROLE",
            "DIRECTORY-ID",
            "LOG-END",
            "LAG",
            "LAST-FETCH",
            "CAUGHT-UP",
            "ENDPOINTS",
        ],
        &rows,
    )
}

// ---------------------------------------------------------------------------------------------
// info

fn info(args: InfoArgs) -> Result<()> {
    let mut cluster = args.common.connect()?;
    let view = gather(&mut cluster)?;
    let now = now_ms();
    let offline = view.offline();
    match args.common.output {
        Output::Text => {
            println!("cluster id  {}", view.cluster_id.as_deref().unwrap_or("-"));
            println!(
                "controller  {}",
                if view.controller >= 0 {
                    view.controller.to_string()
                } else {
                    "-".to_owned()
                }
            );
            println!("bootstrap   {}", view.bootstrap);
            println!();
            let fenced_known = view.fenced_known();
            let rows: Vec<Vec<String>> = view
                .brokers
                .iter()
                .map(|b| {
                    let mut row = vec![
                        b.id.to_string(),
                        b.host.clone(),
                        b.port.to_string(),
                        or_dash(b.rack.clone()),
                    ];
                    if fenced_known {
                        row.push(
                            if b.fenced == Some(true) {
                                "fenced"
                            } else {
                                "live"
                            }
                            .into(),
                        );
                    }
                    row
                })
                .collect();
            let mut header = vec!["BROKER", "HOST", "PORT", "RACK"];
            if fenced_known {
                header.push("STATE");
            }
            print!("{}", table(&header, &rows));
            println!();
            if let QuorumState::Known(q) = &view.quorum {
                println!(
                    "quorum leader {}, epoch {}, high watermark {}",
                    or_dash(q.leader_id),
                    q.leader_epoch,
                    q.high_watermark
                );
                print!("{}", quorum_table(q, now));
                println!();
            }
            if offline.is_empty() {
                println!("partitions without a leader: none");
            } else {
                println!("partitions without a leader: {}", offline.len());
                let rows: Vec<Vec<String>> = offline
                    .iter()
                    .map(|p| {
                        vec![
                            p.topic.clone(),
                            or_dash(p.partition),
                            ids(&p.replicas),
                            ids(&p.isr),
                            errors::name(p.error_code).unwrap_or("-").to_owned(),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table(&["TOPIC", "PARTITION", "REPLICAS", "ISR", "ERROR"], &rows)
                );
            }
            for note in &view.notes {
                println!("note: {note}");
            }
            println!();
            let rows: Vec<Vec<String>> = view
                .apis
                .iter()
                .map(|(key, name, min, max, used)| {
                    vec![
                        name.clone(),
                        key.to_string(),
                        min.to_string(),
                        max.to_string(),
                        or_dash(*used),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(&["API", "KEY", "MIN", "MAX", "SKEIN-CLI-USES"], &rows)
            );
        }
        Output::Json => print_json(&json!({
            "cluster_id": view.cluster_id,
            "controller": (view.controller >= 0).then_some(view.controller),
            "bootstrap": view.bootstrap,
            "brokers": brokers_json(&view.brokers),
            "quorum": quorum_json(&view.quorum, now, HealthArgs::DEFAULT_MAX_VOTER_LAG_MS),
            "offline_partitions": offline.iter().map(|p| p.json()).collect::<Vec<_>>(),
            "notes": view.notes,
            "apis": view.apis.iter().map(|(key, name, min, max, used)| json!({
                "key": key,
                "name": name,
                "min_version": min,
                "max_version": max,
                "client_version": used,
            })).collect::<Vec<_>>(),
        })),
    }
    Ok(())
}

impl HealthArgs {
    const DEFAULT_MAX_VOTER_LAG_MS: i64 = 10_000;
}

// ---------------------------------------------------------------------------------------------
// health

/// How healthy the cluster is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    /// Nothing wrong.
    Healthy,
    /// Serving everything, with less redundancy than configured.
    Degraded,
    /// A partition is offline, or the quorum has no known leader.
    Unhealthy,
}

impl Status {
    fn name(self) -> &'static str {
        match self {
            Status::Healthy => "healthy",
            Status::Degraded => "degraded",
            Status::Unhealthy => "unhealthy",
        }
    }
}

/// The findings `health` prints and bases its exit code on.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Health {
    status: Status,
    /// One line per problem, worst first.
    problems: Vec<String>,
}

fn assess(view: &ClusterView, now_ms: i64, max_voter_lag_ms: i64) -> Health {
    let mut unhealthy = Vec::new();
    let mut degraded = Vec::new();
    let offline = view.offline();
    if !offline.is_empty() {
        unhealthy.push(format!(
            "{} partition(s) offline: {}",
            offline.len(),
            list(offline.iter().map(|p| partition_name(p)))
        ));
    }
    match &view.quorum {
        QuorumState::Known(q) => {
            if q.leader_id.is_none() {
                unhealthy.push("the controller quorum has no leader".to_owned());
            }
            let lagging = q.lagging_voters(now_ms, max_voter_lag_ms);
            if !lagging.is_empty() {
                degraded.push(format!(
                    "lagging voter(s): {}",
                    list(lagging.iter().map(i32::to_string))
                ));
            }
        }
        QuorumState::Failed(why) => {
            unhealthy.push(format!("no quorum leader known: {why}"));
        }
        QuorumState::NotServed(_) => {}
    }
    let fenced: Vec<i32> = view
        .brokers
        .iter()
        .filter(|b| b.fenced == Some(true))
        .map(|b| b.id)
        .collect();
    if !fenced.is_empty() {
        degraded.push(format!(
            "fenced broker(s): {}",
            list(fenced.iter().map(i32::to_string))
        ));
    }
    let urp = view.under_replicated();
    if !urp.is_empty() {
        degraded.push(format!(
            "{} under-replicated partition(s): {}",
            urp.len(),
            list(urp.iter().map(|p| partition_name(p)))
        ));
    }
    if let Some(under) = view.under_min_isr() {
        if !under.is_empty() {
            degraded.push(format!(
                "{} partition(s) under min ISR: {}",
                under.len(),
                list(under.iter().map(|p| partition_name(p)))
            ));
        }
    }
    let status = if !unhealthy.is_empty() {
        Status::Unhealthy
    } else if !degraded.is_empty() {
        Status::Degraded
    } else {
        Status::Healthy
    };
    unhealthy.extend(degraded);
    Health {
        status,
        problems: unhealthy,
    }
}

/// The first ten items, comma-separated, then how many more.
fn list(items: impl Iterator<Item = String>) -> String {
    const SHOWN: usize = 10;
    let items: Vec<String> = items.collect();
    let mut out = items[..items.len().min(SHOWN)].join(", ");
    if items.len() > SHOWN {
        out.push_str(&format!(" and {} more", items.len() - SHOWN));
    }
    out
}

fn health(args: HealthArgs) -> ExitCode {
    let view = match args.common.connect().and_then(|mut c| gather(&mut c)) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("skein: cluster health: {e:#}");
            if args.common.output == Output::Json {
                print_json(&json!({
                    "status": "unreachable",
                    "exit_code": EXIT_UNREACHABLE,
                    "error": format!("{e:#}"),
                }));
            }
            return ExitCode::from(EXIT_UNREACHABLE);
        }
    };
    let now = now_ms();
    let health = assess(&view, now, args.max_voter_lag_ms);
    let code: u8 = match health.status {
        Status::Healthy => 0,
        Status::Degraded if !args.strict => 0,
        _ => 1,
    };
    let fenced = view
        .brokers
        .iter()
        .filter(|b| b.fenced == Some(true))
        .count();
    let live = view.brokers.len() - fenced;
    let offline = view.offline();
    let urp = view.under_replicated();
    let under_min = view.under_min_isr();
    match args.common.output {
        Output::Text => {
            println!("status      {}", health.status.name());
            println!(
                "cluster     {} (bootstrap {})",
                view.cluster_id.as_deref().unwrap_or("-"),
                view.bootstrap
            );
            let fenced_text = if view.fenced_known() {
                fenced.to_string()
            } else {
                "unknown".to_owned()
            };
            println!(
                "brokers     {live} live ({}), {fenced_text} fenced",
                list(
                    view.brokers
                        .iter()
                        .filter(|b| b.fenced != Some(true))
                        .map(|b| b.id.to_string())
                )
            );
            match &view.quorum {
                QuorumState::Known(q) => {
                    let lagging = q.lagging_voters(now, args.max_voter_lag_ms);
                    println!(
                        "quorum      leader {}, epoch {}, {} voter(s), {} lagging, {} observer(s)",
                        or_dash(q.leader_id),
                        q.leader_epoch,
                        q.voters.len(),
                        lagging.len(),
                        q.observers.len()
                    );
                }
                QuorumState::NotServed(why) | QuorumState::Failed(why) => {
                    println!("quorum      {why}")
                }
            }
            println!(
                "partitions  {} total, {} offline, {} under-replicated, {} under min ISR",
                view.partitions.len(),
                offline.len(),
                urp.len(),
                under_min
                    .as_ref()
                    .map_or_else(|| "unknown".to_owned(), |u| u.len().to_string())
            );
            for p in &health.problems {
                println!("problem: {p}");
            }
            for n in &view.notes {
                println!("note: {n}");
            }
        }
        Output::Json => print_json(&json!({
            "status": health.status.name(),
            "exit_code": code,
            "cluster_id": view.cluster_id,
            "bootstrap": view.bootstrap,
            "brokers": {
                "live": live,
                "fenced": view.fenced_known().then_some(fenced),
                "list": brokers_json(&view.brokers),
            },
            "quorum": quorum_json(&view.quorum, now, args.max_voter_lag_ms),
            "partitions": view.partitions.len(),
            "offline_partitions": offline.iter().map(|p| p.json()).collect::<Vec<_>>(),
            "under_replicated_partitions": urp.iter().map(|p| p.json()).collect::<Vec<_>>(),
            "under_min_isr_partitions": under_min.map(|u| u.iter().map(|p| p.json()).collect::<Vec<_>>()),
            "problems": health.problems,
            "notes": view.notes,
        })),
    }
    ExitCode::from(code)
}

// ---------------------------------------------------------------------------------------------
// add-voter, remove-voter

/// An endpoint as `HOST:PORT` or `NAME://HOST:PORT` (IPv6 hosts in brackets).
fn parse_endpoint(s: &str, default_name: &str) -> Result<Listener> {
    let (name, rest) = match s.split_once("://") {
        Some((n, r)) if !n.is_empty() => (n.to_owned(), r),
        Some(_) => bail!("endpoint {s:?} has an empty listener name"),
        None => (default_name.to_owned(), s),
    };
    let (host, port) = if let Ok(addr) = rest.parse::<SocketAddr>() {
        (addr.ip().to_string(), addr.port())
    } else {
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| anyhow!("endpoint {s:?} is not HOST:PORT"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| anyhow!("endpoint {s:?} has an invalid port"))?;
        if host.is_empty() || host.contains(':') || host.contains('/') {
            bail!("endpoint {s:?} has an invalid host");
        }
        (host.to_owned(), port)
    };
    if port == 0 {
        bail!("endpoint {s:?} has port 0");
    }
    Ok(Listener {
        name,
        host,
        port,
        ..Default::default()
    })
}

fn add_voter(args: AddVoterArgs) -> Result<()> {
    if args.id < 0 {
        bail!("--id must be a node id (0 or more), not {}", args.id);
    }
    let listeners = args
        .endpoint
        .iter()
        .map(|e| parse_endpoint(e, &args.listener_name))
        .collect::<Result<Vec<_>>>()?;
    let mut cluster = args.common.connect()?;
    let cluster_id = cluster.cluster_id.clone();
    let response = cluster.any()?.send(AddRaftVoterRequest {
        cluster_id,
        timeout_ms: args.timeout_ms,
        voter_id: args.id,
        voter_directory_id: args.directory_id,
        listeners: listeners.clone(),
        ..Default::default()
    })?;
    KafkaError::check(response.error_code, response.error_message.as_deref())
        .with_context(|| format!("voter {} ({})", args.id, args.directory_id))?;
    let endpoints: Vec<String> = listeners
        .iter()
        .map(|l| format!("{}://{}", l.name, host_port(&l.host, i32::from(l.port))))
        .collect();
    match args.common.output {
        Output::Text => println!(
            "added voter {} (directory {}) at {}",
            args.id,
            args.directory_id,
            endpoints.join(",")
        ),
        Output::Json => print_json(&json!({
            "added": true,
            "voter_id": args.id,
            "directory_id": args.directory_id.to_string(),
            "endpoints": endpoints,
        })),
    }
    Ok(())
}

fn remove_voter(args: RemoveVoterArgs) -> Result<()> {
    if args.id < 0 {
        bail!("--id must be a node id (0 or more), not {}", args.id);
    }
    let mut cluster = args.common.connect()?;
    let cluster_id = cluster.cluster_id.clone();
    let response = cluster.any()?.send(RemoveRaftVoterRequest {
        cluster_id,
        voter_id: args.id,
        voter_directory_id: args.directory_id,
        ..Default::default()
    })?;
    KafkaError::check(response.error_code, response.error_message.as_deref())
        .with_context(|| format!("voter {} ({})", args.id, args.directory_id))?;
    match args.common.output {
        Output::Text => println!(
            "removed voter {} (directory {})",
            args.id, args.directory_id
        ),
        Output::Json => print_json(&json!({
            "removed": true,
            "voter_id": args.id,
            "directory_id": args.directory_id.to_string(),
        })),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use skein_protocol::messages::describe_quorum_response::{
        Listener as QuorumListener, Node, PartitionData as QuorumPartition, ReplicaState,
        TopicData as QuorumTopic,
    };
    use skein_protocol::messages::metadata_response::{
        MetadataResponsePartition, MetadataResponseTopic,
    };

    fn replica(id: i32, leo: i64, caught_up: i64) -> ReplicaState {
        ReplicaState {
            replica_id: id,
            replica_directory_id: Uuid([id as u8; 16]),
            log_end_offset: leo,
            last_fetch_timestamp: caught_up,
            last_caught_up_timestamp: caught_up,
            ..Default::default()
        }
    }

    fn quorum_response(leader: i32, voters: Vec<ReplicaState>) -> DescribeQuorumResponse {
        DescribeQuorumResponse {
            topics: vec![QuorumTopic {
                topic_name: METADATA_TOPIC.into(),
                partitions: vec![QuorumPartition {
                    partition_index: 0,
                    leader_id: leader,
                    leader_epoch: 7,
                    high_watermark: 100,
                    current_voters: voters,
                    observers: vec![replica(4, -1, -1)],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            nodes: vec![Node {
                node_id: 1,
                listeners: vec![QuorumListener {
                    name: "CONTROLLER".into(),
                    host: "::1".into(),
                    port: 9093,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn known(state: QuorumState) -> Quorum {
        match state {
            QuorumState::Known(q) => q,
            other => panic!("expected a quorum, got {other:?}"),
        }
    }

    #[test]
    fn quorum_replicas_lag_and_lagging_voters() {
        let now = 1_000_000;
        let q = known(quorum_from_response(quorum_response(
            1,
            vec![
                replica(3, 90, now - 60_000), // behind for a minute: lagging
                replica(1, 105, now),         // the leader, ahead of the high watermark
                replica(2, 95, now - 500),    // behind, but caught up half a second ago
            ],
        )));
        assert_eq!(q.leader_id, Some(1));
        assert_eq!(q.leader_epoch, 7);
        assert_eq!(q.high_watermark, 100);
        let ids: Vec<i32> = q.voters.iter().map(|v| v.id).collect();
        assert_eq!(ids, [1, 2, 3], "voters sorted by id");
        let lags: Vec<Option<i64>> = q.voters.iter().map(|v| q.lag(v)).collect();
        assert_eq!(lags, [Some(0), Some(5), Some(10)]);
        assert_eq!(q.voters[1].directory_id, Some(Uuid([2; 16])));
        assert_eq!(q.lagging_voters(now, 10_000), [3]);
        assert_eq!(q.lagging_voters(now, 100), [2, 3]);
        // An observer whose position is unknown has no lag and no times.
        assert_eq!(q.observers[0].log_end_offset, None);
        assert_eq!(q.lag(&q.observers[0]), None);
        assert_eq!(q.observers[0].last_fetch_ms, None);
        assert_eq!(q.controllers[&1], ["CONTROLLER://[::1]:9093"]);
        let j = quorum_json(&QuorumState::Known(q), now, 10_000);
        assert_eq!(j["leader_id"], 1);
        assert_eq!(j["voters"][2]["lag"], 10);
        assert_eq!(j["voters"][0]["directory_id"], Uuid([1; 16]).to_string());
        assert_eq!(j["observers"][0]["log_end_offset"], Value::Null);
        assert_eq!(j["lagging_voters"], json!([3]));
    }

    #[test]
    fn quorum_without_leader_or_with_errors() {
        let mut r = quorum_response(-1, vec![replica(1, -1, -1)]);
        r.topics[0].partitions[0].current_voters[0].replica_directory_id = Uuid::ZERO;
        let q = known(quorum_from_response(r));
        assert_eq!(q.leader_id, None);
        assert_eq!(q.voters[0].directory_id, None);
        assert_eq!(
            q.lagging_voters(0, 10_000),
            [1],
            "unknown position counts as lagging"
        );

        let mut r = quorum_response(1, vec![]);
        r.error_code = 41;
        r.error_message = Some("not the controller".into());
        assert_eq!(
            quorum_from_response(r),
            QuorumState::Failed("DescribeQuorum failed: NOT_CONTROLLER: not the controller".into())
        );
        let mut r = quorum_response(1, vec![]);
        r.topics[0].partitions[0].error_code = 6;
        let QuorumState::Failed(why) = quorum_from_response(r) else {
            panic!("a partition error is a failure");
        };
        assert!(why.contains("NOT_LEADER_OR_FOLLOWER"), "{why}");
        let mut r = quorum_response(1, vec![]);
        r.topics[0].topic_name = "other".into();
        assert!(matches!(quorum_from_response(r), QuorumState::Failed(_)));
    }

    /// A partition for [`metadata`]: (index, leader, replicas, ISR, error code).
    type Part = (i32, i32, Vec<i32>, Vec<i32>, i16);

    fn metadata(topics: Vec<(&str, i16, Vec<Part>)>) -> MetadataResponse {
        MetadataResponse {
            topics: topics
                .into_iter()
                .map(|(name, error_code, parts)| MetadataResponseTopic {
                    name: Some(name.into()),
                    error_code,
                    partitions: parts
                        .into_iter()
                        .map(
                            |(i, leader, replicas, isr, error_code)| MetadataResponsePartition {
                                partition_index: i,
                                leader_id: leader,
                                replica_nodes: replicas,
                                isr_nodes: isr,
                                error_code,
                                ..Default::default()
                            },
                        )
                        .collect(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn view(partitions: Vec<PartitionRow>, quorum: QuorumState) -> ClusterView {
        ClusterView {
            cluster_id: Some("c".into()),
            controller: 1,
            bootstrap: "127.0.0.1:9092".into(),
            brokers: vec![
                BrokerRow {
                    id: 1,
                    host: "h".into(),
                    port: 9092,
                    rack: None,
                    fenced: Some(false),
                },
                BrokerRow {
                    id: 2,
                    host: "h".into(),
                    port: 9093,
                    rack: Some("r2".into()),
                    fenced: Some(false),
                },
            ],
            quorum,
            partitions,
            min_isr: Some(BTreeMap::from([("b".to_owned(), 2), ("a".to_owned(), 1)])),
            notes: Vec::new(),
            apis: Vec::new(),
        }
    }

    #[test]
    fn partitions_classify_offline_under_replicated_and_under_min_isr() {
        let rows = partitions(&metadata(vec![
            (
                "b",
                0,
                vec![
                    (1, 2, vec![1, 2], vec![2], 0),    // under-replicated, under min ISR 2
                    (0, 1, vec![1, 2], vec![1, 2], 0), // fine
                    (2, -1, vec![3], vec![], 5),       // offline
                ],
            ),
            ("a", 0, vec![(0, 1, vec![1], vec![1], 0)]),
            ("creating", 5, vec![]), // whole topic without leaders
            ("gone", 3, vec![]),     // deleted meanwhile: left out
        ]));
        let names: Vec<String> = rows.iter().map(partition_name).collect();
        assert_eq!(
            names,
            ["a-0", "b-0", "b-1", "b-2", "creating (every partition)"]
        );
        let v = view(rows, QuorumState::NotServed("not served".into()));
        let names = |ps: Vec<&PartitionRow>| ps.into_iter().map(partition_name).collect::<Vec<_>>();
        assert_eq!(names(v.offline()), ["b-2", "creating (every partition)"]);
        assert_eq!(names(v.under_replicated()), ["b-1"]);
        assert_eq!(names(v.under_min_isr().unwrap()), ["b-1"]);
        let j = v.offline()[0].json();
        assert_eq!(
            j,
            json!({"topic": "b", "partition": 2, "leader": null, "replicas": [3], "isr": [], "error": "LEADER_NOT_AVAILABLE"})
        );
        let health = assess(&v, 0, 10_000);
        assert_eq!(health.status, Status::Unhealthy);
        assert_eq!(
            health.problems,
            [
                "2 partition(s) offline: b-2, creating (every partition)",
                "1 under-replicated partition(s): b-1",
                "1 partition(s) under min ISR: b-1",
            ]
        );
    }

    #[test]
    fn health_levels() {
        let ok = |i| PartitionRow {
            topic: "a".into(),
            partition: Some(i),
            leader: 1,
            replicas: vec![1],
            isr: vec![1],
            error_code: 0,
        };
        let quorum = |leader| {
            QuorumState::Known(known(quorum_from_response(quorum_response(
                leader,
                vec![replica(1, 100, 0)],
            ))))
        };
        // DescribeQuorum not served: healthy on what can be seen.
        let v = view(vec![ok(0), ok(1)], QuorumState::NotServed("x".into()));
        assert_eq!(
            assess(&v, 0, 10_000),
            Health {
                status: Status::Healthy,
                problems: vec![]
            }
        );
        let v = view(vec![ok(0)], quorum(1));
        assert_eq!(assess(&v, 0, 10_000).status, Status::Healthy);
        // No leader, or an error from a served DescribeQuorum: unhealthy.
        let v = view(vec![ok(0)], quorum(-1));
        assert_eq!(
            assess(&v, 0, 10_000),
            Health {
                status: Status::Unhealthy,
                problems: vec!["the controller quorum has no leader".into()]
            }
        );
        let v = view(
            vec![ok(0)],
            QuorumState::Failed("DescribeQuorum failed: REQUEST_TIMED_OUT".into()),
        );
        assert_eq!(assess(&v, 0, 10_000).status, Status::Unhealthy);
        // A fenced broker degrades.
        let mut v = view(vec![ok(0)], quorum(1));
        v.brokers[1].fenced = Some(true);
        assert_eq!(
            assess(&v, 0, 10_000),
            Health {
                status: Status::Degraded,
                problems: vec!["fenced broker(s): 2".into()]
            }
        );
        assert!(v.fenced_known());
        v.brokers[0].fenced = None;
        assert!(!v.fenced_known());
    }

    #[test]
    fn long_lists_are_cut() {
        assert_eq!(list((0..3).map(|i| i.to_string())), "0, 1, 2");
        assert_eq!(
            list((0..13).map(|i| i.to_string())),
            "0, 1, 2, 3, 4, 5, 6, 7, 8, 9 and 3 more"
        );
        assert_eq!(list(std::iter::empty()), "");
        assert_eq!(ids(&[1, 2, 3]), "1,2,3");
        assert_eq!(ids(&[]), "-");
    }

    #[test]
    fn endpoints_parse() {
        let l = |s| parse_endpoint(s, "CONTROLLER").map(|l| (l.name, l.host, l.port));
        assert_eq!(
            l("localhost:9093").unwrap(),
            ("CONTROLLER".into(), "localhost".into(), 9093)
        );
        assert_eq!(
            l("CTL://10.0.0.2:19093").unwrap(),
            ("CTL".into(), "10.0.0.2".into(), 19093)
        );
        assert_eq!(
            l("[::1]:9093").unwrap(),
            ("CONTROLLER".into(), "::1".into(), 9093)
        );
        for bad in [
            "localhost",
            "localhost:0",
            "localhost:70000",
            ":9093",
            "://h:1",
            "a:b:1",
            "h:x",
        ] {
            assert!(l(bad).is_err(), "{bad} should be refused");
        }
        assert!(parse_uuid("AAAAAAAAAAAAAAAAAAAAAQ").is_ok());
        assert!(parse_uuid("not-a-uuid")
            .unwrap_err()
            .contains("22 characters"));
    }

    use skein_protocol::messages::describe_cluster_response::DescribeClusterBroker;

    fn describe_cluster_response(
        brokers: &[(i32, &str, i32, Option<&str>, bool)],
    ) -> DescribeClusterResponse {
        DescribeClusterResponse {
            endpoint_type: 1,
            cluster_id: "cluster-x".into(),
            controller_id: 2,
            brokers: brokers
                .iter()
                .map(|(id, host, port, rack, fenced)| DescribeClusterBroker {
                    broker_id: *id,
                    host: host.to_string(),
                    port: *port,
                    rack: rack.map(str::to_string),
                    is_fenced: *fenced,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn describe_cluster_marks_fenced_brokers_from_v2() {
        use skein_protocol::{decode_response, encode_response, ResponseBody};
        let response = describe_cluster_response(&[
            (1, "a", 9092, None, false),
            (2, "b", 9093, Some("r"), true),
        ]);
        // Through the generated codec at v2, as the CLI receives it.
        let frame = encode_response(
            7,
            ApiKey::DescribeCluster,
            2,
            &ResponseBody::DescribeCluster(response.clone()),
        )
        .unwrap()
        .freeze();
        // Without the 4-byte size, as the client reads it.
        let (_, body) = decode_response(ApiKey::DescribeCluster, 2, frame.slice(4..)).unwrap();
        let ResponseBody::DescribeCluster(decoded) = body else {
            panic!("another API");
        };
        let d = described(decoded, 2);
        assert_eq!(d.cluster_id, "cluster-x");
        assert_eq!(d.controller_id, 2);
        assert_eq!(d.brokers.len(), 2);
        assert_eq!(d.brokers[0].fenced, Some(false));
        assert_eq!(
            d.brokers[1],
            BrokerRow {
                id: 2,
                host: "b".into(),
                port: 9093,
                rack: Some("r".into()),
                fenced: Some(true)
            }
        );
        // Before v2 the broker says nothing about fencing.
        let d = described(response, 1);
        assert!(d.brokers.iter().all(|b| b.fenced.is_none()));
    }
}
