//! CreatePartitions: topics grow, never shrink; the new partitions are placed by the
//! controller or, with a manual assignment, on the brokers the request names (checked by the
//! controller as Kafka does: one replica list per new partition, the topic's replication
//! factor, distinct registered brokers, INVALID_REPLICA_ASSIGNMENT otherwise). The request is
//! answered within its `timeout_ms` (REQUEST_TIMED_OUT for the topics the controller could
//! not commit in time).

use std::sync::Arc;

use skein_metadata::controller::{validate_new_partitions, NewPartitions};
use skein_protocol::messages::create_partitions_request::CreatePartitionsRequest;
use skein_protocol::messages::create_partitions_response::{
    CreatePartitionsResponse, CreatePartitionsTopicResult,
};

use crate::broker::{shrink_message, Broker};
use crate::controller_link::{request_deadline, time_left};
use crate::error::{ApiError, ErrorCode};

pub fn handle(broker: &Arc<Broker>, req: CreatePartitionsRequest) -> CreatePartitionsResponse {
    // One deadline for the whole request: it is answered within its timeout (at most the
    // 30 s call limit), however many topics it names.
    let deadline = request_deadline(req.timeout_ms);
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
            let assignments: Option<Vec<Vec<i32>>> = t
                .assignments
                .as_ref()
                .map(|a| a.iter().map(|a| a.broker_ids.clone()).collect());
            if let Some(a) = &assignments {
                let added = (t.count - current) as usize;
                if a.len() != added {
                    return Err(ApiError::new(
                        ErrorCode::INVALID_REPLICA_ASSIGNMENT,
                        format!(
                            "Growing the topic by {added} partitions needs {added} replica assignments, but {} were given.",
                            a.len()
                        ),
                    ));
                }
            }
            if req.validate_only {
                // The controller's own checks, against this broker's metadata image.
                let growth = NewPartitions {
                    name: t.name.clone(),
                    count: t.count,
                    assignments,
                };
                return broker
                    .quorum
                    .read(|image| validate_new_partitions(image, &growth));
            }
            broker.add_partitions(&topic, t.count, assignments, time_left(deadline)?)
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
