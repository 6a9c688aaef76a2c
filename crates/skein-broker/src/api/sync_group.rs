//! SyncGroup: the leader hands in the assignment; every member waits for its share.

use std::sync::Arc;

use bytes::Bytes;
use skein_group::SyncRequest;
use skein_protocol::messages::sync_group_request::SyncGroupRequest;
use skein_protocol::messages::sync_group_response::SyncGroupResponse;
use skein_protocol::ResponseBody;

use super::{Reply, RequestContext};
use crate::broker::Broker;
use crate::error::ErrorCode;
use crate::groups::Waited;

pub fn handle(broker: &Arc<Broker>, ctx: &RequestContext, req: SyncGroupRequest) -> Reply {
    if let Some(code) = broker.coordinator_error(&req.group_id) {
        return Reply::Now(ResponseBody::SyncGroup(SyncGroupResponse {
            error_code: code.0,
            ..Default::default()
        }));
    }
    let sync = SyncRequest {
        group_id: req.group_id,
        generation_id: req.generation_id,
        member_id: req.member_id,
        group_instance_id: req.group_instance_id,
        protocol_type: req.protocol_type,
        protocol_name: req.protocol_name,
        assignments: req
            .assignments
            .into_iter()
            .map(|a| (a.member_id, a.assignment))
            .collect(),
    };
    let _ = ctx;
    let (token, answer) = broker.groups().wait();
    let ((), persisted) = broker.group_op(|c, now, _| ((), c.sync_group(now, token, sync)));
    Reply::Later(Box::pin(async move {
        persisted.await;
        let resp = match answer.await {
            Ok(Waited::Sync(r)) => SyncGroupResponse {
                error_code: r.error.0,
                protocol_type: r.protocol_type,
                protocol_name: r.protocol_name,
                assignment: r.assignment,
                ..Default::default()
            },
            _ => SyncGroupResponse {
                error_code: ErrorCode::COORDINATOR_NOT_AVAILABLE.0,
                protocol_type: None,
                protocol_name: None,
                assignment: Bytes::new(),
                ..Default::default()
            },
        };
        ResponseBody::SyncGroup(resp)
    }))
}
