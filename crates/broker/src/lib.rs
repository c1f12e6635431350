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
//! - `broker`: the [`TokenBroker`] tying them together, with its metrics;
//! - `assertion`: certificate credentials (signed `client_assertion` JWTs);
//! - [`consent`]: onboarding by device code or browser sign-in (auth code + PKCE);
//! - `advice`: the operator's next step for a failure; `notify`: the re-consent hook;
//! - `refresher`: background refresh of idle delegated grants before they expire.

#![forbid(unsafe_code)]

mod advice;
mod app;
mod assertion;
mod backoff;
mod broker;
mod cache;
pub mod classify;
pub mod consent;
mod entra;
mod error;
mod metrics;
mod notify;
mod refresher;
mod transport;

#[cfg(test)]
mod tests;

pub use advice::next_step;
pub use app::{AppRegistration, DEFAULT_APP_SCOPE, DEFAULT_DELEGATED_SCOPES};
pub use assertion::{AssertionAlgorithm, ClientCertificate};
pub use backoff::NEGATIVE_TTL;
pub use broker::{AccessToken, BrokerSettings, PasswordGrantError, TokenBroker};
pub use classify::{classify, FailureClass};
pub use error::{BrokerError, TokenError};
pub use notify::{GrantObserver, Notifier, NotifySettings, ReconsentEvent};
pub use refresher::{run_background_refresh, RefreshPolicy};
