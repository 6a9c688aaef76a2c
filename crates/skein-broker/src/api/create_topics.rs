//! CreateTopics: validation, validate-only, and the created topic's configs (v5+). The
//! request is answered within its `timeout_ms` (REQUEST_TIMED_OUT for the topics the
//! controller could not commit in time).

use std::collections::HashSet;
use std::sync::Arc;

use skein_protocol::messages::create_topics_request::CreateTopicsRequest;
use skein_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult, CreateTopicsResponse,
};

use crate::broker::Broker;
use crate::config::{TopicConfig, TOPIC_CONFIGS};
use crate::controller_link::{request_deadline, time_left};
use crate::error::{ApiError, ErrorCode};

pub fn handle(
    broker: &Arc<Broker>,
    version: i16,
    req: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let mut resp = CreateTopicsResponse::default();
    let mut seen = HashSet::new();
    let duplicates: HashSet<String> = req
        .topics
        .iter()
        .filter(|t| !seen.insert(t.name.clone()))
        .map(|t| t.name.clone())
        .collect();
    let mut answered = HashSet::new();
    // One deadline for the whole request: it is answered within its timeout (at most the
    // 30 s call limit), however many topics it names.
    let deadline = request_deadline(req.timeout_ms);
    for t in req.topics {
        // A name given more than once gets one (error) result, as in Kafka.
        if duplicates.contains(&t.name) && !answered.insert(t.name.clone()) {
            continue;
        }
        let mut result = CreatableTopicResult {
            name: t.name.clone(),
            num_partitions: -1,
            replication_factor: -1,
            error_message: None,
            ..Default::default()
        };
        let outcome = (|| -> Result<(), ApiError> {
            if duplicates.contains(&t.name) {
                return Err(ApiError::new(
                    ErrorCode::INVALID_REQUEST,
                    format!("Create topics request from client contains multiple entries for the topic {}", t.name),
                ));
            }
            let configs: Vec<(String, Option<String>)> = t
                .configs
                .iter()
                .map(|c| (c.name.clone(), c.value.clone()))
                .collect();
            let (mut partitions, mut replication_factor, overrides) = broker.check_new_topic(
                &t.name,
                t.num_partitions,
                t.replication_factor,
                &configs,
            )?;
            if !t.assignments.is_empty() {
                if t.num_partitions != -1 || t.replication_factor != -1 {
                    return Err(ApiError::new(
                        ErrorCode::INVALID_REQUEST,
                        "Both numPartitions or replicationFactor and replicasAssignments were set. Both cannot be used at the same time.",
                    ));
                }
                let mut indexes: Vec<i32> =
                    t.assignments.iter().map(|a| a.partition_index).collect();
                indexes.sort_unstable();
                if indexes.iter().enumerate().any(|(i, p)| *p != i as i32) {
                    return Err(ApiError::new(
                        ErrorCode::INVALID_REPLICA_ASSIGNMENT,
                        format!("Partitions must be numbered from 0 without gaps: {indexes:?}."),
                    ));
                }
                replication_factor = t.assignments[0].broker_ids.len() as i16;
                partitions = t.assignments.len() as i32;
            }
            if !req.validate_only {
                let timeout = time_left(deadline)?;
                let mut sorted: Vec<_> = t.assignments.iter().collect();
                sorted.sort_by_key(|a| a.partition_index);
                let assignments: Vec<Vec<i32>> =
                    sorted.iter().map(|a| a.broker_ids.clone()).collect();
                broker.create_topic_within(
                    &t.name,
                    (partitions, replication_factor),
                    assignments,
                    overrides.clone(),
                    timeout,
                )?;
            }
            result.num_partitions = partitions;
            result.replication_factor = replication_factor;
            if let Some(topic) = broker.topic(&t.name) {
                result.topic_id = topic.id;
            }
            let tc = TopicConfig {
                overrides: overrides.into_iter().collect(),
            };
            result.configs = Some(
                TOPIC_CONFIGS
                    .iter()
                    .map(|d| {
                        let (value, source) = tc.value(&broker.config, d);
                        CreatableTopicConfigs {
                            name: d.name.to_string(),
                            value: Some(value),
                            read_only: false,
                            config_source: source as i8,
                            is_sensitive: false,
                            ..Default::default()
                        }
                    })
                    .collect(),
            );
            Ok(())
        })();
        if let Err(e) = outcome {
            result.error_code = e.code.code();
            result.error_message = Some(e.message);
            result.configs = None;
        }
        let _ = version;
        resp.topics.push(result);
    }
    resp
}
