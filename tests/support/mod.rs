//! The end-to-end harness: a fake Exchange Online in this process, the real `oxbridge`
//! binary as a child process with a generated config, and real clients (curl, Python).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use oxbridge_fake::{FakeExchange, FakeOptions};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};

pub const CLIENT_ID: &str = "6f1d2c3b-4a5e-4f60-8a7b-9c0d1e2f3a4b";
pub const CLIENT_SECRET: &str = "fake-client-secret-value-for-tests";
pub const TENANT: &str = "contoso.onmicrosoft.com";

/// The built binary under test.
pub fn oxbridge_bin() -> &'static str {
    env!("CARGO_BIN_EXE_oxbridge")
}

/// The Python client helpers.
pub fn client_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/clients/mailclient.py")
}

/// A port free right now on 127.0.0.1 and never handed out before in this process, so two
/// listeners of one test, or of tests running side by side, never get the same one. (Another
/// process may still take it before oxbridge binds it: `serve` then moves the ports.)
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
        if handed_out.insert(port) {
            return port;
        }
    }
}

/// One test's world: the fake, a data directory, a config file and (when running) oxbridge.
pub struct Harness {
    pub fake: FakeExchange,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub ca_file: PathBuf,
    pub imaps_port: u16,
    pub starttls_port: u16,
    pub admin_port: u16,
    /// Free ports for other protocols' listeners (see [`Harness::append_config`]).
    pub pop3s_port: u16,
    pub pop3_port: u16,
    pub submission_port: u16,
    pub smtps_port: u16,
    child: Option<Child>,
    log_file: PathBuf,
    runs: u32,
}

impl Harness {
    /// Starts the fake and writes a config for oxbridge in front of it.
    pub async fn start() -> Harness {
        let fake = FakeExchange::start(FakeOptions::default())
            .await
            .expect("fake starts");
        fake.entra().register_app(CLIENT_ID, CLIENT_SECRET);
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        let ca_file = root.join("ca.pem");
        std::fs::write(&ca_file, fake.pki().ca_pem()).unwrap();
        std::fs::write(root.join("cert.pem"), fake.pki().leaf_cert_pem()).unwrap();
        std::fs::write(root.join("key.pem"), fake.pki().leaf_key_pem()).unwrap();
        std::fs::write(root.join("client-secret"), CLIENT_SECRET).unwrap();
        let (imaps_port, starttls_port, admin_port) = (free_port(), free_port(), free_port());
        let config = root.join("oxbridge.toml");
        std::fs::write(
            &config,
            format!(
                r#"
data_dir = "{data}"

[admin]
listen = "127.0.0.1:{admin_port}"

[tls]
cert = "{root}/cert.pem"
key = "{root}/key.pem"

[[listener]]
protocol = "imap"
listen = "127.0.0.1:{imaps_port}"
tls = "implicit"

[[listener]]
protocol = "imap"
listen = "127.0.0.1:{starttls_port}"
tls = "starttls"

[upstream.imap]
address = "{imap}"
tls = "implicit"
ca_file = "{root}/ca.pem"
server_name = "outlook.office365.com"

[[app]]
name = "contoso"
authority = "{authority}"
tenant = "{TENANT}"
client_id = "{CLIENT_ID}"
client_secret_file = "{root}/client-secret"
ca_file = "{root}/ca.pem"

[limits]
pre_auth_timeout_secs = 20
shutdown_grace_secs = 2
"#,
                data = root.join("data").display(),
                root = root.display(),
                imap = fake.imap_addr(),
                authority = fake.authority(),
            ),
        )
        .unwrap();
        let log_file = root.join("oxbridge.log");
        Harness {
            fake,
            config,
            ca_file,
            imaps_port,
            starttls_port,
            admin_port,
            pop3s_port: free_port(),
            pop3_port: free_port(),
            submission_port: free_port(),
            smtps_port: free_port(),
            child: None,
            log_file,
            runs: 0,
            dir,
        }
    }

    /// Appends TOML (more `[[listener]]`s, `[upstream.…]` tables) to the config file; call
    /// before [`Harness::serve`].
    pub fn append_config(&self, toml: &str) {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.config)
            .unwrap();
        writeln!(file, "\n{toml}").unwrap();
    }

    /// The directory holding the test CA, certificate and key (for config snippets).
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Runs `oxbridge account …` with `stdin` piped in.
    pub async fn account(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = Command::new(oxbridge_bin())
            .arg("account")
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("oxbridge runs");
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.as_bytes()).await.unwrap();
        drop(input);
        child.wait_with_output().await.unwrap()
    }

    /// Adds a delegated account whose mailbox exists in the fake; returns its refresh token.
    pub async fn add_delegated_account(&self, user: &str, password: &str, mailbox: &str) -> String {
        self.add_delegated_account_for(user, password, mailbox, "imap,pop3,smtp")
            .await
    }

    /// Adds a delegated account allowed only `protocols` (comma-separated).
    pub async fn add_delegated_account_for(
        &self,
        user: &str,
        password: &str,
        mailbox: &str,
        protocols: &str,
    ) -> String {
        self.add_refresh_token_account(user, password, mailbox, &["--protocols", protocols])
            .await
    }

    /// Adds a password-sealed delegated account (see docs/onboarding.md); returns its
    /// refresh token.
    pub async fn add_sealed_account(&self, user: &str, password: &str, mailbox: &str) -> String {
        self.add_refresh_token_account(user, password, mailbox, &["--password-sealed"])
            .await
    }

    /// `account add` with an imported refresh token for `mailbox` (created in the fake).
    async fn add_refresh_token_account(
        &self,
        user: &str,
        password: &str,
        mailbox: &str,
        options: &[&str],
    ) -> String {
        self.fake.directory().add_mailbox(mailbox);
        let token = self.fake.entra().issue_refresh_token(CLIENT_ID, mailbox);
        let token_file = self.dir.path().join(format!("{user}.rt"));
        std::fs::write(&token_file, &token).unwrap();
        let mut args = vec![
            "add",
            user,
            "--mailbox",
            mailbox,
            "--app",
            "contoso",
            "--refresh-token-file",
            token_file.to_str().unwrap(),
            "--password-stdin",
        ];
        args.extend_from_slice(options);
        let out = self.account(&args, &format!("{password}\n")).await;
        assert!(
            out.status.success(),
            "account add failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::remove_file(&token_file).unwrap();
        token
    }

    /// Adds an app-only account.
    pub async fn add_app_only_account(&self, user: &str, password: &str, mailbox: &str) {
        self.fake.directory().add_mailbox(mailbox);
        self.fake.entra().grant_app_access(CLIENT_ID, mailbox);
        let out = self
            .account(
                &[
                    "add",
                    user,
                    "--mailbox",
                    mailbox,
                    "--app",
                    "contoso",
                    "--client-credentials",
                    "--password-stdin",
                ],
                password,
            )
            .await;
        assert!(
            out.status.success(),
            "account add failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The account as `oxbridge account show --json` prints it.
    pub async fn show_account(&self, user: &str) -> serde_json::Value {
        let out = self.account(&["show", user, "--json"], "").await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("account JSON")
    }

    /// Starts `oxbridge serve` and waits until it accepts connections.
    pub async fn serve(&mut self) {
        self.serve_with_log("info").await
    }

    pub async fn serve_with_log(&mut self, level: &str) {
        // A port picked free may be taken by a parallel test before oxbridge binds it:
        // pick new ones and try again.
        for _ in 0..3 {
            match self.try_serve(level).await {
                Ok(()) => return,
                Err(logs) if logs.contains("Address already in use") => self.move_ports(),
                Err(logs) => panic!("oxbridge exited early:\n{logs}"),
            }
        }
        panic!("oxbridge could not bind its ports:\n{}", self.logs());
    }

    async fn try_serve(&mut self, level: &str) -> Result<(), String> {
        assert!(self.child.is_none(), "already running");
        self.runs += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_file)
            .unwrap();
        let child = Command::new(oxbridge_bin())
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", level)
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("oxbridge serve runs");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.imaps_port))
                .await
                .is_ok()
                && tokio::net::TcpStream::connect(("127.0.0.1", self.admin_port))
                    .await
                    .is_ok()
            {
                return Ok(());
            }
            if self.child.as_mut().unwrap().try_wait().unwrap().is_some() {
                self.child = None;
                return Err(self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "oxbridge did not start:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Gives every listener a new free port, in the fields and in the config file. New ports
    /// are never ones handed out before ([`free_port`]), so replacing one in the file can
    /// never rewrite another listener's line.
    fn move_ports(&mut self) {
        let mut config = std::fs::read_to_string(&self.config).unwrap();
        for port in [
            &mut self.imaps_port,
            &mut self.starttls_port,
            &mut self.admin_port,
            &mut self.pop3s_port,
            &mut self.pop3_port,
            &mut self.submission_port,
            &mut self.smtps_port,
        ] {
            let new = free_port();
            config = config.replace(
                &format!("127.0.0.1:{port}\""),
                &format!("127.0.0.1:{new}\""),
            );
            *port = new;
        }
        std::fs::write(&self.config, config).unwrap();
    }

    /// Stops oxbridge with SIGTERM and waits for it to exit.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                let _ = std::process::Command::new("kill")
                    .arg("-TERM")
                    .arg(pid.to_string())
                    .status();
            }
            let waited = tokio::time::timeout(Duration::from_secs(15), child.wait()).await;
            if waited.is_err() {
                let _ = child.kill().await;
                panic!("oxbridge did not stop on SIGTERM");
            }
        }
    }

    /// Everything oxbridge logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_file).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Runs the Python mail client helper with these arguments.
    pub async fn python(&self, args: &[&str]) -> Output {
        Command::new("python3")
            .arg(client_script())
            .arg("--ca")
            .arg(&self.ca_file)
            .args(args)
            .output()
            .await
            .expect("python3 runs")
    }

    /// Runs the Python helper with piped stdin/stdout, for interactive scenarios.
    pub fn python_interactive(&self, args: &[&str]) -> Child {
        Command::new("python3")
            .arg("-u")
            .arg(client_script())
            .arg("--ca")
            .arg(&self.ca_file)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs")
    }

    /// Runs curl, trusting the test CA.
    pub async fn curl(&self, args: &[&str]) -> Output {
        Command::new("curl")
            .arg("--silent")
            .arg("--show-error")
            .arg("--max-time")
            .arg("30")
            .arg("--cacert")
            .arg(&self.ca_file)
            .args(args)
            .output()
            .await
            .expect("curl runs")
    }

    pub fn imaps(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.imaps_port))
    }

    /// GET on the admin listener; returns the body.
    pub async fn admin_get(&self, path: &str) -> String {
        let out = Command::new("curl")
            .args(["--silent", "--fail", "--max-time", "10"])
            .arg(format!("http://127.0.0.1:{}{path}", self.admin_port))
            .output()
            .await
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Every file under the data directory, concatenated (for leak checks).
    pub fn data_dir_bytes(&self) -> Vec<u8> {
        let mut all = Vec::new();
        collect(&self.data_dir(), &mut all);
        all
    }

    /// Adds POP3 listeners (implicit TLS on `pop3s_port`, STLS on `pop3_port`) and points
    /// `[upstream.pop3]` at the fake; call before [`Harness::serve`].
    pub fn add_pop3(&self) {
        self.append_config(&format!(
            r#"
[[listener]]
protocol = "pop3"
listen = "127.0.0.1:{pop3s}"
tls = "implicit"

[[listener]]
protocol = "pop3"
listen = "127.0.0.1:{pop3}"
tls = "starttls"

[upstream.pop3]
address = "{upstream}"
tls = "implicit"
ca_file = "{root}/ca.pem"
server_name = "outlook.office365.com"
"#,
            pop3s = self.pop3s_port,
            pop3 = self.pop3_port,
            upstream = self.fake.pop3_addr(),
            root = self.root().display(),
        ));
    }

    /// Runs the Python POP3 client helper (`tests/clients/pop3client.py`).
    pub async fn pop3_client(&self, args: &[&str]) -> Output {
        Command::new("python3")
            .arg(client_script().with_file_name("pop3client.py"))
            .arg("--ca")
            .arg(&self.ca_file)
            .args(args)
            .output()
            .await
            .expect("python3 runs")
    }

    /// The POP3 client helper with piped stdin/stdout, for interactive scenarios.
    pub fn pop3_client_interactive(&self, args: &[&str]) -> Child {
        Command::new("python3")
            .arg("-u")
            .arg(client_script().with_file_name("pop3client.py"))
            .arg("--ca")
            .arg(&self.ca_file)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs")
    }

    /// Adds SMTP listeners (STARTTLS on `submission_port`, implicit TLS on `smtps_port`) and
    /// points `[upstream.smtp]` at the fake's STARTTLS submission service; call before
    /// [`Harness::serve`]. Relay rules are appended separately.
    pub fn add_smtp(&self) {
        self.append_config(&format!(
            r#"
[[listener]]
protocol = "smtp"
listen = "127.0.0.1:{submission}"
tls = "starttls"

[[listener]]
protocol = "smtp"
listen = "127.0.0.1:{smtps}"
tls = "implicit"

[upstream.smtp]
address = "{upstream}"
tls = "starttls"
ca_file = "{root}/ca.pem"
server_name = "outlook.office365.com"
"#,
            submission = self.submission_port,
            smtps = self.smtps_port,
            upstream = self.fake.smtp_addr(),
            root = self.root().display(),
        ));
    }

    /// Runs the Python SMTP client helper (`tests/clients/smtpclient.py`).
    pub async fn smtp_client(&self, args: &[&str]) -> Output {
        Command::new("python3")
            .arg(client_script().with_file_name("smtpclient.py"))
            .arg("--ca")
            .arg(&self.ca_file)
            .args(args)
            .output()
            .await
            .expect("python3 runs")
    }

    /// The SMTP client helper with piped stdin/stdout, for interactive scenarios.
    pub fn smtp_client_interactive(&self, args: &[&str]) -> Child {
        Command::new("python3")
            .arg("-u")
            .arg(client_script().with_file_name("smtpclient.py"))
            .arg("--ca")
            .arg(&self.ca_file)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs")
    }

    /// Starts `oxbridge account …` with `stdin` written and closed and stdout/stderr piped,
    /// for flows the test drives while the command runs (device code, browser sign-in).
    pub async fn account_interactive(&self, args: &[&str], stdin: &str) -> Child {
        let mut child = Command::new(oxbridge_bin())
            .arg("account")
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("oxbridge runs");
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.as_bytes()).await.unwrap();
        drop(input);
        child
    }
}

fn collect(dir: &Path, all: &mut Vec<u8>) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                collect(&path, all);
            } else if let Ok(bytes) = std::fs::read(&path) {
                all.extend_from_slice(&bytes);
            }
        }
    }
}

/// Whether `haystack` contains `needle`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
