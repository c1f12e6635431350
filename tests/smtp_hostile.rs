//! Hostile input on the SMTP listeners, while a well-behaved submission keeps working.

#![allow(clippy::unwrap_used)] // test scenarios: a panic is the failure report

mod support;

use std::time::Duration;

use support::{stderr, Harness};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const PASSWORD: &str = "hostile-suite-password";
const MAILBOX: &str = "frontdesk@contoso.onmicrosoft.com";
const RECIPIENT: &str = "alex@contoso.onmicrosoft.com";

async fn world(pre_auth_timeout_secs: u32) -> Harness {
    let mut h = Harness::start().await;
    let config = std::fs::read_to_string(&h.config).unwrap();
    std::fs::write(
        &h.config,
        config.replace(
            "pre_auth_timeout_secs = 20",
            &format!("pre_auth_timeout_secs = {pre_auth_timeout_secs}"),
        ),
    )
    .unwrap();
    h.add_smtp();
    h.add_delegated_account("frontdesk", PASSWORD, MAILBOX)
        .await;
    h.fake.directory().add_mailbox(RECIPIENT);
    h.serve().await;
    h
}

fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", stderr(out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_clients_are_refused_while_a_good_submission_finishes_byte_exact() {
    let h = world(20).await;
    let message =
        b"From: frontdesk@contoso.onmicrosoft.com\r\nSubject: keep me intact\r\n\r\nSent at the end.\r\n"
            .to_vec();
    let file = h.dir.path().join("good.eml");
    std::fs::write(&file, &message).unwrap();

    // A good client logs in and holds its session open while the hostile ones run.
    let port = h.submission_port.to_string();
    let mut good = h.smtp_client_interactive(&[
        "hold",
        "--port",
        &port,
        "--user",
        "frontdesk",
        "--password",
        PASSWORD,
        "--sender",
        MAILBOX,
        "--to",
        RECIPIENT,
        "--file",
        file.to_str().unwrap(),
    ]);
    let mut good_out = BufReader::new(good.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(30), good_out.next_line())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ready.as_deref(), Some("READY"));
    let logins_before = h.fake.directory().xoauth_logins().len();

    // Bytes pipelined behind STARTTLS are discarded, and the EHLO state is reset.
    let v = json(
        &h.smtp_client(&[
            "starttls-injection",
            "--port",
            &port,
            "--user",
            "frontdesk",
            "--password",
            PASSWORD,
        ])
        .await,
    );
    let before = v["before_tls"].as_str().unwrap();
    assert!(
        before.contains("250-STARTTLS") && !before.contains("AUTH"),
        "{v}"
    );
    assert_eq!(v["starttls"], "220 2.0.0 Ready to start TLS\r\n", "{v}");
    assert_eq!(
        v["first_after_tls"], "250 2.0.0 OK\r\n",
        "the injected AUTH ran: {v}"
    );
    assert_eq!(
        v["auth_without_ehlo"], "503 5.5.1 Send EHLO or HELO first\r\n",
        "{v}"
    );
    assert_eq!(
        h.fake.directory().xoauth_logins().len(),
        logins_before,
        "no upstream login happened"
    );

    // A 1 MB line is refused and the connection closed.
    let v = json(
        &h.smtp_client(&["long-line", "--port", &port, "--size", "1048576"])
            .await,
    );
    assert!(
        v["reply"]
            .as_str()
            .unwrap()
            .ends_with("500 5.5.2 Line too long\r\n"),
        "{v}"
    );

    // A thousand commands before AUTH end the connection.
    let v = json(
        &h.smtp_client(&["many-commands", "--port", &port, "--count", "1000"])
            .await,
    );
    assert_eq!(
        v["last"], "421 4.7.0 oxbridge Too many commands without login, closing connection",
        "{v}"
    );
    assert!(v["replies"].as_u64().unwrap() <= 66, "{v}");
    assert_eq!(v["closed"], true, "{v}");

    // The good session is unaffected: it sends and its message arrives byte for byte.
    let mut stdin = good.stdin.take().unwrap();
    stdin.write_all(b"go\n").await.unwrap();
    let done = tokio::time::timeout(Duration::from_secs(30), good_out.next_line())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.as_deref(), Some("{\"sent\": true}"));
    assert!(good.wait().await.unwrap().success());
    assert_eq!(
        h.fake.directory().messages(RECIPIENT, "INBOX"),
        vec![message]
    );
    assert!(!h.logs().contains("panicked"), "{}", h.logs());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_client_is_timed_out_while_another_session_sends() {
    let h = world(3).await;
    let port = h.submission_port.to_string();
    let file = h.dir.path().join("m.eml");
    let message = b"Subject: meanwhile\r\n\r\nsent while another client idles\r\n".to_vec();
    std::fs::write(&file, &message).unwrap();
    let slow_args = ["slow", "--port", &port];
    let send_args = [
        "send",
        "--port",
        &port,
        "--user",
        "frontdesk",
        "--password",
        PASSWORD,
        "--sender",
        MAILBOX,
        "--to",
        RECIPIENT,
        "--file",
        file.to_str().unwrap(),
    ];
    let (slow, send) = tokio::join!(h.smtp_client(&slow_args), h.smtp_client(&send_args));
    let v = json(&send);
    assert_eq!(v["sent"], true, "{v}");
    let v = json(&slow);
    let text = v["text"].as_str().unwrap();
    assert!(text.starts_with("220 oxbridge ESMTP"), "{v}");
    assert!(
        text.ends_with(
            "421 4.4.2 oxbridge Timeout waiting for client input, closing connection\r\n"
        ),
        "{v}"
    );
    assert_eq!(v["closed"], true, "{v}");
    assert!(v["seconds"].as_f64().unwrap() < 15.0, "{v}");
    assert_eq!(
        h.fake.directory().messages(RECIPIENT, "INBOX"),
        vec![message]
    );
}
