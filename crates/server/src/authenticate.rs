//! Turning a legacy login into an authenticated upstream connection: verify the local
//! password, check the account may use this protocol, get a token, log in upstream. A relay
//! request (SMTP without login, from a network a relay rule covers) takes the same path from
//! the rule's account on, after the rule has vetted the envelope sender.

use std::sync::Arc;
use std::time::Instant;

use oxbridge_broker::{FailureClass, PasswordGrantError, TokenBroker};
use oxbridge_store::{Account, AccountStatus, CredentialStore, GrantKind};
use oxbridge_wire::{
    BackEnd, FrontEnd, Login, LoginRejection, Next, Protocol, RelayRejection, RelayRequest,
    UpstreamEndpoint, UpstreamError, UpstreamSession,
};

use crate::metrics::Metrics;
use crate::relay::{RelayRule, RelayRules};
use crate::throttle::{LoginGuard, Throttle};

/// Resolves logins through the store, the broker and a protocol's back-end.
pub struct Authenticator {
    pub store: Arc<dyn CredentialStore>,
    pub broker: Arc<TokenBroker>,
    pub metrics: Metrics,
    /// Which client networks may submit without logging in (SMTP); replaced by a reload.
    pub relay: arc_swap::ArcSwap<RelayRules>,
    /// Failed-login counters: delays and lockouts per user name and source address.
    pub throttle: Throttle,
}

/// Why a login or relay request did not reach the splice, in the form the front-end must
/// hear it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Login(LoginRejection),
    /// The upstream refused the account's token, in these words (its final reply).
    Upstream(String),
    Relay(RelayRejection),
}

impl From<LoginRejection> for Refusal {
    fn from(why: LoginRejection) -> Self {
        Refusal::Login(why)
    }
}

impl Refusal {
    /// A short label for metrics and the audit log.
    pub fn as_str(&self) -> &'static str {
        match self {
            Refusal::Login(why) => why.as_str(),
            Refusal::Upstream(_) => LoginRejection::UpstreamRejected.as_str(),
            Refusal::Relay(why) => why.as_str(),
        }
    }

    /// Has the front-end write the client's reply; returns what the driver does next.
    pub fn tell<F: FrontEnd>(self, front: &mut F, out: &mut Vec<u8>) -> Next {
        match self {
            Refusal::Login(why) => front.login_failed(why, out),
            Refusal::Upstream(reply) => front.upstream_refused(&reply, out),
            Refusal::Relay(why) => front.relay_refused(why, out),
        }
    }
}

/// What resolving a request produced: the session and its account, or why not (with the
/// mailbox, when known, for the audit log).
type Resolved = Result<(UpstreamSession, Account), (Refusal, Option<String>)>;

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Authenticates `login` and logs in upstream; records the outcome in metrics and the
    /// audit log.
    pub async fn authenticate<B: BackEnd>(
        &self,
        login: &Login,
        back: &B,
        endpoint: &UpstreamEndpoint,
    ) -> Result<UpstreamSession, Refusal> {
        let guard = LoginGuard::new(
            &self.throttle,
            &self.metrics,
            login.protocol,
            &login.user,
            login.peer.ip(),
        );
        let result = if guard.admit().await {
            let result = self.resolve(login, back, endpoint).await;
            match &result {
                Ok(_) => guard.succeeded(),
                Err((Refusal::Login(LoginRejection::BadCredentials), _)) => guard.failed().await,
                Err(_) => {}
            }
            result
        } else {
            // Locked out: answered like a wrong password, without testing this one.
            Err((LoginRejection::BadCredentials.into(), None))
        };
        let audit = Audit {
            protocol: login.protocol,
            user: &login.user,
            peer: login.peer,
            method: "password",
        };
        self.conclude(result, audit)
    }

    /// Logs in upstream as the account of the relay rule that covers the client's address,
    /// once the rule allows the envelope sender; records the outcome like a login.
    pub async fn relay<B: BackEnd>(
        &self,
        request: &RelayRequest,
        back: &B,
        endpoint: &UpstreamEndpoint,
    ) -> Result<UpstreamSession, Refusal> {
        let rules = self.relay.load_full();
        let rule = rules.rule_for(request.peer.ip());
        let result = self.resolve_relay(rule, request, back, endpoint).await;
        let audit = Audit {
            protocol: request.protocol,
            user: rule.map_or("", |r| r.account.as_str()),
            peer: request.peer,
            method: "relay",
        };
        if let Err((Refusal::Relay(why), _)) = &result {
            tracing::info!(sender = %request.sender.escape_debug(), reason = why.as_str(), "relay refused");
        }
        self.conclude(result, audit)
    }

    /// Warns about relay rules whose account cannot serve a relay: one that does not exist,
    /// or a password-sealed one (a relay brings no password to open it). Run at start and
    /// after each reload, so the operator hears then rather than from the first device whose
    /// mail is refused; the rules still load, and such relays are refused when they come.
    pub async fn check_relay_accounts(&self) {
        let rules = self.relay.load_full();
        for name in rules.accounts() {
            match self.store.account(name).await {
                Ok(Some(account)) if account.password_sealed() => tracing::warn!(
                    account = %name,
                    "a relay rule names a password-sealed account, which only a login can \
                     open; relays for it will be refused"
                ),
                Ok(Some(_)) => {}
                Ok(None) => tracing::warn!(
                    account = %name,
                    "a relay rule names an account that does not exist; relays for it will \
                     be refused"
                ),
                Err(e) => tracing::debug!(error = %e, "could not check the relay rules' accounts"),
            }
        }
    }

    /// Records the outcome in metrics and the audit log, and the login time in the store.
    fn conclude(&self, result: Resolved, audit: Audit<'_>) -> Result<UpstreamSession, Refusal> {
        let protocol = audit.protocol.as_str();
        let (outcome, mailbox) = match &result {
            Ok((_, account)) => ("ok", account.mailbox.as_str()),
            Err((why, account)) => (why.as_str(), account.as_deref().unwrap_or("")),
        };
        self.metrics
            .logins_total
            .with_label_values(&[protocol, outcome])
            .inc();
        tracing::info!(
            target: "oxbridge::audit",
            user = %audit.user.escape_debug(),
            mailbox,
            protocol,
            peer = %audit.peer,
            method = audit.method,
            result = outcome,
            "login"
        );
        match result {
            Ok((session, account)) => {
                if !account.last_login_is_current() {
                    let store = self.store.clone();
                    tokio::spawn(async move {
                        if let Err(e) = store.record_login(account.id).await {
                            tracing::debug!(error = %e, "could not record the login time");
                        }
                    });
                }
                Ok(session)
            }
            Err((why, _)) => Err(why),
        }
    }

    async fn resolve<B: BackEnd>(
        &self,
        login: &Login,
        back: &B,
        endpoint: &UpstreamEndpoint,
    ) -> Resolved {
        let verify_started = Instant::now();
        let verified = self.store.verify_login(&login.user, &login.password).await;
        tracing::debug!(
            elapsed_us = verify_started.elapsed().as_micros() as u64,
            "password verified"
        );
        let account = match verified {
            Ok(Some(account)) => account,
            Ok(None) => match self.password_grant_login(login).await {
                Some(account) => account,
                None => return Err((LoginRejection::BadCredentials.into(), None)),
            },
            Err(e) => {
                tracing::warn!(error = %e, "store unavailable during login");
                return Err((LoginRejection::Unavailable.into(), None));
            }
        };
        self.connect(
            account,
            login.protocol,
            back,
            endpoint,
            Some(&login.password),
        )
        .await
    }

    /// A password-grant account whose password is not the one Entra last accepted (the user
    /// changed it in Entra): Entra itself checks the new one, always with a request (never a
    /// cached token); if it accepts, the local verifier follows.
    async fn password_grant_login(&self, login: &Login) -> Option<Account> {
        let account = self.store.account(&login.user).await.ok()??;
        if account.grant != GrantKind::Password || account.status != AccountStatus::Active {
            return None;
        }
        match self
            .broker
            .verify_password_grant(&account, &login.password)
            .await
        {
            Ok(_) => {
                if let Err(e) = self
                    .store
                    .set_password(&account.name, &login.password, None)
                    .await
                {
                    tracing::warn!(account = %account.name, error = %e, "could not update the password verifier");
                }
                Some(account)
            }
            Err(e) => {
                tracing::info!(account = %account.name, error = %e, "password grant refused");
                None
            }
        }
    }

    async fn resolve_relay<B: BackEnd>(
        &self,
        rule: Option<&RelayRule>,
        request: &RelayRequest,
        back: &B,
        endpoint: &UpstreamEndpoint,
    ) -> Resolved {
        let Some(rule) = rule else {
            return Err((Refusal::Relay(RelayRejection::NoRule), None));
        };
        if !rule.allows_sender(&request.sender) {
            return Err((Refusal::Relay(RelayRejection::SenderNotAllowed), None));
        }
        let account = match self.store.account(&rule.account).await {
            // A sealed grant opens only with a password, and a relay brings none: refused
            // every time rather than working until the cached access token runs out.
            Ok(Some(account)) if account.password_sealed() => {
                tracing::warn!(
                    account = %rule.account,
                    "a relay rule names a password-sealed account, which only a login can \
                     refresh; point the rule at an account that is not password-sealed"
                );
                return Err((LoginRejection::NotPermitted.into(), Some(account.mailbox)));
            }
            Ok(Some(account)) => account,
            Ok(None) => {
                tracing::warn!(account = %rule.account, "a relay rule names an account that does not exist");
                return Err((LoginRejection::NotPermitted.into(), None));
            }
            Err(e) => {
                tracing::warn!(error = %e, "store unavailable during relay");
                return Err((LoginRejection::Unavailable.into(), None));
            }
        };
        self.connect(account, request.protocol, back, endpoint, None)
            .await
    }

    /// From a known account to an authenticated upstream session: status and protocol
    /// checks, the access token (refreshed once if the upstream refuses a cached one), the
    /// upstream login.
    async fn connect<B: BackEnd>(
        &self,
        account: Account,
        protocol: Protocol,
        back: &B,
        endpoint: &UpstreamEndpoint,
        password: Option<&oxbridge_wire::Secret>,
    ) -> Resolved {
        let mailbox = Some(account.mailbox.clone());
        let refuse = |why: LoginRejection| Err((why.into(), mailbox.clone()));
        match account.status {
            AccountStatus::Active => {}
            AccountStatus::NeedsReconsent => return refuse(LoginRejection::GrantRevoked),
            AccountStatus::Disabled => return refuse(LoginRejection::NotPermitted),
        }
        if !account.allows(protocol) {
            return refuse(LoginRejection::NotPermitted);
        }

        let mut retried = false;
        loop {
            let token_started = Instant::now();
            let token = match (account.grant, password) {
                // The password grant: the login's own (locally verified) password is the
                // credential Entra checks.
                (GrantKind::Password, Some(password)) => {
                    match self
                        .broker
                        .access_token_with_password(&account, password)
                        .await
                    {
                        Ok(token) => Ok(token),
                        Err(PasswordGrantError::WrongPassword) => {
                            return refuse(LoginRejection::BadCredentials)
                        }
                        Err(PasswordGrantError::Token(e)) => Err(e),
                    }
                }
                // A password-sealed grant: the login's password opens it if a refresh is due.
                (GrantKind::RefreshToken, Some(password)) if account.password_sealed() => {
                    self.broker.access_token_unsealing(&account, password).await
                }
                _ => self.broker.access_token(&account).await,
            };
            tracing::debug!(
                elapsed_us = token_started.elapsed().as_micros() as u64,
                "access token ready"
            );
            let token = match token {
                Ok(token) => token,
                Err(e) => {
                    let why = match e.class() {
                        FailureClass::Reconsent | FailureClass::Interaction => {
                            LoginRejection::GrantRevoked
                        }
                        // A configuration error is the operator's to fix; devices should keep
                        // their mail queued meanwhile, so it is temporary for them.
                        FailureClass::Configuration
                        | FailureClass::Transient
                        | FailureClass::Throttled => LoginRejection::Unavailable,
                    };
                    tracing::warn!(account = %account.name, error = %e, "no access token");
                    return refuse(why);
                }
            };
            let started = Instant::now();
            // The XOAUTH2 identity may differ per protocol (shared mailbox, delegate).
            let result = back
                .login(endpoint, account.mailbox_for(protocol), &token.secret)
                .await;
            tracing::debug!(
                elapsed_us = started.elapsed().as_micros() as u64,
                "upstream login done"
            );
            self.metrics
                .upstream_login_seconds
                .with_label_values(&[protocol.as_str()])
                .observe(started.elapsed().as_secs_f64());
            match result {
                Ok(session) => return Ok((session, account)),
                Err(e) if e.is_rejection() && !token.fresh && !retried => {
                    // A cached token may have been revoked upstream; try once with a new one.
                    tracing::info!(account = %account.name, "upstream refused a cached token; refreshing");
                    self.broker.invalidate(account.id);
                    retried = true;
                }
                Err(UpstreamError::Rejected(reply)) => {
                    tracing::warn!(account = %account.name, reply = %reply.escape_debug(), "upstream refused the token");
                    return Err((Refusal::Upstream(reply), mailbox));
                }
                Err(e) => {
                    self.metrics
                        .upstream_unavailable_total
                        .with_label_values(&[protocol.as_str()])
                        .inc();
                    tracing::warn!(account = %account.name, upstream = %endpoint.address, error = %e, "upstream unavailable");
                    return refuse(LoginRejection::Unavailable);
                }
            }
        }
    }
}

/// Who asked, for the audit log.
#[derive(Debug, Clone, Copy)]
struct Audit<'a> {
    protocol: Protocol,
    /// The local user name, or for a relay the rule's account.
    user: &'a str,
    peer: std::net::SocketAddr,
    /// `password` or `relay`.
    method: &'static str,
}
