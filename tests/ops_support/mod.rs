//! Helpers shared by the operations scenarios (`tests/ops_*.rs`): the raw-socket client
//! (`tests/clients/opsclient.py`), signals to the running oxbridge, and admin HTTP calls
//! that report the status code.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

use crate::support::{client_script, Harness};

/// The raw-socket client helper.
pub fn ops_script() -> PathBuf {
    client_script().with_file_name("opsclient.py")
}

/// Runs the ops client to completion.
pub async fn ops_client(h: &Harness, args: &[&str]) -> Output {
    Command::new("python3")
        .arg(ops_script())
        .arg("--ca")
        .arg(&h.ca_file)
        .args(args)
        .output()
        .await
        .expect("python3 runs")
}

/// A running ops client and its stdout, line by line.
pub struct Waiting {
    pub child: Child,
    stdout: BufReader<ChildStdout>,
}

impl Waiting {
    /// Starts the client and waits until it prints READY (its session is established).
    pub async fn start(h: &Harness, args: &[&str]) -> Waiting {
        let mut child = Command::new("python3")
            .arg("-u")
            .arg(ops_script())
            .arg("--ca")
            .arg(&h.ca_file)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut waiting = Waiting { child, stdout };
        let line = waiting.line(Duration::from_secs(30)).await;
        assert_eq!(
            line.trim(),
            "READY",
            "client did not get its session: {line}\n{}",
            h.logs()
        );
        waiting
    }

    /// The next line of output.
    pub async fn line(&mut self, within: Duration) -> String {
        let mut line = String::new();
        tokio::time::timeout(within, self.stdout.read_line(&mut line))
            .await
            .expect("client output in time")
            .unwrap();
        line
    }

    /// The client's final JSON report.
    pub async fn report(&mut self, within: Duration) -> serde_json::Value {
        let line = self.line(within).await;
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    }
}

/// Sends a signal (`"HUP"`, `"TERM"`) to the running oxbridge.
pub fn signal(h: &Harness, name: &str) {
    let pid = h.pid().expect("oxbridge runs");
    let status = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// An HTTP request to the admin listener: status code (0 if nothing answered) and body.
pub async fn admin(h: &Harness, method: &str, path: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["--silent", "--max-time", "20", "-X", method])
        .args(["--write-out", "\n%{http_code}"])
        .arg(format!("http://127.0.0.1:{}{path}", h.admin_port))
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// Polls `check` every 50 ms until it holds; panics with `what` after `within`.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub async fn accepts(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
}

/// Replaces `from` with `to` in the config file (exactly once).
pub fn edit_config(h: &Harness, from: &str, to: &str) {
    let text = std::fs::read_to_string(&h.config).unwrap();
    assert_eq!(text.matches(from).count(), 1, "{from:?} in\n{text}");
    std::fs::write(&h.config, text.replace(from, to)).unwrap();
}
