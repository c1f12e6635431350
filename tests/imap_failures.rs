//! What IMAP clients are told when something is wrong, and what the operator sees.

#![allow(clippy::unwrap_used)] // test scenarios: a panic is the failure report

mod support;

use std::time::Duration;

use oxbridge_fake::InjectedError;
use support::{contains, Harness};

const PASSWORD: &str = "s3cret-device-password";
const MAILBOX: &str = "printer@contoso.onmicrosoft.com";

async fn world() -> Harness {
    let mut h = Harness::start().await;
    h.add_delegated_account("printer", PASSWORD, MAILBOX).await;
    h.fake
        .directory()
        .deliver(MAILBOX, "INBOX", b"Subject: hello\r\n\r\nhi\r\n");
    h.serve().await;
    h
}

async fn login_error(h: &Harness, user: &str, password: &str) -> String {
    let port = h.imaps_port.to_string();
    let out = h
        .python(&[
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
        "login unexpectedly succeeded or crashed: {}",
        support::stderr(&out)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["error"].as_str().unwrap().to_string()
}

async fn login_ok(h: &Harness) -> bool {
    let out = h
        .curl(&[
            "-u",
            &format!("printer:{PASSWORD}"),
            &format!("imaps://127.0.0.1:{}/INBOX;UID=1", h.imaps_port),
        ])
        .await;
    out.status.success()
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_password_and_unknown_user_get_the_same_authenticationfailed() {
    let h = world().await;
    let wrong = login_error(&h, "printer", "not-the-password").await;
    let unknown = login_error(&h, "nobody", PASSWORD).await;
    assert!(wrong.contains("[AUTHENTICATIONFAILED]"), "{wrong}");
    assert_eq!(wrong, unknown, "unknown users are indistinguishable");
    assert_eq!(
        h.fake.entra().token_requests(),
        0,
        "no token fetched for a bad login"
    );
    let metrics = h.admin_get("/metrics").await;
    assert!(
        metrics.contains("oxbridge_logins_total{protocol=\"imap\",result=\"bad_credentials\"} 2"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn token_endpoint_down_is_temporary_and_recovers_without_restart() {
    let h = world().await;
    h.fake.entra().set_unavailable(true);
    let error = login_error(&h, "printer", PASSWORD).await;
    assert!(error.contains("[UNAVAILABLE]"), "{error}");
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
async fn upstream_down_is_temporary() {
    let mut h = Harness::start().await;
    h.add_delegated_account("printer", PASSWORD, MAILBOX).await;
    // Point the upstream at a port nothing listens on.
    let config = std::fs::read_to_string(&h.config).unwrap();
    let dead = format!("127.0.0.1:{}", support::free_port());
    let config = config.replace(&h.fake.imap_addr().to_string(), &dead);
    std::fs::write(&h.config, config).unwrap();
    h.serve().await;
    let error = login_error(&h, "printer", PASSWORD).await;
    assert!(error.contains("[UNAVAILABLE]"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn revoked_grant_fails_and_marks_the_account_for_reconsent() {
    let h = world().await;
    h.fake
        .entra()
        .inject_error(Some(InjectedError::invalid_grant(70008)));
    let error = login_error(&h, "printer", PASSWORD).await;
    assert!(error.contains("[AUTHENTICATIONFAILED]"), "{error}");
    let account = h.show_account("printer").await;
    assert_eq!(account["status"], "needs-reconsent", "{account}");
    assert!(
        account["status_reason"].as_str().unwrap().contains("70008"),
        "{account}"
    );
    assert!(
        h.logs().contains("70008"),
        "the operator sees the AADSTS code in the logs"
    );

    // Importing a new refresh token after re-consent makes it work again.
    h.fake.entra().inject_error(None);
    let fresh = h
        .fake
        .entra()
        .issue_refresh_token(support::CLIENT_ID, MAILBOX);
    let file = h.dir.path().join("new.rt");
    std::fs::write(&file, fresh).unwrap();
    let out = h
        .account(
            &[
                "import-token",
                "printer",
                "--refresh-token-file",
                file.to_str().unwrap(),
            ],
            "",
        )
        .await;
    assert!(out.status.success(), "{}", support::stderr(&out));
    assert_eq!(h.show_account("printer").await["status"], "active");
    assert!(login_ok(&h).await, "{}", h.logs());
}

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_reaches_the_store_file_or_trace_logs() {
    let mut h = Harness::start().await;
    let first_rt = h.add_delegated_account("printer", PASSWORD, MAILBOX).await;
    h.fake
        .directory()
        .deliver(MAILBOX, "INBOX", b"Subject: hello\r\n\r\nhi\r\n");
    h.serve_with_log("trace").await;
    assert!(login_ok(&h).await);
    let _ = login_error(&h, "printer", "wrong-password-attempt").await;
    h.stop().await;

    let logs = h.logs();
    assert!(logs.contains("login"), "trace logs were written");
    let store = h.data_dir_bytes();
    let mut secrets: Vec<String> = h.fake.entra().issued_secrets();
    secrets.push(first_rt);
    secrets.push(PASSWORD.to_string());
    secrets.push("wrong-password-attempt".to_string());
    secrets.push(support::CLIENT_SECRET.to_string());
    assert!(
        secrets.len() >= 5,
        "the fake issued an access and a rotated refresh token"
    );
    for secret in &secrets {
        assert!(
            !logs.contains(secret.as_str()),
            "a secret appears in the logs"
        );
        assert!(
            !contains(&store, secret.as_bytes()),
            "a secret appears in the data directory"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_endpoints_answer() {
    let h = world().await;
    assert_eq!(h.admin_get("/healthz").await, "ok\n");
    assert_eq!(h.admin_get("/readyz").await, "ready\n");
    assert!(login_ok(&h).await);
    let metrics = h.admin_get("/metrics").await;
    for name in [
        "oxbridge_logins_total{protocol=\"imap\",result=\"ok\"} 1",
        "oxbridge_token_requests_total",
        "oxbridge_sessions_total{protocol=\"imap\"}",
        "oxbridge_upstream_login_duration_seconds_bucket",
    ] {
        assert!(metrics.contains(name), "missing {name} in\n{metrics}");
    }
}
