//! Token broker: Entra client, access-token cache, single-flight refresh, failure
//! classification.
//!
//! The server hands every successful local login's [`oxbridge_store::Account`] to
//! [`TokenBroker::access_token`] and gets back an access token for SASL XOAUTH2, or a
//! [`TokenError`] whose [`FailureClass`] (EXCHANGE.md §4.8) says what to tell the mail client
//! and the operator. Pieces, one job each:
//!
//! - [`classify`](mod@classify): the §4.8 table, a pure function of status, `error` and codes;
//! - `entra`: Entra's error and token bodies for the `oauth2` crate;
//! - `transport`: reqwest behind `oauth2`, remembering status and `Retry-After`;
//! - `app`: one app registration's HTTP + OAuth client and its two grants;
//! - `cache` and `backoff`: per-account token, single-flight lock, and failure hold-off;
//! - `broker`: the [`TokenBroker`] tying them together, with its metrics.

#![forbid(unsafe_code)]

mod app;
mod backoff;
mod broker;
mod cache;
pub mod classify;
mod entra;
mod error;
mod metrics;
mod transport;

#[cfg(test)]
mod tests;

pub use app::{AppRegistration, DEFAULT_APP_SCOPE, DEFAULT_DELEGATED_SCOPES};
pub use backoff::NEGATIVE_TTL;
pub use broker::{AccessToken, BrokerSettings, TokenBroker};
pub use classify::{classify, FailureClass};
pub use error::{BrokerError, TokenError};
