//! The SMTP back-end against the fake Exchange Online submission service.

#![allow(clippy::unwrap_used)] // test scenarios: a panic is the failure report

use std::time::{Duration, SystemTime};

use oxbridge_fake::{FakeExchange, FakeOptions, IssuedToken};
use oxbridge_smtp::{CacheLookup, SmtpBackEnd};
use oxbridge_wire::{BackEnd, Secret, UpstreamEndpoint, UpstreamError, UpstreamTls};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const MAILBOX: &str = "scanner@contoso.onmicrosoft.com";

async fn tenant(token: &str) -> FakeExchange {
    let fake = FakeExchange::start(FakeOptions::default()).await.unwrap();
    fake.directory().add_mailbox(MAILBOX);
    fake.directory().record_token(
        token,
        IssuedToken {
            subject: MAILBOX.into(),
            client_id: "client".into(),
            app_only: false,
            audience: "https://outlook.office.com".into(),
            scopes: vec!["SMTP.Send".into()],
            expires_at: SystemTime::now() + Duration::from_secs(3600),
        },
    );
    fake
}

fn endpoint(fake: &FakeExchange, address: String, tls: UpstreamTls) -> UpstreamEndpoint {
    UpstreamEndpoint::new(
        address,
        ServerName::try_from("outlook.office365.com").unwrap(),
        tls,
        fake.pki().client_config(),
    )
}

fn starttls(fake: &FakeExchange) -> UpstreamEndpoint {
    endpoint(fake, fake.smtp_addr().to_string(), UpstreamTls::StartTls)
}

#[tokio::test]
async fn logs_in_with_starttls_and_a_6kb_token_then_the_session_is_the_clients() {
    let token = "t".repeat(6 * 1024);
    let fake = tenant(&token).await;
    let back = SmtpBackEnd::new("oxbridge.test");
    let endpoint = starttls(&fake);
    let session = back
        .login(&endpoint, MAILBOX, &Secret::from(token.as_str()))
        .await
        .unwrap();
    assert!(session.leftover.is_empty());
    // The back-end learned the upstream's post-TLS extensions on the way.
    let CacheLookup::Known(ext) = back.cache().lookup(&endpoint.address) else {
        panic!("extensions not learned")
    };
    assert_eq!(ext.get("SIZE"), Some("157286400"));
    assert_eq!(ext.get("AUTH"), Some("LOGIN XOAUTH2"));
    assert_eq!(ext.get("STARTTLS"), None);

    // The authenticated session submits like any client would.
    let mut io = BufReader::new(session.stream);
    io.get_mut()
        .write_all(format!("MAIL FROM:<{MAILBOX}>\r\nRCPT TO:<{MAILBOX}>\r\nDATA\r\n").as_bytes())
        .await
        .unwrap();
    let mut replies = Vec::new();
    for _ in 0..3 {
        let mut line = String::new();
        io.read_line(&mut line).await.unwrap();
        replies.push(line);
    }
    assert_eq!(
        replies[2],
        "354 Start mail input; end with <CRLF>.<CRLF>\r\n"
    );
    io.get_mut()
        .write_all(b"Subject: t\r\n\r\nbody\r\n.\r\n")
        .await
        .unwrap();
    let mut line = String::new();
    io.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("250 2.0.0 OK"), "{line}");
    assert_eq!(
        fake.directory().messages(MAILBOX, "INBOX"),
        vec![b"Subject: t\r\n\r\nbody\r\n".to_vec()]
    );
}

#[tokio::test]
async fn implicit_tls_upstream() {
    let fake = tenant("tok").await;
    let back = SmtpBackEnd::new("oxbridge.test");
    let endpoint = endpoint(
        &fake,
        fake.smtp_implicit_addr().to_string(),
        UpstreamTls::Implicit,
    );
    back.login(&endpoint, MAILBOX, &Secret::from("tok"))
        .await
        .unwrap();
}

#[tokio::test]
async fn refusals_carry_the_upstreams_exact_reply() {
    let fake = tenant("tok").await;
    let back = SmtpBackEnd::new("oxbridge.test");
    let endpoint = starttls(&fake);
    let err = back
        .login(&endpoint, MAILBOX, &Secret::from("forged"))
        .await
        .unwrap_err();
    let UpstreamError::Rejected(reply) = err else {
        panic!("{err:?}")
    };
    assert!(
        reply.starts_with("535 5.7.3 Authentication unsuccessful ["),
        "{reply}"
    );

    fake.smtp().set_tenant_auth_disabled(true);
    let err = back
        .login(&endpoint, MAILBOX, &Secret::from("tok"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, UpstreamError::Rejected(r) if r.starts_with("535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant.")),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_error_challenge_is_answered_with_an_empty_line() {
    let fake = tenant("tok").await;
    fake.smtp().set_error_challenge(true);
    fake.smtp().set_strict_mechanism_case(true);
    let back = SmtpBackEnd::new("oxbridge.test");
    let err = back
        .login(&starttls(&fake), MAILBOX, &Secret::from("forged"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, UpstreamError::Rejected(r) if r.starts_with("535 5.7.3 ")),
        "{err:?}"
    );
    // Strict case did not bite: the mechanism went out in upper case.
    back.login(&starttls(&fake), MAILBOX, &Secret::from("tok"))
        .await
        .unwrap();
}

#[tokio::test]
async fn probing_learns_extensions_once_and_remembers_an_unreachable_upstream() {
    let fake = tenant("tok").await;
    let back = SmtpBackEnd::new("oxbridge.test");
    let endpoint = starttls(&fake);
    let (a, b) = tokio::join!(back.extensions(&endpoint), back.extensions(&endpoint));
    assert_eq!(a, b);
    assert_eq!(a.get("CHUNKING"), Some(""));
    assert_eq!(a.get("SMTPUTF8"), Some(""));
    assert!(
        fake.directory().xoauth_logins().is_empty(),
        "a probe never logs in"
    );

    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let endpoint = crate::endpoint(&fake, dead, UpstreamTls::StartTls);
    assert!(back.extensions(&endpoint).await.lines().is_empty());
    assert_eq!(
        back.cache().lookup(&endpoint.address),
        CacheLookup::Unreachable
    );
    let err = back
        .login(&endpoint, MAILBOX, &Secret::from("tok"))
        .await
        .unwrap_err();
    assert!(
        !err.is_rejection(),
        "an unreachable upstream is temporary: {err:?}"
    );
}
