//! Relay rules: devices that cannot log in (many multifunction printers) submit through
//! oxbridge on a mailbox's behalf because of the network they are on, and only with the
//! senders the rule allows. Without a matching rule, MAIL FROM before AUTH gets `530`.
//!
//! Loopback stands in for the office network: rules cover `127.0.0.2/32`, and clients bind
//! their source address to `127.0.0.2` (allowed) or `127.0.0.1` (not covered).

#![allow(clippy::unwrap_used)] // test scenarios: a panic is the failure report

mod support;

use support::{stderr, stdout, Harness};
use tokio::process::Command;

const PASSWORD: &str = "relay-account-password";
const MAILBOX: &str = "scanner@contoso.onmicrosoft.com";
/// A shared address the scanner mailbox may send as (SendAs granted in Exchange).
const ALIAS: &str = "mfp-2f@contoso.onmicrosoft.com";
const RECIPIENT: &str = "alex@contoso.onmicrosoft.com";
const ALLOWED_SOURCE: &str = "127.0.0.2";

async fn world(relay: bool) -> Harness {
    let mut h = Harness::start().await;
    h.add_smtp();
    if relay {
        h.append_config(&format!(
            r#"
[[relay]]
networks = ["{ALLOWED_SOURCE}/32"]
account = "scanner"
senders = ["{MAILBOX}", "{}"]
"#,
            ALIAS.to_uppercase()
        ));
    }
    h.add_delegated_account("scanner", PASSWORD, MAILBOX).await;
    h.fake.directory().add_mailbox(RECIPIENT);
    h.fake.smtp().grant_send_as(MAILBOX, ALIAS);
    h.serve().await;
    h
}

fn message(subject: &str, from: &str) -> Vec<u8> {
    format!("From: {from}\r\nTo: {RECIPIENT}\r\nSubject: {subject}\r\n\r\nScan attached.\r\n")
        .into_bytes()
}

/// Sends without logging in; returns the client's JSON report.
async fn send_without_login(
    h: &Harness,
    source: &str,
    sender: &str,
    mode: &str,
    body: &[u8],
) -> serde_json::Value {
    let file = tempfile::Builder::new()
        .suffix(".eml")
        .tempfile_in(h.dir.path())
        .unwrap();
    std::fs::write(file.path(), body).unwrap();
    let out = h
        .smtp_client(&[
            "send",
            "--port",
            &h.submission_port.to_string(),
            "--mode",
            mode,
            "--source",
            source,
            "--sender",
            sender,
            "--to",
            RECIPIENT,
            "--file",
            file.path().to_str().unwrap(),
        ])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn inbox(h: &Harness) -> Vec<Vec<u8>> {
    h.fake.directory().messages(RECIPIENT, "INBOX")
}

#[tokio::test(flavor = "multi_thread")]
async fn an_allowed_network_sends_without_auth_with_an_allowed_sender() {
    let h = world(true).await;
    // A printer without TLS, and one with STARTTLS; the second uses the alias (the rule's
    // senders compare case-insensitively).
    let first = message("Scan 1", MAILBOX);
    let v = send_without_login(&h, ALLOWED_SOURCE, MAILBOX, "plain", &first).await;
    assert_eq!(v["sent"], true, "{v}\n{}", h.logs());
    let second = message("Scan 2", ALIAS);
    let v = send_without_login(&h, ALLOWED_SOURCE, ALIAS, "starttls", &second).await;
    assert_eq!(v["sent"], true, "{v}\n{}", h.logs());
    assert_eq!(inbox(&h), vec![first, second]);

    // Exchange saw the rule's mailbox log in, and the device's envelope sender.
    let submissions = h.fake.smtp().submissions();
    assert_eq!(submissions.len(), 2);
    assert!(submissions.iter().all(|s| s.mailbox == MAILBOX));
    assert_eq!(submissions[0].sender, MAILBOX);
    assert_eq!(submissions[1].sender, ALIAS);
    let logs = h.logs();
    assert!(
        logs.contains("method") && logs.contains("\"relay\""),
        "{logs}"
    );
    let metrics = h.admin_get("/metrics").await;
    assert!(
        metrics.contains("oxbridge_logins_total{protocol=\"smtp\",result=\"ok\"} 2"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_helo_only_printer_pipelining_through_swaks_is_answered_by_the_upstream() {
    let h = world(true).await;
    let body = message("swaks relay", MAILBOX);
    let file = h.dir.path().join("swaks-relay.eml");
    // swaks adds its own line break before the final dot.
    std::fs::write(&file, body.strip_suffix(b"\r\n").unwrap()).unwrap();
    // HELO only, no TLS, no AUTH: the oldest kind of device.
    let out = Command::new("swaks")
        .args([
            "--server",
            "127.0.0.1",
            "--protocol",
            "SMTP",
            "--local-interface",
            ALLOWED_SOURCE,
        ])
        .args([
            "--port",
            &h.submission_port.to_string(),
            "--from",
            MAILBOX,
            "--to",
            RECIPIENT,
        ])
        .arg("--data")
        .arg(format!("@{}", file.display()))
        .output()
        .await
        .expect("swaks runs");
    assert!(
        out.status.success(),
        "{}\n{}\n{}",
        stdout(&out),
        stderr(&out),
        h.logs()
    );
    let transcript = stdout(&out);
    // Oxbridge answered HELO; the upstream answered the replayed MAIL FROM and the rest.
    assert!(
        transcript.contains("<-  250 oxbridge Hello [127.0.0.2]"),
        "{transcript}"
    );
    assert!(
        transcript.contains("<-  250 2.1.0 Sender OK"),
        "{transcript}"
    );
    assert!(
        transcript.contains("<-  250 2.1.5 Recipient OK"),
        "{transcript}"
    );

    // ESMTP with pipelining: MAIL, RCPT and DATA arrive in one write; the two after MAIL
    // wait in oxbridge's buffer and go upstream right behind the replayed MAIL.
    let out = Command::new("swaks")
        .args([
            "--server",
            "127.0.0.1",
            "--pipeline",
            "--local-interface",
            ALLOWED_SOURCE,
        ])
        .args([
            "--port",
            &h.submission_port.to_string(),
            "--from",
            MAILBOX,
            "--to",
            RECIPIENT,
        ])
        .arg("--data")
        .arg(format!("@{}", file.display()))
        .output()
        .await
        .expect("swaks runs");
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert_eq!(inbox(&h), vec![body.clone(), body]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_disallowed_sender_and_a_disallowed_network_are_refused() {
    let h = world(true).await;
    let body = message("spoof", "ceo@contoso.onmicrosoft.com");
    let v = send_without_login(
        &h,
        ALLOWED_SOURCE,
        "ceo@contoso.onmicrosoft.com",
        "plain",
        &body,
    )
    .await;
    assert_eq!(v["sent"], false, "{v}");
    assert_eq!(v["error"]["code"], 553, "{v}");
    assert_eq!(
        v["error"]["text"], "5.7.1 Sender address not allowed for relay from this network",
        "{v}"
    );
    let v = send_without_login(&h, "127.0.0.1", MAILBOX, "plain", &message("x", MAILBOX)).await;
    assert_eq!(v["sent"], false, "{v}");
    assert_eq!(v["error"]["code"], 530, "{v}");
    assert_eq!(v["error"]["text"], "5.7.0 Authentication required", "{v}");
    assert!(inbox(&h).is_empty());
    assert!(
        h.fake.directory().xoauth_logins().is_empty(),
        "nothing logged in upstream"
    );
    assert_eq!(h.fake.entra().token_requests(), 0, "no token was fetched");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_rule_mail_before_auth_needs_authentication() {
    let h = world(false).await;
    for source in ["127.0.0.1", ALLOWED_SOURCE] {
        let v = send_without_login(&h, source, MAILBOX, "starttls", &message("x", MAILBOX)).await;
        assert_eq!(v["sent"], false, "{v}");
        assert_eq!(v["error"]["code"], 530, "{v}");
        assert_eq!(v["error"]["text"], "5.7.0 Authentication required", "{v}");
    }
    assert!(inbox(&h).is_empty());
    let metrics = h.admin_get("/metrics").await;
    assert!(
        metrics.contains("oxbridge_logins_total{protocol=\"smtp\",result=\"no_relay_rule\"} 2"),
        "{metrics}"
    );
}

/// A password-sealed account can only be opened by one of its passwords, which a relay does
/// not bring: a rule naming one is reported when oxbridge starts, and its relays are refused
/// without reaching Exchange.
#[tokio::test(flavor = "multi_thread")]
async fn a_rule_naming_a_password_sealed_account_is_reported_and_refused() {
    let mut h = Harness::start().await;
    h.add_smtp();
    h.add_sealed_account("scanner", PASSWORD, MAILBOX).await;
    h.fake.directory().add_mailbox(RECIPIENT);
    // The rule comes after the account (`account add` refuses to seal one a rule names).
    h.append_config(&format!(
        "[[relay]]\nnetworks = [\"{ALLOWED_SOURCE}/32\"]\naccount = \"scanner\"\nsenders = [\"{MAILBOX}\"]\n"
    ));
    h.serve().await;
    let reported = || {
        h.logs()
            .contains("a relay rule names a password-sealed account")
    };
    for _ in 0..50 {
        if reported() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(reported(), "no warning at start:\n{}", h.logs());

    let v = send_without_login(&h, ALLOWED_SOURCE, MAILBOX, "plain", &message("x", MAILBOX)).await;
    assert_eq!(v["sent"], false, "{v}");
    assert!(inbox(&h).is_empty());
    assert!(
        h.fake.directory().xoauth_logins().is_empty(),
        "nothing logged in upstream"
    );
}
