//! Password-sealed grants in the SQLite store: the rows behind opening a grant key with a
//! password, key slots for new passwords, and resealing after a new sign-in. The
//! cryptography is `grant_key`'s; this file only reads and writes.

use oxbridge_wire::Secret;
use rusqlite::TransactionBehavior;

use super::{queries, unix_now, SqliteStore};
use crate::account::Account;
use crate::error::StoreError;
use crate::grant_key::{
    self, needs_current, no_slot_opens, wrong_current, GrantKey, Sealing, SlotRow,
};

impl SqliteStore {
    /// The account and its password rows, by id or by name.
    async fn sealed_account(
        &self,
        by: Result<i64, String>,
    ) -> Result<(Account, Vec<queries::PasswordRow>), StoreError> {
        let missing = match &by {
            Ok(id) => format!("id {id}"),
            Err(name) => name.clone(),
        };
        let found = self
            .with_db(move |conn, _| {
                let name = match by {
                    Ok(id) => match queries::account_name(conn, id)? {
                        Some(name) => name,
                        None => return Ok(None),
                    },
                    Err(name) => name,
                };
                queries::login_by_name(conn, &name)
            })
            .await?
            .ok_or(StoreError::NotFound(missing))?;
        if !found.0.password_sealed() {
            return Err(StoreError::Invalid(format!(
                "account {:?} is not password-sealed",
                found.0.name
            )));
        }
        Ok(found)
    }

    async fn unlock(
        &self,
        account: &Account,
        rows: &[queries::PasswordRow],
        password: &Secret,
    ) -> Result<Option<GrantKey>, StoreError> {
        let slots: Vec<SlotRow<'_>> = rows
            .iter()
            .map(|row| SlotRow {
                name: &row.name,
                hash: &row.hash,
                key_slot: row.key_slot.as_deref(),
            })
            .collect();
        grant_key::unlock(
            &self.inner.argon2,
            &self.inner.logins,
            &account.name,
            account.id,
            &slots,
            password,
        )
        .await
    }

    /// See [`crate::CredentialStore::open_grant_key`].
    pub(super) async fn grant_key_of(
        &self,
        account_id: i64,
        password: &Secret,
    ) -> Result<Option<GrantKey>, StoreError> {
        let (account, rows) = self.sealed_account(Ok(account_id)).await?;
        self.unlock(&account, &rows, password).await
    }

    /// The key slot for a new password of account `name`: `None` unless it is
    /// password-sealed; then one of its `current` passwords must open the grant key.
    pub(super) async fn slot_for_new_password(
        &self,
        name: &str,
        password: &Secret,
        current: Option<&Secret>,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let owned = name.to_owned();
        let found = self
            .with_db(move |conn, _| queries::login_by_name(conn, &owned))
            .await?
            .ok_or_else(|| StoreError::NotFound(name.to_owned()))?;
        let (account, rows) = found;
        if !account.password_sealed() {
            return Ok(None);
        }
        let current = current.ok_or_else(|| needs_current(name))?;
        let key = self
            .unlock(&account, &rows, current)
            .await?
            .ok_or_else(|| wrong_current(name))?;
        grant_key::new_slot(&self.inner.argon2, &key, password, account.id)
            .await
            .map(Some)
    }

    /// See [`crate::CredentialStore::reseal_grant`].
    pub(super) async fn reseal(
        &self,
        name: &str,
        token: &Secret,
        password: &Secret,
        reset_passwords: bool,
    ) -> Result<Vec<String>, StoreError> {
        if token.is_empty() {
            return Err(StoreError::Invalid(
                "refresh token must not be empty".into(),
            ));
        }
        let (account, rows) = self.sealed_account(Err(name.to_owned())).await?;
        let id = account.id;
        let existing = match self.unlock(&account, &rows, password).await {
            Err(StoreError::Sealed(_)) => None,
            other => other?,
        };
        let (key, replacement) = match existing {
            Some(key) => (key, None),
            None if reset_passwords => {
                let key = GrantKey::generate();
                let slot = grant_key::new_slot(&self.inner.argon2, &key, password, id).await?;
                let hash = self.inner.argon2.hash(password).await?;
                (key, Some((hash, slot)))
            }
            None => return Err(no_slot_opens(name)),
        };
        let token = token.clone();
        let replaced = replacement.is_some();
        let removed = self
            .with_db(move |conn, master| {
                let now = unix_now();
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let sealed = grant_key::seal_refresh_token(
                    master,
                    Sealing::Password,
                    Some(&key),
                    id,
                    &token,
                )?;
                if !queries::store_refresh_token(&tx, id, &sealed, now)? {
                    return Err(StoreError::NotFound(format!("id {id}")));
                }
                queries::activate_refresh_token_grant(&tx, id, now)?;
                let removed = match &replacement {
                    Some((hash, slot)) => queries::replace_all_passwords(&tx, id, hash, slot, now)?,
                    None => Vec::new(),
                };
                tx.commit()?;
                Ok(removed)
            })
            .await?;
        if replaced {
            self.inner.logins.forget_account(id);
        }
        tracing::debug!(name, id, replaced, "password-sealed grant stored");
        Ok(removed)
    }
}
