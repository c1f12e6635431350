//! Failure classification for token-endpoint answers (EXCHANGE.md §4.8).
//!
//! One classification drives everything downstream: whether the account is marked as needing
//! re-consent, whether the broker backs off, which metric label is bumped, and whether the
//! mail client is told "try again later" or "authentication failed". Keeping it a pure
//! function of the wire signals makes the table easy to test exhaustively.

use std::fmt;

/// What kind of failure a token request ran into, and therefore what the proxy does about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureClass {
    /// The grant (refresh token) is dead: the account must be onboarded again.
    Reconsent,
    /// The user must interact (MFA, Conditional Access, consent); retrying blindly won't help.
    Interaction,
    /// The app registration or request is wrong; an administrator must fix it.
    Configuration,
    /// The identity provider or the network had a hiccup; retry later with backoff.
    Transient,
    /// The identity provider asked us to slow down; back off hard.
    Throttled,
}

impl FailureClass {
    /// Stable lower-case name, used as a metric label and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Reconsent => "reconsent",
            FailureClass::Interaction => "interaction",
            FailureClass::Configuration => "configuration",
            FailureClass::Transient => "transient",
            FailureClass::Throttled => "throttled",
        }
    }

    /// True for the classes where retrying later may succeed without anyone acting.
    pub fn is_temporary(self) -> bool {
        matches!(self, FailureClass::Transient | FailureClass::Throttled)
    }
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// AADSTS codes that mean "too many requests": 50196 LoopDetected, 90055 TenantThrottlingError.
const THROTTLED_CODES: &[u32] = &[50196, 90055];

/// AADSTS codes for Entra-side hiccups that a later retry may get past.
const TRANSIENT_CODES: &[u32] = &[50033, 90006, 90024, 90033, 90090, 70012, 50087];

/// AADSTS codes that only an administrator can fix: client credentials, app registration,
/// scopes/resources, malformed requests, and disabled or locked users.
const CONFIGURATION_CODES: &[u32] = &[
    7000215, // invalid client secret
    7000222, // expired client secret
    700027,  // client assertion signature
    700025,  // public client sent a secret
    7000218, // no client credential sent
    700016,  // app not found in tenant
    7000112, // app disabled
    70002,   // invalid client
    70011,   // invalid scope
    700022,  // scopes from several resources
    500011,  // resource principal not found
    50194,   // app not configured as multi-tenant
    9001023, // grant type not supported for this app
    90002,   // tenant not found
    9002313, // malformed request
    50057,   // user disabled
    50053,   // account locked
    530035,  // blocked by security defaults
    50012,   // bad assertion / thumbprint
    700030,  // assertion subject name
    500133,  // assertion outside its time range
    50048,   // assertion sub != iss
];

/// AADSTS codes for which a user must sign in interactively (MFA, device, Conditional Access,
/// consent, assignment); the grant itself may still be fine.
const INTERACTION_CODES: &[u32] = &[
    50076, 50079, 50078, // MFA
    53003, // blocked by Conditional Access
    53000, 53001, // device state
    65001, // no consent
    65004, // consent declined
    90094, // admin consent required
    50105, // user not assigned to the app
];

/// AADSTS codes that mean the refresh token is dead (expired, revoked, reused code, sign-in
/// frequency): only a new onboarding helps.
const RECONSENT_CODES: &[u32] = &[
    700082, // expired due to inactivity
    50173,  // fresh token needed (revoked)
    70008,  // expired
    70043,  // Conditional Access sign-in frequency
    700084, // SPA refresh token lifetime
    50089,  // flow token expired
    70000,  // invalid grant
    50132,  // session invalid (password change)
    50133,  // session invalid (password expired/changed)
    54005,  // authorization code already used
];

/// `suberror` values with which Entra says the token itself is unusable.
const RECONSENT_SUBERRORS: &[&str] = &["bad_token", "token_expired"];

/// Classifies one token-endpoint failure per EXCHANGE.md §4.8.
///
/// Order matters, and goes from the signals that are most specific and most urgent to act
/// on: throttling first (so we never hammer), then transient conditions, then AADSTS codes
/// (configuration before interaction before re-consent, because a response may carry several
/// codes such as `[70002, 70000]` and the most specific one must win), then `suberror` and
/// `claims`, and only then the bare `error` string (S8 warns against keying on descriptions,
/// so they are never looked at). Anything unrecognised in a 4xx is a configuration problem:
/// retrying it would hammer the endpoint for nothing.
pub fn classify(
    http_status: u16,
    error: &str,
    codes: &[u32],
    suberror: Option<&str>,
    has_claims: bool,
) -> FailureClass {
    let has = |table: &[u32]| codes.iter().any(|code| table.contains(code));

    if http_status == 429 || has(THROTTLED_CODES) {
        return FailureClass::Throttled;
    }
    if http_status >= 500
        || http_status == 408
        || matches!(error, "temporarily_unavailable" | "server_error")
        || has(TRANSIENT_CODES)
    {
        return FailureClass::Transient;
    }
    if has(CONFIGURATION_CODES) {
        return FailureClass::Configuration;
    }
    if has(INTERACTION_CODES) {
        return FailureClass::Interaction;
    }
    if has(RECONSENT_CODES) {
        return FailureClass::Reconsent;
    }
    match suberror.filter(|s| !s.is_empty()) {
        Some(sub) if RECONSENT_SUBERRORS.contains(&sub) => return FailureClass::Reconsent,
        Some(_) => return FailureClass::Interaction,
        None => {}
    }
    if has_claims {
        return FailureClass::Interaction;
    }
    match error {
        "interaction_required" | "consent_required" | "login_required" => FailureClass::Interaction,
        // The grant was rejected for a reason without a known code: the stored refresh token
        // cannot be used, so the account has to be onboarded again.
        "invalid_grant" => FailureClass::Reconsent,
        _ => FailureClass::Configuration,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use FailureClass::*;

    fn code(status: u16, error: &str, code: u32) -> FailureClass {
        classify(status, error, &[code], None, false)
    }

    #[test]
    fn names_are_stable() {
        assert_eq!(Reconsent.as_str(), "reconsent");
        assert_eq!(Interaction.as_str(), "interaction");
        assert_eq!(Configuration.as_str(), "configuration");
        assert_eq!(Transient.as_str(), "transient");
        assert_eq!(Throttled.as_str(), "throttled");
        assert_eq!(Throttled.to_string(), "throttled");
    }

    #[test]
    fn only_transient_and_throttled_are_temporary() {
        assert!(Transient.is_temporary());
        assert!(Throttled.is_temporary());
        assert!(!Reconsent.is_temporary());
        assert!(!Interaction.is_temporary());
        assert!(!Configuration.is_temporary());
    }

    #[test]
    fn dead_refresh_tokens_need_reconsent() {
        for c in [
            700082, 50173, 70008, 70043, 700084, 50089, 70000, 50132, 50133, 54005,
        ] {
            assert_eq!(code(400, "invalid_grant", c), Reconsent, "AADSTS{c}");
        }
    }

    #[test]
    fn mfa_conditional_access_and_consent_need_interaction() {
        for c in [
            50076, 50079, 50078, 53003, 53000, 53001, 65001, 65004, 90094, 50105,
        ] {
            assert_eq!(code(400, "invalid_grant", c), Interaction, "AADSTS{c}");
            assert_eq!(
                code(400, "interaction_required", c),
                Interaction,
                "AADSTS{c}"
            );
        }
    }

    #[test]
    fn client_and_app_problems_are_configuration() {
        for (status, error, c) in [
            (401, "invalid_client", 7000215),
            (401, "invalid_client", 7000222),
            (400, "invalid_client", 700027),
            (400, "invalid_client", 700025),
            (400, "invalid_client", 7000218),
            (400, "unauthorized_client", 700016),
            (400, "unauthorized_client", 7000112),
            (400, "invalid_scope", 70011),
            (400, "invalid_scope", 700022),
            (400, "invalid_resource", 500011),
            (400, "invalid_request", 50194),
            (400, "invalid_request", 9001023),
            (400, "invalid_request", 90002),
            (400, "invalid_request", 9002313),
            (400, "invalid_grant", 50057),
            (400, "invalid_grant", 50053),
            (400, "invalid_grant", 530035),
            (401, "invalid_client", 50012),
            (401, "invalid_client", 700030),
            (401, "invalid_client", 500133),
            (401, "invalid_client", 50048),
        ] {
            assert_eq!(code(status, error, c), Configuration, "AADSTS{c}");
        }
    }

    #[test]
    fn several_codes_pick_the_most_specific() {
        // invalid client 70002 beside the generic invalid-grant 70000.
        assert_eq!(
            classify(400, "invalid_grant", &[70002, 70000], None, false),
            Configuration
        );
        // MFA beside a generic code still needs interaction, not re-consent.
        assert_eq!(
            classify(400, "invalid_grant", &[70000, 50076], None, false),
            Interaction
        );
    }

    #[test]
    fn entra_side_hiccups_are_transient() {
        for c in [50033, 90006, 90024, 90033, 90090, 70012, 50087] {
            assert_eq!(code(400, "invalid_request", c), Transient, "AADSTS{c}");
        }
        assert_eq!(
            classify(400, "temporarily_unavailable", &[], None, false),
            Transient
        );
        assert_eq!(classify(400, "server_error", &[], None, false), Transient);
        assert_eq!(classify(500, "", &[], None, false), Transient);
        assert_eq!(classify(502, "", &[], None, false), Transient);
        assert_eq!(
            classify(503, "invalid_grant", &[70008], None, false),
            Transient
        );
        assert_eq!(classify(504, "", &[], None, false), Transient);
        assert_eq!(classify(408, "", &[], None, false), Transient);
    }

    #[test]
    fn throttling_wins_over_everything() {
        assert_eq!(classify(429, "", &[], None, false), Throttled);
        assert_eq!(
            classify(429, "invalid_grant", &[70008], None, false),
            Throttled
        );
        assert_eq!(code(400, "invalid_request", 50196), Throttled);
        assert_eq!(code(400, "invalid_request", 90055), Throttled);
        assert_eq!(code(503, "temporarily_unavailable", 90055), Throttled);
    }

    #[test]
    fn suberror_and_claims_drive_unknown_codes() {
        assert_eq!(
            classify(400, "invalid_grant", &[], Some("basic_action"), false),
            Interaction
        );
        assert_eq!(
            classify(
                400,
                "invalid_grant",
                &[99999],
                Some("additional_action"),
                false
            ),
            Interaction
        );
        assert_eq!(
            classify(400, "invalid_grant", &[], Some("bad_token"), false),
            Reconsent
        );
        assert_eq!(
            classify(400, "invalid_grant", &[], Some("token_expired"), false),
            Reconsent
        );
        assert_eq!(classify(400, "invalid_grant", &[], None, true), Interaction);
        // An empty suberror is no signal.
        assert_eq!(
            classify(400, "invalid_grant", &[], Some(""), false),
            Reconsent
        );
    }

    #[test]
    fn bare_error_strings_fall_back_sensibly() {
        assert_eq!(classify(400, "invalid_grant", &[], None, false), Reconsent);
        assert_eq!(
            classify(400, "interaction_required", &[], None, false),
            Interaction
        );
        assert_eq!(
            classify(400, "consent_required", &[], None, false),
            Interaction
        );
        assert_eq!(
            classify(400, "login_required", &[], None, false),
            Interaction
        );
        assert_eq!(
            classify(401, "invalid_client", &[], None, false),
            Configuration
        );
        assert_eq!(
            classify(400, "unauthorized_client", &[], None, false),
            Configuration
        );
        assert_eq!(
            classify(400, "invalid_scope", &[], None, false),
            Configuration
        );
        assert_eq!(
            classify(400, "unsupported_grant_type", &[], None, false),
            Configuration
        );
        assert_eq!(classify(404, "", &[], None, false), Configuration);
        assert_eq!(
            classify(400, "something_new", &[12345], None, false),
            Configuration
        );
    }

    #[test]
    fn codes_beat_claims_and_error_string() {
        // A revoked grant with a claims challenge is still dead.
        assert_eq!(
            classify(400, "invalid_grant", &[50173], None, true),
            Reconsent
        );
        // A disabled user is config even under interaction_required.
        assert_eq!(
            classify(
                400,
                "interaction_required",
                &[50057],
                Some("basic_action"),
                true
            ),
            Configuration
        );
    }
}
