//! The shared store: PostgreSQL, for several oxbridge replicas behind a load balancer.
//!
//! Same contract as [`crate::SqliteStore`] (Argon2id verifiers, secrets sealed under the
//! master key and bound to their row, the same login cache), plus what replicas need:
//!
//! - **one token request across replicas**: [`CredentialStore::lock_refresh`] takes a
//!   transaction-level advisory lock on the account id (`pg_advisory_xact_lock`) and re-reads
//!   the stored grant after taking it; the broker refreshes only if no replica stored a usable
//!   access token meanwhile, and always with the newest stored refresh token. The lock lives in
//!   a transaction on one pooled connection: if the replica dies, the database ends the
//!   connection and with it the lock, and nothing was changed (the commit stores the rotated
//!   refresh token and the new access token together).
//! - **shared access tokens**: sealed in the account row with a `grant_version` that grows on
//!   every refresh and grant change, so a replica can tell its cached copy is stale.
//! - **outages**: every error talking to the database is [`StoreError::Unavailable`]
//!   (temporary); the pool reconnects by itself once the database is back. While it is down,
//!   a login that this replica verified in the last [`OUTAGE_LOGIN_TTL`] is still accepted
//!   against the account and verifiers as last read, so devices with a cached access token
//!   keep working.
//!
//! TLS to the database follows the URL's `sslmode` (`disable`, `prefer` (default), `require`)
//! with rustls, trusting the system roots plus an optional CA file. Verification of the
//! server's certificate is always on when TLS is used.

mod schema;
mod sealed;
#[cfg(test)]
mod tests;

pub use schema::CURRENT_VERSION;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use oxbridge_wire::{Protocol, Secret};
use tokio_postgres::Row;

use crate::account::{
    protocols_to_text, validate_mailbox, validate_password, validate_password_name, Account,
    AccountStatus, GrantFailure, GrantHealth, GrantKind, NewAccount, NewGrant, PasswordInfo,
    LOGIN_TIMESTAMP_GRANULARITY, MAX_PASSWORDS,
};
use crate::credential::{CredentialStore, RefreshLock, SharedToken};
use crate::error::StoreError;
use crate::grant_key::{self, GrantKey, Sealing};
use crate::key::MasterKey;
use crate::login_cache::{self, LoginCache};
use crate::password::Argon2Pool;
use crate::schema::DEFAULT_PASSWORD;
use crate::seal::{self, Purpose};

/// How long a login verified by this replica is still accepted while the database is down.
pub const OUTAGE_LOGIN_TTL: Duration = Duration::from_secs(15 * 60);

/// The `meta` row proving the master key belongs to this database (same as SQLite).
const KEY_CHECK: &str = "key_check";
const KEY_CHECK_PLAINTEXT: &[u8] = b"oxbridge master key check";

/// Accounts remembered for logins during an outage; the map is cleared when it grows past this.
const KNOWN_LOGINS_CAPACITY: usize = 10_000;

/// Connection settings beyond the URL.
#[derive(Debug, Clone)]
pub struct PgSettings {
    /// Most connections this process opens. A refresh in flight holds one (its lock lives in
    /// a transaction), so this bounds concurrent refreshes of distinct accounts too.
    pub pool_size: usize,
    /// Extra trust anchors (PEM) for TLS to the database.
    pub ca_file: Option<PathBuf>,
    /// Connecting, and waiting for a free pooled connection, give up after this.
    pub connect_timeout: Duration,
    /// Waiting for another replica's refresh of the same account gives up after this
    /// (a temporary failure for the login); above the broker's token request timeout.
    pub lock_timeout: Duration,
}

impl Default for PgSettings {
    fn default() -> Self {
        Self {
            pool_size: 16,
            ca_file: None,
            connect_timeout: Duration::from_secs(5),
            lock_timeout: Duration::from_secs(30),
        }
    }
}

/// The PostgreSQL-backed [`CredentialStore`]. Cheap to clone.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    key: MasterKey,
    target: String,
    lock_timeout: Duration,
    argon2: Argon2Pool,
    logins: LoginCache,
    /// Logins verified recently enough to accept while the database is down.
    outage_logins: LoginCache,
    /// The account and verifiers last read per login name, for those outage logins.
    known: Mutex<HashMap<String, (Account, Vec<PasswordRow>)>>,
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore")
            .field("target", &self.inner.target)
            .finish_non_exhaustive()
    }
}

impl From<tokio_postgres::Error> for StoreError {
    /// Lost connections, shutdowns, lock timeouts and resource shortages are temporary;
    /// anything else the database refuses is not (the store issued the SQL itself).
    fn from(error: tokio_postgres::Error) -> Self {
        let Some(db) = error.as_db_error() else {
            return StoreError::Unavailable(format!("postgres: {error}"));
        };
        let code = db.code().code();
        let temporary = ["08", "53", "57", "40", "58"]
            .iter()
            .any(|class| code.starts_with(class))
            || code == "55P03"
            || code == "55006";
        if temporary {
            StoreError::Unavailable(format!("postgres: {}", db.message()))
        } else {
            StoreError::Corrupt(format!("postgres: {} ({code})", db.message()))
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        match error {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            other => StoreError::Unavailable(format!("postgres pool: {other}")),
        }
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// `host:port/dbname` of a URL, without user or password, for logs and `/readyz`.
pub(crate) fn describe(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_default();
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}/{}", config.get_dbname().unwrap_or(""))
}

pub(crate) fn tls(
    settings: &PgSettings,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = &settings.ca_file {
        use rustls_pki_types::pem::PemObject;
        let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
            .map_err(|e| StoreError::Invalid(format!("[store] ca_file {}: {e}", path.display())))?;
        for cert in certs {
            let cert = cert.map_err(|e| {
                StoreError::Invalid(format!("[store] ca_file {}: {e}", path.display()))
            })?;
            roots
                .add(cert)
                .map_err(|e| StoreError::Invalid(format!("[store] ca_file: {e}")))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Invalid(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

pub(crate) fn parse_url(
    url: &str,
    settings: &PgSettings,
) -> Result<tokio_postgres::Config, StoreError> {
    let mut config = tokio_postgres::Config::from_str(url)
        .map_err(|e| StoreError::Invalid(format!("[store] url: {e}")))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(settings.connect_timeout);
    }
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(30));
    if config.get_application_name().is_none() {
        config.application_name("oxbridge");
    }
    Ok(config)
}

impl PgStore {
    /// Connects, brings the schema up to date and checks that `key` is the key the
    /// database's secrets were sealed with; a different key is [`StoreError::Corrupt`].
    ///
    /// Usable from synchronous code inside or outside a runtime: the start-up work runs on a
    /// short-lived thread with its own runtime, and the pool connects lazily afterwards on
    /// whichever runtime uses the store.
    pub fn open(url: &str, key: MasterKey, settings: &PgSettings) -> Result<PgStore, StoreError> {
        let config = parse_url(url, settings)?;
        let connector = tls(settings)?;
        let startup_config = config.clone();
        let startup_connector = connector.clone();
        let key_bytes = MasterKey::from_base64(key.to_base64().expose_str().unwrap_or(""))?;
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| StoreError::unavailable("runtime", e))?;
                    runtime.block_on(prepare(&startup_config, startup_connector, &key_bytes))
                })
                .join()
                .map_err(|_| StoreError::Unavailable("postgres start-up panicked".into()))?
        })?;
        let target = describe(&config);
        let manager = Manager::from_config(
            config,
            connector,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size.max(2))
            .wait_timeout(Some(settings.connect_timeout))
            .create_timeout(Some(settings.connect_timeout))
            .recycle_timeout(Some(settings.connect_timeout))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Invalid(format!("postgres pool: {e}")))?;
        tracing::debug!(target = %target, "postgres store opened");
        Ok(PgStore {
            inner: Arc::new(Inner {
                pool,
                key,
                target,
                lock_timeout: settings.lock_timeout,
                argon2: Argon2Pool::new(),
                logins: LoginCache::new(login_cache::DEFAULT_TTL, login_cache::DEFAULT_CAPACITY),
                outage_logins: LoginCache::new(OUTAGE_LOGIN_TTL, login_cache::DEFAULT_CAPACITY),
                known: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// `host:port/database`, without credentials.
    pub fn target(&self) -> &str {
        &self.inner.target
    }

    async fn client(&self) -> Result<Object, StoreError> {
        Ok(self.inner.pool.get().await?)
    }

    fn key(&self) -> &MasterKey {
        &self.inner.key
    }

    fn known(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Account, Vec<PasswordRow>)>> {
        self.inner
            .known
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn forget_logins(&self, account_id: i64) {
        self.inner.logins.forget_account(account_id);
        self.inner.outage_logins.forget_account(account_id);
        self.known()
            .retain(|_, (account, _)| account.id != account_id);
    }

    /// Notes in the background that a named password was used (at most once a minute).
    fn note_password_use(&self, account_id: i64, row: &PasswordRow) {
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
            let result = async {
                let client = store.client().await?;
                client
                    .execute(
                        "UPDATE account_passwords SET last_used_at = $3 \
                         WHERE account_id = $1 AND name = $2 \
                         AND (last_used_at IS NULL OR last_used_at <= $3 - $4)",
                        &[&account_id, &name, &now, &LOGIN_TIMESTAMP_GRANULARITY],
                    )
                    .await?;
                Ok::<_, StoreError>(())
            }
            .await;
            if let Err(e) = result {
                tracing::debug!(error = %e, "could not record password use");
            }
        });
    }

    /// The account and one existing verifier (for [`Argon2Pool::hash_like`]).
    async fn id_and_sibling(&self, name: &str) -> Result<(i64, Option<String>), StoreError> {
        let client = self.client().await?;
        let id = account_id(&client, name)
            .await?
            .ok_or_else(|| StoreError::NotFound(name.to_owned()))?;
        let sibling = password_rows(&client, id)
            .await?
            .into_iter()
            .next()
            .map(|row| row.hash);
        Ok((id, sibling))
    }

    /// A login while the database is unreachable: accepted only if this replica verified the
    /// same user and password within [`OUTAGE_LOGIN_TTL`] against verifiers it still holds.
    fn outage_login(&self, user: &str, tag: &login_cache::LoginTag) -> Option<Account> {
        let (account, rows) = self.known().get(user).cloned()?;
        let verifiers: Vec<_> = rows
            .iter()
            .map(|row| login_cache::verifier_digest(&row.hash))
            .collect();
        self.inner
            .outage_logins
            .hit(tag, account.id, &verifiers, Instant::now())
            .map(|_| account)
    }

    fn remember_login(
        &self,
        user: &str,
        tag: login_cache::LoginTag,
        account: &Account,
        rows: &[PasswordRow],
        index: usize,
    ) {
        let now = Instant::now();
        let digest = login_cache::verifier_digest(&rows[index].hash);
        self.inner.logins.insert(tag, account.id, digest, now);
        self.inner
            .outage_logins
            .insert(tag, account.id, digest, now);
        let mut known = self.known();
        if known.len() >= KNOWN_LOGINS_CAPACITY && !known.contains_key(user) {
            known.clear();
        }
        known.insert(user.to_owned(), (account.clone(), rows.to_vec()));
    }
}

/// Start-up work on a one-off connection: schema migrations and the master key check.
async fn prepare(
    config: &tokio_postgres::Config,
    connector: tokio_postgres_rustls::MakeRustlsConnect,
    key: &MasterKey,
) -> Result<(), StoreError> {
    let (mut client, connection) = config.connect(connector).await?;
    let driver = tokio::spawn(connection);
    let result = async {
        schema::migrate(&mut client).await?;
        check_master_key(&mut client, key).await
    }
    .await;
    drop(client);
    let _ = driver.await;
    result
}

/// Seals a known value on first open and checks it on every later open.
async fn check_master_key(
    client: &mut tokio_postgres::Client,
    key: &MasterKey,
) -> Result<(), StoreError> {
    let sealed = seal::seal(key, Purpose::KeyCheck, KEY_CHECK_PLAINTEXT)?;
    // First writer wins; everyone then checks what is stored.
    client
        .execute(
            "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
            &[&KEY_CHECK, &sealed],
        )
        .await?;
    let row = client
        .query_one("SELECT value FROM meta WHERE key = $1", &[&KEY_CHECK])
        .await?;
    let stored: Vec<u8> = row.try_get(0)?;
    let opened = seal::open(key, Purpose::KeyCheck, &stored).map_err(|_| {
        StoreError::Corrupt(
            "the master key does not match this database (use the key the store was created \
             with on every replica)"
                .into(),
        )
    })?;
    if opened.as_slice() != KEY_CHECK_PLAINTEXT {
        return Err(StoreError::Corrupt(
            "master key check value is wrong".into(),
        ));
    }
    Ok(())
}

/// The columns [`account_from_row`] reads, in its order.
const ACCOUNT_COLUMNS: &str = "id, name, mailbox, app, grant_kind, protocols, status, \
     status_reason, created_at, updated_at, last_login_at, refresh_token_updated_at, \
     imap_mailbox, pop3_mailbox, smtp_mailbox, last_refresh_at, access_token_expires_at, \
     last_failure_at, last_failure_class, last_failure_codes, last_failure_reason, sealing, \
     last_failure_claims";

/// The identity column of each protocol, in [`Account::identities`] column order.
const IDENTITY_COLUMNS: [(Protocol, &str); 3] = [
    (Protocol::Imap, "imap_mailbox"),
    (Protocol::Pop3, "pop3_mailbox"),
    (Protocol::Smtp, "smtp_mailbox"),
];

fn account_from_row(row: &Row) -> Result<Account, StoreError> {
    let name: String = row.try_get(1)?;
    let corrupt = |e: StoreError| StoreError::Corrupt(format!("account {name:?}: {e}"));
    let mut identities = BTreeMap::new();
    for (offset, (protocol, _)) in IDENTITY_COLUMNS.iter().enumerate() {
        if let Some(mailbox) = row.try_get::<_, Option<String>>(12 + offset)? {
            identities.insert(*protocol, mailbox);
        }
    }
    let failure_at: Option<i64> = row.try_get(17)?;
    let failure_class: Option<String> = row.try_get(18)?;
    let last_failure = match (failure_at, failure_class) {
        (Some(at), Some(class)) => Some(GrantFailure {
            at,
            class,
            codes: row
                .try_get::<_, Option<String>>(19)?
                .unwrap_or_default()
                .split(',')
                .filter_map(|c| c.trim().parse().ok())
                .collect(),
            reason: row.try_get::<_, Option<String>>(20)?.unwrap_or_default(),
            claims: row.try_get(22)?,
        }),
        _ => None,
    };
    Ok(Account {
        id: row.try_get(0)?,
        mailbox: row.try_get(2)?,
        app: row.try_get(3)?,
        grant: row
            .try_get::<_, String>(4)?
            .parse::<GrantKind>()
            .map_err(corrupt)?,
        protocols: crate::account::protocols_from_text(&row.try_get::<_, String>(5)?)
            .map_err(corrupt)?,
        status: row
            .try_get::<_, String>(6)?
            .parse::<AccountStatus>()
            .map_err(corrupt)?,
        status_reason: row.try_get(7)?,
        created_at: row.try_get(8)?,
        updated_at: row.try_get(9)?,
        last_login_at: row.try_get(10)?,
        refresh_token_updated_at: row.try_get(11)?,
        sealing: Sealing::parse(&row.try_get::<_, String>(21)?).map_err(corrupt)?,
        identities,
        health: GrantHealth {
            last_refresh_at: row.try_get(15)?,
            access_token_expires_at: row.try_get(16)?,
            last_failure,
        },
        name,
    })
}

/// One stored password verifier of an account.
#[derive(Debug, Clone)]
struct PasswordRow {
    name: String,
    hash: String,
    last_used_at: Option<i64>,
    /// The grant key wrapped under this password (password-sealed accounts).
    key_slot: Option<Vec<u8>>,
}

async fn account_by_name(
    client: &impl GenericClient,
    name: &str,
) -> Result<Option<Account>, StoreError> {
    let statement = client
        .prepare_cached(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE name = $1"
        ))
        .await?;
    client
        .query_opt(&statement, &[&name])
        .await?
        .as_ref()
        .map(account_from_row)
        .transpose()
}

async fn account_id(client: &impl GenericClient, name: &str) -> Result<Option<i64>, StoreError> {
    Ok(client
        .query_opt("SELECT id FROM accounts WHERE name = $1", &[&name])
        .await?
        .map(|row| row.try_get(0))
        .transpose()?)
}

/// The verifiers of an account, in name order (so every process sees the same order).
async fn password_rows(
    client: &impl GenericClient,
    id: i64,
) -> Result<Vec<PasswordRow>, StoreError> {
    let statement = client
        .prepare_cached(
            "SELECT name, hash, last_used_at, key_slot FROM account_passwords \
             WHERE account_id = $1 ORDER BY name",
        )
        .await?;
    client
        .query(&statement, &[&id])
        .await?
        .iter()
        .map(|row| {
            Ok(PasswordRow {
                name: row.try_get(0)?,
                hash: row.try_get(1)?,
                last_used_at: row.try_get(2)?,
                key_slot: row.try_get(3)?,
            })
        })
        .collect()
}

/// The sealed refresh token of an account (`None` if it has none) and how it is sealed.
async fn sealed_refresh_token(
    client: &impl GenericClient,
    id: i64,
) -> Result<(Option<Vec<u8>>, Sealing), StoreError> {
    let row = client
        .query_opt(
            "SELECT refresh_token, sealing FROM accounts WHERE id = $1",
            &[&id],
        )
        .await?
        .ok_or_else(|| not_found(id))?;
    Ok((
        row.try_get(0)?,
        Sealing::parse(&row.try_get::<_, String>(1)?)?,
    ))
}

fn is_unique_violation(error: &tokio_postgres::Error) -> bool {
    error.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
}

fn not_found(account_id: i64) -> StoreError {
    StoreError::NotFound(format!("id {account_id}"))
}

#[async_trait::async_trait]
impl CredentialStore for PgStore {
    async fn verify_login(
        &self,
        user: &str,
        password: &Secret,
    ) -> Result<Option<Account>, StoreError> {
        let tag = self.inner.logins.tag(user, password);
        let found = async {
            let client = self.client().await?;
            let Some(account) = account_by_name(&client, user).await? else {
                return Ok(None);
            };
            let rows = password_rows(&client, account.id).await?;
            Ok::<_, StoreError>(Some((account, rows)))
        }
        .await;
        let found = match found {
            Ok(found) => found,
            Err(e) if e.is_temporary() => {
                if let Some(account) = self.outage_login(user, &tag) {
                    tracing::warn!(user, error = %e, "store unavailable; login accepted from this replica's recent verification");
                    return Ok(Some(account));
                }
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let Some((account, rows)) = found else {
            self.known().remove(user);
            self.inner.argon2.verify(password, None).await?;
            tracing::debug!(user, "login for unknown account");
            return Ok(None);
        };
        let verifiers: Vec<_> = rows
            .iter()
            .map(|row| login_cache::verifier_digest(&row.hash))
            .collect();
        let index = match self
            .inner
            .logins
            .hit(&tag, account.id, &verifiers, Instant::now())
        {
            Some(index) => Some(index),
            None => {
                let hashes = rows.iter().map(|row| row.hash.clone()).collect();
                self.inner.argon2.verify_any(password, hashes).await?
            }
        };
        match index {
            Some(index) => {
                self.remember_login(user, tag, &account, &rows, index);
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
        let client = self.client().await?;
        let (sealed, sealing) = sealed_refresh_token(&client, account_id).await?;
        sealed
            .map(|sealed| {
                grant_key::open_refresh_token(self.key(), sealing, key, account_id, &sealed)
            })
            .transpose()
    }

    async fn replace_refresh_token(
        &self,
        account_id: i64,
        token: &Secret,
        key: Option<&GrantKey>,
    ) -> Result<(), StoreError> {
        if token.is_empty() {
            return Err(StoreError::Invalid(
                "refresh token must not be empty".into(),
            ));
        }
        let client = self.client().await?;
        // The sealing of an account never changes after it is created.
        let (_, sealing) = sealed_refresh_token(&client, account_id).await?;
        let sealed = grant_key::seal_refresh_token(self.key(), sealing, key, account_id, token)?;
        let changed = client
            .execute(
                "UPDATE accounts SET refresh_token = $2, refresh_token_updated_at = $3, \
                 updated_at = $3, grant_version = grant_version + 1, access_token = NULL, \
                 access_token_shared_until = NULL WHERE id = $1",
                &[&account_id, &sealed, &unix_now()],
            )
            .await?;
        if changed != 1 {
            return Err(not_found(account_id));
        }
        tracing::debug!(account_id, "refresh token replaced");
        Ok(())
    }

    async fn set_status(
        &self,
        account_id: i64,
        status: AccountStatus,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        let changed = client
            .execute(
                "UPDATE accounts SET status = $2, status_reason = $3, updated_at = $4, \
                 grant_version = grant_version + 1, access_token = NULL, \
                 access_token_shared_until = NULL WHERE id = $1",
                &[&account_id, &status.as_str(), &reason, &unix_now()],
            )
            .await?;
        if changed != 1 {
            return Err(not_found(account_id));
        }
        tracing::debug!(account_id, %status, reason, "account status set");
        Ok(())
    }

    async fn record_login(&self, account_id: i64) -> Result<(), StoreError> {
        let client = self.client().await?;
        let now = unix_now();
        let changed = client
            .execute(
                "UPDATE accounts SET last_login_at = $2 \
                 WHERE id = $1 AND (last_login_at IS NULL OR last_login_at <= $2 - $3)",
                &[&account_id, &now, &LOGIN_TIMESTAMP_GRANULARITY],
            )
            .await?;
        if changed == 1 {
            return Ok(());
        }
        let exists = client
            .query_opt("SELECT 1 FROM accounts WHERE id = $1", &[&account_id])
            .await?;
        exists.map(|_| ()).ok_or_else(|| not_found(account_id))
    }

    async fn add_account(&self, new: NewAccount) -> Result<Account, StoreError> {
        new.validate()?;
        let hash = self.inner.argon2.hash(&new.password).await?;
        let grant_key = (new.sealing == Sealing::Password).then(GrantKey::generate);
        let grant = match new.grant {
            NewGrant::ClientCredentials => GrantKind::ClientCredentials,
            NewGrant::RefreshToken(_) => GrantKind::RefreshToken,
            NewGrant::Password => GrantKind::Password,
        };
        let now = unix_now();
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let inserted = tx
            .query_one(
                "INSERT INTO accounts (name, mailbox, app, grant_kind, protocols, status, \
                 created_at, updated_at, sealing) VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8) \
                 RETURNING id",
                &[
                    &new.name,
                    &new.mailbox,
                    &new.app,
                    &grant.as_str(),
                    &protocols_to_text(&new.protocols),
                    &AccountStatus::Active.as_str(),
                    &now,
                    &new.sealing.as_str(),
                ],
            )
            .await;
        let id: i64 = match inserted {
            Ok(row) => row.try_get(0)?,
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::AlreadyExists(new.name.clone()))
            }
            Err(e) => return Err(e.into()),
        };
        // The id is only known after the insert, and the seals are bound to it.
        let slot = match &grant_key {
            Some(key) => {
                Some(grant_key::new_slot(&self.inner.argon2, key, &new.password, id).await?)
            }
            None => None,
        };
        tx.execute(
            "INSERT INTO account_passwords (account_id, name, hash, created_at, key_slot) \
             VALUES ($1, $2, $3, $4, $5)",
            &[&id, &DEFAULT_PASSWORD, &hash, &now, &slot],
        )
        .await?;
        if let NewGrant::RefreshToken(token) = &new.grant {
            let sealed = grant_key::seal_refresh_token(
                self.key(),
                new.sealing,
                grant_key.as_ref(),
                id,
                token,
            )?;
            tx.execute(
                "UPDATE accounts SET refresh_token = $2, refresh_token_updated_at = $3 \
                 WHERE id = $1",
                &[&id, &sealed, &now],
            )
            .await?;
        }
        let account = account_by_name(&tx, &new.name).await?.ok_or_else(|| {
            StoreError::Corrupt(format!("account {:?} vanished after insert", new.name))
        })?;
        tx.commit().await?;
        tracing::debug!(name = account.name, id = account.id, grant = %account.grant, "account added");
        Ok(account)
    }

    async fn list_accounts(&self) -> Result<Vec<Account>, StoreError> {
        let client = self.client().await?;
        client
            .query(
                &format!("SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY name"),
                &[],
            )
            .await?
            .iter()
            .map(account_from_row)
            .collect()
    }

    async fn account(&self, name: &str) -> Result<Option<Account>, StoreError> {
        let client = self.client().await?;
        account_by_name(&client, name).await
    }

    async fn remove_account(&self, name: &str) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let removed = client
            .query_opt(
                "DELETE FROM accounts WHERE name = $1 RETURNING id",
                &[&name],
            )
            .await?;
        match removed {
            Some(row) => {
                let id: i64 = row.try_get(0)?;
                self.forget_logins(id);
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
        let (id, sibling) = self.id_and_sibling(name).await?;
        let slot = self.slot_for_new_password(name, password, current).await?;
        let hash = self.inner.argon2.hash_like(password, sibling).await?;
        let now = unix_now();
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute(
            "INSERT INTO account_passwords (account_id, name, hash, created_at, key_slot) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (account_id, name) \
             DO UPDATE SET hash = excluded.hash, created_at = excluded.created_at, \
             last_used_at = NULL, key_slot = excluded.key_slot",
            &[&id, &DEFAULT_PASSWORD, &hash, &now, &slot],
        )
        .await?;
        tx.execute(
            "UPDATE accounts SET updated_at = $2 WHERE id = $1",
            &[&id, &now],
        )
        .await?;
        tx.commit().await?;
        self.forget_logins(id);
        tracing::debug!(name, id, "password changed");
        Ok(())
    }

    async fn import_refresh_token(&self, name: &str, token: &Secret) -> Result<(), StoreError> {
        if token.is_empty() {
            return Err(StoreError::Invalid(
                "refresh token must not be empty".into(),
            ));
        }
        let client = self.client().await?;
        let id = account_id(&client, name)
            .await?
            .ok_or_else(|| StoreError::NotFound(name.to_owned()))?;
        if sealed_refresh_token(&client, id).await?.1 == Sealing::Password {
            return Err(grant_key::import_refused(name));
        }
        let sealed = seal::seal(self.key(), Purpose::RefreshToken(id), token.expose())?;
        client
            .execute(
                "UPDATE accounts SET refresh_token = $2, refresh_token_updated_at = $3, \
                 updated_at = $3, grant_kind = $4, status = $5, status_reason = NULL, \
                 grant_version = grant_version + 1, access_token = NULL, \
                 access_token_shared_until = NULL WHERE id = $1",
                &[
                    &id,
                    &sealed,
                    &unix_now(),
                    &GrantKind::RefreshToken.as_str(),
                    &AccountStatus::Active.as_str(),
                ],
            )
            .await?;
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
        let (id, sibling) = self.id_and_sibling(name).await?;
        let slot = self.slot_for_new_password(name, password, current).await?;
        let hash = self.inner.argon2.hash_like(password, sibling).await?;
        let now = unix_now();
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // Serialises concurrent additions to one account, for the count below.
        tx.execute("SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE", &[&id])
            .await?;
        if password_rows(&tx, id).await?.len() >= MAX_PASSWORDS {
            return Err(StoreError::Invalid(format!(
                "account {name:?} already has {MAX_PASSWORDS} passwords; revoke one first"
            )));
        }
        let inserted = tx
            .execute(
                "INSERT INTO account_passwords (account_id, name, hash, created_at, key_slot) \
                 VALUES ($1, $2, $3, $4, $5)",
                &[&id, &password_name, &hash, &now, &slot],
            )
            .await;
        match inserted {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::AlreadyExists(format!(
                    "password {password_name}"
                )))
            }
            Err(e) => return Err(e.into()),
        }
        tx.execute(
            "UPDATE accounts SET updated_at = $2 WHERE id = $1",
            &[&id, &now],
        )
        .await?;
        tx.commit().await?;
        tracing::debug!(name, password_name, "password added");
        Ok(())
    }

    async fn revoke_password(&self, name: &str, password_name: &str) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let id = account_id(&tx, name)
            .await?
            .ok_or_else(|| StoreError::NotFound(name.to_owned()))?;
        tx.execute("SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE", &[&id])
            .await?;
        let rows = password_rows(&tx, id).await?;
        if !rows.iter().any(|row| row.name == password_name) {
            return Ok(false);
        }
        if rows.len() == 1 {
            return Err(StoreError::Invalid(format!(
                "{password_name:?} is the last password of {name:?}; add another first, \
                 or remove the account"
            )));
        }
        tx.execute(
            "DELETE FROM account_passwords WHERE account_id = $1 AND name = $2",
            &[&id, &password_name],
        )
        .await?;
        tx.execute(
            "UPDATE accounts SET updated_at = $2 WHERE id = $1",
            &[&id, &unix_now()],
        )
        .await?;
        tx.commit().await?;
        // A cached login with the revoked password must stop working now.
        self.forget_logins(id);
        tracing::debug!(name, password_name, "password revoked");
        Ok(true)
    }

    async fn passwords(&self, name: &str) -> Result<Vec<PasswordInfo>, StoreError> {
        let client = self.client().await?;
        let id = account_id(&client, name)
            .await?
            .ok_or_else(|| StoreError::NotFound(name.to_owned()))?;
        client
            .query(
                "SELECT name, created_at, last_used_at FROM account_passwords \
                 WHERE account_id = $1 ORDER BY name",
                &[&id],
            )
            .await?
            .iter()
            .map(|row| {
                Ok(PasswordInfo {
                    name: row.try_get(0)?,
                    created_at: row.try_get(1)?,
                    last_used_at: row.try_get(2)?,
                })
            })
            .collect()
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
        let column = IDENTITY_COLUMNS
            .iter()
            .find(|(p, _)| *p == protocol)
            .map(|(_, c)| *c)
            .ok_or_else(|| StoreError::Invalid(format!("no identity column for {protocol}")))?;
        let client = self.client().await?;
        // The column name comes from the fixed table above, never from input.
        let changed = client
            .execute(
                &format!("UPDATE accounts SET {column} = $2, updated_at = $3 WHERE name = $1"),
                &[&name, &mailbox, &unix_now()],
            )
            .await?;
        if changed == 1 {
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
        let client = self.client().await?;
        let changed = client
            .execute(
                "UPDATE accounts SET last_refresh_at = $2, access_token_expires_at = $3 \
                 WHERE id = $1",
                &[&account_id, &unix_now(), &access_token_expires_at],
            )
            .await?;
        (changed == 1)
            .then_some(())
            .ok_or_else(|| not_found(account_id))
    }

    async fn record_grant_failure(
        &self,
        account_id: i64,
        failure: &GrantFailure,
    ) -> Result<(), StoreError> {
        let codes = failure
            .codes
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let client = self.client().await?;
        let changed = client
            .execute(
                "UPDATE accounts SET last_failure_at = $2, last_failure_class = $3, \
                 last_failure_codes = $4, last_failure_reason = $5, last_failure_claims = $6 \
                 WHERE id = $1",
                &[
                    &account_id,
                    &failure.at,
                    &failure.class,
                    &codes,
                    &failure.reason,
                    &GrantFailure::bounded_claims(failure.claims.as_deref()),
                ],
            )
            .await?;
        (changed == 1)
            .then_some(())
            .ok_or_else(|| not_found(account_id))
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
        let client = self.client().await?;
        let changed = client
            .execute(
                "UPDATE accounts SET status = $2, status_reason = $3, updated_at = $4, \
                 grant_version = grant_version + 1, access_token = NULL, \
                 access_token_shared_until = NULL WHERE id = $1 AND status = $5",
                &[
                    &account_id,
                    &AccountStatus::NeedsReconsent.as_str(),
                    &reason,
                    &unix_now(),
                    &AccountStatus::Active.as_str(),
                ],
            )
            .await?;
        Ok(changed == 1)
    }

    fn is_shared(&self) -> bool {
        true
    }

    async fn load_shared_token(&self, account_id: i64) -> Result<Option<SharedToken>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT grant_version, access_token, access_token_shared_until \
                 FROM accounts WHERE id = $1",
                &[&account_id],
            )
            .await?
            .ok_or_else(|| not_found(account_id))?;
        shared_token_from_row(self.key(), account_id, &row)
    }

    async fn grant_version(&self, account_id: i64) -> Result<Option<i64>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached("SELECT grant_version FROM accounts WHERE id = $1")
            .await?;
        Ok(client
            .query_opt(&statement, &[&account_id])
            .await?
            .map(|row| row.try_get(0))
            .transpose()?)
    }

    async fn lock_refresh(&self, account_id: i64) -> Result<Box<dyn RefreshLock>, StoreError> {
        let client = self.client().await?;
        // From here on, dropping the lock (also on cancellation) rolls the transaction back.
        let mut lock = PgRefreshLock {
            client: Some(client),
            key: MasterKey::from_base64(self.key().to_base64().expose_str().unwrap_or(""))?,
            account_id,
            version: 0,
            shared: None,
            sealing: Sealing::MasterKey,
        };
        let timeout_ms = i64::try_from(self.inner.lock_timeout.as_millis()).unwrap_or(i64::MAX);
        let row = {
            let client = lock.client()?;
            client
                .batch_execute(&format!("BEGIN; SET LOCAL lock_timeout = {timeout_ms}"))
                .await?;
            client
                .execute("SELECT pg_advisory_xact_lock($1)", &[&account_id])
                .await?;
            // A new statement, so a new snapshot: it sees what the previous holder committed.
            client
                .query_opt(
                    "SELECT grant_version, access_token, access_token_shared_until, sealing \
                     FROM accounts WHERE id = $1",
                    &[&account_id],
                )
                .await?
                .ok_or_else(|| not_found(account_id))?
        };
        lock.version = row.try_get(0)?;
        lock.sealing = Sealing::parse(&row.try_get::<_, String>(3)?)?;
        lock.shared = shared_token_from_row(&lock.key, account_id, &row)?;
        Ok(Box::new(lock))
    }

    async fn check_health(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        client.simple_query("SELECT 1").await?;
        Ok(())
    }
}

fn shared_token_from_row(
    key: &MasterKey,
    account_id: i64,
    row: &Row,
) -> Result<Option<SharedToken>, StoreError> {
    let version: i64 = row.try_get(0)?;
    let sealed: Option<Vec<u8>> = row.try_get(1)?;
    let until: Option<i64> = row.try_get(2)?;
    let (Some(sealed), Some(expires_at)) = (sealed, until) else {
        return Ok(None);
    };
    let secret = seal::open(key, Purpose::AccessToken(account_id), &sealed)?;
    Ok(Some(SharedToken {
        secret: Secret::new(secret.to_vec()),
        expires_at,
        version,
    }))
}

/// The advisory lock of one account, held in an open transaction on one pooled connection.
struct PgRefreshLock {
    /// `None` once committed or handed to the rollback task.
    client: Option<Object>,
    key: MasterKey,
    account_id: i64,
    version: i64,
    shared: Option<SharedToken>,
    sealing: Sealing,
}

impl fmt::Debug for PgRefreshLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgRefreshLock")
            .field("account_id", &self.account_id)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl PgRefreshLock {
    fn client(&self) -> Result<&Object, StoreError> {
        self.client
            .as_ref()
            .ok_or_else(|| StoreError::Unavailable("refresh lock already released".into()))
    }
}

impl Drop for PgRefreshLock {
    /// Rolls back (releasing the lock) before the connection goes back to the pool; without a
    /// runtime to do that on, the connection is closed instead, which ends the transaction.
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    if client.batch_execute("ROLLBACK").await.is_err() {
                        drop(Object::take(client));
                    }
                });
            }
            Err(_) => drop(Object::take(client)),
        }
    }
}

#[async_trait::async_trait]
impl RefreshLock for PgRefreshLock {
    fn version(&self) -> i64 {
        self.version
    }

    fn shared_token(&self) -> Option<SharedToken> {
        self.shared.clone()
    }

    async fn refresh_token(
        &mut self,
        key: Option<&GrantKey>,
    ) -> Result<Option<Secret>, StoreError> {
        let (sealed, sealing) = sealed_refresh_token(self.client()?, self.account_id).await?;
        sealed
            .map(|sealed| {
                grant_key::open_refresh_token(&self.key, sealing, key, self.account_id, &sealed)
            })
            .transpose()
    }

    async fn commit(
        mut self: Box<Self>,
        rotated: Option<&Secret>,
        key: Option<&GrantKey>,
        access_token: &Secret,
        expires_at: i64,
    ) -> Result<i64, StoreError> {
        let id = self.account_id;
        let sealed_access = seal::seal(&self.key, Purpose::AccessToken(id), access_token.expose())?;
        let sealed_refresh = rotated
            .filter(|token| !token.is_empty())
            .map(|token| grant_key::seal_refresh_token(&self.key, self.sealing, key, id, token))
            .transpose()?;
        let now = unix_now();
        let client = self.client()?;
        let row = client
            .query_opt(
                "UPDATE accounts SET grant_version = grant_version + 1, access_token = $2, \
                 access_token_shared_until = $3, \
                 refresh_token = COALESCE($4, refresh_token), \
                 refresh_token_updated_at = CASE WHEN $4::bytea IS NULL \
                     THEN refresh_token_updated_at ELSE $5 END, \
                 updated_at = CASE WHEN $4::bytea IS NULL THEN updated_at ELSE $5 END \
                 WHERE id = $1 RETURNING grant_version",
                &[&id, &sealed_access, &expires_at, &sealed_refresh, &now],
            )
            .await?
            .ok_or_else(|| not_found(id))?;
        let version: i64 = row.try_get(0)?;
        client.batch_execute("COMMIT").await?;
        // Committed: the connection goes back to the pool as is.
        self.client = None;
        Ok(version)
    }
}
