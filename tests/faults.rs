//! Fault injection: the upstream refusing, stalling and resetting (through a TCP proxy this
//! test controls), the token endpoint failing every way Entra does, the store locked or
//! read-only, and `kill -9` in the middle of a token refresh. In every case clients get
//! their protocol's temporary-failure reply (never a hang, never "wrong password"),
//! sessions already spliced are unaffected, oxbridge recovers on its own once the fault
//! clears, and no refresh token is lost.

#![allow(clippy::unwrap_used)] // test scenarios: a panic is the failure report

mod hostile_support;
mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hostile_support::{
    assert_no_panic, metric, replace_config, set_limits, Conn, GoodSessions, GOOD_PASSWORD,
};
use oxbridge_fake::InjectedError;
use support::Harness;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with connections that arrive from now on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Forward both ways.
    Pass,
    /// Accept, then never connect upstream and never send a byte.
    Stall,
    /// Forward the TLS handshake and the greeting, then stop forwarding (sockets stay open)
    /// when oxbridge sends its first command.
    StallMidLogin,
    /// The same, but reset both sides instead.
    ResetMidLogin,
}

/// A TCP proxy between oxbridge and the fake's IMAP service that injects faults. It sees
/// only TLS records, so "mid-login" is found by counting oxbridge's application-data
/// records: the first is TLS 1.3's Finished, the second its first IMAP command.
struct FaultProxy {
    address: SocketAddr,
    target: SocketAddr,
    mode: Arc<Mutex<Mode>>,
    accepting: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// A kill switch per connection, newest last.
    kills: Arc<Mutex<Vec<watch::Sender<bool>>>>,
}

impl FaultProxy {
    async fn start(target: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = FaultProxy {
            address: listener.local_addr().unwrap(),
            target,
            mode: Arc::new(Mutex::new(Mode::Pass)),
            accepting: Mutex::new(None),
            kills: Arc::new(Mutex::new(Vec::new())),
        };
        proxy.accept_on(listener);
        proxy
    }

    fn accept_on(&self, listener: TcpListener) {
        let (mode, kills, target) = (self.mode.clone(), self.kills.clone(), self.target);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mode = *mode.lock().unwrap();
                let (kill, killed) = watch::channel(false);
                kills.lock().unwrap().push(kill);
                tokio::spawn(pump(client, target, mode, killed));
            }
        });
        *self.accepting.lock().unwrap() = Some(task);
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// Closes the listening socket: connections are refused.
    fn refuse(&self) {
        if let Some(task) = self.accepting.lock().unwrap().take() {
            task.abort();
        }
    }

    /// Listens again on the same port.
    async fn resume(&self) {
        let listener = loop {
            match TcpListener::bind(self.address).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        self.accept_on(listener);
    }

    /// Resets the newest connection, both sides.
    fn reset_newest(&self) {
        if let Some(kill) = self.kills.lock().unwrap().last() {
            let _ = kill.send(true);
        }
    }

    fn address(&self) -> String {
        self.address.to_string()
    }
}

/// Counts TLS application-data records in a byte stream.
#[derive(Default)]
struct Records {
    header: Vec<u8>,
    skip: usize,
    application: usize,
}

impl Records {
    /// Feeds bytes; returns the number of application-data records begun so far.
    fn feed(&mut self, mut bytes: &[u8]) -> usize {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (5 - self.header.len()).min(bytes.len());
            self.header.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.header.len() == 5 {
                if self.header[0] == 0x17 {
                    self.application += 1;
                }
                self.skip = usize::from(u16::from_be_bytes([self.header[3], self.header[4]]));
                self.header.clear();
            }
        }
        self.application
    }
}

fn reset(stream: &TcpStream) {
    let _ = stream.set_zero_linger();
}

async fn pump(
    mut client: TcpStream,
    target: SocketAddr,
    mode: Mode,
    mut killed: watch::Receiver<bool>,
) {
    if mode == Mode::Stall {
        let _ = killed.changed().await;
        reset(&client);
        return;
    }
    let Ok(mut upstream) = TcpStream::connect(target).await else {
        return;
    };
    let mut records = Records::default();
    let (mut from_client, mut from_upstream) = (vec![0u8; 65536], vec![0u8; 65536]);
    loop {
        tokio::select! {
            read = client.read(&mut from_client) => {
                let n = match read { Ok(0) | Err(_) => break, Ok(n) => n };
                let mid_login = records.feed(&from_client[..n]) >= 2;
                if mid_login && mode == Mode::ResetMidLogin {
                    reset(&client);
                    reset(&upstream);
                    return;
                }
                if mid_login && mode == Mode::StallMidLogin {
                    let _ = killed.changed().await;
                    return;
                }
                if upstream.write_all(&from_client[..n]).await.is_err() {
                    break;
                }
            }
            read = upstream.read(&mut from_upstream) => {
                let n = match read { Ok(0) | Err(_) => break, Ok(n) => n };
                if client.write_all(&from_upstream[..n]).await.is_err() {
                    break;
                }
            }
            _ = killed.changed() => {
                reset(&client);
                reset(&upstream);
                return;
            }
        }
    }
    let _ = client.shutdown().await;
    let _ = upstream.shutdown().await;
}

const UNAVAILABLE: &str =
    "NO [UNAVAILABLE] Mail service temporarily unavailable, try again later.\r\n";
const POP3_TEMP: &str =
    "-ERR [SYS/TEMP] Mail service temporarily unavailable, try again later.\r\n";
const SMTP_TEMP: &str = "454 4.7.0 Temporary authentication failure, try again later\r\n";

/// One IMAP LOGIN on a fresh connection: the tagged reply, and how long it took.
async fn imap_login(h: &Harness, user: &str) -> (String, Duration) {
    let started = Instant::now();
    let mut c = Conn::tls(h, h.imaps_port).await.unwrap();
    c.line().await.unwrap();
    c.send(format!("a LOGIN {user} {GOOD_PASSWORD}\r\nb LOGOUT\r\n").as_bytes())
        .await
        .unwrap();
    let reply = c
        .until("a ")
        .await
        .unwrap_or_else(|e| panic!("IMAP login for {user}: {e}\n{}", h.logs()));
    (
        reply.lines().last().unwrap_or("").to_string() + "\r\n",
        started.elapsed(),
    )
}

async fn pop3_login(h: &Harness, user: &str) -> String {
    let mut c = Conn::tls(h, h.pop3s_port).await.unwrap();
    c.line().await.unwrap();
    c.send(format!("USER {user}\r\nPASS {GOOD_PASSWORD}\r\n").as_bytes())
        .await
        .unwrap();
    c.line().await.unwrap();
    c.line().await.unwrap()
}

async fn smtp_login(h: &Harness, user: &str) -> String {
    let mut c = Conn::tls(h, h.smtps_port).await.unwrap();
    c.until("220 ").await.unwrap();
    c.send(b"EHLO faults.example\r\n").await.unwrap();
    c.until("250 ").await.unwrap();
    let plain = oxbridge_wire::sasl::encode_base64(format!("\0{user}\0{GOOD_PASSWORD}").as_bytes());
    c.send(format!("AUTH PLAIN {plain}\r\n").as_bytes())
        .await
        .unwrap();
    c.line().await.unwrap()
}

/// Retries an IMAP login until it succeeds; fails the test after `within`.
async fn recovers(h: &Harness, user: &str, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let (reply, _) = imap_login(h, user).await;
        if reply.starts_with("a OK") {
            return started.elapsed();
        }
        assert!(
            reply.ends_with(UNAVAILABLE),
            "only temporary failures while recovering: {reply}"
        );
        assert!(
            started.elapsed() < within,
            "no recovery within {within:?}:\n{}",
            h.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// oxbridge with all protocols, the good sessions' accounts and more delegated accounts
/// (one per name in `accounts`); not serving yet, so a test can change the config first.
async fn world(accounts: &[&str]) -> Harness {
    let h = Harness::start().await;
    h.add_pop3();
    h.add_smtp();
    set_limits(&h, "upstream_login_timeout_secs = 3");
    // The faults are the point here, not the throttle.
    h.append_config("[throttle]\nenabled = false\n");
    GoodSessions::prepare(&h).await;
    for user in accounts {
        let mailbox = format!("{user}@contoso.onmicrosoft.com");
        h.add_delegated_account(user, GOOD_PASSWORD, &mailbox).await;
    }
    h
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_faults_are_temporary_and_spare_established_sessions() {
    let mut h = world(&["victim"]).await;
    // oxbridge reaches the fake's IMAP service through the fault proxy.
    let proxy = FaultProxy::start(h.fake.imap_addr()).await;
    replace_config(
        &h,
        &format!("address = \"{}\"", h.fake.imap_addr()),
        &format!(
            "address = \"{}\"\nconnect_timeout_secs = 2",
            proxy.address()
        ),
    );
    h.serve().await;
    let pid = h.pid().unwrap();

    let good = GoodSessions::start(&h).await;

    // Refused: nobody listens upstream.
    proxy.refuse();
    let (reply, took) = imap_login(&h, "victim").await;
    assert_eq!(reply, format!("a {UNAVAILABLE}"));
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(pop3_login(&h, hostile_support::POP3_USER)
        .await
        .starts_with("+OK"));
    proxy.resume().await;

    // Accepts, then says nothing (not even a TLS handshake): the connect timeout.
    proxy.set(Mode::Stall);
    let (reply, took) = imap_login(&h, "victim").await;
    assert_eq!(reply, format!("a {UNAVAILABLE}"));
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(8),
        "{took:?}"
    );

    // Greets, then stalls in the middle of the login: the login timeout.
    proxy.set(Mode::StallMidLogin);
    let (reply, took) = imap_login(&h, "victim").await;
    assert_eq!(reply, format!("a {UNAVAILABLE}"));
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(10),
        "{took:?}"
    );

    // Resets in the middle of the login.
    proxy.set(Mode::ResetMidLogin);
    let (reply, took) = imap_login(&h, "victim").await;
    assert_eq!(reply, format!("a {UNAVAILABLE}"));
    assert!(took < Duration::from_secs(5), "{took:?}");

    // Recovery needs no restart.
    proxy.set(Mode::Pass);
    recovers(&h, "victim", Duration::from_secs(10)).await;

    // Resets in the middle of a splice: that client's connection ends at once (no hang);
    // the others carry on.
    let mut victim = Conn::tls(&h, h.imaps_port).await.unwrap();
    victim.line().await.unwrap();
    victim
        .send(format!("a LOGIN victim {GOOD_PASSWORD}\r\nb SELECT INBOX\r\n").as_bytes())
        .await
        .unwrap();
    victim.until("b OK").await.unwrap();
    proxy.reset_newest();
    let started = Instant::now();
    let rest = victim
        .rest_until_closed(Duration::from_secs(10))
        .await
        .expect("the spliced client is closed when the upstream resets");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(rest.is_empty(), "{rest}");
    recovers(&h, "victim", Duration::from_secs(10)).await;

    good.finish(&h).await;
    assert_eq!(h.pid(), Some(pid), "no restart");
    let metrics = h.admin_get("/metrics").await;
    let unavailable = metric(
        &metrics,
        "oxbridge_upstream_unavailable_total",
        &[("protocol", "imap")],
    );
    assert!(unavailable >= 4.0, "{unavailable}");
    assert_no_panic(&h);
}

#[tokio::test(flavor = "multi_thread")]
async fn token_endpoint_faults_are_temporary_and_recover_without_restart() {
    let cases = ["http500", "http503", "http429", "garbage", "timeout"];
    let mut h = world(&cases).await;
    h.serve().await;
    let pid = h.pid().unwrap();
    let good = GoodSessions::start(&h).await;
    let entra = h.fake.entra();

    for case in cases {
        // Each case is a fresh account, so its first login needs a token request.
        match case {
            "http500" => entra.inject_error(Some(InjectedError::server_error())),
            "http503" => entra.set_unavailable(true),
            "http429" => entra.inject_error(Some(InjectedError::TooManyRequests {
                retry_after_secs: 2,
            })),
            "garbage" => entra.inject_error(Some(InjectedError::GarbageBody)),
            "timeout" => entra.set_delay(Duration::from_secs(17)),
            _ => unreachable!(),
        }
        let requests = entra.token_requests();
        let (reply, took) = imap_login(&h, case).await;
        assert_eq!(reply, format!("a {UNAVAILABLE}"), "{case}");
        assert!(
            entra.token_requests() > requests,
            "{case}: no token request"
        );
        // While the broker holds off, every protocol gets its temporary reply at once, and
        // the endpoint is not hammered.
        let held = entra.token_requests();
        assert_eq!(pop3_login(&h, case).await, POP3_TEMP, "{case}");
        assert_eq!(smtp_login(&h, case).await, SMTP_TEMP, "{case}");
        assert!(
            entra.token_requests() <= held + 1,
            "{case}: token requests stampeded"
        );
        eprintln!("{case}: temporary failure after {took:?}");

        entra.inject_error(None);
        entra.set_unavailable(false);
        entra.set_delay(Duration::ZERO);
        let recovery = recovers(&h, case, Duration::from_secs(30)).await;
        eprintln!("{case}: recovered {recovery:?} after the fault cleared");
        assert_eq!(
            pop3_login(&h, case).await,
            "+OK User successfully authenticated.\r\n"
        );
    }

    good.finish(&h).await;
    assert_eq!(h.pid(), Some(pid), "no restart");
    assert_no_panic(&h);
}

/// The refresh token the store holds for `user`, read with oxbridge's own store code while
/// oxbridge is down.
async fn stored_refresh_token(h: &Harness, user: &str) -> String {
    let config = oxbridge_server::Config::load(&h.config).unwrap();
    let store = oxbridge_server::open_store(&config).unwrap();
    let account = store.account(user).await.unwrap().unwrap();
    let token = store
        .refresh_token(account.id, None)
        .await
        .unwrap()
        .unwrap();
    token.expose_str().unwrap().to_string()
}

/// Holds SQLite's write lock on the store (`BEGIN IMMEDIATE`) from another process until
/// the returned child is killed, as a second replica or an admin's sqlite3 shell would.
fn lock_database(h: &Harness) -> std::process::Child {
    let db = h.data_dir().join("oxbridge.db");
    let mut child = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3, sys, time\n\
             c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)\n\
             c.execute('BEGIN IMMEDIATE')\n\
             print('LOCKED', flush=True)\n\
             time.sleep(3600)\n",
        )
        .arg(db)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "LOCKED");
    child
}

#[tokio::test(flavor = "multi_thread")]
async fn a_locked_or_read_only_store_is_temporary_and_loses_no_refresh_token() {
    let mut h = world(&["locked", "readonly"]).await;
    h.serve().await;
    let pid = h.pid().unwrap();
    let good = GoodSessions::start(&h).await;

    // Locked by another writer for longer than oxbridge's busy timeout (5 s): the rotated
    // refresh token cannot be saved, so the access token is not used either.
    let mut locker = lock_database(&h);
    let (reply, took) = imap_login(&h, "locked").await;
    assert_eq!(reply, format!("a {UNAVAILABLE}"), "{}", h.logs());
    assert!(took >= Duration::from_secs(4), "{took:?}");
    locker.kill().unwrap();
    locker.wait().unwrap();
    recovers(&h, "locked", Duration::from_secs(30)).await;

    // Read-only: the database and its write-ahead log are made immutable (even root
    // cannot write them). Needs CAP_LINUX_IMMUTABLE and a filesystem with the attribute;
    // where that is missing the case is reported as not run rather than passed. Not the
    // `-shm` file: SQLite maps it into memory, and any SQLite process writing to an
    // immutable mapping dies of SIGBUS (checked with Python's sqlite3 as well), which no
    // error handling can answer.
    let data = h.data_dir();
    let files: Vec<_> = ["oxbridge.db", "oxbridge.db-wal"]
        .iter()
        .map(|f| data.join(f))
        .filter(|f| f.exists())
        .collect();
    let chattr = |flag: &str| {
        std::process::Command::new("chattr")
            .arg(flag)
            .args(&files)
            .status()
            .is_ok_and(|s| s.success())
    };
    if chattr("+i") {
        let (reply, _) = imap_login(&h, "readonly").await;
        assert!(chattr("-i"));
        assert_eq!(reply, format!("a {UNAVAILABLE}"), "{}", h.logs());
        recovers(&h, "readonly", Duration::from_secs(30)).await;
    } else {
        eprintln!("NOT RUN: read-only store case (chattr +i is not permitted here)");
    }

    good.finish(&h).await;
    assert_eq!(h.pid(), Some(pid), "no restart");
    assert_no_panic(&h);
}

fn kill_9(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_during_a_token_refresh_loses_no_refresh_token() {
    let mut h = world(&["inflight", "persisting", "persisted"]).await;
    h.serve().await;
    let entra = h.fake.entra().clone();
    let original = stored_refresh_token(&h, "inflight").await;

    // 1. Killed while the token request is in flight (Entra answers after 3 s).
    entra.set_delay(Duration::from_secs(3));
    let requests = entra.token_requests();
    let login = {
        let port = h.imaps_port;
        let endpoint = hostile_support::endpoint(&h, port);
        tokio::spawn(async move {
            let mut c = Conn::from_io(endpoint.connect_tls().await.unwrap());
            c.line().await.unwrap();
            c.send(format!("a LOGIN inflight {GOOD_PASSWORD}\r\n").as_bytes())
                .await
                .unwrap();
            c.rest_until_closed(Duration::from_secs(30)).await
        })
    };
    while entra.token_requests() == requests {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    kill_9(h.pid().unwrap());
    h.stop().await;
    assert_eq!(
        login.await.unwrap().as_deref(),
        Some(""),
        "the client saw the process die"
    );
    entra.set_delay(Duration::ZERO);
    // The old token is kept: Entra may have rotated meanwhile, but it does not revoke the
    // token it rotated from (EXCHANGE.md §4.6), so the account still works.
    assert_eq!(stored_refresh_token(&h, "inflight").await, original);

    // 2. Killed after Entra rotated the token, while oxbridge waits to write it (the store
    // is locked by another writer).
    h.serve().await;
    let original = stored_refresh_token(&h, "persisting").await;
    let mut locker = lock_database(&h);
    let requests = entra.token_requests();
    let login = {
        let endpoint = hostile_support::endpoint(&h, h.imaps_port);
        tokio::spawn(async move {
            let mut c = Conn::from_io(endpoint.connect_tls().await.unwrap());
            c.line().await.unwrap();
            c.send(format!("a LOGIN persisting {GOOD_PASSWORD}\r\n").as_bytes())
                .await
                .unwrap();
            c.rest_until_closed(Duration::from_secs(30)).await
        })
    };
    while entra.token_requests() == requests {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    kill_9(h.pid().unwrap());
    h.stop().await;
    let _ = login.await;
    locker.kill().unwrap();
    locker.wait().unwrap();
    assert_eq!(stored_refresh_token(&h, "persisting").await, original);

    // 3. Killed right after a refresh completed: the rotated token is on disk. Strict
    // rotation (a superseded token refused) proves the stored one is the newest.
    h.serve().await;
    let before = stored_refresh_token(&h, "persisted").await;
    let (reply, _) = imap_login(&h, "persisted").await;
    assert!(reply.starts_with("a OK"), "{reply}");
    kill_9(h.pid().unwrap());
    h.stop().await;
    let after = stored_refresh_token(&h, "persisted").await;
    assert_ne!(
        after, before,
        "the rotated refresh token was saved before it was used"
    );
    assert!(entra.issued_secrets().contains(&after));
    entra.set_strict_rotation(true);

    // After a restart every account works, with a new refresh (the access tokens were in
    // the dead process's memory only).
    h.serve().await;
    let requests = entra.token_requests();
    let (reply, _) = imap_login(&h, "persisted").await;
    assert!(
        reply.starts_with("a OK"),
        "strict rotation: {reply}\n{}",
        h.logs()
    );
    assert!(entra.token_requests() > requests, "a new refresh happened");
    entra.set_strict_rotation(false);
    for user in ["inflight", "persisting"] {
        let (reply, _) = imap_login(&h, user).await;
        assert!(reply.starts_with("a OK"), "{user}: {reply}\n{}", h.logs());
        let account = h.show_account(user).await;
        assert_eq!(account["status"], "active", "{account}");
    }
    assert_no_panic(&h);
}
