//! AddOffsetsToTxn: a transactional producer adds its consumer group's partition of
//! `__consumer_offsets` to its transaction (before TxnOffsetCommit), answered by the
//! transaction coordinator once the new state is persisted.

use std::sync::Arc;

use skein_protocol::messages::add_offsets_to_txn_request::AddOffsetsToTxnRequest;
use skein_protocol::messages::add_offsets_to_txn_response::AddOffsetsToTxnResponse;
use skein_protocol::ResponseBody;

use super::Reply;
use crate::broker::Broker;
use crate::error::ErrorCode;
use crate::groups::offsets_partition_for;

pub fn handle(broker: &Arc<Broker>, version: i16, req: AddOffsetsToTxnRequest) -> Reply {
    let broker = broker.clone();
    Reply::Later(Box::pin(async move {
        let count = broker.offsets_partition_count();
        let partition = offsets_partition_for(&req.group_id, count);
        let (token, rx) = broker.transactions().wait();
        broker.txn_op(|c, now| {
            (
                (),
                c.add_offsets(
                    now,
                    token,
                    version,
                    &req.transactional_id,
                    req.producer_id,
                    req.producer_epoch,
                    partition,
                ),
            )
        });
        let error_code = match rx.await {
            Ok(r) => r.error().0,
            Err(_) => ErrorCode::NOT_COORDINATOR.code(),
        };
        ResponseBody::AddOffsetsToTxn(AddOffsetsToTxnResponse {
            error_code,
            ..Default::default()
        })
    }))
}
