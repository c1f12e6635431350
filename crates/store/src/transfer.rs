//! Moving a whole store between backends: SQLite → PostgreSQL and back
//! (`oxbridge store migrate`).
//!
//! Rows are copied as they are, ids included, and sealed secrets are copied **as is**, not
//! re-sealed: both backends seal with the same algorithm and bind each blob to the account
//! id, so with the same master key every blob opens on the other side unchanged, and the
//! plaintext never passes through this code. The master key is therefore a precondition, not
//! a parameter: both stores are opened with the configured key, which must open the source's
//! key check (a store sealed under another key is refused before anything is written).
//! Shared access tokens (PostgreSQL only) are not copied: they are a cache.
//!
//! The target must hold no accounts; everything is written in one transaction, then every
//! sealed refresh token is opened in the target to prove that nothing was lost.

use std::path::PathBuf;

use crate::error::StoreError;
use crate::key::MasterKey;
use crate::pg::{self, PgSettings, PgStore};
use crate::seal::{self, Purpose};
use crate::sqlite::{SqliteStore, DATABASE_FILE};

/// A store to copy from or to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// The SQLite file (a directory means `DIR/oxbridge.db`).
    Sqlite(PathBuf),
    /// A `postgres://` URL.
    Postgres(String),
}

impl Location {
    /// `postgres://…` or `postgresql://…` is PostgreSQL; anything else a SQLite path.
    pub fn parse(text: &str) -> Location {
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return Location::Postgres(text.to_owned());
        }
        let path = PathBuf::from(text);
        if path.is_dir() {
            Location::Sqlite(path.join(DATABASE_FILE))
        } else {
            Location::Sqlite(path)
        }
    }

    /// For messages: the path, or the URL's host, port and database without credentials.
    pub fn describe(&self) -> String {
        match self {
            Location::Sqlite(path) => path.display().to_string(),
            Location::Postgres(url) => match pg::parse_url(url, &PgSettings::default()) {
                Ok(config) => format!("postgres {}", pg::describe(&config)),
                Err(_) => "postgres (unparsable URL)".to_string(),
            },
        }
    }
}

/// What a migration copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    pub accounts: usize,
    pub passwords: usize,
    pub refresh_tokens: usize,
}

#[derive(Debug, Clone)]
enum Cell {
    Int(Option<i64>),
    Text(Option<String>),
    Blob(Option<Vec<u8>>),
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Int,
    Text,
    Blob,
}

/// Every account column both backends have, in one order.
const ACCOUNT_COLUMNS: &[(&str, Kind)] = &[
    ("id", Kind::Int),
    ("name", Kind::Text),
    ("mailbox", Kind::Text),
    ("app", Kind::Text),
    ("grant_kind", Kind::Text),
    ("protocols", Kind::Text),
    ("status", Kind::Text),
    ("status_reason", Kind::Text),
    ("refresh_token", Kind::Blob),
    ("created_at", Kind::Int),
    ("updated_at", Kind::Int),
    ("last_login_at", Kind::Int),
    ("refresh_token_updated_at", Kind::Int),
    ("imap_mailbox", Kind::Text),
    ("pop3_mailbox", Kind::Text),
    ("smtp_mailbox", Kind::Text),
    ("last_refresh_at", Kind::Int),
    ("access_token_expires_at", Kind::Int),
    ("last_failure_at", Kind::Int),
    ("last_failure_class", Kind::Text),
    ("last_failure_codes", Kind::Text),
    ("last_failure_reason", Kind::Text),
    ("sealing", Kind::Text),
    ("last_failure_claims", Kind::Text),
];

const PASSWORD_COLUMNS: &[(&str, Kind)] = &[
    ("account_id", Kind::Int),
    ("name", Kind::Text),
    ("hash", Kind::Text),
    ("created_at", Kind::Int),
    ("last_used_at", Kind::Int),
    ("key_slot", Kind::Blob),
];

const META_COLUMNS: &[(&str, Kind)] = &[("key", Kind::Text), ("value", Kind::Blob)];

/// A whole store, raw.
#[derive(Debug, Default)]
struct Dump {
    accounts: Vec<Vec<Cell>>,
    passwords: Vec<Vec<Cell>>,
    /// Store-wide values except the key check, which each store keeps for itself.
    meta: Vec<Vec<Cell>>,
    /// Highest account id ever handed out, so ids stay unique after the move.
    high_water: i64,
}

fn names(columns: &[(&str, Kind)]) -> String {
    columns
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Copies every account, password and store-wide value from `from` to `to`, which must hold
/// no accounts yet. Both are opened (and their schemas brought up to date) with `key`.
pub async fn migrate(
    from: &Location,
    to: &Location,
    key: &MasterKey,
) -> Result<Copied, StoreError> {
    if from == to {
        return Err(StoreError::Invalid(
            "source and target are the same store".into(),
        ));
    }
    // Opening migrates the schema and checks the key against each store.
    open_checked(from, key).await?;
    open_checked(to, key).await?;
    let dump = read(from).await?;
    let copied = write(to, dump).await?;
    verify(to, key, copied).await?;
    Ok(copied)
}

async fn open_checked(location: &Location, key: &MasterKey) -> Result<(), StoreError> {
    let key = MasterKey::from_base64(key.to_base64().expose_str().unwrap_or(""))?;
    match location.clone() {
        Location::Sqlite(path) => {
            tokio::task::spawn_blocking(move || SqliteStore::open(&path, key).map(drop))
                .await
                .map_err(|e| StoreError::unavailable("open", e))?
        }
        Location::Postgres(url) => tokio::task::spawn_blocking(move || {
            PgStore::open(&url, key, &PgSettings::default()).map(drop)
        })
        .await
        .map_err(|e| StoreError::unavailable("open", e))?,
    }
}

async fn pg_connect(url: &str) -> Result<tokio_postgres::Client, StoreError> {
    let settings = PgSettings::default();
    let config = pg::parse_url(url, &settings)?;
    let (client, connection) = config.connect(pg::tls(&settings)?).await?;
    tokio::spawn(connection);
    Ok(client)
}

fn sqlite_rows(
    conn: &rusqlite::Connection,
    table: &str,
    columns: &[(&str, Kind)],
    filter: &str,
) -> Result<Vec<Vec<Cell>>, StoreError> {
    let mut statement =
        conn.prepare(&format!("SELECT {} FROM {table} {filter}", names(columns)))?;
    let rows = statement.query_map([], |row| {
        columns
            .iter()
            .enumerate()
            .map(|(i, (_, kind))| {
                Ok(match kind {
                    Kind::Int => Cell::Int(row.get(i)?),
                    Kind::Text => Cell::Text(row.get(i)?),
                    Kind::Blob => Cell::Blob(row.get(i)?),
                })
            })
            .collect::<rusqlite::Result<Vec<_>>>()
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

async fn pg_rows(
    client: &tokio_postgres::Client,
    table: &str,
    columns: &[(&str, Kind)],
    filter: &str,
) -> Result<Vec<Vec<Cell>>, StoreError> {
    let rows = client
        .query(
            &format!("SELECT {} FROM {table} {filter}", names(columns)),
            &[],
        )
        .await?;
    rows.iter()
        .map(|row| {
            columns
                .iter()
                .enumerate()
                .map(|(i, (_, kind))| {
                    Ok(match kind {
                        Kind::Int => Cell::Int(row.try_get(i)?),
                        Kind::Text => Cell::Text(row.try_get(i)?),
                        Kind::Blob => Cell::Blob(row.try_get(i)?),
                    })
                })
                .collect()
        })
        .collect()
}

async fn read(location: &Location) -> Result<Dump, StoreError> {
    match location {
        Location::Sqlite(path) => {
            let path = path.clone();
            tokio::task::spawn_blocking(move || {
                let conn = rusqlite::Connection::open(&path)?;
                let high_water: Option<i64> = conn
                    .query_row(
                        "SELECT seq FROM sqlite_sequence WHERE name = 'accounts'",
                        [],
                        |r| r.get(0),
                    )
                    .ok();
                Ok(Dump {
                    accounts: sqlite_rows(&conn, "accounts", ACCOUNT_COLUMNS, "ORDER BY id")?,
                    passwords: sqlite_rows(&conn, "account_passwords", PASSWORD_COLUMNS, "")?,
                    meta: sqlite_rows(&conn, "meta", META_COLUMNS, "WHERE key <> 'key_check'")?,
                    high_water: high_water.unwrap_or(0),
                })
            })
            .await
            .map_err(|e| StoreError::unavailable("read", e))?
        }
        Location::Postgres(url) => {
            let client = pg_connect(url).await?;
            let high_water: Option<i64> = client
                .query_one(
                    "SELECT pg_sequence_last_value(pg_get_serial_sequence('accounts', 'id'))",
                    &[],
                )
                .await?
                .try_get(0)?;
            Ok(Dump {
                accounts: pg_rows(&client, "accounts", ACCOUNT_COLUMNS, "ORDER BY id").await?,
                passwords: pg_rows(&client, "account_passwords", PASSWORD_COLUMNS, "").await?,
                meta: pg_rows(&client, "meta", META_COLUMNS, "WHERE key <> 'key_check'").await?,
                high_water: high_water.unwrap_or(0),
            })
        }
    }
}

fn refresh_tokens(dump: &Dump) -> usize {
    dump.accounts
        .iter()
        .filter(|row| matches!(row.get(8), Some(Cell::Blob(Some(_)))))
        .count()
}

fn max_id(dump: &Dump) -> i64 {
    dump.accounts
        .iter()
        .filter_map(|row| match row.first() {
            Some(Cell::Int(Some(id))) => Some(*id),
            _ => None,
        })
        .max()
        .unwrap_or(0)
        .max(dump.high_water)
}

fn refuse_non_empty(count: i64) -> Result<(), StoreError> {
    if count > 0 {
        return Err(StoreError::Invalid(format!(
            "the target already holds {count} account(s); migrate only into an empty store"
        )));
    }
    Ok(())
}

async fn write(location: &Location, dump: Dump) -> Result<Copied, StoreError> {
    let copied = Copied {
        accounts: dump.accounts.len(),
        passwords: dump.passwords.len(),
        refresh_tokens: refresh_tokens(&dump),
    };
    let high = max_id(&dump);
    match location {
        Location::Sqlite(path) => {
            let path = path.clone();
            tokio::task::spawn_blocking(move || {
                let mut conn = rusqlite::Connection::open(&path)?;
                conn.pragma_update(None, "foreign_keys", "ON")?;
                let tx =
                    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                refuse_non_empty(tx.query_row("SELECT count(*) FROM accounts", [], |r| r.get(0))?)?;
                for (table, columns, rows, upsert) in [
                    ("accounts", ACCOUNT_COLUMNS, &dump.accounts, ""),
                    ("account_passwords", PASSWORD_COLUMNS, &dump.passwords, ""),
                    (
                        "meta",
                        META_COLUMNS,
                        &dump.meta,
                        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    ),
                ] {
                    let placeholders = (1..=columns.len())
                        .map(|i| format!("?{i}"))
                        .collect::<Vec<_>>()
                        .join(", ");
                    let sql = format!(
                        "INSERT INTO {table} ({}) VALUES ({placeholders}){upsert}",
                        names(columns)
                    );
                    for row in rows {
                        let values: Vec<rusqlite::types::Value> = row
                            .iter()
                            .map(|cell| match cell.clone() {
                                Cell::Int(v) => v.map_or(
                                    rusqlite::types::Value::Null,
                                    rusqlite::types::Value::Integer,
                                ),
                                Cell::Text(v) => v.map_or(
                                    rusqlite::types::Value::Null,
                                    rusqlite::types::Value::Text,
                                ),
                                Cell::Blob(v) => v.map_or(
                                    rusqlite::types::Value::Null,
                                    rusqlite::types::Value::Blob,
                                ),
                            })
                            .collect();
                        tx.execute(&sql, rusqlite::params_from_iter(values))?;
                    }
                }
                let updated = tx.execute(
                    "UPDATE sqlite_sequence SET seq = max(seq, ?1) WHERE name = 'accounts'",
                    [high],
                )?;
                if updated == 0 && high > 0 {
                    tx.execute(
                        "INSERT INTO sqlite_sequence (name, seq) VALUES ('accounts', ?1)",
                        [high],
                    )?;
                }
                tx.commit()?;
                Ok(copied)
            })
            .await
            .map_err(|e| StoreError::unavailable("write", e))?
        }
        Location::Postgres(url) => {
            let mut client = pg_connect(url).await?;
            let tx = client.transaction().await?;
            // No replica may add an account while the copy runs.
            tx.batch_execute("LOCK TABLE accounts IN EXCLUSIVE MODE")
                .await?;
            let count: i64 = tx
                .query_one("SELECT count(*) FROM accounts", &[])
                .await?
                .try_get(0)?;
            refuse_non_empty(count)?;
            for (table, columns, rows, upsert) in [
                ("accounts", ACCOUNT_COLUMNS, &dump.accounts, ""),
                ("account_passwords", PASSWORD_COLUMNS, &dump.passwords, ""),
                (
                    "meta",
                    META_COLUMNS,
                    &dump.meta,
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                ),
            ] {
                let placeholders = (1..=columns.len())
                    .map(|i| format!("${i}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let statement = tx
                    .prepare(&format!(
                        "INSERT INTO {table} ({}) VALUES ({placeholders}){upsert}",
                        names(columns)
                    ))
                    .await?;
                for row in rows {
                    let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = row
                        .iter()
                        .map(|cell| match cell {
                            Cell::Int(v) => v as &(dyn tokio_postgres::types::ToSql + Sync),
                            Cell::Text(v) => v as &(dyn tokio_postgres::types::ToSql + Sync),
                            Cell::Blob(v) => v as &(dyn tokio_postgres::types::ToSql + Sync),
                        })
                        .collect();
                    tx.execute(&statement, &params).await?;
                }
            }
            if high > 0 {
                tx.execute(
                    "SELECT setval(pg_get_serial_sequence('accounts', 'id'), \
                     GREATEST($1, (SELECT COALESCE(max(id), 1) FROM accounts)))",
                    &[&high],
                )
                .await?;
            }
            tx.commit().await?;
            Ok(copied)
        }
    }
}

/// Reads the target back: the counts match and every sealed refresh token opens under the
/// key, bound to its account id (for a password-sealed account, its outer layer: the inner
/// one needs a password and is copied byte for byte like the key slots).
async fn verify(location: &Location, key: &MasterKey, expected: Copied) -> Result<(), StoreError> {
    let dump = read(location).await?;
    let found = Copied {
        accounts: dump.accounts.len(),
        passwords: dump.passwords.len(),
        refresh_tokens: refresh_tokens(&dump),
    };
    if found != expected {
        return Err(StoreError::Corrupt(format!(
            "after the copy the target holds {found:?}, expected {expected:?}"
        )));
    }
    for row in &dump.accounts {
        if let (Some(Cell::Int(Some(id))), Some(Cell::Blob(Some(blob)))) = (row.first(), row.get(8))
        {
            seal::open(key, Purpose::RefreshToken(*id), blob)?;
        }
    }
    Ok(())
}
