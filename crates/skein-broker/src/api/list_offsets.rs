//! ListOffsets: earliest, latest, by timestamp and max timestamp. The lookups are
//! [`Partition::lookup_offset`](crate::partition::Partition::lookup_offset); this maps the
//! request and its version onto them and their answers back.
//!
//! As Kafka answers: a client (replica id -1) is answered by the leader below the high
//! watermark (below the last stable offset when read_committed); a replica's request is
//! answered by the leader up to the log end, and a debugging request (replica id -2) by any
//! replica of the partition, up to the log end. After an election, while the new leader's high watermark is still below the
//! log end it had when its epoch began (KIP-207), a client asking for the latest offset, or
//! for a timestamp not found below the high watermark, gets OFFSET_NOT_AVAILABLE
//! (LEADER_NOT_AVAILABLE before v5) rather than an offset lower than the old leader showed.

use std::sync::Arc;

use skein_protocol::messages::list_offsets_request::ListOffsetsRequest;
use skein_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsResponse, ListOffsetsTopicResponse,
};

use crate::broker::Broker;
use crate::error::ErrorCode;
use crate::partition::{OffsetQuery, OffsetsReader};

const LATEST: i64 = -1;
/// `isolation_level` of a read_committed client: answered below the last stable offset.
const READ_COMMITTED: i8 = 1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;

/// The replica id of a consumer's request.
const CONSUMER_REPLICA_ID: i32 = -1;
/// The replica id of a debugging request: served by any replica, up to the log end.
const DEBUGGING_REPLICA_ID: i32 = -2;
/// OFFSET_NOT_AVAILABLE came with ListOffsets v5; older versions get LEADER_NOT_AVAILABLE.
const FIRST_OFFSET_NOT_AVAILABLE_VERSION: i16 = 5;

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

/// The lookup a timestamp (or special value) of a supported version asks for.
fn query_for(timestamp: i64) -> OffsetQuery {
    match timestamp {
        LATEST => OffsetQuery::Latest,
        EARLIEST => OffsetQuery::Earliest,
        MAX_TIMESTAMP => OffsetQuery::MaxTimestamp,
        EARLIEST_LOCAL => OffsetQuery::EarliestLocal,
        ts if ts >= 0 => OffsetQuery::Timestamp(ts),
        // Other negative values (such as -5, latest tiered) have no answer here.
        _ => OffsetQuery::Unanswered,
    }
}

pub fn handle(broker: &Arc<Broker>, version: i16, req: ListOffsetsRequest) -> ListOffsetsResponse {
    let mut resp = ListOffsetsResponse::default();
    let reader = match req.replica_id {
        CONSUMER_REPLICA_ID => OffsetsReader::Consumer {
            read_committed: req.isolation_level == READ_COMMITTED,
        },
        DEBUGGING_REPLICA_ID => OffsetsReader::Debugging,
        _ => OffsetsReader::Replica,
    };
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
                Some(partition) => {
                    let query = query_for(p.timestamp);
                    match partition.lookup_offset(
                        broker.node_id(),
                        reader,
                        p.current_leader_epoch,
                        query,
                    ) {
                        Ok(Some(found)) => {
                            pr.offset = found.offset;
                            pr.timestamp = found.timestamp;
                            pr.leader_epoch = found.leader_epoch;
                            if version == 0 {
                                pr.old_style_offsets = vec![found.offset];
                            }
                        }
                        Ok(None) => {}
                        Err(ErrorCode::OFFSET_NOT_AVAILABLE)
                            if version < FIRST_OFFSET_NOT_AVAILABLE_VERSION =>
                        {
                            pr.error_code = ErrorCode::LEADER_NOT_AVAILABLE.code()
                        }
                        Err(code) => pr.error_code = code.code(),
                    }
                }
            }
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    resp
}
