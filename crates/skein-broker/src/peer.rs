//! Requests from this broker to another one over the Kafka protocol: the transaction
//! coordinator's WriteTxnMarkers to partition leaders, and a leader's AddPartitionsToTxn
//! check with a transaction coordinator (KIP-890 part 1).
//!
//! One connection per peer, kept open and reused; requests to one peer go one at a time
//! (they are small and rare next to replication, which has its own connections in
//! `fetcher.rs`). A failed exchange drops the connection, so the next call reconnects.
//!
//! Every connection to another broker (these and the replica fetchers') is made by
//! [`Broker::connect_peer`], to the peer's inter-broker listener as it advertised it, and
//! speaks that listener's security protocol: TLS through the transport the network edge
//! installs ([`Broker::set_inter_broker_tls`]: `skein-server`'s rustls client, trusting the
//! listener's `ssl.truststore.*`), then a SASL login with the inter-broker credentials
//! ([`crate::sasl::client`]) on SASL_PLAINTEXT and SASL_SSL.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::BytesMut;
use skein_protocol::ResponseBody;
use skein_protocol::{decode_response, encode_request, ApiKey, RequestBody, RequestHeader};
use skein_raft::{BoxStream, Transport};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::broker::Broker;

/// The longest a connection attempt to a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest response accepted from a peer (these answers are a few bytes per partition).
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// The connections of this broker to its peers.
#[derive(Default)]
pub struct Peers {
    conns: Mutex<HashMap<i32, Arc<tokio::sync::Mutex<Conn>>>>,
    /// TLS towards the inter-broker listener (SSL, SASL_SSL), set by the network edge.
    tls: OnceLock<Arc<dyn Transport>>,
    /// TLS on the controller listener (SSL), set by the network edge; the metadata quorum
    /// wraps its connections with it, both ways.
    controller_tls: OnceLock<Arc<dyn Transport>>,
}

#[derive(Default)]
struct Conn {
    stream: Option<BoxStream>,
    correlation: i32,
}

impl Peers {
    fn conn(&self, node: i32) -> Arc<tokio::sync::Mutex<Conn>> {
        self.conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(node)
            .or_default()
            .clone()
    }
}

impl Broker {
    /// Installs the TLS client for connections to other brokers (the inter-broker listener is
    /// SSL or SASL_SSL). Set once, before the broker starts.
    pub fn set_inter_broker_tls(&self, tls: Arc<dyn Transport>) {
        let _ = self.peers().tls.set(tls);
    }

    /// Installs TLS for the controller listener (both ways). Set once, before the metadata
    /// quorum starts.
    pub fn set_controller_tls(&self, tls: Arc<dyn Transport>) {
        let _ = self.peers().controller_tls.set(tls);
    }

    pub(crate) fn controller_tls(&self) -> Option<Arc<dyn Transport>> {
        self.peers().controller_tls.get().cloned()
    }

    /// Sends one request to broker `node` and waits at most `timeout` for its response.
    pub async fn call_peer(
        &self,
        node: i32,
        api: ApiKey,
        version: i16,
        body: RequestBody,
        timeout: Duration,
    ) -> std::io::Result<ResponseBody> {
        let conn = self.peers().conn(node);
        let mut conn = conn.lock().await;
        let attempt = async {
            if conn.stream.is_none() {
                conn.stream = Some(self.connect_peer(node).await?);
            }
            conn.correlation = conn.correlation.wrapping_add(1);
            let correlation = conn.correlation;
            let stream = conn.stream.as_mut().expect("connected above");
            exchange(
                stream,
                correlation,
                "skein-broker",
                (api, version),
                body,
                MAX_RESPONSE_BYTES,
            )
            .await
        };
        let result = match tokio::time::timeout(timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer from broker {node} within {timeout:?}"),
            )),
        };
        if let Err(e) = &result {
            if e.kind() == std::io::ErrorKind::PermissionDenied {
                tracing::warn!(peer = node, "inter-broker authentication failed: {e}");
            }
            conn.stream = None;
        }
        result
    }

    /// A new connection to broker `node`'s inter-broker listener (TCP_NODELAY set), with
    /// TLS and the SASL login done as that listener's protocol asks. An authentication
    /// failure is an error of kind `PermissionDenied`.
    pub(crate) async fn connect_peer(&self, node: i32) -> std::io::Result<BoxStream> {
        let endpoint = self.broker_endpoint(node).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("broker {node} is not registered"),
            )
        })?;
        let addr = format!("{}:{}", endpoint.host, endpoint.port);
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&addr))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
            })??;
        stream.set_nodelay(true)?;
        let protocol = self
            .config
            .listeners
            .first()
            .map(|l| l.protocol)
            .unwrap_or(crate::listener::SecurityProtocol::Plaintext);
        let mut stream: BoxStream = if protocol.uses_tls() {
            let tls = self.peers().tls.get().cloned().ok_or_else(|| {
                std::io::Error::other("the inter-broker listener uses TLS but no TLS client is set")
            })?;
            tokio::time::timeout(CONNECT_TIMEOUT, tls.connect(stream, addr.clone()))
                .await
                .map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("TLS handshake with broker {node} at {addr} timed out"),
                    )
                })??
        } else {
            Box::new(stream)
        };
        if protocol.uses_sasl() {
            let creds = self.config.inter_broker_sasl.as_ref().ok_or_else(|| {
                std::io::Error::other(
                    "the inter-broker listener uses SASL but no credentials are set",
                )
            })?;
            tokio::time::timeout(
                CONNECT_TIMEOUT,
                crate::sasl::client::login(&mut stream, creds, "skein-broker"),
            )
            .await
            .map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("SASL login to broker {node} at {addr} timed out"),
                )
            })??;
        }
        Ok(stream)
    }
}

/// Writes one request on `stream` and reads its response (at most `max_frame` bytes). The
/// response is read into uninitialised capacity: zero-filling a buffer of up to
/// replica.fetch.response.max.bytes first cost a follower a tenth of its CPU (S7 profile).
pub(crate) async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    correlation: i32,
    client_id: &str,
    (api, version): (ApiKey, i16),
    body: RequestBody,
    max_frame: usize,
) -> std::io::Result<ResponseBody> {
    let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
    let header = RequestHeader {
        api_key: api as i16,
        api_version: version,
        correlation_id: correlation,
        client_id: Some(client_id.into()),
    };
    let frame =
        encode_request(&header, &body).map_err(|e| invalid(format!("encoding {api:?}: {e}")))?;
    stream.write_all(&frame).await?;
    stream.flush().await?;
    let len = stream.read_i32().await?;
    if len < 0 || len as usize > max_frame {
        return Err(invalid(format!("{api:?} response frame of {len} bytes")));
    }
    let len = len as usize;
    let mut buf = BytesMut::with_capacity(len);
    let mut frame = (&mut *stream).take(len as u64);
    while buf.len() < len {
        if frame.read_buf(&mut buf).await? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "the peer closed the connection after {} of {len} bytes",
                    buf.len()
                ),
            ));
        }
    }
    let (id, response) = decode_response(api, version, buf.freeze())
        .map_err(|e| invalid(format!("decoding the {api:?} response: {e}")))?;
    if id != correlation {
        return Err(invalid(format!(
            "response to request {id}, expected {correlation}"
        )));
    }
    Ok(response)
}
