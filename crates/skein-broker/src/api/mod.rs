//! Request handlers, one file per API, behind a dispatcher that only routes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use skein_protocol::{ApiKey, RequestBody, ResponseBody};

use crate::broker::Broker;

mod acls;
mod add_offsets_to_txn;
mod add_partitions_to_txn;
mod admin_configs;
mod api_versions;
mod consumer_group;
mod create_partitions;
mod create_topics;
mod delete_records;
mod delete_topics;
mod describe_cluster;
mod describe_log_dirs;
mod describe_producers;
mod describe_topic_partitions;
mod describe_transactions;
mod elect_leaders;
mod end_txn;
mod fetch;
mod find_coordinator;
mod gate;
mod group_admin;
mod heartbeat;
mod init_producer_id;
mod join_group;
mod leave_group;
mod list_offsets;
mod metadata;
mod offset_commit;
mod offset_delete;
mod offset_fetch;
mod offset_for_leader_epoch;
mod produce;
pub(crate) mod quorum;
mod reassignments;
mod scram_credentials;
mod sync_group;
mod txn_offset_commit;
mod write_txn_markers;

pub use api_versions::unsupported_version_response;
pub use fetch::{FetchReply, HeldFiles};
pub use metadata::LEADER_EPOCH;

/// KIP-951: for a partition answered NOT_LEADER_OR_FOLLOWER, the leader this broker knows
/// (id and epoch), so that the client re-routes without first refreshing its Metadata.
pub(crate) fn known_leader(
    topic: Option<&Arc<crate::broker::Topic>>,
    index: i32,
) -> Option<(i32, i32)> {
    let a = topic?.partition(index)?.assignment();
    (a.leader >= 0).then_some((a.leader, a.leader_epoch))
}

/// Who asked, and in which version.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub api_key: ApiKey,
    pub api_version: i16,
    pub correlation_id: i32,
    pub client_id: Option<String>,
    /// The peer's address as Kafka shows it in group descriptions (`/127.0.0.1`).
    pub client_host: String,
    /// The connection's listener, protocol, peer and principal.
    pub connection: Arc<crate::listener::ConnectionContext>,
}

/// A handler's answer: now, never (acks=0), or once a wait (fsync, long poll) is over.
pub enum Reply {
    Now(ResponseBody),
    Nothing,
    Later(Pin<Box<dyn Future<Output = ResponseBody> + Send>>),
    /// A Fetch, whose records may still be in the segment files (see [`FetchReply`]).
    Fetch(Pin<Box<dyn Future<Output = FetchReply> + Send>>),
}

/// The APIs and version ranges Skein serves, as ApiVersions advertises them.
///
/// Produce is advertised from version 0 although only v3+ (record batch v2) is served:
/// librdkafka turns compression off when the advertised range starts above 0. A v0–v2
/// request gets UNSUPPORTED_VERSION per partition.
pub const SUPPORTED_APIS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 0, 11),
    (ApiKey::Fetch, 4, 17),
    (ApiKey::ListOffsets, 0, 10),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 0, 7),
    (ApiKey::DeleteTopics, 0, 6),
    (ApiKey::InitProducerId, 0, 5),
    (ApiKey::DescribeConfigs, 0, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 2),
    (ApiKey::FindCoordinator, 0, 6),
    (ApiKey::DescribeLogDirs, 0, 4),
    (ApiKey::DescribeProducers, 0, 0),
    // Transactions, version 1 (no KIP-890 part 2): EndTxn stops at v4 and the finalized
    // `transaction.version` feature is not advertised, so Kafka 4 clients fall back.
    (ApiKey::AddPartitionsToTxn, 0, 5),
    (ApiKey::AddOffsetsToTxn, 0, 4),
    (ApiKey::EndTxn, 0, 4),
    (ApiKey::TxnOffsetCommit, 0, 4),
    (ApiKey::DescribeTransactions, 0, 0),
    (ApiKey::ListTransactions, 0, 1),
    (ApiKey::DescribeTopicPartitions, 0, 0),
    (ApiKey::ElectLeaders, 0, 2),
    (ApiKey::OffsetForLeaderEpoch, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 0, 9),
    (ApiKey::OffsetFetch, 0, 9),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::ConsumerGroupHeartbeat, 0, 1),
    (ApiKey::ConsumerGroupDescribe, 0, 0),
    (ApiKey::DescribeQuorum, 0, 2),
    (ApiKey::AddRaftVoter, 0, 0),
    (ApiKey::RemoveRaftVoter, 0, 0),
    (ApiKey::AlterPartitionReassignments, 0, 0),
    (ApiKey::ListPartitionReassignments, 0, 0),
    (ApiKey::WriteTxnMarkers, 0, 1),
    // SASL (see `crate::sasl`): on a SASL listener the network edge runs the exchange; a
    // request that reaches the dispatcher (another listener, or after authentication) gets
    // ILLEGAL_SASL_STATE, as from Kafka.
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
    (ApiKey::DescribeUserScramCredentials, 0, 0),
    (ApiKey::AlterUserScramCredentials, 0, 0),
    // ACLs (see `crate::authz`); SECURITY_DISABLED without an authorizer, as from Kafka.
    (ApiKey::DescribeAcls, 0, 3),
    (ApiKey::CreateAcls, 0, 3),
    (ApiKey::DeleteAcls, 0, 3),
];

/// The version range served for an API, if it is served at all.
pub fn supported_versions(key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED_APIS
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, min, max)| (*min, *max))
}

impl Broker {
    /// Runs a handler that does much file-system work (creating or removing many partition
    /// directories) so that the runtime keeps serving other connections meanwhile: on a
    /// multi-threaded runtime this worker hands its other tasks over while it blocks. The
    /// request still completes before the connection's next one is handled.
    fn blocking(self: &Arc<Self>, f: impl FnOnce(Arc<Broker>) -> ResponseBody) -> Reply {
        use tokio::runtime::{Handle, RuntimeFlavor};
        let broker = self.clone();
        let multi_thread =
            Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread);
        Reply::Now(if multi_thread {
            tokio::task::block_in_place(|| f(broker))
        } else {
            f(broker)
        })
    }

    /// Routes one decoded request to its handler, after the authorizer's checks when it is
    /// on (see `gate.rs`). The caller has checked that the API and version are in
    /// [`SUPPORTED_APIS`].
    pub fn handle(self: &Arc<Self>, ctx: &RequestContext, body: RequestBody) -> Reply {
        if !self.authz.enabled() {
            return self.route(ctx, body);
        }
        match gate::gate(self, ctx, body) {
            gate::Gate::Deny(resp) => Reply::Now(resp),
            gate::Gate::Pass(body, None) => self.route(ctx, body),
            gate::Gate::Pass(body, Some(patch)) => gate::patched(self.route(ctx, body), patch),
        }
    }

    fn route(self: &Arc<Self>, ctx: &RequestContext, body: RequestBody) -> Reply {
        let v = ctx.api_version;
        match body {
            RequestBody::Produce(r) => produce::handle(self, ctx, r),
            RequestBody::Fetch(r) => Reply::Fetch(Box::pin(fetch::handle(
                self.clone(),
                ctx.connection.listener.clone(),
                v,
                r,
            ))),
            RequestBody::ListOffsets(r) => {
                Reply::Now(ResponseBody::ListOffsets(list_offsets::handle(self, v, r)))
            }
            RequestBody::Metadata(r) => Reply::Now(ResponseBody::Metadata(metadata::handle(
                self,
                &ctx.connection.listener,
                v,
                r,
            ))),
            RequestBody::ApiVersions(r) => {
                Reply::Now(ResponseBody::ApiVersions(api_versions::handle(v, r)))
            }
            RequestBody::CreateTopics(r) => {
                self.blocking(move |b| ResponseBody::CreateTopics(create_topics::handle(&b, v, r)))
            }
            RequestBody::DeleteTopics(r) => {
                self.blocking(move |b| ResponseBody::DeleteTopics(delete_topics::handle(&b, v, r)))
            }
            RequestBody::InitProducerId(r) => init_producer_id::handle(self, v, r),
            RequestBody::AddPartitionsToTxn(r) => add_partitions_to_txn::handle(self, v, r),
            RequestBody::AddOffsetsToTxn(r) => add_offsets_to_txn::handle(self, v, r),
            RequestBody::EndTxn(r) => end_txn::handle(self, v, r),
            RequestBody::TxnOffsetCommit(r) => txn_offset_commit::handle(self, v, r),
            RequestBody::DescribeTransactions(r) => Reply::Now(ResponseBody::DescribeTransactions(
                describe_transactions::describe(self, r),
            )),
            RequestBody::ListTransactions(r) => Reply::Now(ResponseBody::ListTransactions(
                describe_transactions::list(self, v, r),
            )),
            RequestBody::DescribeConfigs(r) => Reply::Now(ResponseBody::DescribeConfigs(
                admin_configs::describe(self, v, r),
            )),
            RequestBody::AlterConfigs(r) => {
                Reply::Now(ResponseBody::AlterConfigs(admin_configs::alter(self, r)))
            }
            RequestBody::IncrementalAlterConfigs(r) => Reply::Now(
                ResponseBody::IncrementalAlterConfigs(admin_configs::incremental_alter(self, r)),
            ),
            RequestBody::CreatePartitions(r) => self.blocking(move |b| {
                ResponseBody::CreatePartitions(create_partitions::handle(&b, r))
            }),
            RequestBody::DeleteRecords(r) => delete_records::handle(self, r),
            RequestBody::FindCoordinator(r) => Reply::Now(ResponseBody::FindCoordinator(
                find_coordinator::handle(self, &ctx.connection.listener, v, r),
            )),
            RequestBody::DescribeCluster(r) => Reply::Now(ResponseBody::DescribeCluster(
                describe_cluster::handle(self, &ctx.connection.listener, v, r),
            )),
            RequestBody::DescribeLogDirs(r) => Reply::Now(ResponseBody::DescribeLogDirs(
                describe_log_dirs::handle(self, r),
            )),
            RequestBody::DescribeProducers(r) => Reply::Now(ResponseBody::DescribeProducers(
                describe_producers::handle(self, r),
            )),
            RequestBody::DescribeTopicPartitions(r) => {
                Reply::Now(ResponseBody::DescribeTopicPartitions(
                    describe_topic_partitions::handle(self, v, r),
                ))
            }
            RequestBody::ElectLeaders(r) => elect_leaders::handle(self, v, r),
            RequestBody::OffsetForLeaderEpoch(r) => Reply::Now(ResponseBody::OffsetForLeaderEpoch(
                offset_for_leader_epoch::handle(self, r),
            )),
            RequestBody::JoinGroup(r) => join_group::handle(self, ctx, r),
            RequestBody::SyncGroup(r) => sync_group::handle(self, ctx, r),
            RequestBody::Heartbeat(r) => {
                Reply::Now(ResponseBody::Heartbeat(heartbeat::handle(self, r)))
            }
            RequestBody::LeaveGroup(r) => leave_group::handle(self, ctx, r),
            RequestBody::OffsetCommit(r) => offset_commit::handle(self, ctx, r),
            RequestBody::OffsetFetch(r) => {
                Reply::Now(ResponseBody::OffsetFetch(offset_fetch::handle(self, v, r)))
            }
            RequestBody::OffsetDelete(r) => offset_delete::handle(self, r),
            RequestBody::DescribeGroups(r) => {
                Reply::Now(ResponseBody::DescribeGroups(group_admin::describe(self, r)))
            }
            RequestBody::ListGroups(r) => {
                Reply::Now(ResponseBody::ListGroups(group_admin::list(self, r)))
            }
            RequestBody::DeleteGroups(r) => group_admin::delete(self, r),
            RequestBody::ConsumerGroupHeartbeat(r) => consumer_group::heartbeat(self, ctx, r),
            RequestBody::DescribeQuorum(r) => quorum::describe(self, r),
            RequestBody::AddRaftVoter(r) => quorum::add_voter(self, r),
            RequestBody::RemoveRaftVoter(r) => quorum::remove_voter(self, r),
            RequestBody::AlterPartitionReassignments(r) => reassignments::alter(self, r),
            RequestBody::ListPartitionReassignments(r) => Reply::Now(
                ResponseBody::ListPartitionReassignments(reassignments::list(self, r)),
            ),
            RequestBody::ConsumerGroupDescribe(r) => Reply::Now(
                ResponseBody::ConsumerGroupDescribe(consumer_group::describe(self, r)),
            ),
            RequestBody::WriteTxnMarkers(r) => write_txn_markers::handle(self, r),
            RequestBody::SaslHandshake(_) => Reply::Now(ResponseBody::SaslHandshake(
                skein_protocol::messages::SaslHandshakeResponse {
                    error_code: crate::sasl::ILLEGAL_SASL_STATE.0,
                    ..Default::default()
                },
            )),
            RequestBody::SaslAuthenticate(_) => Reply::Now(ResponseBody::SaslAuthenticate(
                skein_protocol::messages::SaslAuthenticateResponse {
                    error_code: crate::sasl::ILLEGAL_SASL_STATE.0,
                    error_message: Some(
                        "SaslAuthenticate request received after successful authentication or on a listener without SASL"
                            .into(),
                    ),
                    ..Default::default()
                },
            )),
            RequestBody::DescribeUserScramCredentials(r) => {
                Reply::Now(ResponseBody::DescribeUserScramCredentials(
                    scram_credentials::describe(self, r),
                ))
            }
            RequestBody::AlterUserScramCredentials(r) => scram_credentials::alter(self, r),
            RequestBody::CreateAcls(r) => acls::create(self, ctx, r),
            RequestBody::DescribeAcls(r) => {
                Reply::Now(ResponseBody::DescribeAcls(acls::describe(self, ctx, v, r)))
            }
            RequestBody::DeleteAcls(r) => acls::delete(self, ctx, v, r),
            other => {
                // The connection layer only passes on APIs in SUPPORTED_APIS.
                tracing::error!(api = ?other.api_key(), "no handler for an advertised API");
                Reply::Nothing
            }
        }
    }
}
