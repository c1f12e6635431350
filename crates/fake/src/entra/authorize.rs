//! The authorization-code flow with PKCE (EXCHANGE.md §4.5): `GET …/authorize` "signs in"
//! the user a test chose and redirects to the loopback `redirect_uri` with a single-use code
//! bound to the client, the redirect and the S256 code challenge; the token endpoint then
//! redeems it once, against the `code_verifier`. Tests follow the redirect themselves, so no
//! browser is involved.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::error::AadError;
use super::form::parse_form;
use super::token::{resource_of, Resource};
use super::{lock, FakeEntra};
use crate::ids;

/// How long a code can be redeemed (Entra: about 10 minutes).
const CODE_LIFETIME: Duration = Duration::from_secs(600);

/// What `/authorize` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorizeReply {
    /// `302 Found` to this URL (the client's redirect, with `code` or `error`).
    Redirect(String),
    /// An error page: Entra never redirects to a URI it cannot trust.
    Page { status: u16, text: String },
}

/// An issued authorization code.
#[derive(Debug, Clone)]
pub(crate) struct AuthCode {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    upn: String,
    resource: Resource,
    expires_at: Instant,
    used: bool,
}

/// Form-encodes one query value.
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Whether `uri` is a loopback redirect (`http://localhost[:port]/…` or `127.0.0.1`).
fn is_loopback(uri: &str) -> bool {
    let Some(rest) = uri.strip_prefix("http://") else {
        return false;
    };
    let host = rest.split(['/', '?']).next().unwrap_or("");
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    matches!(host, "localhost" | "127.0.0.1" | "[::1]")
}

pub(super) fn redirect_to(redirect_uri: &str, params: &[(&str, &str)]) -> AuthorizeReply {
    let query: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect();
    let separator = if redirect_uri.contains('?') { '&' } else { '?' };
    AuthorizeReply::Redirect(format!("{redirect_uri}{separator}{}", query.join("&")))
}

impl FakeEntra {
    /// `GET /{tenant}/oauth2/v2.0/authorize?…` with the raw query string.
    pub fn authorize(&self, tenant: &str, query: &str) -> AuthorizeReply {
        let q = parse_form(query.as_bytes());
        self.note_claims(&q);
        let page = |text: &str| AuthorizeReply::Page {
            status: 400,
            text: text.to_string(),
        };
        if !self.knows_tenant(tenant) {
            return page("AADSTS90002: Tenant not found.");
        }
        let Some(client_id) = q.get("client_id").filter(|c| !c.is_empty()) else {
            return page(
                "AADSTS900144: The request body must contain the following parameter: 'client_id'.",
            );
        };
        if !lock(&self.state.apps).contains_key(client_id) {
            return page(
                "AADSTS700016: Application with identifier was not found in the directory.",
            );
        }
        let redirect_uri = q.get("redirect_uri").cloned().unwrap_or_default();
        if !is_loopback(&redirect_uri) {
            return page("AADSTS50011: The redirect URI specified in the request does not match the redirect URIs configured for the application.");
        }
        let state = q.get("state").cloned().unwrap_or_default();
        let fail = |error: &str, description: &str| {
            let mut params = vec![("error", error), ("error_description", description)];
            if !state.is_empty() {
                params.push(("state", state.as_str()));
            }
            redirect_to(&redirect_uri, &params)
        };
        if q.get("response_type").map(String::as_str) != Some("code") {
            return fail(
                "unsupported_response_type",
                "AADSTS70005: response_type 'code' is required.",
            );
        }
        let challenge = q.get("code_challenge").cloned().unwrap_or_default();
        if challenge.is_empty()
            || q.get("code_challenge_method").map(String::as_str) != Some("S256")
        {
            return fail("invalid_request", "AADSTS9002325: Proof Key for Code Exchange is required (code_challenge_method S256).");
        }
        let resource =
            match resource_of(q.get("scope").map(String::as_str)) {
                Ok(r) => r,
                Err(_) => return fail(
                    "invalid_scope",
                    "AADSTS70011: The provided value for the input parameter 'scope' is not valid.",
                ),
            };
        let switches = self.switches();
        if let Some(error) = &switches.authorize_error {
            return fail(
                error,
                "AADSTS65004: User declined to consent to access the app.",
            );
        }
        let Some(upn) = switches.signed_in_user else {
            return fail(
                "login_required",
                "AADSTS50058: A silent sign-in request was sent but no user is signed in.",
            );
        };
        let code = format!("0.AXoA{}", ids::url_safe(240));
        lock(&self.state.auth_codes).insert(
            code.clone(),
            AuthCode {
                client_id: client_id.clone(),
                redirect_uri: redirect_uri.clone(),
                challenge,
                upn,
                resource,
                expires_at: Instant::now() + CODE_LIFETIME,
                used: false,
            },
        );
        let mut params = vec![("code", code.as_str())];
        if !state.is_empty() {
            params.push(("state", state.as_str()));
        }
        redirect_to(&redirect_uri, &params)
    }

    /// `grant_type=authorization_code`, after client authentication: checks the code is
    /// unused, unexpired, this client's, for this exact redirect, and that the verifier hashes
    /// to the challenge. The code is spent by the attempt.
    pub(super) fn redeem_code(
        &self,
        client_id: &str,
        form: &HashMap<String, String>,
    ) -> Result<(String, Resource), AadError> {
        let code = form
            .get("code")
            .filter(|c| !c.is_empty())
            .ok_or_else(|| AadError::invalid_request(900144))?;
        let mut codes = lock(&self.state.auth_codes);
        let issued = codes
            .get_mut(code)
            .ok_or_else(|| AadError::invalid_grant(70008))?;
        if issued.used {
            return Err(AadError::invalid_grant(54005));
        }
        issued.used = true;
        if Instant::now() >= issued.expires_at {
            return Err(AadError::invalid_grant(70008));
        }
        if issued.client_id != client_id {
            return Err(AadError::invalid_grant(70000));
        }
        if form.get("redirect_uri") != Some(&issued.redirect_uri) {
            return Err(AadError::invalid_grant(50011));
        }
        let verifier = form.get("code_verifier").cloned().unwrap_or_default();
        let hashed = URL_SAFE_NO_PAD.encode(ring::digest::digest(
            &ring::digest::SHA256,
            verifier.as_bytes(),
        ));
        if verifier.is_empty() || hashed != issued.challenge {
            return Err(AadError::invalid_grant(501481));
        }
        Ok((issued.upn.clone(), issued.resource.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_redirects_only() {
        assert!(is_loopback("http://localhost:53682/"));
        assert!(is_loopback("http://127.0.0.1/cb?x=1"));
        assert!(!is_loopback("https://localhost/"));
        assert!(!is_loopback("http://evil.example/"));
        assert!(!is_loopback("http://localhost.evil.example/"));
        assert_eq!(encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }
}
