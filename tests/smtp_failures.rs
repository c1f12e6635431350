//! What SMTP clients are told when something is wrong. Oxbridge's own refusals carry RFC 3463
//! codes that make devices give up (`535 5.7.8`) or queue and retry (`454 4.7.0`); the
//! upstream's refusals reach the client in the upstream's own words.

#![allow(clippy::unwrap_used)] // test scenarios: a panic is the failure report

mod support;

use std::time::Duration;

use oxbridge_fake::InjectedError;
use support::{stderr, Harness};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const PASSWORD: &str = "s3cret-device-password";
const MAILBOX: &str = "printer@contoso.onmicrosoft.com";
const RECIPIENT: &str = "alex@contoso.onmicrosoft.com";

async fn world() -> Harness {
    let mut h = Harness::start().await;
    h.add_smtp();
    h.add_delegated_account("printer", PASSWORD, MAILBOX).await;
    h.fake.directory().add_mailbox(RECIPIENT);
    h.serve().await;
    h
}

fn message_file(h: &Harness) -> String {
    let path = h.dir.path().join("message.eml");
    std::fs::write(
        &path,
        format!("From: {MAILBOX}\r\nTo: {RECIPIENT}\r\nSubject: test\r\n\r\nhello\r\n"),
    )
    .unwrap();
    path.to_str().unwrap().to_string()
}

/// Logs in as `user` and sends as `sender`; returns the client's JSON report.
async fn send(h: &Harness, user: &str, password: &str, sender: &str) -> serde_json::Value {
    let file = message_file(h);
    let out = h
        .smtp_client(&[
            "send",
            "--port",
            &h.submission_port.to_string(),
            "--user",
            user,
            "--password",
            password,
            "--sender",
            sender,
            "--to",
            RECIPIENT,
            "--file",
            &file,
        ])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn error(v: &serde_json::Value) -> (u64, String) {
    assert_eq!(v["sent"], false, "{v}");
    (
        v["error"]["code"].as_u64().unwrap(),
        v["error"]["text"].as_str().unwrap().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_password_and_unknown_user_get_the_same_535_5_7_8() {
    let h = world().await;
    let wrong = error(&send(&h, "printer", "not-the-password", MAILBOX).await);
    let unknown = error(&send(&h, "nobody", PASSWORD, MAILBOX).await);
    assert_eq!(
        wrong,
        (535, "5.7.8 Authentication credentials invalid".into())
    );
    assert_eq!(wrong, unknown, "unknown users are indistinguishable");
    assert_eq!(h.fake.entra().token_requests(), 0);
    let metrics = h.admin_get("/metrics").await;
    assert!(
        metrics.contains("oxbridge_logins_total{protocol=\"smtp\",result=\"bad_credentials\"} 2"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn token_endpoint_down_is_454_then_mail_flows_again() {
    let h = world().await;
    h.fake.entra().set_unavailable(true);
    let (code, text) = error(&send(&h, "printer", PASSWORD, MAILBOX).await);
    assert_eq!(
        (code, text.as_str()),
        (
            454,
            "4.7.0 Temporary authentication failure, try again later"
        )
    );
    h.fake.entra().set_unavailable(false);
    let mut recovered = false;
    for _ in 0..30 {
        if send(&h, "printer", PASSWORD, MAILBOX).await["sent"] == true {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(recovered, "mail flows once Entra is back:\n{}", h.logs());
    assert_eq!(h.fake.directory().messages(RECIPIENT, "INBOX").len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_down_is_454() {
    let mut h = Harness::start().await;
    h.add_smtp();
    h.add_delegated_account("printer", PASSWORD, MAILBOX).await;
    let config = std::fs::read_to_string(&h.config).unwrap();
    let dead = format!("127.0.0.1:{}", support::free_port());
    std::fs::write(
        &h.config,
        config.replace(&h.fake.smtp_addr().to_string(), &dead),
    )
    .unwrap();
    h.serve().await;
    let (code, _) = error(&send(&h, "printer", PASSWORD, MAILBOX).await);
    assert_eq!(code, 454);
}

#[tokio::test(flavor = "multi_thread")]
async fn revoked_grant_is_535_5_7_8_and_marks_the_account_for_reconsent() {
    let h = world().await;
    h.fake
        .entra()
        .inject_error(Some(InjectedError::invalid_grant(70008)));
    let (code, text) = error(&send(&h, "printer", PASSWORD, MAILBOX).await);
    assert_eq!(code, 535);
    assert_eq!(
        text,
        "5.7.8 The mailbox sign-in has expired; an administrator must renew it"
    );
    let account = h.show_account("printer").await;
    assert_eq!(account["status"], "needs-reconsent", "{account}");
    assert!(
        h.logs().contains("70008"),
        "the operator sees the AADSTS code"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_535_5_7_139_reaches_the_client_verbatim() {
    let h = world().await;
    h.fake.smtp().set_tenant_auth_disabled(true);
    let (code, text) = error(&send(&h, "printer", PASSWORD, MAILBOX).await);
    assert_eq!(code, 535);
    assert!(
        text.starts_with("5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant. Visit https://aka.ms/smtp_auth_disabled for more information. ["),
        "{text}"
    );
    h.fake.smtp().set_tenant_auth_disabled(false);
    h.fake
        .directory()
        .set_protocol_enabled(MAILBOX, oxbridge_wire::Protocol::Smtp, false);
    let (code, text) = error(&send(&h, "printer", PASSWORD, MAILBOX).await);
    assert_eq!(code, 535);
    assert!(
        text.contains("SmtpClientAuthentication is disabled for the Mailbox."),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn replies_after_the_splice_are_the_upstreams_send_as_denied_and_thread_limit() {
    let h = world().await;
    let (code, text) = error(&send(&h, "printer", PASSWORD, "ceo@contoso.onmicrosoft.com").await);
    assert_eq!(code, 554);
    assert!(
        text.starts_with(&format!("5.2.252 SendAsDenied; {MAILBOX} not allowed to send as ceo@contoso.onmicrosoft.com; STOREDRV.Submission.Exception:SendAsDeniedException")),
        "{text}"
    );

    // Three sessions hold the mailbox's submission slots at Exchange; a fourth gets 432.
    let file = message_file(&h);
    let port = h.submission_port.to_string();
    let mut holders = Vec::new();
    for _ in 0..3 {
        let mut child = h.smtp_client_interactive(&[
            "hold",
            "--port",
            &port,
            "--user",
            "printer",
            "--password",
            PASSWORD,
            "--sender",
            MAILBOX,
            "--to",
            RECIPIENT,
            "--file",
            &file,
        ]);
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ready.as_deref(), Some("READY"));
        holders.push((child, lines));
    }
    let (code, text) = error(&send(&h, "printer", PASSWORD, MAILBOX).await);
    assert_eq!(code, 432);
    assert!(
        text.starts_with("4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded [Hostname="),
        "{text}"
    );
    for (mut child, mut lines) in holders {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"go\n")
            .await
            .unwrap();
        let done = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(done, "{\"sent\": true}");
        assert!(child.wait().await.unwrap().success());
    }
    assert_eq!(h.fake.directory().messages(RECIPIENT, "INBOX").len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn no_password_or_token_reaches_the_trace_logs() {
    let mut h = Harness::start().await;
    h.add_smtp();
    let refresh_token = h.add_delegated_account("printer", PASSWORD, MAILBOX).await;
    h.fake.directory().add_mailbox(RECIPIENT);
    h.serve_with_log("trace").await;
    assert_eq!(send(&h, "printer", PASSWORD, MAILBOX).await["sent"], true);
    let _ = send(&h, "printer", "wrong-password-attempt", MAILBOX).await;
    h.stop().await;
    let logs = h.logs();
    assert!(logs.contains("login"), "trace logs were written");
    let mut secrets = h.fake.entra().issued_secrets();
    secrets.extend([
        refresh_token,
        PASSWORD.to_string(),
        "wrong-password-attempt".to_string(),
    ]);
    // And not in the encodings that cross the wire: the client's AUTH PLAIN blob and
    // oxbridge's XOAUTH2 blobs.
    let encode = oxbridge_wire::sasl::encode_base64;
    let mut encoded = vec![encode(format!("\0printer\0{PASSWORD}").as_bytes())];
    for secret in &secrets {
        assert!(
            !logs.contains(secret.as_str()),
            "a secret appears in the logs"
        );
        encoded.push(encode(
            format!("user={MAILBOX}\x01auth=Bearer {secret}\x01\x01").as_bytes(),
        ));
    }
    for blob in &encoded {
        assert!(
            !logs.contains(blob.as_str()),
            "a SASL blob appears in the logs"
        );
    }
}
