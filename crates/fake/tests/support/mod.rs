//! A minimal IMAP test client and token helpers shared by the integration tests.

#![allow(dead_code)]

use std::sync::Arc;

use oxbridge_fake::{FakeExchange, FakeOptions};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

pub const USER: &str = "alice@contoso.onmicrosoft.com";
pub const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";
pub const SECRET: &str = "app-secret";

/// A fake tenant with one mailbox, a registered confidential app and a delegated grant.
pub async fn tenant() -> (FakeExchange, String) {
    let fake = FakeExchange::start(FakeOptions::default())
        .await
        .expect("start fake");
    fake.directory().add_mailbox(USER);
    fake.entra().register_app(CLIENT_ID, SECRET);
    let rt = fake.entra().issue_refresh_token(CLIENT_ID, USER);
    (fake, rt)
}

/// Redeems `rt` at the token endpoint over HTTPS; returns the JSON reply and status.
pub async fn refresh(fake: &FakeExchange, rt: &str) -> (u16, serde_json::Value) {
    let ca = reqwest::Certificate::from_pem(fake.pki().ca_pem().as_bytes()).expect("CA");
    let client = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .expect("client");
    let url = format!("{}/{}/oauth2/v2.0/token", fake.authority(), fake.tenant());
    let response = client
        .post(url)
        .form(&[
            ("grant_type", "refresh_token"),
            ("client_id", CLIENT_ID),
            ("client_secret", SECRET),
            ("refresh_token", rt),
            (
                "scope",
                "https://outlook.office.com/IMAP.AccessAsUser.All offline_access",
            ),
        ])
        .send()
        .await
        .expect("POST");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

/// An access token for [`USER`] via the token endpoint.
pub async fn access_token(fake: &FakeExchange, rt: &str) -> String {
    let (status, body) = refresh(fake, rt).await;
    assert_eq!(status, 200, "{body}");
    body["access_token"]
        .as_str()
        .expect("access_token")
        .to_string()
}

pub fn xoauth2(user: &str, token: &str) -> String {
    oxbridge_wire::sasl::encode_base64(
        format!("user={user}\x01auth=Bearer {token}\x01\x01").as_bytes(),
    )
}

/// A line-oriented IMAP client that understands literals in responses.
pub struct Client {
    stream: BufReader<TlsStream<TcpStream>>,
}

impl Client {
    pub async fn connect(fake: &FakeExchange) -> (Client, String) {
        let tcp = TcpStream::connect(fake.imap_addr()).await.expect("connect");
        let connector = TlsConnector::from(Arc::clone(&fake.pki().client_config()));
        let name = ServerName::try_from("outlook.office365.com").expect("name");
        let tls = connector.connect(name, tcp).await.expect("TLS");
        let mut client = Client {
            stream: BufReader::new(tls),
        };
        let greeting = client.line().await;
        (client, greeting)
    }

    /// One response line with any literals it announces inlined; empty at EOF.
    pub async fn line(&mut self) -> String {
        String::from_utf8(self.raw_line().await).expect("UTF-8 response")
    }

    pub async fn raw_line(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let mut line = Vec::new();
            if self
                .stream
                .read_until(b'\n', &mut line)
                .await
                .expect("read")
                == 0
            {
                return out;
            }
            out.extend_from_slice(&line);
            let trimmed = line.strip_suffix(b"\r\n").unwrap_or(&line);
            let Some(open) = trimmed
                .strip_suffix(b"}")
                .and_then(|t| t.iter().rposition(|&b| b == b'{'))
            else {
                return out;
            };
            let n: usize = std::str::from_utf8(&trimmed[open + 1..trimmed.len() - 1])
                .expect("digits")
                .parse()
                .expect("literal size");
            let mut literal = vec![0; n];
            self.stream.read_exact(&mut literal).await.expect("literal");
            out.extend_from_slice(&literal);
        }
    }

    pub async fn send(&mut self, bytes: &str) {
        self.stream
            .get_mut()
            .write_all(bytes.as_bytes())
            .await
            .expect("write");
    }

    /// Sends `tag command` and returns every response line up to and including the tagged one.
    pub async fn command(&mut self, tag: &str, command: &str) -> Vec<String> {
        self.send(&format!("{tag} {command}\r\n")).await;
        self.until_tagged(tag).await
    }

    pub async fn until_tagged(&mut self, tag: &str) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let line = self.line().await;
            let done = line.is_empty() || line.starts_with(&format!("{tag} "));
            lines.push(line);
            if done {
                return lines;
            }
        }
    }

    /// Logs in with XOAUTH2 (SASL-IR) and asserts success.
    pub async fn login(&mut self, user: &str, token: &str) {
        let reply = self
            .command(
                "a0",
                &format!("AUTHENTICATE XOAUTH2 {}", xoauth2(user, token)),
            )
            .await;
        assert_eq!(reply, vec!["a0 OK AUTHENTICATE completed.\r\n"]);
    }
}
