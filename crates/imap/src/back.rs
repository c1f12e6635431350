//! The upstream IMAP login: greeting, CAPABILITY, AUTHENTICATE XOAUTH2, post-auth CAPABILITY.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::BytesMut;
use imap_proto::{Capability, Response, ResponseCode, Status};
use tokio::io::AsyncWriteExt;

use oxbridge_wire::pool::Pool;
use oxbridge_wire::sasl::{BearerMechanism, XOAuth2};
use oxbridge_wire::upstream::read_line;
use oxbridge_wire::{
    BackEnd, Secret, UpstreamEndpoint, UpstreamError, UpstreamSession, UpstreamStream, UpstreamTls,
};

const UNKNOWN: u8 = 0;
const YES: u8 = 1;
const NO: u8 = 2;

/// Logs in to an upstream IMAP server with XOAUTH2.
///
/// Whether the upstream takes SASL-IR is learned once (from its pre-auth CAPABILITY) and
/// remembered, so later logins skip that round trip. With SASL-IR, the post-auth CAPABILITY
/// (whose answer the client's tagged OK carries, and which reveals Exchange's
/// "authenticated but not connected" state before the client is told it is in) is pipelined
/// behind AUTHENTICATE, so a login costs one round trip after the greeting.
///
/// With a pool, connections are opened and greeted ahead of need, so a login costs only
/// the AUTHENTICATE round trip.
#[derive(Debug, Default)]
pub struct ImapBackEnd {
    sasl_ir: AtomicU8,
    pool: Option<Pool<Greeted>>,
    pool_kept: OnceLock<()>,
}

/// A connection whose greeting has been read.
#[derive(Debug)]
struct Greeted {
    stream: UpstreamStream,
    buf: BytesMut,
}

impl ImapBackEnd {
    pub fn new() -> Self {
        Self::default()
    }

    /// A back-end keeping `size` greeted connections ready, each for at most `ttl`.
    pub fn with_pool(size: usize, ttl: Duration) -> Self {
        Self {
            pool: (size > 0).then(|| Pool::new(size, ttl)),
            ..Self::default()
        }
    }

    /// A greeted connection: from the pool if one is ready, else a new one.
    async fn greeted(&self, endpoint: &UpstreamEndpoint) -> Result<(Greeted, bool), UpstreamError> {
        if let Some(pool) = &self.pool {
            self.pool_kept
                .get_or_init(|| pool.keep_fresh(opener(endpoint)));
            if let Some(conn) = pool.take() {
                return Ok((conn, true));
            }
        }
        Ok((greet(endpoint.clone()).await?, false))
    }

    /// Tops the pool up again once a login is done with the upstream: a connection opened
    /// while the login's own round trip is in flight would compete with it for the CPU.
    fn refill(&self, endpoint: &UpstreamEndpoint) {
        if let Some(pool) = &self.pool {
            pool.refill(opener(endpoint));
        }
    }
}

/// A greeted connection being opened.
type Greeting = Pin<Box<dyn Future<Output = Result<Greeted, UpstreamError>> + Send>>;

/// Opens greeted connections to `endpoint`, for the pool.
fn opener(endpoint: &UpstreamEndpoint) -> impl Fn() -> Greeting + Send + Sync + 'static {
    let endpoint = Arc::new(endpoint.clone());
    move || Box::pin(greet((*endpoint).clone()))
}

async fn greet(endpoint: UpstreamEndpoint) -> Result<Greeted, UpstreamError> {
    let mut buf = BytesMut::with_capacity(4096);
    let stream = connect(&endpoint, &mut buf).await?;
    Ok(Greeted { stream, buf })
}

impl BackEnd for ImapBackEnd {
    async fn login(
        &self,
        endpoint: &UpstreamEndpoint,
        mailbox: &str,
        token: &Secret,
    ) -> Result<UpstreamSession, UpstreamError> {
        let login = tokio::time::timeout(endpoint.login_timeout, async {
            let (conn, pooled) = self.greeted(endpoint).await?;
            match self.authenticate(conn, mailbox, token).await {
                // The upstream may have dropped a pooled connection meanwhile: retry fresh.
                Err(e) if pooled && !e.is_rejection() => {
                    tracing::debug!(error = %e, "pooled upstream connection failed; retrying");
                    let conn = greet(endpoint.clone()).await?;
                    self.authenticate(conn, mailbox, token).await
                }
                result => result,
            }
        })
        .await;
        self.refill(endpoint);
        login.map_err(|_| UpstreamError::Timeout("IMAP login"))?
    }
}

impl ImapBackEnd {
    /// AUTHENTICATE XOAUTH2 on a greeted connection, and the post-auth CAPABILITY.
    async fn authenticate(
        &self,
        conn: Greeted,
        mailbox: &str,
        token: &Secret,
    ) -> Result<UpstreamSession, UpstreamError> {
        let Greeted {
            mut stream,
            mut buf,
        } = conn;

        let sasl_ir = match self.sasl_ir.load(Ordering::Relaxed) {
            UNKNOWN => {
                let caps = capability(&mut stream, &mut buf, "A0").await?;
                let yes = caps.split(' ').any(|c| c.eq_ignore_ascii_case("SASL-IR"));
                self.sasl_ir
                    .store(if yes { YES } else { NO }, Ordering::Relaxed);
                yes
            }
            known => known == YES,
        };

        let response = XOAuth2::initial_response(mailbox, token);
        if sasl_ir {
            let mut command = Vec::with_capacity(response.len() + 48);
            command.extend_from_slice(b"A1 AUTHENTICATE XOAUTH2 ");
            command.extend_from_slice(response.expose());
            command.extend_from_slice(b"\r\nA2 CAPABILITY\r\n");
            write(&mut stream, &command).await?;
            zeroize_vec(command);
        } else {
            write(&mut stream, b"A1 AUTHENTICATE XOAUTH2\r\n").await?;
            expect_continuation(&mut stream, &mut buf).await?;
            let mut line = response.expose().to_vec();
            line.extend_from_slice(b"\r\n");
            write(&mut stream, &line).await?;
            zeroize_vec(line);
        }

        let mut challenged = false;
        let mut capabilities = None;
        loop {
            let line = read_line(&mut stream, &mut buf).await?;
            match parse_upstream_line(&line)? {
                Response::Continue { .. } if !challenged => {
                    // An error challenge (Gmail style): answer empty, then read the NO.
                    challenged = true;
                    write(&mut stream, XOAuth2::error_reply()).await?;
                    write(&mut stream, b"\r\n").await?;
                }
                Response::Done {
                    tag,
                    status,
                    code,
                    information,
                } if tag.0 == "A1" => {
                    if status != Status::Ok {
                        return Err(UpstreamError::Rejected(
                            information.map(|i| i.into_owned()).unwrap_or_default(),
                        ));
                    }
                    if let Some(ResponseCode::Capabilities(caps)) = code {
                        capabilities = Some(render_capabilities(&caps));
                    }
                    break;
                }
                Response::Capabilities(caps) => capabilities = Some(render_capabilities(&caps)),
                Response::Data {
                    status: Status::Bye,
                    information,
                    ..
                } => {
                    return Err(UpstreamError::Protocol(format!(
                        "BYE during login: {}",
                        information.unwrap_or_default()
                    )));
                }
                _ => {}
            }
        }
        if sasl_ir {
            // The pipelined CAPABILITY's answer; it supersedes any list in the tagged OK.
            capabilities = Some(read_capability(&mut stream, &mut buf, "A2").await?);
        } else if capabilities.is_none() {
            capabilities = Some(capability(&mut stream, &mut buf, "A2").await?);
        }
        Ok(UpstreamSession {
            stream: Box::new(stream),
            leftover: buf,
            capabilities,
        })
    }
}

/// Connects (implicit TLS, or plain then STARTTLS) and reads the greeting.
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
            tcp.write_all(b"A0 STARTTLS\r\n").await?;
            loop {
                let line = read_line(&mut tcp, buf).await?;
                if let Response::Done {
                    status,
                    information,
                    ..
                } = parse_upstream_line(&line)?
                {
                    if status != Status::Ok {
                        return Err(UpstreamError::Protocol(format!(
                            "STARTTLS refused: {}",
                            information.unwrap_or_default()
                        )));
                    }
                    break;
                }
            }
            // Anything the server sent before the handshake is discarded, like for clients.
            buf.clear();
            endpoint.start_tls(tcp).await
        }
    }
}

async fn greeting<S>(stream: &mut S, buf: &mut BytesMut) -> Result<(), UpstreamError>
where
    S: tokio::io::AsyncRead + Unpin,
{
    let line = read_line(stream, buf).await?;
    match parse_upstream_line(&line)? {
        Response::Data {
            status: Status::Ok, ..
        } => Ok(()),
        _ => Err(UpstreamError::Protocol(format!(
            "unexpected greeting: {}",
            String::from_utf8_lossy(&line).trim_end()
        ))),
    }
}

/// Sends CAPABILITY and returns the advertised list as one space-separated string.
async fn capability(
    stream: &mut UpstreamStream,
    buf: &mut BytesMut,
    tag: &str,
) -> Result<String, UpstreamError> {
    write(stream, format!("{tag} CAPABILITY\r\n").as_bytes()).await?;
    read_capability(stream, buf, tag).await
}

/// Reads the answer to a CAPABILITY command already sent with `tag`.
async fn read_capability(
    stream: &mut UpstreamStream,
    buf: &mut BytesMut,
    tag: &str,
) -> Result<String, UpstreamError> {
    let mut found = String::new();
    loop {
        let line = read_line(stream, buf).await?;
        match parse_upstream_line(&line)? {
            Response::Capabilities(caps) => found = render_capabilities(&caps),
            Response::Done {
                tag: t,
                status,
                information,
                ..
            } if t.0 == tag => {
                if status != Status::Ok {
                    // Exchange answers BAD "User is authenticated but not connected." when the
                    // mailbox is over its connection limit or throttled: temporary.
                    return Err(UpstreamError::Protocol(format!(
                        "CAPABILITY failed: {}",
                        information.unwrap_or_default()
                    )));
                }
                return Ok(found);
            }
            Response::Data {
                status: Status::Bye,
                information,
                ..
            } => {
                return Err(UpstreamError::Protocol(format!(
                    "BYE: {}",
                    information.unwrap_or_default()
                )));
            }
            _ => {}
        }
    }
}

async fn expect_continuation(
    stream: &mut UpstreamStream,
    buf: &mut BytesMut,
) -> Result<(), UpstreamError> {
    let line = read_line(stream, buf).await?;
    match parse_upstream_line(&line)? {
        Response::Continue { .. } => Ok(()),
        Response::Done { information, .. } => Err(UpstreamError::Rejected(
            information.map(|i| i.into_owned()).unwrap_or_default(),
        )),
        _ => Err(UpstreamError::Protocol("expected a continuation".into())),
    }
}

/// Parses one line the upstream sent during login with imap-proto, as every step of
/// [`ImapBackEnd`]'s dialog does. Public so the fuzz targets reach exactly this path with
/// arbitrary upstream bytes; an unparsable line is [`UpstreamError::Protocol`] (a temporary
/// failure for the client), never a panic.
pub fn parse_upstream_line(line: &[u8]) -> Result<Response<'_>, UpstreamError> {
    match imap_proto::parser::parse_response(line) {
        Ok((_, response)) => Ok(response),
        Err(_) => Err(UpstreamError::Protocol(format!(
            "unparsable response: {}",
            String::from_utf8_lossy(&line[..line.len().min(200)]).trim_end()
        ))),
    }
}

/// The upstream's capability list as one space-separated string, as the client's tagged OK
/// carries it (`OK [CAPABILITY …]`). Public for the fuzz targets, which check that nothing an
/// upstream sends can put a line break into that reply.
pub fn render_capabilities(caps: &[Capability<'_>]) -> String {
    caps.iter()
        .map(|c| match c {
            Capability::Imap4rev1 => "IMAP4rev1".to_string(),
            Capability::Auth(mech) => format!("AUTH={mech}"),
            Capability::Atom(atom) => atom.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

async fn write(stream: &mut UpstreamStream, bytes: &[u8]) -> Result<(), UpstreamError> {
    stream.write_all(bytes).await?;
    stream.flush().await?;
    Ok(())
}

/// Wipes a buffer that held a token.
fn zeroize_vec(mut bytes: Vec<u8>) {
    bytes.iter_mut().for_each(|b| *b = 0);
    std::hint::black_box(&bytes);
}
