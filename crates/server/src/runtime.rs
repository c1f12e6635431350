//! Building a running server from a [`Config`]: store, broker, certificates, upstream
//! endpoints, listeners and the admin endpoints; then serving until shutdown and draining.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::pki_types::ServerName;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

use oxbridge_broker::{AppRegistration, BrokerSettings, TokenBroker};
use oxbridge_imap::ImapBackEnd;
use oxbridge_pop3::Pop3BackEnd;
use oxbridge_smtp::SmtpBackEnd;
use oxbridge_store::{CredentialStore, MasterKey, SqliteStore};
use oxbridge_wire::splice::SpliceSettings;
use oxbridge_wire::{tls, Protocol, Secret, UpstreamEndpoint, UpstreamTls};

use crate::admin::{self, AdminState};
use crate::authenticate::Authenticator;
use crate::config::{Config, LimitsConfig, UpstreamTlsMode};
use crate::listener;
use crate::metrics::Metrics;
use crate::relay::RelayRules;

/// What every session shares.
#[derive(Debug)]
pub struct Shared {
    pub metrics: Metrics,
    pub authenticator: Arc<Authenticator>,
    pub imap: ImapBackEnd,
    pub pop3: Pop3BackEnd,
    pub smtp: SmtpBackEnd,
    pub limits: LimitsConfig,
    pub pre_auth_timeout: Duration,
    pub splice: SpliceSettings,
    tls: ArcSwap<rustls::ServerConfig>,
    endpoints: HashMap<Protocol, Arc<UpstreamEndpoint>>,
}

impl Shared {
    /// The acceptor for the current certificate.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.tls.load_full())
    }

    pub fn endpoint(&self, protocol: Protocol) -> Arc<UpstreamEndpoint> {
        self.endpoints[&protocol].clone()
    }

    pub fn tls_failed(&self, protocol: Protocol) {
        self.metrics
            .tls_handshake_failures_total
            .with_label_values(&[protocol.as_str()])
            .inc();
    }
}

/// A configured server, ready to bind and run.
#[derive(Debug)]
pub struct Server {
    config: Config,
    shared: Arc<Shared>,
}

/// Opens the embedded store in the configured data directory with the configured key.
pub fn open_store(config: &Config) -> Result<Arc<SqliteStore>, String> {
    let key = master_key(config)?;
    SqliteStore::open_in_data_dir(&config.data_dir, key)
        .map(Arc::new)
        .map_err(|e| format!("store: {e}"))
}

fn master_key(config: &Config) -> Result<MasterKey, String> {
    if let Some(var) = &config.store.master_key_env {
        let value =
            std::env::var(var).map_err(|_| format!("[store] master_key_env: {var} is not set"))?;
        return MasterKey::from_base64(value.trim()).map_err(|e| format!("master key: {e}"));
    }
    if let Some(file) = &config.store.master_key_file {
        return MasterKey::load(file).map_err(|e| format!("master key: {e}"));
    }
    MasterKey::load_or_create(&config.data_dir).map_err(|e| format!("master key: {e}"))
}

/// The Entra app registrations, with their client secrets read.
pub fn app_registrations(config: &Config) -> Result<Vec<AppRegistration>, String> {
    config
        .apps
        .iter()
        .map(|app| {
            let client_secret = if let Some(file) = &app.client_secret_file {
                let text = std::fs::read_to_string(file).map_err(|e| {
                    format!("app {:?}: cannot read {}: {e}", app.name, file.display())
                })?;
                Some(Secret::from(text.trim_end_matches(['\r', '\n'])))
            } else if let Some(var) = &app.client_secret_env {
                let text = std::env::var(var)
                    .map_err(|_| format!("app {:?}: {var} is not set", app.name))?;
                Some(Secret::from(text))
            } else {
                None
            };
            Ok(AppRegistration {
                name: app.name.clone(),
                authority: app.authority.clone(),
                tenant: app.tenant.clone(),
                client_id: app.client_id.clone(),
                client_secret,
                delegated_scopes: app.scopes.clone(),
                app_scope: app.app_scope.clone(),
                extra_ca: app.ca_file.iter().cloned().collect(),
                certificate: client_certificate(app)?,
                allow_password_grant: app.allow_password_grant,
            })
        })
        .collect()
}

/// The `[[app]]`'s certificate credential, if it has one.
fn client_certificate(
    app: &crate::config::AppConfig,
) -> Result<Option<oxbridge_broker::ClientCertificate>, String> {
    let (Some(certificate), Some(private_key)) = (&app.certificate, &app.private_key) else {
        return Ok(None);
    };
    let algorithm = match &app.assertion {
        Some(text) => text
            .parse()
            .map_err(|e| format!("app {:?}: {e}", app.name))?,
        None => oxbridge_broker::AssertionAlgorithm::default(),
    };
    Ok(Some(oxbridge_broker::ClientCertificate {
        certificate: certificate.clone(),
        private_key: private_key.clone(),
        algorithm,
    }))
}

/// The re-consent notification hook from `[notify]`, if one is configured.
fn notifier(config: &Config) -> Result<Option<oxbridge_broker::Notifier>, String> {
    oxbridge_broker::Notifier::new(&oxbridge_broker::NotifySettings {
        command: config.notify.command.clone(),
        webhook: config.notify.webhook.clone(),
        webhook_ca_file: config.notify.webhook_ca_file.clone(),
    })
}

fn endpoint(config: &Config, protocol: Protocol) -> Result<UpstreamEndpoint, String> {
    let up = config.upstream.get(protocol);
    let extra: Vec<PathBuf> = up.ca_file.iter().cloned().collect();
    let extra: Vec<&Path> = extra.iter().map(PathBuf::as_path).collect();
    let client = tls::client_config(&extra).map_err(|e| format!("[upstream.{protocol}]: {e}"))?;
    let name = up
        .server_name
        .clone()
        .unwrap_or_else(|| up.host().to_string());
    let server_name = ServerName::try_from(name.clone())
        .map_err(|_| format!("[upstream.{protocol}]: {name:?} is not a valid TLS name"))?;
    let mode = match up.tls {
        UpstreamTlsMode::Implicit => UpstreamTls::Implicit,
        UpstreamTlsMode::Starttls => UpstreamTls::StartTls,
    };
    let mut endpoint = UpstreamEndpoint::new(up.address.clone(), server_name, mode, client);
    endpoint.connect_timeout = Duration::from_secs(up.connect_timeout_secs.max(1));
    endpoint.login_timeout = Duration::from_secs(config.limits.upstream_login_timeout_secs.max(1));
    Ok(endpoint)
}

impl Server {
    /// Checks the configuration and sets up everything but the sockets. Returns every
    /// problem found.
    pub fn build(config: Config) -> Result<Server, Vec<String>> {
        let problems = config.validate();
        if !problems.is_empty() {
            return Err(problems);
        }
        tls::install_crypto_provider();
        let mut problems = Vec::new();
        let tls = crate::certificate::load_or_generate(
            config.tls.cert.as_deref(),
            config.tls.key.as_deref(),
            &config.data_dir,
        )
        .map_err(|e| problems.push(format!("[tls]: {e}")))
        .ok();
        let mut endpoints = HashMap::new();
        for protocol in Protocol::ALL {
            match endpoint(&config, protocol) {
                Ok(e) => {
                    endpoints.insert(protocol, Arc::new(e));
                }
                Err(e) => problems.push(e),
            }
        }
        let apps = app_registrations(&config)
            .map_err(|e| problems.push(e))
            .ok();
        let store = open_store(&config).map_err(|e| problems.push(e)).ok();
        let metrics = Metrics::new();
        let broker = match (apps, &store) {
            (Some(apps), Some(store)) => {
                let store: Arc<dyn CredentialStore> = store.clone();
                let hook = notifier(&config)
                    .map_err(|e| problems.push(e))
                    .ok()
                    .flatten();
                TokenBroker::new(apps, store, BrokerSettings::default(), &metrics.registry)
                    .map(|broker| match hook {
                        Some(hook) => broker.with_observer(Arc::new(hook)),
                        None => broker,
                    })
                    .map_err(|e| problems.push(format!("token broker: {e}")))
                    .ok()
            }
            _ => None,
        };
        let (Some(tls), Some(store), Some(broker)) = (tls, store, broker) else {
            return Err(problems);
        };
        if !problems.is_empty() {
            return Err(problems);
        }
        let authenticator = Arc::new(Authenticator {
            store,
            broker: Arc::new(broker),
            metrics: metrics.clone(),
            // `validate()` above has refused bad rules already.
            relay: RelayRules::from_config(&config.relay).unwrap_or_default(),
        });
        let shared = Arc::new(Shared {
            metrics,
            authenticator,
            imap: ImapBackEnd::with_pool(
                config.upstream.imap.pool_size,
                Duration::from_secs(config.upstream.imap.pool_ttl_secs.max(1)),
            ),
            pop3: Pop3BackEnd::new(),
            smtp: SmtpBackEnd::new(oxbridge_smtp::HOSTNAME),
            pre_auth_timeout: Duration::from_secs(config.limits.pre_auth_timeout_secs.max(1)),
            splice: SpliceSettings {
                idle_timeout: Some(Duration::from_secs(config.limits.idle_timeout_secs.max(1))),
            },
            limits: config.limits.clone(),
            tls: ArcSwap::new(tls),
            endpoints,
        });
        Ok(Server { config, shared })
    }

    /// Binds every listener, serves until `shutdown` resolves, then drains: stops
    /// accepting, reports unready, and waits up to the grace period for sessions to end.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), String> {
        let (stop_tx, stop_rx) = watch::channel(false);
        if self.config.grants.background_refresh {
            let grants = &self.config.grants;
            tokio::spawn(oxbridge_broker::run_background_refresh(
                self.shared.authenticator.broker.clone(),
                self.shared.authenticator.store.clone(),
                oxbridge_broker::RefreshPolicy {
                    idle_after: Duration::from_secs(grants.refresh_idle_after_secs),
                    check_every: Duration::from_secs(grants.refresh_check_interval_secs.max(1)),
                    spacing: Duration::from_millis(grants.refresh_spacing_millis),
                },
                stop_rx.clone(),
            ));
        }
        let max = self.config.limits.max_connections;
        let connections = Arc::new(Semaphore::new(max));
        let admin_state = Arc::new(AdminState {
            metrics: self.shared.metrics.clone(),
            ready: false.into(),
        });

        let mut bound = Vec::new();
        for spec in &self.config.listeners {
            let listener = listener::bind(spec.listen)
                .map_err(|e| format!("cannot listen on {}: {e}", spec.listen))?;
            tracing::info!(protocol = %spec.protocol, address = %spec.listen, tls = ?spec.tls, "listening");
            bound.push((listener, spec.clone()));
        }
        if !self.config.admin.listen.is_empty() {
            let address: SocketAddr = self
                .config
                .admin
                .listen
                .parse()
                .map_err(|_| "invalid admin address".to_string())?;
            let admin = admin::bind(address)
                .await
                .map_err(|e| format!("cannot listen on {address} (admin): {e}"))?;
            tracing::info!(address = %address, "admin endpoints on /metrics /healthz /readyz");
            let mut stop = stop_rx.clone();
            let state = admin_state.clone();
            tokio::spawn(async move {
                let _ = admin::serve(admin, state, async move {
                    let _ = stop.changed().await;
                })
                .await;
            });
        }
        let mut loops = Vec::new();
        for (listener, spec) in bound {
            loops.push(tokio::spawn(listener::accept_loop(
                listener,
                spec,
                self.shared.clone(),
                connections.clone(),
                stop_rx.clone(),
            )));
        }
        admin_state.ready.store(true, Ordering::Relaxed);

        shutdown.await;
        admin_state.ready.store(false, Ordering::Relaxed);
        tracing::info!("shutting down: no new connections; waiting for sessions to finish");
        let _ = stop_tx.send(true);
        for l in loops {
            let _ = l.await;
        }
        let grace = Duration::from_secs(self.config.limits.shutdown_grace_secs);
        let max = u32::try_from(max).unwrap_or(u32::MAX);
        match tokio::time::timeout(grace, connections.acquire_many(max)).await {
            Ok(_) => tracing::info!("all sessions finished"),
            Err(_) => tracing::info!("grace period over; closing remaining sessions"),
        }
        Ok(())
    }
}
