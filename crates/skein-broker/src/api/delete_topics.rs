//! DeleteTopics, by name (all versions) or by topic id (v6+), answered within the request's
//! `timeout_ms` (REQUEST_TIMED_OUT for the topics the controller could not commit in time).

use std::sync::Arc;

use skein_protocol::messages::delete_topics_request::DeleteTopicsRequest;
use skein_protocol::messages::delete_topics_response::{
    DeletableTopicResult, DeleteTopicsResponse,
};
use skein_protocol::Uuid;

use crate::broker::Broker;
use crate::controller_link::{request_deadline, time_left};
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
    // One deadline for the whole request: it is answered within its timeout (at most the
    // 30 s call limit), however many topics it names.
    let deadline = request_deadline(req_timeout_ms);
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
                let deleted = time_left(deadline).and_then(|t| broker.delete_topic(&topic, t));
                if let Err(e) = deleted {
                    result.error_code = e.code.code();
                    result.error_message = Some(e.message);
                }
            }
        }
        resp.responses.push(result);
    }
    resp
}
