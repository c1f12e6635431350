//! The Prometheus metrics of the data plane. Labels are bounded: protocol, result, direction;
//! never a user name.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every data-plane metric, registered on one registry.
#[derive(Clone, Debug)]
pub struct Metrics {
    pub registry: Registry,
    pub sessions_active: IntGaugeVec,
    pub sessions_total: IntCounterVec,
    pub connections_refused_total: IntCounterVec,
    pub tls_handshake_failures_total: IntCounterVec,
    pub logins_total: IntCounterVec,
    pub bytes_total: IntCounterVec,
    pub upstream_login_seconds: HistogramVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let sessions_active = IntGaugeVec::new(
            Opts::new("oxbridge_sessions_active", "Client connections open now."),
            &["protocol"],
        )
        .expect("valid metric");
        let sessions_total = IntCounterVec::new(
            Opts::new("oxbridge_sessions_total", "Client connections accepted."),
            &["protocol"],
        )
        .expect("valid metric");
        let connections_refused_total = IntCounterVec::new(
            Opts::new(
                "oxbridge_connections_refused_total",
                "Client connections refused because the connection limit was reached.",
            ),
            &["protocol"],
        )
        .expect("valid metric");
        let tls_handshake_failures_total = IntCounterVec::new(
            Opts::new(
                "oxbridge_tls_handshake_failures_total",
                "Client TLS handshakes that failed.",
            ),
            &["protocol"],
        )
        .expect("valid metric");
        let logins_total = IntCounterVec::new(
            Opts::new("oxbridge_logins_total", "Login attempts by result."),
            &["protocol", "result"],
        )
        .expect("valid metric");
        let bytes_total = IntCounterVec::new(
            Opts::new(
                "oxbridge_spliced_bytes_total",
                "Bytes moved by finished splices, by direction.",
            ),
            &["protocol", "direction"],
        )
        .expect("valid metric");
        let upstream_login_seconds = HistogramVec::new(
            HistogramOpts::new(
                "oxbridge_upstream_login_duration_seconds",
                "Time to connect to the upstream and authenticate with XOAUTH2.",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["protocol"],
        )
        .expect("valid metric");
        for collector in [
            Box::new(sessions_active.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(sessions_total.clone()),
            Box::new(connections_refused_total.clone()),
            Box::new(tls_handshake_failures_total.clone()),
            Box::new(logins_total.clone()),
            Box::new(bytes_total.clone()),
            Box::new(upstream_login_seconds.clone()),
        ] {
            registry
                .register(collector)
                .expect("metric registered once");
        }
        Self {
            registry,
            sessions_active,
            sessions_total,
            connections_refused_total,
            tls_handshake_failures_total,
            logins_total,
            bytes_total,
            upstream_login_seconds,
        }
    }

    /// The text exposition format for `/metrics`.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
