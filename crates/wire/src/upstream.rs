//! Connections to the upstream mail service: where it is, how TLS starts, how a connection
//! attempt can fail, and a bounded line reader for the back-ends' login dialogs.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::line::{next_line, LineTooLong};

/// An authenticated-or-about-to-be upstream connection; always TLS.
pub type UpstreamStream = tokio_rustls::client::TlsStream<TcpStream>;

/// How TLS starts towards the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamTls {
    /// TLS from the first byte (993, 995, 465).
    Implicit,
    /// Plain greeting, then the protocol's STARTTLS/STLS (587, 143, 110).
    StartTls,
}

/// Where an upstream service lives and how to reach it.
#[derive(Clone)]
pub struct UpstreamEndpoint {
    /// `host:port`.
    pub address: String,
    /// The name the upstream's certificate must carry.
    pub server_name: ServerName<'static>,
    pub tls: UpstreamTls,
    pub connector: TlsConnector,
    /// Bound on TCP connect plus TLS handshake.
    pub connect_timeout: Duration,
    /// Bound on the whole login dialog after connecting.
    pub login_timeout: Duration,
}

impl std::fmt::Debug for UpstreamEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamEndpoint")
            .field("address", &self.address)
            .field("server_name", &self.server_name)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl UpstreamEndpoint {
    pub fn new(
        address: impl Into<String>,
        server_name: ServerName<'static>,
        tls: UpstreamTls,
        client_config: Arc<rustls::ClientConfig>,
    ) -> Self {
        Self {
            address: address.into(),
            server_name,
            tls,
            connector: TlsConnector::from(client_config),
            connect_timeout: Duration::from_secs(10),
            login_timeout: Duration::from_secs(30),
        }
    }

    /// Opens the TCP connection, with Nagle off so small login replies are not delayed.
    pub async fn connect_tcp(&self) -> Result<TcpStream, UpstreamError> {
        let tcp = tokio::time::timeout(self.connect_timeout, TcpStream::connect(&self.address))
            .await
            .map_err(|_| UpstreamError::Timeout("connect"))?
            .map_err(UpstreamError::Connect)?;
        tcp.set_nodelay(true).map_err(UpstreamError::Connect)?;
        Ok(tcp)
    }

    /// Runs the TLS handshake on an open connection.
    pub async fn start_tls(&self, tcp: TcpStream) -> Result<UpstreamStream, UpstreamError> {
        tokio::time::timeout(
            self.connect_timeout,
            self.connector.connect(self.server_name.clone(), tcp),
        )
        .await
        .map_err(|_| UpstreamError::Timeout("TLS handshake"))?
        .map_err(UpstreamError::Tls)
    }

    /// Connects with implicit TLS.
    pub async fn connect_tls(&self) -> Result<UpstreamStream, UpstreamError> {
        let tcp = self.connect_tcp().await?;
        self.start_tls(tcp).await
    }
}

/// Why an upstream login did not succeed. Only [`UpstreamError::Rejected`] is the upstream's
/// verdict on the credentials; everything else is temporary from the client's point of view.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect: {0}")]
    Connect(io::Error),
    #[error("TLS handshake failed: {0}")]
    Tls(io::Error),
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    #[error("timed out during {0}")]
    Timeout(&'static str),
    #[error("upstream closed the connection")]
    Closed,
    #[error("unexpected reply: {0}")]
    Protocol(String),
    #[error("upstream line too long")]
    LineTooLong(#[from] LineTooLong),
    #[error("upstream refused the login: {0}")]
    Rejected(String),
}

impl UpstreamError {
    /// The upstream said no to a token (as opposed to being unreachable or broken).
    pub fn is_rejection(&self) -> bool {
        matches!(self, UpstreamError::Rejected(_))
    }
}

/// Longest upstream reply line a back-end accepts during login.
pub const MAX_UPSTREAM_LINE: usize = 64 * 1024;

/// Reads one line (with its terminator) from `stream`, buffering in `buf`; bytes after the
/// line stay in `buf`, so nothing the upstream pipelined is lost before the splice.
pub async fn read_line<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> Result<Bytes, UpstreamError> {
    loop {
        if let Some(len) = next_line(buf, MAX_UPSTREAM_LINE)? {
            return Ok(buf.split_to(len).freeze());
        }
        buf.reserve(4096);
        if stream.read_buf(buf).await? == 0 {
            return Err(UpstreamError::Closed);
        }
    }
}
