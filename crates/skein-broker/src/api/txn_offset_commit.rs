//! TxnOffsetCommit: a transactional producer commits its consumer group's offsets as part of
//! its transaction. The offsets are written to the group's `__consumer_offsets` partition as
//! a transactional batch of that producer and stay pending (invisible to OffsetFetch) until
//! the transaction's COMMIT marker reaches that partition; an ABORT drops them.

use std::sync::Arc;

use skein_group::{CommitOffset, TxnCommitRequest};
use skein_protocol::messages::txn_offset_commit_request::TxnOffsetCommitRequest;
use skein_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponse, TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use skein_protocol::ResponseBody;

use super::Reply;
use crate::broker::Broker;
use crate::groups::{offsets_partition_for, OFFSETS_TOPIC};

/// Version 3 added the member fields (KIP-447).
const FIRST_MEMBER_VERSION: i16 = 3;

pub fn handle(broker: &Arc<Broker>, version: i16, req: TxnOffsetCommitRequest) -> Reply {
    let broker = broker.clone();
    Reply::Later(Box::pin(async move {
        let offsets: Vec<CommitOffset> = req
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(move |p| CommitOffset {
                    topic: t.name.clone(),
                    partition: p.partition_index,
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: p.committed_metadata.clone(),
                })
            })
            .collect();
        let all = |code: i16| -> Vec<((String, i32), i16)> {
            offsets
                .iter()
                .map(|o| ((o.topic.clone(), o.partition), code))
                .collect()
        };
        let results = if let Some(code) = broker.coordinator_error(&req.group_id) {
            all(code.code())
        } else {
            // KIP-890 part 1: the group's offsets partition must be in the transaction
            // (AddOffsetsToTxn added it).
            let count = broker.offsets_partition_count();
            let partition = offsets_partition_for(&req.group_id, count);
            match broker
                .verify_txn_partition(
                    &req.transactional_id,
                    req.producer_id,
                    req.producer_epoch,
                    OFFSETS_TOPIC,
                    partition,
                )
                .await
            {
                Err(code) => all(code.code()),
                Ok(()) => {
                    let members = version >= FIRST_MEMBER_VERSION;
                    let request = TxnCommitRequest {
                        transactional_id: req.transactional_id.clone(),
                        group_id: req.group_id.clone(),
                        producer_id: req.producer_id,
                        producer_epoch: req.producer_epoch,
                        generation_id: if members { req.generation_id } else { -1 },
                        member_id: if members {
                            req.member_id.clone()
                        } else {
                            String::new()
                        },
                        group_instance_id: if members {
                            req.group_instance_id.clone()
                        } else {
                            None
                        },
                        offsets: offsets.clone(),
                    };
                    broker
                        .group_txn_commit(request)
                        .await
                        .into_iter()
                        .map(|(k, e)| (k, e.0))
                        .collect()
                }
            }
        };
        let mut topics: Vec<TxnOffsetCommitResponseTopic> = Vec::new();
        for ((topic, partition), code) in results {
            let entry = TxnOffsetCommitResponsePartition {
                partition_index: partition,
                error_code: code,
                ..Default::default()
            };
            match topics.iter_mut().find(|t| t.name == topic) {
                Some(t) => t.partitions.push(entry),
                None => topics.push(TxnOffsetCommitResponseTopic {
                    name: topic,
                    partitions: vec![entry],
                    ..Default::default()
                }),
            }
        }
        ResponseBody::TxnOffsetCommit(TxnOffsetCommitResponse {
            topics,
            ..Default::default()
        })
    }))
}
