//! The fake Entra ID: app registrations (secret or certificate credentials), delegated
//! grants (refresh tokens with rotation and revocation; device code; authorization code with
//! PKCE), app-only grants, and switches that make it slow, down, throttled or failing with
//! any AADSTS error. Access tokens it issues are recorded in the shared [`Directory`], where
//! the protocol services look them up.

mod admin_consent;
mod assertion;
mod authorize;
mod device;
mod error;
mod form;
mod http;
#[cfg(test)]
mod onboarding_tests;
mod password;
mod token;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

pub use authorize::AuthorizeReply;
pub use device::DevicePoll;
pub use error::{AadError, InjectedError};
pub(crate) use http::serve;
pub use token::{TokenReply, APP_ROLES, DELEGATED_SCOPES};

use crate::directory::Directory;
use crate::ids;
use assertion::RegisteredCertificate;

/// An app registration.
#[derive(Debug, Clone, Default)]
struct App {
    /// Empty for a public client (no secret may be sent), or one that uses certificates.
    secret: String,
    /// Certificates uploaded for `client_assertion` authentication.
    certificates: Vec<RegisteredCertificate>,
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
#[derive(Debug, Clone)]
struct Switches {
    strict_rotation: bool,
    injected: Option<InjectedError>,
    unavailable: bool,
    delay: Duration,
    token_lifetime: Option<Duration>,
    token_padding: usize,
    /// Device code polling interval in seconds (Entra: 5).
    device_interval: u64,
    /// Device code lifetime (Entra: 15 minutes).
    device_lifetime: Duration,
    /// Answers the next device-code polls get before the grant's real state is looked at.
    device_script: VecDeque<DevicePoll>,
    /// Who is "signed in" to the fake's browser at /authorize.
    signed_in_user: Option<String>,
    /// An error /authorize redirects with instead of a code (e.g. `access_denied`).
    authorize_error: Option<String>,
    /// The administrator declines admin consent.
    admin_declines: bool,
}

impl Default for Switches {
    fn default() -> Self {
        Switches {
            strict_rotation: false,
            injected: None,
            unavailable: false,
            delay: Duration::ZERO,
            token_lifetime: None,
            token_padding: 0,
            device_interval: 5,
            device_lifetime: Duration::from_secs(900),
            device_script: VecDeque::new(),
            signed_in_user: None,
            authorize_error: None,
            admin_declines: false,
        }
    }
}

#[derive(Debug)]
struct State {
    tenant: String,
    directory: Directory,
    apps: Mutex<HashMap<String, App>>,
    refresh_tokens: Mutex<HashMap<String, RefreshGrant>>,
    switches: Mutex<Switches>,
    requests: AtomicUsize,
    device_codes: Mutex<HashMap<String, device::DeviceGrant>>,
    auth_codes: Mutex<HashMap<String, authorize::AuthCode>>,
    /// `client/jti` of every assertion accepted, so a replay is refused.
    seen_jtis: Mutex<HashSet<String>>,
    /// Entra passwords by lower-case UPN, for the resource-owner password grant.
    user_passwords: Mutex<HashMap<String, String>>,
    /// Users whose sign-in requires MFA (the password grant then fails with AADSTS50076).
    mfa_users: Mutex<HashSet<String>>,
    /// `claims` parameters received on /devicecode and /authorize, in order.
    claims_received: Mutex<Vec<String>>,
    /// Client ids an administrator granted admin consent to.
    admin_consents: Mutex<HashSet<String>>,
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
                device_codes: Mutex::new(HashMap::new()),
                auth_codes: Mutex::new(HashMap::new()),
                seen_jtis: Mutex::new(HashSet::new()),
                user_passwords: Mutex::new(HashMap::new()),
                mfa_users: Mutex::new(HashSet::new()),
                claims_received: Mutex::new(Vec::new()),
                admin_consents: Mutex::new(HashSet::new()),
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
                certificates: Vec::new(),
            },
        );
    }

    /// Uploads a certificate (PEM) to an app registration, registering the app as a
    /// confidential client without a secret if it is new. Returns false if `pem` holds no
    /// certificate.
    pub fn register_app_certificate(&self, client_id: &str, certificate_pem: &str) -> bool {
        let Some(certificate) = RegisteredCertificate::from_pem(certificate_pem) else {
            return false;
        };
        lock(&self.state.apps)
            .entry(client_id.to_string())
            .or_default()
            .certificates
            .push(certificate);
        true
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

    /// Who is signed in to the fake browser: `/authorize` issues codes for this user.
    pub fn set_signed_in_user(&self, upn: Option<&str>) {
        lock(&self.state.switches).signed_in_user = upn.map(str::to_owned);
    }

    /// Makes `/authorize` redirect with this `error` (e.g. `access_denied`) instead of a code.
    pub fn set_authorize_error(&self, error: Option<&str>) {
        lock(&self.state.switches).authorize_error = error.map(str::to_owned);
    }

    /// Device code polling interval (seconds) and lifetime for codes issued from now on.
    pub fn set_device_code_timing(&self, interval_secs: u64, lifetime: Duration) {
        let mut switches = lock(&self.state.switches);
        switches.device_interval = interval_secs;
        switches.device_lifetime = lifetime;
    }

    /// The next device-code polls get these answers, in order, whatever the user did.
    pub fn script_device_polls(&self, answers: Vec<DevicePoll>) {
        lock(&self.state.switches).device_script = answers.into();
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

    /// Every `claims` parameter a sign-in brought to /devicecode or /authorize, in order: a
    /// client passing on a claims challenge (EXCHANGE.md §4.8) shows up here.
    pub fn claims_received(&self) -> Vec<String> {
        lock(&self.state.claims_received).clone()
    }

    fn note_claims(&self, form: &HashMap<String, String>) {
        if let Some(claims) = form.get("claims").filter(|c| !c.is_empty()) {
            lock(&self.state.claims_received).push(claims.clone());
        }
    }

    fn switches(&self) -> Switches {
        lock(&self.state.switches).clone()
    }
}
