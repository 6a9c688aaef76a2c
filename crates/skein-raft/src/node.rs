//! [`RaftNode`]: one node of the metadata quorum (voter or observer), its start-up
//! (`quorum.meta`, bootstrap), the task that records directory ids, observer joining, and the
//! [`MetadataLog`] implementation.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use openraft::errors::{ChangeMembershipError, ClientWriteError, ForwardReason, RaftError};
use openraft::rt::watch::WatchReceiver;
use openraft::{ChangeMembers, Instant as _, ServerState, SnapshotPolicy};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::net::{self, AppClient, AppHandler, Hello, NetworkFactory, RaftReply, Shared};
use crate::sm::StateMachine;
use crate::store::LogStore;
use crate::{
    Applier, BoxFuture, EntryData, LogError, MetadataLog, NodeId, NodeState, PeerNode,
    QuorumStatus, Raft, RaftConfig, ReplicaStatus, Role, StartError,
};

/// One node of the metadata quorum.
pub struct RaftNode {
    shared: Arc<Shared>,
    raft: Raft,
    role: Role,
    /// `None` for a quorum of one started without a listener ([`RaftNode::start_alone`]).
    local_addr: Option<SocketAddr>,
    advertised_addr: String,
    applied_rx: watch::Receiver<Option<u64>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    stopped: AtomicBool,
}

/// Check or write `quorum.meta` (cluster id, node id, directory id).
fn check_meta(dir: &Path, config: &RaftConfig) -> Result<(), StartError> {
    let path = dir.join("quorum.meta");
    let want = format!(
        "cluster.id={}\nnode.id={}\ndirectory.id={}\n",
        config.cluster_id, config.node_id, config.directory_id
    );
    match fs::read_to_string(&path) {
        Ok(text) => {
            let mut found: BTreeMap<&str, &str> = BTreeMap::new();
            for line in text.lines() {
                if let Some((k, v)) = line.split_once('=') {
                    found.insert(k.trim(), v.trim());
                }
            }
            let cluster = found.get("cluster.id").copied().unwrap_or("");
            if cluster != config.cluster_id {
                return Err(StartError::Refused(format!(
                    "{} belongs to cluster {cluster:?}, not {:?}; refusing to start",
                    dir.display(),
                    config.cluster_id
                )));
            }
            let node = found.get("node.id").copied().unwrap_or("");
            if node != config.node_id.to_string() {
                return Err(StartError::Refused(format!(
                    "{} belongs to node {node}, not node {}; refusing to start",
                    dir.display(),
                    config.node_id
                )));
            }
            let d = found.get("directory.id").copied().unwrap_or("");
            if d != config.directory_id.to_string() {
                return Err(StartError::Refused(format!(
                    "{} has directory id {d}, but this node was started with {}; refusing to start",
                    dir.display(),
                    config.directory_id
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            crate::store::write_bytes_atomic(&path, want.as_bytes(), true)?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

fn validate(config: &RaftConfig) -> Result<(), StartError> {
    let refuse = |m: String| Err(StartError::Refused(m));
    if config.voters.is_empty() {
        return refuse("controller.quorum.voters is empty".into());
    }
    match config.role {
        Role::Voter if !config.voters.contains_key(&config.node_id) => {
            return refuse(format!(
                "node {} is a voter but is not in controller.quorum.voters",
                config.node_id
            ))
        }
        Role::Observer if config.voters.contains_key(&config.node_id) => {
            return refuse(format!(
                "node {} is an observer but is listed in controller.quorum.voters",
                config.node_id
            ))
        }
        _ => {}
    }
    let (min, max) = config.election_timeout;
    if min.is_zero() || max <= min || config.heartbeat_interval >= min {
        return refuse(format!(
            "bad raft timeouts: election {min:?}..{max:?}, heartbeat {:?}",
            config.heartbeat_interval
        ));
    }
    if config.snapshot_every == 0 {
        return refuse("snapshot_every must be at least 1".into());
    }
    Ok(())
}

fn to_state(s: ServerState) -> NodeState {
    match s {
        ServerState::Leader => NodeState::Leader,
        ServerState::Follower => NodeState::Follower,
        ServerState::Candidate => NodeState::Candidate,
        ServerState::Learner => NodeState::Observer,
        ServerState::Shutdown => NodeState::Shutdown,
    }
}

fn write_err(
    shared: &Shared,
    e: RaftError<crate::TypeConfig, ClientWriteError<crate::TypeConfig>>,
) -> LogError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => LogError::NotLeader {
            leader: f.leader_id.and_then(|id| {
                f.leader_node
                    .map(|n| n.addr)
                    .or_else(|| shared.addr_of(id))
                    .map(|a| (id, a))
            }),
        },
        RaftError::APIError(ClientWriteError::ChangeMembershipError(
            ChangeMembershipError::InProgress(_),
        )) => LogError::MembershipChangeInProgress,
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            LogError::Invalid(e.to_string())
        }
        RaftError::APIError(e) => LogError::Uncertain(e.to_string()),
        RaftError::Fatal(e) => LogError::Shutdown(e.to_string()),
    }
}

type WriteResult<T> = Result<T, RaftError<crate::TypeConfig, ClientWriteError<crate::TypeConfig>>>;

/// Whether a write was refused only because this leader's quorum lease is not (yet, or no
/// longer) valid: nothing was appended, so it is safe to try again while still leader.
fn lease_not_ready<T>(r: &WriteResult<T>) -> bool {
    matches!(
        r,
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))
            if f.reason == ForwardReason::LeaseExpired
    )
}

/// Run a write, retrying (briefly) while the leader's lease is not valid and it is still the
/// leader. The caller bounds the total wait.
async fn write_retrying<T, F, Fut>(shared: &Shared, raft: &Raft, mut f: F) -> WriteResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = WriteResult<T>>,
{
    loop {
        let r = f().await;
        let still_leader = raft.metrics().borrow_watched().current_leader == Some(shared.node_id);
        if !lease_not_ready(&r) || !still_leader {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Initialize Raft with the static voters (every voter writes the identical entry 0).
async fn bootstrap(
    raft: &Raft,
    id: NodeId,
    members: BTreeMap<NodeId, PeerNode>,
) -> Result<(), StartError> {
    match raft.initialize(members).await {
        Ok(()) => {
            tracing::info!(node = id, "raft: bootstrapped the static voters");
            Ok(())
        }
        Err(RaftError::APIError(e)) => {
            tracing::debug!(error = %e, "raft: not initializing (already formed)");
            Ok(())
        }
        Err(RaftError::Fatal(e)) => Err(StartError::Raft(e.to_string())),
    }
}

impl RaftNode {
    /// The directory id to start with for `metadata_dir`: the one its `quorum.meta` records, or
    /// a fresh UUID when the directory has none (new or wiped: KIP-853 gives a wiped disk a new
    /// id, which is what lets the quorum refuse it). Callers should use this rather than keep
    /// the id elsewhere, so that a wiped metadata directory never comes back under its old id.
    pub fn directory_id(metadata_dir: &Path) -> Result<Uuid, StartError> {
        match fs::read_to_string(metadata_dir.join("quorum.meta")) {
            Ok(text) => text
                .lines()
                .find_map(|l| l.strip_prefix("directory.id="))
                .and_then(|v| Uuid::parse_str(v.trim()).ok())
                .ok_or_else(|| {
                    StartError::Refused(format!(
                        "{}: quorum.meta has no valid directory.id",
                        metadata_dir.display()
                    ))
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(new_directory_id()),
            Err(e) => Err(e.into()),
        }
    }

    /// Open the metadata directory, start Raft and serve the controller listener. A voter with
    /// an empty directory bootstraps the static voters (see the crate docs).
    pub async fn start(
        config: RaftConfig,
        listener: TcpListener,
        applier: Box<dyn Applier>,
    ) -> Result<RaftNode, StartError> {
        Self::start_inner(config, Some(listener), applier).await
    }

    /// [`RaftNode::start`] for a quorum of one no peer ever reaches (a single node): no
    /// controller listener is bound. `config.voters` must name this node alone, as a voter;
    /// its address is recorded in the membership but never used.
    pub async fn start_alone(
        config: RaftConfig,
        applier: Box<dyn Applier>,
    ) -> Result<RaftNode, StartError> {
        let alone = config.role == Role::Voter
            && config.voters.len() == 1
            && config.voters.contains_key(&config.node_id);
        if !alone {
            return Err(StartError::Refused(
                "a node without a controller listener must be the only voter".into(),
            ));
        }
        Self::start_inner(config, None, applier).await
    }

    async fn start_inner(
        config: RaftConfig,
        listener: Option<TcpListener>,
        applier: Box<dyn Applier>,
    ) -> Result<RaftNode, StartError> {
        validate(&config)?;
        let dir = config.metadata_dir.clone();
        fs::create_dir_all(&dir)?;
        check_meta(&dir, &config)?;
        let local_addr = listener.as_ref().map(TcpListener::local_addr).transpose()?;
        let advertised_addr = config
            .advertised_addr
            .clone()
            .or_else(|| config.voters.get(&config.node_id).cloned())
            .or_else(|| local_addr.map(|a| a.to_string()))
            .unwrap_or_default();

        let store = LogStore::open(&dir)?;
        let pristine = store.is_pristine() && !dir.join("snapshot").exists();
        let (applied_tx, applied_rx) = watch::channel(None);
        let sm = StateMachine::open(&dir, applier, applied_tx)?;

        let (shutdown, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            cluster_id: config.cluster_id.clone(),
            node_id: config.node_id,
            directory_id: config.directory_id,
            limits: config.limits.clone(),
            static_voters: config.voters.clone(),
            members: RwLock::new(BTreeMap::new()),
            voter_ids: RwLock::new(BTreeSet::new()),
            seen_dirs: Mutex::new(BTreeMap::new()),
            refusals: Mutex::new(VecDeque::new()),
            closing_log: crate::transport::RareLog::new(),
            raft: OnceLock::new(),
            app_handler: RwLock::new(None),
            shutdown,
            transport: config.transport.clone(),
        });

        let ms = |d: Duration| d.as_millis().max(1) as u64;
        let raft_config = openraft::Config {
            cluster_name: config.cluster_id.clone(),
            election_timeout_min: ms(config.election_timeout.0),
            election_timeout_max: ms(config.election_timeout.1),
            heartbeat_interval: ms(config.heartbeat_interval),
            install_snapshot_timeout: ms(config.limits.io_timeout) * 4,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every),
            // Purge right behind each snapshot: a follower further behind gets the snapshot.
            max_in_snapshot_log_to_keep: 0,
            enable_pre_vote: Some(true),
            ..Default::default()
        }
        .validate()
        .map_err(|e| StartError::Raft(e.to_string()))?;

        let factory = NetworkFactory {
            shared: shared.clone(),
        };
        let raft = Raft::new(config.node_id, Arc::new(raft_config), factory, store, sm)
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        // Set exactly once, here.
        let _ = shared.raft.set(raft.clone());
        sync_members(&shared, &raft);

        let mut tasks = Vec::new();
        if let Some(listener) = listener {
            tasks.push(tokio::spawn(net::serve(listener, shared.clone())));
        }
        tasks.push(tokio::spawn(membership_task(shared.clone(), raft.clone())));

        if config.role == Role::Voter {
            if pristine {
                let members: BTreeMap<NodeId, PeerNode> = config
                    .voters
                    .iter()
                    .map(|(id, addr)| {
                        (
                            *id,
                            PeerNode {
                                addr: addr.clone(),
                                directory_id: None,
                            },
                        )
                    })
                    .collect();
                // The lowest voter id bootstraps at once; the others wait one maximal election
                // timeout first (unless a leader reached them before), so that a cluster
                // started all at once does not begin with a split vote in term 1. If the lowest
                // voter is down, the others still form the quorum on their own.
                let first = config.voters.keys().next() == Some(&config.node_id);
                if first {
                    bootstrap(&raft, config.node_id, members).await?;
                } else {
                    let raft2 = raft.clone();
                    let id = config.node_id;
                    let delay = config.election_timeout.1;
                    tasks.push(tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        if matches!(raft2.is_initialized().await, Ok(false)) {
                            let _ = bootstrap(&raft2, id, members).await;
                        }
                    }));
                }
            } else {
                let only_me = {
                    let m = raft.metrics().borrow_watched().membership_config.clone();
                    let voters: Vec<NodeId> = m.voter_ids().collect();
                    voters == [config.node_id]
                };
                let recorded: BTreeSet<NodeId> = raft
                    .metrics()
                    .borrow_watched()
                    .membership_config
                    .voter_ids()
                    .collect();
                let configured: BTreeSet<NodeId> = config.voters.keys().copied().collect();
                if !recorded.is_empty() && recorded != configured {
                    tracing::warn!(
                        node = config.node_id,
                        "controller.quorum.voters {configured:?} differs from the voters the quorum records {recorded:?}; the recorded voters apply (change them with add-voter/remove-voter)"
                    );
                }
                if only_me {
                    // The only voter: no one to wait for, elect now.
                    let _ = raft.trigger().elect(false).await;
                }
            }
        } else {
            tasks.push(tokio::spawn(join_task(
                shared.clone(),
                raft.clone(),
                advertised_addr.clone(),
            )));
        }

        Ok(RaftNode {
            shared,
            raft,
            role: config.role,
            local_addr,
            advertised_addr,
            applied_rx,
            tasks: Mutex::new(tasks),
            stopped: AtomicBool::new(false),
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.shared.node_id
    }

    /// Voter or observer.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The controller listener's local address (`None` when started without one).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// The address peers use for this node.
    pub fn advertised_addr(&self) -> &str {
        &self.advertised_addr
    }

    /// Register the handler of the application channel (replaces any previous one).
    pub fn set_app_handler(&self, handler: AppHandler) {
        *self
            .shared
            .app_handler
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(handler);
    }

    /// A client for the application channel of the other nodes.
    pub fn app_client(&self) -> AppClient {
        AppClient {
            shared: self.shared.clone(),
        }
    }

    /// The leader as this node knows it: `(node id, controller address)`.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        self.shared.leader_hint()
    }

    /// Whether this node is the leader right now.
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow_watched().current_leader == Some(self.shared.node_id)
    }

    /// Take a snapshot now (tests, operators); returns once it is requested.
    pub async fn trigger_snapshot(&self) -> Result<(), LogError> {
        self.raft
            .trigger()
            .snapshot()
            .await
            .map_err(|e| LogError::Shutdown(e.to_string()))
    }

    fn not_leader(&self) -> Option<LogError> {
        if self.is_leader() {
            None
        } else {
            Some(LogError::NotLeader {
                leader: self.shared.leader_hint(),
            })
        }
    }

    fn is_uniform(&self) -> bool {
        let m = self.raft.metrics().borrow_watched().clone();
        m.membership_config.log_id() == m.committed_membership_config.log_id()
            && m.membership_config.get_joint_config().len() == 1
    }

    /// Wait (up to a second) for the last membership change to be committed: changes go one
    /// at a time. A change still in flight after that is an error.
    async fn wait_uniform(&self) -> Result<(), LogError> {
        let start = std::time::Instant::now();
        while !self.is_uniform() {
            if start.elapsed() > Duration::from_secs(1) {
                let m = self.raft.metrics().borrow_watched().clone();
                tracing::info!(
                    effective = ?m.membership_config.log_id(),
                    committed = ?m.committed_membership_config.log_id(),
                    "raft: a membership change is in progress"
                );
                return Err(LogError::MembershipChangeInProgress);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    async fn bounded<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, LogError>>,
    ) -> Result<T, LogError> {
        let d = self.shared.limits.request_timeout;
        tokio::time::timeout(d, f)
            .await
            .unwrap_or(Err(LogError::Timeout(d)))
    }

    async fn change(
        &self,
        change: ChangeMembers<NodeId, PeerNode>,
        retain: bool,
    ) -> Result<(), LogError> {
        write_retrying(&self.shared, &self.raft, || {
            self.raft.change_membership(change.clone(), retain)
        })
        .await
        .map(|_| ())
        .map_err(|e| write_err(&self.shared, e))
    }

    /// Make `node` a learner with exactly `info`, waiting for it to catch up if `blocking`.
    async fn ensure_learner(
        &self,
        node: NodeId,
        info: PeerNode,
        blocking: bool,
    ) -> Result<(), LogError> {
        let existing = self
            .shared
            .members
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&node)
            .cloned();
        match existing {
            Some(cur) if cur == info => {}
            Some(_) => {
                self.change(
                    ChangeMembers::SetNodes(BTreeMap::from([(node, info.clone())])),
                    true,
                )
                .await?
            }
            None => {
                return write_retrying(&self.shared, &self.raft, || {
                    self.raft.add_learner(node, info.clone(), blocking)
                })
                .await
                .map(|_| ())
                .map_err(|e| write_err(&self.shared, e))
            }
        }
        if blocking {
            // Already present: wait until it has caught up with the leader's log.
            let target = self.raft.metrics().borrow_watched().last_log_index;
            loop {
                let matched = self
                    .raft
                    .metrics()
                    .borrow_watched()
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(&node).cloned().flatten())
                    .map(|l| l.index);
                if matched >= target {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }
}

/// Copy the membership from the metrics into the shared state.
fn sync_members(shared: &Shared, raft: &Raft) {
    let m = raft.metrics().borrow_watched().membership_config.clone();
    let nodes: BTreeMap<NodeId, PeerNode> = m.nodes().map(|(id, n)| (*id, n.clone())).collect();
    let voters: BTreeSet<NodeId> = m.voter_ids().collect();
    *shared.members.write().unwrap_or_else(|p| p.into_inner()) = nodes;
    *shared.voter_ids.write().unwrap_or_else(|p| p.into_inner()) = voters;
}

/// Keeps the shared membership current and, on the leader, records directory ids proven by
/// handshakes for members that have none yet (first formation).
async fn membership_task(shared: Arc<Shared>, raft: Raft) {
    let mut metrics = raft.metrics();
    let mut stop = shared.shutdown.subscribe();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            r = metrics.changed() => if r.is_err() { return },
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        sync_members(&shared, &raft);
        let m = metrics.borrow_watched().clone();
        if m.current_leader != Some(shared.node_id)
            || m.membership_config.log_id() != m.committed_membership_config.log_id()
        {
            continue;
        }
        let seen = shared
            .seen_dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let updates: BTreeMap<NodeId, PeerNode> = m
            .membership_config
            .nodes()
            .filter(|(_, n)| n.directory_id.is_none())
            .filter_map(|(id, n)| {
                let dir = if *id == shared.node_id {
                    Some(shared.directory_id)
                } else {
                    seen.get(id).copied()
                };
                dir.map(|d| {
                    (
                        *id,
                        PeerNode {
                            addr: n.addr.clone(),
                            directory_id: Some(d),
                        },
                    )
                })
            })
            .collect();
        if updates.is_empty() {
            continue;
        }
        let ids: Vec<NodeId> = updates.keys().copied().collect();
        let res = tokio::time::timeout(
            shared.limits.request_timeout,
            raft.change_membership(ChangeMembers::SetNodes(updates), true),
        )
        .await;
        match res {
            Ok(Ok(_)) => {
                tracing::info!(node = shared.node_id, recorded = ?ids, "raft: recorded directory ids")
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "raft: recording directory ids failed; will retry")
            }
            Err(_) => tracing::debug!("raft: recording directory ids timed out; will retry"),
        }
    }
}

/// An observer asks the voters to add it as a learner until it is in the membership.
async fn join_task(shared: Arc<Shared>, raft: Raft, addr: String) {
    let mut stop = shared.shutdown.subscribe();
    let mut hint: Option<NodeId> = None;
    let mut i = 0usize;
    loop {
        let member = raft
            .metrics()
            .borrow_watched()
            .membership_config
            .nodes()
            .any(|(id, _)| *id == shared.node_id);
        if member {
            return;
        }
        let voters: Vec<NodeId> = {
            let v = shared.voter_ids.read().unwrap_or_else(|p| p.into_inner());
            if v.is_empty() {
                shared.static_voters.keys().copied().collect()
            } else {
                v.iter().copied().collect()
            }
        };
        i += 1;
        let target = hint.take().unwrap_or(voters[i % voters.len()]);
        if let Some(taddr) = shared.addr_of(target) {
            if let Ok(mut conn) =
                net::Conn::open(&shared, &taddr, Some(target), net::Channel::Raft).await
            {
                let req = net::RaftRequest::Join { addr: addr.clone() };
                match conn
                    .call::<_, RaftReply>(&req, shared.limits.request_timeout)
                    .await
                {
                    Ok(RaftReply::Joined) => {
                        tracing::info!(
                            node = shared.node_id,
                            leader = target,
                            "raft: joined as an observer"
                        );
                    }
                    Ok(RaftReply::NotLeader(Some((id, _)))) => hint = Some(id),
                    Ok(RaftReply::Error(e)) => tracing::debug!(error = %e, "raft: join refused"),
                    _ => {}
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// The leader's side of an observer's Join.
pub(crate) async fn handle_join(
    shared: &Arc<Shared>,
    raft: &Raft,
    hello: &Hello,
    addr: String,
) -> RaftReply {
    let m = raft.metrics().borrow_watched().clone();
    if m.current_leader != Some(shared.node_id) {
        return RaftReply::NotLeader(shared.leader_hint());
    }
    if m.membership_config.voter_ids().any(|v| v == hello.node_id) {
        return RaftReply::Error(format!(
            "node {} is a voter, not an observer",
            hello.node_id
        ));
    }
    let info = PeerNode {
        addr,
        directory_id: Some(hello.directory_id),
    };
    if m.membership_config.get_node(&hello.node_id) == Some(&info) {
        return RaftReply::Joined;
    }
    let res = tokio::time::timeout(shared.limits.request_timeout, async {
        if m.membership_config.get_node(&hello.node_id).is_some() {
            raft.change_membership(
                ChangeMembers::SetNodes(BTreeMap::from([(hello.node_id, info)])),
                true,
            )
            .await
        } else {
            raft.add_learner(hello.node_id, info, false).await
        }
    })
    .await;
    match res {
        Ok(Ok(_)) => {
            tracing::info!(
                node = shared.node_id,
                observer = hello.node_id,
                "raft: added an observer"
            );
            RaftReply::Joined
        }
        Ok(Err(e)) => RaftReply::Error(e.to_string()),
        Err(_) => RaftReply::Error("timed out adding the observer".into()),
    }
}

impl MetadataLog for RaftNode {
    fn propose(&self, entry: Bytes) -> BoxFuture<'_, Result<u64, LogError>> {
        Box::pin(async move {
            if entry.len() > self.shared.limits.max_entry_bytes {
                return Err(LogError::Invalid(format!(
                    "entry of {} bytes exceeds the limit of {} bytes",
                    entry.len(),
                    self.shared.limits.max_entry_bytes
                )));
            }
            if let Some(e) = self.not_leader() {
                return Err(e);
            }
            self.bounded(async {
                write_retrying(&self.shared, &self.raft, || {
                    self.raft.client_write(EntryData(entry.clone()))
                })
                .await
                .map(|r| r.log_id.index)
                .map_err(|e| write_err(&self.shared, e))
            })
            .await
        })
    }

    fn applied(&self) -> watch::Receiver<Option<u64>> {
        self.applied_rx.clone()
    }

    fn status(&self) -> QuorumStatus {
        let m = self.raft.metrics().borrow_watched().clone();
        let leo = m.last_log_index.map_or(0, |i| i + 1);
        let me = self.shared.node_id;
        let is_leader = m.current_leader == Some(me);
        let now = SystemTime::now();
        let replica = |id: NodeId, n: &PeerNode| {
            let (log_end_offset, lag, last_ack) = if !is_leader {
                (None, None, None)
            } else if id == me {
                (Some(leo), Some(0), Some(now))
            } else {
                let matched = m
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(&id).cloned().flatten())
                    .map(|l| l.index + 1);
                let ack = m
                    .heartbeat
                    .as_ref()
                    .and_then(|h| h.get(&id).cloned().flatten())
                    .map(|i| now - i.elapsed());
                (matched, matched.map(|x| leo.saturating_sub(x)), ack)
            };
            ReplicaStatus {
                node_id: id,
                directory_id: n.directory_id,
                addr: n.addr.clone(),
                log_end_offset,
                lag,
                last_ack,
            }
        };
        let voter_ids: BTreeSet<NodeId> = m.membership_config.voter_ids().collect();
        let mut voters = Vec::new();
        let mut observers = Vec::new();
        for (id, n) in m.membership_config.nodes() {
            if voter_ids.contains(id) {
                voters.push(replica(*id, n));
            } else {
                observers.push(replica(*id, n));
            }
        }
        let refusals = self
            .shared
            .refusals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        QuorumStatus {
            node_id: me,
            directory_id: self.shared.directory_id,
            state: if self.stopped.load(Ordering::Relaxed) {
                NodeState::Shutdown
            } else {
                to_state(m.state)
            },
            leader: m.current_leader,
            term: m.current_term,
            high_watermark: m
                .cluster_committed
                .or(m.local_committed)
                .map_or(0, |c| c.index + 1),
            log_end_offset: leo,
            last_applied: m.last_applied.map(|l| l.index),
            snapshot: m.snapshot.map(|l| l.index),
            voters,
            observers,
            refusals,
        }
    }

    fn add_voter(
        &self,
        node_id: NodeId,
        directory_id: Uuid,
        addr: String,
    ) -> BoxFuture<'_, Result<(), LogError>> {
        Box::pin(self.bounded(async move {
            if let Some(e) = self.not_leader() {
                return Err(e);
            }
            self.wait_uniform().await?;
            let info = PeerNode {
                addr,
                directory_id: Some(directory_id),
            };
            let m = self.raft.metrics().borrow_watched().membership_config.clone();
            if m.voter_ids().any(|v| v == node_id) {
                return if m.get_node(&node_id) == Some(&info) {
                    Ok(())
                } else {
                    Err(LogError::Invalid(format!(
                        "node {node_id} is already a voter with another directory id or address; remove it first"
                    )))
                };
            }
            self.ensure_learner(node_id, info, true).await?;
            self.change(ChangeMembers::AddVoterIds(BTreeSet::from([node_id])), true)
                .await?;
            tracing::info!(node = self.shared.node_id, voter = node_id, %directory_id, "raft: added a voter");
            Ok(())
        }))
    }

    fn remove_voter(
        &self,
        node_id: NodeId,
        directory_id: Option<Uuid>,
    ) -> BoxFuture<'_, Result<(), LogError>> {
        Box::pin(self.bounded(async move {
            if let Some(e) = self.not_leader() {
                return Err(e);
            }
            self.wait_uniform().await?;
            let m = self
                .raft
                .metrics()
                .borrow_watched()
                .membership_config
                .clone();
            let voters: BTreeSet<NodeId> = m.voter_ids().collect();
            if !voters.contains(&node_id) {
                return Err(LogError::Invalid(format!("node {node_id} is not a voter")));
            }
            if voters.len() == 1 {
                return Err(LogError::Invalid("cannot remove the last voter".into()));
            }
            if let (
                Some(want),
                Some(PeerNode {
                    directory_id: Some(recorded),
                    ..
                }),
            ) = (directory_id, m.get_node(&node_id))
            {
                if want != *recorded {
                    return Err(LogError::Invalid(format!(
                        "node {node_id} is recorded with directory id {recorded}, not {want}"
                    )));
                }
            }
            self.change(
                ChangeMembers::RemoveVoters(BTreeSet::from([node_id])),
                false,
            )
            .await?;
            tracing::info!(
                node = self.shared.node_id,
                voter = node_id,
                "raft: removed a voter"
            );
            Ok(())
        }))
    }

    fn add_observer(
        &self,
        node_id: NodeId,
        directory_id: Uuid,
        addr: String,
    ) -> BoxFuture<'_, Result<(), LogError>> {
        Box::pin(self.bounded(async move {
            if let Some(e) = self.not_leader() {
                return Err(e);
            }
            self.wait_uniform().await?;
            let m = self
                .raft
                .metrics()
                .borrow_watched()
                .membership_config
                .clone();
            if m.voter_ids().any(|v| v == node_id) {
                return Err(LogError::Invalid(format!("node {node_id} is a voter")));
            }
            self.ensure_learner(
                node_id,
                PeerNode {
                    addr,
                    directory_id: Some(directory_id),
                },
                false,
            )
            .await
        }))
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if self.stopped.swap(true, Ordering::SeqCst) {
                return;
            }
            let _ = self.shared.shutdown.send(true);
            if let Err(e) = self.raft.shutdown().await {
                tracing::warn!(error = %e, "raft: shutdown");
            }
            let tasks: Vec<_> =
                std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
            // Wait for them to be gone, so the listener is closed when this returns.
            for t in tasks {
                t.abort();
                let _ = t.await;
            }
        })
    }
}

impl Drop for RaftNode {
    fn drop(&mut self) {
        let _ = self.shared.shutdown.send(true);
        for t in self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            t.abort();
        }
    }
}

/// A fresh directory id. Like Kafka's `Uuid.randomUuid`, never the all-zero id and never one
/// whose base64 form starts with '-', which command lines would read as an option.
fn new_directory_id() -> Uuid {
    loop {
        let id = Uuid::new_v4();
        if !id.is_nil() && !crate::net::kafka_uuid(&id).starts_with('-') {
            return id;
        }
    }
}
