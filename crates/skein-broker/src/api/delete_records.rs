//! DeleteRecords: raise a partition's log start offset, and answer once every live replica
//! has raised its own (Kafka's `DelayedDeleteRecords`).
//!
//! The leader deletes at once and answers the partition's low watermark: the lowest log start
//! across itself and the followers whose brokers are alive (registered, not fenced), in or
//! out of the ISR, each follower's as its latest fetch stated it. Followers learn the leader's
//! log start from their fetch responses and state their own in their next fetch. While the low
//! watermark is below the requested offset the answer waits, up to the request's `timeout_ms`;
//! after it, REQUEST_TIMED_OUT with the low watermark the deletion first answered (the
//! deletion itself stands). A partition whose leadership moves meanwhile is answered
//! NOT_LEADER_OR_FOLLOWER.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use skein_protocol::messages::delete_records_request::DeleteRecordsRequest;
use skein_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsResponse, DeleteRecordsTopicResult,
};
use skein_protocol::ResponseBody;
use tokio::time::Instant;

use super::Reply;
use crate::broker::Broker;
use crate::error::ErrorCode;
use crate::partition::Partition;

/// How often a waiting DeleteRecords looks again without being woken (a follower fenced
/// meanwhile no longer counts, and nothing else announces that).
const RECHECK: Duration = Duration::from_millis(250);

/// A partition whose answer waits for the followers' log starts.
struct Pending {
    ti: usize,
    pi: usize,
    partition: Arc<Partition>,
    requested: i64,
}

/// The brokers whose replicas count for the low watermark: registered and not fenced.
fn live_brokers(broker: &Broker) -> BTreeSet<i32> {
    broker.brokers().into_iter().map(|b| b.id).collect()
}

pub fn handle(broker: &Arc<Broker>, req: DeleteRecordsRequest) -> Reply {
    let node = broker.node_id();
    let live = live_brokers(broker);
    let mut resp = DeleteRecordsResponse::default();
    let mut pending = Vec::new();
    for (ti, t) in req.topics.into_iter().enumerate() {
        let topic = broker.topic(&t.name);
        let mut result = DeleteRecordsTopicResult {
            name: t.name,
            ..Default::default()
        };
        for (pi, p) in t.partitions.into_iter().enumerate() {
            let mut pr = DeleteRecordsPartitionResult {
                partition_index: p.partition_index,
                low_watermark: -1,
                ..Default::default()
            };
            match topic.as_ref().map(|t| (t, t.partition(p.partition_index))) {
                // As Kafka: the records of internal topics (group offsets) are not deleted.
                Some((t, _)) if t.is_internal() => {
                    pr.error_code = ErrorCode::INVALID_TOPIC_EXCEPTION.code()
                }
                None | Some((_, None)) => {
                    pr.error_code = ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.code()
                }
                Some((_, Some(partition))) => {
                    match partition.delete_records(node, p.offset, |id| live.contains(&id)) {
                        Ok(d) => {
                            pr.low_watermark = d.low_watermark;
                            if d.low_watermark < d.requested {
                                pending.push(Pending {
                                    ti,
                                    pi,
                                    partition,
                                    requested: d.requested,
                                });
                            }
                        }
                        Err(e) => pr.error_code = e.code.code(),
                    }
                }
            }
            result.partitions.push(pr);
        }
        resp.topics.push(result);
    }
    if pending.is_empty() {
        return Reply::Now(ResponseBody::DeleteRecords(resp));
    }
    let broker = broker.clone();
    let timeout = Duration::from_millis(req.timeout_ms.max(0) as u64);
    Reply::Later(Box::pin(async move {
        wait_for_followers(&broker, &mut resp, pending, timeout).await;
        ResponseBody::DeleteRecords(resp)
    }))
}

/// Waits until the low watermark of every pending partition reaches the offset asked for.
async fn wait_for_followers(
    broker: &Broker,
    resp: &mut DeleteRecordsResponse,
    mut pending: Vec<Pending>,
    timeout: Duration,
) {
    let deadline = Instant::now() + timeout;
    let node = broker.node_id();
    loop {
        let notified = broker.data_arrived.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let live = live_brokers(broker);
        pending.retain(|w| {
            let pr = &mut resp.topics[w.ti].partitions[w.pi];
            match w.partition.low_watermark(node, |id| live.contains(&id)) {
                None => {
                    pr.error_code = ErrorCode::NOT_LEADER_OR_FOLLOWER.code();
                    pr.low_watermark = -1;
                    false
                }
                Some(low) if low >= w.requested => {
                    pr.low_watermark = low;
                    false
                }
                Some(_) => true,
            }
        });
        if pending.is_empty() {
            return;
        }
        let now = Instant::now();
        if now >= deadline {
            for w in pending {
                let pr = &mut resp.topics[w.ti].partitions[w.pi];
                pr.error_code = ErrorCode::REQUEST_TIMED_OUT.code();
            }
            return;
        }
        tokio::select! {
            _ = &mut notified => {}
            _ = tokio::time::sleep_until(deadline.min(now + RECHECK)) => {}
        }
    }
}
