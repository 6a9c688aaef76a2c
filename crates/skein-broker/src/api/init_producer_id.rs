//! InitProducerId: a fresh producer id for idempotent producers (any broker answers), and,
//! with a transactional id, the transaction coordinator's answer: a new id or a bumped
//! epoch that fences older producers of the same transactional id.

use std::sync::Arc;

use skein_protocol::messages::init_producer_id_request::InitProducerIdRequest;
use skein_protocol::messages::init_producer_id_response::InitProducerIdResponse;
use skein_protocol::ResponseBody;
use skein_txn::Response;

use super::Reply;
use crate::broker::Broker;
use crate::error::ErrorCode;

pub fn handle(broker: &Arc<Broker>, version: i16, req: InitProducerIdRequest) -> Reply {
    let mut resp = InitProducerIdResponse {
        producer_id: -1,
        producer_epoch: -1,
        ..Default::default()
    };
    if let Some(transactional_id) = req.transactional_id {
        let (token, rx) = broker.transactions().wait();
        broker.txn_init_producer_id(
            token,
            version,
            skein_txn::InitProducerId {
                transactional_id: Some(transactional_id),
                transaction_timeout_ms: req.transaction_timeout_ms,
                producer_id: req.producer_id,
                producer_epoch: req.producer_epoch,
            },
        );
        return Reply::Later(Box::pin(async move {
            match rx.await {
                Ok(Response::InitProducerId {
                    error,
                    producer_id,
                    producer_epoch,
                }) => {
                    resp.error_code = error.0;
                    if error.is_none() {
                        resp.producer_id = producer_id;
                        resp.producer_epoch = producer_epoch;
                    }
                }
                Ok(other) => resp.error_code = other.error().0,
                Err(_) => resp.error_code = ErrorCode::NOT_COORDINATOR.code(),
            }
            ResponseBody::InitProducerId(resp)
        }));
    }
    // Like Kafka, an idempotent producer asking again (also with its old id and epoch, as
    // KIP-360 clients do after an error) gets a new id with epoch 0.
    match broker.allocate_producer_id() {
        Ok(id) => {
            resp.producer_id = id;
            resp.producer_epoch = 0;
        }
        Err(e) => {
            tracing::warn!("{}", e.message);
            resp.error_code = e.code.code();
        }
    }
    Reply::Now(ResponseBody::InitProducerId(resp))
}
