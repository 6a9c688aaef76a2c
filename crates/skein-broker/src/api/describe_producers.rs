//! DescribeProducers: the idempotent producers each partition remembers (their epoch and last
//! sequence), as `kafka-transactions.sh describe-producers` and the AdminClient show them.

use std::sync::Arc;

use skein_protocol::messages::describe_producers_request::DescribeProducersRequest;
use skein_protocol::messages::describe_producers_response::{
    DescribeProducersResponse, PartitionResponse, ProducerState, TopicResponse,
};

use crate::broker::Broker;
use crate::error::ErrorCode;

pub fn handle(broker: &Arc<Broker>, req: DescribeProducersRequest) -> DescribeProducersResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let topic = broker.topic(&t.name);
            let partitions = t
                .partition_indexes
                .into_iter()
                .map(|index| {
                    let partition = topic.as_ref().and_then(|topic| topic.partition(index));
                    let active = partition.and_then(|p| {
                        let state = p.lock();
                        state.log.as_ref()?;
                        Some(state.producers.describe())
                    });
                    match active {
                        Some(producers) => PartitionResponse {
                            partition_index: index,
                            active_producers: producers
                                .into_iter()
                                .map(|p| ProducerState {
                                    producer_id: p.producer_id,
                                    producer_epoch: i32::from(p.epoch),
                                    last_sequence: p.last_sequence,
                                    last_timestamp: p.last_write_ms,
                                    // Not transactional: no coordinator, no open transaction.
                                    coordinator_epoch: -1,
                                    current_txn_start_offset: -1,
                                    ..Default::default()
                                })
                                .collect(),
                            ..Default::default()
                        },
                        None => PartitionResponse {
                            partition_index: index,
                            error_code: ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.0,
                            error_message: Some(format!(
                                "This broker does not host partition {index} of topic '{}'.",
                                t.name
                            )),
                            ..Default::default()
                        },
                    }
                })
                .collect();
            TopicResponse {
                name: t.name,
                partitions,
                ..Default::default()
            }
        })
        .collect();
    DescribeProducersResponse {
        topics,
        ..Default::default()
    }
}
