//! EndTxn: a transactional producer commits or aborts its transaction. The coordinator
//! persists PrepareCommit/PrepareAbort, writes the markers to every partition of the
//! transaction, persists the Complete state, and then answers (transaction version 1:
//! versions 0-4).

use std::sync::Arc;

use skein_protocol::messages::end_txn_request::EndTxnRequest;
use skein_protocol::messages::end_txn_response::EndTxnResponse;
use skein_protocol::ResponseBody;

use super::Reply;
use crate::broker::Broker;
use crate::error::ErrorCode;

pub fn handle(broker: &Arc<Broker>, version: i16, req: EndTxnRequest) -> Reply {
    let broker = broker.clone();
    Reply::Later(Box::pin(async move {
        let (token, rx) = broker.transactions().wait();
        broker.txn_op(|c, now| {
            (
                (),
                c.end_txn(
                    now,
                    token,
                    version,
                    &req.transactional_id,
                    req.producer_id,
                    req.producer_epoch,
                    req.committed,
                ),
            )
        });
        let error_code = match rx.await {
            Ok(r) => r.error().0,
            Err(_) => ErrorCode::NOT_COORDINATOR.code(),
        };
        ResponseBody::EndTxn(EndTxnResponse {
            error_code,
            producer_id: -1,
            producer_epoch: -1,
            ..Default::default()
        })
    }))
}
