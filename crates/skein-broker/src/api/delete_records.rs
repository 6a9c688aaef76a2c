//! DeleteRecords: raise a partition's log start offset.

use std::sync::Arc;

use skein_protocol::messages::delete_records_request::DeleteRecordsRequest;
use skein_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsResponse, DeleteRecordsTopicResult,
};

use crate::broker::Broker;
use crate::error::ErrorCode;

/// Offset -1 means "up to the high watermark".
const TO_HIGH_WATERMARK: i64 = -1;

pub fn handle(broker: &Arc<Broker>, req: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let mut resp = DeleteRecordsResponse::default();
    for t in req.topics {
        let topic = broker.topic(&t.name);
        let mut result = DeleteRecordsTopicResult {
            name: t.name,
            ..Default::default()
        };
        for p in t.partitions {
            let mut pr = DeleteRecordsPartitionResult {
                partition_index: p.partition_index,
                low_watermark: -1,
                ..Default::default()
            };
            match topic.as_ref().and_then(|t| t.partition(p.partition_index)) {
                None => pr.error_code = ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.code(),
                Some(partition) if !partition.check_leader(broker.node_id(), -1).is_ok() => {
                    pr.error_code = ErrorCode::NOT_LEADER_OR_FOLLOWER.code()
                }
                Some(partition) => {
                    let mut state = partition.lock();
                    match state.log.as_mut() {
                        None => pr.error_code = ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.code(),
                        Some(log) => {
                            let hw = log.high_watermark();
                            let target = if p.offset == TO_HIGH_WATERMARK {
                                hw
                            } else {
                                p.offset
                            };
                            if target < 0 || target > hw {
                                pr.error_code = ErrorCode::OFFSET_OUT_OF_RANGE.code();
                            } else {
                                match log.delete_records_before(target) {
                                    Ok(low) => pr.low_watermark = low,
                                    Err(e) => {
                                        tracing::warn!(topic = %partition.topic, partition = partition.index, "delete records failed: {e}");
                                        pr.error_code = ErrorCode::KAFKA_STORAGE_ERROR.code();
                                    }
                                }
                            }
                        }
                    }
                }
            }
            result.partitions.push(pr);
        }
        resp.topics.push(result);
    }
    resp
}
