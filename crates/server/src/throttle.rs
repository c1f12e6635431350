//! Brute-force throttling of password logins, per user name and per source address.
//!
//! oxbridge holds the keys to mailboxes behind passwords that legacy devices send, often over
//! networks anyone can reach. Argon2 makes each guess expensive, the per-connection limit
//! (`max_failed_logins`) makes each connection short, but neither stops an attacker who
//! reconnects, or who spreads guesses over many connections. This module counts failed
//! logins per user name and per source address, over a sliding window:
//!
//! - after `user_delay_after` failures for a name, or `address_delay_after` from an
//!   address, the reply to every further failure is **delayed**, `base_delay` doubling with
//!   each failure up to `max_delay` (a sequential guesser slows to one guess per
//!   `max_delay`; a right password is never delayed);
//! - after `user_lock_after` failures for a name, or `address_lock_after` from an address,
//!   that name or address is **locked out** for `lockout`: attempts are refused without
//!   looking at the password, so no further guess is tested and no Argon2 work is spent, however
//!   many connections the attacker opens.
//!
//! What the client sees never tells it more than a wrong password would: a refusal during a
//! lockout gets the same reply as a wrong password, after a delay of the same class, and
//! unknown user names are counted and delayed exactly like known ones (the store already
//! spends the same Argon2 time on them). The operator sees everything: the
//! `oxbridge_login_throttled_total{protocol,scope}` metric and an audit event for every
//! delayed or refused attempt and every lockout.
//!
//! Memory is bounded: entries are small (a keyed 64-bit hash of the user name, never the name
//! itself; the address, IPv6 reduced to its /64), stale ones are pruned, and the table never
//! holds more than `max_tracked` entries per scope.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::time::Duration;

use dashmap::DashMap;
use serde::Deserialize;
use tokio::time::Instant;

use oxbridge_wire::Protocol;

use crate::metrics::Metrics;

/// `[throttle]`: brute-force protection for password logins.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThrottleConfig {
    /// On by default; off only for benchmarks and tests that need unthrottled failures.
    #[serde(default = "d_true")]
    pub enabled: bool,
    /// A failure counts for this long (seconds) after the last one.
    #[serde(default = "d_window")]
    pub window_secs: u64,
    /// Failures for one user name answered without delay.
    #[serde(default = "d_user_delay_after")]
    pub user_delay_after: u32,
    /// Failures from one address (IPv6: one /64) answered without delay. Higher than for a
    /// name: many devices may share an address behind NAT.
    #[serde(default = "d_address_delay_after")]
    pub address_delay_after: u32,
    /// The delay after the first failure beyond the free ones; it doubles with each further one.
    #[serde(default = "d_base_delay")]
    pub base_delay_millis: u64,
    /// The longest delay.
    #[serde(default = "d_max_delay")]
    pub max_delay_secs: u64,
    /// Failures for one user name that lock it out (0: never).
    #[serde(default = "d_user_lock")]
    pub user_lock_after: u32,
    /// Failures from one address (IPv6: one /64) that lock it out (0: never). Higher than
    /// for a name: many devices may share an address behind NAT.
    #[serde(default = "d_address_lock")]
    pub address_lock_after: u32,
    /// How long a lockout lasts (seconds).
    #[serde(default = "d_lockout")]
    pub lockout_secs: u64,
    /// Most names (and, separately, addresses) tracked at once.
    #[serde(default = "d_max_tracked")]
    pub max_tracked: usize,
}

fn d_true() -> bool {
    true
}
fn d_window() -> u64 {
    900
}
fn d_user_delay_after() -> u32 {
    3
}
fn d_address_delay_after() -> u32 {
    10
}
fn d_base_delay() -> u64 {
    500
}
fn d_max_delay() -> u64 {
    15
}
fn d_user_lock() -> u32 {
    10
}
fn d_address_lock() -> u32 {
    50
}
fn d_lockout() -> u64 {
    900
}
fn d_max_tracked() -> usize {
    100_000
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            window_secs: d_window(),
            user_delay_after: d_user_delay_after(),
            address_delay_after: d_address_delay_after(),
            base_delay_millis: d_base_delay(),
            max_delay_secs: d_max_delay(),
            user_lock_after: d_user_lock(),
            address_lock_after: d_address_lock(),
            lockout_secs: d_lockout(),
            max_tracked: d_max_tracked(),
        }
    }
}

impl ThrottleConfig {
    /// Every problem with these settings, for `Config::validate`.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.enabled {
            return problems;
        }
        if self.window_secs == 0 {
            problems.push("[throttle] window_secs must be at least 1".into());
        }
        if self.max_delay_secs > 300 {
            problems.push(format!(
                "[throttle] max_delay_secs = {}: at most 300, or clients time out first",
                self.max_delay_secs
            ));
        }
        if self.base_delay_millis > self.max_delay_secs * 1000 {
            problems.push("[throttle] base_delay_millis is above max_delay_secs".into());
        }
        if (self.user_lock_after > 0 || self.address_lock_after > 0) && self.lockout_secs == 0 {
            problems.push("[throttle] lockout_secs must be at least 1".into());
        }
        if self.max_tracked == 0 {
            problems.push("[throttle] max_tracked must be at least 1".into());
        }
        problems
    }
}

/// What a failure counter is kept for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    User,
    Address,
}

impl Scope {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::User => "user",
            Scope::Address => "address",
        }
    }
}

/// The decision before a password is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Check the password.
    Go,
    /// Locked out: refuse without checking, after `delay`.
    Locked { scope: Scope, delay: Duration },
}

/// What a failed login costs the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Penalty {
    /// Wait this long before answering.
    pub delay: Duration,
    /// Scopes whose count called for the delay.
    pub user_delayed: bool,
    pub address_delayed: bool,
    /// Scopes this failure locked out.
    pub user_locked: bool,
    pub address_locked: bool,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last_failure: Instant,
    locked_until: Option<Instant>,
}

/// One scope's counters.
#[derive(Debug)]
struct Table<K: std::hash::Hash + Eq> {
    entries: DashMap<K, Entry>,
    delay_after: u32,
    lock_after: u32,
}

/// Failure counters for password logins; shared by every listener.
#[derive(Debug)]
pub struct Throttle {
    config: ThrottleConfig,
    /// Keys user names: names are never kept, only a hash under a per-process random key.
    hasher: RandomState,
    users: Table<u64>,
    addresses: Table<IpAddr>,
}

impl Throttle {
    pub fn new(config: &ThrottleConfig) -> Self {
        Self {
            hasher: RandomState::new(),
            users: Table {
                entries: DashMap::new(),
                delay_after: config.user_delay_after,
                lock_after: config.user_lock_after,
            },
            addresses: Table {
                entries: DashMap::new(),
                delay_after: config.address_delay_after,
                lock_after: config.address_lock_after,
            },
            config: config.clone(),
        }
    }

    fn window(&self) -> Duration {
        Duration::from_secs(self.config.window_secs)
    }

    fn user_key(&self, user: &str) -> u64 {
        self.hasher.hash_one(user.to_lowercase())
    }

    /// The delay after `failures` failures when `delay_after` are free: nothing up to there,
    /// then doubling from the base, bounded.
    pub fn delay_for(&self, failures: u32, delay_after: u32) -> Duration {
        let over = failures.saturating_sub(delay_after);
        if over == 0 {
            return Duration::ZERO;
        }
        let factor = 1u64 << (over - 1).min(20);
        let millis = self.config.base_delay_millis.saturating_mul(factor);
        Duration::from_millis(millis).min(Duration::from_secs(self.config.max_delay_secs))
    }

    /// Before the password is checked: is the name or the address locked out?
    pub fn admit(&self, user: &str, address: IpAddr) -> Admission {
        if !self.config.enabled {
            return Admission::Go;
        }
        let now = Instant::now();
        let user = self.current(&self.users, &self.user_key(user), now);
        let address = self.current(&self.addresses, &network(address), now);
        for (scope, state, delay_after) in [
            (Scope::User, user, self.users.delay_after),
            (Scope::Address, address, self.addresses.delay_after),
        ] {
            if let Some((failures, true)) = state {
                // As late as a wrong password at this count would be answered.
                return Admission::Locked {
                    scope,
                    delay: self.delay_for(failures.max(delay_after.saturating_add(1)), delay_after),
                };
            }
        }
        Admission::Go
    }

    /// A login failed for bad credentials (unknown name or wrong password).
    pub fn failed(&self, user: &str, address: IpAddr) -> Penalty {
        if !self.config.enabled {
            return Penalty::default();
        }
        let now = Instant::now();
        let (user_failures, user_locked) = self.count(&self.users, self.user_key(user), now);
        let (address_failures, address_locked) = self.count(&self.addresses, network(address), now);
        let user_delay = self.delay_for(user_failures, self.users.delay_after);
        let address_delay = self.delay_for(address_failures, self.addresses.delay_after);
        Penalty {
            delay: user_delay.max(address_delay),
            user_delayed: !user_delay.is_zero(),
            address_delayed: !address_delay.is_zero(),
            user_locked,
            address_locked,
        }
    }

    /// A login succeeded: the name's failures are forgiven. The address's are not (an
    /// attacker behind the same NAT as a good device must not be reset by it); they age out.
    pub fn succeeded(&self, user: &str) {
        if self.config.enabled {
            self.users.entries.remove(&self.user_key(user));
        }
    }

    /// The failures counted for `key` and whether it is locked out now; `None` if unknown.
    /// An expired lockout or window is applied here.
    fn current<K: std::hash::Hash + Eq + Clone>(
        &self,
        table: &Table<K>,
        key: &K,
        now: Instant,
    ) -> Option<(u32, bool)> {
        let mut entry = table.entries.get_mut(key)?;
        self.age(&mut entry, table.delay_after, now);
        Some((entry.failures, entry.locked_until.is_some()))
    }

    /// Forgets failures outside the window, and ends a lockout that is over. After a
    /// lockout the count restarts at the scope's `delay_after`, so the next failures are
    /// still slowed and a few more lock it again.
    fn age(&self, entry: &mut Entry, delay_after: u32, now: Instant) {
        if let Some(until) = entry.locked_until {
            if now >= until {
                entry.locked_until = None;
                entry.failures = entry.failures.min(delay_after);
                entry.last_failure = now;
            }
        }
        if entry.locked_until.is_none() && now.duration_since(entry.last_failure) > self.window() {
            entry.failures = 0;
        }
    }

    /// Counts one failure; returns the count and whether this failure started a lockout.
    fn count<K: std::hash::Hash + Eq + Clone>(
        &self,
        table: &Table<K>,
        key: K,
        now: Instant,
    ) -> (u32, bool) {
        if !table.entries.contains_key(&key) && !self.make_room(table, now) {
            // Full of active attackers: the new key is not tracked, but the other scope
            // (the address) still is; see `make_room`.
            return (0, false);
        }
        let mut entry = table.entries.entry(key).or_insert(Entry {
            failures: 0,
            last_failure: now,
            locked_until: None,
        });
        self.age(&mut entry, table.delay_after, now);
        if entry.locked_until.is_some() {
            return (entry.failures, false);
        }
        entry.failures = entry.failures.saturating_add(1);
        entry.last_failure = now;
        let lock = table.lock_after > 0 && entry.failures >= table.lock_after;
        if lock {
            entry.locked_until = Some(now + Duration::from_secs(self.config.lockout_secs));
        }
        (entry.failures, lock)
    }

    /// Makes room for one more entry: first drops entries the window has forgotten, then
    /// (still full) those below the delay threshold, which cost an attacker nothing to
    /// recreate. Returns false if every entry is an active, delayed or locked one.
    fn make_room<K: std::hash::Hash + Eq + Clone>(&self, table: &Table<K>, now: Instant) -> bool {
        let max = self.config.max_tracked;
        if table.entries.len() < max {
            return true;
        }
        let window = self.window();
        table.entries.retain(|_, e| {
            e.locked_until.is_some_and(|until| until > now)
                || now.duration_since(e.last_failure) <= window
        });
        if table.entries.len() >= max {
            let delay_after = table.delay_after;
            table
                .entries
                .retain(|_, e| e.locked_until.is_some() || e.failures > delay_after);
        }
        if table.entries.len() >= max {
            tracing::warn!(
                tracked = table.entries.len(),
                "brute-force throttle table full of active entries; new names are not tracked"
            );
            return false;
        }
        true
    }

    /// How many names and addresses are tracked (for tests).
    pub fn tracked(&self) -> (usize, usize) {
        (self.users.entries.len(), self.addresses.entries.len())
    }
}

/// The unit an address is counted by: the address itself, or for IPv6 its /64 (one
/// subscriber's allocation, which an attacker can rotate through freely).
fn network(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Applies the throttle around one password login: refuses locked-out attempts, slows down
/// failures, records metrics and audit events. Used by [`crate::authenticate::Authenticator`].
#[derive(Debug)]
pub struct LoginGuard<'a> {
    throttle: &'a Throttle,
    metrics: &'a Metrics,
    protocol: Protocol,
    user: &'a str,
    address: IpAddr,
}

impl<'a> LoginGuard<'a> {
    pub fn new(
        throttle: &'a Throttle,
        metrics: &'a Metrics,
        protocol: Protocol,
        user: &'a str,
        address: IpAddr,
    ) -> Self {
        Self {
            throttle,
            metrics,
            protocol,
            user,
            address,
        }
    }

    /// Before the password is checked. `false`: the attempt is refused (locked out); the
    /// caller answers it as bad credentials. The refusal is delayed like a failure would be.
    pub async fn admit(&self) -> bool {
        match self.throttle.admit(self.user, self.address) {
            Admission::Go => true,
            Admission::Locked { scope, delay } => {
                self.record(scope);
                tracing::info!(
                    target: "oxbridge::audit",
                    user = %self.user.escape_debug(),
                    peer = %self.address,
                    protocol = self.protocol.as_str(),
                    scope = scope.as_str(),
                    action = "refused",
                    delay_ms = delay.as_millis() as u64,
                    "login throttled: locked out"
                );
                tokio::time::sleep(delay).await;
                false
            }
        }
    }

    /// After the check: a failure for bad credentials is counted and answered late.
    pub async fn failed(&self) {
        let penalty = self.throttle.failed(self.user, self.address);
        for (scope, locked) in [
            (Scope::User, penalty.user_locked),
            (Scope::Address, penalty.address_locked),
        ] {
            if locked {
                tracing::warn!(
                    target: "oxbridge::audit",
                    user = %self.user.escape_debug(),
                    peer = %self.address,
                    protocol = self.protocol.as_str(),
                    scope = scope.as_str(),
                    lockout_secs = self.throttle.config.lockout_secs,
                    "login lockout started"
                );
            }
        }
        if penalty.delay.is_zero() {
            return;
        }
        for (scope, delayed) in [
            (Scope::User, penalty.user_delayed),
            (Scope::Address, penalty.address_delayed),
        ] {
            if delayed {
                self.record(scope);
            }
        }
        tracing::info!(
            target: "oxbridge::audit",
            user = %self.user.escape_debug(),
            peer = %self.address,
            protocol = self.protocol.as_str(),
            action = "delayed",
            delay_ms = penalty.delay.as_millis() as u64,
            "login throttled: failure answered late"
        );
        tokio::time::sleep(penalty.delay).await;
    }

    /// After the check: the credentials were right.
    pub fn succeeded(&self) {
        self.throttle.succeeded(self.user);
    }

    fn record(&self, scope: Scope) {
        self.metrics
            .login_throttled_total
            .with_label_values(&[self.protocol.as_str(), scope.as_str()])
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ThrottleConfig {
        ThrottleConfig {
            user_delay_after: 2,
            address_delay_after: 2,
            base_delay_millis: 100,
            max_delay_secs: 1,
            user_lock_after: 5,
            address_lock_after: 8,
            lockout_secs: 60,
            window_secs: 30,
            ..ThrottleConfig::default()
        }
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 9));

    #[test]
    fn delays_grow_exponentially_and_are_bounded() {
        let t = Throttle::new(&config());
        let delays: Vec<u64> = (1..=8)
            .map(|n| t.delay_for(n, 2).as_millis() as u64)
            .collect();
        assert_eq!(delays, [0, 0, 100, 200, 400, 800, 1000, 1000]);
        assert_eq!(t.delay_for(u32::MAX, 2), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_user_is_delayed_then_locked_out_then_released() {
        let t = Throttle::new(&config());
        let mut penalties = Vec::new();
        for _ in 0..5 {
            assert_eq!(t.admit("alex", A), Admission::Go);
            penalties.push(t.failed("alex", A));
        }
        assert_eq!(penalties[0].delay, Duration::ZERO);
        assert_eq!(penalties[2].delay, Duration::from_millis(100));
        assert!(penalties[2].user_delayed);
        assert!(penalties[4].user_locked && !penalties[4].address_locked);
        // Locked: refused even from another address, without a password check.
        assert!(matches!(
            t.admit("ALEX", B),
            Admission::Locked {
                scope: Scope::User,
                ..
            }
        ));
        assert_eq!(t.admit("someone-else", B), Admission::Go);
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(t.admit("alex", A), Admission::Go);
        // After a lockout the count resumes at the delay threshold: slowed at once, and
        // locked again after a few more.
        assert_eq!(t.failed("alex", A).delay, Duration::from_millis(100));
        t.failed("alex", A);
        assert!(t.failed("alex", A).user_locked);
    }

    #[tokio::test(start_paused = true)]
    async fn unknown_and_known_names_are_counted_alike_and_success_forgives_the_name() {
        let t = Throttle::new(&config());
        for _ in 0..3 {
            t.failed("no-such-user", A);
            t.failed("alex", B);
        }
        assert_eq!(
            t.failed("no-such-user", A).delay,
            t.failed("alex", B).delay,
            "the same timing class for unknown names and wrong passwords"
        );
        t.succeeded("alex");
        assert_eq!(t.failed("alex", B).delay, Duration::from_millis(400));
        assert_eq!(
            t.failed("alex2", B).delay,
            Duration::from_millis(800),
            "the address keeps its count"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_address_spraying_names_is_locked_out() {
        let t = Throttle::new(&config());
        let mut locked = false;
        for i in 0..8 {
            locked = t.failed(&format!("user{i}"), A).address_locked;
        }
        assert!(locked);
        assert!(matches!(
            t.admit("user-new", A),
            Admission::Locked {
                scope: Scope::Address,
                ..
            }
        ));
        assert_eq!(t.admit("user-new", B), Admission::Go);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_age_out_of_the_window() {
        let t = Throttle::new(&config());
        for _ in 0..4 {
            t.failed("alex", A);
        }
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(t.failed("alex", A).delay, Duration::ZERO);
    }

    #[test]
    fn ipv6_is_counted_per_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        assert_eq!(network(a), network(b));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(network(mapped), A);
    }

    #[tokio::test(start_paused = true)]
    async fn the_tables_are_bounded() {
        let t = Throttle::new(&ThrottleConfig {
            max_tracked: 100,
            address_lock_after: 0,
            ..config()
        });
        for i in 0..10_000 {
            t.failed(&format!("spray{i}"), A);
        }
        let (users, addresses) = t.tracked();
        assert!(users <= 100, "{users}");
        assert_eq!(addresses, 1);
        // A name under attack stays tracked however many throwaway names pass.
        for _ in 0..4 {
            t.failed("victim", B);
        }
        for i in 0..1_000 {
            t.failed(&format!("more{i}"), A);
        }
        assert!(t.failed("victim", B).user_locked);
    }

    #[test]
    fn disabled_throttle_does_nothing() {
        let t = Throttle::new(&ThrottleConfig {
            enabled: false,
            ..config()
        });
        for _ in 0..100 {
            assert_eq!(t.failed("alex", A), Penalty::default());
        }
        assert_eq!(t.admit("alex", A), Admission::Go);
        assert_eq!(t.tracked(), (0, 0));
    }

    #[test]
    fn the_throttle_section_parses_with_defaults_and_refuses_unknown_keys() {
        let config = crate::Config::parse("[throttle]\nuser_lock_after = 4\n").unwrap();
        assert_eq!(config.throttle.user_lock_after, 4);
        assert_eq!(config.throttle.user_delay_after, 3);
        assert!(config.throttle.enabled);
        assert_eq!(
            crate::Config::parse("").unwrap().throttle,
            ThrottleConfig::default()
        );
        let err = crate::Config::parse("[throttle]\nlock_after = 4\n").unwrap_err();
        assert!(err.contains("lock_after"), "{err}");
        let bad = crate::Config::parse("[throttle]\nwindow_secs = 0\n").unwrap();
        assert!(bad.validate().iter().any(|p| p.contains("window_secs")));
    }

    #[test]
    fn settings_are_validated() {
        assert!(ThrottleConfig::default().problems().is_empty());
        let bad = ThrottleConfig {
            window_secs: 0,
            max_delay_secs: 1000,
            lockout_secs: 0,
            max_tracked: 0,
            ..ThrottleConfig::default()
        };
        assert_eq!(bad.problems().len(), 4, "{:?}", bad.problems());
    }
}
