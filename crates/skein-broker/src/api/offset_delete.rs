//! OffsetDelete: remove a group's committed offsets for some partitions.

use std::sync::Arc;

use skein_protocol::messages::offset_delete_request::OffsetDeleteRequest;
use skein_protocol::messages::offset_delete_response::{
    OffsetDeleteResponse, OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use skein_protocol::ResponseBody;

use super::Reply;
use crate::broker::Broker;

pub fn handle(broker: &Arc<Broker>, req: OffsetDeleteRequest) -> Reply {
    let wanted: Vec<(String, i32)> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.name.clone(), p.partition_index))
        })
        .collect();
    let group_id = req.group_id;
    if let Some(code) = broker.coordinator_error(&group_id) {
        return Reply::Now(ResponseBody::OffsetDelete(OffsetDeleteResponse {
            error_code: code.0,
            ..Default::default()
        }));
    }
    let ((error, results), persisted) = broker.group_op(|c, now, _| {
        let (e, r, fx) = c.delete_offsets(now, &group_id, &wanted);
        ((e, r), fx)
    });
    Reply::Later(Box::pin(async move {
        persisted.await;
        let mut topics: Vec<OffsetDeleteResponseTopic> = Vec::new();
        for t in req.topics {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let code = results
                        .iter()
                        .find(|((n, i), _)| *n == t.name && *i == p.partition_index)
                        .map(|(_, e)| e.0)
                        .unwrap_or(0);
                    OffsetDeleteResponsePartition {
                        partition_index: p.partition_index,
                        error_code: code,
                        ..Default::default()
                    }
                })
                .collect();
            topics.push(OffsetDeleteResponseTopic {
                name: t.name,
                partitions,
                ..Default::default()
            });
        }
        let topics = if error.0 != 0 { Vec::new() } else { topics };
        ResponseBody::OffsetDelete(OffsetDeleteResponse {
            error_code: error.0,
            topics,
            ..Default::default()
        })
    }))
}
