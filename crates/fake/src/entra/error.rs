//! Entra's error replies (EXCHANGE.md §4.7): the JSON shape with `AADSTS<code>: …\r\nTrace
//! ID: …` descriptions, `error_codes` arrays, trace and correlation ids, and the errors a
//! test can inject.

use std::time::SystemTime;

use serde_json::json;

use crate::clock::entra_timestamp;
use crate::ids::uuid;

/// An error every token request gets until cleared (see [`FakeEntra::inject_error`]).
///
/// [`FakeEntra::inject_error`]: crate::FakeEntra::inject_error
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InjectedError {
    /// A standard AADSTS error body with this HTTP status.
    Aadsts {
        http_status: u16,
        error: String,
        code: u32,
        suberror: Option<String>,
        claims: Option<String>,
    },
    /// HTTP 429 with a `Retry-After` header.
    TooManyRequests { retry_after_secs: u64 },
    /// HTTP 200 whose body is not JSON (a broken middlebox or captive portal).
    GarbageBody,
}

impl InjectedError {
    /// `invalid_grant` (HTTP 400) with `code`, e.g. 70008, 50173, 700082.
    pub fn invalid_grant(code: u32) -> InjectedError {
        InjectedError::aadsts(400, "invalid_grant", code)
    }

    /// `interaction_required` (HTTP 400) with `code` (50076 MFA, 53003 CA block…) and the
    /// `basic_action` suberror Entra sends with it.
    pub fn interaction_required(code: u32) -> InjectedError {
        InjectedError::Aadsts {
            http_status: 400,
            error: "interaction_required".into(),
            code,
            suberror: Some("basic_action".into()),
            claims: None,
        }
    }

    /// `invalid_client` (HTTP 401) with `code`, e.g. 7000215 (wrong secret), 7000222 (expired).
    pub fn invalid_client(code: u32) -> InjectedError {
        InjectedError::aadsts(401, "invalid_client", code)
    }

    /// `server_error` (HTTP 500, AADSTS50000): transient.
    pub fn server_error() -> InjectedError {
        InjectedError::aadsts(500, "server_error", 50000)
    }

    /// A Conditional Access claims challenge (EXCHANGE.md §4.7): `invalid_grant` with `code`
    /// (50076 MFA, 53003 blocked), `suberror` `basic_action` and a `claims` JSON string.
    pub fn claims_challenge(code: u32) -> InjectedError {
        InjectedError::Aadsts {
            http_status: 400,
            error: "invalid_grant".into(),
            code,
            suberror: Some("basic_action".into()),
            claims: Some(
                r#"{"access_token":{"capolids":{"essential":true,"values":["c1a0c2e4-0000-4000-8000-000000000001"]}}}"#
                    .into(),
            ),
        }
    }

    /// A typical error of one §4.8 class, by the proxy's class name: `reconsent` (expired
    /// for inactivity), `interaction` (MFA claims challenge), `configuration` (wrong client
    /// secret), `transient` (503) or `throttled` (429). `None` for an unknown name.
    pub fn of_class(class: &str) -> Option<InjectedError> {
        Some(match class {
            "reconsent" => InjectedError::invalid_grant(700082),
            "interaction" => InjectedError::claims_challenge(50076),
            "configuration" => InjectedError::invalid_client(7000215),
            "transient" => InjectedError::aadsts(503, "temporarily_unavailable", 90033),
            "throttled" => InjectedError::TooManyRequests {
                retry_after_secs: 60,
            },
            _ => return None,
        })
    }

    fn aadsts(http_status: u16, error: &str, code: u32) -> InjectedError {
        InjectedError::Aadsts {
            http_status,
            error: error.into(),
            code,
            suberror: None,
            claims: None,
        }
    }
}

/// The English text Entra puts after `AADSTS<code>: ` (S8), for the codes the fake emits
/// or tests are likely to inject.
pub(crate) fn describe(code: u32) -> &'static str {
    match code {
        50000 => "There was an error issuing a token or an issue with our sign-in service.",
        50011 => "The redirect URI specified in the request does not match the redirect URIs configured for the application.",
        50012 => "Client assertion audience claim does not match Realm issuer.",
        50034 => "The user account does not exist in the directory.",
        50048 => "Subject mismatches Issuer claim in the client assertion.",
        50126 => "Error validating credentials due to invalid username or password.",
        54005 => "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token.",
        70016 => "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
        70018 => "Invalid verification code: the device code was not recognised.",
        70020 => "The provided value for the input parameter 'device_code' is not valid. Device code expired.",
        500133 => "Assertion is not within its valid time range.",
        501481 => "The Code_Verifier does not match the code_challenge supplied in the authorization request.",
        700021 => "Client assertion application identifier doesn't match 'client_id' parameter.",
        700027 => "Client assertion failed signature validation, its key was not found, or its jti was already used.",
        50076 => "Due to a configuration change made by your administrator, or because you moved to a new location, you must use multi-factor authentication to access 'https://outlook.office.com'.",
        50173 => "The provided grant has expired due to it being revoked, a fresh auth token is needed. The user might have changed or reset their password.",
        53003 => "Access has been blocked by Conditional Access policies. The access policy does not allow token issuance.",
        65001 => "The user or administrator has not consented to use the application.",
        70000 => "The provided value for the 'refresh_token' is not valid. The grant was issued to a different client.",
        70003 => "The app requested an unsupported grant type.",
        70008 => "The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource.",
        70011 => "The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid.",
        90002 => "Tenant not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud.",
        90033 => "A transient error has occurred. Please try again.",
        90055 => "The request was throttled. Too many requests were sent for this tenant.",
        700016 => "Application with identifier was not found in the directory. This can happen if the application has not been installed by the administrator of the tenant.",
        700025 => "Client is public so neither 'client_assertion' nor 'client_secret' should be presented.",
        700082 => "The refresh token has expired due to inactivity.",
        900144 => "The request body must contain the following parameter: a required parameter is missing.",
        7000215 => "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app.",
        7000218 => "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        7000222 => "The provided client secret keys for app are expired.",
        9001023 => "The grant type is not supported over the /common or /consumers endpoints. Please use the /organizations or tenant-specific endpoint.",
        _ => "The fake identity provider was told to fail this request.",
    }
}

/// A token-endpoint error reply ready to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AadError {
    pub http_status: u16,
    pub error: String,
    pub code: u32,
    pub suberror: Option<String>,
    pub claims: Option<String>,
    pub retry_after_secs: Option<u64>,
}

impl AadError {
    pub fn new(http_status: u16, error: &str, code: u32) -> AadError {
        AadError {
            http_status,
            error: error.to_string(),
            code,
            suberror: None,
            claims: None,
            retry_after_secs: None,
        }
    }

    pub fn invalid_grant(code: u32) -> AadError {
        AadError::new(400, "invalid_grant", code)
    }

    pub fn invalid_request(code: u32) -> AadError {
        AadError::new(400, "invalid_request", code)
    }

    pub fn invalid_client(code: u32) -> AadError {
        AadError::new(401, "invalid_client", code)
    }

    /// The JSON body, with fresh trace and correlation ids.
    pub fn body(&self, now: SystemTime) -> serde_json::Value {
        let timestamp = entra_timestamp(now);
        let trace_id = uuid();
        let correlation_id = uuid();
        let description = format!(
            "AADSTS{}: {}\r\nTrace ID: {}\r\nCorrelation ID: {}\r\nTimestamp: {}",
            self.code,
            describe(self.code),
            trace_id,
            correlation_id,
            timestamp
        );
        let mut body = json!({
            "error": self.error,
            "error_description": description,
            "error_codes": [self.code],
            "timestamp": timestamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": format!("https://login.microsoftonline.com/error?code={}", self.code),
        });
        if let Some(map) = body.as_object_mut() {
            if let Some(s) = &self.suberror {
                map.insert("suberror".into(), json!(s));
            }
            if let Some(c) = &self.claims {
                map.insert("claims".into(), json!(c));
            }
        }
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_the_entra_shape() {
        let mut e = AadError::invalid_grant(50076);
        e.suberror = Some("basic_action".into());
        e.claims = Some("{\"access_token\":{}}".into());
        let b = e.body(SystemTime::UNIX_EPOCH);
        assert_eq!(b["error"], "invalid_grant");
        assert_eq!(b["error_codes"], json!([50076]));
        assert_eq!(b["timestamp"], "1970-01-01 00:00:00Z");
        assert_eq!(b["suberror"], "basic_action");
        assert_eq!(b["claims"], "{\"access_token\":{}}");
        assert_eq!(
            b["error_uri"],
            "https://login.microsoftonline.com/error?code=50076"
        );
        let d = b["error_description"].as_str().unwrap();
        assert!(d.starts_with("AADSTS50076: Due to a configuration change"));
        let trace = b["trace_id"].as_str().unwrap();
        assert!(d.contains(&format!("\r\nTrace ID: {trace}\r\nCorrelation ID: ")));
        assert!(d.ends_with("\r\nTimestamp: 1970-01-01 00:00:00Z"));
    }

    #[test]
    fn plain_errors_have_no_suberror_or_claims() {
        let b = AadError::invalid_client(7000215).body(SystemTime::now());
        assert!(b.get("suberror").is_none() && b.get("claims").is_none());
    }
}
