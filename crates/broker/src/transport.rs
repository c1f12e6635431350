//! The HTTP transport handed to `oauth2`: reqwest, plus a record of the status and
//! `Retry-After` of the answer.
//!
//! `oauth2` turns a non-200 answer into a parsed error body and forgets the status line and
//! headers, but classification needs both: 429 with `Retry-After` is "throttled for that
//! long", 5xx is transient whatever the body says. One `Transport` lives for one request.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use oauth2::{AsyncHttpClient, HttpClientError, HttpRequest, HttpResponse};

/// Largest token-endpoint body accepted; real ones are a few KiB.
const MAX_BODY: usize = 256 * 1024;

/// What the transport saw of the answer besides its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ResponseMeta {
    pub status: u16,
    pub retry_after: Option<Duration>,
}

/// A reqwest client that remembers the last answer's [`ResponseMeta`].
#[derive(Debug)]
pub(crate) struct Transport {
    http: reqwest::Client,
    seen: Mutex<Option<ResponseMeta>>,
}

impl Transport {
    pub fn new(http: reqwest::Client) -> Self {
        Self {
            http,
            seen: Mutex::new(None),
        }
    }

    /// Status and `Retry-After` of the answer, if one arrived.
    pub fn response_meta(&self) -> Option<ResponseMeta> {
        *self
            .seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn record(&self, meta: ResponseMeta) {
        *self
            .seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(meta);
    }
}

impl<'c> AsyncHttpClient<'c> for Transport {
    type Error = HttpClientError<reqwest::Error>;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, Self::Error>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(async move {
            let request = reqwest::Request::try_from(request).map_err(Box::new)?;
            let mut response = self.http.execute(request).await.map_err(Box::new)?;
            let status = response.status();
            self.record(ResponseMeta {
                status: status.as_u16(),
                retry_after: response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after),
            });

            let mut builder = oauth2::http::Response::builder()
                .status(status)
                .version(response.version());
            for (name, value) in response.headers() {
                builder = builder.header(name, value);
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(Box::new)? {
                if body.len() + chunk.len() > MAX_BODY {
                    return Err(HttpClientError::Other(format!(
                        "token endpoint answer larger than {MAX_BODY} bytes"
                    )));
                }
                body.extend_from_slice(&chunk);
            }
            builder.body(body).map_err(HttpClientError::Http)
        })
    }
}

/// `Retry-After` in its delay-seconds form. The HTTP-date form is not used by Entra and is
/// ignored (the broker's own backoff applies then).
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }
}
