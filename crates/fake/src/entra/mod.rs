//! The fake Entra ID token endpoint: app registrations, delegated grants (refresh tokens
//! with rotation and revocation), app-only grants, and switches that make it slow, down,
//! throttled or failing with any AADSTS error. Access tokens it issues are recorded in the
//! shared [`Directory`], where the protocol services look them up.

mod error;
mod form;
mod http;
mod token;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

pub use error::{AadError, InjectedError};
pub(crate) use http::serve;
pub use token::{TokenReply, APP_ROLES, DELEGATED_SCOPES};

use crate::directory::Directory;
use crate::ids;

/// An app registration.
#[derive(Debug, Clone)]
struct App {
    /// Empty for a public client (no secret may be sent).
    secret: String,
}

/// A delegated grant behind one refresh token.
#[derive(Debug, Clone)]
struct RefreshGrant {
    client_id: String,
    upn: String,
    /// A newer refresh token was issued from this one.
    superseded: bool,
    /// The user's sessions were revoked.
    revoked: bool,
}

/// Test switches; see the setters on [`FakeEntra`].
#[derive(Debug, Clone, Default)]
struct Switches {
    strict_rotation: bool,
    injected: Option<InjectedError>,
    unavailable: bool,
    delay: Duration,
    token_lifetime: Option<Duration>,
    token_padding: usize,
}

#[derive(Debug)]
struct State {
    tenant: String,
    directory: Directory,
    apps: Mutex<HashMap<String, App>>,
    refresh_tokens: Mutex<HashMap<String, RefreshGrant>>,
    switches: Mutex<Switches>,
    requests: AtomicUsize,
}

/// Control handle of the fake token endpoint; cheap to clone.
#[derive(Debug, Clone)]
pub struct FakeEntra {
    state: Arc<State>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl FakeEntra {
    /// A token endpoint for `tenant` that records tokens in `directory`.
    pub fn new(tenant: &str, directory: Directory) -> FakeEntra {
        FakeEntra {
            state: Arc::new(State {
                tenant: tenant.to_string(),
                directory,
                apps: Mutex::new(HashMap::new()),
                refresh_tokens: Mutex::new(HashMap::new()),
                switches: Mutex::new(Switches::default()),
                requests: AtomicUsize::new(0),
            }),
        }
    }

    pub fn tenant(&self) -> &str {
        &self.state.tenant
    }

    /// Registers an app; an empty `client_secret` makes it a public client.
    pub fn register_app(&self, client_id: &str, client_secret: &str) {
        lock(&self.state.apps).insert(
            client_id.to_string(),
            App {
                secret: client_secret.to_string(),
            },
        );
    }

    /// Gives the app's service principal FullAccess on `mailbox`, so its app-only tokens
    /// open it.
    pub fn grant_app_access(&self, client_id: &str, mailbox: &str) {
        self.state.directory.grant_app_access(client_id, mailbox);
    }

    /// Creates a delegated grant for `upn` (as if the user had consented) and returns its
    /// refresh token.
    pub fn issue_refresh_token(&self, client_id: &str, upn: &str) -> String {
        self.new_refresh_token(client_id, upn)
    }

    fn new_refresh_token(&self, client_id: &str, upn: &str) -> String {
        let rt = format!("1.AX{}", ids::url_safe(300));
        lock(&self.state.refresh_tokens).insert(
            rt.clone(),
            RefreshGrant {
                client_id: client_id.to_string(),
                upn: upn.to_string(),
                superseded: false,
                revoked: false,
            },
        );
        rt
    }

    /// Every refresh and access token issued so far, for tests that prove no secret leaked.
    pub fn issued_secrets(&self) -> Vec<String> {
        let mut secrets: Vec<String> = lock(&self.state.refresh_tokens).keys().cloned().collect();
        secrets.extend(self.state.directory.issued_tokens());
        secrets
    }

    /// Revokes every refresh token of `upn` (admin "revoke sessions", password reset):
    /// later use gets `invalid_grant` AADSTS50173.
    pub fn revoke_refresh_tokens(&self, upn: &str) {
        for grant in lock(&self.state.refresh_tokens).values_mut() {
            if grant.upn.eq_ignore_ascii_case(upn) {
                grant.revoked = true;
            }
        }
    }

    /// When on, a refresh token that was already used (superseded by rotation) gets
    /// `invalid_grant` AADSTS70008.
    pub fn set_strict_rotation(&self, on: bool) {
        lock(&self.state.switches).strict_rotation = on;
    }

    /// Every token request gets this error until it is cleared with `None`.
    pub fn inject_error(&self, e: Option<InjectedError>) {
        lock(&self.state.switches).injected = e;
    }

    /// When on, every token request gets HTTP 503 `temporarily_unavailable`.
    pub fn set_unavailable(&self, on: bool) {
        lock(&self.state.switches).unavailable = on;
    }

    /// How long the endpoint waits before answering.
    pub fn set_delay(&self, d: Duration) {
        lock(&self.state.switches).delay = d;
    }

    /// A fixed access-token lifetime, or `None` for Entra's random 3600–5400 s.
    pub fn set_token_lifetime(&self, d: Option<Duration>) {
        lock(&self.state.switches).token_lifetime = d;
    }

    /// Makes access tokens at least `bytes` long (EXO tokens have grown past 4 KiB).
    pub fn set_token_padding(&self, bytes: usize) {
        lock(&self.state.switches).token_padding = bytes;
    }

    /// POSTs to the token endpoint so far, failed ones included.
    pub fn token_requests(&self) -> usize {
        self.state.requests.load(Ordering::Relaxed)
    }

    /// Marks every access token issued so far as expired.
    pub fn expire_access_tokens(&self) {
        self.state.directory.expire_tokens();
    }

    fn switches(&self) -> Switches {
        lock(&self.state.switches).clone()
    }
}
