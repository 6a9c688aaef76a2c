//! ConsumerGroupHeartbeat and ConsumerGroupDescribe: the KIP-848 consumer protocol, with
//! server-side assignment and incremental reconciliation.

use std::sync::Arc;

use skein_group::{ConsumerHeartbeat, TopicPartitions, TopicView};
use skein_protocol::messages::consumer_group_describe_request::ConsumerGroupDescribeRequest;
use skein_protocol::messages::consumer_group_describe_response::{
    Assignment as DescribedAssignment, ConsumerGroupDescribeResponse, DescribedGroup, Member,
    TopicPartitions as DescribedTopicPartitions,
};
use skein_protocol::messages::consumer_group_heartbeat_request::ConsumerGroupHeartbeatRequest;
use skein_protocol::messages::consumer_group_heartbeat_response::{
    Assignment, ConsumerGroupHeartbeatResponse, TopicPartitions as HeartbeatTopicPartitions,
};
use skein_protocol::{ResponseBody, Uuid};

use super::{Reply, RequestContext};
use crate::authz::{op, resource, Session};
use crate::broker::Broker;

pub fn heartbeat(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: ConsumerGroupHeartbeatRequest,
) -> Reply {
    if let Some(code) = broker.coordinator_error(&req.group_id) {
        return Reply::Now(ResponseBody::ConsumerGroupHeartbeat(
            ConsumerGroupHeartbeatResponse {
                error_code: code.0,
                error_message: Some("This broker does not coordinate the group.".into()),
                ..Default::default()
            },
        ));
    }
    let hb = ConsumerHeartbeat {
        group_id: req.group_id,
        member_id: req.member_id,
        member_epoch: req.member_epoch,
        instance_id: req.instance_id,
        rack_id: req.rack_id,
        rebalance_timeout_ms: req.rebalance_timeout_ms,
        subscribed_topic_names: req.subscribed_topic_names,
        subscribed_topic_regex: req.subscribed_topic_regex,
        server_assignor: req.server_assignor,
        topic_partitions: req.topic_partitions.map(|tps| {
            tps.into_iter()
                .map(|tp| (tp.topic_id.0, tp.partitions))
                .collect::<TopicPartitions>()
        }),
        client_id: ctx.client_id.clone().unwrap_or_default(),
        client_host: ctx.client_host.clone(),
    };
    // With the authorizer on, regexes resolve only to topics the caller may describe.
    let session = broker.authz.enabled().then(|| broker.authz_session(ctx));
    let (result, persisted) = broker.group_op(|c, now, topics| match &session {
        Some(session) => c.consumer_heartbeat(now, hb, &Describable { topics, session }),
        None => c.consumer_heartbeat(now, hb, topics),
    });
    Reply::Later(Box::pin(async move {
        persisted.await;
        ResponseBody::ConsumerGroupHeartbeat(ConsumerGroupHeartbeatResponse {
            error_code: result.error.0,
            error_message: result.error_message,
            member_id: Some(result.member_id),
            member_epoch: result.member_epoch,
            heartbeat_interval_ms: result.heartbeat_interval_ms,
            assignment: result.assignment.map(|tps| Assignment {
                topic_partitions: tps
                    .into_iter()
                    .map(|(id, partitions)| HeartbeatTopicPartitions {
                        topic_id: Uuid(id),
                        partitions,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        })
    }))
}

/// The broker's topics, regexes matching only those the caller may describe.
struct Describable<'a> {
    topics: &'a dyn TopicView,
    session: &'a Session,
}

impl TopicView for Describable<'_> {
    fn topics(&self) -> Vec<(String, skein_group::TopicId, i32)> {
        self.topics.topics()
    }

    fn regex_may_match(&self, topic: &str) -> bool {
        self.session.check(op::DESCRIBE, resource::TOPIC, topic)
    }
}

fn described(broker: &Broker, tps: TopicPartitions) -> DescribedAssignment {
    DescribedAssignment {
        topic_partitions: tps
            .into_iter()
            .map(|(id, partitions)| DescribedTopicPartitions {
                topic_id: Uuid(id),
                topic_name: broker
                    .topic_by_id(&Uuid(id))
                    .map(|t| t.name.clone())
                    .unwrap_or_default(),
                partitions,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

pub fn describe(
    broker: &Arc<Broker>,
    req: ConsumerGroupDescribeRequest,
) -> ConsumerGroupDescribeResponse {
    let groups = req
        .group_ids
        .into_iter()
        .map(|id| {
            if let Some(code) = broker.coordinator_error(&id) {
                return DescribedGroup {
                    error_code: code.0,
                    group_id: id,
                    authorized_operations: i32::MIN,
                    ..Default::default()
                };
            }
            let ((d, _), _done) = broker.group_op(|c, _, topics| {
                ((c.describe_consumer_group(&id, topics), ()), Vec::new())
            });
            DescribedGroup {
                error_code: d.error.0,
                error_message: None,
                group_id: d.group_id,
                group_state: d.state,
                group_epoch: d.group_epoch,
                assignment_epoch: d.assignment_epoch,
                assignor_name: d.assignor_name,
                members: d
                    .members
                    .into_iter()
                    .map(|m| Member {
                        member_id: m.member_id,
                        instance_id: m.instance_id,
                        rack_id: m.rack_id,
                        member_epoch: m.member_epoch,
                        client_id: m.client_id,
                        client_host: m.client_host,
                        subscribed_topic_names: m.subscribed_topic_names,
                        subscribed_topic_regex: m.subscribed_topic_regex,
                        assignment: described(broker, m.assignment),
                        target_assignment: described(broker, m.target_assignment),
                        ..Default::default()
                    })
                    .collect(),
                authorized_operations: i32::MIN,
                ..Default::default()
            }
        })
        .collect();
    ConsumerGroupDescribeResponse {
        groups,
        ..Default::default()
    }
}
