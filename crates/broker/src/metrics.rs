//! The broker's Prometheus metrics: token requests by grant and outcome, their latency,
//! cache hits, and grant health. Labels are bounded: grant kind, failure class, and the app
//! name (a handful, from the configuration); account names never become labels.

use std::collections::BTreeMap;

use oxbridge_store::{Account, AccountStatus, GrantKind};
use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
};

/// Metric handles, registered once on the server's registry.
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    requests: IntCounterVec,
    duration: HistogramVec,
    cache_hits: IntCounter,
    by_app: IntCounterVec,
    needs_reconsent: IntGaugeVec,
    oldest_refresh_token: IntGaugeVec,
}

/// Grant label values.
pub(crate) const GRANT_REFRESH_TOKEN: &str = "refresh_token";
pub(crate) const GRANT_CLIENT_CREDENTIALS: &str = "client_credentials";
pub(crate) const GRANT_PASSWORD: &str = "password";

impl Metrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let requests = IntCounterVec::new(
            Opts::new(
                "oxbridge_token_requests_total",
                "Requests to the token endpoint, by grant and result (ok or failure class).",
            ),
            &["grant", "result"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "oxbridge_token_request_duration_seconds",
                "Time taken by token-endpoint requests, by grant.",
            )
            .buckets(vec![
                0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0,
            ]),
            &["grant"],
        )?;
        let cache_hits = IntCounter::new(
            "oxbridge_token_cache_hits_total",
            "Access tokens served from the in-memory cache without a request.",
        )?;
        let by_app = IntCounterVec::new(
            Opts::new(
                "oxbridge_grant_requests_total",
                "Token requests by app registration and result (ok or failure class).",
            ),
            &["app", "result"],
        )?;
        let needs_reconsent = IntGaugeVec::new(
            Opts::new(
                "oxbridge_accounts_needing_reconsent",
                "Accounts whose grant needs an interactive sign-in, by app.",
            ),
            &["app"],
        )?;
        let oldest_refresh_token = IntGaugeVec::new(
            Opts::new(
                "oxbridge_refresh_token_oldest_age_seconds",
                "Age of the least recently renewed delegated refresh token, by app; Entra \
                 expires one after 90 days without use.",
            ),
            &["app"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(cache_hits.clone()))?;
        registry.register(Box::new(by_app.clone()))?;
        registry.register(Box::new(needs_reconsent.clone()))?;
        registry.register(Box::new(oldest_refresh_token.clone()))?;
        Ok(Self {
            requests,
            duration,
            cache_hits,
            by_app,
            needs_reconsent,
            oldest_refresh_token,
        })
    }

    /// Counts one token request of `app`; `result` is "ok" or a failure class name.
    pub fn app_request(&self, app: &str, result: &str) {
        self.by_app.with_label_values(&[app, result]).inc();
    }

    /// Sets the health gauges from the full account list.
    pub fn observe_accounts(&self, accounts: &[Account], now_unix: i64) {
        let mut reconsent: BTreeMap<&str, i64> = BTreeMap::new();
        let mut oldest: BTreeMap<&str, i64> = BTreeMap::new();
        for account in accounts {
            let app = account.app.as_str();
            let count = reconsent.entry(app).or_insert(0);
            if account.status == AccountStatus::NeedsReconsent {
                *count += 1;
            }
            if account.grant == GrantKind::RefreshToken && account.status == AccountStatus::Active {
                if let Some(saved) = account.refresh_token_updated_at {
                    let age = (now_unix - saved).max(0);
                    let entry = oldest.entry(app).or_insert(0);
                    *entry = (*entry).max(age);
                }
            }
        }
        // Apps that lost their last account drop out rather than report stale numbers.
        self.needs_reconsent.reset();
        self.oldest_refresh_token.reset();
        for (app, count) in reconsent {
            self.needs_reconsent.with_label_values(&[app]).set(count);
        }
        for (app, age) in oldest {
            self.oldest_refresh_token.with_label_values(&[app]).set(age);
        }
    }

    /// Records one finished token-endpoint request; `result` is "ok" or a failure class name.
    pub fn request(&self, grant: &str, result: &str, seconds: f64) {
        self.requests.with_label_values(&[grant, result]).inc();
        self.duration.with_label_values(&[grant]).observe(seconds);
    }

    pub fn cache_hit(&self) {
        self.cache_hits.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_once_and_counts() {
        let registry = Registry::new();
        let metrics = Metrics::register(&registry).expect("registers");
        metrics.request(GRANT_REFRESH_TOKEN, "ok", 0.2);
        metrics.cache_hit();
        let names: Vec<String> = registry
            .gather()
            .iter()
            .map(|f| f.name().to_owned())
            .collect();
        assert!(names.contains(&"oxbridge_token_requests_total".to_owned()));
        assert!(names.contains(&"oxbridge_token_request_duration_seconds".to_owned()));
        assert!(names.contains(&"oxbridge_token_cache_hits_total".to_owned()));
        assert!(
            Metrics::register(&registry).is_err(),
            "second registration fails"
        );
    }
}
