//! CreatePartitions: topics grow, never shrink.

use std::sync::Arc;

use skein_protocol::messages::create_partitions_request::CreatePartitionsRequest;
use skein_protocol::messages::create_partitions_response::{
    CreatePartitionsResponse, CreatePartitionsTopicResult,
};

use crate::broker::{shrink_message, Broker};
use crate::error::{ApiError, ErrorCode};

pub fn handle(broker: &Arc<Broker>, req: CreatePartitionsRequest) -> CreatePartitionsResponse {
    // Answered within the request's timeout (at least a second), never later.
    let timeout = std::time::Duration::from_millis(req.timeout_ms.max(1000) as u64);
    let mut resp = CreatePartitionsResponse::default();
    for t in req.topics {
        let outcome = (|| -> Result<(), ApiError> {
            let topic = broker.topic(&t.name).ok_or_else(|| {
                ApiError::new(
                    ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                    format!("The topic '{}' does not exist.", t.name),
                )
            })?;
            let current = topic.partition_count();
            if t.count <= current {
                return Err(ApiError::new(
                    ErrorCode::INVALID_PARTITIONS,
                    shrink_message(current, t.count),
                ));
            }
            if let Some(assignments) = &t.assignments {
                let added = (t.count - current) as usize;
                if assignments.len() != added
                    || assignments
                        .iter()
                        .any(|a| a.broker_ids != [broker.node_id()])
                {
                    return Err(ApiError::new(
                        ErrorCode::INVALID_REPLICA_ASSIGNMENT,
                        format!("Each of the {added} new partitions must be assigned to broker {} only.", broker.node_id()),
                    ));
                }
            }
            if !req.validate_only {
                broker.add_partitions(&topic, t.count, timeout)?;
            }
            Ok(())
        })();
        let mut result = CreatePartitionsTopicResult {
            name: t.name,
            ..Default::default()
        };
        if let Err(e) = outcome {
            result.error_code = e.code.code();
            result.error_message = Some(e.message);
        }
        resp.results.push(result);
    }
    resp
}
