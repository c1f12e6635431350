//! Client-facing listeners: binding with a deep backlog, the accept loop with a connection
//! limit, and handing each connection to its protocol's session.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tracing::Instrument;

use oxbridge_imap::{ImapFrontEnd, ImapSettings};
use oxbridge_pop3::{Pop3FrontEnd, Pop3Settings};
use oxbridge_smtp::{SmtpFrontEnd, SmtpSettings};
use oxbridge_wire::Protocol;

use crate::config::{ListenerConfig, ListenerTls};
use crate::proxy_protocol::{self, ProxyHeader, ProxyPolicy};
use crate::runtime::Shared;
use crate::session::{drive, SessionContext};
use crate::stream::Accepted;

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

/// Accepts connections until `stop` changes (shutdown, or a reload that removes or changes
/// this listener); each connection runs in its own task, which `stop` does not end. Returns
/// the listening socket, so a reload can go on accepting on it with new settings.
pub async fn accept_loop(
    listener: TcpListener,
    spec: ListenerConfig,
    proxy: Option<Arc<ProxyPolicy>>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> TcpListener {
    let protocol = spec.protocol;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.changed() => break,
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
        let max = shared.settings().limits.max_connections;
        let Some(permit) = shared.sessions.try_enter(max) else {
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
        let shutdown = shared.shutdown_signal();
        let proxy = proxy.clone();
        // `peer` is the client; behind a PROXY-protocol balancer it is filled in from the
        // header, and `via` holds the balancer's address.
        let span = tracing::info_span!(
            "session",
            %protocol,
            peer = tracing::field::Empty,
            via = tracing::field::Empty
        );
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
                if let Err(e) = session(tcp, peer, proxy, &spec, &shared, shutdown).await {
                    tracing::debug!(error = %e, "session I/O error");
                }
                active.dec();
            }
            .instrument(span),
        );
    }
    listener
}

async fn session(
    mut tcp: TcpStream,
    peer: SocketAddr,
    proxy: Option<Arc<ProxyPolicy>>,
    spec: &ListenerConfig,
    shared: &Shared,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    tcp.set_nodelay(true)?;
    let acceptor = shared.acceptor();
    let settings = shared.settings();
    let span = tracing::Span::current();
    let peer = match proxy {
        None => peer,
        Some(policy) => {
            span.record("via", tracing::field::display(peer));
            let refuse = |reason: &str| {
                shared
                    .metrics
                    .proxy_header_failures_total
                    .with_label_values(&[spec.protocol.as_str(), reason])
                    .inc();
            };
            if !policy.trusts(peer.ip()) {
                refuse("untrusted");
                tracing::warn!(
                    "PROXY-protocol listener: connection from an untrusted address refused"
                );
                return Ok(());
            }
            let header = proxy_protocol::read_header(&mut tcp);
            match tokio::time::timeout(settings.pre_auth_timeout, header).await {
                Ok(Ok(ProxyHeader::Proxied { source, .. })) => source,
                Ok(Ok(ProxyHeader::Local)) => peer,
                Ok(Err(e)) => {
                    refuse(e.as_str());
                    tracing::info!(error = %e, "PROXY-protocol header refused");
                    return Ok(());
                }
                Err(_) => {
                    refuse("timeout");
                    tracing::info!("no PROXY-protocol header in time");
                    return Ok(());
                }
            }
        }
    };
    span.record("peer", tracing::field::display(peer));
    let stream = if spec.tls == ListenerTls::Implicit {
        Accepted::ImplicitTls(tcp)
    } else {
        Accepted::Plain(tcp)
    };
    let ctx = SessionContext {
        protocol: spec.protocol,
        acceptor,
        authenticator: shared.authenticator.clone(),
        endpoint: shared.endpoint(spec.protocol),
        pre_auth_timeout: settings.pre_auth_timeout,
        splice: settings.splice,
        shutdown,
        drain: shared.drain_signal(),
    };
    let limits = &settings.limits;
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
            // Boxed: on a cache miss it is a whole upstream connection, and a task reserves
            // room for its largest state for its whole life, whatever the protocol.
            let extensions = Box::pin(shared.smtp.extensions(&ctx.endpoint)).await;
            let front = SmtpFrontEnd::new(settings, peer, extensions);
            drive(stream, front, &shared.smtp, ctx).await
        }
    }
}

/// Counts open client sessions against `[limits] max_connections` (which a reload may
/// change, so this is a counter rather than a fixed pool of permits) and lets the drain
/// wait until none is left.
#[derive(Debug)]
pub struct SessionCounter {
    open: watch::Sender<usize>,
}

impl Default for SessionCounter {
    fn default() -> Self {
        Self {
            open: watch::Sender::new(0),
        }
    }
}

impl SessionCounter {
    /// Counts a new session, unless `max` are open already.
    pub fn try_enter(&self, max: usize) -> Option<SessionPermit> {
        let mut entered = false;
        self.open.send_if_modified(|open| {
            entered = *open < max;
            if entered {
                *open += 1;
            }
            entered
        });
        entered.then(|| SessionPermit {
            open: self.open.clone(),
        })
    }

    /// Sessions open now.
    pub fn current(&self) -> usize {
        *self.open.borrow()
    }

    /// Resolves once no session is open.
    pub async fn idle(&self) {
        let mut open = self.open.subscribe();
        let _ = open.wait_for(|open| *open == 0).await;
    }
}

/// One open session; dropping it ends the count.
#[derive(Debug)]
pub struct SessionPermit {
    open: watch::Sender<usize>,
}

impl Drop for SessionPermit {
    fn drop(&mut self) {
        self.open.send_modify(|open| *open = open.saturating_sub(1));
    }
}
