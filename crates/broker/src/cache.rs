//! Per-account token state: the cached access token, the last failure and its hold-off, and
//! the lock that makes concurrent refreshes for one account a single request.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use oxbridge_wire::Secret;
use tokio::time::Instant;

use crate::error::TokenError;

/// An access token in memory (never persisted: DESIGN.md §4).
#[derive(Clone)]
pub(crate) struct CachedToken {
    pub secret: Secret,
    /// Wall-clock expiry, reported to callers.
    pub expires_at: SystemTime,
    /// Monotonic expiry, used for every decision (immune to clock steps; pausable in tests).
    pub valid_until: Instant,
    /// The shared store's grant version this token belongs to; `None` with a store of one
    /// process.
    pub version: Option<i64>,
}

/// A failure that is still being held off.
struct RecentFailure {
    error: TokenError,
    until: Instant,
    /// Consecutive failures so far, for the exponential backoff.
    attempts: u32,
    /// When the account's refresh token was last saved, as of the failure: a newer one
    /// (re-consent, import) makes the failure irrelevant.
    grant_saved_at: Option<i64>,
}

#[derive(Default)]
struct SlotState {
    token: Option<CachedToken>,
    failure: Option<RecentFailure>,
    /// Version of a shared token the upstream rejected: not to be adopted again.
    rejected: Option<i64>,
}

/// What the cache can say without a request.
pub(crate) enum Lookup {
    /// A token to serve as is.
    Hit(CachedToken),
    /// No token to serve and a failure still held off.
    Blocked(TokenError),
    /// A request is needed.
    Miss,
}

/// One account's entry in the broker's map.
///
/// `flight` is held across the token request so that concurrent callers queue behind one
/// request and then find its result in `state`; `state` is a plain mutex never held across
/// an `.await`.
#[derive(Default)]
pub(crate) struct Slot {
    pub flight: tokio::sync::Mutex<()>,
    state: Mutex<SlotState>,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot").finish_non_exhaustive()
    }
}

impl Slot {
    fn state(&self) -> std::sync::MutexGuard<'_, SlotState> {
        // The state is always left consistent, so a panic elsewhere does not poison it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Serves a token that has more than `margin` left; while a failure is held off, serves
    /// any token that has not actually expired (Entra being down must not break logins that
    /// still have a usable token), else answers with the failure.
    pub fn lookup(&self, now: Instant, margin: Duration) -> Lookup {
        let state = self.state();
        if let Some(token) = &state.token {
            if token.valid_until > now + margin {
                return Lookup::Hit(token.clone());
            }
        }
        match &state.failure {
            Some(failure) if failure.until > now => match &state.token {
                Some(token) if token.valid_until > now => Lookup::Hit(token.clone()),
                _ => Lookup::Blocked(TokenError::BackingOff {
                    retry_after: failure.until - now,
                    last: Box::new(failure.error.clone()),
                }),
            },
            _ => Lookup::Miss,
        }
    }

    /// The failure still being held off at `now`, whatever token is cached: what a forced
    /// refresh must respect.
    pub fn held_off(&self, now: Instant) -> Option<TokenError> {
        let state = self.state();
        let failure = state.failure.as_ref().filter(|f| f.until > now)?;
        Some(TokenError::BackingOff {
            retry_after: failure.until - now,
            last: Box::new(failure.error.clone()),
        })
    }

    /// Stores a fresh token and forgets any failure (a success ends the backoff).
    pub fn store(&self, token: CachedToken) {
        let mut state = self.state();
        state.token = Some(token);
        state.failure = None;
    }

    /// Records a failure and returns how many have happened in a row, including this one.
    /// `hold_off` maps that count to how long to leave the account alone.
    pub fn record_failure(
        &self,
        error: TokenError,
        now: Instant,
        grant_saved_at: Option<i64>,
        hold_off: impl FnOnce(u32) -> Duration,
    ) -> u32 {
        let mut state = self.state();
        let attempts = state.failure.as_ref().map_or(0, |f| f.attempts) + 1;
        state.failure = Some(RecentFailure {
            error,
            until: now + hold_off(attempts),
            attempts,
            grant_saved_at,
        });
        attempts
    }

    /// Forgets a held-off failure that no longer applies because the grant changed since:
    /// a different refresh token was saved, or a grant that needed a sign-in (reconsent or
    /// interaction, which mark the account) was revived (account active). The second test
    /// matters when a sign-in lands within the second of the failure, so the saved time
    /// alone does not tell them apart.
    pub fn forget_outdated_failure(&self, grant_saved_at: Option<i64>, active: bool) {
        let mut state = self.state();
        let outdated = state.failure.as_ref().is_some_and(|f| {
            f.grant_saved_at != grant_saved_at
                || (active && crate::advice::needs_sign_in(f.error.class()))
        });
        if outdated {
            state.failure = None;
        }
    }

    /// A token that has not expired yet, however close it is.
    pub fn unexpired(&self, now: Instant) -> Option<CachedToken> {
        self.state()
            .token
            .clone()
            .filter(|token| token.valid_until > now)
    }

    /// Forgets the token (the upstream rejected it, or the grant is gone); a shared token of
    /// that version is not adopted from the store again.
    pub fn drop_token(&self) {
        let mut state = self.state();
        if let Some(version) = state.token.take().and_then(|t| t.version) {
            state.rejected = Some(version);
        }
    }

    /// Forgets a token that another replica superseded (it was not rejected).
    pub fn forget_token(&self) {
        self.state().token = None;
    }

    /// The version of the last shared token dropped as rejected.
    pub fn rejected_version(&self) -> Option<i64> {
        self.state().rejected
    }

    /// True while a token that has not expired is cached.
    pub fn has_token(&self, now: Instant) -> bool {
        self.unexpired(now).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(now: Instant, lifetime: Duration) -> CachedToken {
        CachedToken {
            secret: Secret::from("at"),
            expires_at: SystemTime::now() + lifetime,
            valid_until: now + lifetime,
            version: None,
        }
    }

    const MARGIN: Duration = Duration::from_secs(300);

    #[tokio::test]
    async fn serves_only_outside_the_margin() {
        let now = Instant::now();
        let slot = Slot::default();
        assert!(matches!(slot.lookup(now, MARGIN), Lookup::Miss));
        slot.store(token(now, Duration::from_secs(3600)));
        assert!(matches!(slot.lookup(now, MARGIN), Lookup::Hit(_)));
        slot.store(token(now, Duration::from_secs(200)));
        assert!(matches!(slot.lookup(now, MARGIN), Lookup::Miss));
    }

    #[tokio::test]
    async fn failure_blocks_until_it_passes_but_keeps_a_valid_token() {
        let now = Instant::now();
        let slot = Slot::default();
        let n = slot.record_failure(TokenError::Network("down".into()), now, None, |_| {
            Duration::from_secs(10)
        });
        assert_eq!(n, 1);
        match slot.lookup(now, MARGIN) {
            Lookup::Blocked(TokenError::BackingOff { retry_after, last }) => {
                assert_eq!(retry_after, Duration::from_secs(10));
                assert!(matches!(*last, TokenError::Network(_)));
            }
            _ => panic!("expected BackingOff"),
        }
        assert!(matches!(
            slot.lookup(now + Duration::from_secs(11), MARGIN),
            Lookup::Miss
        ));

        // A token within the margin is still served while backing off.
        slot.state().token = Some(token(now, Duration::from_secs(60)));
        assert!(matches!(slot.lookup(now, MARGIN), Lookup::Hit(_)));
        let n = slot.record_failure(TokenError::Network("down".into()), now, None, |attempt| {
            assert_eq!(attempt, 2);
            Duration::from_secs(10)
        });
        assert_eq!(n, 2);

        // Success clears the failure count.
        slot.store(token(now, Duration::from_secs(3600)));
        assert_eq!(
            slot.record_failure(TokenError::Network("x".into()), now, None, |_| {
                Duration::ZERO
            }),
            1
        );
    }

    #[tokio::test]
    async fn held_off_ignores_the_cached_token() {
        let now = Instant::now();
        let slot = Slot::default();
        slot.store(token(now, Duration::from_secs(3600)));
        assert!(slot.held_off(now).is_none());
        slot.record_failure(TokenError::Network("down".into()), now, None, |_| {
            Duration::from_secs(10)
        });
        assert!(matches!(
            slot.held_off(now),
            Some(TokenError::BackingOff { .. })
        ));
        assert!(slot.held_off(now + Duration::from_secs(11)).is_none());
    }

    #[tokio::test]
    async fn dropped_token_is_gone() {
        let now = Instant::now();
        let slot = Slot::default();
        slot.store(token(now, Duration::from_secs(3600)));
        assert!(slot.has_token(now));
        slot.drop_token();
        assert!(!slot.has_token(now));
        assert!(slot.unexpired(now).is_none());
    }

    #[test]
    fn a_new_grant_or_a_revived_account_ends_the_hold_off() {
        let slot = Slot::default();
        let now = Instant::now();
        let dead = TokenError::Provider {
            class: crate::FailureClass::Reconsent,
            error: "invalid_grant".into(),
            codes: vec![70008],
            description: String::new(),
            retry_after: None,
            claims: None,
        };
        slot.record_failure(dead.clone(), now, Some(100), |_| Duration::from_secs(30));
        slot.forget_outdated_failure(Some(100), false);
        assert!(matches!(
            slot.lookup(now, Duration::ZERO),
            Lookup::Blocked(_)
        ));
        slot.forget_outdated_failure(Some(101), false);
        assert!(matches!(slot.lookup(now, Duration::ZERO), Lookup::Miss));

        slot.record_failure(dead, now, Some(101), |_| Duration::from_secs(30));
        slot.forget_outdated_failure(Some(101), true);
        assert!(matches!(slot.lookup(now, Duration::ZERO), Lookup::Miss));

        let challenged = TokenError::Provider {
            class: crate::FailureClass::Interaction,
            error: "invalid_grant".into(),
            codes: vec![53003],
            description: String::new(),
            retry_after: None,
            claims: Some("{}".into()),
        };
        slot.record_failure(challenged, now, Some(101), |_| Duration::from_secs(30));
        slot.forget_outdated_failure(Some(101), false);
        assert!(matches!(
            slot.lookup(now, Duration::ZERO),
            Lookup::Blocked(_)
        ));
        slot.forget_outdated_failure(Some(101), true);
        assert!(
            matches!(slot.lookup(now, Duration::ZERO), Lookup::Miss),
            "a sign-in within the same second revives an interaction failure too"
        );

        let down = TokenError::Network("down".into());
        slot.record_failure(down, now, Some(101), |_| Duration::from_secs(30));
        slot.forget_outdated_failure(Some(101), true);
        assert!(
            matches!(slot.lookup(now, Duration::ZERO), Lookup::Blocked(_)),
            "a transient failure stays held off for an active account"
        );
    }
}
