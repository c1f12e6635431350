//! HTTPS for the fake token endpoint: an axum router served by hyper over the shared TLS
//! accept loop, so every connection gets its own task.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use super::FakeEntra;
use crate::service::accept_tls;

/// The routes Entra serves that the fake implements.
pub(crate) fn router(entra: FakeEntra) -> Router {
    Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(token))
        .with_state(entra)
}

async fn token(
    State(entra): State<FakeEntra>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let reply = entra.token_request(&tenant, authorization, &body).await;
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, reply.body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(reply.content_type),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-cache"),
    );
    if let Some(secs) = reply.retry_after_secs {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

/// Serves the token endpoint on `listener` until the calling task is aborted.
pub(crate) async fn serve(entra: FakeEntra, listener: TcpListener, tls: Arc<rustls::ServerConfig>) {
    let service = TowerToHyperService::new(router(entra));
    accept_tls(listener, tls, move |stream| {
        let service = service.clone();
        async move {
            let result = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = result {
                tracing::debug!(error = %e, "fake Entra connection ended with an error");
            }
        }
    })
    .await;
}
