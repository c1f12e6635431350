//! The shared state of the fake tenant: mailboxes and their messages, the per-mailbox
//! protocol switches, the table of access tokens the fake Entra issued, and a log of every
//! XOAUTH2 attempt. Protocol services and the token endpoint all hold a clone of one
//! [`Directory`]; tests hold another to deliver mail and flip switches.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use bytes::Bytes;
use dashmap::DashMap;
use oxbridge_wire::Protocol;
use tokio::sync::watch;

use crate::mailbox::{Flags, Folder, Mailbox, StoreError};

/// Exchange Online's commonly quoted limit of concurrent IMAP connections per mailbox.
pub const DEFAULT_CONNECTION_CAP: usize = 20;

/// What the fake Entra recorded about an access token it issued; the protocol side looks
/// tokens up here, since real EXO tokens are opaque to clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// The user's UPN (delegated) or the app's client id (app-only).
    pub subject: String,
    pub client_id: String,
    /// Issued by the client-credentials grant: carries `roles`, not `scp`.
    pub app_only: bool,
    /// `aud`, e.g. `https://outlook.office.com`.
    pub audience: String,
    /// `scp` (delegated) or `roles` (app-only), without the resource prefix.
    pub scopes: Vec<String>,
    pub expires_at: SystemTime,
}

impl IssuedToken {
    pub fn is_expired(&self, now: SystemTime) -> bool {
        now >= self.expires_at
    }
}

/// One XOAUTH2 attempt as a protocol service saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XoauthLogin {
    /// `"imap"`, `"pop3"` or `"smtp"`.
    pub protocol: &'static str,
    /// The `user=` value (empty if the blob could not be decoded).
    pub user: String,
    /// Whether the service answered success (also for "authenticated but not connected").
    pub ok: bool,
    /// When the connection that carried it was accepted: a pooled connection was opened
    /// before the login it serves began.
    pub connected_at: std::time::Instant,
}

/// Per-mailbox switches that are not about the messages.
#[derive(Debug, Clone, Default)]
struct Switches {
    disabled: HashSet<Protocol>,
    not_connected: bool,
    /// Client ids of apps holding FullAccess on this mailbox.
    app_access: HashSet<String>,
    /// Users (lower-case UPNs) holding FullAccess on this mailbox: their delegated tokens
    /// open it with `user=` set to this mailbox (a shared mailbox).
    delegates: HashSet<String>,
}

#[derive(Debug)]
struct Entry {
    mailbox: Mailbox,
    switches: Switches,
}

#[derive(Debug)]
struct Inner {
    mailboxes: Mutex<HashMap<String, Entry>>,
    tokens: DashMap<String, IssuedToken>,
    logins: Mutex<Vec<XoauthLogin>>,
    sessions: DashMap<(Protocol, String), usize>,
    /// IMAP TLS handshakes: full, and resumed from an earlier session's ticket.
    imap_handshakes: [AtomicUsize; 2],
    connection_cap: AtomicUsize,
    /// Bumped on every change to any message store, so IDLE can wake up.
    changes: watch::Sender<u64>,
}

/// The fake tenant's shared state; cheap to clone.
#[derive(Debug, Clone)]
pub struct Directory {
    inner: Arc<Inner>,
}

impl Default for Directory {
    fn default() -> Self {
        Directory::new()
    }
}

/// Addresses compare case-insensitively.
fn key(address: &str) -> String {
    address.trim().to_ascii_lowercase()
}

impl Directory {
    pub fn new() -> Directory {
        Directory {
            inner: Arc::new(Inner {
                mailboxes: Mutex::new(HashMap::new()),
                tokens: DashMap::new(),
                logins: Mutex::new(Vec::new()),
                sessions: DashMap::new(),
                imap_handshakes: [AtomicUsize::new(0), AtomicUsize::new(0)],
                connection_cap: AtomicUsize::new(DEFAULT_CONNECTION_CAP),
                changes: watch::Sender::new(0),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.inner
            .mailboxes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn changed(&self) {
        self.inner.changes.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// A receiver that sees a new value whenever any message store changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    // ----- mailboxes and messages -----

    /// Creates a mailbox with INBOX, Sent Items, Drafts and Deleted Items (no-op if present).
    pub fn add_mailbox(&self, address: &str) {
        self.lock().entry(key(address)).or_insert_with(|| Entry {
            mailbox: Mailbox::new(address.trim()),
            switches: Switches::default(),
        });
    }

    pub fn has_mailbox(&self, address: &str) -> bool {
        self.lock().contains_key(&key(address))
    }

    /// The mailbox's primary address as it was added (canonical spelling).
    pub fn canonical_address(&self, address: &str) -> Option<String> {
        self.lock()
            .get(&key(address))
            .map(|e| e.mailbox.address.clone())
    }

    /// Appends a message to `folder` and returns its UID. The mailbox and the folder are
    /// created if missing, so tests can deliver without ceremony.
    pub fn deliver(&self, address: &str, folder: &str, raw: &[u8]) -> u32 {
        self.add_mailbox(address);
        let uid = {
            let mut map = self.lock();
            let Some(entry) = map.get_mut(&key(address)) else {
                return 0;
            };
            entry.mailbox.folder_or_create(folder).append(
                Bytes::copy_from_slice(raw),
                Flags::default(),
                SystemTime::now(),
            )
        };
        self.changed();
        uid
    }

    /// Appends with flags and date to an existing folder (IMAP APPEND); returns
    /// `(uid_validity, uid)`.
    pub fn append(
        &self,
        address: &str,
        folder: &str,
        raw: Bytes,
        flags: Flags,
        internal_date: SystemTime,
    ) -> Result<(u32, u32), StoreError> {
        let result = self.with_folder(address, folder, |f| {
            (f.uid_validity, f.append(raw, flags, internal_date))
        });
        if result.is_ok() {
            self.changed();
        }
        result
    }

    /// Raw bytes of the messages currently in `folder` (expunged ones excluded).
    pub fn messages(&self, address: &str, folder: &str) -> Vec<Vec<u8>> {
        self.folder(address, folder)
            .map(|f| f.messages.iter().map(|m| m.raw.to_vec()).collect())
            .unwrap_or_default()
    }

    /// A copy of a folder (messages share their bytes, so this is cheap).
    pub fn folder(&self, address: &str, folder: &str) -> Option<Folder> {
        self.lock()
            .get(&key(address))
            .and_then(|e| e.mailbox.folder(folder).cloned())
    }

    /// Copies of every folder of the mailbox, in name order.
    pub fn folders(&self, address: &str) -> Vec<Folder> {
        self.lock()
            .get(&key(address))
            .map(|e| e.mailbox.folders().cloned().collect())
            .unwrap_or_default()
    }

    /// Runs `f` on a folder under the lock. Callers that modify messages must say so with
    /// [`Directory::modify_folder`] so that IDLE sessions wake up.
    fn with_folder<T>(
        &self,
        address: &str,
        folder: &str,
        f: impl FnOnce(&mut Folder) -> T,
    ) -> Result<T, StoreError> {
        let mut map = self.lock();
        let entry = map.get_mut(&key(address)).ok_or(StoreError::NoMailbox)?;
        let folder = entry
            .mailbox
            .folder_mut(folder)
            .ok_or(StoreError::NoFolder)?;
        Ok(f(folder))
    }

    /// Runs `f` on a folder under the lock and notifies watchers afterwards.
    pub fn modify_folder<T>(
        &self,
        address: &str,
        folder: &str,
        f: impl FnOnce(&mut Folder) -> T,
    ) -> Result<T, StoreError> {
        let result = self.with_folder(address, folder, f);
        if result.is_ok() {
            self.changed();
        }
        result
    }

    /// Copies the messages with `uids` from one folder to another, keeping flags and dates;
    /// returns the destination's UID validity and `(source uid, new uid)` pairs.
    pub fn copy_messages(
        &self,
        address: &str,
        from: &str,
        uids: &[u32],
        to: &str,
    ) -> Result<(u32, Vec<(u32, u32)>), StoreError> {
        let mut map = self.lock();
        let entry = map.get_mut(&key(address)).ok_or(StoreError::NoMailbox)?;
        let source = entry.mailbox.folder(from).ok_or(StoreError::NoFolder)?;
        let picked: Vec<_> = source
            .messages
            .iter()
            .filter(|m| uids.contains(&m.uid))
            .cloned()
            .collect();
        let target = entry.mailbox.folder_mut(to).ok_or(StoreError::NoFolder)?;
        let pairs = picked
            .into_iter()
            .map(|m| (m.uid, target.append(m.raw, m.flags, m.internal_date)))
            .collect();
        let validity = target.uid_validity;
        drop(map);
        self.changed();
        Ok((validity, pairs))
    }

    pub fn create_folder(&self, address: &str, folder: &str) -> Result<(), StoreError> {
        let mut map = self.lock();
        let entry = map.get_mut(&key(address)).ok_or(StoreError::NoMailbox)?;
        entry.mailbox.create_folder(folder)
    }

    pub fn delete_folder(&self, address: &str, folder: &str) -> Result<(), StoreError> {
        let result = {
            let mut map = self.lock();
            let entry = map.get_mut(&key(address)).ok_or(StoreError::NoMailbox)?;
            entry.mailbox.delete_folder(folder)
        };
        self.changed();
        result
    }

    // ----- switches -----

    fn with_switches(&self, address: &str, f: impl FnOnce(&mut Switches)) {
        if let Some(entry) = self.lock().get_mut(&key(address)) {
            f(&mut entry.switches);
        }
    }

    /// "Authenticated but not connected" for every session of this mailbox.
    pub fn set_not_connected(&self, address: &str, on: bool) {
        self.with_switches(address, |s| s.not_connected = on);
    }

    pub fn is_not_connected(&self, address: &str) -> bool {
        self.lock()
            .get(&key(address))
            .is_some_and(|e| e.switches.not_connected)
    }

    /// `Set-CASMailbox -ImapEnabled`: when off, XOAUTH2 fails with `NO AUTHENTICATE failed.`
    pub fn set_imap_enabled(&self, address: &str, on: bool) {
        self.set_protocol_enabled(address, Protocol::Imap, on);
    }

    /// The per-protocol switch behind [`Directory::set_imap_enabled`], for POP3 and SMTP too.
    pub fn set_protocol_enabled(&self, address: &str, protocol: Protocol, on: bool) {
        self.with_switches(address, |s| {
            if on {
                s.disabled.remove(&protocol);
            } else {
                s.disabled.insert(protocol);
            }
        });
    }

    pub fn protocol_enabled(&self, address: &str, protocol: Protocol) -> bool {
        self.lock()
            .get(&key(address))
            .is_some_and(|e| !e.switches.disabled.contains(&protocol))
    }

    /// `Add-MailboxPermission -AccessRights FullAccess` for an app's service principal.
    pub fn grant_app_access(&self, client_id: &str, address: &str) {
        self.with_switches(address, |s| {
            s.app_access.insert(client_id.to_string());
        });
    }

    /// `Add-MailboxPermission -User <delegate> -AccessRights FullAccess`: the delegate's own
    /// token opens this (shared) mailbox when `user=` names it (EXCHANGE.md §2.1).
    pub fn grant_delegate_access(&self, delegate: &str, address: &str) {
        self.with_switches(address, |s| {
            s.delegates.insert(key(delegate));
        });
    }

    pub fn delegate_has_access(&self, delegate: &str, address: &str) -> bool {
        self.lock()
            .get(&key(address))
            .is_some_and(|e| e.switches.delegates.contains(&key(delegate)))
    }

    pub fn app_has_access(&self, client_id: &str, address: &str) -> bool {
        self.lock()
            .get(&key(address))
            .is_some_and(|e| e.switches.app_access.contains(client_id))
    }

    /// Concurrent connections per mailbox and protocol before new ones are "authenticated
    /// but not connected" (default 20).
    pub fn set_connection_cap(&self, cap: usize) {
        self.inner.connection_cap.store(cap, Ordering::Relaxed);
    }

    // ----- sessions -----

    /// Registers a connected session for the mailbox unless the mailbox is switched to
    /// "not connected" or already at the connection cap. The count drops with the guard.
    pub fn open_session(&self, protocol: Protocol, address: &str) -> Option<SessionGuard> {
        if self.is_not_connected(address) {
            return None;
        }
        let cap = self.inner.connection_cap.load(Ordering::Relaxed);
        let slot = (protocol, key(address));
        let mut count = self.inner.sessions.entry(slot.clone()).or_insert(0);
        if *count >= cap {
            return None;
        }
        *count += 1;
        drop(count);
        Some(SessionGuard {
            directory: self.clone(),
            slot,
        })
    }

    pub fn active_sessions(&self, protocol: Protocol, address: &str) -> usize {
        self.inner
            .sessions
            .get(&(protocol, key(address)))
            .map_or(0, |c| *c)
    }

    pub fn active_imap_sessions(&self, address: &str) -> usize {
        self.active_sessions(Protocol::Imap, address)
    }

    // ----- tokens -----

    /// Records an access token the fake Entra issued.
    /// Every access token issued so far.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.inner.tokens.iter().map(|t| t.key().clone()).collect()
    }

    pub fn record_token(&self, token: &str, issued: IssuedToken) {
        self.inner.tokens.insert(token.to_string(), issued);
    }

    pub fn token(&self, token: &str) -> Option<IssuedToken> {
        self.inner.tokens.get(token).map(|t| t.clone())
    }

    /// Marks every issued access token expired now.
    pub fn expire_tokens(&self) {
        let now = SystemTime::now();
        for mut t in self.inner.tokens.iter_mut() {
            t.expires_at = now;
        }
        // Wake IDLE sessions so they notice.
        self.changed();
    }

    // ----- login log -----

    pub fn record_login(&self, login: XoauthLogin) {
        self.inner
            .logins
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(login);
    }

    /// Counts an IMAP TLS handshake, resumed (from a session ticket) or full.
    pub fn record_imap_handshake(&self, resumed: bool) {
        self.inner.imap_handshakes[usize::from(resumed)].fetch_add(1, Ordering::Relaxed);
    }

    /// IMAP TLS handshakes so far: `(full, resumed)`.
    pub fn imap_handshakes(&self) -> (usize, usize) {
        let [full, resumed] = &self.inner.imap_handshakes;
        (
            full.load(Ordering::Relaxed),
            resumed.load(Ordering::Relaxed),
        )
    }

    /// Every XOAUTH2 attempt seen so far, oldest first.
    pub fn xoauth_logins(&self) -> Vec<XoauthLogin> {
        self.inner
            .logins
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// A connected protocol session; dropping it frees its slot under the connection cap.
#[derive(Debug)]
pub struct SessionGuard {
    directory: Directory,
    slot: (Protocol, String),
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        if let Some(mut count) = self.directory.inner.sessions.get_mut(&self.slot) {
            *count = count.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliver_and_read_back_byte_exact() {
        let d = Directory::new();
        d.add_mailbox("Alice@Contoso.com");
        let raw = b"Subject: hi\r\n\r\nbody\xff\r\n";
        assert_eq!(d.deliver("alice@contoso.com", "INBOX", raw), 1);
        assert_eq!(d.deliver("alice@contoso.com", "inbox", b"x"), 2);
        assert_eq!(d.messages("ALICE@contoso.com", "INBOX")[0], raw.to_vec());
        assert_eq!(
            d.canonical_address("alice@CONTOSO.com").as_deref(),
            Some("Alice@Contoso.com")
        );
        assert!(d.messages("nobody@x", "INBOX").is_empty());
    }

    #[test]
    fn connection_cap_and_not_connected_switch() {
        let d = Directory::new();
        d.add_mailbox("a@x");
        d.set_connection_cap(2);
        let g1 = d.open_session(Protocol::Imap, "a@x");
        let g2 = d.open_session(Protocol::Imap, "A@x");
        assert!(g1.is_some() && g2.is_some());
        assert!(d.open_session(Protocol::Imap, "a@x").is_none());
        assert!(d.open_session(Protocol::Pop3, "a@x").is_some());
        assert_eq!(d.active_imap_sessions("a@x"), 2);
        drop(g1);
        assert_eq!(d.active_imap_sessions("a@x"), 1);
        d.set_not_connected("a@x", true);
        assert!(d.open_session(Protocol::Imap, "a@x").is_none());
    }

    #[test]
    fn protocol_switches_and_app_access() {
        let d = Directory::new();
        d.add_mailbox("a@x");
        assert!(d.protocol_enabled("a@x", Protocol::Imap));
        d.set_imap_enabled("a@x", false);
        assert!(!d.protocol_enabled("a@x", Protocol::Imap));
        assert!(!d.protocol_enabled("nobody@x", Protocol::Imap));
        d.grant_app_access("app", "A@X");
        assert!(d.app_has_access("app", "a@x"));
        assert!(!d.app_has_access("other", "a@x"));
    }

    #[test]
    fn expiring_tokens() {
        let d = Directory::new();
        let later = SystemTime::now() + std::time::Duration::from_secs(60);
        d.record_token(
            "t",
            IssuedToken {
                subject: "a@x".into(),
                client_id: "c".into(),
                app_only: false,
                audience: "https://outlook.office.com".into(),
                scopes: vec![],
                expires_at: later,
            },
        );
        assert!(!d.token("t").unwrap().is_expired(SystemTime::now()));
        d.expire_tokens();
        assert!(d.token("t").unwrap().is_expired(SystemTime::now()));
    }
}
