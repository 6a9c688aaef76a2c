//! DeleteTopics, by name (all versions) or by topic id (v6+).

use std::sync::Arc;

use skein_protocol::messages::delete_topics_request::DeleteTopicsRequest;
use skein_protocol::messages::delete_topics_response::{
    DeletableTopicResult, DeleteTopicsResponse,
};
use skein_protocol::Uuid;

use crate::broker::Broker;
use crate::error::ErrorCode;

pub fn handle(
    broker: &Arc<Broker>,
    version: i16,
    req: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    let req_timeout_ms = req.timeout_ms;
    let targets: Vec<(Option<String>, Uuid)> = if version >= 6 {
        req.topics
            .into_iter()
            .map(|t| (t.name, t.topic_id))
            .collect()
    } else {
        req.topic_names
            .into_iter()
            .map(|n| (Some(n), Uuid::default()))
            .collect()
    };
    // Answered within the request's timeout (at least a second), never later.
    let timeout = std::time::Duration::from_millis(req_timeout_ms.max(1000) as u64);
    let mut resp = DeleteTopicsResponse::default();
    for (name, id) in targets {
        let mut result = DeletableTopicResult {
            name: name.clone(),
            topic_id: id,
            ..Default::default()
        };
        let topic = match &name {
            Some(n) => broker.topic(n),
            None => broker.topic_by_id(&id),
        };
        match topic {
            None => {
                let code = if name.is_none() {
                    ErrorCode::UNKNOWN_TOPIC_ID
                } else {
                    ErrorCode::UNKNOWN_TOPIC_OR_PARTITION
                };
                result.error_code = code.code();
                result.error_message = Some("This server does not host this topic.".into());
            }
            Some(_) if !broker.config.delete_topic_enable => {
                result.error_code = ErrorCode::POLICY_VIOLATION.code();
                result.error_message =
                    Some("Topic deletion is disabled (delete.topic.enable=false).".into());
            }
            Some(topic) => {
                result.name = Some(topic.name.clone());
                result.topic_id = topic.id;
                if let Err(e) = broker.delete_topic(&topic, timeout) {
                    result.error_code = e.code.code();
                    result.error_message = Some(e.message);
                }
            }
        }
        resp.responses.push(result);
    }
    resp
}
