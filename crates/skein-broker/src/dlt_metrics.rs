//! Dead-letter topic gauges for `/metrics`: a periodic pass (every
//! `skein.dlt.metrics.interval.ms`, off the request path) over the partitions this broker
//! leads of the topics whose names end in a `skein.dlt.suffixes` suffix.
//!
//! Per topic, summed over those partitions: the records (high watermark minus log start), the
//! records not yet handled (high watermark minus the committed offset of `skein dlt replay`'s
//! group `skein-dlt-replay.<topic>`, from the log start when it has none), and the age of the
//! oldest unhandled record. The work per partition is bounded: two offsets, one committed
//! offset, and one small read at the first unhandled offset for its batch's timestamp; no log
//! is scanned. A topic that is gone (or no longer led here) loses its series at the next pass.
//!
//! In a cluster the replay group's offsets live with its coordinator (the leader of the group's
//! `__consumer_offsets` partition), which need not be this broker: then they are asked for with
//! one OffsetFetch to that broker per topic and pass, under a deadline. When that fails, the
//! records count as unhandled from the log start (an alert fires rather than stays quiet).

use std::time::Duration;

use skein_protocol::messages::offset_fetch_request::{OffsetFetchRequest, OffsetFetchRequestTopic};
use skein_protocol::records::BatchIter;
use skein_protocol::{ApiKey, RequestBody, ResponseBody};

use crate::broker::Broker;

/// How long one pass waits for another broker's answer about a replay group's offsets.
const REMOTE_OFFSETS_TIMEOUT: Duration = Duration::from_secs(5);
/// The OffsetFetch version asked of a peer (one group, topics by name).
const OFFSET_FETCH_VERSION: i16 = 7;

/// The consumer group `skein dlt replay` keeps its progress in, for a DLT.
pub fn replay_group(topic: &str) -> String {
    format!("skein-dlt-replay.{topic}")
}

/// How many bytes one look for the oldest unhandled record may read: enough for the batch
/// holding it and a few transaction markers after it.
const AGE_READ_BYTES: usize = 64 * 1024;

/// One DLT's gauges, as this broker sees the partitions it leads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DltGauges {
    pub topic: String,
    pub records: i64,
    pub unhandled: i64,
    /// Milliseconds; 0 when nothing is unhandled.
    pub oldest_unhandled_age_ms: i64,
}

/// True when `name` ends in one of `suffixes` and is more than the suffix.
pub fn is_dlt(name: &str, suffixes: &[String]) -> bool {
    suffixes
        .iter()
        .any(|s| !s.is_empty() && name.len() > s.len() && name.ends_with(s.as_str()))
}

impl Broker {
    /// Recomputes the DLT gauges and publishes them (called periodically).
    pub async fn refresh_dlt_metrics(&self) {
        let gauges = self.dlt_gauges().await;
        self.metrics().set_dlt(&gauges);
    }

    /// The DLT gauges of the topics with a partition this broker leads.
    pub async fn dlt_gauges(&self) -> Vec<DltGauges> {
        let suffixes = &self.config.dlt_suffixes;
        let node = self.node_id();
        let mut out = Vec::new();
        for topic in self.topics() {
            if topic.is_internal() || !is_dlt(&topic.name, suffixes) {
                continue;
            }
            // (partition, log start, high watermark) of the partitions led here.
            let mut led = Vec::new();
            for p in topic.partitions() {
                if p.assignment().leader != node {
                    continue;
                }
                let state = p.lock();
                if let Some(log) = state.log.as_ref() {
                    led.push((p.index, log.log_start_offset(), log.high_watermark()));
                }
            }
            if led.is_empty() {
                continue;
            }
            let partitions: Vec<i32> = led.iter().map(|(p, _, _)| *p).collect();
            let committed = self.replay_offsets(&topic.name, &partitions).await;
            let now = self.now_ms();
            let mut g = DltGauges {
                topic: topic.name.clone(),
                ..Default::default()
            };
            for (partition, start, hw) in led {
                let done = committed
                    .iter()
                    .find(|(p, _)| *p == partition)
                    .map(|(_, o)| *o)
                    .filter(|o| *o >= 0)
                    .unwrap_or(start)
                    .clamp(start, hw.max(start));
                g.records += (hw - start).max(0);
                let unhandled = (hw - done).max(0);
                g.unhandled += unhandled;
                if unhandled > 0 {
                    if let Some(ts) = self.first_timestamp_at(&topic.name, partition, done) {
                        g.oldest_unhandled_age_ms = g.oldest_unhandled_age_ms.max(now - ts);
                    }
                }
            }
            g.oldest_unhandled_age_ms = g.oldest_unhandled_age_ms.max(0);
            out.push(g);
        }
        out
    }

    /// The replay group's committed offsets for these partitions of `topic`, as (partition,
    /// offset): from this broker's coordinator state when it coordinates the group, else with
    /// an OffsetFetch to the broker that does. Empty when nobody can say (no coordinator, the
    /// peer did not answer in time, or it answered with an error).
    async fn replay_offsets(&self, topic: &str, partitions: &[i32]) -> Vec<(i32, i64)> {
        let group = replay_group(topic);
        let coordinator = match self.group_leader(&group) {
            Ok(c) => c,
            Err(_) => return Vec::new(),
        };
        if coordinator == self.node_id() {
            let asked: Vec<(String, i32)> =
                partitions.iter().map(|p| (topic.to_owned(), *p)).collect();
            return self
                .groups()
                .read(|c| c.fetch_offsets(&group, Some(&asked), false))
                .unwrap_or_default()
                .into_iter()
                .map(|(_, p, c)| (p, c.offset))
                .collect();
        }
        let request = OffsetFetchRequest {
            group_id: group.clone(),
            topics: Some(vec![OffsetFetchRequestTopic {
                name: topic.to_owned(),
                partition_indexes: partitions.to_vec(),
                ..Default::default()
            }]),
            ..Default::default()
        };
        let answer = self
            .call_peer(
                coordinator,
                ApiKey::OffsetFetch,
                OFFSET_FETCH_VERSION,
                RequestBody::OffsetFetch(request),
                REMOTE_OFFSETS_TIMEOUT,
            )
            .await;
        match answer {
            Ok(ResponseBody::OffsetFetch(r)) if r.error_code == 0 => r
                .topics
                .into_iter()
                .filter(|t| t.name == topic)
                .flat_map(|t| t.partitions)
                .filter(|p| p.error_code == 0)
                .map(|p| (p.partition_index, p.committed_offset))
                .collect(),
            Ok(other) => {
                tracing::debug!(%group, coordinator, "DLT gauges: offsets not read: {other:?}");
                Vec::new()
            }
            Err(e) => {
                tracing::debug!(%group, coordinator, "DLT gauges: offsets not read: {e}");
                Vec::new()
            }
        }
    }

    /// The timestamp of the first data record at or after `offset` (by its batch: the
    /// first record's timestamp, or the append time of a LogAppendTime batch), reading at most
    /// [`AGE_READ_BYTES`] below the high watermark.
    fn first_timestamp_at(&self, topic: &str, partition: i32, offset: i64) -> Option<i64> {
        let p = self.topic(topic)?.partition(partition)?;
        let state = p.lock();
        let log = state.log.as_ref()?;
        let from = offset.max(log.log_start_offset());
        let read = log
            .read(from, AGE_READ_BYTES, Some(log.high_watermark()))
            .ok()?;
        BatchIter::new(&read.records)
            .map_while(Result::ok)
            .map(|(h, _)| h)
            .find(|h| !h.is_control() && h.base_offset + i64::from(h.last_offset_delta) >= from)
            .map(|h| {
                if h.is_log_append_time() {
                    h.max_timestamp
                } else {
                    h.base_timestamp
                }
            })
            .filter(|ts| *ts >= 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dlt_names() {
        let s = vec!["-dlt".to_owned(), ".DLT".to_owned()];
        assert!(is_dlt("orders-dlt", &s));
        assert!(is_dlt("orders.DLT", &s));
        assert!(!is_dlt("orders", &s));
        assert!(!is_dlt("-dlt", &s));
        assert!(!is_dlt("orders.dlt", &s));
        assert!(!is_dlt("orders-dlt", &[String::new()]));
        assert_eq!(replay_group("a-dlt"), "skein-dlt-replay.a-dlt");
    }
}
