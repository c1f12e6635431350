//! Secrets discipline and TLS posture, end to end.
//!
//! - Every login flow of every protocol (right and wrong passwords, every SASL form, an
//!   app-only account, a forced token refresh, throttled attempts) runs with *everything*
//!   logging at trace level; then the logs, the metrics page, the store's files and the CLI's
//!   output are searched for every secret the test used or the fake issued, raw and in the
//!   base64 forms they travel in.
//! - The data directory's and the master key's file modes are checked at start, with an
//!   error that says what to run.
//! - Client-facing TLS is 1.2 or 1.3 with forward-secret AEAD suites only; a certificate and
//!   key that do not match stop the start with a clear message; upstream certificates are
//!   always verified, and the only way to widen trust is an extra CA, logged at every start.

#![allow(clippy::unwrap_used)] // test scenarios: a panic is the failure report

mod hostile_support;
mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::Duration;

use hostile_support::{assert_no_panic, replace_config, Conn};
use oxbridge_wire::sasl::{encode_base64, BearerMechanism, XOAuth2};
use oxbridge_wire::Secret;
use support::{contains, Harness};

const PASSWORD: &str = "Secret-Pa55word-for-printer";
const APP_PASSWORD: &str = "Secret-Pa55word-for-the-app-only-account";
const WRONG: &str = "Wrong-Pa55word-attempt";
const MAILBOX: &str = "printer@contoso.onmicrosoft.com";
const APP_MAILBOX: &str = "robot@contoso.onmicrosoft.com";

async fn imap_exchange(h: &Harness, port_tls: bool, script: &[&[u8]]) -> String {
    let mut c = if port_tls {
        Conn::tls(h, h.imaps_port).await.unwrap()
    } else {
        let (c, _) = hostile_support::starttls(h, h.starttls_port, b"", b"s STARTTLS\r\n", "s ")
            .await
            .unwrap();
        c
    };
    if port_tls {
        c.line().await.unwrap();
    }
    let mut all = String::new();
    for step in script {
        c.send(step).await.unwrap();
        all.push_str(&c.line().await.unwrap());
    }
    all
}

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_reaches_logs_metrics_store_or_cli_output_on_any_flow() {
    let mut h = Harness::start().await;
    h.add_pop3();
    h.add_smtp();
    // Low thresholds, so throttling events are logged too.
    h.append_config(
        "[throttle]\nuser_delay_after = 1\nbase_delay_millis = 10\nmax_delay_secs = 1\n\
         user_lock_after = 0\naddress_lock_after = 0\n",
    );
    let first_rt = h.add_delegated_account("printer", PASSWORD, MAILBOX).await;
    h.add_app_only_account("robot", APP_PASSWORD, APP_MAILBOX)
        .await;
    h.fake
        .directory()
        .deliver(MAILBOX, "INBOX", b"Subject: hi\r\n\r\nhello\r\n");
    // Everything at trace: oxbridge and every library under it (TLS, HTTP, SQLite glue).
    h.serve_with_log("trace").await;

    let b64 = |s: &str| encode_base64(s.as_bytes());
    let plain = |user: &str, password: &str| b64(&format!("\0{user}\0{password}"));
    let mut sent_forms: Vec<String> = Vec::new();

    // IMAP: LOGIN, AUTHENTICATE PLAIN with and without initial response, AUTHENTICATE
    // LOGIN, over implicit TLS and after STARTTLS; wrong passwords; the app-only account.
    for password in [PASSWORD, WRONG] {
        let p = plain("printer", password);
        sent_forms.push(p.clone());
        let out = imap_exchange(
            &h,
            true,
            &[format!("a AUTHENTICATE PLAIN {p}\r\n").as_bytes()],
        )
        .await;
        assert!(out.starts_with("a "), "{out}");
        let out = imap_exchange(
            &h,
            false,
            &[b"b AUTHENTICATE PLAIN\r\n", format!("{p}\r\n").as_bytes()],
        )
        .await;
        assert!(out.contains("b "), "{out}");
        sent_forms.push(b64(password));
        let out = imap_exchange(
            &h,
            true,
            &[
                b"c AUTHENTICATE LOGIN\r\n",
                format!("{}\r\n", b64("printer")).as_bytes(),
                format!("{}\r\n", b64(password)).as_bytes(),
            ],
        )
        .await;
        assert!(out.contains("c "), "{out}");
        let out = imap_exchange(
            &h,
            true,
            &[format!("d LOGIN printer \"{password}\"\r\n").as_bytes()],
        )
        .await;
        assert!(out.starts_with("d "), "{out}");
    }
    let out = imap_exchange(
        &h,
        true,
        &[format!("e LOGIN robot \"{APP_PASSWORD}\"\r\n").as_bytes()],
    )
    .await;
    assert!(out.starts_with("e OK"), "{out}");

    // POP3: USER/PASS, AUTH PLAIN with and without initial response, AUTH LOGIN.
    for password in [PASSWORD, WRONG] {
        for script in [
            vec![
                "USER printer\r\n".to_string(),
                format!("PASS {password}\r\n"),
            ],
            vec![format!("AUTH PLAIN {}\r\n", plain("printer", password))],
            vec![
                "AUTH PLAIN\r\n".to_string(),
                format!("{}\r\n", plain("printer", password)),
            ],
            vec![
                "AUTH LOGIN\r\n".to_string(),
                format!("{}\r\n", b64("printer")),
                format!("{}\r\n", b64(password)),
            ],
        ] {
            let mut c = Conn::tls(&h, h.pop3s_port).await.unwrap();
            c.line().await.unwrap();
            for step in &script {
                c.send(step.as_bytes()).await.unwrap();
                c.line().await.unwrap();
            }
        }
    }

    // SMTP: AUTH PLAIN and LOGIN, then a submission; wrong passwords.
    for password in [PASSWORD, WRONG] {
        for script in [
            vec![format!("AUTH PLAIN {}\r\n", plain("printer", password))],
            vec![
                "AUTH LOGIN\r\n".to_string(),
                format!("{}\r\n", b64("printer")),
                format!("{}\r\n", b64(password)),
            ],
        ] {
            let mut c = Conn::tls(&h, h.smtps_port).await.unwrap();
            c.until("220 ").await.unwrap();
            c.send(b"EHLO secrets.example\r\n").await.unwrap();
            c.until("250 ").await.unwrap();
            let mut last = String::new();
            for step in &script {
                c.send(step.as_bytes()).await.unwrap();
                last = c.line().await.unwrap();
            }
            if last.starts_with("235") {
                c.send(
                    format!(
                        "MAIL FROM:<{MAILBOX}>\r\nRCPT TO:<{MAILBOX}>\r\nDATA\r\n\
                         Subject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n"
                    )
                    .as_bytes(),
                )
                .await
                .unwrap();
                let rest = c.rest_until_closed(Duration::from_secs(10)).await.unwrap();
                assert!(
                    rest.contains("250 2.6.0") || rest.contains("250 "),
                    "{rest}"
                );
            }
        }
    }

    // A forced refresh: the upstream refuses the cached (now expired) token, oxbridge
    // fetches a new one with the rotated refresh token.
    h.fake.entra().expire_access_tokens();
    let out = imap_exchange(
        &h,
        true,
        &[format!("f LOGIN printer \"{PASSWORD}\"\r\n").as_bytes()],
    )
    .await;
    assert!(out.starts_with("f OK"), "{out}\n{}", h.logs());

    let metrics = h.admin_get("/metrics").await;
    assert!(
        metrics.contains("oxbridge_login_throttled_total"),
        "{metrics}"
    );
    let listing = h.account(&["list"], "").await;
    let shown = h.account(&["show", "printer", "--json"], "").await;
    let master_key = std::fs::read_to_string(h.data_dir().join("master.key")).unwrap();
    h.stop().await;
    let logs = h.logs();
    assert!(
        logs.contains("TRACE") && logs.contains("rustls"),
        "trace logging from the libraries was on"
    );
    assert!(logs.contains("login throttled"), "throttling was exercised");

    // Every secret, raw and in the forms it travels in.
    let issued = h.fake.entra().issued_secrets();
    assert!(
        issued.len() >= 4,
        "refresh and access tokens were issued: {}",
        issued.len()
    );
    let mut secrets: Vec<Vec<u8>> = vec![
        PASSWORD.into(),
        APP_PASSWORD.into(),
        WRONG.into(),
        support::CLIENT_SECRET.into(),
        first_rt.clone().into(),
        master_key.trim().into(),
    ];
    secrets.extend(issued.iter().map(|s| s.clone().into_bytes()));
    secrets.extend(sent_forms.iter().map(|s| s.clone().into_bytes()));
    for token in &issued {
        for mailbox in [MAILBOX, APP_MAILBOX] {
            let blob = XOAuth2::initial_response(mailbox, &Secret::from(token.as_str()));
            secrets.push(blob.expose().to_vec());
        }
    }
    let mut store = Vec::new();
    for file in ["oxbridge.db", "oxbridge.db-wal", "oxbridge.db-shm"] {
        if let Ok(bytes) = std::fs::read(h.data_dir().join(file)) {
            store.extend_from_slice(&bytes);
        }
    }
    assert!(!store.is_empty());
    let cli = [listing.stdout, listing.stderr, shown.stdout, shown.stderr].concat();
    for (i, secret) in secrets.iter().enumerate() {
        let what = format!("secret #{i} ({} bytes)", secret.len());
        assert!(!contains(logs.as_bytes(), secret), "{what} is in the logs");
        assert!(
            !contains(metrics.as_bytes(), secret),
            "{what} is in the metrics"
        );
        assert!(!contains(&store, secret), "{what} is in the store's files");
        assert!(!contains(&cli, secret), "{what} is in the CLI's output");
    }
    assert_no_panic(&h);
}

/// Runs `oxbridge serve` directly; `Ok(())` if it is still running after a few seconds
/// (then stopped), `Err(stderr)` if it exited.
async fn try_start(h: &Harness) -> Result<(), String> {
    let mut child = tokio::process::Command::new(support::oxbridge_bin())
        .args(["serve", "--config"])
        .arg(&h.config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(4), child.wait()).await {
        Ok(status) => {
            let mut stderr = String::new();
            tokio::io::AsyncReadExt::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr)
                .await
                .unwrap();
            assert!(!status.unwrap().success());
            Err(stderr)
        }
        Err(_) => {
            child.kill().await.unwrap();
            Ok(())
        }
    }
}

fn chmod(path: &std::path::Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn data_dir_and_master_key_modes_are_checked_at_start() {
    let h = Harness::start().await;
    let data = h.data_dir();
    // A fresh start creates the data directory 0700 and the key 0600.
    try_start(&h).await.unwrap();
    assert_eq!(
        std::fs::metadata(&data).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let key = data.join("master.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Writable by the group: refused, with the fix in the message.
    chmod(&data, 0o770);
    let err = try_start(&h).await.unwrap_err();
    assert!(
        err.contains("writable by group or other users") && err.contains("chmod 700"),
        "{err}"
    );
    // Readable only: a warning, and it starts.
    chmod(&data, 0o755);
    try_start(&h).await.unwrap();
    chmod(&data, 0o700);

    // A master key others can read: refused.
    chmod(&key, 0o644);
    let err = try_start(&h).await.unwrap_err();
    assert!(
        err.contains("master key") && err.contains("chmod 600"),
        "{err}"
    );
    chmod(&key, 0o600);
    try_start(&h).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_that_does_not_match_its_key_stops_the_start_clearly() {
    let h = Harness::start().await;
    let other = oxbridge_fake::TestPki::generate();
    std::fs::write(h.root().join("key.pem"), other.leaf_key_pem()).unwrap();
    let err = try_start(&h).await.unwrap_err();
    eprintln!("{err}");
    assert!(err.contains("[tls]"), "{err}");
    assert!(
        err.contains("do not match") && err.contains("KeyMismatch"),
        "the message says what is wrong: {err}"
    );
}

/// A TLS 1.1 ClientHello (no `supported_versions` extension) offering `suites`: what an
/// old device sends.
fn tls11_client_hello(suites: &[u8]) -> Vec<u8> {
    let mut body = vec![0x03, 0x02];
    body.extend_from_slice(&[0x5a; 32]);
    body.push(0);
    body.extend_from_slice(&(suites.len() as u16).to_be_bytes());
    body.extend_from_slice(suites);
    body.extend_from_slice(&[0x01, 0x00]);
    let mut handshake = vec![0x01, 0x00];
    handshake.extend_from_slice(&(body.len() as u16).to_be_bytes());
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

/// Python's ssl module, as a client with the given protocol bounds and cipher string;
/// prints the negotiated version and cipher, or the error.
async fn python_tls(h: &Harness, port: u16, min: &str, max: &str, ciphers: &str) -> String {
    let script = format!(
        "import socket, ssl, sys\n\
         ctx = ssl.create_default_context(cafile={ca:?})\n\
         ctx.minimum_version = ssl.TLSVersion.{min}\n\
         ctx.maximum_version = ssl.TLSVersion.{max}\n\
         ctx.set_ciphers({ciphers:?})\n\
         try:\n\
         \x20   s = ctx.wrap_socket(socket.create_connection(('127.0.0.1', {port})), server_hostname='localhost')\n\
         \x20   print(s.version(), s.cipher()[0])\n\
         except Exception as e:\n\
         \x20   print('ERROR', e)\n",
        ca = h.ca_file.display().to_string(),
    );
    let out = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .output()
        .await
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn client_tls_is_1_2_or_1_3_with_forward_secret_aead_suites_only() {
    let mut h = Harness::start().await;
    h.serve().await;
    let port = h.imaps_port;

    // An old client's TLS 1.1 hello gets a fatal alert (handshake_failure or
    // protocol_version), whether it offers only the CBC suites of its time (ECDHE-RSA and
    // RSA with AES-CBC) or also a suite oxbridge would take under TLS 1.2 (ECDHE-RSA with
    // AES-GCM): the version alone is refused.
    for suites in [&[0xc0, 0x13, 0x00, 0x2f][..], &[0xc0, 0x2f, 0xc0, 0x13]] {
        let mut c = Conn::plain(port).await.unwrap();
        c.send(&tls11_client_hello(suites)).await.unwrap();
        let answer = c.exact(7).await.unwrap_or_default();
        assert!(
            answer.first() == Some(&0x15)
                && answer.get(5) == Some(&2)
                && matches!(answer.get(6), Some(40 | 70)),
            "a fatal handshake_failure or protocol_version alert: {answer:?}"
        );
    }

    let tls13 = python_tls(&h, port, "TLSv1_3", "TLSv1_3", "DEFAULT").await;
    assert!(tls13.starts_with("TLSv1.3 TLS_"), "{tls13}");
    let tls12 = python_tls(&h, port, "TLSv1_2", "TLSv1_2", "DEFAULT").await;
    assert!(tls12.starts_with("TLSv1.2 ECDHE-"), "{tls12}");
    assert!(
        tls12.contains("GCM") || tls12.contains("CHACHA20"),
        "{tls12}"
    );
    // Static RSA key exchange and CBC suites are not offered.
    let weak = python_tls(
        &h,
        port,
        "TLSv1_2",
        "TLSv1_2",
        "AES128-SHA:AES256-SHA:AES128-SHA256:AES128-GCM-SHA256:ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES128-SHA",
    )
    .await;
    assert!(weak.starts_with("ERROR"), "{weak}");
    let tls11 = python_tls(&h, port, "TLSv1", "TLSv1_1", "DEFAULT:@SECLEVEL=0").await;
    assert!(tls11.starts_with("ERROR"), "{tls11}");
    assert_no_panic(&h);
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_certificates_are_always_verified() {
    let mut h = Harness::start().await;
    h.add_delegated_account("printer", PASSWORD, MAILBOX).await;
    // Trusting another CA than the one that signed the fake's certificate: refused.
    let other = oxbridge_fake::TestPki::generate();
    let other_ca = h.root().join("other-ca.pem");
    std::fs::write(&other_ca, other.ca_pem()).unwrap();
    let config = std::fs::read_to_string(&h.config).unwrap();
    let upstream = format!("address = \"{}\"", h.fake.imap_addr());
    let at = config.find(&upstream).unwrap();
    let ca_line = format!("ca_file = \"{}/ca.pem\"", h.root().display());
    let ca_at = at + config[at..].find(&ca_line).unwrap();
    let mut changed = config.clone();
    changed.replace_range(
        ca_at..ca_at + ca_line.len(),
        &format!("ca_file = \"{}\"", other_ca.display()),
    );
    std::fs::write(&h.config, &changed).unwrap();
    h.serve().await;
    let login = format!("a LOGIN printer {PASSWORD}\r\n");
    let out = imap_exchange(&h, true, &[login.as_bytes()]).await;
    assert!(out.starts_with("a NO [UNAVAILABLE]"), "{out}");
    h.stop().await;
    assert!(
        h.logs().contains("trusts an extra certificate authority"),
        "{}",
        h.logs()
    );
    assert!(
        h.logs().contains("invalid peer certificate"),
        "{}",
        h.logs()
    );

    // The right CA but a name the certificate is not for: refused.
    std::fs::write(&h.config, &config).unwrap();
    replace_config(
        &h,
        "server_name = \"outlook.office365.com\"",
        "server_name = \"imap.example.com\"",
    );
    h.serve().await;
    let out = imap_exchange(&h, true, &[login.as_bytes()]).await;
    assert!(out.starts_with("a NO [UNAVAILABLE]"), "{out}");
    h.stop().await;
    assert!(
        h.logs().contains("certificate not valid for name"),
        "{}",
        h.logs()
    );

    // There is no switch to turn verification off: such keys are configuration errors.
    std::fs::write(&h.config, &config).unwrap();
    for key in [
        "insecure = true",
        "danger_accept_invalid_certs = true",
        "verify = false",
    ] {
        replace_config(
            &h,
            "server_name = \"outlook.office365.com\"",
            &format!("server_name = \"outlook.office365.com\"\n{key}"),
        );
        let out = std::process::Command::new(support::oxbridge_bin())
            .args(["check-config", "--config"])
            .arg(&h.config)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{key} was accepted");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(said.contains("unknown field"), "{key}: {said}");
        std::fs::write(&h.config, &config).unwrap();
    }

    // With the right CA and name, the same login works.
    h.serve().await;
    let out = imap_exchange(&h, true, &[login.as_bytes()]).await;
    assert!(out.starts_with("a OK"), "{out}");
    assert_no_panic(&h);
}
