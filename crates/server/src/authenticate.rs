//! Turning a legacy login into an authenticated upstream connection: verify the local
//! password, check the account may use this protocol, get a token, log in upstream.

use std::sync::Arc;
use std::time::Instant;

use oxbridge_broker::{FailureClass, TokenBroker};
use oxbridge_store::{Account, AccountStatus, CredentialStore};
use oxbridge_wire::{BackEnd, Login, LoginRejection, UpstreamEndpoint, UpstreamSession};

use crate::metrics::Metrics;

/// Resolves logins through the store, the broker and a protocol's back-end.
pub struct Authenticator {
    pub store: Arc<dyn CredentialStore>,
    pub broker: Arc<TokenBroker>,
    pub metrics: Metrics,
}

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
    ) -> Result<UpstreamSession, LoginRejection> {
        let result = self.resolve(login, back, endpoint).await;
        let protocol = login.protocol.as_str();
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
            user = %login.user.escape_debug(),
            mailbox,
            protocol,
            peer = %login.peer,
            result = outcome,
            "login"
        );
        match result {
            Ok((session, account)) => {
                let store = self.store.clone();
                tokio::spawn(async move {
                    if let Err(e) = store.record_login(account.id).await {
                        tracing::debug!(error = %e, "could not record the login time");
                    }
                });
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
    ) -> Result<(UpstreamSession, Account), (LoginRejection, Option<String>)> {
        let account = match self.store.verify_login(&login.user, &login.password).await {
            Ok(Some(account)) => account,
            Ok(None) => return Err((LoginRejection::BadCredentials, None)),
            Err(e) => {
                tracing::warn!(error = %e, "store unavailable during login");
                return Err((LoginRejection::Unavailable, None));
            }
        };
        let mailbox = Some(account.mailbox.clone());
        match account.status {
            AccountStatus::Active => {}
            AccountStatus::NeedsReconsent => return Err((LoginRejection::GrantRevoked, mailbox)),
            AccountStatus::Disabled => return Err((LoginRejection::NotPermitted, mailbox)),
        }
        if !account.allows(login.protocol) {
            return Err((LoginRejection::NotPermitted, mailbox));
        }

        let mut retried = false;
        loop {
            let token = match self.broker.access_token(&account).await {
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
                    return Err((why, mailbox));
                }
            };
            let started = Instant::now();
            let result = back.login(endpoint, &account.mailbox, &token.secret).await;
            self.metrics
                .upstream_login_seconds
                .with_label_values(&[login.protocol.as_str()])
                .observe(started.elapsed().as_secs_f64());
            match result {
                Ok(session) => return Ok((session, account)),
                Err(e) if e.is_rejection() && !token.fresh && !retried => {
                    // A cached token may have been revoked upstream; try once with a new one.
                    tracing::info!(account = %account.name, "upstream refused a cached token; refreshing");
                    self.broker.invalidate(account.id);
                    retried = true;
                }
                Err(e) if e.is_rejection() => {
                    tracing::warn!(account = %account.name, error = %e, "upstream refused the token");
                    return Err((LoginRejection::UpstreamRejected, mailbox));
                }
                Err(e) => {
                    tracing::warn!(account = %account.name, upstream = %endpoint.address, error = %e, "upstream unavailable");
                    return Err((LoginRejection::Unavailable, mailbox));
                }
            }
        }
    }
}
