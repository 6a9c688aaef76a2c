//! A broker's requests to the active controller, wherever it runs.
//!
//! Every metadata change a broker needs (its registration and heartbeats, topic creation,
//! deletion and growth, config changes, producer-id blocks, partition reassignments) is a
//! [`ControllerCall`]. On the node that is the active controller the call runs at once
//! ([`Quorum::run_at`]); elsewhere it travels over the controller listener's application
//! channel (`skein-raft`'s [`AppClient`], which finds the leader and follows its hints) to the
//! active controller, which runs it and answers with the result and the metadata offset that
//! made it visible. The caller then waits until its own node has applied that offset, so a
//! broker that answered "created" has the topic in its own image (KIP-590's forwarding, with
//! read-your-writes on the forwarder).
//!
//! The calls are JSON between Skein nodes of one cluster, not Kafka's BrokerRegistration /
//! BrokerHeartbeat wire: only Skein nodes speak on the controller listener, and JSON lets a
//! newer node add fields that an older one ignores during a rolling upgrade.
//!
//! Failures are Kafka's retriable errors: NOT_CONTROLLER when no controller answers (none is
//! elected, or it moved), REQUEST_TIMED_OUT when the change may or may not have been
//! committed; never a wait past [`CALL_TIMEOUT`].
//!
//! [`AppClient`]: skein_raft::AppClient

use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use skein_metadata::controller::{
    AlterConfigs, AlterPartition, ConfigOp, ElectionType, Heartbeat, NewPartitions, NewTopic,
    RegisterBroker, TopicRef, UNCLEAN_LEADER_ELECTION,
};
use skein_metadata::image::{ConfigResource, Endpoint};
use skein_metadata::reassign::Reassignment;
use skein_metadata::{MetadataImage, Outcome, QuorumController};
use skein_protocol::Uuid;
use skein_raft::MetadataLog;

use crate::broker::Broker;
use crate::error::{ApiError, ErrorCode};

/// The longest a broker waits for the controller (and then for its own node to apply the
/// answer) before answering REQUEST_TIMED_OUT.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The deadline of an admin request that carries a `timeout_ms` (CreateTopics, DeleteTopics,
/// CreatePartitions): now plus the timeout, as Kafka's controller computes it, and never
/// past [`CALL_TIMEOUT`]. A timeout of 0 or less sets no deadline of its own (Kafka's
/// controller reads it as "no deadline"; Kafka 4.1 creates, grows and deletes topics asked
/// with `timeout_ms=0`), so the call limit applies.
pub(crate) fn request_deadline(timeout_ms: i32) -> std::time::Instant {
    let wanted = match u64::try_from(timeout_ms) {
        Ok(ms) if ms > 0 => Duration::from_millis(ms).min(CALL_TIMEOUT),
        _ => CALL_TIMEOUT,
    };
    std::time::Instant::now() + wanted
}

/// What is left of a request's time until `deadline`, or REQUEST_TIMED_OUT once it has
/// passed: Kafka's controller fails an operation whose deadline passed before it ran, and
/// the items of one request share one deadline, so a request is answered within its
/// timeout however many topics it names.
pub(crate) fn time_left(deadline: std::time::Instant) -> Result<Duration, ApiError> {
    let left = deadline.saturating_duration_since(std::time::Instant::now());
    if left.is_zero() {
        return Err(api(
            ErrorCode::REQUEST_TIMED_OUT,
            "The request's timeout passed before the controller was asked; nothing was changed.",
        ));
    }
    Ok(left)
}

/// A listener of a registration: (name, host, port, security protocol).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WireEndpoint {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub security_protocol: i16,
}

impl From<&Endpoint> for WireEndpoint {
    fn from(e: &Endpoint) -> Self {
        WireEndpoint {
            name: e.name.clone(),
            host: e.host.clone(),
            port: e.port,
            security_protocol: e.security_protocol,
        }
    }
}

impl From<&WireEndpoint> for Endpoint {
    fn from(e: &WireEndpoint) -> Self {
        Endpoint {
            name: e.name.clone(),
            host: e.host.clone(),
            port: e.port,
            security_protocol: e.security_protocol,
        }
    }
}

/// `previous_broker_epoch` of a registration from a node that does not send it.
fn no_epoch() -> i64 {
    -1
}

/// One request of a broker to the active controller.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "call", rename_all = "snake_case")]
pub enum ControllerCall {
    RegisterController {
        node: i32,
        directory_id: [u8; 16],
        endpoints: Vec<WireEndpoint>,
    },
    RegisterBroker {
        broker_id: i32,
        incarnation_id: [u8; 16],
        endpoints: Vec<WireEndpoint>,
        rack: Option<String>,
        /// KIP-966: the epoch this node's log was last known intact under, -1 if none.
        #[serde(default = "no_epoch")]
        previous_broker_epoch: i64,
    },
    Heartbeat {
        broker_id: i32,
        broker_epoch: i64,
        metadata_offset: u64,
        want_fence: bool,
        want_shutdown: bool,
    },
    CreateTopic {
        name: String,
        partitions: i32,
        replication_factor: i16,
        configs: Vec<(String, String)>,
        seed: u64,
        /// A manual assignment: the replicas of partitions 0, 1, ... (then both counts are -1).
        #[serde(default)]
        assignments: Vec<Vec<i32>>,
    },
    DeleteTopic {
        id: [u8; 16],
    },
    CreatePartitions {
        name: String,
        count: i32,
        seed: u64,
        /// A manual assignment: the replicas of each new partition, in order.
        #[serde(default)]
        assignments: Option<Vec<Vec<i32>>>,
    },
    /// Incremental changes of a topic's overrides: `Some` sets, `None` deletes.
    AlterTopicConfig {
        name: String,
        ops: Vec<(String, Option<String>)>,
    },
    /// Incremental changes of broker configs held in the metadata log (`name` "" is the
    /// cluster-wide default): `Some` sets, `None` deletes.
    AlterBrokerConfig {
        name: String,
        ops: Vec<(String, Option<String>)>,
    },
    AllocateProducerIds {
        broker_id: i32,
        broker_epoch: i64,
    },
    /// A partition leader's ISR change (Kafka's AlterPartition): the new ISR of one
    /// partition, based on `partition_epoch`; members with broker epoch -1 skip that check.
    AlterPartition {
        broker_id: i32,
        broker_epoch: i64,
        topic_id: [u8; 16],
        partition: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        new_isr: Vec<(i32, i64)>,
        /// KIP-704: `Some(0)` (RECOVERED) from the leader of a partition elected uncleanly
        /// once it has recovered; `None` keeps the partition's state.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        leader_recovery_state: Option<i8>,
    },
    /// ElectLeaders: `election_type` 0 preferred, 1 unclean; `None`: every partition.
    ElectLeaders {
        election_type: i8,
        partitions: Option<Vec<(String, Vec<i32>)>>,
    },
    /// AlterPartitionReassignments: (topic, partition, target replicas or `None` to cancel).
    AlterReassignments {
        reassignments: Vec<(String, i32, Option<Vec<i32>>)>,
    },
    /// AlterUserScramCredentials: `deletions` (user, mechanism) and `upsertions` (user,
    /// mechanism, salt, stored key, server key, iterations). All of one user's changes apply
    /// or none; the answer has one result per user in order of first appearance.
    AlterScram {
        deletions: Vec<(String, i8)>,
        upsertions: Vec<ScramUpsertion>,
    },
    /// CreateAcls: each ACL gets a fresh id; one already present (the same binding) is a
    /// success that adds nothing, as in Kafka. One result per ACL, in order.
    CreateAcls {
        acls: Vec<WireAcl>,
    },
    /// DeleteAcls: the ids the broker matched against its image; ids already gone are
    /// skipped. Answers `Done`.
    DeleteAcls {
        ids: Vec<[u8; 16]>,
    },
    /// AlterClientQuotas, checked by the broker: per entry, its entity ((type, name or
    /// `None` for the default), sorted by type) and its ops (key, value, remove). Every op of
    /// the call commits in one entry; the answer has one result per entry.
    AlterClientQuotas {
        entries: Vec<ClientQuotaAlteration>,
    },
    /// The quorum as the leader sees it (DescribeQuorum), encoded as Kafka's response.
    DescribeQuorum,
    /// KIP-853 AddRaftVoter: `addr` is the new voter's controller listener.
    AddVoter {
        node: i32,
        directory_id: [u8; 16],
        addr: String,
    },
    /// KIP-853 RemoveRaftVoter.
    RemoveVoter {
        node: i32,
        directory_id: Option<[u8; 16]>,
    },
}

impl ControllerCall {
    fn kind(&self) -> &'static str {
        match self {
            ControllerCall::RegisterController { .. } => "register_controller",
            ControllerCall::RegisterBroker { .. } => "register_broker",
            ControllerCall::Heartbeat { .. } => "heartbeat",
            ControllerCall::CreateTopic { .. } => "create_topic",
            ControllerCall::DeleteTopic { .. } => "delete_topic",
            ControllerCall::CreatePartitions { .. } => "create_partitions",
            ControllerCall::AlterTopicConfig { .. } => "alter_topic_config",
            ControllerCall::AlterBrokerConfig { .. } => "alter_broker_config",
            ControllerCall::AllocateProducerIds { .. } => "allocate_producer_ids",
            ControllerCall::AlterPartition { .. } => "alter_partition",
            ControllerCall::ElectLeaders { .. } => "elect_leaders",
            ControllerCall::AlterReassignments { .. } => "alter_reassignments",
            ControllerCall::AlterScram { .. } => "alter_scram",
            ControllerCall::CreateAcls { .. } => "create_acls",
            ControllerCall::DeleteAcls { .. } => "delete_acls",
            ControllerCall::AlterClientQuotas { .. } => "alter_client_quotas",
            ControllerCall::DescribeQuorum => "describe_quorum",
            ControllerCall::AddVoter { .. } => "add_voter",
            ControllerCall::RemoveVoter { .. } => "remove_voter",
        }
    }
}

/// One ACL binding as it travels to the controller (Kafka's codes).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WireAcl {
    pub resource_type: i8,
    pub resource_name: String,
    pub pattern_type: i8,
    pub principal: String,
    pub host: String,
    pub operation: i8,
    pub permission_type: i8,
}

impl From<&WireAcl> for skein_metadata::image::AclEntry {
    fn from(a: &WireAcl) -> Self {
        skein_metadata::image::AclEntry {
            resource_type: a.resource_type,
            resource_name: a.resource_name.clone(),
            pattern_type: a.pattern_type,
            principal: a.principal.clone(),
            host: a.host.clone(),
            operation: a.operation,
            permission_type: a.permission_type,
        }
    }
}

/// The controller's decision on CreateAcls: a record per new binding.
fn create_acls(image: &MetadataImage, acls: &[WireAcl]) -> Outcome<Answer> {
    let existing: std::collections::BTreeSet<&skein_metadata::image::AclEntry> =
        image.acls().values().collect();
    let mut added = std::collections::BTreeSet::new();
    let mut records = Vec::new();
    for a in acls {
        let entry = skein_metadata::image::AclEntry::from(a);
        if existing.contains(&entry) || added.contains(&entry) {
            continue;
        }
        records.push(entry.to_record(crate::broker::random_uuid()).into());
        added.insert(entry);
    }
    Outcome {
        records,
        reply: Answer::Results {
            results: acls.iter().map(|_| (0, None)).collect(),
        },
    }
}

/// The controller's decision on DeleteAcls: a removal per id still present.
fn delete_acls(image: &MetadataImage, ids: &[[u8; 16]]) -> Outcome<Answer> {
    use skein_protocol::metadata_records::RemoveAccessControlEntryRecord;
    let mut seen = std::collections::BTreeSet::new();
    let records: Vec<skein_protocol::MetadataRecord> = ids
        .iter()
        .filter(|id| image.acls().contains_key(&Uuid(**id)) && seen.insert(**id))
        .map(|id| {
            RemoveAccessControlEntryRecord {
                id: Uuid(*id),
                ..Default::default()
            }
            .into()
        })
        .collect();
    Outcome {
        records,
        reply: Answer::Done,
    }
}

/// One SCRAM credential to set (the stored form, never the password).
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ScramUpsertion {
    pub user: String,
    pub mechanism: i8,
    pub salt: Vec<u8>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
    pub iterations: i32,
}

impl std::fmt::Debug for ScramUpsertion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramUpsertion")
            .field("user", &self.user)
            .field("mechanism", &self.mechanism)
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

/// One entity's quota changes (see [`ControllerCall::AlterClientQuotas`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClientQuotaAlteration {
    pub entity: Vec<(String, Option<String>)>,
    /// (key, value, remove).
    pub ops: Vec<(String, f64, bool)>,
}

// The broker refuses NaN values before a call is made, so equality is total.
impl Eq for ClientQuotaAlteration {}

/// The controller's decision on an AlterClientQuotas call: one `ClientQuotaRecord` per op
/// that changes something (as Kafka's controller: removing a key the entity does not have,
/// or setting the value it has, writes nothing).
fn alter_client_quotas(
    image: &MetadataImage,
    entries: &[ClientQuotaAlteration],
) -> Outcome<Answer> {
    use skein_protocol::metadata_records::client_quota_record::EntityData;
    use skein_protocol::metadata_records::ClientQuotaRecord;
    let mut records = Vec::new();
    for e in entries {
        let entity: Vec<EntityData> = e
            .entity
            .iter()
            .map(|(t, n)| EntityData {
                entity_type: t.clone(),
                entity_name: n.clone(),
                ..Default::default()
            })
            .collect();
        let current = skein_metadata::image::quota_entity(e.entity.iter().cloned())
            .and_then(|entity| image.client_quotas().get(&entity));
        for (key, value, remove) in &e.ops {
            let now = current.and_then(|c| c.get(key)).map(|v| v.0);
            if (*remove && now.is_none()) || (!*remove && now == Some(*value)) {
                continue;
            }
            records.push(
                ClientQuotaRecord {
                    entity: entity.clone(),
                    key: key.clone(),
                    value: if *remove { 0.0 } else { *value },
                    remove: *remove,
                    ..Default::default()
                }
                .into(),
            );
        }
    }
    Outcome {
        records,
        reply: Answer::Results {
            results: entries.iter().map(|_| (0, None)).collect(),
        },
    }
}

/// The controller's decision on an AlterScram call: records and one result per user.
fn alter_scram(
    image: &MetadataImage,
    deletions: &[(String, i8)],
    upsertions: &[ScramUpsertion],
) -> Outcome<Answer> {
    use skein_protocol::metadata_records::{
        RemoveUserScramCredentialRecord, UserScramCredentialRecord,
    };
    let mut users: Vec<String> = Vec::new();
    let mut failed: std::collections::BTreeMap<String, (i16, String)> = Default::default();
    for (user, m) in deletions {
        if !users.contains(user) {
            users.push(user.clone());
        }
        if image.scram_credential(user, *m).is_none() && !failed.contains_key(user) {
            failed.insert(
                user.clone(),
                (
                    crate::sasl::RESOURCE_NOT_FOUND.0,
                    "Attempt to delete a user credential that does not exist".into(),
                ),
            );
        }
    }
    for u in upsertions {
        if !users.contains(&u.user) {
            users.push(u.user.clone());
        }
    }
    let mut records = Vec::new();
    for (user, m) in deletions {
        if !failed.contains_key(user) {
            records.push(
                RemoveUserScramCredentialRecord {
                    name: user.clone(),
                    mechanism: *m,
                    ..Default::default()
                }
                .into(),
            );
        }
    }
    for u in upsertions {
        if !failed.contains_key(&u.user) {
            records.push(
                UserScramCredentialRecord {
                    name: u.user.clone(),
                    mechanism: u.mechanism,
                    salt: Bytes::from(u.salt.clone()),
                    stored_key: Bytes::from(u.stored_key.clone()),
                    server_key: Bytes::from(u.server_key.clone()),
                    iterations: u.iterations,
                    ..Default::default()
                }
                .into(),
            );
        }
    }
    let results = users
        .iter()
        .map(|u| match failed.get(u) {
            Some((code, message)) => (*code, Some(message.clone())),
            None => (0, None),
        })
        .collect();
    Outcome {
        records,
        reply: Answer::Results { results },
    }
}

/// What a call gave back.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum Answer {
    Done,
    Registered {
        broker_epoch: i64,
    },
    Heartbeat {
        is_caught_up: bool,
        is_fenced: bool,
        should_shut_down: bool,
    },
    ProducerIds {
        first: i64,
        len: i32,
    },
    /// ElectLeaders' per-partition results: (topic, partition, error code, message).
    Elections {
        results: Vec<(String, i32, i16, Option<String>)>,
    },
    /// Per-item results in request order: (error code, message), 0 for success.
    Results {
        results: Vec<(i16, Option<String>)>,
    },
    /// A Kafka response, encoded by the leader.
    Encoded {
        bytes: Vec<u8>,
    },
}

/// A config change for the controller: each `(key, Some(value))` sets, `(key, None)` deletes.
fn config_change(resource: ConfigResource, ops: &[(String, Option<String>)]) -> AlterConfigs {
    AlterConfigs {
        resource,
        ops: ops
            .iter()
            .map(|(k, v)| {
                let op = match v {
                    Some(v) => ConfigOp::Set(v.clone()),
                    None => ConfigOp::Delete,
                };
                (k.clone(), op)
            })
            .collect(),
    }
}

/// The controller's reply on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Reply {
    /// The answer and the metadata offset the caller must apply before using it.
    Ok {
        answer: Answer,
        offset: u64,
    },
    Err {
        code: i16,
        message: String,
    },
}

fn api(code: ErrorCode, message: impl Into<String>) -> ApiError {
    ApiError::new(code, message)
}

/// The first per-item error of a batch operation, if any.
fn first_error<T>(results: impl IntoIterator<Item = Result<T, ApiError>>) -> Result<(), ApiError> {
    for r in results {
        r?;
    }
    Ok(())
}

/// The active controller's decision for one call.
pub(crate) fn decide(
    call: &ControllerCall,
    c: &mut QuorumController,
    image: &MetadataImage,
    now: u64,
) -> Result<Outcome<Answer>, ApiError> {
    fn done<T>(o: Outcome<T>, answer: Answer) -> Outcome<Answer> {
        Outcome {
            records: o.records,
            reply: answer,
        }
    }
    match call {
        ControllerCall::RegisterController {
            node,
            directory_id,
            endpoints,
        } => {
            let endpoints: Vec<Endpoint> = endpoints.iter().map(Endpoint::from).collect();
            let o = c.register_controller(image, *node, Uuid(*directory_id), &endpoints)?;
            Ok(done(o, Answer::Done))
        }
        ControllerCall::RegisterBroker {
            broker_id,
            incarnation_id,
            endpoints,
            rack,
            previous_broker_epoch,
        } => {
            let r = RegisterBroker {
                broker_id: *broker_id,
                incarnation_id: Uuid(*incarnation_id),
                endpoints: endpoints.iter().map(Endpoint::from).collect(),
                rack: rack.clone(),
                previous_broker_epoch: *previous_broker_epoch,
            };
            let o = c.register_broker(image, &r, now)?;
            let epoch = o.reply.broker_epoch;
            Ok(done(
                o,
                Answer::Registered {
                    broker_epoch: epoch,
                },
            ))
        }
        ControllerCall::Heartbeat {
            broker_id,
            broker_epoch,
            metadata_offset,
            want_fence,
            want_shutdown,
        } => {
            let hb = Heartbeat {
                broker_id: *broker_id,
                broker_epoch: *broker_epoch,
                metadata_offset: *metadata_offset,
                want_fence: *want_fence,
                want_shutdown: *want_shutdown,
            };
            let o = c.heartbeat(image, &hb, now)?;
            let r = o.reply;
            Ok(done(
                o,
                Answer::Heartbeat {
                    is_caught_up: r.is_caught_up,
                    is_fenced: r.is_fenced,
                    should_shut_down: r.should_shut_down,
                },
            ))
        }
        ControllerCall::CreateTopic {
            name,
            partitions,
            replication_factor,
            configs,
            seed,
            assignments,
        } => {
            let new = NewTopic {
                name: name.clone(),
                num_partitions: *partitions,
                replication_factor: *replication_factor,
                assignments: assignments.clone(),
                configs: configs.clone(),
            };
            let o = c.create_topics(image, std::slice::from_ref(&new), false, *seed);
            first_error(o.reply.iter().map(|r| r.result.clone().map(|_| ())))?;
            Ok(done(o, Answer::Done))
        }
        ControllerCall::DeleteTopic { id } => {
            let o = c.delete_topics(image, &[TopicRef::Id(Uuid(*id))]);
            first_error(o.reply.iter().map(|r| r.result.clone().map(|_| ())))?;
            Ok(done(o, Answer::Done))
        }
        ControllerCall::CreatePartitions {
            name,
            count,
            seed,
            assignments,
        } => {
            let growth = NewPartitions {
                name: name.clone(),
                count: *count,
                assignments: assignments.clone(),
            };
            let o = c.create_partitions(image, std::slice::from_ref(&growth), false, *seed);
            first_error(o.reply.iter().map(|r| r.result.clone()))?;
            Ok(done(o, Answer::Done))
        }
        ControllerCall::AlterTopicConfig { name, ops } => {
            let change = config_change(ConfigResource::topic(name.clone()), ops);
            let mut o = c.incremental_alter_configs(image, std::slice::from_ref(&change), false);
            first_error(o.reply.iter().map(|r| r.result.clone()))?;
            // Turning unclean elections on elects leaders for the topic's leaderless
            // partitions in the same entry (Kafka does too).
            let enables_unclean = ops.iter().any(|(k, v)| {
                k == UNCLEAN_LEADER_ELECTION
                    && v.as_deref()
                        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
            });
            if enables_unclean {
                let elected = c.elect_unclean_leaders(image, Some(name));
                for m in &elected.reply {
                    tracing::warn!(topic = %m.topic, partition = m.partition, leader = m.to, unclean = m.unclean, "elected a leader after unclean.leader.election.enable was turned on");
                }
                o.records.extend(elected.records);
            }
            Ok(done(o, Answer::Done))
        }
        ControllerCall::AlterBrokerConfig { name, ops } => {
            let change = config_change(ConfigResource::broker(name.clone()), ops);
            let o = c.incremental_alter_configs(image, std::slice::from_ref(&change), false);
            first_error(o.reply.iter().map(|r| r.result.clone()))?;
            Ok(done(o, Answer::Done))
        }
        ControllerCall::AllocateProducerIds {
            broker_id,
            broker_epoch,
        } => {
            let o = c.allocate_producer_ids(image, *broker_id, *broker_epoch)?;
            let b = o.reply;
            Ok(done(
                o,
                Answer::ProducerIds {
                    first: b.first,
                    len: b.len,
                },
            ))
        }
        ControllerCall::AlterPartition {
            broker_id,
            broker_epoch,
            topic_id,
            partition,
            leader_epoch,
            partition_epoch,
            new_isr,
            leader_recovery_state,
        } => {
            let change = AlterPartition {
                topic_id: Uuid(*topic_id),
                partition: *partition,
                leader_epoch: *leader_epoch,
                partition_epoch: *partition_epoch,
                new_isr: new_isr.clone(),
            };
            match leader_recovery_state {
                None => {}
                Some(0) => {
                    let o =
                        c.alter_partition_recovered(image, *broker_id, *broker_epoch, &change)?;
                    return Ok(done(o, Answer::Done));
                }
                Some(other) => {
                    return Err(api(
                        ErrorCode::INVALID_REQUEST,
                        format!("a leader cannot ask for leader recovery state {other}"),
                    ))
                }
            }
            let o = c.alter_partition(image, *broker_id, *broker_epoch, &[change])?;
            first_error(o.reply.iter().map(|r| r.result.clone().map(|_| ())))?;
            Ok(done(o, Answer::Done))
        }
        ControllerCall::ElectLeaders {
            election_type,
            partitions,
        } => {
            let Some(election) = ElectionType::from_i8(*election_type) else {
                return Err(api(
                    ErrorCode::INVALID_REQUEST,
                    format!("Unknown election type {election_type}"),
                ));
            };
            let o = c.elect_leaders(image, election, partitions.as_deref());
            let results = o
                .reply
                .iter()
                .map(|r| match &r.result {
                    Ok(()) => (r.topic.clone(), r.partition, 0, None),
                    Err(e) => (
                        r.topic.clone(),
                        r.partition,
                        e.code.code(),
                        Some(e.message.clone()),
                    ),
                })
                .collect();
            Ok(done(o, Answer::Elections { results }))
        }
        ControllerCall::AlterReassignments { reassignments } => {
            let requests: Vec<Reassignment> = reassignments
                .iter()
                .map(|(topic, partition, replicas)| Reassignment {
                    topic: topic.clone(),
                    partition: *partition,
                    replicas: replicas.clone(),
                })
                .collect();
            let o = c.alter_partition_reassignments(image, &requests);
            let results = o
                .reply
                .iter()
                .map(|r| match &r.result {
                    Ok(()) => (0, None),
                    Err(e) => (e.code.0, Some(e.message.clone())),
                })
                .collect();
            Ok(done(o, Answer::Results { results }))
        }
        ControllerCall::AlterScram {
            deletions,
            upsertions,
        } => Ok(alter_scram(image, deletions, upsertions)),
        ControllerCall::CreateAcls { acls } => Ok(create_acls(image, acls)),
        ControllerCall::DeleteAcls { ids } => Ok(delete_acls(image, ids)),
        ControllerCall::AlterClientQuotas { entries } => Ok(alter_client_quotas(image, entries)),
        ControllerCall::DescribeQuorum
        | ControllerCall::AddVoter { .. }
        | ControllerCall::RemoveVoter { .. } => Err(api(
            ErrorCode::INVALID_REQUEST,
            "not a metadata change of the controller",
        )),
    }
}

/// Decodes a forwarded call.
fn decode_call(bytes: &[u8]) -> Result<ControllerCall, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        api(
            ErrorCode::INVALID_REQUEST,
            format!("undecodable controller call: {e}"),
        )
    })
}

fn encode_reply(r: &Result<(Answer, u64), ApiError>) -> Bytes {
    let reply = match r {
        Ok((answer, offset)) => Reply::Ok {
            answer: answer.clone(),
            offset: *offset,
        },
        Err(e) => Reply::Err {
            code: e.code.0,
            message: e.message.clone(),
        },
    };
    Bytes::from(serde_json::to_vec(&reply).unwrap_or_default())
}

impl Broker {
    /// Serves calls forwarded by other nodes (the controller listener's application
    /// channel). The handler holds the broker weakly: a stopping broker answers an error.
    pub(crate) fn install_controller_handler(self: &Arc<Self>) {
        let Some(node) = self.quorum.raft() else {
            return;
        };
        let me: Weak<Broker> = Arc::downgrade(self);
        node.set_app_handler(Arc::new(move |bytes: Bytes| {
            let me = me.clone();
            Box::pin(async move {
                let result = match (me.upgrade(), decode_call(&bytes)) {
                    (Some(broker), Ok(call)) => broker.run_here(&call).await,
                    (None, _) => Err(api(
                        ErrorCode::NOT_CONTROLLER,
                        "this controller is shutting down",
                    )),
                    (_, Err(e)) => Err(e),
                };
                encode_reply(&result)
            })
        }));
    }

    /// Runs `call` on the active controller (here or forwarded), retrying while no
    /// controller answers, and returns once this node has applied the change.
    pub async fn controller_call(
        self: &Arc<Self>,
        call: ControllerCall,
    ) -> Result<Answer, ApiError> {
        self.controller_call_within(call, CALL_TIMEOUT).await
    }

    /// [`Broker::controller_call`] answered within `timeout` (a request's own timeout).
    pub async fn controller_call_within(
        self: &Arc<Self>,
        call: ControllerCall,
        timeout: Duration,
    ) -> Result<Answer, ApiError> {
        let deadline = tokio::time::Instant::now() + timeout.min(CALL_TIMEOUT);
        let Some(node) = self.quorum.raft().cloned() else {
            return Err(api(
                ErrorCode::NOT_CONTROLLER,
                "The metadata log is not running yet.",
            ));
        };
        let mut last = api(ErrorCode::NOT_CONTROLLER, "No controller is elected.");
        loop {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(last);
            }
            let result = if node.is_leader() {
                // A leader that lost its quorum cannot commit: answer by the deadline.
                match tokio::time::timeout_at(deadline, self.run_here(&call)).await {
                    Ok(r) => r,
                    Err(_) => Err(api(
                        ErrorCode::REQUEST_TIMED_OUT,
                        "The metadata change was not committed in time; it may or may not have been made.",
                    )),
                }
            } else {
                let body = Bytes::from(serde_json::to_vec(&call).unwrap_or_default());
                match node.app_client().send_to_leader(body, deadline - now).await {
                    Ok(bytes) => match serde_json::from_slice::<Reply>(&bytes) {
                        Ok(Reply::Ok { answer, offset }) => Ok((answer, offset)),
                        Ok(Reply::Err { code, message }) => Err(api(ErrorCode(code), message)),
                        Err(e) => Err(api(
                            ErrorCode::UNKNOWN_SERVER_ERROR,
                            format!("undecodable answer of the controller: {e}"),
                        )),
                    },
                    Err(skein_raft::net::AppError::Timeout) => Err(api(
                        ErrorCode::REQUEST_TIMED_OUT,
                        "The controller did not answer in time; the change may or may not have been made.",
                    )),
                    Err(e) => Err(api(
                        ErrorCode::NOT_CONTROLLER,
                        format!("No controller answered: {e}"),
                    )),
                }
            };
            match result {
                Ok((answer, offset)) => {
                    self.wait_applied(offset, deadline).await?;
                    return Ok(answer);
                }
                Err(e) if e.code == ErrorCode::NOT_CONTROLLER => {
                    tracing::debug!(call = call.kind(), "{}", e.message);
                    last = e;
                    let pause = tokio::time::Instant::now() + Duration::from_millis(50);
                    tokio::time::sleep_until(pause.min(deadline)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Runs `call` on this node, which must be the active controller.
    async fn run_here(&self, call: &ControllerCall) -> Result<(Answer, u64), ApiError> {
        match call {
            ControllerCall::DescribeQuorum => {
                let Some(node) = self.quorum.raft().filter(|n| n.is_leader()) else {
                    return Err(api(
                        ErrorCode::NOT_CONTROLLER,
                        "This node is not the active controller.",
                    ));
                };
                let resp = crate::api::quorum::describe_here(self, &node.status());
                Ok((crate::api::quorum::encode_for_forwarding(resp)?, 0))
            }
            ControllerCall::AddVoter { .. } | ControllerCall::RemoveVoter { .. } => {
                let answer = crate::api::quorum::change_membership(self, call).await?;
                Ok((answer, 0))
            }
            _ => self.quorum.run_at(self.now_ms(), call).await,
        }
    }

    /// Waits until this node has applied metadata offset `offset`.
    async fn wait_applied(
        &self,
        offset: u64,
        deadline: tokio::time::Instant,
    ) -> Result<(), ApiError> {
        let Some(node) = self.quorum.raft() else {
            return Ok(());
        };
        let mut applied = node.applied();
        loop {
            if applied.borrow_and_update().is_some_and(|a| a >= offset) {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, applied.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    return Err(api(
                        ErrorCode::REQUEST_TIMED_OUT,
                        "the metadata log stopped",
                    ))
                }
                Err(_) => {
                    return Err(api(
                        ErrorCode::REQUEST_TIMED_OUT,
                        format!(
                            "The change was committed at metadata offset {offset}, but this broker had not applied it in time."
                        ),
                    ))
                }
            }
        }
    }

    /// [`Broker::controller_call`] from synchronous code (handlers that still answer at
    /// once): the call runs as a task of the runtime while this worker waits with the
    /// runtime's other workers free. If the runtime shuts down meanwhile, the caller gets an
    /// error rather than a panic. Never call this while holding a lock other workers may
    /// wait for.
    pub(crate) fn controller_call_blocking(
        &self,
        call: ControllerCall,
    ) -> Result<Answer, ApiError> {
        self.controller_call_blocking_within(call, CALL_TIMEOUT)
    }

    /// [`Broker::controller_call_blocking`] answered within `timeout`.
    pub(crate) fn controller_call_blocking_within(
        &self,
        call: ControllerCall,
        timeout: Duration,
    ) -> Result<Answer, ApiError> {
        use tokio::runtime::{Handle, RuntimeFlavor};
        let Some(broker) = self.me.get().and_then(Weak::upgrade) else {
            return Err(api(
                ErrorCode::UNKNOWN_SERVER_ERROR,
                "the broker is shutting down",
            ));
        };
        let handle = match Handle::try_current() {
            Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => h,
            _ => {
                return Err(api(
                    ErrorCode::UNKNOWN_SERVER_ERROR,
                    "metadata changes need the broker's multi-threaded runtime",
                ))
            }
        };
        let (tx, rx) = std::sync::mpsc::channel();
        handle.spawn(async move {
            let _ = tx.send(broker.controller_call_within(call, timeout).await);
        });
        tokio::task::block_in_place(|| rx.recv()).unwrap_or_else(|_| {
            Err(api(
                ErrorCode::REQUEST_TIMED_OUT,
                "the broker is shutting down; the metadata change may not have been made",
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_and_replies_round_trip_as_json() {
        let call = ControllerCall::AlterTopicConfig {
            name: "t".into(),
            ops: vec![
                ("retention.ms".into(), Some("1000".into())),
                ("x".into(), None),
            ],
        };
        let bytes = serde_json::to_vec(&call).unwrap();
        assert_eq!(decode_call(&bytes).unwrap(), call);
        let r = encode_reply(&Ok((Answer::ProducerIds { first: 7, len: 3 }, 42)));
        match serde_json::from_slice::<Reply>(&r).unwrap() {
            Reply::Ok { answer, offset } => {
                assert_eq!(answer, Answer::ProducerIds { first: 7, len: 3 });
                assert_eq!(offset, 42);
            }
            other => panic!("unexpected {other:?}"),
        }
        let e = decode_call(b"{\"call\":\"nope\"}").unwrap_err();
        assert_eq!(e.code, ErrorCode::INVALID_REQUEST);
    }
}
