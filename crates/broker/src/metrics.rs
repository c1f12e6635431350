//! The broker's Prometheus metrics: token requests by grant and outcome, their latency, and
//! cache hits. Labels are bounded enums; account names never become labels.

use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry};

/// Metric handles, registered once on the server's registry.
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    requests: IntCounterVec,
    duration: HistogramVec,
    cache_hits: IntCounter,
}

/// Grant label values.
pub(crate) const GRANT_REFRESH_TOKEN: &str = "refresh_token";
pub(crate) const GRANT_CLIENT_CREDENTIALS: &str = "client_credentials";

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
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(cache_hits.clone()))?;
        Ok(Self {
            requests,
            duration,
            cache_hits,
        })
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
