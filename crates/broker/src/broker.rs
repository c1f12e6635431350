//! The token broker: the one place that turns an [`Account`] into an access token.
//!
//! Every login goes through [`TokenBroker::access_token`]. It answers from the in-memory
//! cache while the token has more than the refresh margin left (Exchange ends IMAP sessions
//! at the token's expiry, so a connection must start with minutes to spare), makes concurrent
//! callers for one account share one request, persists rotated refresh tokens before using
//! the access token they came with, and remembers failures so that a burst of logins never
//! becomes a burst of token requests.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use dashmap::DashMap;
use oxbridge_store::{
    Account, AccountStatus, CredentialStore, GrantFailure, GrantKey, GrantKind, SharedToken,
    StoreError,
};
use oxbridge_wire::Secret;
use rand::Rng;
use tokio::time::Instant;

use crate::advice::{needs_sign_in, next_step};
use crate::app::{AppClient, AppRegistration, Issued};
use crate::backoff::Backoff;
use crate::cache::{CachedToken, Lookup, Slot};
use crate::error::{BrokerError, TokenError};
use crate::metrics::{Metrics, GRANT_CLIENT_CREDENTIALS, GRANT_PASSWORD, GRANT_REFRESH_TOKEN};
use crate::notify::{GrantObserver, ReconsentEvent};

/// Lifetime assumed when a token response has no `expires_in`: Entra always sends one, and
/// its tokens live at least an hour (EXCHANGE.md §3).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

/// Longest account status reason written to the store.
const MAX_REASON: usize = 200;

/// After Entra refused a password (password grant), further attempts for that account are
/// answered locally for this long, so oxbridge never relays a password-guessing run.
const WRONG_PASSWORD_HOLD_OFF: Duration = Duration::from_secs(5);

/// AADSTS codes with which the password grant says "wrong user name or password" (50126),
/// "no such user" (50034) or "password expired" (50055): bad credentials for the client,
/// not a dead grant.
const WRONG_PASSWORD_CODES: &[u32] = &[50126, 50034, 50055];

/// Why the password grant produced no token.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PasswordGrantError {
    /// Entra refused the user name or password (or it was refused moments ago).
    #[error("Entra refused the user name or password")]
    WrongPassword,
    /// Any other failure, classified as usual.
    #[error(transparent)]
    Token(#[from] TokenError),
}

/// Timing knobs of the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BrokerSettings {
    /// Refresh when less than this is left (EXCHANGE.md §3: about 5 minutes).
    pub refresh_margin: Duration,
    /// Whole-request timeout for the token endpoint.
    pub request_timeout: Duration,
    /// First backoff after a transient failure; doubles per consecutive failure.
    pub backoff_initial: Duration,
    /// Upper bound of the backoff.
    pub backoff_max: Duration,
}

impl Default for BrokerSettings {
    fn default() -> Self {
        Self {
            refresh_margin: Duration::from_secs(5 * 60),
            request_timeout: Duration::from_secs(15),
            backoff_initial: Duration::from_secs(2),
            backoff_max: Duration::from_secs(5 * 60),
        }
    }
}

/// An access token ready for SASL XOAUTH2. `Debug` redacts the token.
#[derive(Debug, Clone)]
pub struct AccessToken {
    pub secret: Secret,
    pub expires_at: SystemTime,
    /// True if this call's own request fetched it, false if it came from the cache.
    pub fresh: bool,
}

impl AccessToken {
    fn from_cache(token: CachedToken, fresh: bool) -> Self {
        Self {
            secret: token.secret,
            expires_at: token.expires_at,
            fresh,
        }
    }
}

/// Obtains, caches and refreshes access tokens for accounts. `Send + Sync`; share it in an
/// `Arc`.
pub struct TokenBroker {
    apps: HashMap<String, AppClient>,
    store: Arc<dyn CredentialStore>,
    settings: BrokerSettings,
    backoff: Backoff,
    slots: DashMap<i64, Arc<Slot>>,
    metrics: Metrics,
    observer: Option<Arc<dyn GrantObserver>>,
    /// Accounts whose password Entra refused recently, and until when to refuse locally.
    wrong_passwords: DashMap<i64, Instant>,
}

impl fmt::Debug for TokenBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut apps: Vec<&str> = self.apps.keys().map(String::as_str).collect();
        apps.sort_unstable();
        f.debug_struct("TokenBroker")
            .field("apps", &apps)
            .field("settings", &self.settings)
            .field("accounts", &self.slots.len())
            .finish_non_exhaustive()
    }
}

impl TokenBroker {
    /// Builds one HTTP + OAuth client per app registration and registers the metrics.
    /// Fails on a bad authority, tenant or client id, an unreadable CA file, a duplicate app
    /// name, or metrics already registered on `registry`.
    pub fn new(
        apps: Vec<AppRegistration>,
        store: Arc<dyn CredentialStore>,
        settings: BrokerSettings,
        registry: &prometheus::Registry,
    ) -> Result<TokenBroker, BrokerError> {
        let mut clients = HashMap::with_capacity(apps.len());
        for app in &apps {
            if clients.contains_key(&app.name) {
                return Err(BrokerError::DuplicateApp(app.name.clone()));
            }
            clients.insert(
                app.name.clone(),
                AppClient::new(app, settings.request_timeout)?,
            );
        }
        Ok(TokenBroker {
            apps: clients,
            store,
            settings,
            backoff: Backoff {
                initial: settings.backoff_initial,
                max: settings.backoff_max,
            },
            slots: DashMap::new(),
            metrics: Metrics::register(registry)?,
            observer: None,
            wrong_passwords: DashMap::new(),
        })
    }

    /// A token for a password-grant account whose `password` the store has just verified
    /// against the last password Entra accepted: from the cache, or from a password grant.
    pub async fn access_token_with_password(
        &self,
        account: &Account,
        password: &Secret,
    ) -> Result<AccessToken, PasswordGrantError> {
        self.password_grant(account, password, true).await
    }

    /// Checks `password` with Entra (always a request, never the cache): for a password-grant
    /// login whose password differs from the one last accepted (the user changed it in
    /// Entra). On success the token is cached and the caller updates the local verifier.
    pub async fn verify_password_grant(
        &self,
        account: &Account,
        password: &Secret,
    ) -> Result<AccessToken, PasswordGrantError> {
        self.password_grant(account, password, false).await
    }

    async fn password_grant(
        &self,
        account: &Account,
        password: &Secret,
        use_cache: bool,
    ) -> Result<AccessToken, PasswordGrantError> {
        if account.grant != GrantKind::Password {
            return Err(TokenError::Credential(format!(
                "account {:?} does not use the password grant",
                account.name
            ))
            .into());
        }
        let slot = self.slot(account.id);
        slot.forget_outdated_failure(
            account.refresh_token_updated_at,
            account.status == AccountStatus::Active,
        );
        if use_cache {
            if let Some(answer) = self.answer_from_cache(&slot) {
                return answer.map_err(Into::into);
            }
        }
        let _flight = slot.flight.lock().await;
        if use_cache {
            if let Some(answer) = self.answer_from_cache(&slot) {
                return answer.map_err(Into::into);
            }
        }
        // Only unverified passwords are damped: one that matches the password Entra last
        // accepted is not a guess.
        if !use_cache {
            if let Some(until) = self.wrong_passwords.get(&account.id).map(|u| *u) {
                if until > Instant::now() {
                    return Err(PasswordGrantError::WrongPassword);
                }
            }
        }
        match self.fetch_with(account, &slot, Some(password)).await {
            Err(TokenError::Provider { codes, .. })
                if codes.iter().any(|c| WRONG_PASSWORD_CODES.contains(c)) =>
            {
                self.wrong_passwords
                    .insert(account.id, Instant::now() + WRONG_PASSWORD_HOLD_OFF);
                Err(PasswordGrantError::WrongPassword)
            }
            Err(e) => Err(e.into()),
            Ok(token) => {
                self.wrong_passwords.remove(&account.id);
                Ok(token)
            }
        }
    }

    /// Reports each account's transition to needs-reconsent to `observer` (the notification
    /// hook), once per transition.
    pub fn with_observer(mut self, observer: Arc<dyn GrantObserver>) -> TokenBroker {
        self.observer = Some(observer);
        self
    }

    /// Requests a new token for `account` now, whatever the cache holds: used by the
    /// background refresh to keep idle delegated grants alive (each use of a refresh token
    /// extends its 90-day inactivity window). Shares the account's single flight with
    /// logins, and respects a failure still being held off.
    pub async fn refresh_grant(&self, account: &Account) -> Result<AccessToken, TokenError> {
        if account.password_sealed() {
            return Err(TokenError::Sealed);
        }
        let slot = self.slot(account.id);
        slot.forget_outdated_failure(
            account.refresh_token_updated_at,
            account.status == AccountStatus::Active,
        );
        let _flight = slot.flight.lock().await;
        if let Some(error) = slot.held_off(Instant::now()) {
            return Err(error);
        }
        self.fetch(account, &slot, true, None).await
    }

    /// Updates the grant-health gauges from a full account list (bounded labels: app only).
    pub fn observe_accounts(&self, accounts: &[Account], now_unix: i64) {
        self.metrics.observe_accounts(accounts, now_unix);
    }

    /// An access token for `account`: from the cache if it has more than the refresh margin
    /// left, otherwise from one token request shared by all concurrent callers.
    ///
    /// While a recent failure is held off, answers [`TokenError::BackingOff`] at once (or a
    /// cached token that has not expired yet) without contacting the endpoint.
    pub async fn access_token(&self, account: &Account) -> Result<AccessToken, TokenError> {
        self.token_for(account, None).await
    }

    /// [`TokenBroker::access_token`] for a login of a password-sealed account, with the
    /// password the store has just verified: most logins are answered from the cache as
    /// usual; only when a refresh is due does the flight leader (the one request for this
    /// account) open the grant with its login's password, and reseal the rotated token.
    /// Without a password, a sealed grant is served from the cache or not at all
    /// ([`TokenError::Sealed`]).
    pub async fn access_token_unsealing(
        &self,
        account: &Account,
        password: &Secret,
    ) -> Result<AccessToken, TokenError> {
        self.token_for(account, Some(password)).await
    }

    async fn token_for(
        &self,
        account: &Account,
        password: Option<&Secret>,
    ) -> Result<AccessToken, TokenError> {
        let slot = self.slot(account.id);
        slot.forget_outdated_failure(
            account.refresh_token_updated_at,
            account.status == AccountStatus::Active,
        );
        if self.store.is_shared() {
            self.forget_superseded(account.id, &slot).await;
        }
        if let Some(answer) = self.answer_from_cache(&slot) {
            return answer;
        }
        let _flight = slot.flight.lock().await;
        // Whoever held the lock before us may have fetched a token or hit a failure.
        if let Some(answer) = self.answer_from_cache(&slot) {
            return answer;
        }
        self.fetch(account, &slot, false, password).await
    }

    /// Drops the cached access token for an account (e.g. the upstream rejected it), so the
    /// next call requests a new one. A held-off failure stays in force.
    pub fn invalidate(&self, account_id: i64) {
        if let Some(slot) = self.slots.get(&account_id) {
            slot.drop_token();
        }
    }

    /// How many accounts currently have an unexpired access token cached.
    pub fn cached_accounts(&self) -> usize {
        let now = Instant::now();
        self.slots
            .iter()
            .filter(|entry| entry.value().has_token(now))
            .count()
    }

    /// The account's slot, created on first use. The `Arc` is cloned out so the map's shard
    /// lock is not held while waiting on the request.
    fn slot(&self, account_id: i64) -> Arc<Slot> {
        self.slots.entry(account_id).or_default().value().clone()
    }

    fn answer_from_cache(&self, slot: &Slot) -> Option<Result<AccessToken, TokenError>> {
        match slot.lookup(Instant::now(), self.settings.refresh_margin) {
            Lookup::Hit(token) => {
                self.metrics.cache_hit();
                Some(Ok(AccessToken::from_cache(token, false)))
            }
            Lookup::Blocked(error) => Some(Err(error)),
            Lookup::Miss => None,
        }
    }

    /// Performs the grant, persists a rotated refresh token, and caches the result; called
    /// with the account's flight lock held. `force` (background refresh) requests a new token
    /// even if the shared store holds a usable one, unless another replica stored it since.
    ///
    /// `password` is the login's, verified by the store: for a password-sealed grant it opens
    /// the grant key (see [`TokenBroker::grant_key`]).
    async fn fetch(
        &self,
        account: &Account,
        slot: &Slot,
        force: bool,
        password: Option<&Secret>,
    ) -> Result<AccessToken, TokenError> {
        if self.store.is_shared() && account.grant != GrantKind::Password {
            return self.fetch_shared(account, slot, force, password).await;
        }
        self.fetch_with(account, slot, password).await
    }

    /// The grant key of a password-sealed account, opened with the login's password; `None`
    /// for any other account. Failing to open it says nothing about the grant (no hold-off,
    /// no status change): the next login, with its own password, simply tries again.
    async fn grant_key(
        &self,
        account: &Account,
        password: Option<&Secret>,
    ) -> Result<Option<GrantKey>, TokenError> {
        if !account.password_sealed() {
            return Ok(None);
        }
        let password = password.ok_or(TokenError::Sealed)?;
        match self.store.open_grant_key(account.id, password).await {
            Ok(Some(key)) => Ok(Some(key)),
            Ok(None) | Err(StoreError::Sealed(_)) => {
                tracing::warn!(account = %account.name, "the login's password opens none of the account's key slots");
                Err(TokenError::Sealed)
            }
            Err(e) => Err(TokenError::Store(e.to_string())),
        }
    }

    /// Per-replica cache invalidation: a cached token from a shared store whose grant version
    /// has moved on (another replica refreshed, the grant was replaced or the account's
    /// status changed) is dropped; one indexed read per login. If the store cannot answer,
    /// the cached token keeps serving (a database outage must not break those logins).
    async fn forget_superseded(&self, account_id: i64, slot: &Slot) {
        let Some(cached) = slot.unexpired(Instant::now()).and_then(|t| t.version) else {
            return;
        };
        if let Ok(Some(stored)) = self.store.grant_version(account_id).await {
            if stored != cached {
                slot.forget_token();
            }
        }
    }

    /// The cross-replica single flight (shared store), under this process's flight lock:
    /// adopt a usable access token another replica stored; else take the account's lock in
    /// the store, re-check, and only then request a token with the newest stored refresh
    /// token, storing the outcome before releasing the lock. N replicas × M logins thus make
    /// one request, and no replica ever uses a refresh token older than the stored one.
    async fn fetch_shared(
        &self,
        account: &Account,
        slot: &Slot,
        force: bool,
        password: Option<&Secret>,
    ) -> Result<AccessToken, TokenError> {
        let known = slot.unexpired(Instant::now()).and_then(|t| t.version);
        let rejected = slot.rejected_version();
        let margin = i64::try_from(self.settings.refresh_margin.as_secs()).unwrap_or(i64::MAX);
        let usable = |token: &SharedToken| {
            Some(token.version) != rejected
                && !(force && Some(token.version) == known)
                && token.expires_at - unix(SystemTime::now()) > margin
        };
        if !force {
            match self.store.load_shared_token(account.id).await {
                Ok(Some(token)) if usable(&token) => return Ok(adopt(slot, token)),
                Ok(_) => {}
                Err(e) => return store_unavailable(account, slot, e),
            }
        }
        // Opened before the lock is taken: Argon2 must not hold a connection and the lock.
        let grant_key = self.grant_key(account, password).await?;
        let mut lock = match self.store.lock_refresh(account.id).await {
            Ok(lock) => lock,
            Err(e) => return store_unavailable(account, slot, e),
        };
        if let Some(token) = lock.shared_token().filter(|t| usable(t)) {
            drop(lock);
            return Ok(adopt(slot, token));
        }
        let refresh_token = match account.grant {
            GrantKind::RefreshToken => match lock.refresh_token(grant_key.as_ref()).await {
                Ok(Some(token)) if !token.is_empty() => Some(token),
                Ok(_) => {
                    drop(lock);
                    return self.failed(account, slot, TokenError::NoRefreshToken).await;
                }
                Err(e) => return store_unavailable(account, slot, e),
            },
            _ => None,
        };
        let started = Instant::now();
        let started_wall = SystemTime::now();
        let issued = match self.request(account, None, refresh_token, None).await {
            Ok(issued) => issued,
            Err(error @ TokenError::Store(_)) => return Err(error),
            Err(error) => {
                drop(lock);
                return self.failed(account, slot, error).await;
            }
        };
        let lifetime = issued.expires_in.unwrap_or(DEFAULT_LIFETIME);
        let rotated = issued
            .refresh_token
            .as_ref()
            .filter(|_| account.grant == GrantKind::RefreshToken);
        // Persist before use, as in `fetch_with`: the rotated refresh token and the access
        // token commit together; if that fails the stored refresh token is still valid.
        let version = match lock
            .commit(
                rotated,
                grant_key.as_ref(),
                &issued.access_token,
                unix(started_wall + lifetime),
            )
            .await
        {
            Ok(version) => version,
            Err(e) => {
                tracing::warn!(
                    account = %account.name,
                    app = %account.app,
                    error = %e,
                    "could not store the refreshed grant; access token discarded"
                );
                return Err(TokenError::Store(e.to_string()));
            }
        };
        self.record_health(account.id, Ok(unix(started_wall + lifetime)));
        let token = CachedToken {
            secret: issued.access_token,
            expires_at: started_wall + lifetime,
            valid_until: started + lifetime,
            version: Some(version),
        };
        slot.store(token.clone());
        tracing::debug!(
            account = %account.name,
            app = %account.app,
            expires_in = lifetime.as_secs(),
            version,
            "access token obtained and shared"
        );
        Ok(AccessToken::from_cache(token, true))
    }

    /// [`TokenBroker::fetch`] with the login password, for password-grant accounts.
    async fn fetch_with(
        &self,
        account: &Account,
        slot: &Slot,
        password: Option<&Secret>,
    ) -> Result<AccessToken, TokenError> {
        let grant_key = self.grant_key(account, password).await?;
        let started = Instant::now();
        let started_wall = SystemTime::now();
        let issued = match self
            .request(account, password, None, grant_key.as_ref())
            .await
        {
            Ok(issued) => issued,
            // The store failing says nothing about the grant or the endpoint: no hold-off,
            // the next login simply tries again.
            Err(error @ (TokenError::Store(_) | TokenError::Sealed)) => return Err(error),
            // A wrong password is the client's mistake, not the grant's: no hold-off or
            // status change here (the caller damps retries).
            Err(error @ TokenError::Provider { .. })
                if password.is_some() && is_wrong_password(&error) =>
            {
                return Err(error)
            }
            Err(error) => return self.failed(account, slot, error).await,
        };

        if let Some(rotated) = &issued.refresh_token {
            if account.grant == GrantKind::RefreshToken {
                // Persist before use: if this write fails the old refresh token is still
                // valid (Entra does not revoke it), so nothing is lost by not caching.
                if let Err(e) = self
                    .store
                    .replace_refresh_token(account.id, rotated, grant_key.as_ref())
                    .await
                {
                    tracing::warn!(
                        account = %account.name,
                        app = %account.app,
                        error = %e,
                        "could not persist rotated refresh token; access token discarded"
                    );
                    return Err(TokenError::Store(e.to_string()));
                }
            }
        }

        let lifetime = issued.expires_in.unwrap_or(DEFAULT_LIFETIME);
        self.record_health(account.id, Ok(unix(started_wall + lifetime)));
        let token = CachedToken {
            secret: issued.access_token,
            expires_at: started_wall + lifetime,
            valid_until: started + lifetime,
            version: None,
        };
        slot.store(token.clone());
        tracing::debug!(
            account = %account.name,
            app = %account.app,
            expires_in = lifetime.as_secs(),
            "access token obtained"
        );
        Ok(AccessToken::from_cache(token, true))
    }

    /// Looks up the app, reads the refresh token for delegated accounts (unless the caller
    /// read it under the store's refresh lock; a password-sealed one with its `grant_key`),
    /// and performs the grant, recording the request's outcome and latency.
    async fn request(
        &self,
        account: &Account,
        password: Option<&Secret>,
        locked_refresh_token: Option<Secret>,
        grant_key: Option<&GrantKey>,
    ) -> Result<Issued, TokenError> {
        let app = self
            .apps
            .get(&account.app)
            .ok_or_else(|| TokenError::UnknownApp(account.app.clone()))?;
        match account.grant {
            GrantKind::ClientCredentials => {
                self.timed(
                    &account.app,
                    GRANT_CLIENT_CREDENTIALS,
                    app.client_credentials(),
                )
                .await
            }
            GrantKind::Password => {
                if !app.allow_password_grant {
                    return Err(TokenError::Credential(format!(
                        "app {:?} does not allow the password grant (allow_password_grant)",
                        account.app
                    )));
                }
                let password = password.ok_or_else(|| {
                    TokenError::Credential(
                        "a password-grant account gets tokens only with a login password".into(),
                    )
                })?;
                self.timed(
                    &account.app,
                    GRANT_PASSWORD,
                    app.password(&account.mailbox, password),
                )
                .await
            }
            GrantKind::RefreshToken => {
                let refresh_token = match locked_refresh_token {
                    Some(token) => token,
                    None => self
                        .store
                        .refresh_token(account.id, grant_key)
                        .await
                        .map_err(|e| TokenError::Store(e.to_string()))?
                        .filter(|rt| !rt.is_empty())
                        .ok_or(TokenError::NoRefreshToken)?,
                };
                self.timed(
                    &account.app,
                    GRANT_REFRESH_TOKEN,
                    app.refresh(&refresh_token),
                )
                .await
            }
        }
    }

    /// Runs one token-endpoint request and records its outcome and latency.
    async fn timed(
        &self,
        app: &str,
        grant: &str,
        request: impl std::future::Future<Output = Result<Issued, TokenError>>,
    ) -> Result<Issued, TokenError> {
        let started = Instant::now();
        let result = request.await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.class().as_str(),
        };
        self.metrics
            .request(grant, outcome, started.elapsed().as_secs_f64());
        self.metrics.app_request(app, outcome);
        result
    }

    /// Writes the outcome of a token request to the store in the background: health is for
    /// operators, and a login must not wait on that write.
    fn record_health(&self, account_id: i64, outcome: Result<i64, GrantFailure>) {
        let store = self.store.clone();
        tokio::spawn(async move {
            let result = match &outcome {
                Ok(expires_at) => store.record_grant_success(account_id, *expires_at).await,
                Err(failure) => store.record_grant_failure(account_id, failure).await,
            };
            if let Err(e) = result {
                tracing::debug!(account_id, error = %e, "could not record grant health");
            }
        });
    }

    /// Handles a failed request: marks dead grants in the store, logs, starts the hold-off,
    /// and for temporary failures falls back to a cached token that has not expired.
    async fn failed(
        &self,
        account: &Account,
        slot: &Slot,
        error: TokenError,
    ) -> Result<AccessToken, TokenError> {
        let class = error.class();
        let (codes, claims) = match &error {
            TokenError::Provider { codes, claims, .. } => (
                codes.clone(),
                GrantFailure::bounded_claims(claims.as_deref()),
            ),
            _ => (Vec::new(), None),
        };
        let now = Instant::now();
        let jitter: f64 = rand::thread_rng().gen();
        let retry_after = error.retry_after();
        let attempts = slot.record_failure(
            error.clone(),
            now,
            account.refresh_token_updated_at,
            |attempt| self.backoff.hold_off(class, attempt, retry_after, jitter),
        );

        let step = next_step(class, &codes, &account.name);
        let reason = format!("{}; next step: {step}", status_reason(&error));
        self.record_health(
            account.id,
            Err(GrantFailure {
                at: unix(SystemTime::now()),
                class: class.as_str().to_owned(),
                codes: codes.clone(),
                reason: reason.clone(),
                claims,
            }),
        );
        if class.is_temporary() {
            tracing::warn!(
                account = %account.name,
                app = %account.app,
                class = %class,
                codes = ?codes,
                attempts,
                error = %error,
                "token request failed; backing off"
            );
            if let Some(token) = slot.unexpired(now) {
                return Ok(AccessToken::from_cache(token, false));
            }
            return Err(error);
        }

        // Permanent failures: the cached token goes too (a revoked grant must stop working).
        slot.drop_token();
        tracing::warn!(
            account = %account.name,
            app = %account.app,
            class = %class,
            codes = ?codes,
            error = %error,
            next_step = %step,
            "token request refused"
        );
        if needs_sign_in(class) {
            match self.store.mark_needs_reconsent(account.id, &reason).await {
                Ok(true) => {
                    if let Some(observer) = &self.observer {
                        observer.needs_reconsent(&ReconsentEvent {
                            account: account.name.clone(),
                            mailbox: account.mailbox.clone(),
                            app: account.app.clone(),
                            class,
                            codes,
                            reason,
                        });
                    }
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(
                    account = %account.name,
                    error = %e,
                    "could not mark account as needing re-consent"
                ),
            }
        }
        Err(error)
    }
}

/// Caches a token another replica stored and serves it: no request.
fn adopt(slot: &Slot, token: SharedToken) -> AccessToken {
    let left = u64::try_from(token.expires_at - unix(SystemTime::now())).unwrap_or(0);
    let cached = CachedToken {
        secret: token.secret,
        expires_at: std::time::UNIX_EPOCH
            + Duration::from_secs(u64::try_from(token.expires_at).unwrap_or(0)),
        valid_until: Instant::now() + Duration::from_secs(left),
        version: Some(token.version),
    };
    slot.store(cached.clone());
    AccessToken::from_cache(cached, false)
}

/// The shared store cannot be reached: like any store failure, no hold-off (it says nothing
/// about the grant); a cached token that has not expired still serves.
fn store_unavailable(
    account: &Account,
    slot: &Slot,
    error: StoreError,
) -> Result<AccessToken, TokenError> {
    tracing::warn!(account = %account.name, error = %error, "store unavailable for the token");
    match slot.unexpired(Instant::now()) {
        Some(token) => Ok(AccessToken::from_cache(token, false)),
        None => Err(TokenError::Store(error.to_string())),
    }
}

/// Whether a provider error is the password grant's "wrong user name or password".
fn is_wrong_password(error: &TokenError) -> bool {
    matches!(error, TokenError::Provider { codes, .. }
        if codes.iter().any(|c| WRONG_PASSWORD_CODES.contains(c)))
}

/// Unix seconds of `time` (0 before 1970).
fn unix(time: SystemTime) -> i64 {
    time.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A short, secret-free reason for the account status, e.g. `AADSTS70008: The provided
/// authorization code or refresh token has expired …`.
fn status_reason(error: &TokenError) -> String {
    let reason = match error {
        TokenError::Provider {
            error,
            codes,
            description,
            ..
        } => {
            let text = if description.is_empty() {
                error.as_str()
            } else {
                description.as_str()
            };
            match codes.first() {
                Some(_) if text.starts_with("AADSTS") => text.to_owned(),
                Some(code) => format!("AADSTS{code}: {text}"),
                None => format!("{error}: {text}"),
            }
        }
        TokenError::NoRefreshToken => "no refresh token stored".to_owned(),
        other => other.to_string(),
    };
    match reason.char_indices().nth(MAX_REASON) {
        Some((cut, _)) => format!("{}…", &reason[..cut]),
        None => reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::FailureClass;

    fn provider(error: &str, codes: Vec<u32>, description: &str) -> TokenError {
        TokenError::Provider {
            class: FailureClass::Reconsent,
            error: error.into(),
            codes,
            description: description.into(),
            retry_after: None,
            claims: None,
        }
    }

    #[test]
    fn status_reason_names_the_code() {
        assert_eq!(
            status_reason(&provider(
                "invalid_grant",
                vec![70008],
                "AADSTS70008: The refresh token has expired."
            )),
            "AADSTS70008: The refresh token has expired."
        );
        assert_eq!(
            status_reason(&provider("invalid_grant", vec![700082], "expired")),
            "AADSTS700082: expired"
        );
        assert_eq!(
            status_reason(&provider("invalid_grant", vec![], "")),
            "invalid_grant: invalid_grant"
        );
        assert_eq!(
            status_reason(&TokenError::NoRefreshToken),
            "no refresh token stored"
        );
        let long = status_reason(&provider("invalid_grant", vec![1], &"x".repeat(500)));
        assert_eq!(long.chars().count(), MAX_REASON + 1);
    }

    #[test]
    fn default_settings() {
        let s = BrokerSettings::default();
        assert_eq!(s.refresh_margin, Duration::from_secs(300));
        assert_eq!(s.request_timeout, Duration::from_secs(15));
        assert_eq!(s.backoff_initial, Duration::from_secs(2));
        assert_eq!(s.backoff_max, Duration::from_secs(300));
    }
}
