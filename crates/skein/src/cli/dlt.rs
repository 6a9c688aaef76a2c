//! `skein dlt list|show`: dead-letter topics as an operator sees them. `list` finds the topics
//! whose names end in a DLT suffix (`-dlt`, `.DLT`, or the `--suffix`es given) and sums them
//! up: records, oldest and newest age, counts by root cause and by original topic, read from
//! the headers the publishing framework wrote (see [`DltInfo`]). `show` prints a DLT's records
//! with those headers decoded. Both read with the CLI's own client ([`read_range`]), so they
//! work against any Kafka broker.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::batch::InRecord;
use super::client::{Cluster, TopicInfo};
use super::fetch::read_range;
use super::offsets::{list_offsets, EARLIEST, LATEST};
use super::output::{bytes_json, human_duration, or_dash, print_json, table, Output};
use super::time::{format_rfc3339, now_ms};
use super::Common;

/// The suffixes of dead-letter topics when none are given: Spring Kafka's `-dlt` (retry topics,
/// and `DeadLetterPublishingRecoverer` since 3.3) and `.DLT` (`DeadLetterPublishingRecoverer`
/// before 3.3).
pub const DEFAULT_SUFFIXES: [&str; 2] = ["-dlt", ".DLT"];

/// What `list` shows for a record without the header in question.
const NO_HEADER: &str = "(no header)";

// The headers each fact is read from, in order of preference: Spring Kafka's
// DeadLetterPublishingRecoverer (`kafka_dlt-*`), Spring Kafka's retry topics, whose recoverer
// writes the same facts under `kafka_*` (`@RetryableTopic` since 2.7), and Kafka Connect's
// dead-letter queue (`__connect.errors.*`, numbers as decimal text).
const TOPIC: &[&str] = &[
    "kafka_dlt-original-topic",
    "kafka_original-topic",
    "__connect.errors.topic",
];
const PARTITION: &[&str] = &[
    "kafka_dlt-original-partition",
    "kafka_original-partition",
    "__connect.errors.partition",
];
const OFFSET: &[&str] = &[
    "kafka_dlt-original-offset",
    "kafka_original-offset",
    "__connect.errors.offset",
];
const TIMESTAMP: &[&str] = &["kafka_dlt-original-timestamp", "kafka_original-timestamp"];
const GROUP: &[&str] = &[
    "kafka_dlt-original-consumer-group",
    "kafka_original-consumer-group",
];
const EXCEPTION: &[&str] = &[
    "kafka_dlt-exception-fqcn",
    "kafka_exception-fqcn",
    "__connect.errors.exception.class.name",
    "kafka_dlt-key-exception-fqcn",
    "kafka_key-exception-fqcn",
];
const CAUSE: &[&str] = &[
    "kafka_dlt-exception-cause-fqcn",
    "kafka_exception-cause-fqcn",
];
const MESSAGE: &[&str] = &[
    "kafka_dlt-exception-message",
    "kafka_exception-message",
    "__connect.errors.exception.message",
    "kafka_dlt-key-exception-message",
    "kafka_key-exception-message",
];
const STACKTRACE: &[&str] = &[
    "kafka_dlt-exception-stacktrace",
    "kafka_exception-stacktrace",
    "__connect.errors.exception.stacktrace",
    "kafka_dlt-key-exception-stacktrace",
    "kafka_key-exception-stacktrace",
];

#[derive(clap::Subcommand)]
pub enum DltCommand {
    /// List the dead-letter topics with record counts, ages, and counts by root cause and by
    /// original topic.
    List(ListArgs),
    /// Show a dead-letter topic's records with their headers decoded.
    Show(ShowArgs),
    /// Republish dead letters to their original topic (or --to TOPIC), remembering what was
    /// replayed in the group `skein-dlt-replay.<topic>`.
    Replay(super::dlt_replay::ReplayArgs),
    /// Delete a dead-letter topic's records before an offset or a time (DeleteRecords).
    Purge(super::dlt_purge::PurgeArgs),
}

#[derive(clap::Args)]
pub struct ListArgs {
    /// A topic-name suffix that marks a dead-letter topic (repeatable; replaces the defaults
    /// `-dlt` and `.DLT`).
    #[arg(long = "suffix", value_name = "SUFFIX", allow_hyphen_values = true)]
    pub suffixes: Vec<String>,
    /// Read at most this many records of each topic to count causes and original topics; the
    /// output says when the counts come from such a sample.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub scan_limit: u64,
    #[command(flatten)]
    pub common: Common,
}

#[derive(clap::Args)]
pub struct ShowArgs {
    /// The dead-letter topic.
    pub topic: String,
    /// Read only this partition.
    #[arg(long)]
    pub partition: Option<i32>,
    /// Only the record at this offset (in each partition read).
    #[arg(long, conflicts_with_all = ["exception", "key"])]
    pub offset: Option<i64>,
    /// Only records whose root cause or exception is this class (fully qualified, or its
    /// simple name).
    #[arg(long, value_name = "CLASS", conflicts_with = "key")]
    pub exception: Option<String>,
    /// Only records with this key (compared as UTF-8 text).
    #[arg(long, value_name = "K")]
    pub key: Option<String>,
    /// Show at most this many records.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub limit: usize,
    #[command(flatten)]
    pub common: Common,
}

pub fn run(command: DltCommand) -> Result<()> {
    match command {
        DltCommand::List(a) => list(a).context("dlt list"),
        DltCommand::Show(a) => {
            let context = format!("dlt show {}", a.topic);
            show(a).context(context)
        }
        DltCommand::Replay(a) => super::dlt_replay::run(a),
        DltCommand::Purge(a) => {
            let context = format!("dlt purge {}", a.topic);
            super::dlt_purge::run(a).context(context)
        }
    }
}

// -- headers -----------------------------------------------------------------------------------

/// A header value as `show` presents it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderValue {
    Null,
    /// A binary number, with the encoding it was read in (`int32`, `int64`, `bigint`).
    Number(i64, &'static str),
    Text(String),
    Binary(Vec<u8>),
}

/// How a header is encoded, by name: Spring writes the original partition as a 4-byte and the
/// original offset and timestamp as 8-byte big-endian integers, the retry attempts as a 4-byte
/// integer (one byte in early versions), and the retry timestamps as `BigInteger` bytes (big-endian
/// two's complement, as short as the value allows).
fn numeric_encoding(name: &str) -> Option<&'static str> {
    Some(match name {
        "kafka_dlt-original-partition" | "kafka_original-partition" | "retry_topic-attempts" => {
            "int32"
        }
        "kafka_dlt-original-offset"
        | "kafka_original-offset"
        | "kafka_dlt-original-timestamp"
        | "kafka_original-timestamp" => "int64",
        "retry_topic-backoff-timestamp" | "retry_topic-original-timestamp" => "bigint",
        _ => return None,
    })
}

/// A big-endian two's complement integer of 1 to 8 bytes.
fn signed_be(bytes: &[u8]) -> Option<i64> {
    if bytes.is_empty() || bytes.len() > 8 {
        return None;
    }
    let fill = if bytes[0] & 0x80 != 0 { 0xff } else { 0 };
    let mut buf = [fill; 8];
    buf[8 - bytes.len()..].copy_from_slice(bytes);
    Some(i64::from_be_bytes(buf))
}

/// Decodes a header by its name: the numbers Spring writes in binary as numbers (a value of the
/// wrong length is shown as bytes rather than as a wrong number), text as text, anything else
/// as bytes.
pub fn decode_header(name: &str, value: Option<&[u8]>) -> HeaderValue {
    let Some(v) = value else {
        return HeaderValue::Null;
    };
    if let Some(encoding) = numeric_encoding(name) {
        let n = match (encoding, v.len()) {
            ("int32", 4) | ("int64", 8) | ("bigint", 1..=8) => signed_be(v),
            // Spring Kafka's first retry topics wrote the attempts as one unsigned byte.
            ("int32", 1) if name == "retry_topic-attempts" => Some(i64::from(v[0])),
            _ => None,
        };
        return match n {
            Some(n) => HeaderValue::Number(n, encoding),
            None => HeaderValue::Binary(v.to_vec()),
        };
    }
    match std::str::from_utf8(v) {
        Ok(s) => HeaderValue::Text(s.to_owned()),
        Err(_) => HeaderValue::Binary(v.to_vec()),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The values of the first of `names` that the record carries, in header order.
fn values_of(headers: &[(String, Option<Vec<u8>>)], names: &[&str]) -> Vec<HeaderValue> {
    for name in names {
        let found: Vec<HeaderValue> = headers
            .iter()
            .filter(|(k, v)| k == name && v.is_some())
            .map(|(k, v)| decode_header(k, v.as_deref()))
            .collect();
        if !found.is_empty() {
            return found;
        }
    }
    Vec::new()
}

fn as_text(v: &HeaderValue) -> Option<String> {
    match v {
        HeaderValue::Text(s) => Some(s.clone()),
        HeaderValue::Number(n, _) => Some(n.to_string()),
        HeaderValue::Null | HeaderValue::Binary(_) => None,
    }
}

fn as_number(v: &HeaderValue) -> Option<i64> {
    match v {
        HeaderValue::Number(n, _) => Some(*n),
        // Kafka Connect writes numbers as decimal text.
        HeaderValue::Text(s) => s.trim().parse().ok(),
        HeaderValue::Null | HeaderValue::Binary(_) => None,
    }
}

/// What a dead letter's headers say about it. The `original` facts are the *first* values:
/// Spring's DeadLetterPublishingRecoverer appends them at every hop by default, so when a record
/// went through retry topics before its DLT, later values name those retry topics. The
/// exception facts are the *last* values: Spring replaces them at every hop by default, and
/// when told to keep them, the last one is the failure that sent the record here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DltInfo {
    /// Every original topic the headers name, in order: the origin, then the hops.
    pub topics: Vec<String>,
    pub partition: Option<i64>,
    pub offset: Option<i64>,
    pub timestamp: Option<i64>,
    pub consumer_group: Option<String>,
    pub exception: Option<String>,
    pub cause: Option<String>,
    pub message: Option<String>,
    pub stacktrace: Option<String>,
}

impl DltInfo {
    pub fn from_headers(headers: &[(String, Option<Vec<u8>>)]) -> DltInfo {
        let first_number = |names| values_of(headers, names).first().and_then(as_number);
        let first_text = |names| values_of(headers, names).first().and_then(as_text);
        let last_text = |names| values_of(headers, names).last().and_then(as_text);
        DltInfo {
            topics: values_of(headers, TOPIC)
                .iter()
                .filter_map(as_text)
                .collect(),
            partition: first_number(PARTITION),
            offset: first_number(OFFSET),
            timestamp: first_number(TIMESTAMP),
            consumer_group: first_text(GROUP),
            exception: last_text(EXCEPTION),
            cause: last_text(CAUSE),
            message: last_text(MESSAGE),
            stacktrace: last_text(STACKTRACE),
        }
    }

    /// The topic the record was first consumed from.
    pub fn original_topic(&self) -> Option<&str> {
        self.topics.first().map(String::as_str)
    }

    /// The root cause's class, else the exception's (Spring's exception is usually its
    /// `ListenerExecutionFailedException` wrapper).
    pub fn root_cause(&self) -> Option<&str> {
        self.cause.as_deref().or(self.exception.as_deref())
    }

    /// True when the root cause or the exception is `class`, named in full or by its simple
    /// name.
    pub fn is_exception(&self, class: &str) -> bool {
        [&self.cause, &self.exception]
            .into_iter()
            .flatten()
            .any(|c| {
                c == class || (!class.contains('.') && c.rsplit(['.', '$']).next() == Some(class))
            })
    }
}

// -- list ----------------------------------------------------------------------------------------

/// One dead-letter topic summed up.
struct Summary {
    topic: String,
    partitions: usize,
    /// High watermark minus log start, summed over the partitions: offsets, which compaction
    /// and transaction markers can leave without a record.
    records: i64,
    scanned: u64,
    /// True when some partition had more records than its share of the scan limit.
    sampled: bool,
    oldest: Option<i64>,
    newest: Option<i64>,
    by_cause: BTreeMap<String, u64>,
    by_origin: BTreeMap<String, u64>,
}

impl Summary {
    fn see_timestamp(&mut self, ts: i64) {
        if ts < 0 {
            return;
        }
        self.oldest = Some(self.oldest.map_or(ts, |o| o.min(ts)));
        self.newest = Some(self.newest.map_or(ts, |n| n.max(ts)));
    }
}

fn is_dlt(name: &str, suffixes: &[String]) -> bool {
    suffixes
        .iter()
        .any(|s| !s.is_empty() && name.len() > s.len() && name.ends_with(s.as_str()))
}

/// Reads up to `scan_limit` records of `topic` (shared out over its partitions, from their
/// log starts) to count causes and origins, and each partition's last record for the newest
/// timestamp.
fn summarize(cluster: &mut Cluster, info: &TopicInfo, scan_limit: u64) -> Result<Summary> {
    let topic = info.name.as_str();
    let parts: Vec<i32> = info.partitions.iter().map(|p| p.partition).collect();
    let starts = list_offsets(cluster, topic, &parts, EARLIEST).context("log start offsets")?;
    let ends = list_offsets(cluster, topic, &parts, LATEST).context("log end offsets")?;
    let range = |p: i32| {
        let start = starts.get(&p).copied().flatten().unwrap_or(0);
        let end = ends.get(&p).copied().flatten().unwrap_or(start);
        (start, end.max(start))
    };
    let mut s = Summary {
        topic: topic.to_owned(),
        partitions: parts.len(),
        records: parts
            .iter()
            .map(|p| {
                let (a, b) = range(*p);
                b - a
            })
            .sum(),
        scanned: 0,
        sampled: false,
        oldest: None,
        newest: None,
        by_cause: BTreeMap::new(),
        by_origin: BTreeMap::new(),
    };
    let mut budget = scan_limit;
    for (i, p) in parts.iter().enumerate() {
        let (start, end) = range(*p);
        if end <= start {
            continue;
        }
        let left = (parts.len() - i) as u64;
        let share = budget.div_ceil(left);
        let mut taken = 0u64;
        // Set when a record past the share turns up: the counts are then a sample. (Comparing
        // the records read with the offsets would not do: transaction markers take offsets.)
        let mut cut = false;
        read_range(cluster, topic, *p, start, end, |r| {
            // With no share left, the first record is still read, for the oldest timestamp.
            s.see_timestamp(r.timestamp_ms);
            if taken >= share {
                cut = true;
                return false;
            }
            taken += 1;
            let dlt = DltInfo::from_headers(&r.headers);
            let cause = dlt.root_cause().unwrap_or(NO_HEADER).to_owned();
            let origin = dlt.original_topic().unwrap_or(NO_HEADER).to_owned();
            *s.by_cause.entry(cause).or_default() += 1;
            *s.by_origin.entry(origin).or_default() += 1;
            true
        })
        .with_context(|| format!("reading partition {p}"))?;
        s.scanned += taken;
        s.sampled |= cut;
        budget = budget.saturating_sub(taken);
        if cut {
            // The newest record was not read: read the partition's tail, going back further
            // when the last offsets hold no record (transaction markers, compaction).
            for window in [1, 100, 10_000] {
                let mut found = false;
                read_range(cluster, topic, *p, (end - window).max(start), end, |r| {
                    s.see_timestamp(r.timestamp_ms);
                    found = true;
                    true
                })
                .with_context(|| format!("reading the tail of partition {p}"))?;
                if found || end - window <= start {
                    break;
                }
            }
        }
    }
    Ok(s)
}

/// Counts, largest first, as JSON (an object in that order would be lost; a list keeps it).
fn counts_json(counts: &BTreeMap<String, u64>) -> Value {
    Value::Array(
        sorted_counts(counts)
            .into_iter()
            .map(|(name, n)| json!({"name": name, "count": n}))
            .collect(),
    )
}

fn sorted_counts(counts: &BTreeMap<String, u64>) -> Vec<(&str, u64)> {
    let mut v: Vec<(&str, u64)> = counts.iter().map(|(k, n)| (k.as_str(), *n)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    v
}

fn list(args: ListArgs) -> Result<()> {
    let suffixes: Vec<String> = if args.suffixes.is_empty() {
        DEFAULT_SUFFIXES.iter().map(|s| (*s).to_owned()).collect()
    } else {
        args.suffixes.clone()
    };
    let mut cluster = args.common.connect()?;
    let topics: Vec<TopicInfo> = cluster
        .topics()?
        .into_iter()
        .filter(|t| !t.internal && is_dlt(&t.name, &suffixes))
        .collect();
    let mut summaries = Vec::new();
    for t in &topics {
        summaries
            .push(summarize(&mut cluster, t, args.scan_limit).with_context(|| t.name.clone())?);
    }
    let now = now_ms();
    let age = |ts: Option<i64>| ts.map(|t| (now - t).max(0));
    match args.common.output {
        Output::Json => print_json(&json!({
            "suffixes": suffixes,
            "scan_limit": args.scan_limit,
            "topics": summaries.iter().map(|s| json!({
                "topic": s.topic,
                "partitions": s.partitions,
                "records": s.records,
                "records_are_offsets": true,
                "scanned": s.scanned,
                "sampled": s.sampled,
                "oldest_timestamp": s.oldest,
                "newest_timestamp": s.newest,
                "oldest_age_ms": age(s.oldest),
                "newest_age_ms": age(s.newest),
                "by_cause": counts_json(&s.by_cause),
                "by_original_topic": counts_json(&s.by_origin),
            })).collect::<Vec<_>>(),
        })),
        Output::Text => {
            if summaries.is_empty() {
                println!(
                    "no dead-letter topics (topics ending in {})",
                    suffixes.join(" or ")
                );
                return Ok(());
            }
            let rows: Vec<Vec<String>> = summaries
                .iter()
                .map(|s| {
                    vec![
                        s.topic.clone(),
                        s.partitions.to_string(),
                        s.records.to_string(),
                        or_dash(age(s.oldest).map(human_duration)),
                        or_dash(age(s.newest).map(human_duration)),
                        if s.sampled {
                            format!("{} (sample)", s.scanned)
                        } else {
                            s.scanned.to_string()
                        },
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &[
                        "TOPIC",
                        "PARTITIONS",
                        "RECORDS",
                        "OLDEST",
                        "NEWEST",
                        "SCANNED"
                    ],
                    &rows
                )
            );
            for s in summaries.iter().filter(|s| s.scanned > 0) {
                println!();
                if s.sampled {
                    println!(
                        "{}: counts from a sample, the first {} of {} records",
                        s.topic, s.scanned, s.records
                    );
                } else {
                    println!("{}:", s.topic);
                }
                for (title, counts) in [
                    ("root cause", &s.by_cause),
                    ("original topic", &s.by_origin),
                ] {
                    println!("  by {title}:");
                    for (name, n) in sorted_counts(counts) {
                        println!("    {n:>8}  {name}");
                    }
                }
            }
            println!();
            println!(
                "RECORDS counts offsets (high watermark - log start): compaction and transaction markers can leave offsets without a record."
            );
        }
    }
    Ok(())
}

// -- show ----------------------------------------------------------------------------------------

/// A shown record.
struct Shown {
    partition: i32,
    record: InRecord,
    dlt: DltInfo,
}

impl ShowArgs {
    fn matches(&self, r: &InRecord, dlt: &DltInfo) -> bool {
        if let Some(o) = self.offset {
            return r.offset == o;
        }
        if let Some(class) = &self.exception {
            return dlt.is_exception(class);
        }
        if let Some(k) = &self.key {
            return r.key.as_deref() == Some(k.as_bytes());
        }
        true
    }
}

/// The partitions a `--partition` option picks: that one (if the topic has it) or all.
pub(super) fn chosen_partitions(
    info: &super::client::TopicInfo,
    partition: Option<i32>,
) -> Result<Vec<i32>> {
    let all: Vec<i32> = info.partitions.iter().map(|p| p.partition).collect();
    Ok(match partition {
        Some(p) if all.contains(&p) => vec![p],
        Some(p) => bail!(
            "partition {p} does not exist (the topic has {} partitions)",
            all.len()
        ),
        None => all,
    })
}

fn show(args: ShowArgs) -> Result<()> {
    if args.offset.is_some_and(|o| o < 0) {
        bail!("--offset must not be negative");
    }
    let mut cluster = args.common.connect()?;
    let info = cluster.topic(&args.topic)?;
    let parts = chosen_partitions(&info, args.partition)?;
    let starts = list_offsets(&mut cluster, &args.topic, &parts, EARLIEST)?;
    let ends = list_offsets(&mut cluster, &args.topic, &parts, LATEST)?;
    let mut shown: Vec<Shown> = Vec::new();
    for p in &parts {
        if shown.len() >= args.limit {
            break;
        }
        let start = starts.get(p).copied().flatten().unwrap_or(0);
        let end = ends.get(p).copied().flatten().unwrap_or(start);
        let (from, to) = match args.offset {
            Some(o) if o < start || o >= end => continue,
            Some(o) => (o, o + 1),
            None => (start, end),
        };
        read_range(&mut cluster, &args.topic, *p, from, to, |r| {
            let dlt = DltInfo::from_headers(&r.headers);
            if args.matches(r, &dlt) {
                shown.push(Shown {
                    partition: *p,
                    record: r.clone(),
                    dlt,
                });
            }
            shown.len() < args.limit
        })
        .with_context(|| format!("reading partition {p}"))?;
    }
    match args.common.output {
        Output::Json => print_json(&json!({
            "topic": args.topic,
            "partitions": parts,
            "limit": args.limit,
            "records": shown.iter().map(record_json).collect::<Vec<_>>(),
        })),
        Output::Text => {
            if shown.is_empty() {
                println!("no records matched in {}", args.topic);
            }
            for (i, s) in shown.iter().enumerate() {
                if i > 0 {
                    println!();
                }
                print!("{}", record_text(&args.topic, s));
            }
        }
    }
    Ok(())
}

fn header_json(name: &str, value: Option<&[u8]>) -> Value {
    let (value, encoding) = match decode_header(name, value) {
        HeaderValue::Null => (Value::Null, "null"),
        HeaderValue::Number(n, e) => (json!(n), e),
        HeaderValue::Text(s) => (json!(s), "utf8"),
        HeaderValue::Binary(b) => (bytes_json(Some(&b)), "binary"),
    };
    json!({"key": name, "value": value, "encoding": encoding})
}

fn record_json(s: &Shown) -> Value {
    let r = &s.record;
    let d = &s.dlt;
    json!({
        "partition": s.partition,
        "offset": r.offset,
        "timestamp": r.timestamp_ms,
        "timestamp_type": if r.log_append_time { "LogAppendTime" } else { "CreateTime" },
        "key": bytes_json(r.key.as_deref()),
        "value": bytes_json(r.value.as_deref()),
        "headers": r.headers.iter().map(|(k, v)| header_json(k, v.as_deref())).collect::<Vec<_>>(),
        "dlt": {
            "original_topic": d.original_topic(),
            "original_topics": d.topics,
            "original_partition": d.partition,
            "original_offset": d.offset,
            "original_timestamp": d.timestamp,
            "consumer_group": d.consumer_group,
            "exception": d.exception,
            "cause": d.cause,
            "root_cause": d.root_cause(),
            "message": d.message,
            "stacktrace": d.stacktrace,
        },
    })
}

/// Bytes for a person: the text when it is UTF-8, else marked hex.
fn text_or_hex(bytes: Option<&[u8]>) -> String {
    match bytes {
        None => "null".to_owned(),
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => s.to_owned(),
            Err(_) => format!("(binary, {} bytes, hex) {}", b.len(), hex(b)),
        },
    }
}

fn is_timestamp_header(name: &str) -> bool {
    name.ends_with("timestamp") && !name.ends_with("timestamp-type")
}

fn record_text(topic: &str, s: &Shown) -> String {
    use std::fmt::Write;
    let r = &s.record;
    let d = &s.dlt;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{topic}  partition {}  offset {}  {} {} (age {})",
        s.partition,
        r.offset,
        if r.log_append_time {
            "LogAppendTime"
        } else {
            "CreateTime"
        },
        format_rfc3339(r.timestamp_ms),
        human_duration(now_ms() - r.timestamp_ms)
    );
    let _ = writeln!(out, "  key: {}", text_or_hex(r.key.as_deref()));
    if let Some(t) = d.original_topic() {
        let mut line = format!("  original: {t}");
        if let Some(p) = d.partition {
            let _ = write!(line, " partition {p}");
        }
        if let Some(o) = d.offset {
            let _ = write!(line, " offset {o}");
        }
        if let Some(ts) = d.timestamp {
            let _ = write!(line, " at {}", format_rfc3339(ts));
        }
        if d.topics.len() > 1 {
            let _ = write!(line, " (then {})", d.topics[1..].join(", "));
        }
        let _ = writeln!(out, "{line}");
    }
    if let Some(g) = &d.consumer_group {
        let _ = writeln!(out, "  consumer group: {g}");
    }
    if let Some(c) = d.root_cause() {
        let _ = writeln!(out, "  root cause: {c}");
    }
    if let (Some(e), Some(_)) = (&d.exception, &d.cause) {
        let _ = writeln!(out, "  exception: {e}");
    }
    if let Some(m) = &d.message {
        let _ = writeln!(out, "  message: {m}");
    }
    let _ = writeln!(out, "  headers:");
    for (k, v) in &r.headers {
        let shown = match decode_header(k, v.as_deref()) {
            HeaderValue::Null => "null".to_owned(),
            HeaderValue::Number(n, e) if is_timestamp_header(k) && n > 0 => {
                format!("{n} ({}, {e})", format_rfc3339(n))
            }
            HeaderValue::Number(n, e) => format!("{n} ({e})"),
            HeaderValue::Text(t) if t.contains('\n') => {
                format!("({} lines, below)", t.lines().count())
            }
            HeaderValue::Text(t) => t,
            HeaderValue::Binary(b) => format!("(binary, {} bytes, hex) {}", b.len(), hex(&b)),
        };
        let _ = writeln!(out, "    {k}: {shown}");
    }
    let _ = writeln!(out, "  payload: {}", text_or_hex(r.value.as_deref()));
    if let Some(st) = &d.stacktrace {
        let _ = writeln!(out, "  stacktrace:");
        for line in st.lines() {
            let _ = writeln!(out, "    {line}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(k: &str, v: &[u8]) -> (String, Option<Vec<u8>>) {
        (k.to_owned(), Some(v.to_vec()))
    }

    #[test]
    fn spring_numbers_decode_by_name() {
        assert_eq!(
            decode_header("kafka_dlt-original-partition", Some(&7i32.to_be_bytes())),
            HeaderValue::Number(7, "int32")
        );
        assert_eq!(
            decode_header(
                "kafka_dlt-original-offset",
                Some(&(1i64 << 40).to_be_bytes())
            ),
            HeaderValue::Number(1 << 40, "int64")
        );
        assert_eq!(
            decode_header("retry_topic-attempts", Some(&[3])),
            HeaderValue::Number(3, "int32")
        );
        // BigInteger.toByteArray: as short as the value allows, two's complement.
        assert_eq!(
            decode_header("retry_topic-backoff-timestamp", Some(&[0x01, 0x8c, 0x00])),
            HeaderValue::Number(0x018c00, "bigint")
        );
        assert_eq!(
            decode_header("retry_topic-original-timestamp", Some(&[0xff])),
            HeaderValue::Number(-1, "bigint")
        );
        // The wrong length is not read as a number.
        assert_eq!(
            decode_header("kafka_dlt-original-offset", Some(&[0, 0, 0, 1])),
            HeaderValue::Binary(vec![0, 0, 0, 1])
        );
        assert_eq!(
            decode_header("kafka_dlt-original-offset", Some(&[0xff, 0, 0, 1])),
            HeaderValue::Binary(vec![0xff, 0, 0, 1])
        );
        assert_eq!(
            decode_header("kafka_dlt-exception-message", Some(b"boom")),
            HeaderValue::Text("boom".to_owned())
        );
        assert_eq!(decode_header("x", None), HeaderValue::Null);
    }

    #[test]
    fn the_origin_is_the_first_and_the_exception_the_last() {
        let headers = vec![
            h("kafka_dlt-original-topic", b"orders"),
            h("kafka_dlt-original-partition", &2i32.to_be_bytes()),
            h("kafka_dlt-original-offset", &41i64.to_be_bytes()),
            h("kafka_dlt-original-topic", b"orders-retry-0"),
            h("kafka_dlt-original-partition", &0i32.to_be_bytes()),
            h("kafka_dlt-original-offset", &5i64.to_be_bytes()),
            h(
                "kafka_dlt-exception-fqcn",
                b"org.springframework.kafka.listener.ListenerExecutionFailedException",
            ),
            h(
                "kafka_dlt-exception-cause-fqcn",
                b"java.net.SocketTimeoutException",
            ),
            h("kafka_dlt-exception-fqcn", b"last.Wrapper"),
        ];
        let d = DltInfo::from_headers(&headers);
        assert_eq!(d.original_topic(), Some("orders"));
        assert_eq!(d.topics, vec!["orders", "orders-retry-0"]);
        assert_eq!((d.partition, d.offset), (Some(2), Some(41)));
        assert_eq!(d.exception.as_deref(), Some("last.Wrapper"));
        assert_eq!(d.root_cause(), Some("java.net.SocketTimeoutException"));
        assert!(d.is_exception("SocketTimeoutException"));
        assert!(d.is_exception("java.net.SocketTimeoutException"));
        assert!(d.is_exception("last.Wrapper"));
        assert!(!d.is_exception("Timeout"));
    }

    #[test]
    fn retry_topic_and_connect_headers_are_read_too() {
        let spring_retry = vec![
            h("kafka_original-topic", b"payments"),
            h("kafka_original-offset", &9i64.to_be_bytes()),
            h("kafka_exception-fqcn", b"a.Wrapper"),
        ];
        let d = DltInfo::from_headers(&spring_retry);
        assert_eq!(d.original_topic(), Some("payments"));
        assert_eq!(d.offset, Some(9));
        assert_eq!(d.root_cause(), Some("a.Wrapper"));
        let connect = vec![
            h("__connect.errors.topic", b"clicks"),
            h("__connect.errors.partition", b"3"),
            h(
                "__connect.errors.exception.class.name",
                b"org.apache.kafka.connect.errors.DataException",
            ),
        ];
        let d = DltInfo::from_headers(&connect);
        assert_eq!(d.original_topic(), Some("clicks"));
        assert_eq!(d.partition, Some(3));
        assert!(d.is_exception("DataException"));
        assert_eq!(DltInfo::from_headers(&[]).root_cause(), None);
    }

    #[test]
    fn dlt_names() {
        let s: Vec<String> = DEFAULT_SUFFIXES.iter().map(|s| s.to_string()).collect();
        assert!(is_dlt("orders-dlt", &s));
        assert!(is_dlt("orders.DLT", &s));
        assert!(!is_dlt("orders", &s));
        assert!(!is_dlt("orders-retry-0", &s));
        assert!(!is_dlt("-dlt", &s));
        assert!(!is_dlt("orders.dlt", &s));
    }
}
