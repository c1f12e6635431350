//! Several oxbridge replicas sharing one PostgreSQL store, end to end: the real binary, a
//! real PostgreSQL (tests/pg/start.sh), the fake Exchange Online and Python's imaplib.
//!
//! Skipped loudly when PostgreSQL is not installed (failed instead under
//! `OXBRIDGE_REQUIRE_PG=1`, as in CI).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test scenarios: a panic is the report

#[path = "pg/mod.rs"]
mod pg;
mod support;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use pg::Postgres;
use support::{free_port, oxbridge_bin, stderr, stdout, Harness};
use tokio::process::{Child, Command};

const PASSWORD: &str = "correct horse battery staple";
const MAILBOX: &str = "alex@contoso.onmicrosoft.com";

/// One `oxbridge serve` process with its own ports and data directory.
struct Replica {
    child: Option<Child>,
    imaps_port: u16,
    admin_port: u16,
    log: PathBuf,
}

impl Replica {
    async fn start(h: &Harness, name: &str) -> Replica {
        for _ in 0..3 {
            let (imaps_port, starttls_port, admin_port) = (free_port(), free_port(), free_port());
            let mut config = std::fs::read_to_string(&h.config).unwrap();
            for (old, new) in [
                (h.imaps_port, imaps_port),
                (h.starttls_port, starttls_port),
                (h.admin_port, admin_port),
            ] {
                config =
                    config.replace(&format!("127.0.0.1:{old}\""), &format!("127.0.0.1:{new}\""));
            }
            let data = h.root().join(format!("data-{name}"));
            config = config.replace(
                &format!("data_dir = \"{}\"", h.data_dir().display()),
                &format!("data_dir = \"{}\"", data.display()),
            );
            let path = h.root().join(format!("{name}.toml"));
            std::fs::write(&path, config).unwrap();
            let log = h.root().join(format!("{name}.log"));
            let child = Command::new(oxbridge_bin())
                .args(["serve", "--config"])
                .arg(&path)
                .env("RUST_LOG", "info,oxbridge_broker=debug")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .kill_on_drop(true)
                .spawn()
                .unwrap();
            let mut replica = Replica {
                child: Some(child),
                imaps_port,
                admin_port,
                log,
            };
            if replica.wait_ready().await {
                return replica;
            }
            assert!(
                replica.logs().contains("Address already in use"),
                "replica {name} did not start:\n{}",
                replica.logs()
            );
        }
        panic!("replica {name} could not bind its ports");
    }

    async fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.imaps_port))
                .await
                .is_ok()
            {
                return true;
            }
            if self.child.as_mut().unwrap().try_wait().unwrap().is_some() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("replica did not start in time:\n{}", self.logs());
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// kill -9: no shutdown, no rollback, connections just vanish.
    async fn kill9(&mut self) {
        let mut child = self.child.take().unwrap();
        let pid = child.id().unwrap();
        let status = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let _ = child.wait().await;
    }

    async fn readyz(&self) -> String {
        let out = Command::new("curl")
            .args(["--silent", "--max-time", "10"])
            .arg(format!("http://127.0.0.1:{}/readyz", self.admin_port))
            .output()
            .await
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// `n` concurrent imaplib logins (LOGIN, SELECT, LOGOUT) against one replica: (ok, total).
async fn logins(h: &Harness, replica: &Replica, user: &str, n: usize) -> (u64, u64) {
    let out = h
        .python(&[
            "concurrent",
            "--port",
            &replica.imaps_port.to_string(),
            "--user",
            user,
            "--password",
            PASSWORD,
            "--n",
            &n.to_string(),
        ])
        .await;
    let json: serde_json::Value = serde_json::from_str(stdout(&out).trim())
        .unwrap_or_else(|_| panic!("client output: {} {}", stdout(&out), stderr(&out)));
    (
        json["ok"].as_u64().unwrap(),
        json["total"].as_u64().unwrap(),
    )
}

/// A harness whose config points at `pg`, with a master key file shared by every replica.
async fn world(pg: &Postgres) -> Harness {
    let h = Harness::start().await;
    let key_file = h.root().join("master.key");
    let key = oxbridge_store::MasterKey::generate();
    std::fs::write(&key_file, key.to_base64().expose()).unwrap();
    set_private(&key_file);
    h.append_config(&format!(
        "[store]\nurl = \"{}\"\nmaster_key_file = \"{}\"\n",
        pg.url,
        key_file.display()
    ));
    h
}

fn set_private(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn hundred_concurrent_logins_on_three_replicas_make_one_token_request() {
    let Some(pg) = Postgres::start("hundred_concurrent_logins_on_three_replicas") else {
        return;
    };
    let h = world(&pg).await;
    h.add_delegated_account("alex", PASSWORD, MAILBOX).await;
    // A slow token endpoint makes every replica's logins pile up behind the one request.
    h.fake.entra().set_delay(Duration::from_millis(700));
    // Exchange caps concurrent IMAP sessions per mailbox at 20; this test is about tokens,
    // so let all 100 sessions in.
    h.fake.directory().set_connection_cap(200);
    let a = Replica::start(&h, "a").await;
    let b = Replica::start(&h, "b").await;
    let c = Replica::start(&h, "c").await;
    let before = h.fake.entra().token_requests();
    let (ra, rb, rc) = tokio::join!(
        logins(&h, &a, "alex", 34),
        logins(&h, &b, "alex", 33),
        logins(&h, &c, "alex", 33)
    );
    assert_eq!(
        (ra.0 + rb.0 + rc.0, ra.1 + rb.1 + rc.1),
        (100, 100),
        "every login succeeds:\n{}\n{}\n{}",
        a.logs(),
        b.logs(),
        c.logs()
    );
    assert_eq!(
        h.fake.entra().token_requests() - before,
        1,
        "one token request across all replicas"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refresh_on_one_replica_is_used_by_the_next_under_strict_rotation() {
    let Some(pg) = Postgres::start("a_refresh_on_one_replica_is_used_by_the_next") else {
        return;
    };
    let h = world(&pg).await;
    h.add_delegated_account("alex", PASSWORD, MAILBOX).await;
    h.fake.entra().set_strict_rotation(true);
    // Tokens shorter than the refresh margin: every login needs a refresh, so each replica
    // must use the refresh token the other one just rotated (the old one is refused).
    h.fake
        .entra()
        .set_token_lifetime(Some(Duration::from_secs(120)));
    let a = Replica::start(&h, "a").await;
    let b = Replica::start(&h, "b").await;
    for round in 0..3 {
        for (name, replica) in [("a", &a), ("b", &b)] {
            let before = h.fake.entra().token_requests();
            let (ok, _) = logins(&h, replica, "alex", 1).await;
            assert_eq!(ok, 1, "round {round} on {name}:\n{}", replica.logs());
            assert_eq!(h.fake.entra().token_requests() - before, 1);
        }
    }
    let account = h.show_account("alex").await;
    assert_eq!(account["status"], "active", "{account}");
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_a_replica_in_the_middle_of_a_refresh_loses_nothing() {
    let Some(pg) = Postgres::start("killing_a_replica_in_the_middle_of_a_refresh") else {
        return;
    };
    let h = world(&pg).await;
    h.add_delegated_account("alex", PASSWORD, MAILBOX).await;
    let mut a = Replica::start(&h, "a").await;
    let b = Replica::start(&h, "b").await;
    h.fake.entra().set_delay(Duration::from_secs(3));
    let before = h.fake.entra().token_requests();
    let pending = {
        let port = a.imaps_port.to_string();
        let ca = h.ca_file.clone();
        tokio::spawn(async move {
            Command::new("python3")
                .arg(support::client_script())
                .arg("--ca")
                .arg(ca)
                .args(["concurrent", "--port", &port, "--user", "alex"])
                .args(["--password", PASSWORD, "--n", "1"])
                .output()
                .await
        })
    };
    // Wait until A's request is at the token endpoint (holding the account's lock).
    let deadline = Instant::now() + Duration::from_secs(20);
    while h.fake.entra().token_requests() == before {
        assert!(Instant::now() < deadline, "A never asked for a token");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.kill9().await;
    let _ = pending.await;
    h.fake.entra().set_delay(Duration::ZERO);
    // B is not stuck behind the dead replica's lock and still has a working grant.
    let started = Instant::now();
    let (ok, _) = logins(&h, &b, "alex", 5).await;
    assert_eq!(ok, 5, "{}", b.logs());
    assert!(started.elapsed() < Duration::from_secs(20));
    let account = h.show_account("alex").await;
    assert_eq!(account["status"], "active", "{account}");
    // And the next refresh (a forced one: expire every access token) works too.
    h.fake.entra().expire_access_tokens();
    h.fake
        .entra()
        .set_token_lifetime(Some(Duration::from_secs(120)));
    let c = Replica::start(&h, "c").await;
    let (ok, _) = logins(&h, &c, "alex", 1).await;
    assert_eq!(ok, 1, "{}", c.logs());
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_stopped_and_restarted_under_load() {
    let Some(pg) = Postgres::start("postgres_stopped_and_restarted_under_load") else {
        return;
    };
    let h = world(&pg).await;
    h.add_delegated_account("alex", PASSWORD, MAILBOX).await;
    h.add_delegated_account("blake", PASSWORD, "blake@contoso.onmicrosoft.com")
        .await;
    let a = Replica::start(&h, "a").await;
    let b = Replica::start(&h, "b").await;
    // Warm A's caches for alex (verified login + access token); blake has never logged in.
    assert_eq!(logins(&h, &a, "alex", 3).await.0, 3, "{}", a.logs());
    assert!(a.readyz().await.contains("store: ok"));

    // An established session must survive the outage.
    h.fake
        .directory()
        .deliver(MAILBOX, "INBOX", b"Subject: kept\r\n\r\nstill here\r\n");
    let fetched = h.root().join("held.eml");
    let mut held = h.python_interactive(&[
        "hold",
        "--port",
        &a.imaps_port.to_string(),
        "--user",
        "alex",
        "--password",
        PASSWORD,
        "--out",
        fetched.to_str().unwrap(),
    ]);
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(held.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("session logs in")
        .unwrap();
    assert_eq!(ready.as_deref(), Some("READY"));

    pg.stop();
    let ready = a.readyz().await;
    assert!(ready.contains("store: unavailable"), "{ready}");
    // Cached: still works. Uncached (other replica, other account): temporary failure.
    let (ok, total) = logins(&h, &a, "alex", 10).await;
    assert_eq!((ok, total), (10, 10), "{}", a.logs());
    let out = h
        .python(&[
            "login-fail",
            "--port",
            &b.imaps_port.to_string(),
            "--user",
            "blake",
            "--password",
            PASSWORD,
        ])
        .await;
    let reply = stdout(&out);
    assert!(reply.contains("UNAVAILABLE"), "{reply} {}", stderr(&out));

    pg.restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (ok, _) = logins(&h, &b, "blake", 1).await;
        if ok == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "no recovery:\n{}", b.logs());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(logins(&h, &a, "alex", 5).await.0, 5);
    assert!(b.readyz().await.contains("store: ok"));
    // The held session is still alive: it answers a NOOP-and-logout request.
    if let Some(stdin) = held.stdin.as_mut() {
        use tokio::io::AsyncWriteExt;
        let _ = stdin.write_all(b"\n").await;
    }
    let done = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("held session ends")
        .unwrap();
    assert_eq!(done.as_deref(), Some(r#"{"done": true}"#));
    assert!(held.wait().await.unwrap().success());
    assert!(std::fs::read(&fetched)
        .unwrap()
        .ends_with(b"still here\r\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_to_postgres_and_back_loses_nothing() {
    let Some(pg) = Postgres::start("sqlite_to_postgres_and_back") else {
        return;
    };
    let mut h = Harness::start().await;
    h.add_delegated_account("alex", PASSWORD, MAILBOX).await;
    h.add_app_only_account("scanner", "scanner pass", "scanner@contoso.onmicrosoft.com")
        .await;
    let out = h
        .account(
            &["passwd", "alex", "--add", "phone", "--password-stdin"],
            "phone pass\n",
        )
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    h.account(&["remove", "scanner"], "").await;
    h.add_app_only_account("scanner", "scanner pass", "scanner@contoso.onmicrosoft.com")
        .await;
    // A password-sealed grant: its key slot and doubly sealed token move byte for byte.
    const SEALED: &str = "sam@contoso.onmicrosoft.com";
    h.fake.directory().add_mailbox(SEALED);
    let token_file = h.root().join("sam.rt");
    std::fs::write(
        &token_file,
        h.fake
            .entra()
            .issue_refresh_token(support::CLIENT_ID, SEALED),
    )
    .unwrap();
    let out = h
        .account(
            &[
                "add",
                "sam",
                "--mailbox",
                SEALED,
                "--app",
                "contoso",
                "--refresh-token-file",
                token_file.to_str().unwrap(),
                "--password-sealed",
                "--password-stdin",
            ],
            "sam pass",
        )
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let sqlite_list = stdout(&h.account(&["list", "--json"], "").await);

    let config = h.config.clone();
    let migrate = |from: String, to: String| {
        let config = config.clone();
        async move {
            Command::new(oxbridge_bin())
                .args(["store", "migrate", "--config"])
                .arg(config)
                .args(["--from", &from, "--to", &to])
                .output()
                .await
                .unwrap()
        }
    };
    let data = h.data_dir().display().to_string();
    let out = migrate(data.clone(), pg.url.clone()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("copied 3 account(s), 4 password(s), 2 refresh token(s)"),
        "{}",
        stdout(&out)
    );
    // Twice is refused: the target is no longer empty.
    assert!(!migrate(data, pg.url.clone()).await.status.success());

    // Serve from PostgreSQL (same master key: data_dir/master.key).
    h.append_config(&format!("[store]\nurl = \"{}\"\n", pg.url));
    let pg_list = stdout(&h.account(&["list", "--json"], "").await);
    assert_eq!(pg_list, sqlite_list);
    h.serve().await;
    let out = h
        .python(&[
            "concurrent",
            "--port",
            &h.imaps_port.to_string(),
            "--user",
            "alex",
            "--password",
            "phone pass",
            "--n",
            "1",
        ])
        .await;
    assert!(
        stdout(&out).contains("\"ok\": 1"),
        "{} {}",
        stdout(&out),
        h.logs()
    );
    // The sealed grant opens with its password on the other side (no token cached yet).
    let out = h
        .python(&[
            "concurrent",
            "--port",
            &h.imaps_port.to_string(),
            "--user",
            "sam",
            "--password",
            "sam pass",
            "--n",
            "1",
        ])
        .await;
    assert!(
        stdout(&out).contains("\"ok\": 1"),
        "{} {}",
        stdout(&out),
        h.logs()
    );
    h.stop().await;

    // And back into a new SQLite file.
    let back = h.root().join("back.db");
    let out = migrate(pg.url.clone(), back.display().to_string()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let conn = rusqlite_count(&back);
    assert_eq!(conn, (3, 4));
}

/// (accounts, passwords) in a SQLite store file, read with the sqlite3-free Python module.
fn rusqlite_count(path: &std::path::Path) -> (i64, i64) {
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import sqlite3; c = sqlite3.connect('{}'); print(c.execute('select count(*) from accounts').fetchone()[0], c.execute('select count(*) from account_passwords').fetchone()[0])",
            path.display()
        ))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut parts = text.split_whitespace().map(|p| p.parse::<i64>().unwrap());
    (parts.next().unwrap(), parts.next().unwrap())
}
