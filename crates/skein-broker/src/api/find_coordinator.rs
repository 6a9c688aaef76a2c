//! FindCoordinator: a group's coordinator is the leader of its partition of
//! `__consumer_offsets`, a transactional id's the leader of its partition of
//! `__transaction_state` (each topic created on the first lookup, as Kafka does).

use std::sync::Arc;

use skein_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
use skein_protocol::messages::find_coordinator_response::{Coordinator, FindCoordinatorResponse};

use crate::broker::{Broker, BrokerEndpoint};
use crate::error::ErrorCode;

/// Batched keys arrived in version 4.
const FIRST_BATCHED_VERSION: i16 = 4;
const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

/// The coordinator of `key`, or the error and message to answer.
fn lookup(
    broker: &Broker,
    listener: &str,
    key_type: i8,
    key: &str,
) -> Result<BrokerEndpoint, (ErrorCode, Option<String>)> {
    // The coordinator as a client on this listener reaches it.
    let on_listener = |b: BrokerEndpoint| {
        broker
            .broker_endpoint_on(listener, b.id)
            .ok_or((ErrorCode::COORDINATOR_NOT_AVAILABLE, None))
    };
    let found = match key_type {
        KEY_TYPE_GROUP if key.is_empty() => Err((
            ErrorCode::INVALID_REQUEST,
            Some("The group id must not be empty.".into()),
        )),
        KEY_TYPE_GROUP if !broker.is_ready() => Err((ErrorCode::COORDINATOR_NOT_AVAILABLE, None)),
        KEY_TYPE_GROUP => broker.group_coordinator(key).map_err(|code| (code, None)),
        KEY_TYPE_TRANSACTION if key.is_empty() => Err((
            ErrorCode::INVALID_REQUEST,
            Some("The transactional id must not be empty.".into()),
        )),
        KEY_TYPE_TRANSACTION if !broker.is_ready() => {
            Err((ErrorCode::COORDINATOR_NOT_AVAILABLE, None))
        }
        KEY_TYPE_TRANSACTION => broker.txn_coordinator(key).map_err(|code| (code, None)),
        other => Err((
            ErrorCode::INVALID_REQUEST,
            Some(format!("Unknown coordinator key type {other}.")),
        )),
    };
    found.and_then(on_listener)
}

pub fn handle(
    broker: &Arc<Broker>,
    listener: &str,
    version: i16,
    req: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    if version >= FIRST_BATCHED_VERSION {
        let coordinators = req
            .coordinator_keys
            .into_iter()
            .map(|key| match lookup(broker, listener, req.key_type, &key) {
                Ok(b) => Coordinator {
                    key,
                    node_id: b.id,
                    host: b.host,
                    port: b.port,
                    ..Default::default()
                },
                Err((code, message)) => Coordinator {
                    key,
                    node_id: -1,
                    host: String::new(),
                    port: -1,
                    error_code: code.code(),
                    error_message: message,
                    ..Default::default()
                },
            })
            .collect();
        return FindCoordinatorResponse {
            coordinators,
            ..Default::default()
        };
    }
    match lookup(broker, listener, req.key_type, &req.key) {
        Ok(b) => FindCoordinatorResponse {
            node_id: b.id,
            host: b.host,
            port: b.port,
            ..Default::default()
        },
        Err((code, message)) => FindCoordinatorResponse {
            error_code: code.code(),
            error_message: message,
            node_id: -1,
            host: String::new(),
            port: -1,
            ..Default::default()
        },
    }
}
