//! POP3 through oxbridge with real clients: curl and Python's poplib over implicit TLS (the
//! 995 listener) and STLS (the 110 listener), against the fake Exchange Online's POP3
//! service. Every retrieved message is compared byte for byte with what the fake holds.

#![allow(clippy::unwrap_used)] // test scenarios: a panic is the failure report

mod support;

use support::{stderr, Harness};

const PASSWORD: &str = "pop pass with spaces";
const MAILBOX: &str = "pat@contoso.onmicrosoft.com";

/// Test mail: CRLF line ends, 8-bit text and a line starting with a dot (dot-stuffed on the
/// wire, so a client that unstuffs wrongly would see different bytes).
fn message(n: u32) -> Vec<u8> {
    format!(
        "From: Sender {n} <sender{n}@example.com>\r\nTo: {MAILBOX}\r\nSubject: POP3 message {n}\r\nDate: Mon, 16 Nov 2026 09:0{n}:00 +0000\r\nMessage-ID: <pop{n}@example.com>\r\n\r\nBody of message {n}.\r\n.A line that starts with a dot\r\nUTF-8: \u{e9}t\u{e9}.\r\n"
    )
    .into_bytes()
}

async fn world() -> Harness {
    let mut h = Harness::start().await;
    h.add_pop3();
    h.add_delegated_account("pat", PASSWORD, MAILBOX).await;
    for n in 1..=3 {
        h.fake.directory().deliver(MAILBOX, "INBOX", &message(n));
    }
    h.serve().await;
    h
}

fn inbox(h: &Harness) -> Vec<Vec<u8>> {
    h.fake.directory().messages(MAILBOX, "INBOX")
}

fn user() -> String {
    format!("pat:{PASSWORD}")
}

fn pop3s(h: &Harness, path: &str) -> String {
    format!("pop3s://127.0.0.1:{}/{path}", h.pop3s_port)
}

async fn curl_ok(h: &Harness, args: &[&str]) -> Vec<u8> {
    let out = h.curl(args).await;
    assert!(
        out.status.success(),
        "curl {args:?} failed: {}\n{}",
        stderr(&out),
        h.logs()
    );
    out.stdout
}

#[tokio::test(flavor = "multi_thread")]
async fn curl_pop3s_lists_retrieves_and_deletes() {
    let h = world().await;
    let user = user();
    let held = inbox(&h);
    let listing = curl_ok(&h, &["-u", &user, &pop3s(&h, "")]).await;
    let expected: String = held
        .iter()
        .enumerate()
        .map(|(i, m)| format!("{} {}\r\n", i + 1, m.len()))
        .collect();
    assert_eq!(String::from_utf8(listing).unwrap(), expected);

    assert_eq!(curl_ok(&h, &["-u", &user, &pop3s(&h, "2")]).await, held[1]);

    // DELE has a one-line reply, hence --head (CURLOPT_NOBODY); curl then QUITs, which
    // is when the upstream applies the deletion.
    curl_ok(&h, &["-u", &user, "-X", "DELE", "--head", &pop3s(&h, "1")]).await;
    assert_eq!(inbox(&h), held[1..].to_vec());
    let listing = curl_ok(&h, &["-u", &user, &pop3s(&h, "")]).await;
    assert_eq!(
        listing
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .count(),
        2
    );
    assert_eq!(
        h.fake.entra().token_requests(),
        1,
        "one refresh served every login"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn curl_pop3_with_ssl_reqd_uses_stls() {
    let h = world().await;
    let url = format!("pop3://127.0.0.1:{}/3", h.pop3_port);
    let body = curl_ok(&h, &["--ssl-reqd", "-u", &user(), &url]).await;
    assert_eq!(body, inbox(&h)[2]);
}

#[tokio::test(flavor = "multi_thread")]
async fn curl_logs_in_with_every_mechanism() {
    let h = world().await;
    let user = user();
    let url = pop3s(&h, "1");
    for options in [
        &["--login-options", "AUTH=PLAIN"][..],
        &["--login-options", "AUTH=PLAIN", "--sasl-ir"],
        &["--login-options", "AUTH=LOGIN"],
        &["--login-options", "AUTH=LOGIN", "--sasl-ir"],
        // curl's default: the best advertised mechanism (curl uses USER/PASS only when no
        // SASL is offered; poplib covers USER/PASS).
        &[],
    ] {
        let mut args = options.to_vec();
        args.extend(["-u", user.as_str(), url.as_str()]);
        assert_eq!(curl_ok(&h, &args).await, inbox(&h)[0], "{options:?}");
    }
}

/// Runs the poplib session scenario and returns its findings; the retrieved message
/// must equal the fake's copy.
async fn poplib_session(h: &Harness, extra: &[&str], retr: usize) -> serde_json::Value {
    let out_file = h.dir.path().join(format!("retr-{}.eml", extra.join("")));
    let stls = extra.contains(&"--stls");
    let port = if stls { h.pop3_port } else { h.pop3s_port }.to_string();
    let retr_arg = retr.to_string();
    let out_path = out_file.to_str().unwrap().to_string();
    let held = inbox(h);
    let mut args = vec![
        "session",
        "--port",
        &port,
        "--user",
        "pat",
        "--password",
        PASSWORD,
        "--retr",
        &retr_arg,
        "--out",
        &out_path,
    ];
    args.extend_from_slice(extra);
    let out = h.pop3_client(&args).await;
    assert!(
        out.status.success(),
        "poplib failed: {}\n{}",
        stderr(&out),
        h.logs()
    );
    assert_eq!(std::fs::read(&out_file).unwrap(), held[retr - 1]);
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn poplib_user_pass_lists_retrieves_deletes_and_quits() {
    let h = world().await;
    let held = inbox(&h);
    let v = poplib_session(&h, &["--dele", "1"], 2).await;

    assert_eq!(
        v["capa"],
        serde_json::json!([
            "AUTH-RESP-CODE",
            "RESP-CODES",
            "SASL",
            "TOP",
            "UIDL",
            "USER"
        ]),
        "no STLS on TLS, no PIPELINING since the upstream lacks it"
    );
    assert_eq!(v["login"], "+OK User successfully authenticated.");
    let total: usize = held.iter().map(Vec::len).sum();
    assert_eq!(v["stat"], serde_json::json!([3, total]));
    let listing: Vec<String> = held
        .iter()
        .enumerate()
        .map(|(i, m)| format!("{} {}", i + 1, m.len()))
        .collect();
    assert_eq!(v["list"], serde_json::json!(listing));
    assert_eq!(v["uidl"].as_array().unwrap().len(), 3);
    assert!(
        v["top"].as_str().unwrap().ends_with("Subject: POP3 message 2\r\nDate: Mon, 16 Nov 2026 09:02:00 +0000\r\nMessage-ID: <pop2@example.com>\r\n\r\n"),
        "{v}"
    );
    assert_eq!(v["dele"], "+OK Marked to be deleted.");
    // QUIT went to the upstream through the splice.
    assert_eq!(
        v["quit"],
        "+OK Microsoft Exchange Server POP3 server signing off."
    );
    assert_eq!(inbox(&h), held[1..].to_vec(), "deleted at QUIT");
    let logins = h.fake.directory().xoauth_logins();
    assert!(
        logins
            .iter()
            .any(|l| l.protocol == "pop3" && l.user == MAILBOX && l.ok),
        "{logins:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn poplib_auth_plain_and_login_with_and_without_initial_response() {
    let h = world().await;
    for auth in ["plain", "plain-ir", "login", "login-ir"] {
        let v = poplib_session(&h, &["--auth", auth], 1).await;
        assert_eq!(v["login"], "+OK User successfully authenticated.", "{auth}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn poplib_stls_on_the_plain_port() {
    let h = world().await;
    let port = h.pop3_port.to_string();
    // Before STLS only STLS is offered, and a password is refused before it is sent.
    let out = h
        .pop3_client(&[
            "refusals",
            "--port",
            &port,
            "--plain",
            "--user",
            "pat",
            "--password",
            PASSWORD,
        ])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["capa"],
        serde_json::json!(["AUTH-RESP-CODE", "RESP-CODES", "STLS", "TOP", "UIDL"])
    );
    assert_eq!(
        v["user"],
        "-ERR [AUTH] Plaintext authentication is disallowed without TLS; use STLS first."
    );

    let v = poplib_session(&h, &["--stls"], 3).await;
    assert_eq!(v["login"], "+OK User successfully authenticated.");
    assert!(
        !v["capa"].as_array().unwrap().contains(&"STLS".into()),
        "{v}"
    );
    let v = poplib_session(&h, &["--stls", "--auth", "plain-ir"], 1).await;
    assert_eq!(v["login"], "+OK User successfully authenticated.");
}

#[tokio::test(flavor = "multi_thread")]
async fn commands_refused_before_login() {
    let h = world().await;
    let port = h.pop3_port.to_string();
    let out = h
        .pop3_client(&[
            "refusals",
            "--port",
            &port,
            "--stls",
            "--user",
            "pat",
            "--password",
            PASSWORD,
        ])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let expected = serde_json::json!({
        "capa": ["AUTH-RESP-CODE", "RESP-CODES", "SASL", "TOP", "UIDL", "USER"],
        "apop": "-ERR APOP is not supported; use USER and PASS, or AUTH.",
        "stat": "-ERR Command is not valid in this state.",
        "pass_first": "-ERR No user name given; send USER first.",
        "xoauth2": "-ERR Unsupported authentication mechanism.",
        "auth_login": "+ VXNlcm5hbWU6",
        "cancel": "-ERR Authentication cancelled.",
        "user": "+OK Send your password.",
        "stls_again": "-ERR Command is not valid in this state.",
        "quit": "+OK oxbridge POP3 server signing off.",
    });
    assert_eq!(v, expected);
    assert!(
        h.fake.directory().xoauth_logins().is_empty(),
        "nothing reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn six_kb_token_logs_in_two_step_and_never_inline() {
    let mut h = Harness::start().await;
    h.add_pop3();
    h.add_delegated_account("pat", PASSWORD, MAILBOX).await;
    h.fake.directory().deliver(MAILBOX, "INBOX", &message(1));
    h.fake.entra().set_token_padding(6 * 1024);
    // Exchange Online was reported to refuse `AUTH XOAUTH2 <initial-response>`.
    h.fake.pop3().set_reject_inline(true);
    h.serve().await;

    let v = poplib_session(&h, &[], 1).await;
    assert_eq!(v["login"], "+OK User successfully authenticated.");
    let url = pop3s(&h, "1");
    assert_eq!(curl_ok(&h, &["-u", &user(), &url]).await, message(1));

    let tokens = h.fake.directory().issued_tokens();
    assert_eq!(tokens.len(), 1);
    assert!(tokens[0].len() >= 6 * 1024, "{}", tokens[0].len());
    assert_eq!(h.fake.pop3().inline_attempts(), 0, "never the inline form");
    let logins = h.fake.directory().xoauth_logins();
    assert_eq!(logins.len(), 2, "{logins:?}");
    assert!(logins.iter().all(|l| l.ok && l.protocol == "pop3"));
}

#[tokio::test(flavor = "multi_thread")]
async fn pop3_sessions_show_in_metrics() {
    let h = world().await;
    curl_ok(&h, &["-u", &user(), &pop3s(&h, "1")]).await;
    let metrics = h.admin_get("/metrics").await;
    for name in [
        "oxbridge_logins_total{protocol=\"pop3\",result=\"ok\"} 1",
        "oxbridge_sessions_total{protocol=\"pop3\"} 1",
    ] {
        assert!(metrics.contains(name), "missing {name} in\n{metrics}");
    }
}
