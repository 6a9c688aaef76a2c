//! The controller quorum's APIs: DescribeQuorum (55, AdminClient `describeMetadataQuorum`),
//! AddRaftVoter (80) and RemoveRaftVoter (81) of KIP-853.
//!
//! Any node answers them: the active controller directly, the others by forwarding to it (only
//! the leader knows each voter's log end and last acknowledgement).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use skein_protocol::messages::add_raft_voter_request::AddRaftVoterRequest;
use skein_protocol::messages::add_raft_voter_response::AddRaftVoterResponse;
use skein_protocol::messages::describe_quorum_request::DescribeQuorumRequest;
use skein_protocol::messages::describe_quorum_response::{
    DescribeQuorumResponse, Listener, Node, PartitionData, ReplicaState, TopicData,
};
use skein_protocol::messages::remove_raft_voter_request::RemoveRaftVoterRequest;
use skein_protocol::messages::remove_raft_voter_response::RemoveRaftVoterResponse;
use skein_protocol::{ApiKey, ResponseBody, Uuid};
use skein_raft::{MetadataLog, QuorumStatus, ReplicaStatus};

use super::Reply;
use crate::broker::Broker;
use crate::controller_link::{Answer, ControllerCall};
use crate::error::{ApiError, ErrorCode};

/// The metadata log as Kafka names it.
pub const METADATA_TOPIC: &str = "__cluster_metadata";
/// The version the leader encodes its answer in for a forwarding node.
const FORWARD_VERSION: i16 = 2;

fn millis(t: Option<SystemTime>) -> i64 {
    t.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(-1, |d| d.as_millis() as i64)
}

fn replica(r: &ReplicaStatus) -> ReplicaState {
    let acked = millis(r.last_ack);
    ReplicaState {
        replica_id: r.node_id as i32,
        replica_directory_id: r.directory_id.map_or(Uuid::ZERO, |d| Uuid(*d.as_bytes())),
        log_end_offset: r.log_end_offset.map_or(-1, |o| o as i64),
        last_fetch_timestamp: acked,
        last_caught_up_timestamp: if r.lag == Some(0) { acked } else { -1 },
        ..Default::default()
    }
}

/// The leader's DescribeQuorum answer for `__cluster_metadata-0`.
pub(crate) fn describe_here(broker: &Broker, status: &QuorumStatus) -> DescribeQuorumResponse {
    let partition = PartitionData {
        partition_index: 0,
        leader_id: status.leader.map_or(-1, |l| l as i32),
        leader_epoch: i32::try_from(status.term).unwrap_or(i32::MAX),
        high_watermark: status.high_watermark as i64,
        current_voters: status.voters.iter().map(replica).collect(),
        observers: status.observers.iter().map(replica).collect(),
        ..Default::default()
    };
    let nodes = broker.quorum.read(|image| {
        status
            .voters
            .iter()
            .map(|v| {
                let id = v.node_id as i32;
                let listeners = match image.controllers().get(&id) {
                    Some(c) => c
                        .endpoints
                        .iter()
                        .map(|e| Listener {
                            name: e.name.clone(),
                            host: e.host.clone(),
                            port: e.port,
                            ..Default::default()
                        })
                        .collect(),
                    None => match v.addr.rsplit_once(':') {
                        Some((host, port)) => vec![Listener {
                            name: "CONTROLLER".into(),
                            host: host.to_string(),
                            port: port.parse().unwrap_or(0),
                            ..Default::default()
                        }],
                        None => Vec::new(),
                    },
                };
                Node {
                    node_id: id,
                    listeners,
                    ..Default::default()
                }
            })
            .collect()
    });
    DescribeQuorumResponse {
        topics: vec![TopicData {
            topic_name: METADATA_TOPIC.into(),
            partitions: vec![partition],
            ..Default::default()
        }],
        nodes,
        ..Default::default()
    }
}

/// Encodes the leader's answer for the node that forwarded the request.
pub(crate) fn encode_for_forwarding(resp: DescribeQuorumResponse) -> Result<Answer, ApiError> {
    let mut buf = BytesMut::new();
    ResponseBody::DescribeQuorum(resp)
        .encode(&mut buf, FORWARD_VERSION)
        .map_err(|e| ApiError::new(ErrorCode::UNKNOWN_SERVER_ERROR, e.to_string()))?;
    Ok(Answer::Encoded {
        bytes: buf.to_vec(),
    })
}

fn quorum_error(code: ErrorCode, message: String) -> DescribeQuorumResponse {
    DescribeQuorumResponse {
        error_code: code.code(),
        error_message: Some(message),
        ..Default::default()
    }
}

pub fn describe(broker: &Arc<Broker>, req: DescribeQuorumRequest) -> Reply {
    let wanted = req.topics.iter().all(|t| {
        t.topic_name == METADATA_TOPIC && t.partitions.iter().all(|p| p.partition_index == 0)
    });
    if !wanted || req.topics.is_empty() {
        let topics = req
            .topics
            .into_iter()
            .map(|t| TopicData {
                partitions: t
                    .partitions
                    .iter()
                    .map(|p| PartitionData {
                        partition_index: p.partition_index,
                        error_code: ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.code(),
                        leader_id: -1,
                        leader_epoch: -1,
                        high_watermark: -1,
                        ..Default::default()
                    })
                    .collect(),
                topic_name: t.topic_name,
                ..Default::default()
            })
            .collect();
        return Reply::Now(ResponseBody::DescribeQuorum(DescribeQuorumResponse {
            error_code: ErrorCode::INVALID_REQUEST.code(),
            error_message: Some(format!(
                "DescribeQuorum describes only {METADATA_TOPIC} partition 0."
            )),
            topics,
            ..Default::default()
        }));
    }
    let broker = broker.clone();
    Reply::Later(Box::pin(async move {
        let resp = match broker.controller_call(ControllerCall::DescribeQuorum).await {
            Ok(Answer::Encoded { bytes }) => {
                let mut buf = Bytes::from(bytes);
                match ResponseBody::decode(ApiKey::DescribeQuorum, FORWARD_VERSION, &mut buf) {
                    Ok(ResponseBody::DescribeQuorum(r)) => r,
                    _ => quorum_error(
                        ErrorCode::UNKNOWN_SERVER_ERROR,
                        "undecodable answer of the controller".into(),
                    ),
                }
            }
            Ok(other) => quorum_error(
                ErrorCode::UNKNOWN_SERVER_ERROR,
                format!("unexpected answer of the controller: {other:?}"),
            ),
            Err(e) => quorum_error(e.code, e.message),
        };
        ResponseBody::DescribeQuorum(resp)
    }))
}

fn check_cluster(broker: &Broker, cluster_id: &Option<String>) -> Result<(), ApiError> {
    match cluster_id {
        Some(id) if *id != broker.cluster_id => Err(ApiError::new(
            ErrorCode::INVALID_CLUSTER_ID,
            format!(
                "The request names cluster {id}, this is cluster {}.",
                broker.cluster_id
            ),
        )),
        _ => Ok(()),
    }
}

pub fn add_voter(broker: &Arc<Broker>, req: AddRaftVoterRequest) -> Reply {
    let broker = broker.clone();
    Reply::Later(Box::pin(async move {
        let result = async {
            check_cluster(&broker, &req.cluster_id)?;
            let listener = req
                .listeners
                .iter()
                .find(|l| l.name == "CONTROLLER")
                .or_else(|| req.listeners.first())
                .ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::INVALID_REQUEST,
                        "AddRaftVoter needs the new voter's controller listener.",
                    )
                })?;
            if req.voter_id < 0 || req.voter_directory_id == Uuid::ZERO {
                return Err(ApiError::new(
                    ErrorCode::INVALID_REQUEST,
                    "AddRaftVoter needs a voter id and a directory id.",
                ));
            }
            broker
                .controller_call(ControllerCall::AddVoter {
                    node: req.voter_id,
                    directory_id: req.voter_directory_id.0,
                    addr: format!("{}:{}", listener.host, listener.port),
                })
                .await
        }
        .await;
        let (error_code, error_message) = match result {
            Ok(_) => (0, None),
            Err(e) => (e.code.code(), Some(e.message)),
        };
        ResponseBody::AddRaftVoter(AddRaftVoterResponse {
            error_code,
            error_message,
            ..Default::default()
        })
    }))
}

pub fn remove_voter(broker: &Arc<Broker>, req: RemoveRaftVoterRequest) -> Reply {
    let broker = broker.clone();
    Reply::Later(Box::pin(async move {
        let result = async {
            check_cluster(&broker, &req.cluster_id)?;
            broker
                .controller_call(ControllerCall::RemoveVoter {
                    node: req.voter_id,
                    directory_id: (req.voter_directory_id != Uuid::ZERO)
                        .then_some(req.voter_directory_id.0),
                })
                .await
        }
        .await;
        let (error_code, error_message) = match result {
            Ok(_) => (0, None),
            Err(e) => (e.code.code(), Some(e.message)),
        };
        ResponseBody::RemoveRaftVoter(RemoveRaftVoterResponse {
            error_code,
            error_message,
            ..Default::default()
        })
    }))
}

/// Runs a membership change on this node, the leader.
pub(crate) async fn change_membership(
    broker: &Broker,
    call: &ControllerCall,
) -> Result<Answer, ApiError> {
    let Some(node) = broker.quorum.raft() else {
        return Err(ApiError::new(
            ErrorCode::NOT_CONTROLLER,
            "The metadata log is not running yet.",
        ));
    };
    let result = match call {
        ControllerCall::AddVoter {
            node: id,
            directory_id,
            addr,
        } => {
            if *id < 0 {
                return Err(ApiError::new(ErrorCode::INVALID_REQUEST, "bad voter id"));
            }
            node.add_voter(
                *id as u64,
                uuid::Uuid::from_bytes(*directory_id),
                addr.clone(),
            )
            .await
        }
        ControllerCall::RemoveVoter {
            node: id,
            directory_id,
        } => {
            if *id < 0 {
                return Err(ApiError::new(ErrorCode::INVALID_REQUEST, "bad voter id"));
            }
            node.remove_voter(*id as u64, directory_id.map(uuid::Uuid::from_bytes))
                .await
        }
        _ => {
            return Err(ApiError::new(
                ErrorCode::INVALID_REQUEST,
                "not a membership change",
            ))
        }
    };
    result.map(|()| Answer::Done).map_err(|e| {
        use skein_raft::LogError;
        match &e {
            LogError::NotLeader { .. } => ApiError::new(
                ErrorCode::NOT_CONTROLLER,
                "This node is not the active controller.",
            ),
            LogError::Timeout(d) => ApiError::new(
                ErrorCode::REQUEST_TIMED_OUT,
                format!("The membership change did not complete within {d:?}."),
            ),
            LogError::MembershipChangeInProgress | LogError::Uncertain(_) => ApiError::new(
                ErrorCode::REQUEST_TIMED_OUT,
                format!("{e}; retry once it settles."),
            ),
            LogError::Shutdown(_) => ApiError::new(ErrorCode::NOT_CONTROLLER, e.to_string()),
            LogError::Invalid(m) => ApiError::new(ErrorCode::INVALID_REQUEST, m.clone()),
        }
    })
}
