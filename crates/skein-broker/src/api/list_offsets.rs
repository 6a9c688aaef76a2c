//! ListOffsets: earliest, latest, by timestamp and max timestamp.

use std::sync::Arc;

use skein_protocol::messages::list_offsets_request::ListOffsetsRequest;
use skein_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsResponse, ListOffsetsTopicResponse,
};

use crate::broker::Broker;
use crate::error::ErrorCode;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;

/// The first ListOffsets version that may carry a special (negative) timestamp, as in Kafka:
/// -3 (max timestamp) came with v7, -4 (earliest local) with v8, -5 (latest tiered) with v9
/// and -6 (earliest pending upload) with v10. `None` for a negative value that means nothing.
fn first_version_for(timestamp: i64) -> Option<i16> {
    match timestamp {
        LATEST | EARLIEST => Some(0),
        MAX_TIMESTAMP => Some(7),
        EARLIEST_LOCAL => Some(8),
        -5 => Some(9),
        -6 => Some(10),
        _ => None,
    }
}

pub fn handle(broker: &Arc<Broker>, version: i16, req: ListOffsetsRequest) -> ListOffsetsResponse {
    let mut resp = ListOffsetsResponse::default();
    for t in req.topics {
        let topic = broker.topic(&t.name);
        let mut tr = ListOffsetsTopicResponse {
            name: t.name,
            ..Default::default()
        };
        for p in t.partitions {
            let mut pr = ListOffsetsPartitionResponse {
                partition_index: p.partition_index,
                timestamp: -1,
                offset: -1,
                leader_epoch: -1,
                ..Default::default()
            };
            // A special timestamp the request's version does not have is refused as Kafka
            // does, before the partition is looked at.
            let unsupported = p.timestamp < 0
                && first_version_for(p.timestamp).is_none_or(|first| version < first);
            match topic.as_ref().and_then(|t| t.partition(p.partition_index)) {
                _ if unsupported => pr.error_code = ErrorCode::UNSUPPORTED_VERSION.code(),
                None => pr.error_code = ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.code(),
                Some(partition) => 'found: {
                    let check = partition.check_leader(broker.node_id(), p.current_leader_epoch);
                    if !check.is_ok() {
                        pr.error_code = check.code();
                        break 'found;
                    }
                    let state = partition.lock();
                    match state.log.as_ref() {
                        None => pr.error_code = ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.code(),
                        Some(log) => {
                            let hw = log.high_watermark();
                            let found: Result<Option<(i64, i64)>, String> = match p.timestamp {
                                EARLIEST | EARLIEST_LOCAL => Ok(Some((log.log_start_offset(), -1))),
                                LATEST => Ok(Some((hw, -1))),
                                MAX_TIMESTAMP => log
                                    .max_timestamp()
                                    .map(|r| r.filter(|(o, _)| *o < hw))
                                    .map_err(|e| e.to_string()),
                                ts if ts >= 0 => log
                                    .offset_for_timestamp(ts)
                                    .map(|r| r.filter(|(o, _)| *o < hw))
                                    .map_err(|e| e.to_string()),
                                // Other negative values (such as -5, earliest pending
                                // upload for tiered storage) have no answer here.
                                _ => Ok(None),
                            };
                            match found {
                                Ok(Some((offset, ts))) => {
                                    pr.offset = offset;
                                    pr.timestamp = ts;
                                    pr.leader_epoch = partition.leader_epoch();
                                    if version == 0 {
                                        pr.old_style_offsets = vec![offset];
                                    }
                                }
                                Ok(None) => {}
                                Err(e) => {
                                    tracing::error!(topic = %partition.topic, partition = p.partition_index, "offset lookup failed: {e}");
                                    pr.error_code = ErrorCode::KAFKA_STORAGE_ERROR.code();
                                }
                            }
                        }
                    }
                }
            }
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    resp
}
