//! IMAP through oxbridge with real clients: curl and Python's imaplib over implicit TLS and
//! STARTTLS, against the fake Exchange Online.

#![allow(clippy::unwrap_used)] // test scenarios: a panic is the failure report

mod support;

use support::{contains, stdout, Harness};

const PASSWORD: &str = "correct horse battery staple";
const MAILBOX: &str = "alex@contoso.onmicrosoft.com";

fn message(n: u32) -> Vec<u8> {
    format!(
        "From: Sender {n} <sender{n}@example.com>\r\nTo: {MAILBOX}\r\nSubject: Test message {n}\r\nDate: Mon, 16 Nov 2026 09:0{n}:00 +0000\r\nMessage-ID: <m{n}@example.com>\r\n\r\nBody of message {n}.\r\nWith a second line and UTF-8: \u{e9}t\u{e9}.\r\n"
    )
    .into_bytes()
}

async fn world() -> Harness {
    let mut h = Harness::start().await;
    h.add_delegated_account("alex", PASSWORD, MAILBOX).await;
    for n in 1..=3 {
        h.fake.directory().deliver(MAILBOX, "INBOX", &message(n));
    }
    h.serve().await;
    h
}

#[tokio::test(flavor = "multi_thread")]
async fn curl_lists_and_fetches_over_implicit_tls() {
    let h = world().await;
    let user = format!("alex:{PASSWORD}");
    let list = h
        .curl(&["-u", &user, &format!("imaps://127.0.0.1:{}/", h.imaps_port)])
        .await;
    assert!(
        list.status.success(),
        "curl failed: {}",
        support::stderr(&list)
    );
    let listing = stdout(&list);
    assert!(
        listing.contains("INBOX") && listing.contains("Sent Items"),
        "{listing}"
    );

    let fetched = h
        .curl(&[
            "-u",
            &user,
            &format!("imaps://127.0.0.1:{}/INBOX;UID=2", h.imaps_port),
        ])
        .await;
    assert!(
        fetched.status.success(),
        "curl failed: {}",
        support::stderr(&fetched)
    );
    assert_eq!(fetched.stdout, message(2));
    assert_eq!(
        h.fake.entra().token_requests(),
        1,
        "one refresh served both logins"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn curl_fetches_over_starttls() {
    let h = world().await;
    let out = h
        .curl(&[
            "--ssl-reqd",
            "-u",
            &format!("alex:{PASSWORD}"),
            &format!("imap://127.0.0.1:{}/INBOX;UID=3", h.starttls_port),
        ])
        .await;
    assert!(
        out.status.success(),
        "curl failed: {}",
        support::stderr(&out)
    );
    assert_eq!(out.stdout, message(3));
}

async fn imaplib_fetch(h: &Harness, extra: &[&str]) -> serde_json::Value {
    let out_file = h
        .dir
        .path()
        .join(format!("fetched-{}.eml", extra.join("-")));
    let port = h.imaps_port.to_string();
    let starttls_port = h.starttls_port.to_string();
    let port = if extra.contains(&"--starttls") {
        &starttls_port
    } else {
        &port
    };
    let mut args = vec![
        "fetch",
        "--port",
        port,
        "--user",
        "alex",
        "--password",
        PASSWORD,
        "--uid",
        "1",
        "--out",
    ];
    let out_path = out_file.to_str().unwrap().to_string();
    args.push(&out_path);
    args.extend_from_slice(extra);
    let out = h.python(&args).await;
    assert!(
        out.status.success(),
        "python failed: {}\n{}",
        support::stderr(&out),
        h.logs()
    );
    assert_eq!(
        std::fs::read(&out_file).unwrap(),
        h.fake.directory().messages(MAILBOX, "INBOX")[0]
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn imaplib_login_select_fetch_logout_with_upstream_capabilities() {
    let h = world().await;
    let result = imaplib_fetch(&h, &[]).await;
    let login = result["login"][1].as_str().unwrap();
    assert!(
        login.contains("[CAPABILITY"),
        "tagged OK carries capabilities: {login}"
    );
    assert!(
        login.contains("BACKENDAUTHENTICATE"),
        "they are the upstream's post-auth ones: {login}"
    );
    assert_eq!(result["exists"], 3);
    assert_eq!(result["uids"], serde_json::json!(["1", "2", "3"]));
    assert_eq!(result["logout"], "BYE");
    let logins = h.fake.directory().xoauth_logins();
    assert!(
        logins.iter().any(|l| l.user == MAILBOX && l.ok),
        "{logins:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn imaplib_authenticate_plain_and_login_mechanism_and_starttls() {
    let h = world().await;
    imaplib_fetch(&h, &["--auth", "plain"]).await;
    imaplib_fetch(&h, &["--auth", "login-mech"]).await;
    imaplib_fetch(&h, &["--starttls"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_sees_new_mail_through_the_splice() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let h = world().await;
    let port = h.imaps_port.to_string();
    let mut child = h.python_interactive(&[
        "idle",
        "--port",
        &port,
        "--user",
        "alex",
        "--password",
        PASSWORD,
    ]);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
        .await
        .expect("IDLE started in time")
        .unwrap();
    assert_eq!(first.as_deref(), Some("IDLING"));
    h.fake.directory().deliver(MAILBOX, "INBOX", &message(4));
    let result = lines.next_line().await.unwrap().expect("result line");
    let result: serde_json::Value = serde_json::from_str(&result).unwrap();
    assert_eq!(result["before"], 3);
    assert_eq!(result["exists"], 4);
    assert!(result["done"].as_str().unwrap().contains("OK"), "{result}");
    assert!(child.wait().await.unwrap().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn app_only_account_logs_in_with_client_credentials() {
    let mut h = Harness::start().await;
    let mailbox = "scanner@contoso.onmicrosoft.com";
    h.add_app_only_account("scanner", "scanner-pass", mailbox)
        .await;
    h.fake.directory().deliver(mailbox, "INBOX", &message(1));
    h.serve().await;
    let out = h
        .curl(&[
            "-u",
            "scanner:scanner-pass",
            &format!("imaps://127.0.0.1:{}/INBOX;UID=1", h.imaps_port),
        ])
        .await;
    assert!(
        out.status.success(),
        "curl failed: {}\n{}",
        support::stderr(&out),
        h.logs()
    );
    assert_eq!(out.stdout, message(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_concurrent_logins_cause_one_token_request() {
    let h = world().await;
    // Exchange allows about 20 sessions per mailbox; lift the fake's cap for this burst.
    h.fake.directory().set_connection_cap(64);
    let port = h.imaps_port.to_string();
    let out = h
        .python(&[
            "concurrent",
            "--port",
            &port,
            "--user",
            "alex",
            "--password",
            PASSWORD,
            "--n",
            "50",
        ])
        .await;
    assert!(out.status.success(), "{}", support::stderr(&out));
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["ok"], 50, "{}\n{}", support::stderr(&out), h.logs());
    assert_eq!(h.fake.entra().token_requests(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn rotated_refresh_token_survives_a_restart() {
    let mut h = world().await;
    let user = format!("alex:{PASSWORD}");
    let url = format!("imaps://127.0.0.1:{}/INBOX;UID=1", h.imaps_port);
    assert!(h.curl(&["-u", &user, &url]).await.status.success());
    assert_eq!(h.fake.entra().token_requests(), 1);
    h.stop().await;
    // From now on only the newest refresh token is accepted.
    h.fake.entra().set_strict_rotation(true);
    h.serve().await;
    let out = h.curl(&["-u", &user, &url]).await;
    assert!(
        out.status.success(),
        "login after restart failed: {}\n{}",
        support::stderr(&out),
        h.logs()
    );
    assert_eq!(out.stdout, message(1));
    assert_eq!(h.fake.entra().token_requests(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_command_serves_its_mailbox() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let (imap, starttls, admin, pop3) = (
        support::free_port(),
        support::free_port(),
        support::free_port(),
        support::free_port(),
    );
    let mut demo = tokio::process::Command::new(support::oxbridge_bin())
        .args([
            "demo",
            "--imap-port",
            &imap.to_string(),
            "--imap-starttls-port",
            &starttls.to_string(),
        ])
        .args(["--admin-port", &admin.to_string()])
        .args(["--pop3-port", &pop3.to_string()])
        .args(["--smtp-port", &support::free_port().to_string()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(demo.stdout.take().unwrap()).lines();
    let mut curl_line = None;
    while let Ok(Some(line)) =
        tokio::time::timeout(std::time::Duration::from_secs(60), lines.next_line())
            .await
            .unwrap()
    {
        if line.contains("curl --insecure \"imaps://") && line.contains(";UID=1") {
            curl_line = Some(line);
            break;
        }
    }
    let curl_line = curl_line.expect("the demo prints a curl command");
    let user = curl_line.split(" -u ").nth(1).unwrap().trim().to_string();
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", imap))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let out = tokio::process::Command::new("curl")
        .args(["--silent", "--insecure", "-u", &user])
        .arg(format!("imaps://127.0.0.1:{imap}/INBOX;UID=1"))
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    assert!(
        contains(&out.stdout, b"Subject: Welcome to oxbridge"),
        "{}",
        stdout(&out)
    );
    // The same mailbox over POP3, as the demo prints it.
    let out = tokio::process::Command::new("curl")
        .args(["--silent", "--insecure", "-u", &user])
        .arg(format!("pop3s://127.0.0.1:{pop3}/1"))
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(contains(&out.stdout, b"Subject: Welcome to oxbridge"));
    let _ = demo.kill().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mailbox_over_its_connection_limit_is_a_temporary_failure() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let h = world().await;
    h.fake.directory().set_connection_cap(1);
    let out_file = h.dir.path().join("held.eml");
    let port = h.imaps_port.to_string();
    let mut holder = h.python_interactive(&[
        "hold",
        "--port",
        &port,
        "--user",
        "alex",
        "--password",
        PASSWORD,
        "--out",
        out_file.to_str().unwrap(),
    ]);
    let mut lines = BufReader::new(holder.stdout.take().unwrap()).lines();
    assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("READY"));
    // Exchange would accept the token and then answer "authenticated but not connected";
    // oxbridge turns that into a clean temporary failure instead of a broken session.
    let out = h
        .python(&[
            "login-fail",
            "--port",
            &port,
            "--user",
            "alex",
            "--password",
            PASSWORD,
        ])
        .await;
    assert!(out.status.success(), "{}", support::stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["error"].as_str().unwrap().contains("[UNAVAILABLE]"),
        "{v}"
    );
    holder
        .stdin
        .take()
        .unwrap()
        .write_all(b"go\n")
        .await
        .unwrap();
    assert!(holder.wait().await.unwrap().success());
}

/// An implicit-TLS client has the greeting as soon as its own side of the handshake is done
/// (TLS 1.3 half-RTT data): it does not wait another round trip after its Finished, and the
/// server does not send the greeting as a separate small write.
#[tokio::test(flavor = "multi_thread")]
async fn greeting_arrives_with_the_tls_handshake() {
    use std::io::Read;

    let h = world().await;
    let addr = h.imaps();
    let ca = std::fs::read(&h.ca_file).unwrap();
    let greeting = tokio::task::spawn_blocking(move || {
        let mut roots = rustls::RootCertStore::empty();
        for cert in oxbridge_wire::tls::certs_from_pem(&ca) {
            roots.add(cert).unwrap();
        }
        let config = oxbridge_wire::tls::client_config_with_roots(roots).unwrap();
        let mut tls =
            rustls::ClientConnection::new(config, "localhost".try_into().unwrap()).unwrap();
        let mut tcp = std::net::TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        tls.write_tls(&mut tcp).unwrap(); // ClientHello; our Finished is never sent
        let mut plain = Vec::new();
        while !plain.ends_with(b"\r\n") {
            match tls.read_tls(&mut tcp) {
                Ok(0) => panic!("connection closed before the greeting"),
                Ok(_) => {}
                Err(e) => panic!("no greeting before the client's Finished: {e}"),
            }
            tls.process_new_packets().unwrap();
            // WouldBlock once what has arrived is read.
            let _ = tls.reader().read_to_end(&mut plain);
        }
        plain
    })
    .await
    .unwrap();
    assert!(
        greeting.starts_with(b"* OK"),
        "{}",
        String::from_utf8_lossy(&greeting)
    );
}

/// With `pool_size`, connections to Exchange are opened and greeted ahead of need: a login is
/// served by one opened before it began, so it costs only the XOAUTH2 round trip.
#[tokio::test(flavor = "multi_thread")]
async fn a_pooled_upstream_connection_opened_earlier_serves_the_login() {
    let mut h = Harness::start().await;
    h.add_delegated_account("alex", PASSWORD, MAILBOX).await;
    let config = std::fs::read_to_string(&h.config).unwrap();
    std::fs::write(
        &h.config,
        config.replacen("[upstream.imap]\n", "[upstream.imap]\npool_size = 2\n", 1),
    )
    .unwrap();
    h.serve().await;
    let user = format!("alex:{PASSWORD}");
    let url = format!("imaps://127.0.0.1:{}/", h.imaps_port);
    let list = h.curl(&["-u", &user, &url]).await;
    assert!(list.status.success(), "{}", support::stderr(&list));
    // The first login started the pool; give it a moment to fill.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    let began = std::time::Instant::now();
    let list = h.curl(&["-u", &user, &url]).await;
    assert!(list.status.success(), "{}", support::stderr(&list));
    let logins = h.fake.directory().xoauth_logins();
    let last = logins.iter().rev().find(|l| l.protocol == "imap").unwrap();
    assert!(last.ok);
    assert!(
        last.connected_at < began,
        "the login was served by a connection opened during it"
    );
}

/// oxbridge resumes its TLS sessions with Exchange: after the first login, the upstream
/// handshake uses a session ticket instead of a full exchange and certificate check.
#[tokio::test(flavor = "multi_thread")]
async fn upstream_tls_sessions_are_resumed() {
    let h = world().await;
    let user = format!("alex:{PASSWORD}");
    let url = format!("imaps://127.0.0.1:{}/", h.imaps_port);
    for _ in 0..3 {
        let list = h.curl(&["-u", &user, &url]).await;
        assert!(list.status.success(), "{}", support::stderr(&list));
    }
    let (full, resumed) = h.fake.directory().imap_handshakes();
    assert!(full >= 1, "the first is a full handshake");
    assert!(
        resumed >= 2,
        "later ones resume: {full} full, {resumed} resumed"
    );
}
