//! OffsetCommit: store a group's positions, answered once they are durable.

use std::collections::HashMap;
use std::sync::Arc;

use skein_group::{CommitOffset, CommitRequest};
use skein_protocol::messages::offset_commit_request::OffsetCommitRequest;
use skein_protocol::messages::offset_commit_response::{
    OffsetCommitResponse, OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use skein_protocol::ResponseBody;

use super::{Reply, RequestContext};
use crate::broker::Broker;
use crate::error::ErrorCode;

pub fn handle(broker: &Arc<Broker>, ctx: &RequestContext, req: OffsetCommitRequest) -> Reply {
    let version = ctx.api_version;
    if let Some(code) = broker.coordinator_error(&req.group_id) {
        let topics = req
            .topics
            .iter()
            .map(|t| OffsetCommitResponseTopic {
                name: t.name.clone(),
                partitions: t
                    .partitions
                    .iter()
                    .map(|p| OffsetCommitResponsePartition {
                        partition_index: p.partition_index,
                        error_code: code.0,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
            .collect();
        return Reply::Now(ResponseBody::OffsetCommit(OffsetCommitResponse {
            topics,
            ..Default::default()
        }));
    }
    let mut unknown: HashMap<(String, i32), ErrorCode> = HashMap::new();
    let mut offsets = Vec::new();
    let mut order: Vec<(String, Vec<i32>)> = Vec::new();
    for t in &req.topics {
        let topic = broker.topic(&t.name);
        let mut parts = Vec::new();
        for p in &t.partitions {
            parts.push(p.partition_index);
            if topic
                .as_ref()
                .and_then(|tp| tp.partition(p.partition_index))
                .is_none()
            {
                unknown.insert(
                    (t.name.clone(), p.partition_index),
                    ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                );
                continue;
            }
            offsets.push(CommitOffset {
                topic: t.name.clone(),
                partition: p.partition_index,
                offset: p.committed_offset,
                leader_epoch: p.committed_leader_epoch,
                metadata: p.committed_metadata.clone(),
            });
        }
        order.push((t.name.clone(), parts));
    }
    let commit = CommitRequest {
        group_id: req.group_id,
        generation_id: if version >= 1 {
            req.generation_id_or_member_epoch
        } else {
            -1
        },
        member_id: req.member_id,
        group_instance_id: req.group_instance_id,
        offsets,
    };
    let (results, persisted) = broker.group_op(|c, now, _| {
        if commit.offsets.is_empty() {
            return (Vec::new(), Vec::new());
        }
        c.commit_offsets(now, commit)
    });
    Reply::Later(Box::pin(async move {
        persisted.await;
        let results: HashMap<(String, i32), i16> =
            results.into_iter().map(|(k, e)| (k, e.0)).collect();
        let topics = order
            .into_iter()
            .map(|(name, parts)| OffsetCommitResponseTopic {
                partitions: parts
                    .into_iter()
                    .map(|p| {
                        let key = (name.clone(), p);
                        let code = unknown
                            .get(&key)
                            .map(|e| e.0)
                            .or_else(|| results.get(&key).copied())
                            .unwrap_or(0);
                        OffsetCommitResponsePartition {
                            partition_index: p,
                            error_code: code,
                            ..Default::default()
                        }
                    })
                    .collect(),
                name,
                ..Default::default()
            })
            .collect();
        ResponseBody::OffsetCommit(OffsetCommitResponse {
            topics,
            ..Default::default()
        })
    }))
}
