//! The SQL the SQLite store runs: plain synchronous functions over a connection, one per
//! operation, so the async layer only decides where they run and what they are given.

use std::collections::BTreeMap;

use oxbridge_wire::Protocol;
use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::account::{
    protocols_to_text, Account, AccountStatus, GrantFailure, GrantHealth, GrantKind, NewAccount,
    PasswordInfo,
};
use crate::error::StoreError;
use crate::grant_key::Sealing;
use crate::schema::DEFAULT_PASSWORD;

/// The columns [`account_row`] reads, in its order.
const ACCOUNT_COLUMNS: &str = "a.id, a.name, a.mailbox, a.app, a.grant_kind, a.protocols, \
     a.status, a.status_reason, a.created_at, a.updated_at, a.last_login_at, \
     a.refresh_token_updated_at, a.imap_mailbox, a.pop3_mailbox, a.smtp_mailbox, \
     a.last_refresh_at, a.access_token_expires_at, a.last_failure_at, a.last_failure_class, \
     a.last_failure_codes, a.last_failure_reason, a.sealing, a.last_failure_claims";

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
    identities: [Option<String>; 3],
    last_refresh_at: Option<i64>,
    access_token_expires_at: Option<i64>,
    last_failure_at: Option<i64>,
    last_failure_class: Option<String>,
    last_failure_codes: Option<String>,
    last_failure_reason: Option<String>,
    sealing: String,
    last_failure_claims: Option<String>,
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
        identities: [row.get(12)?, row.get(13)?, row.get(14)?],
        last_refresh_at: row.get(15)?,
        access_token_expires_at: row.get(16)?,
        last_failure_at: row.get(17)?,
        last_failure_class: row.get(18)?,
        last_failure_codes: row.get(19)?,
        last_failure_reason: row.get(20)?,
        sealing: row.get(21)?,
        last_failure_claims: row.get(22)?,
    })
}

/// The identity column of each protocol, in [`AccountRow::identities`] order.
const IDENTITY_COLUMNS: [(Protocol, &str); 3] = [
    (Protocol::Imap, "imap_mailbox"),
    (Protocol::Pop3, "pop3_mailbox"),
    (Protocol::Smtp, "smtp_mailbox"),
];

/// `70008,70000` as stored for `last_failure_codes`.
fn codes_to_text(codes: &[u32]) -> String {
    codes
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn codes_from_text(text: &str) -> Vec<u32> {
    text.split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect()
}

impl TryFrom<AccountRow> for Account {
    type Error = StoreError;

    fn try_from(row: AccountRow) -> Result<Self, StoreError> {
        let corrupt = |e: StoreError| StoreError::Corrupt(format!("account {:?}: {e}", row.name));
        let identities: BTreeMap<Protocol, String> = IDENTITY_COLUMNS
            .iter()
            .zip(row.identities)
            .filter_map(|((protocol, _), mailbox)| Some((*protocol, mailbox?)))
            .collect();
        let last_failure = match (row.last_failure_at, row.last_failure_class) {
            (Some(at), Some(class)) => Some(GrantFailure {
                at,
                class,
                codes: codes_from_text(row.last_failure_codes.as_deref().unwrap_or("")),
                reason: row.last_failure_reason.unwrap_or_default(),
                claims: row.last_failure_claims,
            }),
            _ => None,
        };
        Ok(Account {
            identities,
            health: GrantHealth {
                last_refresh_at: row.last_refresh_at,
                access_token_expires_at: row.access_token_expires_at,
                last_failure,
            },
            id: row.id,
            grant: row.grant.parse::<GrantKind>().map_err(corrupt)?,
            protocols: crate::account::protocols_from_text(&row.protocols).map_err(corrupt)?,
            status: row.status.parse::<AccountStatus>().map_err(corrupt)?,
            sealing: Sealing::parse(&row.sealing).map_err(corrupt)?,
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

/// Inserts the account and its default password (without a key slot: the slot is bound to
/// the id this returns, see [`set_key_slot`]); returns the new id.
pub(crate) fn insert_account(
    conn: &Connection,
    new: &NewAccount,
    grant: GrantKind,
    password_hash: &str,
    now: i64,
) -> Result<i64, StoreError> {
    conn.execute(
        "INSERT INTO accounts (name, mailbox, app, grant_kind, protocols, status, \
         created_at, updated_at, sealing) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8)",
        params![
            new.name,
            new.mailbox,
            new.app,
            grant.as_str(),
            protocols_to_text(&new.protocols),
            AccountStatus::Active.as_str(),
            now,
            new.sealing.as_str()
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
    // On every login: the statement is compiled once per connection, not per call.
    conn.prepare_cached(&format!(
        "SELECT {ACCOUNT_COLUMNS} FROM accounts a WHERE a.name = ?1"
    ))?
    .query_row([name], account_row)
    .optional()?
    .map(Account::try_from)
    .transpose()
}

/// The login name of the account with this id.
pub(crate) fn account_name(conn: &Connection, id: i64) -> Result<Option<String>, StoreError> {
    Ok(conn
        .query_row("SELECT name FROM accounts WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .optional()?)
}

pub(crate) fn account_id(conn: &Connection, name: &str) -> Result<Option<i64>, StoreError> {
    Ok(conn
        .query_row("SELECT id FROM accounts WHERE name = ?1", [name], |r| {
            r.get(0)
        })
        .optional()?)
}

/// One stored password verifier of an account.
#[derive(Debug, Clone)]
pub(crate) struct PasswordRow {
    pub name: String,
    /// Argon2id PHC string.
    pub hash: String,
    pub last_used_at: Option<i64>,
    /// The grant key wrapped under this password (password-sealed accounts).
    pub key_slot: Option<Vec<u8>>,
}

/// The account and every password verifier it has, for a login check.
pub(crate) fn login_by_name(
    conn: &Connection,
    name: &str,
) -> Result<Option<(Account, Vec<PasswordRow>)>, StoreError> {
    let Some(account) = account_by_name(conn, name)? else {
        return Ok(None);
    };
    let passwords = password_rows(conn, account.id)?;
    Ok(Some((account, passwords)))
}

/// The verifiers of an account, in name order (so every process sees the same order).
pub(crate) fn password_rows(conn: &Connection, id: i64) -> Result<Vec<PasswordRow>, StoreError> {
    let mut statement = conn.prepare_cached(
        "SELECT name, hash, last_used_at, key_slot FROM account_passwords \
         WHERE account_id = ?1 ORDER BY name",
    )?;
    let rows = statement.query_map([id], |r| {
        Ok(PasswordRow {
            name: r.get(0)?,
            hash: r.get(1)?,
            last_used_at: r.get(2)?,
            key_slot: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// The named passwords of an account, without verifiers.
pub(crate) fn password_infos(conn: &Connection, id: i64) -> Result<Vec<PasswordInfo>, StoreError> {
    let mut statement = conn.prepare(
        "SELECT name, created_at, last_used_at FROM account_passwords \
         WHERE account_id = ?1 ORDER BY name",
    )?;
    let rows = statement.query_map([id], |r| {
        Ok(PasswordInfo {
            name: r.get(0)?,
            created_at: r.get(1)?,
            last_used_at: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Adds a named password (with its key slot, for a password-sealed account);
/// [`StoreError::AlreadyExists`] if the account has one by that name.
pub(crate) fn insert_password(
    conn: &Connection,
    id: i64,
    name: &str,
    password_hash: &str,
    key_slot: Option<&[u8]>,
    now: i64,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO account_passwords (account_id, name, hash, created_at, key_slot) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![id, name, password_hash, now, key_slot],
    )
    .map_err(|e| {
        if is_unique_violation(&e) {
            StoreError::AlreadyExists(format!("password {name}"))
        } else {
            e.into()
        }
    })?;
    conn.execute(
        "UPDATE accounts SET updated_at = ?2 WHERE id = ?1",
        params![id, now],
    )?;
    Ok(())
}

/// Deletes a named password; returns whether it existed.
pub(crate) fn delete_password(
    conn: &Connection,
    id: i64,
    name: &str,
    now: i64,
) -> Result<bool, StoreError> {
    let changed = conn.execute(
        "DELETE FROM account_passwords WHERE account_id = ?1 AND name = ?2",
        params![id, name],
    )?;
    if changed == 1 {
        conn.execute(
            "UPDATE accounts SET updated_at = ?2 WHERE id = ?1",
            params![id, now],
        )?;
    }
    Ok(changed == 1)
}

/// Notes that a named password was used, with the same granularity as `record_login`.
pub(crate) fn touch_password(
    conn: &Connection,
    id: i64,
    name: &str,
    now: i64,
    granularity: i64,
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE account_passwords SET last_used_at = ?3 \
         WHERE account_id = ?1 AND name = ?2 \
         AND (last_used_at IS NULL OR last_used_at <= ?3 - ?4)",
        params![id, name, now, granularity],
    )?;
    Ok(())
}

/// Sets or clears the XOAUTH2 identity of one protocol; returns whether the account exists.
pub(crate) fn set_identity(
    conn: &Connection,
    id: i64,
    protocol: Protocol,
    mailbox: Option<&str>,
    now: i64,
) -> Result<bool, StoreError> {
    let column = IDENTITY_COLUMNS
        .iter()
        .find(|(p, _)| *p == protocol)
        .map(|(_, c)| *c)
        .ok_or_else(|| StoreError::Invalid(format!("no identity column for {protocol}")))?;
    // The column name comes from the fixed table above, never from input.
    let changed = conn.execute(
        &format!("UPDATE accounts SET {column} = ?2, updated_at = ?3 WHERE id = ?1"),
        params![id, mailbox, now],
    )?;
    Ok(changed == 1)
}

/// Records a successful token request; returns whether the account exists.
pub(crate) fn record_grant_success(
    conn: &Connection,
    id: i64,
    now: i64,
    access_token_expires_at: i64,
) -> Result<bool, StoreError> {
    let changed = conn.execute(
        "UPDATE accounts SET last_refresh_at = ?2, access_token_expires_at = ?3 WHERE id = ?1",
        params![id, now, access_token_expires_at],
    )?;
    Ok(changed == 1)
}

/// Records a failed token request; returns whether the account exists.
pub(crate) fn record_grant_failure(
    conn: &Connection,
    id: i64,
    failure: &GrantFailure,
) -> Result<bool, StoreError> {
    let changed = conn.execute(
        "UPDATE accounts SET last_failure_at = ?2, last_failure_class = ?3, \
         last_failure_codes = ?4, last_failure_reason = ?5, last_failure_claims = ?6 \
         WHERE id = ?1",
        params![
            id,
            failure.at,
            failure.class,
            codes_to_text(&failure.codes),
            failure.reason,
            GrantFailure::bounded_claims(failure.claims.as_deref())
        ],
    )?;
    Ok(changed == 1)
}

/// Moves an active account to needs-reconsent; returns whether it changed, so that exactly
/// one caller (across processes and replicas) sees the transition and notifies.
pub(crate) fn mark_needs_reconsent(
    conn: &Connection,
    id: i64,
    reason: &str,
    now: i64,
) -> Result<bool, StoreError> {
    let changed = conn.execute(
        "UPDATE accounts SET status = ?2, status_reason = ?3, updated_at = ?4 \
         WHERE id = ?1 AND status = ?5",
        params![
            id,
            AccountStatus::NeedsReconsent.as_str(),
            reason,
            now,
            AccountStatus::Active.as_str()
        ],
    )?;
    Ok(changed == 1)
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

/// Replaces the default password verifier (and its key slot); returns the account id.
pub(crate) fn set_password_hash(
    conn: &Connection,
    name: &str,
    password_hash: &str,
    key_slot: Option<&[u8]>,
    now: i64,
) -> Result<Option<i64>, StoreError> {
    let Some(id) = account_id(conn, name)? else {
        return Ok(None);
    };
    conn.execute(
        "INSERT INTO account_passwords (account_id, name, hash, created_at, key_slot) \
         VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT (account_id, name) \
         DO UPDATE SET hash = excluded.hash, created_at = excluded.created_at, \
         last_used_at = NULL, key_slot = excluded.key_slot",
        params![id, DEFAULT_PASSWORD, password_hash, now, key_slot],
    )?;
    conn.execute(
        "UPDATE accounts SET updated_at = ?2 WHERE id = ?1",
        params![id, now],
    )?;
    Ok(Some(id))
}

/// An account's sealed refresh token (`None` if it has none) and how it is sealed.
pub(crate) type SealedGrant = (Option<Vec<u8>>, Sealing);

/// The sealed refresh token and its sealing; `None` if there is no such account.
pub(crate) fn sealed_refresh_token(
    conn: &Connection,
    id: i64,
) -> Result<Option<SealedGrant>, StoreError> {
    let row: Option<(Option<Vec<u8>>, String)> = conn
        .query_row(
            "SELECT refresh_token, sealing FROM accounts WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    row.map(|(blob, sealing)| Ok((blob, Sealing::parse(&sealing)?)))
        .transpose()
}

/// Sets the key slot of one named password.
pub(crate) fn set_key_slot(
    conn: &Connection,
    id: i64,
    name: &str,
    key_slot: &[u8],
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE account_passwords SET key_slot = ?3 WHERE account_id = ?1 AND name = ?2",
        params![id, name, key_slot],
    )?;
    Ok(())
}

/// Makes `password_hash` (with `key_slot`) the account's only password, named `default`;
/// returns the names of the passwords it replaced (other than `default`).
pub(crate) fn replace_all_passwords(
    conn: &Connection,
    id: i64,
    password_hash: &str,
    key_slot: &[u8],
    now: i64,
) -> Result<Vec<String>, StoreError> {
    let removed: Vec<String> = password_rows(conn, id)?
        .into_iter()
        .map(|row| row.name)
        .filter(|name| name != DEFAULT_PASSWORD)
        .collect();
    conn.execute("DELETE FROM account_passwords WHERE account_id = ?1", [id])?;
    insert_password(
        conn,
        id,
        DEFAULT_PASSWORD,
        password_hash,
        Some(key_slot),
        now,
    )?;
    Ok(removed)
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
