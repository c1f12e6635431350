//! How long the broker leaves an account alone after a failed token request.
//!
//! A flood of logins for one account must never turn into a flood of token requests, least
//! of all while Entra is failing or throttling (EXCHANGE.md §4.8: "never hammer the endpoint
//! from a per-connection code path"). So every failure buys a hold-off period during which
//! callers get an immediate answer instead of a request.

use std::time::Duration;

use crate::classify::FailureClass;

/// How long a permanent-looking failure (re-consent, interaction, configuration) is
/// remembered: long enough to absorb a burst of logins, short enough that an operator's fix
/// is picked up quickly.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(30);

/// Throttling without `Retry-After` waits at least this long (if `backoff_max` allows):
/// §4.8 says "back off hard (minutes)".
const THROTTLE_FLOOR: Duration = Duration::from_secs(60);

/// A server-sent `Retry-After` is honoured up to this bound, so one odd header cannot lock an
/// account out for days.
const RETRY_AFTER_CAP: Duration = Duration::from_secs(3600);

/// Backoff bounds, from [`crate::BrokerSettings`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    /// Exponential delay for the `attempt`-th consecutive failure (1-based), capped at `max`,
    /// with "equal jitter": `jitter` in [0, 1] picks a point between half and all of it, so
    /// replicas and accounts that failed together do not retry together.
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let exponent = attempt.saturating_sub(1).min(30);
        let base = self
            .initial
            .saturating_mul(1u32 << exponent)
            .min(self.max.max(self.initial));
        base.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }

    /// The hold-off after a failure of `class`, the `attempt`-th in a row, given the
    /// endpoint's `Retry-After` if any.
    pub fn hold_off(
        &self,
        class: FailureClass,
        attempt: u32,
        retry_after: Option<Duration>,
        jitter: f64,
    ) -> Duration {
        match class {
            FailureClass::Throttled | FailureClass::Transient => {
                if let Some(wait) = retry_after {
                    return wait.clamp(Duration::from_secs(1), RETRY_AFTER_CAP);
                }
                let delay = self.delay(attempt, jitter);
                if class == FailureClass::Throttled {
                    delay.max(THROTTLE_FLOOR.min(self.max))
                } else {
                    delay
                }
            }
            FailureClass::Reconsent | FailureClass::Interaction | FailureClass::Configuration => {
                NEGATIVE_TTL
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Backoff = Backoff {
        initial: Duration::from_secs(2),
        max: Duration::from_secs(300),
    };

    #[test]
    fn grows_exponentially_up_to_the_cap() {
        assert_eq!(B.delay(1, 1.0), Duration::from_secs(2));
        assert_eq!(B.delay(2, 1.0), Duration::from_secs(4));
        assert_eq!(B.delay(3, 1.0), Duration::from_secs(8));
        assert_eq!(B.delay(9, 1.0), Duration::from_secs(300));
        assert_eq!(B.delay(1000, 1.0), Duration::from_secs(300));
        assert_eq!(B.delay(0, 1.0), Duration::from_secs(2));
    }

    #[test]
    fn jitter_stays_between_half_and_full() {
        assert_eq!(B.delay(3, 0.0), Duration::from_secs(4));
        let d = B.delay(3, 0.5);
        assert!(d > Duration::from_secs(4) && d < Duration::from_secs(8));
        assert_eq!(B.delay(3, 7.0), Duration::from_secs(8));
    }

    #[test]
    fn retry_after_wins_and_is_bounded() {
        let wait = Some(Duration::from_secs(42));
        assert_eq!(
            B.hold_off(FailureClass::Throttled, 1, wait, 0.0),
            Duration::from_secs(42)
        );
        assert_eq!(
            B.hold_off(FailureClass::Transient, 5, wait, 0.0),
            Duration::from_secs(42)
        );
        assert_eq!(
            B.hold_off(
                FailureClass::Throttled,
                1,
                Some(Duration::from_secs(999_999)),
                0.0
            ),
            RETRY_AFTER_CAP
        );
        assert_eq!(
            B.hold_off(FailureClass::Throttled, 1, Some(Duration::ZERO), 0.0),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn throttling_without_retry_after_backs_off_hard() {
        assert_eq!(
            B.hold_off(FailureClass::Throttled, 1, None, 1.0),
            Duration::from_secs(60)
        );
        let small = Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(50),
        };
        assert_eq!(
            small.hold_off(FailureClass::Throttled, 1, None, 1.0),
            Duration::from_millis(50)
        );
    }

    #[test]
    fn permanent_failures_use_the_negative_ttl() {
        for class in [
            FailureClass::Reconsent,
            FailureClass::Interaction,
            FailureClass::Configuration,
        ] {
            assert_eq!(B.hold_off(class, 1, None, 0.3), NEGATIVE_TTL);
        }
    }
}
