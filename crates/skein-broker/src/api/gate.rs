//! The authorizer's checks per API, as Kafka's `KafkaApis` makes them (the table "Operations
//! and Resources on Protocols" of Kafka's documentation), run before the handler when the
//! authorizer is on.
//!
//! Three shapes: a request denied as a whole gets its error response at once
//! ([`Gate::Deny`]); a request whose items (topics, groups, resources) are denied in part
//! goes to the handler without them, and the denied items are added to its response with
//! their error; a read-only request may run as it is and have the denied items rewritten (or
//! left out) in its response. Either way the handlers themselves know nothing of ACLs.

use std::collections::BTreeSet;
use std::sync::Arc;

use skein_protocol::messages as m;
use skein_protocol::{RequestBody, ResponseBody, Uuid};

use super::{Reply, RequestContext};
use crate::authz::{op, resource, Session};
use crate::broker::Broker;
use crate::error::ErrorCode;

/// A change to the handler's response.
pub type Patch = Box<dyn FnOnce(&mut ResponseBody) + Send>;

pub enum Gate {
    /// Run the (possibly trimmed) request, then patch its response.
    Pass(RequestBody, Option<Patch>),
    /// Answer this instead.
    Deny(ResponseBody),
}

const TOPIC_DENIED: ErrorCode = ErrorCode::TOPIC_AUTHORIZATION_FAILED;
const GROUP_DENIED: ErrorCode = ErrorCode::GROUP_AUTHORIZATION_FAILED;
const CLUSTER_DENIED: ErrorCode = ErrorCode::CLUSTER_AUTHORIZATION_FAILED;
const TXN_DENIED: ErrorCode = ErrorCode::TRANSACTIONAL_ID_AUTHORIZATION_FAILED;

fn msg(code: ErrorCode) -> Option<String> {
    Some(
        match code {
            TOPIC_DENIED => "Topic authorization failed.",
            GROUP_DENIED => "Group authorization failed.",
            CLUSTER_DENIED => "Cluster authorization failed.",
            TXN_DENIED => "Transactional Id authorization failed.",
            _ => "Authorization failed.",
        }
        .to_string(),
    )
}

fn pass(body: RequestBody) -> Gate {
    Gate::Pass(body, None)
}

fn patch(body: RequestBody, f: impl FnOnce(&mut ResponseBody) + Send + 'static) -> Gate {
    Gate::Pass(body, Some(Box::new(f)))
}

/// Applies `patch` to whatever the handler answers.
pub fn patched(reply: Reply, patch: Patch) -> Reply {
    match reply {
        Reply::Now(mut body) => {
            patch(&mut body);
            Reply::Now(body)
        }
        Reply::Nothing => Reply::Nothing,
        Reply::Later(fut) => Reply::Later(Box::pin(async move {
            let mut body = fut.await;
            patch(&mut body);
            body
        })),
        Reply::Fetch(fut) => Reply::Fetch(Box::pin(async move {
            let mut reply = fut.await;
            let before = count_fetch_partitions(&reply.body);
            patch(&mut reply.body);
            // One (empty) file range per partition added, when the reply has ranges.
            if !reply.ranges.is_empty() {
                let after = count_fetch_partitions(&reply.body);
                for _ in before..after {
                    reply.ranges.push(Vec::new());
                }
            }
            reply
        })),
    }
}

fn count_fetch_partitions(body: &ResponseBody) -> usize {
    match body {
        ResponseBody::Fetch(r) => r.responses.iter().map(|t| t.partitions.len()).sum(),
        _ => 0,
    }
}

/// The name of a topic given by id (Fetch v13+, DeleteTopics v6), if known here.
fn topic_name(broker: &Broker, id: &Uuid) -> Option<String> {
    broker.topic_by_id(id).map(|t| t.name.clone())
}

/// The checks for one request. The caller runs it only with the authorizer on.
pub fn gate(broker: &Arc<Broker>, ctx: &RequestContext, body: RequestBody) -> Gate {
    let s = broker.authz_session(ctx);
    let v = ctx.api_version;
    match body {
        RequestBody::Produce(r) => produce(&s, r),
        RequestBody::Fetch(r) => fetch(broker, &s, v, r),
        RequestBody::Metadata(r) => metadata(broker, s, r),
        RequestBody::ListOffsets(mut r) => {
            let denied = split(
                &mut r.topics,
                |t| &t.name,
                |n| s.allowed(op::DESCRIBE, resource::TOPIC, n),
            );
            patch(RequestBody::ListOffsets(r), move |resp| {
                if let ResponseBody::ListOffsets(resp) = resp {
                    for t in denied {
                        resp.topics
                            .push(m::list_offsets_response::ListOffsetsTopicResponse {
                                name: t.name,
                                partitions: t
                                    .partitions
                                    .iter()
                                    .map(|p| {
                                        m::list_offsets_response::ListOffsetsPartitionResponse {
                                            partition_index: p.partition_index,
                                            error_code: TOPIC_DENIED.0,
                                            timestamp: -1,
                                            offset: -1,
                                            leader_epoch: -1,
                                            ..Default::default()
                                        }
                                    })
                                    .collect(),
                                ..Default::default()
                            });
                    }
                }
            })
        }
        RequestBody::OffsetForLeaderEpoch(mut r) => {
            if r.replica_id >= 0 {
                if !s.cluster(op::CLUSTER_ACTION) {
                    let topics = std::mem::take(&mut r.topics);
                    return Gate::Deny(ResponseBody::OffsetForLeaderEpoch(leader_epoch_denied(
                        topics,
                    )));
                }
                return pass(RequestBody::OffsetForLeaderEpoch(r));
            }
            let denied = split(
                &mut r.topics,
                |t| &t.topic,
                |n| s.allowed(op::DESCRIBE, resource::TOPIC, n),
            );
            patch(RequestBody::OffsetForLeaderEpoch(r), move |resp| {
                if let ResponseBody::OffsetForLeaderEpoch(resp) = resp {
                    resp.topics.extend(leader_epoch_denied(denied).topics);
                }
            })
        }
        RequestBody::CreateTopics(mut r) => {
            let cluster_create = s.check(op::CREATE, resource::CLUSTER, crate::authz::CLUSTER_NAME);
            let denied = split(
                &mut r.topics,
                |t| &t.name,
                |n| cluster_create || s.allowed(op::CREATE, resource::TOPIC, n),
            );
            patch(RequestBody::CreateTopics(r), move |resp| {
                if let ResponseBody::CreateTopics(resp) = resp {
                    for t in denied {
                        resp.topics
                            .push(m::create_topics_response::CreatableTopicResult {
                                name: t.name,
                                error_code: TOPIC_DENIED.0,
                                error_message: msg(TOPIC_DENIED),
                                num_partitions: -1,
                                replication_factor: -1,
                                ..Default::default()
                            });
                    }
                }
            })
        }
        RequestBody::DeleteTopics(mut r) => {
            let mut denied_names = Vec::new();
            r.topic_names.retain(|n| {
                let ok = s.allowed(op::DELETE, resource::TOPIC, n);
                if !ok {
                    denied_names.push((Some(n.clone()), Uuid::default()));
                }
                ok
            });
            r.topics.retain(|t| {
                let name = t.name.clone().or_else(|| topic_name(broker, &t.topic_id));
                // An unknown id is the handler's UNKNOWN_TOPIC_ID.
                let ok = name
                    .as_deref()
                    .is_none_or(|n| s.allowed(op::DELETE, resource::TOPIC, n));
                if !ok {
                    denied_names.push((t.name.clone(), t.topic_id));
                }
                ok
            });
            patch(RequestBody::DeleteTopics(r), move |resp| {
                if let ResponseBody::DeleteTopics(resp) = resp {
                    for (name, topic_id) in denied_names {
                        resp.responses
                            .push(m::delete_topics_response::DeletableTopicResult {
                                name,
                                topic_id,
                                error_code: TOPIC_DENIED.0,
                                error_message: msg(TOPIC_DENIED),
                                ..Default::default()
                            });
                    }
                }
            })
        }
        RequestBody::CreatePartitions(mut r) => {
            let denied = split(
                &mut r.topics,
                |t| &t.name,
                |n| s.allowed(op::ALTER, resource::TOPIC, n),
            );
            patch(RequestBody::CreatePartitions(r), move |resp| {
                if let ResponseBody::CreatePartitions(resp) = resp {
                    for t in denied {
                        resp.results.push(
                            m::create_partitions_response::CreatePartitionsTopicResult {
                                name: t.name,
                                error_code: TOPIC_DENIED.0,
                                error_message: msg(TOPIC_DENIED),
                                ..Default::default()
                            },
                        );
                    }
                }
            })
        }
        RequestBody::DeleteRecords(mut r) => {
            let denied = split(
                &mut r.topics,
                |t| &t.name,
                |n| s.allowed(op::DELETE, resource::TOPIC, n),
            );
            patch(RequestBody::DeleteRecords(r), move |resp| {
                if let ResponseBody::DeleteRecords(resp) = resp {
                    for t in denied {
                        resp.topics
                            .push(m::delete_records_response::DeleteRecordsTopicResult {
                                name: t.name,
                                partitions: t
                                    .partitions
                                    .iter()
                                    .map(|p| {
                                        m::delete_records_response::DeleteRecordsPartitionResult {
                                            partition_index: p.partition_index,
                                            low_watermark: -1,
                                            error_code: TOPIC_DENIED.0,
                                            ..Default::default()
                                        }
                                    })
                                    .collect(),
                                ..Default::default()
                            });
                    }
                }
            })
        }
        RequestBody::DescribeConfigs(mut r) => {
            let mut denied = Vec::new();
            r.resources.retain(|x| {
                match config_check(&s, op::DESCRIBE_CONFIGS, x.resource_type, &x.resource_name) {
                    None => true,
                    Some(code) => {
                        denied.push((x.resource_type, x.resource_name.clone(), code));
                        false
                    }
                }
            });
            patch(RequestBody::DescribeConfigs(r), move |resp| {
                if let ResponseBody::DescribeConfigs(resp) = resp {
                    for (resource_type, resource_name, code) in denied {
                        resp.results
                            .push(m::describe_configs_response::DescribeConfigsResult {
                                error_code: code.0,
                                error_message: msg(code),
                                resource_type,
                                resource_name,
                                ..Default::default()
                            });
                    }
                }
            })
        }
        RequestBody::AlterConfigs(mut r) => {
            let mut denied = Vec::new();
            r.resources.retain(|x| {
                match config_check(&s, op::ALTER_CONFIGS, x.resource_type, &x.resource_name) {
                    None => true,
                    Some(code) => {
                        denied.push((x.resource_type, x.resource_name.clone(), code));
                        false
                    }
                }
            });
            patch(RequestBody::AlterConfigs(r), move |resp| {
                if let ResponseBody::AlterConfigs(resp) = resp {
                    for (resource_type, resource_name, code) in denied {
                        resp.responses.push(
                            m::alter_configs_response::AlterConfigsResourceResponse {
                                error_code: code.0,
                                error_message: msg(code),
                                resource_type,
                                resource_name,
                                ..Default::default()
                            },
                        );
                    }
                }
            })
        }
        RequestBody::IncrementalAlterConfigs(mut r) => {
            let mut denied = Vec::new();
            r.resources.retain(|x| {
                match config_check(&s, op::ALTER_CONFIGS, x.resource_type, &x.resource_name) {
                    None => true,
                    Some(code) => {
                        denied.push((x.resource_type, x.resource_name.clone(), code));
                        false
                    }
                }
            });
            patch(RequestBody::IncrementalAlterConfigs(r), move |resp| {
                if let ResponseBody::IncrementalAlterConfigs(resp) = resp {
                    for (resource_type, resource_name, code) in denied {
                        resp.responses.push(
                            m::incremental_alter_configs_response::AlterConfigsResourceResponse {
                                error_code: code.0,
                                error_message: msg(code),
                                resource_type,
                                resource_name,
                                ..Default::default()
                            },
                        );
                    }
                }
            })
        }
        RequestBody::InitProducerId(r) => {
            let denied = match &r.transactional_id {
                Some(id) => {
                    (!s.allowed(op::WRITE, resource::TRANSACTIONAL_ID, id)).then_some(TXN_DENIED)
                }
                None => {
                    let ok = s.check(
                        op::IDEMPOTENT_WRITE,
                        resource::CLUSTER,
                        crate::authz::CLUSTER_NAME,
                    ) || s.any_of_type(op::WRITE, resource::TOPIC);
                    if !ok {
                        s.denied(
                            op::IDEMPOTENT_WRITE,
                            resource::CLUSTER,
                            crate::authz::CLUSTER_NAME,
                        );
                    }
                    (!ok).then_some(CLUSTER_DENIED)
                }
            };
            match denied {
                Some(code) => Gate::Deny(ResponseBody::InitProducerId(
                    m::init_producer_id_response::InitProducerIdResponse {
                        error_code: code.0,
                        producer_id: -1,
                        producer_epoch: -1,
                        ..Default::default()
                    },
                )),
                None => pass(RequestBody::InitProducerId(r)),
            }
        }
        // Groups.
        RequestBody::JoinGroup(r) => {
            if s.allowed(op::READ, resource::GROUP, &r.group_id) {
                pass(RequestBody::JoinGroup(r))
            } else {
                Gate::Deny(ResponseBody::JoinGroup(
                    m::join_group_response::JoinGroupResponse {
                        error_code: GROUP_DENIED.0,
                        generation_id: -1,
                        member_id: r.member_id,
                        ..Default::default()
                    },
                ))
            }
        }
        RequestBody::SyncGroup(r) => {
            if s.allowed(op::READ, resource::GROUP, &r.group_id) {
                pass(RequestBody::SyncGroup(r))
            } else {
                Gate::Deny(ResponseBody::SyncGroup(
                    m::sync_group_response::SyncGroupResponse {
                        error_code: GROUP_DENIED.0,
                        ..Default::default()
                    },
                ))
            }
        }
        RequestBody::Heartbeat(r) => {
            if s.allowed(op::READ, resource::GROUP, &r.group_id) {
                pass(RequestBody::Heartbeat(r))
            } else {
                Gate::Deny(ResponseBody::Heartbeat(
                    m::heartbeat_response::HeartbeatResponse {
                        error_code: GROUP_DENIED.0,
                        ..Default::default()
                    },
                ))
            }
        }
        RequestBody::LeaveGroup(r) => {
            if s.allowed(op::READ, resource::GROUP, &r.group_id) {
                pass(RequestBody::LeaveGroup(r))
            } else {
                Gate::Deny(ResponseBody::LeaveGroup(
                    m::leave_group_response::LeaveGroupResponse {
                        error_code: GROUP_DENIED.0,
                        ..Default::default()
                    },
                ))
            }
        }
        RequestBody::ConsumerGroupHeartbeat(r) => {
            let denied = |code: ErrorCode, message: Option<String>| {
                Gate::Deny(ResponseBody::ConsumerGroupHeartbeat(
                    m::consumer_group_heartbeat_response::ConsumerGroupHeartbeatResponse {
                        error_code: code.0,
                        error_message: message,
                        ..Default::default()
                    },
                ))
            };
            if !s.allowed(op::READ, resource::GROUP, &r.group_id) {
                return denied(GROUP_DENIED, msg(GROUP_DENIED));
            }
            // KIP-848 (KAFKA-18813): every topic subscribed by name must be describable
            // (known or not); a regex only resolves to describable topics (the handler).
            let mut hidden: Vec<&String> = r
                .subscribed_topic_names
                .iter()
                .flatten()
                .filter(|t| !s.allowed(op::DESCRIBE, resource::TOPIC, t))
                .collect();
            if !hidden.is_empty() {
                hidden.sort();
                hidden.dedup();
                let names: Vec<&str> = hidden.iter().map(|t| t.as_str()).collect();
                return denied(
                    TOPIC_DENIED,
                    Some(format!(
                        "Not authorized to describe topics: [{}]",
                        names.join(", ")
                    )),
                );
            }
            pass(RequestBody::ConsumerGroupHeartbeat(r))
        }
        RequestBody::OffsetCommit(mut r) => {
            if !s.allowed(op::READ, resource::GROUP, &r.group_id) {
                return Gate::Deny(ResponseBody::OffsetCommit(offset_commit_errors(
                    std::mem::take(&mut r.topics),
                    GROUP_DENIED,
                )));
            }
            let denied = split(
                &mut r.topics,
                |t| &t.name,
                |n| s.allowed(op::READ, resource::TOPIC, n),
            );
            patch(RequestBody::OffsetCommit(r), move |resp| {
                if let ResponseBody::OffsetCommit(resp) = resp {
                    resp.topics
                        .extend(offset_commit_errors(denied, TOPIC_DENIED).topics);
                }
            })
        }
        RequestBody::OffsetFetch(r) => offset_fetch(s, r),
        RequestBody::OffsetDelete(mut r) => {
            if !s.allowed(op::DELETE, resource::GROUP, &r.group_id) {
                return Gate::Deny(ResponseBody::OffsetDelete(
                    m::offset_delete_response::OffsetDeleteResponse {
                        error_code: GROUP_DENIED.0,
                        ..Default::default()
                    },
                ));
            }
            let denied = split(
                &mut r.topics,
                |t| &t.name,
                |n| s.allowed(op::READ, resource::TOPIC, n),
            );
            patch(RequestBody::OffsetDelete(r), move |resp| {
                if let ResponseBody::OffsetDelete(resp) = resp {
                    for t in denied {
                        resp.topics
                            .push(m::offset_delete_response::OffsetDeleteResponseTopic {
                                name: t.name,
                                partitions: t
                                    .partitions
                                    .iter()
                                    .map(|p| {
                                        m::offset_delete_response::OffsetDeleteResponsePartition {
                                            partition_index: p.partition_index,
                                            error_code: TOPIC_DENIED.0,
                                            ..Default::default()
                                        }
                                    })
                                    .collect(),
                                ..Default::default()
                            });
                    }
                }
            })
        }
        RequestBody::FindCoordinator(r) => {
            let (rtype, code) = if r.key_type == 1 {
                (resource::TRANSACTIONAL_ID, TXN_DENIED)
            } else {
                (resource::GROUP, GROUP_DENIED)
            };
            let mut keys: Vec<String> = r.coordinator_keys.clone();
            if keys.is_empty() {
                keys.push(r.key.clone());
            }
            let denied: BTreeSet<String> = keys
                .into_iter()
                .filter(|k| !s.allowed(op::DESCRIBE, rtype, k))
                .collect();
            if denied.is_empty() {
                return pass(RequestBody::FindCoordinator(r));
            }
            patch(RequestBody::FindCoordinator(r), move |resp| {
                if let ResponseBody::FindCoordinator(resp) = resp {
                    if resp.coordinators.is_empty() {
                        resp.error_code = code.0;
                        resp.error_message = msg(code);
                        resp.node_id = -1;
                        resp.host = String::new();
                        resp.port = -1;
                    }
                    for c in resp.coordinators.iter_mut() {
                        if denied.contains(&c.key) {
                            c.error_code = code.0;
                            c.error_message = msg(code);
                            c.node_id = -1;
                            c.host = String::new();
                            c.port = -1;
                        }
                    }
                }
            })
        }
        RequestBody::DescribeGroups(r) => {
            let denied: BTreeSet<String> = r
                .groups
                .iter()
                .filter(|g| !s.allowed(op::DESCRIBE, resource::GROUP, g))
                .cloned()
                .collect();
            patch(RequestBody::DescribeGroups(r), move |resp| {
                if let ResponseBody::DescribeGroups(resp) = resp {
                    for g in resp.groups.iter_mut() {
                        if denied.contains(&g.group_id) {
                            *g = m::describe_groups_response::DescribedGroup {
                                error_code: GROUP_DENIED.0,
                                group_id: std::mem::take(&mut g.group_id),
                                authorized_operations: i32::MIN,
                                ..Default::default()
                            };
                        }
                    }
                }
            })
        }
        RequestBody::ListGroups(r) => {
            if s.check(op::DESCRIBE, resource::CLUSTER, crate::authz::CLUSTER_NAME) {
                return pass(RequestBody::ListGroups(r));
            }
            patch(RequestBody::ListGroups(r), move |resp| {
                if let ResponseBody::ListGroups(resp) = resp {
                    resp.groups
                        .retain(|g| s.check(op::DESCRIBE, resource::GROUP, &g.group_id));
                }
            })
        }
        RequestBody::DeleteGroups(mut r) => {
            let mut denied = Vec::new();
            r.groups_names.retain(|g| {
                let ok = s.allowed(op::DELETE, resource::GROUP, g);
                if !ok {
                    denied.push(g.clone());
                }
                ok
            });
            patch(RequestBody::DeleteGroups(r), move |resp| {
                if let ResponseBody::DeleteGroups(resp) = resp {
                    for group_id in denied {
                        resp.results
                            .push(m::delete_groups_response::DeletableGroupResult {
                                group_id,
                                error_code: GROUP_DENIED.0,
                                ..Default::default()
                            });
                    }
                }
            })
        }
        // Transactions.
        RequestBody::AddPartitionsToTxn(r) => {
            // v4+ (a broker verifying for its producers) needs CLUSTER_ACTION; v0-3 name one
            // transaction of the client's own.
            if v >= 4 {
                if s.cluster(op::CLUSTER_ACTION) {
                    return pass(RequestBody::AddPartitionsToTxn(r));
                }
                return Gate::Deny(ResponseBody::AddPartitionsToTxn(
                    m::add_partitions_to_txn_response::AddPartitionsToTxnResponse {
                        error_code: CLUSTER_DENIED.0,
                        ..Default::default()
                    },
                ));
            }
            let Some(t) = r.transactions.first() else {
                return pass(RequestBody::AddPartitionsToTxn(r));
            };
            let txn_ok = s.allowed(op::WRITE, resource::TRANSACTIONAL_ID, &t.transactional_id);
            let denied_topics: BTreeSet<String> = t
                .topics
                .iter()
                .filter(|x| !s.allowed(op::WRITE, resource::TOPIC, &x.name))
                .map(|x| x.name.clone())
                .collect();
            if txn_ok && denied_topics.is_empty() {
                return pass(RequestBody::AddPartitionsToTxn(r));
            }
            let t = t.clone();
            let result = m::add_partitions_to_txn_response::AddPartitionsToTxnResult {
                transactional_id: t.transactional_id.clone(),
                topic_results: t
                    .topics
                    .iter()
                    .map(|x| m::add_partitions_to_txn_response::AddPartitionsToTxnTopicResult {
                        name: x.name.clone(),
                        results_by_partition: x
                            .partitions
                            .iter()
                            .map(|p| {
                                let code = if !txn_ok {
                                    TXN_DENIED
                                } else if denied_topics.contains(&x.name) {
                                    TOPIC_DENIED
                                } else {
                                    ErrorCode::OPERATION_NOT_ATTEMPTED
                                };
                                m::add_partitions_to_txn_response::AddPartitionsToTxnPartitionResult {
                                    partition_index: *p,
                                    partition_error_code: code.0,
                                    ..Default::default()
                                }
                            })
                            .collect(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            };
            Gate::Deny(ResponseBody::AddPartitionsToTxn(
                m::add_partitions_to_txn_response::AddPartitionsToTxnResponse {
                    results_by_transaction: vec![result],
                    ..Default::default()
                },
            ))
        }
        RequestBody::AddOffsetsToTxn(r) => {
            let code = if !s.allowed(op::WRITE, resource::TRANSACTIONAL_ID, &r.transactional_id) {
                Some(TXN_DENIED)
            } else if !s.allowed(op::READ, resource::GROUP, &r.group_id) {
                Some(GROUP_DENIED)
            } else {
                None
            };
            match code {
                None => pass(RequestBody::AddOffsetsToTxn(r)),
                Some(code) => Gate::Deny(ResponseBody::AddOffsetsToTxn(
                    m::add_offsets_to_txn_response::AddOffsetsToTxnResponse {
                        error_code: code.0,
                        ..Default::default()
                    },
                )),
            }
        }
        RequestBody::EndTxn(r) => {
            if s.allowed(op::WRITE, resource::TRANSACTIONAL_ID, &r.transactional_id) {
                pass(RequestBody::EndTxn(r))
            } else {
                Gate::Deny(ResponseBody::EndTxn(m::end_txn_response::EndTxnResponse {
                    error_code: TXN_DENIED.0,
                    producer_id: -1,
                    producer_epoch: -1,
                    ..Default::default()
                }))
            }
        }
        RequestBody::TxnOffsetCommit(mut r) => {
            let code = if !s.allowed(op::WRITE, resource::TRANSACTIONAL_ID, &r.transactional_id) {
                Some(TXN_DENIED)
            } else if !s.allowed(op::READ, resource::GROUP, &r.group_id) {
                Some(GROUP_DENIED)
            } else {
                None
            };
            if let Some(code) = code {
                return Gate::Deny(ResponseBody::TxnOffsetCommit(txn_commit_errors(
                    std::mem::take(&mut r.topics),
                    code,
                )));
            }
            let denied = split(
                &mut r.topics,
                |t| &t.name,
                |n| s.allowed(op::READ, resource::TOPIC, n),
            );
            patch(RequestBody::TxnOffsetCommit(r), move |resp| {
                if let ResponseBody::TxnOffsetCommit(resp) = resp {
                    resp.topics
                        .extend(txn_commit_errors(denied, TOPIC_DENIED).topics);
                }
            })
        }
        RequestBody::DescribeTransactions(r) => {
            let denied: BTreeSet<String> = r
                .transactional_ids
                .iter()
                .filter(|t| !s.allowed(op::DESCRIBE, resource::TRANSACTIONAL_ID, t))
                .cloned()
                .collect();
            patch(RequestBody::DescribeTransactions(r), move |resp| {
                if let ResponseBody::DescribeTransactions(resp) = resp {
                    for t in resp.transaction_states.iter_mut() {
                        if denied.contains(&t.transactional_id) {
                            *t = m::describe_transactions_response::TransactionState {
                                error_code: TXN_DENIED.0,
                                transactional_id: std::mem::take(&mut t.transactional_id),
                                producer_id: -1,
                                producer_epoch: -1,
                                ..Default::default()
                            };
                        }
                    }
                }
            })
        }
        RequestBody::ListTransactions(r) => patch(RequestBody::ListTransactions(r), move |resp| {
            if let ResponseBody::ListTransactions(resp) = resp {
                resp.transaction_states.retain(|t| {
                    s.check(
                        op::DESCRIBE,
                        resource::TRANSACTIONAL_ID,
                        &t.transactional_id,
                    )
                });
            }
        }),
        RequestBody::DescribeProducers(mut r) => {
            let denied = split(
                &mut r.topics,
                |t| &t.name,
                |n| s.allowed(op::READ, resource::TOPIC, n),
            );
            patch(RequestBody::DescribeProducers(r), move |resp| {
                if let ResponseBody::DescribeProducers(resp) = resp {
                    for t in denied {
                        resp.topics
                            .push(m::describe_producers_response::TopicResponse {
                                name: t.name,
                                partitions: t
                                    .partition_indexes
                                    .iter()
                                    .map(|p| m::describe_producers_response::PartitionResponse {
                                        partition_index: *p,
                                        error_code: TOPIC_DENIED.0,
                                        error_message: msg(TOPIC_DENIED),
                                        ..Default::default()
                                    })
                                    .collect(),
                                ..Default::default()
                            });
                    }
                }
            })
        }
        RequestBody::DescribeTopicPartitions(r) => {
            // Every topic: those the caller may not describe are left out; named ones are
            // answered as denied (logged).
            let all = r.topics.is_empty();
            patch(RequestBody::DescribeTopicPartitions(r), move |resp| {
                if let ResponseBody::DescribeTopicPartitions(resp) = resp {
                    if all {
                        resp.topics.retain(|t| {
                            s.check(
                                op::DESCRIBE,
                                resource::TOPIC,
                                t.name.as_deref().unwrap_or(""),
                            )
                        });
                        return;
                    }
                    for t in resp.topics.iter_mut() {
                        let name = t.name.clone().unwrap_or_default();
                        if !s.allowed(op::DESCRIBE, resource::TOPIC, &name) {
                            t.error_code = TOPIC_DENIED.0;
                            t.topic_id = Uuid::default();
                            t.is_internal = false;
                            t.partitions.clear();
                        }
                    }
                }
            })
        }
        RequestBody::ConsumerGroupDescribe(r) => {
            let denied: BTreeSet<String> = r
                .group_ids
                .iter()
                .filter(|g| !s.allowed(op::DESCRIBE, resource::GROUP, g))
                .cloned()
                .collect();
            patch(RequestBody::ConsumerGroupDescribe(r), move |resp| {
                if let ResponseBody::ConsumerGroupDescribe(resp) = resp {
                    for g in resp.groups.iter_mut() {
                        let code = if denied.contains(&g.group_id) {
                            GROUP_DENIED
                        } else if g.error_code == 0 && !group_topics_describable(&s, g) {
                            // KAFKA-18813: a group whose members name a topic the caller
                            // may not describe is not described.
                            TOPIC_DENIED
                        } else {
                            continue;
                        };
                        *g = m::consumer_group_describe_response::DescribedGroup {
                            error_code: code.0,
                            error_message: Some(if code == TOPIC_DENIED {
                                "The group has described topic(s) that the client is not \
                                 authorized to describe."
                                    .into()
                            } else {
                                "Group authorization failed.".into()
                            }),
                            group_id: std::mem::take(&mut g.group_id),
                            authorized_operations: i32::MIN,
                            ..Default::default()
                        };
                    }
                }
            })
        }
        // Cluster operations.
        body @ (RequestBody::ElectLeaders(_)
        | RequestBody::AlterPartitionReassignments(_)
        | RequestBody::AddRaftVoter(_)
        | RequestBody::RemoveRaftVoter(_)
        | RequestBody::AlterUserScramCredentials(_)) => cluster_op(&s, op::ALTER, body),
        body @ (RequestBody::ListPartitionReassignments(_)
        | RequestBody::DescribeQuorum(_)
        | RequestBody::DescribeUserScramCredentials(_)
        | RequestBody::DescribeLogDirs(_)) => cluster_op(&s, op::DESCRIBE, body),
        body @ RequestBody::WriteTxnMarkers(_) => cluster_op(&s, op::CLUSTER_ACTION, body),
        // ApiVersions, SASL, DescribeCluster, the ACL APIs (they check for themselves).
        other => pass(other),
    }
}

/// Whether every topic a described KIP-848 group's members subscribe to or are (to be)
/// assigned is describable by the caller (each denial logged, as Kafka's check does).
fn group_topics_describable(
    s: &Session,
    g: &m::consumer_group_describe_response::DescribedGroup,
) -> bool {
    let mut topics: BTreeSet<&str> = BTreeSet::new();
    for member in &g.members {
        topics.extend(member.subscribed_topic_names.iter().map(String::as_str));
        for a in [&member.assignment, &member.target_assignment] {
            topics.extend(a.topic_partitions.iter().map(|t| t.topic_name.as_str()));
        }
    }
    topics
        .into_iter()
        .filter(|t| !t.is_empty() && !s.allowed(op::DESCRIBE, resource::TOPIC, t))
        .count()
        == 0
}

/// Moves the items `allowed` refuses out of `items`; returns them.
fn split<T>(
    items: &mut Vec<T>,
    name: impl Fn(&T) -> &String,
    mut allowed: impl FnMut(&str) -> bool,
) -> Vec<T> {
    let mut denied = Vec::new();
    let mut kept = Vec::with_capacity(items.len());
    // One decision per name (a topic may appear twice).
    let mut decided: std::collections::HashMap<String, bool> = Default::default();
    for item in items.drain(..) {
        let n = name(&item).clone();
        let ok = *decided.entry(n.clone()).or_insert_with(|| allowed(&n));
        if ok {
            kept.push(item);
        } else {
            denied.push(item);
        }
    }
    *items = kept;
    denied
}

/// The error of a config resource `operation` is refused on, if it is.
fn config_check(s: &Session, operation: i8, resource_type: i8, name: &str) -> Option<ErrorCode> {
    match resource_type {
        // TOPIC
        2 => (!s.allowed(operation, resource::TOPIC, name)).then_some(TOPIC_DENIED),
        // BROKER, BROKER_LOGGER: the cluster.
        4 | 8 => (!s.cluster(operation)).then_some(CLUSTER_DENIED),
        _ => None,
    }
}

fn cluster_op(s: &Session, operation: i8, body: RequestBody) -> Gate {
    if s.cluster(operation) {
        return pass(body);
    }
    let c = CLUSTER_DENIED.0;
    let deny = match body {
        RequestBody::ElectLeaders(_) => ResponseBody::ElectLeaders(
            m::elect_leaders_response::ElectLeadersResponse {
                error_code: c,
                ..Default::default()
            },
        ),
        RequestBody::AlterPartitionReassignments(_) => ResponseBody::AlterPartitionReassignments(
            m::alter_partition_reassignments_response::AlterPartitionReassignmentsResponse {
                error_code: c,
                error_message: msg(CLUSTER_DENIED),
                ..Default::default()
            },
        ),
        RequestBody::ListPartitionReassignments(_) => ResponseBody::ListPartitionReassignments(
            m::list_partition_reassignments_response::ListPartitionReassignmentsResponse {
                error_code: c,
                error_message: msg(CLUSTER_DENIED),
                ..Default::default()
            },
        ),
        RequestBody::AddRaftVoter(_) => ResponseBody::AddRaftVoter(
            m::add_raft_voter_response::AddRaftVoterResponse {
                error_code: c,
                error_message: msg(CLUSTER_DENIED),
                ..Default::default()
            },
        ),
        RequestBody::RemoveRaftVoter(_) => ResponseBody::RemoveRaftVoter(
            m::remove_raft_voter_response::RemoveRaftVoterResponse {
                error_code: c,
                error_message: msg(CLUSTER_DENIED),
                ..Default::default()
            },
        ),
        RequestBody::DescribeQuorum(_) => ResponseBody::DescribeQuorum(
            m::describe_quorum_response::DescribeQuorumResponse {
                error_code: c,
                error_message: msg(CLUSTER_DENIED),
                ..Default::default()
            },
        ),
        RequestBody::DescribeUserScramCredentials(_) => {
            ResponseBody::DescribeUserScramCredentials(
                m::describe_user_scram_credentials_response::DescribeUserScramCredentialsResponse {
                    error_code: c,
                    error_message: msg(CLUSTER_DENIED),
                    ..Default::default()
                },
            )
        }
        RequestBody::AlterUserScramCredentials(r) => ResponseBody::AlterUserScramCredentials(
            m::alter_user_scram_credentials_response::AlterUserScramCredentialsResponse {
                results: {
                    let mut users: Vec<String> = Vec::new();
                    for u in r
                        .deletions
                        .iter()
                        .map(|d| &d.name)
                        .chain(r.upsertions.iter().map(|u| &u.name))
                    {
                        if !users.contains(u) {
                            users.push(u.clone());
                        }
                    }
                    users
                        .into_iter()
                        .map(|user| {
                            m::alter_user_scram_credentials_response::AlterUserScramCredentialsResult {
                                user,
                                error_code: c,
                                error_message: msg(CLUSTER_DENIED),
                                ..Default::default()
                            }
                        })
                        .collect()
                },
                ..Default::default()
            },
        ),
        RequestBody::DescribeLogDirs(_) => ResponseBody::DescribeLogDirs(
            m::describe_log_dirs_response::DescribeLogDirsResponse {
                error_code: c,
                ..Default::default()
            },
        ),
        RequestBody::WriteTxnMarkers(r) => ResponseBody::WriteTxnMarkers(
            m::write_txn_markers_response::WriteTxnMarkersResponse {
                markers: r
                    .markers
                    .iter()
                    .map(|mk| m::write_txn_markers_response::WritableTxnMarkerResult {
                        producer_id: mk.producer_id,
                        topics: mk
                            .topics
                            .iter()
                            .map(|t| m::write_txn_markers_response::WritableTxnMarkerTopicResult {
                                name: t.name.clone(),
                                partitions: t
                                    .partition_indexes
                                    .iter()
                                    .map(|p| {
                                        m::write_txn_markers_response::WritableTxnMarkerPartitionResult {
                                            partition_index: *p,
                                            error_code: c,
                                            ..Default::default()
                                        }
                                    })
                                    .collect(),
                                ..Default::default()
                            })
                            .collect(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            },
        ),
        other => return pass(other),
    };
    Gate::Deny(deny)
}

fn produce(s: &Session, mut r: m::produce_request::ProduceRequest) -> Gate {
    use m::produce_response::{PartitionProduceResponse, TopicProduceResponse};
    let denied_response = |topics: Vec<m::produce_request::TopicProduceData>, code: ErrorCode| {
        topics
            .into_iter()
            .map(|t| TopicProduceResponse {
                name: t.name,
                partition_responses: t
                    .partition_data
                    .iter()
                    .map(|p| PartitionProduceResponse {
                        index: p.index,
                        error_code: code.0,
                        base_offset: -1,
                        log_append_time_ms: -1,
                        log_start_offset: -1,
                        error_message: msg(code),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
            .collect::<Vec<_>>()
    };
    if let Some(id) = &r.transactional_id {
        if !s.allowed(op::WRITE, resource::TRANSACTIONAL_ID, id) {
            if r.acks == 0 {
                // Nothing is answered to acks=0; nothing is written either.
                r.topic_data.clear();
                return pass(RequestBody::Produce(r));
            }
            let topics = std::mem::take(&mut r.topic_data);
            return Gate::Deny(ResponseBody::Produce(
                m::produce_response::ProduceResponse {
                    responses: denied_response(topics, TXN_DENIED),
                    ..Default::default()
                },
            ));
        }
    }
    let denied = split(
        &mut r.topic_data,
        |t| &t.name,
        |n| s.allowed(op::WRITE, resource::TOPIC, n),
    );
    if denied.is_empty() {
        return pass(RequestBody::Produce(r));
    }
    let extra = denied_response(denied, TOPIC_DENIED);
    patch(RequestBody::Produce(r), move |resp| {
        if let ResponseBody::Produce(resp) = resp {
            resp.responses.extend(extra);
        }
    })
}

fn fetch(broker: &Broker, s: &Session, v: i16, mut r: m::fetch_request::FetchRequest) -> Gate {
    use m::fetch_response::{FetchableTopicResponse, PartitionData};
    let follower = r.replica_id >= 0 || (v >= 15 && r.replica_state.replica_id >= 0);
    let denied: Vec<m::fetch_request::FetchTopic> = if follower {
        if s.cluster(op::CLUSTER_ACTION) {
            return pass(RequestBody::Fetch(r));
        }
        std::mem::take(&mut r.topics)
    } else {
        let mut denied = Vec::new();
        let mut kept = Vec::with_capacity(r.topics.len());
        for t in r.topics.drain(..) {
            let name = if t.topic.is_empty() {
                topic_name(broker, &t.topic_id)
            } else {
                Some(t.topic.clone())
            };
            // An unknown topic id is the handler's UNKNOWN_TOPIC_ID.
            match name {
                Some(n) if !s.allowed(op::READ, resource::TOPIC, &n) => denied.push(t),
                _ => kept.push(t),
            }
        }
        r.topics = kept;
        denied
    };
    if denied.is_empty() {
        return pass(RequestBody::Fetch(r));
    }
    let extra: Vec<FetchableTopicResponse> = denied
        .into_iter()
        .map(|t| FetchableTopicResponse {
            topic: t.topic,
            topic_id: t.topic_id,
            partitions: t
                .partitions
                .iter()
                .map(|p| PartitionData {
                    partition_index: p.partition,
                    error_code: TOPIC_DENIED.0,
                    high_watermark: -1,
                    last_stable_offset: -1,
                    log_start_offset: -1,
                    preferred_read_replica: -1,
                    records: Some(bytes::Bytes::new()),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
        .collect();
    patch(RequestBody::Fetch(r), move |resp| {
        if let ResponseBody::Fetch(resp) = resp {
            resp.responses.extend(extra);
        }
    })
}

fn metadata(broker: &Broker, s: Session, mut r: m::metadata_request::MetadataRequest) -> Gate {
    use m::metadata_response::MetadataResponseTopic;
    let mut denied: Vec<MetadataResponseTopic> = Vec::new();
    if let Some(topics) = &mut r.topics {
        let auto_create = r.allow_auto_topic_creation && broker.config.auto_create_topics;
        let cluster_create =
            auto_create && s.check(op::CREATE, resource::CLUSTER, crate::authz::CLUSTER_NAME);
        topics.retain(|t| {
            let Some(name) = &t.name else {
                return true;
            };
            let ok = if !s.allowed(op::DESCRIBE, resource::TOPIC, name) {
                false
            } else if auto_create && broker.topic(name).is_none() {
                cluster_create || s.allowed(op::CREATE, resource::TOPIC, name)
            } else {
                true
            };
            if !ok {
                denied.push(MetadataResponseTopic {
                    error_code: TOPIC_DENIED.0,
                    name: Some(name.clone()),
                    topic_authorized_operations: i32::MIN,
                    ..Default::default()
                });
            }
            ok
        });
    }
    patch(RequestBody::Metadata(r), move |resp| {
        if let ResponseBody::Metadata(resp) = resp {
            // Topics the caller may not describe are left out (a list of all topics, a
            // v0 empty list, a lookup by id); named ones are answered as denied.
            resp.topics.retain(|t| {
                t.name
                    .as_deref()
                    .is_none_or(|n| s.check(op::DESCRIBE, resource::TOPIC, n))
            });
            resp.topics.extend(denied);
        }
    })
}

fn offset_fetch(s: Session, r: m::offset_fetch_request::OffsetFetchRequest) -> Gate {
    // v8+: a list of groups; before, one group.
    if !r.groups.is_empty() {
        let denied_groups: BTreeSet<String> = r
            .groups
            .iter()
            .filter(|g| !s.allowed(op::DESCRIBE, resource::GROUP, &g.group_id))
            .map(|g| g.group_id.clone())
            .collect();
        return patch(RequestBody::OffsetFetch(r), move |resp| {
            if let ResponseBody::OffsetFetch(resp) = resp {
                for g in resp.groups.iter_mut() {
                    if denied_groups.contains(&g.group_id) {
                        g.error_code = GROUP_DENIED.0;
                        g.topics.clear();
                        continue;
                    }
                    g.topics
                        .retain(|t| s.check(op::DESCRIBE, resource::TOPIC, &t.name));
                }
            }
        });
    }
    if !s.allowed(op::DESCRIBE, resource::GROUP, &r.group_id) {
        let topics = r
            .topics
            .as_ref()
            .map(|ts| {
                ts.iter()
                    .map(|t| m::offset_fetch_response::OffsetFetchResponseTopic {
                        name: t.name.clone(),
                        partitions: t
                            .partition_indexes
                            .iter()
                            .map(|p| m::offset_fetch_response::OffsetFetchResponsePartition {
                                partition_index: *p,
                                committed_offset: -1,
                                committed_leader_epoch: -1,
                                error_code: GROUP_DENIED.0,
                                ..Default::default()
                            })
                            .collect(),
                        ..Default::default()
                    })
                    .collect()
            })
            .unwrap_or_default();
        return Gate::Deny(ResponseBody::OffsetFetch(
            m::offset_fetch_response::OffsetFetchResponse {
                error_code: GROUP_DENIED.0,
                topics,
                ..Default::default()
            },
        ));
    }
    let named = r.topics.is_some();
    patch(RequestBody::OffsetFetch(r), move |resp| {
        if let ResponseBody::OffsetFetch(resp) = resp {
            if named {
                for t in resp.topics.iter_mut() {
                    if !s.allowed(op::DESCRIBE, resource::TOPIC, &t.name) {
                        for p in t.partitions.iter_mut() {
                            p.error_code = TOPIC_DENIED.0;
                            p.committed_offset = -1;
                            p.metadata = None;
                        }
                    }
                }
            } else {
                resp.topics
                    .retain(|t| s.check(op::DESCRIBE, resource::TOPIC, &t.name));
            }
        }
    })
}

fn leader_epoch_denied(
    topics: Vec<m::offset_for_leader_epoch_request::OffsetForLeaderTopic>,
) -> m::offset_for_leader_epoch_response::OffsetForLeaderEpochResponse {
    m::offset_for_leader_epoch_response::OffsetForLeaderEpochResponse {
        topics: topics
            .into_iter()
            .map(
                |t| m::offset_for_leader_epoch_response::OffsetForLeaderTopicResult {
                    topic: t.topic,
                    partitions: t
                        .partitions
                        .iter()
                        .map(|p| m::offset_for_leader_epoch_response::EpochEndOffset {
                            error_code: TOPIC_DENIED.0,
                            partition: p.partition,
                            leader_epoch: -1,
                            end_offset: -1,
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                },
            )
            .collect(),
        ..Default::default()
    }
}

fn offset_commit_errors(
    topics: Vec<m::offset_commit_request::OffsetCommitRequestTopic>,
    code: ErrorCode,
) -> m::offset_commit_response::OffsetCommitResponse {
    m::offset_commit_response::OffsetCommitResponse {
        topics: topics
            .into_iter()
            .map(|t| m::offset_commit_response::OffsetCommitResponseTopic {
                name: t.name,
                partitions: t
                    .partitions
                    .iter()
                    .map(
                        |p| m::offset_commit_response::OffsetCommitResponsePartition {
                            partition_index: p.partition_index,
                            error_code: code.0,
                            ..Default::default()
                        },
                    )
                    .collect(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn txn_commit_errors(
    topics: Vec<m::txn_offset_commit_request::TxnOffsetCommitRequestTopic>,
    code: ErrorCode,
) -> m::txn_offset_commit_response::TxnOffsetCommitResponse {
    m::txn_offset_commit_response::TxnOffsetCommitResponse {
        topics: topics
            .into_iter()
            .map(
                |t| m::txn_offset_commit_response::TxnOffsetCommitResponseTopic {
                    name: t.name,
                    partitions: t
                        .partitions
                        .iter()
                        .map(
                            |p| m::txn_offset_commit_response::TxnOffsetCommitResponsePartition {
                                partition_index: p.partition_index,
                                error_code: code.0,
                                ..Default::default()
                            },
                        )
                        .collect(),
                    ..Default::default()
                },
            )
            .collect(),
        ..Default::default()
    }
}

/// The authorized-operations fields Kafka fills (KIP-430), with or without the authorizer:
/// Metadata's topic (v8+) and cluster (v8–10) ones and DescribeCluster's when asked for,
/// DescribeGroups' (v3+) and ConsumerGroupDescribe's when asked for, DescribeTopicPartitions'
/// always. Items answered with an authorization error (or, for groups, any error) keep
/// Kafka's "not given" value, `i32::MIN`. Run after the gate's own patch.
pub fn authorized_operations(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    body: &RequestBody,
) -> Option<Patch> {
    let v = ctx.api_version;
    let (topics, cluster) = match body {
        RequestBody::Metadata(r) if v >= 8 => (
            r.include_topic_authorized_operations,
            v <= 10 && r.include_cluster_authorized_operations,
        ),
        RequestBody::DescribeCluster(r) => (false, r.include_cluster_authorized_operations),
        RequestBody::DescribeGroups(r) => (v >= 3 && r.include_authorized_operations, false),
        RequestBody::ConsumerGroupDescribe(r) => (r.include_authorized_operations, false),
        RequestBody::DescribeTopicPartitions(_) => (true, false),
        _ => return None,
    };
    if !topics && !cluster {
        return None;
    }
    let s = broker.authz_session(ctx);
    // The cluster's set needs DESCRIBE on it (a denial, logged); else 0.
    let cluster_ops = move |s: &Session| {
        if s.cluster(op::DESCRIBE) {
            s.authorized_operations(resource::CLUSTER, crate::authz::CLUSTER_NAME)
        } else {
            0
        }
    };
    Some(Box::new(move |resp: &mut ResponseBody| match resp {
        ResponseBody::Metadata(r) => {
            if cluster {
                r.cluster_authorized_operations = cluster_ops(&s);
            }
            if topics {
                for t in r.topics.iter_mut() {
                    let Some(name) = t.name.as_deref() else {
                        continue;
                    };
                    if t.error_code != TOPIC_DENIED.0
                        && t.error_code != ErrorCode::UNKNOWN_TOPIC_ID.0
                    {
                        t.topic_authorized_operations =
                            s.authorized_operations(resource::TOPIC, name);
                    }
                }
            }
        }
        ResponseBody::DescribeCluster(r) if r.error_code == 0 => {
            r.cluster_authorized_operations = cluster_ops(&s);
        }
        ResponseBody::DescribeGroups(r) => {
            for g in r.groups.iter_mut().filter(|g| g.error_code == 0) {
                g.authorized_operations = s.authorized_operations(resource::GROUP, &g.group_id);
            }
        }
        ResponseBody::ConsumerGroupDescribe(r) => {
            for g in r.groups.iter_mut().filter(|g| g.error_code == 0) {
                g.authorized_operations = s.authorized_operations(resource::GROUP, &g.group_id);
            }
        }
        ResponseBody::DescribeTopicPartitions(r) => {
            for t in r
                .topics
                .iter_mut()
                .filter(|t| t.error_code != TOPIC_DENIED.0)
            {
                if let Some(name) = t.name.as_deref() {
                    t.topic_authorized_operations = s.authorized_operations(resource::TOPIC, name);
                }
            }
        }
        _ => {}
    }))
}
