//! The interface the server and CLI use to reach any store backend.

use oxbridge_wire::{Protocol, Secret};

use crate::account::{Account, AccountStatus, GrantFailure, NewAccount, PasswordInfo};
use crate::error::StoreError;
use crate::grant_key::GrantKey;

/// An access token kept sealed in a shared store so every replica can use it, with the grant
/// version it was stored under. Only [`CredentialStore::is_shared`] stores keep these; the
/// embedded store keeps access tokens in memory only (DESIGN.md §4).
#[derive(Debug, Clone)]
pub struct SharedToken {
    pub secret: Secret,
    /// Unix seconds.
    pub expires_at: i64,
    /// The account's grant version when this token was stored; it grows with every refresh
    /// and every change of the grant, so a cached copy older than the stored one is stale.
    pub version: i64,
}

/// The exclusive right, across every process sharing the store, to refresh one account's
/// grant. Taken by [`CredentialStore::lock_refresh`]; dropping it without
/// [`RefreshLock::commit`] releases it and changes nothing (also when the process dies: the
/// database ends the lock with the connection).
#[async_trait::async_trait]
pub trait RefreshLock: Send {
    /// The grant version as of taking the lock.
    fn version(&self) -> i64;

    /// The shared access token as of taking the lock: whoever held the lock before may have
    /// just stored one, which makes a request unnecessary.
    fn shared_token(&self) -> Option<SharedToken>;

    /// The newest stored refresh token, read under the lock, so a replica never uses one
    /// older than what another replica stored. A password-sealed grant needs its `key`.
    async fn refresh_token(&mut self, key: Option<&GrantKey>)
        -> Result<Option<Secret>, StoreError>;

    /// Stores a request's outcome in one transaction and releases the lock: the rotated
    /// refresh token (if any; sealed under `key` too for a password-sealed grant) and the new
    /// access token, sealed; returns the new version.
    async fn commit(
        self: Box<Self>,
        rotated: Option<&Secret>,
        key: Option<&GrantKey>,
        access_token: &Secret,
        expires_at: i64,
    ) -> Result<i64, StoreError>;
}

/// Maps local logins to accounts and keeps their secrets.
///
/// Implemented by [`crate::SqliteStore`]; a shared backend for several replicas implements the
/// same trait so the protocol crates never know which one they talk to. Every method is
/// async and never blocks the reactor.
#[async_trait::async_trait]
pub trait CredentialStore: Send + Sync + 'static {
    /// Checks a local login. Unknown user and wrong password both give `Ok(None)`, at the same
    /// Argon2 cost, so timing does not reveal which names exist. The account is returned
    /// whatever its status; the caller decides what a disabled account or a protocol it does
    /// not allow means for the client.
    async fn verify_login(
        &self,
        user: &str,
        password: &Secret,
    ) -> Result<Option<Account>, StoreError>;

    /// The account's refresh token, unsealed; `None` if it has none. A password-sealed grant
    /// needs its `key` (see [`CredentialStore::open_grant_key`]), else [`StoreError::Sealed`].
    async fn refresh_token(
        &self,
        account_id: i64,
        key: Option<&GrantKey>,
    ) -> Result<Option<Secret>, StoreError>;

    /// Stores a rotated refresh token atomically and durably (committed before returning),
    /// and sets `refresh_token_updated_at`. A password-sealed grant is sealed under `key`.
    async fn replace_refresh_token(
        &self,
        account_id: i64,
        token: &Secret,
        key: Option<&GrantKey>,
    ) -> Result<(), StoreError>;

    /// Records why an account can or cannot log in, e.g. needs re-consent after AADSTS70008.
    async fn set_status(
        &self,
        account_id: i64,
        status: AccountStatus,
        reason: Option<&str>,
    ) -> Result<(), StoreError>;

    /// Notes a successful login (`last_login_at`); cheap enough to call on every login.
    async fn record_login(&self, account_id: i64) -> Result<(), StoreError>;

    /// Creates an account after validating the input.
    async fn add_account(&self, new: NewAccount) -> Result<Account, StoreError>;

    /// Every account, ordered by name.
    async fn list_accounts(&self) -> Result<Vec<Account>, StoreError>;

    /// One account by its exact local name.
    async fn account(&self, name: &str) -> Result<Option<Account>, StoreError>;

    /// Deletes an account with its secrets; `false` if there was none.
    async fn remove_account(&self, name: &str) -> Result<bool, StoreError>;

    /// Replaces the account's password; the old one stops working at once. A password-sealed
    /// account needs one of its `current` passwords to give the new one a key slot.
    async fn set_password(
        &self,
        name: &str,
        password: &Secret,
        current: Option<&Secret>,
    ) -> Result<(), StoreError>;

    /// Stores a refresh token obtained elsewhere; sets the grant to refresh token and the
    /// status to active. Refused for a password-sealed account (see
    /// [`CredentialStore::reseal_grant`]).
    async fn import_refresh_token(&self, name: &str, token: &Secret) -> Result<(), StoreError>;

    // The methods below were added for onboarding and grant health. Their defaults let a
    // backend (or a test double) that does not keep such data still compile and behave
    // sensibly: health is not recorded, named passwords and identities are refused.

    /// Adds a named local password (one per device or application); the others keep working.
    /// A password-sealed account needs one of its `current` passwords, which opens the grant
    /// key for the new password's key slot.
    async fn add_password(
        &self,
        _name: &str,
        _password_name: &str,
        _password: &Secret,
        _current: Option<&Secret>,
    ) -> Result<(), StoreError> {
        Err(StoreError::Invalid(
            "this store does not support named passwords".into(),
        ))
    }

    /// Revokes one named password; `false` if the account has none by that name. The last
    /// remaining password cannot be revoked (remove the account instead).
    async fn revoke_password(&self, _name: &str, _password_name: &str) -> Result<bool, StoreError> {
        Err(StoreError::Invalid(
            "this store does not support named passwords".into(),
        ))
    }

    /// The account's named passwords with creation and last-use times.
    async fn passwords(&self, _name: &str) -> Result<Vec<PasswordInfo>, StoreError> {
        Ok(Vec::new())
    }

    /// Sets (or with `None` clears) the XOAUTH2 `user=` the account presents for `protocol`.
    async fn set_identity(
        &self,
        _name: &str,
        _protocol: Protocol,
        _mailbox: Option<&str>,
    ) -> Result<(), StoreError> {
        Err(StoreError::Invalid(
            "this store does not support per-protocol identities".into(),
        ))
    }

    /// Records a successful token request and the access token's expiry (Unix seconds).
    async fn record_grant_success(
        &self,
        _account_id: i64,
        _access_token_expires_at: i64,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    /// Records a failed token request.
    async fn record_grant_failure(
        &self,
        _account_id: i64,
        _failure: &GrantFailure,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    /// Marks an *active* account as needing re-consent; returns whether this call made the
    /// change. Exactly one caller sees `true` per transition, which is what lets the
    /// notification hook fire once per transition rather than once per login or replica.
    async fn mark_needs_reconsent(
        &self,
        account_id: i64,
        reason: &str,
    ) -> Result<bool, StoreError> {
        self.set_status(account_id, AccountStatus::NeedsReconsent, Some(reason))
            .await
            .map(|()| true)
    }

    /// The grant key of a password-sealed account, unwrapped with `password` (one of its
    /// passwords, as a login just presented it); `None` if the password opens no key slot.
    /// Costs up to two Argon2 runs, so the broker asks only when a refresh is due.
    async fn open_grant_key(
        &self,
        _account_id: i64,
        _password: &Secret,
    ) -> Result<Option<GrantKey>, StoreError> {
        Err(StoreError::Invalid(
            "this store does not support password-sealed grants".into(),
        ))
    }

    /// Stores a new refresh token (after a new sign-in) for a password-sealed account and
    /// activates it. If `password` opens one of the account's key slots, the token is sealed
    /// under the existing grant key and every password keeps working. Otherwise, only with
    /// `reset_passwords` (every password forgotten): a fresh grant key, and `password` becomes
    /// the account's only password (`default`). Returns the names of the passwords removed.
    async fn reseal_grant(
        &self,
        _name: &str,
        _token: &Secret,
        _password: &Secret,
        _reset_passwords: bool,
    ) -> Result<Vec<String>, StoreError> {
        Err(StoreError::Invalid(
            "this store does not support password-sealed grants".into(),
        ))
    }

    // Shared stores (several replicas): the broker coordinates refreshes and shares access
    // tokens through these. The defaults describe a store of one process.

    /// True when several processes may use this store at once, so token requests are
    /// coordinated through [`CredentialStore::lock_refresh`].
    fn is_shared(&self) -> bool {
        false
    }

    /// The shared access token of an account, if one is stored (no lock taken).
    async fn load_shared_token(&self, _account_id: i64) -> Result<Option<SharedToken>, StoreError> {
        Ok(None)
    }

    /// The account's current grant version (a cheap read), so a replica can tell that its
    /// cached access token is older than the stored grant; `None` if not tracked.
    async fn grant_version(&self, _account_id: i64) -> Result<Option<i64>, StoreError> {
        Ok(None)
    }

    /// Waits for the account's cross-process refresh lock. Only shared stores have one.
    async fn lock_refresh(&self, _account_id: i64) -> Result<Box<dyn RefreshLock>, StoreError> {
        Err(StoreError::Invalid(
            "this store is not shared between processes".into(),
        ))
    }

    /// Whether the store answers right now, for `/readyz`; an error says why not.
    async fn check_health(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
