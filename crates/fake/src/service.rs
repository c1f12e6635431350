//! The accept loop every fake service shares: TLS on each accepted connection in its own
//! task (a slow handshake never blocks accepting), a bound on concurrent connections, and
//! all connection tasks owned by the loop so that aborting the loop ends them too.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Most connections one fake service serves at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 16_384;
/// Bound on a TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections on `listener` until the task running this future is aborted, runs
/// the TLS handshake, then `serve` on each TLS stream.
pub(crate) async fn accept_tls<F, Fut>(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    serve: F,
) where
    F: Fn(TlsStream<TcpStream>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let acceptor = TlsAcceptor::from(tls);
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let serve = Arc::new(serve);
    let mut tasks = JoinSet::new();
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            // Reap finished connections so the set does not grow without bound.
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, "fake accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let serve = serve.clone();
        tasks.spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => serve(stream).await,
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "fake TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "fake TLS handshake timed out"),
            }
        });
    }
}
