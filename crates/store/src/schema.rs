//! The SQLite schema and its migrations, versioned with `PRAGMA user_version`.
//!
//! Migration `n` (1-based) takes the database from version `n - 1` to `n`. Migrations only
//! ever get appended; a database newer than this build knows is refused rather than guessed
//! at. Each migration and its version bump commit in one transaction.

use rusqlite::Connection;

use crate::error::StoreError;

/// Each entry upgrades the schema by one version.
///
/// Version 1 design notes:
/// - `AUTOINCREMENT` so an account id is never reused: sealed blobs are bound to the id, and
///   other crates cache access tokens by it.
/// - Passwords live in `account_passwords` with one row named `default`, so several named
///   app passwords per account can be added without reshaping `accounts`.
/// - `meta` holds store-wide values such as the master key check.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE accounts (
    id                       INTEGER PRIMARY KEY AUTOINCREMENT,
    name                     TEXT    NOT NULL UNIQUE,
    mailbox                  TEXT    NOT NULL,
    app                      TEXT    NOT NULL,
    grant_kind               TEXT    NOT NULL
        CHECK (grant_kind IN ('client-credentials', 'refresh-token')),
    protocols                TEXT    NOT NULL,
    status                   TEXT    NOT NULL
        CHECK (status IN ('active', 'needs-reconsent', 'disabled')),
    status_reason            TEXT,
    refresh_token            BLOB,
    created_at               INTEGER NOT NULL,
    updated_at               INTEGER NOT NULL,
    last_login_at            INTEGER,
    refresh_token_updated_at INTEGER
) STRICT;

CREATE TABLE account_passwords (
    account_id   INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name         TEXT    NOT NULL,
    hash         TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    PRIMARY KEY (account_id, name)
) STRICT;

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
) STRICT;
"#];

/// The schema version this build writes.
pub const CURRENT_VERSION: i64 = MIGRATIONS.len() as i64;

/// Name of the password row that plain `LOGIN user pass` checks.
pub const DEFAULT_PASSWORD: &str = "default";

/// Brings the database up to [`CURRENT_VERSION`].
pub fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let found: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if found > CURRENT_VERSION {
        return Err(StoreError::Corrupt(format!(
            "database schema version {found} is newer than this oxbridge supports \
             ({CURRENT_VERSION}); upgrade oxbridge"
        )));
    }
    if found < 0 {
        return Err(StoreError::Corrupt(format!(
            "database schema version {found} is invalid"
        )));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = index as i64 + 1;
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", version)?;
        tx.commit()?;
        tracing::debug!(version, "store schema migrated");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_once_and_is_idempotent() {
        let mut conn = Connection::open_in_memory().expect("open");
        migrate(&mut conn).expect("first");
        migrate(&mut conn).expect("second");
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .expect("version");
        assert_eq!(version, CURRENT_VERSION);
    }

    #[test]
    fn newer_schema_is_refused() {
        let mut conn = Connection::open_in_memory().expect("open");
        conn.pragma_update(None, "user_version", CURRENT_VERSION + 1)
            .expect("set");
        assert!(matches!(migrate(&mut conn), Err(StoreError::Corrupt(_))));
    }
}
