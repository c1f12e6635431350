//! The SQL the SQLite store runs: plain synchronous functions over a connection, one per
//! operation, so the async layer only decides where they run and what they are given.

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::account::{protocols_to_text, Account, AccountStatus, GrantKind, NewAccount};
use crate::error::StoreError;
use crate::schema::DEFAULT_PASSWORD;

/// The columns [`account_from_row`] reads, in its order.
const ACCOUNT_COLUMNS: &str = "a.id, a.name, a.mailbox, a.app, a.grant_kind, a.protocols, \
     a.status, a.status_reason, a.created_at, a.updated_at, a.last_login_at, \
     a.refresh_token_updated_at";

/// An account row as SQLite returns it, before the text columns are parsed.
struct AccountRow {
    id: i64,
    name: String,
    mailbox: String,
    app: String,
    grant: String,
    protocols: String,
    status: String,
    status_reason: Option<String>,
    created_at: i64,
    updated_at: i64,
    last_login_at: Option<i64>,
    refresh_token_updated_at: Option<i64>,
}

fn account_row(row: &Row<'_>) -> rusqlite::Result<AccountRow> {
    Ok(AccountRow {
        id: row.get(0)?,
        name: row.get(1)?,
        mailbox: row.get(2)?,
        app: row.get(3)?,
        grant: row.get(4)?,
        protocols: row.get(5)?,
        status: row.get(6)?,
        status_reason: row.get(7)?,
        created_at: row.get(8)?,
        updated_at: row.get(9)?,
        last_login_at: row.get(10)?,
        refresh_token_updated_at: row.get(11)?,
    })
}

impl TryFrom<AccountRow> for Account {
    type Error = StoreError;

    fn try_from(row: AccountRow) -> Result<Self, StoreError> {
        let corrupt = |e: StoreError| StoreError::Corrupt(format!("account {:?}: {e}", row.name));
        Ok(Account {
            id: row.id,
            grant: row.grant.parse::<GrantKind>().map_err(corrupt)?,
            protocols: crate::account::protocols_from_text(&row.protocols).map_err(corrupt)?,
            status: row.status.parse::<AccountStatus>().map_err(corrupt)?,
            name: row.name,
            mailbox: row.mailbox,
            app: row.app,
            status_reason: row.status_reason,
            created_at: row.created_at,
            updated_at: row.updated_at,
            last_login_at: row.last_login_at,
            refresh_token_updated_at: row.refresh_token_updated_at,
        })
    }
}

fn is_unique_violation(error: &rusqlite::Error) -> bool {
    matches!(error, rusqlite::Error::SqliteFailure(e, _)
        if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
}

/// Inserts the account and its default password; returns the new id.
pub(crate) fn insert_account(
    conn: &Connection,
    new: &NewAccount,
    grant: GrantKind,
    password_hash: &str,
    now: i64,
) -> Result<i64, StoreError> {
    conn.execute(
        "INSERT INTO accounts (name, mailbox, app, grant_kind, protocols, status, \
         created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
        params![
            new.name,
            new.mailbox,
            new.app,
            grant.as_str(),
            protocols_to_text(&new.protocols),
            AccountStatus::Active.as_str(),
            now
        ],
    )
    .map_err(|e| {
        if is_unique_violation(&e) {
            StoreError::AlreadyExists(new.name.clone())
        } else {
            e.into()
        }
    })?;
    let id = conn.last_insert_rowid();
    conn.execute(
        "INSERT INTO account_passwords (account_id, name, hash, created_at) \
         VALUES (?1, ?2, ?3, ?4)",
        params![id, DEFAULT_PASSWORD, password_hash, now],
    )?;
    Ok(id)
}

pub(crate) fn account_by_name(
    conn: &Connection,
    name: &str,
) -> Result<Option<Account>, StoreError> {
    conn.query_row(
        &format!("SELECT {ACCOUNT_COLUMNS} FROM accounts a WHERE a.name = ?1"),
        [name],
        account_row,
    )
    .optional()?
    .map(Account::try_from)
    .transpose()
}

pub(crate) fn account_id(conn: &Connection, name: &str) -> Result<Option<i64>, StoreError> {
    Ok(conn
        .query_row("SELECT id FROM accounts WHERE name = ?1", [name], |r| {
            r.get(0)
        })
        .optional()?)
}

/// The account and its default password verifier, for a login check.
pub(crate) fn login_by_name(
    conn: &Connection,
    name: &str,
) -> Result<Option<(Account, String)>, StoreError> {
    let found = conn
        .query_row(
            &format!(
                "SELECT {ACCOUNT_COLUMNS}, p.hash FROM accounts a \
                 JOIN account_passwords p ON p.account_id = a.id AND p.name = ?2 \
                 WHERE a.name = ?1"
            ),
            params![name, DEFAULT_PASSWORD],
            |row| Ok((account_row(row)?, row.get::<_, String>(12)?)),
        )
        .optional()?;
    found
        .map(|(row, hash)| Ok((Account::try_from(row)?, hash)))
        .transpose()
}

pub(crate) fn list_accounts(conn: &Connection) -> Result<Vec<Account>, StoreError> {
    let mut statement = conn.prepare(&format!(
        "SELECT {ACCOUNT_COLUMNS} FROM accounts a ORDER BY a.name"
    ))?;
    let rows = statement.query_map([], account_row)?;
    rows.map(|row| Account::try_from(row?)).collect()
}

/// Deletes the account (its passwords go by cascade); returns the id it had.
pub(crate) fn delete_account(conn: &Connection, name: &str) -> Result<Option<i64>, StoreError> {
    Ok(conn
        .query_row(
            "DELETE FROM accounts WHERE name = ?1 RETURNING id",
            [name],
            |r| r.get(0),
        )
        .optional()?)
}

/// Replaces the default password verifier; returns the account id.
pub(crate) fn set_password_hash(
    conn: &Connection,
    name: &str,
    password_hash: &str,
    now: i64,
) -> Result<Option<i64>, StoreError> {
    let Some(id) = account_id(conn, name)? else {
        return Ok(None);
    };
    conn.execute(
        "INSERT INTO account_passwords (account_id, name, hash, created_at) \
         VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (account_id, name) \
         DO UPDATE SET hash = excluded.hash, created_at = excluded.created_at, \
         last_used_at = NULL",
        params![id, DEFAULT_PASSWORD, password_hash, now],
    )?;
    conn.execute(
        "UPDATE accounts SET updated_at = ?2 WHERE id = ?1",
        params![id, now],
    )?;
    Ok(Some(id))
}

/// The sealed refresh token: `None` if there is no such account, `Some(None)` if it has none.
pub(crate) fn sealed_refresh_token(
    conn: &Connection,
    id: i64,
) -> Result<Option<Option<Vec<u8>>>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT refresh_token FROM accounts WHERE id = ?1",
            [id],
            |r| r.get(0),
        )
        .optional()?)
}

/// Stores a sealed refresh token; returns whether the account exists.
pub(crate) fn store_refresh_token(
    conn: &Connection,
    id: i64,
    sealed: &[u8],
    now: i64,
) -> Result<bool, StoreError> {
    let changed = conn.execute(
        "UPDATE accounts SET refresh_token = ?2, refresh_token_updated_at = ?3, \
         updated_at = ?3 WHERE id = ?1",
        params![id, sealed, now],
    )?;
    Ok(changed == 1)
}

/// Switches an account to a (just stored) refresh token grant and marks it active.
pub(crate) fn activate_refresh_token_grant(
    conn: &Connection,
    id: i64,
    now: i64,
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE accounts SET grant_kind = ?2, status = ?3, status_reason = NULL, \
         updated_at = ?4 WHERE id = ?1",
        params![
            id,
            GrantKind::RefreshToken.as_str(),
            AccountStatus::Active.as_str(),
            now
        ],
    )?;
    Ok(())
}

/// Returns whether the account exists.
pub(crate) fn set_status(
    conn: &Connection,
    id: i64,
    status: AccountStatus,
    reason: Option<&str>,
    now: i64,
) -> Result<bool, StoreError> {
    let changed = conn.execute(
        "UPDATE accounts SET status = ?2, status_reason = ?3, updated_at = ?4 WHERE id = ?1",
        params![id, status.as_str(), reason, now],
    )?;
    Ok(changed == 1)
}

/// Sets `last_login_at`, but only when the stored value is at least `granularity` seconds
/// old: a device polling every few seconds then causes one write a minute, not one per login.
/// Returns whether the account exists.
pub(crate) fn record_login(
    conn: &Connection,
    id: i64,
    now: i64,
    granularity: i64,
) -> Result<bool, StoreError> {
    let changed = conn.execute(
        "UPDATE accounts SET last_login_at = ?2 \
         WHERE id = ?1 AND (last_login_at IS NULL OR last_login_at <= ?2 - ?3)",
        params![id, now, granularity],
    )?;
    if changed == 1 {
        return Ok(true);
    }
    let exists: Option<i64> = conn
        .query_row("SELECT 1 FROM accounts WHERE id = ?1", [id], |r| r.get(0))
        .optional()?;
    Ok(exists.is_some())
}

/// A store-wide value from `meta`.
pub(crate) fn meta(conn: &Connection, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()?)
}

pub(crate) fn set_meta(conn: &Connection, key: &str, value: &[u8]) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}
