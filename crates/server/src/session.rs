//! The session driver shared by every protocol: runs a [`FrontEnd`] over a client
//! connection (greeting, reads, STARTTLS, the pre-auth deadline), performs the login (or the
//! SMTP relay) it asks for, then splices the client with the authenticated upstream.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use oxbridge_wire::splice::{splice_until, Meters, SpliceSettings};
use oxbridge_wire::{BackEnd, FrontEnd, Next, Protocol, UpstreamEndpoint};

use crate::authenticate::Authenticator;
use crate::stream::{Accepted, ClientStream};

/// What a session needs from the server around it.
#[derive(Clone)]
pub struct SessionContext {
    pub protocol: Protocol,
    pub acceptor: TlsAcceptor,
    pub authenticator: Arc<Authenticator>,
    pub endpoint: Arc<UpstreamEndpoint>,
    pub pre_auth_timeout: Duration,
    pub splice: SpliceSettings,
    /// Set when the server stops accepting: a session still in its pre-auth dialog says
    /// goodbye and ends.
    pub shutdown: watch::Receiver<bool>,
    /// Set when the shutdown grace period is over: a spliced session ends too (see
    /// [`FrontEnd::spliced_goodbye`]).
    pub drain: watch::Receiver<bool>,
}

impl SessionContext {
    fn tls_failed(&self) {
        self.authenticator
            .metrics
            .tls_handshake_failures_total
            .with_label_values(&[self.protocol.as_str()])
            .inc();
    }
}

impl std::fmt::Debug for SessionContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionContext")
            .field("protocol", &self.protocol)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// Why a session ended; for the debug log.
#[derive(Debug)]
enum End {
    ClientClosed,
    Closed,
    TimedOut,
    ShuttingDown,
    Spliced,
}

/// Runs one client session to its end.
pub async fn drive<F: FrontEnd, B: BackEnd>(
    accepted: Accepted,
    mut front: F,
    back: &B,
    mut ctx: SessionContext,
) -> std::io::Result<()> {
    let deadline = Instant::now() + ctx.pre_auth_timeout;
    let mut input = BytesMut::with_capacity(1024);
    let mut out = Vec::with_capacity(512);
    front.greeting(&mut out);
    let mut stream = match accepted {
        Accepted::Plain(tcp) => {
            let mut stream = ClientStream::Plain(tcp);
            send(&mut stream, &mut out).await?;
            stream
        }
        Accepted::ImplicitTls(tcp) => {
            // The greeting rides in the server's first TLS 1.3 flight (half-RTT data), so
            // the client has it as soon as its handshake is done: one round trip and one
            // write fewer per session. It is public, so sending it before the client's
            // Finished is harmless; under TLS 1.2 it simply follows the handshake.
            let greeting = std::mem::take(&mut out);
            let accept = ctx.acceptor.accept_with(tcp, |conn| {
                // Buffered in memory until the keys exist; cannot fail.
                let _ = conn.writer().write_all(&greeting);
            });
            match tokio::time::timeout_at(deadline, Box::pin(accept)).await {
                Ok(Ok(tls)) => ClientStream::Tls(Box::new(tls)),
                Ok(Err(e)) => {
                    ctx.tls_failed();
                    tracing::debug!(error = %e, "TLS handshake failed");
                    return Ok(());
                }
                Err(_) => {
                    ctx.tls_failed();
                    tracing::debug!("TLS handshake timed out");
                    return Ok(());
                }
            }
        }
    };

    let end = loop {
        let next = front.receive(&mut input, &mut out);
        send(&mut stream, &mut out).await?;
        // `replay`: client bytes that go upstream before any buffered input (a relay's MAIL).
        let (result, replay) = match next {
            Next::Read => {
                input.reserve(2048);
                tokio::select! {
                    read = stream.read_buf(&mut input) => {
                        if read? == 0 {
                            break End::ClientClosed;
                        }
                    }
                    _ = tokio::time::sleep_until(deadline) => {
                        front.timed_out(&mut out);
                        send(&mut stream, &mut out).await?;
                        break End::TimedOut;
                    }
                    _ = ctx.shutdown.changed() => {
                        front.shutting_down(&mut out);
                        send(&mut stream, &mut out).await?;
                        break End::ShuttingDown;
                    }
                }
                continue;
            }
            Next::StartTls => {
                // Whatever the client pipelined behind STARTTLS is discarded unread.
                input.clear();
                let tcp = match stream {
                    ClientStream::Plain(tcp) => tcp,
                    already @ ClientStream::Tls(_) => {
                        stream = already;
                        break End::Closed;
                    }
                };
                let handshake =
                    tokio::time::timeout_at(deadline, Box::pin(ctx.acceptor.accept(tcp))).await;
                match handshake {
                    Ok(Ok(tls)) => {
                        stream = ClientStream::Tls(Box::new(tls));
                        front.tls_started();
                    }
                    _ => {
                        ctx.tls_failed();
                        tracing::debug!("STARTTLS handshake failed");
                        return Ok(());
                    }
                }
                continue;
            }
            Next::Login(login) => {
                // Boxed, like the relay below: a task's size is that of its largest state,
                // and the login's (store, broker, upstream TLS) must not stay reserved in
                // every session for the whole life of its splice.
                let result =
                    Box::pin(ctx.authenticator.authenticate(&login, back, &ctx.endpoint)).await;
                drop(login);
                (result, Vec::new())
            }
            Next::Relay { request, replay } => {
                let result = Box::pin(ctx.authenticator.relay(&request, back, &ctx.endpoint)).await;
                (result, replay)
            }
            Next::Close => break End::Closed,
        };
        match result {
            Ok(mut upstream) => {
                front.login_succeeded(&upstream, &mut out);
                send(&mut stream, &mut out).await?;
                let goodbye = front.spliced_goodbye();
                drop(front);
                // Nothing per-session stays allocated while the splice idles: the
                // pre-auth buffers are released, pending bytes are handed over.
                out.clear();
                out.shrink_to_fit();
                let mut client_pending = std::mem::take(&mut input);
                if !replay.is_empty() {
                    let mut joined = BytesMut::from(&replay[..]);
                    joined.extend_from_slice(&client_pending);
                    client_pending = joined;
                }
                let leftover = std::mem::take(&mut upstream.leftover);
                let mut drain = ctx.drain.clone();
                let bytes = &ctx.authenticator.metrics.bytes_total;
                let protocol = ctx.protocol.as_str();
                let up = bytes.with_label_values(&[protocol, "client_to_upstream"]);
                let down = bytes.with_label_values(&[protocol, "upstream_to_client"]);
                let stats = splice_until(
                    &mut stream,
                    &mut upstream.stream,
                    client_pending,
                    leftover,
                    ctx.splice,
                    Meters {
                        client_to_upstream: &|n| up.inc_by(n),
                        upstream_to_client: &|n| down.inc_by(n),
                    },
                    async move {
                        // A dropped sender means the server is gone: stop as well.
                        let _ = drain.wait_for(|draining| *draining).await;
                    },
                )
                .await;
                if let Ok(stats) = &stats {
                    if stats.stopped {
                        say_goodbye(&mut stream, goodbye, stats.at_line_boundary).await;
                    }
                }
                log_splice_end(stats);
                break End::Spliced;
            }
            Err(refusal) => {
                let next = refusal.tell(&mut front, &mut out);
                send(&mut stream, &mut out).await?;
                if matches!(next, Next::Close) {
                    break End::Closed;
                }
            }
        }
    };
    tracing::debug!(end = ?end, "session ended");
    let _ = stream.shutdown().await;
    Ok(())
}

fn log_splice_end(stats: std::io::Result<oxbridge_wire::splice::SpliceStats>) {
    match stats {
        Ok(stats) => {
            tracing::debug!(
                up = stats.client_to_upstream,
                down = stats.upstream_to_client,
                idle_timeout = stats.idle_timeout,
                "splice finished"
            );
        }
        Err(e) => tracing::debug!(error = %e, "splice ended with an error"),
    }
}

/// The server ended a spliced session: writes the protocol's goodbye if it has one and the
/// upstream's output stopped at a line end (anywhere else it would corrupt a response).
/// Bounded in time: a client that does not read must not hold up the shutdown.
async fn say_goodbye(stream: &mut ClientStream, goodbye: Option<&[u8]>, at_line_boundary: bool) {
    let Some(goodbye) = goodbye else {
        tracing::debug!("server draining: spliced session closed");
        return;
    };
    if !at_line_boundary {
        tracing::debug!("server draining: closed mid-response, without a goodbye");
        return;
    }
    let write = async {
        stream.write_all(goodbye).await?;
        stream.flush().await
    };
    match tokio::time::timeout(Duration::from_secs(1), write).await {
        Ok(Ok(())) => tracing::debug!("server draining: said goodbye to the client"),
        _ => tracing::debug!("server draining: the client did not take the goodbye"),
    }
}

/// Writes and clears `out`.
async fn send(stream: &mut ClientStream, out: &mut Vec<u8>) -> std::io::Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    stream.write_all(out).await?;
    stream.flush().await?;
    out.clear();
    Ok(())
}
