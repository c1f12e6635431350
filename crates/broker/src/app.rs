//! One Entra app registration: its configuration, and the HTTP + OAuth client built from it
//! once at start-up that performs the two grants the broker needs.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use oauth2::basic::{BasicRevocationErrorResponse, BasicTokenIntrospectionResponse};
use oauth2::{
    AuthType, ClientId, ClientSecret, EndpointNotSet, EndpointSet, HttpClientError, RefreshToken,
    RequestTokenError, ResourceOwnerPassword, ResourceOwnerUsername, Scope, StandardRevocableToken,
    TokenResponse, TokenUrl,
};
use oxbridge_wire::Secret;

use crate::assertion::{AssertionSigner, ClientCertificate, JWT_BEARER};
use crate::classify::classify;
use crate::entra::{EntraErrorResponse, EntraTokenResponse};
use crate::error::{BrokerError, TokenError};
use crate::transport::{ResponseMeta, Transport};

/// Delegated scopes used when an app lists none: the three Exchange protocols on one resource
/// plus `offline_access`, without which Entra returns no refresh token (EXCHANGE.md §4.2).
pub const DEFAULT_DELEGATED_SCOPES: [&str; 4] = [
    "https://outlook.office.com/IMAP.AccessAsUser.All",
    "https://outlook.office.com/POP.AccessAsUser.All",
    "https://outlook.office.com/SMTP.Send",
    "offline_access",
];

/// The app-only scope used when an app sets none (EXCHANGE.md §4.2).
pub const DEFAULT_APP_SCOPE: &str = "https://outlook.office365.com/.default";

/// One Entra app registration, as configured.
///
/// Authority and tenant are configuration rather than constants so that sovereign clouds,
/// private deployments and the test fake all work (DESIGN.md §5).
#[derive(Debug, Clone)]
pub struct AppRegistration {
    /// The name accounts refer to (`Account::app`).
    pub name: String,
    /// e.g. `https://login.microsoftonline.com`; a trailing slash is tolerated.
    pub authority: String,
    /// Tenant id or domain; the token URL is `{authority}/{tenant}/oauth2/v2.0/token`.
    pub tenant: String,
    pub client_id: String,
    /// `None` for a public client, which must send no secret (else AADSTS700025), or for
    /// an app that authenticates with [`AppRegistration::certificate`].
    pub client_secret: Option<Secret>,
    /// Certificate credentials: a signed `client_assertion` instead of a secret.
    pub certificate: Option<ClientCertificate>,
    /// Scopes for the refresh-token grant; empty means [`DEFAULT_DELEGATED_SCOPES`].
    pub delegated_scopes: Vec<String>,
    /// Scope for the client-credentials grant; `None` means [`DEFAULT_APP_SCOPE`].
    pub app_scope: Option<String>,
    /// Extra trust anchors (PEM) for the token endpoint: a private CA, or the test fake's CA.
    pub extra_ca: Vec<PathBuf>,
    /// Allows the resource-owner password grant for this app's accounts. Off by default:
    /// it is the weakest option (no MFA, blocked by most Conditional Access policies, and the
    /// user's real password on every device).
    pub allow_password_grant: bool,
}

impl AppRegistration {
    /// The admin-consent URL (EXCHANGE.md §4.1) through which a tenant administrator grants
    /// this app its permissions for the whole tenant (`scope` is the app-only scope), then is
    /// sent to `redirect_uri` with `admin_consent=True` and `state`.
    pub fn admin_consent_url(
        &self,
        redirect_uri: &str,
        state: &str,
    ) -> Result<String, BrokerError> {
        let invalid = |reason: String| BrokerError::InvalidApp {
            app: self.name.clone(),
            reason,
        };
        let base = format!(
            "{}/{}/v2.0/adminconsent",
            self.authority.trim_end_matches('/'),
            self.tenant.trim_matches('/')
        );
        let scope = self.app_scope.as_deref().unwrap_or(DEFAULT_APP_SCOPE);
        oauth2::url::Url::parse_with_params(
            &base,
            [
                ("client_id", self.client_id.as_str()),
                ("redirect_uri", redirect_uri),
                ("scope", scope),
                ("state", state),
            ],
        )
        .map(String::from)
        .map_err(|e| invalid(format!("bad authority: {e}")))
    }

    /// The token endpoint URL this registration talks to.
    pub fn token_url(&self) -> String {
        format!(
            "{}/{}/oauth2/v2.0/token",
            self.authority.trim_end_matches('/'),
            self.tenant.trim_matches('/')
        )
    }
}

/// `oauth2`'s client specialised to Entra's wire types, with only the token URL set.
type OAuthClient = oauth2::Client<
    EntraErrorResponse,
    EntraTokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// What a successful grant produced.
#[derive(Debug)]
pub(crate) struct Issued {
    pub access_token: Secret,
    pub expires_in: Option<Duration>,
    /// A rotated refresh token, to be persisted before the access token is used.
    pub refresh_token: Option<Secret>,
}

/// The ready-to-use client for one app registration.
#[derive(Debug)]
pub(crate) struct AppClient {
    oauth: OAuthClient,
    http: reqwest::Client,
    delegated_scopes: Vec<Scope>,
    app_scope: Scope,
    /// Set for certificate credentials; each request then carries a fresh assertion.
    signer: Option<Arc<AssertionSigner>>,
    /// See [`AppRegistration::allow_password_grant`].
    pub allow_password_grant: bool,
}

/// What every client built from one registration shares: the validated URLs, credentials,
/// scopes and HTTP client. Used by [`AppClient`] and by onboarding (`consent`).
#[derive(Debug)]
pub(crate) struct AppParts {
    pub client_id: ClientId,
    pub client_secret: Option<ClientSecret>,
    pub token_url: TokenUrl,
    pub http: reqwest::Client,
    pub delegated_scopes: Vec<Scope>,
    pub app_scope: Scope,
    pub signer: Option<Arc<AssertionSigner>>,
}

impl AppParts {
    /// Validates the registration and builds its HTTP client once: rustls with the native
    /// roots plus `extra_ca`, no redirects (a token endpoint never redirects, and following
    /// one would send the refresh token elsewhere), and a whole-request timeout.
    pub fn new(app: &AppRegistration, request_timeout: Duration) -> Result<Self, BrokerError> {
        let invalid = |reason: String| BrokerError::InvalidApp {
            app: app.name.clone(),
            reason,
        };
        if app.name.trim().is_empty() {
            return Err(invalid("empty app name".into()));
        }
        if app.client_id.trim().is_empty() {
            return Err(invalid("empty client_id".into()));
        }
        let tenant = app.tenant.trim_matches('/');
        if tenant.is_empty() || tenant.contains('/') {
            return Err(invalid(format!("bad tenant {:?}", app.tenant)));
        }
        let authority = app.authority.trim_end_matches('/');
        if !(authority.starts_with("https://") || authority.starts_with("http://")) {
            return Err(invalid(format!(
                "authority {:?} must be an http(s) URL",
                app.authority
            )));
        }
        let token_url =
            TokenUrl::new(app.token_url()).map_err(|e| invalid(format!("bad authority: {e}")))?;
        if app.client_secret.is_some() && app.certificate.is_some() {
            return Err(invalid(
                "give a client secret or a certificate, not both".into(),
            ));
        }
        let client_secret = match &app.client_secret {
            Some(secret) => Some(ClientSecret::new(
                secret
                    .expose_str()
                    .ok_or_else(|| invalid("client secret is not UTF-8".into()))?
                    .to_owned(),
            )),
            None => None,
        };
        let signer = match &app.certificate {
            Some(certificate) => Some(Arc::new(
                AssertionSigner::load(certificate, &app.client_id, &app.token_url())
                    .map_err(invalid)?,
            )),
            None => None,
        };
        let delegated_scopes = if app.delegated_scopes.is_empty() {
            DEFAULT_DELEGATED_SCOPES
                .iter()
                .map(|s| Scope::new((*s).to_owned()))
                .collect()
        } else {
            app.delegated_scopes
                .iter()
                .cloned()
                .map(Scope::new)
                .collect()
        };
        let app_scope = Scope::new(
            app.app_scope
                .clone()
                .unwrap_or_else(|| DEFAULT_APP_SCOPE.to_owned()),
        );
        Ok(Self {
            client_id: ClientId::new(app.client_id.clone()),
            client_secret,
            token_url,
            http: http_client(app, request_timeout)?,
            delegated_scopes,
            app_scope,
            signer,
        })
    }

    /// A fresh `client_assertion` for one request, if the app uses a certificate.
    pub fn assertion(&self) -> Result<Option<String>, TokenError> {
        signed_assertion(self.signer.as_deref())
    }
}

/// A fresh assertion from `signer`, as form text.
fn signed_assertion(signer: Option<&AssertionSigner>) -> Result<Option<String>, TokenError> {
    match signer {
        None => Ok(None),
        Some(signer) => signer
            .assertion()
            .map_err(TokenError::Credential)?
            .expose_str()
            .map(|s| Some(s.to_owned()))
            .ok_or_else(|| TokenError::Credential("assertion is not text".into())),
    }
}

/// The two form fields that carry a client assertion.
pub(crate) fn assertion_params(assertion: &str) -> [(&'static str, String); 2] {
    [
        ("client_assertion_type", JWT_BEARER.to_owned()),
        ("client_assertion", assertion.to_owned()),
    ]
}

impl AppClient {
    /// Builds the client from the registration's validated parts.
    pub fn new(app: &AppRegistration, request_timeout: Duration) -> Result<Self, BrokerError> {
        let parts = AppParts::new(app, request_timeout)?;
        let mut oauth = oauth2::Client::new(parts.client_id.clone())
            .set_token_uri(parts.token_url.clone())
            .set_auth_type(AuthType::RequestBody);
        if let Some(secret) = &parts.client_secret {
            oauth = oauth.set_client_secret(secret.clone());
        }
        Ok(Self {
            oauth,
            http: parts.http,
            delegated_scopes: parts.delegated_scopes,
            app_scope: parts.app_scope,
            signer: parts.signer,
            allow_password_grant: app.allow_password_grant,
        })
    }

    /// A fresh client assertion, if this app uses a certificate.
    fn assertion(&self) -> Result<Option<String>, TokenError> {
        signed_assertion(self.signer.as_deref())
    }

    /// The delegated grant: `grant_type=refresh_token` with the app's delegated scopes.
    pub async fn refresh(&self, refresh_token: &Secret) -> Result<Issued, TokenError> {
        // A refresh token that is not text can never be sent: treat it as missing.
        let text = refresh_token
            .expose_str()
            .ok_or(TokenError::NoRefreshToken)?;
        let refresh_token = RefreshToken::new(text.to_owned());
        let assertion = self.assertion()?;
        let transport = Transport::new(self.http.clone());
        let mut request = self
            .oauth
            .exchange_refresh_token(&refresh_token)
            .add_scopes(self.delegated_scopes.iter().cloned());
        if let Some(assertion) = &assertion {
            for (name, value) in assertion_params(assertion) {
                request = request.add_extra_param(name, value);
            }
        }
        let result = request.request_async(&transport).await;
        finish(result, transport.response_meta())
    }

    /// The resource-owner password grant: `grant_type=password` with the user's UPN and
    /// Entra password and the app's delegated scopes.
    pub async fn password(&self, username: &str, password: &Secret) -> Result<Issued, TokenError> {
        let text = password
            .expose_str()
            .ok_or_else(|| TokenError::Credential("the password is not UTF-8".into()))?;
        let username = ResourceOwnerUsername::new(username.to_owned());
        let password = ResourceOwnerPassword::new(text.to_owned());
        let assertion = self.assertion()?;
        let transport = Transport::new(self.http.clone());
        let mut request = self
            .oauth
            .exchange_password(&username, &password)
            .add_scopes(self.delegated_scopes.iter().cloned());
        if let Some(assertion) = &assertion {
            for (name, value) in assertion_params(assertion) {
                request = request.add_extra_param(name, value);
            }
        }
        let result = request.request_async(&transport).await;
        finish(result, transport.response_meta())
    }

    /// The app-only grant: `grant_type=client_credentials` with the app scope.
    pub async fn client_credentials(&self) -> Result<Issued, TokenError> {
        let assertion = self.assertion()?;
        let transport = Transport::new(self.http.clone());
        let mut request = self
            .oauth
            .exchange_client_credentials()
            .add_scope(self.app_scope.clone());
        if let Some(assertion) = &assertion {
            for (name, value) in assertion_params(assertion) {
                request = request.add_extra_param(name, value);
            }
        }
        let result = request.request_async(&transport).await;
        finish(result, transport.response_meta())
    }
}

/// Builds the per-app reqwest client (see [`AppClient::new`]).
fn http_client(app: &AppRegistration, timeout: Duration) -> Result<reqwest::Client, BrokerError> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_native_certs(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout);
    for path in &app.extra_ca {
        let ca_error = |reason: String| BrokerError::CaFile {
            app: app.name.clone(),
            path: path.clone(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|e| ca_error(e.to_string()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| ca_error(format!("not PEM certificates: {e}")))?;
        if certs.is_empty() {
            return Err(ca_error("no certificate in file".into()));
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(|e| BrokerError::HttpClient {
        app: app.name.clone(),
        reason: e.to_string(),
    })
}

pub(crate) type GrantResult = Result<
    EntraTokenResponse,
    RequestTokenError<HttpClientError<reqwest::Error>, EntraErrorResponse>,
>;

/// Turns `oauth2`'s outcome plus the recorded status line into the broker's terms.
pub(crate) fn finish(
    result: GrantResult,
    meta: Option<ResponseMeta>,
) -> Result<Issued, TokenError> {
    let response = result.map_err(|e| token_error(e, meta))?;
    let access_token = Secret::from(response.access_token().secret().as_str());
    if access_token.is_empty() {
        return Err(TokenError::Network(
            "token endpoint returned an empty access_token".into(),
        ));
    }
    Ok(Issued {
        access_token,
        expires_in: response.expires_in(),
        refresh_token: response
            .refresh_token()
            .map(|rt| Secret::from(rt.secret().as_str()))
            .filter(|rt| !rt.is_empty()),
    })
}

/// Maps a failed exchange to a [`TokenError`], classifying by status, `error` and codes.
///
/// Messages are built from error names, codes, JSON paths and reqwest's own text (which names
/// the URL, never the form body), so no secret ends up in them.
pub(crate) fn token_error(
    error: RequestTokenError<HttpClientError<reqwest::Error>, EntraErrorResponse>,
    meta: Option<ResponseMeta>,
) -> TokenError {
    let retry_after = meta.and_then(|m| m.retry_after);
    match error {
        RequestTokenError::ServerResponse(body) => {
            let status = meta.map_or(400, |m| m.status);
            let class = classify(
                status,
                &body.error,
                &body.error_codes,
                body.suberror.as_deref(),
                body.has_claims(),
            );
            let description = body.short_description();
            let claims = body.claims_text();
            TokenError::Provider {
                class,
                error: if body.error.is_empty() {
                    format!("http_{status}")
                } else {
                    body.error
                },
                codes: body.error_codes,
                description,
                retry_after,
                claims,
            }
        }
        RequestTokenError::Request(e) => TokenError::Network(error_chain(&e)),
        RequestTokenError::Parse(e, _) => non_token_answer(
            meta,
            format!("unparseable token endpoint answer (at {})", e.path()),
        ),
        RequestTokenError::Other(message) => non_token_answer(meta, message),
    }
}

/// An answer that is neither a token nor an Entra error body: garbage after a 200 is a
/// network-ish problem (a proxy in the way); otherwise the status decides.
fn non_token_answer(meta: Option<ResponseMeta>, description: String) -> TokenError {
    match meta {
        Some(meta) if meta.status != 200 => TokenError::Provider {
            class: classify(meta.status, "", &[], None, false),
            error: format!("http_{}", meta.status),
            codes: Vec::new(),
            description,
            retry_after: meta.retry_after,
            claims: None,
        },
        _ => TokenError::Network(description),
    }
}

/// An error and its sources on one line (reqwest's top-level text alone says too little).
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registration() -> AppRegistration {
        AppRegistration {
            name: "contoso".into(),
            authority: "https://login.microsoftonline.com/".into(),
            tenant: "contoso.onmicrosoft.com".into(),
            client_id: "11111111-2222-3333-4444-555555555555".into(),
            client_secret: Some(Secret::from("s3cret")),
            certificate: None,
            allow_password_grant: false,
            delegated_scopes: Vec::new(),
            app_scope: None,
            extra_ca: Vec::new(),
        }
    }

    #[test]
    fn token_url_tolerates_trailing_slash() {
        assert_eq!(
            registration().token_url(),
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
        );
    }

    #[test]
    fn admin_consent_url_names_tenant_client_and_scope() {
        let url = registration()
            .admin_consent_url("http://localhost/done", "st8")
            .expect("url");
        assert_eq!(
            url,
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/v2.0/adminconsent?\
             client_id=11111111-2222-3333-4444-555555555555&redirect_uri=http%3A%2F%2Flocalhost%2Fdone\
             &scope=https%3A%2F%2Foutlook.office365.com%2F.default&state=st8"
        );
    }

    #[test]
    fn builds_with_defaults_and_hides_the_secret() {
        let client = AppClient::new(&registration(), Duration::from_secs(5)).expect("builds");
        assert_eq!(client.delegated_scopes.len(), 4);
        assert_eq!(client.app_scope.as_str(), DEFAULT_APP_SCOPE);
        assert!(!format!("{:?}", registration()).contains("s3cret"));
        assert!(!format!("{client:?}").contains("s3cret"));
    }

    #[test]
    fn rejects_bad_authority_and_tenant() {
        let mut app = registration();
        app.authority = "login.microsoftonline.com".into();
        assert!(matches!(
            AppClient::new(&app, Duration::from_secs(5)),
            Err(BrokerError::InvalidApp { .. })
        ));
        let mut app = registration();
        app.authority = "https://exa mple.com".into();
        assert!(AppClient::new(&app, Duration::from_secs(5)).is_err());
        let mut app = registration();
        app.tenant = "a/b".into();
        assert!(AppClient::new(&app, Duration::from_secs(5)).is_err());
    }

    #[test]
    fn rejects_unreadable_or_empty_ca_file() {
        let mut app = registration();
        app.extra_ca = vec![PathBuf::from("/nonexistent/ca.pem")];
        assert!(matches!(
            AppClient::new(&app, Duration::from_secs(5)),
            Err(BrokerError::CaFile { .. })
        ));
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("empty.pem");
        std::fs::write(&path, "not a certificate\n").expect("write");
        app.extra_ca = vec![path];
        assert!(matches!(
            AppClient::new(&app, Duration::from_secs(5)),
            Err(BrokerError::CaFile { .. })
        ));
    }

    #[test]
    fn non_token_answers_are_classified_by_status() {
        let meta = |status| {
            Some(ResponseMeta {
                status,
                retry_after: None,
            })
        };
        assert!(matches!(
            non_token_answer(meta(200), "x".into()),
            TokenError::Network(_)
        ));
        assert!(non_token_answer(meta(502), "x".into()).is_temporary());
        assert_eq!(
            non_token_answer(meta(404), "x".into()).class(),
            crate::FailureClass::Configuration
        );
        assert!(matches!(
            non_token_answer(None, "x".into()),
            TokenError::Network(_)
        ));
    }
}
