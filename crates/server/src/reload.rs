//! Hot reload (SIGHUP or `POST /reload` on the admin listener): the configuration file is
//! read anew and, if it is sound, applied without dropping a session.
//!
//! What a reload changes: the certificate shown to clients (re-read even when its path is
//! unchanged, so a renewed certificate is picked up), the listeners (added, removed, or
//! changed in place on the same socket), `[limits]` (for sessions that start afterwards),
//! the relay rules and the PROXY-protocol trust. Accounts need no reload: the store is read
//! on every login. Everything else (upstreams, apps and their secrets, the store, the admin
//! address, logging, background refresh, notifications) is built once at start; a reload
//! that changes it applies the rest and says which parts need a restart.
//!
//! A reload is all or nothing: the new file is validated, its certificate loaded and its new
//! listener addresses bound *before* anything changes, and any problem rejects the whole
//! reload, logging every problem, with the running configuration kept.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::config::{Config, ListenerConfig};
use crate::listener;
use crate::metrics::Metrics;
use crate::proxy_protocol::ProxyPolicy;
use crate::relay::RelayRules;
use crate::runtime::{SessionSettings, Shared};

/// Reads the configuration anew (for `oxbridge serve`: the `--config` file).
#[derive(Clone)]
pub struct ConfigLoader(Arc<dyn Fn() -> Result<Config, String> + Send + Sync>);

impl ConfigLoader {
    pub fn new(load: impl Fn() -> Result<Config, String> + Send + Sync + 'static) -> Self {
        Self(Arc::new(load))
    }

    fn load(&self) -> Result<Config, String> {
        (self.0)()
    }
}

impl fmt::Debug for ConfigLoader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ConfigLoader")
    }
}

/// What a reload did, or every reason it was rejected.
pub type ReloadOutcome = Result<ReloadSummary, Vec<String>>;

/// What an accepted reload changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    pub listeners_added: Vec<SocketAddr>,
    pub listeners_removed: Vec<SocketAddr>,
    pub listeners_changed: Vec<SocketAddr>,
    /// Sections that differ from the running configuration but are only read at start.
    pub needs_restart: Vec<String>,
}

impl fmt::Display for ReloadSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |addresses: &[SocketAddr]| {
            addresses
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        };
        writeln!(f, "reloaded")?;
        writeln!(f, "listeners added: {}", list(&self.listeners_added))?;
        writeln!(f, "listeners removed: {}", list(&self.listeners_removed))?;
        writeln!(f, "listeners changed: {}", list(&self.listeners_changed))?;
        if !self.needs_restart.is_empty() {
            writeln!(
                f,
                "changed but only applied at the next restart: {}",
                self.needs_restart.join(", ")
            )?;
        }
        Ok(())
    }
}

/// Asks the running server for a reload and waits for the outcome. Cheap to clone; the
/// SIGHUP handler and the admin endpoint each hold one.
#[derive(Debug, Clone)]
pub struct ReloadHandle {
    requests: mpsc::Sender<ReloadRequest>,
}

impl ReloadHandle {
    pub(crate) fn new(requests: mpsc::Sender<ReloadRequest>) -> Self {
        Self { requests }
    }

    /// Reloads; reloads are applied one at a time, in order.
    pub async fn reload(&self) -> ReloadOutcome {
        let (respond, outcome) = oneshot::channel();
        let gone = || vec!["the server is shutting down; nothing was reloaded".to_string()];
        self.requests
            .send(ReloadRequest { respond })
            .await
            .map_err(|_| gone())?;
        outcome.await.unwrap_or_else(|_| Err(gone()))
    }
}

/// One pending reload, answered by the server's main loop.
#[derive(Debug)]
pub struct ReloadRequest {
    respond: oneshot::Sender<ReloadOutcome>,
}

impl ReloadRequest {
    pub(crate) fn respond(self, outcome: ReloadOutcome) {
        let _ = self.respond.send(outcome);
    }
}

/// The running listeners, by address.
#[derive(Debug, Default)]
pub(crate) struct Listeners {
    running: HashMap<SocketAddr, Running>,
}

/// One running accept loop.
#[derive(Debug)]
struct Running {
    spec: ListenerConfig,
    proxy: Option<Arc<ProxyPolicy>>,
    stop: watch::Sender<bool>,
    task: JoinHandle<TcpListener>,
}

impl Running {
    /// Stops accepting and hands back the socket (`None` if the loop panicked).
    async fn stop(self) -> Option<TcpListener> {
        let _ = self.stop.send(true);
        self.task.await.ok()
    }
}

impl Listeners {
    /// Binds and starts every listener of `config`; fails on the first that cannot bind.
    pub(crate) fn start(config: &Config, shared: &Arc<Shared>) -> Result<Listeners, String> {
        let mut listeners = Listeners::default();
        for spec in &config.listeners {
            let socket = listener::bind(spec.listen)
                .map_err(|e| format!("cannot listen on {}: {e}", spec.listen))?;
            let proxy = ProxyPolicy::for_listener(config, spec);
            tracing::info!(protocol = %spec.protocol, address = %spec.listen, tls = ?spec.tls, proxy_protocol = proxy.is_some(), "listening");
            listeners.spawn(socket, spec.clone(), proxy, shared);
        }
        Ok(listeners)
    }

    fn spawn(
        &mut self,
        socket: TcpListener,
        spec: ListenerConfig,
        proxy: Option<Arc<ProxyPolicy>>,
        shared: &Arc<Shared>,
    ) {
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(listener::accept_loop(
            socket,
            spec.clone(),
            proxy.clone(),
            shared.clone(),
            stopped,
        ));
        self.running.insert(
            spec.listen,
            Running {
                spec,
                proxy,
                stop,
                task,
            },
        );
    }

    /// Stops every accept loop; sessions they started go on.
    pub(crate) async fn stop_all(self) {
        for (_, running) in self.running {
            drop(running.stop().await);
        }
    }
}

/// Reads the configuration with `loader` and applies it, or rejects it whole; logs and
/// counts the outcome either way.
pub(crate) async fn apply(
    loader: &ConfigLoader,
    current: &mut Config,
    listeners: &mut Listeners,
    shared: &Arc<Shared>,
) -> ReloadOutcome {
    tracing::info!("reloading the configuration");
    let outcome = prepare_and_apply(loader, current, listeners, shared).await;
    let metrics = &shared.metrics;
    match &outcome {
        Ok(summary) => {
            metrics.reloads_total.with_label_values(&["ok"]).inc();
            metrics
                .reload_last_success_timestamp_seconds
                .set(unix_now());
            tracing::info!(
                added = ?summary.listeners_added,
                removed = ?summary.listeners_removed,
                changed = ?summary.listeners_changed,
                "configuration reloaded"
            );
            for section in &summary.needs_restart {
                tracing::warn!(section = %section, "changed in the file, but only applied at the next restart");
            }
        }
        Err(problems) => {
            metrics.reloads_total.with_label_values(&["rejected"]).inc();
            for problem in problems {
                tracing::error!(problem = %problem, "reload rejected");
            }
            tracing::error!(
                problems = problems.len(),
                "reload rejected; the running configuration is unchanged"
            );
        }
    }
    outcome
}

async fn prepare_and_apply(
    loader: &ConfigLoader,
    current: &mut Config,
    listeners: &mut Listeners,
    shared: &Arc<Shared>,
) -> ReloadOutcome {
    // 1. Everything that can fail, with nothing changed yet.
    let new = loader.load().map_err(|e| vec![e])?;
    let mut problems = new.validate();
    if !problems.is_empty() {
        return Err(problems);
    }
    let tls = crate::certificate::load_or_generate(
        new.tls.cert.as_deref(),
        new.tls.key.as_deref(),
        &new.data_dir,
    )
    .map_err(|e| problems.push(format!("[tls]: {e}")))
    .ok();
    let relay = RelayRules::from_config(&new.relay)
        .map_err(|e| problems.extend(e))
        .ok();
    // Addresses that are new, and sockets for them; and which running ones change.
    let mut bound = Vec::new();
    let mut changed = Vec::new();
    for spec in &new.listeners {
        let proxy = ProxyPolicy::for_listener(&new, spec);
        match listeners.running.get(&spec.listen) {
            Some(running) => {
                if running.spec != *spec || running.proxy != proxy {
                    changed.push((spec.clone(), proxy));
                }
            }
            None => match listener::bind(spec.listen) {
                Ok(socket) => bound.push((socket, spec.clone(), proxy)),
                Err(e) => problems.push(format!("cannot listen on {}: {e}", spec.listen)),
            },
        }
    }
    let (Some(tls), Some(relay)) = (tls, relay) else {
        return Err(problems);
    };
    if !problems.is_empty() {
        // The sockets bound for the new listeners close here.
        return Err(problems);
    }

    // 2. Nothing can fail from here on.
    let mut summary = ReloadSummary {
        needs_restart: restart_only_changes(current, &new),
        ..ReloadSummary::default()
    };
    shared.set_tls(tls);
    shared.set_settings(SessionSettings::from_limits(&new.limits));
    shared.authenticator.relay.store(Arc::new(relay));
    // In the background: a slow or unreachable shared store must not hold up the reload.
    let authenticator = shared.authenticator.clone();
    tokio::spawn(async move { authenticator.check_relay_accounts().await });
    let keep: Vec<SocketAddr> = new.listeners.iter().map(|l| l.listen).collect();
    let removed: Vec<SocketAddr> = listeners
        .running
        .keys()
        .filter(|address| !keep.contains(address))
        .copied()
        .collect();
    for address in removed {
        if let Some(running) = listeners.running.remove(&address) {
            drop(running.stop().await);
            tracing::info!(address = %address, "listener closed");
            summary.listeners_removed.push(address);
        }
    }
    for (spec, proxy) in changed {
        let Some(running) = listeners.running.remove(&spec.listen) else {
            continue;
        };
        let address = spec.listen;
        // The socket stays open in between: connections arriving meanwhile wait in its
        // backlog rather than being refused.
        match running.stop().await {
            Some(socket) => {
                tracing::info!(protocol = %spec.protocol, address = %address, tls = ?spec.tls, proxy_protocol = proxy.is_some(), "listener changed");
                listeners.spawn(socket, spec, proxy, shared);
                summary.listeners_changed.push(address);
            }
            None => tracing::error!(address = %address, "listener task failed; not restarted"),
        }
    }
    for (socket, spec, proxy) in bound {
        tracing::info!(protocol = %spec.protocol, address = %spec.listen, tls = ?spec.tls, proxy_protocol = proxy.is_some(), "listening");
        summary.listeners_added.push(spec.listen);
        listeners.spawn(socket, spec, proxy, shared);
    }
    observe_certificates(&new, &shared.metrics);
    *current = new;
    summary.listeners_added.sort();
    summary.listeners_removed.sort();
    summary.listeners_changed.sort();
    Ok(summary)
}

/// The sections that differ between `old` and `new` but are only read at start. Compared
/// on the whole configuration with the reloadable parts taken out, so a section added to
/// the configuration later is never silently ignored by a reload.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<String> {
    let mut probe = new.clone();
    probe.listeners.clone_from(&old.listeners);
    probe.limits = old.limits.clone();
    probe.relay.clone_from(&old.relay);
    probe.tls = old.tls.clone();
    probe.trusted_proxies.clone_from(&old.trusted_proxies);
    if format!("{probe:?}") == format!("{old:?}") {
        return Vec::new();
    }
    let sections: [(&str, String, String); 8] = [
        ("data_dir", dbg(&old.data_dir), dbg(&new.data_dir)),
        ("[admin]", dbg(&old.admin), dbg(&new.admin)),
        ("[upstream]", dbg(&old.upstream), dbg(&new.upstream)),
        ("[[app]]", dbg(&old.apps), dbg(&new.apps)),
        ("[store]", dbg(&old.store), dbg(&new.store)),
        ("[log]", dbg(&old.log), dbg(&new.log)),
        ("[grants]", dbg(&old.grants), dbg(&new.grants)),
        ("[notify]", dbg(&old.notify), dbg(&new.notify)),
    ];
    let named: Vec<String> = sections
        .into_iter()
        .filter(|(_, a, b)| a != b)
        .map(|(name, _, _)| name.to_string())
        .collect();
    if named.is_empty() {
        vec!["other settings".to_string()]
    } else {
        named
    }
}

fn dbg(value: &impl fmt::Debug) -> String {
    format!("{value:?}")
}

/// Sets the certificate expiry gauges: the certificate shown to clients and each app's
/// client-assertion certificate. A certificate that cannot be read drops out of the gauge
/// (the failure is logged; the listener itself would have failed to load it).
pub(crate) fn observe_certificates(config: &Config, metrics: &Metrics) {
    let gauge = &metrics.certificate_expiry_timestamp_seconds;
    gauge.reset();
    let listener = crate::certificate::path(config.tls.cert.as_deref(), &config.data_dir);
    let mut certificates = vec![("listener".to_string(), listener)];
    for app in &config.apps {
        if let Some(path) = &app.certificate {
            certificates.push((format!("app:{}", app.name), path.clone()));
        }
    }
    for (label, path) in certificates {
        match crate::certificate::expiry(&path) {
            Ok(not_after) => gauge.with_label_values(&[&label]).set(not_after),
            Err(e) => {
                tracing::warn!(certificate = %label, path = %path.display(), error = %e, "cannot read the certificate's expiry")
            }
        }
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
        data_dir = "/tmp/oxbridge-reload-test"
        [[listener]]
        protocol = "imap"
        listen = "127.0.0.1:993"
        tls = "implicit"
    "#;

    #[test]
    fn reloadable_changes_need_no_restart_and_others_are_named() {
        let old = Config::parse(BASE).unwrap();
        let reloadable = Config::parse(&format!(
            "trusted_proxies = [\"10.0.0.0/8\"]\n{BASE}\n[limits]\nmax_connections = 5\n\
             [[relay]]\nnetworks = [\"192.0.2.0/24\"]\naccount = \"scanner\"\nsenders = [\"s@x.com\"]\n"
        ))
        .unwrap();
        assert!(restart_only_changes(&old, &reloadable).is_empty());
        let other = Config::parse(&format!(
            "{BASE}\n[upstream.imap]\naddress = \"imap.example.com:993\"\ntls = \"implicit\"\n\
             [log]\nformat = \"json\"\n"
        ))
        .unwrap();
        assert_eq!(
            restart_only_changes(&old, &other),
            vec!["[upstream]".to_string(), "[log]".to_string()]
        );
    }
}
