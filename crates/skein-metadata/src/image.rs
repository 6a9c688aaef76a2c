//! The metadata image: the cluster's metadata as of one log offset, built by applying the
//! committed metadata log in order, and what each entry changed ([`MetadataDelta`]).
//!
//! Every node (broker or controller) holds one. `apply_entry` takes one committed entry (one
//! atomic batch): either every record in it applies or none does, and the image is unchanged
//! when it returns an error (an undo log restores what the entry touched). Records are checked
//! against the image: a partition for an unknown topic, an ISR that is not a subset of the
//! replicas, a leader outside the ISR, a stale broker epoch or an epoch overflow are errors,
//! never panics.
//!
//! `snapshot` writes the image as one batch of records (controllers, brokers, topics with their
//! partitions, configs, the producer-id block) and `restore` rebuilds an equal image from it.
//! Two facts have no field in Kafka's records and travel in tagged fields Skein reserves
//! ([`SKEIN_TAG_REGISTRATION_OFFSET`]): the log offset of a broker's registration, written in
//! snapshots only (in a live entry it is the entry's own offset). A controller's directory id
//! (KIP-853) travels in `RegisterControllerRecord.IncarnationId`.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use skein_protocol::metadata_records::AccessControlEntryRecord;
use skein_protocol::metadata_records::{
    client_quota_record, register_broker_record::BrokerEndpoint,
    register_controller_record::ControllerEndpoint, BrokerRegistrationChangeRecord,
    ClientQuotaRecord, ConfigRecord, PartitionChangeRecord, PartitionRecord, ProducerIdsRecord,
    RegisterBrokerRecord, RegisterControllerRecord, RemoveTopicRecord, TopicRecord,
    UserScramCredentialRecord,
};
use skein_protocol::{MetadataRecord, Uuid};

use crate::batch::{decode_batch, decode_batch_with_limits, encode_batch, SNAPSHOT_LIMITS};
use crate::Error;

/// Kafka's `ConfigResource.Type.TOPIC`.
pub const TOPIC_RESOURCE: i8 = 2;
/// Kafka's `ConfigResource.Type.BROKER` (name `""` is the cluster-wide default).
pub const BROKER_RESOURCE: i8 = 4;

/// A tag Skein reserves in `RegisterBrokerRecord` (far above Kafka's, which are small): the
/// log offset of the registration, as an 8-byte big-endian integer. Written in snapshots only.
pub const SKEIN_TAG_REGISTRATION_OFFSET: u32 = 10_000;

/// Kafka's longest topic name.
pub const MAX_TOPIC_NAME_LEN: usize = 249;

/// "No leader" in partition records.
pub const NO_LEADER: i32 = -1;
/// "Leader unchanged" in `PartitionChangeRecord`.
pub const NO_LEADER_CHANGE: i32 = -2;

/// A config resource: Kafka's resource type number and the resource name (a topic name, or a
/// broker id as text, `""` for the cluster default).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConfigResource {
    pub resource_type: i8,
    pub name: String,
}

impl ConfigResource {
    /// A topic's configs.
    pub fn topic(name: impl Into<String>) -> Self {
        ConfigResource {
            resource_type: TOPIC_RESOURCE,
            name: name.into(),
        }
    }

    /// A broker's configs (`""`: the cluster-wide default).
    pub fn broker(name: impl Into<String>) -> Self {
        ConfigResource {
            resource_type: BROKER_RESOURCE,
            name: name.into(),
        }
    }
}

/// One partition: its replicas (in preferred order), in-sync replicas, leader and epochs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PartitionState {
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// The leader's broker id, or [`NO_LEADER`] (offline).
    pub leader: i32,
    /// Grows with every leader change.
    pub leader_epoch: i32,
    /// Grows with every change of this partition.
    pub partition_epoch: i32,
    /// KIP-704: the leader was elected uncleanly (from outside the ISR) and has not yet told
    /// the controller it recovered (`LeaderRecoveryState` RECOVERING); the ISR may not grow
    /// meanwhile.
    pub leader_recovering: bool,
    /// A reassignment in progress (KIP-455): replicas being added (in `replicas`, catching
    /// up), empty otherwise.
    pub adding_replicas: Vec<i32>,
    /// A reassignment in progress: replicas to remove once every target replica is in the ISR.
    pub removing_replicas: Vec<i32>,
    /// KIP-966 eligible leader replicas: replicas that left the ISR while it was below
    /// `min.insync.replicas` (so the high watermark was frozen and they hold every committed
    /// record); electable when the ISR is empty. Disjoint from the ISR.
    pub elr: Vec<i32>,
    /// KIP-966 last known ELR: members that left the ELR because they shut down uncleanly
    /// (their log may have lost records), kept for operators; cleared with the ELR.
    pub last_known_elr: Vec<i32>,
}

/// `LeaderRecoveryState` RECOVERED and RECOVERING, as the records carry them.
pub const LEADER_RECOVERED: i8 = 0;
pub const LEADER_RECOVERING: i8 = 1;

impl PartitionState {
    /// True when `broker` is one of the replicas.
    pub fn hosts(&self, broker: i32) -> bool {
        self.replicas.contains(&broker)
    }

    /// True while a reassignment is in progress.
    pub fn is_reassigning(&self) -> bool {
        !self.adding_replicas.is_empty() || !self.removing_replicas.is_empty()
    }

    /// The replicas a reassignment in progress moves to (all replicas when none is).
    pub fn target_replicas(&self) -> Vec<i32> {
        self.replicas
            .iter()
            .copied()
            .filter(|r| !self.removing_replicas.contains(r))
            .collect()
    }

    /// The replicas before a reassignment in progress (all replicas when none is).
    pub fn original_replicas(&self) -> Vec<i32> {
        self.replicas
            .iter()
            .copied()
            .filter(|r| !self.adding_replicas.contains(r))
            .collect()
    }

    /// Checks the shape every partition must have.
    fn validate(&self) -> Result<(), String> {
        if self.replicas.is_empty() {
            return Err("no replicas".into());
        }
        if let Some(r) = self.replicas.iter().find(|&&r| r < 0) {
            return Err(format!("negative replica id {r}"));
        }
        if has_duplicates(&self.replicas) {
            return Err(format!("duplicate replicas {:?}", self.replicas));
        }
        if has_duplicates(&self.isr) {
            return Err(format!("duplicate ISR members {:?}", self.isr));
        }
        if let Some(r) = self.isr.iter().find(|r| !self.replicas.contains(r)) {
            return Err(format!("ISR member {r} is not a replica"));
        }
        if self.leader != NO_LEADER && !self.isr.contains(&self.leader) {
            return Err(format!(
                "leader {} is not in the ISR {:?}",
                self.leader, self.isr
            ));
        }
        if self.leader_epoch < 0 || self.partition_epoch < 0 {
            return Err("negative epoch".into());
        }
        if has_duplicates(&self.adding_replicas) || has_duplicates(&self.removing_replicas) {
            return Err("duplicate adding or removing replicas".into());
        }
        if let Some(r) = self
            .adding_replicas
            .iter()
            .chain(&self.removing_replicas)
            .find(|r| !self.replicas.contains(r))
        {
            return Err(format!("adding or removing replica {r} is not a replica"));
        }
        if let Some(r) = self
            .adding_replicas
            .iter()
            .find(|r| self.removing_replicas.contains(r))
        {
            return Err(format!("replica {r} is both added and removed"));
        }
        if self.target_replicas().is_empty() {
            return Err("a reassignment removes every replica".into());
        }
        if has_duplicates(&self.elr) || has_duplicates(&self.last_known_elr) {
            return Err("duplicate eligible leader replicas".into());
        }
        if let Some(r) = self.elr.iter().find(|r| !self.replicas.contains(r)) {
            return Err(format!("eligible leader replica {r} is not a replica"));
        }
        if let Some(r) = self.elr.iter().find(|r| self.isr.contains(r)) {
            return Err(format!("replica {r} is both in the ISR and the ELR"));
        }
        Ok(())
    }
}

fn has_duplicates(ids: &[i32]) -> bool {
    let set: BTreeSet<i32> = ids.iter().copied().collect();
    set.len() != ids.len()
}

/// A topic: its id, name and partitions (indexed by partition id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicImage {
    pub id: Uuid,
    pub name: String,
    pub partitions: Vec<PartitionState>,
}

/// A listener of a broker or controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The listener name (`PLAINTEXT`...).
    pub name: String,
    pub host: String,
    pub port: u16,
    /// Kafka's security protocol id (0 = PLAINTEXT).
    pub security_protocol: i16,
}

/// A registered broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerRegistration {
    pub id: i32,
    /// Grows with every registration of this node id.
    pub epoch: i64,
    /// The broker process's incarnation (a new one for every start).
    pub incarnation_id: Uuid,
    pub endpoints: Vec<Endpoint>,
    pub rack: Option<String>,
    pub fenced: bool,
    pub in_controlled_shutdown: bool,
    /// The log offset of the registration: the broker is unfenced once its metadata has
    /// caught up to it.
    pub registration_offset: u64,
}

impl BrokerRegistration {
    /// Unfenced and not shutting down: may lead and receive new replicas.
    pub fn is_active(&self) -> bool {
        !self.fenced && !self.in_controlled_shutdown
    }
}

/// A registered controller (a voter of the quorum).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerRegistration {
    pub id: i32,
    /// The directory id of its data directory (KIP-853).
    pub directory_id: Uuid,
    pub endpoints: Vec<Endpoint>,
}

/// A user's SCRAM credential for one mechanism (Kafka's `ScramMechanism` number), as
/// `UserScramCredentialRecord` carries it: never the password. Its `Debug` shows only the
/// iteration count.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramCredential {
    pub salt: Bytes,
    pub stored_key: Bytes,
    pub server_key: Bytes,
    pub iterations: i32,
}

impl std::fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramCredential")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

/// One ACL as `AccessControlEntryRecord` carries it (Kafka's codes for the resource type,
/// pattern type, operation and permission; the principal as `Type:Name`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AclEntry {
    pub resource_type: i8,
    pub resource_name: String,
    pub pattern_type: i8,
    pub principal: String,
    pub host: String,
    pub operation: i8,
    pub permission_type: i8,
}

impl AclEntry {
    /// The `AccessControlEntryRecord` that stores this ACL under `id`.
    pub fn to_record(&self, id: Uuid) -> AccessControlEntryRecord {
        AccessControlEntryRecord {
            id,
            resource_type: self.resource_type,
            resource_name: self.resource_name.clone(),
            pattern_type: self.pattern_type,
            principal: self.principal.clone(),
            host: self.host.clone(),
            operation: self.operation,
            permission_type: self.permission_type,
            ..Default::default()
        }
    }
}

/// The ACLs by id. Shared (copy on write) so that readers can tell cheaply whether the ACLs
/// changed since they last looked (`Arc::ptr_eq`).
pub type AclMap = std::sync::Arc<BTreeMap<Uuid, AclEntry>>;
/// A client quota entity as `ClientQuotaRecord` names it: (entity type, name), the name
/// `None` for the type's default, sorted by type (`client-id`, `ip`, `user`).
pub type QuotaEntity = Vec<(String, Option<String>)>;

/// A client quota value (compared by its bits, so that the image stays `Eq`).
#[derive(Debug, Clone, Copy)]
pub struct QuotaValue(pub f64);

impl PartialEq for QuotaValue {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

impl Eq for QuotaValue {}

/// The entity of a `ClientQuotaRecord`, sorted by type; `None` if a type appears twice.
pub fn quota_entity(
    parts: impl IntoIterator<Item = (String, Option<String>)>,
) -> Option<QuotaEntity> {
    let mut e: QuotaEntity = parts.into_iter().collect();
    e.sort();
    let n = e.len();
    e.dedup_by(|a, b| a.0 == b.0);
    (e.len() == n).then_some(e)
}

/// The cluster metadata as of [`MetadataImage::last_offset`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MetadataImage {
    topics: BTreeMap<Uuid, TopicImage>,
    topic_ids: BTreeMap<String, Uuid>,
    configs: BTreeMap<ConfigResource, BTreeMap<String, String>>,
    brokers: BTreeMap<i32, BrokerRegistration>,
    controllers: BTreeMap<i32, ControllerRegistration>,
    next_producer_id: i64,
    /// SCRAM credentials by (user, mechanism).
    scram: BTreeMap<(String, i8), ScramCredential>,
    /// ACLs by id (`AccessControlEntryRecord`).
    acls: AclMap,
    /// Client quotas (KIP-546): per entity, key to value.
    client_quotas: BTreeMap<QuotaEntity, BTreeMap<String, QuotaValue>>,
    last_offset: Option<u64>,
}

/// A partition as a broker needs it to act: which topic, which partition, its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalPartition {
    pub topic_id: Uuid,
    pub topic_name: String,
    pub partition: i32,
    pub state: PartitionState,
}

/// What one broker must do after an entry: lead, follow, or drop partitions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LocalChanges {
    /// Partitions it leads after the entry whose state changed (new leadership, new leader
    /// epoch, or a new ISR to adopt).
    pub leaders: Vec<LocalPartition>,
    /// Partitions it is a follower of after the entry whose state changed.
    pub followers: Vec<LocalPartition>,
    /// Partitions it hosted before the entry and no longer does (deleted topics, replica
    /// moves): close them and delete their data.
    pub removed: Vec<(Uuid, String, i32)>,
}

/// One changed partition: its state before the entry (`None` for a new partition) and after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionDelta {
    pub topic_name: String,
    pub before: Option<PartitionState>,
    pub after: PartitionState,
}

/// A topic removed by the entry, with its partitions as they were before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletedTopic {
    pub id: Uuid,
    pub name: String,
    pub partitions: Vec<PartitionState>,
}

/// One config key changed by the entry (`value: None`: deleted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigChange {
    pub resource: ConfigResource,
    pub name: String,
    pub value: Option<String>,
}

/// What one entry changed. [`MetadataDelta::local_changes`] turns it into what a given broker
/// must do.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MetadataDelta {
    /// The entry's offset.
    pub offset: u64,
    /// Topics created by the entry (id, name).
    pub topics_created: Vec<(Uuid, String)>,
    /// Topics deleted by the entry.
    pub topics_deleted: Vec<DeletedTopic>,
    /// Partitions of surviving topics whose state changed, by (topic id, partition id).
    pub partitions: BTreeMap<(Uuid, i32), PartitionDelta>,
    /// Config keys set or deleted (a deleted topic's configs included).
    pub config_changes: Vec<ConfigChange>,
    /// Brokers whose registration changed (registered, fenced, unfenced, shutting down, gone).
    pub brokers_changed: Vec<i32>,
    /// Controllers whose registration changed.
    pub controllers_changed: Vec<i32>,
    /// The next producer id after the entry, when the entry allocated a block.
    pub next_producer_id: Option<i64>,
}

impl MetadataDelta {
    /// True when the entry changed nothing (no-op records only).
    pub fn is_empty(&self) -> bool {
        self.topics_created.is_empty()
            && self.topics_deleted.is_empty()
            && self.partitions.is_empty()
            && self.config_changes.is_empty()
            && self.brokers_changed.is_empty()
            && self.controllers_changed.is_empty()
            && self.next_producer_id.is_none()
    }

    /// What broker `broker` must do: partitions it leads or follows whose state changed, and
    /// partitions it no longer hosts. A broker compares leader epochs itself to skip work it
    /// has done already.
    pub fn local_changes(&self, broker: i32) -> LocalChanges {
        let mut out = LocalChanges::default();
        for ((topic_id, partition), d) in &self.partitions {
            let local = || LocalPartition {
                topic_id: *topic_id,
                topic_name: d.topic_name.clone(),
                partition: *partition,
                state: d.after.clone(),
            };
            if d.after.leader == broker {
                out.leaders.push(local());
            } else if d.after.hosts(broker) {
                out.followers.push(local());
            } else if d.before.as_ref().is_some_and(|b| b.hosts(broker)) {
                out.removed
                    .push((*topic_id, d.topic_name.clone(), *partition));
            }
        }
        for t in &self.topics_deleted {
            for (p, state) in t.partitions.iter().enumerate() {
                if state.hosts(broker) {
                    out.removed.push((t.id, t.name.clone(), p as i32));
                }
            }
        }
        out
    }
}

/// What an entry touched, as it was before the entry: enough to undo it and to compute the
/// delta.
#[derive(Default)]
struct Undo {
    topics: BTreeMap<Uuid, Option<TopicImage>>,
    configs: BTreeMap<ConfigResource, Option<BTreeMap<String, String>>>,
    brokers: BTreeMap<i32, Option<BrokerRegistration>>,
    controllers: BTreeMap<i32, Option<ControllerRegistration>>,
    next_producer_id: Option<i64>,
    scram: BTreeMap<(String, i8), Option<ScramCredential>>,
    acls: BTreeMap<Uuid, Option<AclEntry>>,
    client_quotas: BTreeMap<QuotaEntity, Option<BTreeMap<String, QuotaValue>>>,
}

fn endpoints_from_broker(list: &[BrokerEndpoint]) -> Vec<Endpoint> {
    list.iter()
        .map(|e| Endpoint {
            name: e.name.clone(),
            host: e.host.clone(),
            port: e.port,
            security_protocol: e.security_protocol,
        })
        .collect()
}

fn endpoints_from_controller(list: &[ControllerEndpoint]) -> Vec<Endpoint> {
    list.iter()
        .map(|e| Endpoint {
            name: e.name.clone(),
            host: e.host.clone(),
            port: e.port,
            security_protocol: e.security_protocol,
        })
        .collect()
}

/// The `RegisterBrokerRecord` endpoints for `endpoints`.
pub fn broker_endpoints(endpoints: &[Endpoint]) -> Vec<BrokerEndpoint> {
    endpoints
        .iter()
        .map(|e| BrokerEndpoint {
            name: e.name.clone(),
            host: e.host.clone(),
            port: e.port,
            security_protocol: e.security_protocol,
            ..Default::default()
        })
        .collect()
}

/// The `RegisterControllerRecord` endpoints for `endpoints`.
pub fn controller_endpoints(endpoints: &[Endpoint]) -> Vec<ControllerEndpoint> {
    endpoints
        .iter()
        .map(|e| ControllerEndpoint {
            name: e.name.clone(),
            host: e.host.clone(),
            port: e.port,
            security_protocol: e.security_protocol,
            ..Default::default()
        })
        .collect()
}

impl MetadataImage {
    /// An empty image (nothing applied yet).
    pub fn new() -> Self {
        Self::default()
    }

    /// The offset of the last applied entry (or restored snapshot), if any.
    pub fn last_offset(&self) -> Option<u64> {
        self.last_offset
    }

    /// The SCRAM credential of `user` for `mechanism` (1 SCRAM-SHA-256, 2 SCRAM-SHA-512).
    pub fn scram_credential(&self, user: &str, mechanism: i8) -> Option<&ScramCredential> {
        self.scram.get(&(user.to_string(), mechanism))
    }

    /// Every ACL, by id. A new `Arc` whenever an entry changed them.
    pub fn acls(&self) -> &AclMap {
        &self.acls
    }

    /// Every SCRAM credential, by (user, mechanism).
    pub fn scram_credentials(&self) -> &BTreeMap<(String, i8), ScramCredential> {
        &self.scram
    }

    /// Every client quota, by entity, then key.
    pub fn client_quotas(&self) -> &BTreeMap<QuotaEntity, BTreeMap<String, QuotaValue>> {
        &self.client_quotas
    }

    /// Every topic, by id.
    pub fn topics(&self) -> &BTreeMap<Uuid, TopicImage> {
        &self.topics
    }

    /// The topic with this id.
    pub fn topic(&self, id: Uuid) -> Option<&TopicImage> {
        self.topics.get(&id)
    }

    /// The topic with this name.
    pub fn topic_by_name(&self, name: &str) -> Option<&TopicImage> {
        self.topic_ids.get(name).and_then(|id| self.topics.get(id))
    }

    /// Topic names to ids.
    pub fn topic_ids(&self) -> &BTreeMap<String, Uuid> {
        &self.topic_ids
    }

    /// One partition.
    pub fn partition(&self, topic: Uuid, partition: i32) -> Option<&PartitionState> {
        let p = usize::try_from(partition).ok()?;
        self.topics.get(&topic)?.partitions.get(p)
    }

    /// Every registered broker, by id.
    pub fn brokers(&self) -> &BTreeMap<i32, BrokerRegistration> {
        &self.brokers
    }

    /// One broker's registration.
    pub fn broker(&self, id: i32) -> Option<&BrokerRegistration> {
        self.brokers.get(&id)
    }

    /// Every registered controller, by id.
    pub fn controllers(&self) -> &BTreeMap<i32, ControllerRegistration> {
        &self.controllers
    }

    /// Every config resource with at least one key set.
    pub fn all_configs(&self) -> &BTreeMap<ConfigResource, BTreeMap<String, String>> {
        &self.configs
    }

    /// The keys set on one resource (empty if none).
    pub fn configs(&self, resource: &ConfigResource) -> Option<&BTreeMap<String, String>> {
        self.configs.get(resource)
    }

    /// Partitions without a leader (offline), as (topic name, partition), for health checks
    /// and metrics.
    pub fn offline_partitions(&self) -> Vec<(String, i32)> {
        self.topics
            .values()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.leader == NO_LEADER)
                    .map(move |(p, _)| (t.name.clone(), p as i32))
            })
            .collect()
    }

    /// The ids of fenced brokers.
    pub fn fenced_brokers(&self) -> Vec<i32> {
        self.brokers
            .values()
            .filter(|b| b.fenced)
            .map(|b| b.id)
            .collect()
    }

    /// The first producer id of the next block to allocate.
    pub fn next_producer_id(&self) -> i64 {
        self.next_producer_id
    }

    /// Applies one committed entry at `offset`. Atomic: on error nothing changed.
    pub fn apply_entry(&mut self, offset: u64, entry: &[u8]) -> Result<MetadataDelta, Error> {
        if let Some(last) = self.last_offset {
            if offset <= last {
                return Err(Error::OffsetNotIncreasing { offset, last });
            }
        }
        let records = decode_batch(entry)?;
        self.apply_records(offset, &records)
    }

    /// Applies already decoded records as one entry at `offset`. Atomic: on error nothing
    /// changed.
    pub fn apply_records(
        &mut self,
        offset: u64,
        records: &[MetadataRecord],
    ) -> Result<MetadataDelta, Error> {
        if let Some(last) = self.last_offset {
            if offset <= last {
                return Err(Error::OffsetNotIncreasing { offset, last });
            }
        }
        let mut undo = Undo::default();
        for record in records {
            if let Err(reason) = self.apply_one(offset, record, &mut undo) {
                self.rollback(undo);
                return Err(Error::Record {
                    offset,
                    record: record.record_type().name(),
                    reason,
                });
            }
        }
        self.last_offset = Some(offset);
        Ok(self.delta(offset, undo))
    }

    /// The image as one batch of records, for a snapshot at [`Self::last_offset`].
    pub fn snapshot(&self) -> Bytes {
        encode_batch(&self.snapshot_records())
    }

    /// The records [`Self::snapshot`] encodes.
    pub fn snapshot_records(&self) -> Vec<MetadataRecord> {
        let mut out = Vec::new();
        for c in self.controllers.values() {
            out.push(
                RegisterControllerRecord {
                    controller_id: c.id,
                    incarnation_id: c.directory_id,
                    end_points: controller_endpoints(&c.endpoints),
                    ..Default::default()
                }
                .into(),
            );
        }
        for b in self.brokers.values() {
            out.push(
                RegisterBrokerRecord {
                    broker_id: b.id,
                    incarnation_id: b.incarnation_id,
                    broker_epoch: b.epoch,
                    end_points: broker_endpoints(&b.endpoints),
                    rack: b.rack.clone(),
                    fenced: b.fenced,
                    in_controlled_shutdown: b.in_controlled_shutdown,
                    unknown_tagged_fields: vec![(
                        SKEIN_TAG_REGISTRATION_OFFSET,
                        Bytes::copy_from_slice(&b.registration_offset.to_be_bytes()),
                    )],
                    ..Default::default()
                }
                .into(),
            );
        }
        for t in self.topics.values() {
            out.push(
                TopicRecord {
                    name: t.name.clone(),
                    topic_id: t.id,
                    ..Default::default()
                }
                .into(),
            );
            for (p, s) in t.partitions.iter().enumerate() {
                out.push(partition_record(t.id, p as i32, s).into());
            }
        }
        for (resource, keys) in &self.configs {
            for (name, value) in keys {
                out.push(
                    ConfigRecord {
                        resource_type: resource.resource_type,
                        resource_name: resource.name.clone(),
                        name: name.clone(),
                        value: Some(value.clone()),
                        ..Default::default()
                    }
                    .into(),
                );
            }
        }
        for ((name, mechanism), c) in &self.scram {
            out.push(
                UserScramCredentialRecord {
                    name: name.clone(),
                    mechanism: *mechanism,
                    salt: c.salt.clone(),
                    stored_key: c.stored_key.clone(),
                    server_key: c.server_key.clone(),
                    iterations: c.iterations,
                    ..Default::default()
                }
                .into(),
            );
        }
        for (id, a) in self.acls.iter() {
            out.push(a.to_record(*id).into());
        }
        for (entity, values) in &self.client_quotas {
            for (key, value) in values {
                out.push(
                    ClientQuotaRecord {
                        entity: entity
                            .iter()
                            .map(|(t, n)| client_quota_record::EntityData {
                                entity_type: t.clone(),
                                entity_name: n.clone(),
                                ..Default::default()
                            })
                            .collect(),
                        key: key.clone(),
                        value: value.0,
                        remove: false,
                        ..Default::default()
                    }
                    .into(),
                );
            }
        }
        if self.next_producer_id != 0 {
            out.push(
                ProducerIdsRecord {
                    broker_id: -1,
                    broker_epoch: -1,
                    next_producer_id: self.next_producer_id,
                    ..Default::default()
                }
                .into(),
            );
        }
        out
    }

    /// Replaces the image with a snapshot's, taken at `offset`. On error the image is
    /// unchanged.
    pub fn restore(&mut self, offset: u64, snapshot: &[u8]) -> Result<(), Error> {
        let records = decode_batch_with_limits(snapshot, SNAPSHOT_LIMITS)?;
        let mut fresh = MetadataImage::new();
        fresh.apply_records(offset, &records)?;
        *self = fresh;
        Ok(())
    }

    fn rollback(&mut self, undo: Undo) {
        for (id, _) in undo.topics.iter() {
            if let Some(current) = self.topics.remove(id) {
                if self.topic_ids.get(&current.name) == Some(id) {
                    self.topic_ids.remove(&current.name);
                }
            }
        }
        for (id, old) in undo.topics {
            if let Some(old) = old {
                self.topic_ids.insert(old.name.clone(), id);
                self.topics.insert(id, old);
            }
        }
        for (resource, old) in undo.configs {
            match old {
                Some(old) => self.configs.insert(resource, old),
                None => self.configs.remove(&resource),
            };
        }
        for (id, old) in undo.brokers {
            match old {
                Some(old) => self.brokers.insert(id, old),
                None => self.brokers.remove(&id),
            };
        }
        for (id, old) in undo.controllers {
            match old {
                Some(old) => self.controllers.insert(id, old),
                None => self.controllers.remove(&id),
            };
        }
        if let Some(old) = undo.next_producer_id {
            self.next_producer_id = old;
        }
        for (key, old) in undo.scram {
            match old {
                Some(old) => self.scram.insert(key, old),
                None => self.scram.remove(&key),
            };
        }
        if !undo.acls.is_empty() {
            let acls = std::sync::Arc::make_mut(&mut self.acls);
            for (id, old) in undo.acls {
                match old {
                    Some(old) => acls.insert(id, old),
                    None => acls.remove(&id),
                };
            }
        }
        for (entity, old) in undo.client_quotas {
            match old {
                Some(old) => self.client_quotas.insert(entity, old),
                None => self.client_quotas.remove(&entity),
            };
        }
    }

    fn delta(&self, offset: u64, undo: Undo) -> MetadataDelta {
        let mut delta = MetadataDelta {
            offset,
            ..Default::default()
        };
        for (id, before) in undo.topics {
            let after = self.topics.get(&id);
            match (before, after) {
                (None, None) => {}
                (None, Some(t)) => {
                    delta.topics_created.push((id, t.name.clone()));
                    for (p, s) in t.partitions.iter().enumerate() {
                        delta.partitions.insert(
                            (id, p as i32),
                            PartitionDelta {
                                topic_name: t.name.clone(),
                                before: None,
                                after: s.clone(),
                            },
                        );
                    }
                }
                (Some(b), None) => delta.topics_deleted.push(DeletedTopic {
                    id,
                    name: b.name,
                    partitions: b.partitions,
                }),
                (Some(b), Some(t)) => {
                    for (p, s) in t.partitions.iter().enumerate() {
                        let before = b.partitions.get(p);
                        if before != Some(s) {
                            delta.partitions.insert(
                                (id, p as i32),
                                PartitionDelta {
                                    topic_name: t.name.clone(),
                                    before: before.cloned(),
                                    after: s.clone(),
                                },
                            );
                        }
                    }
                }
            }
        }
        let empty = BTreeMap::new();
        for (resource, before) in undo.configs {
            let before = before.unwrap_or_default();
            let after = self.configs.get(&resource).unwrap_or(&empty);
            for (name, value) in after {
                if before.get(name) != Some(value) {
                    delta.config_changes.push(ConfigChange {
                        resource: resource.clone(),
                        name: name.clone(),
                        value: Some(value.clone()),
                    });
                }
            }
            for name in before.keys() {
                if !after.contains_key(name) {
                    delta.config_changes.push(ConfigChange {
                        resource: resource.clone(),
                        name: name.clone(),
                        value: None,
                    });
                }
            }
        }
        for (id, before) in undo.brokers {
            if before.as_ref() != self.brokers.get(&id) {
                delta.brokers_changed.push(id);
            }
        }
        for (id, before) in undo.controllers {
            if before.as_ref() != self.controllers.get(&id) {
                delta.controllers_changed.push(id);
            }
        }
        if undo
            .next_producer_id
            .is_some_and(|b| b != self.next_producer_id)
        {
            delta.next_producer_id = Some(self.next_producer_id);
        }
        delta
    }

    fn touch_topic(&self, undo: &mut Undo, id: Uuid) {
        undo.topics
            .entry(id)
            .or_insert_with(|| self.topics.get(&id).cloned());
    }

    fn touch_config(&self, undo: &mut Undo, resource: &ConfigResource) {
        if !undo.configs.contains_key(resource) {
            undo.configs
                .insert(resource.clone(), self.configs.get(resource).cloned());
        }
    }

    fn touch_broker(&self, undo: &mut Undo, id: i32) {
        undo.brokers
            .entry(id)
            .or_insert_with(|| self.brokers.get(&id).cloned());
    }

    fn apply_one(
        &mut self,
        offset: u64,
        record: &MetadataRecord,
        undo: &mut Undo,
    ) -> Result<(), String> {
        match record {
            MetadataRecord::RegisterBroker(r) => {
                if r.broker_id < 0 {
                    return Err(format!("negative broker id {}", r.broker_id));
                }
                if r.broker_epoch < 0 {
                    return Err(format!("negative broker epoch {}", r.broker_epoch));
                }
                if let Some(old) = self.brokers.get(&r.broker_id) {
                    if r.broker_epoch <= old.epoch {
                        return Err(format!(
                            "broker {} epoch {} is not above its current epoch {}",
                            r.broker_id, r.broker_epoch, old.epoch
                        ));
                    }
                }
                let mut registration_offset = offset;
                for (tag, data) in &r.unknown_tagged_fields {
                    if *tag == SKEIN_TAG_REGISTRATION_OFFSET {
                        let raw: [u8; 8] = data[..]
                            .try_into()
                            .map_err(|_| "bad registration offset tag".to_string())?;
                        let o = u64::from_be_bytes(raw);
                        if o > offset {
                            return Err(format!(
                                "registration offset {o} is after the entry's offset {offset}"
                            ));
                        }
                        registration_offset = o;
                    }
                }
                self.touch_broker(undo, r.broker_id);
                self.brokers.insert(
                    r.broker_id,
                    BrokerRegistration {
                        id: r.broker_id,
                        epoch: r.broker_epoch,
                        incarnation_id: r.incarnation_id,
                        endpoints: endpoints_from_broker(&r.end_points),
                        rack: r.rack.clone(),
                        fenced: r.fenced,
                        in_controlled_shutdown: r.in_controlled_shutdown,
                        registration_offset,
                    },
                );
            }
            MetadataRecord::UnregisterBroker(r) => {
                self.check_broker_epoch(r.broker_id, r.broker_epoch)?;
                self.touch_broker(undo, r.broker_id);
                self.brokers.remove(&r.broker_id);
            }
            MetadataRecord::FenceBroker(r) => {
                self.check_broker_epoch(r.id, r.epoch)?;
                self.touch_broker(undo, r.id);
                if let Some(b) = self.brokers.get_mut(&r.id) {
                    b.fenced = true;
                }
            }
            MetadataRecord::UnfenceBroker(r) => {
                self.check_broker_epoch(r.id, r.epoch)?;
                self.touch_broker(undo, r.id);
                if let Some(b) = self.brokers.get_mut(&r.id) {
                    b.fenced = false;
                }
            }
            MetadataRecord::BrokerRegistrationChange(r) => {
                self.check_broker_epoch(r.broker_id, r.broker_epoch)?;
                let fenced = match r.fenced {
                    -1 => Some(false),
                    0 => None,
                    1 => Some(true),
                    other => return Err(format!("bad fenced value {other}")),
                };
                let shutdown = match r.in_controlled_shutdown {
                    0 => None,
                    1 => Some(true),
                    other => return Err(format!("bad in-controlled-shutdown value {other}")),
                };
                self.touch_broker(undo, r.broker_id);
                if let Some(b) = self.brokers.get_mut(&r.broker_id) {
                    if let Some(f) = fenced {
                        b.fenced = f;
                    }
                    if let Some(s) = shutdown {
                        b.in_controlled_shutdown = s;
                    }
                }
            }
            MetadataRecord::RegisterController(r) => {
                if r.controller_id < 0 {
                    return Err(format!("negative controller id {}", r.controller_id));
                }
                undo.controllers
                    .entry(r.controller_id)
                    .or_insert_with(|| self.controllers.get(&r.controller_id).cloned());
                self.controllers.insert(
                    r.controller_id,
                    ControllerRegistration {
                        id: r.controller_id,
                        directory_id: r.incarnation_id,
                        endpoints: endpoints_from_controller(&r.end_points),
                    },
                );
            }
            MetadataRecord::Topic(r) => {
                if r.topic_id.is_zero() {
                    return Err("zero topic id".into());
                }
                if r.name.is_empty() || r.name.len() > MAX_TOPIC_NAME_LEN {
                    return Err(format!("bad topic name length {}", r.name.len()));
                }
                if self.topics.contains_key(&r.topic_id) {
                    return Err(format!("topic id {} exists", r.topic_id));
                }
                if self.topic_ids.contains_key(&r.name) {
                    return Err(format!("topic {:?} exists", r.name));
                }
                self.touch_topic(undo, r.topic_id);
                self.topic_ids.insert(r.name.clone(), r.topic_id);
                self.topics.insert(
                    r.topic_id,
                    TopicImage {
                        id: r.topic_id,
                        name: r.name.clone(),
                        partitions: Vec::new(),
                    },
                );
            }
            MetadataRecord::Partition(r) => {
                let state = PartitionState {
                    replicas: r.replicas.clone(),
                    isr: r.isr.clone(),
                    leader: r.leader,
                    leader_epoch: r.leader_epoch,
                    partition_epoch: r.partition_epoch,
                    leader_recovering: match r.leader_recovery_state {
                        LEADER_RECOVERED => false,
                        LEADER_RECOVERING => true,
                        other => return Err(format!("bad leader recovery state {other}")),
                    },
                    adding_replicas: r.adding_replicas.clone(),
                    removing_replicas: r.removing_replicas.clone(),
                    elr: r.eligible_leader_replicas.clone().unwrap_or_default(),
                    last_known_elr: r.last_known_elr.clone().unwrap_or_default(),
                };
                state.validate()?;
                let Some(topic) = self.topics.get(&r.topic_id) else {
                    return Err(format!("unknown topic id {}", r.topic_id));
                };
                let count = topic.partitions.len();
                let p = usize::try_from(r.partition_id)
                    .ok()
                    .filter(|&p| p <= count)
                    .ok_or_else(|| {
                        format!(
                            "partition {} of a topic with {count} partitions",
                            r.partition_id
                        )
                    })?;
                if let Some(old) = topic.partitions.get(p) {
                    if state.leader_epoch < old.leader_epoch
                        || state.partition_epoch < old.partition_epoch
                    {
                        return Err(format!("partition {p} epochs go backwards"));
                    }
                }
                self.touch_topic(undo, r.topic_id);
                if let Some(topic) = self.topics.get_mut(&r.topic_id) {
                    if p == count {
                        topic.partitions.push(state);
                    } else {
                        topic.partitions[p] = state;
                    }
                }
            }
            MetadataRecord::PartitionChange(r) => {
                let Some(old) = self.partition(r.topic_id, r.partition_id) else {
                    return Err(format!(
                        "unknown partition {} of topic id {}",
                        r.partition_id, r.topic_id
                    ));
                };
                let mut state = old.clone();
                if let Some(replicas) = &r.replicas {
                    state.replicas = replicas.clone();
                }
                if let Some(isr) = &r.isr {
                    state.isr = isr.clone();
                }
                if let Some(adding) = &r.adding_replicas {
                    state.adding_replicas = adding.clone();
                }
                if let Some(removing) = &r.removing_replicas {
                    state.removing_replicas = removing.clone();
                }
                if let Some(elr) = &r.eligible_leader_replicas {
                    state.elr = elr.clone();
                }
                if let Some(last) = &r.last_known_elr {
                    state.last_known_elr = last.clone();
                }
                match r.leader {
                    NO_LEADER_CHANGE => {}
                    l if l >= NO_LEADER => {
                        state.leader = l;
                        state.leader_epoch = state
                            .leader_epoch
                            .checked_add(1)
                            .ok_or("leader epoch overflow")?;
                    }
                    l => return Err(format!("bad leader {l}")),
                }
                match r.leader_recovery_state {
                    -1 => {}
                    LEADER_RECOVERED => state.leader_recovering = false,
                    LEADER_RECOVERING => state.leader_recovering = true,
                    other => return Err(format!("bad leader recovery state {other}")),
                }
                state.partition_epoch = state
                    .partition_epoch
                    .checked_add(1)
                    .ok_or("partition epoch overflow")?;
                state.validate()?;
                self.touch_topic(undo, r.topic_id);
                if let Some(topic) = self.topics.get_mut(&r.topic_id) {
                    topic.partitions[r.partition_id as usize] = state;
                }
            }
            MetadataRecord::RemoveTopic(r) => {
                let Some(topic) = self.topics.get(&r.topic_id) else {
                    return Err(format!("unknown topic id {}", r.topic_id));
                };
                let resource = ConfigResource::topic(topic.name.clone());
                self.touch_topic(undo, r.topic_id);
                self.touch_config(undo, &resource);
                if let Some(topic) = self.topics.remove(&r.topic_id) {
                    self.topic_ids.remove(&topic.name);
                }
                self.configs.remove(&resource);
            }
            MetadataRecord::Config(r) => {
                match r.resource_type {
                    TOPIC_RESOURCE => {
                        if !self.topic_ids.contains_key(&r.resource_name) {
                            return Err(format!("config for unknown topic {:?}", r.resource_name));
                        }
                    }
                    BROKER_RESOURCE => {
                        if !r.resource_name.is_empty()
                            && !r.resource_name.parse::<i32>().is_ok_and(|id| id >= 0)
                        {
                            return Err(format!("bad broker resource {:?}", r.resource_name));
                        }
                    }
                    other => return Err(format!("unsupported config resource type {other}")),
                }
                if r.name.is_empty() {
                    return Err("empty config name".into());
                }
                let resource = ConfigResource {
                    resource_type: r.resource_type,
                    name: r.resource_name.clone(),
                };
                self.touch_config(undo, &resource);
                match &r.value {
                    Some(v) => {
                        self.configs
                            .entry(resource)
                            .or_default()
                            .insert(r.name.clone(), v.clone());
                    }
                    None => {
                        if let Some(keys) = self.configs.get_mut(&resource) {
                            keys.remove(&r.name);
                            if keys.is_empty() {
                                self.configs.remove(&resource);
                            }
                        }
                    }
                }
            }
            MetadataRecord::ProducerIds(r) => {
                if r.next_producer_id <= self.next_producer_id {
                    return Err(format!(
                        "next producer id {} is not above {}",
                        r.next_producer_id, self.next_producer_id
                    ));
                }
                undo.next_producer_id.get_or_insert(self.next_producer_id);
                self.next_producer_id = r.next_producer_id;
            }
            MetadataRecord::UserScramCredential(r) => {
                if r.name.is_empty() || r.iterations <= 0 || r.stored_key.is_empty() {
                    return Err("an empty user, key or iteration count".into());
                }
                let key = (r.name.clone(), r.mechanism);
                let old = self.scram.insert(
                    key.clone(),
                    ScramCredential {
                        salt: r.salt.clone(),
                        stored_key: r.stored_key.clone(),
                        server_key: r.server_key.clone(),
                        iterations: r.iterations,
                    },
                );
                undo.scram.entry(key).or_insert(old);
            }
            MetadataRecord::RemoveUserScramCredential(r) => {
                let key = (r.name.clone(), r.mechanism);
                let old = self.scram.remove(&key);
                undo.scram.entry(key).or_insert(old);
            }
            MetadataRecord::AccessControlEntry(r) => {
                if r.resource_name.is_empty() || r.principal.is_empty() || r.host.is_empty() {
                    return Err("an ACL with an empty resource name, principal or host".into());
                }
                let old = std::sync::Arc::make_mut(&mut self.acls).insert(
                    r.id,
                    AclEntry {
                        resource_type: r.resource_type,
                        resource_name: r.resource_name.clone(),
                        pattern_type: r.pattern_type,
                        principal: r.principal.clone(),
                        host: r.host.clone(),
                        operation: r.operation,
                        permission_type: r.permission_type,
                    },
                );
                undo.acls.entry(r.id).or_insert(old);
            }
            MetadataRecord::RemoveAccessControlEntry(r) => {
                if !self.acls.contains_key(&r.id) {
                    return Err(format!("no ACL with id {}", r.id));
                }
                let Some(old) = std::sync::Arc::make_mut(&mut self.acls).remove(&r.id) else {
                    return Err(format!("no ACL with id {}", r.id));
                };
                undo.acls.entry(r.id).or_insert(Some(old));
            }
            MetadataRecord::ClientQuota(r) => {
                let entity = quota_entity(
                    r.entity
                        .iter()
                        .map(|e| (e.entity_type.clone(), e.entity_name.clone())),
                )
                .filter(|e| !e.is_empty())
                .ok_or("a client quota entity that is empty or names a type twice")?;
                if r.key.is_empty() || (!r.remove && !r.value.is_finite()) {
                    return Err("a client quota with an empty key or a value not finite".into());
                }
                let before = self.client_quotas.get(&entity).cloned();
                undo.client_quotas.entry(entity.clone()).or_insert(before);
                let values = self.client_quotas.entry(entity.clone()).or_default();
                if r.remove {
                    values.remove(&r.key);
                    if values.is_empty() {
                        self.client_quotas.remove(&entity);
                    }
                } else {
                    values.insert(r.key.clone(), QuotaValue(r.value));
                }
            }
            // Harmless: a leader's first entry, or a feature level Skein does not act on yet.
            MetadataRecord::NoOp(_) | MetadataRecord::FeatureLevel(_) => {}
            other => {
                return Err(format!(
                    "{} records are not supported by Skein",
                    other.record_type()
                ))
            }
        }
        Ok(())
    }

    fn check_broker_epoch(&self, id: i32, epoch: i64) -> Result<(), String> {
        match self.brokers.get(&id) {
            None => Err(format!("unknown broker {id}")),
            Some(b) if b.epoch != epoch => Err(format!(
                "broker {id} epoch {epoch}, registered with {}",
                b.epoch
            )),
            Some(_) => Ok(()),
        }
    }
}

/// The `PartitionRecord` for partition `p` of `topic` in `state`.
pub fn partition_record(topic: Uuid, p: i32, state: &PartitionState) -> PartitionRecord {
    PartitionRecord {
        partition_id: p,
        topic_id: topic,
        replicas: state.replicas.clone(),
        isr: state.isr.clone(),
        leader: state.leader,
        leader_epoch: state.leader_epoch,
        partition_epoch: state.partition_epoch,
        leader_recovery_state: if state.leader_recovering {
            LEADER_RECOVERING
        } else {
            LEADER_RECOVERED
        },
        adding_replicas: state.adding_replicas.clone(),
        removing_replicas: state.removing_replicas.clone(),
        // Null when empty, as Kafka writes them.
        eligible_leader_replicas: (!state.elr.is_empty()).then(|| state.elr.clone()),
        last_known_elr: (!state.last_known_elr.is_empty()).then(|| state.last_known_elr.clone()),
        ..Default::default()
    }
}

/// A `RemoveTopicRecord` for `topic`.
pub fn remove_topic_record(topic: Uuid) -> RemoveTopicRecord {
    RemoveTopicRecord {
        topic_id: topic,
        ..Default::default()
    }
}

/// A `BrokerRegistrationChangeRecord` for `broker` at `epoch` (`fenced`: -1 unfence, 0 no
/// change, 1 fence; `shutdown`: 1 enters controlled shutdown).
pub fn broker_change_record(
    broker: i32,
    epoch: i64,
    fenced: i8,
    shutdown: i8,
) -> BrokerRegistrationChangeRecord {
    BrokerRegistrationChangeRecord {
        broker_id: broker,
        broker_epoch: epoch,
        fenced,
        in_controlled_shutdown: shutdown,
        ..Default::default()
    }
}

/// A `PartitionChangeRecord` that changes nothing yet (leader unchanged, nulls elsewhere).
pub fn partition_change_record(topic: Uuid, p: i32) -> PartitionChangeRecord {
    PartitionChangeRecord {
        partition_id: p,
        topic_id: topic,
        leader: NO_LEADER_CHANGE,
        ..Default::default()
    }
}
