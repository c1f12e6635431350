//! The login a front-end hands to the session driver, the relay request that stands in for
//! one when the client's network is trusted instead (SMTP), and why either can fail.

use std::net::SocketAddr;

use crate::{Protocol, Secret};

/// A legacy login as the client sent it, after SASL decoding.
#[derive(Debug, Clone)]
pub struct Login {
    /// The local user name (SASL authcid or LOGIN/USER argument).
    pub user: String,
    pub password: Secret,
    pub protocol: Protocol,
    pub peer: SocketAddr,
}

/// Records a login the front-end refused itself because the connection is not encrypted
/// (and the operator has not allowed plaintext), in the same audit event as every other
/// attempt, so the device whose STARTTLS/SSL setting needs changing can be found.
/// `password_sent`: the password itself already crossed the network in the clear, so it
/// should be changed.
pub fn audit_refused_without_tls(
    protocol: Protocol,
    peer: SocketAddr,
    user: Option<&[u8]>,
    password_sent: bool,
) {
    let user = user.map(String::from_utf8_lossy).unwrap_or_default();
    tracing::info!(
        target: "oxbridge::audit",
        user = %user.escape_debug(),
        mailbox = "",
        protocol = protocol.as_str(),
        peer = %peer,
        method = "password",
        result = "tls_required",
        password_sent,
        "login"
    );
}

/// Why a login did not reach the splice. Front-ends turn this into their protocol's reply;
/// the session driver turns it into metrics and audit events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginRejection {
    /// Unknown user or wrong password (indistinguishable on purpose).
    BadCredentials,
    /// The account exists but may not use this protocol, or is disabled.
    NotPermitted,
    /// The account's grant is dead; an operator must re-consent.
    GrantRevoked,
    /// The upstream refused a freshly issued token (mailbox-side problem).
    UpstreamRejected,
    /// The identity provider, the upstream or the store is unreachable, failing or
    /// throttling: the client should retry later.
    Unavailable,
}

impl LoginRejection {
    /// Whether the client should be told to retry later rather than that it failed.
    pub fn is_temporary(self) -> bool {
        matches!(self, LoginRejection::Unavailable)
    }

    /// A short label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            LoginRejection::BadCredentials => "bad_credentials",
            LoginRejection::NotPermitted => "not_permitted",
            LoginRejection::GrantRevoked => "grant_revoked",
            LoginRejection::UpstreamRejected => "upstream_rejected",
            LoginRejection::Unavailable => "unavailable",
        }
    }
}

/// A submission without a client login, allowed (or not) by the operator's relay rules on
/// the client's source address. The front-end only reports what the client asked for; the
/// driver's authenticator owns the rules, so policy lives in one place.
#[derive(Debug, Clone)]
pub struct RelayRequest {
    /// The envelope sender the client gave (SMTP `MAIL FROM`), without angle brackets;
    /// empty for the null sender `<>`.
    pub sender: String,
    pub protocol: Protocol,
    pub peer: SocketAddr,
}

/// Why the relay rules refused a [`RelayRequest`]. Failures after a rule matched (the rule's
/// account cannot get a token, the upstream refuses it) are [`LoginRejection`]s as for any
/// login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayRejection {
    /// No rule covers the client's address: it has to authenticate.
    NoRule,
    /// A rule covers the client's address, but not this envelope sender.
    SenderNotAllowed,
}

impl RelayRejection {
    /// A short label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            RelayRejection::NoRule => "no_relay_rule",
            RelayRejection::SenderNotAllowed => "sender_not_allowed",
        }
    }
}
