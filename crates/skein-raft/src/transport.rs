//! What the controller listener's connections run over. Plain TCP by default; a
//! [`Transport`] (Skein's is TLS, in `skein-server`) wraps each connection after it is
//! accepted or connected and before the `Hello` handshake, so everything on the controller
//! listener (Raft RPCs, the application channel, observers joining) goes through it.
//! This crate stays free of any TLS library: the caller brings the implementation.

use std::fmt;
use std::io;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::BoxFuture;

/// A connection: plain TCP or whatever a [`Transport`] made of it.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static> Stream for T {}

/// A boxed [`Stream`].
pub type BoxStream = Box<dyn Stream>;

/// Wraps the connections of the controller listener, both ways.
pub trait Transport: Send + Sync + fmt::Debug + 'static {
    /// The client side of a new connection to `addr` (`host:port`, as the voter list or the
    /// membership names it: the host is the name the server's certificate must carry).
    fn connect(&self, tcp: TcpStream, addr: String) -> BoxFuture<'static, io::Result<BoxStream>>;
    /// The server side of an accepted connection.
    fn accept(&self, tcp: TcpStream) -> BoxFuture<'static, io::Result<BoxStream>>;
    /// What the wrapping is, for error messages ("TLS handshake with …: …").
    fn name(&self) -> &'static str {
        "TLS"
    }
}

/// Logs one kind of event at most once per [`RareLog::EVERY`], counting the ones left out:
/// for failures a peer can repeat several times a second (refused connections, failed logins).
pub struct RareLog {
    state: std::sync::Mutex<(Option<std::time::Instant>, u64)>,
}

impl RareLog {
    /// The shortest gap between two logged events.
    pub const EVERY: std::time::Duration = std::time::Duration::from_secs(10);

    pub fn new() -> RareLog {
        RareLog {
            state: std::sync::Mutex::new((None, 0)),
        }
    }

    /// Calls `log(suppressed)` if the last call that logged was long enough ago, where
    /// `suppressed` counts the events since then that were not logged.
    pub fn log(&self, now: std::time::Instant, log: impl FnOnce(u64)) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match s.0 {
            Some(at) if now.saturating_duration_since(at) < Self::EVERY => s.1 += 1,
            _ => {
                let suppressed = s.1;
                *s = (Some(now), 0);
                drop(s);
                log(suppressed);
            }
        }
    }
}

impl Default for RareLog {
    fn default() -> Self {
        RareLog::new()
    }
}

impl fmt::Debug for RareLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RareLog")
    }
}
