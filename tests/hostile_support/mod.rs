//! Helpers for the hardening suites (`hostile*`, `faults*`): a raw line client over TCP or
//! TLS that can send anything at all, the process's memory and descriptors from `/proc`,
//! metrics from the admin listener, and config edits the common harness does not offer.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use oxbridge_wire::{UpstreamEndpoint, UpstreamTls};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::Harness;

/// A byte stream to oxbridge, plain or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// How long any single read waits before the test calls it a hang.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// A client connection that sends raw bytes and reads replies line by line.
pub struct Conn {
    io: Box<dyn Io>,
    buf: Vec<u8>,
}

impl Conn {
    /// A plain TCP connection to `port` on loopback.
    pub async fn plain(port: u16) -> io::Result<Conn> {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
        tcp.set_nodelay(true)?;
        Ok(Conn {
            io: Box::new(tcp),
            buf: Vec::new(),
        })
    }

    /// An implicit-TLS connection to `port`, trusting the test CA, as a real client would.
    pub async fn tls(h: &Harness, port: u16) -> io::Result<Conn> {
        let endpoint = endpoint(h, port);
        let stream = endpoint
            .connect_tls()
            .await
            .map_err(|e| io::Error::other(e.to_string()))?;
        Ok(Conn {
            io: Box::new(stream),
            buf: Vec::new(),
        })
    }

    /// Wraps a stream opened elsewhere (e.g. by [`endpoint`] in a spawned task).
    pub fn from_io(io: impl Io + 'static) -> Conn {
        Conn {
            io: Box::new(io),
            buf: Vec::new(),
        }
    }

    /// Writes `bytes` and flushes.
    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.io.write_all(bytes).await?;
        self.io.flush().await
    }

    /// Reads one line (with its CRLF), waiting at most [`READ_TIMEOUT`].
    pub async fn line(&mut self) -> io::Result<String> {
        self.line_within(READ_TIMEOUT).await
    }

    pub async fn line_within(&mut self, within: Duration) -> io::Result<String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                return Ok(String::from_utf8_lossy(&line).into_owned());
            }
            let mut chunk = [0u8; 16 * 1024];
            let read = tokio::time::timeout_at(deadline, self.io.read(&mut chunk))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no line in time"))??;
            if read == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed"));
            }
            self.buf.extend_from_slice(&chunk[..read]);
        }
    }

    /// Reads lines until one starts with `prefix`; returns them all, joined.
    pub async fn until(&mut self, prefix: &str) -> io::Result<String> {
        let mut all = String::new();
        loop {
            let line = self.line().await?;
            all.push_str(&line);
            if line.starts_with(prefix) {
                return Ok(all);
            }
        }
    }

    /// Reads exactly `n` bytes.
    pub async fn exact(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() < n {
            let mut chunk = vec![0u8; (n - self.buf.len()).min(64 * 1024)];
            let read = tokio::time::timeout(READ_TIMEOUT, self.io.read(&mut chunk))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no data in time"))??;
            if read == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed"));
            }
            self.buf.extend_from_slice(&chunk[..read]);
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// Reads everything until the server closes, within `within`; `None` if it did not
    /// close in time. A reset counts as a close.
    pub async fn rest_until_closed(&mut self, within: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + within;
        let mut all = std::mem::take(&mut self.buf);
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            match tokio::time::timeout_at(deadline, self.io.read(&mut chunk)).await {
                Err(_) => return None,
                Ok(Ok(0)) | Ok(Err(_)) => return Some(String::from_utf8_lossy(&all).into_owned()),
                Ok(Ok(n)) => all.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Half-closes the sending side (TCP FIN, or TLS close_notify then FIN).
    pub async fn shutdown_write(&mut self) -> io::Result<()> {
        self.io.shutdown().await
    }
}

/// The endpoint a test client uses to reach oxbridge's TLS port `port`.
pub fn endpoint(h: &Harness, port: u16) -> UpstreamEndpoint {
    oxbridge_wire::tls::install_crypto_provider();
    let config = oxbridge_wire::tls::client_config(&[h.ca_file.as_path()]).expect("client TLS");
    let mut endpoint = UpstreamEndpoint::new(
        format!("127.0.0.1:{port}"),
        ServerName::try_from("localhost").expect("name"),
        UpstreamTls::Implicit,
        config,
    );
    endpoint.connect_timeout = Duration::from_secs(30);
    endpoint
}

/// Opens a plain connection, runs the protocol's STARTTLS dialog with `command` (expecting a
/// reply starting with `ok`), and returns the TLS connection. The greeting and any lines
/// before the STARTTLS reply are returned too.
pub async fn starttls(
    h: &Harness,
    port: u16,
    before: &[u8],
    command: &[u8],
    ok: &str,
) -> io::Result<(Conn, String)> {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    tcp.set_nodelay(true)?;
    tcp.write_all(before).await?;
    tcp.write_all(command).await?;
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    // Byte by byte, so that nothing after the STARTTLS reply is read from the socket.
    loop {
        let n = tokio::time::timeout(READ_TIMEOUT, tcp.read(&mut byte))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no STARTTLS reply"))??;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed"));
        }
        seen.push(byte[0]);
        if byte[0] == b'\n' {
            let text = String::from_utf8_lossy(&seen).into_owned();
            let last = text.lines().last().unwrap_or("");
            if last.starts_with(ok) {
                break;
            }
        }
    }
    let endpoint = endpoint(h, port);
    let tls = endpoint
        .start_tls(tcp)
        .await
        .map_err(|e| io::Error::other(e.to_string()))?;
    Ok((
        Conn {
            io: Box::new(tls),
            buf: Vec::new(),
        },
        String::from_utf8_lossy(&seen).into_owned(),
    ))
}

/// A field of `/proc/PID/status`, in kB (`VmRSS`, `VmHWM`).
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Resident memory of `pid` in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS")
}

/// Open descriptors of `pid`.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// The value of a metric sample with exactly these labels (among others), or 0.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            (n == name).then_some((rest, value))
        })
        .filter(|(rest, _)| {
            labels
                .iter()
                .all(|(k, v)| rest.split(',').any(|pair| pair == format!("{k}=\"{v}\"")))
        })
        .filter_map(|(_, v)| v.parse::<f64>().ok())
        .fold(0.0, |a, b| a + b)
}

/// Adds `lines` to the config's `[limits]` table (which the harness already writes, so it
/// cannot be appended a second time); call before serving.
pub fn set_limits(h: &Harness, lines: &str) {
    let config = std::fs::read_to_string(&h.config).unwrap();
    assert!(config.contains("[limits]\n"), "{config}");
    let config = config.replace("[limits]\n", &format!("[limits]\n{lines}\n"));
    std::fs::write(&h.config, config).unwrap();
}

/// Replaces one setting line of the config file.
pub fn replace_config(h: &Harness, from: &str, to: &str) {
    let config = std::fs::read_to_string(&h.config).unwrap();
    assert!(config.contains(from), "{from:?} not in {config}");
    std::fs::write(&h.config, config.replace(from, to)).unwrap();
}

/// Fails the test if oxbridge's log shows a panic.
pub fn assert_no_panic(h: &Harness) {
    let logs = h.logs();
    assert!(
        !logs.contains("panicked") && !logs.contains("RUST_BACKTRACE"),
        "oxbridge panicked:\n{logs}"
    );
}

/// Times `f`.
pub async fn timed<T>(f: impl std::future::Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    let value = f.await;
    (value, started.elapsed())
}

/// The address of oxbridge's port `port`.
pub fn at(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The accounts and mailboxes of [`GoodSessions`].
pub const GOOD_PASSWORD: &str = "good-session-password";
pub const IMAP_USER: &str = "frontdesk";
pub const IMAP_MAILBOX: &str = "frontdesk@contoso.onmicrosoft.com";
pub const POP3_USER: &str = "kiosk";
pub const POP3_MAILBOX: &str = "kiosk@contoso.onmicrosoft.com";
pub const RECIPIENT: &str = "alex@contoso.onmicrosoft.com";

/// Well-behaved sessions on each protocol, with real clients (imaplib, poplib, smtplib):
/// each logs in, then waits with its spliced session open while a test does its worst, and
/// on [`GoodSessions::finish`] fetches (IMAP), retrieves (POP3) or submits (SMTP) a message,
/// which must arrive byte for byte.
pub struct GoodSessions {
    children: Vec<(&'static str, tokio::process::Child)>,
    outputs: Vec<tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>>,
    files: Vec<std::path::PathBuf>,
    imap_message: Vec<u8>,
    pop3_message: Vec<u8>,
    smtp_message: Vec<u8>,
}

impl GoodSessions {
    /// Adds the accounts and messages; call before [`Harness::serve`]. The harness must
    /// have POP3 and SMTP listeners ([`Harness::add_pop3`], [`Harness::add_smtp`]).
    pub async fn prepare(h: &Harness) {
        h.add_delegated_account(IMAP_USER, GOOD_PASSWORD, IMAP_MAILBOX)
            .await;
        h.add_delegated_account(POP3_USER, GOOD_PASSWORD, POP3_MAILBOX)
            .await;
        h.fake.directory().add_mailbox(RECIPIENT);
        h.fake
            .directory()
            .deliver(IMAP_MAILBOX, "INBOX", &Self::message("IMAP"));
        h.fake
            .directory()
            .deliver(POP3_MAILBOX, "INBOX", &Self::message("POP3"));
    }

    fn message(protocol: &str) -> Vec<u8> {
        let mut m = format!(
            "From: {IMAP_MAILBOX}\r\nTo: {RECIPIENT}\r\nSubject: the good {protocol} session\r\n\r\n"
        )
        .into_bytes();
        // Enough lines, a dot-stuffed one and 8-bit text, for "byte-exact" to mean something.
        for i in 0..2000 {
            m.extend_from_slice(format!("line {i}: the good session keeps working\r\n").as_bytes());
        }
        m.extend_from_slice(b".a line starting with a dot\r\n\xc3\xa9t\xc3\xa9\r\n");
        m
    }

    /// Starts the three clients and waits until each has logged in.
    pub async fn start(h: &Harness) -> GoodSessions {
        use tokio::io::AsyncBufReadExt;
        let dir = h.dir.path();
        let files: Vec<_> = ["good-imap.eml", "good-pop3.eml", "good-smtp.eml"]
            .iter()
            .map(|f| dir.join(f))
            .collect();
        let smtp_message = Self::message("SMTP");
        std::fs::write(&files[2], &smtp_message).unwrap();
        let imaps = h.imaps_port.to_string();
        let pop3s = h.pop3s_port.to_string();
        let submission = h.submission_port.to_string();
        let imap = h.python_interactive(&[
            "hold",
            "--port",
            &imaps,
            "--user",
            IMAP_USER,
            "--password",
            GOOD_PASSWORD,
            "--out",
            files[0].to_str().unwrap(),
        ]);
        let pop3 = h.pop3_client_interactive(&[
            "hold",
            "--port",
            &pop3s,
            "--user",
            POP3_USER,
            "--password",
            GOOD_PASSWORD,
            "--out",
            files[1].to_str().unwrap(),
        ]);
        let smtp = h.smtp_client_interactive(&[
            "hold",
            "--port",
            &submission,
            "--user",
            IMAP_USER,
            "--password",
            GOOD_PASSWORD,
            "--sender",
            IMAP_MAILBOX,
            "--to",
            RECIPIENT,
            "--file",
            files[2].to_str().unwrap(),
        ]);
        let mut sessions = GoodSessions {
            children: vec![("imap", imap), ("pop3", pop3), ("smtp", smtp)],
            outputs: Vec::new(),
            files,
            imap_message: Self::message("IMAP"),
            pop3_message: Self::message("POP3"),
            smtp_message,
        };
        for (name, child) in &mut sessions.children {
            let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
            let ready = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("the good {name} session did not log in:\n{}", h.logs()))
                .unwrap();
            assert_eq!(
                ready.as_deref(),
                Some("READY"),
                "good {name} session:\n{}",
                h.logs()
            );
            sessions.outputs.push(lines);
        }
        sessions
    }

    /// Lets each session do its work and checks that it arrived byte for byte.
    pub async fn finish(mut self, h: &Harness) {
        for (name, child) in &mut self.children {
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(b"go\n").await.unwrap();
            drop(stdin);
            let _ = name;
        }
        for ((name, child), lines) in self.children.iter_mut().zip(&mut self.outputs) {
            let done = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("the good {name} session hung"))
                .unwrap()
                .unwrap_or_default();
            let status = child.wait().await.unwrap();
            let mut stderr = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut stderr).await;
            }
            assert!(
                status.success(),
                "good {name} session failed: {done}\n{stderr}"
            );
            let v: serde_json::Value = serde_json::from_str(&done).unwrap();
            if *name == "smtp" {
                assert_eq!(v["sent"], true, "{v}");
            } else {
                assert_eq!(v["done"], true, "{v}");
            }
        }
        assert!(
            std::fs::read(&self.files[0]).unwrap() == self.imap_message,
            "the good IMAP fetch is not byte-exact"
        );
        assert!(
            std::fs::read(&self.files[1]).unwrap() == self.pop3_message,
            "the good POP3 retrieval is not byte-exact"
        );
        let delivered = h.fake.directory().messages(RECIPIENT, "INBOX");
        assert!(
            delivered.contains(&self.smtp_message),
            "the good SMTP submission did not arrive byte-exact ({} messages)",
            delivered.len()
        );
    }
}
