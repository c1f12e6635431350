//! The fake Exchange Online POP3 service (implicit TLS, like `outlook.office365.com:995`):
//! the greeting, the bare `+OK` CAPA, the two-step XOAUTH2 and the failure text of
//! EXCHANGE.md §2.3, then the TRANSACTION state (STAT, LIST, UIDL, RETR, TOP, DELE, RSET,
//! NOOP, QUIT) over the same INBOX the fake IMAP service serves, deletions applied at QUIT.
//!
//! Strings EXCHANGE.md does not record (per-command replies after login, the wrong-state
//! and cancel texts) follow RFC 1939 and Exchange's wording elsewhere; they are marked [I].

pub mod command;
mod maildrop;
mod session;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::directory::Directory;
use crate::service::accept_tls;

pub use maildrop::Maildrop;

/// CAPA before and after login: a bare `+OK`, then EXO's list (EXCHANGE.md §2.3; the
/// post-login list is assumed to be the same [I]).
pub const CAPA: &str = "+OK\r\nTOP\r\nUIDL\r\nSASL PLAIN XOAUTH2\r\nUSER\r\n.\r\n";
/// The one answer to every failed login: bad token, wrong audience, missing permission,
/// POP disabled for the mailbox, and passwords (Basic authentication is off).
pub const AUTH_FAILED: &str = "-ERR Authentication failure: unknown user name or bad password.\r\n";
/// The answer to a successful XOAUTH2 login.
pub const AUTH_OK: &str = "+OK User successfully authenticated.\r\n";
/// A command in the wrong state, e.g. STLS on the TLS port (EXCHANGE.md §1.1).
pub const WRONG_STATE: &str = "-ERR Command is not valid in this state.\r\n";
/// The answer to QUIT [I: by analogy with the IMAP4 LOGOUT text].
pub const SIGN_OFF: &str = "+OK Microsoft Exchange Server POP3 server signing off.\r\n";

/// `+OK The Microsoft Exchange POP3 service is ready. [<b64 UTF-16LE backend>]`.
pub fn greeting(backend_fqdn: &str) -> String {
    format!(
        "+OK The Microsoft Exchange POP3 service is ready. [{}]\r\n",
        crate::imap::utf16le_base64(backend_fqdn)
    )
}

/// Switches of the POP3 service that are not about a mailbox; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Pop3Switches {
    inner: Arc<SwitchState>,
}

#[derive(Debug, Default)]
struct SwitchState {
    reject_inline: AtomicBool,
    inline_attempts: AtomicUsize,
}

impl Pop3Switches {
    /// When on, `AUTH XOAUTH2 <initial-response>` on one line fails with [`AUTH_FAILED`], as
    /// EXO was reported to do (`jakartaee/mail-api#461`); only the two-step form works.
    pub fn set_reject_inline(&self, on: bool) {
        self.inner.reject_inline.store(on, Ordering::Relaxed);
    }

    pub fn rejects_inline(&self) -> bool {
        self.inner.reject_inline.load(Ordering::Relaxed)
    }

    /// How many `AUTH XOAUTH2` commands carried an initial response, accepted or not.
    pub fn inline_attempts(&self) -> usize {
        self.inner.inline_attempts.load(Ordering::Relaxed)
    }

    fn record_inline_attempt(&self) {
        self.inner.inline_attempts.fetch_add(1, Ordering::Relaxed);
    }
}

/// Serves POP3 on `listener` until the calling task is aborted.
pub(crate) async fn serve(
    directory: Directory,
    switches: Pop3Switches,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    backend_fqdn: String,
) {
    let greeting: Arc<str> = greeting(&backend_fqdn).into();
    accept_tls(listener, tls, move |stream| {
        let session = session::Session::new(stream, directory.clone(), switches.clone());
        let greeting = greeting.clone();
        async move {
            if let Err(e) = session.run(&greeting).await {
                tracing::debug!(error = %e, "fake POP3 session ended with an error");
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pop3_greeting_carries_utf16le_backend_name() {
        assert_eq!(
            greeting("X"),
            "+OK The Microsoft Exchange POP3 service is ready. [WAA=]\r\n"
        );
    }

    #[test]
    fn pop3_switches_are_shared_between_clones() {
        let switches = Pop3Switches::default();
        let clone = switches.clone();
        clone.set_reject_inline(true);
        clone.record_inline_attempt();
        assert!(switches.rejects_inline());
        assert_eq!(switches.inline_attempts(), 1);
    }
}
