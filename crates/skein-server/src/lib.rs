//! The network edge: the Kafka listener (framing, limits, pipelining) and the admin HTTP
//! endpoint. Business rules live in `skein-broker`; this crate moves bytes.
//!
//! Each connection has a reader that decodes requests in arrival order and hands them to
//! the broker one at a time (so appends from one producer keep their order), and a writer
//! that sends responses in the same order. Handlers that must wait (acks=all fsync, long
//! polls) return a future; the writer awaits those in order while the reader goes on, so a
//! connection keeps up to `max.inflight.requests.per.connection` requests in flight.
//!
//! Request frames are read into buffers that grow with the bytes received, under a
//! broker-wide budget (`queued.max.request.bytes`, see [`frame`]): past it, connections stop
//! reading instead of allocating.
//!
//! Every entry of `listeners` but the controller's is bound here, each connection tagged with
//! its listener, protocol, peer and principal (`skein_broker::listener::ConnectionContext`).
//! SSL and SASL_SSL listeners first run a TLS handshake ([`tls`]) under a deadline; a failed
//! or late handshake closes that connection alone. Connection limits (per IP, per listener,
//! broker-wide, creation rates) are applied as connections are accepted ([`limits`]). Over TLS, fetched records are copied
//! from the segment files (no `sendfile(2)`: the bytes must be encrypted).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use skein_broker::api::{unsupported_version_response, FetchReply, HeldFiles};
use skein_broker::listener::{ConnectionContext, KafkaPrincipal, ListenerSettings};
use skein_broker::quota::ChannelMute;
use skein_broker::sasl::{Action as SaslAction, SaslConnection, SaslSettings};
use skein_broker::{supported_versions, Broker, Reply, RequestContext};
use skein_log::FileRange;
use skein_protocol::{ApiKey, ResponseBody};
use std::time::Instant;
use tokio::io::{AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

mod frame;
mod http;
pub mod limits;
pub mod principal;
pub mod tls;

use frame::RequestBudget;

/// One bound Kafka listener.
struct Bound {
    settings: ListenerSettings,
    socket: TcpListener,
    /// The TLS configuration of an SSL or SASL_SSL listener.
    tls: Option<Arc<tls::TlsListener>>,
    /// SIGHUP, for a TLS listener: taken when binding, so a SIGHUP after the start line
    /// reloads certificates instead of ending the process.
    hangup: Option<tokio::signal::unix::Signal>,
    /// Its SASL settings, if its protocol is SASL_PLAINTEXT or SASL_SSL.
    sasl: Option<Arc<SaslSettings>>,
    /// Its connection limits (and the broker-wide ones).
    limits: limits::ListenerLimits,
}

/// The bound listeners.
pub struct Server {
    broker: Arc<Broker>,
    kafka: Vec<Bound>,
    http: TcpListener,
    /// The controller listener's TLS server side, to reload its certificates.
    controller_tls: Option<Arc<tls::TlsListener>>,
}

impl Server {
    /// Binds the Kafka listeners (every client entry of `listeners`) and the HTTP one, and
    /// tells the broker the addresses it bound.
    pub async fn bind(broker: Arc<Broker>) -> std::io::Result<Server> {
        let connection_limits = Arc::new(
            limits::ConnectionLimits::new(&broker.config)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?,
        );
        let mut kafka = Vec::new();
        for l in &broker.config.listeners {
            let tls = if l.protocol.uses_tls() {
                Some(Arc::new(
                    tls::TlsListener::new(&broker.config, &l.name)
                        .map_err(std::io::Error::other)?,
                ))
            } else {
                None
            };
            let socket = TcpListener::bind(l.bind).await.map_err(|e| {
                std::io::Error::new(e.kind(), format!("listener {} ({}): {e}", l.name, l.bind))
            })?;
            let hangup = match tls {
                Some(_) => {
                    use tokio::signal::unix::{signal, SignalKind};
                    Some(signal(SignalKind::hangup())?)
                }
                None => None,
            };
            let sasl = if l.protocol.uses_sasl() {
                let settings = SaslSettings::for_listener(&broker.config.explicit, &l.name)
                    .map_err(|e| {
                        std::io::Error::new(
                            std::io::ErrorKind::InvalidInput,
                            format!("listener {}: {e}", l.name),
                        )
                    })?;
                Some(Arc::new(settings))
            } else {
                None
            };
            kafka.push(Bound {
                settings: l.clone(),
                socket,
                tls,
                hangup,
                sasl,
                limits: limits::ListenerLimits::new(
                    connection_limits.clone(),
                    &broker.config,
                    &l.name,
                ),
            });
        }
        let controller_tls = outbound_tls(&broker)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let http = TcpListener::bind(broker.config.http_listener).await?;
        let bound: Vec<(String, SocketAddr)> = kafka
            .iter()
            .map(|b| Ok((b.settings.name.clone(), b.socket.local_addr()?)))
            .collect::<std::io::Result<_>>()?;
        broker.set_bound(&bound);
        Ok(Server {
            broker,
            kafka,
            http,
            controller_tls,
        })
    }

    /// The inter-broker listener's bound address (the first listener).
    pub fn kafka_addr(&self) -> SocketAddr {
        self.kafka[0]
            .socket
            .local_addr()
            .expect("bound listener has an address")
    }

    /// Every Kafka listener's name and bound address.
    pub fn listener_addrs(&self) -> Vec<(String, SocketAddr)> {
        self.kafka
            .iter()
            .filter_map(|b| Some((b.settings.name.clone(), b.socket.local_addr().ok()?)))
            .collect()
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http
            .local_addr()
            .expect("bound listener has an address")
    }

    /// Serves until `shutdown` completes.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Server {
            broker,
            kafka,
            http,
            controller_tls,
        } = self;
        let budget = RequestBudget::new(
            broker.config.queued_max_request_bytes,
            broker.metrics().request_bytes_queued.clone(),
        );
        let http_task = tokio::spawn(http::serve(http, broker.clone()));
        // One accept loop per listener; dropping the set at shutdown stops them all.
        let mut accept = tokio::task::JoinSet::new();
        if let Some(tls) = controller_tls {
            accept.spawn(watch_certificates(tls, None));
        }
        for mut bound in kafka {
            if let Some(tls) = &bound.tls {
                accept.spawn(watch_certificates(tls.clone(), bound.hangup.take()));
            }
            accept.spawn(accept_loop(broker.clone(), bound, budget.clone()));
        }
        shutdown.await;
        accept.abort_all();
        http_task.abort();
    }
}

/// Installs in the broker the TLS of its outbound links, as the listeners' protocols ask: the
/// client for the inter-broker listener (SSL, SASL_SSL; peers and replica fetchers) and both
/// sides of the controller listener (SSL). Returns the controller listener's server side.
fn outbound_tls(broker: &Broker) -> Result<Option<Arc<tls::TlsListener>>, String> {
    let config = &broker.config;
    let in_cluster = !config.cluster.voters.is_empty();
    if let Some(l) = config.listeners.first() {
        if in_cluster && l.protocol.uses_tls() {
            let client = tls::TlsClient::new(config, &l.name)
                .map_err(|e| format!("inter-broker listener: {e}"))?;
            broker.set_inter_broker_tls(Arc::new(client));
        }
    }
    // SSL and SASL_SSL (SASL itself is wrapped around this TLS by the metadata quorum).
    if !in_cluster || !config.controller_protocol.uses_tls() {
        return Ok(None);
    }
    let name = &config.controller_listener_name;
    let client =
        tls::TlsClient::new(config, name).map_err(|e| format!("controller listener: {e}"))?;
    let server = match tls::TlsListener::new(config, name) {
        Ok(s) => Some(Arc::new(s)),
        // A broker-only node only dials out.
        Err(_) if !config.cluster.roles.controller => None,
        Err(e) => return Err(format!("controller listener: {e}")),
    };
    if let Some(s) = &server {
        // On SASL_SSL the nodes authenticate with SASL instead.
        if s.client_auth() != tls::ClientAuth::Required && !config.controller_protocol.uses_sasl() {
            tracing::warn!(
                listener = %name,
                "the controller listener is SSL without ssl.client.auth=required: any client that trusts its certificate can talk to the quorum; set listener.name.{}.ssl.client.auth=required (mutual TLS) to authenticate the nodes",
                name.to_ascii_lowercase()
            );
        }
    }
    broker.set_controller_tls(Arc::new(tls::ControllerTls {
        server: server.clone(),
        client,
    }));
    Ok(server)
}

/// Re-reads a TLS listener's certificate files when they change (polled) or on SIGHUP.
async fn watch_certificates(
    tls: Arc<tls::TlsListener>,
    mut hangup: Option<tokio::signal::unix::Signal>,
) {
    let mut tick = tokio::time::interval(tls.reload_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        let force = tokio::select! {
            _ = tick.tick() => false,
            Some(()) = async {
                match hangup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            } => true,
        };
        let tls = tls.clone();
        // File reads and key parsing: off the async threads.
        let _ = tokio::task::spawn_blocking(move || tls.reload(force)).await;
    }
}

/// Runs a TLS handshake under the listener's deadline and sets the connection's principal
/// from the client certificate.
async fn handshake(
    tls: &tls::TlsListener,
    stream: TcpStream,
    conn: &mut ConnectionContext,
) -> Result<Conn, ConnectionError> {
    let accepted = tokio::time::timeout(tls.handshake_timeout, tls.acceptor().accept(stream))
        .await
        .map_err(|_| {
            ConnectionError::Handshake(
                "no TLS handshake within skein.ssl.handshake.timeout.ms".into(),
            )
        })?
        .map_err(|e| ConnectionError::Handshake(e.to_string()))?;
    let (_, session) = accepted.get_ref();
    conn.principal = tls
        .principal(session.peer_certificates())
        .map_err(ConnectionError::Handshake)?;
    tracing::debug!(
        peer = %conn.peer,
        listener = %conn.listener,
        principal = %conn.principal,
        "TLS handshake done"
    );
    Ok(Conn::Tls(Box::new(accepted)))
}

/// A connection's byte stream: plain TCP or a TLS session over it.
enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

type TlsStream = tokio_rustls::server::TlsStream<TcpStream>;

/// The read side of a [`Conn`].
enum Reader {
    Plain(OwnedReadHalf),
    Tls(tokio::io::ReadHalf<TlsStream>),
}

/// The write side of a [`Conn`].
enum Writer {
    Plain(OwnedWriteHalf),
    Tls(tokio::io::WriteHalf<TlsStream>),
}

impl Conn {
    fn split(self) -> (Reader, Writer) {
        match self {
            Conn::Plain(s) => {
                let (r, w) = s.into_split();
                (Reader::Plain(r), Writer::Plain(w))
            }
            Conn::Tls(s) => {
                let (r, w) = tokio::io::split(*s);
                (Reader::Tls(r), Writer::Tls(w))
            }
        }
    }
}

impl Reader {
    async fn read_frame(
        &mut self,
        max: usize,
        budget: &RequestBudget,
        idle: std::time::Duration,
    ) -> Result<Option<frame::Frame>, ConnectionError> {
        match self {
            Reader::Plain(r) => frame::read_frame(r.as_ref(), max, budget, idle).await,
            Reader::Tls(r) => frame::read_frame_io(r, max, budget, idle).await,
        }
    }
}

impl Writer {
    /// Writes (and, over TLS, flushes) one response's bytes.
    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Writer::Plain(w) => w.write_all(bytes).await,
            Writer::Tls(w) => {
                w.write_all(bytes).await?;
                w.flush().await
            }
        }
    }

    async fn write_part(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Writer::Plain(w) => w.write_all(bytes).await,
            Writer::Tls(w) => w.write_all(bytes).await,
        }
    }

    /// Sends a segment file range: `sendfile(2)` in the clear, copied through TLS.
    async fn send_range(&mut self, range: &FileRange) -> std::io::Result<()> {
        match self {
            Writer::Plain(w) => send_file(w.as_ref(), range).await,
            Writer::Tls(w) => copy_range(w, range).await,
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Writer::Plain(_) => Ok(()),
            Writer::Tls(w) => w.flush().await,
        }
    }

    async fn shutdown(&mut self) -> std::io::Result<()> {
        match self {
            Writer::Plain(w) => w.shutdown().await,
            Writer::Tls(w) => w.shutdown().await,
        }
    }
}

/// Copies a segment file range into a stream that must see the bytes (TLS), 64 KiB at a
/// time. The reads are `pread`s of data just written (in the page cache).
async fn copy_range<W: AsyncWrite + Unpin>(wr: &mut W, range: &FileRange) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; range.len.min(64 * 1024)];
    let mut at = range.position;
    let end = range.position + range.len as u64;
    while at < end {
        let n = ((end - at) as usize).min(buf.len());
        range.file.read_exact_at(&mut buf[..n], at)?;
        wr.write_all(&buf[..n]).await?;
        at += n as u64;
    }
    Ok(())
}

/// Accepts the connections of one listener, under the connection limits ([`limits`]).
async fn accept_loop(broker: Arc<Broker>, bound: Bound, budget: RequestBudget) {
    let listener: Arc<ListenerSettings> = Arc::new(bound.settings);
    let tls = bound.tls;
    let sasl = bound.sasl;
    let limits = bound.limits;
    let metrics = broker.metrics();
    let labels = skein_broker::metrics::ListenerLabels {
        listener: listener.name.clone(),
        protocol: listener.protocol.name().to_string(),
    };
    let open_gauge = metrics.listener_connections.get_or_create(&labels).clone();
    let throttled = metrics
        .connection_creation_throttled
        .get_or_create(&labels)
        .clone();
    let rate_log = limits::RareLog::new();
    // A connection refused (closed unserved) by the limit named `limit`, in the metrics.
    let count_refused = |limit: &str| {
        metrics.connections_refused.inc();
        metrics
            .listener_connections_refused
            .get_or_create(&skein_broker::metrics::RefusedLabels {
                listener: listener.name.clone(),
                limit: limit.to_string(),
            })
            .inc();
    };
    loop {
        let (stream, peer) = match bound.socket.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of file descriptors and similar: back off instead of spinning.
                tracing::warn!(listener = %listener.name, "accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        // max.connection.creation.rate: past it, this connection waits and the next ones
        // wait in the backlog (Kafka's throttling of the acceptor).
        let delay = limits.creation_delay();
        if !delay.is_zero() {
            throttled.inc();
            rate_log.log(Instant::now(), |suppressed| {
                tracing::info!(
                    listener = %listener.name,
                    delay_ms = delay.as_millis() as u64,
                    suppressed,
                    "connection creation throttled (max.connection.creation.rate)"
                )
            });
            tokio::time::sleep(delay).await;
        }
        // KIP-612: an address past its connection_creation_rate quota is not served; as in
        // Kafka (on every listener) its connection is closed when the throttle time is over.
        {
            let ip = limits::canonical(peer.ip());
            let ms = broker.ip_connection_throttle(ip);
            if ms > 0 {
                count_refused("connection_creation_rate");
                limits
                    .broker
                    .throttled_ip_log
                    .log(Instant::now(), |suppressed| {
                        tracing::warn!(
                            %peer,
                            listener = %listener.name,
                            throttle_ms = ms,
                            suppressed,
                            "connection refused: {ip} is past its connection_creation_rate quota"
                        )
                    });
                match limits.broker.throttled_held.clone().try_acquire_owned() {
                    Ok(permit) => {
                        tokio::spawn(async move {
                            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                            drop(stream);
                            drop(permit);
                        });
                    }
                    Err(_) => drop(stream),
                }
                continue;
            }
        }
        let slot = match limits.admit(peer.ip(), open_gauge.clone(), metrics.connections.clone()) {
            Ok(slot) => slot,
            Err(refused) => {
                count_refused(refused.setting());
                let log = match refused {
                    limits::Refused::PerIp(_) => &limits.broker.refused_ip_log,
                    _ => &limits.broker.refused_max_log,
                };
                log.log(Instant::now(), |suppressed| match refused {
                    limits::Refused::PerIp(limit) => tracing::warn!(
                        %peer,
                        listener = %listener.name,
                        limit,
                        suppressed,
                        "connection refused: too many connections from {} (max.connections.per.ip)",
                        peer.ip()
                    ),
                    limits::Refused::Listener(limit) => tracing::warn!(
                        %peer,
                        listener = %listener.name,
                        limit,
                        suppressed,
                        "connection refused: listener.name.{}.max.connections reached",
                        listener.name.to_ascii_lowercase()
                    ),
                    limits::Refused::Broker(limit) => tracing::warn!(
                        %peer,
                        listener = %listener.name,
                        limit,
                        suppressed,
                        "connection refused: max.connections reached"
                    ),
                });
                drop(stream);
                continue;
            }
        };
        let broker = broker.clone();
        let budget = budget.clone();
        let listener = listener.clone();
        let tls = tls.clone();
        let sasl = sasl.clone();
        tokio::spawn(async move {
            // Held to the end of the task, whatever ends it: gives back the counts.
            let _slot = slot;
            let _ = stream.set_nodelay(true);
            let mut conn = ConnectionContext::new(&listener.name, listener.protocol, peer);
            let result = match &tls {
                None => {
                    serve_connection(broker.clone(), Conn::Plain(stream), conn, budget, sasl).await
                }
                Some(tls) => {
                    let ssl_auth =
                        listener.protocol == skein_broker::listener::SecurityProtocol::Ssl;
                    match handshake(tls, stream, &mut conn).await {
                        Ok(stream) => {
                            if ssl_auth {
                                broker.metrics().authentication(&listener.name, "SSL", true);
                            }
                            serve_connection(broker.clone(), stream, conn, budget, sasl).await
                        }
                        Err(e) => {
                            let m = broker.metrics();
                            m.tls_handshake_failures
                                .get_or_create(&skein_broker::metrics::ListenerLabels {
                                    listener: listener.name.clone(),
                                    protocol: listener.protocol.name().to_string(),
                                })
                                .inc();
                            if ssl_auth {
                                m.authentication(&listener.name, "SSL", false);
                            }
                            Err(e)
                        }
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, listener = %listener.name, "connection closed: {e}");
            }
        });
    }
}

/// Why a connection was closed.
#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame size {size} is outside 0..={max} (socket.request.max.bytes)")]
    FrameSize { size: i64, max: usize },
    #[error("undecodable request: {0}")]
    Decode(String),
    #[error("unsupported api key {api_key} version {api_version}")]
    Unsupported { api_key: i16, api_version: i16 },
    #[error("could not encode the response")]
    Encode,
    #[error("idle for longer than connections.max.idle.ms")]
    Idle,
    #[error("TLS: {0}")]
    Handshake(String),
    #[error("SASL: {0}")]
    Sasl(String),
}

/// A response slot in the connection's ordered queue.
enum Pending {
    Ready(BytesMut),
    Waiting {
        correlation_id: i32,
        api_key: ApiKey,
        version: i16,
        started: Instant,
        task: JoinHandle<ResponseBody>,
    },
    /// A fetch, whose records may be sent straight from the segment files.
    Fetch {
        correlation_id: i32,
        version: i16,
        started: Instant,
        task: JoinHandle<FetchReply>,
    },
}

/// A response ready to write: encoded bytes, possibly with file ranges to insert (and the
/// guard that counts their files until they are sent).
enum Outgoing {
    Bytes(BytesMut),
    Spliced(skein_protocol::SplicedFrame, Vec<FileRange>, HeldFiles),
}

/// Encodes a fetch reply, leaving its file ranges out of the frame to be sent with
/// `sendfile(2)`.
fn encode_fetch(correlation_id: i32, version: i16, reply: FetchReply) -> Option<Outgoing> {
    if reply.ranges.is_empty() {
        return encode(correlation_id, ApiKey::Fetch, version, &reply.body).map(Outgoing::Bytes);
    }
    let lengths = reply.splice_lengths();
    let (body, ranges, held) = reply.into_parts();
    match skein_protocol::encode_response_spliced(
        correlation_id,
        ApiKey::Fetch,
        version,
        &body,
        lengths,
    ) {
        Ok(frame) => Some(Outgoing::Spliced(frame, ranges, held)),
        Err(e) => {
            tracing::error!(version, "could not encode a fetch response: {e}");
            None
        }
    }
}

/// Writes a spliced frame: the encoded parts with `write`, the file ranges with `sendfile`.
async fn write_spliced(
    wr: &mut Writer,
    frame: skein_protocol::SplicedFrame,
    ranges: Vec<FileRange>,
) -> std::io::Result<()> {
    let mut ranges = ranges.into_iter().filter(|r| r.len > 0);
    let mut at = 0;
    for (position, len) in frame.splices {
        wr.write_part(&frame.frame[at..position]).await?;
        at = position;
        let mut sent = 0;
        while sent < len {
            let Some(range) = ranges.next() else {
                return Err(std::io::Error::other(
                    "fetch ranges shorter than the frame says",
                ));
            };
            wr.send_range(&range).await?;
            sent += range.len;
        }
        if sent != len {
            return Err(std::io::Error::other("fetch ranges do not match the frame"));
        }
    }
    wr.write_part(&frame.frame[at..]).await?;
    wr.flush().await
}

/// Sends a file range to the socket with `sendfile(2)`: the bytes go from the page cache to
/// the socket without a copy through user space.
async fn send_file(stream: &TcpStream, range: &FileRange) -> std::io::Result<()> {
    let mut offset = range.position;
    let end = range.position + range.len as u64;
    while offset < end {
        stream.writable().await?;
        let want = (end - offset).min(1 << 30) as usize;
        let result = stream.try_io(Interest::WRITABLE, || {
            rustix::fs::sendfile(stream, &*range.file, Some(&mut offset), want)
                .map_err(std::io::Error::from)
        });
        match result {
            // The file is shorter than the range: the frame cannot be completed.
            Ok(0) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "segment file ended inside a fetch range",
                ))
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn encode(
    correlation_id: i32,
    api_key: ApiKey,
    version: i16,
    body: &ResponseBody,
) -> Option<BytesMut> {
    match skein_protocol::encode_response(correlation_id, api_key, version, body) {
        Ok(b) => Some(b),
        Err(e) => {
            tracing::error!(?api_key, version, "could not encode a response: {e}");
            None
        }
    }
}

async fn write_responses(
    broker: Arc<Broker>,
    mut wr: Writer,
    mut rx: mpsc::Receiver<Pending>,
) -> std::io::Result<()> {
    while let Some(p) = rx.recv().await {
        let out = match p {
            Pending::Ready(b) => Some(Outgoing::Bytes(b)),
            Pending::Waiting {
                correlation_id,
                api_key,
                version,
                started,
                task,
            } => match task.await {
                Ok(body) => {
                    let seconds = started.elapsed().as_secs_f64();
                    broker
                        .metrics()
                        .observe_response(api_key.name(), seconds, Some(&body));
                    encode(correlation_id, api_key, version, &body).map(Outgoing::Bytes)
                }
                Err(e) => {
                    tracing::error!(?api_key, "request task failed: {e}");
                    None
                }
            },
            Pending::Fetch {
                correlation_id,
                version,
                started,
                task,
            } => match task.await {
                Ok(reply) => {
                    let seconds = started.elapsed().as_secs_f64();
                    broker.metrics().observe_response(
                        ApiKey::Fetch.name(),
                        seconds,
                        Some(&reply.body),
                    );
                    encode_fetch(correlation_id, version, reply)
                }
                Err(e) => {
                    tracing::error!("fetch task failed: {e}");
                    None
                }
            },
        };
        match out {
            Some(Outgoing::Bytes(b)) => wr.write_all(&b).await?,
            Some(Outgoing::Spliced(frame, ranges, held)) => {
                write_spliced(&mut wr, frame, ranges).await?;
                drop(held);
            }
            // A response we cannot produce leaves the client waiting: close instead.
            None => return Ok(()),
        }
    }
    wr.shutdown().await
}

async fn serve_connection(
    broker: Arc<Broker>,
    stream: Conn,
    conn: ConnectionContext,
    budget: RequestBudget,
    sasl: Option<Arc<SaslSettings>>,
) -> Result<(), ConnectionError> {
    let mut conn = Arc::new(conn);
    let (mut rd, wr) = stream.split();
    let (tx, rx) = mpsc::channel::<Pending>(broker.config.max_inflight_per_connection);
    let writer = tokio::spawn(write_responses(broker.clone(), wr, rx));
    let max = broker.config.socket_request_max_bytes;
    let idle = std::time::Duration::from_millis(broker.config.connections_max_idle_ms);
    let mut sasl = sasl.map(SaslConnection::new);
    let mute = Arc::new(ChannelMute::default());
    let result = async {
        loop {
            // While a SASL exchange is due: smaller frames, and a deadline for the exchange.
            let limit = sasl.as_ref().map_or(max, |s| s.max_frame(max));
            let read = rd.read_frame(limit, &budget, idle);
            let read =
                match sasl.as_ref().filter(|s| s.authenticating()) {
                    Some(s) => {
                        let deadline = tokio::time::Instant::from_std(s.deadline());
                        match tokio::time::timeout_at(deadline, read).await {
                            Ok(r) => r,
                            Err(_) => return Err(ConnectionError::Sasl(
                                "authentication not complete within skein.sasl.exchange.timeout.ms"
                                    .into(),
                            )),
                        }
                    }
                    None => read.await,
                };
            let Some(frame::Frame { bytes, held }) = read? else {
                return Ok(());
            };
            // A throttled client (KIP-219): its response went out at once; nothing more of
            // its requests is handled until the throttle time is over.
            if let Some(until) = mute.until() {
                tokio::time::sleep_until(tokio::time::Instant::from_std(until)).await;
            }
            if let Some(s) = sasl.as_mut() {
                match s.on_frame(&broker, &bytes, Instant::now()) {
                    SaslAction::Pass => {}
                    SaslAction::Reply(b) => {
                        drop(held);
                        // Authenticated (or re-authenticated): requests carry the principal.
                        if let Some(user) = s.user() {
                            if conn.principal.name != user {
                                let mut c = (*conn).clone();
                                c.principal = KafkaPrincipal::user(user);
                                conn = Arc::new(c);
                            }
                        }
                        if tx.send(Pending::Ready(b)).await.is_err() {
                            return Ok(());
                        }
                        continue;
                    }
                    SaslAction::Close {
                        reply,
                        delay,
                        reason,
                    } => {
                        drop(held);
                        if !delay.is_zero() {
                            tokio::time::sleep(delay).await;
                        }
                        if let Some(b) = reply {
                            let _ = tx.send(Pending::Ready(b)).await;
                        }
                        return Err(ConnectionError::Sasl(reason));
                    }
                }
            }
            let pending = handle_frame(&broker, bytes, &conn, &mute);
            // Handled: the request's bytes no longer count. (A handler that waits may keep
            // slices of them, such as a JoinGroup's protocol metadata, until it answers; it
            // does not wait on this budget, so no connection can be stuck behind it.)
            drop(held);
            if let Some(p) = pending? {
                if tx.send(p).await.is_err() {
                    return Ok(()); // The writer stopped: the peer went away.
                }
            }
        }
    }
    .await;
    drop(tx);
    // Let the writer send what is queued, then close.
    let _ = writer.await;
    result
}

fn handle_frame(
    broker: &Arc<Broker>,
    frame: Bytes,
    conn: &Arc<ConnectionContext>,
    mute: &Arc<ChannelMute>,
) -> Result<Option<Pending>, ConnectionError> {
    if frame.len() < 8 {
        return Err(ConnectionError::Decode(format!(
            "frame of {} bytes has no request header",
            frame.len()
        )));
    }
    let api_key_raw = (&frame[0..2]).get_i16();
    let api_version = (&frame[2..4]).get_i16();
    let correlation_id = (&frame[4..8]).get_i32();
    let api_key = ApiKey::from_i16(api_key_raw);
    let served = api_key.and_then(supported_versions);
    let Some((min, max)) = served else {
        return Err(ConnectionError::Unsupported {
            api_key: api_key_raw,
            api_version,
        });
    };
    let api_key = api_key.expect("served implies known");
    if api_version < min || api_version > max {
        if api_key == ApiKey::ApiVersions {
            // KIP-511: answer in v0 with the versions we do serve, so the client can retry.
            let body = ResponseBody::ApiVersions(unsupported_version_response());
            return encode(correlation_id, api_key, 0, &body)
                .map(|b| Some(Pending::Ready(b)))
                .ok_or(ConnectionError::Encode);
        }
        return Err(ConnectionError::Unsupported {
            api_key: api_key_raw,
            api_version,
        });
    }
    let (header, body) = skein_protocol::decode_request(frame)
        .map_err(|e| ConnectionError::Decode(e.to_string()))?;
    let started = Instant::now();
    let ctx = RequestContext {
        api_key,
        api_version,
        correlation_id,
        client_id: header.client_id,
        client_host: conn.client_host(),
        connection: conn.clone(),
        mute: mute.clone(),
    };
    tracing::trace!(?api_key, api_version, correlation_id, "request");
    Ok(match broker.handle(&ctx, body) {
        Reply::Now(body) => Some(Pending::Ready({
            broker.metrics().observe_response(
                api_key.name(),
                started.elapsed().as_secs_f64(),
                Some(&body),
            );
            encode(correlation_id, api_key, api_version, &body).ok_or(ConnectionError::Encode)?
        })),
        Reply::Nothing => {
            broker.metrics().observe_response(
                api_key.name(),
                started.elapsed().as_secs_f64(),
                None,
            );
            None
        }
        Reply::Later(fut) => Some(Pending::Waiting {
            correlation_id,
            api_key,
            version: api_version,
            started,
            task: tokio::spawn(fut),
        }),
        Reply::Fetch(fut) => Some(Pending::Fetch {
            correlation_id,
            version: api_version,
            started,
            task: tokio::spawn(fut),
        }),
    })
}
