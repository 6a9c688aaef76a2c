//! DescribeProducers: the idempotent producers each partition remembers (their epoch and last
//! sequence), as `kafka-transactions.sh describe-producers` and the AdminClient show them.
//!
//! As Kafka's `ReplicaManager.activeProducerState`, every replica answers, the leader and the
//! followers alike (a follower rebuilds producer state from the batches it replicates), so the
//! Admin's `describeProducers` with a `brokerId` works on any replica. A node that holds no
//! replica of a partition the metadata knows answers NOT_LEADER_OR_FOLLOWER (the Admin then
//! looks the leader up again, or fails when a `brokerId` was given); an unknown topic or
//! partition, UNKNOWN_TOPIC_OR_PARTITION.

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
                    let Some(partition) = topic.as_ref().and_then(|topic| topic.partition(index))
                    else {
                        return PartitionResponse {
                            partition_index: index,
                            error_code: ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.code(),
                            error_message: Some(format!(
                                "Partition {index} of topic '{}' does not exist.",
                                t.name
                            )),
                            ..Default::default()
                        };
                    };
                    let active = {
                        let state = partition.lock();
                        state.log.as_ref().map(|_| state.producers.describe())
                    };
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
                                    coordinator_epoch: p.coordinator_epoch,
                                    current_txn_start_offset: p.current_txn_start_offset,
                                    ..Default::default()
                                })
                                .collect(),
                            ..Default::default()
                        },
                        // Known to the metadata, but no replica here (Kafka sets no message).
                        None => PartitionResponse {
                            partition_index: index,
                            error_code: ErrorCode::NOT_LEADER_OR_FOLLOWER.code(),
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
