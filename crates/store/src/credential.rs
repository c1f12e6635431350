//! The interface the server and CLI use to reach any store backend.

use oxbridge_wire::Secret;

use crate::account::{Account, AccountStatus, NewAccount};
use crate::error::StoreError;

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

    /// The account's refresh token, unsealed; `None` if it has none.
    async fn refresh_token(&self, account_id: i64) -> Result<Option<Secret>, StoreError>;

    /// Stores a rotated refresh token atomically and durably (committed before returning),
    /// and sets `refresh_token_updated_at`.
    async fn replace_refresh_token(
        &self,
        account_id: i64,
        token: &Secret,
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

    /// Replaces the account's password; the old one stops working at once.
    async fn set_password(&self, name: &str, password: &Secret) -> Result<(), StoreError>;

    /// Stores a refresh token obtained elsewhere; sets the grant to refresh token and the
    /// status to active.
    async fn import_refresh_token(&self, name: &str, token: &Secret) -> Result<(), StoreError>;
}
