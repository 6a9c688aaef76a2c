//! The broker's state: topics, partitions and their logs, the node's metadata, and the
//! admin operations that change them. Request handlers in `api/` translate wire messages
//! into calls here.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use skein_log::{Log, LogConfig};
use skein_protocol::Uuid;
use tokio::sync::Notify;

use crate::clock::{Clock, SystemClock};
use crate::config::{validate_topic_setting, BrokerConfig, EffectiveTopicConfig, TopicConfig};
use crate::controller_link::{Answer, ControllerCall};
use crate::error::{ApiError, ErrorCode};
use crate::groups::Groups;
use crate::listener::{Endpoint, SecurityProtocol};
use crate::metrics::Metrics;
use crate::node::{IdentityError, NodeIdentity};
pub use crate::partition::{Assignment, Partition, PartitionState};
use crate::producer_state::{ProducerLimits, ProducerStates};
use crate::store::{MetaStore, MetadataImage, StoredTopic};
use crate::sync::Syncer;

/// Producer ids are handed out in blocks; the end of the block is persisted first, so ids
/// are never reused after a crash.
const PRODUCER_ID_BLOCK: i64 = 1000;
/// Longest topic name Kafka accepts.
pub const MAX_TOPIC_NAME_LEN: usize = 249;

/// Errors that stop the broker from starting.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("data directory {0} is in use by another skein process")]
    Locked(PathBuf),
    #[error("partition {topic}-{partition}: {source}")]
    Log {
        topic: String,
        partition: i32,
        source: skein_log::LogError,
    },
    #[error("metadata: {0}")]
    Metadata(std::io::Error),
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

/// A broker as clients see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerEndpoint {
    pub id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

/// A topic and its partitions.
pub struct Topic {
    pub name: String,
    pub id: Uuid,
    config: RwLock<TopicConfig>,
    effective: RwLock<Arc<EffectiveTopicConfig>>,
    partitions: RwLock<Vec<Arc<Partition>>>,
}

impl Topic {
    pub fn partitions(&self) -> Vec<Arc<Partition>> {
        self.partitions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn partition(&self, index: i32) -> Option<Arc<Partition>> {
        if index < 0 {
            return None;
        }
        self.partitions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(index as usize)
            .cloned()
    }

    pub fn partition_count(&self) -> i32 {
        self.partitions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len() as i32
    }

    pub fn config(&self) -> TopicConfig {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn effective(&self) -> Arc<EffectiveTopicConfig> {
        self.effective
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn is_internal(&self) -> bool {
        self.name.starts_with("__")
    }
}

#[derive(Default)]
struct TopicMap {
    by_name: BTreeMap<String, Arc<Topic>>,
    by_id: HashMap<Uuid, Arc<Topic>>,
}

/// The broker: owns every partition and the node's metadata.
pub struct Broker {
    pub config: BrokerConfig,
    pub cluster_id: String,
    /// This data directory's identity (`meta.properties`).
    pub identity: NodeIdentity,
    /// What clients are told per listener, once the server has bound (see [`Broker::set_bound`]).
    advertised: OnceLock<Vec<(String, Endpoint)>>,
    topics: RwLock<TopicMap>,
    /// Serialises metadata changes and holds the persisted image.
    /// The single node's metadata file from before the metadata log, until it is migrated.
    legacy: Mutex<Option<(MetaStore, MetadataImage)>>,
    /// The producer-id block this broker hands ids out of: `(next, end)`.
    producer_ids: Mutex<(i64, i64)>,
    /// The metadata log and the controller.
    pub(crate) quorum: crate::cluster::Quorum,
    /// Totals of the partition opens since start, for one summary line.
    opened_from_snapshot: AtomicU64,
    opened_batches_scanned: AtomicU64,
    /// The broker-wide account of idempotent producer state (`skein.producer.ids.max`).
    pub(crate) producer_limits: Arc<ProducerLimits>,
    syncer: Syncer,
    groups: Groups,
    transactions: crate::txns::Transactions,
    peers: crate::peer::Peers,
    metrics: Metrics,
    /// The ACL authorizer (`authorizer.class.name`; off by default).
    pub(crate) authz: crate::authz::Authorizer,
    /// Woken whenever records are appended, so long-polling fetches can answer at once.
    pub data_arrived: Notify,
    /// Woken after every metadata change that may change what this node follows.
    pub(crate) replicas_changed: Notify,
    /// Segment files held by fetch responses not yet sent (`skein.fetch.max.open.files`).
    pub(crate) fetch_files_held: Arc<std::sync::atomic::AtomicUsize>,
    /// Client quotas' sensors (`quota.rs`).
    pub quotas: crate::quota::ClientQuotas,
    ready: AtomicBool,
    /// This broker, for work it hands to the runtime (see `controller_op`).
    pub(crate) me: OnceLock<std::sync::Weak<Broker>>,
    clock: Arc<dyn Clock>,
    _lock: File,
}

/// Checks a topic name the way Kafka does.
pub fn validate_topic_name(name: &str) -> Result<(), ApiError> {
    let bad = |why: String| Err(ApiError::new(ErrorCode::INVALID_TOPIC_EXCEPTION, why));
    if name.is_empty() {
        return bad("Topic name is illegal, it can't be empty".into());
    }
    if name == "." || name == ".." {
        return bad("Topic name cannot be \".\" or \"..\"".into());
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return bad(format!(
            "Topic name is illegal, it can't be longer than {MAX_TOPIC_NAME_LEN} characters, topic name: {name}"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return bad(format!(
            "Topic name {name:?} is illegal, it contains a character other than ASCII alphanumerics, '.', '_' and '-': {c:?}"
        ));
    }
    Ok(())
}

pub(crate) fn random_uuid() -> Uuid {
    Uuid::random()
}

/// A new cluster's (or directory's) id: a random Kafka UUID in its base64 form.
pub(crate) fn random_cluster_id() -> String {
    random_uuid().to_string()
}

/// A cluster id derived from `seed` (the sorted voter list), the same on every node given
/// the same seed. Two 64-bit FNV-1a hashes with different offsets fill the 16 bytes; this
/// only has to tell clusters apart, not resist anyone.
pub(crate) fn derived_cluster_id(seed: &str) -> String {
    let fnv = |offset: u64| {
        seed.bytes().fold(offset, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&fnv(0xcbf2_9ce4_8422_2325).to_be_bytes());
    bytes[8..].copy_from_slice(&fnv(0x6c62_272e_07bb_0142).to_be_bytes());
    // Kafka reserves ids whose base64 form starts with '-'; clear the top bit to avoid it.
    bytes[0] &= 0x7f;
    if bytes == [0; 16] {
        bytes[15] = 1;
    }
    Uuid(bytes).to_string()
}

fn uuid_to_hex(u: &Uuid) -> String {
    u.0.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn uuid_from_hex(s: &str) -> Option<Uuid> {
    if s.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(Uuid(out))
}

fn partition_dir(data_dir: &Path, topic: &str, index: i32) -> PathBuf {
    data_dir.join(format!("{topic}-{index}"))
}

impl Broker {
    /// Opens the data directory, recovering every partition, and starts the fsync thread.
    pub fn open(config: BrokerConfig) -> Result<Arc<Broker>, BrokerError> {
        Self::open_with_clock(config, Arc::new(SystemClock))
    }

    /// [`Broker::open`] with the clock it will read time from.
    pub fn open_with_clock(
        config: BrokerConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Broker>, BrokerError> {
        let dir = config.data_dir.clone();
        let io_err = |source| BrokerError::DataDir {
            path: dir.clone(),
            source,
        };
        fs::create_dir_all(&dir).map_err(io_err)?;
        let lock = File::create(dir.join(".lock")).map_err(io_err)?;
        if lock.try_lock().is_err() {
            return Err(BrokerError::Locked(dir));
        }
        let store = MetaStore::new(&dir);
        let stored_image = store.load().map_err(BrokerError::Metadata)?;
        let identity = NodeIdentity::load_or_create(
            &dir,
            config.node_id,
            config.cluster.cluster_id.as_deref(),
            stored_image.as_ref().map(|i| i.cluster_id.as_str()),
            || config.cluster.default_cluster_id(),
        )?;
        if let Some(image) = &stored_image {
            if image.cluster_id != identity.cluster_id {
                return Err(BrokerError::Identity(IdentityError::Corrupt {
                    path: dir.join(crate::store::META_FILE),
                    why: format!(
                        "it names cluster {}, but {} names cluster {}",
                        image.cluster_id,
                        crate::node::META_PROPERTIES,
                        identity.cluster_id
                    ),
                }));
            }
        }
        let producer_limits = ProducerLimits::new(config.producer_ids_max);
        let mut metrics = Metrics::new();
        metrics.register_producer_limits(&producer_limits);
        let syncer = Syncer::start(metrics.fsync_latency.clone()).map_err(BrokerError::Metadata)?;
        let groups = Groups::new(config.group_config(), config.offsets_topic_partitions);
        let quorum = crate::cluster::Quorum::new(skein_metadata::ControllerConfig {
            session_timeout_ms: config.cluster.broker_session_timeout_ms,
            producer_id_block_size: PRODUCER_ID_BLOCK,
            default_num_partitions: config.num_partitions,
            default_replication_factor: config.default_replication_factor,
            unclean_leader_election: config.unclean_leader_election,
            leader_imbalance_per_broker_percentage: config.leader_imbalance_per_broker_percentage,
            min_insync_replicas: crate::config::TopicConfig::default()
                .effective(&config)
                .min_insync_replicas
                .min(i32::MAX as usize) as i32,
            eligible_leader_replicas: config.eligible_leader_replicas,
        });
        let authz = crate::authz::Authorizer::new(crate::authz::AuthzSettings::from_explicit(
            &config.explicit,
        ));
        let quotas = crate::quota::ClientQuotas::new(
            config.setting_i64("quota.window.num").max(2) as usize,
            std::time::Duration::from_secs(
                config.setting_i64("quota.window.size.seconds").max(1) as u64
            ),
        );
        let broker = Broker {
            authz,
            groups,
            transactions: crate::txns::Transactions::new(config.txn_config()),
            peers: Default::default(),
            metrics,
            cluster_id: identity.cluster_id.clone(),
            identity,
            legacy: Mutex::new(stored_image.map(|image| (store, image))),
            producer_ids: Mutex::new((0, 0)),
            quorum,
            opened_from_snapshot: AtomicU64::new(0),
            opened_batches_scanned: AtomicU64::new(0),
            producer_limits,
            config,
            advertised: OnceLock::new(),
            topics: RwLock::new(TopicMap::default()),
            syncer,
            data_arrived: Notify::new(),
            replicas_changed: Notify::new(),
            fetch_files_held: Arc::default(),
            quotas,
            ready: AtomicBool::new(false),
            me: OnceLock::new(),
            clock,
            _lock: lock,
        };
        let broker = Arc::new(broker);
        let _ = broker.me.set(Arc::downgrade(&broker));
        Ok(broker)
    }

    /// Joins the metadata log (see [`Broker::start_quorum`]), rebuilds the consumer groups
    /// from `__consumer_offsets`, and starts serving.
    pub async fn start(self: &Arc<Self>) -> anyhow::Result<()> {
        self.start_quorum().await?;
        tracing::info!(
            from_snapshots = self.opened_from_snapshot.load(Ordering::Relaxed),
            batches_scanned = self.opened_batches_scanned.load(Ordering::Relaxed),
            producers = self.producer_limits.held(),
            "rebuilt idempotent producer state"
        );
        let b = self.clone();
        tokio::task::spawn_blocking(move || {
            b.replay_groups();
            b.replay_transactions();
        })
        .await?;
        self.ready.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// The topics of `skein-meta.json` (a data directory from before the metadata log).
    pub(crate) fn legacy_image(&self) -> Option<MetadataImage> {
        self.legacy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(_, image)| image.clone())
    }

    /// Renames `skein-meta.json` once its topics are in the metadata log.
    pub(crate) fn retire_legacy_image(&self) -> std::io::Result<()> {
        let mut legacy = self.legacy.lock().unwrap_or_else(|e| e.into_inner());
        if legacy.take().is_some() {
            let dir = &self.config.data_dir;
            fs::rename(
                dir.join(crate::store::META_FILE),
                dir.join(format!("{}.migrated", crate::store::META_FILE)),
            )?;
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    /// Whether recovery is done and requests are served.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Records the addresses the server bound, by listener name. Clients are told a
    /// listener's `advertised.listeners` entry, else its bound address.
    pub fn set_bound(&self, bound: &[(String, SocketAddr)]) {
        let endpoints = self
            .config
            .listeners
            .iter()
            .map(|l| {
                let addr = bound
                    .iter()
                    .find(|(n, _)| *n == l.name)
                    .map(|(_, a)| *a)
                    .unwrap_or(l.bind);
                let e = l
                    .advertised
                    .clone()
                    .unwrap_or_else(|| Endpoint::from_addr(addr));
                (l.name.clone(), e)
            })
            .collect();
        let _ = self.advertised.set(endpoints);
    }

    /// Sets the address given to clients on the inter-broker listener (a server that binds
    /// that one alone).
    pub fn set_advertised(&self, addr: SocketAddr) {
        self.set_bound(&[(self.config.inter_broker_listener.clone(), addr)]);
    }

    /// What clients on `listener` are told this broker's address is.
    pub fn advertised_on(&self, listener: &str) -> Option<Endpoint> {
        match self.advertised.get() {
            Some(v) => v
                .iter()
                .find(|(n, _)| n == listener)
                .map(|(_, e)| e.clone()),
            None => self
                .config
                .listeners
                .iter()
                .find(|l| l.name == listener)
                .map(|l| {
                    l.advertised
                        .clone()
                        .unwrap_or_else(|| Endpoint::from_addr(l.bind))
                }),
        }
    }

    /// The address of the inter-broker listener (the broker's default endpoint).
    pub fn advertised(&self) -> Endpoint {
        self.advertised_on(&self.config.inter_broker_listener)
            .unwrap_or_else(|| Endpoint::from_addr(self.config.listener))
    }

    /// Every client listener's name, protocol and advertised address (the broker's
    /// registration).
    pub fn advertised_listeners(&self) -> Vec<(String, SecurityProtocol, Endpoint)> {
        self.config
            .listeners
            .iter()
            .filter_map(|l| {
                self.advertised_on(&l.name)
                    .map(|e| (l.name.clone(), l.protocol, e))
            })
            .collect()
    }

    pub fn node_id(&self) -> i32 {
        self.config.node_id
    }

    /// Wall-clock milliseconds, from the broker's [`Clock`].
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The live brokers (registered and not fenced) with their inter-broker listener's
    /// endpoints.
    pub fn brokers(&self) -> Vec<BrokerEndpoint> {
        self.brokers_on(&self.config.inter_broker_listener)
    }

    /// The live brokers (registered and not fenced), as Metadata lists them to a client on
    /// `listener`: each broker's endpoint of that listener (a broker without one is left
    /// out, as Kafka does).
    pub fn brokers_on(&self, listener: &str) -> Vec<BrokerEndpoint> {
        let mut live: Vec<BrokerEndpoint> = self.quorum.read(|image| {
            image
                .brokers()
                .values()
                .filter(|b| !b.fenced)
                .filter_map(|b| self.endpoint_of(b, listener))
                .collect()
        });
        if !live.iter().any(|b| b.id == self.node_id()) {
            // Before this broker's registration is applied (at start) it still answers for
            // itself.
            if let Some(me) = self.own_endpoint(listener) {
                live.push(me);
                live.sort_by_key(|b| b.id);
            }
        }
        live
    }

    fn own_endpoint(&self, listener: &str) -> Option<BrokerEndpoint> {
        let addr = self.advertised_on(listener)?;
        Some(BrokerEndpoint {
            id: self.node_id(),
            host: addr.host,
            port: i32::from(addr.port),
            rack: self.config.cluster.rack.clone(),
        })
    }

    /// The registered brokers that are fenced (DescribeCluster v2), by `listener`.
    pub fn fenced_brokers(&self, listener: &str) -> Vec<BrokerEndpoint> {
        self.quorum.read(|image| {
            image
                .brokers()
                .values()
                .filter(|b| b.fenced)
                .filter_map(|b| self.endpoint_of(b, listener))
                .collect()
        })
    }

    /// A registered broker's inter-broker endpoint (fenced or not).
    pub fn broker_endpoint(&self, id: i32) -> Option<BrokerEndpoint> {
        self.broker_endpoint_on(&self.config.inter_broker_listener, id)
    }

    /// A registered broker's endpoint on `listener` (fenced or not), for FindCoordinator and
    /// the leader hints of KIP-951.
    pub fn broker_endpoint_on(&self, listener: &str, id: i32) -> Option<BrokerEndpoint> {
        if id == self.node_id() {
            return self.own_endpoint(listener);
        }
        self.quorum
            .read(|image| image.broker(id).and_then(|b| self.endpoint_of(b, listener)))
    }

    fn endpoint_of(
        &self,
        b: &skein_metadata::image::BrokerRegistration,
        listener: &str,
    ) -> Option<BrokerEndpoint> {
        let e = b
            .endpoints
            .iter()
            .find(|e| e.name == listener)
            .or_else(|| {
                // Registrations from before named listeners carry PLAINTEXT alone.
                (listener == self.config.inter_broker_listener)
                    .then(|| b.endpoints.first())
                    .flatten()
            })?;
        Some(BrokerEndpoint {
            id: b.id,
            host: e.host.clone(),
            port: i32::from(e.port),
            rack: b.rack.clone(),
        })
    }

    /// The controller id clients are told about. KRaft brokers name any live broker (KIP-590:
    /// brokers forward admin requests); the active controller is what DescribeQuorum shows.
    pub fn controller_id(&self) -> i32 {
        self.node_id()
    }

    pub fn syncer(&self) -> &Syncer {
        &self.syncer
    }

    pub fn groups(&self) -> &Groups {
        &self.groups
    }

    pub fn transactions(&self) -> &crate::txns::Transactions {
        &self.transactions
    }

    pub(crate) fn peers(&self) -> &crate::peer::Peers {
        &self.peers
    }

    /// KIP-612: records a new connection from `ip` against the `connection_creation_rate`
    /// quota that applies to it, if any, and answers for how long to throttle it (0: serve
    /// it). As Kafka, the throttle is at most one quota window, and a throttled connection
    /// is taken back out of the rate (it was not accepted).
    pub fn ip_connection_throttle(&self, ip: std::net::IpAddr) -> u64 {
        let quota = self.quorum.read(|image| {
            let all = image.client_quotas();
            if all.is_empty() {
                None
            } else {
                crate::quota::resolve_ip(all, ip)
            }
        });
        let Some(quota) = quota else {
            return 0;
        };
        let tags = (ip.to_string(), String::new());
        let qt = crate::quota::QuotaType::Connection;
        let ms = self.quotas.record(qt, &tags, quota, 1.0);
        if ms > 0 {
            self.quotas.unrecord(qt, &tags, 1.0);
        }
        ms.min(self.quotas.window_ms())
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The Prometheus exposition of every metric.
    pub fn render_metrics(&self) -> String {
        self.metrics.render(self)
    }

    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .by_name
            .get(name)
            .cloned()
    }

    pub fn topic_by_id(&self, id: &Uuid) -> Option<Arc<Topic>> {
        self.topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .by_id
            .get(id)
            .cloned()
    }

    pub fn topics(&self) -> Vec<Arc<Topic>> {
        self.topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .by_name
            .values()
            .cloned()
            .collect()
    }

    fn partition_total(&self) -> usize {
        self.topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .by_name
            .values()
            .map(|t| t.partition_count() as usize)
            .sum()
    }

    /// Runs `f` on every open partition log (for periodic and shutdown work).
    fn for_each_log(&self, mut f: impl FnMut(&Topic, &Partition, &mut PartitionState)) {
        for topic in self.topics() {
            for p in topic.partitions() {
                let mut state = p.lock();
                if state.log.is_some() {
                    f(&topic, &p, &mut state);
                }
            }
        }
    }

    /// Allocates a fresh producer id, from this broker's block; a new block comes from the
    /// controller (`ProducerIdsRecord`), so ids are never handed out twice, across restarts
    /// and brokers.
    pub fn allocate_producer_id(&self) -> Result<i64, ApiError> {
        loop {
            {
                let mut ids = self.producer_ids.lock().unwrap_or_else(|e| e.into_inner());
                if ids.0 < ids.1 {
                    let id = ids.0;
                    ids.0 += 1;
                    return Ok(id);
                }
            }
            // The lock is not held while the controller commits (see `group_op`); two callers
            // may both fetch a block, and the second one's is simply not used.
            let node = self.node_id();
            let epoch = self.quorum.broker_epoch();
            let answer = self.controller_call_blocking(ControllerCall::AllocateProducerIds {
                broker_id: node,
                broker_epoch: epoch,
            })?;
            let Answer::ProducerIds { first, len } = answer else {
                return Err(ApiError::new(
                    ErrorCode::UNKNOWN_SERVER_ERROR,
                    format!("the controller answered a producer-id request with {answer:?}"),
                ));
            };
            let mut ids = self.producer_ids.lock().unwrap_or_else(|e| e.into_inner());
            if ids.0 >= ids.1 {
                *ids = (first, first + i64::from(len));
            }
        }
    }

    /// Checks a topic creation without doing it, resolving -1 defaults. Returns the partition
    /// count and the validated overrides.
    pub fn check_new_topic(
        &self,
        name: &str,
        num_partitions: i32,
        replication_factor: i16,
        configs: &[(String, Option<String>)],
    ) -> Result<(i32, i16, BTreeMap<String, String>), ApiError> {
        validate_topic_name(name)?;
        if self.topic(name).is_some() {
            return Err(ApiError::new(
                ErrorCode::TOPIC_ALREADY_EXISTS,
                format!("Topic '{name}' already exists."),
            ));
        }
        let partitions = match num_partitions {
            -1 => self.config.num_partitions,
            n if n >= 1 => n,
            n => {
                return Err(ApiError::new(
                    ErrorCode::INVALID_PARTITIONS,
                    format!("Number of partitions was set to an invalid non-positive value: {n}."),
                ))
            }
        };
        // The controller checks it against the registered brokers.
        let replication_factor = match replication_factor {
            -1 => self.config.default_replication_factor,
            n if n >= 1 => n,
            n => {
                return Err(ApiError::new(
                    ErrorCode::INVALID_REPLICATION_FACTOR,
                    format!("Replication factor must be larger than 0, or -1 to use the default value: {n}."),
                ))
            }
        };
        if self.partition_total() + partitions as usize > self.config.max_partitions {
            return Err(ApiError::new(
                ErrorCode::INVALID_PARTITIONS,
                format!(
                    "Creating {partitions} partitions would exceed this broker's limit of {} partitions (skein.max.partitions).",
                    self.config.max_partitions
                ),
            ));
        }
        let mut overrides = BTreeMap::new();
        for (k, v) in configs {
            let Some(v) = v else {
                return Err(ApiError::new(
                    ErrorCode::INVALID_CONFIG,
                    format!("Null value not supported for topic configs: {k}"),
                ));
            };
            validate_topic_setting(k, v)
                .map_err(|m| ApiError::new(ErrorCode::INVALID_CONFIG, m))?;
            overrides.insert(k.clone(), v.clone());
        }
        Ok((partitions, replication_factor, overrides))
    }

    /// Creates a topic (after [`Broker::check_new_topic`] passed): the controller places
    /// it and commits it to the metadata log; it is open here when this returns.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        overrides: BTreeMap<String, String>,
    ) -> Result<Arc<Topic>, ApiError> {
        self.create_topic_within(
            name,
            (partitions, replication_factor),
            Vec::new(),
            overrides,
            crate::controller_link::CALL_TIMEOUT,
        )
    }

    /// [`Broker::create_topic`], answered within `timeout` (CreateTopics' `timeout_ms`):
    /// `(partitions, replication factor)`, or, with `assignments` (the replicas of each
    /// partition in order), the controller takes those and ignores the counts.
    pub fn create_topic_within(
        &self,
        name: &str,
        (partitions, replication_factor): (i32, i16),
        assignments: Vec<Vec<i32>>,
        overrides: BTreeMap<String, String>,
        timeout: std::time::Duration,
    ) -> Result<Arc<Topic>, ApiError> {
        let (partitions, replication_factor) = if assignments.is_empty() {
            (partitions, replication_factor)
        } else {
            (-1, -1)
        };
        let seed = u64::from_le_bytes(random_uuid().0[..8].try_into().expect("8 bytes"));
        self.controller_call_blocking_within(
            ControllerCall::CreateTopic {
                name: name.to_string(),
                partitions,
                replication_factor,
                configs: overrides.into_iter().collect(),
                seed,
                assignments,
            },
            timeout,
        )?;
        let topic = self.topic(name).ok_or_else(|| {
            ApiError::new(
                ErrorCode::KAFKA_STORAGE_ERROR,
                format!("Topic '{name}' was created but could not be opened on this broker."),
            )
        })?;
        tracing::info!(
            topic = name,
            partitions = topic.partition_count(),
            "created topic"
        );
        Ok(topic)
    }

    /// Creates a topic on first use (Metadata with auto-creation).
    pub fn auto_create_topic(&self, name: &str) -> Result<Arc<Topic>, ApiError> {
        let (partitions, rf, overrides) = self.check_new_topic(name, -1, -1, &[])?;
        self.create_topic(name, partitions, rf, overrides)
    }

    /// Deletes a topic and its data (through the controller).
    pub fn delete_topic(
        &self,
        topic: &Arc<Topic>,
        timeout: std::time::Duration,
    ) -> Result<(), ApiError> {
        self.controller_call_blocking_within(
            ControllerCall::DeleteTopic { id: topic.id.0 },
            timeout,
        )?;
        tracing::info!(topic = %topic.name, "deleted topic");
        Ok(())
    }

    /// Grows a topic to `count` partitions (through the controller).
    pub fn add_partitions(
        &self,
        topic: &Arc<Topic>,
        count: i32,
        assignments: Option<Vec<Vec<i32>>>,
        timeout: std::time::Duration,
    ) -> Result<(), ApiError> {
        let current = topic.partition_count();
        if count <= current {
            return Err(ApiError::new(
                ErrorCode::INVALID_PARTITIONS,
                shrink_message(current, count),
            ));
        }
        if self.partition_total() + (count - current) as usize > self.config.max_partitions {
            return Err(ApiError::new(
                ErrorCode::INVALID_PARTITIONS,
                format!(
                    "Adding partitions would exceed this broker's limit of {} partitions.",
                    self.config.max_partitions
                ),
            ));
        }
        let seed = u64::from_le_bytes(random_uuid().0[..8].try_into().expect("8 bytes"));
        self.controller_call_blocking_within(
            ControllerCall::CreatePartitions {
                name: topic.name.clone(),
                count,
                seed,
                assignments,
            },
            timeout,
        )?;
        tracing::info!(topic = %topic.name, from = current, to = count, "added partitions");
        Ok(())
    }

    /// Replaces a topic's config overrides (already validated), through the controller.
    pub fn set_topic_config(
        &self,
        topic: &Arc<Topic>,
        overrides: BTreeMap<String, String>,
    ) -> Result<(), ApiError> {
        let current = topic.config().overrides;
        let mut ops: Vec<(String, Option<String>)> = current
            .keys()
            .filter(|k| !overrides.contains_key(*k))
            .map(|k| (k.clone(), None))
            .collect();
        ops.extend(
            overrides
                .iter()
                .filter(|(k, v)| current.get(*k) != Some(*v))
                .map(|(k, v)| (k.clone(), Some(v.clone()))),
        );
        if ops.is_empty() {
            return Ok(());
        }
        self.controller_call_blocking(ControllerCall::AlterTopicConfig {
            name: topic.name.clone(),
            ops,
        })?;
        Ok(())
    }

    /// Applies committed config overrides to a local topic and its logs.
    pub(crate) fn apply_topic_config(
        &self,
        topic: &Arc<Topic>,
        overrides: BTreeMap<String, String>,
    ) {
        let config = TopicConfig {
            overrides: overrides.into_iter().collect(),
        };
        let effective = Arc::new(config.effective(&self.config));
        *topic.config.write().unwrap_or_else(|e| e.into_inner()) = config;
        *topic.effective.write().unwrap_or_else(|e| e.into_inner()) = effective.clone();
        for p in topic.partitions() {
            if let Some(log) = p.lock().log.as_mut() {
                log.update_config(effective.log.clone());
            }
        }
    }

    /// Removes a deleted topic's replicas from this broker, data included.
    pub(crate) fn drop_topic_locally(&self, topic: &Arc<Topic>) {
        {
            let mut topics = self.topics.write().unwrap_or_else(|e| e.into_inner());
            topics.by_name.remove(&topic.name);
            topics.by_id.remove(&topic.id);
        }
        for p in topic.partitions() {
            let log = p.lock().log.take();
            if let Some(log) = log {
                if let Err(e) = log.delete() {
                    tracing::warn!(topic = %topic.name, partition = p.index, "could not remove partition data: {e}");
                }
            }
        }
        self.data_arrived.notify_waiters();
        self.forget_topic_offsets(&topic.name);
    }

    /// Opens this broker's new replicas of a topic (creating the topic locally if needed) and
    /// sets the assignment of every listed partition. Partitions are added in index order.
    pub(crate) fn open_or_update_replicas(
        &self,
        topic_id: Uuid,
        name: &str,
        configs: &BTreeMap<String, String>,
        parts: &[(i32, skein_metadata::image::PartitionState)],
        node: i32,
    ) -> Result<Vec<i32>, ApiError> {
        let storage = |e: BrokerError| ApiError::new(ErrorCode::KAFKA_STORAGE_ERROR, e.to_string());
        let opener = PartitionOpener::new(&self.config, &self.producer_limits, self.now_ms());
        let topic = match self.topic_by_id(&topic_id) {
            Some(t) => t,
            None => {
                let stored = StoredTopic {
                    id: uuid_to_hex(&topic_id),
                    partitions: 0,
                    configs: configs.clone(),
                };
                let topic = opener.open_topic(name, &stored).map_err(storage)?;
                let mut topics = self.topics.write().unwrap_or_else(|e| e.into_inner());
                topics.by_id.insert(topic_id, topic.clone());
                topics.by_name.insert(name.to_string(), topic.clone());
                topic
            }
        };
        // Every node knows every partition; it opens a log only for the replicas it hosts.
        // The others are kept as remote partitions (assignment only), so that requests for
        // them get NOT_LEADER_OR_FOLLOWER and the partition list has no gaps.
        let current = topic.partition_count();
        let to_open: Vec<i32> = parts
            .iter()
            .filter(|(p, state)| {
                state.hosts(node)
                    && (*p >= current || topic.partition(*p).is_some_and(|x| !x.is_local()))
            })
            .map(|(p, _)| *p)
            .collect();
        let name_arc: Arc<str> = Arc::from(name);
        let mut opened: BTreeMap<i32, Partition> = BTreeMap::new();
        if !to_open.is_empty() {
            let log_config = topic.effective().log.clone();
            let results = parallel_map(&to_open, |&index| {
                opener.open_partition(&name_arc, index, log_config.clone())
            });
            for (index, p) in to_open.iter().zip(results) {
                opened.insert(*index, p.map_err(storage)?);
            }
        }
        {
            let mut list = topic.partitions.write().unwrap_or_else(|e| e.into_inner());
            for (index, state) in parts {
                let i = *index as usize;
                if i > list.len() {
                    return Err(ApiError::new(
                        ErrorCode::UNKNOWN_SERVER_ERROR,
                        format!("partition {index} of {name} would leave a gap on this broker"),
                    ));
                }
                let partition = match opened.remove(index) {
                    Some(p) => Arc::new(p),
                    None if i == list.len() => Arc::new(Partition::remote(
                        name_arc.clone(),
                        *index,
                        ProducerStates::new(self.producer_limits.clone()),
                        Self::assignment_of(state),
                    )),
                    None => continue,
                };
                if i == list.len() {
                    list.push(partition);
                } else {
                    list[i] = partition;
                }
            }
        }
        self.opened_from_snapshot.fetch_add(
            opener.from_snapshot.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        self.opened_batches_scanned.fetch_add(
            opener.batches_scanned.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        let min_insync = topic.effective().min_insync_replicas;
        // Partitions whose leadership by this node started or ended (or moved to a new epoch).
        let mut role_changed = Vec::new();
        for (index, state) in parts {
            let Some(partition) = topic.partition(*index) else {
                continue;
            };
            let assignment = Self::assignment_of(state);
            let before = partition.assignment();
            let led = |a: &Assignment| a.leader == node;
            if led(&before) != led(&assignment)
                || (led(&assignment) && before.leader_epoch != assignment.leader_epoch)
            {
                role_changed.push(*index);
            }
            let mut replica = partition.lock();
            if !state.hosts(node) && replica.log.is_some() {
                // Moved off this broker (a reassignment): stop serving and fetching it and
                // delete its data (Kafka's StopReplica with delete). The fetcher drops it at
                // the next reconcile, since it is no longer local.
                partition.set_assignment(assignment);
                replica.leader = None;
                if let Some(log) = replica.log.take() {
                    tracing::info!(
                        topic = name,
                        partition = index,
                        "replica moved off this broker; deleting its log"
                    );
                    if let Err(e) = log.delete() {
                        tracing::warn!(
                            topic = name,
                            partition = index,
                            "could not remove the moved replica's data: {e}"
                        );
                    }
                }
                drop(replica);
                self.data_arrived.notify_waiters();
                continue;
            }
            if assignment.leader == node {
                if let Some(log) = replica.log.as_mut() {
                    // A new leader epoch starts at this replica's log end (Kafka's rule).
                    if log
                        .latest_epoch()
                        .is_none_or(|e| e < assignment.leader_epoch)
                    {
                        let leo = log.log_end_offset();
                        if let Err(e) = log.assign_epoch(assignment.leader_epoch, leo) {
                            tracing::error!(
                                topic = name,
                                partition = index,
                                "leader epoch checkpoint: {e}"
                            );
                        }
                    }
                }
            }
            partition.set_assignment(assignment);
            partition.sync_role(
                &mut replica,
                node,
                self.now_ms(),
                self.config.acks_all_fsync,
            );
            // An ISR that changed may let the high watermark move.
            partition.advance_high_watermark(&mut replica, min_insync);
            drop(replica);
        }
        Ok(role_changed)
    }

    /// Applies retention to every partition; called periodically.
    pub fn apply_retention(&self) {
        let now = self.now_ms();
        self.for_each_log(|topic, p, state| {
            if let Some(Err(e)) = state.log.as_mut().map(|log| log.apply_retention(now)) {
                tracing::warn!(topic = %topic.name, partition = p.index, "retention failed: {e}");
            }
        });
    }

    /// Forgets idempotent producers that have written nothing for `producer.id.expiration.ms`;
    /// called every `producer.id.expiration.check.interval.ms`.
    pub fn expire_producers(&self) {
        let now = self.now_ms();
        let expiration_ms = self.config.producer_id_expiration_ms;
        let mut expired = 0;
        self.for_each_log(|_, _, state| expired += state.producers.expire(now, expiration_ms));
        if expired > 0 {
            tracing::debug!(expired, "forgot idle idempotent producers");
        }
    }

    /// Writes every partition's checkpoints (recovery point, high watermark), so that a
    /// restart after a crash rescans only what came after them. Called periodically.
    pub fn checkpoint(&self) {
        self.for_each_log(|topic, p, state| {
            if let Some(Err(e)) = state.log.as_mut().map(|log| log.checkpoint()) {
                tracing::warn!(topic = %topic.name, partition = p.index, "checkpoint failed: {e}");
            }
        });
    }

    /// Flushes and closes every partition (graceful shutdown).
    pub fn shutdown(&self) {
        self.ready.store(false, Ordering::SeqCst);
        let partitions: Vec<Arc<Partition>> =
            self.topics().iter().flat_map(|t| t.partitions()).collect();
        // Several at a time: closing is mostly waiting for fsyncs, which overlap across files.
        parallel_map(&partitions, |p| {
            let mut state = p.lock();
            let Some(mut log) = state.log.take() else {
                return;
            };
            // The producer state as of the log end, so the next start scans nothing. An empty
            // log has nothing to scan, and an unchanged snapshot is already there.
            let leo = log.log_end_offset();
            if leo > log.log_start_offset() && log.snapshot_offset() != Some(leo) {
                if let Err(e) = log.write_snapshot(&state.producers.encode()) {
                    tracing::warn!(topic = %p.topic, partition = p.index, "producer snapshot failed: {e}");
                }
            }
            if let Err(e) = log.close() {
                tracing::warn!(topic = %p.topic, partition = p.index, "close failed: {e}");
            }
        });
        // Every log is closed (fsynced): the next registration may say so (KIP-966).
        self.write_clean_shutdown(self.quorum.broker_epoch());
        self.data_arrived.notify_waiters();
    }
}

/// Opens partitions (at start-up, topic creation and growth): recovers each log and rebuilds
/// its idempotent producer state from the newest snapshot plus the batches after it.
struct PartitionOpener<'a> {
    config: &'a BrokerConfig,
    producer_limits: &'a Arc<ProducerLimits>,
    now: i64,
    /// Partitions whose producer state came from a snapshot.
    from_snapshot: AtomicU64,
    /// Batch headers read to rebuild producer state.
    batches_scanned: AtomicU64,
}

impl<'a> PartitionOpener<'a> {
    fn new(config: &'a BrokerConfig, producer_limits: &'a Arc<ProducerLimits>, now: i64) -> Self {
        PartitionOpener {
            config,
            producer_limits,
            now,
            from_snapshot: AtomicU64::new(0),
            batches_scanned: AtomicU64::new(0),
        }
    }

    fn open_topic(&self, name: &str, stored: &StoredTopic) -> Result<Arc<Topic>, BrokerError> {
        let mut opened = self.open_topics(&[(name, stored)])?;
        Ok(opened.pop().expect("one topic in, one out"))
    }

    /// Opens (or creates) every partition of the given topics, several at a time: a
    /// partition's open is mostly waiting for the file system, which overlaps across files.
    fn open_topics(&self, stored: &[(&str, &StoredTopic)]) -> Result<Vec<Arc<Topic>>, BrokerError> {
        struct Shell {
            name: Arc<str>,
            id: Uuid,
            config: TopicConfig,
            effective: Arc<EffectiveTopicConfig>,
        }
        let mut shells = Vec::with_capacity(stored.len());
        for (name, stored) in stored {
            let topic_config = TopicConfig {
                overrides: stored.configs.clone().into_iter().collect(),
            };
            let effective = Arc::new(topic_config.effective(self.config));
            let id = uuid_from_hex(&stored.id).ok_or_else(|| {
                BrokerError::Metadata(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("topic {name} has a malformed id {:?}", stored.id),
                ))
            })?;
            shells.push(Shell {
                name: Arc::from(*name),
                id,
                config: topic_config,
                effective,
            });
        }
        let jobs: Vec<(usize, i32)> = stored
            .iter()
            .enumerate()
            .flat_map(|(t, (_, stored))| (0..stored.partitions).map(move |p| (t, p)))
            .collect();
        let opened = parallel_map(&jobs, |&(t, index)| {
            let shell = &shells[t];
            self.open_partition(&shell.name, index, shell.effective.log.clone())
        });
        let mut partitions: Vec<Vec<Arc<Partition>>> = shells.iter().map(|_| Vec::new()).collect();
        for ((t, _), partition) in jobs.iter().zip(opened) {
            partitions[*t].push(Arc::new(partition?));
        }
        Ok(shells
            .into_iter()
            .zip(partitions)
            .map(|(shell, partitions)| {
                Arc::new(Topic {
                    name: shell.name.to_string(),
                    id: shell.id,
                    config: RwLock::new(shell.config),
                    effective: RwLock::new(shell.effective),
                    partitions: RwLock::new(partitions),
                })
            })
            .collect())
    }

    fn open_partition(
        &self,
        topic: &Arc<str>,
        index: i32,
        log_config: LogConfig,
    ) -> Result<Partition, BrokerError> {
        let dir = partition_dir(&self.config.data_dir, topic, index);
        let log_err = |source| BrokerError::Log {
            topic: topic.to_string(),
            partition: index,
            source,
        };
        let (mut log, report) = Log::open(&dir, log_config, self.now).map_err(log_err)?;
        if report.repaired() {
            tracing::warn!(topic = %topic, partition = index, "recovered: {report}");
        } else if !report.clean_shutdown && report.log_end_offset > 0 {
            tracing::info!(topic = %topic, partition = index, "checked after an unclean shutdown: {report}");
        }
        // The high watermark stays at its checkpoint until the replica's role is known: a
        // partition with no other replica then takes its log end (`Partition::sync_role`).
        if log.latest_epoch().is_none() {
            // A new partition starts the leader's epoch at its first offset.
            log.assign_epoch(crate::api::LEADER_EPOCH, log.log_end_offset())
                .map_err(log_err)?;
        }
        let producers = self
            .load_producers(&mut log, topic, index)
            .map_err(log_err)?;
        Ok(Partition::new(
            topic.clone(),
            index,
            log,
            producers,
            Assignment::single(self.config.node_id),
        ))
    }

    /// The partition's producer state (see [`crate::partition::load_producers`]).
    fn load_producers(
        &self,
        log: &mut Log,
        topic: &str,
        index: i32,
    ) -> Result<ProducerStates, skein_log::LogError> {
        let loaded = crate::partition::load_producers(
            log,
            self.producer_limits.clone(),
            self.now,
            self.config.producer_id_expiration_ms,
            topic,
            index,
        )?;
        if loaded.from_snapshot {
            self.from_snapshot.fetch_add(1, Ordering::Relaxed);
        }
        self.batches_scanned
            .fetch_add(loaded.scanned, Ordering::Relaxed);
        Ok(loaded.producers)
    }
}

/// How many threads open or close partitions at once. The work is mostly fsyncs and file
/// creation, so more threads than cores pay off; a few keep the device queue busy.
const PARTITION_IO_THREADS: usize = 8;

/// Extra threads of [`parallel_map`] running now, over all its callers.
static PARTITION_IO_BUSY: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// `items.iter().map(f)`, run by the calling thread and up to [`PARTITION_IO_THREADS`] - 1
/// extra threads, results in order. The extra threads are counted over all callers at once
/// (topics opened together, each opening its partitions: the inner calls get what the outer
/// one left); if none is free or threads cannot be started, the caller does the rest.
pub(crate) fn parallel_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    use std::sync::atomic::AtomicUsize;
    if items.len() < 2 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let results: Vec<Mutex<Option<R>>> = items.iter().map(|_| Mutex::new(None)).collect();
    let work = || loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(item) = items.get(i) else { break };
        let r = f(item);
        *results[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
    };
    let wanted = (PARTITION_IO_THREADS - 1).min(items.len() - 1);
    let reserved = PARTITION_IO_BUSY
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |busy| {
            let free = (PARTITION_IO_THREADS - 1).saturating_sub(busy);
            (free > 0).then(|| busy + free.min(wanted))
        })
        .map_or(0, |busy| (PARTITION_IO_THREADS - 1 - busy).min(wanted));
    std::thread::scope(|scope| {
        for _ in 0..reserved {
            let spawned = std::thread::Builder::new()
                .name("skein-partition-io".into())
                .spawn_scoped(scope, work);
            if spawned.is_err() {
                break;
            }
        }
        work();
    });
    PARTITION_IO_BUSY.fetch_sub(reserved, Ordering::AcqRel);
    results
        .into_iter()
        .map(|m| {
            m.into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .expect("every item was processed")
        })
        .collect()
}

/// Why a partition count cannot go down (or stay the same).
pub fn shrink_message(current: i32, requested: i32) -> String {
    if requested == current {
        format!("Topic already has {current} partitions.")
    } else {
        format!(
            "Topic currently has {current} partitions, which is higher than the requested {requested}. \
             Partitions can only be added, never removed: removing one would lose its records and \
             change which partition each key maps to."
        )
    }
}
