//! SMTP submission through oxbridge with real clients (swaks, curl, msmtp, Python's
//! smtplib) over STARTTLS (587) and implicit TLS (465), against the fake Exchange Online.
//! Every message is read back from the fake recipient's mailbox and compared byte for byte.

#![allow(clippy::unwrap_used)] // test scenarios: a panic is the failure report

mod support;

use std::path::PathBuf;

use support::{stderr, stdout, Harness};
use tokio::process::Command;

const PASSWORD: &str = "scan-to-mail 2026!";
const MAILBOX: &str = "scanner@contoso.onmicrosoft.com";
const RECIPIENT: &str = "alex@contoso.onmicrosoft.com";

async fn world() -> Harness {
    let mut h = Harness::start().await;
    h.add_smtp();
    h.add_delegated_account("scanner", PASSWORD, MAILBOX).await;
    h.fake.directory().add_mailbox(RECIPIENT);
    h.serve().await;
    h
}

/// A small message; the `.`-led line checks dot-stuffing on both hops.
fn message(client: &str) -> Vec<u8> {
    format!(
        "From: Scanner <{MAILBOX}>\r\nTo: {RECIPIENT}\r\nSubject: Scan via {client}\r\n\
         Date: Mon, 16 Nov 2026 09:00:00 +0000\r\nMessage-ID: <{client}@contoso.onmicrosoft.com>\r\n\
         \r\nScanned document attached.\r\n.a line that starts with a dot\r\n"
    )
    .into_bytes()
}

fn write_message(h: &Harness, name: &str, bytes: &[u8]) -> PathBuf {
    let path = h.dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn inbox(h: &Harness) -> Vec<Vec<u8>> {
    h.fake.directory().messages(RECIPIENT, "INBOX")
}

async fn swaks(h: &Harness, args: &[&str]) -> std::process::Output {
    Command::new("swaks")
        .args(["--server", "127.0.0.1", "--timeout", "60", "--tls-verify"])
        .arg("--tls-ca-path")
        .arg(&h.ca_file)
        .args(args)
        .output()
        .await
        .expect("swaks runs")
}

/// swaks always ends DATA with CRLF `.` CRLF, adding a line break of its own; give it the
/// message without its last one so that what it sends is exactly the message.
fn swaks_data(h: &Harness, name: &str, message: &[u8]) -> PathBuf {
    write_message(h, name, message.strip_suffix(b"\r\n").unwrap_or(message))
}

#[tokio::test(flavor = "multi_thread")]
async fn swaks_submits_over_starttls_and_implicit_tls() {
    let h = world().await;
    let first = message("swaks-starttls");
    let file = swaks_data(&h, "swaks1.eml", &first);
    let data = format!("@{}", file.display());
    let port = h.submission_port.to_string();
    let out = swaks(
        &h,
        &[
            "--port",
            &port,
            "--tls",
            "--auth",
            "PLAIN",
            "--auth-user",
            "scanner",
            "--auth-password",
            PASSWORD,
            "--from",
            MAILBOX,
            "--to",
            RECIPIENT,
            "--data",
            &data,
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "{}\n{}\n{}",
        stdout(&out),
        stderr(&out),
        h.logs()
    );
    let transcript = stdout(&out);
    assert!(
        transcript.contains("<~  235 2.7.0 Authentication successful"),
        "{transcript}"
    );
    // After the splice the upstream answers: Exchange's own queue reply.
    assert!(transcript.contains("<~  250 2.0.0 OK <"), "{transcript}");

    let second = message("swaks-465");
    let file = swaks_data(&h, "swaks2.eml", &second);
    let data = format!("@{}", file.display());
    let port = h.smtps_port.to_string();
    let out = swaks(
        &h,
        &[
            "--port",
            &port,
            "--tls-on-connect",
            "--auth",
            "LOGIN",
            "--auth-user",
            "scanner",
            "--auth-password",
            PASSWORD,
            "--from",
            MAILBOX,
            "--to",
            RECIPIENT,
            "--data",
            &data,
        ],
    )
    .await;
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert_eq!(inbox(&h), vec![first, second]);
}

#[tokio::test(flavor = "multi_thread")]
async fn curl_submits_with_ssl_reqd_and_over_smtps() {
    let h = world().await;
    let user = format!("scanner:{PASSWORD}");
    let first = message("curl-starttls");
    let file = write_message(&h, "curl1.eml", &first);
    let out = h
        .curl(&[
            "--ssl-reqd",
            "-u",
            &user,
            "--mail-from",
            MAILBOX,
            "--mail-rcpt",
            RECIPIENT,
            "--upload-file",
            file.to_str().unwrap(),
            &format!("smtp://127.0.0.1:{}/client.example", h.submission_port),
        ])
        .await;
    assert!(
        out.status.success(),
        "curl failed: {}\n{}",
        stderr(&out),
        h.logs()
    );

    let second = message("curl-smtps");
    let file = write_message(&h, "curl2.eml", &second);
    let out = h
        .curl(&[
            "-u",
            &user,
            "--mail-from",
            MAILBOX,
            "--mail-rcpt",
            RECIPIENT,
            "--upload-file",
            file.to_str().unwrap(),
            &format!("smtps://127.0.0.1:{}/client.example", h.smtps_port),
        ])
        .await;
    assert!(out.status.success(), "curl failed: {}", stderr(&out));
    assert_eq!(inbox(&h), vec![first, second]);
    assert_eq!(
        h.fake.entra().token_requests(),
        1,
        "one refresh served both logins"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn msmtp_submits_over_starttls() {
    let h = world().await;
    let sent = message("msmtp");
    let file = write_message(&h, "msmtp.eml", &sent);
    let config = h.dir.path().join("msmtprc");
    std::fs::write(
        &config,
        format!(
            "account oxbridge\nhost 127.0.0.1\nport {port}\nfrom {MAILBOX}\nauth plain\n\
             user scanner\npassword {PASSWORD}\ntls on\ntls_starttls on\ntls_trust_file {ca}\n\
             domain client.example\naccount default : oxbridge\n",
            port = h.submission_port,
            ca = h.ca_file.display(),
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = Command::new("msmtp")
        .arg("--file")
        .arg(&config)
        .arg(RECIPIENT)
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .await
        .expect("msmtp runs");
    assert!(
        out.status.success(),
        "msmtp failed: {}\n{}",
        stderr(&out),
        h.logs()
    );
    assert_eq!(inbox(&h), vec![sent]);
}

/// A 20 MB attachment, base64 in 76-column lines like any mail client makes it.
fn big_message() -> Vec<u8> {
    let mut out = format!(
        "From: {MAILBOX}\r\nTo: {RECIPIENT}\r\nSubject: 20 MB scan\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\n\
         Content-Type: text/plain\r\n\r\nSee attachment.\r\n--b1\r\n\
         Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    )
    .into_bytes();
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut state: u32 = 2026;
    let mut line = Vec::with_capacity(78);
    while out.len() < 20 * 1024 * 1024 {
        line.clear();
        for _ in 0..76 {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            line.push(alphabet[(state >> 16) as usize % 64]);
        }
        line.extend_from_slice(b"\r\n");
        out.extend_from_slice(&line);
    }
    out.extend_from_slice(b"--b1--\r\n");
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn python_smtplib_starttls_login_and_smtp_ssl_with_8bitmime_and_20_mb() {
    let h = world().await;
    let submission = h.submission_port.to_string();
    let smtps = h.smtps_port.to_string();

    // STARTTLS + AUTH LOGIN, an 8BITMIME body with raw UTF-8.
    let eight_bit = format!(
        "From: {MAILBOX}\r\nTo: {RECIPIENT}\r\nSubject: =?utf-8?q?R=C3=A9sum=C3=A9?=\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\r\nGr\u{fc}\u{df}e aus K\u{f6}ln \u{2014} \u{20ac}42, \u{65e5}\u{672c}.\r\n"
    )
    .into_bytes();
    let file = write_message(&h, "8bit.eml", &eight_bit);
    let out = h
        .smtp_client(&[
            "send",
            "--port",
            &submission,
            "--mode",
            "starttls",
            "--user",
            "scanner",
            "--password",
            PASSWORD,
            "--auth",
            "login",
            "--sender",
            MAILBOX,
            "--to",
            RECIPIENT,
            "--file",
            file.to_str().unwrap(),
            "--eightbit",
        ])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["sent"], true, "{v}\n{}", h.logs());
    assert_eq!(v["auth"]["code"], 235, "{v}");
    assert!(
        v["features"]
            .as_array()
            .unwrap()
            .contains(&"8bitmime".into()),
        "{v}"
    );

    // Implicit TLS (465) + AUTH PLAIN, a 20 MB attachment.
    let big = big_message();
    let file = write_message(&h, "big.eml", &big);
    let out = h
        .smtp_client(&[
            "send",
            "--port",
            &smtps,
            "--mode",
            "ssl",
            "--user",
            "scanner",
            "--password",
            PASSWORD,
            "--sender",
            MAILBOX,
            "--to",
            RECIPIENT,
            "--file",
            file.to_str().unwrap(),
        ])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["sent"], true, "{v}\n{}", h.logs());
    let got = inbox(&h);
    assert_eq!(got.len(), 2);
    assert!(got[0] == eight_bit, "the 8BITMIME body arrived altered");
    assert!(got[1] == big, "the 20 MB message arrived altered");
    assert_eq!(h.fake.smtp().submissions()[0].sender, MAILBOX);
}

#[tokio::test(flavor = "multi_thread")]
async fn ehlo_shows_the_upstreams_extensions_with_auth_plain_login() {
    let h = world().await;
    let out = h
        .smtp_client(&["ehlo", "--port", &h.submission_port.to_string()])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let plain = v["plain"]["text"].as_str().unwrap();
    let tls = v["tls"]["text"].as_str().unwrap();
    let lines = |text: &str| -> Vec<String> { text.lines().skip(1).map(String::from).collect() };
    assert_eq!(
        lines(plain),
        [
            "SIZE 157286400",
            "PIPELINING",
            "DSN",
            "ENHANCEDSTATUSCODES",
            "STARTTLS",
            "8BITMIME",
            "BINARYMIME",
            "CHUNKING",
            "SMTPUTF8"
        ],
        "before TLS: STARTTLS and no AUTH\n{plain}"
    );
    assert_eq!(
        lines(tls),
        [
            "SIZE 157286400",
            "PIPELINING",
            "DSN",
            "ENHANCEDSTATUSCODES",
            "AUTH PLAIN LOGIN",
            "8BITMIME",
            "BINARYMIME",
            "CHUNKING",
            "SMTPUTF8"
        ],
        "after TLS: the upstream's list with AUTH PLAIN LOGIN for AUTH LOGIN XOAUTH2\n{tls}"
    );
    assert!(tls.starts_with("oxbridge Hello [127.0.0.1]"), "{tls}");

    let out = h
        .smtp_client(&["ehlo", "--port", &h.smtps_port.to_string(), "--mode", "ssl"])
        .await;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["tls"]["text"]
            .as_str()
            .unwrap()
            .contains("AUTH PLAIN LOGIN"),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn helo_only_client_authenticates_and_sends() {
    let h = world().await;
    let sent = message("helo-only");
    let file = write_message(&h, "helo.eml", &sent);
    // A HELO-only device on implicit TLS: no extensions at all, AUTH PLAIN anyway.
    let out = h
        .smtp_client(&[
            "send",
            "--port",
            &h.smtps_port.to_string(),
            "--mode",
            "ssl",
            "--helo",
            "--user",
            "scanner",
            "--password",
            PASSWORD,
            "--sender",
            MAILBOX,
            "--to",
            RECIPIENT,
            "--file",
            file.to_str().unwrap(),
        ])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["sent"], true, "{v}\n{}", h.logs());
    assert_eq!(v["features"], serde_json::json!([]), "{v}");
    assert_eq!(inbox(&h), vec![sent]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_submitted_message_is_read_back_through_imap() {
    let h = world().await;
    // The scanner mails itself, then fetches the message from its INBOX over IMAP.
    let sent = message("round-trip");
    let file = write_message(&h, "roundtrip.eml", &sent);
    let user = format!("scanner:{PASSWORD}");
    let out = h
        .curl(&[
            "--ssl-reqd",
            "-u",
            &user,
            "--mail-from",
            MAILBOX,
            "--mail-rcpt",
            MAILBOX,
            "--upload-file",
            file.to_str().unwrap(),
            &format!("smtp://127.0.0.1:{}/", h.submission_port),
        ])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let fetched = h
        .curl(&[
            "-u",
            &user,
            &format!("imaps://127.0.0.1:{}/INBOX;UID=1", h.imaps_port),
        ])
        .await;
    assert!(fetched.status.success(), "{}", stderr(&fetched));
    assert_eq!(fetched.stdout, sent);
    // Exchange keeps a copy in Sent Items, as it does for client submissions.
    assert_eq!(
        h.fake.directory().messages(MAILBOX, "Sent Items"),
        vec![sent]
    );
}
