//! The quorum controller's decisions, pure: each operation reads the committed
//! [`MetadataImage`] and the controller's volatile state and returns the records to propose
//! plus the reply, or a Kafka error code with a message.
//!
//! **One operation at a time against the committed image.** The caller (the active
//! controller's event loop) runs an operation, proposes its records as one log entry, waits
//! until that entry is committed and applied to the image, answers, and only then runs the
//! next operation. Every decision therefore sees the effect of every earlier one, and two
//! decisions can never contradict each other (two topics with the same name, a broker epoch
//! handed out twice). Operations that produce no records (most heartbeats) can be answered at
//! once. If the proposal fails (leadership lost), the reply is a retriable error and the
//! volatile state is rebuilt by [`QuorumController::activate`] on the next controller.
//!
//! **Volatile vs in the log.** The log (the image) holds everything brokers must agree on:
//! registrations with their epochs, fenced and controlled-shutdown flags, partitions with
//! leaders, ISRs and epochs, configs, producer-id blocks. Broker session deadlines are not in
//! the log: they are wall-clock facts local to the active controller, rebuilt on failover
//! (every unfenced broker gets a fresh session, as Kafka's controller does) so a new
//! controller never fences a live broker for silence it did not observe.
//!
//! Partition leadership follows one rule, applied after every broker state change
//! ([`QuorumController`] reconciles every partition): brokers being fenced or shut down leave
//! the ISR unless they are its last member (an ISR is never emptied, except with KIP-966's
//! eligible leader replicas on, where a fenced last member moves to the ELR: see the
//! "KIP-966" section below for the ELR's rules and its place in elections); the current leader stays
//! if it is still an active ISR member; otherwise the first replica (preferred order) that is in
//! the ISR and active (unfenced, not shutting down) leads, else an unfenced ISR member that is
//! shutting down, else nobody (leader -1, offline). Any leader change bumps the leader epoch
//! and any change the partition epoch (the image does both when applying the change). The same
//! rule applies to an ISR a leader asks for (`alter_partition`, KIP-497/903): a member shutting
//! down is left out unless it is the last, and a leader shutting down hands over.
//!
//! Cost: a broker state change reconciles every partition (O(partitions)); an index from
//! broker to the partitions whose ISR holds it (Kafka's `BrokersToIsrs`) is the optimisation
//! when clusters get large.

use std::collections::{BTreeMap, BTreeSet};

use skein_protocol::metadata_records::{
    ConfigRecord, ProducerIdsRecord, RegisterBrokerRecord, RegisterControllerRecord,
};
use skein_protocol::{MetadataRecord, Uuid};

use crate::image::{
    broker_change_record, broker_endpoints, controller_endpoints, partition_change_record,
    partition_record, remove_topic_record, ConfigResource, Endpoint, MetadataImage, PartitionState,
    BROKER_RESOURCE, LEADER_RECOVERED, LEADER_RECOVERING, MAX_TOPIC_NAME_LEN, NO_LEADER,
    TOPIC_RESOURCE,
};
use crate::placement::{place, rack_alternating, Candidate, Stripe};
use crate::{ApiError, ErrorCode};

/// The most records one user operation (create topics, create partitions, alter configs) may
/// propose, as Kafka's controller limits them; bigger requests are refused.
pub const MAX_RECORDS_PER_OP: usize = 10_000;

/// The controller's settings (Kafka's names in the docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerConfig {
    /// `broker.session.timeout.ms`: a broker silent this long is fenced.
    pub session_timeout_ms: u64,
    /// Producer ids handed out per `AllocateProducerIds`.
    pub producer_id_block_size: i64,
    /// `num.partitions`: used when a new topic asks for -1.
    pub default_num_partitions: i32,
    /// `default.replication.factor`: used when a new topic asks for -1.
    pub default_replication_factor: i16,
    /// `unclean.leader.election.enable` of the broker's config file: the default when
    /// neither the topic nor the cluster-wide dynamic config sets it.
    pub unclean_leader_election: bool,
    /// `leader.imbalance.per.broker.percentage`: a broker whose share of partitions it
    /// should lead (as preferred replica) but does not exceeds this gets them back.
    pub leader_imbalance_per_broker_percentage: u32,
    /// `min.insync.replicas` of the broker's config file: the default when neither the topic
    /// nor the cluster-wide dynamic config sets it (KIP-966 needs it for the ELR).
    pub min_insync_replicas: i32,
    /// KIP-966 eligible leader replicas (Kafka's `eligible.leader.replicas.version` feature,
    /// Skein's `skein.eligible.leader.replicas.enable`). Off in this library's default, as in
    /// Kafka's `PartitionChangeBuilder`; the broker turns it on by default like Kafka 4.1 does
    /// on new clusters. When off, any ELR left in the image is cleared at the partition's next
    /// change.
    pub eligible_leader_replicas: bool,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            session_timeout_ms: 9_000,
            producer_id_block_size: 1_000,
            default_num_partitions: 1,
            default_replication_factor: 1,
            unclean_leader_election: false,
            leader_imbalance_per_broker_percentage: 10,
            min_insync_replicas: 1,
            eligible_leader_replicas: false,
        }
    }
}

/// An operation's result: the records to propose as one entry (possibly none) and the reply
/// to send once they are committed.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome<R> {
    pub records: Vec<MetadataRecord>,
    pub reply: R,
}

/// A broker asking to register (Kafka's `BrokerRegistration`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterBroker {
    pub broker_id: i32,
    /// New for every start of the broker process.
    pub incarnation_id: Uuid,
    pub endpoints: Vec<Endpoint>,
    pub rack: Option<String>,
    /// KIP-966 (BrokerRegistration v3 `PreviousBrokerEpoch`): the epoch of the registration
    /// this node's log was last known intact under (its clean shutdown), -1 if none. Any other
    /// value than the current registration's epoch counts as an unclean shutdown: the broker
    /// leaves every ELR, since its log may have lost committed records.
    pub previous_broker_epoch: i64,
}

/// The answer to a registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registered {
    pub broker_epoch: i64,
}

/// A broker heartbeat (Kafka's `BrokerHeartbeat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    pub broker_id: i32,
    pub broker_epoch: i64,
    /// The offset of the last metadata entry the broker applied.
    pub metadata_offset: u64,
    /// The broker wants to be fenced (it cannot serve, e.g. it fell behind).
    pub want_fence: bool,
    /// The broker is shutting down (controlled shutdown).
    pub want_shutdown: bool,
}

/// The answer to a heartbeat, as of after the proposed records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatReply {
    /// The broker's metadata reached its registration.
    pub is_caught_up: bool,
    pub is_fenced: bool,
    /// Controlled shutdown is done: the broker leads nothing it could hand over.
    pub should_shut_down: bool,
}

/// Brokers fenced by a tick.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TickReply {
    pub fenced: Vec<i32>,
}

/// A topic to create (Kafka's `CreatableTopic`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    pub name: String,
    /// -1: the default.
    pub num_partitions: i32,
    /// -1: the default.
    pub replication_factor: i16,
    /// A manual assignment: the replicas of partition 0, 1, ... (then both counts must be -1).
    pub assignments: Vec<Vec<i32>>,
    pub configs: Vec<(String, String)>,
}

/// A created (or validated) topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedTopic {
    pub topic_id: Uuid,
    pub num_partitions: i32,
    pub replication_factor: i16,
}

/// The per-topic result of `create_topics`, in request order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateTopicResult {
    pub name: String,
    pub result: Result<CreatedTopic, ApiError>,
}

/// A topic named by name or id (DeleteTopics v6+ accepts both).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicRef {
    Name(String),
    Id(Uuid),
}

/// The per-topic result of `delete_topics`, in request order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteTopicResult {
    pub topic: TopicRef,
    /// The deleted topic's (name, id).
    pub result: Result<(String, Uuid), ApiError>,
}

/// Growth of one topic (Kafka's `CreatePartitionsTopic`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPartitions {
    pub name: String,
    /// The new total number of partitions.
    pub count: i32,
    /// Replicas of each new partition, or `None` for automatic placement.
    pub assignments: Option<Vec<Vec<i32>>>,
}

/// A per-resource result, in request order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedResult {
    pub name: String,
    pub result: Result<(), ApiError>,
}

/// An incremental config operation (Kafka's `OpType`: SET 0, DELETE 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigOp {
    Set(String),
    Delete,
}

/// The changes to one resource's configs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterConfigs {
    pub resource: ConfigResource,
    pub ops: Vec<(String, ConfigOp)>,
}

/// The per-resource result of `incremental_alter_configs`, in request order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterConfigsResult {
    pub resource: ConfigResource,
    pub result: Result<(), ApiError>,
}

/// An ISR change asked by a partition's leader (Kafka's `AlterPartition`, KIP-497), with
/// each new member's broker epoch (KIP-903).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterPartition {
    pub topic_id: Uuid,
    pub partition: i32,
    /// The leader epoch the leader acts in.
    pub leader_epoch: i32,
    /// The partition epoch the change is based on.
    pub partition_epoch: i32,
    /// The new ISR: (broker id, broker epoch); epoch -1 skips the epoch check.
    pub new_isr: Vec<(i32, i64)>,
}

/// The per-partition result of `alter_partition`: the partition as it will be once the
/// change is committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterPartitionResult {
    pub topic_id: Uuid,
    pub partition: i32,
    pub result: Result<PartitionState, ApiError>,
}

/// A block of producer ids: `first..first + len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerIdBlock {
    pub first: i64,
    pub len: i32,
}

/// A broker's session: the epoch it heartbeats with, when it expires, the metadata offset it
/// last reported, and (in controlled shutdown) the offset the others must reach before it may
/// go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Session {
    epoch: i64,
    deadline_ms: u64,
    metadata_offset: u64,
    shutdown_offset: Option<u64>,
}

/// A broker's state as the controller plans it (the image plus this operation's changes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Planned {
    fenced: bool,
    shutting_down: bool,
}

/// The active controller's decisions and volatile state.
#[derive(Debug, Clone)]
pub struct QuorumController {
    config: ControllerConfig,
    sessions: BTreeMap<i32, Session>,
}

fn err(code: ErrorCode, message: impl Into<String>) -> ApiError {
    ApiError::new(code, message)
}

/// A SplitMix64 step: the only randomness (topic ids, placement stripes), from the caller's
/// seed.
fn split_mix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl QuorumController {
    /// A controller with `config` and no sessions yet (call [`Self::activate`] when this node
    /// becomes the active controller).
    pub fn new(config: ControllerConfig) -> Self {
        QuorumController {
            config,
            sessions: BTreeMap::new(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &ControllerConfig {
        &self.config
    }

    /// Becomes the active controller at `now_ms`: every unfenced broker of the committed image
    /// gets a fresh session, since this controller has not seen its heartbeats.
    pub fn activate(&mut self, image: &MetadataImage, now_ms: u64) {
        self.sessions.clear();
        for b in image.brokers().values().filter(|b| !b.fenced) {
            self.sessions.insert(
                b.id,
                Session {
                    epoch: b.epoch,
                    deadline_ms: now_ms.saturating_add(self.config.session_timeout_ms),
                    metadata_offset: 0,
                    shutdown_offset: None,
                },
            );
        }
    }

    /// When broker `id`'s session expires, if it has one.
    pub fn session_deadline(&self, id: i32) -> Option<u64> {
        self.sessions.get(&id).map(|s| s.deadline_ms)
    }

    fn has_live_session(&self, id: i32, epoch: i64, now_ms: u64) -> bool {
        self.sessions
            .get(&id)
            .is_some_and(|s| s.epoch == epoch && now_ms <= s.deadline_ms)
    }

    /// Renews broker `id`'s session at `epoch` (a new session for a new epoch), recording the
    /// metadata offset it reported, if any.
    fn touch_session(&mut self, id: i32, epoch: i64, now_ms: u64, metadata_offset: Option<u64>) {
        let deadline_ms = now_ms.saturating_add(self.config.session_timeout_ms);
        let session = self
            .sessions
            .entry(id)
            .and_modify(|s| {
                if s.epoch != epoch {
                    *s = Session {
                        epoch,
                        deadline_ms,
                        metadata_offset: 0,
                        shutdown_offset: None,
                    };
                }
            })
            .or_insert(Session {
                epoch,
                deadline_ms,
                metadata_offset: 0,
                shutdown_offset: None,
            });
        session.deadline_ms = deadline_ms;
        if let Some(o) = metadata_offset {
            session.metadata_offset = o;
        }
    }

    /// True when every other active broker reported a metadata offset of at least `offset`:
    /// it has seen the leaderships a broker in controlled shutdown handed over.
    fn others_caught_up(&self, image: &MetadataImage, id: i32, offset: u64) -> bool {
        image
            .brokers()
            .values()
            .filter(|b| b.id != id && b.is_active())
            .all(|b| {
                self.sessions
                    .get(&b.id)
                    .is_some_and(|s| s.epoch == b.epoch && s.metadata_offset >= offset)
            })
    }

    /// Registers a broker: fenced at first, with a broker epoch above every earlier one. A
    /// different incarnation of a node id whose session is live (and which is not shutting
    /// down) is refused with DUPLICATE_BROKER_REGISTRATION.
    pub fn register_broker(
        &mut self,
        image: &MetadataImage,
        request: &RegisterBroker,
        now_ms: u64,
    ) -> Result<Outcome<Registered>, ApiError> {
        let id = request.broker_id;
        if id < 0 {
            return Err(err(
                ErrorCode::INVALID_REQUEST,
                format!("invalid broker id {id}"),
            ));
        }
        let mut records = Vec::new();
        if let Some(existing) = image.broker(id) {
            // A fenced registration has no session to protect (Kafka drops the session of a
            // fenced broker), so a new incarnation may take its place at once.
            if existing.incarnation_id != request.incarnation_id
                && !existing.in_controlled_shutdown
                && !existing.fenced
                && self.has_live_session(id, existing.epoch, now_ms)
            {
                return Err(err(
                    ErrorCode::DUPLICATE_BROKER_REGISTRATION,
                    format!(
                        "another broker is registered with id {id} and its session is still live"
                    ),
                ));
            }
            let unclean = BTreeSet::from([id]);
            let unclean = if request.previous_broker_epoch != existing.epoch {
                &unclean
            } else {
                &BTreeSet::new()
            };
            if !existing.fenced || !unclean.is_empty() {
                // The old incarnation is gone: it leaves the ISRs and its leaderships move,
                // as if it had been fenced; after an unclean shutdown it leaves the ELRs too.
                let planned = BTreeMap::from([(
                    id,
                    Planned {
                        fenced: true,
                        shutting_down: false,
                    },
                )]);
                let removing = if existing.fenced {
                    BTreeSet::new()
                } else {
                    BTreeSet::from([id])
                };
                records.extend(reconcile_with(
                    image,
                    &self.config,
                    &planned,
                    &removing,
                    unclean,
                ));
            }
        }
        let highest = image
            .brokers()
            .values()
            .map(|b| b.epoch)
            .max()
            .unwrap_or(-1);
        let next_offset = image.last_offset().map_or(0, |o| o.saturating_add(1));
        let epoch = (next_offset.min(i64::MAX as u64) as i64).max(highest.saturating_add(1));
        records.push(
            RegisterBrokerRecord {
                broker_id: id,
                incarnation_id: request.incarnation_id,
                broker_epoch: epoch,
                end_points: broker_endpoints(&request.endpoints),
                rack: request.rack.clone(),
                fenced: true,
                in_controlled_shutdown: false,
                ..Default::default()
            }
            .into(),
        );
        self.touch_session(id, epoch, now_ms, None);
        Ok(Outcome {
            records,
            reply: Registered {
                broker_epoch: epoch,
            },
        })
    }

    /// A broker heartbeat: renews its session, unfences it once its metadata reached its
    /// registration (giving it back leaderless partitions whose ISR holds it), fences it on
    /// request, and runs controlled shutdown.
    pub fn heartbeat(
        &mut self,
        image: &MetadataImage,
        hb: &Heartbeat,
        now_ms: u64,
    ) -> Result<Outcome<HeartbeatReply>, ApiError> {
        let Some(broker) = image.broker(hb.broker_id) else {
            return Err(err(
                ErrorCode::STALE_BROKER_EPOCH,
                format!("no broker registration found for broker {}", hb.broker_id),
            ));
        };
        if broker.epoch != hb.broker_epoch {
            return Err(err(
                ErrorCode::STALE_BROKER_EPOCH,
                format!(
                    "expected broker epoch {}, got {}",
                    broker.epoch, hb.broker_epoch
                ),
            ));
        }
        let id = broker.id;
        self.touch_session(id, broker.epoch, now_ms, Some(hb.metadata_offset));
        let is_caught_up = hb.metadata_offset >= broker.registration_offset;
        let mut records = Vec::new();
        let mut reply = HeartbeatReply {
            is_caught_up,
            is_fenced: broker.fenced,
            should_shut_down: false,
        };
        if hb.want_shutdown || broker.in_controlled_shutdown {
            if broker.fenced {
                reply.should_shut_down = hb.want_shutdown;
            } else {
                let planned = BTreeMap::from([(
                    id,
                    Planned {
                        fenced: false,
                        shutting_down: true,
                    },
                )]);
                if !broker.in_controlled_shutdown {
                    records.push(broker_change_record(id, broker.epoch, 0, 1).into());
                }
                records.extend(reconcile(
                    image,
                    &self.config,
                    &planned,
                    &BTreeSet::from([id]),
                ));
                // Done once the committed image shows it shutting down, it leads nothing another
                // active ISR member could take, and every other active broker has reported
                // metadata at least as new as the first image that showed it shutting down
                // (Kafka waits the same way, so the new leaders know they lead).
                if broker.in_controlled_shutdown && records.is_empty() {
                    let seen = image.last_offset().unwrap_or(0);
                    let offset = self
                        .sessions
                        .get_mut(&id)
                        .map_or(seen, |s| *s.shutdown_offset.get_or_insert(seen));
                    reply.should_shut_down = self.others_caught_up(image, id, offset);
                    if reply.should_shut_down {
                        // Done: the broker is fenced now (as Kafka does), so what it still
                        // led (partitions with no other ISR member) is reported offline at
                        // once rather than after its session expires.
                        let planned = BTreeMap::from([(
                            id,
                            Planned {
                                fenced: true,
                                shutting_down: true,
                            },
                        )]);
                        records.push(broker_change_record(id, broker.epoch, 1, 0).into());
                        records.extend(reconcile(
                            image,
                            &self.config,
                            &planned,
                            &BTreeSet::from([id]),
                        ));
                        reply.is_fenced = true;
                    }
                }
            }
        } else if hb.want_fence {
            if !broker.fenced {
                let planned = BTreeMap::from([(
                    id,
                    Planned {
                        fenced: true,
                        shutting_down: false,
                    },
                )]);
                records.push(broker_change_record(id, broker.epoch, 1, 0).into());
                records.extend(reconcile(
                    image,
                    &self.config,
                    &planned,
                    &BTreeSet::from([id]),
                ));
            }
            reply.is_fenced = true;
        } else if broker.fenced && is_caught_up {
            let planned = BTreeMap::from([(
                id,
                Planned {
                    fenced: false,
                    shutting_down: false,
                },
            )]);
            records.push(broker_change_record(id, broker.epoch, -1, 0).into());
            records.extend(reconcile(image, &self.config, &planned, &BTreeSet::new()));
            reply.is_fenced = false;
        }
        Ok(Outcome { records, reply })
    }

    /// Fences every unfenced broker whose session expired before `now_ms` (silent for more
    /// than `broker.session.timeout.ms`), moving leaderships and shrinking ISRs.
    pub fn tick(&mut self, image: &MetadataImage, now_ms: u64) -> Outcome<TickReply> {
        let mut planned = BTreeMap::new();
        for b in image.brokers().values().filter(|b| !b.fenced) {
            match self.sessions.get(&b.id) {
                Some(s) if s.epoch == b.epoch => {
                    if now_ms > s.deadline_ms {
                        planned.insert(
                            b.id,
                            Planned {
                                fenced: true,
                                shutting_down: false,
                            },
                        );
                    }
                }
                // Unfenced without a session of this epoch (not activated yet): start one.
                _ => self.touch_session(b.id, b.epoch, now_ms, None),
            }
        }
        let mut records: Vec<MetadataRecord> = Vec::new();
        let fenced: Vec<i32> = planned.keys().copied().collect();
        for id in &fenced {
            if let Some(b) = image.broker(*id) {
                records.push(broker_change_record(*id, b.epoch, 1, 0).into());
            }
        }
        let removing: BTreeSet<i32> = fenced.iter().copied().collect();
        if !fenced.is_empty() {
            records.extend(reconcile(image, &self.config, &planned, &removing));
        }
        Outcome {
            records,
            reply: TickReply { fenced },
        }
    }

    /// Creates topics. Each topic succeeds or fails on its own; `seed` (drawn by the caller)
    /// picks topic ids and placement stripes.
    pub fn create_topics(
        &mut self,
        image: &MetadataImage,
        topics: &[NewTopic],
        validate_only: bool,
        seed: u64,
    ) -> Outcome<Vec<CreateTopicResult>> {
        let mut rng = seed;
        let mut records: Vec<MetadataRecord> = Vec::new();
        let mut results = Vec::with_capacity(topics.len());
        let mut used_ids: BTreeSet<Uuid> = BTreeSet::new();
        let mut names: BTreeMap<&str, usize> = BTreeMap::new();
        for t in topics {
            *names.entry(t.name.as_str()).or_default() += 1;
        }
        let arranged = rack_alternating(&candidates(image));
        for t in topics {
            let result = if names.get(t.name.as_str()).copied().unwrap_or(0) > 1 {
                Err(err(
                    ErrorCode::INVALID_REQUEST,
                    format!("duplicate topic name {:?} in the request", t.name),
                ))
            } else {
                self.plan_topic(image, &arranged, t, &mut rng, &mut used_ids)
                    .and_then(|(created, topic_records)| {
                        if records.len() + topic_records.len() > MAX_RECORDS_PER_OP {
                            Err(err(
                                ErrorCode::POLICY_VIOLATION,
                                format!(
                                    "creating {:?} would take more than {MAX_RECORDS_PER_OP} records in one request",
                                    t.name
                                ),
                            ))
                        } else {
                            if !validate_only {
                                records.extend(topic_records);
                            }
                            Ok(created)
                        }
                    })
            };
            results.push(CreateTopicResult {
                name: t.name.clone(),
                result,
            });
        }
        Outcome {
            records,
            reply: results,
        }
    }

    fn plan_topic(
        &self,
        image: &MetadataImage,
        arranged: &[Candidate],
        t: &NewTopic,
        rng: &mut u64,
        used_ids: &mut BTreeSet<Uuid>,
    ) -> Result<(CreatedTopic, Vec<MetadataRecord>), ApiError> {
        if t.name.is_empty() || t.name.len() > MAX_TOPIC_NAME_LEN {
            return Err(err(
                ErrorCode::INVALID_TOPIC_EXCEPTION,
                format!("invalid topic name {:?}", t.name),
            ));
        }
        if image.topic_by_name(&t.name).is_some() {
            return Err(err(
                ErrorCode::TOPIC_ALREADY_EXISTS,
                format!("Topic '{}' already exists.", t.name),
            ));
        }
        let assignments: Vec<Vec<i32>> = if !t.assignments.is_empty() {
            if t.num_partitions != -1 || t.replication_factor != -1 {
                return Err(err(
                    ErrorCode::INVALID_REQUEST,
                    "both a replica assignment and numPartitions or replicationFactor were set",
                ));
            }
            check_assignments(image, &t.assignments, None)?;
            t.assignments.clone()
        } else {
            let partitions = if t.num_partitions == -1 {
                self.config.default_num_partitions
            } else {
                t.num_partitions
            };
            let rf = if t.replication_factor == -1 {
                self.config.default_replication_factor
            } else {
                t.replication_factor
            };
            if partitions <= 0 {
                return Err(err(
                    ErrorCode::INVALID_PARTITIONS,
                    format!("number of partitions must be larger than 0, got {partitions}"),
                ));
            }
            if rf <= 0 {
                return Err(err(
                    ErrorCode::INVALID_REPLICATION_FACTOR,
                    format!("replication factor must be larger than 0, got {rf}"),
                ));
            }
            if partitions as usize > MAX_RECORDS_PER_OP {
                return Err(err(
                    ErrorCode::POLICY_VIOLATION,
                    format!("{partitions} partitions exceed the {MAX_RECORDS_PER_OP} records one request may create"),
                ));
            }
            let stripe = Stripe::from_seed(split_mix(rng), arranged.len());
            place(arranged, 0, partitions as usize, rf as usize, stripe).ok_or_else(|| {
                err(
                    ErrorCode::INVALID_REPLICATION_FACTOR,
                    format!(
                        "replication factor {rf} is larger than the {} available brokers",
                        arranged.len()
                    ),
                )
            })?
        };
        let mut seen = BTreeSet::new();
        for (k, _) in &t.configs {
            if k.is_empty() || !seen.insert(k.as_str()) {
                return Err(err(
                    ErrorCode::INVALID_CONFIG,
                    format!("empty or duplicate config name {k:?}"),
                ));
            }
        }
        let topic_id = loop {
            let mut raw = [0u8; 16];
            raw[..8].copy_from_slice(&split_mix(rng).to_be_bytes());
            raw[8..].copy_from_slice(&split_mix(rng).to_be_bytes());
            let id = Uuid(raw);
            if !id.is_zero() && image.topic(id).is_none() && used_ids.insert(id) {
                break id;
            }
        };
        let mut records: Vec<MetadataRecord> = Vec::with_capacity(1 + assignments.len());
        records.push(
            skein_protocol::metadata_records::TopicRecord {
                name: t.name.clone(),
                topic_id,
                ..Default::default()
            }
            .into(),
        );
        for (p, replicas) in assignments.iter().enumerate() {
            records
                .push(partition_record(topic_id, p as i32, &new_partition(image, replicas)).into());
        }
        for (k, v) in &t.configs {
            records.push(
                ConfigRecord {
                    resource_type: TOPIC_RESOURCE,
                    resource_name: t.name.clone(),
                    name: k.clone(),
                    value: Some(v.clone()),
                    ..Default::default()
                }
                .into(),
            );
        }
        Ok((
            CreatedTopic {
                topic_id,
                num_partitions: assignments.len() as i32,
                replication_factor: assignments.first().map_or(0, |r| r.len() as i16),
            },
            records,
        ))
    }

    /// Deletes topics by name or id.
    pub fn delete_topics(
        &mut self,
        image: &MetadataImage,
        topics: &[TopicRef],
    ) -> Outcome<Vec<DeleteTopicResult>> {
        let mut records = Vec::new();
        let mut results = Vec::with_capacity(topics.len());
        let mut counts: BTreeMap<Option<Uuid>, usize> = BTreeMap::new();
        let resolved: Vec<Option<Uuid>> = topics
            .iter()
            .map(|t| match t {
                TopicRef::Name(n) => image.topic_by_name(n).map(|t| t.id),
                TopicRef::Id(id) => image.topic(*id).map(|t| t.id),
            })
            .collect();
        for id in resolved.iter().flatten() {
            *counts.entry(Some(*id)).or_default() += 1;
        }
        for (t, id) in topics.iter().zip(&resolved) {
            let result = match (t, id) {
                (TopicRef::Name(n), None) => Err(err(
                    ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                    format!("unknown topic {n:?}"),
                )),
                (TopicRef::Id(i), None) => Err(err(
                    ErrorCode::UNKNOWN_TOPIC_ID,
                    format!("unknown topic id {i}"),
                )),
                (_, Some(id)) if counts.get(&Some(*id)).copied().unwrap_or(0) > 1 => Err(err(
                    ErrorCode::INVALID_REQUEST,
                    "the same topic is named twice in the request",
                )),
                (_, Some(id)) => {
                    let name = image.topic(*id).map(|t| t.name.clone()).unwrap_or_default();
                    records.push(remove_topic_record(*id).into());
                    Ok((name, *id))
                }
            };
            results.push(DeleteTopicResult {
                topic: t.clone(),
                result,
            });
        }
        Outcome {
            records,
            reply: results,
        }
    }

    /// Adds partitions to topics (growth only).
    pub fn create_partitions(
        &mut self,
        image: &MetadataImage,
        requests: &[NewPartitions],
        validate_only: bool,
        seed: u64,
    ) -> Outcome<Vec<NamedResult>> {
        let mut rng = seed;
        let mut records: Vec<MetadataRecord> = Vec::new();
        let mut results = Vec::with_capacity(requests.len());
        let arranged = rack_alternating(&candidates(image));
        let mut names: BTreeMap<&str, usize> = BTreeMap::new();
        for r in requests {
            *names.entry(r.name.as_str()).or_default() += 1;
        }
        for r in requests {
            let result = if names.get(r.name.as_str()).copied().unwrap_or(0) > 1 {
                Err(err(
                    ErrorCode::INVALID_REQUEST,
                    format!("duplicate topic name {:?} in the request", r.name),
                ))
            } else {
                plan_partitions(image, &arranged, r, &mut rng).and_then(|new| {
                    if records.len() + new.len() > MAX_RECORDS_PER_OP {
                        Err(err(
                            ErrorCode::POLICY_VIOLATION,
                            format!("more than {MAX_RECORDS_PER_OP} new partitions in one request"),
                        ))
                    } else {
                        if !validate_only {
                            records.extend(new);
                        }
                        Ok(())
                    }
                })
            };
            results.push(NamedResult {
                name: r.name.clone(),
                result,
            });
        }
        Outcome {
            records,
            reply: results,
        }
    }

    /// Sets and deletes config keys of topics and brokers.
    pub fn incremental_alter_configs(
        &mut self,
        image: &MetadataImage,
        resources: &[AlterConfigs],
        validate_only: bool,
    ) -> Outcome<Vec<AlterConfigsResult>> {
        let mut records: Vec<MetadataRecord> = Vec::new();
        let mut results = Vec::with_capacity(resources.len());
        for r in resources {
            let result = plan_configs(image, r).and_then(|new| {
                if records.len() + new.len() > MAX_RECORDS_PER_OP {
                    Err(err(
                        ErrorCode::POLICY_VIOLATION,
                        format!("more than {MAX_RECORDS_PER_OP} config changes in one request"),
                    ))
                } else {
                    if !validate_only {
                        records.extend(new);
                    }
                    Ok(())
                }
            });
            results.push(AlterConfigsResult {
                resource: r.resource.clone(),
                result,
            });
        }
        Outcome {
            records,
            reply: results,
        }
    }

    /// Changes ISRs at the request of partition leaders. Refused per partition: a stale
    /// leader epoch (FENCED_LEADER_EPOCH), a requester that is not the leader
    /// (NOT_LEADER_OR_FOLLOWER), a stale partition epoch (INVALID_UPDATE_VERSION), an ISR that
    /// is empty, lacks the leader or names a non-replica (INVALID_REQUEST), or that adds a
    /// fenced, shutting-down or re-registered broker (INELIGIBLE_REPLICA).
    pub fn alter_partition(
        &mut self,
        image: &MetadataImage,
        broker_id: i32,
        broker_epoch: i64,
        changes: &[AlterPartition],
    ) -> Result<Outcome<Vec<AlterPartitionResult>>, ApiError> {
        check_broker_epoch(image, broker_id, broker_epoch)?;
        if changes.len() > MAX_RECORDS_PER_OP {
            return Err(err(
                ErrorCode::POLICY_VIOLATION,
                format!("more than {MAX_RECORDS_PER_OP} partitions in one request"),
            ));
        }
        let mut counts: BTreeMap<(Uuid, i32), usize> = BTreeMap::new();
        for c in changes {
            *counts.entry((c.topic_id, c.partition)).or_default() += 1;
        }
        let mut records = Vec::new();
        let mut results = Vec::with_capacity(changes.len());
        for c in changes {
            let result = if counts[&(c.topic_id, c.partition)] > 1 {
                Err(err(
                    ErrorCode::INVALID_REQUEST,
                    "the same partition is changed twice in the request",
                ))
            } else {
                plan_isr_change(image, &self.config, broker_id, c).map(|(state, record)| {
                    if let Some(record) = record {
                        records.push(record);
                    }
                    state
                })
            };
            results.push(AlterPartitionResult {
                topic_id: c.topic_id,
                partition: c.partition,
                result,
            });
        }
        Ok(Outcome {
            records,
            reply: results,
        })
    }

    /// Records a controller (a quorum voter) with the directory id of its data directory
    /// (KIP-853) and its endpoints; a re-registration replaces the previous one.
    pub fn register_controller(
        &mut self,
        image: &MetadataImage,
        controller_id: i32,
        directory_id: Uuid,
        endpoints: &[Endpoint],
    ) -> Result<Outcome<()>, ApiError> {
        if controller_id < 0 || directory_id.is_zero() {
            return Err(err(
                ErrorCode::INVALID_REQUEST,
                format!("invalid controller id {controller_id} or directory id {directory_id}"),
            ));
        }
        let unchanged = image
            .controllers()
            .get(&controller_id)
            .is_some_and(|c| c.directory_id == directory_id && c.endpoints.as_slice() == endpoints);
        let records = if unchanged {
            Vec::new()
        } else {
            vec![RegisterControllerRecord {
                controller_id,
                incarnation_id: directory_id,
                end_points: controller_endpoints(endpoints),
                ..Default::default()
            }
            .into()]
        };
        Ok(Outcome { records, reply: () })
    }

    /// Hands a block of producer ids to a registered broker.
    pub fn allocate_producer_ids(
        &mut self,
        image: &MetadataImage,
        broker_id: i32,
        broker_epoch: i64,
    ) -> Result<Outcome<ProducerIdBlock>, ApiError> {
        check_broker_epoch(image, broker_id, broker_epoch)?;
        let size = self.config.producer_id_block_size.clamp(1, i32::MAX as i64);
        let first = image.next_producer_id();
        let Some(next) = first.checked_add(size) else {
            return Err(err(
                ErrorCode::UNKNOWN_SERVER_ERROR,
                "producer ids are exhausted",
            ));
        };
        Ok(Outcome {
            records: vec![ProducerIdsRecord {
                broker_id,
                broker_epoch,
                next_producer_id: next,
                ..Default::default()
            }
            .into()],
            reply: ProducerIdBlock {
                first,
                len: size as i32,
            },
        })
    }
}

/// Unfenced brokers not shutting down: where new replicas go.
fn candidates(image: &MetadataImage) -> Vec<Candidate> {
    image
        .brokers()
        .values()
        .filter(|b| b.is_active())
        .map(|b| Candidate {
            id: b.id,
            rack: b.rack.clone(),
        })
        .collect()
}

/// A new partition on `replicas`: the ISR is its active replicas, the leader the first of
/// them.
fn new_partition(image: &MetadataImage, replicas: &[i32]) -> PartitionState {
    let isr: Vec<i32> = replicas
        .iter()
        .copied()
        .filter(|r| image.broker(*r).is_some_and(|b| b.is_active()))
        .collect();
    PartitionState {
        replicas: replicas.to_vec(),
        leader: isr.first().copied().unwrap_or(NO_LEADER),
        isr,
        leader_epoch: 0,
        partition_epoch: 0,
        ..Default::default()
    }
}

/// Checks a manual assignment: replicas non-empty, distinct, registered, the same count for
/// every partition (`rf` if given), at least one active replica per partition.
fn check_assignments(
    image: &MetadataImage,
    assignments: &[Vec<i32>],
    rf: Option<usize>,
) -> Result<(), ApiError> {
    if assignments.len() > MAX_RECORDS_PER_OP {
        return Err(err(
            ErrorCode::POLICY_VIOLATION,
            format!("more than {MAX_RECORDS_PER_OP} partitions in one request"),
        ));
    }
    let rf = rf.or_else(|| assignments.first().map(Vec::len));
    for (p, replicas) in assignments.iter().enumerate() {
        let bad = |m: String| Err(err(ErrorCode::INVALID_REPLICA_ASSIGNMENT, m));
        if replicas.is_empty() {
            return bad(format!("partition {p} has no replicas"));
        }
        if Some(replicas.len()) != rf {
            return bad(format!(
                "partition {p} has {} replicas, not {} like the others",
                replicas.len(),
                rf.unwrap_or(0)
            ));
        }
        let distinct: BTreeSet<i32> = replicas.iter().copied().collect();
        if distinct.len() != replicas.len() {
            return bad(format!("partition {p} names a broker twice: {replicas:?}"));
        }
        if let Some(r) = replicas.iter().find(|r| image.broker(**r).is_none()) {
            return bad(format!("broker {r} is not registered"));
        }
        if !replicas
            .iter()
            .any(|r| image.broker(*r).is_some_and(|b| b.is_active()))
        {
            return bad(format!(
                "all brokers of partition {p} are fenced or shutting down"
            ));
        }
    }
    Ok(())
}

fn plan_partitions(
    image: &MetadataImage,
    arranged: &[Candidate],
    r: &NewPartitions,
    rng: &mut u64,
) -> Result<Vec<MetadataRecord>, ApiError> {
    let Some(topic) = image.topic_by_name(&r.name) else {
        return Err(err(
            ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
            format!("unknown topic {:?}", r.name),
        ));
    };
    let current = topic.partitions.len();
    let wanted = usize::try_from(r.count).unwrap_or(0);
    if wanted < current {
        return Err(err(
            ErrorCode::INVALID_PARTITIONS,
            format!(
                "Topic currently has {current} partitions, which is higher than the requested {}.",
                r.count
            ),
        ));
    }
    if wanted == current {
        return Err(err(
            ErrorCode::INVALID_PARTITIONS,
            format!("Topic already has {current} partitions."),
        ));
    }
    let added = wanted - current;
    if added > MAX_RECORDS_PER_OP {
        return Err(err(
            ErrorCode::POLICY_VIOLATION,
            format!("more than {MAX_RECORDS_PER_OP} new partitions in one request"),
        ));
    }
    let rf = topic.partitions.first().map_or(1, |p| p.replicas.len());
    let assignments = match &r.assignments {
        Some(a) => {
            if a.len() != added {
                return Err(err(
                    ErrorCode::INVALID_REPLICA_ASSIGNMENT,
                    format!("{} assignments for {added} new partitions", a.len()),
                ));
            }
            check_assignments(image, a, Some(rf))?;
            a.clone()
        }
        None => {
            // Continue the stripe of partition 0's preferred leader, as Kafka does.
            let mut stripe = Stripe::from_seed(split_mix(rng), arranged.len());
            if let Some(first) = topic.partitions.first().and_then(|p| p.replicas.first()) {
                if let Some(i) = arranged.iter().position(|c| c.id == *first) {
                    stripe.start = i;
                }
            }
            place(arranged, current, added, rf, stripe).ok_or_else(|| {
                err(
                    ErrorCode::INVALID_REPLICATION_FACTOR,
                    format!(
                        "replication factor {rf} is larger than the {} available brokers",
                        arranged.len()
                    ),
                )
            })?
        }
    };
    Ok(assignments
        .iter()
        .enumerate()
        .map(|(i, replicas)| {
            partition_record(
                topic.id,
                (current + i) as i32,
                &new_partition(image, replicas),
            )
            .into()
        })
        .collect())
}

/// Checks a growth as the controller would (count, manual assignment, replication factor)
/// without planning it: CreatePartitions with `validate_only` on any broker's image.
pub fn validate_new_partitions(image: &MetadataImage, r: &NewPartitions) -> Result<(), ApiError> {
    let arranged = rack_alternating(&candidates(image));
    plan_partitions(image, &arranged, r, &mut 0).map(|_| ())
}

/// STALE_BROKER_EPOCH unless `broker_id` is registered with `broker_epoch`.
fn check_broker_epoch(
    image: &MetadataImage,
    broker_id: i32,
    broker_epoch: i64,
) -> Result<(), ApiError> {
    match image.broker(broker_id) {
        Some(b) if b.epoch == broker_epoch => Ok(()),
        _ => Err(err(
            ErrorCode::STALE_BROKER_EPOCH,
            format!("broker {broker_id} is not registered with epoch {broker_epoch}"),
        )),
    }
}

/// The leader of `part` with ISR `isr`: the current one if it is still an active ISR member,
/// else the first replica (preferred order) in the ISR that is active, else one that is
/// unfenced (shutting down), else none.
pub(crate) fn choose_leader(
    part: &PartitionState,
    isr: &[i32],
    active: &dyn Fn(i32) -> bool,
    unfenced: &dyn Fn(i32) -> bool,
) -> i32 {
    if part.leader != NO_LEADER && isr.contains(&part.leader) && active(part.leader) {
        return part.leader;
    }
    let in_isr = |r: &i32| isr.contains(r);
    part.replicas
        .iter()
        .copied()
        .find(|r| in_isr(r) && active(*r))
        .or_else(|| {
            part.replicas
                .iter()
                .copied()
                .find(|r| in_isr(r) && unfenced(*r))
        })
        .unwrap_or(NO_LEADER)
}

/// Checks one ISR change; the partition after it, and the record (none if nothing changes).
fn plan_isr_change(
    image: &MetadataImage,
    config: &ControllerConfig,
    broker_id: i32,
    c: &AlterPartition,
) -> Result<(PartitionState, Option<MetadataRecord>), ApiError> {
    plan_isr_change_recovering(image, config, broker_id, c, None)
}

/// [`plan_isr_change`] with the leader recovery state the leader reports (KIP-704): `None`
/// keeps the partition's. While it stays RECOVERING the ISR may not grow past the leader;
/// RECOVERED never goes back to RECOVERING.
fn plan_isr_change_recovering(
    image: &MetadataImage,
    config: &ControllerConfig,
    broker_id: i32,
    c: &AlterPartition,
    recovering: Option<bool>,
) -> Result<(PartitionState, Option<MetadataRecord>), ApiError> {
    let Some(part) = image.partition(c.topic_id, c.partition) else {
        return Err(err(
            if image.topic(c.topic_id).is_none() {
                ErrorCode::UNKNOWN_TOPIC_ID
            } else {
                ErrorCode::UNKNOWN_TOPIC_OR_PARTITION
            },
            format!(
                "unknown partition {} of topic id {}",
                c.partition, c.topic_id
            ),
        ));
    };
    if c.leader_epoch != part.leader_epoch {
        return Err(err(
            ErrorCode::FENCED_LEADER_EPOCH,
            format!(
                "leader epoch {} is not the current {}",
                c.leader_epoch, part.leader_epoch
            ),
        ));
    }
    if part.leader != broker_id {
        return Err(err(
            ErrorCode::NOT_LEADER_OR_FOLLOWER,
            format!("broker {broker_id} is not the leader ({})", part.leader),
        ));
    }
    if c.partition_epoch != part.partition_epoch {
        return Err(err(
            ErrorCode::INVALID_UPDATE_VERSION,
            format!(
                "partition epoch {} is not the current {}",
                c.partition_epoch, part.partition_epoch
            ),
        ));
    }
    let isr: Vec<i32> = c.new_isr.iter().map(|(id, _)| *id).collect();
    let distinct: BTreeSet<i32> = isr.iter().copied().collect();
    if isr.is_empty()
        || distinct.len() != isr.len()
        || !isr.contains(&part.leader)
        || isr.iter().any(|r| !part.replicas.contains(r))
    {
        return Err(err(
            ErrorCode::INVALID_REQUEST,
            format!(
                "ISR {isr:?} must be distinct replicas of {:?} holding the leader",
                part.replicas
            ),
        ));
    }
    let recovering_after = recovering.unwrap_or(part.leader_recovering);
    if recovering_after && !part.leader_recovering {
        return Err(err(
            ErrorCode::INVALID_REQUEST,
            "the leader recovery state cannot change from RECOVERED to RECOVERING",
        ));
    }
    if recovering_after && isr.len() > 1 {
        return Err(err(
            ErrorCode::INVALID_REQUEST,
            format!(
                "ISR {isr:?} has more than the leader while it recovers from an unclean election"
            ),
        ));
    }
    for (id, epoch) in &c.new_isr {
        if part.isr.contains(id) {
            continue; // Already a member: shrinking is always allowed.
        }
        let eligible = image
            .broker(*id)
            .is_some_and(|b| b.is_active() && (*epoch == -1 || *epoch == b.epoch));
        if !eligible {
            return Err(err(
                ErrorCode::INELIGIBLE_REPLICA,
                format!("broker {id} (epoch {epoch}) cannot join the ISR"),
            ));
        }
    }
    // The usual rule applies to the new ISR: a member shutting down leaves it unless it is the
    // last one, and a leader shutting down hands over to an active member.
    let mut isr = isr;
    let active = |id: i32| image.broker(id).is_some_and(|b| b.is_active());
    let unfenced = |id: i32| image.broker(id).is_some_and(|b| !b.fenced);
    for r in isr.clone() {
        if isr.len() > 1 && !active(r) {
            isr.retain(|m| *m != r);
        }
    }
    let leader = choose_leader(part, &isr, &active, &unfenced);
    let recovered_now = part.leader_recovering && !recovering_after;
    if part.is_reassigning() && !recovered_now {
        // Every target replica in sync: the reassignment completes with this change. (A
        // change that ends a KIP-704 recovery goes first; the next ISR change completes it.)
        if let Some(done) = crate::reassign::complete_after_isr_change(
            c.topic_id,
            c.partition,
            part,
            &isr,
            leader,
            &active,
            &unfenced,
        ) {
            return Ok(done);
        }
    }
    let topic = image.topic(c.topic_id).map_or("", |t| t.name.as_str());
    let (elr, last_known_elr) = elr_after(
        part,
        &isr,
        elr_rules(image, config, topic),
        &BTreeSet::new(),
    );
    if isr == part.isr
        && leader == part.leader
        && !recovered_now
        && elr == part.elr
        && last_known_elr == part.last_known_elr
    {
        return Ok((part.clone(), None));
    }
    let mut after = part.clone();
    let mut change = partition_change_record(c.topic_id, c.partition);
    if elr != part.elr {
        change.eligible_leader_replicas = Some(elr.clone());
    }
    if last_known_elr != part.last_known_elr {
        change.last_known_elr = Some(last_known_elr.clone());
    }
    after.elr = elr;
    after.last_known_elr = last_known_elr;
    if recovered_now {
        after.leader_recovering = false;
        change.leader_recovery_state = LEADER_RECOVERED;
    }
    if leader != part.leader {
        after.leader = leader;
        after.leader_epoch = part.leader_epoch.saturating_add(1);
        change.leader = leader;
    }
    if isr != part.isr {
        change.isr = Some(isr.clone());
    }
    after.isr = isr;
    after.partition_epoch = part.partition_epoch.saturating_add(1);
    Ok((after, Some(change.into())))
}

fn plan_configs(image: &MetadataImage, r: &AlterConfigs) -> Result<Vec<MetadataRecord>, ApiError> {
    match r.resource.resource_type {
        TOPIC_RESOURCE => {
            if image.topic_by_name(&r.resource.name).is_none() {
                return Err(err(
                    ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                    format!("unknown topic {:?}", r.resource.name),
                ));
            }
        }
        BROKER_RESOURCE => {
            if !r.resource.name.is_empty()
                && !r.resource.name.parse::<i32>().is_ok_and(|id| id >= 0)
            {
                return Err(err(
                    ErrorCode::INVALID_REQUEST,
                    format!("invalid broker resource name {:?}", r.resource.name),
                ));
            }
        }
        other => {
            return Err(err(
                ErrorCode::INVALID_REQUEST,
                format!("unsupported resource type {other}"),
            ))
        }
    }
    let mut seen = BTreeSet::new();
    let current = image.configs(&r.resource);
    let mut records = Vec::new();
    for (key, op) in &r.ops {
        if key.is_empty() {
            return Err(err(ErrorCode::INVALID_CONFIG, "empty config name"));
        }
        if !seen.insert(key.as_str()) {
            return Err(err(
                ErrorCode::INVALID_REQUEST,
                format!("config {key:?} is altered twice"),
            ));
        }
        let value = match op {
            ConfigOp::Set(v) => Some(v.clone()),
            ConfigOp::Delete => {
                if !current.is_some_and(|c| c.contains_key(key)) {
                    continue; // Nothing to delete.
                }
                None
            }
        };
        records.push(
            ConfigRecord {
                resource_type: r.resource.resource_type,
                resource_name: r.resource.name.clone(),
                name: key.clone(),
                value,
                ..Default::default()
            }
            .into(),
        );
    }
    Ok(records)
}

/// The partition changes after brokers change state: `planned` overrides the image's fenced
/// and shutting-down flags, `removing` leave every ISR they are in unless they are its last
/// member. Leaders are (re)elected where the current one is gone, where it is shutting down and
/// another active member exists, and where there is none and a member is back.
fn reconcile(
    image: &MetadataImage,
    config: &ControllerConfig,
    planned: &BTreeMap<i32, Planned>,
    removing: &BTreeSet<i32>,
) -> Vec<MetadataRecord> {
    reconcile_with(image, config, planned, removing, &BTreeSet::new())
}

/// [`reconcile`], with brokers that shut down uncleanly (`unclean`, KIP-966): they leave
/// every ELR. With the ELR on, a fenced last ISR member leaves the ISR too (into the ELR).
fn reconcile_with(
    image: &MetadataImage,
    config: &ControllerConfig,
    planned: &BTreeMap<i32, Planned>,
    removing: &BTreeSet<i32>,
    unclean: &BTreeSet<i32>,
) -> Vec<MetadataRecord> {
    let state = |id: i32| -> Option<Planned> {
        planned.get(&id).copied().or_else(|| {
            image.broker(id).map(|b| Planned {
                fenced: b.fenced,
                shutting_down: b.in_controlled_shutdown,
            })
        })
    };
    let active = |id: i32| state(id).is_some_and(|s| !s.fenced && !s.shutting_down);
    let unfenced = |id: i32| state(id).is_some_and(|s| !s.fenced);
    let mut records = Vec::new();
    let none = BTreeSet::new();
    for topic in image.topics().values() {
        let rules = elr_rules(image, config, &topic.name);
        for (p, part) in topic.partitions.iter().enumerate() {
            let mut isr = part.isr.clone();
            let unclean: &BTreeSet<i32> = if rules.enabled { unclean } else { &none };
            for r in removing.iter().chain(unclean) {
                // The last member stays unless the ELR can take it (it is fenced, so the
                // partition waits for an eligible replica) or its log is not to be trusted.
                let may_empty = rules.enabled && (!unfenced(*r) || unclean.contains(r));
                if isr.len() > 1 || may_empty {
                    isr.retain(|m| m != r);
                }
            }
            let next = plan_partition(part, isr, rules, unclean, &active, &unfenced);
            if let Some(change) = change_record(topic.id, p as i32, part, &next) {
                records.push(change.into());
            }
        }
    }
    records
}

// ---------------------------------------------------------------------------------------------
// KIP-966 eligible leader replicas.

/// The KIP-966 rules for one topic: whether the ELR is on, and its `min.insync.replicas`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ElrRules {
    pub enabled: bool,
    pub min_isr: usize,
}

/// The config key of the minimum ISR.
pub const MIN_INSYNC_REPLICAS: &str = "min.insync.replicas";

/// The ELR rules for `topic`: its `min.insync.replicas` override, else the static default
/// (at least 1). The same minimum the leaders freeze their high watermark by (a broker's
/// effective topic config reads no cluster-wide dynamic value for it), which is what makes
/// an ELR member hold every committed record.
pub(crate) fn elr_rules(image: &MetadataImage, config: &ControllerConfig, topic: &str) -> ElrRules {
    let parse = |v: &String| v.trim().parse::<i32>().ok();
    let min = image
        .configs(&ConfigResource::topic(topic))
        .and_then(|c| c.get(MIN_INSYNC_REPLICAS))
        .and_then(parse)
        .unwrap_or(config.min_insync_replicas);
    ElrRules {
        enabled: config.eligible_leader_replicas,
        min_isr: min.max(1) as usize,
    }
}

/// A partition's leader, ISR, ELR and last known ELR as a change plans them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PartitionPlan {
    pub leader: i32,
    pub isr: Vec<i32>,
    pub elr: Vec<i32>,
    pub last_known_elr: Vec<i32>,
    /// The leader came from outside the ISR and ELR (KIP-704 RECOVERING).
    pub unclean: bool,
}

/// The ELR and last known ELR of `part` once its ISR is `isr`, KIP-966's rules:
/// - the ISR at `min.insync.replicas` or more (or the ELR off): both empty;
/// - else the ELR is the old ELR plus the members leaving the ISR (the high watermark was
///   frozen once the ISR fell below the minimum, so they hold every committed record), minus
///   the new ISR and the replicas in `unclean` (their logs may have lost records), trimmed so
///   that ISR + ELR never exceeds the minimum (the old ELR first, then the old leader, then
///   the ISR's order);
/// - the last known ELR gathers those that were eligible and are no longer (an unclean
///   shutdown), outside the new ISR and ELR.
pub(crate) fn elr_after(
    part: &PartitionState,
    isr: &[i32],
    rules: ElrRules,
    unclean: &BTreeSet<i32>,
) -> (Vec<i32>, Vec<i32>) {
    if !rules.enabled || isr.len() >= rules.min_isr {
        return (Vec::new(), Vec::new());
    }
    let mut candidates: Vec<i32> = Vec::new();
    let leader = (part.leader != NO_LEADER).then_some(part.leader);
    for r in part.elr.iter().chain(leader.iter()).chain(&part.isr) {
        if !candidates.contains(r) && part.replicas.contains(r) {
            candidates.push(*r);
        }
    }
    let room = rules.min_isr - isr.len();
    let elr: Vec<i32> = candidates
        .iter()
        .copied()
        .filter(|r| !isr.contains(r) && !unclean.contains(r))
        .take(room)
        .collect();
    let mut last_known: Vec<i32> = part
        .last_known_elr
        .iter()
        .copied()
        .filter(|r| part.replicas.contains(r))
        .collect();
    for r in candidates.iter().filter(|r| unclean.contains(r)) {
        if !last_known.contains(r) {
            last_known.push(*r);
        }
    }
    last_known.retain(|r| !isr.contains(r) && !elr.contains(r));
    (elr, last_known)
}

/// The partition after its ISR becomes `isr`: the ELR per [`elr_after`], then the leader:
/// the current one if still an active ISR member, else from the ISR ([`choose_leader`]),
/// else (the ISR empty) the first ELR member in replica order that is active, else unfenced;
/// an ELR member elected becomes the whole ISR and leaves the ELR.
pub(crate) fn plan_partition(
    part: &PartitionState,
    isr: Vec<i32>,
    rules: ElrRules,
    unclean: &BTreeSet<i32>,
    active: &dyn Fn(i32) -> bool,
    unfenced: &dyn Fn(i32) -> bool,
) -> PartitionPlan {
    let (elr, last_known_elr) = elr_after(part, &isr, rules, unclean);
    let leader = choose_leader(part, &isr, active, unfenced);
    let mut plan = PartitionPlan {
        leader,
        isr,
        elr,
        last_known_elr,
        unclean: false,
    };
    if leader == NO_LEADER && plan.isr.is_empty() {
        if let Some(l) = elect_from_elr(part, &plan.elr, active, unfenced) {
            let mut with_leader = part.clone();
            with_leader.isr = Vec::new();
            with_leader.elr = plan.elr.clone();
            with_leader.last_known_elr = plan.last_known_elr.clone();
            with_leader.leader = NO_LEADER;
            let isr = vec![l];
            let (elr, last_known_elr) = elr_after(&with_leader, &isr, rules, unclean);
            plan = PartitionPlan {
                leader: l,
                isr,
                elr,
                last_known_elr,
                unclean: false,
            };
        }
    }
    plan
}

/// The ELR member to lead a partition whose ISR is empty: the first in replica order that is
/// active, else one that is unfenced (shutting down).
fn elect_from_elr(
    part: &PartitionState,
    elr: &[i32],
    active: &dyn Fn(i32) -> bool,
    unfenced: &dyn Fn(i32) -> bool,
) -> Option<i32> {
    let in_elr = |r: &i32| elr.contains(r);
    part.replicas
        .iter()
        .copied()
        .find(|r| in_elr(r) && active(*r))
        .or_else(|| {
            part.replicas
                .iter()
                .copied()
                .find(|r| in_elr(r) && unfenced(*r))
        })
}

/// The record taking `part` to `next` (`None` when nothing changes). An ELR change alone does
/// not bump the leader epoch (KIP-966); an unclean leader starts RECOVERING (KIP-704).
fn change_record(
    topic: Uuid,
    p: i32,
    part: &PartitionState,
    next: &PartitionPlan,
) -> Option<skein_protocol::metadata_records::PartitionChangeRecord> {
    let mut change = partition_change_record(topic, p);
    let mut changed = false;
    if next.isr != part.isr {
        change.isr = Some(next.isr.clone());
        changed = true;
    }
    if next.leader != part.leader {
        change.leader = next.leader;
        changed = true;
    }
    if next.elr != part.elr {
        change.eligible_leader_replicas = Some(next.elr.clone());
        changed = true;
    }
    if next.last_known_elr != part.last_known_elr {
        change.last_known_elr = Some(next.last_known_elr.clone());
        changed = true;
    }
    if next.unclean && !part.leader_recovering {
        change.leader_recovery_state = LEADER_RECOVERING;
        changed = true;
    }
    changed.then_some(change)
}

// ---------------------------------------------------------------------------------------------
// Elections asked for by operators and policy: ElectLeaders (KIP-183/KIP-460), automatic
// preferred-leader balancing, unclean elections (`unclean.leader.election.enable`, KIP-704).

/// Kafka's `ElectionType` (ElectLeaders v1+): PREFERRED 0, UNCLEAN 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElectionType {
    /// Make the first replica of the assignment leader, if it is active and in the ISR.
    Preferred,
    /// Elect a leader where there is none: from the ISR if possible, else any live replica.
    Unclean,
}

impl ElectionType {
    /// The wire value's type, if it is one.
    pub fn from_i8(v: i8) -> Option<ElectionType> {
        match v {
            0 => Some(ElectionType::Preferred),
            1 => Some(ElectionType::Unclean),
            _ => None,
        }
    }
}

/// One partition's election result (ElectLeaders), in request order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElectionResult {
    pub topic: String,
    pub partition: i32,
    pub result: Result<(), ApiError>,
}

/// A leadership moved by policy (balancing or an unclean election).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderMoved {
    pub topic: String,
    pub partition: i32,
    pub from: i32,
    pub to: i32,
    /// The new leader came from outside the ISR (data may be lost; it starts RECOVERING).
    pub unclean: bool,
}

/// The config key that allows unclean elections.
pub const UNCLEAN_LEADER_ELECTION: &str = "unclean.leader.election.enable";

/// A preferred-replica election of `part`: the change record, or ELECTION_NOT_NEEDED when the
/// first replica leads already, PREFERRED_LEADER_NOT_AVAILABLE when it is not an active ISR
/// member.
fn plan_preferred(
    image: &MetadataImage,
    topic_id: Uuid,
    p: i32,
    part: &PartitionState,
) -> Result<MetadataRecord, ApiError> {
    let Some(&preferred) = part.replicas.first() else {
        return Err(err(
            ErrorCode::PREFERRED_LEADER_NOT_AVAILABLE,
            "the partition has no replicas",
        ));
    };
    if part.leader == preferred {
        return Err(err(
            ErrorCode::ELECTION_NOT_NEEDED,
            format!("the preferred replica {preferred} already leads"),
        ));
    }
    let active = image.broker(preferred).is_some_and(|b| b.is_active());
    if !active || !part.isr.contains(&preferred) {
        return Err(err(
            ErrorCode::PREFERRED_LEADER_NOT_AVAILABLE,
            format!(
                "the preferred replica {preferred} is {}",
                if !active {
                    "fenced, shutting down or unregistered"
                } else {
                    "not in the ISR"
                }
            ),
        ));
    }
    let mut change = partition_change_record(topic_id, p);
    change.leader = preferred;
    Ok(change.into())
}

/// An unclean election of `part` (which has no leader): an active or unfenced ISR member
/// first, then (the ISR empty) an ELR member (KIP-966), then the first active replica, which
/// becomes the whole ISR, RECOVERING (KIP-704), with the ELR and last known ELR cleared. The
/// change record, the new leader and whether it was unclean.
fn plan_unclean(
    image: &MetadataImage,
    config: &ControllerConfig,
    topic_id: Uuid,
    p: i32,
    part: &PartitionState,
) -> Result<(MetadataRecord, i32, bool), ApiError> {
    if part.leader != NO_LEADER {
        return Err(err(
            ErrorCode::ELECTION_NOT_NEEDED,
            format!("broker {} leads already", part.leader),
        ));
    }
    let active = |id: i32| image.broker(id).is_some_and(|b| b.is_active());
    let unfenced = |id: i32| image.broker(id).is_some_and(|b| !b.fenced);
    let topic = image.topic(topic_id).map_or("", |t| t.name.as_str());
    let rules = elr_rules(image, config, topic);
    let mut plan = plan_partition(
        part,
        part.isr.clone(),
        rules,
        &BTreeSet::new(),
        &active,
        &unfenced,
    );
    if plan.leader == NO_LEADER {
        let Some(r) = part.replicas.iter().copied().find(|r| active(*r)) else {
            return Err(err(
                ErrorCode::ELIGIBLE_LEADERS_NOT_AVAILABLE,
                format!("no replica of {:?} is live", part.replicas),
            ));
        };
        plan = PartitionPlan {
            leader: r,
            isr: vec![r],
            elr: Vec::new(),
            last_known_elr: Vec::new(),
            unclean: true,
        };
    }
    let mut change = change_record(topic_id, p, part, &plan).unwrap_or_else(|| {
        let mut c = partition_change_record(topic_id, p);
        c.leader = plan.leader;
        c
    });
    if plan.unclean && change.isr.is_none() {
        change.isr = Some(plan.isr.clone());
    }
    Ok((change.into(), plan.leader, plan.unclean))
}

/// Whether unclean elections are allowed for `topic`: its own override, else the cluster-wide
/// dynamic broker config, else the static default.
fn unclean_allowed(image: &MetadataImage, topic: &str, default: bool) -> bool {
    let parse = |v: &String| v.trim().eq_ignore_ascii_case("true");
    image
        .configs(&ConfigResource::topic(topic))
        .and_then(|c| c.get(UNCLEAN_LEADER_ELECTION))
        .or_else(|| {
            image
                .configs(&ConfigResource::broker(""))
                .and_then(|c| c.get(UNCLEAN_LEADER_ELECTION))
        })
        .map_or(default, parse)
}

impl QuorumController {
    /// ElectLeaders: elects the preferred or an unclean leader for each named partition, or
    /// for every partition when `partitions` is `None` (then partitions whose election is not
    /// needed are left out of the answer, as Kafka does). Unknown topics and partitions are
    /// UNKNOWN_TOPIC_OR_PARTITION.
    pub fn elect_leaders(
        &mut self,
        image: &MetadataImage,
        election: ElectionType,
        partitions: Option<&[(String, Vec<i32>)]>,
    ) -> Outcome<Vec<ElectionResult>> {
        let mut records: Vec<MetadataRecord> = Vec::new();
        let mut results = Vec::new();
        let mut done: BTreeMap<(Uuid, i32), Result<(), ApiError>> = BTreeMap::new();
        let mut elect = |records: &mut Vec<MetadataRecord>, topic: &str, p: i32| {
            let Some(t) = image.topic_by_name(topic) else {
                return Err(err(
                    ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                    format!("No such topic as {topic}"),
                ));
            };
            let Some(part) = usize::try_from(p).ok().and_then(|i| t.partitions.get(i)) else {
                return Err(err(
                    ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                    format!("No such partition as {topic}-{p}"),
                ));
            };
            if let Some(r) = done.get(&(t.id, p)) {
                return r.clone(); // Named twice: elected once.
            }
            let r = if records.len() >= MAX_RECORDS_PER_OP {
                Err(err(
                    ErrorCode::POLICY_VIOLATION,
                    format!("more than {MAX_RECORDS_PER_OP} elections in one request"),
                ))
            } else {
                let planned = match election {
                    ElectionType::Preferred => plan_preferred(image, t.id, p, part),
                    ElectionType::Unclean => {
                        plan_unclean(image, &self.config, t.id, p, part).map(|(r, ..)| r)
                    }
                };
                planned.map(|record| records.push(record))
            };
            done.insert((t.id, p), r.clone());
            r
        };
        match partitions {
            Some(named) => {
                for (topic, parts) in named {
                    for p in parts {
                        let result = elect(&mut records, topic, *p);
                        results.push(ElectionResult {
                            topic: topic.clone(),
                            partition: *p,
                            result,
                        });
                    }
                }
            }
            None => {
                for t in image.topic_ids().keys() {
                    let count = image.topic_by_name(t).map_or(0, |t| t.partitions.len());
                    for p in 0..count as i32 {
                        let result = elect(&mut records, t, p);
                        if result
                            .as_ref()
                            .is_err_and(|e| e.code == ErrorCode::ELECTION_NOT_NEEDED)
                        {
                            continue;
                        }
                        results.push(ElectionResult {
                            topic: t.clone(),
                            partition: p,
                            result,
                        });
                    }
                }
            }
        }
        Outcome {
            records,
            reply: results,
        }
    }

    /// Automatic preferred-leader balancing (`auto.leader.rebalance.enable`): for each broker,
    /// the partitions whose preferred (first) replica it is but which another broker leads;
    /// when their share of the broker's preferred partitions exceeds
    /// `leader.imbalance.per.broker.percentage`, each of them whose preferred replica is an
    /// active ISR member gets it back as leader. Partitions still recovering from an unclean
    /// election are left alone.
    pub fn balance_leaders(&mut self, image: &MetadataImage) -> Outcome<Vec<LeaderMoved>> {
        // preferred broker -> (partitions it should lead, those it does not lead)
        type NotLed<'a> = Vec<(&'a str, Uuid, i32)>;
        let mut by_broker: BTreeMap<i32, (usize, NotLed)> = BTreeMap::new();
        for t in image.topics().values() {
            for (p, part) in t.partitions.iter().enumerate() {
                let Some(&preferred) = part.replicas.first() else {
                    continue;
                };
                let entry = by_broker.entry(preferred).or_default();
                entry.0 += 1;
                if part.leader != preferred {
                    entry.1.push((t.name.as_str(), t.id, p as i32));
                }
            }
        }
        let pct = u64::from(self.config.leader_imbalance_per_broker_percentage);
        let mut records = Vec::new();
        let mut moved = Vec::new();
        for (broker, (total, not_led)) in by_broker {
            // ratio > pct / 100, in integers.
            if total == 0 || (not_led.len() as u64) * 100 <= pct * total as u64 {
                continue;
            }
            for (name, id, p) in not_led {
                if records.len() >= MAX_RECORDS_PER_OP {
                    break;
                }
                let Some(part) = image.partition(id, p) else {
                    continue;
                };
                if part.leader_recovering {
                    continue;
                }
                if let Ok(record) = plan_preferred(image, id, p, part) {
                    records.push(record);
                    moved.push(LeaderMoved {
                        topic: name.to_string(),
                        partition: p,
                        from: part.leader,
                        to: broker,
                        unclean: false,
                    });
                }
            }
        }
        Outcome {
            records,
            reply: moved,
        }
    }

    /// Unclean elections where they are allowed: every leaderless partition of a topic whose
    /// `unclean.leader.election.enable` is true (or of `topic`, treated as allowed, when given:
    /// the config is being turned on in the same entry) gets a leader from its ISR if a member
    /// is live, else the first live replica, which becomes the whole ISR and RECOVERING.
    pub fn elect_unclean_leaders(
        &mut self,
        image: &MetadataImage,
        topic: Option<&str>,
    ) -> Outcome<Vec<LeaderMoved>> {
        let mut records = Vec::new();
        let mut moved = Vec::new();
        for t in image.topics().values() {
            let allowed = match topic {
                Some(name) => t.name == name,
                None => unclean_allowed(image, &t.name, self.config.unclean_leader_election),
            };
            if !allowed {
                continue;
            }
            for (p, part) in t.partitions.iter().enumerate() {
                if part.leader != NO_LEADER || records.len() >= MAX_RECORDS_PER_OP {
                    continue;
                }
                if let Ok((record, to, unclean)) =
                    plan_unclean(image, &self.config, t.id, p as i32, part)
                {
                    records.push(record);
                    moved.push(LeaderMoved {
                        topic: t.name.clone(),
                        partition: p as i32,
                        from: NO_LEADER,
                        to,
                        unclean,
                    });
                }
            }
        }
        Outcome {
            records,
            reply: moved,
        }
    }

    /// The leader of a partition elected uncleanly reports that it recovered (AlterPartition
    /// with LeaderRecoveryState RECOVERED, KIP-704), with the ISR it wants; the same checks as
    /// [`Self::alter_partition`].
    pub fn alter_partition_recovered(
        &mut self,
        image: &MetadataImage,
        broker_id: i32,
        broker_epoch: i64,
        change: &AlterPartition,
    ) -> Result<Outcome<PartitionState>, ApiError> {
        check_broker_epoch(image, broker_id, broker_epoch)?;
        let (state, record) =
            plan_isr_change_recovering(image, &self.config, broker_id, change, Some(false))?;
        Ok(Outcome {
            records: record.into_iter().collect(),
            reply: state,
        })
    }

    /// Whether unclean elections are allowed for `topic` (its override, the cluster-wide
    /// dynamic config, the static default).
    pub fn unclean_allowed(&self, image: &MetadataImage, topic: &str) -> bool {
        unclean_allowed(image, topic, self.config.unclean_leader_election)
    }
}
