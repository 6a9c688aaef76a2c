//! The broker on the metadata log: topics, partitions, configs and producer-id blocks are
//! what the quorum has committed, not what a local file says.
//!
//! - [`ImageApplier`] is the state machine `skein-raft` drives: every committed entry is
//!   applied to the shared [`MetadataImage`], and the broker acts on the delta at once (opens
//!   new partitions, sets assignments and leader epochs, applies configs, drops deleted
//!   topics), so a proposal that has resolved is visible locally.
//! - [`Quorum`] runs the [`QuorumController`]'s operations one at a time against the committed
//!   image: decide, propose the records as one entry, wait for the commit, answer.
//! - A node is a cluster of one unless `controller.quorum.voters` says otherwise; it registers
//!   itself as a broker and a controller and heartbeats itself through the same code.
//! - A data directory written before the metadata log existed (`skein-meta.json`) has its
//!   topics proposed once, with their ids, configs and producer-id block; the file is then
//!   renamed `skein-meta.json.migrated`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock, TryLockError, Weak};
use std::time::Duration;

use bytes::Bytes;
use skein_metadata::image::{
    partition_record, ConfigResource, MetadataDelta, PartitionState, TOPIC_RESOURCE,
};
use skein_metadata::{encode_batch, ControllerConfig, MetadataImage, Outcome, QuorumController};
use skein_protocol::metadata_records::{ConfigRecord, ProducerIdsRecord, TopicRecord};
use skein_protocol::{MetadataRecord, Uuid};
use skein_raft::{Applier, LogError, MetadataLog, RaftConfig, RaftNode};

use crate::broker::{Assignment, Broker};
use crate::controller_link::{Answer, ControllerCall, WireEndpoint};
use crate::error::{ApiError, ErrorCode};

/// How long a broker-side wait on the controller may take before the client gets
/// REQUEST_TIMED_OUT.
const CONTROLLER_WAIT: Duration = Duration::from_secs(30);

/// The node's handle on the metadata log and, when it leads, the controller.
pub struct Quorum {
    pub image: Arc<RwLock<MetadataImage>>,
    node: OnceLock<Arc<RaftNode>>,
    controller: tokio::sync::Mutex<Controller>,
    /// This process's registration (the broker epoch), once registered.
    broker_epoch: std::sync::atomic::AtomicI64,
    /// KIP-966 `PreviousBrokerEpoch`, read from the clean-shutdown marker once per process.
    previous_broker_epoch: std::sync::OnceLock<i64>,
    incarnation: Uuid,
    /// When the active controller next checks leader imbalance (ms; -1: not scheduled).
    pub(crate) next_leader_balance_ms: std::sync::atomic::AtomicI64,
    /// True from start until the log held at start has been replayed: meanwhile committed
    /// entries only change the image, and the broker then opens what the image holds once
    /// ([`Broker::finish_replay`]) rather than entry by entry (a topic created and deleted
    /// in the log is never opened, `__consumer_offsets` is loaded once).
    replaying: Arc<Mutex<bool>>,
    /// Auto-creations by topic name ([`Broker::start_auto_create`]): `None` while under
    /// way, else the error that ended one, for the next Metadata request to report.
    auto_creating: Mutex<BTreeMap<String, Option<ErrorCode>>>,
}

struct Controller {
    logic: QuorumController,
    /// The Raft term the controller's volatile state was rebuilt for.
    active_term: Option<u64>,
}

fn api(code: ErrorCode, message: impl Into<String>) -> ApiError {
    ApiError::new(code, message)
}

fn from_log_error(e: LogError) -> ApiError {
    match e {
        LogError::NotLeader { .. } => api(
            ErrorCode::NOT_CONTROLLER,
            "This node is not the active controller.",
        ),
        LogError::Timeout(d) => api(
            ErrorCode::REQUEST_TIMED_OUT,
            format!("The metadata change was not committed within {d:?}."),
        ),
        other => api(
            ErrorCode::REQUEST_TIMED_OUT,
            format!("The metadata change may not have been committed: {other}"),
        ),
    }
}

impl Quorum {
    pub fn new(config: ControllerConfig) -> Quorum {
        Quorum {
            image: Arc::new(RwLock::new(MetadataImage::new())),
            node: OnceLock::new(),
            controller: tokio::sync::Mutex::new(Controller {
                logic: QuorumController::new(config),
                active_term: None,
            }),
            broker_epoch: std::sync::atomic::AtomicI64::new(-1),
            previous_broker_epoch: std::sync::OnceLock::new(),
            incarnation: crate::broker::random_uuid(),
            next_leader_balance_ms: std::sync::atomic::AtomicI64::new(-1),
            replaying: Arc::new(Mutex::new(true)),
            auto_creating: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn raft(&self) -> Option<&Arc<RaftNode>> {
        self.node.get()
    }

    /// Reads the image.
    pub fn read<R>(&self, f: impl FnOnce(&MetadataImage) -> R) -> R {
        f(&self.image.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Runs one controller operation: decide against the committed image, propose its
    /// records as one entry, and answer once they are committed and applied here.
    pub async fn run<R>(
        &self,
        now_ms: i64,
        op: impl FnOnce(&mut QuorumController, &MetadataImage, u64) -> Result<Outcome<R>, ApiError>,
    ) -> Result<R, ApiError> {
        self.run_inner(now_ms, op).await.map(|(r, _)| r)
    }

    /// Runs a broker's [`ControllerCall`] here, the active controller; answers with the
    /// metadata offset the caller must have applied to see its effect.
    pub async fn run_at(
        &self,
        now_ms: i64,
        call: &ControllerCall,
    ) -> Result<(Answer, u64), ApiError> {
        self.run_inner(now_ms, |c, image, now| {
            crate::controller_link::decide(call, c, image, now)
        })
        .await
    }

    async fn run_inner<R>(
        &self,
        now_ms: i64,
        op: impl FnOnce(&mut QuorumController, &MetadataImage, u64) -> Result<Outcome<R>, ApiError>,
    ) -> Result<(R, u64), ApiError> {
        let Some(node) = self.node.get() else {
            return Err(api(
                ErrorCode::NOT_CONTROLLER,
                "The metadata log is not running yet.",
            ));
        };
        if !node.is_leader() {
            return Err(api(
                ErrorCode::NOT_CONTROLLER,
                "This node is not the active controller.",
            ));
        }
        let now = now_ms.max(0) as u64;
        let mut c = self.controller.lock().await;
        let term = node.status().term;
        if c.active_term != Some(term) {
            let image = self.image.read().unwrap_or_else(|e| e.into_inner());
            c.logic.activate(&image, now);
            c.active_term = Some(term);
        }
        let (outcome, seen) = {
            let image = self.image.read().unwrap_or_else(|e| e.into_inner());
            (
                op(&mut c.logic, &image, now)?,
                image.last_offset().unwrap_or(0),
            )
        };
        if outcome.records.is_empty() {
            return Ok((outcome.reply, seen));
        }
        let entry = encode_batch(&outcome.records);
        match tokio::time::timeout(CONTROLLER_WAIT, node.propose(entry)).await {
            Ok(Ok(offset)) => Ok((outcome.reply, offset)),
            Ok(Err(e)) => {
                // The volatile state may be ahead of what was committed: rebuild it.
                c.active_term = None;
                Err(from_log_error(e))
            }
            Err(_) => {
                c.active_term = None;
                Err(from_log_error(LogError::Timeout(CONTROLLER_WAIT)))
            }
        }
    }

    /// The last metadata offset applied here (0 before any).
    pub fn applied_offset(&self) -> u64 {
        self.node
            .get()
            .and_then(|n| *n.applied().borrow())
            .unwrap_or(0)
    }

    pub fn broker_epoch(&self) -> i64 {
        self.broker_epoch.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The cluster as this node sees it, for `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClusterView {
    /// -1 when no leader is known.
    pub active_controller: i64,
    pub metadata_offset: i64,
    pub fenced_brokers: i64,
    pub live_brokers: i64,
    pub offline_partitions: i64,
}

impl Broker {
    /// The cluster's state from this node's metadata image and quorum view.
    pub fn cluster_view(&self) -> ClusterView {
        let active_controller = self
            .quorum
            .raft()
            .and_then(|n| n.leader())
            .map_or(-1, |(id, _)| id as i64);
        let (fenced, live, offline) = self.quorum.read(|image| {
            let fenced = image.brokers().values().filter(|b| b.fenced).count();
            let live = image.brokers().len() - fenced;
            let offline = image
                .topics()
                .values()
                .flat_map(|t| t.partitions.iter())
                .filter(|p| p.leader < 0)
                .count();
            (fenced, live, offline)
        });
        ClusterView {
            active_controller,
            metadata_offset: self.quorum.applied_offset() as i64,
            fenced_brokers: fenced as i64,
            live_brokers: live as i64,
            offline_partitions: offline as i64,
        }
    }
}

impl Broker {
    /// Starts creating topic `name` on first use (Metadata with auto-creation), as Kafka
    /// does: the controller commits it in the background while the request is answered
    /// LEADER_NOT_AVAILABLE for the topic, and the client asks again. No request worker waits
    /// for the commit, and one creation per name runs at a time. What is wrong at once (the
    /// name, the partition limit) is the error; so is a non-retriable error that ended the
    /// previous attempt (reported once: the next request tries again).
    pub fn start_auto_create(self: &Arc<Self>, name: &str) -> Result<(), ApiError> {
        let (partitions, replication_factor, overrides) =
            self.check_new_topic(name, -1, -1, &[])?;
        {
            let mut creating = self
                .quorum
                .auto_creating
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            match creating.get(name) {
                Some(None) => return Ok(()),
                Some(Some(code)) => {
                    let code = *code;
                    creating.remove(name);
                    return Err(api(
                        code,
                        format!("The auto-creation of topic '{name}' failed."),
                    ));
                }
                None => {}
            }
            creating.insert(name.to_string(), None);
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.quorum
                .auto_creating
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(name);
            return Err(api(
                ErrorCode::UNKNOWN_SERVER_ERROR,
                "metadata changes need the broker's runtime",
            ));
        };
        let broker = self.clone();
        let name = name.to_string();
        let seed = u64::from_le_bytes(
            crate::broker::random_uuid().0[..8]
                .try_into()
                .expect("8 bytes"),
        );
        runtime.spawn(async move {
            let created = broker
                .controller_call(ControllerCall::CreateTopic {
                    name: name.clone(),
                    partitions,
                    replication_factor,
                    configs: overrides.into_iter().collect(),
                    seed,
                    assignments: Vec::new(),
                })
                .await;
            let failed = match created {
                Ok(_) => {
                    tracing::info!(topic = %name, partitions, "auto-created topic");
                    None
                }
                Err(e) if e.code == ErrorCode::TOPIC_ALREADY_EXISTS => None,
                // The controller was away or slow: the client's next request tries again.
                Err(e)
                    if matches!(
                        e.code,
                        ErrorCode::NOT_CONTROLLER | ErrorCode::REQUEST_TIMED_OUT
                    ) =>
                {
                    tracing::info!(topic = %name, "auto-creation not done: {}", e.message);
                    None
                }
                Err(e) => {
                    tracing::warn!(topic = %name, "auto-creation failed: {}", e.message);
                    Some(e.code)
                }
            };
            let mut creating = broker
                .quorum
                .auto_creating
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            match failed {
                // Failures are remembered for at most AUTO_CREATE_FAILURES_KEPT names, so
                // clients asking for many names cannot grow the map without bound.
                Some(code) if creating.len() <= AUTO_CREATE_FAILURES_KEPT => {
                    creating.insert(name, Some(code));
                }
                _ => {
                    creating.remove(&name);
                }
            }
        });
        Ok(())
    }
}

/// How many failed auto-creations are kept to be reported to the next request.
const AUTO_CREATE_FAILURES_KEPT: usize = 1024;

/// Applies committed entries to the image and the broker.
struct ImageApplier {
    image: Arc<RwLock<MetadataImage>>,
    broker: Weak<Broker>,
    /// [`Quorum::replaying`]: while set, entries change the image only.
    replaying: Arc<Mutex<bool>>,
}

/// Takes the replay flag; if [`Broker::finish_replay`] holds it (opening partitions), waits
/// for it with the runtime's other work moved off this thread.
fn lock_replay(flag: &Mutex<bool>) -> MutexGuard<'_, bool> {
    match flag.try_lock() {
        Ok(g) => g,
        Err(TryLockError::Poisoned(e)) => e.into_inner(),
        Err(TryLockError::WouldBlock) => {
            blocking_work(true, || flag.lock().unwrap_or_else(|e| e.into_inner()))
        }
    }
}

/// Runs `work` (file work when `file_work`) in `block_in_place` on the multi-threaded
/// runtime, inline elsewhere. Cheap work always runs inline: each `block_in_place` may start
/// a worker thread, and every thread costs the allocator its own heap.
fn blocking_work<R>(file_work: bool, work: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if file_work && h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

impl Applier for ImageApplier {
    fn apply(&mut self, offset: u64, entry: &[u8]) {
        // Held while the image changes, so that an entry is either part of the replay or
        // applied to the broker after it, never both or neither.
        let replaying = lock_replay(&self.replaying);
        let delta = {
            let mut image = self.image.write().unwrap_or_else(|e| e.into_inner());
            match image.apply_entry(offset, entry) {
                Ok(d) => d,
                Err(e) => {
                    // Every node refuses the same entry the same way; the image is unchanged.
                    tracing::error!(offset, "metadata entry not applied: {e}");
                    return;
                }
            }
        };
        let replaying = *replaying;
        if replaying || delta.is_empty() {
            return;
        }
        if let Some(broker) = self.broker.upgrade() {
            let image = self.image.clone();
            // Opening and deleting partitions is file work: let the runtime move other tasks
            // meanwhile. Other deltas (registrations, heartbeats, configs) run inline.
            let file_work = !delta.partitions.is_empty() || !delta.topics_deleted.is_empty();
            blocking_work(file_work, move || {
                let image = image.read().unwrap_or_else(|e| e.into_inner());
                broker.apply_delta(&image, &delta);
            });
        }
    }

    fn snapshot(&self) -> Bytes {
        self.image
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .snapshot()
    }

    fn restore(&mut self, offset: u64, snapshot: &[u8]) -> Result<(), String> {
        let mut fresh = MetadataImage::new();
        fresh.restore(offset, snapshot).map_err(|e| e.to_string())?;
        let replaying = lock_replay(&self.replaying);
        let delta = (!*replaying).then(|| delta_from_empty(&fresh));
        *self.image.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        drop(replaying);
        if let (Some(broker), Some(delta)) = (self.broker.upgrade(), delta) {
            let image = self.image.read().unwrap_or_else(|e| e.into_inner());
            broker.apply_delta(&image, &delta);
        }
        Ok(())
    }
}

/// The directory id of `meta.properties` as the raft crate's UUID.
fn directory_uuid(id: &str) -> Result<uuid::Uuid, String> {
    let u: Uuid = id
        .parse()
        .map_err(|_| format!("directory.id {id:?} is not a Kafka UUID"))?;
    Ok(uuid::Uuid::from_bytes(u.0))
}

impl Broker {
    /// Starts the metadata log (a quorum of one unless configured otherwise), replays it
    /// into the broker, migrates a legacy data directory, registers this node and waits until
    /// it is unfenced. The broker serves once this returns.
    pub async fn start_quorum(self: &Arc<Self>) -> anyhow::Result<()> {
        use anyhow::Context;
        let settings = &self.config.cluster;
        // A cluster of one with no controller listener configured binds none: no peer ever
        // calls it (a quorum names its voters' listeners, so a node meant to grow into one
        // is given `--controller-listen`).
        let listener = match settings.controller_listener {
            None if settings.voters.is_empty() => None,
            listen => {
                let listen =
                    listen.unwrap_or_else(|| "127.0.0.1:0".parse().expect("literal address"));
                Some(
                    tokio::net::TcpListener::bind(listen)
                        .await
                        .with_context(|| {
                            format!("could not bind the controller listener {listen}")
                        })?,
                )
            }
        };
        let mut voters = BTreeMap::new();
        if settings.voters.is_empty() {
            // Recorded in the metadata log's membership; never dialled without a listener.
            let address = match &listener {
                Some(l) => l.local_addr()?.to_string(),
                None => "127.0.0.1:0".to_string(),
            };
            voters.insert(self.node_id() as u64, address);
        } else {
            for v in &settings.voters {
                voters.insert(v.id as u64, v.address.clone());
            }
        }
        let mut config = RaftConfig::new(
            self.node_id() as u64,
            self.cluster_id.clone(),
            directory_uuid(&self.identity.directory_id).map_err(anyhow::Error::msg)?,
            self.config.data_dir.join("__cluster_metadata-0"),
            voters,
        );
        if !settings.roles.controller {
            config.role = skein_raft::Role::Observer;
        }
        config.snapshot_every = settings.metadata_snapshot_entries;
        config.transport = match &self.config.controller_sasl {
            // SASL_PLAINTEXT / SASL_SSL: the login wraps the TLS (if any).
            Some(client) => Some(Arc::new(crate::sasl::controller::ControllerSasl {
                tls: self.controller_tls(),
                client: client.clone(),
                server: self.config.controller_sasl_server.clone(),
                broker: Arc::downgrade(self),
                failed_login_log: Arc::new(skein_raft::RareLog::new()),
            }) as Arc<dyn skein_raft::Transport>),
            None => self.controller_tls(),
        };
        let applier = ImageApplier {
            image: self.quorum.image.clone(),
            broker: Arc::downgrade(self),
            replaying: self.quorum.replaying.clone(),
        };
        let node = match listener {
            Some(listener) => RaftNode::start(config, listener, Box::new(applier)).await,
            None => RaftNode::start_alone(config, Box::new(applier)).await,
        }
        .context("could not start the metadata log")?;
        let node = Arc::new(node);
        let _ = self.quorum.node.set(node.clone());
        self.install_controller_handler();
        // Catch up with everything the log held at start.
        let target = node.status().log_end_offset;
        let mut applied = node.applied();
        let caught_up = async {
            loop {
                let now = *applied.borrow_and_update();
                if target == 0 || now.is_some_and(|a| a + 1 >= target) {
                    return;
                }
                if applied.changed().await.is_err() {
                    return;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(60), caught_up)
            .await
            .context("the metadata log did not catch up within 60 s")?;
        self.finish_replay();
        if settings.voters.is_empty() {
            // A cluster of one elects itself at once (a few ms).
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while !node.is_leader() {
                if tokio::time::Instant::now() > deadline {
                    anyhow::bail!("no controller was elected within 30 s");
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            self.migrate_legacy_metadata().await?;
        } else {
            if self.legacy_image().is_some() {
                anyhow::bail!(
                    "this data directory holds a single node's topics (skein-meta.json); start it once without controller.quorum.voters to move them into its metadata log, then join it to a cluster"
                );
            }
            // Wait for a controller, however long the other voters take to come up.
            let mut waited = 0u64;
            while node.leader().is_none() {
                if waited.is_multiple_of(100) {
                    tracing::info!(
                        voters = settings.voters.len(),
                        "waiting for the controller quorum to elect a leader"
                    );
                }
                waited += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        self.register_self().await?;
        Ok(())
    }

    /// Ends the replay of the log held at start: opens what the image holds, all topics at
    /// once (in parallel, see [`Broker::apply_delta`]), and from then on applies each
    /// committed entry as it comes. Entries committed meanwhile wait for this.
    fn finish_replay(&self) {
        blocking_work(true, || {
            let mut replaying = self
                .quorum
                .replaying
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if !*replaying {
                return;
            }
            let started = std::time::Instant::now();
            let image = self.quorum.image.read().unwrap_or_else(|e| e.into_inner());
            let delta = delta_from_empty(&image);
            if !delta.is_empty() {
                self.apply_delta(&image, &delta);
            }
            *replaying = false;
            tracing::debug!(
                offset = image.last_offset().unwrap_or(0),
                topics = image.topics().len(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "replayed the metadata log"
            );
        });
    }

    /// Proposes the topics of a `skein-meta.json` written before the metadata log, once.
    async fn migrate_legacy_metadata(self: &Arc<Self>) -> anyhow::Result<()> {
        let Some(legacy) = self.legacy_image() else {
            return Ok(());
        };
        let node = self.node_id();
        let existing = self.quorum.read(|i| i.topic_ids().clone());
        let mut records: Vec<MetadataRecord> = Vec::new();
        for (name, stored) in &legacy.topics {
            if existing.contains_key(name) {
                continue;
            }
            let Some(id) = crate::broker::uuid_from_hex(&stored.id) else {
                anyhow::bail!("skein-meta.json: topic {name} has a malformed id");
            };
            records.push(
                TopicRecord {
                    name: name.clone(),
                    topic_id: id,
                    ..Default::default()
                }
                .into(),
            );
            for p in 0..stored.partitions {
                let state = PartitionState {
                    replicas: vec![node],
                    isr: vec![node],
                    leader: node,
                    leader_epoch: crate::api::LEADER_EPOCH,
                    partition_epoch: 0,
                    ..Default::default()
                };
                records.push(partition_record(id, p, &state).into());
            }
            for (k, v) in &stored.configs {
                records.push(
                    ConfigRecord {
                        resource_type: TOPIC_RESOURCE,
                        resource_name: name.clone(),
                        name: k.clone(),
                        value: Some(v.clone()),
                        ..Default::default()
                    }
                    .into(),
                );
            }
        }
        if legacy.producer_id_block_end > self.quorum.read(|i| i.next_producer_id()) {
            records.push(
                ProducerIdsRecord {
                    broker_id: node,
                    broker_epoch: -1,
                    next_producer_id: legacy.producer_id_block_end,
                    ..Default::default()
                }
                .into(),
            );
        }
        let count = legacy.topics.len();
        if !records.is_empty() {
            let raft = self.quorum.node.get().expect("started").clone();
            raft.propose(encode_batch(&records))
                .await
                .map_err(|e| anyhow::anyhow!("could not migrate skein-meta.json: {e}"))?;
        }
        self.retire_legacy_image()?;
        tracing::info!(
            topics = count,
            "moved the topics of skein-meta.json into the metadata log"
        );
        Ok(())
    }

    /// Registers this node (as a controller when it is one, and as a broker) and heartbeats
    /// until it is unfenced.
    async fn register_self(self: &Arc<Self>) -> anyhow::Result<()> {
        let node = self.node_id();
        let endpoints: Vec<WireEndpoint> = self
            .advertised_listeners()
            .into_iter()
            .map(|(name, protocol, e)| WireEndpoint {
                name,
                host: e.host,
                port: e.port,
                security_protocol: protocol.id(),
            })
            .collect();
        let directory: Uuid = self
            .identity
            .directory_id
            .parse()
            .map_err(|_| anyhow::anyhow!("bad directory.id"))?;
        let raft = self.quorum.node.get().expect("started").clone();
        if self.config.cluster.roles.controller {
            // Without a controller listener (a cluster of one) it registers no endpoint.
            let endpoints: Vec<WireEndpoint> = raft
                .local_addr()
                .map(|local| match raft.advertised_addr().rsplit_once(':') {
                    Some((h, p)) if p.parse::<u16>().is_ok() => {
                        (h.to_string(), p.parse().expect("checked"))
                    }
                    _ => (local.ip().to_string(), local.port()),
                })
                .map(|(host, port)| WireEndpoint {
                    name: "CONTROLLER".into(),
                    host,
                    port,
                    security_protocol: 0,
                })
                .into_iter()
                .collect();
            self.controller_call(ControllerCall::RegisterController {
                node,
                directory_id: directory.0,
                endpoints,
            })
            .await
            .map_err(|e| anyhow::anyhow!("could not register as a controller: {}", e.message))?;
        }
        // A registration of this node id by an earlier process of this node (killed, or
        // stopped without a controlled shutdown) is stale for sure: this process holds the
        // data directory's lock. Fence it, rather than wait out its session.
        let previous = self.quorum.read(|i| {
            i.broker(node)
                .filter(|b| b.incarnation_id != self.quorum.incarnation && !b.fenced)
                .map(|b| b.epoch)
        });
        if let Some(epoch) = previous {
            let fenced = self
                .controller_call(ControllerCall::Heartbeat {
                    broker_id: node,
                    broker_epoch: epoch,
                    metadata_offset: self.quorum.applied_offset(),
                    want_fence: true,
                    want_shutdown: false,
                })
                .await;
            match fenced {
                Ok(_) => tracing::info!(
                    broker_epoch = epoch,
                    "fenced the registration of this node's previous process"
                ),
                // Another controller may have fenced it or a registration replaced it since.
                Err(e) if e.code == ErrorCode::STALE_BROKER_EPOCH => {}
                Err(e) => anyhow::bail!(
                    "could not fence this node's previous registration: {}",
                    e.message
                ),
            }
        }
        // KIP-966: the epoch under which this node's log was last known intact. Read once per
        // process (a retried registration sends the same). Without fsync before acks the file
        // only tells of a clean shutdown, so it is consumed now: a crash from here on leaves
        // none.
        let previous_broker_epoch = *self.quorum.previous_broker_epoch.get_or_init(|| {
            let epoch = read_clean_shutdown(&self.config.data_dir);
            if !self.config.acks_all_fsync {
                if let Err(e) = remove_clean_shutdown(&self.config.data_dir) {
                    tracing::warn!("could not remove {CLEAN_SHUTDOWN_FILE}: {e}");
                }
            }
            epoch
        });
        let registered = self
            .controller_call(ControllerCall::RegisterBroker {
                broker_id: node,
                incarnation_id: self.quorum.incarnation.0,
                endpoints,
                rack: self.config.cluster.rack.clone(),
                previous_broker_epoch,
            })
            .await
            .map_err(|e| anyhow::anyhow!("could not register as a broker: {}", e.message))?;
        let Answer::Registered { broker_epoch } = registered else {
            anyhow::bail!("the controller answered the registration with {registered:?}");
        };
        if self.config.acks_all_fsync {
            // Every acknowledged acks=all record is fsynced here before it is acknowledged, so
            // even a crash leaves the log intact for KIP-966's purpose: the next start may
            // present this epoch.
            self.write_clean_shutdown(broker_epoch);
        }
        self.quorum
            .broker_epoch
            .store(broker_epoch, std::sync::atomic::Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let reply = self.heartbeat(false).await?;
            if !reply.is_fenced {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!("this broker was not unfenced within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// One heartbeat of this broker to the active controller.
    pub async fn heartbeat(
        self: &Arc<Self>,
        want_shutdown: bool,
    ) -> anyhow::Result<skein_metadata::controller::HeartbeatReply> {
        let answer = self
            .controller_call(ControllerCall::Heartbeat {
                broker_id: self.node_id(),
                broker_epoch: self.quorum.broker_epoch(),
                metadata_offset: self.quorum.applied_offset(),
                want_fence: false,
                want_shutdown,
            })
            .await
            .map_err(|e| anyhow::anyhow!("heartbeat: {}", e.message))?;
        match answer {
            Answer::Heartbeat {
                is_caught_up,
                is_fenced,
                should_shut_down,
            } => Ok(skein_metadata::controller::HeartbeatReply {
                is_caught_up,
                is_fenced,
                should_shut_down,
            }),
            other => anyhow::bail!("the controller answered a heartbeat with {other:?}"),
        }
    }

    /// The controller's periodic work (fencing silent brokers) when this node is the active
    /// controller, then this broker's heartbeat.
    pub async fn quorum_tick(self: &Arc<Self>) {
        if self.quorum.raft().is_some_and(|n| n.is_leader()) {
            let now = self.now_ms();
            let ticked = self
                .quorum
                .run(now, |c, image, now| Ok(c.tick(image, now)))
                .await;
            if let Ok(t) = ticked {
                for b in t.fenced {
                    tracing::warn!(broker = b, "fenced a broker that stopped heartbeating");
                }
            }
            self.policy_elections().await;
        } else {
            self.quorum
                .next_leader_balance_ms
                .store(-1, std::sync::atomic::Ordering::Relaxed);
        }
        if let Err(e) = self.heartbeat(false).await {
            tracing::warn!("{e:#}");
        }
    }

    /// Records (durably) that this node's log is intact as of registration `epoch`
    /// (KIP-966's clean-shutdown marker); a failure only costs the node its ELR memberships.
    pub(crate) fn write_clean_shutdown(&self, epoch: i64) {
        if epoch < 0 {
            return;
        }
        if let Err(e) = write_clean_shutdown(&self.config.data_dir, epoch) {
            tracing::warn!("could not write {CLEAN_SHUTDOWN_FILE}: {e}");
        }
    }

    /// Controlled shutdown (Kafka's): heartbeats `want_shutdown` until the controller has
    /// moved this broker's leaderships away and says it may go, at most `limit`. It also
    /// stops once no controller has answered for `broker.session.timeout.ms`: an active
    /// controller would have fenced this broker by then (moving its leaderships just the
    /// same), and with none (the whole cluster stopping at once, the quorum gone) no answer
    /// is coming.
    pub async fn controlled_shutdown(self: &Arc<Self>, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        let silence = Duration::from_millis(self.config.cluster.broker_session_timeout_ms);
        let mut answered = tokio::time::Instant::now();
        loop {
            let give_up = deadline.min(answered + silence);
            let beat = tokio::time::timeout_at(give_up, self.heartbeat(true)).await;
            let Ok(beat) = beat else {
                tracing::warn!(
                    "controlled shutdown: no controller answered within {:?}; stopping anyway",
                    give_up - answered
                );
                return;
            };
            match beat {
                Ok(r) if r.should_shut_down => {
                    tracing::info!("controlled shutdown: the controller released this broker");
                    return;
                }
                Ok(_) => answered = tokio::time::Instant::now(),
                Err(e) => tracing::warn!("controlled shutdown: {e:#}"),
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                tracing::warn!(
                    "controlled shutdown did not complete within {limit:?}; stopping anyway"
                );
                return;
            }
            if now >= answered + silence {
                tracing::warn!(
                    "controlled shutdown: no controller answered within {silence:?} \
                     (broker.session.timeout.ms); stopping anyway"
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the metadata log (after the broker stopped serving).
    pub async fn stop_quorum(&self) {
        if let Some(node) = self.quorum.node.get() {
            node.shutdown().await;
        }
    }

    /// Makes the local replicas match a committed delta.
    pub(crate) fn apply_delta(&self, image: &MetadataImage, delta: &MetadataDelta) {
        let node = self.node_id();
        for deleted in &delta.topics_deleted {
            if let Some(topic) = self.topic_by_id(&deleted.id) {
                self.drop_topic_locally(&topic);
            }
        }
        let mut by_topic: BTreeMap<Uuid, Vec<(i32, PartitionState)>> = BTreeMap::new();
        for ((topic, p), d) in &delta.partitions {
            by_topic
                .entry(*topic)
                .or_default()
                .push((*p, d.after.clone()));
        }
        // All topics at once (the replay at start may hold many), the largest first: each
        // topic opens its partitions in parallel too, with the threads the others left.
        let mut work: Vec<_> = by_topic
            .into_iter()
            .filter_map(|(topic_id, mut parts)| {
                parts.sort_by_key(|(p, _)| *p);
                let t = image.topic(topic_id)?;
                let configs: BTreeMap<String, String> = image
                    .configs(&ConfigResource::topic(t.name.clone()))
                    .cloned()
                    .unwrap_or_default();
                Some((topic_id, t.name.as_str(), configs, parts))
            })
            .collect();
        work.sort_by_key(|(_, _, _, parts)| std::cmp::Reverse(parts.len()));
        let results = crate::broker::parallel_map(&work, |(topic_id, name, configs, parts)| {
            self.open_or_update_replicas(*topic_id, name, configs, parts, node)
        });
        for ((_, name, _, parts), result) in work.iter().zip(results) {
            match result {
                Ok(changed) if *name == crate::groups::OFFSETS_TOPIC => {
                    self.reload_group_partitions(&changed)
                }
                // Every listed partition, not only those whose leadership changed: the
                // coordinator takes ownership of a new topic's partitions too (loading is
                // skipped where it already owns a partition at its epoch).
                Ok(_) if *name == crate::txns::TXN_TOPIC => {
                    let all: Vec<i32> = parts.iter().map(|(p, _)| *p).collect();
                    self.reload_txn_partitions(&all)
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(topic = %name, "could not open partitions: {}", e.message)
                }
            }
        }
        let mut touched: Vec<String> = delta
            .config_changes
            .iter()
            .filter(|c| c.resource.resource_type == TOPIC_RESOURCE)
            .map(|c| c.resource.name.clone())
            .collect();
        touched.dedup();
        for name in touched {
            if let Some(topic) = self.topic(&name) {
                let configs = image
                    .configs(&ConfigResource::topic(name.clone()))
                    .cloned()
                    .unwrap_or_default();
                self.apply_topic_config(&topic, configs);
            }
        }
        self.data_arrived.notify_waiters();
        self.replicas_changed.notify_one();
    }

    pub(crate) fn assignment_of(state: &PartitionState) -> Assignment {
        Assignment {
            leader: state.leader,
            leader_epoch: state.leader_epoch,
            partition_epoch: state.partition_epoch,
            replicas: state.replicas.clone(),
            isr: state.isr.clone(),
        }
    }
}

/// The whole image as one delta from nothing (a restored snapshot, for [`Broker::apply_delta`]).
fn delta_from_empty(image: &MetadataImage) -> MetadataDelta {
    MetadataImage::new()
        .apply_records(image.last_offset().unwrap_or(0), &image.snapshot_records())
        .unwrap_or_default()
}

/// KIP-966's clean-shutdown marker in the data directory: the broker epoch under which this
/// node's log is known intact (Kafka's `.kafka_cleanshutdown`), sent as `PreviousBrokerEpoch`
/// at the next registration. Written at a clean shutdown, and at every registration when
/// acks=all writes are fsynced before they are acknowledged.
pub(crate) const CLEAN_SHUTDOWN_FILE: &str = ".skein_cleanshutdown";

/// The epoch in the clean-shutdown marker, -1 when there is none (or it is unreadable).
fn read_clean_shutdown(dir: &std::path::Path) -> i64 {
    std::fs::read_to_string(dir.join(CLEAN_SHUTDOWN_FILE))
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .filter(|e| *e >= 0)
        .unwrap_or(-1)
}

/// Removes the clean-shutdown marker durably.
fn remove_clean_shutdown(dir: &std::path::Path) -> std::io::Result<()> {
    match std::fs::remove_file(dir.join(CLEAN_SHUTDOWN_FILE)) {
        Ok(()) => std::fs::File::open(dir)?.sync_all(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Replaces the clean-shutdown marker durably (temp file, fsync, rename, directory fsync).
fn write_clean_shutdown(dir: &std::path::Path, epoch: i64) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!("{CLEAN_SHUTDOWN_FILE}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        writeln!(f, "{epoch}")?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(CLEAN_SHUTDOWN_FILE))?;
    std::fs::File::open(dir)?.sync_all()
}
