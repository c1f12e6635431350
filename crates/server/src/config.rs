//! The configuration file: one TOML document, unknown keys rejected, every problem reported
//! at once by [`Config::validate`]. Key names are a contract shared with docs and scripts.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use oxbridge_wire::Protocol;
use serde::Deserialize;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Embedded store, master key and generated certificate live here.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub tls: TlsConfig,
    #[serde(default, rename = "listener")]
    pub listeners: Vec<ListenerConfig>,
    #[serde(default)]
    pub upstream: UpstreamsConfig,
    #[serde(default, rename = "app")]
    pub apps: Vec<AppConfig>,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub log: LogConfig,
    /// Background refresh of idle delegated grants.
    #[serde(default)]
    pub grants: GrantsConfig,
    /// Who hears about grants that need a new sign-in.
    #[serde(default)]
    pub notify: NotifyConfig,
    /// SMTP relay rules: networks whose devices submit without logging in.
    #[serde(default, rename = "relay")]
    pub relay: Vec<RelayConfig>,
    /// Brute-force throttling of password logins.
    #[serde(default)]
    pub throttle: crate::throttle::ThrottleConfig,
    /// Load balancers allowed to send a PROXY-protocol header (CIDR or address), for
    /// listeners with `proxy_protocol = true` that have no list of their own.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/oxbridge")
}

/// The admin HTTP listener: `/metrics`, `/healthz`, `/readyz`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Set to an empty string to disable.
    #[serde(default = "default_admin_listen")]
    pub listen: String,
}

fn default_admin_listen() -> String {
    "127.0.0.1:9090".into()
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: default_admin_listen(),
        }
    }
}

/// The certificate shown to clients; generated into `data_dir` when absent.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// How TLS starts on a client-facing listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerTls {
    Implicit,
    Starttls,
    None,
}

/// One client-facing listener.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    #[serde(deserialize_with = "protocol")]
    pub protocol: Protocol,
    pub listen: SocketAddr,
    pub tls: ListenerTls,
    /// Accept passwords before TLS. Off unless the operator explicitly allows it.
    #[serde(default)]
    pub allow_plaintext: bool,
    /// Every connection starts with a PROXY-protocol header (v1 or v2) from a load
    /// balancer, carrying the real client address; connections from addresses not in the
    /// trusted proxies are refused.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// This listener's trusted proxies, instead of the global `trusted_proxies`.
    pub trusted_proxies: Option<Vec<String>>,
}

fn protocol<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Protocol, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map_err(serde::de::Error::custom)
}

/// How TLS starts towards an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamTlsMode {
    Implicit,
    Starttls,
}

/// The upstream services, one per protocol. Defaults: Exchange Online.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamsConfig {
    #[serde(default = "default_imap_upstream")]
    pub imap: UpstreamConfig,
    #[serde(default = "default_pop3_upstream")]
    pub pop3: UpstreamConfig,
    #[serde(default = "default_smtp_upstream")]
    pub smtp: UpstreamConfig,
}

impl Default for UpstreamsConfig {
    fn default() -> Self {
        Self {
            imap: default_imap_upstream(),
            pop3: default_pop3_upstream(),
            smtp: default_smtp_upstream(),
        }
    }
}

impl UpstreamsConfig {
    pub fn get(&self, protocol: Protocol) -> &UpstreamConfig {
        match protocol {
            Protocol::Imap => &self.imap,
            Protocol::Pop3 => &self.pop3,
            Protocol::Smtp => &self.smtp,
        }
    }
}

fn default_imap_upstream() -> UpstreamConfig {
    UpstreamConfig::new("outlook.office365.com:993", UpstreamTlsMode::Implicit)
}
fn default_pop3_upstream() -> UpstreamConfig {
    UpstreamConfig::new("outlook.office365.com:995", UpstreamTlsMode::Implicit)
}
fn default_smtp_upstream() -> UpstreamConfig {
    UpstreamConfig::new("smtp.office365.com:587", UpstreamTlsMode::Starttls)
}

/// One upstream service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `host:port`.
    pub address: String,
    pub tls: UpstreamTlsMode,
    /// Extra trust anchors (private CA, tests); the system roots are always trusted too.
    pub ca_file: Option<PathBuf>,
    /// The certificate name to expect, when `address` is an IP address or differs.
    pub server_name: Option<String>,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// Connections opened and greeted ahead of logins (0: off). Saves the connect, TLS and
    /// greeting from each login's latency, at the cost of idle pre-auth connections.
    #[serde(default)]
    pub pool_size: usize,
    /// A pooled connection is discarded after this long unused, before the upstream drops it.
    #[serde(default = "default_pool_ttl")]
    pub pool_ttl_secs: u64,
}

fn default_pool_ttl() -> u64 {
    20
}

fn default_connect_timeout() -> u64 {
    10
}

impl UpstreamConfig {
    fn new(address: &str, tls: UpstreamTlsMode) -> Self {
        Self {
            address: address.into(),
            tls,
            ca_file: None,
            server_name: None,
            connect_timeout_secs: default_connect_timeout(),
            pool_size: 0,
            pool_ttl_secs: default_pool_ttl(),
        }
    }

    /// The host part of `address`.
    pub fn host(&self) -> &str {
        match self.address.rsplit_once(':') {
            Some((host, _)) => host.trim_start_matches('[').trim_end_matches(']'),
            None => &self.address,
        }
    }
}

/// An Entra app registration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    pub name: String,
    #[serde(default = "default_authority")]
    pub authority: String,
    pub tenant: String,
    pub client_id: String,
    pub client_secret_file: Option<PathBuf>,
    pub client_secret_env: Option<String>,
    /// Delegated scopes; default: IMAP, POP and SMTP on outlook.office.com plus offline_access.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// App-only scope; default `https://outlook.office365.com/.default`.
    pub app_scope: Option<String>,
    /// Extra trust anchors for the token endpoint.
    pub ca_file: Option<PathBuf>,
    /// Certificate credentials: the PEM certificate uploaded to the app registration…
    pub certificate: Option<PathBuf>,
    /// …and its PEM RSA private key; used instead of a client secret.
    pub private_key: Option<PathBuf>,
    /// Client assertion signature: `ps256` (default, with `x5t#S256`) or `rs256` (`x5t`).
    pub assertion: Option<String>,
    /// Allow the resource-owner password grant for this app's accounts (off by default; the
    /// weakest option: the user's Entra password on every device, no MFA).
    #[serde(default)]
    pub allow_password_grant: bool,
}

fn default_authority() -> String {
    "https://login.microsoftonline.com".into()
}

impl AppConfig {
    /// Problems with the certificate keys of this `[[app]]`, labelled with `at`.
    fn certificate_problems(&self, at: &str) -> Vec<String> {
        let mut problems = Vec::new();
        match (&self.certificate, &self.private_key) {
            (Some(_), None) | (None, Some(_)) => problems.push(format!(
                "{at}: certificate and private_key must be given together"
            )),
            (Some(cert), Some(key)) => {
                if self.client_secret_file.is_some() || self.client_secret_env.is_some() {
                    problems.push(format!(
                        "{at}: give a client secret or a certificate, not both"
                    ));
                }
                for (name, path) in [("certificate", cert), ("private_key", key)] {
                    if !path.exists() {
                        problems.push(format!("{at}: {name} {} does not exist", path.display()));
                    }
                }
            }
            (None, None) => {
                if self.assertion.is_some() {
                    problems.push(format!("{at}: assertion needs certificate and private_key"));
                }
            }
        }
        if let Some(assertion) = &self.assertion {
            if !matches!(assertion.to_ascii_lowercase().as_str(), "ps256" | "rs256") {
                problems.push(format!(
                    "{at}: assertion {assertion:?} is not \"ps256\" or \"rs256\""
                ));
            }
        }
        problems
    }
}

/// `[grants]`: keeping idle delegated grants alive. Entra expires a refresh token after 90
/// days without use; refreshing idle ones well before that keeps rarely used devices working.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantsConfig {
    /// Refresh idle delegated grants in the background (default on).
    #[serde(default = "d_true")]
    pub background_refresh: bool,
    /// A grant unused for this long is refreshed (default 14 days; keep well under 90).
    #[serde(default = "d_refresh_idle_after")]
    pub refresh_idle_after_secs: u64,
    /// How often accounts are checked (default hourly).
    #[serde(default = "d_refresh_check_interval")]
    pub refresh_check_interval_secs: u64,
    /// Pause between two background refreshes, so they never burst (default 5 s).
    #[serde(default = "d_refresh_spacing")]
    pub refresh_spacing_millis: u64,
}

fn d_true() -> bool {
    true
}
fn d_refresh_idle_after() -> u64 {
    14 * 24 * 3600
}
fn d_refresh_check_interval() -> u64 {
    3600
}
fn d_refresh_spacing() -> u64 {
    5000
}

impl Default for GrantsConfig {
    fn default() -> Self {
        Self {
            background_refresh: true,
            refresh_idle_after_secs: d_refresh_idle_after(),
            refresh_check_interval_secs: d_refresh_check_interval(),
            refresh_spacing_millis: d_refresh_spacing(),
        }
    }
}

/// `[notify]`: a command and/or a webhook run once each time an account starts needing a new
/// sign-in. They get the account, mailbox, app, class, AADSTS codes and reason; no secrets.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// Program and arguments, e.g. `["/usr/local/bin/page-admin", "--team", "mail"]`; the
    /// event is in `OXBRIDGE_EVENT`, `OXBRIDGE_ACCOUNT`, `OXBRIDGE_MAILBOX`, `OXBRIDGE_APP`,
    /// `OXBRIDGE_CLASS`, `OXBRIDGE_CODES` and `OXBRIDGE_REASON`.
    #[serde(default)]
    pub command: Vec<String>,
    /// URL that receives a JSON POST per event.
    pub webhook: Option<String>,
    /// Extra trust anchors for the webhook.
    pub webhook_ca_file: Option<PathBuf>,
}

/// Where accounts and grants are kept.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Shared store URL (`postgres://user@host/db?sslmode=require`); default: SQLite in
    /// `data_dir`. Every replica must use the same master key.
    pub url: Option<String>,
    /// Most connections to the shared store per replica (default 16).
    pub pool_size: Option<usize>,
    /// Extra trust anchors (PEM) for TLS to the shared store.
    pub ca_file: Option<PathBuf>,
    /// Master key file; default `data_dir/master.key`, generated on first start.
    pub master_key_file: Option<PathBuf>,
    /// Name of an environment variable holding the base64 master key.
    pub master_key_env: Option<String>,
}

/// Resource limits and timeouts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    #[serde(default = "d_max_connections")]
    pub max_connections: usize,
    #[serde(default = "d_pre_auth_timeout")]
    pub pre_auth_timeout_secs: u64,
    /// A spliced session on which nothing moves for this long is closed. IMAP IDLE
    /// clients re-issue IDLE within 29 minutes, so keep this above 30 minutes.
    #[serde(default = "d_idle_timeout")]
    pub idle_timeout_secs: u64,
    #[serde(default = "d_max_line")]
    pub max_line_bytes: usize,
    #[serde(default = "d_max_commands")]
    pub max_pre_auth_commands: u32,
    #[serde(default = "d_max_failed")]
    pub max_failed_logins: u32,
    /// After SIGTERM, spliced sessions get this long to end on their own before the
    /// server ends them (IMAP clients get `* BYE`).
    #[serde(default = "d_grace")]
    pub shutdown_grace_secs: u64,
    /// After SIGTERM, `/readyz` reports unready this long before the listeners close, so
    /// load balancers stop sending new clients first (default 0; a few seconds behind one).
    #[serde(default)]
    pub shutdown_delay_secs: u64,
    #[serde(default = "d_login_timeout")]
    pub upstream_login_timeout_secs: u64,
}

fn d_max_connections() -> usize {
    10_000
}
fn d_pre_auth_timeout() -> u64 {
    60
}
fn d_idle_timeout() -> u64 {
    3600
}
fn d_max_line() -> usize {
    16 * 1024
}
fn d_max_commands() -> u32 {
    64
}
fn d_max_failed() -> u32 {
    3
}
fn d_grace() -> u64 {
    30
}
fn d_login_timeout() -> u64 {
    30
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_connections: d_max_connections(),
            pre_auth_timeout_secs: d_pre_auth_timeout(),
            idle_timeout_secs: d_idle_timeout(),
            max_line_bytes: d_max_line(),
            max_pre_auth_commands: d_max_commands(),
            max_failed_logins: d_max_failed(),
            shutdown_grace_secs: d_grace(),
            shutdown_delay_secs: 0,
            upstream_login_timeout_secs: d_login_timeout(),
        }
    }
}

/// A `[[relay]]` rule: devices on `networks` may submit mail over SMTP without logging in,
/// as `account`, with one of `senders` as envelope sender. Checked by
/// [`RelayRules::from_config`](crate::relay::RelayRules::from_config).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayConfig {
    /// CIDR networks (`192.0.2.0/24`) or single addresses.
    pub networks: Vec<String>,
    /// The local account whose mailbox and grant submit the mail.
    pub account: String,
    /// Envelope senders (`MAIL FROM`) the devices may use.
    pub senders: Vec<String>,
}

/// Logging.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` (default) or `json`.
    #[serde(default = "d_log_format")]
    pub format: String,
}

fn d_log_format() -> String {
    "text".into()
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: d_log_format(),
        }
    }
}

impl Config {
    /// Parses a configuration document.
    pub fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Reads and parses a configuration file.
    pub fn load(path: &Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Every problem with this configuration, as messages for the operator.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.listeners.is_empty() {
            problems.push("no [[listener]] is configured".to_string());
        }
        let mut addresses = HashSet::new();
        for network in &self.trusted_proxies {
            if let Err(e) = crate::proxy_protocol::parse_network(network) {
                problems.push(format!("trusted_proxies: {e}"));
            }
        }
        for (i, l) in self.listeners.iter().enumerate() {
            let at = format!("listener #{} ({} on {})", i + 1, l.protocol, l.listen);
            if !addresses.insert(l.listen) {
                problems.push(format!("{at}: address used by another listener"));
            }
            for network in l.trusted_proxies.iter().flatten() {
                if let Err(e) = crate::proxy_protocol::parse_network(network) {
                    problems.push(format!("{at}: trusted_proxies: {e}"));
                }
            }
            let trusted = l.trusted_proxies.as_ref().unwrap_or(&self.trusted_proxies);
            if l.proxy_protocol && trusted.is_empty() {
                problems.push(format!(
                    "{at}: proxy_protocol = true needs trusted_proxies (here or at the top \
                     level): the load balancers' addresses"
                ));
            }
            if !l.proxy_protocol && l.trusted_proxies.is_some() {
                problems.push(format!(
                    "{at}: trusted_proxies has no meaning without proxy_protocol = true"
                ));
            }
            if l.tls == ListenerTls::Implicit && l.allow_plaintext {
                problems.push(format!(
                    "{at}: allow_plaintext has no meaning with tls = \"implicit\""
                ));
            }
            if l.tls == ListenerTls::None && !l.allow_plaintext {
                problems.push(format!(
                    "{at}: tls = \"none\" refuses every login unless allow_plaintext = true"
                ));
            }
        }
        if !self.admin.listen.is_empty() && self.admin.listen.parse::<SocketAddr>().is_err() {
            problems.push(format!(
                "[admin] listen: {:?} is not an address:port",
                self.admin.listen
            ));
        }
        match (&self.tls.cert, &self.tls.key) {
            (Some(_), None) | (None, Some(_)) => {
                problems.push("[tls]: cert and key must be given together".into())
            }
            (Some(cert), Some(key)) => {
                for path in [cert, key] {
                    if !path.exists() {
                        problems.push(format!("[tls]: {} does not exist", path.display()));
                    }
                }
            }
            (None, None) => {}
        }
        for protocol in Protocol::ALL {
            let up = self.upstream.get(protocol);
            let at = format!("[upstream.{protocol}]");
            match up.address.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
                _ => problems.push(format!("{at} address: {:?} is not host:port", up.address)),
            }
            if let Some(ca) = &up.ca_file {
                if !ca.exists() {
                    problems.push(format!("{at} ca_file: {} does not exist", ca.display()));
                }
            }
        }
        let mut names = HashSet::new();
        for app in &self.apps {
            let at = format!("[[app]] {:?}", app.name);
            if app.name.is_empty() {
                problems.push("[[app]]: name must not be empty".into());
            }
            if !names.insert(app.name.as_str()) {
                problems.push(format!("{at}: another app has the same name"));
            }
            if app.tenant.is_empty() || app.client_id.is_empty() {
                problems.push(format!("{at}: tenant and client_id are required"));
            }
            if !(app.authority.starts_with("https://") || app.authority.starts_with("http://")) {
                problems.push(format!("{at}: authority must be an https:// URL"));
            }
            if app.client_secret_file.is_some() && app.client_secret_env.is_some() {
                problems.push(format!(
                    "{at}: give client_secret_file or client_secret_env, not both"
                ));
            }
            if let Some(file) = &app.client_secret_file {
                if !file.exists() {
                    problems.push(format!(
                        "{at}: client_secret_file {} does not exist",
                        file.display()
                    ));
                }
            }
            if let Some(var) = &app.client_secret_env {
                if std::env::var_os(var).is_none() {
                    problems.push(format!("{at}: environment variable {var} is not set"));
                }
            }
            if let Some(ca) = &app.ca_file {
                if !ca.exists() {
                    problems.push(format!("{at}: ca_file {} does not exist", ca.display()));
                }
            }
            problems.extend(app.certificate_problems(&at));
        }
        if self.grants.background_refresh {
            let idle = self.grants.refresh_idle_after_secs;
            if idle == 0 || idle >= 90 * 24 * 3600 {
                problems.push(format!(
                    "[grants] refresh_idle_after_secs = {idle}: must be above 0 and well under \
                     90 days, or refresh tokens expire for inactivity first"
                ));
            }
            if self.grants.refresh_check_interval_secs == 0 {
                problems.push("[grants] refresh_check_interval_secs must be at least 1".into());
            }
        }
        if let Some(url) = &self.notify.webhook {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                problems.push(format!("[notify] webhook {url:?} must be an http(s) URL"));
            }
        }
        if self.notify.command.first().is_some_and(|p| p.is_empty()) {
            problems.push("[notify] command: the program must not be empty".into());
        }
        if let Some(url) = &self.store.url {
            // Never echo the URL: it may carry a password.
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                problems.push(
                    "[store] url must be a postgres:// URL (omit it for the embedded store)".into(),
                );
            }
        }
        if self.store.pool_size == Some(0) {
            problems.push("[store] pool_size must be at least 1".into());
        }
        if let Err(relay) = crate::relay::RelayRules::from_config(&self.relay) {
            problems.extend(relay);
        }
        problems.extend(self.throttle.problems());
        if self.limits.max_connections == 0 {
            problems.push("[limits] max_connections must be at least 1".into());
        }
        if self.limits.max_line_bytes < 1024 {
            problems.push("[limits] max_line_bytes must be at least 1024".into());
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            problems.push(format!(
                "[log] format: {:?} is not \"text\" or \"json\"",
                self.log.format
            ));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_design_example_parses_with_defaults() {
        let config = Config::parse(
            r#"
            data_dir = "/tmp/x"
            [[listener]]
            protocol = "imap"
            listen = "127.0.0.1:993"
            tls = "implicit"
            [[app]]
            name = "contoso"
            tenant = "contoso.onmicrosoft.com"
            client_id = "11111111-2222-3333-4444-555555555555"
            "#,
        )
        .unwrap();
        assert_eq!(config.upstream.imap.address, "outlook.office365.com:993");
        assert_eq!(config.upstream.smtp.tls, UpstreamTlsMode::Starttls);
        assert_eq!(
            config.apps[0].authority,
            "https://login.microsoftonline.com"
        );
        assert_eq!(config.admin.listen, "127.0.0.1:9090");
        assert!(config.validate().is_empty(), "{:?}", config.validate());
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = Config::parse("data_dir = \"/x\"\nfrobnicate = 1\n").unwrap_err();
        assert!(err.contains("frobnicate"), "{err}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let config = Config::parse(
            r#"
            [[listener]]
            protocol = "imap"
            listen = "127.0.0.1:993"
            tls = "none"
            [[listener]]
            protocol = "imap"
            listen = "127.0.0.1:993"
            tls = "implicit"
            [tls]
            cert = "/nonexistent/cert.pem"
            [upstream.imap]
            address = "nohostport"
            tls = "implicit"
            [[app]]
            name = "a"
            tenant = ""
            client_id = "x"
            [[app]]
            name = "a"
            tenant = "t"
            client_id = "x"
            client_secret_file = "/nonexistent/secret"
            "#,
        )
        .unwrap();
        let problems = config.validate();
        assert!(problems.len() >= 6, "{problems:#?}");
        let all = problems.join("\n");
        for needle in [
            "allow_plaintext",
            "address used by another listener",
            "cert and key",
            "not host:port",
            "tenant and client_id",
            "same name",
            "client_secret_file",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in {all}");
        }
    }

    #[test]
    fn smtp_listeners_and_relay_rules_parse_and_are_validated() {
        let config = Config::parse(
            r#"
            [[listener]]
            protocol = "smtp"
            listen = "127.0.0.1:587"
            tls = "starttls"
            [[relay]]
            networks = ["192.0.2.0/24"]
            account = "scanner"
            senders = ["scanner@contoso.com"]
            "#,
        )
        .unwrap();
        assert!(config.validate().is_empty(), "{:?}", config.validate());
        assert_eq!(config.relay[0].account, "scanner");

        let bad = Config::parse(
            r#"
            [[listener]]
            protocol = "smtp"
            listen = "127.0.0.1:587"
            tls = "starttls"
            [[relay]]
            networks = ["192.0.2.0/33"]
            account = "scanner"
            senders = []
            "#,
        )
        .unwrap();
        let all = bad.validate().join("\n");
        assert!(
            all.contains("192.0.2.0/33") && all.contains("senders must list"),
            "{all}"
        );
        let unknown =
            Config::parse("[[relay]]\nnetworks = []\naccount = \"a\"\nsenders = []\nport = 25\n");
        assert!(unknown.unwrap_err().contains("port"));
    }

    #[test]
    fn onboarding_keys_are_checked() {
        let config = Config::parse(
            r#"
            [[listener]]
            protocol = "imap"
            listen = "127.0.0.1:993"
            tls = "implicit"
            [[app]]
            name = "cert"
            tenant = "t"
            client_id = "x"
            certificate = "/nonexistent/cert.pem"
            assertion = "es256"
            [[app]]
            name = "both"
            tenant = "t"
            client_id = "y"
            certificate = "/nonexistent/c.pem"
            private_key = "/nonexistent/k.pem"
            client_secret_env = "OXBRIDGE_TEST_UNSET_VARIABLE"
            [grants]
            refresh_idle_after_secs = 7776000
            [notify]
            webhook = "ftp://example.com/"
            "#,
        )
        .unwrap();
        let all = config.validate().join("\n");
        for needle in [
            "certificate and private_key must be given together",
            "is not \"ps256\" or \"rs256\"",
            "a client secret or a certificate, not both",
            "private_key /nonexistent/k.pem does not exist",
            "well under 90 days",
            "[notify] webhook",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in {all}");
        }
        let defaults = Config::parse("").unwrap();
        assert!(defaults.grants.background_refresh);
        assert_eq!(defaults.grants.refresh_idle_after_secs, 14 * 24 * 3600);
        assert!(defaults.notify.command.is_empty() && defaults.notify.webhook.is_none());
    }
}
