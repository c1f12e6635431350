//! The resource-owner password grant (`grant_type=password`): Entra checks the user's own
//! password. Tests set users' passwords and whether MFA is required for them; a wrong
//! password gets `invalid_grant` AADSTS50126, an unknown user AADSTS50034, and a user who
//! needs MFA AADSTS50076 (the grant cannot do MFA).

use std::collections::HashMap;

use super::error::AadError;
use super::token::{resource_of, Resource};
use super::{lock, FakeEntra};

impl FakeEntra {
    /// Sets the Entra password of `upn` (creating the user for the password grant).
    pub fn set_user_password(&self, upn: &str, password: &str) {
        lock(&self.state.user_passwords).insert(upn.to_ascii_lowercase(), password.to_string());
    }

    /// Whether sign-ins of `upn` require MFA.
    pub fn set_mfa_required(&self, upn: &str, on: bool) {
        let mut users = lock(&self.state.mfa_users);
        if on {
            users.insert(upn.to_ascii_lowercase());
        } else {
            users.remove(&upn.to_ascii_lowercase());
        }
    }

    /// Checks `username`/`password` of a password grant; returns the UPN and resource.
    pub(super) fn check_user_password(
        &self,
        form: &HashMap<String, String>,
    ) -> Result<(String, Resource), AadError> {
        let username = form
            .get("username")
            .filter(|u| !u.is_empty())
            .ok_or_else(|| AadError::invalid_request(900144))?;
        let password = form.get("password").cloned().unwrap_or_default();
        let key = username.to_ascii_lowercase();
        let stored = lock(&self.state.user_passwords).get(&key).cloned();
        let Some(stored) = stored else {
            return Err(AadError::invalid_grant(50034));
        };
        if stored != password {
            return Err(AadError::invalid_grant(50126));
        }
        if lock(&self.state.mfa_users).contains(&key) {
            let mut e = AadError::invalid_grant(50076);
            e.suberror = Some("basic_action".into());
            return Err(e);
        }
        let resource = resource_of(form.get("scope").map(String::as_str))?;
        Ok((username.clone(), resource))
    }
}
