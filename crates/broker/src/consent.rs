//! Onboarding a delegated grant: the device-code flow (RFC 8628, EXCHANGE.md §4.4) for
//! headless servers and the authorization-code flow with PKCE and a loopback redirect
//! (§4.5) where a browser is at hand. Both end in a refresh token for the store.
//!
//! The `oauth2` crate does the protocol work (polling with `interval` and `slow_down`,
//! PKCE S256, `state`); this module adds what Entra needs on top: its error bodies, the
//! app's certificate assertion on token requests, and errors that tell the operator what to
//! do next. Printing and waiting for the browser are the CLI's business.

use std::borrow::Cow;
use std::time::Duration;

use oauth2::basic::{BasicRevocationErrorResponse, BasicTokenIntrospectionResponse};
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, CsrfToken, DeviceAuthorizationResponse,
    DeviceAuthorizationUrl, DeviceCodeErrorResponseType, EndpointNotSet, EndpointSet,
    ExtraDeviceAuthorizationFields, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl,
    RequestTokenError, StandardRevocableToken,
};
use oxbridge_wire::Secret;
use serde::{Deserialize, Serialize};

use crate::app::{assertion_params, error_chain, finish, token_error, AppParts, AppRegistration};
use crate::classify::{classify, FailureClass};
use crate::entra::{first_line, EntraErrorResponse, EntraTokenResponse};
use crate::error::{BrokerError, TokenError};
use crate::transport::Transport;

/// `oauth2`'s client with the authorize, device-authorization and token URLs set.
type ConsentClient = oauth2::Client<
    EntraErrorResponse,
    EntraTokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// The fields Entra adds to a device authorization response.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct EntraDeviceFields {
    /// Entra's ready-made instruction ("To sign in, use a web browser to open …").
    #[serde(default)]
    pub message: Option<String>,
}

impl ExtraDeviceAuthorizationFields for EntraDeviceFields {}

/// Why onboarding did not produce a refresh token. `Display` says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum ConsentError {
    /// The user refused the sign-in (`authorization_declined` / `access_denied`).
    #[error("the sign-in was declined; run the command again and accept the consent prompt")]
    Declined,
    /// The device code or the wait for the browser ran out.
    #[error("the code expired before the sign-in finished; run the command again and sign in within {0:?}")]
    Expired(Duration),
    /// Entra issued no refresh token: the app's scopes lack `offline_access`.
    #[error("Entra returned no refresh token; add offline_access to the app's scopes")]
    NoRefreshToken,
    /// The redirect's `state` was not the one sent: a forged or stale redirect.
    #[error("the redirect's state does not match this sign-in (a stale or forged redirect); run the command again")]
    StateMismatch,
    /// The authorize endpoint redirected back with an error.
    #[error("sign-in failed: {error}: {description}")]
    Authorize { error: String, description: String },
    /// The token or device endpoint refused; the message carries the AADSTS code.
    #[error("{0}")]
    Token(#[from] TokenError),
}

/// A device code the user has to enter at [`DeviceCode::verification_uri`].
#[derive(Debug)]
pub struct DeviceCode {
    response: DeviceAuthorizationResponse<EntraDeviceFields>,
}

impl DeviceCode {
    /// The code to type in, e.g. `GF3KQ8XLM`.
    pub fn user_code(&self) -> &str {
        self.response.user_code().secret()
    }

    /// Where to type it, e.g. `https://microsoft.com/devicelogin`.
    pub fn verification_uri(&self) -> &str {
        self.response.verification_uri().as_str()
    }

    /// Entra's own instruction text, if it sent one.
    pub fn message(&self) -> Option<&str> {
        self.response.extra_fields().message.as_deref()
    }

    /// How long the user has (Entra: 15 minutes).
    pub fn expires_in(&self) -> Duration {
        self.response.expires_in()
    }

    /// The polling interval Entra asked for (Entra: 5 seconds).
    pub fn interval(&self) -> Duration {
        self.response.interval()
    }
}

/// A browser sign-in in progress: the URL to open, and what checking the redirect needs.
#[derive(Debug)]
pub struct AuthorizationRequest {
    /// Open this in a browser.
    pub url: String,
    redirect: RedirectUrl,
    state: CsrfToken,
    verifier: PkceCodeVerifier,
}

/// What came back on the loopback redirect, as query parameters.
#[derive(Debug, Default, Clone)]
pub struct Callback {
    pub code: Option<Secret>,
    pub state: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

/// Onboarding for one app registration.
#[derive(Debug)]
pub struct Consent {
    client: ConsentClient,
    parts: AppParts,
    app: String,
    allow_password_grant: bool,
}

impl Consent {
    /// Builds the flows' client from the registration (the same validation as the broker's).
    pub fn new(app: &AppRegistration, request_timeout: Duration) -> Result<Consent, BrokerError> {
        let parts = AppParts::new(app, request_timeout)?;
        let base = format!(
            "{}/{}/oauth2/v2.0",
            app.authority.trim_end_matches('/'),
            app.tenant.trim_matches('/')
        );
        let invalid = |e: oauth2::url::ParseError| BrokerError::InvalidApp {
            app: app.name.clone(),
            reason: format!("bad authority: {e}"),
        };
        let mut client = oauth2::Client::new(parts.client_id.clone())
            .set_auth_uri(AuthUrl::new(format!("{base}/authorize")).map_err(invalid)?)
            .set_device_authorization_url(
                DeviceAuthorizationUrl::new(format!("{base}/devicecode")).map_err(invalid)?,
            )
            .set_token_uri(parts.token_url.clone())
            .set_auth_type(AuthType::RequestBody);
        if let Some(secret) = &parts.client_secret {
            client = client.set_client_secret(secret.clone());
        }
        Ok(Consent {
            client,
            parts,
            app: app.name.clone(),
            allow_password_grant: app.allow_password_grant,
        })
    }

    /// Tries the resource-owner password grant once, so that `account add --password-grant`
    /// fails at once when the tenant, the user (MFA) or the password does not allow it.
    pub async fn check_password_grant(
        &self,
        username: &str,
        password: &Secret,
    ) -> Result<(), ConsentError> {
        if !self.allow_password_grant {
            return Err(TokenError::Credential(format!(
                "app {:?} does not allow the password grant; set allow_password_grant = true \
                 on its [[app]] (the weakest option: see docs/onboarding.md)",
                self.app
            ))
            .into());
        }
        let text = password
            .expose_str()
            .ok_or_else(|| TokenError::Credential("the password is not UTF-8".into()))?;
        let username = oauth2::ResourceOwnerUsername::new(username.to_owned());
        let password = oauth2::ResourceOwnerPassword::new(text.to_owned());
        let assertion = self.parts.assertion()?;
        let transport = Transport::new(self.parts.http.clone());
        let mut request = self
            .client
            .exchange_password(&username, &password)
            .add_scopes(self.parts.delegated_scopes.iter().cloned());
        if let Some(assertion) = &assertion {
            for (name, value) in assertion_params(assertion) {
                request = request.add_extra_param(name, value);
            }
        }
        let result = request.request_async(&transport).await;
        finish(result, transport.response_meta())?;
        Ok(())
    }

    /// Asks Entra for a device code (`POST …/devicecode`), passing on a pending claims
    /// challenge (`claims`), so the sign-in satisfies what the token endpoint demanded.
    pub async fn start_device_code(
        &self,
        claims: Option<&str>,
    ) -> Result<DeviceCode, ConsentError> {
        let transport = Transport::new(self.parts.http.clone());
        let mut request = self
            .client
            .exchange_device_code()
            .add_scopes(self.parts.delegated_scopes.iter().cloned());
        if let Some(claims) = claims {
            request = request.add_extra_param("claims", claims.to_owned());
        }
        let result = request.request_async(&transport).await;
        match result {
            Ok(response) => Ok(DeviceCode { response }),
            Err(e) => Err(ConsentError::Token(token_error(
                e,
                transport.response_meta(),
            ))),
        }
    }

    /// Polls the token endpoint until the user signs in, declines, or the code expires.
    ///
    /// Waits one `interval` before the first poll, then as `oauth2` directs: the same
    /// interval after `authorization_pending`, five seconds more after every `slow_down`.
    /// `waiting` is called before each wait with the interval in force, so the caller can
    /// show progress (and notice a slow-down).
    pub async fn finish_device_code(
        &self,
        code: &DeviceCode,
        waiting: impl Fn(Duration),
    ) -> Result<Secret, ConsentError> {
        let expires = code.expires_in();
        let interval = code.interval();
        waiting(interval);
        tokio::time::sleep(interval).await;
        // One assertion must cover the whole polling loop, which outlives its usual lifetime.
        let assertion = match &self.parts.signer {
            Some(signer) => Some(
                signer
                    .sign(
                        std::time::SystemTime::now(),
                        expires + Duration::from_secs(60),
                    )
                    .map_err(TokenError::Credential)?,
            ),
            None => None,
        };
        let transport = Transport::new(self.parts.http.clone());
        let mut request = self.client.exchange_device_access_token(&code.response);
        if let Some(assertion) = assertion.as_ref().and_then(Secret::expose_str) {
            for (name, value) in assertion_params(assertion) {
                request = request.add_extra_param(name, value);
            }
        }
        let result = request
            .request_async(
                &transport,
                |wait| {
                    waiting(wait);
                    tokio::time::sleep(wait)
                },
                Some(expires),
            )
            .await;
        let response = match result {
            Ok(response) => response,
            Err(RequestTokenError::ServerResponse(body)) => {
                return Err(match body.error() {
                    DeviceCodeErrorResponseType::ExpiredToken => ConsentError::Expired(expires),
                    DeviceCodeErrorResponseType::AccessDenied => ConsentError::Declined,
                    other if other.as_ref() == "authorization_declined" => ConsentError::Declined,
                    other => {
                        let status = transport.response_meta().map_or(400, |m| m.status);
                        ConsentError::Token(TokenError::Provider {
                            class: classify(status, other.as_ref(), &[], None, false),
                            error: other.as_ref().to_owned(),
                            codes: codes_in(body.error_description().map(String::as_str)),
                            description: first_line(
                                body.error_description().map_or("", String::as_str),
                            ),
                            retry_after: None,
                            claims: None,
                        })
                    }
                })
            }
            Err(RequestTokenError::Request(e)) => {
                return Err(TokenError::Network(error_chain(&e)).into())
            }
            Err(RequestTokenError::Parse(e, _)) => {
                return Err(TokenError::Network(format!(
                    "unparseable token endpoint answer (at {})",
                    e.path()
                ))
                .into())
            }
            Err(RequestTokenError::Other(message)) => {
                return Err(TokenError::Network(message).into())
            }
        };
        refresh_token_of(finish(Ok(response), transport.response_meta())?)
    }

    /// Starts a browser sign-in: a fresh `state` and PKCE S256 verifier, and the authorize
    /// URL for `redirect_uri` (a loopback `http://localhost:PORT/`), with a pending claims
    /// challenge passed on as `claims`.
    pub fn authorization_request(
        &self,
        redirect_uri: &str,
        login_hint: Option<&str>,
        claims: Option<&str>,
    ) -> Result<AuthorizationRequest, ConsentError> {
        let redirect =
            RedirectUrl::new(redirect_uri.to_owned()).map_err(|e| ConsentError::Authorize {
                error: "invalid_request".into(),
                description: format!("bad redirect URI {redirect_uri:?}: {e}"),
            })?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = self
            .client
            .authorize_url(CsrfToken::new_random)
            .add_scopes(self.parts.delegated_scopes.iter().cloned())
            .set_pkce_challenge(challenge)
            .set_redirect_uri(Cow::Owned(redirect.clone()))
            .add_extra_param("response_mode", "query")
            .add_extra_param("prompt", "select_account");
        if let Some(hint) = login_hint {
            request = request.add_extra_param("login_hint", hint.to_owned());
        }
        if let Some(claims) = claims {
            request = request.add_extra_param("claims", claims.to_owned());
        }
        let (url, state) = request.url();
        Ok(AuthorizationRequest {
            url: url.to_string(),
            redirect,
            state,
            verifier,
        })
    }

    /// Checks the redirect (`state` first, then any error) and redeems the code with the
    /// PKCE verifier for a refresh token.
    pub async fn redeem(
        &self,
        request: AuthorizationRequest,
        callback: &Callback,
    ) -> Result<Secret, ConsentError> {
        let expected = request.state.secret().as_bytes();
        let state_ok = callback
            .state
            .as_deref()
            .is_some_and(|got| constant_time_eq(got.as_bytes(), expected));
        if !state_ok {
            return Err(ConsentError::StateMismatch);
        }
        if let Some(error) = &callback.error {
            return Err(match error.as_str() {
                "access_denied" | "consent_required" if callback.code.is_none() => {
                    ConsentError::Declined
                }
                _ => ConsentError::Authorize {
                    error: first_line(error),
                    description: first_line(callback.error_description.as_deref().unwrap_or("")),
                },
            });
        }
        let code = callback
            .code
            .as_ref()
            .and_then(Secret::expose_str)
            .filter(|c| !c.is_empty())
            .ok_or_else(|| ConsentError::Authorize {
                error: "invalid_request".into(),
                description: "the redirect carried no code".into(),
            })?;
        let assertion = self.parts.assertion()?;
        let transport = Transport::new(self.parts.http.clone());
        let mut exchange = self
            .client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .set_pkce_verifier(request.verifier)
            .set_redirect_uri(Cow::Owned(request.redirect));
        if let Some(assertion) = &assertion {
            for (name, value) in assertion_params(assertion) {
                exchange = exchange.add_extra_param(name, value);
            }
        }
        let result = exchange.request_async(&transport).await;
        refresh_token_of(finish(result, transport.response_meta())?)
    }
}

/// The refresh token of a successful exchange; without one the grant is useless to us.
fn refresh_token_of(issued: crate::app::Issued) -> Result<Secret, ConsentError> {
    issued.refresh_token.ok_or(ConsentError::NoRefreshToken)
}

/// AADSTS codes named at the start of a description (`AADSTS70020: …`); the device-code
/// error type of `oauth2` drops `error_codes`, but Entra repeats the code in the text.
fn codes_in(description: Option<&str>) -> Vec<u32> {
    description
        .and_then(|d| d.strip_prefix("AADSTS"))
        .and_then(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .into_iter()
        .collect()
}

/// A random `state` for a redirect (admin consent), as the sign-in flows use.
pub fn random_state() -> String {
    CsrfToken::new_random().secret().clone()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl ConsentError {
    /// The failure class, for errors from the endpoints; `None` for the flow's own outcomes.
    pub fn class(&self) -> Option<FailureClass> {
        match self {
            ConsentError::Token(e) => Some(e.class()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_read_from_descriptions() {
        assert_eq!(
            codes_in(Some("AADSTS70020: The provided value ... expired")),
            vec![70020]
        );
        assert!(codes_in(Some("no code here")).is_empty());
        assert!(codes_in(None).is_empty());
    }

    #[test]
    fn state_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
