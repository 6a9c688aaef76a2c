//! The controller listener: framing, the handshake, openraft's RPCs and the application
//! channel.
//!
//! Wire format: every frame is `[u32 big-endian length][payload]`; a length above
//! [`Limits::max_frame_bytes`](crate::Limits) closes the connection (logged in one line). Payloads
//! are postcard-encoded serde values.
//! 1. The client sends [`Hello`] (magic, protocol version, cluster id, its node id and directory
//!    id, the channel). The server answers [`HelloReply`]: `Accepted` with its own node id and
//!    directory id, or `Refused` with a one-line reason, then closes. A wrong cluster id, a
//!    wrong magic or version, or a directory id that differs from the one the quorum recorded
//!    for that node id is refused; both ends log it and keep it in the status.
//! 2. Then requests and responses alternate, one at a time per connection:
//!    - Raft channel: [`RaftRequest`] / [`RaftReply`] (AppendEntries, Vote, PreVote, a full
//!      snapshot in one frame, and Join for an observer asking to be added).
//!    - Application channel: [`AppRequest`] / [`AppReply`]: opaque bytes for the handler the
//!      caller registered; with `leader_only`, a non-leader answers `NotLeader` with its hint.
//!
//! Limits: inbound connections are capped (a semaphore; one over the cap is closed at once),
//! every frame read and write has a timeout, an idle inbound connection is closed.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use bytes::Bytes;
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::rt::watch::WatchReceiver;
use openraft::type_config::alias::{SnapshotMetaOf, SnapshotOf, VoteOf};
use openraft::OptionalSend;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use uuid::Uuid;

use crate::transport::{BoxStream, Transport};
use crate::{BoxFuture, Limits, NodeId, PeerNode, Raft, TypeConfig};

const MAGIC: u32 = 0x534b_5246; // "SKRF"
const VERSION: u16 = 1;
const MAX_REFUSALS: usize = 16;
/// The largest handshake frame accepted (before the peer is known).
const MAX_HELLO_BYTES: usize = 4096;

/// The handler of the application channel: request bytes in, response bytes out.
pub type AppHandler = Arc<dyn Fn(Bytes) -> BoxFuture<'static, Bytes> + Send + Sync>;

/// Which protocol follows the handshake.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum Channel {
    /// openraft's RPCs.
    Raft,
    /// The application channel.
    App,
}

/// The first frame of a connection.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Hello {
    /// `0x534b5246` ("SKRF").
    pub magic: u32,
    /// Protocol version.
    pub version: u16,
    /// The client's cluster id.
    pub cluster_id: String,
    /// The client's node id.
    pub node_id: NodeId,
    /// The client's directory id.
    pub directory_id: Uuid,
    /// What follows.
    pub channel: Channel,
}

/// The answer to [`Hello`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum HelloReply {
    /// Go ahead; the server's identity.
    Accepted {
        /// The server's node id.
        node_id: NodeId,
        /// The server's directory id.
        directory_id: Uuid,
    },
    /// Refused, with a one-line reason; the server closes the connection.
    Refused {
        /// Why.
        reason: String,
    },
}

/// A request on the Raft channel.
#[derive(Debug, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)]
pub enum RaftRequest {
    /// AppendEntries.
    Append(AppendEntriesRequest<TypeConfig>),
    /// RequestVote.
    Vote(VoteRequest<TypeConfig>),
    /// Pre-vote.
    PreVote(VoteRequest<TypeConfig>),
    /// A whole snapshot.
    Snapshot {
        /// The leader's vote.
        vote: VoteOf<TypeConfig>,
        /// The snapshot's meta.
        meta: SnapshotMetaOf<TypeConfig>,
        /// The applier's bytes.
        data: Bytes,
    },
    /// An observer asks to be added as a learner at `addr`.
    Join {
        /// Its controller address.
        addr: String,
    },
}

/// A reply on the Raft channel.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftReply {
    /// To Append.
    Append(AppendEntriesResponse<TypeConfig>),
    /// To Vote / PreVote.
    Vote(VoteResponse<TypeConfig>),
    /// To Snapshot.
    Snapshot(SnapshotResponse<TypeConfig>),
    /// To Join: added (or already a member).
    Joined,
    /// To Join: ask the leader.
    NotLeader(Option<(NodeId, String)>),
    /// The request failed on the server.
    Error(String),
}

/// A request on the application channel.
#[derive(Debug, Serialize, Deserialize)]
pub struct AppRequest {
    /// Only the leader may handle it.
    pub leader_only: bool,
    /// The caller's bytes.
    pub body: Bytes,
}

/// A reply on the application channel.
#[derive(Debug, Serialize, Deserialize)]
pub enum AppReply {
    /// The handler's answer.
    Ok(Bytes),
    /// Not the leader (for `leader_only`), with a hint.
    NotLeader(Option<(NodeId, String)>),
    /// No handler is registered on that node.
    NoHandler,
    /// The handler failed or timed out.
    Error(String),
}

/// Errors of the application channel client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppError {
    /// The target is not the leader (for leader requests: no leader found before the deadline).
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// The leader as the target knows it.
        leader: Option<(NodeId, String)>,
    },
    /// The node id has no known address.
    #[error("unknown node {0}")]
    UnknownNode(NodeId),
    /// Could not connect or the handshake was refused.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The deadline passed.
    #[error("timed out")]
    Timeout,
    /// No handler registered on the target.
    #[error("no application handler on node {0}")]
    NoHandler(NodeId),
    /// The target's handler failed.
    #[error("remote error: {0}")]
    Remote(String),
}

/// Framing and transport errors.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// I/O.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A frame above the limit.
    #[error("frame of {0} bytes exceeds the limit of {1} bytes")]
    TooLarge(usize, usize),
    /// A frame that does not decode.
    #[error("undecodable frame: {0}")]
    Decode(String),
    /// A read or write took too long.
    #[error("timed out")]
    Timeout,
}

/// Read one frame (`[u32 len][payload]`), refusing lengths above `max`.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Vec<u8>, FrameError> {
    let len = r.read_u32().await? as usize;
    if len > max {
        return Err(FrameError::TooLarge(len, max));
    }
    // Grow with the bytes that actually arrive, never from the length prefix alone: a peer
    // announcing a large frame and sending nothing costs us nothing.
    let mut buf = Vec::with_capacity(len.min(64 << 10));
    (&mut *r).take(len as u64).read_to_end(&mut buf).await?;
    if buf.len() != len {
        return Err(FrameError::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(buf)
}

/// Write one frame.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    payload: &[u8],
    max: usize,
) -> Result<(), FrameError> {
    if payload.len() > max {
        return Err(FrameError::TooLarge(payload.len(), max));
    }
    w.write_u32(payload.len() as u32).await?;
    w.write_all(payload).await?;
    w.flush().await?;
    Ok(())
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, FrameError> {
    postcard::to_allocvec(v).map_err(|e| FrameError::Decode(e.to_string()))
}

fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, FrameError> {
    postcard::from_bytes(b).map_err(|e| FrameError::Decode(e.to_string()))
}

async fn with_timeout<T>(
    d: Duration,
    f: impl std::future::Future<Output = Result<T, FrameError>>,
) -> Result<T, FrameError> {
    tokio::time::timeout(d, f)
        .await
        .unwrap_or(Err(FrameError::Timeout))
}

/// State shared by the node, its server, its clients and the status.
pub(crate) struct Shared {
    pub cluster_id: String,
    pub node_id: NodeId,
    pub directory_id: Uuid,
    pub limits: Limits,
    /// The static voters (`controller.quorum.voters`).
    pub static_voters: BTreeMap<NodeId, String>,
    /// The membership's nodes as last seen in the metrics (voters and learners).
    pub members: RwLock<BTreeMap<NodeId, PeerNode>>,
    /// The membership's voter ids.
    pub voter_ids: RwLock<BTreeSet<NodeId>>,
    /// Directory ids proven by a successful handshake.
    pub seen_dirs: Mutex<BTreeMap<NodeId, Uuid>>,
    /// Recent refusals, newest last.
    pub refusals: Mutex<VecDeque<String>>,
    /// Rate-limits the warnings for inbound connections closed on an error (a peer with a
    /// wrong password or certificate retries several times a second).
    pub closing_log: crate::transport::RareLog,
    pub raft: OnceLock<Raft>,
    pub app_handler: RwLock<Option<AppHandler>>,
    pub shutdown: watch::Sender<bool>,
    /// What wraps every connection (TLS), if anything.
    pub transport: Option<Arc<dyn Transport>>,
}

impl Shared {
    /// Record (and log, once while it is recent) a refusal.
    pub fn refusal(&self, reason: String) {
        let mut r = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        if !r.iter().any(|x| *x == reason) {
            tracing::warn!(node = self.node_id, "{reason}");
        }
        r.retain(|x| *x != reason);
        r.push_back(reason);
        while r.len() > MAX_REFUSALS {
            r.pop_front();
        }
    }

    /// Whether `node` with directory `dir` may talk to this quorum: not if the membership
    /// recorded another directory id for it.
    pub fn check_identity(&self, node: NodeId, dir: Uuid) -> Result<(), String> {
        let members = self.members.read().unwrap_or_else(|p| p.into_inner());
        if let Some(PeerNode {
            directory_id: Some(recorded),
            ..
        }) = members.get(&node)
        {
            if *recorded != dir {
                return Err(format!(
                    "node {node} has directory id {} but the quorum records {} for it \
                     (a wiped or replaced disk?): remove-voter {node} and add-voter {node} with the new directory id",
                    kafka_uuid(&dir),
                    kafka_uuid(recorded)
                ));
            }
        }
        Ok(())
    }

    /// The controller address of `node`: the membership's, else the static voters'.
    pub fn addr_of(&self, node: NodeId) -> Option<String> {
        let members = self.members.read().unwrap_or_else(|p| p.into_inner());
        members
            .get(&node)
            .map(|n| n.addr.clone())
            .or_else(|| self.static_voters.get(&node).cloned())
    }

    /// The leader as this node knows it: `(id, address)`.
    pub fn leader_hint(&self) -> Option<(NodeId, String)> {
        let raft = self.raft.get()?;
        let leader = raft.metrics().borrow_watched().current_leader?;
        let addr = self.addr_of(leader)?;
        Some((leader, addr))
    }

    fn hello(&self, channel: Channel) -> Hello {
        Hello {
            magic: MAGIC,
            version: VERSION,
            cluster_id: self.cluster_id.clone(),
            node_id: self.node_id,
            directory_id: self.directory_id,
            channel,
        }
    }
}

/// A client connection after a successful handshake.
pub(crate) struct Conn {
    stream: BoxStream,
    max: usize,
    io_timeout: Duration,
}

impl Conn {
    /// Connect to `addr`, expecting node `expect` there, and shake hands.
    pub async fn open(
        shared: &Shared,
        addr: &str,
        expect: Option<NodeId>,
        channel: Channel,
    ) -> Result<Conn, String> {
        let limits = &shared.limits;
        let tcp = tokio::time::timeout(limits.io_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| format!("connecting to {addr} timed out"))?
            .map_err(|e| format!("connecting to {addr}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let mut stream: BoxStream = match &shared.transport {
            None => Box::new(tcp),
            Some(t) => tokio::time::timeout(limits.io_timeout, t.connect(tcp, addr.to_string()))
                .await
                .map_err(|_| format!("{} handshake with {addr} timed out", t.name()))?
                .map_err(|e| format!("{} handshake with {addr}: {e}", t.name()))?,
        };
        let hello = encode(&shared.hello(channel)).map_err(|e| e.to_string())?;
        let reply = with_timeout(limits.io_timeout, async {
            write_frame(&mut stream, &hello, limits.max_frame_bytes).await?;
            read_frame(&mut stream, limits.max_frame_bytes).await
        })
        .await
        .map_err(|e| format!("handshake with {addr}: {e}"))?;
        match decode::<HelloReply>(&reply).map_err(|e| format!("handshake with {addr}: {e}"))? {
            HelloReply::Refused { reason } => {
                let msg = format!("refused by {addr}: {reason}");
                shared.refusal(msg.clone());
                Err(msg)
            }
            HelloReply::Accepted {
                node_id,
                directory_id,
            } => {
                if let Some(expect) = expect {
                    if node_id != expect {
                        let msg = format!("{addr} answers as node {node_id}, not node {expect}");
                        shared.refusal(msg.clone());
                        return Err(msg);
                    }
                }
                if let Err(reason) = shared.check_identity(node_id, directory_id) {
                    let msg = format!("refusing node {node_id} at {addr}: {reason}");
                    shared.refusal(msg.clone());
                    return Err(msg);
                }
                shared
                    .seen_dirs
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(node_id, directory_id);
                Ok(Conn {
                    stream,
                    max: limits.max_frame_bytes,
                    io_timeout: limits.io_timeout,
                })
            }
        }
    }

    /// One request/response exchange.
    pub async fn call<Req: Serialize, Rep: DeserializeOwned>(
        &mut self,
        req: &Req,
        reply_timeout: Duration,
    ) -> Result<Rep, FrameError> {
        let payload = encode(req)?;
        with_timeout(
            self.io_timeout,
            write_frame(&mut self.stream, &payload, self.max),
        )
        .await?;
        let reply = with_timeout(reply_timeout, read_frame(&mut self.stream, self.max)).await?;
        decode(&reply)
    }
}

/// Accept connections on the controller listener until shutdown.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let permits = Arc::new(Semaphore::new(shared.limits.max_connections));
    let mut stop = shared.shutdown.subscribe();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "controller listener: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(%peer, limit = shared.limits.max_connections, "controller listener: connection limit reached, closing");
            drop(stream);
            continue;
        };
        let shared = shared.clone();
        let mut stop = shared.shutdown.subscribe();
        tokio::spawn(async move {
            tokio::select! {
                r = handle_conn(stream, &shared) => {
                    if let Err(reason) = r {
                        shared.closing_log.log(std::time::Instant::now(), |suppressed| {
                            tracing::warn!(%peer, node = shared.node_id, suppressed, "closing controller connection: {reason}");
                        });
                    }
                }
                _ = stop.wait_for(|s| *s) => {}
            }
            drop(permit);
        });
    }
}

/// Serve one inbound connection. `Err` is a one-line reason to log.
async fn handle_conn(tcp: TcpStream, shared: &Arc<Shared>) -> Result<(), String> {
    let _ = tcp.set_nodelay(true);
    let limits = shared.limits.clone();
    let mut stream: BoxStream = match &shared.transport {
        None => Box::new(tcp),
        Some(t) => tokio::time::timeout(limits.io_timeout, t.accept(tcp))
            .await
            .map_err(|_| format!("{} handshake timed out", t.name()))?
            .map_err(|e| format!("{} handshake: {e}", t.name()))?,
    };
    let max = limits.max_frame_bytes;
    let hello = with_timeout(limits.io_timeout, read_frame(&mut stream, MAX_HELLO_BYTES))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let hello: Hello = decode(&hello).map_err(|e| format!("handshake: {e}"))?;
    let refuse = if hello.magic != MAGIC || hello.version != VERSION {
        Some(format!(
            "node {} speaks protocol {:#x}/{}, expected {MAGIC:#x}/{VERSION}",
            hello.node_id, hello.magic, hello.version
        ))
    } else if hello.cluster_id != shared.cluster_id {
        Some(format!(
            "node {} belongs to cluster {:?}, this is cluster {:?}",
            hello.node_id, hello.cluster_id, shared.cluster_id
        ))
    } else {
        shared
            .check_identity(hello.node_id, hello.directory_id)
            .err()
    };
    if let Some(reason) = refuse {
        shared.refusal(format!("refused a connection: {reason}"));
        let reply = encode(&HelloReply::Refused {
            reason: reason.clone(),
        })
        .map_err(|e| e.to_string())?;
        let _ = with_timeout(limits.io_timeout, write_frame(&mut stream, &reply, max)).await;
        return Ok(()); // already logged
    }
    shared
        .seen_dirs
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(hello.node_id, hello.directory_id);
    let reply = encode(&HelloReply::Accepted {
        node_id: shared.node_id,
        directory_id: shared.directory_id,
    })
    .map_err(|e| e.to_string())?;
    with_timeout(limits.io_timeout, write_frame(&mut stream, &reply, max))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    loop {
        let frame =
            match tokio::time::timeout(limits.idle_timeout, read_frame(&mut stream, max)).await {
                Err(_) => return Ok(()), // idle
                Ok(Err(FrameError::Io(e))) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return Ok(())
                }
                Ok(Err(e)) => return Err(format!("node {}: {e}", hello.node_id)),
                Ok(Ok(f)) => f,
            };
        let reply = match hello.channel {
            Channel::Raft => {
                let req: RaftRequest =
                    decode(&frame).map_err(|e| format!("node {}: {e}", hello.node_id))?;
                encode(&handle_raft(shared, &hello, req).await)
            }
            Channel::App => {
                let req: AppRequest =
                    decode(&frame).map_err(|e| format!("node {}: {e}", hello.node_id))?;
                encode(&handle_app(shared, req).await)
            }
        }
        .map_err(|e| e.to_string())?;
        with_timeout(limits.io_timeout, write_frame(&mut stream, &reply, max))
            .await
            .map_err(|e| format!("node {}: writing a reply: {e}", hello.node_id))?;
    }
}

async fn handle_raft(shared: &Arc<Shared>, hello: &Hello, req: RaftRequest) -> RaftReply {
    let Some(raft) = shared.raft.get() else {
        return RaftReply::Error("raft is starting".into());
    };
    match req {
        RaftRequest::Append(r) => match raft.append_entries(r).await {
            Ok(r) => RaftReply::Append(r),
            Err(e) => RaftReply::Error(e.to_string()),
        },
        RaftRequest::Vote(r) => match raft.vote(r).await {
            Ok(r) => RaftReply::Vote(r),
            Err(e) => RaftReply::Error(e.to_string()),
        },
        RaftRequest::PreVote(r) => match raft.pre_vote(r).await {
            Ok(r) => RaftReply::Vote(r),
            Err(e) => RaftReply::Error(e.to_string()),
        },
        RaftRequest::Snapshot { vote, meta, data } => {
            // openraft asserts (panics its core) on these two inconsistencies; a peer's bad
            // snapshot must be an error instead.
            if let Some(last) = meta.last_log_id {
                if last.leader_id.term > vote.leader_id.term {
                    return RaftReply::Error(format!(
                        "snapshot up to {last} lies beyond its leader's vote {vote}"
                    ));
                }
                let committed = raft.metrics().borrow_watched().local_committed;
                if let Some(c) = committed {
                    if last > c && last.index <= c.index {
                        return RaftReply::Error(format!(
                            "snapshot up to {last} contradicts the locally committed {c}"
                        ));
                    }
                }
            }
            let snapshot = SnapshotOf::<TypeConfig, Bytes> {
                meta,
                snapshot: data,
            };
            match raft.install_full_snapshot(vote, snapshot).await {
                Ok(r) => RaftReply::Snapshot(r),
                Err(e) => RaftReply::Error(e.to_string()),
            }
        }
        RaftRequest::Join { addr } => crate::node::handle_join(shared, raft, hello, addr).await,
    }
}

async fn handle_app(shared: &Arc<Shared>, req: AppRequest) -> AppReply {
    if req.leader_only {
        let is_leader = shared
            .raft
            .get()
            .is_some_and(|r| r.metrics().borrow_watched().current_leader == Some(shared.node_id));
        if !is_leader {
            return AppReply::NotLeader(shared.leader_hint());
        }
    }
    let handler = shared
        .app_handler
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let Some(handler) = handler else {
        return AppReply::NoHandler;
    };
    match tokio::time::timeout(shared.limits.request_timeout, handler(req.body)).await {
        Ok(b) => AppReply::Ok(b),
        Err(_) => AppReply::Error("the handler timed out".into()),
    }
}

/// Creates one [`PeerNetwork`] per target for openraft.
pub(crate) struct NetworkFactory {
    pub shared: Arc<Shared>,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: NodeId, node: &PeerNode) -> PeerNetwork {
        PeerNetwork {
            shared: self.shared.clone(),
            target,
            addr: node.addr.clone(),
            conn: None,
        }
    }
}

/// openraft's client to one peer: one connection, reopened after any failure.
pub(crate) struct PeerNetwork {
    shared: Arc<Shared>,
    target: NodeId,
    addr: String,
    conn: Option<Conn>,
}

enum CallError {
    Unreachable(String),
    Network(String),
}

impl PeerNetwork {
    /// One RPC, connection set-up included, bounded by `ttl`.
    async fn call(&mut self, req: &RaftRequest, ttl: Duration) -> Result<RaftReply, CallError> {
        match tokio::time::timeout(ttl, self.call_inner(req, ttl)).await {
            Ok(r) => r,
            Err(_) => {
                self.conn = None;
                Err(CallError::Network(format!(
                    "node {}: no answer within {ttl:?}",
                    self.target
                )))
            }
        }
    }

    async fn call_inner(
        &mut self,
        req: &RaftRequest,
        ttl: Duration,
    ) -> Result<RaftReply, CallError> {
        if self.conn.is_none() {
            let c = Conn::open(&self.shared, &self.addr, Some(self.target), Channel::Raft)
                .await
                .map_err(CallError::Unreachable)?;
            self.conn = Some(c);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(CallError::Unreachable("no connection".into()));
        };
        match conn.call::<_, RaftReply>(req, ttl).await {
            Ok(RaftReply::Error(e)) => {
                Err(CallError::Network(format!("node {}: {e}", self.target)))
            }
            Ok(r) => Ok(r),
            Err(e) => {
                self.conn = None;
                Err(CallError::Network(format!("node {}: {e}", self.target)))
            }
        }
    }
}

fn rpc_err(e: CallError) -> RPCError<TypeConfig> {
    match e {
        CallError::Unreachable(m) => RPCError::Unreachable(Unreachable::from_string(m)),
        CallError::Network(m) => RPCError::Network(NetworkError::from_string(m)),
    }
}

fn unexpected(what: &str) -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::from_string(format!(
        "unexpected reply to {what}"
    )))
}

impl RaftNetworkV2<TypeConfig> for PeerNetwork {
    type SnapshotData = Bytes;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self
            .call(&RaftRequest::Append(rpc), option.hard_ttl())
            .await
        {
            Ok(RaftReply::Append(r)) => Ok(r),
            Ok(_) => Err(unexpected("append")),
            Err(e) => Err(rpc_err(e)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.call(&RaftRequest::Vote(rpc), option.hard_ttl()).await {
            Ok(RaftReply::Vote(r)) => Ok(r),
            Ok(_) => Err(unexpected("vote")),
            Err(e) => Err(rpc_err(e)),
        }
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self
            .call(&RaftRequest::PreVote(rpc), option.hard_ttl())
            .await
        {
            Ok(RaftReply::Vote(r)) => Ok(r),
            Ok(_) => Err(unexpected("pre-vote")),
            Err(e) => Err(rpc_err(e)),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<TypeConfig>,
        snapshot: SnapshotOf<TypeConfig, Bytes>,
        cancel: impl std::future::Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let req = RaftRequest::Snapshot {
            vote,
            meta: snapshot.meta,
            data: snapshot.snapshot,
        };
        let ttl = option.hard_ttl().max(self.shared.limits.io_timeout);
        let res = tokio::select! {
            r = self.call(&req, ttl) => r,
            closed = cancel => {
                self.conn = None;
                return Err(StreamingError::Closed(closed));
            }
        };
        match res {
            Ok(RaftReply::Snapshot(r)) => Ok(r),
            Ok(_) => Err(StreamingError::Network(NetworkError::from_string(
                "unexpected reply to snapshot",
            ))),
            Err(CallError::Unreachable(m)) => {
                Err(StreamingError::Unreachable(Unreachable::from_string(m)))
            }
            Err(CallError::Network(m)) => {
                Err(StreamingError::Network(NetworkError::from_string(m)))
            }
        }
    }
}

/// A client of the application channel (broker → controller requests).
#[derive(Clone)]
pub struct AppClient {
    pub(crate) shared: Arc<Shared>,
}

impl AppClient {
    /// Send `request` to node `node_id`'s handler and wait for its answer, at most `timeout`.
    pub async fn send(
        &self,
        node_id: NodeId,
        request: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, AppError> {
        tokio::time::timeout(timeout, self.send_once(node_id, request, false, timeout))
            .await
            .unwrap_or(Err(AppError::Timeout))
    }

    /// Send `request` to the leader's handler, following NotLeader hints and trying the voters
    /// in turn, until `timeout`.
    pub async fn send_to_leader(
        &self,
        request: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, AppError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last = AppError::NotLeader { leader: None };
        let mut next_voter = 0usize;
        let mut hint: Option<NodeId> = None;
        loop {
            let target = hint
                .take()
                .or_else(|| self.shared.leader_hint().map(|(id, _)| id));
            let target = match target {
                Some(t) => t,
                None => {
                    let voters = self.voter_list();
                    if voters.is_empty() {
                        return Err(AppError::NotLeader { leader: None });
                    }
                    next_voter += 1;
                    voters[next_voter % voters.len()]
                }
            };
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(if last == (AppError::NotLeader { leader: None }) {
                    AppError::Timeout
                } else {
                    last
                });
            }
            let left = deadline - now;
            let r = tokio::time::timeout(left, self.send_once(target, request.clone(), true, left))
                .await
                .unwrap_or(Err(AppError::Timeout));
            match r {
                Ok(b) => return Ok(b),
                Err(AppError::NotLeader { leader }) => {
                    hint = leader
                        .as_ref()
                        .map(|(id, _)| *id)
                        .filter(|id| *id != target);
                    last = AppError::NotLeader { leader };
                }
                Err(AppError::Timeout) => return Err(AppError::Timeout),
                Err(e) => last = e,
            }
            if hint.is_none() {
                next_voter += 1;
                tokio::time::sleep(
                    Duration::from_millis(50)
                        .min(deadline.saturating_duration_since(tokio::time::Instant::now())),
                )
                .await;
            }
        }
    }

    fn voter_list(&self) -> Vec<NodeId> {
        let v = self
            .shared
            .voter_ids
            .read()
            .unwrap_or_else(|p| p.into_inner());
        if v.is_empty() {
            self.shared.static_voters.keys().copied().collect()
        } else {
            v.iter().copied().collect()
        }
    }

    async fn send_once(
        &self,
        node_id: NodeId,
        body: Bytes,
        leader_only: bool,
        timeout: Duration,
    ) -> Result<Bytes, AppError> {
        if node_id == self.shared.node_id {
            // Local: no network hop.
            let reply = handle_app(&self.shared, AppRequest { leader_only, body }).await;
            return app_result(node_id, reply);
        }
        let addr = self
            .shared
            .addr_of(node_id)
            .ok_or(AppError::UnknownNode(node_id))?;
        let mut conn = Conn::open(&self.shared, &addr, Some(node_id), Channel::App)
            .await
            .map_err(AppError::Unreachable)?;
        let reply: AppReply = conn
            .call(&AppRequest { leader_only, body }, timeout)
            .await
            .map_err(|e| match e {
                FrameError::Timeout => AppError::Timeout,
                e => AppError::Unreachable(e.to_string()),
            })?;
        app_result(node_id, reply)
    }
}

fn app_result(node_id: NodeId, reply: AppReply) -> Result<Bytes, AppError> {
    match reply {
        AppReply::Ok(b) => Ok(b),
        AppReply::NotLeader(leader) => Err(AppError::NotLeader { leader }),
        AppReply::NoHandler => Err(AppError::NoHandler(node_id)),
        AppReply::Error(e) => Err(AppError::Remote(e)),
    }
}

/// A UUID as Kafka prints it (and `skein cluster` takes it): URL-safe base64, no padding.
/// The same encoding as `skein_protocol::Uuid`'s `Display`, repeated here because this crate
/// stays independent of the Kafka codec.
pub fn kafka_uuid(u: &Uuid) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = u.as_bytes();
    let mut out = String::with_capacity(22);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod kafka_uuid_tests {
    #[test]
    fn prints_like_kafka() {
        // Kafka's Uuid.toString() of 16 zero bytes and of 0x00..0x0f.
        assert_eq!(
            super::kafka_uuid(&uuid::Uuid::nil()),
            "AAAAAAAAAAAAAAAAAAAAAA"
        );
        let u = uuid::Uuid::from_bytes([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]);
        assert_eq!(super::kafka_uuid(&u), "AAECAwQFBgcICQoLDA0ODw");
    }
}
