//! Logs as an operator reads them: with `[log] format = "json"`, exactly one audit event
//! (target `oxbridge::audit`) per login attempt on every protocol and for SMTP relay
//! requests, carrying the local user, mailbox, protocol, peer, method and result (`ok` or
//! the reason class), and no secret anywhere in the log.

#![allow(clippy::unwrap_used)] // test scenarios: a panic is the failure report

mod ops_support;
mod support;

use ops_support::ops_client;
use support::Harness;

const PASSWORD: &str = "correct horse battery staple";
const MAILBOX: &str = "alex@contoso.onmicrosoft.com";
const SCANNER: &str = "scanner@contoso.onmicrosoft.com";

fn audit_events(h: &Harness) -> Vec<serde_json::Value> {
    h.logs()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("{e}: {l}"))
        })
        .filter(|v| v["target"] == "oxbridge::audit")
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn one_json_audit_event_per_login_attempt_on_every_protocol_and_no_secrets() {
    let mut h = Harness::start().await;
    let refresh_token = h.add_delegated_account("alex", PASSWORD, MAILBOX).await;
    h.add_delegated_account_for("scanner", "scanner-password", SCANNER, "smtp")
        .await;
    h.add_pop3();
    h.add_smtp();
    h.append_config(&format!(
        "[[relay]]\nnetworks = [\"127.0.0.1\"]\naccount = \"scanner\"\nsenders = [\"{SCANNER}\"]\n\n[log]\nformat = \"json\"\n"
    ));
    h.serve().await;

    let good = format!("alex:{PASSWORD}");
    let bad = "alex:not-the-password";
    let imaps = format!("imaps://127.0.0.1:{}/", h.imaps_port);
    let pop3s = format!("pop3s://127.0.0.1:{}/", h.pop3s_port);
    let smtps = format!("smtps://127.0.0.1:{}", h.smtps_port);
    let message = h.root().join("message.eml");
    std::fs::write(
        &message,
        format!("From: {MAILBOX}\r\nSubject: audit\r\n\r\nhello\r\n"),
    )
    .unwrap();
    let mail = |user: &str| {
        vec![
            "-u".to_string(),
            user.to_string(),
            "--mail-from".to_string(),
            MAILBOX.to_string(),
            "--mail-rcpt".to_string(),
            "someone@example.com".to_string(),
            "-T".to_string(),
            message.display().to_string(),
            smtps.clone(),
        ]
    };
    let mut expected = Vec::new();
    for (args, protocol, user, result) in [
        (
            vec!["-u".to_string(), good.clone(), imaps.clone()],
            "imap",
            "alex",
            "ok",
        ),
        (
            vec!["-u".to_string(), bad.to_string(), imaps.clone()],
            "imap",
            "alex",
            "bad_credentials",
        ),
        (
            vec!["-u".to_string(), good.clone(), pop3s.clone()],
            "pop3",
            "alex",
            "ok",
        ),
        (
            vec![
                "-u".to_string(),
                "nobody:whatever".to_string(),
                pop3s.clone(),
            ],
            "pop3",
            "nobody",
            "bad_credentials",
        ),
        (mail(&good), "smtp", "alex", "ok"),
        (mail(bad), "smtp", "alex", "bad_credentials"),
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = h.curl(&args).await;
        assert_eq!(
            out.status.success(),
            result == "ok",
            "{args:?}: {}",
            support::stderr(&out)
        );
        expected.push((protocol, user, result, "password"));
    }
    let port = h.submission_port.to_string();
    for (sender, result) in [
        (SCANNER, "ok"),
        ("someone@contoso.onmicrosoft.com", "sender_not_allowed"),
    ] {
        let out = ops_client(&h, &["smtp-relay", "--port", &port, "--sender", sender]).await;
        assert!(out.status.success(), "{}", support::stderr(&out));
        expected.push(("smtp", "scanner", result, "relay"));
    }

    h.stop().await;
    let events = audit_events(&h);
    assert_eq!(events.len(), expected.len(), "{events:#?}");
    for (event, (protocol, user, result, method)) in events.iter().zip(&expected) {
        let fields = &event["fields"];
        assert_eq!(fields["message"], "login", "{event}");
        assert_eq!(fields["protocol"], *protocol, "{event}");
        assert_eq!(fields["user"], *user, "{event}");
        assert_eq!(fields["result"], *result, "{event}");
        assert_eq!(fields["method"], *method, "{event}");
        assert!(
            fields["peer"].as_str().unwrap().starts_with("127.0.0.1:"),
            "{event}"
        );
        let mailbox = fields["mailbox"].as_str().unwrap();
        match (*user, *result) {
            // An unknown user or a wrong password resolves no mailbox.
            (_, "bad_credentials") => assert_eq!(mailbox, "", "{event}"),
            ("scanner", "sender_not_allowed") => assert_eq!(mailbox, "", "{event}"),
            ("scanner", _) => assert_eq!(mailbox, SCANNER, "{event}"),
            _ => assert_eq!(mailbox, MAILBOX, "{event}"),
        }
        assert_eq!(event["level"], "INFO", "{event}");
    }

    // No secret reaches the log: passwords, the refresh token, the client secret, and no
    // access token (the fake's tokens share a recognisable prefix with none of these, so
    // check the bearer form too).
    let logs = h.logs();
    for secret in [
        PASSWORD,
        "not-the-password",
        "scanner-password",
        refresh_token.as_str(),
        support::CLIENT_SECRET,
    ] {
        assert!(!logs.contains(secret), "a secret is in the log: {secret}");
    }
    assert!(!logs.contains("Bearer "), "an access token is in the log");
    assert!(
        !logs.contains("auth=Bearer"),
        "an XOAUTH2 blob is in the log"
    );
    assert!(
        !logs.contains("dXNlcj1"),
        "a base64 XOAUTH2 blob is in the log"
    );
}

/// A device still set up without STARTTLS is refused before its password is checked, and
/// the audit log says which one it was and that its password crossed the network in clear.
#[tokio::test(flavor = "multi_thread")]
async fn a_login_refused_for_want_of_tls_is_audited() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    let mut h = Harness::start().await;
    h.add_delegated_account("alex", PASSWORD, MAILBOX).await;
    h.append_config("[log]\nformat = \"json\"\n");
    h.serve().await;
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", h.starttls_port))
        .await
        .unwrap();
    let mut conn = BufReader::new(tcp);
    let mut line = String::new();
    conn.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("* OK"), "{line}");
    conn.get_mut()
        .write_all(format!("a1 LOGIN alex \"{PASSWORD}\"\r\n").as_bytes())
        .await
        .unwrap();
    line.clear();
    conn.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("a1 NO [PRIVACYREQUIRED]"), "{line}");

    let events = audit_events(&h);
    assert_eq!(events.len(), 1, "{events:#?}");
    let fields = &events[0]["fields"];
    assert_eq!(fields["result"], "tls_required", "{events:#?}");
    assert_eq!(fields["user"], "alex");
    assert_eq!(fields["protocol"], "imap");
    assert_eq!(fields["password_sent"], true);
    assert!(!h.logs().contains(PASSWORD), "the password is never logged");
}
