//! `skein consume TOPIC`: reads partitions from their leaders, alone (every partition, or one
//! with `--partition`) or as a member of a consumer group (`--group`: classic protocol, range
//! assignment, offsets committed after the records are printed).

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::json;

use super::batch::InRecord;
use super::client::{backoff, is_retriable, Cluster, RETRIES};
use super::errors::{self, KafkaError};
use super::fetch::{
    fetch, FetchPosition, FetchedPartition, PARTITION_MAX_BYTES, PARTITION_MAX_BYTES_CEILING,
};
use super::membership::{Membership, Status};
use super::offsets::{self, list_offsets, with_coordinator, EARLIEST, LATEST};
use super::output::{bytes_json, Output, Progress};
use super::signal;
use super::time::parse_rfc3339;
use super::Common;

/// How long a fetch waits for data when one leader is asked...
const MAX_WAIT_MS: i32 = 500;
/// ...and per leader when several are asked in turn.
const MAX_WAIT_MANY_LEADERS_MS: i32 = 100;
/// Consecutive rounds of retriable errors (leader moving) before giving up.
const MAX_FAILED_ROUNDS: u32 = 20;
/// How often a group member looks for new partitions (which need a rebalance to be read).
const PARTITION_CHECK_INTERVAL: Duration = Duration::from_secs(30);

/// Where to start reading a partition that has no committed offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    Earliest,
    Latest,
    Offset(i64),
    Timestamp(i64),
}

fn parse_from(text: &str) -> Result<StartFrom, String> {
    let bad =
        || format!("invalid --from {text:?}: expected earliest, latest, offset:N or timestamp:MS");
    match text {
        "earliest" | "beginning" => Ok(StartFrom::Earliest),
        "latest" | "end" => Ok(StartFrom::Latest),
        _ => {
            if let Some(n) = text.strip_prefix("offset:") {
                n.parse::<i64>()
                    .ok()
                    .filter(|n| *n >= 0)
                    .map(StartFrom::Offset)
                    .ok_or_else(bad)
            } else if let Some(t) = text.strip_prefix("timestamp:") {
                match t.parse::<i64>() {
                    Ok(ms) if ms >= 0 => Ok(StartFrom::Timestamp(ms)),
                    Ok(_) => Err(bad()),
                    Err(_) => parse_rfc3339(t)
                        .map(StartFrom::Timestamp)
                        .map_err(|e| e.to_string()),
                }
            } else {
                Err(bad())
            }
        }
    }
}

/// How records are printed.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordFormat {
    /// The value (with --key-separator: key, separator, value), one record per line.
    Plain,
    /// One JSON object per line: key, value, headers, partition, offset, timestamp.
    Json,
}

#[derive(clap::Args)]
pub struct ConsumeArgs {
    /// The topic to read.
    pub topic: String,
    /// Where to start when there is no committed offset: earliest, latest, offset:N or
    /// timestamp:MS (Unix milliseconds or RFC 3339).
    #[arg(long, default_value = "earliest", value_parser = parse_from)]
    pub from: StartFrom,
    /// Read only this partition.
    #[arg(long, conflicts_with = "group")]
    pub partition: Option<i32>,
    /// Read as a member of this consumer group, committing offsets.
    #[arg(long)]
    pub group: Option<String>,
    /// Stop after this many records.
    #[arg(long)]
    pub count: Option<u64>,
    /// Stop when no record has arrived for this long (counted from when the partitions
    /// were assigned).
    #[arg(long, value_name = "MS")]
    pub timeout_ms: Option<u64>,
    /// Stop at the end offsets (high watermarks) the partitions had when reading began.
    #[arg(long)]
    pub exit_at_end: bool,
    /// How to print records (default: plain, or json with --output json).
    #[arg(long, value_enum)]
    pub format: Option<RecordFormat>,
    /// With plain format: print the key, this separator, then the value.
    #[arg(long, value_name = "SEP")]
    pub key_separator: Option<String>,
    #[command(flatten)]
    pub common: Common,
}

pub fn run(args: ConsumeArgs) -> Result<()> {
    let context = match &args.group {
        Some(g) => format!("consume {} (group {g})", args.topic),
        None => format!("consume {}", args.topic),
    };
    consume(args).context(context)
}

/// Writes records to stdout.
struct Printer {
    format: RecordFormat,
    separator: Option<Vec<u8>>,
    out: BufWriter<std::io::Stdout>,
}

impl Printer {
    fn print(&mut self, topic: &str, partition: i32, r: &InRecord) -> std::io::Result<()> {
        match self.format {
            RecordFormat::Plain => {
                if let Some(sep) = &self.separator {
                    self.out.write_all(r.key.as_deref().unwrap_or_default())?;
                    self.out.write_all(sep)?;
                }
                self.out.write_all(r.value.as_deref().unwrap_or_default())?;
                self.out.write_all(b"\n")
            }
            RecordFormat::Json => {
                let value = json!({
                    "topic": topic,
                    "partition": partition,
                    "offset": r.offset,
                    "timestamp": r.timestamp_ms,
                    "timestamp_type": if r.log_append_time { "LogAppendTime" } else { "CreateTime" },
                    "key": bytes_json(r.key.as_deref()),
                    "value": bytes_json(r.value.as_deref()),
                    "headers": r.headers.iter().map(|(k, v)| json!({
                        "key": k,
                        "value": bytes_json(v.as_deref()),
                    })).collect::<Vec<_>>(),
                });
                writeln!(self.out, "{value}")
            }
        }
    }
}

/// One partition being read.
#[derive(Debug, Clone, Copy)]
struct PartitionState {
    /// The next offset to print.
    position: i64,
    /// With --exit-at-end: where to stop.
    end: Option<i64>,
    max_bytes: i32,
}

/// Why a round of reading ended.
#[derive(Debug, PartialEq, Eq)]
enum Stop {
    Done,
    Rejoin,
}

struct Consumer {
    cluster: Cluster,
    topic: String,
    from: StartFrom,
    exit_at_end: bool,
    limit: Option<u64>,
    timeout: Option<Duration>,
    leaders: BTreeMap<i32, i32>,
    /// The topic's partition count when the leaders were last read.
    partition_count: usize,
    last_partition_check: Instant,
    partitions: BTreeMap<i32, PartitionState>,
    /// The positions last committed (group members only).
    committed: BTreeMap<i32, i64>,
    printed: u64,
    output_closed: bool,
    printer: Printer,
    progress: Progress,
    last_record: Instant,
}

impl Consumer {
    fn refresh_leaders(&mut self) -> Result<()> {
        let info = self.cluster.topic(&self.topic)?;
        self.partition_count = info.partitions.len();
        self.last_partition_check = Instant::now();
        self.leaders = info
            .partitions
            .iter()
            .filter(|p| p.leader >= 0)
            .map(|p| (p.partition, p.leader))
            .collect();
        Ok(())
    }

    /// Starts reading `partitions`: from `committed` offsets where there are some, else
    /// as `--from` says.
    fn assign(&mut self, partitions: &[i32], committed: &BTreeMap<i32, i64>) -> Result<()> {
        self.refresh_leaders()?;
        let unset: Vec<i32> = partitions
            .iter()
            .copied()
            .filter(|p| !committed.contains_key(p))
            .collect();
        let mut starts: BTreeMap<i32, i64> = committed
            .iter()
            .filter(|(p, _)| partitions.contains(p))
            .map(|(p, o)| (*p, *o))
            .collect();
        if !unset.is_empty() {
            match self.from {
                StartFrom::Offset(n) => starts.extend(unset.iter().map(|p| (*p, n))),
                StartFrom::Earliest | StartFrom::Latest | StartFrom::Timestamp(_) => {
                    let timestamp = match self.from {
                        StartFrom::Earliest => EARLIEST,
                        StartFrom::Timestamp(ms) => ms,
                        _ => LATEST,
                    };
                    let found = list_offsets(&mut self.cluster, &self.topic, &unset, timestamp)?;
                    let mut after_last = Vec::new();
                    for p in &unset {
                        match found.get(p).copied().flatten() {
                            Some(o) => {
                                starts.insert(*p, o);
                            }
                            None => after_last.push(*p),
                        }
                    }
                    if !after_last.is_empty() {
                        // No record at or after the timestamp: start at the end.
                        let ends =
                            list_offsets(&mut self.cluster, &self.topic, &after_last, LATEST)?;
                        for p in after_last {
                            starts.insert(p, ends.get(&p).copied().flatten().unwrap_or(0));
                        }
                    }
                }
            }
        }
        let ends = if self.exit_at_end {
            list_offsets(&mut self.cluster, &self.topic, partitions, LATEST)?
        } else {
            BTreeMap::new()
        };
        // --timeout-ms counts from when there is something to read, not from the time
        // spent joining the group.
        self.last_record = Instant::now();
        self.partitions = partitions
            .iter()
            .map(|p| {
                (
                    *p,
                    PartitionState {
                        position: starts.get(p).copied().unwrap_or(0),
                        end: ends.get(p).copied().flatten(),
                        max_bytes: PARTITION_MAX_BYTES,
                    },
                )
            })
            .collect();
        Ok(())
    }

    fn limit_reached(&self) -> bool {
        self.limit.is_some_and(|l| self.printed >= l)
    }

    fn all_at_end(&self) -> bool {
        self.exit_at_end
            && self
                .partitions
                .values()
                .all(|s| s.end.is_some_and(|e| s.position >= e))
    }

    /// Reads until a stop condition holds, or (as a group member) until the group
    /// rebalances.
    fn read(&mut self, mut membership: Option<&mut Membership>) -> Result<Stop> {
        let mut failed_rounds = 0;
        loop {
            if signal::stop_requested()
                || self.output_closed
                || self.limit_reached()
                || self.all_at_end()
                || self
                    .timeout
                    .is_some_and(|t| self.last_record.elapsed() >= t)
            {
                return Ok(Stop::Done);
            }
            if let Some(m) = membership.as_deref_mut() {
                if m.heartbeat_if_due(&mut self.cluster)? == Status::Rejoin {
                    let _ = self.commit(m);
                    return Ok(Stop::Rejoin);
                }
                if self.last_partition_check.elapsed() >= PARTITION_CHECK_INTERVAL {
                    let known = self.partition_count;
                    self.refresh_leaders()?;
                    if self.partition_count != known {
                        // Rejoining makes the leader assign the new partitions.
                        let _ = self.commit(m);
                        return Ok(Stop::Rejoin);
                    }
                }
            }
            let mut by_leader: BTreeMap<i32, Vec<FetchPosition>> = BTreeMap::new();
            let mut leaderless = false;
            for (p, s) in &self.partitions {
                if s.end.is_some_and(|e| s.position >= e) {
                    continue;
                }
                match self.leaders.get(p) {
                    Some(l) => by_leader.entry(*l).or_default().push(FetchPosition {
                        partition: *p,
                        offset: s.position,
                        max_bytes: s.max_bytes,
                    }),
                    None => leaderless = true,
                }
            }
            if by_leader.is_empty() && !leaderless {
                // A group member without partitions waits for the next rebalance.
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            let mut max_wait = if by_leader.len() > 1 {
                MAX_WAIT_MANY_LEADERS_MS
            } else {
                MAX_WAIT_MS
            };
            if let Some(t) = self.timeout {
                let left = t.saturating_sub(self.last_record.elapsed()).as_millis();
                max_wait = max_wait.min(left as i32);
            }
            let mut retriable = None;
            for (leader, positions) in by_leader {
                let conn = self.cluster.broker(leader)?;
                let fetched = fetch(conn, &self.topic, &positions, max_wait)?;
                for f in fetched {
                    if let Some(code) = self.take(f)? {
                        retriable = Some(code);
                    }
                }
            }
            if let Err(e) = self.printer.out.flush() {
                self.on_write_error(e)?;
            }
            if let Some(m) = membership.as_deref_mut() {
                if self.commit(m)? == Status::Rejoin {
                    return Ok(Stop::Rejoin);
                }
            }
            if retriable.is_some() || leaderless {
                failed_rounds += 1;
                if failed_rounds > MAX_FAILED_ROUNDS {
                    return Err(KafkaError::new(
                        retriable.unwrap_or(errors::LEADER_NOT_AVAILABLE),
                        None,
                    )
                    .into());
                }
                backoff(failed_rounds.min(RETRIES));
                self.refresh_leaders()?;
            } else {
                failed_rounds = 0;
            }
        }
    }

    fn on_write_error(&mut self, e: std::io::Error) -> Result<()> {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            // The reader went away (`| head`): stop quietly.
            self.output_closed = true;
            Ok(())
        } else {
            Err(anyhow!(e).context("cannot write to stdout"))
        }
    }

    /// Prints a partition's fetched records; returns a retriable error code to retry after
    /// refreshing the leaders.
    fn take(&mut self, f: FetchedPartition) -> Result<Option<i16>> {
        let Some(mut state) = self.partitions.get(&f.partition).copied() else {
            return Ok(None);
        };
        match f.error_code {
            errors::NONE => {}
            errors::OFFSET_OUT_OF_RANGE => {
                let p = [f.partition];
                let earliest = list_offsets(&mut self.cluster, &self.topic, &p, EARLIEST)?;
                let latest = list_offsets(&mut self.cluster, &self.topic, &p, LATEST)?;
                let earliest = earliest.get(&f.partition).copied().flatten().unwrap_or(0);
                let latest = latest.get(&f.partition).copied().flatten().unwrap_or(0);
                let moved_to = if state.position < earliest {
                    earliest
                } else {
                    latest
                };
                eprintln!(
                    "skein: consume {}: partition {}: offset {} is out of range [{earliest}, {latest}], reading from {moved_to}",
                    self.topic, f.partition, state.position
                );
                state.position = moved_to;
                self.partitions.insert(f.partition, state);
                return Ok(None);
            }
            code if is_retriable(code) => return Ok(Some(code)),
            code => {
                return Err(KafkaError::new(code, None))
                    .with_context(|| format!("partition {}", f.partition))
            }
        }
        if f.batch_too_large {
            if state.max_bytes >= PARTITION_MAX_BYTES_CEILING {
                bail!(
                    "partition {}: a batch at offset {} is larger than {PARTITION_MAX_BYTES_CEILING} bytes",
                    f.partition,
                    state.position
                );
            }
            state.max_bytes = (state.max_bytes * 2).min(PARTITION_MAX_BYTES_CEILING);
            self.partitions.insert(f.partition, state);
            return Ok(None);
        }
        let mut stopped = false;
        for r in &f.decoded.records {
            if r.offset < state.position {
                continue;
            }
            if state.end.is_some_and(|e| r.offset >= e) || self.limit_reached() {
                stopped = true;
                break;
            }
            if let Err(e) = self.printer.print(&self.topic, f.partition, r) {
                self.on_write_error(e)?;
                stopped = true;
                break;
            }
            state.position = r.offset + 1;
            self.printed += 1;
            self.last_record = Instant::now();
            self.progress.update(self.printed);
        }
        if !stopped {
            // Move past control batches and records before the position.
            if let Some(next) = f.decoded.next_offset {
                state.position = state.position.max(next);
            }
        }
        self.partitions.insert(f.partition, state);
        Ok(None)
    }

    /// Commits the positions that moved since the last commit.
    fn commit(&mut self, membership: &mut Membership) -> Result<Status> {
        let changed: BTreeMap<(String, i32), i64> = self
            .partitions
            .iter()
            .filter(|(p, s)| self.committed.get(p) != Some(&s.position))
            .map(|(p, s)| ((self.topic.clone(), *p), s.position))
            .collect();
        if changed.is_empty() {
            return Ok(Status::Ok);
        }
        let status = membership.commit(&mut self.cluster, &changed)?;
        if status == Status::Ok {
            for ((_, p), o) in changed {
                self.committed.insert(p, o);
            }
        }
        Ok(status)
    }

    fn read_as_member(&mut self, group: &str, membership: &mut Membership) -> Result<()> {
        loop {
            let assignment = membership.join(&mut self.cluster)?;
            let partitions = assignment.get(&self.topic).cloned().unwrap_or_default();
            let request = [(self.topic.clone(), partitions.clone())];
            let committed = with_coordinator(&mut self.cluster, group, |conn| {
                offsets::committed_offsets(conn, group, Some(&request))
            })?;
            let committed: BTreeMap<i32, i64> = committed
                .into_iter()
                .filter(|((t, _), _)| *t == self.topic)
                .map(|((_, p), o)| (p, o))
                .collect();
            self.assign(&partitions, &committed)?;
            self.committed = committed;
            if self.read(Some(membership))? == Stop::Done {
                return Ok(());
            }
        }
    }
}

fn consume(args: ConsumeArgs) -> Result<()> {
    signal::install();
    let mut cluster = args.common.connect()?;
    let info = cluster.topic(&args.topic)?;
    let format = args.format.unwrap_or(match args.common.output {
        Output::Json => RecordFormat::Json,
        Output::Text => RecordFormat::Plain,
    });
    let mut consumer = Consumer {
        cluster,
        topic: args.topic.clone(),
        from: args.from,
        exit_at_end: args.exit_at_end,
        limit: args.count,
        timeout: args.timeout_ms.map(Duration::from_millis),
        leaders: BTreeMap::new(),
        partition_count: info.partitions.len(),
        last_partition_check: Instant::now(),
        partitions: BTreeMap::new(),
        committed: BTreeMap::new(),
        printed: 0,
        output_closed: false,
        printer: Printer {
            format,
            separator: args.key_separator.map(String::into_bytes),
            out: BufWriter::new(std::io::stdout()),
        },
        progress: Progress::new("consumed", args.count),
        last_record: Instant::now(),
    };
    let result = match &args.group {
        None => {
            let all: Vec<i32> = info.partitions.iter().map(|p| p.partition).collect();
            let partitions = match args.partition {
                Some(p) if all.contains(&p) => vec![p],
                Some(p) => bail!(
                    "partition {p} does not exist (the topic has {} partitions)",
                    all.len()
                ),
                None => all,
            };
            consumer.assign(&partitions, &BTreeMap::new())?;
            consumer.read(None).map(|_| ())
        }
        Some(group) => {
            let mut membership = Membership::new(group, vec![args.topic.clone()]);
            let result = consumer.read_as_member(group, &mut membership);
            membership.leave(&mut consumer.cluster);
            result
        }
    };
    consumer.progress.finish();
    if let Err(e) = consumer.printer.out.flush() {
        consumer.on_write_error(e)?;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_forms() {
        assert_eq!(parse_from("earliest"), Ok(StartFrom::Earliest));
        assert_eq!(parse_from("latest"), Ok(StartFrom::Latest));
        assert_eq!(parse_from("offset:42"), Ok(StartFrom::Offset(42)));
        assert_eq!(
            parse_from("timestamp:1714564800000"),
            Ok(StartFrom::Timestamp(1_714_564_800_000))
        );
        assert_eq!(
            parse_from("timestamp:2024-05-01T12:00:00Z"),
            Ok(StartFrom::Timestamp(1_714_564_800_000))
        );
        assert!(parse_from("offset:-1").is_err());
        assert!(parse_from("middle").is_err());
    }
}
