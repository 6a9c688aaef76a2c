//! ElectLeaders (43, KIP-183/KIP-460; AdminClient `electLeaders`, `kafka-leader-election`):
//! any broker accepts it and forwards it to the active controller, which elects the preferred
//! replica or an unclean leader per partition; the answer comes once the changes are
//! committed (and applied on this broker).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use skein_protocol::messages::elect_leaders_request::ElectLeadersRequest;
use skein_protocol::messages::elect_leaders_response::{
    ElectLeadersResponse, PartitionResult, ReplicaElectionResult,
};
use skein_protocol::ResponseBody;

use super::Reply;
use crate::broker::Broker;
use crate::controller_link::{Answer, ControllerCall};
use crate::error::ErrorCode;

pub fn handle(broker: &Arc<Broker>, version: i16, req: ElectLeadersRequest) -> Reply {
    let broker = broker.clone();
    Reply::Later(Box::pin(async move {
        // v0 has no election type: preferred.
        let election_type = if version >= 1 { req.election_type } else { 0 };
        let partitions: Option<Vec<(String, Vec<i32>)>> = req.topic_partitions.as_ref().map(|t| {
            t.iter()
                .map(|t| (t.topic.clone(), t.partitions.clone()))
                .collect()
        });
        let timeout = Duration::from_millis(req.timeout_ms.max(1) as u64);
        let call = ControllerCall::ElectLeaders {
            election_type,
            partitions: partitions.clone(),
        };
        let answer = broker.controller_call_within(call, timeout).await;
        let mut resp = ElectLeadersResponse::default();
        match answer {
            Ok(Answer::Elections { results }) => {
                // One entry per topic, in the order topics first appear.
                let mut order: Vec<String> = Vec::new();
                let mut by_topic: BTreeMap<String, Vec<PartitionResult>> = BTreeMap::new();
                for (topic, partition_id, error_code, error_message) in results {
                    if !by_topic.contains_key(&topic) {
                        order.push(topic.clone());
                    }
                    by_topic.entry(topic).or_default().push(PartitionResult {
                        partition_id,
                        error_code,
                        error_message,
                        ..Default::default()
                    });
                }
                resp.replica_election_results = order
                    .into_iter()
                    .map(|topic| ReplicaElectionResult {
                        partition_result: by_topic.remove(&topic).unwrap_or_default(),
                        topic,
                        ..Default::default()
                    })
                    .collect();
            }
            Ok(other) => {
                tracing::error!("the controller answered ElectLeaders with {other:?}");
                resp.error_code = ErrorCode::UNKNOWN_SERVER_ERROR.code();
            }
            Err(e) if version >= 1 && e.code == ErrorCode::INVALID_REQUEST => {
                resp.error_code = e.code.code();
            }
            Err(e) => {
                // Every named partition carries the error (v0 has no top-level code).
                if version >= 1 && partitions.is_none() {
                    resp.error_code = e.code.code();
                }
                for (topic, parts) in partitions.unwrap_or_default() {
                    resp.replica_election_results.push(ReplicaElectionResult {
                        topic,
                        partition_result: parts
                            .into_iter()
                            .map(|p| PartitionResult {
                                partition_id: p,
                                error_code: e.code.code(),
                                error_message: Some(e.message.clone()),
                                ..Default::default()
                            })
                            .collect(),
                        ..Default::default()
                    });
                }
            }
        }
        ResponseBody::ElectLeaders(resp)
    }))
}
