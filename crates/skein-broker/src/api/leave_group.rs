//! LeaveGroup: members leave (one in v0–v2, a batch in v3+), starting a rebalance.

use std::sync::Arc;

use skein_protocol::messages::leave_group_request::LeaveGroupRequest;
use skein_protocol::messages::leave_group_response::{LeaveGroupResponse, MemberResponse};
use skein_protocol::ResponseBody;

use super::{Reply, RequestContext};
use crate::broker::Broker;

/// Batched members arrived in version 3.
const FIRST_BATCHED_VERSION: i16 = 3;

pub fn handle(broker: &Arc<Broker>, ctx: &RequestContext, req: LeaveGroupRequest) -> Reply {
    let version = ctx.api_version;
    let members: Vec<(String, Option<String>)> = if version >= FIRST_BATCHED_VERSION {
        req.members
            .into_iter()
            .map(|m| (m.member_id, m.group_instance_id))
            .collect()
    } else {
        vec![(req.member_id, None)]
    };
    let group_id = req.group_id;
    if let Some(code) = broker.coordinator_error(&group_id) {
        return Reply::Now(ResponseBody::LeaveGroup(LeaveGroupResponse {
            error_code: code.0,
            ..Default::default()
        }));
    }
    let ((error, results), persisted) = broker.group_op(|c, now, _| {
        let (e, r, fx) = c.leave_group(now, &group_id, members);
        ((e, r), fx)
    });
    Reply::Later(Box::pin(async move {
        persisted.await;
        let mut resp = LeaveGroupResponse {
            error_code: error.0,
            ..Default::default()
        };
        if version >= FIRST_BATCHED_VERSION {
            resp.members = results
                .into_iter()
                .map(|(member_id, group_instance_id, e)| MemberResponse {
                    member_id,
                    group_instance_id,
                    error_code: e.0,
                    ..Default::default()
                })
                .collect();
        } else if let Some((_, _, e)) = results.first() {
            // v0–v2 carry one member: its error is the response's.
            if resp.error_code == 0 {
                resp.error_code = e.0;
            }
        }
        ResponseBody::LeaveGroup(resp)
    }))
}
