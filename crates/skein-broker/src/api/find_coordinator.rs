//! FindCoordinator: on a single node, this broker coordinates every group.

use std::sync::Arc;

use skein_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
use skein_protocol::messages::find_coordinator_response::{Coordinator, FindCoordinatorResponse};

use crate::broker::Broker;
use crate::error::ErrorCode;

/// Batched keys arrived in version 4.
const FIRST_BATCHED_VERSION: i16 = 4;
const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

fn lookup(broker: &Broker, key_type: i8, key: &str) -> (ErrorCode, Option<String>) {
    match key_type {
        KEY_TYPE_GROUP if key.is_empty() => (
            ErrorCode::INVALID_REQUEST,
            Some("The group id must not be empty.".into()),
        ),
        KEY_TYPE_GROUP if !broker.is_ready() => (ErrorCode::COORDINATOR_NOT_AVAILABLE, None),
        KEY_TYPE_GROUP => (ErrorCode::NONE, None),
        KEY_TYPE_TRANSACTION => (
            ErrorCode::COORDINATOR_NOT_AVAILABLE,
            Some("Transactions are not supported by this broker yet.".into()),
        ),
        other => (
            ErrorCode::INVALID_REQUEST,
            Some(format!("Unknown coordinator key type {other}.")),
        ),
    }
}

pub fn handle(
    broker: &Arc<Broker>,
    version: i16,
    req: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let addr = broker.advertised();
    let (host, port) = (addr.ip().to_string(), addr.port() as i32);
    if version >= FIRST_BATCHED_VERSION {
        let coordinators = req
            .coordinator_keys
            .into_iter()
            .map(|key| {
                let (code, message) = lookup(broker, req.key_type, &key);
                let ok = code.is_ok();
                Coordinator {
                    key,
                    node_id: if ok { broker.node_id() } else { -1 },
                    host: if ok { host.clone() } else { String::new() },
                    port: if ok { port } else { -1 },
                    error_code: code.code(),
                    error_message: message,
                    ..Default::default()
                }
            })
            .collect();
        return FindCoordinatorResponse {
            coordinators,
            ..Default::default()
        };
    }
    let (code, message) = lookup(broker, req.key_type, &req.key);
    let ok = code.is_ok();
    FindCoordinatorResponse {
        error_code: code.code(),
        error_message: message,
        node_id: if ok { broker.node_id() } else { -1 },
        host: if ok { host } else { String::new() },
        port: if ok { port } else { -1 },
        ..Default::default()
    }
}
