//! What an account is: a local login name mapped to a mailbox, an Entra app and a grant.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use oxbridge_wire::{Protocol, Secret};

use crate::error::StoreError;
use crate::grant_key::Sealing;

/// Which OAuth grant the broker uses for an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantKind {
    /// App-only: the Entra app's own credentials; nothing per account is stored.
    ClientCredentials,
    /// Delegated: a refresh token obtained by consent, sealed in the store and rotated.
    RefreshToken,
    /// Resource-owner password grant (an explicit per-app opt-in, the weakest option): the
    /// local password *is* the user's Entra password, and Entra checks it. No refresh token
    /// is stored; the local verifier only mirrors the last password Entra accepted.
    Password,
}

impl GrantKind {
    /// The name used in the database and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            GrantKind::ClientCredentials => "client-credentials",
            GrantKind::RefreshToken => "refresh-token",
            GrantKind::Password => "password",
        }
    }
}

impl fmt::Display for GrantKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for GrantKind {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "client-credentials" => Ok(GrantKind::ClientCredentials),
            "refresh-token" => Ok(GrantKind::RefreshToken),
            "password" => Ok(GrantKind::Password),
            other => Err(StoreError::Invalid(format!("unknown grant kind {other:?}"))),
        }
    }
}

/// Whether an account may log in, and if not, why; shown to operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountStatus {
    Active,
    /// The grant is dead (refresh token expired or revoked); someone must consent again.
    NeedsReconsent,
    /// Switched off by an operator.
    Disabled,
}

impl AccountStatus {
    /// The name used in the database, the CLI and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            AccountStatus::Active => "active",
            AccountStatus::NeedsReconsent => "needs-reconsent",
            AccountStatus::Disabled => "disabled",
        }
    }
}

impl fmt::Display for AccountStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AccountStatus {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "active" => Ok(AccountStatus::Active),
            "needs-reconsent" => Ok(AccountStatus::NeedsReconsent),
            "disabled" => Ok(AccountStatus::Disabled),
            other => Err(StoreError::Invalid(format!(
                "unknown account status {other:?}"
            ))),
        }
    }
}

/// One account as stored, without its secrets (password verifier, sealed refresh token).
#[derive(Debug, Clone)]
pub struct Account {
    /// Stable id; never reused after removal, so caches keyed by it cannot leak across accounts.
    pub id: i64,
    /// Local login name; compared exactly (case-sensitive).
    pub name: String,
    /// The XOAUTH2 `user=`: UPN or SMTP address of the mailbox.
    pub mailbox: String,
    /// Name of the Entra app in the config.
    pub app: String,
    pub grant: GrantKind,
    /// Protocols this account may use, sorted and without duplicates.
    pub protocols: Vec<Protocol>,
    pub status: AccountStatus,
    /// Why the status is what it is, e.g. "AADSTS70008: refresh token expired"; never a secret.
    pub status_reason: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    pub updated_at: i64,
    /// Unix seconds; kept with one-minute granularity so a login flood does not become a
    /// write flood.
    pub last_login_at: Option<i64>,
    pub refresh_token_updated_at: Option<i64>,
    /// Per-protocol XOAUTH2 `user=` overrides (shared mailboxes, delegates); a protocol not
    /// listed uses [`Account::mailbox`]. See [`Account::mailbox_for`].
    pub identities: BTreeMap<Protocol, String>,
    /// What the broker last saw of this account's grant, for operators and alerts.
    pub health: GrantHealth,
    /// How the refresh token is sealed; [`Sealing::Password`] grants open only at a login.
    pub sealing: Sealing,
}

/// `last_login_at` is only rewritten when older than this (seconds): a device polling every
/// few seconds then causes one write a minute, not one per login.
pub const LOGIN_TIMESTAMP_GRANULARITY: i64 = 60;

impl Account {
    /// Whether `last_login_at` is recent enough that recording a login now would write
    /// nothing; the login path then skips the store round trip altogether.
    pub fn last_login_is_current(&self) -> bool {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        self.last_login_at
            .is_some_and(|t| t > now - LOGIN_TIMESTAMP_GRANULARITY)
    }

    /// Whether this account may log in over `protocol`.
    pub fn allows(&self, protocol: Protocol) -> bool {
        self.protocols.contains(&protocol)
    }

    /// Whether the grant is sealed under the account's passwords, so that only a login (which
    /// brings one) can refresh it: not the background refresh, not a relay rule.
    pub fn password_sealed(&self) -> bool {
        self.sealing == Sealing::Password
    }

    /// The claims challenge of the last failure, while no success or new grant came after
    /// it: what the next interactive sign-in must pass on. Times have one-second resolution;
    /// within the same second the challenge counts as still pending (passing on a satisfied
    /// challenge is harmless, dropping a live one is not).
    pub fn pending_claims(&self) -> Option<&str> {
        let failure = self.health.last_failure.as_ref()?;
        let since = self
            .health
            .last_refresh_at
            .into_iter()
            .chain(self.refresh_token_updated_at)
            .max();
        if since.is_some_and(|t| t > failure.at) {
            return None;
        }
        failure.claims.as_deref()
    }

    /// The XOAUTH2 `user=` to present upstream for `protocol`.
    ///
    /// One grant can open several identities: a delegate's token reads a shared mailbox over
    /// IMAP/POP3 (`user=` the shared address) and sends as the delegate over SMTP (EXCHANGE.md
    /// §2.1), so the identity is chosen per protocol rather than per account.
    pub fn mailbox_for(&self, protocol: Protocol) -> &str {
        self.identities
            .get(&protocol)
            .map_or(self.mailbox.as_str(), String::as_str)
    }
}

/// The last observed state of an account's grant. Written by the broker after each token
/// request, read by `oxbridge account list/show` (another process), hence kept in the store
/// rather than in memory. Times are Unix seconds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrantHealth {
    /// Last successful token request.
    pub last_refresh_at: Option<i64>,
    /// Expiry of the access token that request returned.
    pub access_token_expires_at: Option<i64>,
    /// The most recent failed token request, kept after later successes for the record.
    pub last_failure: Option<GrantFailure>,
}

/// One failed token request, as recorded: no secret, only Entra's codes and first line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantFailure {
    pub at: i64,
    /// The broker's failure class name (`reconsent`, `interaction`, `configuration`, …).
    pub class: String,
    /// AADSTS codes, numeric part.
    pub codes: Vec<u32>,
    /// Short, secret-free description, with the next step for the operator where known.
    pub reason: String,
    /// A Conditional Access claims challenge that came with the failure (EXCHANGE.md §4.7),
    /// to be passed on at the next interactive sign-in. Not a secret; at most [`MAX_CLAIMS`]
    /// bytes (a longer one is not kept: cut short it would be useless).
    pub claims: Option<String>,
}

/// Longest claims challenge kept with a grant failure. Real ones name a few policy ids and
/// are a few hundred bytes.
pub const MAX_CLAIMS: usize = 4096;

impl GrantFailure {
    /// `claims` if it is non-empty and within [`MAX_CLAIMS`].
    pub fn bounded_claims(claims: Option<&str>) -> Option<String> {
        claims
            .map(str::trim)
            .filter(|c| !c.is_empty() && c.len() <= MAX_CLAIMS)
            .map(str::to_owned)
    }
}

/// A named local password of an account, without its verifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordInfo {
    pub name: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds, with one-minute granularity; `None` if never used.
    pub last_used_at: Option<i64>,
}

/// How a new account's grant is set up.
#[derive(Debug, Clone)]
pub enum NewGrant {
    ClientCredentials,
    /// Resource-owner password grant: `password` is the user's Entra password, already
    /// accepted by Entra.
    Password,
    /// A refresh token from device code, auth code or import; sealed before it is stored.
    RefreshToken(Secret),
}

/// Everything needed to create an account; validated by [`NewAccount::validate`].
#[derive(Debug, Clone)]
pub struct NewAccount {
    pub name: String,
    pub mailbox: String,
    pub app: String,
    pub protocols: Vec<Protocol>,
    pub grant: NewGrant,
    pub password: Secret,
    /// [`Sealing::Password`] seals the refresh token under the password as well (delegated
    /// grants only).
    pub sealing: Sealing,
}

impl NewAccount {
    /// Checks the input before anything is written, so a bad CLI call changes nothing.
    pub fn validate(&self) -> Result<(), StoreError> {
        validate_name(&self.name)?;
        validate_mailbox(&self.mailbox)?;
        if self.app.trim().is_empty() || self.app.chars().any(char::is_control) {
            return Err(StoreError::Invalid("app name must not be empty".into()));
        }
        if self.protocols.is_empty() {
            return Err(StoreError::Invalid(
                "at least one protocol is required".into(),
            ));
        }
        validate_password(&self.password)?;
        if self.sealing == Sealing::Password && !matches!(self.grant, NewGrant::RefreshToken(_)) {
            return Err(StoreError::Invalid(
                "only delegated grants (device code, browser, imported refresh token) can be \
                 password-sealed: app-only and password-grant accounts keep no refresh token"
                    .into(),
            ));
        }
        if let NewGrant::RefreshToken(token) = &self.grant {
            if token.is_empty() {
                return Err(StoreError::Invalid(
                    "refresh token must not be empty".into(),
                ));
            }
        }
        Ok(())
    }
}

/// Most named passwords one account may have: each login checks them all (one Argon2 run,
/// see `password.rs`, plus a comparison each), so the list stays short.
pub const MAX_PASSWORDS: usize = 16;

/// A password name is shown in listings and used on the command line: the same rules as an
/// account name, and short.
pub(crate) fn validate_password_name(name: &str) -> Result<(), StoreError> {
    if name.is_empty() || name.len() > 64 || has_space_or_control(name) {
        return Err(StoreError::Invalid(format!(
            "password name {name:?} must be 1-64 characters without spaces or control characters"
        )));
    }
    Ok(())
}

/// A mailbox address (XOAUTH2 `user=`) must look like one and be safe inside the SASL blob.
pub(crate) fn validate_mailbox(mailbox: &str) -> Result<(), StoreError> {
    if mailbox.is_empty() || !mailbox.contains('@') || has_space_or_control(mailbox) {
        return Err(StoreError::Invalid(format!(
            "mailbox {mailbox:?} must be an address like user@example.com"
        )));
    }
    Ok(())
}

/// A login name must be something a mail client can send in `LOGIN name pass` or SASL PLAIN
/// without quoting surprises: non-empty, no whitespace, no control characters.
pub(crate) fn validate_name(name: &str) -> Result<(), StoreError> {
    if name.is_empty() || has_space_or_control(name) {
        return Err(StoreError::Invalid(format!(
            "account name {name:?} must be non-empty, without spaces or control characters"
        )));
    }
    Ok(())
}

pub(crate) fn validate_password(password: &Secret) -> Result<(), StoreError> {
    if password.is_empty() {
        return Err(StoreError::Invalid("password must not be empty".into()));
    }
    Ok(())
}

fn has_space_or_control(text: &str) -> bool {
    text.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Sorted, deduplicated protocols, so equal permission sets store equally.
pub(crate) fn normalize_protocols(protocols: &[Protocol]) -> Vec<Protocol> {
    let mut list = protocols.to_vec();
    list.sort();
    list.dedup();
    list
}

/// The database form of a protocol list: `imap,pop3`.
pub(crate) fn protocols_to_text(protocols: &[Protocol]) -> String {
    normalize_protocols(protocols)
        .iter()
        .map(|p| p.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

pub(crate) fn protocols_from_text(text: &str) -> Result<Vec<Protocol>, StoreError> {
    let list = text
        .split(',')
        .filter(|p| !p.is_empty())
        .map(|p| p.parse::<Protocol>().map_err(StoreError::Corrupt))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(normalize_protocols(&list))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> NewAccount {
        NewAccount {
            name: "scanner".into(),
            mailbox: "scanner@contoso.com".into(),
            app: "contoso".into(),
            protocols: vec![Protocol::Smtp],
            grant: NewGrant::ClientCredentials,
            password: Secret::from("pw"),
            sealing: Sealing::MasterKey,
        }
    }

    #[test]
    fn status_and_grant_names_round_trip() {
        for s in [
            AccountStatus::Active,
            AccountStatus::NeedsReconsent,
            AccountStatus::Disabled,
        ] {
            assert_eq!(s.as_str().parse::<AccountStatus>().ok(), Some(s));
        }
        for g in [
            GrantKind::ClientCredentials,
            GrantKind::RefreshToken,
            GrantKind::Password,
        ] {
            assert_eq!(g.as_str().parse::<GrantKind>().ok(), Some(g));
        }
        assert!("Active".parse::<AccountStatus>().is_err());
    }

    #[test]
    fn protocols_round_trip_sorted_and_deduplicated() {
        let text = protocols_to_text(&[Protocol::Smtp, Protocol::Imap, Protocol::Smtp]);
        assert_eq!(text, "imap,smtp");
        let back = protocols_from_text(&text).expect("parses");
        assert_eq!(back, vec![Protocol::Imap, Protocol::Smtp]);
        assert!(matches!(
            protocols_from_text("imap,gopher"),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[test]
    fn validation_rejects_bad_input() {
        assert!(sample().validate().is_ok());
        let cases: [fn(&mut NewAccount); 11] = [
            |a| a.name = String::new(),
            |a| a.name = "two words".into(),
            |a| a.name = "tab\there".into(),
            |a| a.name = "nul\0".into(),
            |a| a.mailbox = String::new(),
            |a| a.mailbox = "no-at-sign".into(),
            |a| a.app = String::new(),
            |a| a.protocols.clear(),
            |a| a.password = Secret::default(),
            |a| a.grant = NewGrant::RefreshToken(Secret::default()),
            |a| a.sealing = Sealing::Password,
        ];
        for (i, change) in cases.iter().enumerate() {
            let mut account = sample();
            change(&mut account);
            assert!(
                matches!(account.validate(), Err(StoreError::Invalid(_))),
                "case {i} should be invalid"
            );
        }
    }

    /// An active account allowed IMAP only, for the tests to adjust.
    fn account() -> Account {
        Account {
            id: 1,
            name: "a".into(),
            mailbox: "a@b".into(),
            app: "x".into(),
            grant: GrantKind::RefreshToken,
            protocols: vec![Protocol::Imap],
            status: AccountStatus::Active,
            status_reason: None,
            created_at: 0,
            updated_at: 0,
            last_login_at: None,
            refresh_token_updated_at: None,
            identities: BTreeMap::new(),
            health: GrantHealth::default(),
            sealing: Sealing::MasterKey,
        }
    }

    #[test]
    fn allows_checks_the_protocol_list() {
        let account = account();
        assert!(account.allows(Protocol::Imap));
        assert!(!account.allows(Protocol::Smtp));
    }

    #[test]
    fn a_login_time_within_the_granularity_is_current() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let mut account = account();
        assert!(!account.last_login_is_current(), "never logged in");
        account.last_login_at = Some(now - 5);
        assert!(account.last_login_is_current());
        account.last_login_at = Some(now - LOGIN_TIMESTAMP_GRANULARITY - 5);
        assert!(!account.last_login_is_current(), "older than a minute");
    }

    #[test]
    fn mailbox_for_uses_the_protocol_override() {
        let mut account = account();
        account.mailbox = "shared@b".into();
        account.protocols = Protocol::ALL.to_vec();
        account
            .identities
            .insert(Protocol::Smtp, "delegate@b".to_string());
        assert_eq!(account.mailbox_for(Protocol::Imap), "shared@b");
        assert_eq!(account.mailbox_for(Protocol::Pop3), "shared@b");
        assert_eq!(account.mailbox_for(Protocol::Smtp), "delegate@b");
    }

    #[test]
    fn password_names_are_checked() {
        assert!(validate_password_name("scanner-2f").is_ok());
        assert!(validate_password_name("").is_err());
        assert!(validate_password_name("two words").is_err());
        assert!(validate_password_name(&"x".repeat(65)).is_err());
    }
}
