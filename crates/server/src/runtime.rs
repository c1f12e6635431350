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
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

use oxbridge_broker::{AppRegistration, BrokerSettings, TokenBroker};
use oxbridge_imap::ImapBackEnd;
use oxbridge_pop3::Pop3BackEnd;
use oxbridge_smtp::SmtpBackEnd;
use oxbridge_store::{CredentialStore, MasterKey, PgSettings, PgStore, SqliteStore};
use oxbridge_wire::splice::SpliceSettings;
use oxbridge_wire::{tls, Protocol, Secret, UpstreamEndpoint, UpstreamTls};

use crate::admin::{self, AdminState};
use crate::authenticate::Authenticator;
use crate::config::{Config, LimitsConfig, UpstreamTlsMode};
use crate::listener::SessionCounter;
use crate::metrics::Metrics;
use crate::relay::RelayRules;
use crate::reload::{self, ConfigLoader, Listeners, ReloadHandle, ReloadRequest};

/// What every session shares.
#[derive(Debug)]
pub struct Shared {
    pub metrics: Metrics,
    pub authenticator: Arc<Authenticator>,
    pub imap: ImapBackEnd,
    pub pop3: Pop3BackEnd,
    pub smtp: SmtpBackEnd,
    /// Client sessions open now, counted against `[limits] max_connections`.
    pub sessions: SessionCounter,
    settings: ArcSwap<SessionSettings>,
    tls: ArcSwap<rustls::ServerConfig>,
    endpoints: HashMap<Protocol, Arc<UpstreamEndpoint>>,
    shutdown: watch::Receiver<bool>,
    drain: watch::Receiver<bool>,
}

/// The limits a new session starts with. A reload replaces them whole; sessions already
/// running keep the ones they started with.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    pub limits: LimitsConfig,
    pub pre_auth_timeout: Duration,
    pub splice: SpliceSettings,
}

impl SessionSettings {
    pub fn from_limits(limits: &LimitsConfig) -> Self {
        Self {
            limits: limits.clone(),
            pre_auth_timeout: Duration::from_secs(limits.pre_auth_timeout_secs.max(1)),
            splice: SpliceSettings {
                idle_timeout: Some(Duration::from_secs(limits.idle_timeout_secs.max(1))),
            },
        }
    }
}

impl Shared {
    /// The acceptor for the current certificate.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.tls.load_full())
    }

    /// The limits for a session starting now.
    pub fn settings(&self) -> Arc<SessionSettings> {
        self.settings.load_full()
    }

    /// Replaces the limits for sessions that start from now on (reload).
    pub(crate) fn set_settings(&self, settings: SessionSettings) {
        self.settings.store(Arc::new(settings));
    }

    /// Replaces the certificate shown to clients that connect from now on (reload).
    pub(crate) fn set_tls(&self, tls: Arc<rustls::ServerConfig>) {
        self.tls.store(tls);
    }

    /// Becomes true when the server stops accepting (sessions in their pre-auth dialog end).
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.clone()
    }

    /// Becomes true when the shutdown grace period is over (spliced sessions end).
    pub fn drain_signal(&self) -> watch::Receiver<bool> {
        self.drain.clone()
    }

    pub fn endpoint(&self, protocol: Protocol) -> Arc<UpstreamEndpoint> {
        self.endpoints[&protocol].clone()
    }
}

/// A configured server, ready to bind and run.
#[derive(Debug)]
pub struct Server {
    config: Config,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    drain: watch::Sender<bool>,
    reloads: mpsc::Receiver<ReloadRequest>,
    reload_handle: ReloadHandle,
    loader: Option<ConfigLoader>,
}

/// Opens the configured store: PostgreSQL when `[store] url` is set, else the embedded
/// SQLite file in the data directory; with the configured master key either way.
pub fn open_store(config: &Config) -> Result<Arc<dyn CredentialStore>, String> {
    let key = master_key(config)?;
    if let Some(url) = &config.store.url {
        let defaults = PgSettings::default();
        let settings = PgSettings {
            pool_size: config.store.pool_size.unwrap_or(defaults.pool_size),
            ca_file: config.store.ca_file.clone(),
            ..defaults
        };
        let store = PgStore::open(url, key, &settings).map_err(|e| format!("store: {e}"))?;
        tracing::info!(target = %store.target(), "shared store: PostgreSQL");
        return Ok(Arc::new(store));
    }
    SqliteStore::open_in_data_dir(&config.data_dir, key)
        .map(|store| Arc::new(store) as Arc<dyn CredentialStore>)
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

/// Creates the data directory (mode 0700) if it is missing, and refuses one that group or
/// other users may write to: whoever can write it can swap the master key or the database
/// for their own. Read access only earns a warning, because every file in it is created
/// 0600 and the master key's mode is checked again when it is loaded.
fn private_data_dir(data_dir: &Path) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        if !data_dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(data_dir)
                .map_err(|e| format!("cannot create data_dir {}: {e}", data_dir.display()))?;
        }
        let mode = std::fs::metadata(data_dir)
            .map_err(|e| format!("cannot read data_dir {}: {e}", data_dir.display()))?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o022 != 0 {
            return Err(format!(
                "data_dir {dir} is writable by group or other users (mode {mode:03o}), who could \
                 replace the master key or the store; run `chmod 700 {dir}`",
                dir = data_dir.display()
            ));
        }
        if mode & 0o077 != 0 {
            tracing::warn!(
                data_dir = %data_dir.display(),
                mode = format!("{mode:03o}"),
                "data_dir is readable by group or other users; chmod 700 is recommended"
            );
        }
    }
    Ok(())
}

fn endpoint(config: &Config, protocol: Protocol) -> Result<UpstreamEndpoint, String> {
    let up = config.upstream.get(protocol);
    let extra: Vec<PathBuf> = up.ca_file.iter().cloned().collect();
    let extra: Vec<&Path> = extra.iter().map(PathBuf::as_path).collect();
    let client = tls::client_config(&extra).map_err(|e| format!("[upstream.{protocol}]: {e}"))?;
    if let Some(ca) = &up.ca_file {
        // Upstream certificates are always verified; an extra trust anchor is the only way
        // to change what passes, so say so every start.
        tracing::warn!(
            upstream = %up.address,
            ca_file = %ca.display(),
            "[upstream.{protocol}] trusts an extra certificate authority besides the system roots"
        );
    }
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
        if let Err(e) = private_data_dir(&config.data_dir) {
            // Nothing in it can be trusted: stop before reading the key or the store.
            return Err(vec![e]);
        }
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
                let store: Arc<dyn CredentialStore> = Arc::clone(store);
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
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (drain_tx, drain_rx) = watch::channel(false);
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
            relay: ArcSwap::from_pointee(
                RelayRules::from_config(&config.relay).unwrap_or_default(),
            ),
            throttle: crate::throttle::Throttle::new(&config.throttle),
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
            sessions: SessionCounter::default(),
            settings: ArcSwap::from_pointee(SessionSettings::from_limits(&config.limits)),
            tls: ArcSwap::new(tls),
            endpoints,
            shutdown: shutdown_rx,
            drain: drain_rx,
        });
        let (reload_tx, reloads) = mpsc::channel(4);
        Ok(Server {
            config,
            shared,
            shutdown: shutdown_tx,
            drain: drain_tx,
            reloads,
            reload_handle: ReloadHandle::new(reload_tx),
            loader: None,
        })
    }

    /// Enables reloading (SIGHUP, `POST /reload`): `loader` reads the configuration anew.
    pub fn reload_from(mut self, loader: ConfigLoader) -> Self {
        self.loader = Some(loader);
        self
    }

    /// Asks the running server to reload; usable from a signal handler task.
    pub fn reload_handle(&self) -> ReloadHandle {
        self.reload_handle.clone()
    }

    /// Binds every listener, serves (applying reloads) until `shutdown` resolves, then
    /// drains:
    /// 1. `/readyz` turns unready while listeners still accept for
    ///    `[limits] shutdown_delay_secs`, so load balancers stop sending clients first;
    /// 2. listeners close and sessions still in their pre-auth dialog get the protocol's
    ///    goodbye;
    /// 3. spliced sessions get up to `shutdown_grace_secs` to finish on their own;
    /// 4. then the rest are ended: IMAP clients get `* BYE [UNAVAILABLE] …` (see
    ///    [`oxbridge_wire::FrontEnd::spliced_goodbye`]), POP3 and SMTP clients a close.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), String> {
        let stop_rx = self.shutdown.subscribe();
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
        let admin_state = Arc::new(AdminState {
            metrics: self.shared.metrics.clone(),
            ready: false.into(),
            reload: Some(self.reload_handle.clone()),
            // Only a shared store can be down while this process runs.
            store: self
                .shared
                .authenticator
                .store
                .is_shared()
                .then(|| crate::admin::StoreProbe(self.shared.authenticator.store.clone())),
        });

        let authenticator = self.shared.authenticator.clone();
        tokio::spawn(async move { authenticator.check_relay_accounts().await });
        let mut listeners = Listeners::start(&self.config, &self.shared)?;
        // The admin endpoints outlive the listeners, so `/readyz` answers "not ready"
        // throughout the drain.
        let (admin_stop, mut admin_stopped) = watch::channel(false);
        let mut admin_task = None;
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
            tracing::info!(address = %address, "admin endpoints on /metrics /healthz /readyz /reload");
            let state = admin_state.clone();
            admin_task = Some(tokio::spawn(async move {
                let _ = admin::serve(admin, state, async move {
                    let _ = admin_stopped.changed().await;
                })
                .await;
            }));
        }
        reload::observe_certificates(&self.config, &self.shared.metrics);
        admin_state.ready.store(true, Ordering::Relaxed);

        let mut shutdown = std::pin::pin!(shutdown);
        let mut config = self.config.clone();
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                Some(request) = self.reloads.recv() => {
                    let outcome = match &self.loader {
                        Some(loader) => {
                            reload::apply(loader, &mut config, &mut listeners, &self.shared).await
                        }
                        None => Err(vec![
                            "this server was not started from a configuration file; nothing to reload"
                                .to_string(),
                        ]),
                    };
                    request.respond(outcome);
                }
            }
        }

        admin_state.ready.store(false, Ordering::Relaxed);
        let settings = self.shared.settings();
        let delay = Duration::from_secs(settings.limits.shutdown_delay_secs);
        tracing::info!(
            delay_secs = delay.as_secs(),
            "shutting down: /readyz reports unready; still accepting during the delay"
        );
        tokio::time::sleep(delay).await;
        // Close the door first, then tell those inside: a session accepted after the signal
        // would otherwise never hear it, and a client told "shutting down" could still
        // find the listener open.
        listeners.stop_all().await;
        let _ = self.shutdown.send(true);
        let sessions = self.shared.sessions.current();
        tracing::info!(
            sessions,
            "no longer accepting; waiting for sessions to finish"
        );
        let grace = Duration::from_secs(settings.limits.shutdown_grace_secs);
        if tokio::time::timeout(grace, self.shared.sessions.idle())
            .await
            .is_ok()
        {
            tracing::info!("all sessions finished");
        } else {
            tracing::info!(
                sessions = self.shared.sessions.current(),
                "grace period over; ending the remaining sessions"
            );
            let _ = self.drain.send(true);
            // Each session settles within a few seconds (see `splice_until`).
            let ended = tokio::time::timeout(DRAIN_LIMIT, self.shared.sessions.idle()).await;
            match ended {
                Ok(()) => tracing::info!("all sessions ended"),
                Err(_) => tracing::warn!(
                    sessions = self.shared.sessions.current(),
                    "sessions still open at exit"
                ),
            }
        }
        let _ = admin_stop.send(true);
        if let Some(task) = admin_task {
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        }
        Ok(())
    }
}

/// How long ended sessions get to say goodbye and close once the grace period is over.
const DRAIN_LIMIT: Duration = Duration::from_secs(6);
