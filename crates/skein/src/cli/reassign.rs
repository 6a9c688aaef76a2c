//! `skein topic reassign`: partition reassignment (KIP-455) with AlterPartitionReassignments
//! and ListPartitionReassignments, like Kafka's `kafka-reassign-partitions`.
//!
//! - `--topic T --partition P --replicas 2,3,4`, or `--plan FILE` in Kafka's reassignment JSON
//!   (`{"version":1,"partitions":[{"topic":"t","partition":0,"replicas":[2,3,4]}]}`): starts
//!   the moves; the brokers copy the data in the background (`--status` follows them).
//! - `--dry-run`: checks the plan against the cluster's metadata (topics, partitions,
//!   brokers) and prints current → proposed per partition; nothing is sent that changes
//!   anything.
//! - `--status`: the reassignments in progress (of `--topic`, or all).
//! - `--cancel`: cancels the reassignments of the named partitions (`--topic`/`--partition`,
//!   or every partition of `--plan`), reverting them to their original replicas.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use skein_protocol::messages::alter_partition_reassignments_request::{
    AlterPartitionReassignmentsRequest, ReassignablePartition, ReassignableTopic,
};
use skein_protocol::messages::list_partition_reassignments_request::{
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsTopics,
};

use super::client::Cluster;
use super::errors::{name as error_name, KafkaError};
use super::output::{print_json, table, Output};
use super::Common;

/// How long the brokers may take to commit the change.
const TIMEOUT_MS: i32 = 30_000;

#[derive(clap::Args)]
pub struct ReassignArgs {
    /// The topic (with --partition and --replicas; or with --status to filter).
    #[arg(long)]
    pub topic: Option<String>,
    /// The partition to move.
    #[arg(long)]
    pub partition: Option<i32>,
    /// The new replicas, comma-separated broker ids, preferred leader first.
    #[arg(long, value_name = "IDS")]
    pub replicas: Option<String>,
    /// A reassignment plan in Kafka's JSON format.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["topic", "partition", "replicas"])]
    pub plan: Option<PathBuf>,
    /// Show current → proposed replicas per partition and change nothing.
    #[arg(long, conflicts_with_all = ["status", "cancel"])]
    pub dry_run: bool,
    /// List the reassignments in progress.
    #[arg(long, conflicts_with_all = ["cancel", "replicas", "plan", "partition"])]
    pub status: bool,
    /// Cancel the reassignments of the named partitions.
    #[arg(long, conflicts_with = "replicas")]
    pub cancel: bool,
    #[command(flatten)]
    pub common: Common,
}

/// One partition's move: `replicas: None` cancels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    pub topic: String,
    pub partition: i32,
    pub replicas: Option<Vec<i32>>,
}

/// Parses `2,3,4`: at least one broker id, each once.
pub fn parse_replicas(text: &str) -> Result<Vec<i32>> {
    let mut out = Vec::new();
    for part in text.split(',') {
        let part = part.trim();
        let id: i32 = part
            .parse()
            .with_context(|| format!("--replicas: {part:?} is not a broker id"))?;
        if id < 0 {
            bail!("--replicas: broker id {id} is negative");
        }
        out.push(id);
    }
    check_replicas(&out).context("--replicas")?;
    Ok(out)
}

fn check_replicas(replicas: &[i32]) -> Result<()> {
    if replicas.is_empty() {
        bail!("the replica list is empty");
    }
    let mut seen = BTreeSet::new();
    for r in replicas {
        if !seen.insert(r) {
            bail!("broker {r} is listed twice in {replicas:?}");
        }
    }
    Ok(())
}

/// Parses Kafka's reassignment JSON (version 1). `log_dirs`, if present, must be all "any":
/// moving replicas between directories is not supported.
pub fn parse_plan(text: &str, cancel: bool) -> Result<Vec<Move>> {
    let v: Value = serde_json::from_str(text).context("the plan is not valid JSON")?;
    match v.get("version").and_then(Value::as_i64) {
        Some(1) => {}
        Some(other) => bail!("unsupported plan version {other} (expected 1)"),
        None => bail!("the plan has no \"version\": 1"),
    }
    let Some(parts) = v.get("partitions").and_then(Value::as_array) else {
        bail!("the plan has no \"partitions\" list");
    };
    if parts.is_empty() {
        bail!("the plan lists no partitions");
    }
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, p) in parts.iter().enumerate() {
        let topic = p
            .get("topic")
            .and_then(Value::as_str)
            .with_context(|| format!("partitions[{i}]: no \"topic\" string"))?;
        let partition = p
            .get("partition")
            .and_then(Value::as_i64)
            .and_then(|n| i32::try_from(n).ok())
            .filter(|n| *n >= 0)
            .with_context(|| format!("partitions[{i}]: no valid \"partition\" number"))?;
        if !seen.insert((topic.to_string(), partition)) {
            bail!("partitions[{i}]: {topic}-{partition} is listed twice");
        }
        let replicas = if cancel {
            None
        } else {
            let list = p
                .get("replicas")
                .and_then(Value::as_array)
                .with_context(|| format!("partitions[{i}]: no \"replicas\" list"))?;
            let ids = list
                .iter()
                .map(|r| {
                    r.as_i64()
                        .and_then(|n| i32::try_from(n).ok())
                        .filter(|n| *n >= 0)
                        .with_context(|| format!("partitions[{i}]: {r} is not a broker id"))
                })
                .collect::<Result<Vec<i32>>>()?;
            check_replicas(&ids)
                .with_context(|| format!("partitions[{i}] ({topic}-{partition})"))?;
            if let Some(dirs) = p.get("log_dirs").and_then(Value::as_array) {
                if dirs.len() != ids.len() {
                    bail!("partitions[{i}]: \"log_dirs\" must have one entry per replica");
                }
                if dirs.iter().any(|d| d.as_str() != Some("any")) {
                    bail!("partitions[{i}]: moving replicas between log directories is not supported (use \"any\")");
                }
            }
            Some(ids)
        };
        out.push(Move {
            topic: topic.to_string(),
            partition,
            replicas,
        });
    }
    Ok(out)
}

/// The moves the arguments name.
fn moves(args: &ReassignArgs) -> Result<Vec<Move>> {
    if let Some(path) = &args.plan {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("could not read the plan {}", path.display()))?;
        return parse_plan(&text, args.cancel);
    }
    let (Some(topic), Some(partition)) = (&args.topic, args.partition) else {
        bail!("give --topic and --partition (with --replicas, or --cancel), or --plan FILE, or --status");
    };
    if partition < 0 {
        bail!("--partition {partition} is negative");
    }
    let replicas = if args.cancel {
        None
    } else {
        let Some(text) = &args.replicas else {
            bail!("give --replicas IDS (or --cancel)");
        };
        Some(parse_replicas(text)?)
    };
    Ok(vec![Move {
        topic: topic.clone(),
        partition,
        replicas,
    }])
}

pub fn run(args: ReassignArgs) -> Result<()> {
    if args.status {
        return status(&args);
    }
    let moves = moves(&args)?;
    let mut cluster = args.common.connect()?;
    if args.dry_run {
        return dry_run(&mut cluster, &moves, args.common.output);
    }
    execute(&mut cluster, &moves, args.common.output)
}

/// The current replicas of each move's partition, checked against the metadata: an unknown
/// topic or partition, or a broker the cluster does not know, is an error.
fn current_replicas(cluster: &mut Cluster, moves: &[Move]) -> Result<Vec<Vec<i32>>> {
    let brokers: BTreeSet<i32> = cluster.brokers().keys().copied().collect();
    let mut out = Vec::new();
    for m in moves {
        let info = cluster.topic(&m.topic)?;
        let Some(p) = info.partitions.iter().find(|p| p.partition == m.partition) else {
            bail!(
                "topic {} has no partition {} (it has {})",
                m.topic,
                m.partition,
                info.partitions.len()
            );
        };
        if let Some(r) = m.replicas.iter().flatten().find(|r| !brokers.contains(r)) {
            bail!(
                "{}-{}: broker {r} is not in the cluster (brokers: {brokers:?})",
                m.topic,
                m.partition
            );
        }
        out.push(p.replicas.clone());
    }
    Ok(out)
}

fn list_text(ids: &[i32]) -> String {
    format!(
        "[{}]",
        ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
    )
}

fn dry_run(cluster: &mut Cluster, moves: &[Move], output: Output) -> Result<()> {
    let current = current_replicas(cluster, moves)?;
    let ongoing = list_ongoing(cluster, None)?;
    let mut rows = Vec::new();
    let mut items = Vec::new();
    for (m, cur) in moves.iter().zip(&current) {
        let in_progress = ongoing
            .iter()
            .find(|o| o.0 == m.topic && o.1 == m.partition);
        let proposed = match (&m.replicas, in_progress) {
            (Some(r), _) => r.clone(),
            (None, Some(o)) => o.2.iter().copied().filter(|r| !o.3.contains(r)).collect(),
            (None, None) => bail!(
                "{}-{}: no reassignment is in progress to cancel",
                m.topic,
                m.partition
            ),
        };
        rows.push(vec![
            m.topic.clone(),
            m.partition.to_string(),
            list_text(cur),
            list_text(&proposed),
        ]);
        items.push(json!({
            "topic": m.topic, "partition": m.partition,
            "current": cur, "proposed": proposed,
        }));
    }
    match output {
        Output::Text => {
            print!(
                "{}",
                table(&["TOPIC", "PARTITION", "CURRENT", "PROPOSED"], &rows)
            );
            println!("dry run: nothing was changed");
        }
        Output::Json => print_json(&json!({ "dry_run": true, "partitions": items })),
    }
    Ok(())
}

fn execute(cluster: &mut Cluster, moves: &[Move], output: Output) -> Result<()> {
    let mut request = AlterPartitionReassignmentsRequest {
        timeout_ms: TIMEOUT_MS,
        ..Default::default()
    };
    for m in moves {
        if request.topics.last().is_none_or(|t| t.name != m.topic) {
            request.topics.push(ReassignableTopic {
                name: m.topic.clone(),
                ..Default::default()
            });
        }
        if let Some(t) = request.topics.last_mut() {
            t.partitions.push(ReassignablePartition {
                partition_index: m.partition,
                replicas: m.replicas.clone(),
                ..Default::default()
            });
        }
    }
    let response = cluster.any()?.send_with_timeout(
        request,
        std::time::Duration::from_millis(TIMEOUT_MS as u64 + 5_000),
    )?;
    KafkaError::check(response.error_code, response.error_message.as_deref())?;
    let mut rows = Vec::new();
    let mut items = Vec::new();
    let mut failed = Vec::new();
    for t in &response.responses {
        for p in &t.partitions {
            let verb = if moves.iter().any(|m| {
                m.topic == t.name && m.partition == p.partition_index && m.replicas.is_none()
            }) {
                "cancelled"
            } else {
                "started"
            };
            let status = if p.error_code == 0 {
                verb.to_string()
            } else {
                let e = KafkaError::new(p.error_code, p.error_message.clone()).to_string();
                failed.push(format!("{}-{}: {e}", t.name, p.partition_index));
                e
            };
            rows.push(vec![t.name.clone(), p.partition_index.to_string(), status]);
            items.push(json!({
                "topic": t.name, "partition": p.partition_index,
                "error": error_name(p.error_code).map(str::to_owned).filter(|_| p.error_code != 0),
                "message": p.error_message,
            }));
        }
    }
    match output {
        Output::Text => print!("{}", table(&["TOPIC", "PARTITION", "RESULT"], &rows)),
        Output::Json => print_json(&json!({ "partitions": items })),
    }
    if !failed.is_empty() {
        bail!(
            "{} of {} partitions failed: {}",
            failed.len(),
            rows.len(),
            failed.join("; ")
        );
    }
    Ok(())
}

/// (topic, partition, replicas, adding, removing) of the reassignments in progress.
type Ongoing = (String, i32, Vec<i32>, Vec<i32>, Vec<i32>);

fn list_ongoing(cluster: &mut Cluster, topic: Option<&str>) -> Result<Vec<Ongoing>> {
    let topics = match topic {
        None => None,
        Some(name) => {
            let info = cluster.topic(name)?;
            Some(vec![ListPartitionReassignmentsTopics {
                name: name.to_string(),
                partition_indexes: info.partitions.iter().map(|p| p.partition).collect(),
                ..Default::default()
            }])
        }
    };
    let response = cluster.any()?.send(ListPartitionReassignmentsRequest {
        timeout_ms: TIMEOUT_MS,
        topics,
        ..Default::default()
    })?;
    KafkaError::check(response.error_code, response.error_message.as_deref())?;
    let mut out = Vec::new();
    for t in response.topics {
        for p in t.partitions {
            out.push((
                t.name.clone(),
                p.partition_index,
                p.replicas,
                p.adding_replicas,
                p.removing_replicas,
            ));
        }
    }
    out.sort();
    Ok(out)
}

fn status(args: &ReassignArgs) -> Result<()> {
    let mut cluster = args.common.connect()?;
    let ongoing = list_ongoing(&mut cluster, args.topic.as_deref())?;
    match args.common.output {
        Output::Text => {
            if ongoing.is_empty() {
                println!("no reassignments in progress");
            } else {
                let rows: Vec<Vec<String>> = ongoing
                    .iter()
                    .map(|(t, p, r, a, rm)| {
                        vec![
                            t.clone(),
                            p.to_string(),
                            list_text(r),
                            list_text(a),
                            list_text(rm),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table(
                        &["TOPIC", "PARTITION", "REPLICAS", "ADDING", "REMOVING"],
                        &rows
                    )
                );
            }
        }
        Output::Json => {
            let items: Vec<Value> = ongoing
                .iter()
                .map(|(t, p, r, a, rm)| {
                    json!({"topic": t, "partition": p, "replicas": r, "adding": a, "removing": rm})
                })
                .collect();
            print_json(&json!({ "reassignments": items }));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_are_checked() {
        assert_eq!(parse_replicas("2, 3,4").unwrap(), vec![2, 3, 4]);
        assert!(parse_replicas("").is_err());
        assert!(parse_replicas("1,x").is_err());
        assert!(parse_replicas("1,-2").is_err());
        assert!(parse_replicas("1,2,1")
            .unwrap_err()
            .to_string()
            .contains("--replicas"));
    }

    #[test]
    fn plans_follow_kafkas_format() {
        let plan = r#"{"version":1,"partitions":[
            {"topic":"a","partition":0,"replicas":[2,3,4]},
            {"topic":"a","partition":1,"replicas":[1],"log_dirs":["any"]}]}"#;
        let moves = parse_plan(plan, false).unwrap();
        assert_eq!(moves.len(), 2);
        assert_eq!(moves[0].replicas, Some(vec![2, 3, 4]));
        assert_eq!(parse_plan(plan, true).unwrap()[1].replicas, None);
        for bad in [
            "nope",
            r#"{"partitions":[]}"#,
            r#"{"version":2,"partitions":[{"topic":"a","partition":0,"replicas":[1]}]}"#,
            r#"{"version":1,"partitions":[]}"#,
            r#"{"version":1,"partitions":[{"partition":0,"replicas":[1]}]}"#,
            r#"{"version":1,"partitions":[{"topic":"a","partition":-1,"replicas":[1]}]}"#,
            r#"{"version":1,"partitions":[{"topic":"a","partition":0}]}"#,
            r#"{"version":1,"partitions":[{"topic":"a","partition":0,"replicas":[]}]}"#,
            r#"{"version":1,"partitions":[{"topic":"a","partition":0,"replicas":[1,1]}]}"#,
            r#"{"version":1,"partitions":[{"topic":"a","partition":0,"replicas":["x"]}]}"#,
            r#"{"version":1,"partitions":[{"topic":"a","partition":0,"replicas":[1],"log_dirs":["/d"]}]}"#,
            r#"{"version":1,"partitions":[{"topic":"a","partition":0,"replicas":[1]},{"topic":"a","partition":0,"replicas":[2]}]}"#,
        ] {
            assert!(parse_plan(bad, false).is_err(), "{bad}");
        }
    }
}
