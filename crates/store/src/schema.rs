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
const MIGRATIONS: &[&str] = &[
    r#"
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
"#,
    // Version 2: per-protocol XOAUTH2 identities (shared mailboxes, delegates) and the grant
    // health the broker records for operators. Plain nullable columns: three protocols and
    // one health record per account need no tables of their own, and every account read
    // stays a single row.
    r#"
ALTER TABLE accounts ADD COLUMN imap_mailbox TEXT;
ALTER TABLE accounts ADD COLUMN pop3_mailbox TEXT;
ALTER TABLE accounts ADD COLUMN smtp_mailbox TEXT;
ALTER TABLE accounts ADD COLUMN last_refresh_at INTEGER;
ALTER TABLE accounts ADD COLUMN access_token_expires_at INTEGER;
ALTER TABLE accounts ADD COLUMN last_failure_at INTEGER;
ALTER TABLE accounts ADD COLUMN last_failure_class TEXT;
ALTER TABLE accounts ADD COLUMN last_failure_codes TEXT;
ALTER TABLE accounts ADD COLUMN last_failure_reason TEXT;
"#,
    // Version 3: the resource-owner password grant ('password'). SQLite cannot change a CHECK
    // constraint in place, so both tables are rebuilt: dropping `accounts` alone would cascade
    // into `account_passwords`. The AUTOINCREMENT high-water mark is carried over so that ids
    // of removed accounts are still never reused.
    r#"
CREATE TABLE accounts_v3 (
    id                       INTEGER PRIMARY KEY AUTOINCREMENT,
    name                     TEXT    NOT NULL UNIQUE,
    mailbox                  TEXT    NOT NULL,
    app                      TEXT    NOT NULL,
    grant_kind               TEXT    NOT NULL
        CHECK (grant_kind IN ('client-credentials', 'refresh-token', 'password')),
    protocols                TEXT    NOT NULL,
    status                   TEXT    NOT NULL
        CHECK (status IN ('active', 'needs-reconsent', 'disabled')),
    status_reason            TEXT,
    refresh_token            BLOB,
    created_at               INTEGER NOT NULL,
    updated_at               INTEGER NOT NULL,
    last_login_at            INTEGER,
    refresh_token_updated_at INTEGER,
    imap_mailbox             TEXT,
    pop3_mailbox             TEXT,
    smtp_mailbox             TEXT,
    last_refresh_at          INTEGER,
    access_token_expires_at  INTEGER,
    last_failure_at          INTEGER,
    last_failure_class       TEXT,
    last_failure_codes       TEXT,
    last_failure_reason      TEXT
) STRICT;
INSERT INTO accounts_v3 SELECT id, name, mailbox, app, grant_kind, protocols, status,
    status_reason, refresh_token, created_at, updated_at, last_login_at,
    refresh_token_updated_at, imap_mailbox, pop3_mailbox, smtp_mailbox, last_refresh_at,
    access_token_expires_at, last_failure_at, last_failure_class, last_failure_codes,
    last_failure_reason FROM accounts;
CREATE TABLE account_passwords_v3 (
    account_id   INTEGER NOT NULL REFERENCES accounts_v3(id) ON DELETE CASCADE,
    name         TEXT    NOT NULL,
    hash         TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    PRIMARY KEY (account_id, name)
) STRICT;
INSERT INTO account_passwords_v3 SELECT account_id, name, hash, created_at, last_used_at
    FROM account_passwords;
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'accounts_v3', seq FROM sqlite_sequence WHERE name = 'accounts'
    AND NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'accounts_v3');
UPDATE sqlite_sequence
    SET seq = max(seq, (SELECT seq FROM sqlite_sequence WHERE name = 'accounts'))
    WHERE name = 'accounts_v3' AND EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'accounts');
DROP TABLE account_passwords;
DROP TABLE accounts;
ALTER TABLE accounts_v3 RENAME TO accounts;
ALTER TABLE account_passwords_v3 RENAME TO account_passwords;
"#,
    // Version 4: password-sealed grants and pending claims challenges.
    // - `sealing`: 'master-key' (as before) or 'password'; checked where rows are read.
    // - `key_slot`: the account's grant key wrapped under a key derived from this password
    //   (password-sealed accounts only; see `grant_key.rs`).
    // - `last_failure_claims`: the claims challenge of the last failure, passed on at the next
    //   interactive sign-in.
    r#"
ALTER TABLE accounts ADD COLUMN sealing TEXT NOT NULL DEFAULT 'master-key';
ALTER TABLE accounts ADD COLUMN last_failure_claims TEXT;
ALTER TABLE account_passwords ADD COLUMN key_slot BLOB;
"#,
];

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
    fn the_v3_rebuild_keeps_rows_passwords_and_the_id_high_water_mark() {
        let mut conn = Connection::open_in_memory().expect("open");
        conn.pragma_update(None, "foreign_keys", "ON").expect("fk");
        // Version 1 and 2 only, then data, then the rest.
        for (index, sql) in MIGRATIONS.iter().enumerate().take(2) {
            conn.execute_batch(sql).expect("migration");
            conn.pragma_update(None, "user_version", index as i64 + 1)
                .expect("version");
        }
        conn.execute_batch(
            "INSERT INTO accounts (name, mailbox, app, grant_kind, protocols, status, \
             created_at, updated_at) VALUES \
             ('a', 'a@x', 'app', 'refresh-token', 'imap', 'active', 1, 1), \
             ('b', 'b@x', 'app', 'client-credentials', 'imap', 'active', 1, 1); \
             INSERT INTO account_passwords VALUES (1, 'default', 'h1', 1, NULL), \
             (2, 'default', 'h2', 1, NULL), (2, 'erp', 'h3', 1, 5); \
             DELETE FROM accounts WHERE name = 'b';",
        )
        .expect("data");
        migrate(&mut conn).expect("v3");
        let passwords: i64 = conn
            .query_row("SELECT count(*) FROM account_passwords", [], |r| r.get(0))
            .expect("count");
        assert_eq!(passwords, 1, "b's passwords went with b; a's stayed");
        conn.execute(
            "INSERT INTO accounts (name, mailbox, app, grant_kind, protocols, status, \
             created_at, updated_at) VALUES ('c', 'c@x', 'app', 'password', 'imap', 'active', 1, 1)",
            [],
        )
        .expect("password grant allowed now");
        let id: i64 = conn
            .query_row("SELECT id FROM accounts WHERE name = 'c'", [], |r| r.get(0))
            .expect("id");
        assert_eq!(id, 3, "the id of the removed account is not reused");
        conn.execute("DELETE FROM accounts WHERE name = 'a'", [])
            .expect("delete");
        let passwords: i64 = conn
            .query_row("SELECT count(*) FROM account_passwords", [], |r| r.get(0))
            .expect("count");
        assert_eq!(passwords, 0, "the cascade still works after the rebuild");
    }

    #[test]
    fn newer_schema_is_refused() {
        let mut conn = Connection::open_in_memory().expect("open");
        conn.pragma_update(None, "user_version", CURRENT_VERSION + 1)
            .expect("set");
        assert!(matches!(migrate(&mut conn), Err(StoreError::Corrupt(_))));
    }
}
