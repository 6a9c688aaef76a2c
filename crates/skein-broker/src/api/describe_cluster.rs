//! DescribeCluster: the live brokers (and from v2, on request, the fenced ones), the
//! controller id clients are given, and the cluster id.

use std::sync::Arc;

use skein_protocol::messages::describe_cluster_request::DescribeClusterRequest;
use skein_protocol::messages::describe_cluster_response::{
    DescribeClusterBroker, DescribeClusterResponse,
};

use crate::broker::Broker;
use crate::error::ErrorCode;

/// Endpoint type 1 is "brokers"; 2 ("controllers") is for KRaft controllers.
const ENDPOINT_BROKERS: i8 = 1;

pub fn handle(
    broker: &Arc<Broker>,
    listener: &str,
    version: i16,
    req: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let mut resp = DescribeClusterResponse {
        cluster_id: broker.cluster_id.clone(),
        controller_id: broker.controller_id(),
        endpoint_type: req.endpoint_type,
        ..Default::default()
    };
    if version >= 1 && req.endpoint_type != ENDPOINT_BROKERS {
        resp.error_code = ErrorCode::UNSUPPORTED_VERSION.code();
        resp.error_message = Some("Only the brokers endpoint type is served by this node.".into());
        return resp;
    }
    let mut brokers: Vec<DescribeClusterBroker> = broker
        .brokers_on(listener)
        .into_iter()
        .map(|b| DescribeClusterBroker {
            broker_id: b.id,
            host: b.host,
            port: b.port,
            rack: b.rack,
            ..Default::default()
        })
        .collect();
    // Version 2 (KIP-1073) can ask for the fenced brokers too, flagged.
    if version >= 2 && req.include_fenced_brokers {
        for b in broker.fenced_brokers(listener) {
            if brokers.iter().all(|x| x.broker_id != b.id) {
                brokers.push(DescribeClusterBroker {
                    broker_id: b.id,
                    host: b.host,
                    port: b.port,
                    rack: b.rack,
                    is_fenced: true,
                    ..Default::default()
                });
            }
        }
        brokers.sort_by_key(|b| b.broker_id);
    }
    resp.brokers = brokers;
    resp
}
