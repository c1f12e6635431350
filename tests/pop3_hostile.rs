//! Hostile input on the POP3 listeners, while a well-behaved POP3 session keeps working.

#![allow(clippy::unwrap_used)] // test scenarios: a panic is the failure report

mod support;

use std::time::Duration;

use support::{stderr, Harness};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

const PASSWORD: &str = "hostile-pop3-password";
const MAILBOX: &str = "kiosk@contoso.onmicrosoft.com";

#[tokio::test(flavor = "multi_thread")]
async fn hostile_clients_are_refused_while_a_good_session_finishes_byte_exact() {
    let mut h = Harness::start().await;
    h.add_pop3();
    h.add_delegated_account("kiosk", PASSWORD, MAILBOX).await;
    let message =
        b"Subject: keep me intact\r\n\r\nThe good session retrieves this at the end.\r\n".to_vec();
    h.fake.directory().deliver(MAILBOX, "INBOX", &message);
    h.serve().await;

    // A good client logs in and holds its session open while the hostile ones run.
    let out_file = h.dir.path().join("good.eml");
    let pop3s = h.pop3s_port.to_string();
    let mut good = h.pop3_client_interactive(&[
        "hold",
        "--port",
        &pop3s,
        "--user",
        "kiosk",
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
    assert_eq!(ready.as_deref(), Some("READY"), "{}", h.logs());
    let logins_before = h.fake.directory().xoauth_logins().len();

    // USER and PASS pipelined behind STLS are discarded, not executed.
    let plain = h.pop3_port.to_string();
    let out = h
        .pop3_client(&[
            "stls-injection",
            "--port",
            &plain,
            "--user",
            "kiosk",
            "--password",
            PASSWORD,
        ])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["greeting"], "+OK oxbridge POP3 service ready.\r\n", "{v}");
    assert_eq!(v["stls_reply"], "+OK Begin TLS negotiation.\r\n", "{v}");
    assert_eq!(
        v["after_tls"], "+OK\r\n",
        "the first reply after TLS answers NOOP, not the injected USER: {v}"
    );
    assert!(v["capa"].as_str().unwrap().contains("\r\nUSER\r\n"), "{v}");
    assert_eq!(v["quit"], "+OK oxbridge POP3 server signing off.\r\n");
    assert_eq!(
        h.fake.directory().xoauth_logins().len(),
        logins_before,
        "no upstream login happened"
    );

    // A 1 MB line is refused and the connection closed.
    let out = h
        .pop3_client(&["long-line", "--port", &pop3s, "--size", "1048576"])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["reply"], "-ERR Line too long.\r\n", "{v}");
    assert_eq!(v["closed"], true);

    // 1,000 commands before login end the connection.
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", h.pop3_port))
        .await
        .unwrap();
    let _ = tcp.write_all(&b"NOOP\r\n".repeat(1000)).await;
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut reply)).await;
    let reply = String::from_utf8_lossy(&reply);
    assert!(
        reply.contains("-ERR Too many commands without login.\r\n"),
        "{reply}"
    );
    assert!(reply.matches("+OK\r\n").count() <= 64, "{reply}");

    // The good session is unaffected: it retrieves its message byte for byte and quits.
    let mut stdin = good.stdin.take().unwrap();
    stdin.write_all(b"go\n").await.unwrap();
    let done = tokio::time::timeout(Duration::from_secs(30), good_out.next_line())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.as_deref(), Some("{\"done\": true, \"count\": 1}"));
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
    h.add_pop3();
    h.serve().await;
    for port in [h.pop3_port, h.pop3s_port] {
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let mut reply = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(15), tcp.read_to_end(&mut reply)).await;
        assert!(read.is_ok(), "the connection was closed by the server");
        if port == h.pop3_port {
            assert_eq!(
                String::from_utf8_lossy(&reply),
                "+OK oxbridge POP3 service ready.\r\n-ERR Autologout; idle for too long.\r\n"
            );
        }
    }
}
