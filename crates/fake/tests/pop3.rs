//! The fake Exchange Online POP3 service over TLS: EXO's strings (EXCHANGE.md §2.3), the
//! two-step XOAUTH2 with a token from the HTTPS token endpoint, and RFC 1939 mailbox
//! commands over the INBOX the IMAP service shares.

#![allow(clippy::unwrap_used)] // test scenarios: a panic is the failure report

mod support;

use std::sync::Arc;

use oxbridge_fake::pop3::{AUTH_FAILED, AUTH_OK, CAPA, SIGN_OFF, WRONG_STATE};
use oxbridge_fake::FakeExchange;
use oxbridge_wire::Protocol;
use rustls::pki_types::ServerName;
use support::{tenant, xoauth2, CLIENT_ID, SECRET, USER};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

const FIRST: &[u8] = b"From: Bob <bob@fabrikam.com>\r\nSubject: One\r\n\r\nHi Alice,\r\n.a line with a leading dot\r\nbinary \xff bytes\r\n";
const SECOND: &[u8] = b"Subject: Two\r\n\r\nsecond body\r\n";

/// An access token for [`USER`] carrying the delegated POP scope.
async fn pop_token(fake: &FakeExchange, rt: &str) -> String {
    let ca = reqwest::Certificate::from_pem(fake.pki().ca_pem().as_bytes()).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let body: serde_json::Value = client
        .post(fake.token_url())
        .form(&[
            ("grant_type", "refresh_token"),
            ("client_id", CLIENT_ID),
            ("client_secret", SECRET),
            ("refresh_token", rt),
            (
                "scope",
                "https://outlook.office.com/POP.AccessAsUser.All offline_access",
            ),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["access_token"].as_str().unwrap().to_string()
}

struct Pop3 {
    stream: BufReader<TlsStream<TcpStream>>,
}

impl Pop3 {
    async fn connect(fake: &FakeExchange) -> (Pop3, String) {
        let tcp = TcpStream::connect(fake.pop3_addr()).await.unwrap();
        let connector = TlsConnector::from(Arc::clone(&fake.pki().client_config()));
        let name = ServerName::try_from("outlook.office365.com").unwrap();
        let tls = connector.connect(name, tcp).await.unwrap();
        let mut client = Pop3 {
            stream: BufReader::new(tls),
        };
        let greeting = client.line().await;
        (client, greeting)
    }

    async fn raw_line(&mut self) -> Vec<u8> {
        let mut line = Vec::new();
        self.stream.read_until(b'\n', &mut line).await.unwrap();
        line
    }

    async fn line(&mut self) -> String {
        String::from_utf8(self.raw_line().await).unwrap()
    }

    async fn send(&mut self, line: &str) {
        let stream = self.stream.get_mut();
        stream.write_all(line.as_bytes()).await.unwrap();
        stream.write_all(b"\r\n").await.unwrap();
    }

    /// Sends a command and returns its one-line reply.
    async fn short(&mut self, line: &str) -> String {
        self.send(line).await;
        self.line().await
    }

    /// Sends a command and returns its whole multi-line reply, raw.
    async fn long(&mut self, line: &str) -> Vec<u8> {
        self.send(line).await;
        let mut all = Vec::new();
        loop {
            let line = self.raw_line().await;
            all.extend_from_slice(&line);
            if line == b".\r\n" || line.is_empty() || line.starts_with(b"-ERR") {
                return all;
            }
        }
    }

    async fn login(&mut self, token: &str) {
        assert_eq!(self.short("AUTH XOAUTH2").await, "+ \r\n");
        assert_eq!(self.short(&xoauth2(USER, token)).await, AUTH_OK);
    }

    async fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        matches!(self.stream.read_to_end(&mut rest).await, Ok(0) | Err(_))
    }
}

#[tokio::test]
async fn pop3_two_step_login_then_list_retrieve_delete_quit() {
    let (fake, rt) = tenant().await;
    fake.directory().deliver(USER, "INBOX", FIRST);
    fake.directory().deliver(USER, "INBOX", SECOND);
    let token = pop_token(&fake, &rt).await;

    let (mut c, greeting) = Pop3::connect(&fake).await;
    assert!(greeting.starts_with("+OK The Microsoft Exchange POP3 service is ready. ["));
    assert!(greeting.ends_with("]\r\n"));
    assert_eq!(c.long("CAPA").await, CAPA.as_bytes());
    assert_eq!(c.short("STLS").await, WRONG_STATE);
    assert_eq!(c.short("STAT").await, WRONG_STATE);
    c.login(&token).await;
    assert_eq!(fake.directory().active_sessions(Protocol::Pop3, USER), 1);

    let total = FIRST.len() + SECOND.len();
    assert_eq!(c.short("STAT").await, format!("+OK 2 {total}\r\n"));
    assert_eq!(
        c.long("LIST").await,
        format!("+OK\r\n1 {}\r\n2 {}\r\n.\r\n", FIRST.len(), SECOND.len()).into_bytes()
    );
    let uidl = String::from_utf8(c.long("UIDL").await).unwrap();
    assert_eq!(uidl.lines().count(), 4, "{uidl}");
    let mut retr = format!("+OK {} octets\r\n", FIRST.len()).into_bytes();
    retr.extend_from_slice(
        b"From: Bob <bob@fabrikam.com>\r\nSubject: One\r\n\r\nHi Alice,\r\n..a line with a leading dot\r\nbinary \xff bytes\r\n.\r\n",
    );
    assert_eq!(c.long("RETR 1").await, retr);
    assert_eq!(
        c.long("TOP 2 0").await,
        b"+OK\r\nSubject: Two\r\n\r\n.\r\n".to_vec()
    );
    assert_eq!(c.short("DELE 1").await, "+OK Marked to be deleted.\r\n");
    assert_eq!(c.short("RSET").await, "+OK\r\n");
    assert_eq!(c.short("DELE 2").await, "+OK Marked to be deleted.\r\n");
    assert_eq!(c.short("NOOP").await, "+OK\r\n");
    assert_eq!(
        fake.directory().messages(USER, "INBOX").len(),
        2,
        "nothing is deleted before QUIT"
    );
    assert_eq!(c.short("QUIT").await, SIGN_OFF);
    assert!(c.closed().await);
    assert_eq!(
        fake.directory().messages(USER, "INBOX"),
        vec![FIRST.to_vec()]
    );
}

#[tokio::test]
async fn pop3_deletions_are_dropped_without_quit() {
    let (fake, rt) = tenant().await;
    fake.directory().deliver(USER, "INBOX", FIRST);
    let token = pop_token(&fake, &rt).await;
    let (mut c, _) = Pop3::connect(&fake).await;
    c.login(&token).await;
    assert_eq!(c.short("DELE 1").await, "+OK Marked to be deleted.\r\n");
    drop(c);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(fake.directory().messages(USER, "INBOX").len(), 1);
}

#[tokio::test]
async fn pop3_inline_xoauth2_is_counted_and_can_be_switched_off() {
    let (fake, rt) = tenant().await;
    let token = pop_token(&fake, &rt).await;
    let inline = format!("AUTH XOAUTH2 {}", xoauth2(USER, &token));

    let (mut c, _) = Pop3::connect(&fake).await;
    assert_eq!(c.short(&inline).await, AUTH_OK);
    assert_eq!(fake.pop3().inline_attempts(), 1);

    fake.pop3().set_reject_inline(true);
    let (mut c, _) = Pop3::connect(&fake).await;
    assert_eq!(c.short(&inline).await, AUTH_FAILED);
    assert_eq!(fake.pop3().inline_attempts(), 2);
    // The two-step form still works with the switch on.
    c.login(&token).await;
}

#[tokio::test]
async fn pop3_failures_use_exchange_text() {
    let (fake, rt) = tenant().await;
    let token = pop_token(&fake, &rt).await;
    let (mut c, _) = Pop3::connect(&fake).await;
    assert_eq!(c.short("USER alice").await, "+OK\r\n");
    assert_eq!(c.short("PASS hunter2").await, AUTH_FAILED);
    assert_eq!(
        c.short("AUTH PLAIN AGFsaWNlAGh1bnRlcjI=").await,
        AUTH_FAILED
    );
    assert_eq!(c.short("AUTH XOAUTH2").await, "+ \r\n");
    assert_eq!(
        c.short("*").await,
        "-ERR Authentication canceled by client.\r\n"
    );
    assert_eq!(c.short("AUTH XOAUTH2").await, "+ \r\n");
    assert_eq!(c.short(&xoauth2(USER, "not-a-token")).await, AUTH_FAILED);
    fake.directory()
        .set_protocol_enabled(USER, Protocol::Pop3, false);
    assert_eq!(c.short("AUTH XOAUTH2").await, "+ \r\n");
    assert_eq!(c.short(&xoauth2(USER, &token)).await, AUTH_FAILED);
    fake.directory()
        .set_protocol_enabled(USER, Protocol::Pop3, true);
    c.login(&token).await;
    assert_eq!(c.short("AUTH XOAUTH2").await, WRONG_STATE);
    let logins = fake.directory().xoauth_logins();
    assert_eq!(
        logins
            .iter()
            .map(|l| (l.protocol, l.ok))
            .collect::<Vec<_>>(),
        [("pop3", false), ("pop3", false), ("pop3", true)]
    );
}

#[tokio::test]
async fn pop3_accepts_a_6kb_token_in_two_steps() {
    let (fake, rt) = tenant().await;
    fake.entra().set_token_padding(6 * 1024);
    let token = pop_token(&fake, &rt).await;
    assert!(token.len() >= 6 * 1024, "{}", token.len());
    let (mut c, _) = Pop3::connect(&fake).await;
    c.login(&token).await;
    assert_eq!(c.short("STAT").await, "+OK 0 0\r\n");
}
