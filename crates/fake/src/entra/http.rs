//! HTTPS for the fake token endpoint: an axum router served by hyper over the shared TLS
//! accept loop, so every connection gets its own task.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use super::{AuthorizeReply, FakeEntra, TokenReply};
use crate::service::accept_tls;

/// The routes Entra serves that the fake implements.
pub(crate) fn router(entra: FakeEntra) -> Router {
    Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(token))
        .route("/{tenant}/oauth2/v2.0/devicecode", post(devicecode))
        .route("/{tenant}/oauth2/v2.0/authorize", get(authorize))
        .route("/{tenant}/adminconsent", get(admin_consent))
        .route("/{tenant}/v2.0/adminconsent", get(admin_consent))
        .with_state(entra)
}

async fn admin_consent(
    State(entra): State<FakeEntra>,
    Path(tenant): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    redirect_or_page(entra.admin_consent(&tenant, query.as_deref().unwrap_or("")))
}

async fn devicecode(
    State(entra): State<FakeEntra>,
    Path(tenant): Path<String>,
    body: Bytes,
) -> Response {
    reply(entra.device_code_request(&tenant, &body))
}

async fn authorize(
    State(entra): State<FakeEntra>,
    Path(tenant): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    redirect_or_page(entra.authorize(&tenant, query.as_deref().unwrap_or("")))
}

/// `302 Found` to the redirect, or the error page.
fn redirect_or_page(reply: AuthorizeReply) -> Response {
    match reply {
        AuthorizeReply::Redirect(location) => match HeaderValue::from_str(&location) {
            Ok(value) => (StatusCode::FOUND, [(header::LOCATION, value)]).into_response(),
            Err(_) => (StatusCode::BAD_REQUEST, "bad redirect").into_response(),
        },
        AuthorizeReply::Page { status, text } => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            text,
        )
            .into_response(),
    }
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
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    reply(
        entra
            .token_request_from(host, &tenant, authorization, &body)
            .await,
    )
}

/// A JSON reply with Entra's headers.
fn reply(reply: TokenReply) -> Response {
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
