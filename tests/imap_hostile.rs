//! Hostile input on the IMAP listeners, while a well-behaved session keeps working.

#![allow(clippy::unwrap_used)] // test scenarios: a panic is the failure report

mod support;

use std::time::Duration;

use support::Harness;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const PASSWORD: &str = "hostile-suite-password";
const MAILBOX: &str = "frontdesk@contoso.onmicrosoft.com";

#[tokio::test(flavor = "multi_thread")]
async fn hostile_clients_are_refused_while_a_good_session_finishes_byte_exact() {
    let mut h = Harness::start().await;
    h.add_delegated_account("frontdesk", PASSWORD, MAILBOX)
        .await;
    let message =
        b"Subject: keep me intact\r\n\r\nThe good session fetches this at the end.\r\n".to_vec();
    h.fake.directory().deliver(MAILBOX, "INBOX", &message);
    h.serve().await;

    // A good client logs in and holds its session open while the hostile ones run.
    let out_file = h.dir.path().join("good.eml");
    let port = h.imaps_port.to_string();
    let mut good = h.python_interactive(&[
        "hold",
        "--port",
        &port,
        "--user",
        "frontdesk",
        "--password",
        PASSWORD,
        "--out",
        out_file.to_str().unwrap(),
    ]);
    let mut good_out = BufReader::new(good.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(30), good_out.next_line())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ready.as_deref(), Some("READY"));
    let logins_before = h.fake.directory().xoauth_logins().len();

    // Bytes pipelined behind STARTTLS are discarded, not executed.
    let starttls = h.starttls_port.to_string();
    let out = h
        .python(&[
            "starttls-injection",
            "--port",
            &starttls,
            "--user",
            "frontdesk",
            "--password",
            PASSWORD,
        ])
        .await;
    assert!(out.status.success(), "{}", support::stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["greeting"].as_str().unwrap().contains("LOGINDISABLED"),
        "{v}"
    );
    assert!(
        v["starttls_reply"].as_str().unwrap().starts_with("a OK"),
        "{v}"
    );
    let after = v["after_tls"].as_str().unwrap();
    assert!(
        !after.contains("b "),
        "the injected LOGIN got an answer: {after}"
    );
    assert!(after.contains("AUTH=PLAIN"), "{after}");
    assert_eq!(
        h.fake.directory().xoauth_logins().len(),
        logins_before,
        "no upstream login happened"
    );

    // A 100 MB literal is refused without being asked for; a 4 GB non-synchronizing one closes.
    let out = h.python(&["big-literal", "--port", &port]).await;
    assert!(out.status.success(), "{}", support::stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["sync"], "a BAD [TOOBIG] Literal too large.\r\n", "{v}");
    assert_eq!(v["noop"], "b OK NOOP completed.\r\n", "{v}");
    assert!(v["nonsync"].as_str().unwrap().starts_with("* BYE"), "{v}");
    assert_eq!(v["closed"], true);

    // An oversized line gets BYE and a close.
    let out = h
        .python(&["long-line", "--port", &port, "--size", "1048576"])
        .await;
    assert!(out.status.success(), "{}", support::stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["reply"], "* BYE Line too long.\r\n", "{v}");
    assert_eq!(v["closed"], true);

    // Thousands of commands before login end the connection.
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", h.starttls_port))
        .await
        .unwrap();
    let noops = b"x NOOP\r\n".repeat(2000);
    let _ = tcp.write_all(&noops).await;
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read_to_end(&mut tcp, &mut reply),
    )
    .await;
    let reply = String::from_utf8_lossy(&reply);
    assert!(
        reply.contains("* BYE Too many commands without login"),
        "{reply}"
    );

    // The good session is unaffected: it fetches its message byte for byte and logs out.
    let mut stdin = good.stdin.take().unwrap();
    stdin.write_all(b"go\n").await.unwrap();
    let done = tokio::time::timeout(Duration::from_secs(30), good_out.next_line())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.as_deref(), Some("{\"done\": true}"));
    assert!(good.wait().await.unwrap().success());
    assert_eq!(std::fs::read(&out_file).unwrap(), message);
    assert!(!h.logs().contains("panicked"), "{}", h.logs());
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_clients_are_timed_out() {
    let mut h = Harness::start().await;
    let config = std::fs::read_to_string(&h.config).unwrap();
    std::fs::write(
        &h.config,
        config.replace("pre_auth_timeout_secs = 20", "pre_auth_timeout_secs = 2"),
    )
    .unwrap();
    h.serve().await;
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", h.starttls_port))
        .await
        .unwrap();
    let mut reply = Vec::new();
    let read = tokio::time::timeout(
        Duration::from_secs(15),
        tokio::io::AsyncReadExt::read_to_end(&mut tcp, &mut reply),
    )
    .await;
    assert!(read.is_ok(), "the connection was closed by the server");
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("* OK"), "{reply}");
    assert!(reply.contains("* BYE Autologout"), "{reply}");
}
