//! Onboarding and the grant lifecycle, end to end: the real `oxbridge` CLI and server against
//! the fake Entra ID and Exchange Online. Device code (with pending, slow_down, expiry),
//! browser sign-in with PKCE (the test follows the redirect itself), certificate credentials,
//! named app passwords, per-protocol identities, grant health, claims challenges, the
//! notification hook and the background refresh of idle grants.

#![allow(clippy::unwrap_used)] // test scenarios: a panic is the failure report

mod support;

use std::time::{Duration, Instant};

use oxbridge_fake::entra::DevicePoll;
use oxbridge_fake::InjectedError;
use support::{contains, stderr, stdout, Harness, CLIENT_ID};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;

const PASSWORD: &str = "local password for the scanner";
const MAILBOX: &str = "alex@contoso.onmicrosoft.com";

/// Reads the child's stdout line by line until `pick` returns something (or the child ends).
/// Call once per child: lines buffered past the pick are not kept.
async fn read_until<T>(
    child: &mut Child,
    seen: &mut Vec<String>,
    mut pick: impl FnMut(&[String]) -> Option<T>,
) -> T {
    let out = child.stdout.as_mut().unwrap();
    let mut lines = BufReader::new(out).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(found) = pick(seen) {
            return found;
        }
        let line = tokio::time::timeout_at(deadline.into(), lines.next_line())
            .await
            .expect("output in time")
            .unwrap();
        match line {
            Some(line) => seen.push(line),
            None => panic!(
                "command ended before printing what was expected:\n{}",
                seen.join("\n")
            ),
        }
    }
}

/// The indented line after the one that contains `label`.
fn value_after(lines: &[String], label: &str) -> Option<String> {
    let at = lines.iter().position(|l| l.contains(label))?;
    lines[at + 1..]
        .iter()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_string())
}

/// Waits for the child, collecting the rest of stdout and stderr.
async fn finish(mut child: Child, mut seen: Vec<String>) -> (bool, String, String) {
    let mut rest = String::new();
    if let Some(mut out) = child.stdout.take() {
        use tokio::io::AsyncReadExt;
        out.read_to_string(&mut rest).await.unwrap();
    }
    seen.extend(rest.lines().map(str::to_string));
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("command ends")
        .unwrap();
    (
        output.status.success(),
        seen.join("\n"),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

async fn imap_login_ok(h: &Harness, user: &str, password: &str) -> bool {
    let out = h
        .curl(&[
            "-u",
            &format!("{user}:{password}"),
            &format!("imaps://127.0.0.1:{}/", h.imaps_port),
        ])
        .await;
    out.status.success() && stdout(&out).contains("INBOX")
}

#[tokio::test(flavor = "multi_thread")]
async fn device_code_add_survives_pending_and_slow_down_then_logs_in() {
    let mut h = Harness::start().await;
    h.fake.directory().add_mailbox(MAILBOX);
    h.fake
        .entra()
        .set_device_code_timing(1, Duration::from_secs(120));
    h.fake.entra().script_device_polls(vec![
        DevicePoll::Pending,
        DevicePoll::Pending,
        DevicePoll::Pending,
        DevicePoll::SlowDown,
    ]);
    let mut child = h
        .account_interactive(
            &[
                "add",
                "alex",
                "--mailbox",
                MAILBOX,
                "--app",
                "contoso",
                "--device-code",
                "--password-stdin",
            ],
            &format!("{PASSWORD}\n"),
        )
        .await;
    let mut seen = Vec::new();
    let (uri, code) = read_until(&mut child, &mut seen, |l| {
        Some((
            value_after(l, "open this page")?,
            value_after(l, "enter the code")?,
        ))
    })
    .await;
    assert_eq!(uri, "https://microsoft.com/devicelogin");
    assert_eq!(code.len(), 9, "{code}");
    assert!(h.fake.entra().approve_device_code(&code, MAILBOX));
    let started = Instant::now();
    let (ok, out, err) = finish(child, seen).await;
    assert!(ok, "add failed:\n{out}\n{err}");
    // pending ×3 at 1 s, slow_down, then one more wait of 6 s: about 10 s, never faster.
    let (polls, gaps) = h.fake.entra().device_code_polls(&code);
    assert_eq!(polls, 5, "{gaps:?}");
    assert!(
        gaps[..3].iter().all(|g| *g >= Duration::from_secs(1)),
        "{gaps:?}"
    );
    assert!(
        gaps[3] >= Duration::from_secs(6),
        "slow_down honoured: {gaps:?}"
    );
    assert!(started.elapsed() >= Duration::from_secs(5));
    // Not a terminal: a handful of lines, including the slow-down, no spinner frames.
    assert!(out.contains("now every 6 s"), "{out}");
    assert!(out.lines().count() < 25, "too chatty:\n{out}");
    assert!(!out.contains('\r'), "{out:?}");

    let shown = h.show_account("alex").await;
    assert_eq!(shown["grant"], "refresh-token");
    assert_eq!(shown["status"], "active");
    h.serve().await;
    assert!(imap_login_ok(&h, "alex", PASSWORD).await, "{}", h.logs());
    let logins = h.fake.directory().xoauth_logins();
    assert!(logins
        .iter()
        .any(|l| l.protocol == "imap" && l.user == MAILBOX && l.ok));
    // The refresh token is sealed: it is nowhere in the data directory in the clear.
    for secret in h.fake.entra().issued_secrets() {
        assert!(!contains(&h.data_dir_bytes(), secret.as_bytes()));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_or_declined_device_code_fails_clearly_and_keeps_the_old_grant() {
    let mut h = Harness::start().await;
    h.add_delegated_account("alex", PASSWORD, MAILBOX).await;
    h.fake
        .entra()
        .set_device_code_timing(1, Duration::from_secs(3));
    let child = h.account_interactive(&["consent", "alex"], "").await;
    let (ok, out, err) = finish(child, Vec::new()).await;
    assert!(!ok, "{out}");
    assert!(
        err.contains("expired") && err.contains("run the command again"),
        "{err}"
    );

    h.fake
        .entra()
        .set_device_code_timing(1, Duration::from_secs(60));
    let mut child = h.account_interactive(&["consent", "alex"], "").await;
    let mut seen = Vec::new();
    let code = read_until(&mut child, &mut seen, |l| value_after(l, "enter the code")).await;
    assert!(h.fake.entra().decline_device_code(&code));
    let (ok, _, err) = finish(child, seen).await;
    assert!(!ok);
    assert!(err.contains("declined"), "{err}");

    // The grant stored before is untouched.
    h.serve().await;
    assert!(imap_login_ok(&h, "alex", PASSWORD).await, "{}", h.logs());
}

#[tokio::test(flavor = "multi_thread")]
async fn browser_sign_in_with_pkce_and_state_then_logs_in() {
    let mut h = Harness::start().await;
    h.add_delegated_account("alex", PASSWORD, MAILBOX).await;
    h.fake.entra().revoke_refresh_tokens(MAILBOX);
    h.fake.entra().set_signed_in_user(Some(MAILBOX));

    // A redirect with a forged state is refused.
    let mut child = h
        .account_interactive(&["consent", "alex", "--browser"], "")
        .await;
    let mut seen = Vec::new();
    let url = read_until(&mut child, &mut seen, |l| {
        value_after(l, "open this URL in a browser")
    })
    .await;
    let location = follow_authorize(&h, &url).await;
    let forged = location
        .split_once("state=")
        .map(|(head, _)| format!("{head}state=forged"))
        .unwrap();
    let reply = h
        .curl(&["-s", &forged.replace("localhost", "127.0.0.1")])
        .await;
    assert!(stdout(&reply).contains("Signed in"), "{}", stdout(&reply));
    let (ok, _, err) = finish(child, seen).await;
    assert!(!ok);
    assert!(err.contains("state does not match"), "{err}");

    // The real redirect works.
    let mut child = h
        .account_interactive(&["consent", "alex", "--browser"], "")
        .await;
    let mut seen = Vec::new();
    let url = read_until(&mut child, &mut seen, |l| {
        value_after(l, "open this URL in a browser")
    })
    .await;
    assert!(url.contains("code_challenge_method=S256"), "{url}");
    assert!(
        url.contains("redirect_uri=http%3A%2F%2Flocalhost%3A"),
        "{url}"
    );
    let location = follow_authorize(&h, &url).await;
    assert!(location.contains("code="), "{location}");
    let reply = h
        .curl(&["-s", &location.replace("localhost", "127.0.0.1")])
        .await;
    assert!(stdout(&reply).contains("Signed in"));
    let (ok, out, err) = finish(child, seen).await;
    assert!(ok, "{out}\n{err}");
    h.serve().await;
    assert!(imap_login_ok(&h, "alex", PASSWORD).await, "{}", h.logs());
}

/// GETs the fake's /authorize URL as a browser would and returns the redirect target.
async fn follow_authorize(h: &Harness, url: &str) -> String {
    let out = h
        .curl(&["-s", "-o", "/dev/null", "-w", "%{redirect_url}", url])
        .await;
    let location = stdout(&out);
    assert!(
        location.starts_with("http://localhost:"),
        "{location} {}",
        stderr(&out)
    );
    location
}

const CERT_CLIENT_PS: &str = "0c2e6f7a-1111-4b2c-9d3e-5f6a7b8c9d01";
const CERT_CLIENT_RS: &str = "0c2e6f7a-2222-4b2c-9d3e-5f6a7b8c9d02";

fn openssl_certificate(dir: &std::path::Path, name: &str) -> (String, String) {
    let cert = dir.join(format!("{name}-cert.pem"));
    let key = dir.join(format!("{name}-key.pem"));
    let status = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=oxbridge-e2e", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    (
        cert.to_string_lossy().into_owned(),
        key.to_string_lossy().into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn certificate_credentials_ps256_and_rs256_app_only_logins() {
    let mut h = Harness::start().await;
    for (client, name, assertion) in [
        (CERT_CLIENT_PS, "certps", ""),
        (CERT_CLIENT_RS, "certrs", "assertion = \"rs256\""),
    ] {
        let (cert, key) = openssl_certificate(h.root(), name);
        assert!(h
            .fake
            .entra()
            .register_app_certificate(client, &std::fs::read_to_string(&cert).unwrap()));
        h.append_config(&format!(
            r#"
[[app]]
name = "{name}"
authority = "{authority}"
tenant = "{tenant}"
client_id = "{client}"
certificate = "{cert}"
private_key = "{key}"
{assertion}
ca_file = "{root}/ca.pem"
"#,
            authority = h.fake.authority(),
            tenant = h.fake.tenant(),
            root = h.root().display(),
        ));
        let mailbox = format!("{name}@contoso.onmicrosoft.com");
        h.fake.directory().add_mailbox(&mailbox);
        h.fake.entra().grant_app_access(client, &mailbox);
        let out = h
            .account(
                &[
                    "add",
                    name,
                    "--mailbox",
                    &mailbox,
                    "--app",
                    name,
                    "--client-credentials",
                    "--password-stdin",
                ],
                PASSWORD,
            )
            .await;
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let check = h.curl_check_config().await;
    assert!(check.0, "{}", check.1);
    h.serve().await;
    for name in ["certps", "certrs"] {
        assert!(
            imap_login_ok(&h, name, PASSWORD).await,
            "{name}: {}",
            h.logs()
        );
    }
    let logins = h.fake.directory().xoauth_logins();
    assert!(logins
        .iter()
        .any(|l| l.user == "certrs@contoso.onmicrosoft.com" && l.ok));
}

impl Harness {
    async fn curl_check_config(&self) -> (bool, String) {
        let out = tokio::process::Command::new(support::oxbridge_bin())
            .arg("check-config")
            .arg("--config")
            .arg(&self.config)
            .output()
            .await
            .unwrap();
        (
            out.status.success(),
            format!("{}{}", stdout(&out), stderr(&out)),
        )
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn app_passwords_are_independent_and_revocable_without_touching_the_grant() {
    let mut h = Harness::start().await;
    h.add_delegated_account("shared", PASSWORD, MAILBOX).await;
    for (name, password) in [("scanner", "scanner-pass-1"), ("erp", "erp-pass-2")] {
        let out = h
            .account(
                &["passwd", "shared", "--add", name, "--password-stdin"],
                password,
            )
            .await;
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let dup = h
        .account(
            &["passwd", "shared", "--add", "erp", "--password-stdin"],
            "x",
        )
        .await;
    assert!(!dup.status.success());
    h.serve().await;
    for password in [PASSWORD, "scanner-pass-1", "erp-pass-2"] {
        assert!(
            imap_login_ok(&h, "shared", password).await,
            "{password}: {}",
            h.logs()
        );
    }
    let requests = h.fake.entra().token_requests();

    let out = h
        .account(&["passwd", "shared", "--revoke", "scanner"], "")
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!imap_login_ok(&h, "shared", "scanner-pass-1").await);
    assert!(imap_login_ok(&h, "shared", "erp-pass-2").await);
    assert_eq!(
        h.fake.entra().token_requests(),
        requests,
        "revoking a password does not touch the grant"
    );

    let shown = h.show_account("shared").await;
    let passwords = shown["passwords"].as_array().unwrap();
    let names: Vec<&str> = passwords
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["default", "erp"]);
    assert!(passwords.iter().all(|p| p["created_at"].as_i64().is_some()));
    let erp = passwords.iter().find(|p| p["name"] == "erp").unwrap();
    assert!(erp["last_used_at"].as_i64().is_some(), "{shown}");
    let list = h.account(&["passwd", "shared", "--list"], "").await;
    assert!(stdout(&list).contains("erp") && !stdout(&list).contains("scanner"));
    assert!(!contains(&h.data_dir_bytes(), b"erp-pass-2"));
}

#[tokio::test(flavor = "multi_thread")]
async fn shared_mailbox_uses_its_own_identity_per_protocol() {
    const SHARED: &str = "frontdesk@contoso.onmicrosoft.com";
    const DELEGATE: &str = "dana@contoso.onmicrosoft.com";
    let mut h = Harness::start().await;
    h.add_pop3();
    h.add_smtp();
    let directory = h.fake.directory();
    directory.add_mailbox(SHARED);
    directory.add_mailbox(DELEGATE);
    directory.grant_delegate_access(DELEGATE, SHARED);
    // The delegate signs in (device code); the account reads the shared mailbox.
    h.fake
        .entra()
        .set_device_code_timing(1, Duration::from_secs(60));
    let mut child = h
        .account_interactive(
            &[
                "add",
                "frontdesk",
                "--mailbox",
                SHARED,
                "--app",
                "contoso",
                "--identity",
                "smtp=dana@contoso.onmicrosoft.com",
                "--device-code",
                "--password-stdin",
            ],
            PASSWORD,
        )
        .await;
    let mut seen = Vec::new();
    let code = read_until(&mut child, &mut seen, |l| value_after(l, "enter the code")).await;
    assert!(h.fake.entra().approve_device_code(&code, DELEGATE));
    let (ok, out, err) = finish(child, seen).await;
    assert!(ok, "{out}\n{err}");
    let shown = h.show_account("frontdesk").await;
    assert_eq!(shown["identities"]["smtp"], DELEGATE);

    h.serve().await;
    assert!(
        imap_login_ok(&h, "frontdesk", PASSWORD).await,
        "{}",
        h.logs()
    );
    let pop = h
        .curl(&[
            "-u",
            &format!("frontdesk:{PASSWORD}"),
            &format!("pop3s://127.0.0.1:{}/", h.pop3s_port),
        ])
        .await;
    assert!(pop.status.success(), "{}\n{}", stderr(&pop), h.logs());
    let message = h.root().join("note.eml");
    std::fs::write(
        &message,
        format!("From: {DELEGATE}\r\nTo: desk@example.com\r\nSubject: hi\r\n\r\nbody\r\n"),
    )
    .unwrap();
    let sent = h
        .smtp_client(&[
            "send",
            "--port",
            &h.submission_port.to_string(),
            "--mode",
            "starttls",
            "--user",
            "frontdesk",
            "--password",
            PASSWORD,
            "--sender",
            DELEGATE,
            "--to",
            "desk@example.com",
            "--file",
            message.to_str().unwrap(),
        ])
        .await;
    assert!(sent.status.success(), "{}\n{}", stderr(&sent), h.logs());
    let logins = h.fake.directory().xoauth_logins();
    for protocol in ["imap", "pop3"] {
        assert!(
            logins
                .iter()
                .any(|l| l.protocol == protocol && l.user == SHARED && l.ok),
            "{protocol}: {logins:?}"
        );
    }
    // SMTP presented the delegate, on the same grant.
    assert!(
        logins
            .iter()
            .any(|l| l.protocol == "smtp" && l.user == DELEGATE && l.ok),
        "{logins:?}"
    );
    assert!(!logins
        .iter()
        .any(|l| l.user == DELEGATE && l.protocol != "smtp"));
    assert!(!logins
        .iter()
        .any(|l| l.user == SHARED && l.protocol == "smtp"));

    // Switching IMAP to the delegate's own mailbox is one command.
    let out = h
        .account(&["identity", "frontdesk", "imap", DELEGATE], "")
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(imap_login_ok(&h, "frontdesk", PASSWORD).await);
    assert!(h
        .fake
        .directory()
        .xoauth_logins()
        .iter()
        .any(|l| l.protocol == "imap" && l.user == DELEGATE && l.ok));
}

#[tokio::test(flavor = "multi_thread")]
async fn claims_challenge_is_reported_with_the_next_step_and_notified_once() {
    let mut h = Harness::start().await;
    let hook_log = h.root().join("hook.log");
    h.append_config(&format!(
        r#"
[grants]
refresh_check_interval_secs = 1

[notify]
command = ["/bin/sh", "-c", "echo \"$OXBRIDGE_EVENT $OXBRIDGE_ACCOUNT $OXBRIDGE_CLASS $OXBRIDGE_CODES\" >> {}"]
"#,
        hook_log.display()
    ));
    h.add_delegated_account("alex", PASSWORD, MAILBOX).await;
    h.serve().await;
    h.fake
        .entra()
        .inject_error(Some(InjectedError::claims_challenge(50076)));
    for _ in 0..3 {
        assert!(!imap_login_ok(&h, "alex", PASSWORD).await);
    }
    let shown = wait_for(&h, "alex", |v| !v["health"]["last_failure"].is_null()).await;
    assert_eq!(shown["status"], "needs-reconsent");
    assert_eq!(shown["needs_reconsent"], true);
    let reason = shown["status_reason"].as_str().unwrap();
    assert!(reason.contains("AADSTS50076"), "{reason}");
    assert!(reason.contains("multi-factor"), "{reason}");
    assert!(reason.contains("oxbridge account consent alex"), "{reason}");
    assert_eq!(shown["health"]["last_failure"]["class"], "interaction");
    assert_eq!(shown["health"]["last_failure"]["codes"][0], 50076);
    let human = h.account(&["show", "alex"], "").await;
    assert!(
        stdout(&human).contains("needs re-consent: yes"),
        "{}",
        stdout(&human)
    );
    let list = h.account(&["list"], "").await;
    assert!(stdout(&list).contains("NEEDS-CONSENT"), "{}", stdout(&list));

    // Metrics: by app and class, and the gauge (updated by the next sweep).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = h.admin_get("/metrics").await;
        if metrics.contains("oxbridge_accounts_needing_reconsent{app=\"contoso\"} 1") {
            assert!(
                metrics.contains(
                    "oxbridge_grant_requests_total{app=\"contoso\",result=\"interaction\"} 1"
                ),
                "{metrics}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // One transition, one notification, however many logins failed.
    let hook = wait_for_file(&hook_log).await;
    assert_eq!(
        hook.trim(),
        "needs-reconsent alex interaction 50076",
        "{hook}"
    );

    // After a new sign-in the account is active again; a new failure notifies again.
    h.fake.entra().inject_error(None);
    let token = h.fake.entra().issue_refresh_token(CLIENT_ID, MAILBOX);
    let file = h.root().join("new.rt");
    std::fs::write(&file, token).unwrap();
    let out = h
        .account(
            &[
                "import-token",
                "alex",
                "--refresh-token-file",
                file.to_str().unwrap(),
            ],
            "",
        )
        .await;
    assert!(out.status.success());
    assert!(imap_login_ok(&h, "alex", PASSWORD).await, "{}", h.logs());
    h.fake
        .entra()
        .inject_error(InjectedError::of_class("reconsent"));
    h.fake.entra().expire_access_tokens();
    assert!(!imap_login_ok(&h, "alex", PASSWORD).await);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&hook_log).unwrap_or_default();
        if text.lines().count() == 2 {
            assert_eq!(
                text.lines().nth(1),
                Some("needs-reconsent alex reconsent 700082")
            );
            break;
        }
        assert!(Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for secret in h.fake.entra().issued_secrets() {
        assert!(!std::fs::read_to_string(&hook_log)
            .unwrap()
            .contains(&secret));
    }
}

async fn wait_for(
    h: &Harness,
    user: &str,
    ready: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let shown = h.show_account(user).await;
        if ready(&shown) {
            return shown;
        }
        assert!(Instant::now() < deadline, "{shown}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_for_file(path: &std::path::Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if !text.is_empty() {
                // Give a second (wrong) notification a chance to show up.
                tokio::time::sleep(Duration::from_millis(500)).await;
                return std::fs::read_to_string(path).unwrap();
            }
        }
        assert!(Instant::now() < deadline, "hook never ran");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_delegated_grants_are_refreshed_in_the_background() {
    let mut h = Harness::start().await;
    h.append_config(
        r#"
[grants]
refresh_idle_after_secs = 2
refresh_check_interval_secs = 1
refresh_spacing_millis = 300
"#,
    );
    h.add_delegated_account("alex", PASSWORD, MAILBOX).await;
    h.add_delegated_account("bea", PASSWORD, "bea@contoso.onmicrosoft.com")
        .await;
    h.add_app_only_account("app", PASSWORD, "app@contoso.onmicrosoft.com")
        .await;
    let before = h.show_account("alex").await["refresh_token_updated_at"]
        .as_i64()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    h.serve().await;
    // No client logs in; the server refreshes both idle delegated grants by itself.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let alex = h.show_account("alex").await;
        let bea = h.show_account("bea").await;
        if alex["health"]["last_refresh_at"].is_i64() && bea["health"]["last_refresh_at"].is_i64() {
            assert!(alex["refresh_token_updated_at"].as_i64().unwrap() > before);
            break;
        }
        assert!(Instant::now() < deadline, "{}", h.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(h.logs().contains("idle grant refreshed"));
    // App-only accounts have nothing to keep alive.
    assert!(h.show_account("app").await["health"]["last_refresh_at"].is_null());
    assert!(
        h.fake.directory().xoauth_logins().is_empty(),
        "no client logged in"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn password_grant_is_opt_in_and_checked_by_entra() {
    const ROPC_CLIENT: &str = "5a6b7c8d-3333-4e5f-8a9b-0c1d2e3f4a5b";
    let mut h = Harness::start().await;
    h.fake.entra().register_app(ROPC_CLIENT, "");
    h.fake.directory().add_mailbox(MAILBOX);
    h.fake.entra().set_user_password(MAILBOX, "entra-pass-1");
    h.append_config(&format!(
        r#"
[[app]]
name = "ropc"
authority = "{authority}"
tenant = "{tenant}"
client_id = "{ROPC_CLIENT}"
allow_password_grant = true
ca_file = "{root}/ca.pem"
"#,
        authority = h.fake.authority(),
        tenant = h.fake.tenant(),
        root = h.root().display(),
    ));
    let add = |app: &'static str, password: &'static str| {
        let h = &h;
        async move {
            h.account(
                &[
                    "add",
                    "pat",
                    "--mailbox",
                    MAILBOX,
                    "--app",
                    app,
                    "--password-grant",
                    "--password-stdin",
                ],
                password,
            )
            .await
        }
    };
    // Off unless the app opts in; and Entra must accept the password at once.
    let refused = add("contoso", "entra-pass-1").await;
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("allow_password_grant"),
        "{}",
        stderr(&refused)
    );
    let wrong = add("ropc", "not-the-password").await;
    assert!(!wrong.status.success());
    assert!(stderr(&wrong).contains("50126"), "{}", stderr(&wrong));
    let ok = add("ropc", "entra-pass-1").await;
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert_eq!(h.show_account("pat").await["grant"], "password");

    h.serve().await;
    let before = h.fake.entra().token_requests();
    assert!(
        imap_login_ok(&h, "pat", "entra-pass-1").await,
        "{}",
        h.logs()
    );
    assert!(imap_login_ok(&h, "pat", "entra-pass-1").await);
    assert_eq!(
        h.fake.entra().token_requests(),
        before + 1,
        "the token is cached"
    );
    let requests = h.fake.entra().token_requests();
    assert!(!imap_login_ok(&h, "pat", "guess").await);
    assert!(!imap_login_ok(&h, "pat", "guess-2").await);
    assert_eq!(
        h.fake.entra().token_requests(),
        requests + 1,
        "a second guess within the hold-off is refused locally"
    );

    // The user changes the password in Entra: the new one works (Entra says so), the old
    // one stops working.
    tokio::time::sleep(Duration::from_secs(6)).await; // past the wrong-password hold-off
    h.fake.entra().set_user_password(MAILBOX, "entra-pass-2");
    assert!(
        imap_login_ok(&h, "pat", "entra-pass-2").await,
        "{}",
        h.logs()
    );
    h.fake.entra().expire_access_tokens();
    assert!(!imap_login_ok(&h, "pat", "entra-pass-1").await);
    assert!(
        imap_login_ok(&h, "pat", "entra-pass-2").await,
        "{}",
        h.logs()
    );
    // No refresh token is kept for a password-grant account.
    for secret in h.fake.entra().issued_secrets() {
        assert!(!contains(&h.data_dir_bytes(), secret.as_bytes()));
    }
    assert!(h.show_account("pat").await["refresh_token_updated_at"].is_null());
}

#[tokio::test(flavor = "multi_thread")]
async fn password_sealed_account_is_refreshed_only_at_login_with_one_of_its_passwords() {
    const PHONE: &str = "phone app password 2";
    let mut h = Harness::start().await;
    h.append_config(
        r#"
[grants]
refresh_idle_after_secs = 2
refresh_check_interval_secs = 1
refresh_spacing_millis = 100
"#,
    );
    // Only delegated grants have a refresh token to seal.
    let refused = h
        .account(
            &[
                "add",
                "app",
                "--mailbox",
                MAILBOX,
                "--app",
                "contoso",
                "--client-credentials",
                "--password-sealed",
                "--password-stdin",
            ],
            PASSWORD,
        )
        .await;
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("needs a delegated grant"),
        "{}",
        stderr(&refused)
    );
    h.add_sealed_account("alex", PASSWORD, MAILBOX).await;
    // A plain delegated account shows that the background refresh does run.
    h.add_delegated_account("bea", PASSWORD, "bea@contoso.onmicrosoft.com")
        .await;
    // Every refresh must use the newest token: proves each rotated one was stored (sealed).
    h.fake.entra().set_strict_rotation(true);
    let shown = h.show_account("alex").await;
    assert_eq!(shown["sealing"], "password");
    assert_eq!(
        shown["health"]["refresh"],
        "sealed: refreshed only at login"
    );
    let human = h.account(&["show", "alex"], "").await;
    assert!(
        stdout(&human).contains("password-sealed (refreshed only at login"),
        "{}",
        stdout(&human)
    );
    let list = stdout(&h.account(&["list"], "").await);
    let row = |user: &str| {
        list.lines()
            .find(|l| l.starts_with(&format!("{user} ")))
            .unwrap_or_default()
            .to_string()
    };
    assert!(row("alex").contains("(sealed)"), "{list}");
    assert!(!row("bea").contains("(sealed)"), "{list}");
    let saved = shown["refresh_token_updated_at"].as_i64().unwrap();
    for secret in h.fake.entra().issued_secrets() {
        assert!(!contains(&h.data_dir_bytes(), secret.as_bytes()));
    }

    // Both grants are idle past refresh_idle_after_secs; the server refreshes only bea's.
    tokio::time::sleep(Duration::from_secs(3)).await;
    h.serve().await;
    wait_for(&h, "bea", |v| v["health"]["last_refresh_at"].is_i64()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let alex = h.show_account("alex").await;
    assert!(alex["health"]["last_refresh_at"].is_null(), "{alex}");
    assert_eq!(alex["refresh_token_updated_at"].as_i64(), Some(saved));
    // bea has made its point; without it, only alex's token requests are counted below.
    let removed = h.account(&["remove", "bea"], "").await;
    assert!(removed.status.success(), "{}", stderr(&removed));
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // A login opens the grant with its password; the token is then cached as usual.
    let entra = h.fake.entra();
    let before = entra.token_requests();
    assert!(imap_login_ok(&h, "alex", PASSWORD).await, "{}", h.logs());
    assert!(imap_login_ok(&h, "alex", PASSWORD).await);
    assert_eq!(entra.token_requests(), before + 1);

    // The access token expires. A wrong password never reaches the token endpoint; the
    // right one refreshes, twice in a row under strict rotation.
    entra.expire_access_tokens();
    assert!(!imap_login_ok(&h, "alex", "not the password").await);
    assert_eq!(entra.token_requests(), before + 1);
    for round in 2..=3 {
        assert!(imap_login_ok(&h, "alex", PASSWORD).await, "{}", h.logs());
        assert_eq!(entra.token_requests(), before + round);
        entra.expire_access_tokens();
    }
    assert!(
        wait_for(&h, "alex", |v| v["refresh_token_updated_at"].as_i64()
            > Some(saved))
        .await["health"]["last_refresh_at"]
            .is_i64()
    );

    // A second app password needs an existing one, and then refreshes on its own.
    let no_current = h
        .account(
            &["passwd", "alex", "--add", "phone", "--password-stdin"],
            PHONE,
        )
        .await;
    assert!(!no_current.status.success());
    assert!(
        stderr(&no_current).contains("--current-password-file"),
        "{}",
        stderr(&no_current)
    );
    let current = h.root().join("current-password");
    std::fs::write(&current, PASSWORD).unwrap();
    let added = h
        .account(
            &[
                "passwd",
                "alex",
                "--add",
                "phone",
                "--password-stdin",
                "--current-password-file",
                current.to_str().unwrap(),
            ],
            PHONE,
        )
        .await;
    assert!(added.status.success(), "{}", stderr(&added));
    assert!(imap_login_ok(&h, "alex", PHONE).await, "{}", h.logs());
    assert_eq!(entra.token_requests(), before + 4);

    // Many logins needing a refresh at once still make one request: one of them leads the
    // flight with its own password. (A 303 s token is due 3 s after it was issued.)
    entra.set_token_lifetime(Some(Duration::from_secs(303)));
    entra.expire_access_tokens();
    assert!(imap_login_ok(&h, "alex", PASSWORD).await);
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let requests = entra.token_requests();
    // Spawned first, awaited after: the eight clients run at the same time.
    let clients: Vec<_> = (0..8)
        .map(|i| {
            let password = if i % 2 == 0 { PASSWORD } else { PHONE };
            tokio::process::Command::new("curl")
                .args(["--silent", "--max-time", "30", "--cacert"])
                .arg(&h.ca_file)
                .arg("-u")
                .arg(format!("alex:{password}"))
                .arg(format!("imaps://127.0.0.1:{}/", h.imaps_port))
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for client in clients {
        let out = client.wait_with_output().await.unwrap();
        assert!(stdout(&out).contains("INBOX"), "{}", h.logs());
    }
    assert_eq!(entra.token_requests(), requests + 1, "{}", h.logs());

    for secret in entra.issued_secrets() {
        assert!(!contains(&h.data_dir_bytes(), secret.as_bytes()));
    }
    assert!(!h.logs().contains(PASSWORD) && !h.logs().contains(PHONE));
}

#[tokio::test(flavor = "multi_thread")]
async fn claims_challenge_is_passed_on_by_consent_with_device_code_and_browser() {
    let mut h = Harness::start().await;
    h.add_delegated_account("alex", PASSWORD, MAILBOX).await;
    let entra = h.fake.entra().clone();
    entra.set_device_code_timing(1, Duration::from_secs(60));
    entra.set_signed_in_user(Some(MAILBOX));
    h.serve().await;
    let challenge = InjectedError::claims_challenge(53003);
    let InjectedError::Aadsts {
        claims: Some(claims),
        ..
    } = &challenge
    else {
        panic!("a claims challenge");
    };

    // Round 1: the challenge arrives, the login fails, consent by device code passes it on.
    entra.inject_error(Some(challenge.clone()));
    assert!(!imap_login_ok(&h, "alex", PASSWORD).await);
    let shown = wait_for(&h, "alex", |v| {
        v["health"]["claims_challenge_pending"] == true
    })
    .await;
    assert_eq!(shown["status"], "needs-reconsent");
    assert_eq!(shown["health"]["last_failure"]["claims"], claims.as_str());
    let human = h.account(&["show", "alex"], "").await;
    assert!(
        stdout(&human).contains("claims challenge: pending"),
        "{}",
        stdout(&human)
    );
    entra.inject_error(None);
    let mut child = h.account_interactive(&["consent", "alex"], "").await;
    let mut seen = Vec::new();
    let code = read_until(&mut child, &mut seen, |l| value_after(l, "enter the code")).await;
    assert!(entra.approve_device_code(&code, MAILBOX));
    let (ok, out, err) = finish(child, seen).await;
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("Passing on the claims challenge"), "{out}");
    assert_eq!(entra.claims_received(), std::slice::from_ref(claims));
    assert!(imap_login_ok(&h, "alex", PASSWORD).await, "{}", h.logs());
    wait_for(&h, "alex", |v| {
        v["health"]["claims_challenge_pending"] == false
    })
    .await;

    // Round 2: the same with the browser sign-in.
    entra.inject_error(Some(challenge.clone()));
    entra.expire_access_tokens();
    assert!(!imap_login_ok(&h, "alex", PASSWORD).await);
    wait_for(&h, "alex", |v| {
        v["health"]["claims_challenge_pending"] == true
    })
    .await;
    entra.inject_error(None);
    let mut child = h
        .account_interactive(&["consent", "alex", "--browser"], "")
        .await;
    let mut seen = Vec::new();
    let url = read_until(&mut child, &mut seen, |l| {
        value_after(l, "open this URL in a browser")
    })
    .await;
    assert!(url.contains("&claims="), "{url}");
    let location = follow_authorize(&h, &url).await;
    let reply = h
        .curl(&["-s", &location.replace("localhost", "127.0.0.1")])
        .await;
    assert!(stdout(&reply).contains("Signed in"));
    let (ok, out, err) = finish(child, seen).await;
    assert!(ok, "{out}\n{err}");
    assert_eq!(entra.claims_received(), [claims.clone(), claims.clone()]);
    assert!(imap_login_ok(&h, "alex", PASSWORD).await, "{}", h.logs());
}

/// A webhook receiver: records each request (head and body) and answers 204.
fn webhook_receiver() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = stream.read(&mut buf).unwrap_or(0);
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request).into_owned();
                if let Some(end) = text.find("\r\n\r\n") {
                    let length = text[..end]
                        .lines()
                        .find_map(|l| {
                            let (name, value) = l.split_once(':')?;
                            name.eq_ignore_ascii_case("content-length")
                                .then(|| value.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if request.len() >= end + 4 + length {
                        break;
                    }
                }
            }
            record
                .lock()
                .unwrap()
                .push(String::from_utf8_lossy(&request).into_owned());
            let _ = stream.write_all(
                b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    (port, seen)
}

/// Waits until `seen` holds `count` requests, then a little longer, and returns them.
async fn webhook_requests(seen: &std::sync::Mutex<Vec<String>>, count: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.lock().unwrap().len() < count {
        assert!(Instant::now() < deadline, "{:?}", seen.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Give a wrong extra notification a chance to show up.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    seen.lock().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn webhook_gets_one_post_per_transition_and_no_secret() {
    let (port, seen) = webhook_receiver();
    let mut h = Harness::start().await;
    h.append_config(&format!(
        "\n[notify]\nwebhook = \"http://127.0.0.1:{port}/oxbridge-hook\"\n"
    ));
    h.add_delegated_account("alex", PASSWORD, MAILBOX).await;
    h.serve().await;
    let entra = h.fake.entra();
    entra.inject_error(InjectedError::of_class("reconsent"));
    for _ in 0..3 {
        assert!(!imap_login_ok(&h, "alex", PASSWORD).await);
    }
    let requests = webhook_requests(&seen, 1).await;
    assert_eq!(requests.len(), 1, "one POST per transition: {requests:?}");
    let request = &requests[0];
    assert!(
        request.starts_with("POST /oxbridge-hook HTTP/1.1\r\n"),
        "{request}"
    );
    let body: serde_json::Value =
        serde_json::from_str(request.split_once("\r\n\r\n").unwrap().1).unwrap();
    assert_eq!(body["event"], "needs-reconsent");
    assert_eq!(body["account"], "alex");
    assert_eq!(body["mailbox"], MAILBOX);
    assert_eq!(body["class"], "reconsent");
    assert_eq!(body["codes"], serde_json::json!([700082]));
    let reason = body["reason"].as_str().unwrap();
    assert!(reason.contains("AADSTS700082"), "{reason}");
    assert!(reason.contains("oxbridge account consent alex"), "{reason}");

    // Signed in again, then a new failure: one more POST.
    entra.inject_error(None);
    let token = entra.issue_refresh_token(CLIENT_ID, MAILBOX);
    let file = h.root().join("new.rt");
    std::fs::write(&file, token).unwrap();
    let out = h
        .account(
            &[
                "import-token",
                "alex",
                "--refresh-token-file",
                file.to_str().unwrap(),
            ],
            "",
        )
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(imap_login_ok(&h, "alex", PASSWORD).await, "{}", h.logs());
    entra.inject_error(InjectedError::of_class("reconsent"));
    entra.expire_access_tokens();
    for _ in 0..2 {
        assert!(!imap_login_ok(&h, "alex", PASSWORD).await);
    }
    let requests = webhook_requests(&seen, 2).await;
    assert_eq!(requests.len(), 2, "{requests:?}");

    // No token, password or client secret anywhere in what the hook received.
    let mut secrets = entra.issued_secrets();
    secrets.push(PASSWORD.to_string());
    secrets.push(support::CLIENT_SECRET.to_string());
    for request in &requests {
        for secret in &secrets {
            assert!(!request.contains(secret.as_str()), "a secret in {request}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_consent_url_is_followed_to_consent_or_a_refusal() {
    let h = Harness::start().await;
    let h = &h;
    let consent_url = || async move {
        let out = tokio::process::Command::new(support::oxbridge_bin())
            .args(["app", "consent-url", "contoso", "--config"])
            .arg(&h.config)
            .args(["--redirect-uri", "https://admin.example.com/done"])
            .output()
            .await
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out).trim().to_string()
    };
    let url = consent_url().await;
    assert!(url.contains("/v2.0/adminconsent?"), "{url}");
    assert!(url.contains(&format!("client_id={CLIENT_ID}")), "{url}");
    let state = url.split("state=").nth(1).unwrap().to_string();
    let follow = move |url: String| async move {
        let out = h
            .curl(&["-s", "-o", "/dev/null", "-w", "%{redirect_url}", &url])
            .await;
        stdout(&out)
    };
    // The administrator declines first, then accepts.
    h.fake.entra().set_admin_declines(true);
    let refused = follow(url.clone()).await;
    assert!(
        refused.starts_with("https://admin.example.com/done?error=access_denied"),
        "{refused}"
    );
    assert!(!h.fake.entra().admin_consented(CLIENT_ID));
    h.fake.entra().set_admin_declines(false);
    let url = consent_url().await;
    let state_2 = url.split("state=").nth(1).unwrap().to_string();
    assert_ne!(state, state_2, "a fresh state each time");
    let accepted = follow(url).await;
    assert_eq!(
        accepted,
        format!(
            "https://admin.example.com/done?admin_consent=True&tenant={}&state={state_2}",
            support::TENANT
        )
    );
    assert!(h.fake.entra().admin_consented(CLIENT_ID));
    let unknown = tokio::process::Command::new(support::oxbridge_bin())
        .args(["app", "consent-url", "nope", "--config"])
        .arg(&h.config)
        .output()
        .await
        .unwrap();
    assert!(!unknown.status.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn consent_of_a_sealed_account_keeps_its_passwords_or_resets_them() {
    const ERP: &str = "erp password 2";
    const NEW: &str = "the only password now";
    let mut h = Harness::start().await;
    h.add_sealed_account("alex", PASSWORD, MAILBOX).await;
    let current = h.root().join("current-password");
    std::fs::write(&current, PASSWORD).unwrap();
    let added = h
        .account(
            &[
                "passwd",
                "alex",
                "--add",
                "erp",
                "--password-stdin",
                "--current-password-file",
                current.to_str().unwrap(),
            ],
            ERP,
        )
        .await;
    assert!(added.status.success(), "{}", stderr(&added));
    let entra = h.fake.entra().clone();
    entra.set_device_code_timing(1, Duration::from_secs(60));
    // The grant dies.
    entra.revoke_refresh_tokens(MAILBOX);
    h.serve().await;
    assert!(!imap_login_ok(&h, "alex", PASSWORD).await);
    wait_for(&h, "alex", |v| v["status"] == "needs-reconsent").await;

    // Consent needs one of the passwords, checked before anyone signs in.
    let none = h.account(&["consent", "alex"], "").await;
    assert!(!none.status.success());
    assert!(
        stderr(&none).contains("--password-stdin"),
        "{}",
        stderr(&none)
    );
    let wrong = h
        .account(&["consent", "alex", "--password-stdin"], "forgotten")
        .await;
    assert!(!wrong.status.success());
    assert!(
        stderr(&wrong).contains("--reset-passwords"),
        "{}",
        stderr(&wrong)
    );

    // With one of them, the new grant is sealed under the same key: both passwords work.
    let sign_in = |args: &'static [&'static str], password: &'static str| {
        let h = &h;
        let entra = entra.clone();
        async move {
            let mut child = h.account_interactive(args, password).await;
            let mut seen = Vec::new();
            let code =
                read_until(&mut child, &mut seen, |l| value_after(l, "enter the code")).await;
            assert!(entra.approve_device_code(&code, MAILBOX));
            finish(child, seen).await
        }
    };
    let (ok, out, err) = sign_in(&["consent", "alex", "--password-stdin"], ERP).await;
    assert!(ok, "{out}\n{err}");
    assert!(imap_login_ok(&h, "alex", PASSWORD).await, "{}", h.logs());
    entra.expire_access_tokens();
    assert!(imap_login_ok(&h, "alex", ERP).await, "{}", h.logs());

    // Every password forgotten: --reset-passwords makes the new one the only one.
    entra.revoke_refresh_tokens(MAILBOX);
    entra.expire_access_tokens();
    assert!(!imap_login_ok(&h, "alex", PASSWORD).await);
    let (ok, out, err) = sign_in(
        &["consent", "alex", "--password-stdin", "--reset-passwords"],
        NEW,
    )
    .await;
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("passwords removed"), "{out}");
    assert!(!imap_login_ok(&h, "alex", PASSWORD).await);
    assert!(!imap_login_ok(&h, "alex", ERP).await);
    entra.expire_access_tokens();
    assert!(imap_login_ok(&h, "alex", NEW).await, "{}", h.logs());
    let shown = h.show_account("alex").await;
    assert_eq!(shown["status"], "active");
    assert_eq!(shown["passwords"].as_array().unwrap().len(), 1);
}
