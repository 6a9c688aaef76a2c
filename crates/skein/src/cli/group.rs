//! `skein group list|describe|delete|reset-offsets`.
//!
//! Classic groups are described with DescribeGroups; a group the broker runs under the
//! KIP-848 consumer protocol is described with ConsumerGroupDescribe instead.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use skein_protocol::messages::consumer_group_describe_request::ConsumerGroupDescribeRequest;
use skein_protocol::messages::delete_groups_request::DeleteGroupsRequest;
use skein_protocol::messages::describe_groups_request::DescribeGroupsRequest;
use skein_protocol::messages::list_groups_request::ListGroupsRequest;
use skein_protocol::ApiKey;

use super::assignor::{self, assignment_text, Assignment, CONSUMER_PROTOCOL_TYPE};
use super::client::{is_retriable, Cluster};
use super::errors::{self, KafkaError};
use super::fetch::{fetch, FetchPosition};
use super::offsets::{
    commit_offsets, committed_offsets, list_offsets, with_coordinator, TopicPartition, EARLIEST,
    LATEST,
};
use super::output::{human_duration, or_dash, print_json, table, Output};
use super::reset_plan::{plan, PartitionOffsets, PlanRow, ResetTarget};
use super::time::{now_ms, parse_rfc3339};
use super::Common;

/// Enough bytes to get the first batch after a committed offset (a larger first batch is
/// still returned whole).
const PEEK_MAX_BYTES: i32 = 64 * 1024;

#[derive(clap::Subcommand)]
pub enum GroupCommand {
    /// List the consumer groups of every broker.
    List(ListArgs),
    /// Show a group's members, assignments, committed offsets and lag.
    Describe(GroupArgs),
    /// Delete a group (it must have no members).
    Delete(GroupArgs),
    /// Move a group's committed offsets; prints the plan, and applies it with --execute.
    ResetOffsets(ResetArgs),
}

#[derive(clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub common: Common,
}

#[derive(clap::Args)]
pub struct GroupArgs {
    /// The group id.
    pub group: String,
    #[command(flatten)]
    pub common: Common,
}

#[derive(clap::Args)]
#[command(group(
    clap::ArgGroup::new("target")
        .required(true)
        .args(["to_earliest", "to_latest", "to_offset", "to_datetime", "shift_by"])
))]
#[command(group(
    clap::ArgGroup::new("scope").required(true).args(["topics", "all_topics"])
))]
pub struct ResetArgs {
    /// The group id.
    pub group: String,
    /// A topic, or some of its partitions as TOPIC:0,1,2 (repeatable).
    #[arg(long = "topic", value_name = "TOPIC[:P,...]")]
    pub topics: Vec<String>,
    /// Every topic the group has committed offsets for.
    #[arg(long)]
    pub all_topics: bool,
    /// To the log start offsets.
    #[arg(long)]
    pub to_earliest: bool,
    /// To the log end offsets.
    #[arg(long)]
    pub to_latest: bool,
    /// To this offset (kept within the log).
    #[arg(long, value_name = "N")]
    pub to_offset: Option<i64>,
    /// To the first record at or after this RFC 3339 time.
    #[arg(long, value_name = "RFC3339")]
    pub to_datetime: Option<String>,
    /// By this many records from the committed offsets (negative: back).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub shift_by: Option<i64>,
    /// Apply the plan (without it nothing changes).
    #[arg(long)]
    pub execute: bool,
    #[command(flatten)]
    pub common: Common,
}

pub fn run(command: GroupCommand) -> Result<()> {
    match command {
        GroupCommand::List(a) => list(a).context("group list"),
        GroupCommand::Describe(a) => {
            let context = format!("group describe {}", a.group);
            describe(a).context(context)
        }
        GroupCommand::Delete(a) => {
            let context = format!("group delete {}", a.group);
            delete(a).context(context)
        }
        GroupCommand::ResetOffsets(a) => {
            let context = format!("group reset-offsets {}", a.group);
            reset_offsets(a).context(context)
        }
    }
}

fn list(args: ListArgs) -> Result<()> {
    let mut cluster = args.common.connect()?;
    let brokers: Vec<i32> = cluster.brokers().keys().copied().collect();
    let mut groups: BTreeMap<String, (String, String, String)> = BTreeMap::new();
    // Groups live on their coordinators, so every broker is asked.
    for id in brokers {
        let conn = cluster.broker(id)?;
        let version = conn.version(ApiKey::ListGroups)?;
        let response = conn.send(ListGroupsRequest::default())?;
        KafkaError::check(response.error_code, None).with_context(|| format!("broker {id}"))?;
        for g in response.groups {
            let state = if version >= 4 {
                g.group_state
            } else {
                "-".to_owned()
            };
            let kind = if version >= 5 {
                g.group_type
            } else {
                "-".to_owned()
            };
            groups.insert(g.group_id, (state, kind, g.protocol_type));
        }
    }
    match args.common.output {
        Output::Text => {
            let rows: Vec<Vec<String>> = groups
                .iter()
                .map(|(id, (state, kind, protocol))| {
                    vec![
                        id.clone(),
                        state.clone(),
                        kind.clone(),
                        if protocol.is_empty() {
                            "-".to_owned()
                        } else {
                            protocol.clone()
                        },
                    ]
                })
                .collect();
            print!(
                "{}",
                table(&["GROUP", "STATE", "TYPE", "PROTOCOL-TYPE"], &rows)
            );
        }
        Output::Json => print_json(&json!({
            "groups": groups.iter().map(|(id, (state, kind, protocol))| json!({
                "group": id,
                "state": state,
                "type": kind,
                "protocol_type": protocol,
            })).collect::<Vec<_>>(),
        })),
    }
    Ok(())
}

/// A member as both describe APIs report it.
#[derive(Debug, Clone)]
pub struct MemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub assignment: Assignment,
}

/// A group as both describe APIs report it.
#[derive(Debug, Clone)]
pub struct GroupDescription {
    pub state: String,
    /// `classic` or `consumer` (KIP-848).
    pub group_type: &'static str,
    pub protocol_type: String,
    /// The chosen assignor (classic) or the server-side assignor (KIP-848).
    pub protocol: String,
    pub members: Vec<MemberDescription>,
}

impl GroupDescription {
    /// Empty and Dead groups have no consumers that could overwrite reset offsets.
    pub fn is_inactive(&self) -> bool {
        self.state.eq_ignore_ascii_case("empty") || self.state.eq_ignore_ascii_case("dead")
    }
}

/// Describes a group, with DescribeGroups or, for a KIP-848 group, ConsumerGroupDescribe.
pub fn describe_group(cluster: &mut Cluster, group: &str) -> Result<GroupDescription> {
    with_coordinator(cluster, group, |conn| {
        let response = conn.send(DescribeGroupsRequest {
            groups: vec![group.to_owned()],
            include_authorized_operations: false,
            ..Default::default()
        })?;
        let g = response
            .groups
            .into_iter()
            .find(|g| g.group_id == group)
            .ok_or_else(|| anyhow!("DescribeGroups did not answer for the group"))?;
        // A KIP-848 group is not a classic group: brokers answer GROUP_ID_NOT_FOUND (Kafka)
        // or Dead (Skein) to DescribeGroups.
        let not_classic = g.error_code == errors::GROUP_ID_NOT_FOUND
            || (g.error_code == errors::NONE
                && g.group_state.eq_ignore_ascii_case("dead")
                && g.members.is_empty());
        if not_classic && conn.supports(ApiKey::ConsumerGroupDescribe) {
            let response = conn.send(ConsumerGroupDescribeRequest {
                group_ids: vec![group.to_owned()],
                include_authorized_operations: false,
                ..Default::default()
            })?;
            if let Some(cg) = response.groups.into_iter().find(|c| c.group_id == group) {
                if is_retriable(cg.error_code) {
                    return Err(KafkaError::new(cg.error_code, cg.error_message).into());
                }
                if cg.error_code == errors::NONE {
                    return Ok(GroupDescription {
                        state: cg.group_state,
                        group_type: "consumer",
                        protocol_type: CONSUMER_PROTOCOL_TYPE.to_owned(),
                        protocol: cg.assignor_name,
                        members: cg
                            .members
                            .into_iter()
                            .map(|m| MemberDescription {
                                member_id: m.member_id,
                                instance_id: m.instance_id,
                                client_id: m.client_id,
                                client_host: m.client_host,
                                assignment: m
                                    .assignment
                                    .topic_partitions
                                    .into_iter()
                                    .map(|tp| {
                                        let mut parts = tp.partitions;
                                        parts.sort_unstable();
                                        (tp.topic_name, parts)
                                    })
                                    .collect(),
                            })
                            .collect(),
                    });
                }
            }
        }
        if g.error_code == errors::GROUP_ID_NOT_FOUND {
            return Ok(GroupDescription {
                state: "Dead".to_owned(),
                group_type: "classic",
                protocol_type: String::new(),
                protocol: String::new(),
                members: Vec::new(),
            });
        }
        KafkaError::check(g.error_code, None)?;
        let consumer = g.protocol_type == CONSUMER_PROTOCOL_TYPE;
        Ok(GroupDescription {
            state: g.group_state,
            group_type: "classic",
            protocol_type: g.protocol_type,
            protocol: g.protocol_data,
            members: g
                .members
                .into_iter()
                .map(|m| MemberDescription {
                    assignment: if consumer {
                        // An undecodable assignment is shown as none rather than failing
                        // the whole description.
                        assignor::decode_assignment(&m.member_assignment).unwrap_or_default()
                    } else {
                        Assignment::new()
                    },
                    member_id: m.member_id,
                    instance_id: m.group_instance_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                })
                .collect(),
        })
    })
}

/// The timestamp of the first record at or after each given offset of `topic`, one small
/// fetch per leader. Partitions that cannot be read are left out.
fn first_record_timestamps(
    cluster: &mut Cluster,
    topic: &str,
    offsets: &BTreeMap<i32, i64>,
) -> Result<BTreeMap<i32, i64>> {
    let info = cluster.topic(topic)?;
    let mut by_leader: BTreeMap<i32, Vec<FetchPosition>> = BTreeMap::new();
    for (p, o) in offsets {
        if let Some(leader) = info.leader(*p) {
            by_leader.entry(leader).or_default().push(FetchPosition {
                partition: *p,
                offset: *o,
                max_bytes: PEEK_MAX_BYTES,
            });
        }
    }
    let mut out = BTreeMap::new();
    for (leader, positions) in by_leader {
        let fetched = fetch(cluster.broker(leader)?, topic, &positions, 0)?;
        for f in fetched.into_iter().filter(|f| f.error_code == errors::NONE) {
            let from = offsets[&f.partition];
            if let Some(r) = f.decoded.records.iter().find(|r| r.offset >= from) {
                out.insert(f.partition, r.timestamp_ms);
            }
        }
    }
    Ok(out)
}

/// One partition's line of `group describe`.
struct LagRow {
    topic: String,
    partition: i32,
    committed: Option<i64>,
    end: Option<i64>,
    lag: Option<i64>,
    lag_ms: Option<i64>,
    member: Option<String>,
}

fn describe(args: GroupArgs) -> Result<()> {
    let group = args.group.as_str();
    let mut cluster = args.common.connect()?;
    let description = describe_group(&mut cluster, group)?;
    let committed = with_coordinator(&mut cluster, group, |conn| {
        committed_offsets(conn, group, None)
    })?;
    if description.state.eq_ignore_ascii_case("dead")
        && description.members.is_empty()
        && committed.is_empty()
    {
        return Err(KafkaError::new(
            errors::GROUP_ID_NOT_FOUND,
            Some(format!("Group '{group}' does not exist.")),
        )
        .into());
    }
    let coordinator = cluster.find_coordinator(group)?;
    let coordinator_addr = cluster
        .brokers()
        .get(&coordinator)
        .map(|b| b.addr())
        .unwrap_or_default();
    let mut owners: BTreeMap<TopicPartition, String> = BTreeMap::new();
    for m in &description.members {
        for (topic, parts) in &m.assignment {
            for p in parts {
                owners.insert((topic.clone(), *p), m.member_id.clone());
            }
        }
    }
    let mut by_topic: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
    for (topic, p) in committed.keys().chain(owners.keys()) {
        by_topic.entry(topic.clone()).or_default().insert(*p);
    }
    let now = now_ms();
    let mut rows = Vec::new();
    for (topic, parts) in &by_topic {
        let parts: Vec<i32> = parts.iter().copied().collect();
        // A deleted topic keeps its committed offsets for a while; show them without ends.
        let ends = list_offsets(&mut cluster, topic, &parts, LATEST).unwrap_or_default();
        let behind: BTreeMap<i32, i64> = parts
            .iter()
            .filter_map(|p| {
                let c = *committed.get(&(topic.clone(), *p))?;
                let e = ends.get(p).copied().flatten()?;
                (c < e).then_some((*p, c))
            })
            .collect();
        let first_times = if behind.is_empty() {
            BTreeMap::new()
        } else {
            first_record_timestamps(&mut cluster, topic, &behind).unwrap_or_default()
        };
        for p in parts {
            let key = (topic.clone(), p);
            let c = committed.get(&key).copied();
            let e = ends.get(&p).copied().flatten();
            let lag = c.zip(e).map(|(c, e)| (e - c).max(0));
            let lag_ms = match lag {
                Some(0) => None,
                _ => first_times.get(&p).map(|ts| (now - ts).max(0)),
            };
            rows.push(LagRow {
                topic: topic.clone(),
                partition: p,
                committed: c,
                end: e,
                lag,
                lag_ms,
                member: owners.get(&key).cloned(),
            });
        }
    }
    let total_lag: i64 = rows.iter().filter_map(|r| r.lag).sum();
    match args.common.output {
        Output::Text => {
            println!(
                "group {group}: state {}, {} group{}, coordinator {coordinator} ({coordinator_addr}), {} member{}",
                description.state,
                description.group_type,
                if description.protocol.is_empty() {
                    String::new()
                } else {
                    format!(" (assignor {})", description.protocol)
                },
                description.members.len(),
                if description.members.len() == 1 { "" } else { "s" },
            );
            if !description.members.is_empty() {
                println!();
                let member_rows: Vec<Vec<String>> = description
                    .members
                    .iter()
                    .map(|m| {
                        vec![
                            m.member_id.clone(),
                            or_dash(m.instance_id.clone()),
                            m.client_id.clone(),
                            m.client_host.clone(),
                            assignment_text(&m.assignment),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table(
                        &["MEMBER", "INSTANCE", "CLIENT-ID", "HOST", "ASSIGNMENT"],
                        &member_rows
                    )
                );
            }
            println!();
            let lag_rows: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    vec![
                        r.topic.clone(),
                        r.partition.to_string(),
                        or_dash(r.committed),
                        or_dash(r.end),
                        or_dash(r.lag),
                        or_dash(r.lag_ms.map(human_duration)),
                        or_dash(r.member.clone()),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &[
                        "TOPIC",
                        "PARTITION",
                        "COMMITTED",
                        "LOG-END",
                        "LAG",
                        "LAG-TIME",
                        "MEMBER"
                    ],
                    &lag_rows
                )
            );
        }
        Output::Json => print_json(&json!({
            "group": group,
            "state": description.state,
            "type": description.group_type,
            "protocol_type": description.protocol_type,
            "assignor": description.protocol,
            "coordinator": { "id": coordinator, "address": coordinator_addr },
            "members": description.members.iter().map(|m| json!({
                "member_id": m.member_id,
                "instance_id": m.instance_id,
                "client_id": m.client_id,
                "client_host": m.client_host,
                "assignment": m.assignment,
            })).collect::<Vec<_>>(),
            "partitions": rows.iter().map(|r| json!({
                "topic": r.topic,
                "partition": r.partition,
                "committed_offset": r.committed,
                "log_end_offset": r.end,
                "lag": r.lag,
                "lag_ms": r.lag_ms,
                "member_id": r.member,
            })).collect::<Vec<_>>(),
            "total_lag": total_lag,
        })),
    }
    Ok(())
}

fn delete(args: GroupArgs) -> Result<()> {
    let group = args.group.as_str();
    let mut cluster = args.common.connect()?;
    with_coordinator(&mut cluster, group, |conn| {
        let response = conn.send(DeleteGroupsRequest {
            groups_names: vec![group.to_owned()],
            ..Default::default()
        })?;
        let result = response
            .results
            .into_iter()
            .find(|r| r.group_id == group)
            .ok_or_else(|| anyhow!("DeleteGroups did not answer for the group"))?;
        KafkaError::check(result.error_code, None)?;
        Ok(())
    })?;
    match args.common.output {
        Output::Text => println!("deleted group {group}"),
        Output::Json => print_json(&json!({ "group": group, "deleted": true })),
    }
    Ok(())
}

/// Parses `TOPIC` or `TOPIC:0,1,2`.
fn parse_topic_spec(spec: &str) -> Result<(String, Option<Vec<i32>>)> {
    match spec.rsplit_once(':') {
        None => Ok((spec.to_owned(), None)),
        Some((topic, list)) => {
            let parts = list
                .split(',')
                .map(|p| {
                    p.trim()
                        .parse::<i32>()
                        .ok()
                        .filter(|p| *p >= 0)
                        .ok_or_else(|| anyhow!("invalid partition {p:?} in --topic {spec:?}"))
                })
                .collect::<Result<Vec<_>>>()?;
            if topic.is_empty() {
                bail!("invalid --topic {spec:?}: no topic name");
            }
            Ok((topic.to_owned(), Some(parts)))
        }
    }
}

fn reset_target(args: &ResetArgs) -> Result<ResetTarget> {
    Ok(if args.to_earliest {
        ResetTarget::Earliest
    } else if args.to_latest {
        ResetTarget::Latest
    } else if let Some(n) = args.to_offset {
        ResetTarget::Offset(n)
    } else if let Some(t) = &args.to_datetime {
        ResetTarget::Datetime(parse_rfc3339(t)?)
    } else if let Some(n) = args.shift_by {
        ResetTarget::ShiftBy(n)
    } else {
        bail!("say where to: --to-earliest, --to-latest, --to-offset, --to-datetime or --shift-by")
    })
}

fn reset_offsets(args: ResetArgs) -> Result<()> {
    let target = reset_target(&args)?;
    let specs = args
        .topics
        .iter()
        .map(|s| parse_topic_spec(s))
        .collect::<Result<Vec<_>>>()?;
    let group = args.group.as_str();
    let mut cluster = args.common.connect()?;
    let description = describe_group(&mut cluster, group)?;
    if !description.is_inactive() {
        bail!(
            "refusing to reset offsets: group {group} has active members (state {}, {} member{}); stop its consumers first",
            description.state,
            description.members.len(),
            if description.members.len() == 1 { "" } else { "s" },
        );
    }
    let committed = with_coordinator(&mut cluster, group, |conn| {
        committed_offsets(conn, group, None)
    })?;
    let mut scope: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
    if args.all_topics {
        for (topic, p) in committed.keys() {
            scope.entry(topic.clone()).or_default().insert(*p);
        }
    }
    for (topic, parts) in specs {
        let info = cluster
            .topic(&topic)
            .with_context(|| format!("topic {topic}"))?;
        let all: BTreeSet<i32> = info.partitions.iter().map(|p| p.partition).collect();
        let chosen = match parts {
            None => all,
            Some(parts) => {
                if let Some(missing) = parts.iter().find(|p| !all.contains(p)) {
                    bail!(
                        "topic {topic} has no partition {missing} (it has {})",
                        all.len()
                    );
                }
                parts.into_iter().collect()
            }
        };
        scope.entry(topic).or_default().extend(chosen);
    }
    if scope.is_empty() {
        bail!("no partitions to reset");
    }
    let mut partitions = Vec::new();
    for (topic, parts) in &scope {
        let parts: Vec<i32> = parts.iter().copied().collect();
        let context = || format!("offsets of topic {topic}");
        let earliest = list_offsets(&mut cluster, topic, &parts, EARLIEST).with_context(context)?;
        let latest = list_offsets(&mut cluster, topic, &parts, LATEST).with_context(context)?;
        let at_time = match target {
            ResetTarget::Datetime(ms) => {
                list_offsets(&mut cluster, topic, &parts, ms).with_context(context)?
            }
            _ => BTreeMap::new(),
        };
        for p in parts {
            let latest = latest.get(&p).copied().flatten().unwrap_or(0);
            partitions.push(PartitionOffsets {
                topic: topic.clone(),
                partition: p,
                current: committed.get(&(topic.clone(), p)).copied(),
                earliest: earliest.get(&p).copied().flatten().unwrap_or(latest),
                latest,
                at_datetime: at_time.get(&p).copied().flatten(),
            });
        }
    }
    let rows = plan(target, &partitions).map_err(|e| anyhow!(e))?;
    if args.execute {
        let offsets: BTreeMap<TopicPartition, i64> = rows
            .iter()
            .map(|r| ((r.topic.clone(), r.partition), r.new))
            .collect();
        with_coordinator(&mut cluster, group, |conn| {
            commit_offsets(conn, group, -1, "", &offsets)
        })?;
    }
    print_plan(group, &rows, args.execute, args.common.output);
    Ok(())
}

fn print_plan(group: &str, rows: &[PlanRow], executed: bool, output: Output) {
    match output {
        Output::Text => {
            let lines: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    vec![
                        r.topic.clone(),
                        r.partition.to_string(),
                        or_dash(r.current),
                        r.new.to_string(),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &["TOPIC", "PARTITION", "CURRENT-OFFSET", "NEW-OFFSET"],
                    &lines
                )
            );
            if executed {
                eprintln!("offsets of group {group} reset");
            } else {
                eprintln!("dry run: nothing changed; add --execute to apply this plan");
            }
        }
        Output::Json => print_json(&json!({
            "group": group,
            "executed": executed,
            "partitions": rows.iter().map(|r| json!({
                "topic": r.topic,
                "partition": r.partition,
                "current_offset": r.current,
                "new_offset": r.new,
            })).collect::<Vec<Value>>(),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_specs() {
        assert_eq!(parse_topic_spec("orders").unwrap(), ("orders".into(), None));
        assert_eq!(
            parse_topic_spec("orders:0,2").unwrap(),
            ("orders".into(), Some(vec![0, 2]))
        );
        assert!(parse_topic_spec("orders:x").is_err());
        assert!(parse_topic_spec(":1").is_err());
        assert!(parse_topic_spec("orders:-1").is_err());
    }
}
