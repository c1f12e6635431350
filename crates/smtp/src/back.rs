//! The upstream SMTP login (greeting, EHLO, STARTTLS, EHLO again, AUTH XOAUTH2 in its
//! two-step form) and the probe that learns the upstream's extensions for oxbridge's own
//! EHLO replies.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use zeroize::Zeroizing;

use oxbridge_wire::sasl::{BearerMechanism, XOAuth2};
use oxbridge_wire::upstream::read_line;
use oxbridge_wire::{
    BackEnd, Secret, UpstreamEndpoint, UpstreamError, UpstreamSession, UpstreamStream, UpstreamTls,
};

use crate::ehlo::{CacheLookup, ExtensionCache, Extensions};
use crate::reply::{parse_reply_line, Reply, ReplyLine};

/// Most lines one reply may have; an EHLO reply has a dozen.
const MAX_REPLY_LINES: usize = 128;

/// Logs in to an upstream submission service with XOAUTH2, and keeps what each upstream
/// advertises after TLS ([`ExtensionCache`]) for the EHLO replies oxbridge gives clients.
#[derive(Debug)]
pub struct SmtpBackEnd {
    /// The name oxbridge gives in its own EHLO.
    hostname: String,
    cache: ExtensionCache,
    /// One probe at a time: clients that connect together while the cache is cold wait for
    /// the same probe instead of each opening a connection upstream.
    probing: tokio::sync::Mutex<()>,
}

impl SmtpBackEnd {
    pub fn new(hostname: impl Into<String>) -> Self {
        SmtpBackEnd {
            hostname: hostname.into(),
            cache: ExtensionCache::default(),
            probing: tokio::sync::Mutex::new(()),
        }
    }

    pub fn cache(&self) -> &ExtensionCache {
        &self.cache
    }

    /// The upstream's extensions, for a client's EHLO reply: cached, or learned now by a
    /// probe (connect, EHLO, STARTTLS, EHLO, QUIT; no login). If the upstream cannot be
    /// reached the answer is empty, so oxbridge never advertises what it has not seen the
    /// upstream offer; no mail can pass meanwhile anyway.
    pub async fn extensions(&self, endpoint: &UpstreamEndpoint) -> Arc<Extensions> {
        if let Some(known) = self.cached(endpoint) {
            return known;
        }
        let _probe = self.probing.lock().await;
        if let Some(known) = self.cached(endpoint) {
            return known;
        }
        let probed = tokio::time::timeout(endpoint.connect_timeout, self.probe(endpoint)).await;
        match probed {
            Ok(Ok(extensions)) => {
                self.cache.learn(&endpoint.address, extensions);
                self.cached(endpoint).unwrap_or_default()
            }
            Ok(Err(e)) => {
                tracing::warn!(upstream = %endpoint.address, error = %e, "cannot learn the upstream's SMTP extensions");
                self.cache.probe_failed(&endpoint.address);
                Arc::default()
            }
            Err(_) => {
                tracing::warn!(upstream = %endpoint.address, "timed out learning the upstream's SMTP extensions");
                self.cache.probe_failed(&endpoint.address);
                Arc::default()
            }
        }
    }

    /// `Some` when the cache has an answer (possibly "unreachable": empty).
    fn cached(&self, endpoint: &UpstreamEndpoint) -> Option<Arc<Extensions>> {
        match self.cache.lookup(&endpoint.address) {
            CacheLookup::Known(extensions) => Some(extensions),
            CacheLookup::Unreachable => Some(Arc::default()),
            CacheLookup::Unknown => None,
        }
    }

    async fn probe(&self, endpoint: &UpstreamEndpoint) -> Result<Extensions, UpstreamError> {
        let mut buf = BytesMut::with_capacity(4096);
        let (mut stream, extensions) = self.open(endpoint, &mut buf).await?;
        let _ = stream.write_all(b"QUIT\r\n").await;
        let _ = stream.shutdown().await;
        Ok(extensions)
    }

    /// Connects (implicit TLS, or plain then STARTTLS), reads the greeting and returns the
    /// TLS stream with the extensions of the EHLO sent over TLS.
    async fn open(
        &self,
        endpoint: &UpstreamEndpoint,
        buf: &mut BytesMut,
    ) -> Result<(UpstreamStream, Extensions), UpstreamError> {
        let ehlo = format!("EHLO {}\r\n", self.hostname);
        let mut stream = match endpoint.tls {
            UpstreamTls::Implicit => {
                let mut stream = endpoint.connect_tls().await?;
                expect(&mut stream, buf, 220, "greeting").await?;
                stream
            }
            UpstreamTls::StartTls => {
                let mut tcp = endpoint.connect_tcp().await?;
                expect(&mut tcp, buf, 220, "greeting").await?;
                command(&mut tcp, buf, ehlo.as_bytes(), 250, "EHLO").await?;
                command(&mut tcp, buf, b"STARTTLS\r\n", 220, "STARTTLS").await?;
                // Anything the server sent before the handshake is discarded, like for clients.
                buf.clear();
                endpoint.start_tls(tcp).await?
            }
        };
        let reply = command(&mut stream, buf, ehlo.as_bytes(), 250, "EHLO").await?;
        Ok((stream, Extensions::from_ehlo(&reply)))
    }

    async fn login_inner(
        &self,
        endpoint: &UpstreamEndpoint,
        mailbox: &str,
        token: &Secret,
    ) -> Result<UpstreamSession, UpstreamError> {
        let mut buf = BytesMut::with_capacity(4096);
        let (mut stream, extensions) = self.open(endpoint, &mut buf).await?;
        self.cache.learn(&endpoint.address, extensions);

        // Always the two-step form: a 6 KB token makes an inline AUTH line longer than
        // RFC 4954 lets a client assume (EXCHANGE.md §2.1). Upper case: some servers
        // reject `xoauth2`.
        write(
            &mut stream,
            format!("AUTH {}\r\n", XOAuth2::NAME).as_bytes(),
        )
        .await?;
        let reply = read_reply(&mut stream, &mut buf).await?;
        if reply.code != 334 {
            return Err(refusal(&reply));
        }
        let response = XOAuth2::initial_response(mailbox, token);
        let mut line = Zeroizing::new(Vec::with_capacity(response.len() + 2));
        line.extend_from_slice(response.expose());
        line.extend_from_slice(b"\r\n");
        write(&mut stream, &line).await?;
        drop(line);

        let mut reply = read_reply(&mut stream, &mut buf).await?;
        if reply.code == 334 {
            // An error challenge (Gmail does this; Exchange does not): answer with an empty
            // response, then the final reply follows.
            let mut empty = XOAuth2::error_reply().to_vec();
            empty.extend_from_slice(b"\r\n");
            write(&mut stream, &empty).await?;
            reply = read_reply(&mut stream, &mut buf).await?;
        }
        if reply.code != 235 {
            return Err(refusal(&reply));
        }
        Ok(UpstreamSession {
            stream: Box::new(stream),
            leftover: buf,
            capabilities: None,
        })
    }
}

impl BackEnd for SmtpBackEnd {
    async fn login(
        &self,
        endpoint: &UpstreamEndpoint,
        mailbox: &str,
        token: &Secret,
    ) -> Result<UpstreamSession, UpstreamError> {
        tokio::time::timeout(
            endpoint.login_timeout,
            self.login_inner(endpoint, mailbox, token),
        )
        .await
        .map_err(|_| UpstreamError::Timeout("SMTP login"))?
    }
}

/// A refused AUTH: a permanent reply is the upstream's verdict on the token, and carries the
/// whole reply so it can reach the client verbatim; anything else is temporary.
fn refusal(reply: &Reply) -> UpstreamError {
    if reply.is_permanent() {
        UpstreamError::Rejected(reply.to_wire())
    } else {
        UpstreamError::Protocol(format!("AUTH XOAUTH2: {}", reply.to_wire()))
    }
}

/// Sends `line` and expects a reply with `code`.
async fn command<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    line: &[u8],
    code: u16,
    what: &str,
) -> Result<Reply, UpstreamError> {
    write(stream, line).await?;
    expect(stream, buf, code, what).await
}

/// Reads a reply and insists on `code`; any other is temporary from the client's view (the
/// upstream is misbehaving or refusing service, not judging credentials).
async fn expect<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    code: u16,
    what: &str,
) -> Result<Reply, UpstreamError> {
    let reply = read_reply(stream, buf).await?;
    if reply.code != code {
        return Err(UpstreamError::Protocol(format!(
            "{what}: {}",
            reply.to_wire()
        )));
    }
    Ok(reply)
}

/// Reads one complete (possibly multi-line) reply; bytes after it stay in `buf`.
async fn read_reply<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> Result<Reply, UpstreamError> {
    let first = read_reply_line(stream, buf).await?;
    let code = first.code;
    let mut last = first.last;
    let mut lines = vec![first.text];
    while !last {
        let line = read_reply_line(stream, buf).await?;
        if line.code != code || lines.len() >= MAX_REPLY_LINES {
            return Err(UpstreamError::Protocol(format!(
                "malformed multi-line reply {code}"
            )));
        }
        last = line.last;
        lines.push(line.text);
    }
    Ok(Reply { code, lines })
}

async fn read_reply_line<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> Result<ReplyLine, UpstreamError> {
    let raw = read_line(stream, buf).await?;
    parse_reply_line(&raw).ok_or_else(|| {
        UpstreamError::Protocol(format!(
            "unparsable reply: {}",
            String::from_utf8_lossy(&raw[..raw.len().min(200)]).trim_end()
        ))
    })
}

async fn write<S: AsyncWrite + Unpin>(stream: &mut S, bytes: &[u8]) -> Result<(), UpstreamError> {
    stream.write_all(bytes).await?;
    stream.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn reply_of(bytes: &[u8]) -> (Result<Reply, UpstreamError>, BytesMut) {
        let mut stream = bytes;
        let mut buf = BytesMut::new();
        let reply = read_reply(&mut stream, &mut buf).await;
        (reply, buf)
    }

    #[tokio::test]
    async fn reads_multi_line_replies_and_keeps_what_follows() {
        let (reply, rest) =
            reply_of(b"250-host Hello [1.2.3.4]\r\n250-SIZE 157286400\r\n250 SMTPUTF8\r\n235 next")
                .await;
        let reply = reply.unwrap();
        assert_eq!(reply.code, 250);
        assert_eq!(
            reply.lines,
            ["host Hello [1.2.3.4]", "SIZE 157286400", "SMTPUTF8"]
        );
        assert_eq!(&rest[..], b"235 next");
    }

    #[tokio::test]
    async fn refuses_mixed_codes_garbage_and_endless_replies() {
        assert!(matches!(
            reply_of(b"250-a\r\n220 b\r\n").await.0,
            Err(UpstreamError::Protocol(_))
        ));
        assert!(matches!(
            reply_of(b"* OK IMAP\r\n").await.0,
            Err(UpstreamError::Protocol(_))
        ));
        assert!(matches!(
            reply_of(&b"250-x\r\n".repeat(500)).await.0,
            Err(UpstreamError::Protocol(_))
        ));
        assert!(matches!(
            reply_of(b"250-x\r\n").await.0,
            Err(UpstreamError::Closed)
        ));
    }

    #[test]
    fn only_permanent_refusals_are_the_upstreams_verdict() {
        let permanent = Reply {
            code: 535,
            lines: vec!["5.7.3 Authentication unsuccessful [X]".into()],
        };
        match refusal(&permanent) {
            UpstreamError::Rejected(text) => {
                assert_eq!(text, "535 5.7.3 Authentication unsuccessful [X]")
            }
            other => panic!("{other:?}"),
        }
        let transient = Reply {
            code: 454,
            lines: vec!["4.7.0 Temporary authentication failure".into()],
        };
        assert!(!refusal(&transient).is_rejection());
    }
}
