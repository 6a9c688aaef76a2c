//! JoinGroup: the first step of a classic group rebalance. The answer waits until the
//! rebalance completes (or the member must retry with its new id).

use std::sync::Arc;

use skein_group::{JoinRequest, JoinResult};
use skein_protocol::messages::join_group_request::JoinGroupRequest;
use skein_protocol::messages::join_group_response::{JoinGroupResponse, JoinGroupResponseMember};
use skein_protocol::ResponseBody;

use super::{Reply, RequestContext};
use crate::broker::Broker;
use crate::error::ErrorCode;
use crate::groups::Waited;

fn response(r: JoinResult, version: i16) -> JoinGroupResponse {
    JoinGroupResponse {
        error_code: r.error.0,
        generation_id: r.generation_id,
        protocol_type: r.protocol_type,
        // The protocol name is nullable only from v7.
        protocol_name: if version >= 7 {
            r.protocol_name
        } else {
            Some(r.protocol_name.unwrap_or_default())
        },
        leader: r.leader,
        skip_assignment: r.skip_assignment,
        member_id: r.member_id,
        members: r
            .members
            .into_iter()
            .map(|m| JoinGroupResponseMember {
                member_id: m.member_id,
                group_instance_id: m.group_instance_id,
                metadata: m.metadata,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

pub fn handle(broker: &Arc<Broker>, ctx: &RequestContext, req: JoinGroupRequest) -> Reply {
    let version = ctx.api_version;
    let member_id = req.member_id.clone();
    if let Some(code) = broker.coordinator_error(&req.group_id) {
        return Reply::Now(ResponseBody::JoinGroup(JoinGroupResponse {
            error_code: code.0,
            generation_id: -1,
            member_id,
            ..Default::default()
        }));
    }
    let join = JoinRequest {
        group_id: req.group_id,
        member_id: req.member_id,
        group_instance_id: req.group_instance_id,
        protocol_type: req.protocol_type,
        protocols: req
            .protocols
            .into_iter()
            .map(|p| (p.name, p.metadata))
            .collect(),
        session_timeout_ms: req.session_timeout_ms,
        rebalance_timeout_ms: if version >= 1 {
            req.rebalance_timeout_ms
        } else {
            req.session_timeout_ms
        },
        client_id: ctx.client_id.clone().unwrap_or_default(),
        client_host: ctx.client_host.clone(),
        require_known_member_id: version >= 4,
        supports_skip_assignment: version >= 9,
        reason: req.reason,
    };
    let (token, answer) = broker.groups().wait();
    let ((), persisted) = broker.group_op(|c, now, _| ((), c.join_group(now, token, join)));
    Reply::Later(Box::pin(async move {
        persisted.await;
        let result = match answer.await {
            Ok(Waited::Join(r)) => r,
            _ => JoinResult {
                error: skein_group::ErrorCode(ErrorCode::COORDINATOR_NOT_AVAILABLE.0),
                generation_id: -1,
                protocol_type: None,
                protocol_name: None,
                leader: String::new(),
                skip_assignment: false,
                member_id,
                members: Vec::new(),
            },
        };
        ResponseBody::JoinGroup(response(result, version))
    }))
}
