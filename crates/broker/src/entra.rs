//! Entra's token-endpoint wire types for the `oauth2` crate: the error body that keeps the
//! AADSTS codes, the token body that tolerates `expires_in` as a string, and the first-line
//! trimming of descriptions.
//!
//! `oauth2`'s standard types drop `error_codes`, `suberror` and `claims` and insist on an
//! integer `expires_in`; classification (§4.8) needs the former and other providers send the
//! latter as a string (EXCHANGE.md §4.6), hence these types.

use std::fmt;
use std::time::Duration;

use oauth2::{AccessToken, RefreshToken, Scope, TokenResponse, TokenType};
use serde::{Deserialize, Deserializer, Serialize};

/// Longest description kept from an error body; Entra's first line is well under this.
const MAX_DESCRIPTION: usize = 300;

/// Entra's error body (EXCHANGE.md §4.7), with the fields classification needs.
///
/// Every field is optional so that a throttling or gateway answer with a sparse JSON body
/// still parses and is classified by its HTTP status.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub(crate) struct EntraErrorResponse {
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub error_description: Option<String>,
    #[serde(default, deserialize_with = "lenient_codes")]
    pub error_codes: Vec<u32>,
    #[serde(default)]
    pub suberror: Option<String>,
    /// A Conditional Access claims challenge; a JSON string in practice, kept as any value.
    #[serde(default)]
    pub claims: Option<serde_json::Value>,
}

impl EntraErrorResponse {
    /// True when the body carries a non-empty `claims` challenge.
    pub fn has_claims(&self) -> bool {
        match &self.claims {
            None | Some(serde_json::Value::Null) => false,
            Some(serde_json::Value::String(s)) => !s.trim().is_empty(),
            Some(_) => true,
        }
    }

    /// The claims challenge as text (Entra sends a JSON string; any other JSON is kept as
    /// its text), if there is one.
    pub fn claims_text(&self) -> Option<String> {
        if !self.has_claims() {
            return None;
        }
        match &self.claims {
            Some(serde_json::Value::String(s)) => Some(s.trim().to_owned()),
            Some(other) => Some(other.to_string()),
            None => None,
        }
    }

    /// The description's first line: Entra appends trace and correlation ids on later lines.
    pub fn short_description(&self) -> String {
        first_line(self.error_description.as_deref().unwrap_or(""))
    }
}

impl fmt::Display for EntraErrorResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.error, self.short_description())
    }
}

impl oauth2::ErrorResponse for EntraErrorResponse {}

/// The first line of `text`, trimmed and bounded in length.
pub(crate) fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or("").trim();
    match line.char_indices().nth(MAX_DESCRIPTION) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_owned(),
    }
}

/// `error_codes` as integers, skipping anything that is not one rather than failing the
/// whole body (the codes refine the classification; the `error` field still works alone).
fn lenient_codes<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u32>, D::Error> {
    let values = Option::<Vec<serde_json::Value>>::deserialize(deserializer)?;
    Ok(values
        .unwrap_or_default()
        .iter()
        .filter_map(|v| match v {
            serde_json::Value::Number(n) => n.as_u64(),
            serde_json::Value::String(s) => s.trim().parse().ok(),
            _ => None,
        })
        .filter_map(|n| u32::try_from(n).ok())
        .collect())
}

/// The `token_type` as sent; Entra says `Bearer`, which is all Exchange accepts anyway.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub(crate) struct EntraTokenType(String);

impl TokenType for EntraTokenType {}

/// A successful token response (EXCHANGE.md §4.6). `oauth2`'s secret types redact themselves
/// in `Debug`, so this can be logged by accident without leaking.
#[derive(Debug, Deserialize, Serialize)]
pub(crate) struct EntraTokenResponse {
    access_token: AccessToken,
    #[serde(default)]
    token_type: EntraTokenType,
    #[serde(default, deserialize_with = "lenient_seconds")]
    expires_in: Option<u64>,
    #[serde(default)]
    refresh_token: Option<RefreshToken>,
}

/// `expires_in` as an integer, a float, or a string of digits (other providers send strings).
fn lenient_seconds<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    let value = Option::<serde_json::Value>::deserialize(deserializer)?;
    Ok(match value {
        Some(serde_json::Value::Number(n)) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
        Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    })
}

impl TokenResponse for EntraTokenResponse {
    type TokenType = EntraTokenType;

    fn access_token(&self) -> &AccessToken {
        &self.access_token
    }

    fn token_type(&self) -> &EntraTokenType {
        &self.token_type
    }

    fn expires_in(&self) -> Option<Duration> {
        self.expires_in.map(Duration::from_secs)
    }

    fn refresh_token(&self) -> Option<&RefreshToken> {
        self.refresh_token.as_ref()
    }

    /// Not parsed: the broker asks for fixed scopes and Exchange itself judges the token.
    fn scopes(&self) -> Option<&Vec<Scope>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_keeps_codes_suberror_and_claims() {
        let body = r#"{"error":"invalid_grant",
            "error_description":"AADSTS50076: Due to a configuration change you must use MFA.\r\nTrace ID: abc\r\nCorrelation ID: def",
            "error_codes":[50076],"timestamp":"2019-11-13 22:33:10Z","trace_id":"abc",
            "suberror":"basic_action","claims":"{\"access_token\":{}}"}"#;
        let e: EntraErrorResponse = serde_json::from_str(body).expect("parses");
        assert_eq!(e.error, "invalid_grant");
        assert_eq!(e.error_codes, vec![50076]);
        assert_eq!(e.suberror.as_deref(), Some("basic_action"));
        assert!(e.has_claims());
        assert_eq!(
            e.short_description(),
            "AADSTS50076: Due to a configuration change you must use MFA."
        );
    }

    #[test]
    fn sparse_and_odd_error_bodies_parse() {
        let e: EntraErrorResponse = serde_json::from_str("{}").expect("parses");
        assert!(e.error.is_empty() && e.error_codes.is_empty() && !e.has_claims());
        let e: EntraErrorResponse = serde_json::from_str(
            r#"{"error":"x","error_codes":[70002,"70000",null,-1],"claims":""}"#,
        )
        .expect("parses");
        assert_eq!(e.error_codes, vec![70002, 70000]);
        assert!(!e.has_claims());
    }

    #[test]
    fn expires_in_as_integer_or_string() {
        let t: EntraTokenResponse =
            serde_json::from_str(r#"{"access_token":"a","token_type":"Bearer","expires_in":3599}"#)
                .expect("parses");
        assert_eq!(t.expires_in(), Some(Duration::from_secs(3599)));
        assert!(t.refresh_token().is_none());
        let t: EntraTokenResponse = serde_json::from_str(
            r#"{"access_token":"a","token_type":"Bearer","expires_in":"3600","refresh_token":"r"}"#,
        )
        .expect("parses");
        assert_eq!(t.expires_in(), Some(Duration::from_secs(3600)));
        assert_eq!(t.refresh_token().map(|r| r.secret().as_str()), Some("r"));
        let t: EntraTokenResponse =
            serde_json::from_str(r#"{"access_token":"a"}"#).expect("parses");
        assert_eq!(t.expires_in(), None);
    }

    #[test]
    fn debug_of_token_response_is_redacted() {
        let t: EntraTokenResponse = serde_json::from_str(
            r#"{"access_token":"SECRET-AT","token_type":"Bearer","refresh_token":"SECRET-RT"}"#,
        )
        .expect("parses");
        let text = format!("{t:?}");
        assert!(!text.contains("SECRET"), "{text}");
    }

    #[test]
    fn first_line_is_bounded() {
        assert_eq!(first_line("a\r\nb"), "a");
        assert_eq!(first_line(""), "");
        let long = "é".repeat(1000);
        assert_eq!(first_line(&long).chars().count(), MAX_DESCRIPTION + 1);
    }
}
