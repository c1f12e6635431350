//! An in-memory `CredentialStore` double: refresh tokens per account id, a record of status
//! changes, and a switch that makes refresh-token writes fail.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use oxbridge_store::{
    Account, AccountStatus, CredentialStore, GrantFailure, GrantKey, NewAccount, StoreError,
};
use oxbridge_wire::Secret;

#[derive(Debug, Default)]
pub struct MemoryStore {
    refresh_tokens: Mutex<HashMap<i64, Secret>>,
    statuses: Mutex<Vec<(i64, AccountStatus, Option<String>)>>,
    pub fail_writes: AtomicBool,
    pub writes: AtomicUsize,
    marked: Mutex<Vec<i64>>,
    pub successes: Mutex<Vec<(i64, i64)>>,
    pub failures: Mutex<Vec<(i64, GrantFailure)>>,
}

impl MemoryStore {
    pub fn with_refresh_token(account_id: i64, token: &str) -> Self {
        let store = Self::default();
        store
            .refresh_tokens
            .lock()
            .expect("lock")
            .insert(account_id, Secret::from(token));
        store
    }

    pub fn stored_refresh_token(&self, account_id: i64) -> Option<String> {
        self.refresh_tokens
            .lock()
            .expect("lock")
            .get(&account_id)
            .and_then(|s| s.expose_str().map(str::to_owned))
    }

    pub fn statuses(&self) -> Vec<(i64, AccountStatus, Option<String>)> {
        self.statuses.lock().expect("lock").clone()
    }
}

fn not_here() -> StoreError {
    StoreError::Invalid("not implemented by the test double".into())
}

#[async_trait::async_trait]
impl CredentialStore for MemoryStore {
    async fn verify_login(
        &self,
        _user: &str,
        _password: &Secret,
    ) -> Result<Option<Account>, StoreError> {
        Err(not_here())
    }

    async fn refresh_token(
        &self,
        account_id: i64,
        _key: Option<&GrantKey>,
    ) -> Result<Option<Secret>, StoreError> {
        Ok(self
            .refresh_tokens
            .lock()
            .expect("lock")
            .get(&account_id)
            .cloned())
    }

    async fn replace_refresh_token(
        &self,
        account_id: i64,
        token: &Secret,
        _key: Option<&GrantKey>,
    ) -> Result<(), StoreError> {
        if self.fail_writes.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("disk full".into()));
        }
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.refresh_tokens
            .lock()
            .expect("lock")
            .insert(account_id, token.clone());
        Ok(())
    }

    async fn set_status(
        &self,
        account_id: i64,
        status: AccountStatus,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        self.statuses
            .lock()
            .expect("lock")
            .push((account_id, status, reason.map(str::to_owned)));
        Ok(())
    }

    async fn record_login(&self, _account_id: i64) -> Result<(), StoreError> {
        Ok(())
    }

    async fn add_account(&self, _new: NewAccount) -> Result<Account, StoreError> {
        Err(not_here())
    }

    async fn list_accounts(&self) -> Result<Vec<Account>, StoreError> {
        Ok(Vec::new())
    }

    async fn account(&self, _name: &str) -> Result<Option<Account>, StoreError> {
        Ok(None)
    }

    async fn remove_account(&self, _name: &str) -> Result<bool, StoreError> {
        Ok(false)
    }

    async fn set_password(
        &self,
        _name: &str,
        _password: &Secret,
        _current: Option<&Secret>,
    ) -> Result<(), StoreError> {
        Err(not_here())
    }

    async fn import_refresh_token(&self, _name: &str, _token: &Secret) -> Result<(), StoreError> {
        Err(not_here())
    }

    async fn record_grant_success(&self, id: i64, expires_at: i64) -> Result<(), StoreError> {
        self.successes.lock().expect("lock").push((id, expires_at));
        Ok(())
    }

    async fn record_grant_failure(
        &self,
        id: i64,
        failure: &GrantFailure,
    ) -> Result<(), StoreError> {
        self.failures
            .lock()
            .expect("lock")
            .push((id, failure.clone()));
        Ok(())
    }

    /// Like the real store: only the first call per account sees the transition.
    async fn mark_needs_reconsent(&self, id: i64, reason: &str) -> Result<bool, StoreError> {
        self.set_status(id, AccountStatus::NeedsReconsent, Some(reason))
            .await?;
        let mut marked = self.marked.lock().expect("lock");
        if marked.contains(&id) {
            return Ok(false);
        }
        marked.push(id);
        Ok(true)
    }
}
