//! AddPartitionsToTxn: a transactional producer adds partitions to its ongoing transaction
//! (versions 0-3, one transaction), and a partition leader checks that a transactional
//! batch's partition was added (versions 4+, batched, `verify_only`: KIP-890 part 1).
//! Answered by the transaction coordinator once the new state is persisted.

use std::sync::Arc;

use skein_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnTopic,
};
use skein_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResponse, AddPartitionsToTxnResult,
    AddPartitionsToTxnTopicResult,
};
use skein_protocol::ResponseBody;
use skein_txn::{Response, TopicPartition};

use super::Reply;
use crate::broker::Broker;
use crate::error::ErrorCode;

/// The first version that batches transactions (and is sent by brokers only).
const FIRST_BATCHED_VERSION: i16 = 4;

fn flatten(topics: &[AddPartitionsToTxnTopic]) -> Vec<TopicPartition> {
    topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.name.clone(), *p)))
        .collect()
}

/// Per-partition results in the wire's shape, grouped by topic in first-seen order.
fn by_topic(results: &[(TopicPartition, i16)]) -> Vec<AddPartitionsToTxnTopicResult> {
    let mut out: Vec<AddPartitionsToTxnTopicResult> = Vec::new();
    for ((topic, partition), code) in results {
        let entry = AddPartitionsToTxnPartitionResult {
            partition_index: *partition,
            partition_error_code: *code,
            ..Default::default()
        };
        match out.iter_mut().find(|t| &t.name == topic) {
            Some(t) => t.results_by_partition.push(entry),
            None => out.push(AddPartitionsToTxnTopicResult {
                name: topic.clone(),
                results_by_partition: vec![entry],
                ..Default::default()
            }),
        }
    }
    out
}

/// Partitions of topics this cluster does not have: they get UNKNOWN_TOPIC_OR_PARTITION and
/// the rest OPERATION_NOT_ATTEMPTED, as Kafka answers, without asking the coordinator.
fn unknown_partitions(
    broker: &Broker,
    parts: &[TopicPartition],
) -> Option<Vec<(TopicPartition, i16)>> {
    let known =
        |(t, p): &TopicPartition| broker.topic(t).is_some_and(|t| t.partition(*p).is_some());
    if parts.iter().all(known) {
        return None;
    }
    Some(
        parts
            .iter()
            .map(|tp| {
                let code = if known(tp) {
                    ErrorCode::OPERATION_NOT_ATTEMPTED.code()
                } else {
                    ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.code()
                };
                (tp.clone(), code)
            })
            .collect(),
    )
}

/// One transaction of the request: its id and per-partition results, now or later.
async fn one(
    broker: Arc<Broker>,
    version: i16,
    id: String,
    producer_id: i64,
    producer_epoch: i16,
    verify_only: bool,
    parts: Vec<TopicPartition>,
) -> (String, Vec<(TopicPartition, i16)>) {
    if verify_only {
        let results = broker
            .transactions()
            .read(|c| c.verify_partitions(version, &id, producer_id, producer_epoch, &parts));
        let results = results.into_iter().map(|(tp, e)| (tp, e.0)).collect();
        return (id, results);
    }
    if let Some(results) = unknown_partitions(&broker, &parts) {
        return (id, results);
    }
    let (token, rx) = broker.transactions().wait();
    broker.txn_op(|c, now| {
        (
            (),
            c.add_partitions(
                now,
                token,
                version,
                &id,
                producer_id,
                producer_epoch,
                &parts,
            ),
        )
    });
    let code = match rx.await {
        Ok(Response::AddPartitions { error }) => error.0,
        Ok(other) => other.error().0,
        Err(_) => ErrorCode::NOT_COORDINATOR.code(),
    };
    let results = parts.into_iter().map(|tp| (tp, code)).collect();
    (id, results)
}

pub fn handle(broker: &Arc<Broker>, version: i16, req: AddPartitionsToTxnRequest) -> Reply {
    let broker = broker.clone();
    Reply::Later(Box::pin(async move {
        let mut resp = AddPartitionsToTxnResponse::default();
        if version < FIRST_BATCHED_VERSION {
            let parts = flatten(&req.v3_and_below_topics);
            let (_, results) = one(
                broker,
                version,
                req.v3_and_below_transactional_id,
                req.v3_and_below_producer_id,
                req.v3_and_below_producer_epoch,
                false,
                parts,
            )
            .await;
            resp.results_by_topic_v3_and_below = by_topic(&results);
        } else {
            for t in req.transactions {
                let parts = flatten(&t.topics);
                let (id, results) = one(
                    broker.clone(),
                    version,
                    t.transactional_id,
                    t.producer_id,
                    t.producer_epoch,
                    t.verify_only,
                    parts,
                )
                .await;
                resp.results_by_transaction.push(AddPartitionsToTxnResult {
                    transactional_id: id,
                    topic_results: by_topic(&results),
                    ..Default::default()
                });
            }
        }
        ResponseBody::AddPartitionsToTxn(resp)
    }))
}
