//! What POP3 clients are told when something is wrong, with RFC 3206 response codes so
//! pollers know whether to retry (`[SYS/TEMP]`) or to stop and tell the user (`[AUTH]`), and
//! what the operator sees.

#![allow(clippy::unwrap_used)] // test scenarios: a panic is the failure report

mod support;

use std::time::Duration;

use oxbridge_fake::InjectedError;
use oxbridge_wire::Protocol;
use support::{contains, stderr, Harness};

const PASSWORD: &str = "poller-password";
const MAILBOX: &str = "poller@contoso.onmicrosoft.com";
const MESSAGE: &[u8] = b"Subject: polled\r\n\r\nfetch me\r\n";

async fn world() -> Harness {
    let mut h = Harness::start().await;
    h.add_pop3();
    h.add_delegated_account("poller", PASSWORD, MAILBOX).await;
    h.fake.directory().deliver(MAILBOX, "INBOX", MESSAGE);
    h.serve().await;
    h
}

/// Logs in with poplib's USER/PASS on the implicit-TLS port; returns the -ERR line.
async fn login_error(h: &Harness, user: &str, password: &str) -> String {
    let port = h.pop3s_port.to_string();
    let out = h
        .pop3_client(&[
            "login-fail",
            "--port",
            &port,
            "--user",
            user,
            "--password",
            password,
        ])
        .await;
    assert!(
        out.status.success(),
        "login unexpectedly succeeded or crashed: {}\n{}",
        stderr(&out),
        h.logs()
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["error"].as_str().unwrap().to_string()
}

async fn login_ok(h: &Harness) -> bool {
    let out = h
        .curl(&[
            "-u",
            &format!("poller:{PASSWORD}"),
            &format!("pop3s://127.0.0.1:{}/1", h.pop3s_port),
        ])
        .await;
    out.status.success() && out.stdout == MESSAGE
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_password_and_unknown_user_get_the_same_auth_code() {
    let h = world().await;
    let wrong = login_error(&h, "poller", "not-the-password").await;
    let unknown = login_error(&h, "nobody", PASSWORD).await;
    assert_eq!(wrong, "-ERR [AUTH] Authentication failed.");
    assert_eq!(wrong, unknown, "unknown users are indistinguishable");
    assert_eq!(
        h.fake.entra().token_requests(),
        0,
        "no token fetched for a bad login"
    );
    let metrics = h.admin_get("/metrics").await;
    assert!(
        metrics.contains("oxbridge_logins_total{protocol=\"pop3\",result=\"bad_credentials\"} 2"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn token_endpoint_down_is_sys_temp_and_recovers_without_restart() {
    let h = world().await;
    h.fake.entra().set_unavailable(true);
    let error = login_error(&h, "poller", PASSWORD).await;
    assert_eq!(
        error,
        "-ERR [SYS/TEMP] Mail service temporarily unavailable, try again later."
    );
    h.fake.entra().set_unavailable(false);
    let mut recovered = false;
    for _ in 0..30 {
        if login_ok(&h).await {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(
        recovered,
        "login works again once Entra is back:\n{}",
        h.logs()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_down_is_sys_temp() {
    let mut h = Harness::start().await;
    h.add_pop3();
    h.add_delegated_account("poller", PASSWORD, MAILBOX).await;
    // Point the POP3 upstream at a port nothing listens on.
    let config = std::fs::read_to_string(&h.config).unwrap();
    let dead = format!("127.0.0.1:{}", support::free_port());
    let config = config.replace(&h.fake.pop3_addr().to_string(), &dead);
    std::fs::write(&h.config, config).unwrap();
    h.serve().await;
    let error = login_error(&h, "poller", PASSWORD).await;
    assert!(error.starts_with("-ERR [SYS/TEMP] "), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn revoked_grant_is_auth_and_marks_the_account_for_reconsent() {
    let h = world().await;
    h.fake
        .entra()
        .inject_error(Some(InjectedError::invalid_grant(70008)));
    let error = login_error(&h, "poller", PASSWORD).await;
    assert_eq!(
        error,
        "-ERR [AUTH] The mailbox sign-in has expired; an administrator must renew it."
    );
    let account = h.show_account("poller").await;
    assert_eq!(account["status"], "needs-reconsent", "{account}");
    assert!(
        account["status_reason"].as_str().unwrap().contains("70008"),
        "{account}"
    );
    assert!(
        h.logs().contains("70008"),
        "the operator sees the AADSTS code"
    );
    // Later logins fail the same way without asking Entra again.
    h.fake.entra().inject_error(None);
    let requests = h.fake.entra().token_requests();
    let again = login_error(&h, "poller", PASSWORD).await;
    assert_eq!(again, error);
    assert_eq!(h.fake.entra().token_requests(), requests);
}

#[tokio::test(flavor = "multi_thread")]
async fn account_not_allowed_pop3_is_refused() {
    let mut h = Harness::start().await;
    h.add_pop3();
    h.add_delegated_account_for("imaponly", PASSWORD, MAILBOX, "imap")
        .await;
    h.serve().await;
    let error = login_error(&h, "imaponly", PASSWORD).await;
    assert_eq!(error, "-ERR [AUTH] This account may not use POP3.");
    assert_eq!(h.fake.entra().token_requests(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn mailbox_with_pop_disabled_is_refused_by_the_upstream() {
    let h = world().await;
    h.fake
        .directory()
        .set_protocol_enabled(MAILBOX, Protocol::Pop3, false);
    let error = login_error(&h, "poller", PASSWORD).await;
    assert_eq!(
        error,
        "-ERR [AUTH] The mail server refused the mailbox login."
    );
    h.fake
        .directory()
        .set_protocol_enabled(MAILBOX, Protocol::Pop3, true);
    assert!(login_ok(&h).await, "{}", h.logs());
}

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_reaches_the_trace_logs() {
    let mut h = Harness::start().await;
    h.add_pop3();
    let rt = h.add_delegated_account("poller", PASSWORD, MAILBOX).await;
    h.fake.directory().deliver(MAILBOX, "INBOX", MESSAGE);
    h.serve_with_log("trace").await;
    assert!(login_ok(&h).await, "{}", h.logs());
    let _ = login_error(&h, "poller", "wrong-pop3-password").await;
    h.stop().await;

    let logs = h.logs();
    assert!(logs.contains("login"), "trace logs were written");
    let mut secrets = h.fake.entra().issued_secrets();
    secrets.extend([rt, PASSWORD.to_string(), "wrong-pop3-password".to_string()]);
    for secret in &secrets {
        assert!(
            !contains(logs.as_bytes(), secret.as_bytes()),
            "a secret appears in the logs"
        );
    }
}
