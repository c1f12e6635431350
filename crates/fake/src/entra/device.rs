//! The device authorization grant (RFC 8628, EXCHANGE.md §4.4): `POST …/devicecode` hands
//! out a user code and a device code; polls of the token endpoint then answer
//! `authorization_pending` until a test approves or declines the code, `slow_down` when
//! polled faster than the interval (or when scripted), and `expired_token` after the
//! lifetime. Tests play the user through [`FakeEntra::approve_device_code`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::error::AadError;
use super::form::parse_form;
use super::token::{resource_of, Resource, TokenReply};
use super::{lock, FakeEntra};
use crate::ids;

/// Where Entra sends users to enter the code (S2; the fake returns the real one).
pub const VERIFICATION_URI: &str = "https://microsoft.com/devicelogin";

/// A scripted answer to one device-code poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevicePoll {
    /// `authorization_pending`.
    Pending,
    /// `slow_down`: the client must add five seconds to its interval.
    SlowDown,
}

#[derive(Debug, Clone)]
enum UserAction {
    Waiting,
    Approved(String),
    Declined,
    Redeemed,
}

/// One device code and what the user did with it.
#[derive(Debug, Clone)]
pub(crate) struct DeviceGrant {
    client_id: String,
    user_code: String,
    resource: Resource,
    expires_at: Instant,
    /// The interval the client must respect now (grows by 5 s per `slow_down`).
    interval: Duration,
    last_poll: Option<Instant>,
    /// Gaps between consecutive polls, for tests that check the client's pacing.
    gaps: Vec<Duration>,
    action: UserAction,
}

impl FakeEntra {
    /// `POST /{tenant}/oauth2/v2.0/devicecode`.
    pub fn device_code_request(&self, tenant: &str, body: &[u8]) -> TokenReply {
        match self.issue_device_code(tenant, body) {
            Ok(v) => TokenReply::ok(&v),
            Err(e) => TokenReply::failed(&e),
        }
    }

    fn issue_device_code(&self, tenant: &str, body: &[u8]) -> Result<Value, AadError> {
        if !self.knows_tenant(tenant) {
            return Err(AadError::invalid_request(90002));
        }
        let form = parse_form(body);
        self.note_claims(&form);
        let client_id = form
            .get("client_id")
            .filter(|c| !c.is_empty())
            .ok_or_else(|| AadError::invalid_request(900144))?;
        if !lock(&self.state.apps).contains_key(client_id) {
            return Err(AadError::new(400, "unauthorized_client", 700016));
        }
        let resource = resource_of(form.get("scope").map(String::as_str))?;
        let switches = self.switches();
        let user_code = ids::alnum_upper(9);
        let device_code = format!("DAQABAAEAAA{}", ids::url_safe(120));
        lock(&self.state.device_codes).insert(
            device_code.clone(),
            DeviceGrant {
                client_id: client_id.clone(),
                user_code: user_code.clone(),
                resource,
                expires_at: Instant::now() + switches.device_lifetime,
                interval: Duration::from_secs(switches.device_interval),
                last_poll: None,
                gaps: Vec::new(),
                action: UserAction::Waiting,
            },
        );
        Ok(json!({
            "user_code": user_code,
            "device_code": device_code,
            "verification_uri": VERIFICATION_URI,
            "expires_in": switches.device_lifetime.as_secs(),
            "interval": switches.device_interval,
            "message": format!(
                "To sign in, use a web browser to open the page {VERIFICATION_URI} and enter \
                 the code {user_code} to authenticate."
            ),
        }))
    }

    /// The user signs in as `upn` and approves the code. False if no such pending code.
    pub fn approve_device_code(&self, user_code: &str, upn: &str) -> bool {
        self.act_on_device_code(user_code, UserAction::Approved(upn.to_string()))
    }

    /// The user refuses the sign-in. False if no such pending code.
    pub fn decline_device_code(&self, user_code: &str) -> bool {
        self.act_on_device_code(user_code, UserAction::Declined)
    }

    fn act_on_device_code(&self, user_code: &str, action: UserAction) -> bool {
        let mut codes = lock(&self.state.device_codes);
        match codes
            .values_mut()
            .find(|g| g.user_code.eq_ignore_ascii_case(user_code.trim()))
        {
            Some(grant) if matches!(grant.action, UserAction::Waiting) => {
                grant.action = action;
                true
            }
            _ => false,
        }
    }

    /// How many times the token endpoint was polled for `user_code`, and the gaps between
    /// consecutive polls.
    pub fn device_code_polls(&self, user_code: &str) -> (usize, Vec<Duration>) {
        lock(&self.state.device_codes)
            .values()
            .find(|g| g.user_code.eq_ignore_ascii_case(user_code))
            .map_or((0, Vec::new()), |g| {
                (
                    g.gaps.len() + usize::from(g.last_poll.is_some()),
                    g.gaps.clone(),
                )
            })
    }

    /// `grant_type=urn:ietf:params:oauth:grant-type:device_code`, after client
    /// authentication. Returns the user's UPN and resource once approved.
    pub(super) fn poll_device_code(
        &self,
        client_id: &str,
        form: &HashMap<String, String>,
    ) -> Result<(String, Resource), AadError> {
        let device_code = form
            .get("device_code")
            .filter(|c| !c.is_empty())
            .ok_or_else(|| AadError::invalid_request(900144))?;
        let scripted = lock(&self.state.switches).device_script.pop_front();
        let mut codes = lock(&self.state.device_codes);
        let grant = codes
            .get_mut(device_code)
            .ok_or_else(|| AadError::new(400, "bad_verification_code", 70018))?;
        if grant.client_id != client_id {
            return Err(AadError::new(400, "bad_verification_code", 70018));
        }
        let now = Instant::now();
        let too_fast = grant
            .last_poll
            .is_some_and(|last| now < last + grant.interval);
        if let Some(last) = grant.last_poll {
            grant.gaps.push(now - last);
        }
        grant.last_poll = Some(now);
        if now >= grant.expires_at {
            return Err(AadError::new(400, "expired_token", 70020));
        }
        let slow_down = || AadError::new(400, "slow_down", 70016);
        match scripted {
            Some(DevicePoll::Pending) => {
                return Err(AadError::new(400, "authorization_pending", 70016))
            }
            Some(DevicePoll::SlowDown) => {
                grant.interval += Duration::from_secs(5);
                return Err(slow_down());
            }
            None if too_fast => {
                grant.interval += Duration::from_secs(5);
                return Err(slow_down());
            }
            None => {}
        }
        match &grant.action {
            UserAction::Waiting => Err(AadError::new(400, "authorization_pending", 70016)),
            UserAction::Declined => Err(AadError::new(400, "authorization_declined", 70000)),
            UserAction::Redeemed => Err(AadError::invalid_grant(70000)),
            UserAction::Approved(upn) => {
                let found = (upn.clone(), grant.resource.clone());
                grant.action = UserAction::Redeemed;
                Ok(found)
            }
        }
    }
}
