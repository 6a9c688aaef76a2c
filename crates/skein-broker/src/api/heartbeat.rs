//! Heartbeat: keeps a classic group member's session alive and tells it about rebalances.

use std::sync::Arc;

use skein_protocol::messages::heartbeat_request::HeartbeatRequest;
use skein_protocol::messages::heartbeat_response::HeartbeatResponse;

use crate::broker::Broker;

pub fn handle(broker: &Arc<Broker>, req: HeartbeatRequest) -> HeartbeatResponse {
    if let Some(code) = broker.coordinator_error(&req.group_id) {
        return HeartbeatResponse {
            error_code: code.0,
            ..Default::default()
        };
    }
    let (error, _persisted) = broker.group_op(|c, now, _| {
        let e = c.heartbeat(
            now,
            &req.group_id,
            req.generation_id,
            &req.member_id,
            req.group_instance_id.as_deref(),
        );
        (e, Vec::new())
    });
    HeartbeatResponse {
        error_code: error.0,
        ..Default::default()
    }
}
