//! `skein dlt purge TOPIC --before OFFSET|TIME`: deletes a dead-letter topic's records below a
//! point with DeleteRecords, partition by partition, as any Kafka broker serves it.
//!
//! The point is an offset (capped at each partition's high watermark) or a time (the first
//! offset at or after it, from ListOffsets by timestamp; the high watermark when no record is
//! that recent). Before deleting, the command reads the committed offsets of the replay group
//! `skein-dlt-replay.<topic>` (the progress of `skein dlt replay`): when the group has offsets
//! and some partition's would be purged past them, those dead letters were never replayed, and
//! the purge is refused unless `--force` is given. A group without any offset means replay was
//! never used on this topic, and the purge goes ahead (the output says so). `--dry-run` prints
//! the same plan and sends nothing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use skein_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsRequest, DeleteRecordsTopic,
};

use super::client::{backoff, is_retriable, Cluster, RETRIES};
use super::errors::KafkaError;
use super::offsets::{
    committed_offsets, kafka_code, list_offsets, with_coordinator, EARLIEST, LATEST,
};
use super::output::{print_json, table, Output};
use super::time::{format_rfc3339, parse_rfc3339};
use super::Common;

/// How long the broker may take to delete (it answers once every replica has).
const DELETE_TIMEOUT_MS: i32 = 30_000;
/// How long to wait for the replay group's coordinator to be ready.
const COORDINATOR_WAIT: Duration = Duration::from_secs(60);

#[derive(clap::Args)]
pub struct PurgeArgs {
    /// The dead-letter topic.
    pub topic: String,
    /// Delete the records before this point: an offset (`N` or `offset:N`, capped at each
    /// partition's high watermark), or a time (RFC 3339 such as `2026-12-01T03:00:00Z`, or
    /// `timestamp:MS` in Unix milliseconds): the records before the first one at or after it.
    #[arg(long, value_name = "OFFSET|TIME")]
    pub before: String,
    /// Purge only this partition.
    #[arg(long)]
    pub partition: Option<i32>,
    /// Print what would be deleted and delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Purge even dead letters the replay group has not replayed yet.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub common: Common,
}

/// The replay group of `skein dlt replay` for a DLT.
pub fn replay_group(topic: &str) -> String {
    format!("skein-dlt-replay.{topic}")
}

/// Where to purge up to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Before {
    Offset(i64),
    /// Unix milliseconds.
    Time(i64),
}

fn parse_before(text: &str) -> Result<Before> {
    let bad = || {
        anyhow!(
            "invalid --before {text:?}: expected an offset (N or offset:N) or a time \
             (RFC 3339, e.g. 2026-12-01T03:00:00Z, or timestamp:MS)"
        )
    };
    let number = |s: &str| s.parse::<i64>().ok().filter(|n| *n >= 0);
    if let Some(n) = text.strip_prefix("offset:") {
        return number(n).map(Before::Offset).ok_or_else(bad);
    }
    if let Some(t) = text.strip_prefix("timestamp:") {
        if let Some(ms) = number(t) {
            return Ok(Before::Time(ms));
        }
        return parse_rfc3339(t).map(Before::Time);
    }
    if let Some(n) = number(text) {
        return Ok(Before::Offset(n));
    }
    if text.starts_with(|c: char| c.is_ascii_digit()) {
        return parse_rfc3339(text).map(Before::Time);
    }
    Err(bad())
}

/// One partition's purge.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    partition: i32,
    old_start: i64,
    high_watermark: i64,
    /// The offset records are deleted below (never below the old log start).
    target: i64,
    /// The log start after the purge (the target when dry-running).
    new_start: i64,
    /// The replay group's committed offset, if any.
    replayed_up_to: Option<i64>,
}

impl Row {
    fn removed(&self) -> i64 {
        (self.new_start - self.old_start).max(0)
    }

    /// Offsets about to be purged that the replay group has not passed.
    fn unreplayed(&self) -> i64 {
        let from = self
            .replayed_up_to
            .unwrap_or(self.old_start)
            .max(self.old_start);
        (self.target - from).max(0)
    }
}

pub fn run(args: PurgeArgs) -> Result<()> {
    let before = parse_before(&args.before)?;
    let mut cluster = args.common.connect()?;
    let info = cluster.topic(&args.topic)?;
    let all: Vec<i32> = info.partitions.iter().map(|p| p.partition).collect();
    let parts = super::dlt::chosen_partitions(&info, args.partition)?;
    let starts = list_offsets(&mut cluster, &args.topic, &parts, EARLIEST)?;
    let ends = list_offsets(&mut cluster, &args.topic, &parts, LATEST)?;
    let at_time = match before {
        Before::Time(ms) => Some(list_offsets(&mut cluster, &args.topic, &parts, ms)?),
        Before::Offset(_) => None,
    };
    let group = replay_group(&args.topic);
    // Every partition's progress: a group with offsets elsewhere has used replay on this topic.
    let committed = replay_progress(&mut cluster, &group, &args.topic, &all)
        .with_context(|| format!("committed offsets of the replay group {group}"))?;
    let group_has_offsets = !committed.is_empty();

    let mut rows: Vec<Row> = parts
        .iter()
        .map(|p| {
            let old_start = starts.get(p).copied().flatten().unwrap_or(0);
            let high_watermark = ends.get(p).copied().flatten().unwrap_or(old_start);
            let point = match before {
                Before::Offset(o) => o,
                Before::Time(_) => at_time
                    .as_ref()
                    .and_then(|m| m.get(p).copied().flatten())
                    .unwrap_or(high_watermark),
            };
            let target = point.min(high_watermark).max(old_start);
            Row {
                partition: *p,
                old_start,
                high_watermark,
                target,
                new_start: target,
                replayed_up_to: committed.get(&(args.topic.clone(), *p)).copied(),
            }
        })
        .collect();

    let unreplayed: i64 = if group_has_offsets {
        rows.iter().map(Row::unreplayed).sum()
    } else {
        0
    };
    if unreplayed > 0 && !args.force && !args.dry_run {
        let detail: Vec<String> = rows
            .iter()
            .filter(|r| r.unreplayed() > 0)
            .map(|r| {
                format!(
                    "partition {} replayed up to {}, purge up to {}",
                    r.partition,
                    r.replayed_up_to
                        .map_or_else(|| "nothing".to_owned(), |o| o.to_string()),
                    r.target
                )
            })
            .collect();
        bail!(
            "refusing to purge {unreplayed} dead letters the replay group {group} has not replayed ({}); --force purges them anyway",
            detail.join("; ")
        );
    }

    if !args.dry_run {
        let todo: Vec<(i32, i64)> = rows
            .iter()
            .filter(|r| r.target > r.old_start)
            .map(|r| (r.partition, r.target))
            .collect();
        let done = delete_records(&mut cluster, &args.topic, &todo)?;
        for r in &mut rows {
            r.new_start = done.get(&r.partition).copied().unwrap_or(r.old_start);
        }
    }

    let removed: i64 = rows.iter().map(Row::removed).sum();
    let group_note = if group_has_offsets {
        if unreplayed > 0 {
            format!(
                "{unreplayed} of these dead letters were never replayed by the replay group {group}{}",
                if args.dry_run { " (without --force the purge is refused)" } else { " (purged anyway: --force)" }
            )
        } else {
            format!("the replay group {group} has replayed every record purged")
        }
    } else {
        format!("the replay group {group} has no committed offsets (skein dlt replay never ran on this topic)")
    };
    match args.common.output {
        Output::Json => print_json(&json!({
            "topic": args.topic,
            "before": match before {
                Before::Offset(o) => json!({"offset": o}),
                Before::Time(ms) => json!({"timestamp": ms}),
            },
            "dry_run": args.dry_run,
            "forced": args.force,
            "replay_group": group,
            "replay_group_has_offsets": group_has_offsets,
            "partitions": rows.iter().map(row_json).collect::<Vec<Value>>(),
            "removed": removed,
            "unreplayed": unreplayed,
        })),
        Output::Text => {
            let header = [
                "PARTITION",
                "HIGH WATERMARK",
                "OLD LOG START",
                "NEW LOG START",
                "REMOVED",
                "REPLAYED UP TO",
            ];
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    vec![
                        r.partition.to_string(),
                        r.high_watermark.to_string(),
                        r.old_start.to_string(),
                        r.new_start.to_string(),
                        r.removed().to_string(),
                        r.replayed_up_to
                            .map_or_else(|| "-".to_owned(), |o| o.to_string()),
                    ]
                })
                .collect();
            print!("{}", table(&header, &cells));
            let point = match before {
                Before::Offset(o) => format!("offset {o}"),
                Before::Time(ms) => {
                    format!("{} (the first record at or after it)", format_rfc3339(ms))
                }
            };
            if args.dry_run {
                println!(
                    "dry run: would remove {removed} records of {} before {point}; nothing was deleted",
                    args.topic
                );
            } else {
                println!("removed {removed} records of {} before {point}", args.topic);
            }
            println!("{group_note}");
        }
    }
    if unreplayed > 0 && args.force && !args.dry_run {
        eprintln!("skein: warning: {group_note}");
    }
    Ok(())
}

/// The replay group's committed offsets. A group nobody used yet may have a coordinator that
/// is still being set up (Kafka creates `__consumer_offsets` on first use and answers
/// NOT_COORDINATOR while it loads): retriable errors are retried for up to a minute.
fn replay_progress(
    cluster: &mut Cluster,
    group: &str,
    topic: &str,
    parts: &[i32],
) -> Result<BTreeMap<(String, i32), i64>> {
    let deadline = Instant::now() + COORDINATOR_WAIT;
    loop {
        let outcome = with_coordinator(cluster, group, |conn| {
            committed_offsets(conn, group, Some(&[(topic.to_owned(), parts.to_vec())]))
        });
        match outcome {
            Err(e) if Instant::now() < deadline && kafka_code(&e).is_some_and(is_retriable) => {
                std::thread::sleep(Duration::from_millis(500));
            }
            other => return other,
        }
    }
}

fn row_json(r: &Row) -> Value {
    json!({
        "partition": r.partition,
        "high_watermark": r.high_watermark,
        "old_log_start": r.old_start,
        "new_log_start": r.new_start,
        "removed": r.removed(),
        "replayed_up_to": r.replayed_up_to,
        "unreplayed": r.unreplayed(),
    })
}

/// DeleteRecords below `targets` ((partition, offset)), sent to each partition's leader,
/// retrying partitions whose leader moved. Returns each partition's new log start (the low
/// watermark the leader answered).
fn delete_records(
    cluster: &mut Cluster,
    topic: &str,
    targets: &[(i32, i64)],
) -> Result<BTreeMap<i32, i64>> {
    let mut done = BTreeMap::new();
    let mut pending: Vec<(i32, i64)> = targets.to_vec();
    let mut attempt = 0;
    while !pending.is_empty() {
        let info = cluster.topic(topic)?;
        let mut by_leader: BTreeMap<i32, Vec<(i32, i64)>> = BTreeMap::new();
        for (p, o) in &pending {
            let leader = info
                .leader(*p)
                .ok_or_else(|| anyhow!("partition {p} of topic {topic} has no leader"))?;
            by_leader.entry(leader).or_default().push((*p, *o));
        }
        let mut retry = Vec::new();
        let mut last_error = None;
        for (leader, parts) in by_leader {
            let response = cluster.broker(leader)?.send(DeleteRecordsRequest {
                topics: vec![DeleteRecordsTopic {
                    name: topic.to_owned(),
                    partitions: parts
                        .iter()
                        .map(|(p, o)| DeleteRecordsPartition {
                            partition_index: *p,
                            offset: *o,
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                timeout_ms: DELETE_TIMEOUT_MS,
                ..Default::default()
            })?;
            for t in response.topics.into_iter().filter(|t| t.name == topic) {
                for p in t.partitions {
                    let Some(&(_, offset)) = parts.iter().find(|(q, _)| *q == p.partition_index)
                    else {
                        continue;
                    };
                    if p.error_code != 0 {
                        if is_retriable(p.error_code) && attempt < RETRIES {
                            retry.push((p.partition_index, offset));
                            last_error = Some(p.error_code);
                            continue;
                        }
                        return Err(KafkaError::new(p.error_code, None)).with_context(|| {
                            format!("DeleteRecords of partition {}", p.partition_index)
                        });
                    }
                    done.insert(p.partition_index, p.low_watermark);
                }
            }
        }
        for (p, _) in &pending {
            if !done.contains_key(p) && !retry.iter().any(|(q, _)| q == p) {
                bail!("the leader of partition {p} of {topic} did not answer DeleteRecords for it");
            }
        }
        if !retry.is_empty() {
            attempt += 1;
            if attempt > RETRIES {
                return Err(KafkaError::new(last_error.unwrap_or(-1), None).into());
            }
            backoff(attempt);
        }
        pending = retry;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn before_is_an_offset_or_a_time() {
        assert_eq!(parse_before("12").unwrap(), Before::Offset(12));
        assert_eq!(parse_before("offset:0").unwrap(), Before::Offset(0));
        assert_eq!(
            parse_before("timestamp:1714564800000").unwrap(),
            Before::Time(1_714_564_800_000)
        );
        assert_eq!(
            parse_before("2024-05-01T12:00:00Z").unwrap(),
            Before::Time(1_714_564_800_000)
        );
        assert_eq!(
            parse_before("timestamp:2024-05-01T14:00:00+02:00").unwrap(),
            Before::Time(1_714_564_800_000)
        );
        for bad in [
            "-1",
            "offset:-3",
            "yesterday",
            "2024-05-01T12:00:00",
            "timestamp:x",
            "",
        ] {
            assert!(parse_before(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unreplayed_counts_what_the_group_has_not_passed() {
        let row = |old_start, target, replayed_up_to| Row {
            partition: 0,
            old_start,
            high_watermark: 10,
            target,
            new_start: target,
            replayed_up_to,
        };
        assert_eq!(row(0, 5, Some(5)).unreplayed(), 0);
        assert_eq!(row(0, 5, Some(8)).unreplayed(), 0);
        assert_eq!(row(0, 5, Some(2)).unreplayed(), 3);
        assert_eq!(row(3, 5, Some(1)).unreplayed(), 2);
        assert_eq!(row(0, 5, None).unreplayed(), 5);
        assert_eq!(row(5, 5, None).unreplayed(), 0);
        assert_eq!(row(2, 5, None).removed(), 3);
    }
}
