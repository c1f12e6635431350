//! A minimal IMAP client for the benchmarks: just enough protocol to log in (LOGIN through
//! oxbridge, XOAUTH2 directly), run a command, stream a large FETCH, IDLE and log out,
//! with nothing that would make one path look better than the other.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use oxbridge_wire::sasl::{BearerMechanism, XOAuth2};
use oxbridge_wire::Secret;

/// How a benchmark session logs in.
#[derive(Clone, Debug)]
pub enum Credentials {
    /// Through oxbridge: the legacy LOGIN.
    Password { user: String, password: String },
    /// Directly at the upstream: XOAUTH2 with a token.
    Token { mailbox: String, token: String },
}

/// One IMAP connection over TLS.
pub struct Client {
    stream: TlsStream<TcpStream>,
    buf: BytesMut,
    next_tag: u32,
}

fn broken(what: &str) -> io::Error {
    io::Error::other(what.to_string())
}

impl Client {
    /// Connects, handshakes and reads the greeting.
    pub async fn connect(addr: SocketAddr, tls: &Arc<rustls::ClientConfig>) -> io::Result<Client> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from("outlook.office365.com").map_err(|_| broken("name"))?;
        let stream = TlsConnector::from(tls.clone()).connect(name, tcp).await?;
        let mut client = Client {
            stream,
            buf: BytesMut::with_capacity(4096),
            next_tag: 1,
        };
        let greeting = client.line().await?;
        if !greeting.starts_with(b"* OK") {
            return Err(broken("no greeting"));
        }
        Ok(client)
    }

    /// Logs in with these credentials.
    pub async fn login(&mut self, credentials: &Credentials) -> io::Result<()> {
        let command = match credentials {
            Credentials::Password { user, password } => format!("LOGIN {user} \"{password}\""),
            Credentials::Token { mailbox, token } => {
                let ir = XOAuth2::initial_response(mailbox, &Secret::from(token.as_str()));
                format!(
                    "AUTHENTICATE XOAUTH2 {}",
                    ir.expose_str().unwrap_or_default()
                )
            }
        };
        self.command(&command).await.map(|_| ())
    }

    /// Sends a command and reads to its tagged reply, discarding literals; returns the
    /// number of response bytes. Fails unless the reply is OK.
    pub async fn command(&mut self, command: &str) -> io::Result<usize> {
        let tag = format!("b{}", self.next_tag);
        self.next_tag += 1;
        self.stream
            .write_all(format!("{tag} {command}\r\n").as_bytes())
            .await?;
        self.stream.flush().await?;
        self.until_tagged(&tag).await
    }

    /// Starts IDLE and waits for the continuation.
    pub async fn idle(&mut self) -> io::Result<String> {
        let tag = format!("b{}", self.next_tag);
        self.next_tag += 1;
        self.stream
            .write_all(format!("{tag} IDLE\r\n").as_bytes())
            .await?;
        self.stream.flush().await?;
        let line = self.line().await?;
        if !line.starts_with(b"+") {
            return Err(broken("IDLE refused"));
        }
        Ok(tag)
    }

    /// Ends IDLE.
    pub async fn done(&mut self, tag: &str) -> io::Result<()> {
        self.stream.write_all(b"DONE\r\n").await?;
        self.stream.flush().await?;
        self.until_tagged(tag).await.map(|_| ())
    }

    /// Appends a 64 KiB message to a folder no benchmark session has selected (so nobody is
    /// notified), moving 64 KiB upstream.
    pub async fn command_append_elsewhere(&mut self) -> io::Result<()> {
        let size = 64 * 1024;
        let tag = format!("b{}", self.next_tag);
        self.next_tag += 1;
        self.stream
            .write_all(format!("{tag} APPEND \"Deleted Items\" {{{size}}}\r\n").as_bytes())
            .await?;
        self.stream.flush().await?;
        let line = self.line().await?;
        if !line.starts_with(b"+") {
            return Err(broken("APPEND refused"));
        }
        let mut body = b"Subject: bench\r\n\r\n".to_vec();
        body.resize(size, b'x');
        self.stream.write_all(&body).await?;
        self.stream.write_all(b"\r\n").await?;
        self.stream.flush().await?;
        self.until_tagged(&tag).await.map(|_| ())
    }

    /// LOGOUT, then close.
    pub async fn logout(mut self) -> io::Result<()> {
        self.command("LOGOUT").await?;
        let _ = self.stream.shutdown().await;
        Ok(())
    }

    async fn until_tagged(&mut self, tag: &str) -> io::Result<usize> {
        let mut total = 0;
        loop {
            let line = self.line().await?;
            total += line.len();
            if let Some(size) = literal_size(&line) {
                total += self.skip(size).await?;
                continue;
            }
            if line.starts_with(tag.as_bytes()) && line.get(tag.len()) == Some(&b' ') {
                let status = &line[tag.len() + 1..];
                if status.starts_with(b"OK") {
                    return Ok(total);
                }
                return Err(broken(&format!(
                    "command failed: {}",
                    String::from_utf8_lossy(&line).trim_end()
                )));
            }
        }
    }

    async fn line(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                return Ok(self.buf.split_to(pos + 1).to_vec());
            }
            self.fill().await?;
        }
    }

    /// Reads and drops `size` bytes, without holding them.
    async fn skip(&mut self, mut size: usize) -> io::Result<usize> {
        let total = size;
        while size > 0 {
            if self.buf.is_empty() {
                self.fill().await?;
            }
            let n = size.min(self.buf.len());
            self.buf.advance(n);
            size -= n;
        }
        Ok(total)
    }

    async fn fill(&mut self) -> io::Result<()> {
        self.buf.reserve(64 * 1024);
        if self.stream.read_buf(&mut self.buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }
}

fn literal_size(line: &[u8]) -> Option<usize> {
    let line = line.strip_suffix(b"\r\n")?.strip_suffix(b"}")?;
    let open = line.iter().rposition(|&b| b == b'{')?;
    std::str::from_utf8(&line[open + 1..]).ok()?.parse().ok()
}

/// How long each phase of a login round trip took.
#[derive(Debug, Default, Clone, Copy)]
pub struct Phases {
    pub connect: std::time::Duration,
    pub login: std::time::Duration,
    pub rest: std::time::Duration,
}

/// A login round trip with each phase timed.
pub async fn timed_round_trip(
    addr: SocketAddr,
    tls: &Arc<rustls::ClientConfig>,
    credentials: &Credentials,
) -> io::Result<Phases> {
    let started = std::time::Instant::now();
    let mut client = Client::connect(addr, tls).await?;
    let connected = std::time::Instant::now();
    client.login(credentials).await?;
    let logged_in = std::time::Instant::now();
    client.command("SELECT INBOX").await?;
    client.logout().await?;
    Ok(Phases {
        connect: connected - started,
        login: logged_in - connected,
        rest: logged_in.elapsed(),
    })
}

/// One full login round trip: connect, TLS, login, SELECT, LOGOUT.
pub async fn login_round_trip(
    addr: SocketAddr,
    tls: &Arc<rustls::ClientConfig>,
    credentials: &Credentials,
) -> io::Result<()> {
    let mut client = Client::connect(addr, tls).await?;
    client.login(credentials).await?;
    client.command("SELECT INBOX").await?;
    client.logout().await
}
