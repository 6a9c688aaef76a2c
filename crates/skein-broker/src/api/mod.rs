//! Request handlers, one file per API, behind a dispatcher that only routes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use skein_protocol::{ApiKey, RequestBody, ResponseBody};

use crate::broker::Broker;
use crate::quota::QuotaType;

mod acls;
mod add_offsets_to_txn;
mod add_partitions_to_txn;
mod admin_configs;
mod api_versions;
mod client_quotas;
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
    /// The connection's mute: a throttled response sets it, and the server reads nothing
    /// more from the connection until it is over (KIP-219).
    pub mute: Arc<crate::quota::ChannelMute>,
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
    (ApiKey::DescribeClientQuotas, 0, 1),
    (ApiKey::AlterClientQuotas, 0, 1),
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

    /// Handles one decoded request, under the client's quotas (see `crate::quota`): a
    /// produce's bytes, a fetch's bytes and the time spent handling are measured against the
    /// quotas of the request's user and client id; past one, the response carries
    /// `throttle_time_ms` and the connection is muted for that long ([`RequestContext::mute`]).
    /// The caller has checked that the API and version are in [`SUPPORTED_APIS`].
    pub fn handle(self: &Arc<Self>, ctx: &RequestContext, mut body: RequestBody) -> Reply {
        let Some(client) = quota_client(self, ctx) else {
            return self.dispatch(ctx, body);
        };
        let started = std::time::Instant::now();
        let mut throttle = 0;
        let mut fetch_quota = None;
        match &mut body {
            RequestBody::Produce(r) => {
                let bytes: usize = r
                    .topic_data
                    .iter()
                    .flat_map(|t| t.partition_data.iter())
                    .map(|p| p.records.as_ref().map_or(0, |b| b.len()))
                    .sum();
                throttle = client.record(self, QuotaType::Produce, bytes as f64);
            }
            RequestBody::Fetch(r) if !is_follower(ctx.api_version, r) => {
                if let Some((_, quota)) = &client.quotas[1] {
                    // As Kafka: no more than the quota allows over the whole window.
                    let most = self.quotas.max_value_in_window(*quota).max(1.0);
                    r.max_bytes = r.max_bytes.min(most.min(i32::MAX as f64) as i32);
                    fetch_quota = Some(*quota);
                }
            }
            _ => {}
        }
        let exempt = match &body {
            RequestBody::Fetch(r) => is_follower(ctx.api_version, r),
            RequestBody::WriteTxnMarkers(_) => true,
            _ => false,
        };
        let reply = self.dispatch(ctx, body);
        if !exempt {
            // Kafka's request quota: the share of one thread's time, in percent.
            let percent = started.elapsed().as_secs_f64() * 100.0;
            throttle = throttle.max(client.record(self, QuotaType::Request, percent));
        }
        let mute = ctx.mute.clone();
        mute.mute_for(throttle);
        let throttle_ms = throttle.min(i32::MAX as u64) as i32;
        match reply {
            Reply::Now(mut b) => {
                set_throttle(&mut b, throttle_ms);
                Reply::Now(b)
            }
            Reply::Nothing => Reply::Nothing,
            Reply::Later(fut) => Reply::Later(Box::pin(async move {
                let mut b = fut.await;
                set_throttle(&mut b, throttle_ms);
                b
            })),
            Reply::Fetch(fut) => {
                let broker = self.clone();
                Reply::Fetch(Box::pin(async move {
                    let mut reply = fut.await;
                    let bytes = reply.size() as f64;
                    let mut throttle = throttle;
                    if fetch_quota.is_some() {
                        let t = client.record(&broker, QuotaType::Fetch, bytes);
                        mute.mute_for(t);
                        throttle = throttle.max(t);
                    }
                    // As Kafka: a fetch past its byte or request quota is answered at once
                    // without records (the bytes taken back from the fetch rate), and the
                    // connection stays muted for the throttle time. A fetch too big to ever
                    // fit the quota (one batch larger than the whole window allows) keeps its
                    // records, or the consumer could never progress.
                    let too_big =
                        fetch_quota.is_some_and(|q| bytes > broker.quotas.max_value_in_window(q));
                    if throttle > 0 && !exempt && !too_big {
                        if fetch_quota.is_some() {
                            client.unrecord(&broker, QuotaType::Fetch, bytes);
                        }
                        reply.throttled();
                    }
                    set_throttle(&mut reply.body, throttle.min(i32::MAX as u64) as i32);
                    reply
                }))
            }
        }
    }

    /// Routes one decoded request to its handler ([`Self::route`]), after the authorizer's checks when it is
    /// on (see `gate.rs`).
    /// The authorized-operations fields (KIP-430) are filled last, authorizer or not.
    fn dispatch(self: &Arc<Self>, ctx: &RequestContext, body: RequestBody) -> Reply {
        let ops = gate::authorized_operations(self, ctx, &body);
        let reply = if !self.authz.enabled() {
            self.route(ctx, body)
        } else {
            match gate::gate(self, ctx, body) {
                gate::Gate::Deny(resp) => Reply::Now(resp),
                gate::Gate::Pass(body, None) => self.route(ctx, body),
                gate::Gate::Pass(body, Some(patch)) => gate::patched(self.route(ctx, body), patch),
            }
        };
        match ops {
            Some(ops) => gate::patched(reply, ops),
            None => reply,
        }
    }

    /// Routes one decoded request to its handler.
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
            RequestBody::DescribeClientQuotas(r) => Reply::Now(client_quotas::describe(self, r)),
            RequestBody::AlterClientQuotas(r) => client_quotas::alter(self, r),
            other => {
                // The connection layer only passes on APIs in SUPPORTED_APIS.
                tracing::error!(api = ?other.api_key(), "no handler for an advertised API");
                Reply::Nothing
            }
        }
    }
}

/// Whether a fetch is a follower's (exempt from client quotas, as in Kafka).
fn is_follower(version: i16, r: &skein_protocol::messages::FetchRequest) -> bool {
    let replica = if version >= 15 {
        r.replica_state.replica_id
    } else {
        r.replica_id
    };
    replica >= 0
}

/// The quotas that apply to one request's client: (user, client id) and, per quota type
/// (produce, fetch, request), the sensor tags and the quota.
struct QuotaClient {
    quotas: [Option<((String, String), f64)>; 3],
}

impl QuotaClient {
    /// Records `value` and returns the throttle time in ms (0 when within the quota or
    /// without one), counting it in the metrics.
    fn record(&self, broker: &Broker, qt: QuotaType, value: f64) -> u64 {
        let i = QuotaType::ALL.iter().position(|q| *q == qt).unwrap_or(0);
        let Some((tags, quota)) = &self.quotas[i] else {
            return 0;
        };
        let ms = broker.quotas.record(qt, tags, *quota, value);
        if ms > 0 {
            let (user, client) = broker.quotas.metric_labels(qt, tags);
            broker
                .metrics()
                .observe_throttle(qt.label(), user, client, ms);
        }
        ms
    }

    /// Takes back a [`QuotaClient::record`] (a throttled fetch answered without records).
    fn unrecord(&self, broker: &Broker, qt: QuotaType, value: f64) {
        let i = QuotaType::ALL.iter().position(|q| *q == qt).unwrap_or(0);
        if let Some((tags, _)) = &self.quotas[i] {
            broker.quotas.unrecord(qt, tags, value);
        }
    }
}

/// The quotas of `ctx`'s client, or `None` when no quota applies to it (the common case:
/// no quota is set at all).
fn quota_client(broker: &Broker, ctx: &RequestContext) -> Option<QuotaClient> {
    let user = ctx.connection.principal.name.as_str();
    let client_id = ctx.client_id.as_deref().unwrap_or("");
    let quotas = broker.quorum.read(|image| {
        let all = image.client_quotas();
        if all.is_empty() {
            return None;
        }
        let q = QuotaType::ALL.map(|qt| crate::quota::resolve(all, user, client_id, qt.key()));
        q.iter().any(Option::is_some).then_some(q)
    })?;
    Some(QuotaClient { quotas })
}

/// Sets `throttle_time_ms` in a response that has it (a longer one already set stays).
fn set_throttle(body: &mut ResponseBody, ms: i32) {
    if ms <= 0 {
        return;
    }
    macro_rules! set {
        ($($v:ident),* $(,)?) => {
            match body {
                $(ResponseBody::$v(r) => r.throttle_time_ms = r.throttle_time_ms.max(ms),)*
                _ => {}
            }
        };
    }
    set!(
        Produce,
        Fetch,
        ListOffsets,
        Metadata,
        OffsetCommit,
        OffsetFetch,
        FindCoordinator,
        JoinGroup,
        Heartbeat,
        LeaveGroup,
        SyncGroup,
        DescribeGroups,
        ListGroups,
        ApiVersions,
        CreateTopics,
        DeleteTopics,
        DeleteRecords,
        InitProducerId,
        OffsetForLeaderEpoch,
        AddPartitionsToTxn,
        AddOffsetsToTxn,
        EndTxn,
        TxnOffsetCommit,
        DescribeConfigs,
        AlterConfigs,
        DescribeLogDirs,
        CreatePartitions,
        DeleteGroups,
        ElectLeaders,
        IncrementalAlterConfigs,
        AlterPartitionReassignments,
        ListPartitionReassignments,
        OffsetDelete,
        DescribeClientQuotas,
        AlterClientQuotas,
        DescribeUserScramCredentials,
        AlterUserScramCredentials,
        DescribeCluster,
        DescribeProducers,
        DescribeTransactions,
        ListTransactions,
        ConsumerGroupHeartbeat,
        ConsumerGroupDescribe,
        DescribeTopicPartitions,
    );
}
