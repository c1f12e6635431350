//! The embedded store: one SQLite file in the data directory.
//!
//! rusqlite is synchronous, so every operation runs on `spawn_blocking` against a single
//! connection behind a mutex. One connection is plenty here: each login is one indexed read,
//! and writes are rare (account changes, token rotation, a login timestamp per minute).
//!
//! Durability: WAL with `synchronous=FULL`, so a commit (above all a rotated refresh token,
//! which may be the only valid one) survives power loss, not just a process crash, before
//! `replace_refresh_token` returns. The extra fsync per commit is affordable because writes
//! are rare; `record_login` writes at most once a minute per account. `secure_delete` is on so
//! replaced sealed tokens do not linger in free pages.

mod queries;
mod sealed;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use oxbridge_wire::{Protocol, Secret};
use rusqlite::{Connection, TransactionBehavior};

use crate::account::{
    validate_mailbox, validate_password, validate_password_name, Account, AccountStatus,
    GrantFailure, GrantKind, NewAccount, NewGrant, PasswordInfo, LOGIN_TIMESTAMP_GRANULARITY,
    MAX_PASSWORDS,
};
use crate::credential::CredentialStore;
use crate::error::StoreError;
use crate::files;
use crate::grant_key::{self, GrantKey, Sealing};
use crate::key::MasterKey;
use crate::login_cache::{self, LoginCache};
use crate::password::Argon2Pool;
use crate::schema::{self, DEFAULT_PASSWORD};
use crate::seal::{self, Purpose};

/// File name of the database inside the data directory.
pub const DATABASE_FILE: &str = "oxbridge.db";

/// How long a writer waits for another (e.g. the CLI) before the store reports itself busy.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The `meta` row proving the master key belongs to this database.
const KEY_CHECK: &str = "key_check";
const KEY_CHECK_PLAINTEXT: &[u8] = b"oxbridge master key check";

/// The SQLite-backed [`CredentialStore`]. Cheap to clone; clones share one connection, one
/// Argon2 bound and one login cache.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    key: MasterKey,
    conn: Mutex<Connection>,
    argon2: Argon2Pool,
    logins: LoginCache,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if absent, mode 0600) the database at `path`, brings its schema up to
    /// date and checks that `key` is the key its secrets were sealed with; a different key is
    /// [`StoreError::Corrupt`] here rather than a surprise at the first login.
    pub fn open(path: &Path, key: MasterKey) -> Result<SqliteStore, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            if !parent.exists() {
                files::create_private_dir(parent).map_err(|e| {
                    StoreError::unavailable(&format!("create {}", parent.display()), e)
                })?;
            }
        }
        // Created before SQLite sees it, so it is never world-readable; SQLite gives the WAL
        // and shared-memory files the same mode.
        files::create_private_file_if_absent(path)
            .map_err(|e| StoreError::unavailable(&format!("create {}", path.display()), e))?;
        if let Ok(bits) = files::group_other_bits(path) {
            if bits != 0 {
                tracing::warn!(
                    path = %path.display(),
                    "database is accessible by group or other users; run chmod 600"
                );
            }
        }
        let mut conn = Connection::open(path)?;
        configure(&conn)?;
        schema::migrate(&mut conn)?;
        check_master_key(&mut conn, &key)?;
        tracing::debug!(path = %path.display(), "store opened");
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                key,
                conn: Mutex::new(conn),
                argon2: Argon2Pool::new(),
                logins: LoginCache::new(login_cache::DEFAULT_TTL, login_cache::DEFAULT_CAPACITY),
            }),
        })
    }

    /// Opens `data_dir/oxbridge.db`, creating `data_dir` (mode 0700) if needed.
    pub fn open_in_data_dir(data_dir: &Path, key: MasterKey) -> Result<SqliteStore, StoreError> {
        files::create_private_dir(data_dir)
            .map_err(|e| StoreError::unavailable(&format!("create {}", data_dir.display()), e))?;
        SqliteStore::open(&data_dir.join(DATABASE_FILE), key)
    }

    /// Where the database file is.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `work` with the connection on the blocking pool.
    async fn with_db<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection, &MasterKey) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let mut conn = inner.lock();
            work(&mut conn, &inner.key)
        })
        .await
        .map_err(|e| StoreError::unavailable("store task", e))?
    }
}

impl SqliteStore {
    /// Runs a short indexed read (cached statements, a few rows) right here when the
    /// connection is free, and on the blocking pool when another operation holds it. The
    /// login's account read is the only caller: handing it to another thread and back cost
    /// more than the read itself, on every login.
    async fn read_now_or_later<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        if let Ok(conn) = self.inner.conn.try_lock() {
            return read(&conn);
        }
        self.with_db(move |conn, _| read(conn)).await
    }

    /// Records in the background that a named password was used, unless it was recorded
    /// within the last minute: the login does not wait for the write.
    fn note_password_use(&self, account_id: i64, row: &queries::PasswordRow) {
        let now = unix_now();
        if row
            .last_used_at
            .is_some_and(|t| t > now - LOGIN_TIMESTAMP_GRANULARITY)
        {
            return;
        }
        let store = self.clone();
        let name = row.name.clone();
        tokio::spawn(async move {
            let result = store
                .with_db(move |conn, _| {
                    queries::touch_password(
                        conn,
                        account_id,
                        &name,
                        now,
                        LOGIN_TIMESTAMP_GRANULARITY,
                    )
                })
                .await;
            if let Err(e) = result {
                tracing::debug!(error = %e, "could not record password use");
            }
        });
    }

    /// The account id and one existing verifier (for [`Argon2Pool::hash_like`]).
    async fn id_and_sibling(&self, name: &str) -> Result<(i64, Option<String>), StoreError> {
        let owned = name.to_owned();
        self.with_db(move |conn, _| {
            let id = queries::account_id(conn, &owned)?
                .ok_or_else(|| StoreError::NotFound(owned.clone()))?;
            let sibling = queries::password_rows(conn, id)?
                .into_iter()
                .next()
                .map(|row| row.hash);
            Ok((id, sibling))
        })
        .await
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic mid-operation drops its transaction, which rolls back; the connection itself
        // stays usable, so a poisoned lock is safe to take over.
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn configure(conn: &Connection) -> Result<(), StoreError> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Unavailable(format!(
            "cannot switch to WAL mode (got {mode})"
        )));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "secure_delete", "ON")?;
    Ok(())
}

/// Seals a known value on first open and checks it on every later open.
fn check_master_key(conn: &mut Connection, key: &MasterKey) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    match queries::meta(&tx, KEY_CHECK)? {
        Some(sealed) => {
            let opened = seal::open(key, Purpose::KeyCheck, &sealed).map_err(|_| {
                StoreError::Corrupt(
                    "the master key does not match this database (was master.key replaced?)".into(),
                )
            })?;
            if opened.as_slice() != KEY_CHECK_PLAINTEXT {
                return Err(StoreError::Corrupt(
                    "master key check value is wrong".into(),
                ));
            }
        }
        None => {
            let sealed = seal::seal(key, Purpose::KeyCheck, KEY_CHECK_PLAINTEXT)?;
            queries::set_meta(&tx, KEY_CHECK, &sealed)?;
        }
    }
    tx.commit()?;
    Ok(())
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[async_trait::async_trait]
impl CredentialStore for SqliteStore {
    async fn verify_login(
        &self,
        user: &str,
        password: &Secret,
    ) -> Result<Option<Account>, StoreError> {
        let tag = self.inner.logins.tag(user, password);
        let name = user.to_owned();
        let found = self
            .read_now_or_later(move |conn| queries::login_by_name(conn, &name))
            .await?;
        let Some((account, rows)) = found else {
            self.inner.argon2.verify(password, None).await?;
            tracing::debug!(user, "login for unknown account");
            return Ok(None);
        };
        let verifiers: Vec<_> = rows
            .iter()
            .map(|row| login_cache::verifier_digest(&row.hash))
            .collect();
        if let Some(index) = self
            .inner
            .logins
            .hit(&tag, account.id, &verifiers, Instant::now())
        {
            tracing::debug!(user, "login verified (cached)");
            self.note_password_use(account.id, &rows[index]);
            return Ok(Some(account));
        }
        let hashes = rows.iter().map(|row| row.hash.clone()).collect();
        match self.inner.argon2.verify_any(password, hashes).await? {
            Some(index) => {
                self.inner
                    .logins
                    .insert(tag, account.id, verifiers[index], Instant::now());
                tracing::debug!(user, password_name = %rows[index].name, "login verified");
                self.note_password_use(account.id, &rows[index]);
                Ok(Some(account))
            }
            None => {
                tracing::debug!(user, "login with wrong password");
                Ok(None)
            }
        }
    }

    async fn refresh_token(
        &self,
        account_id: i64,
        key: Option<&GrantKey>,
    ) -> Result<Option<Secret>, StoreError> {
        let (sealed, sealing) = self
            .with_db(move |conn, _| queries::sealed_refresh_token(conn, account_id))
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("id {account_id}")))?;
        let Some(sealed) = sealed else {
            return Ok(None);
        };
        grant_key::open_refresh_token(&self.inner.key, sealing, key, account_id, &sealed).map(Some)
    }

    async fn replace_refresh_token(
        &self,
        account_id: i64,
        token: &Secret,
        grant: Option<&GrantKey>,
    ) -> Result<(), StoreError> {
        if token.is_empty() {
            return Err(StoreError::Invalid(
                "refresh token must not be empty".into(),
            ));
        }
        let token = token.clone();
        let grant = grant.map(GrantKey::duplicate);
        self.with_db(move |conn, key| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let (_, sealing) = queries::sealed_refresh_token(&tx, account_id)?
                .ok_or_else(|| StoreError::NotFound(format!("id {account_id}")))?;
            let sealed =
                grant_key::seal_refresh_token(key, sealing, grant.as_ref(), account_id, &token)?;
            if !queries::store_refresh_token(&tx, account_id, &sealed, unix_now())? {
                return Err(StoreError::NotFound(format!("id {account_id}")));
            }
            tx.commit()?;
            Ok(())
        })
        .await?;
        tracing::debug!(account_id, "refresh token replaced");
        Ok(())
    }

    async fn set_status(
        &self,
        account_id: i64,
        status: AccountStatus,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        let reason = reason.map(str::to_owned);
        let reason_for_log = reason.clone();
        self.with_db(move |conn, _| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if !queries::set_status(&tx, account_id, status, reason.as_deref(), unix_now())? {
                return Err(StoreError::NotFound(format!("id {account_id}")));
            }
            tx.commit()?;
            Ok(())
        })
        .await?;
        tracing::debug!(account_id, %status, reason = reason_for_log, "account status set");
        Ok(())
    }

    async fn record_login(&self, account_id: i64) -> Result<(), StoreError> {
        let exists = self
            .with_db(move |conn, _| {
                queries::record_login(conn, account_id, unix_now(), LOGIN_TIMESTAMP_GRANULARITY)
            })
            .await?;
        if exists {
            Ok(())
        } else {
            Err(StoreError::NotFound(format!("id {account_id}")))
        }
    }

    async fn add_account(&self, new: NewAccount) -> Result<Account, StoreError> {
        new.validate()?;
        let hash = self.inner.argon2.hash(&new.password).await?;
        let grant_key = (new.sealing == Sealing::Password).then(GrantKey::generate);
        let account = self
            .with_db(move |conn, key| {
                let now = unix_now();
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let grant = match new.grant {
                    NewGrant::ClientCredentials => GrantKind::ClientCredentials,
                    NewGrant::RefreshToken(_) => GrantKind::RefreshToken,
                    NewGrant::Password => GrantKind::Password,
                };
                let id = queries::insert_account(&tx, &new, grant, &hash, now)?;
                // The id is only known after the insert, and the seals are bound to it.
                if let NewGrant::RefreshToken(token) = &new.grant {
                    let sealed = grant_key::seal_refresh_token(
                        key,
                        new.sealing,
                        grant_key.as_ref(),
                        id,
                        token,
                    )?;
                    queries::store_refresh_token(&tx, id, &sealed, now)?;
                }
                if let Some(grant_key) = &grant_key {
                    // One Argon2 run inside the write transaction: account creation is rare.
                    let slot = grant_key::make_slot(grant_key, &new.password, id)?;
                    queries::set_key_slot(&tx, id, DEFAULT_PASSWORD, &slot)?;
                }
                let account = queries::account_by_name(&tx, &new.name)?.ok_or_else(|| {
                    StoreError::Corrupt(format!("account {:?} vanished after insert", new.name))
                })?;
                tx.commit()?;
                Ok(account)
            })
            .await?;
        tracing::debug!(name = account.name, id = account.id, grant = %account.grant, "account added");
        Ok(account)
    }

    async fn list_accounts(&self) -> Result<Vec<Account>, StoreError> {
        self.with_db(|conn, _| queries::list_accounts(conn)).await
    }

    async fn account(&self, name: &str) -> Result<Option<Account>, StoreError> {
        let name = name.to_owned();
        self.with_db(move |conn, _| queries::account_by_name(conn, &name))
            .await
    }

    async fn remove_account(&self, name: &str) -> Result<bool, StoreError> {
        let owned = name.to_owned();
        let removed = self
            .with_db(move |conn, _| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let id = queries::delete_account(&tx, &owned)?;
                tx.commit()?;
                Ok(id)
            })
            .await?;
        match removed {
            Some(id) => {
                self.inner.logins.forget_account(id);
                tracing::debug!(name, id, "account removed");
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn set_password(
        &self,
        name: &str,
        password: &Secret,
        current: Option<&Secret>,
    ) -> Result<(), StoreError> {
        validate_password(password)?;
        let (_, sibling) = self.id_and_sibling(name).await?;
        let slot = self.slot_for_new_password(name, password, current).await?;
        let hash = self.inner.argon2.hash_like(password, sibling).await?;
        let owned = name.to_owned();
        let id = self
            .with_db(move |conn, _| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let id =
                    queries::set_password_hash(&tx, &owned, &hash, slot.as_deref(), unix_now())?;
                tx.commit()?;
                Ok(id)
            })
            .await?
            .ok_or_else(|| StoreError::NotFound(name.to_owned()))?;
        self.inner.logins.forget_account(id);
        tracing::debug!(name, id, "password changed");
        Ok(())
    }

    async fn import_refresh_token(&self, name: &str, token: &Secret) -> Result<(), StoreError> {
        if token.is_empty() {
            return Err(StoreError::Invalid(
                "refresh token must not be empty".into(),
            ));
        }
        let token = token.clone();
        let owned = name.to_owned();
        let id = self
            .with_db(move |conn, key| {
                let now = unix_now();
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let Some(id) = queries::account_id(&tx, &owned)? else {
                    return Ok(None);
                };
                if let Some((_, Sealing::Password)) = queries::sealed_refresh_token(&tx, id)? {
                    return Err(grant_key::import_refused(&owned));
                }
                let sealed = seal::seal(key, Purpose::RefreshToken(id), token.expose())?;
                queries::store_refresh_token(&tx, id, &sealed, now)?;
                queries::activate_refresh_token_grant(&tx, id, now)?;
                tx.commit()?;
                Ok(Some(id))
            })
            .await?
            .ok_or_else(|| StoreError::NotFound(name.to_owned()))?;
        tracing::debug!(name, id, "refresh token imported");
        Ok(())
    }

    async fn add_password(
        &self,
        name: &str,
        password_name: &str,
        password: &Secret,
        current: Option<&Secret>,
    ) -> Result<(), StoreError> {
        validate_password_name(password_name)?;
        validate_password(password)?;
        let (_, sibling) = self.id_and_sibling(name).await?;
        let slot = self.slot_for_new_password(name, password, current).await?;
        let hash = self.inner.argon2.hash_like(password, sibling).await?;
        let owned = name.to_owned();
        let label = password_name.to_owned();
        self.with_db(move |conn, _| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let id = queries::account_id(&tx, &owned)?
                .ok_or_else(|| StoreError::NotFound(owned.clone()))?;
            if queries::password_rows(&tx, id)?.len() >= MAX_PASSWORDS {
                return Err(StoreError::Invalid(format!(
                    "account {owned:?} already has {MAX_PASSWORDS} passwords; revoke one first"
                )));
            }
            queries::insert_password(&tx, id, &label, &hash, slot.as_deref(), unix_now())?;
            tx.commit()?;
            Ok(())
        })
        .await?;
        tracing::debug!(name, password_name, "password added");
        Ok(())
    }

    async fn revoke_password(&self, name: &str, password_name: &str) -> Result<bool, StoreError> {
        let owned = name.to_owned();
        let label = password_name.to_owned();
        let revoked = self
            .with_db(move |conn, _| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let id = queries::account_id(&tx, &owned)?
                    .ok_or_else(|| StoreError::NotFound(owned.clone()))?;
                let rows = queries::password_rows(&tx, id)?;
                if !rows.iter().any(|row| row.name == label) {
                    return Ok(None);
                }
                if rows.len() == 1 {
                    return Err(StoreError::Invalid(format!(
                        "{label:?} is the last password of {owned:?}; add another first, \
                         or remove the account"
                    )));
                }
                queries::delete_password(&tx, id, &label, unix_now())?;
                tx.commit()?;
                Ok(Some(id))
            })
            .await?;
        match revoked {
            Some(id) => {
                // A cached login with the revoked password must stop working now.
                self.inner.logins.forget_account(id);
                tracing::debug!(name, password_name, "password revoked");
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn passwords(&self, name: &str) -> Result<Vec<PasswordInfo>, StoreError> {
        let owned = name.to_owned();
        self.with_db(move |conn, _| {
            let id = queries::account_id(conn, &owned)?
                .ok_or_else(|| StoreError::NotFound(owned.clone()))?;
            queries::password_infos(conn, id)
        })
        .await
    }

    async fn set_identity(
        &self,
        name: &str,
        protocol: Protocol,
        mailbox: Option<&str>,
    ) -> Result<(), StoreError> {
        if let Some(mailbox) = mailbox {
            validate_mailbox(mailbox)?;
        }
        let owned = name.to_owned();
        let mailbox = mailbox.map(str::to_owned);
        let found = self
            .with_db(move |conn, _| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let Some(id) = queries::account_id(&tx, &owned)? else {
                    return Ok(false);
                };
                queries::set_identity(&tx, id, protocol, mailbox.as_deref(), unix_now())?;
                tx.commit()?;
                Ok(true)
            })
            .await?;
        if found {
            Ok(())
        } else {
            Err(StoreError::NotFound(name.to_owned()))
        }
    }

    async fn record_grant_success(
        &self,
        account_id: i64,
        access_token_expires_at: i64,
    ) -> Result<(), StoreError> {
        let found = self
            .with_db(move |conn, _| {
                queries::record_grant_success(conn, account_id, unix_now(), access_token_expires_at)
            })
            .await?;
        found
            .then_some(())
            .ok_or_else(|| StoreError::NotFound(format!("id {account_id}")))
    }

    async fn record_grant_failure(
        &self,
        account_id: i64,
        failure: &GrantFailure,
    ) -> Result<(), StoreError> {
        let failure = failure.clone();
        let found = self
            .with_db(move |conn, _| queries::record_grant_failure(conn, account_id, &failure))
            .await?;
        found
            .then_some(())
            .ok_or_else(|| StoreError::NotFound(format!("id {account_id}")))
    }

    async fn open_grant_key(
        &self,
        account_id: i64,
        password: &Secret,
    ) -> Result<Option<GrantKey>, StoreError> {
        self.grant_key_of(account_id, password).await
    }

    async fn reseal_grant(
        &self,
        name: &str,
        token: &Secret,
        password: &Secret,
        reset_passwords: bool,
    ) -> Result<Vec<String>, StoreError> {
        self.reseal(name, token, password, reset_passwords).await
    }

    async fn mark_needs_reconsent(
        &self,
        account_id: i64,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let reason = reason.to_owned();
        self.with_db(move |conn, _| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let changed = queries::mark_needs_reconsent(&tx, account_id, &reason, unix_now())?;
            tx.commit()?;
            Ok(changed)
        })
        .await
    }
}
