//! The admin HTTP listener, apart from the data plane: `/metrics`, `/healthz`, `/readyz`,
//! and `POST /reload`. Keep it on a private address: it needs no credentials, since all it
//! offers is read-only state and re-reading the operator's own configuration file. The
//! reload is accepted from this machine only (loopback): the admin port is often open to a
//! whole cluster for probes and scraping, and a rejected reload's answer names files.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;

use crate::metrics::Metrics;
use crate::reload::ReloadHandle;

/// What the admin endpoints report.
#[derive(Debug)]
pub struct AdminState {
    pub metrics: Metrics,
    /// Listeners are bound and the server is not draining.
    pub ready: AtomicBool,
    /// Reloads the configuration; `None` where the server has nothing to reload from.
    pub reload: Option<ReloadHandle>,
    /// The shared credential store, whose state `/readyz` reports; `None` to leave it out
    /// (the embedded store).
    pub store: Option<StoreProbe>,
}

/// The store as `/readyz` sees it: only its health check.
#[derive(Clone)]
pub struct StoreProbe(pub Arc<dyn oxbridge_store::CredentialStore>);

impl std::fmt::Debug for StoreProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreProbe")
    }
}

/// Serves the admin endpoints until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/reload", post(reload))
        .with_state(state)
}

async fn metrics(
    State(state): State<Arc<AdminState>>,
) -> ([(&'static str, &'static str); 1], String) {
    (
        [("content-type", "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

/// 200 while serving, 503 while starting or draining. The store's state is a second line
/// (`store: ok` or `store: unavailable: …`) but does not make the replica unready: every
/// replica shares the database, so pulling them all from the load balancer would also stop
/// the logins the caches can still serve during a database outage (docs/ha.md).
async fn readyz(State(state): State<Arc<AdminState>>) -> (StatusCode, String) {
    let store = match &state.store {
        None => String::new(),
        Some(StoreProbe(store)) => {
            match tokio::time::timeout(std::time::Duration::from_secs(2), store.check_health())
                .await
            {
                Ok(Ok(())) => "store: ok\n".to_string(),
                Ok(Err(e)) => format!("store: unavailable: {e}\n"),
                Err(_) => "store: unavailable: no answer within 2 s\n".to_string(),
            }
        }
    };
    if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, format!("ready\n{store}"))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready\n{store}"),
        )
    }
}

/// Reloads like SIGHUP does. 200 with what changed, or 422 with every problem (one per
/// line) when the new configuration was rejected and the running one kept; 403 to a
/// client that is not on this machine.
async fn reload(
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    State(state): State<Arc<AdminState>>,
) -> (StatusCode, String) {
    if !peer.ip().to_canonical().is_loopback() {
        tracing::warn!(%peer, "POST /reload refused: not from this machine");
        return (
            StatusCode::FORBIDDEN,
            "reload is accepted from this machine only (loopback); or send SIGHUP\n".to_string(),
        );
    }
    let Some(handle) = &state.reload else {
        return (
            StatusCode::NOT_FOUND,
            "reload is not available here\n".to_string(),
        );
    };
    match handle.reload().await {
        Ok(summary) => (StatusCode::OK, summary.to_string()),
        Err(problems) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "rejected; the running configuration is unchanged\n{}\n",
                problems.join("\n")
            ),
        ),
    }
}

/// Binds the admin address.
pub async fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(address).await
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::extract::connect_info::MockConnectInfo;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    async fn post_reload_from(peer: [u8; 4]) -> StatusCode {
        let state = Arc::new(AdminState {
            metrics: Metrics::new(),
            ready: true.into(),
            reload: None,
            store: None,
        });
        let app = router(state).layer(MockConnectInfo(SocketAddr::from((peer, 40000))));
        let request = Request::post("/reload").body(Body::empty()).unwrap();
        app.oneshot(request).await.unwrap().status()
    }

    #[tokio::test]
    async fn reload_is_refused_to_other_machines() {
        assert_eq!(
            post_reload_from([192, 0, 2, 7]).await,
            StatusCode::FORBIDDEN
        );
        // From loopback it gets as far as the reload (none here to run).
        assert_eq!(
            post_reload_from([127, 0, 0, 1]).await,
            StatusCode::NOT_FOUND
        );
    }
}
