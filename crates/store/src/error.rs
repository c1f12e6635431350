//! The store's error type, classified so callers can tell "try again later" from "no".

use std::fmt;

/// Why a store operation failed.
///
/// The variant drives what a mail client is told: [`StoreError::Unavailable`] is the only
/// temporary one (the device should retry: IMAP `NO [UNAVAILABLE]`, SMTP `454`); everything
/// else is an operator problem or bad input. Messages never contain secrets.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// I/O error, database locked or busy, disk full: temporary.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// No account with this name (or id).
    #[error("no account {0:?}")]
    NotFound(String),
    /// An account with this name already exists.
    #[error("account {0:?} already exists")]
    AlreadyExists(String),
    /// Bad input: empty name, mailbox without '@', no protocols, empty password …
    #[error("invalid input: {0}")]
    Invalid(String),
    /// Stored data cannot be read: unseal failure, wrong master key, unknown schema version.
    #[error("store data corrupt: {0}")]
    Corrupt(String),
    /// Master key problems: missing, readable by others, wrong length, not base64.
    #[error("master key: {0}")]
    Key(String),
    /// A password-sealed grant was asked for without one of the account's passwords (the
    /// background refresh, a relay rule), or with a password that opens none of its slots.
    #[error("sealed grant: {0}")]
    Sealed(String),
}

impl StoreError {
    /// True when retrying later may succeed; a login failing this way is a temporary failure.
    pub fn is_temporary(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }

    pub(crate) fn unavailable(context: &str, error: impl fmt::Display) -> Self {
        StoreError::Unavailable(format!("{context}: {error}"))
    }
}

impl From<rusqlite::Error> for StoreError {
    /// Corruption-like SQLite codes become [`StoreError::Corrupt`]; everything else (busy,
    /// locked, I/O, full) is treated as temporary, since the store itself issued the SQL.
    fn from(error: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        match &error {
            rusqlite::Error::SqliteFailure(e, _)
                if matches!(e.code, ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) =>
            {
                StoreError::Corrupt(format!("sqlite: {error}"))
            }
            rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::IntegralValueOutOfRange(..) => {
                StoreError::Corrupt(format!("sqlite: {error}"))
            }
            _ => StoreError::Unavailable(format!("sqlite: {error}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unavailable_is_temporary() {
        assert!(StoreError::Unavailable("busy".into()).is_temporary());
        assert!(!StoreError::NotFound("x".into()).is_temporary());
        assert!(!StoreError::Corrupt("x".into()).is_temporary());
        assert!(!StoreError::Key("x".into()).is_temporary());
    }

    #[test]
    fn busy_database_is_temporary() {
        let e = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            None,
        );
        assert!(StoreError::from(e).is_temporary());
    }
}
