//! SASL on the controller listener (SASL_PLAINTEXT, SASL_SSL), Kafka's
//! `sasl.mechanism.controller.protocol`.
//!
//! The controller listener is served by `skein-raft` with its own protocol; this wraps its
//! [`Transport`] hook. Connecting (Raft between controllers, brokers' calls and heartbeats
//! to the controllers): TLS first when the listener is SASL_SSL, then a SASL login with the
//! node's own credentials, exactly as between brokers ([`super::client::login`]: SaslHandshake
//! v1 and SaslAuthenticate v1 in Kafka's framing). Accepting: TLS first, then the broker's
//! SASL server state machine ([`super::SaslConnection`]) with the listener's bounds
//! (`sasl.server.max.receive.size`, `skein.sasl.exchange.timeout.ms`); a failed login gets
//! SASL_AUTHENTICATION_FAILED and the connection closes after
//! `connection.failed.authentication.delay.ms`. Only an authenticated stream reaches Raft.

use std::io;
use std::sync::{Arc, Weak};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use skein_raft::{BoxStream, RareLog, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::client::SaslCredentials;
use super::{Action, SaslConnection, SaslSettings};
use crate::broker::Broker;

/// The controller listener's transport when it uses SASL.
pub struct ControllerSasl {
    /// TLS (SASL_SSL); `None` on SASL_PLAINTEXT.
    pub tls: Option<Arc<dyn Transport>>,
    /// How this node logs in to the controllers.
    pub client: SaslCredentials,
    /// The listener's server side; `None` on a broker-only node (it only dials out).
    pub server: Option<Arc<SaslSettings>>,
    /// For SCRAM credentials (the metadata image) and the authentication metrics.
    pub broker: Weak<Broker>,
    /// Rate-limits the warnings for this node's failed logins (Raft retries them several
    /// times a second).
    pub failed_login_log: Arc<RareLog>,
}

impl std::fmt::Debug for ControllerSasl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerSasl")
            .field("tls", &self.tls.is_some())
            .field("client", &self.client)
            .field("server", &self.server)
            .finish()
    }
}

fn denied(m: String) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, m)
}

impl Transport for ControllerSasl {
    fn connect(
        &self,
        tcp: TcpStream,
        addr: String,
    ) -> skein_raft::BoxFuture<'static, io::Result<BoxStream>> {
        let tls = self.tls.clone();
        let creds = self.client.clone();
        let failed_login_log = self.failed_login_log.clone();
        Box::pin(async move {
            let mut stream: BoxStream = match tls {
                Some(t) => t.connect(tcp, addr.clone()).await?,
                None => Box::new(tcp),
            };
            super::client::login(&mut stream, &creds, "skein-controller")
                .await
                .map_err(|e| {
                    if e.kind() == io::ErrorKind::PermissionDenied {
                        let m = format!(
                            "SASL {} login to the controller at {addr} failed: {e}",
                            creds.mechanism
                        );
                        failed_login_log.log(Instant::now(), |suppressed| {
                            tracing::warn!(suppressed, "{m}")
                        });
                        denied(m)
                    } else {
                        e
                    }
                })?;
            Ok(stream)
        })
    }

    fn name(&self) -> &'static str {
        if self.tls.is_some() {
            "TLS and SASL"
        } else {
            "SASL"
        }
    }

    fn accept(&self, tcp: TcpStream) -> skein_raft::BoxFuture<'static, io::Result<BoxStream>> {
        let tls = self.tls.clone();
        let server = self.server.clone();
        let broker = self.broker.clone();
        Box::pin(async move {
            let Some(settings) = server else {
                return Err(io::Error::other("this node serves no controller listener"));
            };
            let peer = tcp.peer_addr().ok();
            let mut stream: BoxStream = match tls {
                Some(t) => t.accept(tcp).await?,
                None => Box::new(tcp),
            };
            let deadline =
                tokio::time::Instant::from_std(SaslConnection::new(settings.clone()).deadline());
            match tokio::time::timeout_at(deadline, serve(&mut stream, settings, &broker)).await {
                Ok(Ok(user)) => {
                    tracing::debug!(?peer, principal = %format!("User:{user}"), "controller listener: SASL login done");
                    Ok(stream)
                }
                Ok(Err(e)) => Err(e),
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "SASL authentication not complete within skein.sasl.exchange.timeout.ms",
                )),
            }
        })
    }
}

/// Runs the server side of the exchange until the peer is authenticated (its user name).
async fn serve(
    stream: &mut BoxStream,
    settings: Arc<SaslSettings>,
    broker: &Weak<Broker>,
) -> io::Result<String> {
    let mut sasl = SaslConnection::new(settings);
    loop {
        let max = sasl.max_frame(usize::MAX);
        let len = stream.read_i32().await?;
        if len < 0 || len as usize > max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a SASL frame of {len} bytes (sasl.server.max.receive.size is {max})"),
            ));
        }
        let mut buf = BytesMut::zeroed(len as usize);
        stream.read_exact(&mut buf).await?;
        let frame: Bytes = buf.freeze();
        let broker = broker
            .upgrade()
            .ok_or_else(|| io::Error::other("the broker is stopping"))?;
        match sasl.on_frame(&broker, &frame, Instant::now()) {
            Action::Reply(b) => {
                stream.write_all(&b).await?;
                stream.flush().await?;
                if let Some(user) = sasl.user() {
                    return Ok(user.to_string());
                }
            }
            Action::Close {
                reply,
                delay,
                reason,
            } => {
                drop(broker);
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                if let Some(b) = reply {
                    let _ = stream.write_all(&b).await;
                    let _ = stream.flush().await;
                }
                return Err(denied(format!("SASL authentication failed: {reason}")));
            }
            // Only SaslHandshake and SaslAuthenticate are served here (an ApiVersions
            // request is not: Skein's nodes do not send one on this listener).
            Action::Pass => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a request other than SaslHandshake/SaslAuthenticate before authentication",
                ))
            }
        }
    }
}
