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
}
