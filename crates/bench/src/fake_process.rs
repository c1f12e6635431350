//! The fake Exchange Online in a process of its own, so that the direct path (benchmark
//! client ⇄ fake) and the proxied path (client ⇄ oxbridge ⇄ fake) each cross the same process
//! boundaries instead of the direct path sharing the client's threads.
//!
//! The parent controls it over the child's stdin/stdout, one JSON object per line.

use std::time::Duration;

use anyhow::Context;
use oxbridge_fake::{FakeExchange, FakeOptions};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

pub const MAILBOX: &str = "bench@contoso.onmicrosoft.com";
pub const CLIENT_ID: &str = "b3e7a0c1-0000-4000-8000-00000000be9c";
pub const CLIENT_SECRET: &str = "bench-client-secret";

/// Runs the fake until stdin closes, answering control requests (the child's side).
pub async fn serve() -> anyhow::Result<()> {
    let fake = FakeExchange::start(FakeOptions::default()).await?;
    fake.entra().register_app(CLIENT_ID, CLIENT_SECRET);
    fake.entra()
        .set_token_lifetime(Some(Duration::from_secs(4 * 3600)));
    fake.directory().add_mailbox(MAILBOX);
    fake.directory().set_connection_cap(100_000);
    fake.entra().grant_app_access(CLIENT_ID, MAILBOX);
    fake.directory()
        .deliver(MAILBOX, "INBOX", b"Subject: one\r\n\r\nsmall message\r\n");
    let mut body = b"Subject: 64 KiB\r\n\r\n".to_vec();
    body.resize(64 * 1024, b'y');
    fake.directory().deliver(MAILBOX, "INBOX", &body);

    let mut out = tokio::io::stdout();
    let hello = json!({
        "imap": fake.imap_addr().to_string(),
        "pop3": fake.pop3_addr().to_string(),
        "smtp": fake.smtp_addr().to_string(),
        "authority": fake.authority(),
        "tenant": fake.tenant(),
        "ca_pem": fake.pki().ca_pem(),
        "cert_pem": fake.pki().leaf_cert_pem(),
        "key_pem": fake.pki().leaf_key_pem(),
    });
    out.write_all(format!("{hello}\n").as_bytes()).await?;
    out.flush().await?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let request: Value = serde_json::from_str(&line)?;
        let reply = match request["op"].as_str().unwrap_or("") {
            "issue_refresh_token" => {
                json!({ "token": fake.entra().issue_refresh_token(CLIENT_ID, MAILBOX) })
            }
            "token_requests" => json!({ "count": fake.entra().token_requests() }),
            "deliver" => {
                let size = request["size"].as_u64().unwrap_or(0) as usize;
                let folder = request["folder"].as_str().unwrap_or("INBOX");
                let mut body = format!("Subject: {size} bytes\r\n\r\n").into_bytes();
                body.resize(size.max(body.len()), b'z');
                json!({ "uid": fake.directory().deliver(MAILBOX, folder, &body) })
            }
            "direct_token" => {
                let body = format!(
                    "grant_type=client_credentials&client_id={CLIENT_ID}&client_secret={CLIENT_SECRET}&scope=https%3A%2F%2Foutlook.office365.com%2F.default"
                );
                let reply = fake
                    .entra()
                    .token_request(fake.tenant(), None, body.as_bytes())
                    .await;
                let parsed: Value = serde_json::from_str(&reply.body)?;
                json!({ "token": parsed["access_token"] })
            }
            other => json!({ "error": format!("unknown op {other}") }),
        };
        out.write_all(format!("{reply}\n").as_bytes()).await?;
        out.flush().await?;
    }
    Ok(())
}

/// The parent's handle on the fake process.
pub struct FakeProcess {
    _child: Child,
    stdin: ChildStdin,
    stdout: tokio::io::Lines<BufReader<ChildStdout>>,
    pub hello: Value,
}

impl FakeProcess {
    /// Starts this benchmark binary again in fake-server mode.
    pub async fn start() -> anyhow::Result<FakeProcess> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("--fake-server")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdin = child.stdin.take().context("stdin")?;
        let mut stdout = BufReader::new(child.stdout.take().context("stdout")?).lines();
        let hello = stdout.next_line().await?.context("the fake exited")?;
        Ok(FakeProcess {
            _child: child,
            stdin,
            stdout,
            hello: serde_json::from_str(&hello)?,
        })
    }

    /// Sends one request and waits for its reply.
    pub async fn request(&mut self, request: Value) -> anyhow::Result<Value> {
        self.stdin
            .write_all(format!("{request}\n").as_bytes())
            .await?;
        self.stdin.flush().await?;
        let line = self.stdout.next_line().await?.context("the fake exited")?;
        Ok(serde_json::from_str(&line)?)
    }

    pub fn field(&self, name: &str) -> anyhow::Result<String> {
        self.hello[name]
            .as_str()
            .map(str::to_string)
            .context("missing field from the fake")
    }
}
