//! The benchmark's world: the fake Exchange Online and Entra ID in a child process, the real
//! `oxbridge` binary as another child in front of it, and the accounts both paths use.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};
use tokio::sync::Mutex;

use crate::client::Credentials;
use crate::fake_process::{FakeProcess, CLIENT_ID, MAILBOX};

pub const PASSWORD: &str = "bench-password";

/// Everything a benchmark needs, started and ready.
pub struct World {
    fake: Mutex<FakeProcess>,
    pub proxy: SocketAddr,
    pub direct: SocketAddr,
    pub proxy_pop3: SocketAddr,
    pub direct_pop3: SocketAddr,
    pub proxy_smtp: SocketAddr,
    pub direct_smtp: SocketAddr,
    pub tls: Arc<rustls::ClientConfig>,
    pub direct_credentials: Credentials,
    dir: tempfile::TempDir,
    binary: PathBuf,
    child: Option<Child>,
}

impl World {
    pub async fn start(binary: &Path, pool: usize) -> anyhow::Result<World> {
        let mut fake = FakeProcess::start().await?;
        let dir = tempfile::tempdir()?;
        let root = dir.path();
        std::fs::write(root.join("ca.pem"), fake.field("ca_pem")?)?;
        std::fs::write(root.join("cert.pem"), fake.field("cert_pem")?)?;
        std::fs::write(root.join("key.pem"), fake.field("key_pem")?)?;
        std::fs::write(
            root.join("client-secret"),
            crate::fake_process::CLIENT_SECRET,
        )?;
        let (port, pop3_port, smtp_port) = (free_port()?, free_port()?, free_port()?);
        std::fs::write(
            root.join("oxbridge.toml"),
            format!(
                r#"data_dir = "{root}/data"
[admin]
listen = ""
[tls]
cert = "{root}/cert.pem"
key = "{root}/key.pem"
[[listener]]
protocol = "imap"
listen = "127.0.0.1:{port}"
tls = "implicit"
[[listener]]
protocol = "pop3"
listen = "127.0.0.1:{pop3_port}"
tls = "implicit"
[[listener]]
protocol = "smtp"
listen = "127.0.0.1:{smtp_port}"
tls = "starttls"
[upstream.pop3]
address = "{pop3}"
tls = "implicit"
ca_file = "{root}/ca.pem"
server_name = "outlook.office365.com"
[upstream.smtp]
address = "{smtp}"
tls = "starttls"
ca_file = "{root}/ca.pem"
server_name = "outlook.office365.com"
[upstream.imap]
address = "{imap}"
tls = "implicit"
ca_file = "{root}/ca.pem"
server_name = "outlook.office365.com"
pool_size = {pool}
[[app]]
name = "bench"
authority = "{authority}"
tenant = "{tenant}"
client_id = "{CLIENT_ID}"
client_secret_file = "{root}/client-secret"
ca_file = "{root}/ca.pem"
[limits]
max_connections = 20000
"#,
                root = root.display(),
                imap = fake.field("imap")?,
                pop3 = fake.field("pop3")?,
                smtp = fake.field("smtp")?,
                authority = fake.field("authority")?,
                tenant = fake.field("tenant")?,
            ),
        )?;
        let token = fake.request(json!({"op": "direct_token"})).await?["token"]
            .as_str()
            .context("no direct token")?
            .to_string();
        let mut roots = rustls::RootCertStore::empty();
        for cert in oxbridge_wire::tls::certs_from_pem(fake.field("ca_pem")?.as_bytes()) {
            roots.add(cert)?;
        }
        let tls = oxbridge_wire::tls::client_config_with_roots(roots)?;
        let mut world = World {
            proxy: SocketAddr::from(([127, 0, 0, 1], port)),
            direct: fake.field("imap")?.parse()?,
            proxy_pop3: SocketAddr::from(([127, 0, 0, 1], pop3_port)),
            direct_pop3: fake.field("pop3")?.parse()?,
            proxy_smtp: SocketAddr::from(([127, 0, 0, 1], smtp_port)),
            direct_smtp: fake.field("smtp")?.parse()?,
            tls,
            direct_credentials: Credentials::Token {
                mailbox: MAILBOX.into(),
                token,
            },
            fake: Mutex::new(fake),
            dir,
            binary: binary.to_path_buf(),
            child: None,
        };
        world.start_proxy().await?;
        Ok(world)
    }

    /// (Re)starts oxbridge, so a measurement sees a fresh process.
    pub async fn start_proxy(&mut self) -> anyhow::Result<()> {
        self.stop_proxy().await;
        let log = std::env::var("OXBRIDGE_BENCH_LOG").unwrap_or_else(|_| "warn".into());
        let child = Command::new(&self.binary)
            .arg("serve")
            .arg("--config")
            .arg(self.dir.path().join("oxbridge.toml"))
            .env("RUST_LOG", log)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot run {}", self.binary.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(self.proxy).await.is_err() {
            if Instant::now() > deadline {
                bail!("oxbridge did not start listening");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Adds a delegated account (with its own refresh token) through the real CLI.
    pub async fn add_account(&self, user: &str) -> anyhow::Result<Credentials> {
        let reply = self
            .fake
            .lock()
            .await
            .request(json!({"op": "issue_refresh_token"}))
            .await?;
        let rt_file = self.dir.path().join(format!("{user}.rt"));
        std::fs::write(
            &rt_file,
            reply["token"].as_str().context("no refresh token")?,
        )?;
        let mut child = Command::new(&self.binary)
            .args(["account", "--config"])
            .arg(self.dir.path().join("oxbridge.toml"))
            .args([
                "add",
                user,
                "--mailbox",
                MAILBOX,
                "--app",
                "bench",
                "--protocols",
                "imap,pop3,smtp",
            ])
            .arg("--refresh-token-file")
            .arg(&rt_file)
            .arg("--password-stdin")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()?;
        let mut stdin = child.stdin.take().context("stdin")?;
        stdin.write_all(PASSWORD.as_bytes()).await?;
        drop(stdin);
        if !child.wait().await?.success() {
            bail!("account add {user} failed");
        }
        Ok(Credentials::Password {
            user: user.into(),
            password: PASSWORD.into(),
        })
    }

    /// Puts a message of `size` bytes into `folder`; returns its UID.
    pub async fn deliver(&self, folder: &str, size: usize) -> anyhow::Result<u32> {
        let reply = self
            .fake
            .lock()
            .await
            .request(json!({"op": "deliver", "folder": folder, "size": size}))
            .await?;
        Ok(reply["uid"].as_u64().context("no uid")? as u32)
    }

    /// Stops oxbridge as an operator would (SIGTERM: drain, then exit), so a profiler
    /// wrapped around it (`--oxbridge` a wrapper script) gets to write its results; killed
    /// if it is not gone within 30 s.
    pub async fn stop_proxy(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child.id() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        if tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }

    fn proxy_pid(&self) -> anyhow::Result<u32> {
        self.child
            .as_ref()
            .and_then(Child::id)
            .context("oxbridge exited")
    }

    /// CPU time (user + system) the oxbridge process has used so far, in seconds, threads
    /// that have exited included (the blocking pool's come and go). Counted in 10 ms ticks,
    /// so measure spans of a few hundred milliseconds at least.
    pub fn proxy_cpu_seconds(&self) -> anyhow::Result<f64> {
        // `/proc/PID/stat` counts in USER_HZ, which Linux fixes at 100 for this interface.
        const TICKS_PER_SECOND: f64 = 100.0;
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.proxy_pid()?))?;
        // The fields after the command name, which is in parentheses and may hold spaces;
        // utime and stime are the 14th and 15th of the line, the 12th and 13th of these.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .context("malformed stat")?
            .1
            .split_whitespace()
            .collect();
        let ticks = |i: usize| -> anyhow::Result<f64> {
            Ok(fields.get(i).context("short stat")?.parse::<f64>()?)
        };
        Ok((ticks(11)? + ticks(12)?) / TICKS_PER_SECOND)
    }

    /// The oxbridge process's resident memory, in KiB.
    pub fn proxy_rss_kib(&self) -> anyhow::Result<u64> {
        let pid = self.proxy_pid()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmRSS")
    }

    /// Number of token-endpoint requests so far.
    pub async fn token_requests(&self) -> anyhow::Result<usize> {
        let reply = self
            .fake
            .lock()
            .await
            .request(json!({"op": "token_requests"}))
            .await?;
        Ok(reply["count"].as_u64().context("no count")? as usize)
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
