//! The process lifecycle an operator relies on, driven on the real binary: the graceful drain
//! on SIGTERM, and hot reload on SIGHUP and `POST /reload`.

#![allow(clippy::unwrap_used)] // test scenarios: a panic is the failure report

mod ops_support;
mod support;

use std::time::{Duration, Instant};

use ops_support::{accepts, admin, edit_config, eventually, ops_client, signal, Waiting};
use support::{free_port, Harness};

const PASSWORD: &str = "correct horse battery staple";
const MAILBOX: &str = "alex@contoso.onmicrosoft.com";

async fn world() -> Harness {
    let h = Harness::start().await;
    h.add_delegated_account("alex", PASSWORD, MAILBOX).await;
    h.fake.directory().deliver(
        MAILBOX,
        "INBOX",
        b"From: a@example.com\r\nSubject: hi\r\n\r\nhello\r\n",
    );
    h
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_turns_unready_first_then_ends_sessions_with_a_deadline_and_an_imap_bye() {
    let mut h = world().await;
    h.add_pop3();
    // Three seconds unready while still accepting (room for a slow machine to notice);
    // two seconds' grace for spliced sessions.
    edit_config(
        &h,
        "shutdown_grace_secs = 2",
        "shutdown_grace_secs = 2\nshutdown_delay_secs = 3",
    );
    h.serve().await;
    assert_eq!(admin(&h, "GET", "/readyz").await.0, 200);

    let imaps = h.imaps_port.to_string();
    let creds = ["--user", "alex", "--password", PASSWORD];
    let mut spliced = Waiting::start(
        &h,
        &[&["imap-wait", "--tls", "--port", &imaps], &creds[..]].concat(),
    )
    .await;
    let pop3s = h.pop3s_port.to_string();
    let mut pop3 = Waiting::start(
        &h,
        &[&["pop3-wait", "--tls", "--port", &pop3s], &creds[..]].concat(),
    )
    .await;
    let mut pre_auth = Waiting::start(&h, &["preauth-wait", "--tls", "--port", &imaps]).await;

    let sent = Instant::now();
    signal(&h, "TERM");
    // 1. Unready at once, while the listeners still accept during the delay.
    eventually(Duration::from_millis(2500), "/readyz unready", || async {
        admin(&h, "GET", "/readyz").await.0 == 503
    })
    .await;
    assert!(sent.elapsed() < Duration::from_secs(3));
    assert!(
        accepts(h.imaps_port).await,
        "still accepting during the delay"
    );

    // 2. The listeners close; the pre-auth session hears why.
    let report = pre_auth.report(Duration::from_secs(10)).await;
    let after: Vec<String> = serde_json::from_value(report["after"].clone()).unwrap();
    assert_eq!(after, ["* BYE [UNAVAILABLE] Server shutting down.\r\n"]);
    let closed_at = sent.elapsed();
    assert!(
        closed_at >= Duration::from_millis(2900),
        "listeners closed after {closed_at:?}, before the delay"
    );
    assert!(!accepts(h.imaps_port).await, "no longer accepting");
    assert_eq!(
        admin(&h, "GET", "/readyz").await.0,
        503,
        "the admin endpoints stay up through the drain"
    );

    // 3. The spliced sessions keep going through the grace period, then end: IMAP with a
    // BYE that says why, POP3 with a plain close.
    let report = spliced.report(Duration::from_secs(15)).await;
    let ended_at = sent.elapsed();
    let after: Vec<String> = serde_json::from_value(report["after"].clone()).unwrap();
    assert_eq!(
        after,
        ["* BYE [UNAVAILABLE] Server shutting down.\r\n"],
        "{report}"
    );
    assert!(
        ended_at >= Duration::from_secs(5),
        "the session ended after {ended_at:?}, inside the delay plus grace"
    );
    let report = pop3.report(Duration::from_secs(15)).await;
    assert_eq!(report["after"], serde_json::json!([]), "{report}");

    h.stop().await;
    let logs = h.logs();
    for needle in [
        "shutting down: /readyz reports unready",
        "grace period over; ending the remaining sessions",
        "all sessions ended",
    ] {
        assert!(logs.contains(needle), "missing {needle:?} in\n{logs}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_that_end_within_the_grace_period_are_not_cut() {
    let mut h = world().await;
    h.serve().await;
    let imaps = h.imaps_port.to_string();
    let spliced = Waiting::start(
        &h,
        &[
            "imap-wait",
            "--tls",
            "--port",
            &imaps,
            "--user",
            "alex",
            "--password",
            PASSWORD,
        ],
    )
    .await;
    signal(&h, "TERM");
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The client leaves on its own before the grace period (2 s) is over.
    drop(spliced);
    let started = Instant::now();
    h.stop().await;
    assert!(started.elapsed() < Duration::from_secs(2));
    let logs = h.logs();
    assert!(logs.contains("all sessions finished"), "{logs}");
    assert!(!logs.contains("grace period over"), "{logs}");
}

/// The SHA-256 of the certificate a TLS server on `port` presents, as hex (not verified).
async fn served_certificate(port: u16) -> String {
    let script = format!(
        "import hashlib, socket, ssl\n\
         ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)\n\
         ctx.check_hostname = False\n\
         ctx.verify_mode = ssl.CERT_NONE\n\
         with ctx.wrap_socket(socket.create_connection(('127.0.0.1', {port}), timeout=10)) as s:\n\
         \x20   print(hashlib.sha256(s.getpeercert(binary_form=True)).hexdigest())\n"
    );
    let out = tokio::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", support::stderr(&out));
    support::stdout(&out).trim().to_string()
}

/// The SHA-256 of the first certificate in a PEM file, as hex.
async fn file_certificate(path: &std::path::Path) -> String {
    let script = format!(
        "import hashlib, ssl\n\
         pem = open({path:?}).read()\n\
         print(hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest())\n",
        path = path.display().to_string()
    );
    let out = tokio::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", support::stderr(&out));
    support::stdout(&out).trim().to_string()
}

async fn imap_login(h: &Harness, port: u16) -> serde_json::Value {
    let port = port.to_string();
    let out = ops_client(
        h,
        &[
            "imap-login",
            "--tls",
            "--port",
            &port,
            "--user",
            "alex",
            "--password",
            PASSWORD,
        ],
    )
    .await;
    assert!(out.status.success(), "{}", support::stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn relay_mail_from(h: &Harness) -> String {
    let port = h.submission_port.to_string();
    let out = ops_client(
        h,
        &[
            "smtp-relay",
            "--port",
            &port,
            "--sender",
            "scanner@contoso.onmicrosoft.com",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", support::stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["mail"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_and_post_reload_apply_a_good_config_and_keep_the_old_one_on_a_bad_one() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let mut h = world().await;
    h.add_smtp();
    h.add_delegated_account_for(
        "scanner",
        "scanner-password",
        "scanner@contoso.onmicrosoft.com",
        "smtp",
    )
    .await;
    h.serve().await;

    // An established IMAP session, held open across every reload below, on the listener
    // the first reload removes.
    let held_file = h.dir.path().join("held.eml");
    let starttls_port = h.starttls_port.to_string();
    let mut holder = h.python_interactive(&[
        "hold",
        "--starttls",
        "--port",
        &starttls_port,
        "--user",
        "alex",
        "--password",
        PASSWORD,
        "--out",
        held_file.to_str().unwrap(),
    ]);
    let mut held = BufReader::new(holder.stdout.take().unwrap()).lines();
    assert_eq!(held.next_line().await.unwrap().as_deref(), Some("READY"));
    assert!(
        relay_mail_from(&h).await.starts_with("530"),
        "no relay rule yet"
    );

    // 1. SIGHUP: a listener added, one removed, a relay rule added.
    let added = free_port();
    let starttls = h.starttls_port;
    edit_config(
        &h,
        &format!("listen = \"127.0.0.1:{starttls}\"\ntls = \"starttls\""),
        &format!("listen = \"127.0.0.1:{added}\"\ntls = \"implicit\""),
    );
    h.append_config(
        "[[relay]]\nnetworks = [\"127.0.0.1\"]\naccount = \"scanner\"\nsenders = [\"scanner@contoso.onmicrosoft.com\"]\n",
    );
    signal(&h, "HUP");
    eventually(Duration::from_secs(10), "the added listener", || async {
        accepts(added).await
    })
    .await;
    eventually(
        Duration::from_secs(10),
        "the removed listener to close",
        || async { !accepts(starttls).await },
    )
    .await;
    let login = imap_login(&h, added).await;
    assert!(
        login["login"].as_str().unwrap().starts_with("a1 OK"),
        "{login}"
    );
    let mail = relay_mail_from(&h).await;
    assert!(
        mail.starts_with("250"),
        "the new relay rule applies: {mail}"
    );
    assert!(h.logs().contains("configuration reloaded"), "{}", h.logs());

    // 2. A broken file is rejected whole, with every problem, and the old one serves on.
    let good = std::fs::read_to_string(&h.config).unwrap();
    let another = free_port();
    std::fs::write(
        &h.config,
        format!(
            "{good}\n[[listener]]\nprotocol = \"imap\"\nlisten = \"127.0.0.1:{another}\"\ntls = \"none\"\n\
             [[relay]]\nnetworks = [\"192.0.2.1/24\"]\naccount = \"x\"\nsenders = [\"x@y.z\"]\n"
        ),
    )
    .unwrap();
    let (status, body) = admin(&h, "POST", "/reload").await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body.contains("refuses every login unless allow_plaintext"),
        "{body}"
    );
    assert!(body.contains("did you mean 192.0.2.0/24"), "{body}");
    let logs = h.logs();
    assert!(logs.contains("reload rejected"), "{logs}");
    assert!(
        logs.contains("did you mean 192.0.2.0/24"),
        "every problem is logged: {logs}"
    );
    assert!(
        !accepts(another).await,
        "nothing of the bad file was applied"
    );
    std::fs::write(&h.config, "this is not = [toml").unwrap();
    let (status, body) = admin(&h, "POST", "/reload").await;
    assert_eq!(status, 422, "{body}");
    let login = imap_login(&h, added).await;
    assert!(
        login["login"].as_str().unwrap().starts_with("a1 OK"),
        "{login}"
    );
    let metrics = h.admin_get("/metrics").await;
    assert!(
        metrics.contains("oxbridge_config_reloads_total{result=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("oxbridge_config_reloads_total{result=\"rejected\"} 2"),
        "{metrics}"
    );

    // 3. Limits: with one session open, a limit of one refuses the next connection.
    std::fs::write(
        &h.config,
        good.replace(
            "shutdown_grace_secs = 2",
            "shutdown_grace_secs = 2\nmax_connections = 1",
        ),
    )
    .unwrap();
    let (status, body) = admin(&h, "POST", "/reload").await;
    assert_eq!(status, 200, "{body}");
    let refused = imap_login(&h, added).await;
    assert_eq!(refused["closed"], true, "{refused}");

    // 4. A renewed certificate at the same path is served to new connections.
    std::fs::write(&h.config, &good).unwrap();
    assert_eq!(admin(&h, "POST", "/reload").await.0, 200);
    let before = served_certificate(added).await;
    let root = h.root().to_path_buf();
    let openssl = tokio::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "400",
        ])
        .args(["-subj", "/CN=renewed.example"])
        .arg("-keyout")
        .arg(root.join("key.pem"))
        .arg("-out")
        .arg(root.join("cert.pem"))
        .output()
        .await
        .unwrap();
    assert!(openssl.status.success(), "{}", support::stderr(&openssl));
    signal(&h, "HUP");
    let renewed = file_certificate(&root.join("cert.pem")).await;
    assert_ne!(before, renewed);
    eventually(
        Duration::from_secs(10),
        "the renewed certificate",
        || async { served_certificate(added).await == renewed },
    )
    .await;

    // The session established before all of this still works.
    holder
        .stdin
        .take()
        .unwrap()
        .write_all(b"go\n")
        .await
        .unwrap();
    let done = held.next_line().await.unwrap().unwrap_or_default();
    assert!(done.contains("\"done\": true"), "{done}\n{}", h.logs());
    assert!(holder.wait().await.unwrap().success());
    h.stop().await;
}
