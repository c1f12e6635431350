//! The upstream POP3 login (EXCHANGE.md §2.3): TLS, greeting, CAPA, then the two-step
//! `AUTH XOAUTH2` → `+ ` → base64 line.
//!
//! Never the inline form (`AUTH XOAUTH2 <base64>`, RFC 5034's initial response): Exchange
//! Online has been reported to refuse it, and with tokens of 6 KB and more the command line
//! would exceed what many POP3 servers read.

use std::sync::RwLock;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use zeroize::Zeroizing;

use oxbridge_wire::line::trim_eol;
use oxbridge_wire::sasl::{BearerMechanism, XOAuth2};
use oxbridge_wire::upstream::read_line;
use oxbridge_wire::{
    BackEnd, Secret, UpstreamEndpoint, UpstreamError, UpstreamSession, UpstreamStream, UpstreamTls,
};

use crate::capa::UpstreamCapabilities;

/// Most lines accepted in a CAPA reply; a real list has about ten.
const MAX_CAPA_LINES: usize = 256;

/// Logs in to an upstream POP3 server with XOAUTH2.
///
/// Every login reads the upstream's CAPA and remembers its mailbox-session capabilities, so
/// the front-ends can tell clients before login what the upstream will offer after it.
#[derive(Debug, Default)]
pub struct Pop3BackEnd {
    learned: RwLock<Option<UpstreamCapabilities>>,
}

impl Pop3BackEnd {
    pub fn new() -> Self {
        Self::default()
    }

    /// The upstream's session capabilities as last read, or Exchange Online's before the
    /// first login.
    pub fn capabilities(&self) -> UpstreamCapabilities {
        self.learned
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
            .unwrap_or_default()
    }

    fn learn(&self, capabilities: UpstreamCapabilities) {
        *self
            .learned
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(capabilities);
    }
}

impl BackEnd for Pop3BackEnd {
    async fn login(
        &self,
        endpoint: &UpstreamEndpoint,
        mailbox: &str,
        token: &Secret,
    ) -> Result<UpstreamSession, UpstreamError> {
        tokio::time::timeout(endpoint.login_timeout, async {
            let mut buf = BytesMut::with_capacity(4096);
            let mut stream = connect(endpoint, &mut buf).await?;
            if let Some(capabilities) = authenticate(&mut stream, &mut buf, mailbox, token).await? {
                self.learn(capabilities);
            }
            Ok(UpstreamSession {
                stream: Box::new(stream),
                leftover: buf,
                capabilities: None,
            })
        })
        .await
        .map_err(|_| UpstreamError::Timeout("POP3 login"))?
    }
}

/// Connects (implicit TLS, or plain then STLS) and reads the greeting.
async fn connect(
    endpoint: &UpstreamEndpoint,
    buf: &mut BytesMut,
) -> Result<UpstreamStream, UpstreamError> {
    match endpoint.tls {
        UpstreamTls::Implicit => {
            let mut stream = endpoint.connect_tls().await?;
            greeting(&mut stream, buf).await?;
            Ok(stream)
        }
        UpstreamTls::StartTls => {
            let mut tcp = endpoint.connect_tcp().await?;
            greeting(&mut tcp, buf).await?;
            write(&mut tcp, b"STLS\r\n").await?;
            match reply(&read_line(&mut tcp, buf).await?) {
                Reply::Ok(_) => {}
                other => return Err(UpstreamError::Protocol(format!("STLS refused: {other:?}"))),
            }
            // Anything the server sent before the handshake is discarded, like for clients.
            buf.clear();
            endpoint.start_tls(tcp).await
        }
    }
}

async fn greeting<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> Result<(), UpstreamError> {
    match reply(&read_line(stream, buf).await?) {
        Reply::Ok(_) => Ok(()),
        other => Err(UpstreamError::Protocol(format!(
            "unexpected greeting: {other:?}"
        ))),
    }
}

/// The dialog after the greeting: CAPA, then the two-step XOAUTH2. Returns the upstream's
/// session capabilities if it answered CAPA.
///
/// Generic over the stream and public so the fuzz targets can play an arbitrary upstream
/// against exactly the parser path every login takes.
pub async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    mailbox: &str,
    token: &Secret,
) -> Result<Option<UpstreamCapabilities>, UpstreamError> {
    let capabilities = capa(stream, buf).await?;

    write(stream, b"AUTH XOAUTH2\r\n").await?;
    match reply(&read_line(stream, buf).await?) {
        Reply::Continue => {}
        Reply::Err(text) => return Err(refusal(text)),
        other => {
            return Err(UpstreamError::Protocol(format!(
                "AUTH XOAUTH2 got {other:?} instead of a continuation"
            )))
        }
    }
    let response = XOAuth2::initial_response(mailbox, token);
    let mut line = Zeroizing::new(Vec::with_capacity(response.len() + 2));
    line.extend_from_slice(response.expose());
    line.extend_from_slice(b"\r\n");
    write(stream, &line).await?;
    drop(line);

    let mut challenged = false;
    loop {
        match reply(&read_line(stream, buf).await?) {
            Reply::Ok(_) => return Ok(capabilities),
            Reply::Continue if !challenged => {
                // An error challenge (Gmail style): answer empty, then read the -ERR.
                challenged = true;
                let mut answer = XOAuth2::error_reply().to_vec();
                answer.extend_from_slice(b"\r\n");
                write(stream, &answer).await?;
            }
            Reply::Err(text) => return Err(refusal(text)),
            other => {
                return Err(UpstreamError::Protocol(format!(
                    "unexpected reply to XOAUTH2: {other:?}"
                )))
            }
        }
    }
}

/// Sends CAPA; `None` if the server does not support it (RFC 1939-only servers).
async fn capa<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> Result<Option<UpstreamCapabilities>, UpstreamError> {
    write(stream, b"CAPA\r\n").await?;
    match reply(&read_line(stream, buf).await?) {
        Reply::Ok(_) => {}
        Reply::Err(_) => return Ok(None),
        other => return Err(UpstreamError::Protocol(format!("CAPA got {other:?}"))),
    }
    let mut lines = Vec::new();
    loop {
        let line = read_line(stream, buf).await?;
        let line = trim_eol(&line);
        if line == b"." {
            break;
        }
        if lines.len() == MAX_CAPA_LINES {
            return Err(UpstreamError::Protocol("CAPA list too long".into()));
        }
        let line = line.strip_prefix(b".").unwrap_or(line);
        lines.push(String::from_utf8_lossy(line).into_owned());
    }
    Ok(Some(UpstreamCapabilities::from_capa_lines(
        lines.iter().map(String::as_str),
    )))
}

/// A POP3 server's reply line.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    Ok(String),
    Err(String),
    /// `+ [base64]` (RFC 5034): a SASL challenge.
    Continue,
    /// Anything else (shortened, for the error message).
    Other(String),
}

/// Classifies one upstream reply line (with or without its line ending). Public, like
/// [`authenticate`], for the fuzz targets.
pub fn reply(line: &[u8]) -> Reply {
    let line = trim_eol(line);
    let text = |rest: &[u8]| String::from_utf8_lossy(rest.trim_ascii()).into_owned();
    let status = |prefix: &[u8]| {
        line.get(..prefix.len())
            .filter(|p| p.eq_ignore_ascii_case(prefix))
            .map(|_| &line[prefix.len()..])
            .filter(|rest| rest.is_empty() || rest[0] == b' ')
    };
    if let Some(rest) = status(b"+OK") {
        Reply::Ok(text(rest))
    } else if let Some(rest) = status(b"-ERR") {
        Reply::Err(text(rest))
    } else if status(b"+").is_some() {
        Reply::Continue
    } else {
        Reply::Other(text(&line[..line.len().min(200)]))
    }
}

/// An `-ERR` to a login: the upstream's verdict on the token, unless its RFC 2449/3206
/// response code says to try again later.
fn refusal(text: String) -> UpstreamError {
    const LATER: [&str; 3] = ["[SYS/TEMP]", "[IN-USE]", "[LOGIN-DELAY]"];
    let temporary = LATER.iter().any(|code| {
        text.get(..code.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(code))
    });
    if temporary {
        UpstreamError::Protocol(format!("upstream asks to retry later: {text}"))
    } else {
        UpstreamError::Rejected(text)
    }
}

async fn write<S: AsyncWrite + Unpin>(stream: &mut S, bytes: &[u8]) -> Result<(), UpstreamError> {
    stream.write_all(bytes).await?;
    stream.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, BufReader};

    #[test]
    fn replies_are_classified() {
        assert_eq!(
            reply(b"+OK User successfully authenticated.\r\n"),
            Reply::Ok("User successfully authenticated.".into())
        );
        assert_eq!(reply(b"+OK\r\n"), Reply::Ok(String::new()));
        assert_eq!(reply(b"+ \r\n"), Reply::Continue);
        assert_eq!(reply(b"+\r\n"), Reply::Continue);
        assert_eq!(reply(b"+ eyJzdGF0dXMiOiI0MDAifQ==\r\n"), Reply::Continue);
        assert_eq!(reply(b"-ERR\r\n"), Reply::Err(String::new()));
        assert_eq!(
            reply(b"-ERR Authentication failure: unknown user name or bad password.\r\n"),
            Reply::Err("Authentication failure: unknown user name or bad password.".into())
        );
        assert!(matches!(reply(b"+OKAY\r\n"), Reply::Other(_)));
        assert!(matches!(reply(b"* OK IMAP\r\n"), Reply::Other(_)));
        assert!(matches!(reply(b""), Reply::Other(_)));
    }

    #[test]
    fn only_retry_codes_make_a_refusal_temporary() {
        assert!(
            refusal("Authentication failure: unknown user name or bad password.".into())
                .is_rejection()
        );
        assert!(refusal("[AUTH] bad token".into()).is_rejection());
        assert!(!refusal("[SYS/TEMP] try later".into()).is_rejection());
        assert!(!refusal("[in-use] mailbox locked".into()).is_rejection());
        assert!(!refusal("[LOGIN-DELAY] wait".into()).is_rejection());
    }

    /// Runs `authenticate` against a scripted server: for each line the client sends, the
    /// server answers with the next scripted reply. Returns what the client sent.
    async fn converse(
        script: &'static [&'static str],
        token: &str,
    ) -> (
        Result<Option<UpstreamCapabilities>, UpstreamError>,
        Vec<String>,
    ) {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(async move {
            let (read, mut write) = tokio::io::split(server);
            let mut read = BufReader::new(read);
            let mut received = Vec::new();
            for answer in script {
                let mut line = String::new();
                if read.read_line(&mut line).await.unwrap() == 0 {
                    break;
                }
                received.push(line);
                write.write_all(answer.as_bytes()).await.unwrap();
            }
            received
        });
        let mut buf = BytesMut::new();
        let result = authenticate(
            &mut client,
            &mut buf,
            "alex@contoso.com",
            &Secret::from(token),
        )
        .await;
        drop(client);
        (result, server.await.unwrap())
    }

    const EXO_CAPA: &str = "+OK\r\nTOP\r\nUIDL\r\nSASL PLAIN XOAUTH2\r\nUSER\r\n.\r\n";

    #[tokio::test]
    async fn two_step_xoauth2_with_a_6kb_token() {
        let token = "t".repeat(6 * 1024);
        let (result, sent) = converse(
            &[
                EXO_CAPA,
                "+ \r\n",
                "+OK User successfully authenticated.\r\n",
            ],
            &token,
        )
        .await;
        let capabilities = result.unwrap().unwrap();
        assert_eq!(capabilities, UpstreamCapabilities::exchange_online());
        assert_eq!(sent[0], "CAPA\r\n");
        assert_eq!(sent[1], "AUTH XOAUTH2\r\n", "never the inline form");
        let expected = XOAuth2::initial_response("alex@contoso.com", &Secret::from(token.as_str()));
        assert_eq!(sent[2].trim_end().as_bytes(), expected.expose());
        assert!(sent[2].len() > 8000 && sent[2].ends_with("\r\n"));
    }

    #[tokio::test]
    async fn exchange_refusal_is_a_rejection() {
        let (result, _) = converse(
            &[
                EXO_CAPA,
                "+ \r\n",
                "-ERR Authentication failure: unknown user name or bad password.\r\n",
            ],
            "tok",
        )
        .await;
        let error = result.unwrap_err();
        assert!(error.is_rejection(), "{error}");
    }

    #[tokio::test]
    async fn error_challenge_is_answered_with_an_empty_line() {
        let (result, sent) = converse(
            &[
                "-ERR unknown command\r\n",
                "+ \r\n",
                "+ eyJzdGF0dXMiOiI0MDAifQ==\r\n",
                "-ERR [AUTH] Invalid credentials\r\n",
            ],
            "tok",
        )
        .await;
        assert!(result.unwrap_err().is_rejection());
        assert_eq!(sent[3], "\r\n");
    }

    #[tokio::test]
    async fn server_without_capa_and_temporary_refusals() {
        let (result, _) = converse(&["-ERR\r\n", "+\r\n", "+OK\r\n"], "tok").await;
        assert_eq!(result.unwrap(), None);

        let (result, _) = converse(&[EXO_CAPA, "-ERR [SYS/TEMP] busy\r\n"], "tok").await;
        assert!(!result.unwrap_err().is_rejection());
    }

    #[tokio::test]
    async fn dot_stuffed_capa_lines_and_pipelining_are_learned() {
        let (result, _) = converse(
            &[
                "+OK Capability list follows\r\nTOP\r\n..odd\r\nPIPELINING\r\nUIDL\r\n.\r\n",
                "+ \r\n",
                "+OK\r\n",
            ],
            "tok",
        )
        .await;
        let capabilities = result.unwrap().unwrap();
        assert_eq!(
            capabilities.iter().collect::<Vec<_>>(),
            ["TOP", "PIPELINING", "UIDL"]
        );
    }

    #[tokio::test]
    async fn the_server_closing_mid_login_is_an_error() {
        let (result, _) = converse(&[EXO_CAPA], "tok").await;
        assert!(
            matches!(result, Err(UpstreamError::Closed | UpstreamError::Io(_))),
            "{result:?}"
        );
    }
}
