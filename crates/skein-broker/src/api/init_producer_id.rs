//! InitProducerId: a fresh producer id for idempotent producers.

use std::sync::Arc;

use skein_protocol::messages::init_producer_id_request::InitProducerIdRequest;
use skein_protocol::messages::init_producer_id_response::InitProducerIdResponse;

use crate::broker::Broker;
use crate::error::ErrorCode;

pub fn handle(broker: &Arc<Broker>, req: InitProducerIdRequest) -> InitProducerIdResponse {
    let mut resp = InitProducerIdResponse {
        producer_id: -1,
        producer_epoch: -1,
        ..Default::default()
    };
    if req.transactional_id.is_some() {
        // Transactions need a transaction coordinator, which this broker does not have yet.
        resp.error_code = ErrorCode::TRANSACTIONAL_ID_AUTHORIZATION_FAILED.code();
        return resp;
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
    resp
}
