//! Minimal POP3 and SMTP clients for the throughput measurements (RETR and DATA), over the
//! same TLS set-up as the IMAP client, logging in with a password through oxbridge or with
//! XOAUTH2 directly at the fake.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use oxbridge_wire::sasl::{encode_base64, BearerMechanism, XOAuth2};
use oxbridge_wire::Secret;

use crate::client::Credentials;

/// A line-oriented connection (POP3 or SMTP), plain or TLS.
struct Lines<S> {
    stream: S,
    buf: BytesMut,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Lines<S> {
    fn new(stream: S) -> Self {
        Lines {
            stream,
            buf: BytesMut::with_capacity(64 * 1024),
        }
    }

    async fn line(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                return Ok(self.buf.split_to(pos + 1).to_vec());
            }
            self.buf.reserve(64 * 1024);
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    /// Sends a command and returns the (last) reply line, failing on a negative reply.
    async fn command(&mut self, line: &str, ok: &[u8]) -> io::Result<Vec<u8>> {
        self.send(format!("{line}\r\n").as_bytes()).await?;
        self.reply(ok).await
    }

    /// Reads one reply (SMTP multi-line aware) and checks its start.
    async fn reply(&mut self, ok: &[u8]) -> io::Result<Vec<u8>> {
        loop {
            let line = self.line().await?;
            if line.len() > 3 && line[3] == b'-' {
                continue;
            }
            if line.starts_with(ok) {
                return Ok(line);
            }
            return Err(io::Error::other(
                String::from_utf8_lossy(&line).trim_end().to_string(),
            ));
        }
    }

    /// Reads a POP3 multi-line body up to the terminating dot; returns its size.
    async fn dot_body(&mut self) -> io::Result<usize> {
        let mut total = 0;
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                if &self.buf[..pos + 1] == b".\r\n" {
                    self.buf.advance(pos + 1);
                    return Ok(total);
                }
                total += pos + 1;
                self.buf.advance(pos + 1);
                continue;
            }
            self.buf.reserve(64 * 1024);
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }
}

async fn tls(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    start_tls(tcp, config).await
}

async fn start_tls(
    tcp: TcpStream,
    config: &Arc<rustls::ClientConfig>,
) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let name = ServerName::try_from("outlook.office365.com").map_err(io::Error::other)?;
    TlsConnector::from(config.clone()).connect(name, tcp).await
}

fn xoauth2(mailbox: &str, token: &str) -> String {
    XOAuth2::initial_response(mailbox, &Secret::from(token))
        .expose_str()
        .unwrap_or_default()
        .to_string()
}

/// POP3 over implicit TLS: log in, RETR `message`, QUIT; returns MB/s of the RETR.
pub async fn pop3_retr(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    credentials: &Credentials,
    message: usize,
) -> io::Result<f64> {
    let mut c = Lines::new(tls(addr, config).await?);
    c.reply(b"+OK").await?;
    match credentials {
        Credentials::Password { user, password } => {
            c.command(&format!("USER {user}"), b"+OK").await?;
            c.command(&format!("PASS {password}"), b"+OK").await?;
        }
        Credentials::Token { mailbox, token } => {
            c.command("AUTH XOAUTH2", b"+").await?;
            c.command(&xoauth2(mailbox, token), b"+OK").await?;
        }
    }
    let started = std::time::Instant::now();
    c.command(&format!("RETR {message}"), b"+OK").await?;
    let bytes = c.dot_body().await?;
    let rate = bytes as f64 / 1_000_000.0 / started.elapsed().as_secs_f64();
    c.command("QUIT", b"+OK").await?;
    Ok(rate)
}

/// SMTP submission with STARTTLS: log in, send a message of `size` bytes, QUIT; returns
/// MB/s of the DATA phase.
pub async fn smtp_data(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    credentials: &Credentials,
    mailbox: &str,
    size: usize,
) -> io::Result<f64> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let mut plain = Lines::new(tcp);
    plain.reply(b"220").await?;
    plain.command("EHLO bench.example", b"250").await?;
    plain.command("STARTTLS", b"220").await?;
    let mut c = Lines::new(start_tls(plain.stream, config).await?);
    c.command("EHLO bench.example", b"250").await?;
    match credentials {
        Credentials::Password { user, password } => {
            let plain = encode_base64(format!("\0{user}\0{password}").as_bytes());
            c.command(&format!("AUTH PLAIN {plain}"), b"235").await?;
        }
        Credentials::Token { mailbox, token } => {
            c.command("AUTH XOAUTH2", b"334").await?;
            c.command(&xoauth2(mailbox, token), b"235").await?;
        }
    }
    c.command(&format!("MAIL FROM:<{mailbox}>"), b"250").await?;
    c.command(&format!("RCPT TO:<{mailbox}>"), b"250").await?;
    c.command("DATA", b"354").await?;
    let mut body =
        format!("From: <{mailbox}>\r\nTo: <{mailbox}>\r\nSubject: bench\r\n\r\n").into_bytes();
    let line = [b'q'; 76];
    while body.len() + 78 < size {
        body.extend_from_slice(&line);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b".\r\n");
    let started = std::time::Instant::now();
    c.send(&body).await?;
    c.reply(b"250").await?;
    let rate = body.len() as f64 / 1_000_000.0 / started.elapsed().as_secs_f64();
    c.command("QUIT", b"221").await?;
    Ok(rate)
}
