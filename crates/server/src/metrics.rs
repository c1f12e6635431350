//! The Prometheus metrics of the data plane. Labels are bounded: protocol, result, direction;
//! never a user name.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
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
    /// Upstream logins that failed for want of a working upstream (connect, TLS, greeting,
    /// timeout), as opposed to the upstream refusing the token.
    pub upstream_unavailable_total: IntCounterVec,
    /// Connections refused before the session for a bad or missing PROXY-protocol header.
    pub proxy_header_failures_total: IntCounterVec,
    /// Not-after of each certificate oxbridge presents or signs with, as a Unix time.
    pub certificate_expiry_timestamp_seconds: IntGaugeVec,
    pub reloads_total: IntCounterVec,
    pub reload_last_success_timestamp_seconds: IntGauge,
    /// Password logins slowed down or refused by the brute-force throttle, by the scope
    /// (`user` or `address`) whose failures called for it.
    pub login_throttled_total: IntCounterVec,
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
                "Bytes moved by spliced sessions, by direction, counted as they move.",
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
        let upstream_unavailable_total = IntCounterVec::new(
            Opts::new(
                "oxbridge_upstream_unavailable_total",
                "Upstream logins that failed because the upstream could not be reached or \
                 did not answer (connect, TLS, greeting or timeout).",
            ),
            &["protocol"],
        )
        .expect("valid metric");
        let proxy_header_failures_total = IntCounterVec::new(
            Opts::new(
                "oxbridge_proxy_header_failures_total",
                "Connections closed on a PROXY-protocol listener: from an untrusted address, \
                 with an invalid header, or without one in time.",
            ),
            &["protocol", "reason"],
        )
        .expect("valid metric");
        let certificate_expiry_timestamp_seconds = IntGaugeVec::new(
            Opts::new(
                "oxbridge_certificate_expiry_timestamp_seconds",
                "When a certificate expires (Unix time): `listener` is the one shown to \
                 clients, `app:NAME` an app registration's client-assertion certificate.",
            ),
            &["certificate"],
        )
        .expect("valid metric");
        let reloads_total = IntCounterVec::new(
            Opts::new(
                "oxbridge_config_reloads_total",
                "Configuration reloads (SIGHUP or POST /reload), by result: ok or rejected.",
            ),
            &["result"],
        )
        .expect("valid metric");
        let reload_last_success_timestamp_seconds = IntGauge::new(
            "oxbridge_config_last_reload_success_timestamp_seconds",
            "When the configuration was last loaded successfully (start or reload), Unix time.",
        )
        .expect("valid metric");
        reload_last_success_timestamp_seconds.set(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
        );
        let login_throttled_total = IntCounterVec::new(
            Opts::new(
                "oxbridge_login_throttled_total",
                "Password logins answered late or refused after repeated failures for the \
                 same user name or from the same address (scope).",
            ),
            &["protocol", "scope"],
        )
        .expect("valid metric");
        let build_info = IntGaugeVec::new(
            Opts::new(
                "oxbridge_build_info",
                "Always 1; the version of the running oxbridge is in the label.",
            ),
            &["version"],
        )
        .expect("valid metric");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        for collector in [
            Box::new(sessions_active.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(sessions_total.clone()),
            Box::new(connections_refused_total.clone()),
            Box::new(tls_handshake_failures_total.clone()),
            Box::new(logins_total.clone()),
            Box::new(bytes_total.clone()),
            Box::new(upstream_login_seconds.clone()),
            Box::new(upstream_unavailable_total.clone()),
            Box::new(proxy_header_failures_total.clone()),
            Box::new(certificate_expiry_timestamp_seconds.clone()),
            Box::new(reloads_total.clone()),
            Box::new(reload_last_success_timestamp_seconds.clone()),
            Box::new(login_throttled_total.clone()),
            Box::new(build_info),
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
            upstream_unavailable_total,
            proxy_header_failures_total,
            certificate_expiry_timestamp_seconds,
            reloads_total,
            reload_last_success_timestamp_seconds,
            login_throttled_total,
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
