//! `POST /{tenant}/oauth2/v2.0/token`: tenant checks, client authentication (secret, Basic,
//! or certificate assertion) and the `refresh_token`, `client_credentials`, device-code and
//! `authorization_code` grants, answered as Entra does (EXCHANGE.md §4.1–§4.7). Free of HTTP
//! types so tests can call it directly.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;
use serde_json::{json, Value};

use super::assertion::{self, Expected};
use super::error::{AadError, InjectedError};
use super::form::{basic_credentials, parse_form};
use super::{lock, FakeEntra};
use crate::directory::IssuedToken;
use crate::ids;

/// Delegated scopes every refresh-token grant carries (without resource prefix).
pub const DELEGATED_SCOPES: [&str; 3] =
    ["IMAP.AccessAsUser.All", "POP.AccessAsUser.All", "SMTP.Send"];
/// Application roles a client-credentials token carries.
pub const APP_ROLES: [&str; 3] = ["IMAP.AccessAsApp", "POP.AccessAsApp", "SMTP.SendAsApp"];

const OUTLOOK_DELEGATED: &str = "https://outlook.office.com";
const OUTLOOK_APP: &str = "https://outlook.office365.com";
const GRAPH: &str = "https://graph.microsoft.com";
const APP_SCOPE: &str = "https://outlook.office365.com/.default";
const OIDC_SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];
/// Length of an unpadded access token; real EXO JWTs are about 2,000 characters.
const DEFAULT_TOKEN_LEN: usize = 1500;

/// The HTTP answer to one token request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenReply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
    /// Value of a `Retry-After` header, if any.
    pub retry_after_secs: Option<u64>,
}

impl TokenReply {
    fn json(status: u16, body: &Value) -> TokenReply {
        TokenReply {
            status,
            content_type: "application/json; charset=utf-8",
            body: body.to_string(),
            retry_after_secs: None,
        }
    }

    fn error(e: &AadError) -> TokenReply {
        let mut reply = TokenReply::json(e.http_status, &e.body(SystemTime::now()));
        reply.retry_after_secs = e.retry_after_secs;
        reply
    }

    pub(super) fn ok(body: &Value) -> TokenReply {
        TokenReply::json(200, body)
    }

    pub(super) fn failed(e: &AadError) -> TokenReply {
        TokenReply::error(e)
    }

    /// The body as JSON (tests).
    pub fn json_body(&self) -> Option<Value> {
        serde_json::from_str(&self.body).ok()
    }
}

impl FakeEntra {
    /// Answers one token request: counts it, waits the configured delay, applies the
    /// failure switches, then runs the grant.
    pub async fn token_request(
        &self,
        tenant: &str,
        authorization: Option<&str>,
        body: &[u8],
    ) -> TokenReply {
        self.token_request_from(None, tenant, authorization, body)
            .await
    }

    /// [`FakeEntra::token_request`] as received on `host` (the HTTP `Host` header), which
    /// lets client assertions be checked against the exact token URL.
    pub async fn token_request_from(
        &self,
        host: Option<&str>,
        tenant: &str,
        authorization: Option<&str>,
        body: &[u8],
    ) -> TokenReply {
        self.state.requests.fetch_add(1, Ordering::Relaxed);
        let switches = self.switches();
        if !switches.delay.is_zero() {
            tokio::time::sleep(switches.delay).await;
        }
        if switches.unavailable {
            return TokenReply::error(&AadError::new(503, "temporarily_unavailable", 90033));
        }
        if let Some(injected) = switches.injected {
            return injected_reply(injected);
        }
        let request = Request {
            host,
            tenant,
            authorization,
        };
        match self.grant(&request, body) {
            Ok(body) => TokenReply::json(200, &body),
            Err(e) => TokenReply::error(&e),
        }
    }

    fn grant(&self, request: &Request<'_>, body: &[u8]) -> Result<Value, AadError> {
        if !self.knows_tenant(request.tenant) {
            return Err(AadError::invalid_request(90002));
        }
        let form = parse_form(body);
        match form.get("grant_type").map(String::as_str) {
            Some("refresh_token") => self.refresh_grant(&form, request),
            Some("client_credentials") => self.client_credentials_grant(&form, request),
            Some(DEVICE_CODE_GRANT) => {
                let client = self.authenticate_client(&form, request)?;
                let (upn, resource) = self.poll_device_code(&client.id, &form)?;
                Ok(self.delegated_tokens(client.id, upn, resource))
            }
            Some("password") => {
                let client = self.authenticate_client(&form, request)?;
                let (upn, resource) = self.check_user_password(&form)?;
                Ok(self.delegated_tokens(client.id, upn, resource))
            }
            Some("authorization_code") => {
                let client = self.authenticate_client(&form, request)?;
                let (upn, resource) = self.redeem_code(&client.id, &form)?;
                Ok(self.delegated_tokens(client.id, upn, resource))
            }
            Some(_) => Err(AadError::new(400, "unsupported_grant_type", 70003)),
            None => Err(AadError::invalid_request(900144)),
        }
    }

    pub(super) fn knows_tenant(&self, tenant: &str) -> bool {
        tenant.eq_ignore_ascii_case(&self.state.tenant)
            || ["common", "organizations", "consumers"].contains(&tenant)
            || ids::is_guid(tenant)
    }

    /// Client authentication by `client_secret` in the body, HTTP Basic, or a certificate
    /// `client_assertion`. Public clients (registered without a credential) must send none.
    fn authenticate_client(
        &self,
        form: &HashMap<String, String>,
        request: &Request<'_>,
    ) -> Result<Client, AadError> {
        if let Some(jwt) = form.get("client_assertion").filter(|s| !s.is_empty()) {
            if form.get("client_assertion_type").map(String::as_str) != Some(JWT_BEARER) {
                return Err(AadError::invalid_request(900144));
            }
            let expected = Expected {
                client_id: form
                    .get("client_id")
                    .map(String::as_str)
                    .filter(|s| !s.is_empty()),
                token_url: request
                    .host
                    .map(|h| format!("https://{h}/{}/oauth2/v2.0/token", request.tenant)),
                token_path: format!("/{}/oauth2/v2.0/token", request.tenant),
                now: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64),
            };
            let apps = lock(&self.state.apps).clone();
            let id = assertion::verify(
                jwt,
                &expected,
                |client_id| apps.get(client_id).map(|a| a.certificates.clone()),
                &mut lock(&self.state.seen_jtis),
            )?;
            return Ok(Client {
                id,
                confidential: true,
            });
        }
        let basic = request.authorization.and_then(basic_credentials);
        let client_id = form
            .get("client_id")
            .filter(|s| !s.is_empty())
            .cloned()
            .or_else(|| basic.as_ref().map(|(id, _)| id.clone()))
            .ok_or_else(|| AadError::invalid_request(900144))?;
        let secret = form
            .get("client_secret")
            .filter(|s| !s.is_empty())
            .cloned()
            .or_else(|| basic.map(|(_, secret)| secret))
            .filter(|s| !s.is_empty());
        let app = lock(&self.state.apps)
            .get(&client_id)
            .cloned()
            .ok_or_else(|| AadError::new(400, "unauthorized_client", 700016))?;
        let public = app.secret.is_empty() && app.certificates.is_empty();
        match (public, app.secret.is_empty(), secret) {
            (true, _, None) => Ok(Client {
                id: client_id,
                confidential: false,
            }),
            (true, _, Some(_)) => Err(AadError::invalid_client(700025)),
            (false, _, None) => Err(AadError::invalid_client(7000218)),
            (false, false, Some(s)) if s == app.secret => Ok(Client {
                id: client_id,
                confidential: true,
            }),
            (false, _, Some(_)) => Err(AadError::invalid_client(7000215)),
        }
    }

    fn refresh_grant(
        &self,
        form: &HashMap<String, String>,
        request: &Request<'_>,
    ) -> Result<Value, AadError> {
        let client_id = self.authenticate_client(form, request)?.id;
        let rt = form
            .get("refresh_token")
            .filter(|s| !s.is_empty())
            .ok_or_else(|| AadError::invalid_request(900144))?;
        let resource = resource_of(form.get("scope").map(String::as_str))?;
        let strict = self.switches().strict_rotation;
        let upn = {
            let mut grants = lock(&self.state.refresh_tokens);
            let grant = grants
                .get_mut(rt)
                .ok_or_else(|| AadError::invalid_grant(70008))?;
            if grant.client_id != client_id {
                return Err(AadError::invalid_grant(70000));
            }
            if grant.revoked {
                return Err(AadError::invalid_grant(50173));
            }
            if grant.superseded && strict {
                return Err(AadError::invalid_grant(70008));
            }
            grant.superseded = true;
            grant.upn.clone()
        };
        Ok(self.delegated_tokens(client_id, upn, resource))
    }

    /// A delegated token response: a new refresh token and an access token for `resource`.
    pub(super) fn delegated_tokens(
        &self,
        client_id: String,
        upn: String,
        resource: Resource,
    ) -> Value {
        let new_rt = self.new_refresh_token(&client_id, &upn);
        let (audience, scopes) = match resource {
            Resource::Outlook => (
                OUTLOOK_DELEGATED,
                DELEGATED_SCOPES.iter().map(|s| s.to_string()).collect(),
            ),
            Resource::Graph(names) => (GRAPH, names),
        };
        let scope_text = scopes
            .iter()
            .map(|s| format!("{audience}/{s}"))
            .collect::<Vec<_>>()
            .join(" ");
        let (token, lifetime) = self.issue_access_token(IssuedToken {
            subject: upn,
            client_id,
            app_only: false,
            audience: audience.to_string(),
            scopes,
            expires_at: SystemTime::now(),
        });
        json!({
            "token_type": "Bearer",
            "scope": scope_text,
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": token,
            "refresh_token": new_rt,
        })
    }

    fn client_credentials_grant(
        &self,
        form: &HashMap<String, String>,
        request: &Request<'_>,
    ) -> Result<Value, AadError> {
        if ["common", "consumers"].contains(&request.tenant) {
            return Err(AadError::invalid_request(9001023));
        }
        let client = self.authenticate_client(form, request)?;
        if !client.confidential {
            return Err(AadError::invalid_client(7000218));
        }
        let client_id = client.id;
        if form.get("scope").map(String::as_str) != Some(APP_SCOPE) {
            return Err(AadError::new(400, "invalid_scope", 70011));
        }
        let (token, lifetime) = self.issue_access_token(IssuedToken {
            subject: client_id.clone(),
            client_id,
            app_only: true,
            audience: OUTLOOK_APP.to_string(),
            scopes: APP_ROLES.iter().map(|s| s.to_string()).collect(),
            expires_at: SystemTime::now(),
        });
        Ok(json!({
            "token_type": "Bearer",
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": token,
        }))
    }

    /// Mints an opaque access token, records it with its expiry and returns it with its
    /// lifetime in seconds.
    fn issue_access_token(&self, mut issued: IssuedToken) -> (String, u64) {
        let switches = self.switches();
        let lifetime = switches
            .token_lifetime
            .unwrap_or_else(|| Duration::from_secs(rand::thread_rng().gen_range(3600..=5400)));
        let len = DEFAULT_TOKEN_LEN.max(switches.token_padding);
        let token = format!("EwB{}", ids::url_safe(len.saturating_sub(3)));
        issued.expires_at = SystemTime::now() + lifetime;
        self.state.directory.record_token(&token, issued);
        (token, lifetime.as_secs())
    }
}

/// The device-code grant type.
const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// The `client_assertion_type` of certificate credentials.
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// What the HTTP layer knows about a token request besides its body.
struct Request<'a> {
    host: Option<&'a str>,
    tenant: &'a str,
    authorization: Option<&'a str>,
}

/// An authenticated client.
struct Client {
    id: String,
    /// Authenticated with a secret or certificate (required for app-only tokens).
    confidential: bool,
}

/// Which resource a delegated request's `scope` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Resource {
    Outlook,
    /// Graph, with the requested permission names: tokens EXO will refuse.
    Graph(Vec<String>),
}

/// Resolves the requested scopes to one resource. No scope means the original consent
/// (Outlook); a bare permission name resolves to Graph, as Entra does; mixing resources is
/// `invalid_scope` AADSTS70011.
pub(super) fn resource_of(scope: Option<&str>) -> Result<Resource, AadError> {
    let Some(scope) = scope else {
        return Ok(Resource::Outlook);
    };
    let mut outlook = false;
    let mut graph = Vec::new();
    for s in scope.split_ascii_whitespace() {
        if OIDC_SCOPES.contains(&s) {
            continue;
        }
        if let Some(name) = s
            .strip_prefix(OUTLOOK_DELEGATED)
            .or_else(|| s.strip_prefix(OUTLOOK_APP))
        {
            if name.starts_with('/') {
                outlook = true;
                continue;
            }
        }
        let name = s.strip_prefix(GRAPH).unwrap_or(s).trim_start_matches('/');
        if s.starts_with("https://") && !s.starts_with(GRAPH) {
            return Err(AadError::new(400, "invalid_scope", 70011));
        }
        graph.push(name.to_string());
    }
    match (outlook, graph.is_empty()) {
        (true, false) => Err(AadError::new(400, "invalid_scope", 70011)),
        (false, false) => Ok(Resource::Graph(graph)),
        _ => Ok(Resource::Outlook),
    }
}

fn injected_reply(injected: InjectedError) -> TokenReply {
    match injected {
        InjectedError::Aadsts {
            http_status,
            error,
            code,
            suberror,
            claims,
        } => TokenReply::error(&AadError {
            http_status,
            error,
            code,
            suberror,
            claims,
            retry_after_secs: None,
        }),
        InjectedError::TooManyRequests { retry_after_secs } => {
            let mut e = AadError::new(429, "temporarily_unavailable", 90055);
            e.retry_after_secs = Some(retry_after_secs);
            TokenReply::error(&e)
        }
        InjectedError::GarbageBody => TokenReply {
            status: 200,
            content_type: "text/html; charset=utf-8",
            body: "<html><body>Sign in to continue</body></html>".to_string(),
            retry_after_secs: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::Directory;

    const TENANT: &str = "contoso.onmicrosoft.com";

    fn entra() -> (FakeEntra, Directory) {
        let d = Directory::new();
        d.add_mailbox("alice@contoso.com");
        let e = FakeEntra::new(TENANT, d.clone());
        e.register_app("app", "s3cret");
        e.register_app("public", "");
        (e, d)
    }

    async fn post(e: &FakeEntra, tenant: &str, body: &str) -> (u16, Value) {
        let r = e.token_request(tenant, None, body.as_bytes()).await;
        (r.status, r.json_body().unwrap_or(Value::Null))
    }

    fn code(v: &Value) -> u64 {
        v["error_codes"][0].as_u64().unwrap_or(0)
    }

    #[tokio::test]
    async fn refresh_rotates_and_records_the_token() {
        let (e, d) = entra();
        let rt = e.issue_refresh_token("app", "alice@contoso.com");
        let body = format!("grant_type=refresh_token&client_id=app&client_secret=s3cret&refresh_token={rt}&scope=https%3A%2F%2Foutlook.office.com%2FIMAP.AccessAsUser.All+offline_access");
        let (status, v) = post(&e, TENANT, &body).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["token_type"], "Bearer");
        let lifetime = v["expires_in"].as_u64().unwrap();
        assert!((3600..=5400).contains(&lifetime));
        assert_eq!(v["ext_expires_in"].as_u64(), Some(lifetime));
        let new_rt = v["refresh_token"].as_str().unwrap();
        assert_ne!(new_rt, rt);
        assert!(v["scope"]
            .as_str()
            .unwrap()
            .contains("https://outlook.office.com/IMAP.AccessAsUser.All"));
        let issued = d.token(v["access_token"].as_str().unwrap()).unwrap();
        assert_eq!(issued.subject, "alice@contoso.com");
        assert_eq!(issued.audience, "https://outlook.office.com");
        assert!(!issued.app_only);
        // The old token still works without strict rotation...
        assert_eq!(post(&e, "organizations", &body).await.0, 200);
        // ...and not with it.
        e.set_strict_rotation(true);
        let (status, v) = post(&e, TENANT, &body).await;
        assert_eq!(
            (status, v["error"].as_str(), code(&v)),
            (400, Some("invalid_grant"), 70008)
        );
        assert_eq!(e.token_requests(), 3);
    }

    #[tokio::test]
    async fn refresh_errors() {
        let (e, _) = entra();
        let rt = e.issue_refresh_token("app", "alice@contoso.com");
        let with = |extra: &str| format!("grant_type=refresh_token&refresh_token={rt}{extra}");
        let (s, v) = post(&e, TENANT, &with("&client_id=app&client_secret=wrong")).await;
        assert_eq!(
            (s, v["error"].as_str(), code(&v)),
            (401, Some("invalid_client"), 7000215)
        );
        let (s, v) = post(&e, TENANT, &with("&client_id=nobody")).await;
        assert_eq!((s, code(&v)), (400, 700016));
        let (s, v) = post(&e, TENANT, &with("&client_id=public")).await;
        assert_eq!((s, code(&v)), (400, 70000), "RT of another client");
        let (s, v) = post(
            &e,
            TENANT,
            "grant_type=refresh_token&client_id=app&client_secret=s3cret&refresh_token=nope",
        )
        .await;
        assert_eq!((s, code(&v)), (400, 70008));
        let (s, v) = post(
            &e,
            "fabrikam.com",
            &with("&client_id=app&client_secret=s3cret"),
        )
        .await;
        assert_eq!((s, code(&v)), (400, 90002));
        e.revoke_refresh_tokens("ALICE@contoso.com");
        let (s, v) = post(&e, TENANT, &with("&client_id=app&client_secret=s3cret")).await;
        assert_eq!(
            (s, v["error"].as_str(), code(&v)),
            (400, Some("invalid_grant"), 50173)
        );
        let (s, v) = post(
            &e,
            TENANT,
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Asaml1_1-bearer",
        )
        .await;
        assert_eq!(
            (s, v["error"].as_str()),
            (400, Some("unsupported_grant_type"))
        );
    }

    #[tokio::test]
    async fn public_clients_and_basic_auth() {
        let (e, _) = entra();
        let rt = e.issue_refresh_token("public", "alice@contoso.com");
        let body = format!("grant_type=refresh_token&client_id=public&refresh_token={rt}");
        assert_eq!(post(&e, "common", &body).await.0, 200);
        let (s, v) = post(&e, TENANT, &format!("{body}&client_secret=x")).await;
        assert_eq!((s, code(&v)), (401, 700025));

        let rt = e.issue_refresh_token("app", "alice@contoso.com");
        let basic = format!(
            "Basic {}",
            oxbridge_wire::sasl::encode_base64(b"app:s3cret")
        );
        let body = format!("grant_type=refresh_token&refresh_token={rt}");
        let r = e.token_request(TENANT, Some(&basic), body.as_bytes()).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }

    #[tokio::test]
    async fn graph_scopes_give_tokens_exo_refuses() {
        let (e, d) = entra();
        let rt = e.issue_refresh_token("public", "alice@contoso.com");
        let body = format!("grant_type=refresh_token&client_id=public&refresh_token={rt}&scope=IMAP.AccessAsUser.All");
        let (s, v) = post(&e, TENANT, &body).await;
        assert_eq!(s, 200);
        let issued = d.token(v["access_token"].as_str().unwrap()).unwrap();
        assert_eq!(issued.audience, "https://graph.microsoft.com");
        let rt = v["refresh_token"].as_str().unwrap();
        let body = format!("grant_type=refresh_token&client_id=public&refresh_token={rt}&scope=https%3A%2F%2Foutlook.office.com%2FSMTP.Send+https%3A%2F%2Fgraph.microsoft.com%2FMail.Read");
        let (s, v) = post(&e, TENANT, &body).await;
        assert_eq!(
            (s, v["error"].as_str(), code(&v)),
            (400, Some("invalid_scope"), 70011)
        );
    }

    #[tokio::test]
    async fn client_credentials() {
        let (e, d) = entra();
        e.set_token_lifetime(Some(Duration::from_secs(120)));
        e.set_token_padding(6000);
        let good = "grant_type=client_credentials&client_id=app&client_secret=s3cret&scope=https%3A%2F%2Foutlook.office365.com%2F.default";
        let (s, v) = post(&e, TENANT, good).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["expires_in"], 120);
        assert!(v.get("refresh_token").is_none());
        let token = v["access_token"].as_str().unwrap();
        assert!(token.len() >= 6000);
        let issued = d.token(token).unwrap();
        assert!(issued.app_only);
        assert_eq!(issued.scopes, APP_ROLES.map(String::from).to_vec());

        let (s, v) = post(&e, "common", good).await;
        assert_eq!((s, code(&v)), (400, 9001023));
        let (s, v) = post(&e, TENANT, &good.replace("s3cret", "nope")).await;
        assert_eq!(
            (s, v["error"].as_str(), code(&v)),
            (401, Some("invalid_client"), 7000215)
        );
        let (s, v) = post(
            &e,
            TENANT,
            &good.replace(
                "office365.com%2F.default",
                "office.com%2FIMAP.AccessAsUser.All",
            ),
        )
        .await;
        assert_eq!(
            (s, v["error"].as_str(), code(&v)),
            (400, Some("invalid_scope"), 70011)
        );
        let public = "grant_type=client_credentials&client_id=public&scope=https%3A%2F%2Foutlook.office365.com%2F.default";
        assert_eq!(post(&e, TENANT, public).await.0, 401);
    }

    #[tokio::test]
    async fn switches_and_injected_errors() {
        let (e, _) = entra();
        let body = "grant_type=client_credentials&client_id=app&client_secret=s3cret&scope=https%3A%2F%2Foutlook.office365.com%2F.default";
        e.set_unavailable(true);
        let (s, v) = post(&e, TENANT, body).await;
        assert_eq!(
            (s, v["error"].as_str()),
            (503, Some("temporarily_unavailable"))
        );
        e.set_unavailable(false);

        e.inject_error(Some(InjectedError::TooManyRequests {
            retry_after_secs: 30,
        }));
        let r = e.token_request(TENANT, None, body.as_bytes()).await;
        assert_eq!((r.status, r.retry_after_secs), (429, Some(30)));

        e.inject_error(Some(InjectedError::interaction_required(50076)));
        let (s, v) = post(&e, TENANT, body).await;
        assert_eq!(
            (s, v["error"].as_str(), code(&v)),
            (400, Some("interaction_required"), 50076)
        );
        assert_eq!(v["suberror"], "basic_action");

        e.inject_error(Some(InjectedError::server_error()));
        assert_eq!(post(&e, TENANT, body).await.0, 500);
        e.inject_error(Some(InjectedError::invalid_client(7000222)));
        assert_eq!(post(&e, TENANT, body).await.0, 401);
        e.inject_error(Some(InjectedError::invalid_grant(700082)));
        assert_eq!(code(&post(&e, TENANT, body).await.1), 700082);

        e.inject_error(Some(InjectedError::GarbageBody));
        let r = e.token_request(TENANT, None, body.as_bytes()).await;
        assert_eq!(r.status, 200);
        assert!(r.json_body().is_none());

        e.inject_error(None);
        assert_eq!(post(&e, TENANT, body).await.0, 200);
        assert_eq!(e.token_requests(), 8);
    }

    #[tokio::test(start_paused = true)]
    async fn delay_is_applied() {
        let (e, _) = entra();
        e.set_delay(Duration::from_secs(5));
        let start = tokio::time::Instant::now();
        let _ = e.token_request(TENANT, None, b"grant_type=x").await;
        assert!(start.elapsed() >= Duration::from_secs(5));
    }

    #[tokio::test]
    async fn expire_access_tokens_marks_all() {
        let (e, d) = entra();
        let body = "grant_type=client_credentials&client_id=app&client_secret=s3cret&scope=https%3A%2F%2Foutlook.office365.com%2F.default";
        let (_, v) = post(&e, TENANT, body).await;
        let token = v["access_token"].as_str().unwrap().to_string();
        e.expire_access_tokens();
        assert!(d.token(&token).unwrap().is_expired(SystemTime::now()));
    }
}
