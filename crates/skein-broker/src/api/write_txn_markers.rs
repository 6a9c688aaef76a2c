//! WriteTxnMarkers (v0-1): the transaction coordinator asks each partition's leader to end a
//! producer's transaction with a COMMIT or ABORT control batch. Every partition is answered
//! on its own (NOT_LEADER_OR_FOLLOWER, UNKNOWN_TOPIC_OR_PARTITION, INVALID_PRODUCER_EPOCH,
//! TRANSACTION_COORDINATOR_FENCED, ...), once its marker is replicated like an acks=all write.
//!
//! [`Broker::write_txn_marker`] is the same step for a coordinator on this broker.

use std::sync::Arc;
use std::time::Duration;

use skein_protocol::messages::write_txn_markers_request::WriteTxnMarkersRequest;
use skein_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
    WriteTxnMarkersResponse,
};
use skein_protocol::ResponseBody;
use tokio::time::Instant;

use super::Reply;
use crate::broker::Broker;
use crate::error::ErrorCode;
use crate::partition::MarkerRequest;

/// How long a marker waits for the in-sync replicas (Kafka's `request.timeout.ms` default).
const MARKER_TIMEOUT: Duration = Duration::from_secs(30);

impl Broker {
    /// Writes a COMMIT (`committed`) or ABORT marker for `producer_id` to `topic`/`partition`
    /// as its leader: appends the control batch, ends the producer's open transaction (an
    /// aborted one goes into the aborted-transaction index, and the last stable offset moves
    /// on), and waits like an acks=all write until the high watermark passes the marker.
    pub async fn write_txn_marker(
        &self,
        topic: &str,
        partition: i32,
        producer_id: i64,
        producer_epoch: i16,
        coordinator_epoch: i32,
        committed: bool,
    ) -> Result<(), ErrorCode> {
        let Some(part) = self.topic(topic).and_then(|t| t.partition(partition)) else {
            return Err(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION);
        };
        let min_insync = self
            .topic(topic)
            .map_or(1, |t| t.effective().min_insync_replicas);
        let marker = MarkerRequest {
            producer_id,
            producer_epoch,
            coordinator_epoch,
            committed,
        };
        let appended = part
            .append_marker_as_leader(
                self.node_id(),
                marker,
                self.now_ms(),
                self.config.acks_all_fsync,
                min_insync,
            )
            .map_err(|e| e.code)?;
        self.data_arrived.notify_waiters();
        if let Some(handle) = appended.sync {
            let durable = handle.end_offset();
            if let Err(e) = self.syncer().sync(part.key(), handle).await {
                tracing::error!(
                    topic,
                    partition,
                    "fsync of a transaction marker failed: {e}"
                );
                return Err(ErrorCode::KAFKA_STORAGE_ERROR);
            }
            if part.mark_durable(durable, min_insync) {
                self.data_arrived.notify_waiters();
            }
        }
        let deadline = Instant::now() + MARKER_TIMEOUT;
        let node = self.node_id();
        loop {
            let notified = self.data_arrived.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let a = part.assignment();
            if a.leader != node || a.leader_epoch != appended.leader_epoch {
                return Err(ErrorCode::NOT_LEADER_OR_FOLLOWER);
            }
            if part.high_watermark() > appended.last_offset {
                if topic == crate::groups::OFFSETS_TOPIC {
                    // Offsets committed in this transaction become visible, or are dropped.
                    self.group_txn_completed(partition, producer_id, committed);
                }
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(ErrorCode::REQUEST_TIMED_OUT);
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }
}

pub fn handle(broker: &Arc<Broker>, req: WriteTxnMarkersRequest) -> Reply {
    let broker = broker.clone();
    Reply::Later(Box::pin(async move {
        let mut resp = WriteTxnMarkersResponse::default();
        for m in req.markers {
            let mut result = WritableTxnMarkerResult {
                producer_id: m.producer_id,
                ..Default::default()
            };
            for t in m.topics {
                let mut tr = WritableTxnMarkerTopicResult {
                    name: t.name.clone(),
                    ..Default::default()
                };
                for p in t.partition_indexes {
                    let code = match broker
                        .write_txn_marker(
                            &t.name,
                            p,
                            m.producer_id,
                            m.producer_epoch,
                            m.coordinator_epoch,
                            m.transaction_result,
                        )
                        .await
                    {
                        Ok(()) => ErrorCode::NONE,
                        Err(code) => code,
                    };
                    tr.partitions.push(WritableTxnMarkerPartitionResult {
                        partition_index: p,
                        error_code: code.code(),
                        ..Default::default()
                    });
                }
                result.topics.push(tr);
            }
            resp.markers.push(result);
        }
        ResponseBody::WriteTxnMarkers(resp)
    }))
}
