//! The fake submission service against EXCHANGE.md §2.4, driven by a raw client.

#![allow(clippy::unwrap_used)] // test scenarios: a panic is the failure report

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use oxbridge_fake::{FakeExchange, FakeOptions, IssuedToken};
use oxbridge_wire::Protocol;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

const MAILBOX: &str = "scanner@contoso.onmicrosoft.com";
const OTHER: &str = "reception@contoso.onmicrosoft.com";
const TOKEN: &str = "smtp-token-for-scanner";

/// A line-oriented submission client.
struct Client<S> {
    io: BufReader<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// One whole reply, lines joined by CRLF (with the final CRLF); empty at EOF.
    async fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            if self.io.read_line(&mut line).await.unwrap() == 0 {
                return all;
            }
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return all;
            }
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.io.get_mut().write_all(bytes).await.unwrap();
    }

    async fn command(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }
}

async fn tenant() -> FakeExchange {
    let fake = FakeExchange::start(FakeOptions::default()).await.unwrap();
    fake.directory().add_mailbox(MAILBOX);
    fake.directory().add_mailbox(OTHER);
    fake.directory().record_token(
        TOKEN,
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

fn xoauth2(user: &str, token: &str) -> String {
    oxbridge_wire::sasl::encode_base64(
        format!("user={user}\x01auth=Bearer {token}\x01\x01").as_bytes(),
    )
}

async fn plain(fake: &FakeExchange) -> (Client<TcpStream>, String) {
    let tcp = TcpStream::connect(fake.smtp_addr()).await.unwrap();
    let mut client = Client {
        io: BufReader::new(tcp),
    };
    let greeting = client.reply().await;
    (client, greeting)
}

async fn upgrade(fake: &FakeExchange, client: Client<TcpStream>) -> Client<TlsStream<TcpStream>> {
    let connector = TlsConnector::from(Arc::clone(&fake.pki().client_config()));
    let name = ServerName::try_from("outlook.office365.com").unwrap();
    let tls = connector
        .connect(name, client.io.into_inner())
        .await
        .unwrap();
    Client {
        io: BufReader::new(tls),
    }
}

/// Connected, STARTTLS done and EHLO sent over TLS.
async fn secured(fake: &FakeExchange) -> Client<TlsStream<TcpStream>> {
    let (mut client, _) = plain(fake).await;
    client.command("EHLO client.example").await;
    assert!(client.command("STARTTLS").await.starts_with("220 "));
    let mut client = upgrade(fake, client).await;
    client.command("EHLO client.example").await;
    client
}

async fn authenticated(fake: &FakeExchange) -> Client<TlsStream<TcpStream>> {
    let mut client = secured(fake).await;
    assert_eq!(client.command("AUTH XOAUTH2").await, "334 \r\n");
    assert_eq!(
        client.command(&xoauth2(MAILBOX, TOKEN)).await,
        "235 2.7.0 Authentication successful\r\n"
    );
    client
}

#[tokio::test]
async fn greeting_and_ehlo_before_and_after_starttls() {
    let fake = tenant().await;
    let (mut client, greeting) = plain(&fake).await;
    assert!(
        greeting.starts_with("220 ")
            && greeting.contains(".outlook.office365.com Microsoft ESMTP MAIL Service ready at ")
            && greeting.contains(" +0000 [")
            && greeting.ends_with("]\r\n"),
        "{greeting}"
    );
    let ehlo = client.command("EHLO client.example").await;
    let lines: Vec<&str> = ehlo.lines().collect();
    assert!(lines[0].starts_with("250-") && lines[0].ends_with(" Hello [127.0.0.1]"));
    assert_eq!(
        &lines[1..],
        [
            "250-SIZE 157286400",
            "250-PIPELINING",
            "250-DSN",
            "250-ENHANCEDSTATUSCODES",
            "250-STARTTLS",
            "250-8BITMIME",
            "250-BINARYMIME",
            "250-CHUNKING",
            "250 SMTPUTF8"
        ]
    );
    // AUTH is not offered before TLS.
    assert_eq!(
        client.command("AUTH XOAUTH2").await,
        "504 5.7.4 Unrecognized authentication type\r\n"
    );
    assert_eq!(
        client.command("MAIL FROM:<a@b>").await,
        "530 5.7.57 Client not authenticated to send mail\r\n"
    );
    // Bytes pipelined behind STARTTLS are dropped.
    client.send(b"STARTTLS\r\nNOOP\r\n").await;
    assert_eq!(client.reply().await, "220 2.0.0 SMTP server ready\r\n");
    let mut client = upgrade(&fake, client).await;
    let ehlo = client.command("EHLO client.example").await;
    assert!(ehlo.contains("250-AUTH LOGIN XOAUTH2\r\n") && !ehlo.contains("STARTTLS"));
    let garbage = client.command("FROB").await;
    assert!(
        garbage.starts_with("500 5.3.3 Unrecognized command 'unknown' ["),
        "{garbage}"
    );
}

#[tokio::test]
async fn xoauth2_two_step_and_inline_and_refusals() {
    let fake = tenant().await;
    let _ = authenticated(&fake).await;

    let mut client = secured(&fake).await;
    let inline = client
        .command(&format!("AUTH XOAUTH2 {}", xoauth2(MAILBOX, TOKEN)))
        .await;
    assert_eq!(inline, "235 2.7.0 Authentication successful\r\n");

    let mut client = secured(&fake).await;
    client.command("AUTH XOAUTH2").await;
    let refused = client.command(&xoauth2(MAILBOX, "forged")).await;
    assert!(
        refused.starts_with("535 5.7.3 Authentication unsuccessful [")
            && refused.contains(".prod.outlook.com 20"),
        "{refused}"
    );
    // A cancel gets 535 too.
    client.command("AUTH XOAUTH2").await;
    assert!(client.command("*").await.starts_with("535 5.7.3 "));

    fake.smtp().set_tenant_auth_disabled(true);
    client.command("AUTH XOAUTH2").await;
    let tenant = client.command(&xoauth2(MAILBOX, TOKEN)).await;
    assert!(tenant.starts_with("535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant. Visit https://aka.ms/smtp_auth_disabled for more information. ["), "{tenant}");
    fake.smtp().set_tenant_auth_disabled(false);
    fake.directory()
        .set_protocol_enabled(MAILBOX, Protocol::Smtp, false);
    client.command("AUTH XOAUTH2").await;
    let mailbox = client.command(&xoauth2(MAILBOX, TOKEN)).await;
    assert!(mailbox.starts_with("535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Mailbox. Visit https://aka.ms/smtp_auth_disabled for more information. ["), "{mailbox}");
    fake.directory()
        .set_protocol_enabled(MAILBOX, Protocol::Smtp, true);

    // Basic auth: Exchange prompts, then refuses.
    assert_eq!(client.command("AUTH LOGIN").await, "334 VXNlcm5hbWU6\r\n");
    assert_eq!(client.command("dXNlcg==").await, "334 UGFzc3dvcmQ6\r\n");
    let basic = client.command("cGFzcw==").await;
    assert!(
        basic.starts_with(
            "535 5.7.139 Authentication unsuccessful, basic authentication is disabled. ["
        ),
        "{basic}"
    );
    fake.smtp().set_basic_auth_retired(true);
    client.command("AUTH LOGIN dXNlcg==").await;
    assert_eq!(
        client.command("cGFzcw==").await,
        "550 5.7.30 Basic authentication is not supported for Client Submission.\r\n"
    );
    assert_eq!(
        client.command("AUTH PLAIN AHVzZXIAcGFzcw==").await,
        "504 5.7.4 Unrecognized authentication type\r\n"
    );

    // Strict mode refuses a lower-case mechanism name; the default accepts it.
    assert_eq!(client.command("auth xoauth2").await, "334 \r\n");
    client.command("*").await;
    fake.smtp().set_strict_mechanism_case(true);
    assert_eq!(
        client.command("auth xoauth2").await,
        "504 5.7.4 Unrecognized authentication type\r\n"
    );

    // Gmail mode: a JSON challenge, an empty answer, then the refusal.
    fake.smtp().set_error_challenge(true);
    client.command("AUTH XOAUTH2").await;
    let challenge = client.command(&xoauth2(MAILBOX, "forged")).await;
    assert!(challenge.starts_with("334 eyJ"), "{challenge}");
    assert!(client.command("").await.starts_with("535 5.7.3 "));
    let logins = fake.directory().xoauth_logins();
    assert!(logins.iter().all(|l| l.protocol == "smtp"));
}

#[tokio::test]
async fn data_and_bdat_deliver_byte_exact() {
    let fake = tenant().await;
    let mut client = authenticated(&fake).await;
    assert_eq!(
        client
            .command(&format!("MAIL FROM:<{MAILBOX}> BODY=8BITMIME"))
            .await,
        "250 2.1.0 Sender OK\r\n"
    );
    assert_eq!(
        client.command(&format!("RCPT TO:<{OTHER}>")).await,
        "250 2.1.5 Recipient OK\r\n"
    );
    assert_eq!(
        client.command("DATA").await,
        "354 Start mail input; end with <CRLF>.<CRLF>\r\n"
    );
    let message = "Subject: caf\u{e9}\r\n\r\n.leading dot\r\nline\r\n".as_bytes();
    client
        .send(b"Subject: caf\xc3\xa9\r\n\r\n..leading dot\r\nline\r\n.\r\n")
        .await;
    let queued = client.reply().await;
    assert!(
        queued.starts_with("250 2.0.0 OK <") && queued.contains("[Hostname="),
        "{queued}"
    );
    assert_eq!(
        fake.directory().messages(OTHER, "INBOX"),
        vec![message.to_vec()]
    );
    assert_eq!(
        fake.directory().messages(MAILBOX, "Sent Items"),
        vec![message.to_vec()]
    );

    // BDAT, pipelined.
    client
        .send(format!("MAIL FROM:<{MAILBOX}>\r\nRCPT TO:<{OTHER}>\r\nBDAT 5\r\nHelloBDAT 7 LAST\r\n, BDAT\n").as_bytes())
        .await;
    assert_eq!(client.reply().await, "250 2.1.0 Sender OK\r\n");
    assert_eq!(client.reply().await, "250 2.1.5 Recipient OK\r\n");
    assert_eq!(client.reply().await, "250 2.6.0 CHUNK received OK\r\n");
    assert!(client.reply().await.starts_with("250 2.0.0 OK <"));
    assert_eq!(
        fake.directory().messages(OTHER, "INBOX")[1],
        b"Hello, BDAT\n"
    );
    let submissions = fake.smtp().submissions();
    assert_eq!(submissions.len(), 2);
    assert_eq!(submissions[1].sender, MAILBOX);
    assert_eq!(submissions[1].recipients, [OTHER]);

    assert_eq!(
        client
            .command(&format!("MAIL FROM:<{MAILBOX}> SIZE=157286401"))
            .await,
        "552 5.3.4 Message size exceeds fixed maximum message size\r\n"
    );
    assert_eq!(
        client.command("RCPT TO:<a@b>").await,
        "503 5.5.2 Need mail command\r\n"
    );
    assert_eq!(
        client.command("QUIT").await,
        "221 2.0.0 Service closing transmission channel\r\n"
    );
}

#[tokio::test]
async fn send_as_and_the_sender_thread_limit() {
    let fake = tenant().await;
    let mut client = authenticated(&fake).await;
    client.command(&format!("MAIL FROM:<{OTHER}>")).await;
    client.command(&format!("RCPT TO:<{OTHER}>")).await;
    client.command("DATA").await;
    let denied = client.command("Subject: x\r\n\r\nx\r\n.").await;
    assert!(
        denied.starts_with(&format!("554 5.2.252 SendAsDenied; {MAILBOX} not allowed to send as {OTHER}; STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied; ")),
        "{denied}"
    );
    fake.smtp().grant_send_as(MAILBOX, OTHER);
    client.command(&format!("MAIL FROM:<{OTHER}>")).await;
    client.command(&format!("RCPT TO:<{OTHER}>")).await;
    client.command("DATA").await;
    assert!(client
        .command("Subject: x\r\n\r\nx\r\n.")
        .await
        .starts_with("250 2.0.0 OK"));

    // Three connections hold the mailbox's submission slots; a fourth cannot submit.
    let _second = authenticated(&fake).await;
    let _third = authenticated(&fake).await;
    assert_eq!(fake.smtp().submitters(MAILBOX), 3);
    let mut fourth = authenticated(&fake).await;
    fourth.command(&format!("MAIL FROM:<{MAILBOX}>")).await;
    fourth.command(&format!("RCPT TO:<{OTHER}>")).await;
    fourth.command("DATA").await;
    let limited = fourth.command("Subject: x\r\n\r\nx\r\n.").await;
    assert!(
        limited.starts_with(
            "432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded [Hostname="
        ),
        "{limited}"
    );
    // Once one of the others leaves, the fourth can submit.
    client.command("QUIT").await;
    drop(client);
    tokio::time::sleep(Duration::from_millis(200)).await;
    fourth.command(&format!("MAIL FROM:<{MAILBOX}>")).await;
    fourth.command(&format!("RCPT TO:<{OTHER}>")).await;
    fourth.command("DATA").await;
    assert!(fourth
        .command("Subject: x\r\n\r\nx\r\n.")
        .await
        .starts_with("250 2.0.0 OK"));
}

#[tokio::test]
async fn implicit_tls_listener_serves_the_same_dialog() {
    let fake = tenant().await;
    let tcp = TcpStream::connect(fake.smtp_implicit_addr()).await.unwrap();
    let connector = TlsConnector::from(Arc::clone(&fake.pki().client_config()));
    let tls = connector
        .connect(ServerName::try_from("outlook.office365.com").unwrap(), tcp)
        .await
        .unwrap();
    let mut client = Client {
        io: BufReader::new(tls),
    };
    assert!(client.reply().await.starts_with("220 "));
    let ehlo = client.command("EHLO x").await;
    assert!(ehlo.contains("250-AUTH LOGIN XOAUTH2\r\n") && !ehlo.contains("STARTTLS"));
}
