//! OffsetForLeaderEpoch: where a leader epoch ended in this partition's log (KIP-101, KIP-279).
//! Consumers use it after a leader change to check that their position is still on the log
//! (KIP-320: librdkafka and the Java client do this whenever the leader epoch moves);
//! followers use it to find where their log diverges from a new leader's.

use std::sync::Arc;

use skein_protocol::messages::offset_for_leader_epoch_request::OffsetForLeaderEpochRequest;
use skein_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderEpochResponse, OffsetForLeaderTopicResult,
};

use crate::broker::Broker;
use crate::error::ErrorCode;

pub fn handle(
    broker: &Arc<Broker>,
    req: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let topic = broker.topic(&t.topic);
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let failed = |code: ErrorCode| EpochEndOffset {
                        error_code: code.code(),
                        partition: p.partition,
                        leader_epoch: -1,
                        end_offset: -1,
                        ..Default::default()
                    };
                    let Some(partition) = topic.as_ref().and_then(|t| t.partition(p.partition))
                    else {
                        return failed(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION);
                    };
                    let check = partition.check_leader(broker.node_id(), p.current_leader_epoch);
                    if check != ErrorCode::NONE {
                        return failed(check);
                    }
                    let state = partition.lock();
                    let Some(log) = state.log.as_ref() else {
                        return failed(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION);
                    };
                    // An epoch newer than any we know, or -1, is undefined: -1 and -1, no error.
                    let (leader_epoch, end_offset) =
                        log.end_offset_for_epoch(p.leader_epoch).unwrap_or((-1, -1));
                    EpochEndOffset {
                        error_code: ErrorCode::NONE.code(),
                        partition: p.partition,
                        leader_epoch,
                        end_offset,
                        ..Default::default()
                    }
                })
                .collect();
            OffsetForLeaderTopicResult {
                topic: t.topic,
                partitions,
                ..Default::default()
            }
        })
        .collect();
    OffsetForLeaderEpochResponse {
        topics,
        ..Default::default()
    }
}
