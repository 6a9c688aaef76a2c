//! DescribeTransactions and ListTransactions: the state of the transactional ids this
//! broker coordinates (admin clients ask every coordinator and merge).

use std::sync::Arc;

use skein_protocol::messages::describe_transactions_request::DescribeTransactionsRequest;
use skein_protocol::messages::describe_transactions_response::{
    DescribeTransactionsResponse, TopicData, TransactionState,
};
use skein_protocol::messages::list_transactions_request::ListTransactionsRequest;
use skein_protocol::messages::list_transactions_response::{
    ListTransactionsResponse, TransactionState as ListedTransaction,
};

use crate::broker::Broker;

pub fn describe(
    broker: &Arc<Broker>,
    req: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let described = broker
        .transactions()
        .read(|c| c.describe(&req.transactional_ids));
    DescribeTransactionsResponse {
        transaction_states: described
            .into_iter()
            .map(|d| TransactionState {
                error_code: d.error.0,
                transactional_id: d.transactional_id,
                transaction_state: d.state,
                transaction_timeout_ms: d.timeout_ms,
                transaction_start_time_ms: d.start_ms,
                producer_id: d.producer_id,
                producer_epoch: d.producer_epoch,
                topics: d
                    .topics
                    .into_iter()
                    .map(|(topic, partitions)| TopicData {
                        topic,
                        partitions,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

pub fn list(
    broker: &Arc<Broker>,
    version: i16,
    req: ListTransactionsRequest,
) -> ListTransactionsResponse {
    // The duration filter arrived in version 1; -1 (its default) means none.
    let duration = if version >= 1 {
        req.duration_filter
    } else {
        -1
    };
    let now = broker.now_ms();
    let listed = broker
        .transactions()
        .read(|c| c.list(now, &req.state_filters, &req.producer_id_filters, duration));
    ListTransactionsResponse {
        error_code: listed.error.0,
        unknown_state_filters: listed.unknown_state_filters,
        transaction_states: listed
            .transactions
            .into_iter()
            .map(|t| ListedTransaction {
                transactional_id: t.transactional_id,
                producer_id: t.producer_id,
                transaction_state: t.state,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}
