//! Client-facing listeners: binding with a deep backlog, the accept loop with a connection
//! limit, and handing each connection to its protocol's session.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{watch, Semaphore};
use tracing::Instrument;

use oxbridge_imap::{ImapFrontEnd, ImapSettings};
use oxbridge_pop3::{Pop3FrontEnd, Pop3Settings};
use oxbridge_smtp::{SmtpFrontEnd, SmtpSettings};
use oxbridge_wire::Protocol;

use crate::config::{ListenerConfig, ListenerTls};
use crate::runtime::Shared;
use crate::session::{drive, SessionContext};
use crate::stream::ClientStream;

/// Connections waiting to be accepted; a burst of simultaneous connects must not be lost.
const BACKLOG: u32 = 4096;

/// Binds a listening socket with address reuse and a deep backlog.
pub fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(BACKLOG)
}

/// Accepts connections until shutdown; each runs in its own task.
pub async fn accept_loop(
    listener: TcpListener,
    spec: ListenerConfig,
    shared: Arc<Shared>,
    connections: Arc<Semaphore>,
    mut shutdown: watch::Receiver<bool>,
) {
    let protocol = spec.protocol;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => break,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of descriptors or similar: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            shared
                .metrics
                .connections_refused_total
                .with_label_values(&[protocol.as_str()])
                .inc();
            drop(tcp);
            continue;
        };
        let shared = shared.clone();
        let spec = spec.clone();
        let shutdown = shutdown.clone();
        let span = tracing::info_span!("session", %protocol, %peer);
        tokio::spawn(
            async move {
                let _permit = permit;
                let active = shared
                    .metrics
                    .sessions_active
                    .with_label_values(&[protocol.as_str()]);
                shared
                    .metrics
                    .sessions_total
                    .with_label_values(&[protocol.as_str()])
                    .inc();
                active.inc();
                if let Err(e) = session(tcp, peer, &spec, &shared, shutdown).await {
                    tracing::debug!(error = %e, "session I/O error");
                }
                active.dec();
            }
            .instrument(span),
        );
    }
}

async fn session(
    tcp: TcpStream,
    peer: SocketAddr,
    spec: &ListenerConfig,
    shared: &Shared,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    tcp.set_nodelay(true)?;
    let acceptor = shared.acceptor();
    let stream = if spec.tls == ListenerTls::Implicit {
        match tokio::time::timeout(shared.pre_auth_timeout, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => ClientStream::Tls(Box::new(tls)),
            Ok(Err(e)) => {
                shared.tls_failed(spec.protocol);
                tracing::debug!(error = %e, "TLS handshake failed");
                return Ok(());
            }
            Err(_) => {
                shared.tls_failed(spec.protocol);
                return Ok(());
            }
        }
    } else {
        ClientStream::Plain(tcp)
    };
    let ctx = SessionContext {
        protocol: spec.protocol,
        acceptor,
        authenticator: shared.authenticator.clone(),
        endpoint: shared.endpoint(spec.protocol),
        pre_auth_timeout: shared.pre_auth_timeout,
        splice: shared.splice,
        shutdown,
    };
    let limits = &shared.limits;
    match spec.protocol {
        Protocol::Imap => {
            let settings = ImapSettings {
                implicit_tls: spec.tls == ListenerTls::Implicit,
                starttls: spec.tls == ListenerTls::Starttls,
                allow_plaintext: spec.allow_plaintext,
                max_line: limits.max_line_bytes,
                max_literal: 8 * 1024,
                max_commands: limits.max_pre_auth_commands,
                max_failed_logins: limits.max_failed_logins,
            };
            drive(stream, ImapFrontEnd::new(settings, peer), &shared.imap, ctx).await
        }
        Protocol::Pop3 => {
            let settings = Pop3Settings {
                implicit_tls: spec.tls == ListenerTls::Implicit,
                starttls: spec.tls == ListenerTls::Starttls,
                allow_plaintext: spec.allow_plaintext,
                max_line: limits.max_line_bytes,
                max_commands: limits.max_pre_auth_commands,
                max_failed_logins: limits.max_failed_logins,
                upstream: shared.pop3.capabilities(),
            };
            drive(stream, Pop3FrontEnd::new(settings, peer), &shared.pop3, ctx).await
        }
        Protocol::Smtp => {
            let settings = SmtpSettings {
                implicit_tls: spec.tls == ListenerTls::Implicit,
                starttls: spec.tls == ListenerTls::Starttls,
                allow_plaintext: spec.allow_plaintext,
                max_line: limits.max_line_bytes,
                max_commands: limits.max_pre_auth_commands,
                max_failed_logins: limits.max_failed_logins,
                ..SmtpSettings::default()
            };
            // What the upstream offers, for the EHLO reply; learned once, then cached.
            let extensions = shared.smtp.extensions(&ctx.endpoint).await;
            let front = SmtpFrontEnd::new(settings, peer, extensions);
            drive(stream, front, &shared.smtp, ctx).await
        }
    }
}
