//! The fake Exchange Online submission service (`smtp.office365.com:587`): the greeting with
//! its date and id, EHLO before and after STARTTLS (AUTH only after TLS), AUTH XOAUTH2 in
//! two-step and inline form, Exchange's exact refusals (EXCHANGE.md §2.4), the limit of three
//! concurrently submitting connections per mailbox, SendAs checks, `SIZE 157286400`,
//! PIPELINING and CHUNKING. Accepted messages land in the recipients' INBOX (and a copy in
//! the sender's Sent Items), where the fake IMAP and POP3 services serve them.

mod conn;
mod session;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::clock::{day_number, entra_timestamp, imap_datetime};
use crate::directory::Directory;

/// The message size Exchange Online advertises (150 MiB).
pub const MAX_MESSAGE_SIZE: usize = 157_286_400;
/// Concurrent submitting connections per mailbox (EXCHANGE.md §3).
pub const DEFAULT_SENDER_THREAD_LIMIT: usize = 3;

/// Extensions before STARTTLS: no AUTH.
pub const EHLO_BEFORE_TLS: [&str; 9] = [
    "SIZE 157286400",
    "PIPELINING",
    "DSN",
    "ENHANCEDSTATUSCODES",
    "STARTTLS",
    "8BITMIME",
    "BINARYMIME",
    "CHUNKING",
    "SMTPUTF8",
];
/// Extensions after STARTTLS: AUTH instead of STARTTLS.
pub const EHLO_AFTER_TLS: [&str; 9] = [
    "SIZE 157286400",
    "PIPELINING",
    "DSN",
    "ENHANCEDSTATUSCODES",
    "AUTH LOGIN XOAUTH2",
    "8BITMIME",
    "BINARYMIME",
    "CHUNKING",
    "SMTPUTF8",
];

pub const STARTTLS_READY: &str = "220 2.0.0 SMTP server ready";
pub const AUTH_CONTINUE: &str = "334 ";
pub const AUTH_OK: &str = "235 2.7.0 Authentication successful";
pub const UNRECOGNIZED_AUTH: &str = "504 5.7.4 Unrecognized authentication type";
pub const NOT_AUTHENTICATED: &str = "530 5.7.57 Client not authenticated to send mail";
pub const BASIC_AUTH_RETIRED: &str =
    "550 5.7.30 Basic authentication is not supported for Client Submission.";
pub const SENDER_OK: &str = "250 2.1.0 Sender OK";
pub const RECIPIENT_OK: &str = "250 2.1.5 Recipient OK";
pub const START_MAIL_INPUT: &str = "354 Start mail input; end with <CRLF>.<CRLF>";
pub const TOO_BIG: &str = "552 5.3.4 Message size exceeds fixed maximum message size";
pub const CLOSING: &str = "221 2.0.0 Service closing transmission channel";

/// A message the service accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submission {
    /// The mailbox the session authenticated as (XOAUTH2 `user=`, canonical spelling).
    pub mailbox: String,
    /// The envelope sender (`MAIL FROM`), without brackets.
    pub sender: String,
    pub recipients: Vec<String>,
    /// The message exactly as it will be stored (DATA dot-unstuffed, or BDAT chunks joined).
    pub message: Vec<u8>,
}

/// Service-wide test switches, in EXO terms.
#[derive(Debug, Clone)]
struct Switches {
    /// `Set-TransportConfig -SmtpClientAuthenticationDisabled $true`.
    tenant_auth_disabled: bool,
    /// Basic auth for client submission is retired (550 5.7.30) rather than just off.
    basic_auth_retired: bool,
    /// Reject a mechanism name that is not upper case (one integrator's report, [I]).
    strict_mechanism_case: bool,
    /// Answer a refused XOAUTH2 with a base64 JSON challenge first, as Gmail does.
    error_challenge: bool,
    sender_thread_limit: usize,
}

impl Default for Switches {
    fn default() -> Self {
        Switches {
            tenant_auth_disabled: false,
            basic_auth_retired: false,
            strict_mechanism_case: false,
            error_challenge: false,
            sender_thread_limit: DEFAULT_SENDER_THREAD_LIMIT,
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    switches: Mutex<Switches>,
    /// Authenticated sessions holding a submission slot, per mailbox (lower case).
    submitters: Mutex<HashMap<String, usize>>,
    /// `Add-RecipientPermission -AccessRights SendAs`: mailbox → senders it may use.
    send_as: Mutex<HashMap<String, HashSet<String>>>,
    submissions: Mutex<Vec<Submission>>,
}

/// The submission service's switches and records; cheap to clone. Per-mailbox SMTP AUTH
/// (`Set-CASMailbox -SmtpClientAuthenticationDisabled`) is the [`Directory`]'s protocol
/// switch for SMTP.
#[derive(Debug, Clone, Default)]
pub struct SmtpSwitches {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn key(address: &str) -> String {
    address.trim().to_ascii_lowercase()
}

impl SmtpSwitches {
    /// SMTP AUTH off for the whole tenant: `535 5.7.139 … disabled for the Tenant. …`.
    pub fn set_tenant_auth_disabled(&self, on: bool) {
        lock(&self.inner.switches).tenant_auth_disabled = on;
    }

    /// Basic auth (AUTH LOGIN with a password) gets `550 5.7.30 …` instead of
    /// `535 5.7.139 … basic authentication is disabled.`
    pub fn set_basic_auth_retired(&self, on: bool) {
        lock(&self.inner.switches).basic_auth_retired = on;
    }

    /// Refuse `auth xoauth2` in lower case.
    pub fn set_strict_mechanism_case(&self, on: bool) {
        lock(&self.inner.switches).strict_mechanism_case = on;
    }

    /// Gmail mode: a refused XOAUTH2 first gets `334 <base64 JSON>`, and the client must
    /// answer with an empty line before the final `535`.
    pub fn set_error_challenge(&self, on: bool) {
        lock(&self.inner.switches).error_challenge = on;
    }

    /// Concurrent submitting connections per mailbox before `432 4.3.2` (default 3).
    pub fn set_sender_thread_limit(&self, limit: usize) {
        lock(&self.inner.switches).sender_thread_limit = limit;
    }

    /// Lets `mailbox` send as `sender` (SendAs permission).
    pub fn grant_send_as(&self, mailbox: &str, sender: &str) {
        lock(&self.inner.send_as)
            .entry(key(mailbox))
            .or_default()
            .insert(key(sender));
    }

    /// Every message accepted so far, oldest first.
    pub fn submissions(&self) -> Vec<Submission> {
        lock(&self.inner.submissions).clone()
    }

    /// Authenticated connections of `mailbox` holding a submission slot now.
    pub fn submitters(&self, mailbox: &str) -> usize {
        lock(&self.inner.submitters)
            .get(&key(mailbox))
            .copied()
            .unwrap_or(0)
    }

    fn switches(&self) -> Switches {
        lock(&self.inner.switches).clone()
    }

    fn may_send_as(&self, mailbox: &str, sender: &str) -> bool {
        key(mailbox) == key(sender)
            || lock(&self.inner.send_as)
                .get(&key(mailbox))
                .is_some_and(|s| s.contains(&key(sender)))
    }

    /// A submission slot for `mailbox`, if fewer than the limit are taken.
    fn take_slot(&self, mailbox: &str) -> Option<SubmitterSlot> {
        let limit = self.switches().sender_thread_limit;
        let mut submitters = lock(&self.inner.submitters);
        let count = submitters.entry(key(mailbox)).or_insert(0);
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(SubmitterSlot {
            switches: self.clone(),
            mailbox: key(mailbox),
        })
    }

    fn record(&self, submission: Submission) {
        lock(&self.inner.submissions).push(submission);
    }
}

/// One of a mailbox's concurrent submission slots; freed on drop.
#[derive(Debug)]
struct SubmitterSlot {
    switches: SmtpSwitches,
    mailbox: String,
}

impl Drop for SubmitterSlot {
    fn drop(&mut self) {
        if let Some(count) = lock(&self.switches.inner.submitters).get_mut(&self.mailbox) {
            *count = count.saturating_sub(1);
        }
    }
}

/// Names and ids the service prints, derived from one backend host name such as
/// `AM3PR05CA0094.NAMPRD05.PROD.OUTLOOK.COM`.
#[derive(Debug, Clone)]
struct Names {
    /// `AM3PR05CA0094.outlook.office365.com`: greeting and EHLO.
    host: String,
    /// `am3pr05ca0094.namprd05.prod.outlook.com`: inside refusal brackets.
    bracket: String,
    /// `AM3PR05CA0094.NAMPRD05.PROD.OUTLOOK.COM`: `[Hostname=…]`.
    backend: String,
}

impl Names {
    fn new(backend: &str) -> Names {
        let short = backend.split('.').next().unwrap_or(backend);
        Names {
            host: format!("{short}.outlook.office365.com"),
            bracket: backend.to_ascii_lowercase(),
            backend: backend.to_string(),
        }
    }

    /// `[AM0PR06CA0126.eurprd06.prod.outlook.com 2024-02-14T14:50:26.590Z 08DC2D372B4C3DED]`.
    fn diagnostic(&self) -> String {
        format!(
            "[{} {} {}]",
            self.bracket,
            iso_timestamp(SystemTime::now()),
            hex_id()
        )
    }

    fn greeting(&self) -> String {
        format!(
            "220 {} Microsoft ESMTP MAIL Service ready at {} [{}]",
            self.host,
            rfc5322_date(SystemTime::now()),
            hex_id()
        )
    }

    fn bad_token(&self) -> String {
        format!(
            "535 5.7.3 Authentication unsuccessful {}",
            self.diagnostic()
        )
    }

    fn auth_disabled(&self, scope: &str) -> String {
        format!(
            "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the {scope}. Visit https://aka.ms/smtp_auth_disabled for more information. {}",
            self.diagnostic()
        )
    }

    fn basic_disabled(&self) -> String {
        format!(
            "535 5.7.139 Authentication unsuccessful, basic authentication is disabled. [{}]",
            self.backend
        )
    }

    fn unrecognized(&self) -> String {
        format!(
            "500 5.3.3 Unrecognized command 'unknown' {}",
            self.diagnostic()
        )
    }

    fn thread_limit(&self) -> String {
        format!(
            "432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded [Hostname={}]",
            self.backend
        )
    }

    fn send_as_denied(&self, mailbox: &str, sender: &str) -> String {
        format!(
            "554 5.2.252 SendAsDenied; {mailbox} not allowed to send as {sender}; STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied; Failed to process message due to a permanent exception with message [BeginDiagnosticData]Cannot submit message.[EndDiagnosticData] [Hostname={}]",
            self.backend
        )
    }

    fn queued(&self) -> String {
        format!(
            "250 2.0.0 OK <{}@{}> [Hostname={}]",
            hex_id(),
            self.bracket,
            self.backend
        )
    }
}

/// Exchange's 16-hex-digit session ids, e.g. `08DCE8B62813AB2B`.
fn hex_id() -> String {
    format!("{:016X}", rand::random::<u64>())
}

/// `Wed, 9 Nov 2022 10:09:41 +0000`, as in Exchange's greeting.
fn rfc5322_date(t: SystemTime) -> String {
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    // `17-Jul-1996 02:44:25 +0000` → `17 Jul 1996 02:44:25 +0000`, without the day's zero.
    let imap = imap_datetime(t).replacen('-', " ", 2);
    let imap = imap.strip_prefix('0').unwrap_or(&imap);
    let weekday = WEEKDAYS[day_number(t).rem_euclid(7) as usize];
    format!("{weekday}, {imap}")
}

/// `2024-02-14T14:50:26.590Z`.
fn iso_timestamp(t: SystemTime) -> String {
    let millis = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_millis())
        .unwrap_or(0);
    let base = entra_timestamp(t).replace(' ', "T");
    format!("{}.{millis:03}Z", base.trim_end_matches('Z'))
}

/// How TLS starts on a listener of the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TlsMode {
    /// Plain greeting, STARTTLS (Exchange Online's 587).
    StartTls,
    /// TLS from the first byte (465; Exchange Online does not offer it, other providers do).
    Implicit,
}

/// What every connection of the service shares.
struct Service {
    directory: Directory,
    switches: SmtpSwitches,
    names: Names,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

/// Most connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 4096;

/// Serves submission on `listener` until the calling task is aborted.
pub(crate) async fn serve(
    directory: Directory,
    switches: SmtpSwitches,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    backend_fqdn: String,
    mode: TlsMode,
) {
    let service = Arc::new(Service {
        directory,
        switches,
        names: Names::new(&backend_fqdn),
        acceptor: tokio_rustls::TlsAcceptor::from(tls),
    });
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut tasks = JoinSet::new();
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
        };
        let (tcp, peer): (TcpStream, SocketAddr) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, "fake SMTP accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let service = service.clone();
        tasks.spawn(async move {
            let _permit = permit;
            if let Err(e) = session::run(tcp, peer, mode, &service).await {
                tracing::debug!(%peer, error = %e, "fake SMTP session ended with an error");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn dates_and_diagnostics_look_like_exchanges() {
        // 2022-11-09 10:09:41 UTC was a Wednesday.
        let t = UNIX_EPOCH + Duration::from_millis(1_667_988_581_214);
        assert_eq!(rfc5322_date(t), "Wed, 9 Nov 2022 10:09:41 +0000");
        assert_eq!(iso_timestamp(t), "2022-11-09T10:09:41.214Z");
        let names = Names::new("AM3PR05CA0094.NAMPRD05.PROD.OUTLOOK.COM");
        let greeting = names.greeting();
        assert!(greeting.starts_with(
            "220 AM3PR05CA0094.outlook.office365.com Microsoft ESMTP MAIL Service ready at "
        ));
        assert!(
            greeting.ends_with(']') && greeting.len() > 100,
            "{greeting}"
        );
        let refusal = names.bad_token();
        assert!(
            refusal.starts_with(
                "535 5.7.3 Authentication unsuccessful [am3pr05ca0094.namprd05.prod.outlook.com 20"
            ),
            "{refusal}"
        );
        assert!(names
            .auth_disabled("Tenant")
            .starts_with("535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant. Visit https://aka.ms/smtp_auth_disabled for more information. ["));
        assert_eq!(
            names.thread_limit(),
            "432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded [Hostname=AM3PR05CA0094.NAMPRD05.PROD.OUTLOOK.COM]"
        );
    }

    #[test]
    fn submission_slots_and_send_as() {
        let s = SmtpSwitches::default();
        s.set_sender_thread_limit(2);
        let a = s.take_slot("A@x");
        let b = s.take_slot("a@x");
        assert!(a.is_some() && b.is_some());
        assert!(s.take_slot("a@x").is_none());
        assert_eq!(s.submitters("a@X"), 2);
        drop(a);
        assert!(s.take_slot("a@x").is_some());
        assert!(s.may_send_as("a@x", "A@X"));
        assert!(!s.may_send_as("a@x", "b@x"));
        s.grant_send_as("a@x", "B@x");
        assert!(s.may_send_as("A@x", "b@x"));
    }
}
