//! `skein topic create|list|describe|delete|add-partitions|alter-config|reassign`.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use skein_protocol::messages::create_partitions_request::{
    CreatePartitionsRequest, CreatePartitionsTopic,
};
use skein_protocol::messages::create_topics_request::{
    CreatableTopic, CreatableTopicConfig, CreateTopicsRequest,
};
use skein_protocol::messages::delete_topics_request::{DeleteTopicState, DeleteTopicsRequest};
use skein_protocol::messages::describe_configs_request::{
    DescribeConfigsRequest, DescribeConfigsResource,
};
use skein_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig, IncrementalAlterConfigsRequest,
};
use skein_protocol::ApiKey;

use super::client::{Cluster, Connection, TopicInfo};
use super::errors::KafkaError;
use super::offsets::{list_offsets, EARLIEST, LATEST};
use super::output::{or_dash, print_json, table, Output};
use super::Common;

/// ConfigResource type of a topic.
const RESOURCE_TOPIC: i8 = 2;
/// How long the broker may take over an admin request.
const ADMIN_TIMEOUT_MS: i32 = 30_000;

#[derive(clap::Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create(CreateArgs),
    /// List the topics.
    List(ListArgs),
    /// Show a topic's partitions (leader, offsets) and configs.
    Describe(NameArgs),
    /// Delete a topic.
    Delete(NameArgs),
    /// Grow a topic to more partitions.
    AddPartitions(AddPartitionsArgs),
    /// Set or delete a topic's configs.
    AlterConfig(AlterConfigArgs),
    /// Move partitions to other brokers (KIP-455), show or cancel moves in progress.
    Reassign(super::reassign::ReassignArgs),
}

#[derive(clap::Args)]
pub struct CreateArgs {
    /// The topic's name.
    pub name: String,
    /// Number of partitions (default: the broker's num.partitions).
    #[arg(long)]
    pub partitions: Option<i32>,
    /// Replication factor (default: the broker's default.replication.factor).
    #[arg(long)]
    pub replication_factor: Option<i16>,
    /// A topic config, as key=value (repeatable).
    #[arg(long = "config", value_name = "KEY=VALUE")]
    pub configs: Vec<String>,
    #[command(flatten)]
    pub common: Common,
}

#[derive(clap::Args)]
pub struct ListArgs {
    /// Include internal topics such as __consumer_offsets.
    #[arg(long)]
    pub internal: bool,
    #[command(flatten)]
    pub common: Common,
}

#[derive(clap::Args)]
pub struct NameArgs {
    /// The topic's name.
    pub name: String,
    #[command(flatten)]
    pub common: Common,
}

#[derive(clap::Args)]
pub struct AddPartitionsArgs {
    /// The topic's name.
    pub name: String,
    /// The new total number of partitions.
    #[arg(long)]
    pub count: i32,
    #[command(flatten)]
    pub common: Common,
}

#[derive(clap::Args)]
pub struct AlterConfigArgs {
    /// The topic's name.
    pub name: String,
    /// Set a config, as key=value (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Remove a config override, going back to the default (repeatable).
    #[arg(long = "delete", value_name = "KEY")]
    pub delete: Vec<String>,
    #[command(flatten)]
    pub common: Common,
}

pub fn run(command: TopicCommand) -> Result<()> {
    match command {
        TopicCommand::Create(a) => {
            let context = format!("topic create {}", a.name);
            create(a).context(context)
        }
        TopicCommand::List(a) => list(a).context("topic list"),
        TopicCommand::Describe(a) => {
            let context = format!("topic describe {}", a.name);
            describe(a).context(context)
        }
        TopicCommand::Delete(a) => {
            let context = format!("topic delete {}", a.name);
            delete(a).context(context)
        }
        TopicCommand::AddPartitions(a) => {
            let context = format!("topic add-partitions {}", a.name);
            add_partitions(a).context(context)
        }
        TopicCommand::AlterConfig(a) => {
            let context = format!("topic alter-config {}", a.name);
            alter_config(a).context(context)
        }
        TopicCommand::Reassign(a) => super::reassign::run(a).context("topic reassign"),
    }
}

/// Splits `key=value`.
pub fn parse_key_value(text: &str) -> Result<(String, String)> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => bail!("expected KEY=VALUE, got {text:?}"),
    }
}

/// The controller when the metadata names one (admin requests belong there), else the
/// bootstrap broker.
fn admin_connection(cluster: &mut Cluster) -> Result<&mut Connection> {
    let controller = cluster.controller_id;
    if controller >= 0 && cluster.brokers().contains_key(&controller) {
        cluster.broker(controller)
    } else {
        cluster.any()
    }
}

fn create(args: CreateArgs) -> Result<()> {
    let configs = args
        .configs
        .iter()
        .map(|c| parse_key_value(c))
        .collect::<Result<Vec<_>>>()?;
    let mut cluster = args.common.connect()?;
    let conn = admin_connection(&mut cluster)?;
    let version = conn.version(ApiKey::CreateTopics)?;
    // "Use the broker's default" (-1) exists from CreateTopics v4.
    let default = |v: Option<i32>, what: &str| -> Result<i32> {
        match v {
            Some(v) => Ok(v),
            None if version >= 4 => Ok(-1),
            None => bail!("the broker needs an explicit --{what}"),
        }
    };
    let partitions = default(args.partitions, "partitions")?;
    let replication = default(args.replication_factor.map(i32::from), "replication-factor")?;
    let response = conn.send(CreateTopicsRequest {
        topics: vec![CreatableTopic {
            name: args.name.clone(),
            num_partitions: partitions,
            replication_factor: replication as i16,
            assignments: Vec::new(),
            configs: configs
                .into_iter()
                .map(|(name, value)| CreatableTopicConfig {
                    name,
                    value: Some(value),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        timeout_ms: ADMIN_TIMEOUT_MS,
        validate_only: false,
        ..Default::default()
    })?;
    let result = response
        .topics
        .into_iter()
        .find(|t| t.name == args.name)
        .context("the broker did not answer for the topic")?;
    KafkaError::check(result.error_code, result.error_message.as_deref())?;
    let (mut partitions, mut replication, mut topic_id) = (
        result.num_partitions,
        i32::from(result.replication_factor),
        result.topic_id,
    );
    if partitions <= 0 || replication <= 0 || topic_id.is_zero() {
        // Older versions do not echo what was created; ask.
        if let Ok(info) = cluster.topic(&args.name) {
            partitions = info.partitions.len() as i32;
            replication = info
                .partitions
                .first()
                .map_or(0, |p| p.replicas.len() as i32);
            topic_id = info.topic_id;
        }
    }
    match args.common.output {
        Output::Text => println!(
            "created topic {} ({partitions} partition{}, replication factor {replication})",
            args.name,
            if partitions == 1 { "" } else { "s" }
        ),
        Output::Json => print_json(&json!({
            "topic": args.name,
            "topic_id": (!topic_id.is_zero()).then(|| topic_id.to_string()),
            "partitions": partitions,
            "replication_factor": replication,
        })),
    }
    Ok(())
}

fn replication_factor(t: &TopicInfo) -> usize {
    t.partitions.first().map_or(0, |p| p.replicas.len())
}

fn list(args: ListArgs) -> Result<()> {
    let mut cluster = args.common.connect()?;
    let topics: Vec<TopicInfo> = cluster
        .topics()?
        .into_iter()
        .filter(|t| args.internal || !t.internal)
        .collect();
    match args.common.output {
        Output::Text => {
            let rows: Vec<Vec<String>> = topics
                .iter()
                .map(|t| {
                    vec![
                        t.name.clone(),
                        t.partitions.len().to_string(),
                        replication_factor(t).to_string(),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(&["TOPIC", "PARTITIONS", "REPLICATION-FACTOR"], &rows)
            );
        }
        Output::Json => print_json(&json!({
            "topics": topics.iter().map(|t| json!({
                "name": t.name,
                "topic_id": t.topic_id.to_string(),
                "partitions": t.partitions.len(),
                "replication_factor": replication_factor(t),
                "internal": t.internal,
            })).collect::<Vec<_>>(),
        })),
    }
    Ok(())
}

/// Kafka's names of a config's source (the admin client's `ConfigEntry.ConfigSource`).
fn config_source_name(source: i8) -> &'static str {
    match source {
        1 => "DYNAMIC_TOPIC_CONFIG",
        2 => "DYNAMIC_BROKER_CONFIG",
        3 => "DYNAMIC_DEFAULT_BROKER_CONFIG",
        4 => "STATIC_BROKER_CONFIG",
        5 => "DEFAULT_CONFIG",
        6 => "DYNAMIC_BROKER_LOGGER_CONFIG",
        7 => "DYNAMIC_CLIENT_METRICS_CONFIG",
        8 => "DYNAMIC_GROUP_CONFIG",
        _ => "UNKNOWN",
    }
}

struct ConfigEntry {
    name: String,
    value: Option<String>,
    source: &'static str,
    read_only: bool,
    sensitive: bool,
}

fn describe_configs(cluster: &mut Cluster, topic: &str) -> Result<Vec<ConfigEntry>> {
    let conn = cluster.any()?;
    let version = conn.version(ApiKey::DescribeConfigs)?;
    let response = conn.send(DescribeConfigsRequest {
        resources: vec![DescribeConfigsResource {
            resource_type: RESOURCE_TOPIC,
            resource_name: topic.to_owned(),
            configuration_keys: None,
            ..Default::default()
        }],
        include_synonyms: false,
        include_documentation: false,
        ..Default::default()
    })?;
    let result = response
        .results
        .into_iter()
        .find(|r| r.resource_name == topic)
        .context("DescribeConfigs did not answer for the topic")?;
    KafkaError::check(result.error_code, result.error_message.as_deref())
        .context("DescribeConfigs")?;
    let mut entries: Vec<ConfigEntry> = result
        .configs
        .into_iter()
        .map(|c| ConfigEntry {
            source: if version == 0 {
                // v0 only says whether the value is the default.
                if c.is_default {
                    "DEFAULT_CONFIG"
                } else {
                    "DYNAMIC_TOPIC_CONFIG"
                }
            } else {
                config_source_name(c.config_source)
            },
            name: c.name,
            value: c.value,
            read_only: c.read_only,
            sensitive: c.is_sensitive,
        })
        .collect();
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

/// Partition sizes from DescribeLogDirs, asked of each partition's leader. Brokers that do
/// not serve DescribeLogDirs leave their partitions out (shown as `-`).
fn partition_sizes(cluster: &mut Cluster, info: &TopicInfo) -> std::collections::HashMap<i32, i64> {
    use skein_protocol::messages::describe_log_dirs_request::{
        DescribableLogDirTopic, DescribeLogDirsRequest,
    };
    let mut by_leader: std::collections::BTreeMap<i32, Vec<i32>> =
        std::collections::BTreeMap::new();
    for p in &info.partitions {
        if p.leader >= 0 {
            by_leader.entry(p.leader).or_default().push(p.partition);
        }
    }
    let mut sizes = std::collections::HashMap::new();
    for (leader, partitions) in by_leader {
        let Ok(conn) = cluster.broker(leader) else {
            continue;
        };
        if !conn.supports(ApiKey::DescribeLogDirs) {
            continue;
        }
        let request = DescribeLogDirsRequest {
            topics: Some(vec![DescribableLogDirTopic {
                topic: info.name.clone(),
                partitions,
                ..Default::default()
            }]),
            ..Default::default()
        };
        let Ok(response) = conn.send(request) else {
            continue;
        };
        for dir in response.results.into_iter().filter(|d| d.error_code == 0) {
            for t in dir.topics.into_iter().filter(|t| t.name == info.name) {
                for p in t.partitions.into_iter().filter(|p| !p.is_future_key) {
                    *sizes.entry(p.partition_index).or_insert(0) += p.partition_size;
                }
            }
        }
    }
    sizes
}

/// A partition's KIP-966 eligible leader replicas and last known ELR.
type Eligible = (Vec<i32>, Vec<i32>);

/// KIP-966's eligible leader replicas and last known ELR of each partition of `topic`, from
/// DescribeTopicPartitions (paged by its cursor); empty when the broker does not serve it.
fn eligible_leaders(cluster: &mut Cluster, topic: &str) -> Result<BTreeMap<i32, Eligible>> {
    use skein_protocol::messages::describe_topic_partitions_request::{
        Cursor, DescribeTopicPartitionsRequest, TopicRequest,
    };
    let conn = cluster.any()?;
    let mut out = BTreeMap::new();
    if conn.version(ApiKey::DescribeTopicPartitions).is_err() {
        return Ok(out);
    }
    let mut cursor: Option<Cursor> = None;
    // A bound on pages, whatever the broker answers.
    for _ in 0..10_000 {
        let response = conn.send(DescribeTopicPartitionsRequest {
            topics: vec![TopicRequest {
                name: topic.to_owned(),
                ..Default::default()
            }],
            response_partition_limit: 2000,
            cursor: cursor.take(),
            ..Default::default()
        })?;
        for t in &response.topics {
            KafkaError::check(t.error_code, None).context("DescribeTopicPartitions")?;
            for p in &t.partitions {
                out.insert(
                    p.partition_index,
                    (
                        p.eligible_leader_replicas.clone().unwrap_or_default(),
                        p.last_known_elr.clone().unwrap_or_default(),
                    ),
                );
            }
        }
        match response.next_cursor {
            Some(c) if c.topic_name == topic => {
                cursor = Some(Cursor {
                    topic_name: c.topic_name,
                    partition_index: c.partition_index,
                    ..Default::default()
                })
            }
            _ => break,
        }
    }
    Ok(out)
}

fn describe(args: NameArgs) -> Result<()> {
    let mut cluster = args.common.connect()?;
    let info = cluster.topic(&args.name)?;
    let partitions: Vec<i32> = info.partitions.iter().map(|p| p.partition).collect();
    let starts = list_offsets(&mut cluster, &args.name, &partitions, EARLIEST)
        .context("log start offsets")?;
    let ends =
        list_offsets(&mut cluster, &args.name, &partitions, LATEST).context("log end offsets")?;
    let configs = describe_configs(&mut cluster, &args.name)?;
    let sizes = partition_sizes(&mut cluster, &info);
    let elrs = eligible_leaders(&mut cluster, &args.name).context("eligible leader replicas")?;
    let elr = |p: i32| elrs.get(&p).map_or(&[][..], |e| &e.0[..]);
    let last_known_elr = |p: i32| elrs.get(&p).map_or(&[][..], |e| &e.1[..]);
    // The ELR columns appear only when some partition has one (KIP-966).
    let show_elr = elrs.values().any(|(e, l)| !e.is_empty() || !l.is_empty());
    let size = |p: i32| sizes.get(&p).copied();
    let start = |p: i32| starts.get(&p).copied().flatten();
    let end = |p: i32| ends.get(&p).copied().flatten();
    let nodes = |ids: &[i32]| ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
    // Kafka's `kafka-topics --describe` filters: under-replicated (ISR smaller than the
    // replicas), under min ISR (smaller than min.insync.replicas: acks=all is refused),
    // offline (no leader).
    let min_isr: usize = configs
        .iter()
        .find(|c| c.name == "min.insync.replicas")
        .and_then(|c| c.value.as_deref())
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let status = |leader: i32, replicas: &[i32], isr: &[i32]| {
        if leader < 0 {
            "offline"
        } else if isr.len() < min_isr {
            "under-min-isr"
        } else if isr.len() < replicas.len() {
            "under-replicated"
        } else {
            "ok"
        }
    };
    match args.common.output {
        Output::Text => {
            println!(
                "topic {}  id {}  partitions {}  replication factor {}",
                info.name,
                info.topic_id,
                info.partitions.len(),
                replication_factor(&info)
            );
            println!();
            let rows: Vec<Vec<String>> = info
                .partitions
                .iter()
                .map(|p| {
                    let mut row = vec![
                        p.partition.to_string(),
                        if p.leader >= 0 {
                            p.leader.to_string()
                        } else {
                            "none".to_owned()
                        },
                        nodes(&p.replicas),
                        nodes(&p.isr),
                        or_dash(start(p.partition)),
                        or_dash(end(p.partition)),
                        or_dash(size(p.partition)),
                        status(p.leader, &p.replicas, &p.isr).to_owned(),
                    ];
                    if show_elr {
                        let list = |ids: &[i32]| {
                            if ids.is_empty() {
                                "-".to_owned()
                            } else {
                                nodes(ids)
                            }
                        };
                        row.insert(4, list(elr(p.partition)));
                        row.insert(5, list(last_known_elr(p.partition)));
                    }
                    row
                })
                .collect();
            let mut headers = vec![
                "PARTITION",
                "LEADER",
                "REPLICAS",
                "ISR",
                "START-OFFSET",
                "END-OFFSET",
                "SIZE",
                "STATUS",
            ];
            if show_elr {
                headers.insert(4, "ELR");
                headers.insert(5, "LAST-KNOWN-ELR");
            }
            print!("{}", table(&headers, &rows));
            println!();
            let rows: Vec<Vec<String>> = configs
                .iter()
                .map(|c| {
                    vec![
                        c.name.clone(),
                        match (&c.value, c.sensitive) {
                            (_, true) => "(sensitive)".to_owned(),
                            (Some(v), false) => v.clone(),
                            (None, false) => "null".to_owned(),
                        },
                        c.source.to_owned(),
                    ]
                })
                .collect();
            print!("{}", table(&["CONFIG", "VALUE", "SOURCE"], &rows));
        }
        Output::Json => print_json(&json!({
            "topic": info.name,
            "topic_id": info.topic_id.to_string(),
            "internal": info.internal,
            "partitions": info.partitions.iter().map(|p| json!({
                "partition": p.partition,
                "leader": (p.leader >= 0).then_some(p.leader),
                "replicas": p.replicas,
                "isr": p.isr,
                "eligible_leader_replicas": elr(p.partition),
                "last_known_elr": last_known_elr(p.partition),
                "log_start_offset": start(p.partition),
                "log_end_offset": end(p.partition),
                "size_bytes": size(p.partition),
                "status": status(p.leader, &p.replicas, &p.isr),
            })).collect::<Vec<_>>(),
            "configs": configs.iter().map(|c| json!({
                "name": c.name,
                "value": if c.sensitive { Value::Null } else { json!(c.value) },
                "source": c.source,
                "read_only": c.read_only,
                "sensitive": c.sensitive,
            })).collect::<Vec<_>>(),
        })),
    }
    Ok(())
}

fn delete(args: NameArgs) -> Result<()> {
    let mut cluster = args.common.connect()?;
    let conn = admin_connection(&mut cluster)?;
    let version = conn.version(ApiKey::DeleteTopics)?;
    let mut request = DeleteTopicsRequest {
        timeout_ms: ADMIN_TIMEOUT_MS,
        ..Default::default()
    };
    if version >= 6 {
        request.topics = vec![DeleteTopicState {
            name: Some(args.name.clone()),
            ..Default::default()
        }];
    } else {
        request.topic_names = vec![args.name.clone()];
    }
    let response = conn.send(request)?;
    let result = response
        .responses
        .into_iter()
        .find(|r| r.name.as_deref() == Some(args.name.as_str()))
        .context("the broker did not answer for the topic")?;
    KafkaError::check(result.error_code, result.error_message.as_deref())?;
    match args.common.output {
        Output::Text => println!("deleted topic {}", args.name),
        Output::Json => print_json(&json!({ "topic": args.name, "deleted": true })),
    }
    Ok(())
}

fn add_partitions(args: AddPartitionsArgs) -> Result<()> {
    let mut cluster = args.common.connect()?;
    let conn = admin_connection(&mut cluster)?;
    let response = conn.send(CreatePartitionsRequest {
        topics: vec![CreatePartitionsTopic {
            name: args.name.clone(),
            count: args.count,
            assignments: None,
            ..Default::default()
        }],
        timeout_ms: ADMIN_TIMEOUT_MS,
        validate_only: false,
        ..Default::default()
    })?;
    let result = response
        .results
        .into_iter()
        .find(|r| r.name == args.name)
        .context("the broker did not answer for the topic")?;
    KafkaError::check(result.error_code, result.error_message.as_deref())?;
    match args.common.output {
        Output::Text => println!("topic {} now has {} partitions", args.name, args.count),
        Output::Json => print_json(&json!({ "topic": args.name, "partitions": args.count })),
    }
    Ok(())
}

fn alter_config(args: AlterConfigArgs) -> Result<()> {
    if args.set.is_empty() && args.delete.is_empty() {
        bail!("nothing to change: give --set KEY=VALUE or --delete KEY");
    }
    let sets = args
        .set
        .iter()
        .map(|s| parse_key_value(s))
        .collect::<Result<Vec<_>>>()?;
    const SET: i8 = 0;
    const DELETE: i8 = 1;
    let mut configs: Vec<AlterableConfig> = sets
        .iter()
        .map(|(k, v)| AlterableConfig {
            name: k.clone(),
            config_operation: SET,
            value: Some(v.clone()),
            ..Default::default()
        })
        .collect();
    configs.extend(args.delete.iter().map(|k| AlterableConfig {
        name: k.clone(),
        config_operation: DELETE,
        value: None,
        ..Default::default()
    }));
    let mut cluster = args.common.connect()?;
    let response = cluster.any()?.send(IncrementalAlterConfigsRequest {
        resources: vec![AlterConfigsResource {
            resource_type: RESOURCE_TOPIC,
            resource_name: args.name.clone(),
            configs,
            ..Default::default()
        }],
        validate_only: false,
        ..Default::default()
    })?;
    let result = response
        .responses
        .into_iter()
        .find(|r| r.resource_name == args.name)
        .context("the broker did not answer for the topic")?;
    KafkaError::check(result.error_code, result.error_message.as_deref())?;
    match args.common.output {
        Output::Text => {
            let mut parts = Vec::new();
            if !sets.is_empty() {
                let list: Vec<String> = sets.iter().map(|(k, v)| format!("{k}={v}")).collect();
                parts.push(format!("set {}", list.join(", ")));
            }
            if !args.delete.is_empty() {
                parts.push(format!("deleted {}", args.delete.join(", ")));
            }
            println!("updated topic {}: {}", args.name, parts.join("; "));
        }
        Output::Json => print_json(&json!({
            "topic": args.name,
            "set": sets.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "deleted": args.delete,
        })),
    }
    Ok(())
}
