//! AlterPartitionReassignments (api 45) and ListPartitionReassignments (api 46), KIP-455.
//!
//! Any broker accepts an alteration and forwards it to the active controller
//! ([`ControllerCall::AlterReassignments`]); the answer comes once the records are committed
//! and applied on this broker, within the request's `timeout_ms` (else REQUEST_TIMED_OUT at
//! the top level, for every partition: the change may or may not have been made). The
//! controller's decisions (and the per-partition errors: UNKNOWN_TOPIC_OR_PARTITION,
//! INVALID_REPLICA_ASSIGNMENT, NO_REASSIGNMENT_IN_PROGRESS) are in
//! `skein_metadata::reassign`. Listing reads this broker's committed metadata image, which
//! holds the adding / removing replicas of every partition.

use std::sync::Arc;
use std::time::Duration;

use skein_protocol::messages::alter_partition_reassignments_request::AlterPartitionReassignmentsRequest;
use skein_protocol::messages::alter_partition_reassignments_response::{
    AlterPartitionReassignmentsResponse, ReassignablePartitionResponse, ReassignableTopicResponse,
};
use skein_protocol::messages::list_partition_reassignments_request::ListPartitionReassignmentsRequest;
use skein_protocol::messages::list_partition_reassignments_response::{
    ListPartitionReassignmentsResponse, OngoingPartitionReassignment, OngoingTopicReassignment,
};
use skein_protocol::ResponseBody;

use super::Reply;
use crate::broker::Broker;
use crate::controller_link::{Answer, ControllerCall};
use crate::error::ErrorCode;

pub fn alter(broker: &Arc<Broker>, req: AlterPartitionReassignmentsRequest) -> Reply {
    let broker = broker.clone();
    Reply::Later(Box::pin(async move {
        ResponseBody::AlterPartitionReassignments(alter_async(&broker, req).await)
    }))
}

async fn alter_async(
    broker: &Arc<Broker>,
    req: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    let mut items = Vec::new();
    for t in &req.topics {
        for p in &t.partitions {
            items.push((t.name.clone(), p.partition_index, p.replicas.clone()));
        }
    }
    let mut resp = AlterPartitionReassignmentsResponse::default();
    let timeout = Duration::from_millis(req.timeout_ms.max(1) as u64);
    let results: Vec<(i16, Option<String>)> = if items.is_empty() {
        Vec::new()
    } else {
        let call = ControllerCall::AlterReassignments {
            reassignments: items.clone(),
        };
        match broker.controller_call_within(call, timeout).await {
            Ok(Answer::Results { results }) if results.len() == items.len() => results,
            Ok(other) => {
                let message = format!("the controller answered {other:?}");
                resp.error_code = ErrorCode::UNKNOWN_SERVER_ERROR.code();
                resp.error_message = Some(message.clone());
                vec![(resp.error_code, Some(message)); items.len()]
            }
            Err(e) => {
                resp.error_code = e.code.code();
                resp.error_message = Some(e.message.clone());
                vec![(e.code.code(), Some(e.message)); items.len()]
            }
        }
    };
    let mut i = 0;
    for t in req.topics {
        let mut topic = ReassignableTopicResponse {
            name: t.name,
            ..Default::default()
        };
        for p in t.partitions {
            let (code, message) = results.get(i).cloned().unwrap_or((0, None));
            i += 1;
            topic.partitions.push(ReassignablePartitionResponse {
                partition_index: p.partition_index,
                error_code: code,
                error_message: message,
                ..Default::default()
            });
        }
        resp.responses.push(topic);
    }
    resp
}

pub fn list(
    broker: &Arc<Broker>,
    req: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    let filter: Option<Vec<(String, Vec<i32>)>> = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name, t.partition_indexes))
            .collect()
    });
    let ongoing = broker
        .quorum
        .read(|image| skein_metadata::reassign::ongoing_reassignments(image, filter.as_deref()));
    let mut resp = ListPartitionReassignmentsResponse::default();
    for o in ongoing {
        if resp.topics.last().is_none_or(|t| t.name != o.topic) {
            resp.topics.push(OngoingTopicReassignment {
                name: o.topic.clone(),
                ..Default::default()
            });
        }
        if let Some(t) = resp.topics.last_mut() {
            t.partitions.push(OngoingPartitionReassignment {
                partition_index: o.partition,
                replicas: o.replicas,
                adding_replicas: o.adding,
                removing_replicas: o.removing,
                ..Default::default()
            });
        }
    }
    resp
}
