//! The broker's error types: why a token could not be had, and why the broker could not start.

use std::path::PathBuf;
use std::time::Duration;

use crate::classify::FailureClass;

/// Why [`crate::TokenBroker::access_token`] produced no token.
///
/// Every variant maps to one [`FailureClass`], so the front-ends, logs and metrics agree on
/// whether the mail client hears "try again later" or "authentication failed". Messages carry
/// Entra's error name, AADSTS codes and the first line of its description; never a token or
/// a client secret.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenError {
    /// The token endpoint answered with an error.
    #[error("token endpoint refused ({class}): {error} {codes:?}: {description}")]
    Provider {
        class: FailureClass,
        /// Entra's `error` field (`invalid_grant` …), or `http_<status>` without a JSON body.
        error: String,
        /// Entra's `error_codes` (the numeric part of `AADSTS…`).
        codes: Vec<u32>,
        /// First line of `error_description` (trace and correlation ids dropped).
        description: String,
        /// The endpoint's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
        /// A Conditional Access claims challenge (EXCHANGE.md §4.7) to pass on at the next
        /// interactive sign-in. Not a secret.
        claims: Option<String>,
    },
    /// Connect failure, timeout, or an answer that is not a token response: transient.
    #[error("token endpoint unreachable: {0}")]
    Network(String),
    /// The account names an app registration missing from the configuration.
    #[error("account uses unknown app registration {0:?}")]
    UnknownApp(String),
    /// A delegated account without a stored refresh token: it has to be onboarded.
    #[error("no refresh token stored for this account")]
    NoRefreshToken,
    /// The credential store failed (reading or persisting the refresh token): transient.
    #[error("credential store: {0}")]
    Store(String),
    /// The app's certificate credential could not produce a client assertion.
    #[error("client assertion: {0}")]
    Credential(String),
    /// The account's grant is sealed under its passwords and this request brought none (the
    /// background refresh, a relay rule): only a login can refresh it.
    #[error("the grant is sealed under the account's passwords; only a login can refresh it")]
    Sealed,
    /// A recent failure for this account has not been retried yet, to protect the endpoint.
    #[error("backing off for {retry_after:?} after: {last}")]
    BackingOff {
        retry_after: Duration,
        last: Box<TokenError>,
    },
}

impl TokenError {
    /// The §4.8 class of this failure; for [`TokenError::BackingOff`], that of the failure
    /// being backed off from (a dead grant stays dead while we wait).
    pub fn class(&self) -> FailureClass {
        match self {
            TokenError::Provider { class, .. } => *class,
            TokenError::Network(_) | TokenError::Store(_) => FailureClass::Transient,
            TokenError::UnknownApp(_) | TokenError::Credential(_) | TokenError::Sealed => {
                FailureClass::Configuration
            }
            TokenError::NoRefreshToken => FailureClass::Reconsent,
            TokenError::BackingOff { last, .. } => last.class(),
        }
    }

    /// True when the mail client should be told to retry later (IMAP `NO [UNAVAILABLE]`,
    /// POP3 `-ERR [SYS/TEMP]`, SMTP `454`).
    pub fn is_temporary(&self) -> bool {
        self.class().is_temporary()
    }

    /// True when the account's grant is dead and an operator has to onboard it again.
    pub fn needs_reconsent(&self) -> bool {
        self.class() == FailureClass::Reconsent
    }

    /// The `Retry-After` the endpoint sent, or how long the broker will keep backing off.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            TokenError::Provider { retry_after, .. } => *retry_after,
            TokenError::BackingOff { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

/// Why a [`crate::TokenBroker`] could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// Authority, tenant, client id or client secret cannot form a valid token request.
    #[error("app {app:?}: {reason}")]
    InvalidApp { app: String, reason: String },
    /// Two app registrations share a name, so accounts could not say which one they mean.
    #[error("app {0:?} is configured twice")]
    DuplicateApp(String),
    /// An extra trust-anchor file cannot be read or holds no certificate.
    #[error("app {app:?}: CA file {path}: {reason}")]
    CaFile {
        app: String,
        path: PathBuf,
        reason: String,
    },
    /// The HTTP client could not be built (TLS setup).
    #[error("app {app:?}: HTTP client: {reason}")]
    HttpClient { app: String, reason: String },
    /// The broker's metrics could not be registered (e.g. already registered).
    #[error("metrics registration: {0}")]
    Metrics(#[from] prometheus::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(class: FailureClass) -> TokenError {
        TokenError::Provider {
            class,
            error: "invalid_grant".into(),
            codes: vec![70008],
            description: "AADSTS70008: expired".into(),
            retry_after: None,
            claims: None,
        }
    }

    #[test]
    fn classes_of_local_failures() {
        assert_eq!(
            TokenError::Network("x".into()).class(),
            FailureClass::Transient
        );
        assert!(TokenError::Store("x".into()).is_temporary());
        assert_eq!(
            TokenError::UnknownApp("x".into()).class(),
            FailureClass::Configuration
        );
        assert!(TokenError::NoRefreshToken.needs_reconsent());
    }

    #[test]
    fn backing_off_keeps_the_class_of_the_last_failure() {
        let e = TokenError::BackingOff {
            retry_after: Duration::from_secs(3),
            last: Box::new(provider(FailureClass::Reconsent)),
        };
        assert!(e.needs_reconsent());
        assert!(!e.is_temporary());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
        let e = TokenError::BackingOff {
            retry_after: Duration::from_secs(3),
            last: Box::new(provider(FailureClass::Throttled)),
        };
        assert!(e.is_temporary());
    }

    #[test]
    fn display_names_codes_and_class() {
        let text = provider(FailureClass::Reconsent).to_string();
        assert!(text.contains("reconsent"), "{text}");
        assert!(text.contains("70008"), "{text}");
    }
}
