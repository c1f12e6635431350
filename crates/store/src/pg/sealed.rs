//! Password-sealed grants in the PostgreSQL store: the rows behind opening a grant key with
//! a password, key slots for new passwords, and resealing after a new sign-in. The
//! cryptography is `grant_key`'s; the SQLite store does the same over its own rows.

use oxbridge_wire::Secret;

use super::{account_by_name, password_rows, unix_now, PasswordRow, PgStore};
use crate::account::Account;
use crate::error::StoreError;
use crate::grant_key::{
    self, needs_current, no_slot_opens, wrong_current, GrantKey, Sealing, SlotRow,
};
use crate::schema::DEFAULT_PASSWORD;

impl PgStore {
    /// The account and its password rows, by id or by name.
    async fn account_with_rows(
        &self,
        by: Result<i64, &str>,
    ) -> Result<Option<(Account, Vec<PasswordRow>)>, StoreError> {
        let client = self.client().await?;
        let name = match by {
            Ok(id) => {
                let row = client
                    .query_opt("SELECT name FROM accounts WHERE id = $1", &[&id])
                    .await?;
                match row {
                    Some(row) => row.try_get::<_, String>(0)?,
                    None => return Ok(None),
                }
            }
            Err(name) => name.to_owned(),
        };
        let Some(account) = account_by_name(&client, &name).await? else {
            return Ok(None);
        };
        let rows = password_rows(&client, account.id).await?;
        Ok(Some((account, rows)))
    }

    async fn sealed_account(
        &self,
        by: Result<i64, &str>,
    ) -> Result<(Account, Vec<PasswordRow>), StoreError> {
        let missing = match by {
            Ok(id) => format!("id {id}"),
            Err(name) => name.to_owned(),
        };
        let found = self
            .account_with_rows(by)
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
        rows: &[PasswordRow],
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
        let (account, rows) = self
            .account_with_rows(Err(name))
            .await?
            .ok_or_else(|| StoreError::NotFound(name.to_owned()))?;
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
        let (account, rows) = self.sealed_account(Err(name)).await?;
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
        let sealed =
            grant_key::seal_refresh_token(self.key(), Sealing::Password, Some(&key), id, token)?;
        let now = unix_now();
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let changed = tx
            .execute(
                "UPDATE accounts SET refresh_token = $2, refresh_token_updated_at = $3, \
                 updated_at = $3, grant_kind = 'refresh-token', status = 'active', \
                 status_reason = NULL, grant_version = grant_version + 1, access_token = NULL, \
                 access_token_shared_until = NULL WHERE id = $1",
                &[&id, &sealed, &now],
            )
            .await?;
        if changed != 1 {
            return Err(StoreError::NotFound(name.to_owned()));
        }
        let mut removed = Vec::new();
        if let Some((hash, slot)) = &replacement {
            removed = rows
                .iter()
                .map(|row| row.name.clone())
                .filter(|n| n != DEFAULT_PASSWORD)
                .collect();
            tx.execute(
                "DELETE FROM account_passwords WHERE account_id = $1",
                &[&id],
            )
            .await?;
            tx.execute(
                "INSERT INTO account_passwords (account_id, name, hash, created_at, key_slot) \
                 VALUES ($1, $2, $3, $4, $5)",
                &[&id, &DEFAULT_PASSWORD, hash, &now, slot],
            )
            .await?;
        }
        tx.commit().await?;
        if replacement.is_some() {
            self.forget_logins(id);
        }
        tracing::debug!(name, id, "password-sealed grant stored");
        Ok(removed)
    }
}
