//! The operator's next step for a failed token request.
//!
//! An AADSTS code alone sends an operator to a search engine; the status line of an account
//! should say what to run or whom to ask. The advice keys on the failure class and, within
//! it, on the codes Entra sends for MFA, Conditional Access and consent (EXCHANGE.md §4.8),
//! so a claims challenge and an expired grant read differently.

use crate::classify::FailureClass;

/// MFA required (50076), or registration for it (50079), or strong auth (50078).
const MFA: &[u32] = &[50076, 50078, 50079];
/// Blocked by Conditional Access, or device state not satisfying it.
const CONDITIONAL_ACCESS: &[u32] = &[53003, 53000, 53001];
/// Consent missing or declined, admin consent required, user not assigned.
const CONSENT: &[u32] = &[65001, 65004, 90094, 50105];

/// What the operator should do about a failure of `class` with `codes` for local user
/// `account`. Always one sentence with a concrete action.
pub fn next_step(class: FailureClass, codes: &[u32], account: &str) -> String {
    let has = |table: &[u32]| codes.iter().any(|c| table.contains(c));
    let consent = format!("oxbridge account consent {account}");
    match class {
        FailureClass::Reconsent => format!(
            "the grant has expired or was revoked: run `{consent}` and sign in as the mailbox user"
        ),
        FailureClass::Interaction if has(MFA) => format!(
            "Entra requires multi-factor authentication for this user: run `{consent}` and \
             complete the MFA prompt in the browser"
        ),
        FailureClass::Interaction if has(CONDITIONAL_ACCESS) => format!(
            "blocked by a Conditional Access policy: an Entra administrator must allow this \
             app or location (see the AADSTS code in the sign-in logs), then run `{consent}`"
        ),
        FailureClass::Interaction if has(CONSENT) => format!(
            "the app lacks consent or the user is not assigned to it: an administrator grants \
             consent for the app in Entra (Enterprise applications > Permissions), then run \
             `{consent}`"
        ),
        FailureClass::Interaction => format!(
            "Entra asks for an interactive sign-in (a claims challenge or policy): run \
             `{consent}` and sign in as the mailbox user"
        ),
        FailureClass::Configuration => "an administrator must fix the app registration or the \
             [[app]] settings (client id, secret or certificate, tenant, scopes); look up the \
             AADSTS code, then run `oxbridge check-config`"
            .to_owned(),
        FailureClass::Transient => {
            "Entra or the network is failing; oxbridge retries with backoff, nothing to do \
             unless it persists"
                .to_owned()
        }
        FailureClass::Throttled => "Entra is throttling token requests; oxbridge backs off \
             automatically; check for login loops on devices"
            .to_owned(),
    }
}

/// Whether a failure of this class means only an interactive sign-in can revive the grant.
pub fn needs_sign_in(class: FailureClass) -> bool {
    matches!(class, FailureClass::Reconsent | FailureClass::Interaction)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_case_names_its_action() {
        let step = next_step(FailureClass::Reconsent, &[700082], "scanner");
        assert!(step.contains("oxbridge account consent scanner"), "{step}");
        let step = next_step(FailureClass::Interaction, &[50076], "scanner");
        assert!(step.contains("multi-factor"), "{step}");
        let step = next_step(FailureClass::Interaction, &[53003], "scanner");
        assert!(step.contains("Conditional Access"), "{step}");
        let step = next_step(FailureClass::Interaction, &[65001], "scanner");
        assert!(step.contains("consent for the app"), "{step}");
        let step = next_step(FailureClass::Interaction, &[], "scanner");
        assert!(step.contains("claims challenge"), "{step}");
        let step = next_step(FailureClass::Configuration, &[7000215], "scanner");
        assert!(step.contains("check-config"), "{step}");
        assert!(needs_sign_in(FailureClass::Interaction));
        assert!(!needs_sign_in(FailureClass::Throttled));
    }
}
