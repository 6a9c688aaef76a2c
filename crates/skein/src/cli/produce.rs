//! `skein produce TOPIC`: records from stdin lines (or `--value` arguments), partitioned like
//! the Java client (murmur2 of the key; keyless records stick to one partition per batch),
//! batched per partition, optionally compressed, and sent to each partition's leader.

use std::collections::BTreeMap;
use std::io::{BufRead, BufWriter, Write};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::json;
use skein_protocol::messages::produce_request::{
    PartitionProduceData, ProduceRequest, TopicProduceData,
};
use skein_protocol::records::Compression;

use super::batch::{build_batch, parse_compression, OutRecord};
use super::client::{backoff, is_retriable, Cluster, TopicInfo, RETRIES};
use super::errors::{self, KafkaError};
use super::output::Output;
use super::partitioner::partition_for_key;
use super::time::now_ms;
use super::topic::parse_key_value;
use super::Common;

/// A batch is sent once the records waiting reach this many bytes...
const FLUSH_BYTES: usize = 256 * 1024;
/// ...or when no line has arrived for this long (so interactive input goes out at once)...
const LINGER: Duration = Duration::from_millis(10);
/// ...or when the oldest waiting record is this old.
const MAX_LINGER: Duration = Duration::from_millis(200);
/// How long the broker may wait for acknowledgements.
const PRODUCE_TIMEOUT_MS: i32 = 30_000;

/// `--acks`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acks {
    /// Do not wait for the broker.
    #[value(name = "0")]
    None,
    /// Wait for the leader.
    #[value(name = "1")]
    Leader,
    /// Wait for every in-sync replica.
    #[value(name = "all")]
    All,
}

impl Acks {
    fn wire(self) -> i16 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }
}

#[derive(clap::Args)]
pub struct ProduceArgs {
    /// The topic to write to.
    pub topic: String,
    /// Produce these values instead of reading lines from stdin (repeatable).
    #[arg(long = "value", value_name = "VALUE")]
    pub values: Vec<String>,
    /// Split each line (or value) at the first SEP into key and value.
    #[arg(long, value_name = "SEP")]
    pub key_separator: Option<String>,
    /// A header for every record, as key=value (repeatable).
    #[arg(long = "header", value_name = "KEY=VALUE")]
    pub headers: Vec<String>,
    /// Write every record to this partition instead of partitioning by key.
    #[arg(long)]
    pub partition: Option<i32>,
    /// Acknowledgements to wait for.
    #[arg(long, value_enum, default_value = "all")]
    pub acks: Acks,
    /// Compression codec of the batches: none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none", value_parser = compression_arg)]
    pub compression: Compression,
    #[command(flatten)]
    pub common: Common,
}

fn compression_arg(text: &str) -> Result<Compression, String> {
    parse_compression(text).map_err(|e| e.to_string())
}

pub fn run(args: ProduceArgs) -> Result<()> {
    let context = format!("produce {}", args.topic);
    produce(args).context(context)
}

/// Turns one input line into a record.
fn parse_line(
    line: &[u8],
    number: u64,
    separator: Option<&[u8]>,
    headers: &[(String, Option<Vec<u8>>)],
) -> Result<OutRecord> {
    let (key, value) = match separator {
        None => (None, line.to_vec()),
        Some(sep) => {
            let at = line
                .windows(sep.len())
                .position(|w| w == sep)
                .ok_or_else(|| {
                    anyhow!(
                        "line {number} has no key separator {:?}",
                        String::from_utf8_lossy(sep)
                    )
                })?;
            (Some(line[..at].to_vec()), line[at + sep.len()..].to_vec())
        }
    };
    Ok(OutRecord {
        key,
        value: Some(value),
        headers: headers.to_vec(),
        timestamp_ms: now_ms(),
    })
}

struct Producer {
    cluster: Cluster,
    topic: TopicInfo,
    acks: Acks,
    compression: Compression,
    partition_override: Option<i32>,
    /// The partition keyless records go to until the next batch.
    sticky: i32,
    pending: Vec<(i32, OutRecord)>,
    pending_bytes: usize,
    oldest: Option<Instant>,
    output: Output,
    out: BufWriter<std::io::Stdout>,
}

impl Producer {
    fn partition_count(&self) -> i32 {
        self.topic.partitions.len() as i32
    }

    fn add(&mut self, record: OutRecord) -> Result<()> {
        let partition = match (self.partition_override, &record.key) {
            (Some(p), _) => p,
            (None, Some(key)) => partition_for_key(key, self.partition_count()),
            (None, None) => self.sticky,
        };
        self.pending_bytes += record.size_estimate();
        self.oldest.get_or_insert_with(Instant::now);
        self.pending.push((partition, record));
        if self.pending_bytes >= FLUSH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn flush_if_old(&mut self) -> Result<()> {
        if self.oldest.is_some_and(|t| t.elapsed() >= MAX_LINGER) {
            self.flush()?;
        }
        Ok(())
    }

    /// Sends every waiting record and prints where each landed, in input order.
    fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        self.oldest = None;
        let mut by_partition: BTreeMap<i32, Vec<OutRecord>> = BTreeMap::new();
        let mut placement = Vec::with_capacity(pending.len());
        let mut had_keyless = false;
        for (partition, record) in pending {
            had_keyless |= record.key.is_none();
            let records = by_partition.entry(partition).or_default();
            placement.push((partition, records.len() as i64));
            records.push(record);
        }
        let batches: BTreeMap<i32, Vec<u8>> = by_partition
            .iter()
            .map(|(p, records)| (*p, build_batch(records, self.compression)))
            .collect();
        let base_offsets = self.send(batches)?;
        for (partition, index) in placement {
            let offset = base_offsets
                .get(&partition)
                .copied()
                .filter(|o| *o >= 0)
                .map(|o| o + index);
            let line = match self.output {
                Output::Text => match offset {
                    Some(o) => format!("partition {partition} offset {o}"),
                    None => format!("partition {partition} offset -"),
                },
                Output::Json => json!({
                    "topic": self.topic.name,
                    "partition": partition,
                    "offset": offset,
                })
                .to_string(),
            };
            writeln!(self.out, "{line}").context("cannot write to stdout")?;
        }
        self.out.flush().context("cannot write to stdout")?;
        if had_keyless && self.partition_override.is_none() {
            self.sticky = (self.sticky + 1) % self.partition_count();
        }
        Ok(())
    }

    /// Sends one batch per partition to the partitions' leaders; returns each partition's
    /// base offset (-1 with acks=0). Partitions whose leader moved are sent again.
    fn send(&mut self, mut batches: BTreeMap<i32, Vec<u8>>) -> Result<BTreeMap<i32, i64>> {
        let mut base_offsets = BTreeMap::new();
        let mut attempt = 0;
        while !batches.is_empty() {
            let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
            let mut leaderless = false;
            for p in batches.keys() {
                match self.topic.leader(*p) {
                    Some(l) => by_leader.entry(l).or_default().push(*p),
                    None => leaderless = true,
                }
            }
            let mut last_error = None;
            for (leader, partitions) in by_leader {
                let request = ProduceRequest {
                    transactional_id: None,
                    acks: self.acks.wire(),
                    timeout_ms: PRODUCE_TIMEOUT_MS,
                    topic_data: vec![TopicProduceData {
                        name: self.topic.name.clone(),
                        partition_data: partitions
                            .iter()
                            .map(|p| PartitionProduceData {
                                index: *p,
                                records: Some(batches[p].clone().into()),
                                ..Default::default()
                            })
                            .collect(),
                        ..Default::default()
                    }],
                    ..Default::default()
                };
                let conn = self.cluster.broker(leader)?;
                if self.acks == Acks::None {
                    conn.send_without_reply(request)?;
                    for p in partitions {
                        base_offsets.insert(p, -1);
                        batches.remove(&p);
                    }
                    continue;
                }
                let timeout = Duration::from_millis(PRODUCE_TIMEOUT_MS as u64 + 5_000);
                let response = conn.send_with_timeout(request, timeout)?;
                for t in response.responses {
                    for p in t.partition_responses {
                        if !batches.contains_key(&p.index) {
                            continue;
                        }
                        if p.error_code == errors::NONE {
                            base_offsets.insert(p.index, p.base_offset);
                            batches.remove(&p.index);
                        } else if is_retriable(p.error_code) && attempt < RETRIES {
                            last_error = Some(p.error_code);
                        } else {
                            let mut message = p.error_message.clone();
                            if message.is_none() && !p.record_errors.is_empty() {
                                let details: Vec<String> = p
                                    .record_errors
                                    .iter()
                                    .filter_map(|r| r.batch_index_error_message.clone())
                                    .collect();
                                message = Some(details.join("; "));
                            }
                            return Err(KafkaError::new(p.error_code, message))
                                .with_context(|| format!("partition {}", p.index));
                        }
                    }
                }
            }
            if batches.is_empty() {
                break;
            }
            attempt += 1;
            if attempt > RETRIES {
                let p = batches.keys().next().copied().unwrap_or(-1);
                return Err(KafkaError::new(
                    last_error.unwrap_or(errors::LEADER_NOT_AVAILABLE),
                    None,
                ))
                .with_context(|| format!("partition {p}"));
            }
            if !leaderless && last_error.is_none() {
                bail!(
                    "the leader did not answer for partitions {:?}",
                    batches.keys()
                );
            }
            backoff(attempt);
            self.topic = self.cluster.topic(&self.topic.name)?;
        }
        Ok(base_offsets)
    }
}

fn produce(args: ProduceArgs) -> Result<()> {
    let separator = args.key_separator.as_deref().map(str::as_bytes);
    if separator.is_some_and(<[u8]>::is_empty) {
        bail!("--key-separator must not be empty");
    }
    let headers: Vec<(String, Option<Vec<u8>>)> = args
        .headers
        .iter()
        .map(|h| parse_key_value(h).map(|(k, v)| (k, Some(v.into_bytes()))))
        .collect::<Result<_>>()?;
    let mut cluster = args.common.connect()?;
    let topic = cluster.topic(&args.topic)?;
    let count = topic.partitions.len() as i32;
    if count == 0 {
        bail!("the topic has no partitions");
    }
    if let Some(p) = args.partition {
        if !(0..count).contains(&p) {
            bail!("partition {p} does not exist (the topic has {count} partitions)");
        }
    }
    let sticky = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
        % count as u32) as i32;
    let mut producer = Producer {
        cluster,
        topic,
        acks: args.acks,
        compression: args.compression,
        partition_override: args.partition,
        sticky,
        pending: Vec::new(),
        pending_bytes: 0,
        oldest: None,
        output: args.common.output,
        out: BufWriter::new(std::io::stdout()),
    };
    if !args.values.is_empty() {
        for (i, v) in args.values.iter().enumerate() {
            producer.add(parse_line(v.as_bytes(), i as u64 + 1, separator, &headers)?)?;
        }
        return producer.flush();
    }
    // A reader thread lets a quiet stdin flush what is waiting instead of blocking on it.
    let (lines_tx, lines_rx) = mpsc::sync_channel::<std::io::Result<Vec<u8>>>(4096);
    std::thread::Builder::new()
        .name("stdin".to_owned())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            loop {
                let mut line = Vec::new();
                match stdin.read_until(b'\n', &mut line) {
                    Ok(0) => return,
                    Ok(_) => {
                        if line.last() == Some(&b'\n') {
                            line.pop();
                            if line.last() == Some(&b'\r') {
                                line.pop();
                            }
                        }
                        if lines_tx.send(Ok(line)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = lines_tx.send(Err(e));
                        return;
                    }
                }
            }
        })
        .context("cannot start the stdin reader")?;
    let mut number = 0u64;
    loop {
        match lines_rx.recv_timeout(LINGER) {
            Ok(Ok(line)) => {
                number += 1;
                producer.add(parse_line(&line, number, separator, &headers)?)?;
                producer.flush_if_old()?;
            }
            Ok(Err(e)) => return Err(anyhow!(e).context("cannot read stdin")),
            Err(RecvTimeoutError::Timeout) => producer.flush()?,
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    producer.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_at_the_first_separator() {
        let r = parse_line(b"k1:v:1", 1, Some(b":"), &[]).unwrap();
        assert_eq!(r.key.as_deref(), Some(&b"k1"[..]));
        assert_eq!(r.value.as_deref(), Some(&b"v:1"[..]));
        let r = parse_line(b"::", 1, Some(b"::"), &[]).unwrap();
        assert_eq!(r.key.as_deref(), Some(&b""[..]));
        assert_eq!(r.value.as_deref(), Some(&b""[..]));
        let r = parse_line(b"plain", 1, None, &[("h".into(), Some(b"1".to_vec()))]).unwrap();
        assert_eq!(r.key, None);
        assert_eq!(r.headers.len(), 1);
        let e = parse_line(b"no-sep", 7, Some(b"\t"), &[]).unwrap_err();
        assert!(e.to_string().contains("line 7"), "{e}");
    }
}
