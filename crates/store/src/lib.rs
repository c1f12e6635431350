//! Credential-mapping store: accounts, password verifiers, sealed grants.
//!
//! A legacy mail client logs in to oxbridge with a local name and password; this crate answers
//! "which mailbox and which OAuth grant does that login stand for?" without ever keeping a
//! secret in the clear on disk:
//!
//! - local passwords are kept only as Argon2id verifiers, checked off the reactor behind a
//!   concurrency bound, with a short-lived in-memory cache of successful checks under a keyed
//!   hash (never the password itself); an account may have several named passwords (one per
//!   device), all checked with a single Argon2 run;
//! - refresh tokens are sealed with XChaCha20-Poly1305 under the [`MasterKey`], bound to
//!   their row, so a copied database alone or a blob moved between rows yields nothing;
//!   password-sealed accounts add a per-account [`GrantKey`] that only their passwords
//!   unwrap, so not even the database with the master key yields their token;
//! - the embedded backend is one SQLite file ([`SqliteStore`]) with versioned migrations
//!   ([`schema`]).
//!
//! - the shared backend for several replicas is PostgreSQL ([`PgStore`]), with the same
//!   sealing and verifiers, a cross-replica refresh lock and shared access tokens; `transfer`
//!   moves a whole store between the two.
//!
//! Callers code against the [`CredentialStore`] trait, so the protocol crates never know
//! which backend they talk to.

#![forbid(unsafe_code)]

pub mod account;
mod credential;
pub mod error;
mod files;
mod grant_key;
pub mod key;
mod login_cache;
mod password;
pub mod pg;
pub mod schema;
mod seal;
pub mod sqlite;
pub mod transfer;

pub use account::{
    Account, AccountStatus, GrantFailure, GrantHealth, GrantKind, NewAccount, NewGrant,
    PasswordInfo, MAX_CLAIMS, MAX_PASSWORDS,
};
pub use credential::{CredentialStore, RefreshLock, SharedToken};
pub use error::StoreError;
pub use grant_key::{GrantKey, Sealing};
pub use key::MasterKey;
pub use pg::{PgSettings, PgStore};
pub use sqlite::SqliteStore;
